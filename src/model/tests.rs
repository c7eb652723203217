//! The model's own unit tests: each rule of the contract on a small tree.

use std::fmt::Debug;

use proptest::prelude::*;

use super::*;
use crate::layer::LayerMut;
use crate::meta::makedev;

fn stack(layers: Vec<MemLayer>) -> Vec<Arc<dyn Layer>> {
    layers
        .into_iter()
        .map(|l| Arc::new(l) as Arc<dyn Layer>)
        .collect()
}

fn model_with(layers: Vec<MemLayer>, options: ViewOptions) -> Model {
    let model = Model::from_layers(&stack(layers), options).unwrap();
    check_invariants(&model);
    model
}

fn model(layers: Vec<MemLayer>) -> Model {
    model_with(layers, ViewOptions::default())
}

fn layer(build: impl FnOnce(&mut MemLayer) -> Result<()>) -> MemLayer {
    let mut l = MemLayer::new();
    build(&mut l).unwrap();
    l
}

fn kind<T: Debug>(result: Result<T>) -> ErrorKind {
    result.unwrap_err().kind()
}

fn names(m: &Model, path: &str) -> Vec<NameBuf> {
    m.read_dir(path)
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

fn text(m: &Model, path: &str) -> String {
    String::from_utf8(m.read(path).unwrap().to_vec()).unwrap()
}

fn nlink(m: &Model, path: &str) -> u64 {
    m.symlink_metadata(path).unwrap().nlink
}

fn p(s: &str) -> LayerPath {
    LayerPath::new(s).unwrap()
}

fn redirect() -> ViewOptions {
    ViewOptions::default().dir_rename(DirRename::Redirect)
}

fn keep() -> ViewOptions {
    ViewOptions::default().hard_links(HardLinkCopyUp::Keep)
}

/// Every directory is reachable exactly once, each identity counts its
/// names, nothing unreachable is kept, and the root is in the upper.
fn check_invariants(m: &Model) {
    let mut dirs = BTreeSet::new();
    let mut refs: BTreeMap<Id, u64> = BTreeMap::new();
    let mut work = vec![ROOT];
    while let Some(id) = work.pop() {
        assert!(dirs.insert(id), "directory {id} reachable twice");
        for child in m.dir(id).entries.values() {
            match child {
                Child::Dir(d) => work.push(*d),
                Child::Obj(o) => *refs.entry(*o).or_default() += 1,
            }
        }
    }
    assert_eq!(dirs, m.dirs.keys().copied().collect::<BTreeSet<_>>());
    assert_eq!(
        refs.keys().copied().collect::<BTreeSet<_>>(),
        m.objs.keys().copied().collect::<BTreeSet<_>>()
    );
    for (id, count) in refs {
        let obj = m.obj(id);
        assert_eq!(obj.names, count, "names of identity {id}");
        if m.options.hard_links == HardLinkCopyUp::Break && !obj.in_upper {
            assert_eq!(obj.names, 1, "a lower identity has one name with Break");
        }
    }
    assert!(m.dir(ROOT).in_upper);
}

// ---- Flatten ----

#[test]
fn whiteouts_hide_only_lower_layers() {
    let top = layer(|l| {
        l.add_whiteout("x")?;
        l.add_file("y", "top-y")?;
        l.add_whiteout("nothing-below")
    });
    let mid = layer(|l| {
        l.add_file("x", "mid-x")?;
        l.add_whiteout("z")?;
        l.add_file("y", "mid-y")
    });
    let bottom = layer(|l| {
        l.add_file("x", "bottom-x")?;
        l.add_file("z", "bottom-z")?;
        l.add_file("w", "bottom-w")?;
        l.add_file("sub/x", "deep")
    });
    let m = model(vec![top, mid, bottom]);
    assert_eq!(names(&m, "/"), ["sub", "w", "y"]);
    assert_eq!(text(&m, "y"), "top-y");
    assert_eq!(text(&m, "w"), "bottom-w");
    assert_eq!(kind(m.metadata("x")), ErrorKind::NotFound);
    assert_eq!(kind(m.metadata("z")), ErrorKind::NotFound);
    // A whiteout `x` at the root does not hide `sub/x`.
    assert_eq!(text(&m, "sub/x"), "deep");
    // The mid layer's whiteout of `z` does not hide its own layer's
    // entries, only the ones below.
    let mid = layer(|l| l.add_whiteout("z"));
    let m = model(vec![layer(|l| l.add_file("z", "top-z")), mid]);
    assert_eq!(text(&m, "z"), "top-z");
}

#[test]
fn opaque_dir_in_a_middle_layer_hides_only_below() {
    let top = layer(|l| l.add_file("d/a", "top-a"));
    let mid = layer(|l| {
        l.add_opaque_dir("d")?;
        l.add_file("d/b", "mid-b")
    });
    let bottom = layer(|l| {
        l.add_file("d/b", "bottom-b")?;
        l.add_file("d/c", "bottom-c")?;
        l.add_file("e", "bottom-e")
    });
    let m = model(vec![top, mid, bottom]);
    assert_eq!(names(&m, "d"), ["a", "b"]);
    assert_eq!(text(&m, "d/b"), "mid-b");
    assert_eq!(kind(m.metadata("d/c")), ErrorKind::NotFound);
    // Only `d` is opaque: the rest of the bottom layer shows.
    assert_eq!(names(&m, "/"), ["d", "e"]);
    // `d` merges two layers: one link.
    assert_eq!(nlink(&m, "d"), 1);
}

#[test]
fn non_directories_hide_what_is_below_and_directories_hide_files_below() {
    let top = layer(|l| {
        l.add_file_with("f", "file", Metadata::new(FileType::File).with_mode(0o600))?;
        l.add_file("d/x", "x")
    });
    let bottom = layer(|l| {
        l.add_file("f/inner", "hidden")?;
        l.add_file("d", "hidden file")?;
        l.add_file("d2", "")
    });
    let m = model(vec![top, bottom]);
    let f = m.metadata("f").unwrap();
    assert_eq!((f.file_type, f.mode, f.size), (FileType::File, 0o600, 4));
    assert_eq!(kind(m.metadata("f/inner")), ErrorKind::NotADirectory);
    assert_eq!(names(&m, "d"), ["x"]);
    // Only the top layer contributes to `d`: 2 + no subdirectories.
    assert_eq!(nlink(&m, "d"), 2);
}

#[test]
fn merged_directory_metadata_is_the_topmost_layers() {
    let top = layer(|l| {
        l.add_dir_with(
            "d",
            Metadata::new(FileType::Dir)
                .with_mode(0o750)
                .with_owner(3, 4),
        )
    });
    let mut bottom = layer(|l| {
        l.add_dir_with("d", Metadata::new(FileType::Dir).with_mode(0o700))?;
        l.add_file("d/f", "")
    });
    let mut meta = Metadata::new(FileType::Dir);
    meta.xattrs.insert("user.lower", "1");
    bottom.set_metadata(&p("d"), &meta).unwrap();
    let m = model(vec![top, bottom]);
    let d = m.metadata("d").unwrap();
    assert_eq!((d.mode, d.uid, d.gid), (0o750, 3, 4));
    assert!(d.xattrs.is_empty());
    assert_eq!(names(&m, "d"), ["f"]);
}

#[test]
fn relative_redirect_looks_up_the_old_name_below() {
    let mut top = layer(|l| {
        l.add_file("new/g", "g")?;
        l.add_whiteout("old")
    });
    top.set_redirect(&p("new"), Some(Redirect::parse("old")))
        .unwrap();
    let bottom = layer(|l| {
        l.add_file("old/f", "f")?;
        l.add_file("new/hidden", "not looked up")
    });
    let m = model(vec![top, bottom]);
    assert_eq!(names(&m, "/"), ["new"]);
    assert_eq!(names(&m, "new"), ["f", "g"]);
    assert_eq!(text(&m, "new/f"), "f");
    assert_eq!(nlink(&m, "new"), 1);
}

#[test]
fn absolute_redirect_looks_up_from_the_root_below() {
    let mut top = layer(|l| l.add_dir("x/moved"));
    top.set_redirect(&p("x/moved"), Some(Redirect::parse("/a/old")))
        .unwrap();
    let bottom = layer(|l| {
        l.add_file("a/old/f", "f")?;
        l.add_file("x/moved/h", "not looked up")
    });
    let m = model(vec![top, bottom]);
    assert_eq!(names(&m, "x/moved"), ["f"]);
    // The old place still shows (the top layer has no whiteout there).
    assert_eq!(names(&m, "a/old"), ["f"]);
}

#[test]
fn relative_redirect_below_an_absolute_one_replaces_the_last_name() {
    let mut top = layer(|l| l.add_dir("m"));
    top.set_redirect(&p("m"), Some(Redirect::parse("/p/q")))
        .unwrap();
    let mut mid = layer(|l| l.add_dir("p/q"));
    mid.set_redirect(&p("p/q"), Some(Redirect::parse("r")))
        .unwrap();
    let bottom = layer(|l| l.add_file("p/r/file", "deep"));
    let m = model(vec![top, mid, bottom]);
    assert_eq!(names(&m, "m"), ["file"]);
    assert_eq!(text(&m, "m/file"), "deep");
    assert_eq!(names(&m, "p/q"), ["file"]);
    assert_eq!(nlink(&m, "m"), 1);
}

#[test]
fn malformed_redirects_are_invalid() {
    for bad in ["a/b", "/", "//a", "/a/", "..", "/a/../b"] {
        let mut top = layer(|l| l.add_dir("d"));
        top.set_redirect(&p("d"), Some(Redirect::parse(bad)))
            .unwrap();
        let bottom = layer(|l| l.add_dir("d"));
        let err =
            Model::from_layers(&stack(vec![top, bottom]), ViewOptions::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
}

#[test]
fn root_is_the_uppers_and_an_opaque_root_stops_the_stack() {
    let top = layer(|l| {
        l.add_dir_with(
            "",
            Metadata::new(FileType::Dir)
                .with_mode(0o700)
                .with_owner(9, 9),
        )?;
        l.add_file("a", "a")
    });
    let mid = layer(|l| {
        l.add_opaque_dir("")?;
        l.add_file("b", "b")
    });
    let bottom = layer(|l| l.add_file("c", "c"));
    let m = model(vec![top, mid, bottom]);
    let root = m.metadata("/").unwrap();
    assert_eq!((root.mode, root.uid, root.gid), (0o755, 0, 0));
    assert_eq!(names(&m, "/"), ["a", "b"]);
    assert_eq!(m.dir(ROOT).lower_layers, 2);
    assert_eq!(root.nlink, 1);
    // No lowers: a plain directory.
    let mut m = model(vec![]);
    assert_eq!(nlink(&m, "."), 2);
    m.create_dir("d").unwrap();
    m.write("f", b"").unwrap();
    assert_eq!(nlink(&m, "."), 3);
}

#[test]
fn flatten_reads_every_type() {
    let bottom = layer(|l| {
        l.add_file("f", "data")?;
        l.add_symlink("s", "f")?;
        l.add_special(
            "c",
            Metadata::new(FileType::CharDevice).with_rdev(makedev(1, 3)),
        )?;
        l.add_special("p", Metadata::new(FileType::Fifo).with_rdev(7))
    });
    let m = model(vec![bottom]);
    let snap = m.snapshot();
    assert_eq!(
        snap.keys().map(|p| p.to_str().unwrap()).collect::<Vec<_>>(),
        ["", "c", "f", "p", "s"]
    );
    assert_eq!(snap[&p("c")].meta.rdev, makedev(1, 3));
    assert_eq!(snap[&p("p")].meta.rdev, 0);
    assert_eq!(&snap[&p("f")].data[..], b"data");
    assert_eq!(snap[&p("s")].target, "f");
    assert_eq!(snap[&p("s")].meta.size, 1);
    assert_eq!(m.read_link("s").unwrap(), "f");
}

// ---- Symlinks ----

fn symlink_tree() -> Model {
    let bottom = layer(|l| {
        l.add_file("etc/conf", "conf")?;
        l.add_symlink("sub/abs", "/etc/conf")?;
        l.add_symlink("sub/up", "../../../../etc/conf")?;
        l.add_file("sub/x", "sub-x")?;
        l.add_symlink("sub/rel", "x")?;
        l.add_file("a/f", "a-f")?;
        l.add_dir("a/b")?;
        l.add_symlink("ab", "a/b")?;
        l.add_symlink("etclink", "etc")?;
        l.add_symlink("filelink", "etc/conf")?;
        l.add_symlink("slashlink", "etc/conf/")?;
        l.add_symlink("dangling", "new.txt")?;
        l.add_symlink("dangling-dir", "nodir/f")?;
        l.add_symlink("loop", "loop")?;
        l.add_symlink("empty", "")
    });
    model(vec![bottom])
}

#[test]
fn symlinks_resolve_inside_the_root() {
    let m = symlink_tree();
    assert_eq!(text(&m, "sub/abs"), "conf");
    // `..` stops at the root.
    assert_eq!(text(&m, "sub/up"), "conf");
    assert_eq!(text(&m, "/../../sub/up"), "conf");
    // A relative target starts at the directory holding the symlink.
    assert_eq!(text(&m, "sub/rel"), "sub-x");
    // `..` after a symlink goes to the physical parent.
    assert_eq!(text(&m, "ab/../f"), "a-f");
    assert_eq!(names(&m, "etclink"), ["conf"]);
    assert_eq!(text(&m, "etclink/conf"), "conf");
    let link = m.symlink_metadata("etclink").unwrap();
    assert_eq!(
        (link.file_type, link.size, link.mode),
        (FileType::Symlink, 3, 0o777)
    );
    assert_eq!(m.read_link("sub/up").unwrap(), "../../../../etc/conf");
}

#[test]
fn the_41st_symlink_is_a_loop() {
    let bottom = layer(|l| {
        l.add_file("target", "end")?;
        for i in 0..41 {
            let next = if i == 40 {
                "target".to_owned()
            } else {
                format!("l{}", i + 1)
            };
            l.add_symlink(format!("l{i}"), &next)?;
        }
        Ok(())
    });
    let m = model(vec![bottom]);
    // l1 .. l40: 40 symlinks.
    assert_eq!(text(&m, "l1"), "end");
    // l0 .. l40: 41.
    assert_eq!(kind(m.read("l0")), ErrorKind::FilesystemLoop);
    assert_eq!(kind(m.metadata("l0")), ErrorKind::FilesystemLoop);
    assert_eq!(
        m.symlink_metadata("l0").unwrap().file_type,
        FileType::Symlink
    );
    // Symlinks in different components share the budget: 20 + 21.
    let bottom = layer(|l| {
        l.add_dir("d")?;
        for i in 0..20 {
            l.add_symlink(format!("a{i}"), format!("a{}", i + 1))?;
        }
        l.add_symlink("a20", "d")?;
        for i in 0..20 {
            l.add_symlink(format!("d/b{i}"), format!("b{}", i + 1))?;
        }
        l.add_file("d/b20", "b")
    });
    let m = model(vec![bottom]);
    assert_eq!(text(&m, "a1/b1"), "b");
    assert_eq!(kind(m.read("a0/b0")), ErrorKind::FilesystemLoop);
    // 21 + 19 and 20 + 20: exactly 40.
    assert_eq!(text(&m, "a0/b1"), "b");
    assert_eq!(text(&m, "a1/b0"), "b");
}

#[test]
fn loops_dangling_and_empty_symlinks() {
    let mut m = symlink_tree();
    assert_eq!(kind(m.metadata("loop")), ErrorKind::FilesystemLoop);
    assert_eq!(kind(m.metadata("loop/x")), ErrorKind::FilesystemLoop);
    assert_eq!(kind(m.metadata("dangling")), ErrorKind::NotFound);
    assert_eq!(kind(m.metadata("empty")), ErrorKind::NotFound);
    assert_eq!(kind(m.metadata("filelink/x")), ErrorKind::NotADirectory);
    // A target with a trailing slash must be a directory.
    assert_eq!(kind(m.metadata("slashlink")), ErrorKind::NotADirectory);
    assert_eq!(
        m.symlink_metadata("slashlink").unwrap().file_type,
        FileType::Symlink
    );
    // Writing through a dangling symlink creates its target.
    m.write("dangling", b"hi").unwrap();
    assert_eq!(text(&m, "new.txt"), "hi");
    assert_eq!(
        m.symlink_metadata("dangling").unwrap().file_type,
        FileType::Symlink
    );
    // ... but not a missing directory on the way.
    assert_eq!(kind(m.write("dangling-dir", b"x")), ErrorKind::NotFound);
    // A symlink is removed itself.
    m.remove_file("loop").unwrap();
    assert_eq!(kind(m.symlink_metadata("loop")), ErrorKind::NotFound);
    check_invariants(&m);
}

#[test]
fn trailing_slash_rules() {
    let mut m = symlink_tree();
    assert_eq!(kind(m.metadata("etc/conf/")), ErrorKind::NotADirectory);
    assert_eq!(kind(m.metadata("etc/conf/.")), ErrorKind::NotADirectory);
    assert_eq!(m.metadata("etc/").unwrap().file_type, FileType::Dir);
    // The final symlink is followed with a trailing slash.
    assert_eq!(
        m.symlink_metadata("etclink/").unwrap().file_type,
        FileType::Dir
    );
    assert_eq!(kind(m.read_link("etclink/")), ErrorKind::InvalidInput);
    assert_eq!(kind(m.write("newfile/", b"")), ErrorKind::IsADirectory);
    assert_eq!(kind(m.remove_file("etc/conf/")), ErrorKind::NotADirectory);
    // Removing and making names never follow the last component (the
    // kernel's `do_unlinkat` and `filename_create`).
    assert_eq!(kind(m.remove_file("etclink/")), ErrorKind::NotADirectory);
    assert_eq!(kind(m.remove_dir("etclink/")), ErrorKind::NotADirectory);
    m.create_dir("newdir/").unwrap();
    assert_eq!(m.metadata("newdir").unwrap().file_type, FileType::Dir);
    assert_eq!(kind(m.create_dir("etclink/")), ErrorKind::AlreadyExists);
    assert_eq!(kind(m.symlink("t", "newlink/")), ErrorKind::NotFound);
    assert_eq!(
        kind(m.mknod("newfifo/", FileType::Fifo, 0o644, 0)),
        ErrorKind::NotFound
    );
    assert_eq!(kind(m.hard_link("etc/conf", "newhl/")), ErrorKind::NotFound);
    assert_eq!(
        kind(m.hard_link("etc/conf/", "newhl")),
        ErrorKind::NotADirectory
    );
    // Creating with a trailing slash is EISDIR, whatever is there.
    let mut create_new = OpenOptions::new();
    create_new.write(true).create_new(true);
    assert_eq!(kind(m.open("etc/", &create_new)), ErrorKind::IsADirectory);
    assert_eq!(kind(m.open("new/", &create_new)), ErrorKind::IsADirectory);
    check_invariants(&m);
}

// ---- Paths ----

#[test]
fn path_parse_errors() {
    let mut m = model(vec![]);
    assert_eq!(kind(m.metadata("")), ErrorKind::NotFound);
    assert_eq!(kind(m.metadata("a\0b")), ErrorKind::InvalidInput);
    assert_eq!(kind(m.write("x".repeat(256), b"")), ErrorKind::NameTooLong);
    assert_eq!(
        kind(m.create_dir("ab/".repeat(2048))),
        ErrorKind::NameTooLong
    );
    let err = m.remove_file("missing").unwrap_err();
    assert_eq!(err.operation(), Operation::RemoveFile);
    assert_eq!(err.path(), "missing");
    // Absolute and relative paths are the same; `..` stops at the root.
    m.write("/a", b"1").unwrap();
    assert_eq!(text(&m, "../../a"), "1");
    assert_eq!(text(&m, "./a"), "1");
}

// ---- Reading ----

#[test]
fn read_errors_and_ranges() {
    let bottom = layer(|l| {
        l.add_file("f", "0123456789")?;
        l.add_dir("d")?;
        l.add_special("p", Metadata::new(FileType::Fifo))
    });
    let m = model(vec![bottom]);
    assert_eq!(kind(m.read("d")), ErrorKind::IsADirectory);
    assert_eq!(kind(m.read("p")), ErrorKind::InvalidInput);
    assert_eq!(kind(m.read("missing")), ErrorKind::NotFound);
    assert_eq!(&m.read_at("f", 8, 10).unwrap()[..], b"89");
    assert_eq!(&m.read_at("f", 3, 2).unwrap()[..], b"34");
    assert!(m.read_at("f", 100, 10).unwrap().is_empty());
    assert_eq!(kind(m.read_dir("f")), ErrorKind::NotADirectory);
    assert_eq!(kind(m.read_dir("missing")), ErrorKind::NotFound);
    assert_eq!(
        m.read_dir("/").unwrap(),
        [
            (NameBuf::from("d"), FileType::Dir),
            (NameBuf::from("f"), FileType::File),
            (NameBuf::from("p"), FileType::Fifo)
        ]
    );
    assert_eq!(kind(m.read_link("f")), ErrorKind::InvalidInput);
    assert_eq!(kind(m.read_link("missing")), ErrorKind::NotFound);
}

// ---- Writing ----

#[test]
fn write_append_write_at_and_set_len() {
    let bottom = layer(|l| {
        l.add_file("d/f", "lower")?;
        l.add_special("p", Metadata::new(FileType::Fifo))
    });
    let mut m = model(vec![bottom]);
    assert_eq!(nlink(&m, "d"), 2);
    m.append("d/f", b"+").unwrap();
    assert_eq!(text(&m, "d/f"), "lower+");
    // The parent was copied up: it now merges the upper and a lower.
    assert_eq!(nlink(&m, "d"), 1);
    m.write_at("d/f", 8, b"X").unwrap();
    assert_eq!(&m.read("d/f").unwrap()[..], b"lower+\0\0X");
    m.set_len("d/f", 3).unwrap();
    assert_eq!(text(&m, "d/f"), "low");
    m.set_len("d/f", 5).unwrap();
    assert_eq!(&m.read("d/f").unwrap()[..], b"low\0\0");
    m.write("d/f", b"new").unwrap();
    assert_eq!(text(&m, "d/f"), "new");
    m.write("d/g", b"g").unwrap();
    assert_eq!(m.metadata("d/g").unwrap().mode, 0o644);
    m.append("d/h", b"h").unwrap();
    assert_eq!(text(&m, "d/h"), "h");

    assert_eq!(kind(m.write_at("missing", 0, b"x")), ErrorKind::NotFound);
    assert_eq!(kind(m.write("nodir/f", b"x")), ErrorKind::NotFound);
    assert_eq!(kind(m.write("d", b"x")), ErrorKind::IsADirectory);
    assert_eq!(kind(m.write("p", b"x")), ErrorKind::InvalidInput);
    assert_eq!(kind(m.set_len("missing", 1)), ErrorKind::NotFound);
    assert_eq!(kind(m.set_len("d", 1)), ErrorKind::IsADirectory);
    assert_eq!(kind(m.set_len("p", 1)), ErrorKind::InvalidInput);
    assert_eq!(
        kind(m.write_at("d/f", MAX_FILE_SIZE, b"x")),
        ErrorKind::FileTooLarge
    );
    assert_eq!(
        kind(m.write_at("d/f", u64::MAX, b"x")),
        ErrorKind::FileTooLarge
    );
    assert_eq!(
        kind(m.set_len("d/f", MAX_FILE_SIZE + 1)),
        ErrorKind::FileTooLarge
    );
    // An empty write never fails and never grows the file.
    m.write_at("d/f", u64::MAX, b"").unwrap();
    assert_eq!(m.metadata("d/f").unwrap().size, 3);
    check_invariants(&m);
}

#[test]
fn open_effects_and_errors() {
    let bottom = layer(|l| {
        l.add_file("d/f", "lower")?;
        l.add_dir("e")?;
        l.add_special("p", Metadata::new(FileType::Fifo))?;
        l.add_symlink("dangling", "d/new")
    });
    let mut m = model(vec![bottom]);
    let mut read = OpenOptions::new();
    read.read(true);
    let mut write = OpenOptions::new();
    write.write(true);
    let mut truncate = OpenOptions::new();
    truncate.write(true).truncate(true);
    let mut create = OpenOptions::new();
    create.write(true).create(true);
    let mut create_new = OpenOptions::new();
    create_new.write(true).create_new(true);
    let mut invalid = OpenOptions::new();
    invalid.read(true).truncate(true);

    // Options are checked before the path.
    assert_eq!(kind(m.open("", &invalid)), ErrorKind::InvalidInput);
    assert_eq!(
        kind(m.open("d/f", &OpenOptions::new())),
        ErrorKind::InvalidInput
    );
    // Read-only opens never copy up.
    m.open("d/f", &read).unwrap();
    m.open("e", &read).unwrap();
    m.open("p", &read).unwrap();
    assert_eq!(nlink(&m, "d"), 2);
    assert_eq!(kind(m.open("missing", &read)), ErrorKind::NotFound);
    assert_eq!(kind(m.open("e", &write)), ErrorKind::IsADirectory);
    assert_eq!(kind(m.open("p", &write)), ErrorKind::InvalidInput);
    // Opening for writing copies up, even without a write.
    m.open("d/f", &write).unwrap();
    assert_eq!(nlink(&m, "d"), 1);
    assert_eq!(text(&m, "d/f"), "lower");
    m.open("d/f", &truncate).unwrap();
    assert!(m.read("d/f").unwrap().is_empty());
    assert_eq!(kind(m.open("d/f", &create_new)), ErrorKind::AlreadyExists);
    assert_eq!(
        kind(m.open("dangling", &create_new)),
        ErrorKind::AlreadyExists
    );
    assert_eq!(kind(m.open("nodir/x", &create)), ErrorKind::NotFound);
    // Creating through a dangling symlink creates its target.
    m.open("dangling", &create).unwrap();
    assert_eq!(m.metadata("d/new").unwrap().size, 0);
    m.open("e/n", &create_new).unwrap();
    assert_eq!(m.metadata("e/n").unwrap().mode, 0o644);
    check_invariants(&m);
}

// ---- Creating ----

#[test]
fn create_dir_errors() {
    let bottom = layer(|l| {
        l.add_file("f", "")?;
        l.add_symlink("dangling", "nowhere")
    });
    let mut m = model(vec![bottom]);
    assert_eq!(kind(m.create_dir("/")), ErrorKind::AlreadyExists);
    assert_eq!(kind(m.create_dir("x/..")), ErrorKind::NotFound);
    m.create_dir("x").unwrap();
    assert_eq!(kind(m.create_dir("x/..")), ErrorKind::AlreadyExists);
    assert_eq!(kind(m.create_dir("x")), ErrorKind::AlreadyExists);
    assert_eq!(kind(m.create_dir("f")), ErrorKind::AlreadyExists);
    assert_eq!(kind(m.create_dir("dangling")), ErrorKind::AlreadyExists);
    assert_eq!(kind(m.create_dir("f/y")), ErrorKind::NotADirectory);
    assert_eq!(kind(m.create_dir("nodir/y")), ErrorKind::NotFound);
    let x = m.metadata("x").unwrap();
    assert_eq!((x.mode, x.nlink, x.uid, x.gid), (0o755, 2, 0, 0));
    check_invariants(&m);
}

#[test]
fn create_dir_all_walks_and_creates() {
    let bottom = layer(|l| {
        l.add_file("f", "")?;
        l.add_dir("d")?;
        l.add_symlink("dl", "d")?;
        l.add_symlink("fl", "f")?;
        l.add_symlink("dangling", "nowhere")?;
        l.add_symlink("loop", "loop")
    });
    let mut m = model(vec![bottom]);
    m.create_dir_all("/").unwrap();
    m.create_dir_all("a/b/../c").unwrap();
    assert_eq!(names(&m, "a"), ["b", "c"]);
    m.create_dir_all("dl/x/y").unwrap();
    assert_eq!(names(&m, "d/x"), ["y"]);
    m.create_dir_all("dl").unwrap();
    m.create_dir_all("d/x").unwrap();
    assert_eq!(kind(m.create_dir_all("f")), ErrorKind::AlreadyExists);
    assert_eq!(kind(m.create_dir_all("f/x")), ErrorKind::NotADirectory);
    assert_eq!(kind(m.create_dir_all("fl")), ErrorKind::AlreadyExists);
    assert_eq!(kind(m.create_dir_all("fl/x")), ErrorKind::NotADirectory);
    assert_eq!(kind(m.create_dir_all("dangling")), ErrorKind::AlreadyExists);
    assert_eq!(
        kind(m.create_dir_all("dangling/x")),
        ErrorKind::AlreadyExists
    );
    assert_eq!(kind(m.create_dir_all("loop")), ErrorKind::AlreadyExists);
    assert_eq!(kind(m.create_dir_all("loop/x")), ErrorKind::FilesystemLoop);
    assert_eq!(kind(m.metadata("nowhere")), ErrorKind::NotFound);
    check_invariants(&m);
}

#[test]
fn symlink_errors_in_order() {
    let mut m = model(vec![layer(|l| l.add_file("f", ""))]);
    // The empty target is refused first.
    assert_eq!(kind(m.symlink("", "nodir/x")), ErrorKind::NotFound);
    assert_eq!(kind(m.symlink("t", "nodir/x")), ErrorKind::NotFound);
    assert_eq!(kind(m.symlink("t", "/")), ErrorKind::AlreadyExists);
    assert_eq!(kind(m.symlink("t", "f/..")), ErrorKind::NotADirectory);
    assert_eq!(kind(m.symlink("t", "f")), ErrorKind::AlreadyExists);
    m.symlink("t", "s").unwrap();
    assert_eq!(kind(m.symlink("u", "s")), ErrorKind::AlreadyExists);
    let s = m.symlink_metadata("s").unwrap();
    assert_eq!((s.mode, s.size), (0o777, 1));
    assert_eq!(m.read_link("s").unwrap(), "t");
}

#[test]
fn hard_link_errors_in_order() {
    let bottom = layer(|l| {
        l.add_file("f", "f")?;
        l.add_dir("d")?;
        l.add_symlink("s", "nowhere")
    });
    let mut m = model(vec![bottom]);
    assert_eq!(kind(m.hard_link("missing", "nodir/x")), ErrorKind::NotFound);
    let err = m.hard_link("f", "nodir/x").unwrap_err();
    assert_eq!(
        (err.kind(), err.path().to_str().unwrap()),
        (ErrorKind::NotFound, "nodir/x")
    );
    // The link's name is checked before the original's type.
    assert_eq!(kind(m.hard_link("d", "f")), ErrorKind::AlreadyExists);
    assert_eq!(kind(m.hard_link("d", "/")), ErrorKind::AlreadyExists);
    assert_eq!(kind(m.hard_link("d", "x")), ErrorKind::NotPermitted);
    assert_eq!(kind(m.hard_link("/", "x")), ErrorKind::NotPermitted);
    // A symlink is linked itself.
    m.hard_link("s", "s2").unwrap();
    assert_eq!(m.read_link("s2").unwrap(), "nowhere");
    assert_eq!(nlink(&m, "s"), 2);
    m.hard_link("f", "d/g").unwrap();
    assert_eq!(nlink(&m, "f"), 2);
    m.write("d/g", b"changed").unwrap();
    assert_eq!(text(&m, "f"), "changed");
    m.remove_file("f").unwrap();
    assert_eq!(nlink(&m, "d/g"), 1);
    check_invariants(&m);
}

#[test]
fn mknod_errors_and_results() {
    let mut m = model(vec![layer(|l| l.add_file("f", ""))]);
    // The type is checked before the path is walked.
    assert_eq!(
        kind(m.mknod("nodir/x", FileType::File, 0o644, 0)),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(m.mknod("nodir/x", FileType::Fifo, 0o644, 0)),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(m.mknod("/", FileType::Fifo, 0o644, 0)),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(m.mknod("f", FileType::CharDevice, 0o644, 0)),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(m.mknod("c", FileType::CharDevice, 0o644, 0)),
        ErrorKind::NotPermitted
    );
    m.mknod("c", FileType::CharDevice, 0o4777, makedev(1, 3))
        .unwrap();
    m.mknod("b", FileType::BlockDevice, 0o600, makedev(8, 1))
        .unwrap();
    m.mknod("p", FileType::Fifo, 0o644, 5).unwrap();
    m.mknod("s", FileType::Socket, 0o644, 5).unwrap();
    let c = m.metadata("c").unwrap();
    assert_eq!(
        (c.file_type, c.mode, c.rdev),
        (FileType::CharDevice, 0o4755, makedev(1, 3))
    );
    assert_eq!(m.metadata("b").unwrap().rdev, makedev(8, 1));
    assert_eq!(m.metadata("p").unwrap().rdev, 0);
    assert_eq!(m.metadata("s").unwrap().file_type, FileType::Socket);
}

#[test]
fn owner_mode_umask_and_setgid_of_new_objects() {
    let options = ViewOptions::default().owner(7, 8).umask(0o077);
    let mut m = model_with(vec![], options);
    m.write("f", b"").unwrap();
    m.create_dir("d").unwrap();
    m.symlink("t", "s").unwrap();
    m.mknod("p", FileType::Fifo, 0o666, 0).unwrap();
    let mode_owner = |m: &Model, path: &str| {
        let meta = m.symlink_metadata(path).unwrap();
        (meta.mode, meta.uid, meta.gid)
    };
    assert_eq!(mode_owner(&m, "f"), (0o600, 7, 8));
    assert_eq!(mode_owner(&m, "d"), (0o700, 7, 8));
    assert_eq!(mode_owner(&m, "s"), (0o777, 7, 8));
    assert_eq!(mode_owner(&m, "p"), (0o600, 7, 8));
    m.set_permissions("d", 0o2770).unwrap();
    m.set_owner("d", None, Some(50)).unwrap();
    m.write("d/f", b"").unwrap();
    m.create_dir("d/sub").unwrap();
    m.symlink("t", "d/s").unwrap();
    assert_eq!(mode_owner(&m, "d/f"), (0o600, 7, 50));
    assert_eq!(mode_owner(&m, "d/sub"), (0o2700, 7, 50));
    assert_eq!(mode_owner(&m, "d/s"), (0o777, 7, 50));
}

#[test]
fn set_permissions_owner_and_times() {
    let bottom = layer(|l| {
        l.add_file_with("d/f", "", Metadata::new(FileType::File).with_mode(0o6755))?;
        l.add_file_with("d/g", "", Metadata::new(FileType::File).with_mode(0o6745))?;
        l.add_dir_with("d/sub", Metadata::new(FileType::Dir).with_mode(0o6755))?;
        l.add_dir("d/t")?;
        l.add_symlink("link", "d/f")
    });
    let mut m = model(vec![bottom]);
    assert_eq!(
        kind(m.set_permissions("missing", 0o644)),
        ErrorKind::NotFound
    );
    m.set_owner("link", None, None).unwrap();
    // Follows the symlink; setuid is cleared, and setgid with group exec.
    assert_eq!(m.metadata("d/f").unwrap().mode, 0o0755);
    m.set_owner("d/g", Some(1), Some(2)).unwrap();
    let g = m.metadata("d/g").unwrap();
    assert_eq!((g.mode, g.uid, g.gid), (0o2745, 1, 2));
    m.set_owner("d/sub", Some(1), None).unwrap();
    assert_eq!(m.metadata("d/sub").unwrap().mode, 0o6755);
    m.set_permissions("link", 0o104_640).unwrap();
    assert_eq!(m.metadata("d/f").unwrap().mode, 0o4640);
    assert_eq!(m.symlink_metadata("link").unwrap().mode, 0o777);
    // set_times only copies up: `d/t` (single lower layer) then merges
    // the upper and a lower.
    assert_eq!(nlink(&m, "d/t"), 2);
    m.set_times("d/t", None, Some(Timestamp::new(5, 0)))
        .unwrap();
    assert_eq!(nlink(&m, "d/t"), 1);
    assert_eq!(
        kind(m.set_times("missing", Some(Timestamp::new(1, 0)), None)),
        ErrorKind::NotFound
    );
    // As `utimensat` with two `UTIME_OMIT`: the path is not looked up.
    m.set_times("missing", None, None).unwrap();
}

// ---- Removing ----

#[test]
fn remove_file_errors() {
    let bottom = layer(|l| {
        l.add_file("d/f", "")?;
        l.add_symlink("dl", "d")
    });
    let mut m = model(vec![bottom]);
    assert_eq!(kind(m.remove_file("/")), ErrorKind::IsADirectory);
    assert_eq!(kind(m.remove_file("d/..")), ErrorKind::IsADirectory);
    assert_eq!(kind(m.remove_file("missing")), ErrorKind::NotFound);
    assert_eq!(kind(m.remove_file("d")), ErrorKind::IsADirectory);
    assert_eq!(kind(m.remove_file("d/f/")), ErrorKind::NotADirectory);
    m.remove_file("dl").unwrap();
    assert_eq!(names(&m, "/"), ["d"]);
    m.remove_file("d/f").unwrap();
    assert!(names(&m, "d").is_empty());
    check_invariants(&m);
}

#[test]
fn remove_dir_errors() {
    let bottom = layer(|l| {
        l.add_file("d/f", "")?;
        l.add_dir("e")?;
        l.add_symlink("el", "e")
    });
    let mut m = model(vec![bottom]);
    // The kernel's `do_rmdir`: by the kind of the last component.
    assert_eq!(kind(m.remove_dir("/")), ErrorKind::Busy);
    assert_eq!(kind(m.remove_dir("..")), ErrorKind::DirectoryNotEmpty);
    assert_eq!(kind(m.remove_dir("e/..")), ErrorKind::DirectoryNotEmpty);
    assert_eq!(kind(m.remove_dir("e/.")), ErrorKind::InvalidInput);
    assert_eq!(kind(m.remove_dir(".")), ErrorKind::InvalidInput);
    assert_eq!(kind(m.remove_dir("missing/.")), ErrorKind::NotFound);
    assert_eq!(kind(m.remove_dir("missing")), ErrorKind::NotFound);
    assert_eq!(kind(m.remove_dir("d/f")), ErrorKind::NotADirectory);
    assert_eq!(kind(m.remove_dir("el")), ErrorKind::NotADirectory);
    // Not empty as the merged view lists it (the entry is lower only).
    assert_eq!(kind(m.remove_dir("d")), ErrorKind::DirectoryNotEmpty);
    m.remove_file("d/f").unwrap();
    m.remove_dir("d").unwrap();
    m.remove_dir("e").unwrap();
    assert_eq!(names(&m, "/"), ["el"]);
    check_invariants(&m);
}

#[test]
fn remove_dir_all_never_follows_symlinks() {
    let bottom = layer(|l| {
        l.add_file("keep/f", "kept")?;
        l.add_file("d/a/b", "")?;
        l.add_symlink("d/link", "/keep")?;
        l.add_hard_link("d/a/b", "outside")?;
        l.add_symlink("kl", "keep")?;
        l.add_file("f", "")
    });
    let mut m = model_with(vec![bottom.clone()], keep());
    assert_eq!(kind(m.remove_dir_all("missing")), ErrorKind::NotFound);
    assert_eq!(kind(m.remove_dir_all("f")), ErrorKind::NotADirectory);
    m.remove_dir_all("kl").unwrap();
    assert_eq!(text(&m, "keep/f"), "kept");
    m.remove_dir_all("d").unwrap();
    assert_eq!(names(&m, "/"), ["f", "keep", "outside"]);
    assert_eq!(text(&m, "keep/f"), "kept");
    // Still the lower inode: its link count does not change.
    assert_eq!(nlink(&m, "outside"), 2);
    check_invariants(&m);
    // Unlike `std`, a path that names no directory by its name is
    // refused before anything goes.
    assert_eq!(kind(m.remove_dir_all("/")), ErrorKind::Busy);
    assert_eq!(names(&m, "/"), ["f", "keep", "outside"]);
    let mut m = model_with(vec![bottom.clone()], keep());
    assert_eq!(kind(m.remove_dir_all("keep/.")), ErrorKind::InvalidInput);
    assert_eq!(names(&m, "keep"), ["f"]);
    assert_eq!(kind(m.remove_dir_all("d/..")), ErrorKind::DirectoryNotEmpty);
    assert_eq!(kind(m.remove_dir_all("kl/")), ErrorKind::NotADirectory);
    assert_eq!(names(&m, "/"), ["d", "f", "keep", "kl", "outside"]);
    check_invariants(&m);
}

// ---- Rename ----

fn rename_tree(options: ViewOptions) -> Model {
    let bottom = layer(|l| {
        l.add_file("d/f", "d-f")?;
        l.add_file("d/sub/x", "x")?;
        l.add_file("file", "file")?;
        l.add_dir("e")?;
        l.add_symlink("link", "e")
    });
    let mut m = model_with(vec![bottom], options);
    m.create_dir("u").unwrap();
    m.write("u/y", b"y").unwrap();
    m.create_dir("empty").unwrap();
    m
}

fn rename(m: &mut Model, from: &str, to: &str) -> Result<()> {
    m.rename_with(from, to, RenameMode::Replace)
}

#[test]
fn rename_checks_in_order() {
    let mut m = rename_tree(ViewOptions::default());
    use ErrorKind::*;
    use RenameMode::*;
    let cases: &[(&str, &str, RenameMode, ErrorKind)] = &[
        // 1. `from` parsed and its parent walked, then `to` (a NUL
        // byte in either comes first).
        ("nodir/x", "a\0", Replace, InvalidInput),
        ("nodir/x", "nodir2/y", Replace, NotFound),
        ("file", "file/x", Replace, NotADirectory),
        // 2.
        ("/", "x", Replace, Busy),
        ("missing", "/", Replace, Busy),
        ("d/..", "x", Replace, Busy),
        ("file", "e/..", Replace, Busy),
        // 3.
        ("missing", "x", Replace, NotFound),
        // 4. before the type checks of 9.
        ("file", "d", NoReplace, AlreadyExists),
        ("file", "file", NoReplace, AlreadyExists),
        // 5.
        ("file", "missing", Exchange, NotFound),
        // 6.
        ("file/", "x", Replace, NotADirectory),
        ("file", "x/", Replace, NotADirectory),
        ("file/", "file", Replace, NotADirectory),
        ("empty", "file/", Exchange, NotADirectory),
        // 7.
        ("u", "u/z", Replace, InvalidInput),
        ("u", "u/y", Exchange, InvalidInput),
        ("d/sub", "d", Replace, DirectoryNotEmpty),
        ("d/sub", "d", Exchange, InvalidInput),
        // 9.
        ("empty", "file", Replace, NotADirectory),
        ("file", "empty", Replace, IsADirectory),
        // 10.
        ("d", "newname", Replace, CrossesDevices),
        ("e", "empty", Replace, CrossesDevices),
        ("u", "e", Exchange, CrossesDevices),
        // 11.
        ("empty", "u", Replace, DirectoryNotEmpty),
    ];
    let before = m.snapshot();
    for (from, to, mode, want) in cases {
        assert_eq!(
            kind(m.rename_with(from, to, *mode)),
            *want,
            "rename {from:?} -> {to:?} ({mode:?})"
        );
    }
    assert_eq!(m.snapshot(), before);
    let err = rename(&mut m, "nodir/x", "nodir2/y").unwrap_err();
    assert_eq!(err.path(), "nodir/x");
    let err = rename(&mut m, "file", "d/sub/x/y").unwrap_err();
    assert_eq!(
        (err.kind(), err.path().to_str().unwrap()),
        (NotADirectory, "d/sub/x/y")
    );
}

#[test]
fn rename_of_the_same_object_does_nothing() {
    let mut m = rename_tree(ViewOptions::default());
    let before = m.snapshot();
    rename(&mut m, "file", "file").unwrap();
    rename(&mut m, "file", "./e/../file").unwrap();
    // Same entry comes before EXDEV.
    rename(&mut m, "d", "d").unwrap();
    m.rename_with("d", "d/", RenameMode::Exchange).unwrap();
    assert_eq!(m.snapshot(), before);
    // Two names of one lower inode (Keep): nothing changes, no copy-up.
    let bottom = layer(|l| {
        l.add_file("d/h1", "h")?;
        l.add_hard_link("d/h1", "d/h2")?;
        l.add_dir("d/sub")
    });
    let mut m = model_with(vec![bottom.clone()], keep());
    let before = m.snapshot();
    rename(&mut m, "d/h1", "d/h2").unwrap();
    assert_eq!(m.snapshot(), before);
    assert_eq!(nlink(&m, "d"), 3);
    // With Break they are different identities: the rename happens.
    let mut m = model(vec![bottom]);
    rename(&mut m, "d/h1", "d/h2").unwrap();
    assert_eq!(names(&m, "d"), ["h2", "sub"]);
    assert_eq!(nlink(&m, "d/h2"), 1);
    assert_eq!(nlink(&m, "d"), 1);
    check_invariants(&m);
}

#[test]
fn rename_moves_and_replaces() {
    let mut m = rename_tree(ViewOptions::default());
    // A lower file: copied up and moved.
    rename(&mut m, "d/f", "u/f").unwrap();
    assert_eq!(text(&m, "u/f"), "d-f");
    assert_eq!(kind(m.metadata("d/f")), ErrorKind::NotFound);
    assert_eq!(nlink(&m, "d"), 1);
    // A pure-upper directory moves freely, over an empty directory.
    m.create_dir("target").unwrap();
    rename(&mut m, "u", "target").unwrap();
    assert_eq!(names(&m, "target"), ["f", "y"]);
    // A file replaces a file; a symlink moves itself.
    rename(&mut m, "file", "target/y").unwrap();
    assert_eq!(text(&m, "target/y"), "file");
    rename(&mut m, "link", "target/link").unwrap();
    assert_eq!(m.read_link("target/link").unwrap(), "e");
    // NoReplace to a free name.
    m.rename_with("target/f", "f2", RenameMode::NoReplace)
        .unwrap();
    assert_eq!(names(&m, "/"), ["d", "e", "empty", "f2", "target"]);
    check_invariants(&m);
}

#[test]
fn rename_exchange_swaps() {
    let mut m = rename_tree(ViewOptions::default());
    m.rename_with("file", "u", RenameMode::Exchange).unwrap();
    assert_eq!(text(&m, "u"), "file");
    assert_eq!(names(&m, "file"), ["y"]);
    m.rename_with("u", "empty/", RenameMode::Exchange).unwrap();
    assert_eq!(text(&m, "empty"), "file");
    assert!(names(&m, "u").is_empty());
    check_invariants(&m);
}

#[test]
fn directory_rename_exdev_versus_redirect() {
    let mut m = rename_tree(ViewOptions::default());
    assert_eq!(
        kind(rename(&mut m, "d", "moved")),
        ErrorKind::CrossesDevices
    );
    assert_eq!(
        kind(rename(&mut m, "e", "moved")),
        ErrorKind::CrossesDevices
    );
    rename(&mut m, "u", "moved").unwrap();

    let mut m = rename_tree(redirect());
    rename(&mut m, "d", "u/moved").unwrap();
    assert_eq!(names(&m, "u/moved"), ["f", "sub"]);
    assert_eq!(text(&m, "u/moved/sub/x"), "x");
    assert_eq!(kind(m.metadata("d")), ErrorKind::NotFound);
    // Copied up alone, keeping its lower part: a merged directory.
    assert_eq!(nlink(&m, "u/moved"), 1);
    // Its children stay in the lower layer.
    assert_eq!(nlink(&m, "u/moved/sub"), 2);
    m.rename_with("u/moved", "e", RenameMode::Exchange).unwrap();
    assert_eq!(names(&m, "e"), ["f", "sub"]);
    assert!(names(&m, "u/moved").is_empty());
    assert_eq!(nlink(&m, "u/moved"), 1);
    check_invariants(&m);
}

// ---- Extended attributes ----

#[test]
fn xattr_errors_in_order() {
    let bottom = layer(|l| {
        l.add_dir("d")?;
        l.add_file("d/f", "")?;
        l.add_symlink("s", "d/f")?;
        l.add_special("p", Metadata::new(FileType::Fifo))
    });
    let mut m = model(vec![bottom]);
    let long = format!("user.{}", "n".repeat(251));
    // The name's length comes before the path.
    assert_eq!(kind(m.get_xattr("missing", "")), ErrorKind::OutOfRange);
    assert_eq!(kind(m.get_xattr("missing", &long)), ErrorKind::OutOfRange);
    assert_eq!(
        kind(m.set_xattr("missing", &long, b"")),
        ErrorKind::OutOfRange
    );
    assert_eq!(kind(m.remove_xattr("missing", "")), ErrorKind::OutOfRange);
    // The value's size before the name.
    let big = vec![0u8; XATTR_SIZE_MAX + 1];
    assert_eq!(
        kind(m.set_xattr("missing", "", &big)),
        ErrorKind::ArgumentListTooLong
    );
    m.set_xattr("d/f", "user.max", &big[1..]).unwrap();
    // The namespace after the path.
    assert_eq!(kind(m.get_xattr("missing", "foo.x")), ErrorKind::NotFound);
    assert_eq!(kind(m.get_xattr("d", "foo.x")), ErrorKind::Unsupported);
    assert_eq!(
        kind(m.set_xattr("d", "user.", b"")),
        ErrorKind::InvalidInput
    );
    assert_eq!(kind(m.remove_xattr("d", "x")), ErrorKind::Unsupported);
    // `user.` only on files and directories.
    assert_eq!(kind(m.get_xattr("p", "user.a")), ErrorKind::NoData);
    assert_eq!(
        kind(m.set_xattr("p", "user.a", b"1")),
        ErrorKind::NotPermitted
    );
    assert_eq!(kind(m.remove_xattr("p", "user.a")), ErrorKind::NotPermitted);
    m.set_xattr("p", "trusted.a", b"1").unwrap();
    assert_eq!(&m.get_xattr("p", "trusted.a").unwrap()[..], b"1");
    // Symlinks are followed.
    m.set_xattr("s", "user.b", b"2").unwrap();
    m.set_xattr("d/f", "security.a", b"3").unwrap();
    assert_eq!(
        m.list_xattr("s").unwrap(),
        ["security.a", "user.b", "user.max"]
    );
    assert_eq!(kind(m.get_xattr("d/f", "user.none")), ErrorKind::NoData);
    m.set_xattr("d/f", "user.b", b"22").unwrap();
    assert_eq!(&m.get_xattr("d/f", "user.b").unwrap()[..], b"22");
    m.remove_xattr("d/f", "user.b").unwrap();
    assert_eq!(kind(m.remove_xattr("d/f", "user.b")), ErrorKind::NoData);
    assert_eq!(kind(m.list_xattr("missing")), ErrorKind::NotFound);
}

#[test]
fn removing_an_absent_xattr_does_not_copy_up() {
    let mut m = model(vec![layer(|l| l.add_dir("d/sub"))]);
    assert_eq!(nlink(&m, "d"), 3);
    assert_eq!(kind(m.remove_xattr("d", "user.x")), ErrorKind::NoData);
    assert_eq!(nlink(&m, "d"), 3);
    m.set_xattr("d", "user.x", b"").unwrap();
    assert_eq!(nlink(&m, "d"), 1);
    assert_eq!(
        m.metadata("d").unwrap().xattrs.get("user.x").unwrap().len(),
        0
    );
}

// ---- Link counts, hard links, commit ----

#[test]
fn directory_link_counts() {
    let top = layer(|l| l.add_dir("merged/a"));
    let bottom = layer(|l| {
        l.add_dir("merged/b")?;
        l.add_dir("single/x")?;
        l.add_dir("single/y")
    });
    let mut m = model(vec![top, bottom]);
    assert_eq!(nlink(&m, "merged"), 1);
    assert_eq!(nlink(&m, "single"), 4);
    m.create_dir("new").unwrap();
    m.create_dir("new/sub").unwrap();
    assert_eq!(nlink(&m, "new"), 3);
    // Creating in a single-layer lower directory copies it up.
    m.create_dir("single/z").unwrap();
    assert_eq!(nlink(&m, "single"), 1);
    // A directory created where a lower one was deleted has no lower part.
    m.remove_dir("merged/a").unwrap();
    m.remove_dir("merged/b").unwrap();
    m.remove_dir("merged").unwrap();
    m.create_dir("merged").unwrap();
    assert_eq!(nlink(&m, "merged"), 2);
    assert_eq!(
        m.dir(
            m.child(ROOT, Name::new("merged"))
                .map_or(ROOT, |c| match c {
                    Child::Dir(id) => id,
                    Child::Obj(_) => ROOT,
                })
        )
        .lower_layers,
        0
    );
}

fn linked_lower() -> MemLayer {
    layer(|l| {
        l.add_file("a", "x")?;
        l.add_hard_link("a", "b")?;
        l.add_hard_link("a", "hidden")
    })
}

#[test]
fn hard_links_break_on_copy_up_by_default() {
    let top = layer(|l| l.add_whiteout("hidden"));
    let mut m = model(vec![top, linked_lower()]);
    // The lower layer's count, whatever the view hides.
    assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (3, 3));
    m.write("a", b"new").unwrap();
    assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (1, 3));
    assert_eq!(text(&m, "b"), "x");
    m.hard_link("b", "c").unwrap();
    assert_eq!((nlink(&m, "b"), nlink(&m, "c")), (2, 2));
    m.remove_file("c").unwrap();
    assert_eq!(nlink(&m, "b"), 1);
    check_invariants(&m);
}

#[test]
fn hard_links_keep_links_every_visible_name() {
    let top = layer(|l| l.add_whiteout("hidden"));
    let mut m = model_with(vec![top, linked_lower()], keep());
    assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (3, 3));
    m.set_permissions("a", 0o600).unwrap();
    // Both visible names are linked in the upper.
    assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (2, 2));
    assert_eq!(m.metadata("b").unwrap().mode, 0o600);
    m.write("b", b"both").unwrap();
    assert_eq!(text(&m, "a"), "both");
    m.hard_link("a", "c").unwrap();
    assert_eq!(nlink(&m, "b"), 3);
    m.write("c", b"one").unwrap();
    m.remove_file("a").unwrap();
    assert_eq!((nlink(&m, "b"), nlink(&m, "c")), (2, 2));
    // Replacing one name drops it too.
    m.write("other", b"o").unwrap();
    rename(&mut m, "other", "b").unwrap();
    assert_eq!(nlink(&m, "c"), 1);
    check_invariants(&m);
}

#[test]
fn keep_removing_one_lower_name_keeps_the_lower_count() {
    let mut m = model_with(vec![linked_lower()], keep());
    m.remove_file("a").unwrap();
    assert_eq!(nlink(&m, "b"), 3);
    m.write_at("b", 0, b"y").unwrap();
    assert_eq!((nlink(&m, "b"), nlink(&m, "hidden")), (2, 2));
    assert_eq!(text(&m, "hidden"), "y");
}

#[test]
fn commit_changes_only_bookkeeping() {
    let bottom = layer(|l| l.add_dir("lower/sub"));
    let mut m = model(vec![bottom]);
    m.create_dir("d").unwrap();
    m.create_dir("d/sub").unwrap();
    m.write("lower/f", b"f").unwrap();
    assert_eq!(
        (nlink(&m, "d"), nlink(&m, "lower"), nlink(&m, "/")),
        (3, 1, 1)
    );
    let before = m.snapshot();
    m.commit();
    check_invariants(&m);
    assert_eq!(m.snapshot(), before);
    assert_eq!(m.dir(ROOT).lower_layers, 2);
    // `d` now has a lower part: EXDEV, and one link once copied up.
    assert_eq!(kind(rename(&mut m, "d", "e")), ErrorKind::CrossesDevices);
    m.write("d/f", b"").unwrap();
    assert_eq!(nlink(&m, "d"), 1);
    // `lower` merges two lower layers now.
    assert_eq!(nlink(&m, "lower"), 1);
    // Lower-only directories are unchanged.
    assert_eq!(nlink(&m, "lower/sub"), 2);
}

#[test]
fn commit_with_break_splits_upper_links() {
    let mut m = model(vec![]);
    m.write("a", b"x").unwrap();
    m.hard_link("a", "b").unwrap();
    m.commit();
    check_invariants(&m);
    assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (2, 2));
    // Different identities now: rename replaces, copy-up breaks.
    m.write("c", b"c").unwrap();
    m.hard_link("c", "c2").unwrap();
    m.write("a", b"new").unwrap();
    assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (1, 2));
    assert_eq!(text(&m, "b"), "x");
    rename(&mut m, "b", "c").unwrap();
    assert_eq!(nlink(&m, "c"), 1);
    assert_eq!(nlink(&m, "c2"), 1);
    check_invariants(&m);
}

#[test]
fn commit_with_keep_keeps_one_identity() {
    let mut m = model_with(vec![], keep());
    m.write("a", b"x").unwrap();
    m.hard_link("a", "b").unwrap();
    m.hard_link("a", "c").unwrap();
    m.commit();
    check_invariants(&m);
    let before = m.snapshot();
    rename(&mut m, "a", "b").unwrap();
    assert_eq!(m.snapshot(), before);
    m.remove_file("c").unwrap();
    assert_eq!(nlink(&m, "a"), 3);
    m.write("a", b"y").unwrap();
    assert_eq!((nlink(&m, "a"), nlink(&m, "b")), (2, 2));
    assert_eq!(text(&m, "b"), "y");
}

#[test]
fn snapshot_shows_everything_but_times_and_inodes() {
    let bottom = layer(|l| {
        l.add_file_with(
            "d/f",
            "data",
            Metadata::new(FileType::File)
                .with_mode(0o640)
                .with_owner(1, 2),
        )?;
        l.add_symlink("s", "d/f")
    });
    let mut m = model(vec![bottom]);
    m.set_xattr("d/f", "user.b", b"2").unwrap();
    m.set_xattr("d/f", "user.a", b"1").unwrap();
    let snap = m.snapshot();
    assert_eq!(
        snap.keys().map(|p| p.to_str().unwrap()).collect::<Vec<_>>(),
        ["", "d", "d/f", "s"]
    );
    assert_eq!(
        snap[&p("d/f")],
        SnapshotEntry {
            meta: MetadataSummary {
                file_type: FileType::File,
                mode: 0o640,
                uid: 1,
                gid: 2,
                size: 4,
                nlink: 1,
                rdev: 0,
                xattrs: vec![
                    ("user.a".to_owned(), b"1".to_vec()),
                    ("user.b".to_owned(), b"2".to_vec()),
                ],
            },
            data: Bytes::from_static(b"data"),
            target: NameBuf::new(),
        }
    );
    assert_eq!(
        snap[&p("")],
        SnapshotEntry {
            meta: MetadataSummary {
                file_type: FileType::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                nlink: 1,
                rdev: 0,
                xattrs: vec![],
            },
            data: Bytes::new(),
            target: NameBuf::new(),
        }
    );
    let meta = m.metadata("s").unwrap();
    assert_eq!((meta.ino, meta.mtime), (0, Timestamp::EPOCH));
}

// ---- Random sequences: no panic, invariants hold ----

#[derive(Debug, Clone)]
enum Op {
    Write(usize, Vec<u8>),
    WriteAt(usize, u64),
    SetLen(usize, u64),
    CreateDir(usize),
    CreateDirAll(usize),
    RemoveFile(usize),
    RemoveDir(usize),
    RemoveDirAll(usize),
    Rename(usize, usize, u8),
    Symlink(usize, usize),
    HardLink(usize, usize),
    SetXattr(usize),
    Mknod(usize),
    Open(usize, u8),
    Commit,
}

const PATHS: &[&str] = &[
    "a", "a/b", "b", "l", "l/x", "a/../b", "/", "..", "a/", "b/c/d", "lf", "x",
];

fn op() -> impl Strategy<Value = Op> {
    let i = || 0..PATHS.len();
    prop_oneof![
        (i(), proptest::collection::vec(any::<u8>(), 0..4)).prop_map(|(p, d)| Op::Write(p, d)),
        (i(), 0u64..10).prop_map(|(p, o)| Op::WriteAt(p, o)),
        (i(), 0u64..10).prop_map(|(p, n)| Op::SetLen(p, n)),
        i().prop_map(Op::CreateDir),
        i().prop_map(Op::CreateDirAll),
        i().prop_map(Op::RemoveFile),
        i().prop_map(Op::RemoveDir),
        i().prop_map(Op::RemoveDirAll),
        (i(), i(), 0u8..3).prop_map(|(a, b, m)| Op::Rename(a, b, m)),
        (i(), i()).prop_map(|(a, b)| Op::Symlink(a, b)),
        (i(), i()).prop_map(|(a, b)| Op::HardLink(a, b)),
        i().prop_map(Op::SetXattr),
        i().prop_map(Op::Mknod),
        (i(), 0u8..6).prop_map(|(p, o)| Op::Open(p, o)),
        Just(Op::Commit),
    ]
}

fn apply(m: &mut Model, op: &Op) {
    let _ = match op {
        Op::Write(p, d) => m.write(PATHS[*p], d),
        Op::WriteAt(p, o) => m.write_at(PATHS[*p], *o, b"w"),
        Op::SetLen(p, n) => m.set_len(PATHS[*p], *n),
        Op::CreateDir(p) => m.create_dir(PATHS[*p]),
        Op::CreateDirAll(p) => m.create_dir_all(PATHS[*p]),
        Op::RemoveFile(p) => m.remove_file(PATHS[*p]),
        Op::RemoveDir(p) => m.remove_dir(PATHS[*p]),
        Op::RemoveDirAll(p) => m.remove_dir_all(PATHS[*p]),
        Op::Rename(a, b, mode) => {
            let mode = [
                RenameMode::Replace,
                RenameMode::NoReplace,
                RenameMode::Exchange,
            ][usize::from(*mode)];
            m.rename_with(PATHS[*a], PATHS[*b], mode)
        }
        Op::Symlink(t, l) => m.symlink(PATHS[*t], PATHS[*l]),
        Op::HardLink(a, b) => m.hard_link(PATHS[*a], PATHS[*b]),
        Op::SetXattr(p) => m.set_xattr(PATHS[*p], "user.k", b"v"),
        Op::Mknod(p) => m.mknod(PATHS[*p], FileType::Fifo, 0o644, 0),
        Op::Open(p, o) => {
            let mut options = OpenOptions::new();
            options
                .read(o & 1 != 0)
                .write(o & 2 != 0)
                .create(o & 4 != 0);
            m.open(PATHS[*p], &options)
        }
        Op::Commit => {
            m.commit();
            Ok(())
        }
    };
}

proptest! {
    #[test]
    fn random_sequences_keep_the_invariants(
        ops in proptest::collection::vec(op(), 0..40),
        keep_links in any::<bool>(),
        redirect_dirs in any::<bool>(),
    ) {
        let bottom = layer(|l| {
            l.add_file("a/b", "ab")?;
            l.add_hard_link("a/b", "x")?;
            l.add_symlink("l", "a")?;
            l.add_symlink("lf", "x")
        });
        let mut options = ViewOptions::default();
        if keep_links {
            options = options.hard_links(HardLinkCopyUp::Keep);
        }
        if redirect_dirs {
            options = options.dir_rename(DirRename::Redirect);
        }
        let mut m = model_with(vec![bottom], options);
        for op in &ops {
            apply(&mut m, op);
            check_invariants(&m);
            let snapshot = m.snapshot();
            // Every identity shows the same link count under each name,
            // and the count is at least the number of visible names
            // once it is in the upper.
            for (path, entry) in &snapshot {
                let meta = m.symlink_metadata(if path.is_root() { b"/".as_slice() } else { path.as_bytes() }).unwrap();
                prop_assert_eq!(meta.nlink, entry.meta.nlink);
                prop_assert_eq!(meta.size, entry.meta.size);
            }
        }
    }
}
