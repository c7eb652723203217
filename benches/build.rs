//! `layerstack build` (`oci::build::build`) beside `buildah bud` (vfs
//! storage, chroot isolation, `--layers`: the way Debian's buildah builds as
//! root without a container runtime), in one run, on the Debian image of
//! the corpus `benches/corpus.sh` builds: a Dockerfile of three COPY and
//! two RUN steps (plus steps that make no layer).
//!
//! - `build_cold/*`: nothing cached: a fresh output layout for layerstack
//!   (the base's blobs are copied into it, and its layer directories for
//!   RUN made there, within the time); a fresh store with only the base
//!   pulled for buildah (the pull is setup, not timed).
//! - `build_cached/*`: the same build again over what the first one left:
//!   every step is a cache hit.
//!
//! Before measuring, it checks that both builds made the same number of
//! layers. Needs root (RUN), the corpus, and buildah; without them it says
//! which is missing and measures nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use camino::Utf8Path;
use common::{corpus, is_root, scratch_root, utf8};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use layerstack::oci::build::{BuildSpec, build};
use layerstack::oci::{BuildOptions, ImageStore, OciLayout};

const DOCKERFILE: &str = "\
ARG BASE
FROM $BASE
ENV APP=/opt/app
COPY app $APP
RUN mkdir -p /var/lib/app && cp -a $APP/conf /etc/app && rm -rf /usr/share/doc
COPY data.bin /var/lib/app/data.bin
WORKDIR $APP
COPY --chown=1000:1000 static static
RUN chmod -R go-w $APP && echo ready > $APP/READY
USER 1000
CMD [\"/bin/sh\"]
";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The context: 200 small files (a program's tree), a config directory,
/// 300 static assets of 16 KiB and one 8 MiB data file (about 13 MB).
fn write_context(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    for sub in ["app/lib", "app/conf", "static"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for i in 0..200 {
        let body = format!("// module {i}\n").repeat(40 + i % 50);
        std::fs::write(dir.join(format!("app/lib/mod{i}.rs")), body).unwrap();
    }
    for i in 0..10 {
        std::fs::write(
            dir.join(format!("app/conf/{i}.conf")),
            format!("key{i} = {i}\n"),
        )
        .unwrap();
    }
    for i in 0..300u32 {
        let body: Vec<u8> = (0..16 * 1024u32).map(|b| (b * 7 + i) as u8).collect();
        std::fs::write(dir.join(format!("static/asset{i}.bin")), body).unwrap();
    }
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|b| (b.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(dir.join("data.bin"), data).unwrap();
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
}

/// A copy of the corpus layout: the corpus is shared and read-only, and
/// buildah's pull or our store may leave files in a layout they read.
fn copy_base(corpus: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    run(Command::new("cp").arg("-a").arg(corpus.join("oci")).arg(to));
}

fn build_ours(base: &Utf8Path, out: &Utf8Path, context: &Utf8Path) -> usize {
    let store = ImageStore::new(OciLayout::create(out).unwrap());
    let spec = BuildSpec::new(
        context.join("Dockerfile"),
        context.to_owned(),
        "app".to_owned(),
    )
    .build_arg("BASE", format!("{base}:bench"))
    .options(BuildOptions::default());
    let report = build(&store, &spec, &mut |_| {}).expect("layerstack build");
    report.image.layers().len()
}

/// buildah with a store of its own.
struct Buildah {
    root: PathBuf,
}

impl Buildah {
    fn command(&self) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root")
            .arg(self.root.join("root"))
            .arg("--runroot")
            .arg(self.root.join("runroot"))
            .args(["--storage-driver", "vfs"]);
        cmd
    }

    /// A fresh store with the base pulled; the base's id.
    fn fresh(root: &Path, base: &Utf8Path) -> (Buildah, String) {
        let b = Buildah {
            root: root.to_owned(),
        };
        b.remove();
        let id = run(b
            .command()
            .args(["pull", "--quiet"])
            .arg(format!("oci:{base}:bench")));
        (b, id.trim().to_owned())
    }

    fn bud(&self, base: &str, context: &Path) {
        run(self
            .command()
            .args([
                "bud",
                "--quiet",
                "--isolation",
                "chroot",
                "--layers",
                "--pull-never",
            ])
            .arg("--build-arg")
            .arg(format!("BASE={base}"))
            .arg("-t")
            .arg("app")
            .arg(context));
    }

    fn layers(&self) -> usize {
        let out = run(self.command().args([
            "inspect",
            "--type",
            "image",
            "--format",
            "{{len .OCIv1.RootFS.DiffIDs}}",
            "app",
        ]));
        out.trim().parse().expect("a layer count")
    }

    fn remove(&self) {
        if self.root.join("root").exists() {
            let _ = self.command().args(["rmi", "--all", "--force"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn benches(c: &mut Criterion) {
    let Some(corpus) = corpus() else {
        eprintln!("SKIP build: the corpus is missing (benches/corpus.sh builds it)");
        return;
    };
    if !is_root() {
        eprintln!("SKIP build: RUN needs root");
        return;
    }
    if Command::new("buildah").arg("--version").output().is_err() {
        eprintln!("SKIP build: buildah is not installed (apt-get install buildah)");
        return;
    }
    let scratch = scratch_root("bench-build");
    let context = scratch.join("context");
    write_context(&context);
    let context = utf8(&context);
    let base = utf8(&scratch.join("base"));
    copy_base(&corpus, base.as_std_path());
    let out = utf8(&scratch.join("out"));

    // The same build, layer for layer.
    let _ = std::fs::remove_dir_all(&out);
    let ours = build_ours(&base, &out, &context);
    let (buildah, id) = Buildah::fresh(&scratch.join("buildah"), &base);
    buildah.bud(&id, context.as_std_path());
    assert_eq!(
        ours,
        buildah.layers(),
        "layerstack and buildah made the same layers"
    );

    let mut group = c.benchmark_group("build_cold");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(60));
    group.bench_function("layerstack", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_dir_all(&out);
            },
            |()| build_ours(&base, &out, &context),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("buildah_bud", |b| {
        b.iter_batched(
            || Buildah::fresh(&scratch.join("buildah"), &base),
            |(buildah, id)| buildah.bud(&id, context.as_std_path()),
            BatchSize::PerIteration,
        );
    });
    group.finish();

    let mut group = c.benchmark_group("build_cached");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    let _ = build_ours(&base, &out, &context);
    group.bench_function("layerstack", |b| {
        b.iter(|| build_ours(&base, &out, &context))
    });
    let (buildah, id) = Buildah::fresh(&scratch.join("buildah"), &base);
    buildah.bud(&id, context.as_std_path());
    group.bench_function("buildah_bud", |b| {
        b.iter(|| buildah.bud(&id, context.as_std_path()))
    });
    group.finish();
    buildah.remove();
}

criterion_group!(build_benches, benches);
criterion_main!(build_benches);
