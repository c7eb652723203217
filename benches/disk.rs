//! Disk layers side by side with the kernel's overlayfs, in one run:
//!
//! - `readdir_90k`: the merged listing of a directory of 90,000 names spread
//!   over 10 `DirLayer`s, with whiteouts in every layer but the bottom one,
//!   against `read_dir` through a kernel overlay mount of the same
//!   directories. "cold" builds the listing from the layers (a fresh view; a
//!   fresh mount for the kernel, its mount time included), "warm" repeats it
//!   (both cache merged listings).
//! - `stat_tree/N`: `symlink_metadata` of every file of a real tree (the
//!   host's `/usr/share`, empty files with the same names and directories,
//!   up to 20,000 files) spread over N = 1, 8 and 64 layers, against `lstat`
//!   through the kernel mount; one iteration is one pass over all paths.
//! - `append_1GiB`: the first 1-byte append to a 1 GiB lower file (its
//!   copy-up, synced as the kernel's `fsync=auto` does), against the same
//!   through the kernel mount, and against `cp` of the file.
//!
//! Needs root (mounts, whiteouts); without it, it prints why and measures
//! nothing. The layers are built once under `target/bench-disk`.

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use layerstack::{DirLayer, Layer, MemLayer, MergedView};
use rustix::mount::{MountFlags, UnmountFlags};

fn bench_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-disk")
}

/// A kernel overlay mount, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(lowers: &[PathBuf], scratch: &Path) -> Mount {
        let (upper, work, mnt) = (
            scratch.join("upper"),
            scratch.join("work"),
            scratch.join("mnt"),
        );
        for d in [&upper, &work, &mnt] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).expect("create mount directories");
        }
        let lowerdir = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let data = format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        let data = std::ffi::CString::new(data).expect("no NUL in mount options");
        rustix::mount::mount(
            "overlay",
            &mnt,
            "overlay",
            MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .expect("mount the kernel overlay");
        Mount(mnt)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, UnmountFlags::DETACH);
    }
}

fn whiteout(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .expect("mknod a whiteout");
}

fn lower_layers(dirs: &[PathBuf]) -> Vec<Arc<dyn Layer>> {
    dirs.iter()
        .map(|d| {
            let d = camino::Utf8PathBuf::from_path_buf(d.clone()).expect("UTF-8 path");
            Arc::new(DirLayer::open(&d).expect("open a layer")) as Arc<dyn Layer>
        })
        .collect()
}

fn fresh_upper(scratch: &Path) -> DirLayer {
    let (u, w) = (scratch.join("vupper"), scratch.join("vwork"));
    let _ = std::fs::remove_dir_all(&u);
    let to = |p: PathBuf| camino::Utf8PathBuf::from_path_buf(p).expect("UTF-8 path");
    DirLayer::open_upper(to(u), to(w)).expect("open an upper layer")
}

/// 10 layers of 9,000 names each in `big/`; every layer but the bottom
/// whites out 900 names of the layer below.
fn build_readdir(root: &Path) -> Vec<PathBuf> {
    let base = root.join("readdir");
    let done = base.join(".done");
    let dirs: Vec<PathBuf> = (0..10).map(|k| base.join(format!("l{k}"))).collect();
    if done.exists() {
        return dirs;
    }
    let _ = std::fs::remove_dir_all(&base);
    for (k, dir) in dirs.iter().enumerate() {
        let big = dir.join("big");
        std::fs::create_dir_all(&big).expect("create layer");
        for i in 0..9_000 {
            std::fs::File::create(big.join(format!("n{k}_{i}"))).expect("create file");
        }
        if k < 9 {
            for i in 0..900 {
                whiteout(&big.join(format!("n{}_{i}", k + 1)));
            }
        }
    }
    std::fs::File::create(&done).expect("mark done");
    dirs
}

fn readdir(c: &mut Criterion, root: &Path) {
    let lowers = build_readdir(root);
    let scratch = root.join("readdir-scratch");
    let mut group = c.benchmark_group("readdir_90k");
    group.sample_size(10);
    group.bench_function("layerstack/cold", |b| {
        b.iter_batched(
            || MergedView::new(lower_layers(&lowers), MemLayer::new()).expect("view"),
            |view| black_box(view.read_dir("big").expect("read_dir").len()),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("kernel/cold", |b| {
        b.iter(|| {
            let mount = Mount::new(&lowers, &scratch);
            black_box(
                std::fs::read_dir(mount.0.join("big"))
                    .expect("read_dir")
                    .count(),
            )
        })
    });
    let view = MergedView::new(lower_layers(&lowers), MemLayer::new()).expect("view");
    let expected = view.read_dir("big").expect("read_dir").len();
    let mount = Mount::new(&lowers, &scratch);
    assert_eq!(
        std::fs::read_dir(mount.0.join("big"))
            .expect("read_dir")
            .count(),
        expected,
        "the kernel and the view list the same names"
    );
    group.bench_function("layerstack/warm", |b| {
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
    group.finish();
}

/// The relative paths of up to `max` files of `/usr/share` (regular files
/// and symlinks), with the directories holding them.
fn usr_share(max: usize) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![PathBuf::new()];
    let top = Path::new("/usr/share");
    while let Some(rel) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(top.join(&rel)) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(t) = e.file_type() else { continue };
            let path = rel.join(e.file_name());
            if path.to_str().is_none() {
                continue;
            }
            if t.is_dir() {
                todo.push(path);
            } else if files.len() < max {
                files.push(path);
            }
        }
        if files.len() >= max {
            break;
        }
    }
    files
}

fn build_stat(root: &Path, files: &[PathBuf], depth: usize) -> Vec<PathBuf> {
    let base = root.join(format!("stat{depth}"));
    let done = base.join(".done");
    let dirs: Vec<PathBuf> = (0..depth).map(|k| base.join(format!("l{k}"))).collect();
    if done.exists() {
        return dirs;
    }
    let _ = std::fs::remove_dir_all(&base);
    for d in &dirs {
        std::fs::create_dir_all(d).expect("create layer");
    }
    for (i, f) in files.iter().enumerate() {
        let path = dirs[i % depth].join(f);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
        std::fs::File::create(&path).expect("create file");
    }
    std::fs::File::create(&done).expect("mark done");
    dirs
}

fn stat_tree(c: &mut Criterion, root: &Path) {
    let files = usr_share(20_000);
    let mut group = c.benchmark_group("stat_tree");
    group.sample_size(10);
    let scratch = root.join("stat-scratch");
    for depth in [1usize, 8, 64] {
        let lowers = build_stat(root, &files, depth);
        let view = MergedView::new(lower_layers(&lowers), MemLayer::new()).expect("view");
        let names: Vec<String> = files
            .iter()
            .map(|f| f.to_str().expect("UTF-8").to_owned())
            .collect();
        let mount = Mount::new(&lowers, &scratch);
        group.bench_with_input(BenchmarkId::new("layerstack", depth), &names, |b, names| {
            b.iter(|| {
                for n in names {
                    black_box(view.symlink_metadata(n).expect("metadata"));
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("kernel", depth), &names, |b, names| {
            b.iter(|| {
                for n in names {
                    black_box(std::fs::symlink_metadata(mount.0.join(n)).expect("lstat"));
                }
            })
        });
        eprintln!("stat_tree/{depth}: {} paths per iteration", names.len());
    }
    group.finish();
}

fn append(c: &mut Criterion, root: &Path) {
    let base = root.join("append");
    let lower = base.join("lower");
    let big = lower.join("big");
    if std::fs::metadata(&big).map(|m| m.len()).ok() != Some(1 << 30) {
        std::fs::create_dir_all(&lower).expect("create layer");
        let mut f = std::fs::File::create(&big).expect("create file");
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..1024 {
            f.write_all(&chunk).expect("write");
        }
        f.sync_all().expect("sync");
    }
    let scratch = base.join("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let mut group = c.benchmark_group("append_1GiB");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    let lowers = vec![lower.clone()];
    group.bench_function("layerstack", |b| {
        b.iter_batched(
            || MergedView::new(lower_layers(&lowers), fresh_upper(&scratch)).expect("view"),
            |view| {
                view.append("big", "x").expect("append");
                view
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("kernel", |b| {
        b.iter_batched(
            || Mount::new(&lowers, &scratch),
            |mount| {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(mount.0.join("big"))
                    .expect("open");
                f.write_all(b"x").expect("append");
                mount
            },
            BatchSize::PerIteration,
        )
    });
    let copy = scratch.join("copy");
    group.bench_function("cp", |b| {
        b.iter(|| {
            let _ = std::fs::remove_file(&copy);
            let status = std::process::Command::new("cp")
                .arg(&big)
                .arg(&copy)
                .status()
                .expect("run cp");
            assert!(status.success());
        })
    });
    group.finish();
}

fn disk(c: &mut Criterion) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP disk benchmarks: they mount overlays and make whiteouts, which needs root");
        return;
    }
    let root = bench_root();
    std::fs::create_dir_all(&root).expect("create the bench directory");
    readdir(c, &root);
    stat_tree(c, &root);
    append(c, &root);
}

criterion_group!(benches, disk);
criterion_main!(benches);
