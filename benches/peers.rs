//! layerstack beside its peers, in one run, on the same trees and paths:
//! `mem` is a `MergedView` of `MemLayer`s, `disk` one of `DirLayer`s, `vfs`
//! the `vfs` crate's `OverlayFS` over `MemoryFS` layers, `kernel` the
//! kernel's overlayfs mounted over the same directories as `disk`.
//!
//! - `lookup/{impl}/{1,8,64}`: one pass of `lstat`-like metadata over every
//!   non-directory of the corpus's root filesystem (`benches/corpus.sh`;
//!   without it, 20,000 files of the host's `/usr/share`), the files dealt
//!   round-robin over 1, 8 and 64 layers, all empty. The views are warm
//!   (criterion's warm-up visits every path first).
//! - `first_write/{impl}/{4KiB,1GiB}`: the first 1-byte append to a lower
//!   file: its copy-up plus the write, on a fresh upper each time. Disk
//!   copy-ups are synced, as the kernel's default `fsync=auto` does.
//! - `listing_90k/{impl}/{cold,warm}`: the merged listing of a directory of
//!   90,000 names over 10 layers, every layer but the bottom one whiting
//!   out 900 names of the layer below it (81,900 names remain). "cold" is
//!   the first listing of a fresh view (of a fresh mount for the kernel);
//!   making and dropping the view or the mount is not timed. "warm" lists
//!   again (layerstack keeps an index per directory; the kernel caches a
//!   merged listing only while the directory is open, so every `opendir`
//!   builds it again).
//!   `vfs` has no whiteouts in lower layers, so its layers hold only the
//!   81,900 visible names, and it has no cache, so it has only one figure.
//!   `mem_lent` lists with `list_dir` (names lent) and visits every entry.
//! - `listing_90k_mixed/{impl}`: the first listing of the same number of
//!   names in memory, dealt so that neighbours in byte order come from
//!   different layers, 15 bytes each with long shared prefixes (the worst
//!   case for the merge's runs and its 8-byte first comparison).
//!
//! `disk` and `kernel` need root (mounts, whiteouts); without it they are
//! skipped with a message. Layers are built once under
//! `target/bench-peers`.

mod common;

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{
    HIDDEN, LAYERS, Mount, PER_LAYER, VISIBLE, dir_layers, disk_big_file, disk_listing,
    fresh_upper, is_root, listing_names, listing_whiteouts, scratch_root, tree_paths,
};
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use layerstack::{Layer, MemLayer, MergedView};
use vfs::{FileSystem, MemoryFS, OverlayFS, VfsPath};

const DEPTHS: [usize; 3] = [1, 8, 64];

/// A `vfs` overlay: a fresh `MemoryFS` to write into, over `lowers` (top first).
fn vfs_overlay(lowers: &[VfsPath]) -> OverlayFS {
    let mut layers = vec![VfsPath::new(MemoryFS::new())];
    layers.extend(lowers.iter().cloned());
    OverlayFS::new(&layers)
}

/// A `MemoryFS` holding empty files at `paths` (relative), with their parents.
fn vfs_layer<'a>(paths: impl IntoIterator<Item = &'a str>) -> VfsPath {
    let root = VfsPath::new(MemoryFS::new());
    for p in paths {
        let file = root.join(p).expect("a vfs path");
        file.parent().create_dir_all().expect("vfs create_dir_all");
        file.create_file().expect("vfs create_file");
    }
    root
}

/// The file of `paths` with index `i` goes to layer `i % depth` (top first).
fn dealt(paths: &[String], depth: usize, layer: usize) -> impl Iterator<Item = &str> {
    paths
        .iter()
        .enumerate()
        .filter(move |(i, _)| i % depth == layer)
        .map(|(_, p)| p.as_str())
}

fn disk_tree(root: &Path, paths: &[String], depth: usize) -> Vec<PathBuf> {
    let base = root.join(format!("lookup{depth}"));
    let dirs: Vec<PathBuf> = (0..depth).map(|k| base.join(format!("l{k}"))).collect();
    let done = base.join(format!(".done-{}", paths.len()));
    if done.exists() {
        return dirs;
    }
    let _ = std::fs::remove_dir_all(&base);
    for (k, d) in dirs.iter().enumerate() {
        for p in dealt(paths, depth, k) {
            let path = d.join(p);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
            std::fs::File::create(&path).expect("create file");
        }
        std::fs::create_dir_all(d).expect("create layer");
    }
    std::fs::File::create(&done).expect("mark done");
    dirs
}

fn lookup(c: &mut Criterion, root: &Path) {
    let paths = tree_paths();
    let slashed: Vec<String> = paths.iter().map(|p| format!("/{p}")).collect();
    eprintln!("lookup: {} paths per pass", paths.len());
    let mut group = c.benchmark_group("lookup");
    group.throughput(Throughput::Elements(paths.len() as u64));
    group.sample_size(20);
    for depth in DEPTHS {
        let lowers: Vec<Arc<dyn Layer>> = (0..depth)
            .map(|k| {
                let mut l = MemLayer::new();
                for p in dealt(&paths, depth, k) {
                    l.add_file(p, "").expect("add_file");
                }
                Arc::new(l) as Arc<dyn Layer>
            })
            .collect();
        let view = MergedView::new(lowers, MemLayer::new()).expect("view");
        group.bench_function(BenchmarkId::new("mem", depth), |b| {
            b.iter(|| {
                for p in &paths {
                    black_box(view.symlink_metadata(p).expect("metadata"));
                }
            })
        });
        drop(view);

        let lowers: Vec<VfsPath> = (0..depth)
            .map(|k| vfs_layer(dealt(&paths, depth, k)))
            .collect();
        let fs = vfs_overlay(&lowers);
        group.bench_function(BenchmarkId::new("vfs", depth), |b| {
            b.iter(|| {
                for p in &slashed {
                    black_box(fs.metadata(p).expect("vfs metadata"));
                }
            })
        });
        drop(fs);

        if !is_root() {
            continue;
        }
        let dirs = disk_tree(root, &paths, depth);
        let view = MergedView::new(dir_layers(&dirs), MemLayer::new()).expect("view");
        group.bench_function(BenchmarkId::new("disk", depth), |b| {
            b.iter(|| {
                for p in &paths {
                    black_box(view.symlink_metadata(p).expect("metadata"));
                }
            })
        });
        let mount = Mount::new(&dirs, &root.join("lookup-scratch"));
        let full: Vec<PathBuf> = paths.iter().map(|p| mount.0.join(p)).collect();
        group.bench_function(BenchmarkId::new("kernel", depth), |b| {
            b.iter(|| {
                for p in &full {
                    black_box(std::fs::symlink_metadata(p).expect("lstat"));
                }
            })
        });
    }
    group.finish();
}

const SIZES: [(&str, usize); 2] = [("4KiB", 4 << 10), ("1GiB", 1 << 30)];

fn first_write(c: &mut Criterion, root: &Path) {
    let mut group = c.benchmark_group("first_write");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (name, size) in SIZES {
        let data = vec![0x5au8; size];
        let mut lower = MemLayer::new();
        lower.add_file("big", data.clone()).expect("add_file");
        let lower: Arc<dyn Layer> = Arc::new(lower);
        group.bench_function(BenchmarkId::new("mem", name), |b| {
            b.iter_batched(
                || MergedView::new(vec![lower.clone()], MemLayer::new()).expect("view"),
                |view| {
                    view.append("big", "x").expect("append");
                    view
                },
                BatchSize::PerIteration,
            )
        });
        drop(lower);

        let lower = VfsPath::new(MemoryFS::new());
        lower
            .join("big")
            .and_then(|f| f.create_file())
            .and_then(|mut w| Ok(w.write_all(&data)?))
            .expect("vfs write");
        drop(data);
        group.bench_function(BenchmarkId::new("vfs", name), |b| {
            b.iter_batched(
                || vfs_overlay(std::slice::from_ref(&lower)),
                |fs| {
                    let mut w = fs.append_file("/big").expect("vfs append_file");
                    w.write_all(b"x").expect("vfs write");
                    w.flush().expect("vfs flush");
                    drop(w);
                    fs
                },
                BatchSize::PerIteration,
            )
        });
        drop(lower);

        if !is_root() {
            continue;
        }
        let lowers = vec![disk_big_file(root, name, size)];
        let scratch = root.join("first-write-scratch");
        std::fs::create_dir_all(&scratch).expect("scratch");
        group.bench_function(BenchmarkId::new("disk", name), |b| {
            b.iter_batched(
                || MergedView::new(dir_layers(&lowers), fresh_upper(&scratch)).expect("view"),
                |view| {
                    view.append("big", "x").expect("append");
                    view
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new("kernel", name), |b| {
            b.iter_batched(
                || Mount::new(&lowers, &scratch),
                |mount| {
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(mount.0.join("big"))
                        .expect("open");
                    f.write_all(b"x").expect("append");
                    drop(f);
                    mount
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// `big`'s listing with `read_dir`: a `DirEntry` with its own name each.
fn read_all(view: &MergedView) -> usize {
    view.read_dir("big").expect("read_dir").len()
}

/// `big`'s listing with the names lent (`list_dir`), every entry visited
/// and the first byte of its name read. (Not `black_box(e.name)`: storing
/// each name's pointer and reading its length back is a stall of the
/// store buffer, which `perf annotate` showed as most of the time.)
fn visit_lent(view: &MergedView) -> usize {
    let listing = view.list_dir("big").expect("list_dir");
    listing
        .iter()
        .map(|e| usize::from(e.name.as_bytes()[0]))
        .sum()
}

/// `list` on a fresh view each time (making and dropping it not timed).
fn first_listing(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    fresh: &dyn Fn() -> MergedView,
    list: fn(&MergedView) -> usize,
) {
    group.bench_function(id, |b| {
        b.iter_batched(
            fresh,
            |view| {
                black_box(list(&view));
                view
            },
            BatchSize::PerIteration,
        )
    });
}

fn listing(c: &mut Criterion, root: &Path) {
    let mut group = c.benchmark_group("listing_90k");
    group.sample_size(10);

    let lowers: Vec<Arc<dyn Layer>> = (0..LAYERS)
        .map(|k| {
            let mut l = MemLayer::new();
            for n in listing_names(k) {
                l.add_file(&n, "").expect("add_file");
            }
            for n in listing_whiteouts(k) {
                l.add_whiteout(&n).expect("add_whiteout");
            }
            Arc::new(l) as Arc<dyn Layer>
        })
        .collect();
    let fresh = || MergedView::new(lowers.clone(), MemLayer::new()).expect("view");
    first_listing(&mut group, "mem/cold", &fresh, read_all);
    first_listing(&mut group, "mem_lent/cold", &fresh, visit_lent);
    let view = MergedView::new(lowers, MemLayer::new()).expect("view");
    assert_eq!(view.read_dir("big").expect("read_dir").len(), VISIBLE);
    assert_eq!(
        view.list_dir("big").expect("list_dir").iter().count(),
        VISIBLE
    );
    group.bench_function("mem/warm", |b| b.iter(|| black_box(read_all(&view))));
    group.bench_function("mem_lent/warm", |b| b.iter(|| black_box(visit_lent(&view))));
    drop(view);

    let vfs_lowers: Vec<VfsPath> = (0..LAYERS)
        .map(|k| {
            let hidden: Vec<String> = if k == 0 {
                Vec::new()
            } else {
                listing_whiteouts(k - 1).collect()
            };
            let names: Vec<String> = listing_names(k).filter(|n| !hidden.contains(n)).collect();
            vfs_layer(names.iter().map(String::as_str))
        })
        .collect();
    let fs = vfs_overlay(&vfs_lowers);
    assert_eq!(fs.read_dir("/big").expect("vfs read_dir").count(), VISIBLE);
    group.bench_function("vfs", |b| {
        b.iter(|| black_box(fs.read_dir("/big").expect("vfs read_dir").count()))
    });
    drop(fs);
    drop(vfs_lowers);

    if is_root() {
        let dirs = disk_listing(root);
        let scratch = root.join("listing-scratch");
        let fresh = || MergedView::new(dir_layers(&dirs), MemLayer::new()).expect("view");
        first_listing(&mut group, "disk/cold", &fresh, read_all);
        group.bench_function("kernel/cold", |b| {
            b.iter_batched(
                || Mount::new(&dirs, &scratch),
                |mount| {
                    black_box(
                        std::fs::read_dir(mount.0.join("big"))
                            .expect("read_dir")
                            .count(),
                    );
                    mount
                },
                BatchSize::PerIteration,
            )
        });
        let view = MergedView::new(dir_layers(&dirs), MemLayer::new()).expect("view");
        assert_eq!(view.read_dir("big").expect("read_dir").len(), VISIBLE);
        let mount = Mount::new(&dirs, &scratch);
        let listed = std::fs::read_dir(mount.0.join("big"))
            .expect("read_dir")
            .count();
        assert_eq!(listed, VISIBLE, "the kernel lists the same names");
        group.bench_function("disk/warm", |b| {
            b.iter(|| black_box(view.read_dir("big").expect("read_dir").len()))
        });
        group.bench_function("kernel/warm", |b| {
            b.iter(|| {
                black_box(
                    std::fs::read_dir(mount.0.join("big"))
                        .expect("read_dir")
                        .count(),
                )
            })
        });
    }
    group.finish();
}

/// The listing's worst case for layerstack's merge: the same 90,000 names
/// over 10 layers (900 whited out by each layer above), but dealt so that
/// names next to each other in byte order come from different layers, and
/// 15 bytes long with their first eight shared by a thousand others.
fn listing_mixed(c: &mut Criterion) {
    let name = |i: usize, k: usize| format!("big/file-{i:06}-{k}");
    let whited = |k: usize| (0..if k + 1 < LAYERS { HIDDEN } else { 0 }).map(move |i| (i, k + 1));
    let mut group = c.benchmark_group("listing_90k_mixed");
    group.sample_size(10);
    let lowers: Vec<Arc<dyn Layer>> = (0..LAYERS)
        .map(|k| {
            let mut l = MemLayer::new();
            for i in 0..PER_LAYER {
                l.add_file(name(i, k), "").expect("add_file");
            }
            for (i, below) in whited(k) {
                l.add_whiteout(name(i, below)).expect("add_whiteout");
            }
            Arc::new(l) as Arc<dyn Layer>
        })
        .collect();
    let fresh = || MergedView::new(lowers.clone(), MemLayer::new()).expect("view");
    assert_eq!(fresh().list_dir("big").expect("list_dir").len(), VISIBLE);
    first_listing(&mut group, "mem/cold", &fresh, read_all);
    first_listing(&mut group, "mem_lent/cold", &fresh, visit_lent);
    drop(lowers);
    let vfs_lowers: Vec<VfsPath> = (0..LAYERS)
        .map(|k| {
            let hidden: Vec<usize> = if k == 0 {
                Vec::new()
            } else {
                whited(k - 1).map(|(i, _)| i).collect()
            };
            let names: Vec<String> = (0..PER_LAYER)
                .filter(|i| !hidden.contains(i))
                .map(|i| name(i, k))
                .collect();
            vfs_layer(names.iter().map(String::as_str))
        })
        .collect();
    let fs = vfs_overlay(&vfs_lowers);
    assert_eq!(fs.read_dir("/big").expect("vfs read_dir").count(), VISIBLE);
    group.bench_function("vfs", |b| {
        b.iter(|| black_box(fs.read_dir("/big").expect("vfs read_dir").count()))
    });
    group.finish();
}

fn peers(c: &mut Criterion) {
    let root = scratch_root("bench-peers");
    if !is_root() {
        eprintln!(
            "SKIP the disk and kernel figures: they mount overlays and make whiteouts, which needs root"
        );
    }
    lookup(c, &root);
    first_write(c, &root);
    listing(c, &root);
    listing_mixed(c);
}

criterion_group!(benches, peers);
criterion_main!(benches);
