//! Push and pull of the corpus image (three gzip layers, about 260 MiB,
//! `benches/corpus.sh`) to and from a local `docker-registry`, side by
//! side with `skopeo copy` in one run:
//!
//! - `push/layerstack`, `push/skopeo_copy`: into an empty registry (a new
//!   one per iteration, started outside the timing);
//! - `pull/layerstack`, `pull/skopeo_copy`: into an empty layout;
//! - `push_unchanged/layerstack`: the image again, to a registry that has
//!   it (the requests it costs are printed).
//!
//! The registry is the one the tests use (`cli/tests/it/registry/harness.rs`):
//! 127.0.0.1, htpasswd auth, storage in a scratch directory. The corpus
//! layout is copied first, so the corpus never gains a cache. Without the
//! corpus, docker-registry or skopeo, it says what is missing and measures
//! nothing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use layerstack::oci::OciLayout;
use layerstack::oci::registry::{self, Credentials, NoProgress, Reference, RegistryOptions};

#[path = "../../benches/common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../tests/it/registry/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../../tests/it/support/tools.rs"]
mod tools;

use common::{corpus, scratch_root, utf8};
use harness::{Auth, PASSWORD, TestRegistry, USER};
use tools::run;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn options() -> RegistryOptions {
    RegistryOptions {
        credentials: Some(Credentials::parse(&format!("{USER}:{PASSWORD}")).unwrap()),
        auth_files: Some(Vec::new()),
        ..RegistryOptions::default()
    }
}

fn start() -> TestRegistry {
    TestRegistry::start("bench", Auth::Htpasswd).expect("docker-registry and htpasswd")
}

fn reference(host: &str) -> Reference {
    format!("{host}/corpus:bench").parse().unwrap()
}

fn our_push(layout: &OciLayout, host: &str) -> registry::TransferSummary {
    // No blob-info cache from an earlier iteration: each push uploads.
    let _ = std::fs::remove_file(layout.root().join(".layerstack/registry-blobs.json"));
    registry::push(
        layout,
        Some("bench"),
        &reference(host),
        &options(),
        &NoProgress,
    )
    .expect("layerstack push")
}

fn skopeo_push(oci: &Path, host: &str) {
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("oci:{}:bench", oci.display()),
        &format!("docker://{host}/corpus:bench"),
    ]));
}

fn bench(c: &mut Criterion) {
    let Some(corpus) = corpus() else {
        eprintln!("SKIP registry benchmarks: no corpus; run benches/corpus.sh first");
        return;
    };
    for tool in ["docker-registry", "skopeo"] {
        if !have(tool) {
            eprintln!("SKIP registry benchmarks: `{tool}` is not installed");
            return;
        }
    }
    let scratch = scratch_root("bench-registry");
    let oci = scratch.join("oci");
    let _ = std::fs::remove_dir_all(&oci);
    run(Command::new("cp")
        .arg("-a")
        .arg(corpus.join("oci"))
        .arg(&oci));
    let layout = OciLayout::open(utf8(&oci)).unwrap();

    // Both push the same manifest: the registry names the same digest.
    let ours = start();
    let summary = our_push(&layout, &ours.host);
    let theirs = start();
    skopeo_push(&oci, &theirs.host);
    assert_eq!(
        ours.tag_link("corpus", "bench"),
        theirs.tag_link("corpus", "bench"),
        "skopeo and layerstack pushed different manifests"
    );
    eprintln!(
        "push: {} blobs, {} bytes, {} requests",
        summary.blobs_transferred,
        summary.bytes_transferred,
        summary.requests.total()
    );

    let mut group = c.benchmark_group("push");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.bench_function("layerstack", |b| {
        b.iter_batched(
            start,
            |reg| {
                our_push(&layout, &reg.host);
                reg
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("skopeo_copy", |b| {
        b.iter_batched(
            start,
            |reg| {
                skopeo_push(&oci, &reg.host);
                reg
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();

    let pulled = scratch.join("pulled");
    let fresh = || {
        let _ = std::fs::remove_dir_all(&pulled);
    };
    let mut group = c.benchmark_group("pull");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.bench_function("layerstack", |b| {
        b.iter_batched(
            fresh,
            |()| {
                registry::pull(
                    &reference(&ours.host),
                    &utf8(&pulled),
                    Some("bench"),
                    &options(),
                    &NoProgress,
                )
                .expect("layerstack pull")
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("skopeo_copy", |b| {
        b.iter_batched(
            fresh,
            |()| {
                run(Command::new("skopeo").args([
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                    "--src-creds",
                    &format!("{USER}:{PASSWORD}"),
                    &format!("docker://{}/corpus:bench", ours.host),
                    &format!("oci:{}:bench", pulled.display()),
                ]))
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();

    let again = registry::push(
        &layout,
        Some("bench"),
        &reference(&ours.host),
        &options(),
        &NoProgress,
    )
    .unwrap();
    eprintln!(
        "push_unchanged: {} requests ({} HEAD, {} GET), {} blobs sent",
        again.requests.total(),
        again.requests.head,
        again.requests.get,
        again.blobs_transferred
    );
    let mut group = c.benchmark_group("push_unchanged");
    group.bench_function("layerstack", |b| {
        b.iter(|| {
            registry::push(
                &layout,
                Some("bench"),
                &reference(&ours.host),
                &options(),
                &NoProgress,
            )
            .unwrap()
        });
    });
    group.finish();
    fresh();
    let _ = std::fs::remove_dir_all(&oci);
}

criterion_group!(benches, bench);
criterion_main!(benches);
