//! The mounted view beside its peers, in one run, on the same layers:
//! `ours` is `layerstack::mount` (FUSE, served by this process),
//! `fuse-overlayfs` Debian's FUSE overlay, `kernel` the kernel's overlayfs.
//!
//! - `stat_all/{impl}`: `lstat` of every path of the merged tree of the
//!   Debian corpus's three layers (`benches/corpus.sh`: the root
//!   filesystem, then the layers `kernel/2` and `kernel/3` on top; without
//!   the corpus, a generated tree of 5,000 files in 3 layers). Warm: the
//!   same mount serves every pass.
//! - `listing_90k/{impl}`: `readdir` of a directory of 90,000 names over 10
//!   layers, 81,900 visible (the layers of `benches/peers.rs`), on one
//!   mount, listed again each pass.
//! - `read_all/{impl}`: reading every regular file of that tree (warm page
//!   cache where the implementation keeps one).
//! - `untar/{impl}`: GNU tar extracting the corpus's `usr/share` (without
//!   it, the generated tree) into a new directory of the mount, on a fresh
//!   writable mount each time (mounting and unmounting are not timed).
//! - `first_write_1GiB/{impl}`: open for appending, write one byte and
//!   close, on a 1 GiB lower file, on a fresh writable mount each time:
//!   the copy-up. Ours and the kernel sync the copy before it becomes
//!   visible; fuse-overlayfs never does. `ours-volatile` and
//!   `kernel-volatile` are the same with nothing synced
//!   (`Durability::Volatile`, the kernel's `-o volatile`): the
//!   like-for-like comparison with fuse-overlayfs.
//!
//! Needs root and `/dev/fuse`; without them it says why and measures
//! nothing. fuse-overlayfs is left out, with a note, when it is not
//! installed. Mounts and uppers live under `target/bench-mount`.

mod common;

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    Mount, VISIBLE, corpus, dir_layers, disk_big_file, disk_listing, fresh_upper, fresh_upper_with,
    is_root, scratch_root, walk,
};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use layerstack::layer::dir::{DirLayerOptions, Durability};
use layerstack::mount::{MountOptions, Mounted};
use layerstack::{MemLayer, MergedView};

/// The implementations compared.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    Ours,
    FuseOverlayfs,
    Kernel,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Ours => "ours",
            Peer::FuseOverlayfs => "fuse-overlayfs",
            Peer::Kernel => "kernel",
        }
    }
}

/// A mount of one of the peers, unmounted when dropped.
enum Mounting {
    Ours(Mounted),
    /// fuse-overlayfs serves from a process of its own.
    FuseOverlayfs(PathBuf),
    Kernel(Mount),
}

impl Mounting {
    fn path(&self) -> &Path {
        match self {
            Mounting::Ours(m) => m.mountpoint(),
            Mounting::FuseOverlayfs(p) => p,
            Mounting::Kernel(m) => &m.0,
        }
    }
}

impl Drop for Mounting {
    fn drop(&mut self) {
        if let Mounting::FuseOverlayfs(mnt) = self {
            let _ = Command::new("fusermount3").arg("-u").arg(&*mnt).status();
        }
    }
}

/// Mounts `lowers` (top first) at `scratch/mnt`: read-only, or with a
/// fresh upper and work directory in `scratch` when `writable`.
fn mount(peer: Peer, lowers: &[PathBuf], scratch: &Path, writable: bool) -> Mounting {
    let mnt = scratch.join("mnt");
    std::fs::create_dir_all(&mnt).expect("create the mount point");
    match peer {
        Peer::Ours => {
            let view = if writable {
                MergedView::new(dir_layers(lowers), fresh_upper(scratch))
            } else {
                MergedView::new(dir_layers(lowers), MemLayer::new())
            }
            .expect("open the view");
            let options = MountOptions {
                read_only: !writable,
                ..MountOptions::default()
            };
            Mounting::Ours(layerstack::mount::mount(view, &mnt, &options).expect("mount ours"))
        }
        Peer::FuseOverlayfs => {
            let mut data = format!("lowerdir={}", join(lowers));
            if writable {
                let (upper, work) = (scratch.join("fupper"), scratch.join("fwork"));
                for d in [&upper, &work] {
                    let _ = std::fs::remove_dir_all(d);
                    std::fs::create_dir_all(d).expect("create the upper");
                }
                data += &format!(",upperdir={},workdir={}", upper.display(), work.display());
            }
            let status = Command::new("fuse-overlayfs")
                .arg("-o")
                .arg(data)
                .arg(&mnt)
                .status()
                .expect("run fuse-overlayfs");
            assert!(status.success(), "fuse-overlayfs failed: {status}");
            Mounting::FuseOverlayfs(mnt)
        }
        Peer::Kernel if writable => Mounting::Kernel(Mount::new(lowers, scratch)),
        Peer::Kernel => Mounting::Kernel(Mount::read_only(lowers, &mnt)),
    }
}

/// As [`mount`], writable and `volatile`: ours with
/// [`Durability::Volatile`], the kernel's with `-o volatile`.
fn mount_volatile(peer: Peer, lowers: &[PathBuf], scratch: &Path) -> Mounting {
    let mnt = scratch.join("mnt");
    std::fs::create_dir_all(&mnt).expect("create the mount point");
    match peer {
        Peer::Ours => {
            let upper = fresh_upper_with(
                scratch,
                DirLayerOptions::default().durability(Durability::Volatile),
            );
            let view = MergedView::new(dir_layers(lowers), upper).expect("open the view");
            Mounting::Ours(
                layerstack::mount::mount(view, &mnt, &MountOptions::default()).expect("mount ours"),
            )
        }
        Peer::Kernel => Mounting::Kernel(Mount::volatile(lowers, scratch)),
        Peer::FuseOverlayfs => unreachable!("fuse-overlayfs never syncs a copy-up"),
    }
}

fn join(lowers: &[PathBuf]) -> String {
    let names: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    names.join(":")
}

/// The peers that run here: ours and the kernel's always (as root),
/// fuse-overlayfs when it is installed.
fn peers() -> Vec<Peer> {
    let fuse_overlayfs = Command::new("fuse-overlayfs")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !fuse_overlayfs {
        eprintln!(
            "NOTE: fuse-overlayfs is not installed (apt-get install fuse-overlayfs): left out"
        );
    }
    let mut peers = vec![Peer::Ours];
    if fuse_overlayfs {
        peers.push(Peer::FuseOverlayfs);
    }
    peers.push(Peer::Kernel);
    peers
}

/// The tree's layers, top first, and the tree to untar: the corpus's, or
/// a generated one.
struct Tree {
    lowers: Vec<PathBuf>,
    tarball: PathBuf,
}

fn tree(root: &Path) -> Tree {
    let tarball = root.join("untar.tar");
    let (lowers, tar_from, tar_what) = match corpus() {
        Some(c) => (
            vec![c.join("kernel/3"), c.join("kernel/2"), c.join("rootfs")],
            c.join("rootfs"),
            "usr/share",
        ),
        None => {
            eprintln!("NOTE: no corpus (run benches/corpus.sh); a generated tree instead");
            let lowers = generated(root);
            (lowers.clone(), lowers[2].clone(), "tree")
        }
    };
    if !tarball.exists() {
        let partial = root.join("untar.tar.partial");
        let status = Command::new("tar")
            .arg("-cf")
            .arg(&partial)
            .arg("-C")
            .arg(&tar_from)
            .arg(tar_what)
            .status()
            .expect("run tar");
        assert!(status.success(), "tar failed");
        std::fs::rename(&partial, &tarball).expect("rename the tarball");
    }
    Tree { lowers, tarball }
}

/// Three layers of 5,000 files of 1 to 64 KiB in 100 directories; the
/// upper two replace every tenth file of the one below.
fn generated(root: &Path) -> Vec<PathBuf> {
    let base = root.join("generated");
    let dirs: Vec<PathBuf> = (0..3).map(|k| base.join(format!("l{k}"))).collect();
    if base.join(".done").exists() {
        return dirs;
    }
    let _ = std::fs::remove_dir_all(&base);
    for (k, dir) in dirs.iter().enumerate() {
        for i in (0..5_000usize).filter(|i| k == 2 || i % 10 == k) {
            let path = dir.join(format!("tree/d{}/f{i}", i % 100));
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
            let size = 1024 * (1 + (i * 7919) % 64);
            std::fs::write(&path, vec![b'a' + k as u8; size]).expect("write a file");
        }
    }
    std::fs::File::create(base.join(".done")).expect("mark done");
    dirs
}

fn stat_and_read(c: &mut Criterion, root: &Path, peers: &[Peer], tree: &Tree) {
    // The merged tree, as the kernel shows it: every peer visits the same
    // paths.
    let scratch = root.join("walk");
    let kernel = mount(Peer::Kernel, &tree.lowers, &scratch, false);
    let mut paths = Vec::new();
    let mut files = Vec::new();
    let mut bytes = 0;
    walk(kernel.path(), &mut |rel, m, _| {
        paths.push(rel.to_owned());
        if m.is_file() {
            files.push(rel.to_owned());
            bytes += m.len();
        }
    });
    drop(kernel);
    eprintln!(
        "stat_all: {} paths; read_all: {} files, {bytes} bytes",
        paths.len(),
        files.len()
    );

    let mut group = c.benchmark_group("stat_all");
    group.throughput(Throughput::Elements(paths.len() as u64));
    group.sample_size(10);
    for &peer in peers {
        let m = mount(peer, &tree.lowers, &root.join(peer.name()), false);
        let full: Vec<PathBuf> = paths.iter().map(|p| m.path().join(p)).collect();
        group.bench_function(BenchmarkId::from_parameter(peer.name()), |b| {
            b.iter(|| {
                for p in &full {
                    black_box(std::fs::symlink_metadata(p).expect("lstat"));
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("read_all");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let mut buf = Vec::with_capacity(1 << 20);
    for &peer in peers {
        let m = mount(peer, &tree.lowers, &root.join(peer.name()), false);
        let full: Vec<PathBuf> = files.iter().map(|p| m.path().join(p)).collect();
        group.bench_function(BenchmarkId::from_parameter(peer.name()), |b| {
            b.iter(|| {
                let mut total = 0;
                for p in &full {
                    buf.clear();
                    let mut f = std::fs::File::open(p).expect("open");
                    total += f.read_to_end(&mut buf).expect("read");
                }
                assert_eq!(total as u64, bytes, "every byte read");
            })
        });
    }
    group.finish();
}

fn listing(c: &mut Criterion, peers: &[Peer], root: &Path) {
    let lowers = disk_listing(&scratch_root("bench-peers"));
    let mut group = c.benchmark_group("listing_90k");
    group.throughput(Throughput::Elements(VISIBLE as u64));
    group.sample_size(10);
    for &peer in peers {
        let m = mount(peer, &lowers, &root.join(peer.name()), false);
        let big = m.path().join("big");
        let listed = std::fs::read_dir(&big).expect("read_dir").count();
        assert_eq!(listed, VISIBLE, "{} lists every visible name", peer.name());
        group.bench_function(BenchmarkId::from_parameter(peer.name()), |b| {
            b.iter(|| black_box(std::fs::read_dir(&big).expect("read_dir").count()))
        });
    }
    group.finish();
}

fn untar(c: &mut Criterion, peers: &[Peer], root: &Path, tree: &Tree) {
    let mut group = c.benchmark_group("untar");
    group.throughput(Throughput::Bytes(
        std::fs::metadata(&tree.tarball).expect("the tarball").len(),
    ));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for &peer in peers {
        let scratch = root.join(peer.name());
        group.bench_function(BenchmarkId::from_parameter(peer.name()), |b| {
            b.iter_batched(
                || {
                    let m = mount(peer, &tree.lowers, &scratch, true);
                    std::fs::create_dir(m.path().join("untarred")).expect("mkdir");
                    m
                },
                |m| {
                    let status = Command::new("tar")
                        .arg("-xf")
                        .arg(&tree.tarball)
                        .arg("-C")
                        .arg(m.path().join("untarred"))
                        .status()
                        .expect("run tar");
                    assert!(status.success(), "tar -x into {} failed", peer.name());
                    m
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn first_write(c: &mut Criterion, peers: &[Peer], root: &Path) {
    let lowers = vec![disk_big_file(&scratch_root("bench-peers"), "1GiB", 1 << 30)];
    let mut group = c.benchmark_group("first_write_1GiB");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    let volatile = [Peer::Ours, Peer::Kernel].map(|p| (p, true));
    for (peer, volatile) in peers.iter().map(|&p| (p, false)).chain(volatile) {
        let name = match volatile {
            true => format!("{}-volatile", peer.name()),
            false => peer.name().to_owned(),
        };
        let scratch = root.join(&name);
        group.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter_batched(
                || match volatile {
                    true => mount_volatile(peer, &lowers, &scratch),
                    false => mount(peer, &lowers, &scratch, true),
                },
                |m| {
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(m.path().join("big"))
                        .expect("open for appending");
                    f.write_all(b"x").expect("append");
                    drop(f);
                    m
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    if !is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!(
            "SKIP mount benchmarks: they mount FUSE and overlay filesystems, which needs root and /dev/fuse"
        );
        return;
    }
    let root = scratch_root("bench-mount");
    let peers = peers();
    let tree = tree(&root);
    stat_and_read(c, &root, &peers, &tree);
    listing(c, &peers, &root);
    untar(c, &peers, &root, &tree);
    first_write(c, &peers, &root);
}

criterion_group!(benches, bench);
criterion_main!(benches);
