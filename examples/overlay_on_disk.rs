//! Layers on disk in the kernel's overlayfs format.
//!
//! Writes a base layer to a directory, opens an upper layer with its work
//! directory, changes the merged view (a copy-up, a whiteout, an opaque
//! directory), and prints what is on disk and the `mount -t overlay`
//! command that makes the kernel show the same tree.
//!
//! Run it as root (whiteouts are character devices 0/0 and the overlay's
//! xattrs are `trusted.*`):
//! `cargo run --example overlay_on_disk [DIR]` (default: a fresh directory
//! under the system's temporary directory).

use std::error::Error;
use std::io::Write;
use std::sync::Arc;

use camino::{Utf8Path, Utf8PathBuf};
use layerstack::layer::copy_layer;
use layerstack::{DirLayer, Entry, Layer, MemLayer, MergedView};

fn main() -> Result<(), Box<dyn Error>> {
    let root = match std::env::args().nth(1) {
        Some(dir) => Utf8PathBuf::from(dir),
        None => {
            let tmp = Utf8PathBuf::from_path_buf(std::env::temp_dir())
                .map_err(|p| format!("temporary directory {} is not UTF-8", p.display()))?;
            tmp.join(format!("layerstack-overlay-{}", std::process::id()))
        }
    };
    if !rustix::process::geteuid().is_root() {
        eprintln!("note: not root: writing whiteouts (mknod 0/0) and trusted.* xattrs will fail");
    }
    run(&root, &mut std::io::stdout().lock())
}

/// The example: writes the stack under `root`, prints to `out`.
pub fn run(root: &Utf8Path, out: &mut dyn Write) -> Result<(), Box<dyn Error>> {
    let (lower, upper, work) = (root.join("lower"), root.join("upper"), root.join("work"));

    // The base layer, built in memory and written to disk.
    let mut base = MemLayer::new();
    base.add_file("etc/app.conf", "port = 80\n")?;
    base.add_file("etc/motd", "welcome\n")?;
    base.add_file("var/cache/a.bin", "cached\n")?;
    let mut on_disk = DirLayer::open_upper(&lower, root.join("lower.work"))?;
    copy_layer(&base, &mut on_disk)?;
    drop(on_disk);
    std::fs::remove_dir_all(root.join("lower.work"))?;
    writeln!(out, "wrote the base layer to {lower}")?;

    // A merged view with a writable layer on disk.
    let view = MergedView::new(
        vec![Arc::new(DirLayer::open(&lower)?) as Arc<dyn Layer>],
        DirLayer::open_upper(&upper, &work)?,
    )?;
    view.write("etc/app.conf", "port = 8080\n")?;
    view.remove_file("etc/motd")?;
    view.remove_dir_all("var/cache")?;
    view.create_dir("var/cache")?;

    writeln!(out, "\nthe upper layer {upper} now holds:")?;
    for (path, entry) in view.changes()? {
        let what = match entry {
            Entry::Whiteout => "whiteout: a character device 0/0".to_owned(),
            Entry::Node(n) if n.opaque => {
                "opaque directory: xattr trusted.overlay.opaque=y".to_owned()
            }
            Entry::Node(n) => format!("{:?}", n.meta.file_type),
        };
        writeln!(out, "  {path:<16} {what}")?;
    }

    writeln!(out, "\nthe kernel shows the same tree with:")?;
    writeln!(out, "  mkdir -p {root}/merged")?;
    writeln!(
        out,
        "  mount -t overlay overlay -o lowerdir={lower},upperdir={upper},workdir={work} {root}/merged"
    )?;
    writeln!(out, "and `ls -R {root}/merged` lists:")?;
    print_tree(out, &view, "/")?;
    Ok(())
}

fn print_tree(out: &mut dyn Write, view: &MergedView, dir: &str) -> Result<(), Box<dyn Error>> {
    for entry in view.read_dir(dir)? {
        let path = format!("{dir}{}", entry.name);
        writeln!(out, "  {path}")?;
        if entry.file_type.is_dir() {
            print_tree(out, view, &format!("{path}/"))?;
        }
    }
    Ok(())
}
