//! The state-machine property test: random stacks of 1–5 lower layers and
//! random operation sequences (every operation of the view, plus
//! `commit`), applied to the reference model and to `MergedView` over
//! `MemLayer`s. After every step: the same result or errno, the same whole
//! visible tree, and the invariants (lower layers unchanged, no whiteout in
//! the upper where nothing below has the name).
//!
//! `PROPTEST_CASES=N` sets the number of sequences per test (the default,
//! 16,000, keeps the run near half a minute on 2 cores in release mode).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use layerstack::layer::walk;
use layerstack::merged::ViewOptions;
use layerstack::merged::{DirRename, HardLinkCopyUp};
use layerstack::model::{Model, Snapshot};
use layerstack::testing::{
    Op, Outcome, apply_to_model, apply_to_view, op_strategy, snapshot_view, stack_strategy,
};
use layerstack::{Entry, Layer, LayerMut, LayerPath, MemLayer, MergedView, Spill};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

/// A set of view options to run the machine with.
trait Options: 'static + std::fmt::Debug + Clone {
    fn options() -> ViewOptions;

    /// The view's upper layer.
    fn upper() -> MemLayer {
        MemLayer::new()
    }
}

/// The kernel's defaults: `EXDEV` for lower directories, hard links broken.
#[derive(Debug, Clone)]
struct KernelDefaults;
impl Options for KernelDefaults {
    fn options() -> ViewOptions {
        ViewOptions::default()
    }
}

/// The kernel's defaults over an upper whose file data goes to a spill
/// file past its first 64 bytes.
#[derive(Debug, Clone)]
struct SpillingUpper;
impl Options for SpillingUpper {
    fn options() -> ViewOptions {
        ViewOptions::default()
    }

    fn upper() -> MemLayer {
        let dir = camino::Utf8PathBuf::from_path_buf(std::env::temp_dir()).expect("UTF-8");
        MemLayer::with_spill(Spill::new(dir, 64))
    }
}

/// `redirect_dir=on,index=on`.
#[derive(Debug, Clone)]
struct RedirectAndIndex;
impl Options for RedirectAndIndex {
    fn options() -> ViewOptions {
        ViewOptions::default()
            .dir_rename(DirRename::Redirect)
            .hard_links(HardLinkCopyUp::Keep)
    }
}

#[derive(Clone)]
struct Reference<O> {
    layers: Vec<MemLayer>,
    model: Model,
    last: Option<(Op, Outcome)>,
    _options: PhantomData<O>,
}

impl<O> std::fmt::Debug for Reference<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference")
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

fn shared(layers: &[MemLayer]) -> Vec<Arc<dyn Layer>> {
    layers
        .iter()
        .map(|l| Arc::new(l.clone()) as Arc<dyn Layer>)
        .collect()
}

impl<O: Options> ReferenceStateMachine for Reference<O> {
    type State = Reference<O>;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Self::State> {
        stack_strategy(5)
            .prop_filter("at least one lower layer", |l| !l.is_empty())
            .prop_map(|layers| {
                let model = Model::from_layers(&shared(&layers), O::options())
                    .expect("the model flattens every MemLayer stack");
                Reference {
                    layers,
                    model,
                    last: None,
                    _options: PhantomData,
                }
            })
            .boxed()
    }

    fn transitions(_: &Self::State) -> BoxedStrategy<Op> {
        op_strategy().boxed()
    }

    fn apply(mut state: Self::State, op: &Op) -> Self::State {
        let outcome = apply_to_model(&mut state.model, op);
        state.last = Some((op.clone(), outcome));
        state
    }
}

struct System<O> {
    view: MergedView,
    /// Every lower layer seen so far (by address) with its contents then.
    lowers: HashMap<usize, Vec<(LayerPath, Entry)>>,
    _options: PhantomData<O>,
}

struct ViewMachine<O>(PhantomData<O>);

fn first_difference(model: &Snapshot, view: &Snapshot) -> Option<String> {
    for (path, want) in model {
        match view.get(path) {
            None => {
                return Some(format!(
                    "`{path}` is in the model, not in the view: {want:?}"
                ));
            }
            Some(got) if got != want => {
                return Some(format!(
                    "`{path}` differs:\n  model: {want:?}\n  view:  {got:?}"
                ));
            }
            Some(_) => {}
        }
    }
    view.keys()
        .find(|p| !model.contains_key(*p))
        .map(|p| format!("`{p}` is in the view, not in the model: {:?}", view[p]))
}

impl<O: Options> StateMachineTest for ViewMachine<O> {
    type SystemUnderTest = System<O>;
    type Reference = Reference<O>;

    fn init_test(reference: &Reference<O>) -> System<O> {
        let view = MergedView::with_options(shared(&reference.layers), O::upper(), O::options())
            .expect("a view opens over MemLayers");
        let mut system = System {
            view,
            lowers: HashMap::new(),
            _options: PhantomData,
        };
        record_lowers(&mut system);
        compare(&system, reference);
        system
    }

    fn apply(system: System<O>, reference: &Reference<O>, op: Op) -> System<O> {
        let got = apply_to_view(&system.view, &op);
        let (_, want) = reference
            .last
            .as_ref()
            .expect("the reference applied the op");
        assert_eq!(&got, want, "different outcome for {op:?}");
        let mut system = system;
        if op == Op::Commit {
            record_lowers(&mut system);
        }
        compare(&system, reference);
        system
    }

    fn check_invariants(system: &System<O>, _: &Reference<O>) {
        for layer in system.view.layers() {
            let key = Arc::as_ptr(&layer).cast::<()>() as usize;
            let now = walk(&*layer).expect("walk a MemLayer");
            assert_eq!(
                Some(&now),
                system.lowers.get(&key),
                "a lower layer was modified"
            );
        }
        check_whiteouts_hide_something(&system.view);
    }
}

fn record_lowers<O>(system: &mut System<O>) {
    for layer in system.view.layers() {
        let key = Arc::as_ptr(&layer).cast::<()>() as usize;
        system
            .lowers
            .entry(key)
            .or_insert_with(|| walk(&*layer).expect("walk a MemLayer"));
    }
}

fn compare<O>(system: &System<O>, reference: &Reference<O>) {
    let view = snapshot_view(&system.view).expect("the view can be walked");
    let model = reference.model.snapshot();
    if let Some(diff) = first_difference(&model, &view) {
        panic!(
            "model and view differ after {:?}: {diff}",
            reference.last.as_ref().map(|(op, _)| op)
        );
    }
}

/// Every whiteout in the upper hides something: without it, the view would
/// show an object at its path.
fn check_whiteouts_hide_something(view: &MergedView) {
    let upper: MemLayer = view.with_upper(|u: &dyn LayerMut| {
        u.as_any()
            .downcast_ref::<MemLayer>()
            .expect("the upper is a MemLayer")
            .clone()
    });
    for (path, entry) in walk(&upper).expect("walk the upper") {
        if entry != Entry::Whiteout {
            continue;
        }
        let mut without = upper.clone();
        without.remove(&path).expect("remove the whiteout");
        let probe = MergedView::with_options(view.layers(), without, *view.options())
            .expect("a view opens");
        assert!(
            probe
                .symlink_metadata([b"/".as_slice(), path.as_bytes()].concat())
                .is_ok(),
            "the whiteout at `{path}` hides nothing"
        );
    }
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16_000);
    Config {
        cases,
        max_shrink_iters: 20_000,
        // Failing seeds are kept beside this file and replayed first.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/it/state_machine.proptest-regressions",
        ))),
        ..Config::default()
    }
}

prop_state_machine! {
    #![proptest_config(config())]

    #[test]
    fn view_matches_model_with_kernel_defaults(sequential 1..40 => ViewMachine<KernelDefaults>);

    #[test]
    fn view_matches_model_with_redirect_and_index(sequential 1..40 => ViewMachine<RedirectAndIndex>);
}

prop_state_machine! {
    // Spilling only changes where bytes are kept: fewer cases.
    #![proptest_config(Config { cases: config().cases / 8, ..config() })]

    #[test]
    fn view_matches_model_with_a_spilling_upper(sequential 1..40 => ViewMachine<SpillingUpper>);
}
