//! The build engine: a Dockerfile read top to bottom into an image, one
//! layer per instruction that changes the filesystem (`RUN`, `COPY`, `ADD`,
//! and `WORKDIR` when it has to create its directory), none for the others
//! (their history entries are `empty_layer`), as Docker builds it.

use std::collections::BTreeSet;

use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;

use super::dockerfile::{Command, Dockerfile, Flag, Instruction};
use super::ignore::Ignore;
use super::words::{WordError, expand_word};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::oci::image::digest::Digest;
use crate::oci::image::store::{BuildOptions, Image, ImageBuilder, ImageStore, StepOutcome};

mod base;
mod cache;
mod config;
mod copy;
mod run;

/// What to build.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildSpec {
    /// The Dockerfile: read by [`build`], named in its errors.
    pub dockerfile: Utf8PathBuf,
    /// The context directory (`COPY`'s sources; its `.dockerignore`).
    pub context: Utf8PathBuf,
    /// The tag the image gets in the store's layout.
    pub tag: String,
    /// `--build-arg K=V`, in order (a later one for the same name wins).
    pub build_args: Vec<(String, String)>,
    /// `--target`: the stage to build (by name); `None`, the last.
    pub target: Option<String>,
    /// `--no-cache`: build every step (the results are still stored).
    pub no_cache: bool,
    /// The time written into the history and config and the layers'
    /// latest mtime (`SOURCE_DATE_EPOCH`), and the compression.
    pub options: BuildOptions,
}

impl BuildSpec {
    /// Builds `dockerfile` with the context `context` into the tag `tag`,
    /// with default options.
    #[must_use]
    pub fn new(
        dockerfile: impl Into<Utf8PathBuf>,
        context: impl Into<Utf8PathBuf>,
        tag: impl Into<String>,
    ) -> BuildSpec {
        BuildSpec {
            dockerfile: dockerfile.into(),
            context: context.into(),
            tag: tag.into(),
            build_args: Vec::new(),
            target: None,
            no_cache: false,
            options: BuildOptions::default(),
        }
    }

    /// Adds `--build-arg key=value`.
    #[must_use]
    pub fn build_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> BuildSpec {
        self.build_args.push((key.into(), value.into()));
        self
    }

    /// Sets `--target`.
    #[must_use]
    pub fn target(mut self, stage: impl Into<String>) -> BuildSpec {
        self.target = Some(stage.into());
        self
    }

    /// Sets `--no-cache`.
    #[must_use]
    pub fn no_cache(mut self, no_cache: bool) -> BuildSpec {
        self.no_cache = no_cache;
        self
    }

    /// Sets the options (time and compression).
    #[must_use]
    pub fn options(mut self, options: BuildOptions) -> BuildSpec {
        self.options = options;
        self
    }
}

/// What a build reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum BuildEvent<'a> {
    /// Before each instruction: `STEP n/N: <text>` (`n` counts every
    /// instruction of every stage built, `FROM` included, from 1; `N` is
    /// their number).
    Step {
        /// `n`.
        number: usize,
        /// `N`.
        total: usize,
        /// The instruction as written, continuation lines joined.
        text: &'a str,
    },
    /// `RUN`'s output as it comes (whole lines, stdout and stderr
    /// together).
    Output(&'a [u8]),
    /// Bytes copied so far by the current `COPY` or `ADD`, of `total`.
    Progress {
        /// Bytes copied so far.
        done: u64,
        /// Bytes to copy.
        total: u64,
    },
    /// A warning (the parser's, an unused build arg, ...): one line,
    /// unescaped text.
    Warning(&'a str),
    /// A `RUN` failed: sent just before [`build`] returns its error.
    RunFailed {
        /// Its exit status (128 + the signal for a signal).
        status: i32,
        /// The last lines of its output.
        tail: &'a [String],
    },
    /// After each instruction.
    Done(&'a StepReport),
}

/// What one instruction did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// As in [`BuildEvent::Step`].
    pub number: usize,
    /// The Dockerfile line it starts on.
    pub line: usize,
    /// The stage's index (0-based, in the Dockerfile).
    pub stage: usize,
    /// The instruction as written, continuation lines joined.
    pub text: String,
    /// The layer it made; `None` for no layer (an `empty_layer` history
    /// entry, or `FROM`).
    pub layer: Option<LayerReport>,
    /// Whether the build cache gave its result.
    pub cached: bool,
}

/// A layer a step made (or the cache gave).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// The blob's digest.
    pub digest: Digest,
    /// The DiffID (digest of the uncompressed tar).
    pub diff_id: Digest,
    /// The blob's size (compressed).
    pub size: u64,
    /// The uncompressed tar's size.
    pub uncompressed_size: u64,
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The image, tagged [`BuildSpec::tag`].
    pub image: Image,
    /// Every step built, in order.
    pub steps: Vec<StepReport>,
}

/// Builds the Dockerfile `spec.dockerfile` with the context `spec.context`
/// into the image tagged `spec.tag` in `store`'s layout, reporting each
/// step to `events`, as Docker builds it: one layer per instruction that
/// changes the filesystem (`RUN`, `COPY`, `ADD`, and `WORKDIR` when it has
/// to create its directory), none for the others (their history entries
/// are `empty_layer`).
///
/// `RUN` needs root (it mounts the image with the kernel's overlayfs): a
/// build that is not root stops at the first `RUN` the cache does not
/// hold, with an error that says so, since every later step builds on
/// that `RUN`'s layer.
///
/// # Docker and buildah
/// Docker here means BuildKit, Docker's builder since 23.0. Where it and
/// buildah 1.28 (the peer the tests compare with) differ, this follows
/// BuildKit; the differences buildah shows:
/// - history `created_by` texts are BuildKit's (`RUN /bin/sh -c cmd #
///   buildkit`, `COPY a /b # buildkit`, `ENV K=V`, `EXPOSE map[80/tcp:{}]`,
///   `CMD ["x"]`, ...) with the comment `buildkit.dockerfile.v0`; buildah
///   writes `/bin/sh -c #(nop) ENV K=V` and the like;
/// - the config always has a `PATH` in `Env` (BuildKit adds Docker's
///   default when the base has none, also `FROM scratch`); buildah adds it
///   only to `RUN`'s environment;
/// - `ARG` lines inside a stage get history entries (`ARG K=V`), and `RUN`'s
///   history names the build args in scope (`RUN |1 K=V /bin/sh -c cmd`);
/// - `ONBUILD` adds no history entry (BuildKit records only the trigger in
///   `OnBuild`);
/// - stages the target does not need are skipped (buildah 1.28 builds
///   every stage before the target).
///
/// What is left out, with a clear error: remote sources (`ADD` of a URL or
/// a git repository: builds are offline), `RUN --mount` and `RUN
/// --security=insecure`, a base image's own `ONBUILD` triggers (refused,
/// not run), `COPY --parents` and `--exclude`.
///
/// # Cache
/// Each step has a key: the SHA-256 of its parent's key (for a stage's
/// first step, the base image's ChainID, or its parent stage's last key),
/// the instruction's expanded text and what else it depends on (`RUN`'s
/// environment, user and working directory; the content digest of
/// `COPY`'s sources and its options; the build args in scope). The layout
/// keeps each key's result in `.layerstack/build-cache/<key>.json` (the
/// layer's descriptor and DiffID, or none). A step whose key is there, and
/// whose layer's blob still is, reuses it and is reported `cached`; as in
/// Docker, after the first step of a stage that is not a hit every later
/// one is built. Every instruction has a key, so an `ENV` changed in the
/// Dockerfile rebuilds what follows it, as Docker's classic builder does.
///
/// # Errors
/// An [`Error`] for [`Operation::BuildImage`] on the Dockerfile (or the
/// file concerned), its detail starting `line N: ` (with the column for a
/// parse error): an unreadable or invalid Dockerfile, an unknown base
/// image (builds are offline: the base must be in an OCI layout), a
/// failing `RUN` (`line N: RUN exited with status S`, after a
/// [`BuildEvent::RunFailed`]), a `COPY` source that is missing, errors
/// reading the context or writing the layout.
pub fn build(
    store: &ImageStore,
    spec: &BuildSpec,
    events: &mut dyn FnMut(BuildEvent<'_>),
) -> Result<BuildReport> {
    let path = &spec.dockerfile;
    let bytes = std::fs::read(path).map_err(|e| Error::from_io(&e, Operation::BuildImage, path))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        Error::new(ErrorKind::InvalidInput, Operation::BuildImage, path)
            .with_detail(format!("line {line}: the Dockerfile is not UTF-8"))
    })?;
    let file = Dockerfile::parse(&text).map_err(|e| {
        Error::new(ErrorKind::InvalidInput, Operation::BuildImage, path).with_detail(e.to_string())
    })?;
    for warning in &file.warnings {
        events(BuildEvent::Warning(warning));
    }
    let ignore = read_ignore(&spec.context)?;
    let plan = Plan::new(&file, spec)?;
    let mut engine = Engine {
        store,
        spec,
        file: &file,
        plan: &plan,
        ignore,
        cache: cache::BuildCache::new(store.layout().root()),
        results: vec![None; plan.stages.len()],
        reports: Vec::new(),
        number: 0,
        used_args: BTreeSet::new(),
    };
    engine
        .used_args
        .extend(plan.globals.iter().map(|(k, _)| k.clone()));
    let image = engine.run(events)?;
    let unused: Vec<&str> = spec
        .build_args
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !engine.used_args.contains(*k))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !unused.is_empty() {
        let warning = format!(
            "one or more build args were not consumed: {}",
            unused.join(", ")
        );
        events(BuildEvent::Warning(&warning));
    }
    Ok(BuildReport {
        image,
        steps: engine.reports,
    })
}

/// The context's `.dockerignore` (none: nothing ignored).
fn read_ignore(context: &Utf8Path) -> Result<Ignore> {
    let path = context.join(".dockerignore");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            Ignore::parse(&text).map_err(|e| {
                Error::new(ErrorKind::InvalidInput, Operation::BuildImage, &path)
                    .with_detail(e.to_string())
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ignore::default()),
        Err(e) => Err(Error::from_io(&e, Operation::BuildImage, &path)),
    }
}

/// A stage of the Dockerfile.
struct StageDef<'f> {
    /// Its `FROM`.
    from: &'f Instruction,
    /// The base image, expanded with the global args.
    base: String,
    /// `--platform`, expanded with the global args.
    platform: Option<String>,
    /// `AS name`.
    name: Option<String>,
    /// The instructions after `FROM`.
    body: &'f [Instruction],
    /// The earlier stages it needs (its base, `COPY --from`).
    deps: Vec<usize>,
    /// Whether the target needs it.
    needed: bool,
}

/// The Dockerfile cut into stages, with the global args.
struct Plan<'f> {
    /// The args before the first `FROM`: name, value (a `--build-arg`, or
    /// the default expanded).
    globals: Vec<(String, Option<String>)>,
    stages: Vec<StageDef<'f>>,
    target: usize,
    /// How many instructions the stages built have.
    total: usize,
}

/// The build args' value of `name`, if given (the last one wins).
fn build_arg<'a>(spec: &'a BuildSpec, name: &str) -> Option<&'a str> {
    spec.build_args
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The variables of `args` that have a value.
fn valued(args: &[(String, Option<String>)]) -> Vec<(String, String)> {
    args.iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect()
}

fn fail(path: &Utf8Path, line: usize, kind: ErrorKind, message: impl AsRef<str>) -> Error {
    Error::new(kind, Operation::BuildImage, path)
        .with_detail(format!("line {line}: {}", message.as_ref()))
}

fn word_error(path: &Utf8Path, line: usize, word: &str, e: &WordError) -> Error {
    fail(
        path,
        line,
        ErrorKind::InvalidInput,
        format!("`{}`: {e}", word.escape_debug()),
    )
}

/// A flag's value (`None` if absent; a bare `--name` is an empty value).
fn flag<'a>(flags: &'a [Flag], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .rev()
        .find(|f| f.name == name)
        .map(|f| f.value.as_deref().unwrap_or(""))
}

impl<'f> Plan<'f> {
    fn new(file: &'f Dockerfile, spec: &BuildSpec) -> Result<Plan<'f>> {
        let path = &spec.dockerfile;
        let escape = file.escape;
        let mut globals: Vec<(String, Option<String>)> = Vec::new();
        let mut rest = file.instructions.as_slice();
        while let Some((first, tail)) = rest.split_first() {
            match &first.command {
                Command::From { .. } => break,
                Command::Arg(args) => {
                    for (name, default) in args {
                        let value = match (build_arg(spec, name), default) {
                            (Some(v), _) => Some(v.to_owned()),
                            (None, Some(d)) => Some(
                                expand_word(d, escape, &valued(&globals))
                                    .map_err(|e| word_error(path, first.line, d, &e))?,
                            ),
                            (None, None) => None,
                        };
                        globals.push((name.clone(), value));
                    }
                }
                other => {
                    return Err(fail(
                        path,
                        first.line,
                        ErrorKind::InvalidInput,
                        format!(
                            "{} before the first FROM: only ARG may come before it",
                            other.keyword()
                        ),
                    ));
                }
            }
            rest = tail;
        }
        if rest.is_empty() {
            return Err(fail(
                path,
                file.instructions.last().map_or(1, |i| i.line),
                ErrorKind::InvalidInput,
                "the Dockerfile has no FROM",
            ));
        }
        let global_vars = valued(&globals);
        let mut stages: Vec<StageDef<'f>> = Vec::new();
        while let Some((from, tail)) = rest.split_first() {
            let end = tail
                .iter()
                .position(|i| matches!(i.command, Command::From { .. }))
                .unwrap_or(tail.len());
            let Command::From { image, name } = &from.command else {
                unreachable!("a stage starts at its FROM");
            };
            let base = expand_word(image, escape, &global_vars)
                .map_err(|e| word_error(path, from.line, image, &e))?;
            if base.is_empty() {
                return Err(fail(
                    path,
                    from.line,
                    ErrorKind::InvalidInput,
                    format!("FROM {image}: the base image's name is empty"),
                ));
            }
            let platform = match flag(&from.flags, "platform") {
                Some(p) => Some(
                    expand_word(p, escape, &global_vars)
                        .map_err(|e| word_error(path, from.line, p, &e))?,
                ),
                None => None,
            };
            let index = stages.len();
            let mut deps = Vec::new();
            if let Some(dep) = stage_ref(&stages, &base) {
                deps.push(dep);
            }
            for ins in &tail[..end] {
                if let (Command::Copy(_), Some(from_flag)) =
                    (&ins.command, flag(&ins.flags, "from"))
                {
                    let source = expand_word(from_flag, escape, &global_vars)
                        .map_err(|e| word_error(path, ins.line, from_flag, &e))?;
                    if let Some(dep) = stage_ref(&stages, &source) {
                        deps.push(dep);
                    } else if source.parse::<usize>().is_ok() {
                        return Err(fail(
                            path,
                            ins.line,
                            ErrorKind::InvalidInput,
                            format!("COPY --from={source}: no earlier stage has that index"),
                        ));
                    }
                }
            }
            if let Some(name) = name
                && stages.iter().any(|s| {
                    s.name
                        .as_ref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
            {
                return Err(fail(
                    path,
                    from.line,
                    ErrorKind::InvalidInput,
                    format!("the stage name `{name}` is used twice"),
                ));
            }
            stages.push(StageDef {
                from,
                base,
                platform,
                name: name.clone(),
                body: &tail[..end],
                deps,
                needed: false,
            });
            debug_assert_eq!(stages.len(), index + 1);
            rest = &tail[end..];
        }
        let target = match &spec.target {
            None => stages.len() - 1,
            Some(t) => stages
                .iter()
                .position(|s| s.name.as_ref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        stages.iter().filter_map(|s| s.name.as_deref()).collect();
                    Error::new(ErrorKind::NotFound, Operation::BuildImage, path).with_detail(
                        format!(
                            "target stage `{t}` could not be found (stages: {})",
                            if names.is_empty() {
                                "none named".to_owned()
                            } else {
                                names.join(", ")
                            }
                        ),
                    )
                })?,
        };
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !stages[i].needed {
                stages[i].needed = true;
                todo.extend(stages[i].deps.iter().copied());
            }
        }
        let total = stages
            .iter()
            .filter(|s| s.needed)
            .map(|s| 1 + s.body.len())
            .sum();
        Ok(Plan {
            globals,
            stages,
            target,
            total,
        })
    }
}

/// The earlier stage `word` names (case-insensitively, or by index).
fn stage_ref(stages: &[StageDef<'_>], word: &str) -> Option<usize> {
    if let Some(i) = stages.iter().position(|s| {
        s.name
            .as_ref()
            .is_some_and(|n| n.eq_ignore_ascii_case(word))
    }) {
        return Some(i);
    }
    word.parse::<usize>().ok().filter(|&i| i < stages.len())
}

/// A stage being built.
struct Stage<'s> {
    index: usize,
    builder: ImageBuilder<'s>,
    /// The variables instructions see and `RUN` gets: the config's `Env`
    /// and the stage's `ARG`s, in order, a later one replacing an earlier
    /// one of the same name.
    env: Vec<(String, String)>,
    /// The `ARG`s declared in the stage, in order, with their values.
    args: Vec<(String, Option<String>)>,
    /// Whether the stage has set `CMD` (an `ENTRYPOINT` after it keeps it).
    cmd_set: bool,
    /// The last step's cache key.
    key: Digest,
    /// Whether a step of the stage was not a cache hit.
    missed: bool,
}

impl Stage<'_> {
    /// A string field of the config object (`User`, `WorkingDir`).
    fn config_str(&self, field: &str) -> Option<String> {
        self.builder
            .config()
            .config
            .get(field)?
            .as_str()
            .map(str::to_owned)
    }

    /// The config's `Shell`, or Docker's default.
    fn shell(&self) -> Vec<String> {
        match self.builder.config().config.get("Shell") {
            Some(Value::Array(words)) if !words.is_empty() => words
                .iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect(),
            _ => vec!["/bin/sh".to_owned(), "-c".to_owned()],
        }
    }

    /// The working directory (`/` when unset).
    fn workdir(&self) -> String {
        self.config_str("WorkingDir")
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_owned())
    }
}

/// Sets `key=value` in an environment list: in place if the name is there,
/// else at the end (Docker's `addEnv`).
fn set_var(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => value.clone_into(&mut slot.1),
        None => env.push((key.to_owned(), value.to_owned())),
    }
}

/// What a step did, for its report.
struct StepResult {
    layer: Option<LayerReport>,
    cached: bool,
}

struct Engine<'s, 'f> {
    store: &'s ImageStore,
    spec: &'s BuildSpec,
    file: &'f Dockerfile,
    plan: &'f Plan<'f>,
    ignore: Ignore,
    cache: cache::BuildCache,
    /// Each built stage's image and last cache key.
    results: Vec<Option<(Image, Digest)>>,
    reports: Vec<StepReport>,
    number: usize,
    /// The build args some `ARG` declared.
    used_args: BTreeSet<String>,
}

impl<'s> Engine<'s, '_> {
    fn path(&self) -> &Utf8Path {
        &self.spec.dockerfile
    }

    fn run(&mut self, events: &mut dyn FnMut(BuildEvent<'_>)) -> Result<Image> {
        let plan = self.plan;
        for (index, def) in plan.stages.iter().enumerate() {
            if !def.needed {
                continue;
            }
            let mut stage = self.start_stage(index, def, events)?;
            for ins in def.body {
                self.step(&mut stage, ins, events)?;
            }
            let key = stage.key;
            if index == plan.target {
                let image = stage.builder.finish(&self.spec.tag).map_err(|e| {
                    fail(
                        self.path(),
                        def.from.line,
                        e.kind(),
                        format!("writing the image: {e}"),
                    )
                })?;
                return Ok(image);
            }
            let image = stage.builder.finish_untagged().map_err(|e| {
                fail(
                    self.path(),
                    def.from.line,
                    e.kind(),
                    format!("writing the stage's image: {e}"),
                )
            })?;
            self.results[index] = Some((image, key));
        }
        unreachable!("the target stage is built")
    }

    /// `e` as an error of the build at `line` (kept as it is if it is one
    /// already).
    fn at(&self, line: usize, e: Error) -> Error {
        if e.operation() == Operation::BuildImage {
            if e.detail().is_some_and(|d| d.starts_with("line ")) {
                return e;
            }
            return fail(self.path(), line, e.kind(), e.cause());
        }
        fail(self.path(), line, e.kind(), e.to_string())
    }

    fn begin(&mut self, ins: &Instruction, events: &mut dyn FnMut(BuildEvent<'_>)) {
        self.number += 1;
        events(BuildEvent::Step {
            number: self.number,
            total: self.plan.total,
            text: &ins.source,
        });
    }

    fn end(
        &mut self,
        stage: usize,
        ins: &Instruction,
        result: StepResult,
        events: &mut dyn FnMut(BuildEvent<'_>),
    ) {
        let report = StepReport {
            number: self.number,
            line: ins.line,
            stage,
            text: ins.source.clone(),
            layer: result.layer,
            cached: result.cached,
        };
        events(BuildEvent::Done(&report));
        self.reports.push(report);
    }

    fn start_stage(
        &mut self,
        index: usize,
        def: &StageDef<'_>,
        events: &mut dyn FnMut(BuildEvent<'_>),
    ) -> Result<Stage<'s>> {
        self.begin(def.from, events);
        let line = def.from.line;
        let (base, key) = match stage_ref(&self.plan.stages[..index], &def.base) {
            Some(i) => {
                let (image, key) = self.results[i]
                    .clone()
                    .expect("a stage's dependencies are built before it");
                (Some(image), key)
            }
            None => {
                let image = base::resolve(self.store, &def.base, line, self.path())?;
                // The options change the layers' bytes (their compression,
                // the mtimes clamped to `created`): a build with others
                // must not reuse these.
                let created = self.spec.options.created;
                let key = cache::key(
                    &base::key(image.as_ref()),
                    &[
                        "options",
                        self.spec.options.compression.name(),
                        &format!("{}.{:09}", created.sec, created.nsec),
                    ],
                );
                (image, key)
            }
        };
        base::check_platform(base.as_ref(), def, self.path())?;
        if let Some(image) = &base {
            base::refuse_onbuild(image, def, self.path())?;
        }
        let mut builder = self
            .store
            .builder(base.as_ref(), self.spec.options)
            .map_err(|e| self.at(line, e))?;
        builder.set_history_comment(Some("buildkit.dockerfile.v0".to_owned()));
        // BuildKit makes sure the config has a PATH.
        let mut env: Vec<(String, String)> = config::env_pairs(builder.config());
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".to_owned(), run::DEFAULT_PATH.to_owned()));
            let list = config::env_list(&env);
            builder.update_config(|c| {
                c.insert("Env".to_owned(), list);
            });
        }
        let stage = Stage {
            index,
            builder,
            env,
            args: Vec::new(),
            cmd_set: false,
            key,
            missed: false,
        };
        self.end(
            index,
            def.from,
            StepResult {
                layer: None,
                cached: false,
            },
            events,
        );
        Ok(stage)
    }

    fn expand(&self, stage: &Stage<'_>, line: usize, word: &str) -> Result<String> {
        expand_word(word, self.file.escape, &stage.env)
            .map_err(|e| word_error(self.path(), line, word, &e))
    }

    /// `word` expanded with the args before the first `FROM` (as `FROM`
    /// lines and `--from` flags are).
    fn expand_global(&self, line: usize, word: &str) -> Result<String> {
        expand_word(word, self.file.escape, &valued(&self.plan.globals))
            .map_err(|e| word_error(self.path(), line, word, &e))
    }

    /// The build args in scope, for cache keys: `name=value` lines.
    fn args_in_scope(stage: &Stage<'_>) -> String {
        let mut out = String::new();
        for (k, v) in &stage.args {
            out.push_str(k);
            if let Some(v) = v {
                out.push('=');
                out.push_str(v);
            }
            out.push('\n');
        }
        out
    }

    fn step(
        &mut self,
        stage: &mut Stage<'s>,
        ins: &Instruction,
        events: &mut dyn FnMut(BuildEvent<'_>),
    ) -> Result<()> {
        self.begin(ins, events);
        let result = match &ins.command {
            Command::Run(_) => self.run_step(stage, ins, events)?,
            Command::Copy(_) | Command::Add(_) => self.copy_step(stage, ins, events)?,
            Command::Workdir(dir) => self.workdir_step(stage, ins, dir)?,
            Command::Arg(args) => self.arg_step(stage, ins, args)?,
            Command::From { .. } => unreachable!("FROM starts a stage"),
            _ => self.config_step(stage, ins)?,
        };
        self.end(stage.index, ins, result, events);
        Ok(())
    }

    /// Looks `key` up (unless the stage missed already or `--no-cache`).
    fn lookup(&self, stage: &Stage<'_>, key: &Digest) -> Option<cache::Entry> {
        if stage.missed || self.spec.no_cache {
            return None;
        }
        self.cache.get(self.store.layout(), key)
    }

    /// Records `key`'s result and makes it the stage's last key.
    fn record(&self, stage: &mut Stage<'_>, key: Digest, entry: &cache::Entry, hit: bool) {
        if !hit {
            // A cache that cannot be written costs speed, not correctness.
            let _ = self.cache.put(&key, entry);
            stage.missed = true;
        }
        stage.key = key;
    }

    /// A step that changes only the config: `apply` sets it and names the
    /// history entry (`None`: no entry, as `ONBUILD`).
    fn config_step(&mut self, stage: &mut Stage<'s>, ins: &Instruction) -> Result<StepResult> {
        let change = config::change(self, stage, ins)?;
        let key = cache::key(
            &stage.key,
            &[
                ins.command.keyword(),
                change.created_by.as_deref().unwrap_or(&ins.source),
                &Self::args_in_scope(stage),
            ],
        );
        let hit = self.lookup(stage, &key).is_some();
        if let Some(author) = change.author {
            stage.builder.set_author(Some(author));
        }
        let apply = change.apply;
        match &change.created_by {
            Some(created_by) => {
                stage
                    .builder
                    .configure(created_by, |c| apply(c))
                    .map_err(|e| self.at(ins.line, e))?;
            }
            None => stage.builder.update_config(|c| apply(c)),
        }
        for (k, v) in change.env {
            set_var(&mut stage.env, &k, &v);
        }
        if change.sets_cmd {
            stage.cmd_set = true;
        }
        self.record(stage, key, &cache::Entry::NoLayer, hit);
        Ok(StepResult {
            layer: None,
            cached: hit,
        })
    }

    fn arg_step(
        &mut self,
        stage: &mut Stage<'s>,
        ins: &Instruction,
        args: &[(String, Option<String>)],
    ) -> Result<StepResult> {
        let mut parts = Vec::new();
        for (name, default) in args {
            self.used_args.insert(name.clone());
            let value = match build_arg(self.spec, name) {
                Some(v) => Some(v.to_owned()),
                None => match default {
                    Some(d) => Some(self.expand(stage, ins.line, d)?),
                    // Inherited from the global scope.
                    None => self
                        .plan
                        .globals
                        .iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .and_then(|(_, v)| v.clone()),
                },
            };
            if let Some(v) = &value {
                set_var(&mut stage.env, name, v);
                parts.push(format!("{name}={v}"));
            } else {
                parts.push(name.clone());
            }
            stage.args.push((name.clone(), value));
        }
        let created_by = format!("ARG {}", parts.join(" "));
        let key = cache::key(&stage.key, &["ARG", &created_by]);
        let hit = self.lookup(stage, &key).is_some();
        stage
            .builder
            .configure(&created_by, |_| {})
            .map_err(|e| self.at(ins.line, e))?;
        self.record(stage, key, &cache::Entry::NoLayer, hit);
        Ok(StepResult {
            layer: None,
            cached: hit,
        })
    }

    fn workdir_step(
        &mut self,
        stage: &mut Stage<'s>,
        ins: &Instruction,
        dir: &str,
    ) -> Result<StepResult> {
        let expanded = self.expand(stage, ins.line, dir)?;
        let wd = config::normalize_workdir(&stage.workdir(), &expanded);
        let user = stage.config_str("User").unwrap_or_default();
        let created_by = format!("WORKDIR {wd}");
        let key = cache::key(&stage.key, &["WORKDIR", &wd, &user]);
        let wd_value = Value::String(wd.clone());
        stage.builder.update_config(|c| {
            c.insert("WorkingDir".to_owned(), wd_value);
        });
        if let Some(entry) = self.lookup(stage, &key)
            && let Some(result) = self.reuse(stage, ins, &created_by, &entry)
        {
            self.record(stage, key, &entry, true);
            return Ok(result);
        }
        let owner = if user.is_empty() {
            None
        } else {
            let view = stage.builder.view().map_err(|e| self.at(ins.line, e))?;
            Some(
                run::resolve_user(&view, &user)
                    .map_err(|m| fail(self.path(), ins.line, ErrorKind::NotFound, m))?,
            )
        };
        let outcome = stage
            .builder
            .step(&created_by, |fs| config::make_workdir(fs, &wd, owner))
            .map_err(|e| self.at(ins.line, e))?;
        let (layer, entry) = self.outcome(stage, &outcome);
        self.record(stage, key, &entry, false);
        Ok(StepResult {
            layer,
            cached: false,
        })
    }

    /// A cache hit applied: its layer (if any) added with `created_by`;
    /// `None` if that fails (then the step is built).
    fn reuse(
        &self,
        stage: &mut Stage<'_>,
        ins: &Instruction,
        created_by: &str,
        entry: &cache::Entry,
    ) -> Option<StepResult> {
        let _ = ins;
        match entry {
            cache::Entry::NoLayer => {
                stage.builder.configure(created_by, |_| {}).ok()?;
                Some(StepResult {
                    layer: None,
                    cached: true,
                })
            }
            cache::Entry::Layer(layer) => {
                stage
                    .builder
                    .add_stored_layer(layer.descriptor(), layer.diff_id, created_by)
                    .ok()?;
                Some(StepResult {
                    layer: Some(LayerReport::clone(layer)),
                    cached: true,
                })
            }
        }
    }

    /// The report and cache entry of what a built step gave.
    fn outcome(
        &self,
        stage: &Stage<'_>,
        outcome: &StepOutcome,
    ) -> (Option<LayerReport>, cache::Entry) {
        match outcome {
            StepOutcome::Empty => (None, cache::Entry::NoLayer),
            StepOutcome::Layer(descriptor) => {
                let diff_id = *stage
                    .builder
                    .config()
                    .diff_ids
                    .last()
                    .expect("a layer step adds a DiffID");
                let uncompressed_size = self
                    .store
                    .layout()
                    .layer_record(&descriptor.digest, &diff_id)
                    .map_or(0, |r| r.uncompressed_size);
                let layer = LayerReport {
                    digest: descriptor.digest,
                    diff_id,
                    size: descriptor.size,
                    uncompressed_size,
                };
                (
                    Some(layer.clone()),
                    cache::Entry::Layer(cache::StoredLayer::new(&descriptor.media_type, layer)),
                )
            }
        }
    }
}
