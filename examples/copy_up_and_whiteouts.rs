//! Copy-up and whiteouts, step by step.
//!
//! A base layer holds a small tree. A merged view puts an empty writable
//! layer on top; changing a file copies it up, deleting one leaves a
//! whiteout, and recreating a deleted directory makes it opaque. After each
//! step the example prints what the view shows and what the upper layer
//! holds.
//!
//! Run it with `cargo run --example copy_up_and_whiteouts`.

use std::error::Error;
use std::io::Write;
use std::sync::Arc;

use layerstack::{Entry, Layer, MemLayer, MergedView};

fn print_tree(out: &mut dyn Write, view: &MergedView, dir: &str) -> Result<(), Box<dyn Error>> {
    for entry in view.read_dir(dir)? {
        let path = format!("{dir}{}", entry.name);
        let what = if entry.file_type.is_dir() {
            "dir".to_owned()
        } else if entry.file_type.is_symlink() {
            format!("-> {}", view.read_link(&path)?)
        } else {
            format!("{:?}", String::from_utf8_lossy(&view.read(&path)?))
        };
        writeln!(out, "     {path:<22} {what:<18} from {:?}", entry.source)?;
        if entry.file_type.is_dir() {
            print_tree(out, view, &format!("{path}/"))?;
        }
    }
    Ok(())
}

fn show(out: &mut dyn Write, view: &MergedView, title: &str) -> Result<(), Box<dyn Error>> {
    writeln!(out, "== {title}")?;
    writeln!(out, "   the view shows:")?;
    print_tree(out, view, "/")?;
    writeln!(out, "   the upper layer holds:")?;
    let changes = view.changes()?;
    if changes.is_empty() {
        writeln!(out, "     (nothing)")?;
    }
    for (path, entry) in changes {
        let what = match entry {
            Entry::Whiteout => "whiteout (hides the name in the layers below)".to_owned(),
            Entry::Node(n) if n.opaque => "opaque directory (hides everything below)".to_owned(),
            Entry::Node(n) => format!("{:?} (copied up or new)", n.meta.file_type),
        };
        writeln!(out, "     {:<22} {what}", format!("/{path}"))?;
    }
    writeln!(out)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    run(&mut std::io::stdout().lock())
}

/// The example, printing to `out`.
pub fn run(out: &mut dyn Write) -> Result<(), Box<dyn Error>> {
    let mut base = MemLayer::new();
    base.add_file("etc/app.conf", "port = 80\n")?;
    base.add_file("etc/motd", "welcome\n")?;
    base.add_file("var/cache/a.bin", "cached a\n")?;
    base.add_file("var/cache/b.bin", "cached b\n")?;
    base.add_symlink("conf", "etc/app.conf")?;
    let base: Arc<dyn Layer> = Arc::new(base);
    let view = MergedView::new(vec![base.clone()], MemLayer::new())?;
    show(
        out,
        &view,
        "a read-only base layer under an empty upper layer",
    )?;

    view.write("conf", "port = 8080\n")?;
    show(
        out,
        &view,
        "write through the symlink `conf`: etc/app.conf is copied up, parents first, then changed",
    )?;

    view.remove_file("etc/motd")?;
    show(
        out,
        &view,
        "remove etc/motd: the base still has it, so the upper gets a whiteout",
    )?;

    view.remove_dir_all("var/cache")?;
    view.create_dir("var/cache")?;
    view.write("var/cache/new.bin", "fresh\n")?;
    show(
        out,
        &view,
        "remove var/cache and create it again: the new directory is opaque, the old files never come back",
    )?;

    writeln!(
        out,
        "The base layer is untouched: etc/app.conf there still reads {:?}.",
        String::from_utf8_lossy(&base.read_at(&"etc/app.conf".try_into()?, 0, 100)?)
    )?;
    Ok(())
}
