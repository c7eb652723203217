//! A merged view as a mounted filesystem (feature `mount`).
//!
//! Mounts lower directories (top first, in the kernel's overlayfs format,
//! or any plain directory) under an upper layer at `MNT`, serves it until
//! something unmounts it (`umount MNT`, `fusermount3 -u MNT`), then prints
//! what the session changed. The upper is in memory, or on disk with
//! `--upper DIR --work DIR` (a kernel `upperdir`/`workdir` pair).
//!
//! As root (FUSE mounts `/dev/fuse` itself; the disk format needs
//! whiteout devices and trusted xattrs):
//! `cargo run --release --features mount --example mount_view -- MNT [--upper U --work W] [LOWER]...`

use std::error::Error;
use std::sync::Arc;

use layerstack::mount::{MountOptions, mount};
use layerstack::{DirLayer, Entry, Layer, MemLayer, MergedView};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: mount_view MNT [--upper DIR --work DIR] [LOWER]...";
    let mnt = args.next().ok_or(usage)?;
    let (mut upper, mut work, mut lowers) = (None, None, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--upper" => upper = Some(args.next().ok_or(usage)?),
            "--work" => work = Some(args.next().ok_or(usage)?),
            _ => lowers.push(Arc::new(DirLayer::open(a.as_str())?) as Arc<dyn Layer>),
        }
    }
    let view = match (upper, work) {
        (Some(u), Some(w)) => {
            MergedView::new(lowers, DirLayer::open_upper(u.as_str(), w.as_str())?)?
        }
        (None, None) => MergedView::new(lowers, MemLayer::new())?,
        _ => return Err(format!("--upper and --work go together\n{usage}").into()),
    };
    let mounted = mount(view, &mnt, &MountOptions::default())?;
    println!("mounted on {mnt}; `umount {mnt}` ends the session");
    let view = mounted.wait()?;
    for (path, entry) in view.changes()? {
        let what = match entry {
            Entry::Whiteout => "deleted",
            Entry::Node(n) if n.opaque => "opaque",
            Entry::Node(_) => "changed",
        };
        println!("{what:8} /{path}");
    }
    Ok(())
}
