//! Whole jobs beside the commands people run for them today, timed in one
//! run on the corpus `benches/corpus.sh` builds (a Debian root filesystem
//! and a three-layer image umoci made of it):
//!
//! - `flatten/*`: the image written out as a root filesystem directory by
//!   `layerstack unpack` (with the layout's layer records, which a first
//!   unpack writes, so only the blob digests are checked; and, as
//!   `layerstack_unpack_first`, with the records removed before each run,
//!   so the DiffIDs are checked too), `umoci unpack`, `tar -xzf` of each layer in
//!   order (which does not apply whiteouts: a floor, not a peer), and a
//!   kernel overlay mount of the same layers plus `cp -a` (mount and unmount
//!   included), and the floor of a flatten: only inflating the layers, each
//!   on its own thread, writing nothing. The output goes to a tmpfs, so the shared machine's disk
//!   does not decide the figures; every run starts from an empty directory.
//!   All read a copy of the corpus layout in that tmpfs.
//! - `export_digest/*`: the root filesystem as one layer tarball,
//!   compressed, with its digest. layerstack (`export_layer` of a
//!   `DirLayer`, which also computes the DiffID, the digest of the
//!   uncompressed tar) beside `tar -c | gzip | sha256sum` and
//!   `tar -c | zstd | sha256sum`, and beside the same pipelines with a
//!   `tee` to a second `sha256sum` for the DiffID, the same work.
//!
//! - `inspect/*`: `layerstack inspect` of the image as it is now (the
//!   uncompressed sizes from the layout's layer cache, no layer read),
//!   `inspect --sizes` with the cache emptied before each run (every layer
//!   read, as every `inspect` did before the cache), and
//!   `skopeo inspect --raw` when skopeo is installed. The image is a copy
//!   of the corpus layout, so the corpus itself never gains a cache.
//!
//! Before measuring, it checks that `layerstack unpack`, `umoci unpack` and
//! the kernel mount give the same tree (`testing::snapshot_dir`: types,
//! modes, owners, sizes, link counts, contents, targets, devices, xattrs).
//! Needs root (the corpus, the mounts, device nodes), the corpus, and
//! umoci, gzip and zstd; without them it says which is missing and
//! measures nothing.

#[path = "../../benches/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{Mount, corpus, is_root, scratch_root, utf8};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use layerstack::model::Snapshot;
use layerstack::oci::Compression;
use layerstack::oci::{ExportOptions, export_layer};
use layerstack::testing::snapshot_dir;
use layerstack::{DirLayer, Layer, LayerPath};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("bash");
    c.args(["-o", "pipefail", "-c", script]);
    c
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The layer blobs of the `bench` tag, bottom first.
fn layer_blobs(oci: &Path) -> Vec<PathBuf> {
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).expect("read a document")).expect("JSON")
    };
    let blob = |d: &serde_json::Value| {
        let d = d.as_str().expect("a digest");
        oci.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = json(&oci.join("index.json"));
    let manifest = json(&blob(&index["manifests"][0]["digest"]));
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| blob(&l["digest"]))
        .collect()
}

/// The tree written at `root`, its root directory left out (each tool
/// gives the target directory itself its own attributes).
fn tree(root: &Path) -> Snapshot {
    let mut tree = snapshot_dir(root).expect("read the written tree");
    tree.remove(&LayerPath::root());
    tree
}

fn assert_same_tree(name: &str, got: &Path, want: &Snapshot) {
    let got = tree(got);
    let differ: Vec<_> = got
        .iter()
        .filter(|(p, v)| want.get(*p) != Some(v))
        .map(|(p, _)| p)
        .chain(want.keys().filter(|p| !got.contains_key(*p)))
        .take(5)
        .collect();
    assert!(
        differ.is_empty(),
        "{name} differs from the kernel's tree at {differ:?}"
    );
    eprintln!("{name}: the same {} entries as the kernel mount", got.len());
}

/// A tmpfs for outputs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(dir: PathBuf) -> Tmpfs {
        let _ = rustix::mount::unmount(&dir, rustix::mount::UnmountFlags::DETACH);
        std::fs::create_dir_all(&dir).expect("create the tmpfs mount point");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8g", "tmpfs"])
            .arg(&dir));
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

fn fresh(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    dir.to_owned()
}

fn flatten(c: &mut Criterion, corpus: &Path, tmp: &Path) {
    let layerstack = env!("CARGO_BIN_EXE_layerstack");
    // A copy of the corpus layout, so the corpus itself never gains the
    // layer records `layerstack unpack` writes.
    let oci = fresh(&tmp.join("oci"));
    run(Command::new("cp")
        .arg("-a")
        .arg(corpus.join("oci"))
        .arg(&oci));
    let records = oci.join(".layerstack/layers");
    let image = format!("{}:bench", oci.display());
    let lowers: Vec<PathBuf> = ["kernel/3", "kernel/2", "rootfs"]
        .iter()
        .map(|p| corpus.join(p))
        .collect();
    let blobs = layer_blobs(&oci);
    let (ours, umoci, tar, kernel, mnt) = (
        tmp.join("layerstack"),
        tmp.join("umoci"),
        tmp.join("tar"),
        tmp.join("kernel"),
        tmp.join("mnt"),
    );
    let unpack = |out: &Path| run(Command::new(layerstack).arg("unpack").arg(&image).arg(out));
    let umoci_unpack = |out: &Path| {
        run(Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(out));
    };
    let tar_x = |out: &Path| {
        std::fs::create_dir_all(out).expect("create the target");
        for b in &blobs {
            run(Command::new("tar").arg("-xzf").arg(b).arg("-C").arg(out));
        }
    };
    let mount_cp = |out: &Path| {
        let mount = Mount::read_only(&lowers, &mnt);
        run(Command::new("cp").arg("-a").arg(mount.0.join(".")).arg(out));
        drop(mount);
    };

    // The same tree from all three, once, before measuring.
    mount_cp(&fresh(&kernel));
    let want = tree(&kernel);
    unpack(&fresh(&ours));
    assert_same_tree("layerstack unpack", &ours, &want);
    umoci_unpack(&fresh(&umoci));
    assert_same_tree("umoci unpack", &umoci.join("rootfs"), &want);

    let mut group = c.benchmark_group("flatten");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    // The check above wrote the layer records: only the blob digests
    // are checked, as on every flatten of the layout after its first.
    group.bench_function("layerstack_unpack", |b| {
        b.iter_batched(|| fresh(&ours), |out| unpack(&out), BatchSize::PerIteration)
    });
    // The first flatten of a layout: no records, every DiffID checked
    // too (and the records written).
    group.bench_function("layerstack_unpack_first", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_dir_all(&records);
                fresh(&ours)
            },
            |out| unpack(&out),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("umoci_unpack", |b| {
        b.iter_batched(
            || fresh(&umoci),
            |out| umoci_unpack(&out),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("tar_xzf_in_order", |b| {
        b.iter_batched(|| fresh(&tar), |out| tar_x(&out), BatchSize::PerIteration)
    });
    // The floor of any flatten: inflating every layer, each on its own
    // thread, writing nothing (layerstack's own decompressor).
    group.bench_function("inflate_layers_in_parallel", |b| {
        b.iter(|| inflate_in_parallel(&blobs))
    });
    group.bench_function("kernel_mount_cp_a", |b| {
        b.iter_batched(
            || {
                let out = fresh(&kernel);
                std::fs::create_dir_all(&out).expect("create the target");
                out
            },
            |out| mount_cp(&out),
            BatchSize::PerIteration,
        )
    });
    group.finish();
    for d in [&ours, &umoci, &tar, &kernel, &oci] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Inflates the gzip blobs, one thread each, into nothing; returns the
/// uncompressed bytes.
fn inflate_in_parallel(blobs: &[PathBuf]) -> u64 {
    std::thread::scope(|s| {
        let threads: Vec<_> = blobs
            .iter()
            .map(|b| {
                s.spawn(move || {
                    let file = std::fs::File::open(b).expect("open a layer blob");
                    let mut gz = layerstack::oci::Decompressor::new(file)
                        .expect("detect a layer's compression");
                    std::io::copy(&mut gz, &mut std::io::sink()).expect("inflate a layer")
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("an inflating thread"))
            .sum()
    })
}

fn export(c: &mut Criterion, corpus: &Path) {
    let rootfs = corpus.join("rootfs");
    let layer: Arc<dyn Layer> = Arc::new(DirLayer::open(utf8(&rootfs)).expect("open the rootfs"));
    let tar = format!("tar -C {} -cf - .", rootfs.display());
    let mut group = c.benchmark_group("export_digest");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    for (name, compression, tool) in [
        ("gzip", Compression::Gzip, "gzip"),
        ("zstd", Compression::Zstd, "zstd"),
    ] {
        let options = ExportOptions::new().compression(compression);
        let export = || {
            export_layer(&layer, &[], Counter(0), &options)
                .expect("export")
                .0
                .0
        };
        let pipe = format!("{tar} | {tool} | sha256sum");
        let pipe_diffid = format!("{tar} | tee >(sha256sum >/dev/null) | {tool} | sha256sum");
        let pipe_size = sh(&format!("{tar} | {tool} | wc -c"))
            .output()
            .expect("run");
        eprintln!(
            "export_digest/{name}: layerstack writes {} bytes, `{tar} | {tool}` {} bytes",
            export(),
            String::from_utf8_lossy(&pipe_size.stdout).trim()
        );
        group.bench_function(format!("{name}/layerstack"), |b| {
            b.iter(|| black_box(export()))
        });
        group.bench_function(format!("{name}/pipeline"), |b| {
            b.iter(|| run(&mut sh(&pipe)))
        });
        group.bench_function(format!("{name}/pipeline_with_diffid"), |b| {
            b.iter(|| run(&mut sh(&pipe_diffid)))
        });
    }
    group.finish();
}

fn inspect(c: &mut Criterion, corpus: &Path, tmp: &Path) {
    let layerstack = env!("CARGO_BIN_EXE_layerstack");
    let layout = fresh(&tmp.join("inspect"));
    run(Command::new("cp")
        .arg("-a")
        .arg(corpus.join("oci"))
        .arg(&layout));
    let image = format!("{}:bench", layout.display());
    let cache = layout.join(".layerstack");
    let inspect = |sizes: bool| {
        let out = Command::new(layerstack)
            .arg("inspect")
            .arg(&image)
            .args(sizes.then_some("--sizes"))
            .output()
            .expect("run layerstack inspect");
        assert!(out.status.success(), "layerstack inspect failed");
        out.stdout
    };
    // Once with --sizes: every size is known after it.
    let _ = std::fs::remove_dir_all(&cache);
    let text = String::from_utf8(inspect(true)).expect("UTF-8 output");
    assert!(
        !text.contains("not known"),
        "inspect --sizes left a size unknown"
    );
    assert_eq!(
        inspect(false),
        text.into_bytes(),
        "the cache gives other sizes"
    );

    let mut group = c.benchmark_group("inspect");
    group.sample_size(10);
    group.bench_function("layerstack_cached", |b| {
        b.iter(|| black_box(inspect(false)))
    });
    group.bench_function("layerstack_sizes_uncached", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_dir_all(&cache);
            },
            |()| black_box(inspect(true)),
            BatchSize::PerIteration,
        )
    });
    if have("skopeo") {
        let oci = format!("oci:{image}");
        group.bench_function("skopeo_inspect_raw", |b| {
            b.iter(|| run(Command::new("skopeo").args(["inspect", "--raw", &oci])))
        });
    } else {
        eprintln!("inspect/skopeo_inspect_raw: skopeo is not installed, not measured");
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&layout);
}

/// Counts the bytes written to it, as `wc -c` would.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn commands(c: &mut Criterion) {
    if !is_root() {
        eprintln!("SKIP command benchmarks: they need root (mounts, device nodes, owners)");
        return;
    }
    let Some(corpus) = corpus() else {
        eprintln!("SKIP command benchmarks: no corpus; run benches/corpus.sh first");
        return;
    };
    for tool in ["umoci", "gzip", "zstd", "tar", "cp", "sha256sum"] {
        if !have(tool) {
            eprintln!("SKIP command benchmarks: `{tool}` is not installed");
            return;
        }
    }
    let tmp = Tmpfs::new(scratch_root("bench-commands").join("tmpfs"));
    flatten(c, &corpus, &tmp.0);
    inspect(c, &corpus, &tmp.0);
    export(c, &corpus);
}

criterion_group!(benches, commands);
criterion_main!(benches);
