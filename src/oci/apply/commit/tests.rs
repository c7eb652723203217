use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use camino::{Utf8Path, Utf8PathBuf};
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};

use super::{layer_from_dir, layer_from_dir_spilling};
use crate::error::ErrorKind;
use crate::layer::mem::MemLayer;
use crate::layer::{Entry, Layer, walk};
use crate::meta::FileType;
use crate::path::LayerPath;
use crate::spill::Spill;
use crate::view::MergedView;

/// The time every object of a test tree gets, so that only the changes a
/// test makes differ.
const T0: i64 = 1_000_000;

struct Scratch(Utf8PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("layerstack-commit-{}-{n}", std::process::id()));
        let dir = Utf8PathBuf::from_path_buf(dir).unwrap();
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("root")).unwrap();
        Scratch(dir)
    }

    fn root(&self) -> Utf8PathBuf {
        self.0.join("root")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn set_mtime(path: &Utf8Path, sec: i64) {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, path.as_str(), &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// Sets the mtime of everything under `root` (and `root`) to `T0`.
fn freeze(root: &Utf8Path) {
    let meta = fs::symlink_metadata(root).unwrap();
    if meta.is_dir() {
        for entry in fs::read_dir(root).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            freeze(&root.join(name));
        }
    }
    set_mtime(root, T0);
}

fn write(root: &Utf8Path, path: &str, data: &str) {
    let at = root.join(path);
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    fs::write(at, data).unwrap();
}

/// A tree of every kind of object.
fn base_tree(root: &Utf8Path) {
    write(root, "etc/app.conf", "port = 80\n");
    write(root, "etc/motd", "welcome\n");
    write(root, "etc/secret", "s3cret\n");
    write(root, "etc/hosts", "127.0.0.1 localhost\n");
    write(root, "usr/bin/tool", "#!/bin/sh\n");
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-alias")).unwrap();
    write(root, "usr/share/doc.txt", "docs\n");
    write(root, "var/cache/app/a.bin", "a");
    write(root, "var/cache/app/b.bin", "b");
    write(root, "var/log/empty", "");
    write(root, "srv", "a file that becomes a directory\n");
    write(root, "data/old/1", "1");
    write(root, "same/a", "same");
    write(root, "same/b", "same");
    symlink("etc/app.conf", root.join("conf")).unwrap();
}

/// `dir` as it is, as the only layer of a view.
fn snapshot(dir: &Utf8Path) -> MergedView {
    let empty = MergedView::new(Vec::new(), MemLayer::new()).unwrap();
    let base = layer_from_dir(&empty, dir).unwrap();
    MergedView::new(vec![Arc::new(base) as Arc<dyn Layer>], MemLayer::new()).unwrap()
}

/// One line per entry of the layer: path, what it is, its mode, mtime,
/// contents or target, xattrs, and the first name of its inode.
fn changeset(layer: &MemLayer) -> Vec<String> {
    let mut first: HashMap<u64, String> = HashMap::new();
    let mut out = Vec::new();
    for (path, entry) in walk(layer).unwrap() {
        let node = match entry {
            Entry::Whiteout => {
                out.push(format!("{path} whiteout"));
                continue;
            }
            Entry::Node(node) => node,
        };
        let m = &node.meta;
        let mut line = format!("{path} {}", m.file_type.letter());
        if m.file_type != FileType::Symlink {
            line.push_str(&format!("{:o}", m.mode));
        }
        if m.mtime.sec != T0 {
            line.push_str(&format!(" mtime={}", m.mtime.sec));
        }
        match m.file_type {
            FileType::File => {
                let data = layer.read_at(&path, 0, 1 << 16).unwrap();
                line.push_str(&format!(" {:?}", String::from_utf8_lossy(&data)));
            }
            FileType::Symlink => {
                line.push_str(&format!(" -> {}", layer.read_link(&path).unwrap()));
            }
            _ => {}
        }
        for (name, value) in m.xattrs.iter() {
            line.push_str(&format!(" {name}={:?}", String::from_utf8_lossy(value)));
        }
        if m.file_type != FileType::Dir {
            match first.get(&m.ino) {
                Some(f) => line.push_str(&format!(" (link to {f})")),
                None => {
                    first.insert(m.ino, path.to_string());
                }
            }
        }
        assert!(
            !node.opaque,
            "{path}: a commit never makes opaque directories"
        );
        out.push(line);
    }
    out
}

#[test]
fn an_unchanged_directory_gives_an_empty_layer() {
    let s = Scratch::new();
    let root = s.root();
    base_tree(&root);
    freeze(&root);
    let view = snapshot(&root);
    let layer = layer_from_dir(&view, &root).unwrap();
    assert_eq!(changeset(&layer), Vec::<String>::new());
    assert!(layer.is_empty());
}

#[test]
fn each_kind_of_change_is_in_the_layer_with_its_parents() {
    let s = Scratch::new();
    let root = s.root();
    base_tree(&root);
    freeze(&root);
    let view = snapshot(&root);

    write(&root, "etc/app.conf", "port = 8080\n"); // contents
    fs::set_permissions(root.join("etc/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(root.join("etc/motd")).unwrap(); // a file gone
    fs::remove_dir_all(root.join("var/cache")).unwrap(); // a tree gone: one whiteout
    write(&root, "opt/app/new.txt", "new\n"); // new, under new directories
    fs::remove_file(root.join("conf")).unwrap();
    symlink("etc/other.conf", root.join("conf")).unwrap(); // a new target
    fs::remove_file(root.join("srv")).unwrap();
    write(&root, "srv/index.html", "<h1>hi</h1>\n"); // a file became a directory
    fs::remove_dir_all(root.join("data")).unwrap();
    write(&root, "data", "now a file\n"); // a directory became a file
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
    freeze(&root);
    set_mtime(&root.join("usr/share/doc.txt"), T0 + 60); // only the mtime

    let layer = layer_from_dir(&view, &root).unwrap();
    assert_eq!(
        changeset(&layer),
        [
            "conf l -> etc/other.conf",
            "data -644 \"now a file\\n\"",
            "etc d755",
            "etc/app.conf -644 \"port = 8080\\n\"",
            "etc/motd whiteout",
            "etc/secret -600 \"s3cret\\n\"",
            "opt d755",
            "opt/app d755",
            "opt/app/new.txt -644 \"new\\n\"",
            "srv d755",
            "srv/index.html -644 \"<h1>hi</h1>\\n\"",
            "usr d755",
            "usr/bin d755",
            // A new name of an unchanged file: all its names go in, linked.
            "usr/bin/tool -644 \"#!/bin/sh\\n\"",
            "usr/bin/tool-alias -644 \"#!/bin/sh\\n\" (link to usr/bin/tool)",
            "usr/bin/tool2 -644 \"#!/bin/sh\\n\" (link to usr/bin/tool)",
            "usr/share d755",
            "usr/share/doc.txt -644 mtime=1000060 \"docs\\n\"",
            "var d755",
            "var/cache whiteout",
        ]
    );

    // The view over the layer shows the directory.
    let top = MergedView::new(
        vec![Arc::new(layer) as Arc<dyn Layer>, view.layers()[0].clone()],
        MemLayer::new(),
    )
    .unwrap();
    let again = layer_from_dir(&top, &root).unwrap();
    assert_eq!(changeset(&again), Vec::<String>::new());
}

#[test]
fn xattrs_are_compared_and_bookkeeping_is_left_out() {
    let s = Scratch::new();
    let root = s.root();
    write(&root, "etc/hosts", "127.0.0.1 localhost\n");
    write(&root, "etc/other", "x\n");
    freeze(&root);
    let view = snapshot(&root);
    let hosts = root.join("etc/hosts");
    if let Err(e) = rustix::fs::setxattr(
        hosts.as_str(),
        "user.note",
        b"edited",
        rustix::fs::XattrFlags::empty(),
    ) {
        eprintln!("SKIP xattrs_are_compared_and_bookkeeping_is_left_out: no user xattrs here: {e}");
        return;
    }
    let other = root.join("etc/other");
    // Overlay bookkeeping is not part of the image (as root only).
    let _ = rustix::fs::setxattr(
        other.as_str(),
        "trusted.overlay.origin",
        b"x",
        rustix::fs::XattrFlags::empty(),
    );
    let layer = layer_from_dir(&view, &root).unwrap();
    assert_eq!(
        changeset(&layer),
        [
            "etc d755",
            "etc/hosts -644 \"127.0.0.1 localhost\\n\" user.note=\"edited\"",
        ]
    );
}

#[test]
fn hard_links_made_and_broken_are_in_the_layer() {
    let s = Scratch::new();
    let root = s.root();
    write(&root, "same/a", "same");
    write(&root, "same/b", "same");
    write(&root, "linked/x", "one inode");
    fs::hard_link(root.join("linked/x"), root.join("linked/y")).unwrap();
    fs::hard_link(root.join("linked/x"), root.join("linked/z")).unwrap();
    freeze(&root);
    let view = snapshot(&root);

    // `same/b` becomes a name of `same/a`; `linked/y` becomes a file of
    // its own (with the same contents).
    fs::remove_file(root.join("same/b")).unwrap();
    fs::hard_link(root.join("same/a"), root.join("same/b")).unwrap();
    fs::remove_file(root.join("linked/y")).unwrap();
    write(&root, "linked/y", "one inode");
    freeze(&root);

    let layer = layer_from_dir(&view, &root).unwrap();
    assert_eq!(
        changeset(&layer),
        [
            "linked d755",
            "linked/y -644 \"one inode\"",
            "same d755",
            "same/a -644 \"same\"",
            "same/b -644 \"same\" (link to same/a)",
        ]
    );
}

#[test]
fn a_directory_replacing_a_deleted_one_is_compared_name_by_name() {
    let s = Scratch::new();
    let root = s.root();
    write(&root, "app/keep", "kept");
    write(&root, "app/old", "old");
    freeze(&root);
    let view = snapshot(&root);
    fs::remove_dir_all(root.join("app")).unwrap();
    write(&root, "app/keep", "kept");
    write(&root, "app/new", "new");
    freeze(&root);
    let layer = layer_from_dir(&view, &root).unwrap();
    assert_eq!(
        changeset(&layer),
        ["app d755", "app/new -644 \"new\"", "app/old whiteout"]
    );
}

#[test]
fn symlinks_in_the_directory_are_read_never_followed() {
    let s = Scratch::new();
    let root = s.root();
    write(&s.0, "outside/secret", "not for the layer");
    write(&root, "etc/app.conf", "port = 80\n");
    freeze(&root);
    let view = snapshot(&root);
    symlink("../../outside", root.join("etc/escape")).unwrap();
    symlink("/", root.join("etc/host-root")).unwrap();
    freeze(&root);
    let layer = layer_from_dir(&view, &root).unwrap();
    assert_eq!(
        changeset(&layer),
        [
            "etc d755",
            "etc/escape l -> ../../outside",
            "etc/host-root l -> /",
        ]
    );

    // The directory itself given as a symlink is refused, not followed.
    let link = s.0.join("link");
    symlink(&root, &link).unwrap();
    let err = layer_from_dir(&view, &link).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotADirectory);
    assert_eq!(
        err.to_string(),
        format!("failed to open `{link}`: it is a symlink, and symlinks are not followed")
    );
}

#[test]
fn reserved_names_and_sockets_are_refused() {
    let s = Scratch::new();
    let root = s.root();
    write(&root, "etc/app.conf", "port = 80\n");
    let view = snapshot(&root);

    write(&root, "etc/.wh.motd", "");
    let err = layer_from_dir(&view, &root).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        format!(
            "failed to list directory `{root}/etc/.wh.motd`: names starting with `.wh.` are reserved for whiteouts in a layer tar"
        )
    );
    fs::remove_file(root.join("etc/.wh.motd")).unwrap();

    let socket = root.join("etc/app.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let err = layer_from_dir(&view, &root).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(
        err.to_string(),
        format!("failed to read `{socket}`: a socket cannot be stored in a layer tar")
    );
}

#[test]
fn file_data_past_the_budget_is_spilled_whether_new_or_copied_from_the_base() {
    let s = Scratch::new();
    let root = s.root();
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8 + 1).collect();
    fs::write(root.join("big"), &data).unwrap();
    fs::write(root.join("small"), "small\n").unwrap();
    freeze(&root);
    let spill_dir = s.0.join("spill");
    fs::create_dir(&spill_dir).unwrap();
    let empty = MergedView::new(Vec::new(), MemLayer::new()).unwrap();
    let spill = Spill::new(&spill_dir, 1 << 20);
    let layer = layer_from_dir_spilling(&empty, &root, &spill).unwrap();
    // The first MiB of `big` fits the budget; the rest, and then `small`,
    // do not.
    assert_eq!(spill.spilled_bytes(), (2 << 20) + 6);
    let big = LayerPath::new("big").unwrap();
    assert_eq!(layer.file_data(&big).unwrap().to_bytes().unwrap(), data);
    assert_eq!(layer.file_data(&big).unwrap().memory_len(), 1 << 20);

    // Only the mode changes: the contents come from the base, through a
    // spill too, never whole in memory.
    let base = MergedView::new(vec![Arc::new(layer) as Arc<dyn Layer>], MemLayer::new()).unwrap();
    fs::set_permissions(root.join("big"), fs::Permissions::from_mode(0o600)).unwrap();
    let spill = Spill::new(&spill_dir, 0);
    let changed = layer_from_dir_spilling(&base, &root, &spill).unwrap();
    assert_eq!(spill.spilled_bytes(), 3 << 20);
    assert_eq!(changed.file_data(&big).unwrap().memory_len(), 0);
    assert_eq!(changed.file_data(&big).unwrap().to_bytes().unwrap(), data);
    // Nothing is left in the spill directory.
    assert_eq!(fs::read_dir(&spill_dir).unwrap().count(), 0);

    // A spill that cannot be made is an error naming the file and the
    // spill's directory.
    let nowhere = s.0.join("nowhere");
    let err = layer_from_dir_spilling(&empty, &root, &Spill::new(&nowhere, 0)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        format!(
            "failed to read `{root}/big`: making a file in `{nowhere}` to spill file data to: \
             No such file or directory (os error 2)"
        )
    );
}
