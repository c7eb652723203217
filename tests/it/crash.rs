//! Crash consistency of `DirLayer` (the model: redb's
//! `tests/crash_consistency.rs`): a merged view over disk layers runs a
//! random operation sequence in a child process that kills itself with
//! `SIGKILL` right after its k-th disk-changing system call, for every k.
//!
//! Method. The crate's test-only feature `crash-points` routes every
//! system call by which a `DirLayer` changes the disk (rename, mknod,
//! mkdir, link, unlink, write, fsync, setxattr, chown, ...) through a
//! counter (`layerstack::layer::crash_points`). A SIGKILL lands between
//! two system calls, so "after the k-th call" for k = 1..=T reaches every
//! state a crash of the process can leave. Per random case:
//!
//! 1. the lower layers (generated `MemLayer`s) are written to a tmpfs with
//!    `copy_layer`; the model is run op by op and its visible tree kept
//!    before and after each op;
//! 2. a dry run in this process checks that the disk view ends where the
//!    model does, and one in a child that is not killed counts the steps T
//!    (the counter is one per process, and other tests of this binary run
//!    disk layers on other threads of this one);
//! 3. for every k in 1..=T, a child (this test binary re-executed with
//!    only `crash_child` selected) opens a fresh upper, runs the ops with
//!    the counter armed at k and prints a line after each op; it dies at
//!    step k, inside op i (the number of lines it printed);
//! 4. the parent reopens the upper with `DirLayer::open_upper` and checks:
//!    (a) the work directory is empty; (b, c) the whole visible tree of a
//!    fresh `MergedView` (types, modes, owners, contents, targets, xattrs)
//!    is exactly the model's before op i or after it, never a partial
//!    file nor a half-made entry; (d) the kernel mounts the layers and
//!    shows the same tree.
//!
//! Both whiteout formats are covered (`WhiteoutFormat::Device` and
//! `Xattr`). The kernel honours xattr whiteouts only in lower layers, so
//! for the xattr format the upper is mounted as the top `lowerdir`.
//!
//! Operations that are several steps by nature are not atomic in the
//! kernel either, and are checked with the weaker rule that every state
//! passed through is one of the model's between sub-steps: they are
//! left out of the generated sequences (see `atomic_op`).
//!
//! Needs root (whiteouts are devices 0/0, overlay xattrs `trusted.*`,
//! tmpfs and overlay mounts); elsewhere it prints why and passes, unless
//! `LAYERSTACK_REQUIRE_ROOT=1`. `LAYERSTACK_CRASH_CASES=N` runs N cases
//! per whiteout format (default 150, about 20 s) for a longer campaign, and
//! `LAYERSTACK_CRASH_SEED=S` starts at another seed.

use crate::support::harness;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use layerstack::layer::copy_layer;
use layerstack::layer::crash_points::{CRASH_AT, STEPS};
use layerstack::layer::dir::{DirLayerOptions, WhiteoutFormat};
use layerstack::merged::OpenOptions;
use layerstack::merged::ViewOptions;
use layerstack::model::{Model, Snapshot};
use layerstack::testing::{
    Op, Scenario, apply_to_model, apply_to_view, build_layer, ops_strategy, snapshot_view,
    stack_items_strategy,
};
use layerstack::{DirLayer, FileType, Layer, MemLayer, MergedView};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Set in the child: the directory of the case (lowers `l0`, `l1`, ...).
const CHILD_BASE: &str = "LAYERSTACK_CRASH_BASE";
/// The directory of the crash point (`upper`, `work`).
const CHILD_POINT: &str = "LAYERSTACK_CRASH_POINT";
const CHILD_LAYERS: &str = "LAYERSTACK_CRASH_LAYERS";
const CHILD_FORMAT: &str = "LAYERSTACK_CRASH_FORMAT";
const CHILD_AT: &str = "LAYERSTACK_CRASH_AT";
const CHILD_OPS: &str = "LAYERSTACK_CRASH_OPS";
/// The line the child prints after each operation.
const DONE_MARK: &str = "LAYERSTACK-CRASH-DONE ";

fn options(format: WhiteoutFormat) -> DirLayerOptions {
    DirLayerOptions::default().whiteouts(format)
}

fn format_name(format: WhiteoutFormat) -> &'static str {
    match format {
        WhiteoutFormat::Device => "device",
        _ => "xattr",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn open_lowers(base: &Path, n: usize) -> Vec<Arc<dyn Layer>> {
    (0..n)
        .map(|i| {
            let dir = base.join(format!("l{i}"));
            Arc::new(DirLayer::open(dir.to_str().expect("UTF-8")).expect("open a lower"))
                as Arc<dyn Layer>
        })
        .collect()
}

fn open_upper(point: &Path, format: WhiteoutFormat) -> DirLayer {
    let s = |p: PathBuf| p.into_os_string().into_string().expect("UTF-8");
    DirLayer::open_upper_with(
        s(point.join("upper")),
        s(point.join("work")),
        options(format),
    )
    .expect("open the upper")
}

/// The child: runs the ops and dies at step `CHILD_AT`.
#[test]
fn crash_child() {
    let Some(base) = std::env::var_os(CHILD_BASE) else {
        return;
    };
    let var = |k: &str| std::env::var(k).expect(k);
    let point = PathBuf::from(var(CHILD_POINT));
    let n: usize = var(CHILD_LAYERS).parse().expect("layers");
    let format = match var(CHILD_FORMAT).as_str() {
        "device" => WhiteoutFormat::Device,
        _ => WhiteoutFormat::Xattr,
    };
    let at: u64 = var(CHILD_AT).parse().expect("crash point");
    let ops = Scenario::from_bytes(&unhex(&var(CHILD_OPS))).ops;
    let view = MergedView::new(open_lowers(Path::new(&base), n), open_upper(&point, format))
        .expect("a view");
    STEPS.store(0, Ordering::SeqCst);
    CRASH_AT.store(at, Ordering::SeqCst);
    let mut out = std::io::stdout().lock();
    for (i, op) in ops.iter().enumerate() {
        apply_to_view(&view, op);
        let steps = STEPS.load(Ordering::SeqCst);
        writeln!(out, "{DONE_MARK}{i} {steps}").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// Whether an op is one step of the view (or fails before any change):
/// the operations the kernel does not make atomic either are left out.
fn atomic_op(op: &Op) -> bool {
    !matches!(
        op,
        // Reads change nothing (no crash point), commit needs a commit
        // directory; `remove_dir_all` and `create_dir_all` are many
        // operations by definition.
        Op::Metadata { .. }
            | Op::SymlinkMetadata { .. }
            | Op::Read { .. }
            | Op::ReadAt { .. }
            | Op::ReadDir { .. }
            | Op::ReadLink { .. }
            | Op::GetXattr { .. }
            | Op::ListXattr { .. }
            | Op::Commit
            | Op::RemoveDirAll { .. }
            | Op::CreateDirAll { .. }
            // Handles live in the view: a crash (a reopened view) ends them.
            | Op::OpenHandle { .. }
            | Op::HandleReadAt { .. }
            | Op::HandleWriteAt { .. }
            | Op::HandleSetLen { .. }
            | Op::HandleMetadata { .. }
            | Op::CloseHandle { .. }
    )
}

/// One random case: lowers and ops from a fixed seed.
fn case(seed: u64) -> (Vec<MemLayer>, Vec<Op>) {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let layers = stack_items_strategy(3)
        .prop_filter("a lower layer", |l| !l.is_empty())
        .new_tree(&mut runner)
        .expect("layers")
        .current();
    let ops = ops_strategy(40)
        .new_tree(&mut runner)
        .expect("ops")
        .current()
        .into_iter()
        .filter(atomic_op)
        .collect();
    (layers.iter().map(|l| build_layer(l)).collect(), ops)
}

/// `tree` with the link count of directories left out: a merged
/// directory reports 1, as the kernel's does, so the copy-up of a parent
/// (done, and kept, before the op in flight changes anything) shows only
/// there.
fn without_dir_nlink(tree: &Snapshot) -> Snapshot {
    without_nlink(tree, |t| t == FileType::Dir)
}

/// `tree` with the link counts of `which` types left out. Against the
/// tree before the op in flight, all of them: a copy-up done for the op
/// breaks a lower hard link (the kernel's `index=off`) as it would on the
/// kernel, and stays.
fn without_nlink(tree: &Snapshot, which: impl Fn(FileType) -> bool) -> Snapshot {
    let mut tree = tree.clone();
    for entry in tree.values_mut() {
        if which(entry.meta.file_type) {
            entry.meta.nlink = 0;
        }
    }
    tree
}

/// The tree between the two system calls of a write through `open`: the
/// file created or truncated, nothing written yet. A program calling
/// `open` then `write` on the kernel's overlay leaves the same state when
/// it dies between them.
fn after_open(before: &Model, op: &Op) -> Option<Snapshot> {
    let mut options = OpenOptions::new();
    let path = match op {
        Op::Write { path, .. } => {
            options.write(true).create(true).truncate(true);
            path
        }
        Op::Append { path, .. } => {
            options.append(true).create(true);
            path
        }
        _ => return None,
    };
    let mut model = before.clone();
    apply_to_model(
        &mut model,
        &Op::Open {
            path: path.clone(),
            options,
        },
    );
    Some(model.snapshot())
}

/// The known crash window (open): with `WhiteoutFormat::Xattr`,
/// `DirLayer::rename_whiteout` renames the object and then writes the
/// whiteout at the old name in a second step (there is no
/// `RENAME_WHITEOUT` for xattr whiteouts), so a crash between the two shows
/// the lower object at the old name again while the new name already
/// holds it.
fn known_window(format: WhiteoutFormat, op: &Op) -> bool {
    format == WhiteoutFormat::Xattr && matches!(op, Op::Rename { .. })
}

/// The first difference between two trees, in words.
fn difference(want: &Snapshot, got: &Snapshot) -> String {
    harness::first_difference(want, got).unwrap_or_else(|| "none".into())
}

/// What a run found.
#[derive(Default)]
struct Tally {
    points: u64,
    cases: u64,
    kernel_checks: u64,
    failures: Vec<String>,
    /// Hits of the known window (see `known_window`), reported, not failed.
    known: Vec<String>,
}

fn privileged() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("LAYERSTACK_REQUIRE_ROOT").is_none(),
        "the crash test needs root and LAYERSTACK_REQUIRE_ROOT is set"
    );
    eprintln!("SKIP crash test: needs root (device whiteouts, trusted.* xattrs, mounts)");
    false
}

fn run_case(seed: u64, format: WhiteoutFormat, tally: &mut Tally) {
    let (layers, ops) = case(seed);
    if ops.is_empty() {
        return;
    }
    let tag = format!("seed {seed}, {} whiteouts", format_name(format));
    let mut scratch = harness::Scratch::new().expect("a tmpfs");
    let base = scratch.root.clone();
    for (i, layer) in layers.iter().enumerate() {
        let mut disk = open_upper(&base.join(format!("l{i}.tmp")), WhiteoutFormat::Device);
        copy_layer(layer, &mut disk).expect("write a lower");
        drop(disk);
        std::fs::rename(
            base.join(format!("l{i}.tmp/upper")),
            base.join(format!("l{i}")),
        )
        .expect("move the lower");
    }
    // The model's tree before op 0 and after each op.
    let mem: Vec<Arc<dyn Layer>> = layers
        .iter()
        .map(|l| Arc::new(l.clone()) as Arc<dyn Layer>)
        .collect();
    let mut model = Model::from_layers(&mem, ViewOptions::default()).expect("a model");
    let mut trees = vec![model.snapshot()];
    let mut between = Vec::new();
    let mut outcomes = Vec::new();
    for op in &ops {
        between.push(after_open(&model, op).map(|t| without_dir_nlink(&t)));
        outcomes.push(apply_to_model(&mut model, op));
        trees.push(model.snapshot());
    }
    let loose: Vec<Snapshot> = trees.iter().map(without_dir_nlink).collect();
    let loosest: Vec<Snapshot> = trees.iter().map(|t| without_nlink(t, |_| true)).collect();
    // The dry run: how many steps, and the disk view agrees with the model.
    let dry = base.join("dry");
    let view = MergedView::new(open_lowers(&base, layers.len()), open_upper(&dry, format))
        .expect("a view");
    for (i, op) in ops.iter().enumerate() {
        let got = apply_to_view(&view, op);
        assert_eq!(
            got, outcomes[i],
            "{tag}: step {i} {op:?}: disk view vs model"
        );
    }
    let end = snapshot_view(&view).expect("snapshot the view");
    assert!(
        end == trees[ops.len()],
        "{tag}: the disk view ends elsewhere than the model: {}",
        difference(&trees[ops.len()], &end)
    );
    drop(view);
    let encoded = Scenario {
        layers: Vec::new(),
        ops: ops.clone(),
    }
    .to_bytes()
    .expect("encodable ops");
    assert_eq!(
        Scenario::from_bytes(&encoded).ops,
        ops,
        "{tag}: ops round-trip"
    );
    let encoded = hex(&encoded);
    tally.cases += 1;
    // The steps are counted in a child that is never killed: the counter is
    // one per process, and other tests of this binary run disk layers on
    // other threads of this one. bounds[i]: the steps done when op i is over.
    let child = |k: u64, point: &Path| {
        std::fs::create_dir(point).expect("mkdir point");
        let out = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                // Its name in the one test binary, module path included.
                "crash::crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_BASE, &base)
            .env(CHILD_POINT, point)
            .env(CHILD_LAYERS, layers.len().to_string())
            .env(CHILD_FORMAT, format_name(format))
            .env(CHILD_AT, k.to_string())
            .env(CHILD_OPS, &encoded)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .stdout(Stdio::piped())
            .output()
            .expect("run the child");
        let steps: Vec<u64> = BufReader::new(&out.stdout[..])
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.split_once(DONE_MARK)?.1.split_once(' ')?.1.parse().ok())
            .collect();
        (out.status, steps)
    };
    let (status, bounds) = child(0, &base.join("steps"));
    assert!(
        status.success() && bounds.len() == ops.len(),
        "{tag}: the counting child ended with {status:?} after {} of {} ops",
        bounds.len(),
        ops.len()
    );
    let total = bounds.last().copied().unwrap_or(0);
    for k in 1..=total {
        let point = base.join(format!("p{k}"));
        let (status, steps) = child(k, &point);
        let done = steps.len();
        tally.points += 1;
        let fail = |what: String| format!("{tag}, crash after step {k} of {total}: {what}");
        if status.signal() != Some(9) {
            tally.failures.push(fail(format!(
                "the child was not killed ({status:?}, {done} ops done)"
            )));
            continue;
        }
        let in_flight = done.min(ops.len() - 1);
        let expected = bounds.iter().filter(|&&b| b < k).count();
        if in_flight != expected {
            tally.failures.push(fail(format!(
                "the child died in op {in_flight}, the dry run says op {expected} (bounds {bounds:?})"
            )));
            continue;
        }
        let op = &ops[in_flight];
        // (a) reopening cleans the work directory.
        let upper = open_upper(&point, format);
        let leftovers: Vec<_> = std::fs::read_dir(point.join("work/work"))
            .expect("read the work directory")
            .map(|e| e.expect("entry").file_name())
            .collect();
        if !leftovers.is_empty() {
            tally.failures.push(fail(format!(
                "the work directory holds {leftovers:?} after reopening"
            )));
        }
        // (b, c) the tree is the model's before or after the op in flight.
        let view = MergedView::new(open_lowers(&base, layers.len()), upper).expect("a view");
        let got = match snapshot_view(&view) {
            Ok(s) => s,
            Err(e) => {
                tally.failures.push(fail(format!(
                    "in op {in_flight} {op:?}: the view fails: {e}"
                )));
                continue;
            }
        };
        drop(view);
        let (before, after) = (&loose[in_flight], &loose[in_flight + 1]);
        let seen = without_dir_nlink(&got);
        if without_nlink(&seen, |_| true) != loosest[in_flight]
            && seen != *after
            && between[in_flight].as_ref() != Some(&seen)
        {
            let list = if known_window(format, op) {
                &mut tally.known
            } else {
                &mut tally.failures
            };
            list.push(fail(format!(
                "in op {in_flight} {op:?}: the tree is neither the one before ({}) nor the one after ({})",
                difference(before, &seen),
                difference(after, &seen)
            )));
            continue;
        }
        // (d) the kernel mounts the result and shows the same tree.
        let lowers: Vec<String> = (0..layers.len())
            .map(|i| base.join(format!("l{i}")).display().to_string())
            .collect();
        let data = match format {
            WhiteoutFormat::Device => format!(
                "lowerdir={},upperdir={},workdir={}",
                lowers.join(":"),
                point.join("upper").display(),
                point.join("work").display()
            ),
            // Xattr whiteouts count only in lower layers.
            _ => format!(
                "lowerdir={}:{}",
                point.join("upper").display(),
                lowers.join(":")
            ),
        };
        let mnt = point.join("mnt");
        scratch.mount_overlay(&mnt, &data);
        let kernel = layerstack::testing::snapshot_dir(&mnt);
        scratch.unmount_last();
        tally.kernel_checks += 1;
        match kernel {
            Ok(kernel) if kernel == got => {}
            Ok(kernel) => tally.failures.push(fail(format!(
                "in op {in_flight} {op:?}: the kernel shows another tree: {}",
                difference(&got, &kernel)
            ))),
            Err(e) => tally.failures.push(fail(format!(
                "in op {in_flight} {op:?}: the kernel mount fails: {e}"
            ))),
        }
        let _ = std::fs::remove_dir_all(&point);
    }
}

#[test]
fn a_crash_at_any_step_leaves_the_old_or_the_new_tree() {
    if std::env::var_os(CHILD_BASE).is_some() || !privileged() {
        return;
    }
    if !harness::kernel_available() {
        return;
    }
    let cases: u64 = std::env::var("LAYERSTACK_CRASH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let first: u64 = std::env::var("LAYERSTACK_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let started = Instant::now();
    let mut tally = Tally::default();
    for seed in first..first + cases {
        for format in [WhiteoutFormat::Device, WhiteoutFormat::Xattr] {
            run_case(seed, format, &mut tally);
        }
    }
    // Past libtest's capture, so that the count shows in a passing run.
    let mut err = std::io::stderr();
    for hit in &tally.known {
        let _ = writeln!(err, "KNOWN WINDOW {hit}");
    }
    let _ = writeln!(
        err,
        "crash points tried: {} in {} cases ({} kernel mounts), {} failures, {} in the known \
         xattr-whiteout rename window, {:.1?}",
        tally.points,
        tally.cases,
        tally.kernel_checks,
        tally.failures.len(),
        tally.known.len(),
        started.elapsed()
    );
    assert!(
        tally.failures.is_empty(),
        "{} of {} crash points failed:\n{}",
        tally.failures.len(),
        tally.points,
        tally.failures.join("\n")
    );
}
