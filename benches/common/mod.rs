//! What the benchmarks share: where the corpus and scratch directories are,
//! kernel overlay mounts, whiteouts, and the tree whose paths are looked up.
//!
//! Each bench file includes this with `mod common;` and uses a part of it
//! (the tool's `cli/benches/commands.rs` by its path).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use camino::Utf8PathBuf;
use layerstack::layer::dir::{DirLayerOptions, Durability};
use layerstack::{DirLayer, Layer};
use rustix::mount::{MountFlags, UnmountFlags};

/// The workspace's `target/` (or `$CARGO_TARGET_DIR`): the directory of
/// `Cargo.lock` is the workspace root, from the library or the tool.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            let root = manifest
                .ancestors()
                .find(|dir| dir.join("Cargo.lock").exists())
                .unwrap_or(manifest);
            root.join("target")
        })
}

/// A directory of its own under `target/` for one bench file's layers.
pub fn scratch_root(name: &str) -> PathBuf {
    let dir = target_dir().join(name);
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    dir
}

/// The corpus `benches/corpus.sh` builds, when it is complete.
pub fn corpus() -> Option<PathBuf> {
    let dir = target_dir().join("bench-corpus");
    ["rootfs.done", "changes.done", "kernel.done", "oci.done"]
        .iter()
        .all(|m| dir.join(m).exists())
        .then_some(dir)
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A kernel overlay mount, unmounted when dropped. With `scratch`, it has
/// an upper and a work directory there (emptied first) and is writable;
/// without, it is read-only.
pub struct Mount(pub PathBuf);

impl Mount {
    pub fn new(lowers: &[PathBuf], scratch: &Path) -> Mount {
        Mount::writable(lowers, scratch, "")
    }

    /// As [`Mount::new`], mounted `volatile` (nothing is synced).
    pub fn volatile(lowers: &[PathBuf], scratch: &Path) -> Mount {
        Mount::writable(lowers, scratch, ",volatile")
    }

    fn writable(lowers: &[PathBuf], scratch: &Path, extra: &str) -> Mount {
        let (upper, work, mnt) = (
            scratch.join("upper"),
            scratch.join("work"),
            scratch.join("mnt"),
        );
        for d in [&upper, &work, &mnt] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).expect("create mount directories");
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}{extra}",
            lowerdir(lowers),
            upper.display(),
            work.display()
        );
        Mount::with_options(mnt, &data)
    }

    pub fn read_only(lowers: &[PathBuf], mnt: &Path) -> Mount {
        std::fs::create_dir_all(mnt).expect("create the mount point");
        Mount::with_options(mnt.to_owned(), &format!("lowerdir={}", lowerdir(lowers)))
    }

    fn with_options(mnt: PathBuf, data: &str) -> Mount {
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

/// The kernel's `lowerdir=` value: top first, as `lowers` is.
fn lowerdir(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// An overlayfs whiteout (a 0/0 character device) at `path`.
pub fn whiteout(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .expect("mknod a whiteout");
}

pub fn utf8(p: &Path) -> Utf8PathBuf {
    Utf8PathBuf::from_path_buf(p.to_owned()).expect("UTF-8 path")
}

/// `DirLayer`s over `dirs`, top first.
pub fn dir_layers(dirs: &[PathBuf]) -> Vec<Arc<dyn Layer>> {
    dirs.iter()
        .map(|d| Arc::new(DirLayer::open(utf8(d)).expect("open a layer")) as Arc<dyn Layer>)
        .collect()
}

/// A fresh (emptied) `DirLayer` upper with its work directory in `scratch`.
pub fn fresh_upper(scratch: &Path) -> DirLayer {
    fresh_upper_with(scratch, DirLayerOptions::default())
}

/// As [`fresh_upper`], with `options`. The work directory goes too: a
/// `volatile` session leaves it marked, and the next would be refused.
pub fn fresh_upper_with(scratch: &Path, options: DirLayerOptions) -> DirLayer {
    let (u, w) = (scratch.join("vupper"), scratch.join("vwork"));
    let _ = std::fs::remove_dir_all(&u);
    if options.durability == Durability::Volatile {
        let _ = std::fs::remove_dir_all(&w);
    }
    DirLayer::open_upper_with(utf8(&u), utf8(&w), options).expect("open an upper layer")
}

/// The relative paths of every non-directory of the corpus's root
/// filesystem, sorted (with their directories implied); without the
/// corpus, of the first 20,000 files of the host's `/usr/share`. Says which.
pub fn tree_paths() -> Vec<String> {
    let (top, prefix, max) = match corpus() {
        Some(c) => (c.join("rootfs"), "", usize::MAX),
        None => {
            eprintln!(
                "NOTE: no corpus (run benches/corpus.sh); looking up files of /usr/share instead"
            );
            (PathBuf::from("/usr/share"), "usr/share/", 20_000)
        }
    };
    let mut files = Vec::new();
    walk(&top, &mut |rel, m, _| {
        if !m.is_dir() {
            files.push(format!("{prefix}{rel}"));
        }
    });
    files.sort();
    files.truncate(max);
    files
}

/// Visits every entry under `root` that has a UTF-8 name, parents before
/// their children, with its path relative to `root`, its own metadata (a
/// symlink is not followed) and its full path. Unreadable parts are
/// passed over.
pub fn walk(root: &Path, f: &mut dyn FnMut(&str, &std::fs::Metadata, &Path)) {
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let full = root.join(&rel);
            let Ok(m) = std::fs::symlink_metadata(&full) else {
                continue;
            };
            f(&rel, &m, &full);
            if m.is_dir() {
                todo.push(rel);
            }
        }
    }
}

// The listing of 90,000 names over 10 layers (`peers`, `mount`).

pub const LAYERS: usize = 10;
pub const PER_LAYER: usize = 9_000;
pub const HIDDEN: usize = 900;
/// The names the merged listing shows.
pub const VISIBLE: usize = PER_LAYER + (LAYERS - 1) * (PER_LAYER - HIDDEN);

/// Layer `k` (top first) holds `big/n{k}_{i}`; every layer but the bottom
/// one whites out `HIDDEN` names of the layer below.
pub fn listing_names(k: usize) -> impl Iterator<Item = String> {
    (0..PER_LAYER).map(move |i| format!("big/n{k}_{i}"))
}

pub fn listing_whiteouts(k: usize) -> impl Iterator<Item = String> {
    (0..if k + 1 < LAYERS { HIDDEN } else { 0 }).map(move |i| format!("big/n{}_{i}", k + 1))
}

pub fn disk_listing(root: &Path) -> Vec<PathBuf> {
    let base = root.join("listing");
    let done = base.join(".done");
    let dirs: Vec<PathBuf> = (0..LAYERS).map(|k| base.join(format!("l{k}"))).collect();
    if done.exists() {
        return dirs;
    }
    let _ = std::fs::remove_dir_all(&base);
    for (k, dir) in dirs.iter().enumerate() {
        std::fs::create_dir_all(dir.join("big")).expect("create layer");
        for n in listing_names(k) {
            std::fs::File::create(dir.join(n)).expect("create file");
        }
        for n in listing_whiteouts(k) {
            whiteout(&dir.join(n));
        }
    }
    std::fs::File::create(&done).expect("mark done");
    dirs
}

/// A layer directory holding one file `big` of `size` bytes, synced.
pub fn disk_big_file(root: &Path, name: &str, size: usize) -> PathBuf {
    let lower = root.join(format!("write-{name}"));
    let big = lower.join("big");
    if std::fs::metadata(&big).map(|m| m.len()).ok() != Some(size as u64) {
        std::fs::create_dir_all(&lower).expect("create layer");
        let mut f = std::fs::File::create(&big).expect("create file");
        let chunk = vec![0x5au8; size.min(1 << 20)];
        for _ in 0..size / chunk.len() {
            f.write_all(&chunk).expect("write");
        }
        f.sync_all().expect("sync");
    }
    lower
}
