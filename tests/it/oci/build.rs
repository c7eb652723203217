//! `oci::build::build`: Dockerfiles into images, exact outcomes. From
//! `scratch` without root (config fields, history, args, stages, errors,
//! reproducible digests, the cache); `RUN` with root over a busybox base
//! (else `SKIP`, as `tests/it/oci/run.rs`).

use camino::Utf8PathBuf;
use layerstack::oci::build::{BuildEvent, BuildReport, BuildSpec, StepReport, build};
use layerstack::oci::{BuildOptions, ImageStore, OciLayout};
use layerstack::{ErrorKind, Operation, Timestamp};
use serde_json::json;

use crate::support::harness::kernel_available;
use crate::support::tools::{BUSYBOX, Scratch, busybox};

/// A context directory with a Dockerfile and files.
struct Context {
    scratch: Scratch,
}

impl Context {
    fn new(tag: &str, dockerfile: &str) -> Context {
        let scratch = Scratch::new(tag);
        std::fs::create_dir_all(scratch.path("ctx")).unwrap();
        std::fs::write(scratch.path("ctx/Dockerfile"), dockerfile).unwrap();
        Context { scratch }
    }

    fn dir(&self) -> Utf8PathBuf {
        self.scratch.path("ctx")
    }

    fn write(&self, name: &str, content: &str) {
        let path = self.dir().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn spec(&self, tag: &str) -> BuildSpec {
        BuildSpec::new(self.dir().join("Dockerfile"), self.dir(), tag)
    }

    fn store(&self, name: &str) -> ImageStore {
        let dir = self.scratch.path(name);
        let layout = if dir.join("oci-layout").is_file() {
            OciLayout::open(&dir).unwrap()
        } else {
            OciLayout::create(&dir).unwrap()
        };
        ImageStore::new(layout)
    }
}

/// What a build sent, as text lines.
fn run(store: &ImageStore, spec: &BuildSpec) -> (layerstack::Result<BuildReport>, Vec<String>) {
    let mut events = Vec::new();
    let result = build(store, spec, &mut |e| {
        events.push(match e {
            BuildEvent::Step {
                number,
                total,
                text,
            } => format!("STEP {number}/{total}: {text}"),
            BuildEvent::Output(out) => format!("output {}", String::from_utf8_lossy(out)),
            BuildEvent::Progress { done, total } => format!("progress {done}/{total}"),
            BuildEvent::Warning(w) => format!("warning {w}"),
            BuildEvent::RunFailed { status, tail } => format!("failed {status} {tail:?}"),
            BuildEvent::Done(report) => format!(
                "done {} layer={} cached={}",
                report.number,
                report.layer.is_some(),
                report.cached
            ),
        });
    });
    (result, events)
}

fn built(store: &ImageStore, spec: &BuildSpec) -> BuildReport {
    let (result, events) = run(store, spec);
    result.unwrap_or_else(|e| panic!("build failed: {e}\n{events:#?}"))
}

/// The history as (created_by, empty_layer).
fn history(report: &BuildReport) -> Vec<(String, bool)> {
    report
        .image
        .config
        .history
        .iter()
        .map(|h| (h.created_by.clone().unwrap_or_default(), h.empty_layer))
        .collect()
}

fn error_text(store: &ImageStore, spec: &BuildSpec) -> (layerstack::Error, String) {
    let (result, _) = run(store, spec);
    let e = result.expect_err("the build fails");
    let text = e.to_string();
    (e, text)
}

/// Asserts the build fails with `kind` and the message `failed to build
/// image `<Dockerfile>`: <detail>`.
fn assert_fails(
    ctx: &Context,
    store: &ImageStore,
    spec: &BuildSpec,
    kind: ErrorKind,
    detail: &str,
) {
    let (e, text) = error_text(store, spec);
    assert_eq!(
        (e.kind(), e.operation()),
        (kind, Operation::BuildImage),
        "{text}"
    );
    assert_eq!(
        text,
        format!(
            "failed to build image `{}`: {detail}",
            ctx.dir().join("Dockerfile")
        )
    );
}

/// The tags of the store's layout.
fn tags(store: &ImageStore) -> Vec<String> {
    let tags = store.layout().tags().unwrap();
    tags.into_iter().map(|(t, _)| t).collect()
}

/// What is left of the `RUN` steps' directories in the layout.
fn run_leftovers(ctx: &Context) -> usize {
    std::fs::read_dir(ctx.scratch.path("layout/.layerstack/run")).map_or(0, |d| d.count())
}

fn cached(steps: &[StepReport]) -> Vec<bool> {
    steps.iter().map(|s| s.cached).collect()
}

#[test]
fn config_instructions_set_dockers_fields_and_history() {
    let ctx = Context::new(
        "build-config",
        concat!(
            "FROM scratch\n",
            "ENV A=1 B=\"two words\"\n",
            "ENV C=${A}x\n",
            "LABEL org.example.v=$C \"k 2\"=v2\n",
            "USER 1000:1000\n",
            "EXPOSE 80 53/udp\n",
            "VOLUME /data \"/logs\"\n",
            "VOLUME [\"/cache\", \"/tmp\"]\n",
            "STOPSIGNAL SIGTERM\n",
            "HEALTHCHECK --interval=5m --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1\n",
            "SHELL [\"/bin/bash\", \"-c\"]\n",
            "CMD echo $A\n",
            "ENTRYPOINT [\"/bin/app\", \"--flag\"]\n",
            "ONBUILD RUN echo triggered\n",
            "MAINTAINER someone <s@example.org>\n",
        ),
    );
    let store = ctx.store("layout");
    let report = built(&store, &ctx.spec("app"));
    assert_eq!(report.image.layers().len(), 0);
    assert_eq!(
        report.image.config.config,
        json!({
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1", "B=two words", "C=1x"],
            "Labels": {"org.example.v": "1x", "k 2": "v2"},
            "User": "1000:1000",
            "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
            "Volumes": {"/data": {}, "/logs": {}, "/cache": {}, "/tmp": {}},
            "StopSignal": "SIGTERM",
            "Healthcheck": {
                "Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
                "Interval": 300_000_000_000_i64,
                "Timeout": 3_000_000_000_i64,
                "Retries": 3
            },
            "Shell": ["/bin/bash", "-c"],
            "Cmd": ["/bin/bash", "-c", "echo $A"],
            "ArgsEscaped": true,
            "Entrypoint": ["/bin/app", "--flag"],
            "OnBuild": ["RUN echo triggered"]
        })
    );
    assert_eq!(
        report.image.config.author.as_deref(),
        Some("someone <s@example.org>")
    );
    let expected: Vec<(String, bool)> = [
        "ENV A=1 B=two words",
        "ENV C=1x",
        "LABEL org.example.v=1x k 2=v2",
        "USER 1000:1000",
        "EXPOSE map[53/udp:{} 80/tcp:{}]",
        "VOLUME [/data /logs]",
        "VOLUME [/cache /tmp]",
        "STOPSIGNAL SIGTERM",
        "HEALTHCHECK &{[\"CMD-SHELL\" \"curl -f http://localhost/ || exit 1\"] \"5m0s\" \"3s\" \"0s\" \"0s\" '\\x03'}",
        "SHELL [/bin/bash -c]",
        "CMD [\"/bin/bash\" \"-c\" \"echo $A\"]",
        "ENTRYPOINT [\"/bin/app\" \"--flag\"]",
        "MAINTAINER someone <s@example.org>",
    ]
    .iter()
    .map(|s| ((*s).to_owned(), true))
    .collect();
    assert_eq!(history(&report), expected);
    assert!(
        report
            .image
            .config
            .history
            .iter()
            .all(|h| h.comment.as_deref() == Some("buildkit.dockerfile.v0")
                && h.created.as_deref() == Some("1970-01-01T00:00:00Z"))
    );
    // Every instruction reported, none with a layer.
    assert_eq!(report.steps.len(), 15);
    assert_eq!(
        report.steps.iter().map(|s| s.line).collect::<Vec<_>>(),
        (1..=15).collect::<Vec<_>>()
    );
    assert!(report.steps.iter().all(|s| s.layer.is_none()));
    // The tag names it.
    assert_eq!(
        store.image(Some("app")).unwrap().config,
        report.image.config
    );
}

#[test]
fn entrypoint_drops_an_inherited_cmd_and_healthcheck_none() {
    let ctx = Context::new(
        "build-entrypoint",
        concat!(
            "FROM scratch AS base\n",
            "CMD [\"base\"]\n",
            "HEALTHCHECK CMD [\"/bin/check\"]\n",
            "FROM base AS app\n",
            "ENTRYPOINT [\"/bin/app\"]\n",
            "HEALTHCHECK NONE\n",
            "FROM base AS keeps\n",
            "CMD [\"mine\"]\n",
            "ENTRYPOINT [\"/bin/app\"]\n",
        ),
    );
    let store = ctx.store("layout");
    let report = built(&store, &ctx.spec("a").target("BASE"));
    assert_eq!(report.image.config.config["Cmd"], json!(["base"]));
    assert_eq!(
        report.image.config.config["Healthcheck"],
        json!({"Test": ["CMD", "/bin/check"]})
    );
    let mut spec = ctx.spec("b");
    spec.target = None;
    // The last stage is `keeps`; stage 1 is not needed.
    let report = built(&store, &spec);
    assert_eq!(report.image.config.config["Cmd"], json!(["mine"]));
    assert_eq!(
        report.steps.iter().map(|s| s.stage).collect::<Vec<_>>(),
        [0, 0, 0, 2, 2, 2]
    );
    let report = built(&store, &ctx.spec("c").target("app"));
    assert_eq!(report.image.config.config.get("Cmd"), None);
    assert_eq!(
        report.image.config.config["Healthcheck"],
        json!({"Test": ["NONE"]})
    );
    assert_eq!(
        history(&report).last().unwrap().0,
        "HEALTHCHECK &{[\"NONE\"] \"0s\" \"0s\" \"0s\" \"0s\" '\\x00'}"
    );
    let spec = ctx.spec("d").target("nope");
    assert_fails(
        &ctx,
        &store,
        &spec,
        ErrorKind::NotFound,
        "target stage `nope` could not be found (stages: base, app, keeps)",
    );
}

#[test]
fn args_have_global_and_stage_scopes_and_build_args_override() {
    let ctx = Context::new(
        "build-args",
        concat!(
            "ARG BASE=scratch\n",
            "ARG VERSION=1.0\n",
            "FROM ${BASE}\n",
            "ENV BEFORE=\"[$VERSION]\"\n",
            "ARG VERSION\n",
            "ARG MODE=debug OTHER\n",
            "ENV AFTER=$VERSION-$MODE\n",
            "LABEL other=${OTHER:-unset}\n",
        ),
    );
    let store = ctx.store("layout");
    let (result, events) = run(
        &store,
        &ctx.spec("a")
            .build_arg("MODE", "release")
            .build_arg("UNUSED", "x")
            .build_arg("VERSION", "2.0"),
    );
    let report = result.unwrap();
    assert_eq!(
        report.image.config.config["Env"],
        json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "BEFORE=[]",
            "AFTER=2.0-release"
        ])
    );
    assert_eq!(
        report.image.config.config["Labels"],
        json!({"other": "unset"})
    );
    assert_eq!(
        history(&report),
        [
            ("ENV BEFORE=[]".to_owned(), true),
            ("ARG VERSION=2.0".to_owned(), true),
            ("ARG MODE=release OTHER".to_owned(), true),
            ("ENV AFTER=2.0-release".to_owned(), true),
            ("LABEL other=unset".to_owned(), true),
        ]
    );
    assert_eq!(
        events.last().unwrap(),
        "warning one or more build args were not consumed: UNUSED"
    );
    assert_eq!(events[0], "STEP 1/6: FROM ${BASE}");
    assert_eq!(events[1], "done 1 layer=false cached=false");
    // The default without build args.
    let report = built(&store, &ctx.spec("b"));
    assert_eq!(
        report.image.config.config["Env"][2],
        json!("AFTER=1.0-debug")
    );
}

#[test]
fn multi_stage_builds_only_what_the_target_needs() {
    let ctx = Context::new(
        "build-stages",
        concat!(
            "FROM scratch AS one\n",
            "LABEL stage=one\n",
            "FROM scratch AS unused\n",
            "LABEL stage=unused\n",
            "FROM one AS two\n",
            "LABEL two=yes\n",
            "FROM 0\n",
            "ENV LAST=1\n",
        ),
    );
    let store = ctx.store("layout");
    let (result, events) = run(&store, &ctx.spec("t").target("two"));
    let report = result.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("STEP"))
            .cloned()
            .collect::<Vec<_>>(),
        [
            "STEP 1/4: FROM scratch AS one",
            "STEP 2/4: LABEL stage=one",
            "STEP 3/4: FROM one AS two",
            "STEP 4/4: LABEL two=yes",
        ]
    );
    assert_eq!(
        report.image.config.config["Labels"],
        json!({"stage": "one", "two": "yes"})
    );
    // Stage history continues from its base stage's.
    assert_eq!(
        history(&report),
        [
            ("LABEL stage=one".to_owned(), true),
            ("LABEL two=yes".to_owned(), true)
        ]
    );
    // The intermediate stage is not tagged.
    assert_eq!(tags(&store), ["t"]);
    // The last stage by index: stage 0.
    let report = built(&store, &ctx.spec("last"));
    assert_eq!(report.steps.len(), 4);
    assert_eq!(
        report.image.config.config["Labels"],
        json!({"stage": "one"})
    );
}

#[test]
fn from_takes_a_layout_and_the_stores_own_tags() {
    let ctx = Context::new("build-from", "FROM scratch\nLABEL base=yes\nENV X=1\n");
    let other = ctx.store("other");
    let base = built(&other, &ctx.spec("v1"));
    let store = ctx.store("layout");
    let layout = ctx.scratch.path("other");
    for (i, from) in [
        format!("oci:{layout}:v1"),
        format!("{layout}:v1"),
        layout.to_string(),
        format!("oci:{layout}"),
    ]
    .iter()
    .enumerate()
    {
        ctx.write("Dockerfile", &format!("FROM {from}\nENV Y=2\n"));
        let report = built(&store, &ctx.spec(&format!("t{i}")));
        assert_eq!(
            report.image.config.config["Labels"],
            json!({"base": "yes"}),
            "{from}"
        );
        assert_eq!(
            report.image.config.config["Env"],
            json!([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "X=1",
                "Y=2"
            ])
        );
        assert_eq!(report.image.config.history.len(), 3);
    }
    // The base's config blob was copied: the store has it.
    assert!(
        store
            .layout()
            .has_blob(&base.image.manifest.config.digest)
            .unwrap()
    );
    // A tag of the store's own layout.
    ctx.write("Dockerfile", "FROM t0\nENV Z=3\n");
    let report = built(&store, &ctx.spec("t9"));
    assert_eq!(report.image.config.history.len(), 4);
    // --platform checked.
    ctx.write("Dockerfile", "FROM --platform=windows/amd64 t0\n");
    let arch = store.image(Some("t0")).unwrap().config.architecture;
    let detail = format!("line 1: FROM --platform=windows/amd64 t0: the image is linux/{arch}");
    assert_fails(
        &ctx,
        &store,
        &ctx.spec("x"),
        ErrorKind::InvalidInput,
        &detail,
    );
    ctx.write(
        "Dockerfile",
        &format!("FROM --platform=linux/{arch} scratch\n"),
    );
    built(&store, &ctx.spec("x"));
}

#[test]
fn unknown_bases_and_parse_errors_are_clear_errors() {
    let ctx = Context::new("build-errors", "FROM debian:12\nRUN true\n");
    let store = ctx.store("layout");
    let spec = ctx.spec("x");
    assert_fails(
        &ctx,
        &store,
        &spec,
        ErrorKind::NotFound,
        "line 1: FROM debian:12: no OCI layout at `debian`; builds are offline: pull the image into a layout first",
    );
    ctx.write("Dockerfile", "FROM scratch\nENV A=1\n  BOGUS x\n");
    assert_fails(
        &ctx,
        &store,
        &spec,
        ErrorKind::InvalidInput,
        "line 3, column 3: unknown instruction `BOGUS`",
    );
    ctx.write("Dockerfile", "ENV A=1\nFROM scratch\n");
    assert_fails(
        &ctx,
        &store,
        &spec,
        ErrorKind::InvalidInput,
        "line 1: ENV before the first FROM: only ARG may come before it",
    );
    ctx.write(
        "Dockerfile",
        "FROM scratch\nADD https://example.org/a.tar /\n",
    );
    assert_fails(
        &ctx,
        &store,
        &spec,
        ErrorKind::Unsupported,
        "line 2: ADD https://example.org/a.tar: remote sources are not supported: builds are offline",
    );
    ctx.write("Dockerfile", "FROM scratch\nUSER ${NOPE:?must be set}\n");
    assert_fails(
        &ctx,
        &store,
        &spec,
        ErrorKind::InvalidInput,
        "line 2: `${NOPE:?must be set}`: NOPE: must be set",
    );
    // Nothing was tagged.
    assert!(store.layout().tags().unwrap().is_empty());
}

#[test]
fn config_steps_are_cached_until_the_first_change() {
    let ctx = Context::new(
        "build-cache-config",
        "FROM scratch\nENV A=1\nLABEL l=1\nENV B=2\n",
    );
    let store = ctx.store("layout");
    let first = built(&store, &ctx.spec("a"));
    assert_eq!(cached(&first.steps), [false, false, false, false]);
    let second = built(&store, &ctx.spec("a"));
    assert_eq!(cached(&second.steps), [false, true, true, true]);
    assert_eq!(
        second.image.descriptor.digest,
        first.image.descriptor.digest
    );
    ctx.write("Dockerfile", "FROM scratch\nENV A=1\nLABEL l=2\nENV B=2\n");
    let third = built(&store, &ctx.spec("a"));
    assert_eq!(cached(&third.steps), [false, true, false, false]);
    let fourth = built(&store, &ctx.spec("a").no_cache(true));
    assert_eq!(cached(&fourth.steps), [false, false, false, false]);
    assert_eq!(
        fourth.image.descriptor.digest,
        third.image.descriptor.digest
    );
    // The entries live under .layerstack/build-cache, not in blobs/: the
    // first build's three, and the changed LABEL's and the ENV after it.
    let entries = std::fs::read_dir(ctx.scratch.path("layout/.layerstack/build-cache"))
        .unwrap()
        .count();
    assert_eq!(entries, 5);
    // Another date clamps the layers' mtimes elsewhere: no step is a hit.
    let other = BuildOptions::new().created(Timestamp { sec: 5, nsec: 0 });
    let fifth = built(&store, &ctx.spec("a").options(other));
    assert_eq!(cached(&fifth.steps), [false, false, false, false]);
}

#[test]
fn the_same_dockerfile_gives_the_same_digest_in_two_layouts() {
    let ctx = Context::new(
        "build-repro",
        "FROM scratch\nENV A=1\nWORKDIR /app/sub\nUSER 1:2\nWORKDIR ../other\n",
    );
    let options = BuildOptions::new().created(Timestamp {
        sec: 1_700_000_000,
        nsec: 0,
    });
    let a = built(&ctx.store("one"), &ctx.spec("x").options(options));
    let b = built(&ctx.store("two"), &ctx.spec("x").options(options));
    assert_eq!(a.image.descriptor.digest, b.image.descriptor.digest);
    assert_eq!(
        a.image.config.history[0].created.as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
    // WORKDIR made a layer each time it created its directory.
    assert_eq!(
        history(&a),
        [
            ("ENV A=1".to_owned(), true),
            ("WORKDIR /app/sub".to_owned(), false),
            ("USER 1:2".to_owned(), true),
            ("WORKDIR /app/other".to_owned(), false),
        ]
    );
    assert_eq!(a.image.config.config["WorkingDir"], json!("/app/other"));
    let view = ctx.store("one").container(&a.image).unwrap();
    let sub = view.symlink_metadata("app/sub").unwrap();
    assert_eq!((sub.mode & 0o7777, sub.uid, sub.gid), (0o755, 0, 0));
    let other = view.symlink_metadata("app/other").unwrap();
    assert_eq!((other.mode & 0o7777, other.uid, other.gid), (0o755, 1, 2));
    // A third build, from the cache, is the same image.
    let c = built(&ctx.store("one"), &ctx.spec("x").options(options));
    assert_eq!(cached(&c.steps), [false, true, true, true, true]);
    assert_eq!(c.image.descriptor.digest, a.image.descriptor.digest);
    // WORKDIR of an existing directory adds no layer.
    ctx.write("Dockerfile", "FROM x\nWORKDIR /app\n");
    let d = built(&ctx.store("one"), &ctx.spec("y"));
    assert_eq!(
        history(&d).last().unwrap(),
        &("WORKDIR /app".to_owned(), true)
    );
    assert_eq!(d.image.layers().len(), 2);
}

/// A store with the tag `busybox`: a tiny root filesystem with a shell, a
/// user `app` (1000, primary group 1001 `staff`) and a file `/etc/gone`.
fn busybox_store(ctx: &Context) -> ImageStore {
    let store = ctx.store("layout");
    let mut base = store.builder(None, BuildOptions::default()).unwrap();
    let shell = std::fs::read(BUSYBOX).unwrap();
    base.step("base", |fs| {
        fs.create_dir_all("bin")?;
        fs.write("bin/busybox", &shell)?;
        fs.set_permissions("bin/busybox", 0o755)?;
        fs.symlink("busybox", "bin/sh")?;
        fs.create_dir_all("etc")?;
        fs.write(
            "etc/passwd",
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )?;
        fs.write("etc/group", "root:x:0:\nstaff:x:1001:\nwheel:x:10:\n")?;
        fs.write("etc/gone", "old\n")?;
        fs.create_dir("tmp")?;
        fs.set_permissions("tmp", 0o1777)
    })
    .unwrap();
    base.finish("busybox").unwrap();
    store
}

fn root_and_busybox(test: &str) -> bool {
    kernel_available() && busybox(test)
}

#[test]
fn run_changes_become_layers_with_env_user_and_workdir() {
    let test = "run_changes_become_layers_with_env_user_and_workdir";
    if !root_and_busybox(test) {
        return;
    }
    let ctx = Context::new(
        "build-run",
        concat!(
            "FROM busybox\n",
            "ARG GREETING=hello\n",
            "ENV WHO=world\n",
            "RUN echo \"$GREETING $WHO\" > /greeting && rm /etc/gone && mkdir -p /srv/data\n",
            "WORKDIR /srv\n",
            "USER app\n",
            "RUN (id -u; id -g; pwd; echo $PATH) > /tmp/id; echo to-out; echo to-err >&2\n",
            "USER 0:wheel\n",
            "RUN <<EOF\n",
            "echo a > /h1\n",
            "id -g >> /h1\n",
            "EOF\n",
            "RUN cat > /h2 <<EOF\n",
            "x $WHO\n",
            "EOF\n",
            "RUN true\n",
        ),
    );
    let store = busybox_store(&ctx);
    let (result, events) = run(&store, &ctx.spec("app"));
    let report = result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    assert!(
        events.contains(&"output to-out\n".to_owned())
            && events.contains(&"output to-err\n".to_owned()),
        "{events:#?}"
    );
    let image = &report.image;
    assert_eq!(image.layers().len(), 5);
    let h = history(&report);
    assert_eq!(
        h[1..],
        [
            ("ARG GREETING=hello".to_owned(), true),
            ("ENV WHO=world".to_owned(), true),
            (
                "RUN |1 GREETING=hello /bin/sh -c echo \"$GREETING $WHO\" > /greeting && rm /etc/gone && mkdir -p /srv/data # buildkit".to_owned(),
                false
            ),
            ("WORKDIR /srv".to_owned(), true),
            ("USER app".to_owned(), true),
            (
                "RUN |1 GREETING=hello /bin/sh -c (id -u; id -g; pwd; echo $PATH) > /tmp/id; echo to-out; echo to-err >&2 # buildkit".to_owned(),
                false
            ),
            ("USER 0:wheel".to_owned(), true),
            ("RUN |1 GREETING=hello /bin/sh -c echo a > /h1\nid -g >> /h1\n # buildkit".to_owned(), false),
            ("RUN |1 GREETING=hello /bin/sh -c cat > /h2 <<EOF\nx $WHO\nEOF # buildkit".to_owned(), false),
            ("RUN |1 GREETING=hello /bin/sh -c true # buildkit".to_owned(), true),
        ]
    );
    let view = store.container(image).unwrap();
    assert_eq!(view.read_to_string("greeting").unwrap(), "hello world\n");
    assert_eq!(
        view.symlink_metadata("etc/gone").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(view.metadata("srv/data").unwrap().is_dir());
    assert_eq!(
        view.read_to_string("tmp/id").unwrap(),
        "1000\n1001\n/srv\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
    let id = view.symlink_metadata("tmp/id").unwrap();
    assert_eq!((id.uid, id.gid), (1000, 1001));
    assert_eq!(view.read_to_string("h1").unwrap(), "a\n10\n");
    assert_eq!(view.read_to_string("h2").unwrap(), "x world\n");
    // The ARG reached RUN but not the config.
    assert_eq!(
        image.config.config["Env"],
        json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "WHO=world"
        ])
    );
    // Nothing left of the runs' directories.
    assert_eq!(run_leftovers(&ctx), 0);
    // Again: every step from the cache, the same image, no RUN output.
    let (again, events) = run(&store, &ctx.spec("app"));
    let again = again.unwrap();
    assert_eq!(cached(&again.steps)[1..], [true; 10]);
    assert!(!events.iter().any(|e| e.starts_with("output")));
    assert_eq!(again.image.descriptor.digest, image.descriptor.digest);
    let layers: Vec<_> = again.steps.iter().filter_map(|s| s.layer.clone()).collect();
    assert_eq!(
        layers.iter().map(|l| l.digest).collect::<Vec<_>>(),
        image.layers()[1..]
            .iter()
            .map(|d| d.digest)
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_failing_run_stops_the_build_with_its_status_and_tail() {
    let test = "a_failing_run_stops_the_build_with_its_status_and_tail";
    if !root_and_busybox(test) {
        return;
    }
    let ctx = Context::new(
        "build-run-fail",
        "FROM busybox\nRUN echo one; echo two >&2; touch /made; exit 3\nENV NEVER=1\n",
    );
    let store = busybox_store(&ctx);
    let (result, events) = run(&store, &ctx.spec("app"));
    let e = result.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "failed to build image `{}`: line 2: RUN exited with status 3",
            ctx.dir().join("Dockerfile")
        )
    );
    assert_eq!(events[events.len() - 1], "failed 3 [\"one\", \"two\"]");
    assert!(!events.iter().any(|e| e.contains("NEVER")));
    assert_eq!(tags(&store), ["busybox"]);
    assert_eq!(run_leftovers(&ctx), 0);
    // An unknown USER is an error naming it.
    ctx.write("Dockerfile", "FROM busybox\nUSER nobody\nRUN true\n");
    let detail = "line 3: USER nobody: no user `nobody` in the image's /etc/passwd";
    assert_fails(&ctx, &store, &ctx.spec("app"), ErrorKind::NotFound, detail);
}

#[test]
fn copy_makes_one_layer_per_line_with_ignore_chown_and_chmod() {
    let ctx = Context::new(
        "build-copy",
        concat!(
            "FROM scratch\n",
            "ARG DEST=/srv\n",
            "COPY *.conf $DEST/\n",
            "COPY --chown=10:20 --chmod=600 data /data\n",
            "ENV A=1\n",
            "COPY --link <<EOF /etc/motd\n",
            "hello\n",
            "EOF\n",
        ),
    );
    ctx.write("a.conf", "a\n");
    ctx.write("b.conf", "b\n");
    ctx.write("secret.conf", "no\n");
    ctx.write("data/x", "x\n");
    ctx.write("data/sub/y", "y\n");
    ctx.write(".dockerignore", "secret.conf\n");
    let store = ctx.store("layout");
    let (result, events) = run(&store, &ctx.spec("app"));
    let report = result.unwrap();
    assert_eq!(
        history(&report),
        [
            ("ARG DEST=/srv".to_owned(), true),
            ("COPY *.conf /srv/ # buildkit".to_owned(), false),
            (
                "COPY --chown=10:20 --chmod=600 data /data # buildkit".to_owned(),
                false
            ),
            ("ENV A=1".to_owned(), true),
            ("COPY <<EOF /etc/motd # buildkit".to_owned(), false),
        ]
    );
    assert_eq!(report.image.layers().len(), 3);
    // The steps' layers are the image's.
    let layers: Vec<_> = report
        .steps
        .iter()
        .filter_map(|s| s.layer.clone())
        .collect();
    assert_eq!(
        layers
            .iter()
            .map(|l| (l.digest, l.size))
            .collect::<Vec<_>>(),
        report
            .image
            .layers()
            .iter()
            .map(|d| (d.digest, d.size))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        layers.iter().map(|l| l.diff_id).collect::<Vec<_>>(),
        report.image.diff_ids()
    );
    assert!(layers.iter().all(|l| l.uncompressed_size > 0));
    assert!(events.iter().any(|e| e == "progress 4/4"), "{events:#?}");
    let view = store.container(&report.image).unwrap();
    let names: Vec<String> = view
        .read_dir("srv")
        .unwrap()
        .iter()
        .map(|e| e.name.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a.conf", "b.conf"]);
    let y = view.symlink_metadata("data/sub/y").unwrap();
    assert_eq!((y.mode & 0o7777, y.uid, y.gid), (0o600, 10, 20));
    assert_eq!(view.read_to_string("data/sub/y").unwrap(), "y\n");
    assert_eq!(view.read_to_string("etc/motd").unwrap(), "hello\n");
    let motd = view.symlink_metadata("etc/motd").unwrap();
    assert_eq!(motd.mode & 0o7777, 0o644);
}

#[test]
fn copy_from_a_stage_and_a_changed_source_rebuilds_from_its_line() {
    let ctx = Context::new(
        "build-copy-cache",
        concat!(
            "FROM scratch AS build\n",
            "COPY one /out/one\n",
            "COPY two /out/two\n",
            "FROM scratch\n",
            "COPY --from=build /out /app\n",
            "LABEL done=yes\n",
        ),
    );
    ctx.write("one", "1\n");
    ctx.write("two", "2\n");
    let store = ctx.store("layout");
    let first = built(&store, &ctx.spec("app"));
    assert_eq!(
        cached(&first.steps),
        [false, false, false, false, false, false]
    );
    let view = store.container(&first.image).unwrap();
    assert_eq!(view.read_to_string("app/one").unwrap(), "1\n");
    assert_eq!(view.read_to_string("app/two").unwrap(), "2\n");
    assert_eq!(first.image.layers().len(), 1);
    let second = built(&store, &ctx.spec("app"));
    assert_eq!(
        cached(&second.steps),
        [false, true, true, false, true, true]
    );
    assert_eq!(
        second.image.descriptor.digest,
        first.image.descriptor.digest
    );
    // Only the mtime of a source changed: still cached.
    let later = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(ctx.dir().join("one"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    // The second source changed: its line and everything after rebuild.
    ctx.write("two", "two\n");
    let third = built(&store, &ctx.spec("app"));
    assert_eq!(
        cached(&third.steps),
        [false, true, false, false, false, false]
    );
    let view = store.container(&third.image).unwrap();
    assert_eq!(view.read_to_string("app/two").unwrap(), "two\n");
    // A missing source: the line and the name.
    ctx.write("Dockerfile", "FROM scratch\nCOPY missing /x\n");
    let (e, text) = error_text(&store, &ctx.spec("app"));
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        text.starts_with(&format!(
            "failed to build image `{}`: line 2: ",
            ctx.dir().join("Dockerfile")
        )) && text.contains("missing"),
        "{text}"
    );
}

#[test]
fn copy_from_takes_the_global_args() {
    let ctx = Context::new(
        "build-from-args",
        concat!(
            "ARG SRC=build\n",
            "FROM scratch AS build\n",
            "COPY one /out/one\n",
            "FROM scratch AS unused\n",
            "COPY one /nowhere\n",
            "FROM scratch\n",
            "ENV SRC=unused\n",
            "COPY --from=$SRC /out /app\n",
            "COPY --from=${SRC} /out/one /added\n",
        ),
    );
    ctx.write("one", "1\n");
    let store = ctx.store("layout");
    let report = built(&store, &ctx.spec("app"));
    // The stage the global ARG names is built; the stage's ENV does not
    // redirect `--from`, and the unused stage is skipped.
    assert_eq!(report.steps.len(), 6);
    let view = store.container(&report.image).unwrap();
    assert_eq!(view.read_to_string("app/one").unwrap(), "1\n");
    assert_eq!(view.read_to_string("added").unwrap(), "1\n");
    assert!(!view.exists("nowhere").unwrap());
}

#[test]
fn copy_heredocs_follow_the_destination_rules() {
    let ctx = Context::new(
        "build-heredoc-dest",
        concat!(
            "FROM scratch\n",
            "WORKDIR /app\n",
            "COPY <<EOF .\n",
            "dot\n",
            "EOF\n",
            "COPY <<NOTE /app\n",
            "existing dir\n",
            "NOTE\n",
            "COPY <<FILE sub/../named\n",
            "named\n",
            "FILE\n",
        ),
    );
    let store = ctx.store("layout");
    let report = built(&store, &ctx.spec("app"));
    let view = store.container(&report.image).unwrap();
    assert_eq!(view.read_to_string("app/EOF").unwrap(), "dot\n");
    assert_eq!(view.read_to_string("app/NOTE").unwrap(), "existing dir\n");
    assert_eq!(view.read_to_string("app/named").unwrap(), "named\n");
    assert_eq!(view.symlink_metadata("app/named").unwrap().mode, 0o644);
}
