//! Memory: the bytes a `MemLayer` holding the corpus's root filesystem
//! (`benches/corpus.sh`; without it, the host's `/usr/share`) keeps beyond
//! the file data, per entry, beside the `vfs` crate's `MemoryFS` holding the
//! same tree.
//!
//! A counting global allocator gives the bytes live after building minus
//! those live before (requested sizes: the allocator's own per-block
//! overhead is not in it). The `MemLayer` is imported from the tree as an
//! uncompressed layer tar in memory (made before counting), which is how a
//! layer reaches memory; `MemoryFS` is given the same directories, files
//! and contents (a symlink as a file holding its target: it has no
//! symlinks). Prints one table; not a criterion benchmark, the figure is a
//! count, not a time.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use layerstack::oci::Compression;
use layerstack::oci::{ExportOptions, export_layer};
use layerstack::oci::{ImportOptions, import_layer};
use layerstack::{DirLayer, Layer};
use vfs::{MemoryFS, VfsPath};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is
// updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes newly live after `f`, with what it returns (kept alive).
fn live_after<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    let value = f();
    (value, LIVE.load(Ordering::Relaxed).saturating_sub(before))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that is not ours means
    // another benchmark was asked for.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"memory".contains(a.as_str()))
    {
        return;
    }
    let (root, what) = match common::corpus() {
        Some(c) => (c.join("rootfs"), "the corpus's root filesystem"),
        None => (
            std::path::PathBuf::from("/usr/share"),
            "/usr/share (no corpus: run benches/corpus.sh)",
        ),
    };
    let layer: Arc<dyn Layer> =
        Arc::new(DirLayer::open(common::utf8(&root)).expect("open the tree as a layer"));
    let options = ExportOptions::new().compression(Compression::None);
    let (tar, _) = export_layer(&layer, &[], Vec::new(), &options).expect("export");

    let ((mem, summary), mem_bytes) =
        live_after(|| import_layer(&tar[..], &[], &ImportOptions::default()).expect("import"));
    let entries = summary.entries as usize;
    // A hard-linked file is stored once in a `MemLayer` and once per name
    // in `MemoryFS` (it has no hard links).
    let data = file_data(&root, true);
    let vfs_data = file_data(&root, false);

    let (fs, vfs_bytes) = live_after(|| vfs_tree(&root));

    let per = |bytes: usize, data: usize| bytes.saturating_sub(data) as f64 / entries as f64;
    let mut out = std::io::stdout().lock();
    writeln!(out, "memory: {what}").unwrap();
    writeln!(out, "  entries: {entries}").unwrap();
    writeln!(
        out,
        "  {:<12} {:>14} {:>14} {:>22}",
        "", "bytes live", "file data", "beyond data, per entry"
    )
    .unwrap();
    for (name, bytes, data) in [
        ("MemLayer", mem_bytes, data),
        ("vfs MemoryFS", vfs_bytes, vfs_data),
    ] {
        let per_entry = per(bytes, data);
        writeln!(out, "  {name:<12} {bytes:>14} {data:>14} {per_entry:>22.1}").unwrap();
    }
    drop((mem, fs));
}

/// Bytes of regular files' contents and symlinks' targets; with `once`,
/// a file with several names counts once.
fn file_data(root: &std::path::Path, once: bool) -> usize {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut sum = 0;
    common::walk(root, &mut |_, m, full| {
        if m.is_file() && !(once && m.nlink() > 1 && !seen.insert((m.dev(), m.ino()))) {
            sum += m.len() as usize;
        } else if m.is_symlink() {
            sum += std::fs::read_link(full).map_or(0, |t| t.as_os_str().len());
        }
    });
    sum
}

fn vfs_tree(root: &std::path::Path) -> VfsPath {
    let fs = VfsPath::new(MemoryFS::new());
    common::walk(root, &mut |rel, m, full| {
        let p = fs.join(rel).expect("vfs path");
        if m.is_dir() {
            p.create_dir_all().expect("vfs create_dir_all");
        } else {
            let data = if m.is_symlink() {
                std::fs::read_link(full)
                    .map(|t| t.into_os_string().into_encoded_bytes())
                    .unwrap_or_default()
            } else if m.is_file() {
                std::fs::read(full).unwrap_or_default()
            } else {
                Vec::new()
            };
            let mut w = p.create_file().expect("vfs create_file");
            w.write_all(&data).expect("vfs write");
            w.flush().expect("vfs flush");
        }
    });
    fs
}
