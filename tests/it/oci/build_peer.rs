//! Dockerfile builds against buildah (Debian's 1.28): each Dockerfile
//! here, with a context the test writes, is built by
//! `buildah bud --isolation chroot --layers` and by `oci::build::build`,
//! and the two images must have the same layers, made by the same lines,
//! with the same changes (`layerstack diff`'s A/C/D list), and flatten
//! (with umoci, for both) to the same tree. Where buildah and Docker part
//! and we follow Docker, the test says so and asserts the difference.
//!
//! Needs root (buildah's vfs storage and chroot isolation, owners), buildah
//! and umoci, and busybox-static for the shell RUN runs; else `SKIP`,
//! unless `LAYERSTACK_REQUIRE_ROOT` / `LAYERSTACK_REQUIRE_TOOLS` are set.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use camino::Utf8Path;
use layerstack::Timestamp;
use layerstack::oci::build::{BuildEvent, BuildSpec, Command as Keyword, Dockerfile, build};
use layerstack::oci::{BuildOptions, Image, ImageStore, OciLayout};

use crate::support::tools::{
    BUSYBOX, Scratch, Tree, busybox, difference, dir_tree, have, root, run,
};

/// The context files' modification time (2001-01-01): older than any
/// build, so a file that has it or an older one came from the context or
/// the base.
const CONTEXT_MTIME: i64 = 978_307_200;

/// The date our builds get (2020-01-01, `SOURCE_DATE_EPOCH`): after the
/// context's files, before the test runs.
const BUILD_DATE: i64 = 1_577_836_800;

/// Whether everything the comparison needs is here; prints why not.
fn peers(test: &str) -> bool {
    root(test) && have("buildah", test) && have("umoci", test) && busybox(test)
}

/// A base image made through the library.
#[derive(Clone, Copy, Debug)]
enum Base {
    /// A tiny root filesystem with a shell (busybox), for RUN.
    Busybox,
    /// What `layerstack demo` writes (tag `demo`): no shell.
    Demo,
}

/// Writes `base` into a new layout at `dir`; its tag is `base`.
fn make_base(base: Base, dir: &Utf8Path) {
    match base {
        Base::Busybox => {
            let store = ImageStore::new(OciLayout::create(dir).unwrap());
            let shell = std::fs::read(BUSYBOX).unwrap();
            let mut build = store.builder(None, BuildOptions::default()).unwrap();
            build
                .step("busybox base", |fs| {
                    fs.create_dir_all("bin")?;
                    fs.write("bin/busybox", &shell)?;
                    fs.set_permissions("bin/busybox", 0o755)?;
                    fs.symlink("busybox", "bin/sh")?;
                    // What buildah mounts or writes over for a RUN (and
                    // Docker keeps in its init layer, never committed):
                    // with them in the base buildah's RUN layers hold
                    // only what the command changed, as Docker's do.
                    for dir in ["dev", "proc", "sys", "run"] {
                        fs.create_dir(dir)?;
                    }
                    fs.create_dir("tmp")?;
                    fs.set_permissions("tmp", 0o1777)?;
                    fs.create_dir_all("etc/sub/deeper")?;
                    for file in ["hosts", "hostname", "resolv.conf"] {
                        fs.write(format!("etc/{file}"), "")?;
                    }
                    fs.write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")?;
                    fs.write("etc/group", "root:x:0:\n")?;
                    fs.write("etc/gone", "old\n")?;
                    fs.write("etc/keep", "kept\n")?;
                    fs.write("etc/keep2", "kept too\n")?;
                    fs.write("etc/sub/x", "x\n")?;
                    fs.write("etc/sub/deeper/y", "y\n")?;
                    fs.create_dir_all("var/lib/app")?;
                    fs.write("var/lib/app/state", "1\n")
                })
                .unwrap();
            build.finish("base").unwrap();
        }
        Base::Demo => {
            run(Command::new(crate::support::tools::tool_exe())
                .arg("demo")
                .arg(dir));
            let store = ImageStore::new(OciLayout::open(dir).unwrap());
            let demo = store.image(Some("demo")).unwrap();
            store.layout().set_tag("base", demo.descriptor).unwrap();
        }
    }
}

/// One comparison: a Dockerfile, its context, how to build it.
struct Case {
    name: &'static str,
    base: Base,
    dockerfile: &'static str,
    /// Context files: (path, contents); a path ending in `/` is a
    /// directory, `-> target` a symlink, `=> name` a hard link to `name`.
    files: &'static [(&'static str, &'static str)],
    build_args: &'static [(&'static str, &'static str)],
    target: Option<&'static str>,
}

impl Case {
    /// Writes the context into `dir`, every mtime set to [`CONTEXT_MTIME`].
    fn write_context(&self, dir: &Utf8Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("Dockerfile"), self.dockerfile).unwrap();
        for (path, what) in self.files {
            let at = dir.join(path.trim_end_matches('/'));
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            if path.ends_with('/') {
                std::fs::create_dir_all(&at).unwrap();
            } else if let Some(target) = what.strip_prefix("-> ") {
                std::os::unix::fs::symlink(target, &at).unwrap();
            } else if let Some(name) = what.strip_prefix("=> ") {
                std::fs::hard_link(dir.join(name), &at).unwrap();
            } else {
                std::fs::write(&at, what).unwrap();
            }
        }
        run(Command::new("find")
            .arg(dir)
            .args(["-exec", "touch", "-h", "-d"])
            .arg(format!("@{CONTEXT_MTIME}"))
            .args(["{}", "+"]));
    }

    /// The instructions of the stage built (`--target`, else the last),
    /// FROM first.
    fn stage(&self) -> Vec<(usize, Keyword, String)> {
        let parsed = Dockerfile::parse(self.dockerfile).unwrap();
        let mut stages: Vec<Vec<_>> = Vec::new();
        for i in parsed.instructions {
            if let Keyword::From { .. } = i.command {
                stages.push(Vec::new());
            }
            if let Some(stage) = stages.last_mut() {
                stage.push((i.line, i.command, i.source));
            }
        }
        let at = match self.target {
            None => stages.len() - 1,
            Some(name) => stages
                .iter()
                .position(|s| {
                    s[0].2
                        .to_ascii_lowercase()
                        .ends_with(&format!(" as {name}"))
                })
                .expect("the target stage"),
        };
        stages.swap_remove(at)
    }
}

/// What a build gave, for comparing.
#[derive(Debug)]
struct Built {
    /// The layers above the base's: the line that made each, and its
    /// changes as `layerstack diff` prints them.
    layers: Vec<(usize, Vec<String>)>,
    /// The flattened root filesystem.
    tree: Tree,
    /// The mtimes of non-directories: paths to seconds.
    mtimes: BTreeMap<String, i64>,
    /// The config's Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts
    /// and Labels, but buildah's own `io.buildah.version` label (Docker
    /// adds none).
    config: BTreeMap<String, serde_json::Value>,
}

/// buildah with a store of its own under a scratch directory.
struct Buildah {
    scratch: Scratch,
}

impl Buildah {
    fn new(name: &str) -> Buildah {
        Buildah {
            scratch: Scratch::new(&format!("buildah-{name}")),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root")
            .arg(self.scratch.path("root"))
            .arg("--runroot")
            .arg(self.scratch.path("runroot"))
            .args(["--storage-driver", "vfs"]);
        cmd
    }

    /// Pulls `layout:tag` into the store; the image's id.
    fn pull(&self, layout: &Utf8Path, tag: &str) -> String {
        // A `.` in a directory of the path would be read as a registry
        // host: Scratch paths have none.
        assert!(!layout.as_str().contains('.'), "{layout}");
        run(self
            .command()
            .args(["pull", "--quiet"])
            .arg(format!("oci:{layout}:{tag}")))
        .trim()
        .to_owned()
    }

    /// `buildah bud` of the case with `BASE` set to `base`, tagged `name`:
    /// its output, or its exit status and output when it fails.
    fn bud(
        &self,
        case: &Case,
        context: &Utf8Path,
        base: &str,
        name: &str,
    ) -> Result<String, (i32, String)> {
        let mut cmd = self.command();
        cmd.args(["bud", "--isolation", "chroot", "--layers", "--pull-never"])
            .arg("--build-arg")
            .arg(format!("BASE={base}"));
        for (k, v) in case.build_args {
            cmd.arg("--build-arg").arg(format!("{k}={v}"));
        }
        if let Some(target) = case.target {
            cmd.args(["--target", target]);
        }
        cmd.arg("-f")
            .arg(context.join("Dockerfile"))
            .args(["-t", name])
            .arg(context);
        let out = cmd.output().expect("run buildah bud");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => Ok(text),
            status => Err((status.unwrap_or(-1), text)),
        }
    }

    /// Pushes `name` into a new layout at `out`, tag `tag`.
    fn push(&self, name: &str, out: &Utf8Path, tag: &str) {
        run(self
            .command()
            .args(["push", "--quiet", name])
            .arg(format!("oci:{out}:{tag}")));
    }
}

/// The lines that made buildah's layers above the base's: its history
/// has one entry per instruction of the stage after FROM (a `#(nop)`
/// entry for those that made no layer), in order.
fn buildah_layer_lines(case: &Case, image: &Image, base_history: usize) -> Vec<usize> {
    let stage = case.stage();
    let history = &image.config.history[base_history..];
    assert_eq!(
        history.len(),
        stage.len() - 1,
        "{}: buildah's history {history:#?} against the stage {stage:#?}",
        case.name
    );
    let mut lines = Vec::new();
    for (h, (line, command, source)) in history.iter().zip(&stage[1..]) {
        let created_by = h.created_by.as_deref().unwrap_or_default();
        let keyword = command.keyword();
        match created_by.split_once("#(nop) ") {
            Some((_, rest)) => assert!(
                rest.starts_with(keyword),
                "{}: line {line} `{source}` has `{created_by}` in buildah's history",
                case.name
            ),
            None => assert_eq!(keyword, "RUN", "{}: line {line}", case.name),
        }
        if !h.empty_layer {
            lines.push(*line);
        }
    }
    lines
}

/// Unpacks `layout:tag` with umoci; the tree and the mtimes of what is
/// not a directory.
fn unpack(layout: &Utf8Path, tag: &str, dir: &Utf8Path) -> (Tree, BTreeMap<String, i64>) {
    run(Command::new("umoci")
        .args(["raw", "unpack", "--image"])
        .arg(format!("{layout}:{tag}"))
        .arg(dir));
    let tree = dir_tree(dir.as_std_path());
    let mut mtimes = BTreeMap::new();
    for (path, e) in &tree.entries {
        if e.meta.file_type != layerstack::FileType::Dir {
            let mtime = std::fs::symlink_metadata(dir.join(path.to_string()))
                .unwrap()
                .mtime();
            mtimes.insert(path.to_string(), mtime);
        }
    }
    (tree, mtimes)
}

/// What the image at `layout:tag` is, for comparing.
fn built(
    layout: &Utf8Path,
    tag: &str,
    base_layers: usize,
    lines: Vec<usize>,
    scratch: &Scratch,
    side: &str,
) -> Built {
    let store = ImageStore::new(OciLayout::open(layout).unwrap());
    let image = store.image(Some(tag)).unwrap();
    let changes = store.changes(&image).unwrap();
    assert_eq!(
        changes.len(),
        base_layers + lines.len(),
        "{side}: the layers against the lines {lines:?}"
    );
    let layers = lines
        .into_iter()
        .zip(&changes[base_layers..])
        .map(|(line, c)| (line, c.iter().map(ToString::to_string).collect()))
        .collect();
    let (tree, mtimes) = unpack(layout, tag, &scratch.path(&format!("rootfs-{side}")));
    let mut config: BTreeMap<String, serde_json::Value> = image
        .config
        .config
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| {
            [
                "Env",
                "Cmd",
                "Entrypoint",
                "WorkingDir",
                "User",
                "ExposedPorts",
                "Labels",
            ]
            .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(serde_json::Value::Object(labels)) = config.get_mut("Labels") {
        labels.remove("io.buildah.version");
        if labels.is_empty() {
            config.remove("Labels");
        }
    }
    Built {
        layers,
        tree,
        mtimes,
        config,
    }
}

/// The base layout (tag `base`) and the context of `case`, made in
/// `scratch`; the base image.
fn prepare(case: &Case, scratch: &Scratch) -> Image {
    make_base(case.base, &scratch.path("base"));
    case.write_context(&scratch.path("context"));
    ImageStore::new(OciLayout::open(scratch.path("base")).unwrap())
        .image(Some("base"))
        .unwrap()
}

/// Builds the case with buildah: what it built, or the status of the
/// failed build and its output.
fn build_with_buildah(
    case: &Case,
    scratch: &Scratch,
    base: &Image,
) -> Result<Built, (i32, String)> {
    let buildah = Buildah::new(case.name);
    let id = buildah.pull(&scratch.path("base"), "base");
    buildah.bud(case, &scratch.path("context"), &id, case.name)?;
    let out = scratch.path("buildah-out");
    buildah.push(case.name, &out, "built");
    let store = ImageStore::new(OciLayout::open(&out).unwrap());
    let image = store.image(Some("built")).unwrap();
    let lines = buildah_layer_lines(case, &image, base.config.history.len());
    Ok(built(
        &out,
        "built",
        base.layers().len(),
        lines,
        scratch,
        "buildah",
    ))
}

/// A RUN that failed in our build: its status, last lines, and the error.
#[derive(Debug)]
struct Failed {
    status: i32,
    tail: Vec<String>,
    error: String,
}

/// Builds the case with `oci::build::build` (`FROM $BASE` is the base
/// layout's tag).
fn build_with_ours(case: &Case, scratch: &Scratch, base: &Image) -> Result<Built, Failed> {
    let out = scratch.path("ours-out");
    let store = ImageStore::new(OciLayout::create(&out).unwrap());
    let context = scratch.path("context");
    let mut spec = BuildSpec::new(context.join("Dockerfile"), context.clone(), "built")
        .build_arg("BASE", format!("{}:base", scratch.path("base")))
        .options(BuildOptions::default().created(Timestamp::new(BUILD_DATE, 0)));
    for (k, v) in case.build_args {
        spec = spec.build_arg(*k, *v);
    }
    if let Some(target) = case.target {
        spec = spec.target(target);
    }
    let mut failed = None;
    let report = build(&store, &spec, &mut |event| {
        if let BuildEvent::RunFailed { status, tail } = event {
            failed = Some((status, tail.to_vec()));
        }
    });
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            let (status, tail) =
                failed.unwrap_or_else(|| panic!("{}: our build failed: {e}", case.name));
            return Err(Failed {
                status,
                tail,
                error: e.to_string(),
            });
        }
    };
    // The layers of the image built: the steps of its stage that made one.
    let stage = report.steps.last().expect("steps").stage;
    let lines = report
        .steps
        .iter()
        .filter(|s| s.stage == stage && s.layer.is_some())
        .map(|s| s.line)
        .collect();
    Ok(built(
        &out,
        "built",
        base.layers().len(),
        lines,
        scratch,
        "ours",
    ))
}

/// The expected layers: (line, changes).
type Layers = &'static [(usize, &'static [&'static str])];

fn layers_of(built: &Built) -> Vec<(usize, Vec<&str>)> {
    built
        .layers
        .iter()
        .map(|(line, c)| (*line, c.iter().map(String::as_str).collect()))
        .collect()
}

fn expected(layers: Layers) -> Vec<(usize, Vec<&'static str>)> {
    layers.iter().map(|(l, c)| (*l, c.to_vec())).collect()
}

/// Builds `case` with buildah and with ours; checks buildah's layers are
/// `want` (the line that made each and its changes) and ours are
/// `docker` (`None`: the same), and that both flatten to the same tree
/// (old mtimes included) with the same config. Buildah's result.
fn compare(test: &str, case: &Case, want: Layers, docker: Option<Layers>) -> Built {
    let scratch = Scratch::new(&format!("peer-{}", case.name));
    let base = prepare(case, &scratch);
    let theirs = build_with_buildah(case, &scratch, &base)
        .unwrap_or_else(|(s, out)| panic!("{test}: buildah failed ({s}): {out}"));
    assert_eq!(
        layers_of(&theirs),
        expected(want),
        "{test}: buildah's layers"
    );
    let ours = build_with_ours(case, &scratch, &base)
        .unwrap_or_else(|f| panic!("{test}: our build failed: {f:?}"));
    assert_eq!(
        layers_of(&ours),
        expected(docker.unwrap_or(want)),
        "{test}: our layers"
    );
    if let Some(d) = difference(&theirs.tree, &ours.tree) {
        panic!("{test}: the flattened trees differ: {d}");
    }
    for (path, theirs_mtime) in &theirs.mtimes {
        let ours_mtime = ours.mtimes[path];
        if *theirs_mtime <= CONTEXT_MTIME {
            // From the context or the base: kept by both.
            assert_eq!(ours_mtime, *theirs_mtime, "{test}: the mtime of {path}");
        } else {
            // Made during the build: buildah keeps the clock's time; we
            // clamp it to the build's date (SOURCE_DATE_EPOCH, else 1970),
            // as BuildKit does with SOURCE_DATE_EPOCH, so that a build is
            // reproducible.
            assert_eq!(ours_mtime, BUILD_DATE, "{test}: the mtime of {path}");
        }
    }
    assert_eq!(theirs.config, ours.config, "{test}: the config");
    theirs
}

const COPY_TREE: Case = Case {
    name: "copytree",
    base: Base::Demo,
    dockerfile: "ARG BASE\nFROM $BASE\nENV APP=/app\nCOPY tree $APP/\nCOPY top.txt /etc/\nLABEL a=b\nCMD [\"/usr/bin/hello\"]\n",
    files: &[
        ("tree/f", "hello\n"),
        ("tree/f2", "=> tree/f"),
        ("tree/link", "-> f"),
        ("tree/abs", "-> /etc/app.conf"),
        ("tree/sub/", ""),
        ("tree/sub/s", "s\n"),
        ("tree/sub/f3", "=> tree/f"),
        ("tree/empty/", ""),
        ("top.txt", "top\n"),
    ],
    build_args: &[],
    target: None,
};

#[test]
fn build_copies_a_tree_with_symlinks_and_hard_links_as_buildah() {
    let test = "build_copies_a_tree_with_symlinks_and_hard_links_as_buildah";
    if !peers(test) {
        return;
    }
    let b = compare(
        test,
        &COPY_TREE,
        &[
            (
                4,
                &[
                    "A /app",
                    "A /app/abs",
                    "A /app/empty",
                    "A /app/f",
                    "A /app/f2",
                    "A /app/link",
                    "A /app/sub",
                    "A /app/sub/f3",
                    "A /app/sub/s",
                ],
            ),
            (5, &["C /etc", "A /etc/top.txt"]),
        ],
        None,
    );
    // Hard links in the context stay one file.
    assert!(
        b.tree
            .links
            .contains(&vec!["app/f".into(), "app/f2".into(), "app/sub/f3".into()]),
        "{:?}",
        b.tree.links
    );
    assert_eq!(b.mtimes["app/f"], CONTEXT_MTIME);
}

#[test]
fn build_runs_deletes_from_the_base_as_buildah() {
    let test = "build_runs_deletes_from_the_base_as_buildah";
    if !peers(test) {
        return;
    }
    let case = Case {
        name: "rundelete",
        base: Base::Busybox,
        dockerfile: "ARG BASE\nFROM $BASE\nRUN rm /etc/gone && rm -r /etc/sub\n",
        files: &[],
        build_args: &[],
        target: None,
    };
    compare(
        test,
        &case,
        &[(3, &["C /etc", "D /etc/gone", "D /etc/sub"])],
        None,
    );
}

#[test]
fn build_deletes_and_recreates_a_directory_as_buildah() {
    let test = "build_deletes_and_recreates_a_directory_as_buildah";
    if !peers(test) {
        return;
    }
    let case = Case {
        name: "recreate",
        base: Base::Busybox,
        dockerfile: "ARG BASE\nFROM $BASE\n\
            RUN rm -r /etc/sub && mkdir /etc/sub && echo new > /etc/sub/new\n\
            RUN rm -r /var/lib/app\n\
            RUN mkdir /var/lib/app && echo 2 > /var/lib/app/state2\n",
        files: &[],
        build_args: &[],
        target: None,
    };
    compare(
        test,
        &case,
        &[
            (
                3,
                &[
                    "C /etc",
                    "C /etc/sub",
                    "D /etc/sub/deeper",
                    "A /etc/sub/new",
                    "D /etc/sub/x",
                ],
            ),
            (4, &["C /var", "C /var/lib", "D /var/lib/app"]),
            (
                5,
                &[
                    "C /var",
                    "C /var/lib",
                    "A /var/lib/app",
                    "A /var/lib/app/state2",
                ],
            ),
        ],
        None,
    );
}

#[test]
fn build_changes_only_modes_or_owners_as_buildah() {
    let test = "build_changes_only_modes_or_owners_as_buildah";
    if !peers(test) {
        return;
    }
    let case = Case {
        name: "chmodchown",
        base: Base::Busybox,
        dockerfile: "ARG BASE\nFROM $BASE\n\
            RUN chmod 600 /etc/keep\n\
            RUN chown 1:2 /etc/keep2\n\
            RUN chmod 700 /etc/sub\n\
            RUN true\n",
        files: &[],
        build_args: &[],
        target: None,
    };
    compare(
        test,
        &case,
        &[
            (3, &["C /etc", "C /etc/keep"]),
            (4, &["C /etc", "C /etc/keep2"]),
            (5, &["C /etc", "C /etc/sub"]),
            (6, &[]),
        ],
        // A RUN that changes nothing: buildah (as Docker's classic
        // builder) keeps an empty layer; BuildKit, and we, make none and
        // mark the history entry empty_layer.
        Some(&[
            (3, &["C /etc", "C /etc/keep"]),
            (4, &["C /etc", "C /etc/keep2"]),
            (5, &["C /etc", "C /etc/sub"]),
        ]),
    );
}

#[test]
fn build_keeps_env_workdir_and_user_between_changes_as_buildah() {
    let test = "build_keeps_env_workdir_and_user_between_changes_as_buildah";
    if !peers(test) {
        return;
    }
    let case = Case {
        name: "envworkdiruser",
        base: Base::Busybox,
        dockerfile: "ARG BASE\nFROM $BASE\n\
            ENV GREETING=\"hello world\" DIR=/etc\n\
            WORKDIR $DIR\n\
            RUN echo \"$GREETING\" > greeting\n\
            USER 1000:1000\n\
            WORKDIR /tmp\n\
            RUN echo $(id -u) > /tmp/by-user && pwd > /tmp/where\n\
            USER 0\n\
            WORKDIR /made/here\n\
            ENV LATE=1\n\
            RUN echo \"$LATE\" > late\n",
        files: &[],
        build_args: &[],
        target: None,
    };
    compare(
        test,
        &case,
        &[
            (5, &["C /etc", "A /etc/greeting"]),
            (8, &["C /tmp", "A /tmp/by-user", "A /tmp/where"]),
            // buildah makes no layer for a WORKDIR that must create its
            // directory: the next RUN creates it, in its own layer (and
            // without a RUN after it, the image lacks the directory).
            (12, &["A /made", "A /made/here", "A /made/here/late"]),
        ],
        // Docker (both builders) creates the directory at the WORKDIR, in
        // a layer of its own, as we do: the RUN's layer then only adds its
        // file (its parents show as changed, being in the layer).
        Some(&[
            (5, &["C /etc", "A /etc/greeting"]),
            (8, &["C /tmp", "A /tmp/by-user", "A /tmp/where"]),
            (10, &["A /made", "A /made/here"]),
            (12, &["C /made", "C /made/here", "A /made/here/late"]),
        ]),
    );
}

#[test]
fn build_copies_from_a_stage_up_to_the_target_as_buildah() {
    let test = "build_copies_from_a_stage_up_to_the_target_as_buildah";
    if !peers(test) {
        return;
    }
    let case = Case {
        name: "multistage",
        base: Base::Busybox,
        dockerfile: "ARG BASE\n\
            FROM $BASE AS build\n\
            RUN mkdir /out && echo built > /out/artifact && ln -s artifact /out/link\n\
            FROM $BASE AS final\n\
            COPY --from=build /out /srv/out\n\
            RUN cat /srv/out/artifact > /etc/copied\n\
            FROM final AS extra\n\
            RUN echo never > /never\n",
        files: &[],
        build_args: &[],
        target: Some("final"),
    };
    compare(
        test,
        &case,
        &[
            (
                5,
                &[
                    "A /srv",
                    "A /srv/out",
                    "A /srv/out/artifact",
                    "A /srv/out/link",
                ],
            ),
            (6, &["C /etc", "A /etc/copied"]),
        ],
        None,
    );
}

#[test]
fn build_leaves_out_what_dockerignore_names_as_buildah() {
    let test = "build_leaves_out_what_dockerignore_names_as_buildah";
    if !peers(test) {
        return;
    }
    let case = Case {
        name: "dockerignore",
        base: Base::Demo,
        dockerfile: "ARG BASE\nFROM $BASE\nCOPY . /app/\n",
        files: &[
            (".dockerignore", "*.log\nsecret/\n!keep.log\nDockerfile\n"),
            ("a.txt", "a\n"),
            ("b.log", "b\n"),
            ("keep.log", "keep\n"),
            ("secret/key", "k\n"),
            ("sub/c.log", "c\n"),
            ("sub/d", "d\n"),
        ],
        build_args: &[],
        target: None,
    };
    compare(
        test,
        &case,
        &[(
            3,
            &[
                "A /app",
                "A /app/.dockerignore",
                "A /app/a.txt",
                "A /app/keep.log",
                "A /app/sub",
                "A /app/sub/c.log",
                "A /app/sub/d",
            ],
        )],
        None,
    );
}

#[test]
fn build_takes_arg_before_from_and_build_args_as_buildah() {
    let test = "build_takes_arg_before_from_and_build_args_as_buildah";
    if !peers(test) {
        return;
    }
    let case = Case {
        name: "args",
        base: Base::Busybox,
        dockerfile: "ARG BASE\nARG GREETING=hi\nFROM $BASE\nARG GREETING\nARG V=1\n\
            RUN echo \"$GREETING $V\" > /etc/args\n",
        files: &[],
        build_args: &[("V", "2")],
        target: None,
    };
    let b = compare(test, &case, &[(6, &["C /etc", "A /etc/args"])], None);
    let args = b
        .tree
        .entries
        .iter()
        .find(|(p, _)| *p == "etc/args")
        .unwrap()
        .1;
    assert_eq!(&args.data[..], b"hi 2\n");
}

#[test]
fn build_stops_at_a_failing_run_as_buildah() {
    let test = "build_stops_at_a_failing_run_as_buildah";
    if !peers(test) {
        return;
    }
    let case = Case {
        name: "failing",
        base: Base::Busybox,
        dockerfile: "ARG BASE\nFROM $BASE\nRUN echo before > /etc/before\n\
            RUN echo failing; exit 3\nRUN echo never\n",
        files: &[],
        build_args: &[],
        target: None,
    };
    let scratch = Scratch::new("peer-failing");
    let base = prepare(&case, &scratch);
    let Err((status, output)) = build_with_buildah(&case, &scratch, &base) else {
        panic!("{test}: buildah built a failing RUN");
    };
    // buildah exits with the RUN's status.
    assert_eq!(status, 3, "{output}");
    assert!(
        output.contains("Error: building at STEP \"RUN echo failing; exit 3\": exit status 3"),
        "{output}"
    );
    assert!(output.contains("\nfailing\n"), "{output}");
    assert!(!output.contains("never"), "{output}");
    // Ours stops there too, with the same status and the RUN's last line,
    // and tags nothing.
    let failed = build_with_ours(&case, &scratch, &base).expect_err("our build of a failing RUN");
    assert_eq!(failed.status, status);
    assert_eq!(failed.tail, ["failing"]);
    let dockerfile = scratch.path("context/Dockerfile");
    assert_eq!(
        failed.error,
        format!("failed to build image `{dockerfile}`: line 4: RUN exited with status 3")
    );
    let layout = OciLayout::open(scratch.path("ours-out")).unwrap();
    assert!(layout.tags().unwrap().is_empty());
}
