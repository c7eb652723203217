//! Handles that follow the inode (`view::handle`): one named test per rule,
//! each over an upper in memory and an upper on disk (root only: the disk
//! format needs whiteout devices and trusted xattrs). The random sequences
//! of `state_machine` and `dir_layer` and the kernel differential
//! (`kernel::handles`) mix the same operations with everything else.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;

use camino::Utf8PathBuf;
use layerstack::merged::ViewOptions;
use layerstack::merged::{HandleId, HardLinkCopyUp, OpenOptions};
use layerstack::{DirLayer, ErrorKind, Layer, LayerMut, LayerPath, MemLayer, MergedView};

use crate::support::TempDir as Scratch;

fn lower() -> Arc<dyn Layer> {
    let mut l = MemLayer::new();
    l.add_file("etc/conf", "lower data\n").unwrap();
    l.add_file("etc/other", "other\n").unwrap();
    l.add_file("etc/linked", "linked\n").unwrap();
    l.add_hard_link("etc/linked", "etc/linked2").unwrap();
    Arc::new(l)
}

/// Where a test runs: a view over [`lower`] with an upper in memory, and
/// (as root) one with an upper on disk.
enum Upper {
    Memory,
    Disk(Scratch),
}

impl Upper {
    fn all(test: &str) -> Vec<Upper> {
        let mut uppers = vec![Upper::Memory];
        if rustix::process::geteuid().is_root() {
            uppers.push(Upper::Disk(Scratch::new(&format!("handles-{test}"))));
        } else {
            assert!(
                std::env::var_os("LAYERSTACK_REQUIRE_ROOT").is_none(),
                "{test} needs root and LAYERSTACK_REQUIRE_ROOT is set"
            );
            eprintln!("SKIP {test} on disk: needs root (the overlay format's whiteouts)");
        }
        uppers
    }

    fn view(&self, options: ViewOptions) -> MergedView {
        match self {
            Upper::Memory => MergedView::with_options(vec![lower()], MemLayer::new(), options),
            Upper::Disk(s) => {
                let upper = DirLayer::open_upper(s.0.join("u"), s.0.join("w")).unwrap();
                MergedView::with_options(vec![lower()], upper, options)
            }
        }
        .expect("a view opens")
    }

    fn name(&self) -> &'static str {
        match self {
            Upper::Memory => "memory",
            Upper::Disk(_) => "disk",
        }
    }
}

fn rw() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    o
}

fn ro() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true);
    o
}

fn create() -> OpenOptions {
    let mut o = rw();
    o.create(true);
    o
}

fn read_all(view: &MergedView, h: HandleId) -> Vec<u8> {
    view.handle_read_at(h, 0, 1 << 16).unwrap().to_vec()
}

#[test]
fn rename_keeps_the_handle_on_the_same_file() {
    for upper in Upper::all("rename") {
        let v = upper.view(ViewOptions::default());
        let mut f = v.open("new", &create()).unwrap();
        f.write_all(b"abc").unwrap();
        v.rename("new", "etc/moved").unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(b"Z").unwrap();
        assert_eq!(v.read("etc/moved").unwrap(), "Zbc", "{}", upper.name());
        let mut text = String::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_string(&mut text).unwrap();
        assert_eq!(text, "Zbc", "{}", upper.name());
        assert_eq!(f.metadata().unwrap().nlink, 1, "{}", upper.name());
        assert_eq!(
            f.metadata().unwrap().ino,
            v.metadata("etc/moved").unwrap().ino,
            "{}",
            upper.name()
        );
        // A lower file: the open for writing copies it up; the rename
        // whites the old name out and the handle stays on the copy.
        let h = v.open_handle("etc/conf", &rw()).unwrap();
        v.rename("etc/conf", "conf2").unwrap();
        assert_eq!(v.handle_write_at(h, 0, b"UPPER").unwrap(), 5);
        assert_eq!(v.read("conf2").unwrap(), "UPPER data\n", "{}", upper.name());
        assert_eq!(
            v.metadata("etc/conf").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        v.close_handle(h).unwrap();
    }
}

#[test]
fn unlink_makes_an_orphan_with_nlink_0_that_still_reads_and_writes() {
    for upper in Upper::all("orphan") {
        let v = upper.view(ViewOptions::default());
        let h = v.open_handle("etc/conf", &rw()).unwrap();
        v.remove_file("etc/conf").unwrap();
        let m = v.handle_metadata(h).unwrap();
        assert_eq!((m.nlink, m.size), (0, 11), "{}", upper.name());
        assert_eq!(v.handle_write_at(h, 11, b"more").unwrap(), 15);
        assert_eq!(read_all(&v, h), b"lower data\nmore", "{}", upper.name());
        v.handle_set_len(h, 5).unwrap();
        assert_eq!(read_all(&v, h), b"lower", "{}", upper.name());
        assert_eq!(v.handle_metadata(h).unwrap().size, 5);
        v.handle_sync(h, false).unwrap();
        v.handle_sync(h, true).unwrap();
        // Nothing shows the orphan.
        assert_eq!(
            v.metadata("etc/conf").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let names: Vec<String> = v
            .read_dir("etc")
            .unwrap()
            .into_iter()
            .map(|e| e.name.to_string())
            .collect();
        assert_eq!(names, ["linked", "linked2", "other"], "{}", upper.name());
        v.close_handle(h).unwrap();
        assert_eq!(
            v.handle_metadata(h).unwrap_err().kind(),
            ErrorKind::BadHandle
        );
        assert_eq!(v.close_handle(h).unwrap_err().kind(), ErrorKind::BadHandle);
    }
}

#[test]
fn the_orphans_data_is_freed_on_the_last_close() {
    // Memory: the upper's table of objects lets go of the node, so its
    // bytes are freed (the upper's debug listing and walk show nothing).
    let v = Upper::Memory.view(ViewOptions::default());
    let a = v.open_handle("big", &create()).unwrap();
    v.handle_write_at(a, 0, &vec![7u8; 1 << 20]).unwrap();
    let b = v.open_handle("big", &ro()).unwrap();
    let upper_ino = v.with_upper(|u: &dyn LayerMut| {
        let entry = u.lookup(&LayerPath::new("big").unwrap()).unwrap().unwrap();
        entry.node().unwrap().meta.ino
    });
    v.remove_file("big").unwrap();
    v.close_handle(a).unwrap();
    // Still open through `b`.
    assert_eq!(v.handle_read_at(b, (1 << 20) - 2, 8).unwrap(), [7u8, 7][..]);
    let held = |v: &MergedView| {
        v.with_upper(|u: &dyn LayerMut| {
            let mem = u.as_any().downcast_ref::<MemLayer>().unwrap();
            // An object still open answers by its number.
            mem.object_node(upper_ino).is_ok()
        })
    };
    assert!(held(&v));
    v.close_handle(b).unwrap();
    assert!(!held(&v), "the orphan is gone from the upper's table");
    assert!(
        v.changes()
            .unwrap()
            .iter()
            .all(|(p, _)| p.as_bytes() != b"big")
    );

    // Disk: the descriptor is the last reference; once closed, no name in
    // the upper or work directory and no descriptor of this process
    // refers to the file.
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP the_orphans_data_is_freed_on_the_last_close on disk: needs root");
        return;
    }
    let scratch = Scratch::new("handles-freed");
    let upper = DirLayer::open_upper(scratch.0.join("u"), scratch.0.join("w")).unwrap();
    let v = MergedView::new(vec![lower()], upper).unwrap();
    let h = v.open_handle("big", &create()).unwrap();
    v.handle_write_at(h, 0, &vec![7u8; 1 << 20]).unwrap();
    let ino = std::fs::metadata(scratch.0.join("u/big")).unwrap().ino();
    v.remove_file("big").unwrap();
    let deleted_fds = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| {
                t.starts_with(scratch.0.as_std_path())
                    && t.to_string_lossy().ends_with(" (deleted)")
            })
            .count()
    };
    assert_eq!(deleted_fds(), 1, "the view holds the orphan open");
    assert_eq!(v.handle_metadata(h).unwrap().nlink, 0);
    v.close_handle(h).unwrap();
    assert_eq!(deleted_fds(), 0, "no descriptor left");
    for dir in ["u", "w"] {
        let mut todo = vec![scratch.0.join(dir)];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                assert_ne!(
                    m.ino(),
                    ino,
                    "{} still names the orphan",
                    e.path().display()
                );
                if m.is_dir() {
                    todo.push(Utf8PathBuf::from_path_buf(e.path()).unwrap());
                }
            }
        }
    }
}

#[test]
fn hard_link_then_unlink_one_name() {
    for upper in Upper::all("link") {
        let v = upper.view(ViewOptions::default());
        let h = v.open_handle("etc/other", &rw()).unwrap();
        v.hard_link("etc/other", "alias").unwrap();
        assert_eq!(v.handle_metadata(h).unwrap().nlink, 2, "{}", upper.name());
        v.remove_file("etc/other").unwrap();
        assert_eq!(v.handle_metadata(h).unwrap().nlink, 1, "{}", upper.name());
        v.handle_write_at(h, 0, b"OTHER").unwrap();
        assert_eq!(v.read("alias").unwrap(), "OTHER\n", "{}", upper.name());
        v.remove_file("alias").unwrap();
        assert_eq!(v.handle_metadata(h).unwrap().nlink, 0, "{}", upper.name());
        assert_eq!(read_all(&v, h), b"OTHER\n", "{}", upper.name());
        v.close_handle(h).unwrap();
    }
}

#[test]
fn a_read_handle_on_a_lower_file_follows_a_copy_up_by_another_handle() {
    // As this machine's kernel (tests/it/kernel/handles.rs): a descriptor
    // opened read-only before the copy-up reads the copy.
    for upper in Upper::all("follow") {
        let v = upper.view(ViewOptions::default());
        let r = v.open_handle("etc/conf", &ro()).unwrap();
        let before = v.handle_metadata(r).unwrap();
        let w = v.open_handle("etc/conf", &rw()).unwrap();
        v.handle_set_len(w, 0).unwrap();
        v.handle_write_at(w, 0, b"UPPER!\n").unwrap();
        assert_eq!(read_all(&v, r), b"UPPER!\n", "{}", upper.name());
        let after = v.handle_metadata(r).unwrap();
        assert_eq!((after.ino, after.size), (before.ino, 7), "{}", upper.name());
        // Unlinked: both handles go on with the copy, nlink 0.
        v.remove_file("etc/conf").unwrap();
        v.handle_write_at(w, 7, b"more").unwrap();
        assert_eq!(read_all(&v, r), b"UPPER!\nmore", "{}", upper.name());
        assert_eq!(v.handle_metadata(r).unwrap().nlink, 0, "{}", upper.name());
        // A write through a read-only handle, a truncate too.
        assert_eq!(
            v.handle_write_at(r, 0, b"x").unwrap_err().kind(),
            ErrorKind::BadHandle
        );
        assert_eq!(
            v.handle_set_len(r, 0).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        v.close_handle(r).unwrap();
        v.close_handle(w).unwrap();
    }
}

#[test]
fn a_lower_file_deleted_without_a_copy_up_still_reads_with_its_lower_link_count() {
    for upper in Upper::all("whiteout") {
        let v = upper.view(ViewOptions::default());
        let r = v.open_handle("etc/other", &ro()).unwrap();
        v.remove_file("etc/other").unwrap();
        assert_eq!(read_all(&v, r), b"other\n", "{}", upper.name());
        // The kernel's fstat shows the lower inode: one link.
        assert_eq!(v.handle_metadata(r).unwrap().nlink, 1, "{}", upper.name());
        v.close_handle(r).unwrap();
    }
}

#[test]
fn hard_links_broken_by_copy_up_leave_handles_of_the_other_name_below() {
    for upper in Upper::all("broken") {
        let v = upper.view(ViewOptions::default());
        let by_other_name = v.open_handle("etc/linked2", &ro()).unwrap();
        let by_this_name = v.open_handle("etc/linked", &ro()).unwrap();
        v.write("etc/linked", "changed\n").unwrap();
        assert_eq!(read_all(&v, by_this_name), b"changed\n", "{}", upper.name());
        assert_eq!(read_all(&v, by_other_name), b"linked\n", "{}", upper.name());
        v.close_handle(by_other_name).unwrap();
        v.close_handle(by_this_name).unwrap();
        // Kept (index=on): every handle on the lower inode follows.
        let v = Upper::Memory.view(ViewOptions::default().hard_links(HardLinkCopyUp::Keep));
        let by_other_name = v.open_handle("etc/linked2", &ro()).unwrap();
        v.write("etc/linked", "changed\n").unwrap();
        assert_eq!(read_all(&v, by_other_name), b"changed\n");
        v.close_handle(by_other_name).unwrap();
    }
}

#[test]
fn commit_waits_for_every_handle_to_close() {
    let v = Upper::Memory.view(ViewOptions::default());
    let f = v.open("etc/conf", &ro()).unwrap();
    assert_eq!(v.commit().unwrap_err().kind(), ErrorKind::Busy);
    drop(f);
    v.commit().unwrap();
    assert_eq!(v.read("etc/conf").unwrap(), "lower data\n");
}

#[test]
fn directories_and_special_files_are_held_by_their_path() {
    let v = Upper::Memory.view(ViewOptions::default());
    let d = v.open_handle("etc", &ro()).unwrap();
    assert_eq!(
        v.handle_read_at(d, 0, 1).unwrap_err().kind(),
        ErrorKind::IsADirectory
    );
    assert!(v.handle_metadata(d).unwrap().is_dir());
    v.create_dir("x").unwrap();
    let x = v.open_handle("x", &ro()).unwrap();
    v.remove_dir("x").unwrap();
    assert_eq!(
        v.handle_metadata(x).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    for h in [d, x] {
        v.close_handle(h).unwrap();
    }
}

#[test]
fn handles_serve_several_threads() {
    let v = Arc::new(Upper::Memory.view(ViewOptions::default()));
    let h = v.open_handle("shared", &create()).unwrap();
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let v = Arc::clone(&v);
            std::thread::spawn(move || {
                for i in 0..64u64 {
                    let at = (u64::from(t) * 64 + i) * 2;
                    v.handle_write_at(h, at, &[b'a' + t, b'\n']).unwrap();
                }
            })
        })
        .collect();
    v.rename("shared", "etc/shared").unwrap();
    for t in threads {
        t.join().unwrap();
    }
    let data = v.read("etc/shared").unwrap();
    assert_eq!(data.len(), 4 * 64 * 2);
    for t in 0..4u8 {
        let part = &data[usize::from(t) * 128..usize::from(t + 1) * 128];
        assert!(part.chunks(2).all(|c| c == [b'a' + t, b'\n']));
    }
    v.close_handle(h).unwrap();
    assert!(v.open_handles().is_empty());
}

#[test]
fn an_upper_without_a_work_directory_still_opens_its_files_for_reading() {
    // `DirLayer::open` (no work directory) holds no objects: its files are
    // held by path, and reading them works as before handles followed the
    // inode.
    let scratch = Scratch::new("handles-readonly-upper");
    std::fs::create_dir_all(scratch.path("u")).unwrap();
    std::fs::write(scratch.path("u/f"), "upper data\n").unwrap();
    let upper = DirLayer::open(scratch.path("u")).unwrap();
    let view = MergedView::new(vec![lower()], upper).unwrap();
    let mut text = String::new();
    view.open("f", OpenOptions::new().read(true))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "upper data\n");
    // A write is refused by the layer.
    let err = view.write("f", "new").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly);
    assert_eq!(view.read("f").unwrap(), &b"upper data\n"[..]);
}
