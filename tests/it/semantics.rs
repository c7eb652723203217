//! One named test per rule of the merged view's semantics (DESIGN §2) and
//! per known bug class of peers (fuse-overlayfs, rust-vfs, composefs).

use std::io::{Read, Write};
use std::sync::Arc;

use layerstack::merged::{DirRename, HardLinkCopyUp, OpenOptions, RenameMode};
use layerstack::merged::{LayerSource, ViewOptions};
use layerstack::{
    Entry, ErrorKind, FileType, Layer, LayerMut, LayerPath, MemLayer, MergedView, Metadata,
    NameBuf, Timestamp, layer::Redirect, layer::walk,
};

fn stack(layers: Vec<MemLayer>) -> Vec<Arc<dyn Layer>> {
    layers
        .into_iter()
        .map(|l| Arc::new(l) as Arc<dyn Layer>)
        .collect()
}

fn view(layers: Vec<MemLayer>) -> MergedView {
    MergedView::new(stack(layers), MemLayer::new()).unwrap()
}

fn view_with(layers: Vec<MemLayer>, options: ViewOptions) -> MergedView {
    MergedView::with_options(stack(layers), MemLayer::new(), options).unwrap()
}

fn layer(build: impl FnOnce(&mut MemLayer) -> layerstack::Result<()>) -> MemLayer {
    let mut l = MemLayer::new();
    build(&mut l).unwrap();
    l
}

fn names(v: &MergedView, dir: &str) -> Vec<NameBuf> {
    v.read_dir(dir)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

fn kind<T: std::fmt::Debug>(r: layerstack::Result<T>) -> ErrorKind {
    r.unwrap_err().kind()
}

fn p(s: &str) -> LayerPath {
    LayerPath::new(s).unwrap()
}

/// What the upper holds, as (path, "whiteout" | "opaque dir" | "dir" | type).
fn upper(v: &MergedView) -> Vec<(String, String)> {
    v.changes()
        .unwrap()
        .into_iter()
        .map(|(path, e)| {
            let what = match e {
                Entry::Whiteout => "whiteout".to_owned(),
                Entry::Node(n) if n.opaque => "opaque dir".to_owned(),
                Entry::Node(n) if n.redirect.is_some() => {
                    format!("dir -> {}", n.redirect.unwrap())
                }
                Entry::Node(n) => format!("{:?}", n.meta.file_type),
            };
            (path.to_string(), what)
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

// ----- lookup -----

#[test]
fn non_directory_in_higher_layer_hides_everything_below() {
    let top = layer(|l| l.add_file("a", "top"));
    let bottom = layer(|l| l.add_file("a/x", "below"));
    let v = view(vec![top, bottom]);
    assert_eq!(v.metadata("a").unwrap().file_type, FileType::File);
    assert_eq!(v.read("a").unwrap(), "top");
    assert_eq!(kind(v.metadata("a/x")), ErrorKind::NotADirectory);
}

#[test]
fn same_name_directories_merge_upper_first() {
    let top = layer(|l| {
        l.add_file("d/x", "1")?;
        l.add_file("d/both", "top")
    });
    let bottom = layer(|l| {
        l.add_file("d/y", "2")?;
        l.add_file("d/both", "bottom")
    });
    let v = view(vec![top, bottom]);
    let listing: Vec<(NameBuf, LayerSource)> = v
        .read_dir("d")
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.source))
        .collect();
    assert_eq!(
        listing,
        vec![
            (NameBuf::from("both"), LayerSource::Lower(0)),
            (NameBuf::from("x"), LayerSource::Lower(0)),
            (NameBuf::from("y"), LayerSource::Lower(1)),
        ]
    );
    assert_eq!(v.read("d/both").unwrap(), "top");
}

#[test]
fn opaque_directory_in_middle_layer_hides_only_what_is_below() {
    let top = layer(|l| l.add_file("d/top", ""));
    let middle = layer(|l| {
        l.add_opaque_dir("d")?;
        l.add_file("d/mid", "")
    });
    let bottom = layer(|l| l.add_file("d/bottom", ""));
    let v = view(vec![top, middle, bottom]);
    assert_eq!(names(&v, "d"), ["mid", "top"]);
    assert_eq!(kind(v.metadata("d/bottom")), ErrorKind::NotFound);
}

#[test]
fn whiteout_hides_only_layers_below_it() {
    let top = layer(|l| l.add_file("f", "top"));
    let middle = layer(|l| l.add_whiteout("f"));
    let bottom = layer(|l| l.add_file("f", "bottom"));
    let v = view(vec![top, middle.clone(), bottom.clone()]);
    assert_eq!(v.read("f").unwrap(), "top");
    let v = view(vec![middle, bottom]);
    assert_eq!(kind(v.metadata("f")), ErrorKind::NotFound);
}

#[test]
fn whiteout_matches_its_full_path_only() {
    let top = layer(|l| l.add_whiteout("x"));
    let bottom = layer(|l| {
        l.add_file("x", "")?;
        l.add_file("sub/x", "kept")
    });
    let v = view(vec![top, bottom]);
    assert_eq!(kind(v.metadata("x")), ErrorKind::NotFound);
    assert_eq!(v.read("sub/x").unwrap(), "kept");
    assert_eq!(names(&v, "/"), ["sub"]);
}

#[test]
fn child_of_deleted_directory_read_by_full_path_is_enoent() {
    let base = layer(|l| l.add_file("d/f", "x"));
    let v = view(vec![base.clone()]);
    v.remove_dir_all("d").unwrap();
    assert_eq!(kind(v.metadata("d/f")), ErrorKind::NotFound);
    assert_eq!(kind(v.read("d/f")), ErrorKind::NotFound);
    // The same through a whiteout in a lower layer.
    let deleted = layer(|l| l.add_whiteout("d"));
    let v = view(vec![deleted, base]);
    assert_eq!(kind(v.metadata("d/f")), ErrorKind::NotFound);
}

#[test]
fn bookkeeping_never_shows_in_listings() {
    let base = layer(|l| {
        l.add_file("d/a", "")?;
        l.add_file("d/b", "")?;
        l.add_dir("d/c")
    });
    let v = view(vec![base]);
    v.remove_file("d/a").unwrap();
    v.remove_dir("d/c").unwrap();
    assert_eq!(names(&v, "d"), ["b"]);
    v.remove_file("d/b").unwrap();
    assert!(names(&v, "d").is_empty());
    // The upper holds three whiteouts that no listing shows.
    assert_eq!(
        upper(&v),
        pairs(&[
            ("d", "Dir"),
            ("d/a", "whiteout"),
            ("d/b", "whiteout"),
            ("d/c", "whiteout")
        ])
    );
    assert_eq!(v.metadata("d").unwrap().nlink, 1);
}

#[test]
fn merged_directory_reports_one_link_and_single_layer_ones_count_subdirectories() {
    let top = layer(|l| l.add_dir("m/x"));
    let bottom = layer(|l| {
        l.add_dir("m/y")?;
        l.add_dir("single/a")?;
        l.add_dir("single/b")
    });
    let v = view(vec![top, bottom]);
    assert_eq!(v.metadata("m").unwrap().nlink, 1);
    assert_eq!(v.metadata("single").unwrap().nlink, 4);
    assert_eq!(v.metadata("/").unwrap().nlink, 1);
}

// ----- copy-up -----

#[test]
fn copy_up_keeps_mode_owner_times_xattrs_and_inode() {
    let t = Timestamp::new(1_000_000, 5);
    let mut meta = Metadata::new(FileType::File)
        .with_mode(0o4755)
        .with_owner(1000, 100)
        .with_times(t);
    meta.xattrs.insert("user.tag", "v");
    let base = layer(|l| l.add_file_with("bin/tool", "#!", meta));
    let v = view(vec![base]);
    let before = v.metadata("bin/tool").unwrap();
    v.append("bin/tool", "x").unwrap();
    let after = v.metadata("bin/tool").unwrap();
    assert_eq!(after.mode, 0o4755);
    assert_eq!((after.uid, after.gid), (1000, 100));
    assert_eq!(after.atime, t);
    assert_eq!(after.xattrs, before.xattrs);
    assert_eq!(after.ino, before.ino, "st_ino stays across copy-up");
    assert_eq!(v.read("bin/tool").unwrap(), "#!x");
}

#[test]
fn copy_up_creates_parents_first_with_their_metadata() {
    let base = layer(|l| {
        l.add_dir_with(
            "a",
            Metadata::new(FileType::Dir)
                .with_mode(0o700)
                .with_owner(5, 6),
        )?;
        l.add_dir_with("a/b", Metadata::new(FileType::Dir).with_mode(0o750))?;
        l.add_file("a/b/f", "old")
    });
    let v = view(vec![base]);
    v.write("a/b/f", "new").unwrap();
    v.with_upper(|u| {
        let a = u.lookup(&p("a")).unwrap().unwrap();
        let a = a.node().unwrap();
        assert_eq!((a.meta.mode, a.meta.uid, a.meta.gid), (0o700, 5, 6));
        let b = u.lookup(&p("a/b")).unwrap().unwrap();
        assert_eq!(b.node().unwrap().meta.mode, 0o750);
        assert!(!b.node().unwrap().opaque);
    });
    assert_eq!(
        upper(&v),
        pairs(&[("a", "Dir"), ("a/b", "Dir"), ("a/b/f", "File")])
    );
}

#[test]
fn open_for_write_copies_up_even_without_writing_and_open_for_read_never() {
    let base = layer(|l| l.add_file("f", "data"));
    let v = view(vec![base]);
    let mut s = String::new();
    v.open("f", OpenOptions::new().read(true))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "data");
    assert!(upper(&v).is_empty());
    drop(v.open("f", OpenOptions::new().write(true)).unwrap());
    assert_eq!(upper(&v), pairs(&[("f", "File")]));
    assert_eq!(v.read("f").unwrap(), "data");
}

#[test]
fn metadata_changes_copy_up_but_removing_a_missing_xattr_does_not() {
    let base = layer(|l| {
        l.add_file("a", "")?;
        l.add_file("b", "")?;
        l.add_file("c", "")?;
        l.add_file("d", "")?;
        l.add_file("e", "")
    });
    let v = view(vec![base]);
    assert_eq!(kind(v.remove_xattr("e", "user.none")), ErrorKind::NoData);
    assert!(upper(&v).is_empty());
    v.set_permissions("a", 0o600).unwrap();
    v.set_owner("b", Some(7), None).unwrap();
    v.set_times("c", None, Some(Timestamp::new(5, 0))).unwrap();
    v.set_xattr("d", "user.k", "v").unwrap();
    assert_eq!(
        upper(&v),
        pairs(&[("a", "File"), ("b", "File"), ("c", "File"), ("d", "File")])
    );
    assert_eq!(v.metadata("a").unwrap().mode, 0o600);
    assert_eq!(v.metadata("b").unwrap().uid, 7);
    assert_eq!(v.metadata("c").unwrap().mtime, Timestamp::new(5, 0));
    assert_eq!(v.get_xattr("d", "user.k").unwrap(), "v");
}

#[test]
fn small_write_into_large_lower_file_shares_the_rest() {
    let base = layer(|l| l.add_file("big", vec![b'a'; 1 << 20]));
    let v = view(vec![base]);
    v.write_at("big", 10, "Z").unwrap();
    let data = v.read_at("big", 8, 4).unwrap();
    assert_eq!(data, "aaZa");
    assert_eq!(v.metadata("big").unwrap().size, 1 << 20);
}

// ----- deletion -----

#[test]
fn deleting_an_upper_only_object_leaves_no_whiteout() {
    let v = view(vec![MemLayer::new()]);
    v.write("new", "x").unwrap();
    v.create_dir("dir").unwrap();
    v.remove_file("new").unwrap();
    v.remove_dir("dir").unwrap();
    assert!(upper(&v).is_empty());
}

#[test]
fn removing_a_file_that_was_already_copied_up_still_leaves_a_whiteout() {
    let base = layer(|l| l.add_file("f", "x"));
    let v = view(vec![base]);
    v.write("f", "changed").unwrap();
    v.remove_file("f").unwrap();
    assert_eq!(kind(v.metadata("f")), ErrorKind::NotFound);
    assert_eq!(upper(&v), pairs(&[("f", "whiteout")]));
}

#[test]
fn rmdir_of_merged_directory_with_lower_entries_is_enotempty() {
    let base = layer(|l| l.add_file("d/f", ""));
    let v = view(vec![base]);
    v.write("d/new", "").unwrap();
    v.remove_file("d/new").unwrap();
    assert_eq!(kind(v.remove_dir("d")), ErrorKind::DirectoryNotEmpty);
    v.remove_file("d/f").unwrap();
    v.remove_dir("d").unwrap();
    assert_eq!(upper(&v), pairs(&[("d", "whiteout")]));
}

// ----- re-creation -----

#[test]
fn file_created_over_a_whiteout_replaces_it() {
    let base = layer(|l| l.add_file("f", "old"));
    let v = view(vec![base]);
    v.remove_file("f").unwrap();
    v.write("f", "new").unwrap();
    assert_eq!(v.read("f").unwrap(), "new");
    assert_eq!(upper(&v), pairs(&[("f", "File")]));
}

#[test]
fn deleted_then_recreated_directory_lists_empty() {
    let base = layer(|l| {
        l.add_file("d/a", "")?;
        l.add_file("d/sub/b", "")
    });
    let v = view(vec![base]);
    v.remove_dir_all("d").unwrap();
    v.create_dir("d").unwrap();
    assert!(names(&v, "d").is_empty());
    assert_eq!(kind(v.metadata("d/sub/b")), ErrorKind::NotFound);
    assert_eq!(upper(&v), pairs(&[("d", "opaque dir")]));
    // Committing keeps it that way.
    v.commit().unwrap();
    assert!(names(&v, "d").is_empty());
}

#[test]
fn new_directory_without_a_whiteout_is_not_opaque() {
    let v = view(vec![layer(|l| l.add_file("other", ""))]);
    v.create_dir_all("x/y").unwrap();
    assert_eq!(upper(&v), pairs(&[("x", "Dir"), ("x/y", "Dir")]));
}

// ----- rename -----

#[test]
fn rename_of_a_file_copies_it_up_and_whites_out_the_source() {
    let base = layer(|l| l.add_file("a", "data"));
    let v = view(vec![base]);
    v.rename("a", "b").unwrap();
    assert_eq!(v.read("b").unwrap(), "data");
    assert_eq!(kind(v.metadata("a")), ErrorKind::NotFound);
    assert_eq!(upper(&v), pairs(&[("a", "whiteout"), ("b", "File")]));
}

#[test]
fn rename_of_a_lower_directory_is_exdev_by_default() {
    let base = layer(|l| l.add_file("d/f", ""));
    let v = view(vec![base]);
    assert_eq!(kind(v.rename("d", "e")), ErrorKind::CrossesDevices);
    assert!(upper(&v).is_empty());
}

#[test]
fn rename_of_a_lower_directory_with_redirect_records_where_it_came_from() {
    let base = layer(|l| {
        l.add_file("d/f", "x")?;
        l.add_file("other/g", "")
    });
    let v = view_with(
        vec![base],
        ViewOptions::default().dir_rename(DirRename::Redirect),
    );
    v.rename("d", "other/e").unwrap();
    assert_eq!(v.read("other/e/f").unwrap(), "x");
    assert_eq!(kind(v.metadata("d")), ErrorKind::NotFound);
    assert_eq!(names(&v, "other"), ["e", "g"]);
    assert_eq!(
        upper(&v),
        pairs(&[
            ("d", "whiteout"),
            ("other", "Dir"),
            ("other/e", "dir -> /d")
        ])
    );
    // Committed and renamed again, it still finds its contents.
    v.commit().unwrap();
    v.rename("other/e", "z").unwrap();
    assert_eq!(v.read("z/f").unwrap(), "x");
    assert_eq!(names(&v, "/"), ["other", "z"]);
}

/// A redirect that shows one lower directory at two merged paths (one the
/// kernel never writes: its old name is not hidden) makes every file below
/// it show at two paths. Each path is its own object, in the view and in
/// the model alike, index or not: renaming one name onto the other moves it
/// (the kernel, which binds both names to one overlay inode, does nothing
/// there, and its later answers depend on its caches; such stacks are left
/// out of the kernel tests). Found by the state machine: with the index
/// on, the view took the two names for one object and the model did not.
#[test]
fn a_lower_file_two_redirected_paths_show_is_two_objects() {
    let top = layer(|l| {
        l.add_dir("a")?;
        l.set_redirect(&p("a"), Some(Redirect::parse("/b")))
    });
    let base = layer(|l| {
        l.add_file("b/f", "x")?;
        l.add_file("b/g", "y")
    });
    for links in [HardLinkCopyUp::Keep, HardLinkCopyUp::Break] {
        let options = ViewOptions::default()
            .dir_rename(DirRename::Redirect)
            .hard_links(links);
        let lowers = stack(vec![top.clone(), base.clone()]);
        let mut model = layerstack::model::Model::from_layers(&lowers, options).unwrap();
        let v = view_with(vec![top.clone(), base.clone()], options);
        assert_eq!(names(&v, "a"), ["f", "g"], "{links:?}");
        v.rename("b/f", "a/f").unwrap();
        model
            .rename_with("b/f", "a/f", RenameMode::Replace)
            .unwrap();
        assert_eq!(names(&v, "a"), ["f", "g"], "{links:?}");
        assert_eq!(names(&v, "b"), ["g"], "{links:?}");
        assert_eq!(v.read("a/f").unwrap(), "x", "{links:?}");
        let model_names = |dir: &str| -> Vec<NameBuf> {
            model
                .read_dir(dir)
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(model_names("a"), ["f", "g"], "{links:?}");
        assert_eq!(model_names("b"), ["g"], "{links:?}");
        assert_eq!(
            upper(&v),
            pairs(&[
                ("a", "Dir"),
                ("a/f", "File"),
                ("b", "Dir"),
                ("b/f", "whiteout")
            ]),
            "{links:?}"
        );
    }
}

/// The kernel's `ovl_set_redirect`: a rename within one directory records
/// the old name (relative), across directories an absolute path; a
/// directory renamed again within its directory keeps its redirect.
#[test]
fn redirects_are_relative_within_a_directory_and_absolute_across() {
    let base = layer(|l| l.add_file("p/d/f", "x"));
    let v = view_with(
        vec![base],
        ViewOptions::default().dir_rename(DirRename::Redirect),
    );
    v.rename("p/d", "p/e").unwrap();
    assert_eq!(
        upper(&v),
        pairs(&[("p", "Dir"), ("p/d", "whiteout"), ("p/e", "dir -> d")])
    );
    v.rename("p/e", "p/g").unwrap();
    assert_eq!(
        upper(&v),
        pairs(&[("p", "Dir"), ("p/d", "whiteout"), ("p/g", "dir -> d")])
    );
    v.rename("p/g", "h").unwrap();
    assert_eq!(
        upper(&v),
        pairs(&[("h", "dir -> /p/d"), ("p", "Dir"), ("p/d", "whiteout")])
    );
    assert_eq!(v.read("h/f").unwrap(), "x");
}

#[test]
fn pure_upper_directory_renames_freely_and_hides_lower_names_at_its_target() {
    let base = layer(|l| l.add_file("t/old", ""));
    let v = view(vec![base]);
    v.create_dir("n").unwrap();
    v.write("n/new", "").unwrap();
    v.remove_file("t/old").unwrap();
    v.rename("n", "t").unwrap();
    assert_eq!(names(&v, "t"), ["new"]);
}

#[test]
fn rename_flags_and_type_errors() {
    let base = layer(|l| {
        l.add_file("f", "1")?;
        l.add_file("g", "2")?;
        l.add_file("full/x", "")?;
        l.add_dir("empty")
    });
    let v = view(vec![base]);
    assert_eq!(
        kind(v.rename_with("f", "g", RenameMode::NoReplace)),
        ErrorKind::AlreadyExists
    );
    assert_eq!(kind(v.rename("f", "empty")), ErrorKind::IsADirectory);
    v.create_dir("mine").unwrap();
    assert_eq!(kind(v.rename("mine", "full")), ErrorKind::DirectoryNotEmpty);
    assert_eq!(kind(v.rename("mine", "f")), ErrorKind::NotADirectory);
    assert_eq!(kind(v.rename("mine", "mine/sub")), ErrorKind::InvalidInput);
    v.rename_with("f", "g", RenameMode::Exchange).unwrap();
    assert_eq!(v.read("f").unwrap(), "2");
    assert_eq!(v.read("g").unwrap(), "1");
    v.rename("mine", "empty").unwrap();
    assert!(names(&v, "empty").is_empty());
    assert_eq!(
        kind(v.rename_with("f", "nothing", RenameMode::Exchange)),
        ErrorKind::NotFound
    );
}

// ----- hard links -----

#[test]
fn hard_link_to_a_lower_file_copies_it_up_and_links_in_the_upper() {
    let base = layer(|l| l.add_file("a", "x"));
    let v = view(vec![base]);
    v.hard_link("a", "b").unwrap();
    assert_eq!(v.metadata("a").unwrap().nlink, 2);
    v.append("b", "y").unwrap();
    assert_eq!(v.read("a").unwrap(), "xy");
    assert_eq!(v.metadata("a").unwrap().ino, v.metadata("b").unwrap().ino);
    assert_eq!(kind(v.hard_link("/", "c")), ErrorKind::NotPermitted);
}

#[test]
fn copy_up_breaks_lower_hard_links_by_default_and_keeps_them_on_request() {
    let base = layer(|l| {
        l.add_file("a", "x")?;
        l.add_hard_link("a", "dir/b")
    });
    let v = view(vec![base.clone()]);
    assert_eq!(v.metadata("dir/b").unwrap().nlink, 2);
    v.append("a", "1").unwrap();
    assert_eq!(v.read("dir/b").unwrap(), "x");
    assert_eq!(v.metadata("a").unwrap().nlink, 1);
    assert_eq!(v.metadata("dir/b").unwrap().nlink, 2);

    let v = view_with(
        vec![base],
        ViewOptions::default().hard_links(HardLinkCopyUp::Keep),
    );
    v.append("a", "1").unwrap();
    assert_eq!(v.read("dir/b").unwrap(), "x1");
    assert_eq!(v.metadata("dir/b").unwrap().nlink, 2);
}

#[test]
fn unlinking_or_replacing_one_name_changes_the_ctime_of_the_others() {
    // As on a filesystem, where the names are one inode: its link count
    // and ctime change. A disk upper gets this from the host; the view
    // sets it for an upper in memory.
    let v = view(vec![]);
    v.write("a", "x").unwrap();
    v.hard_link("a", "b").unwrap();
    let before = v.metadata("b").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    v.remove_file("a").unwrap();
    let after = v.metadata("b").unwrap();
    assert_eq!((before.nlink, after.nlink), (2, 1));
    assert!(
        after.ctime > before.ctime,
        "ctime {:?} after the unlink, {:?} before",
        after.ctime,
        before.ctime
    );
    assert_eq!(after.mtime, before.mtime, "the data did not change");
    assert_eq!(v.read("b").unwrap(), "x");
    // A rename over one name of a linked file: the same for the others.
    v.hard_link("b", "c").unwrap();
    v.write("d", "y").unwrap();
    let before = v.metadata("c").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    v.rename("d", "b").unwrap();
    let after = v.metadata("c").unwrap();
    assert_eq!((before.nlink, after.nlink), (2, 1));
    assert!(after.ctime > before.ctime, "after a rename over a name");
    assert_eq!(v.read("c").unwrap(), "x");
}

#[test]
fn sync_dir_syncs_directories_and_refuses_files() {
    let base = layer(|l| {
        l.add_file("low/f", "x")?;
        l.add_file("g", "y")
    });
    let v = view(vec![base]);
    v.create_dir("up").unwrap();
    v.sync_dir("up").unwrap();
    v.sync_dir("low").unwrap();
    v.sync_dir("/").unwrap();
    assert_eq!(kind(v.sync_dir("g")), ErrorKind::NotADirectory);
    assert_eq!(kind(v.sync_dir("none")), ErrorKind::NotFound);
}

// ----- symlinks -----

#[test]
fn symlinks_resolve_inside_the_merged_root() {
    let base = layer(|l| {
        l.add_file("etc/passwd", "inside")?;
        l.add_symlink("abs", "/etc/passwd")?;
        l.add_symlink("up", "../../../../etc/passwd")?;
        l.add_symlink("dirlink", "etc")
    });
    let v = view(vec![base]);
    assert_eq!(v.read("abs").unwrap(), "inside");
    assert_eq!(v.read("up").unwrap(), "inside");
    assert_eq!(v.read("dirlink/passwd").unwrap(), "inside");
    assert_eq!(v.read("/../../etc/./passwd").unwrap(), "inside");
    assert_eq!(v.read_link("abs").unwrap(), "/etc/passwd");
    assert_eq!(
        v.symlink_metadata("abs").unwrap().file_type,
        FileType::Symlink
    );
}

#[test]
fn more_than_forty_symlinks_is_eloop() {
    let base = layer(|l| {
        l.add_symlink("self", "self")?;
        l.add_file("end", "ok")?;
        l.add_symlink("l0", "end")?;
        for i in 1..=40 {
            l.add_symlink(format!("l{i}"), format!("l{}", i - 1))?;
        }
        Ok(())
    });
    let v = view(vec![base]);
    assert_eq!(kind(v.read("self")), ErrorKind::FilesystemLoop);
    assert_eq!(v.read("l39").unwrap(), "ok");
    assert_eq!(kind(v.read("l40")), ErrorKind::FilesystemLoop);
}

#[test]
fn writing_through_a_dangling_symlink_creates_its_target_in_the_view() {
    let base = layer(|l| {
        l.add_dir("d")?;
        l.add_symlink("link", "/d/target")
    });
    let v = view(vec![base]);
    v.write("link", "made").unwrap();
    assert_eq!(v.read("d/target").unwrap(), "made");
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    assert_eq!(kind(v.open("link", &o)), ErrorKind::AlreadyExists);
}

// ----- special files and errors -----

#[test]
fn mknod_of_the_whiteout_device_is_refused() {
    let v = view(vec![]);
    assert_eq!(
        kind(v.mknod("w", FileType::CharDevice, 0o644, 0)),
        ErrorKind::NotPermitted
    );
    v.mknod(
        "null",
        FileType::CharDevice,
        0o666,
        layerstack::makedev(1, 3),
    )
    .unwrap();
    v.mknod("pipe", FileType::Fifo, 0o644, 0).unwrap();
    let m = v.metadata("null").unwrap();
    assert_eq!(
        (m.file_type, m.mode, m.rdev),
        (FileType::CharDevice, 0o644, 0x103)
    );
    assert_eq!(kind(v.read("pipe")), ErrorKind::InvalidInput);
}

#[test]
fn path_errors_match_the_kernel() {
    let v = view(vec![layer(|l| l.add_file("f", ""))]);
    assert_eq!(kind(v.metadata("")), ErrorKind::NotFound);
    assert_eq!(kind(v.metadata("a\0b")), ErrorKind::InvalidInput);
    assert_eq!(kind(v.metadata("x".repeat(256))), ErrorKind::NameTooLong);
    assert_eq!(kind(v.metadata("f/x")), ErrorKind::NotADirectory);
    assert_eq!(kind(v.metadata("f/")), ErrorKind::NotADirectory);
    assert_eq!(kind(v.remove_dir("/")), ErrorKind::Busy);
    assert_eq!(kind(v.create_dir("/")), ErrorKind::AlreadyExists);
    assert_eq!(kind(v.read_link("f")), ErrorKind::InvalidInput);
}

// ----- layers -----

#[test]
fn lower_layers_are_never_modified() {
    let base = layer(|l| {
        l.add_file("a/f", "1")?;
        l.add_file("b", "2")?;
        l.add_symlink("s", "a")
    });
    let before = walk(&base).unwrap();
    let lower: Arc<dyn Layer> = Arc::new(base);
    let v = MergedView::with_options(
        vec![lower.clone()],
        MemLayer::new(),
        ViewOptions::default().dir_rename(DirRename::Redirect),
    )
    .unwrap();
    v.write("a/f", "changed").unwrap();
    v.remove_file("b").unwrap();
    v.set_permissions("s", 0o700).unwrap();
    v.rename("a", "c").unwrap();
    assert_eq!(kind(v.metadata("s")), ErrorKind::NotFound, "s now dangles");
    assert_eq!(walk(&*lower).unwrap(), before);
    assert_eq!(v.read("c/f").unwrap(), "changed");
}

#[test]
fn commit_freezes_the_upper_and_starts_an_empty_one() {
    let v = view(vec![layer(|l| l.add_file("base", "b"))]);
    v.write("one", "1").unwrap();
    v.commit().unwrap();
    assert!(upper(&v).is_empty());
    assert_eq!(v.layers().len(), 2);
    v.remove_file("one").unwrap();
    assert_eq!(upper(&v), pairs(&[("one", "whiteout")]));
    let committed = &v.layers()[0];
    assert!(committed.lookup(&p("one")).unwrap().is_some());
    let listing = v.read_dir("/").unwrap();
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0].source, LayerSource::Lower(1));
}

#[test]
fn five_hundred_layers_resolve() {
    let layers: Vec<MemLayer> = (0..500)
        .map(|i| layer(|l| l.add_file(format!("d/f{i}"), i.to_string())))
        .collect();
    let v = view(layers);
    assert_eq!(v.read_dir("d").unwrap().len(), 500);
    assert_eq!(v.read("d/f499").unwrap(), "499");
    assert_eq!(
        v.read_dir("d").unwrap()[0].source,
        LayerSource::Lower(0),
        "f0 comes from the top layer"
    );
}

#[test]
fn file_handles_read_write_seek_and_append() {
    use std::io::{Seek, SeekFrom};
    let v = view(vec![layer(|l| l.add_file("f", "hello"))]);
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    let mut f = v.open("f", &o).unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(b" world").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello world");
    let mut ro = v.open("f", OpenOptions::new().read(true)).unwrap();
    assert_eq!(ro.write(b"x").unwrap_err().raw_os_error(), Some(9));
}

#[test]
fn view_is_send_and_sync_and_readers_run_beside_a_writer() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MergedView>();
    let base = layer(|l| l.add_file("f", vec![b'a'; 4096]));
    let v = Arc::new(view(vec![base]));
    std::thread::scope(|s| {
        for _ in 0..2 {
            let v = v.clone();
            s.spawn(move || {
                for _ in 0..200 {
                    let data = v.read("f").unwrap();
                    // Each write replaces the whole file with one byte value.
                    assert!(data.iter().all(|b| *b == data[0]), "torn read");
                    assert_eq!(data.len(), 4096);
                }
            });
        }
        for i in 0..100u8 {
            v.write("f", vec![b'b' + (i % 20); 4096]).unwrap();
        }
    });
}

#[test]
fn setgid_directory_passes_its_group_on() {
    let base = layer(|l| {
        l.add_dir_with(
            "shared",
            Metadata::new(FileType::Dir)
                .with_mode(0o2775)
                .with_owner(0, 50),
        )
    });
    let v = view_with(vec![base], ViewOptions::default().owner(1000, 1000));
    v.write("shared/f", "").unwrap();
    v.create_dir("shared/sub").unwrap();
    let f = v.metadata("shared/f").unwrap();
    assert_eq!((f.uid, f.gid, f.mode), (1000, 50, 0o644));
    let sub = v.metadata("shared/sub").unwrap();
    assert_eq!((sub.gid, sub.mode), (50, 0o2755));
}

#[test]
fn chown_clears_setuid_even_for_root() {
    let base = layer(|l| l.add_file_with("s", "", Metadata::new(FileType::File).with_mode(0o6755)));
    let v = view(vec![base]);
    v.set_owner("s", None, None).unwrap();
    assert_eq!(v.metadata("s").unwrap().mode, 0o755);
}

#[test]
fn upper_layer_api_sees_the_same_whiteouts_as_the_view() {
    let base = layer(|l| l.add_file("x", ""));
    let v = view(vec![base]);
    v.remove_file("x").unwrap();
    v.with_upper(|u: &dyn LayerMut| {
        assert_eq!(u.lookup(&p("x")).unwrap(), Some(Entry::Whiteout));
    });
}

#[test]
fn canonicalize_resolves_symlinks_and_dot_dot_inside_the_view() {
    let base = layer(|l| {
        l.add_file("usr/lib/libc.so", "")?;
        l.add_symlink("lib", "usr/lib")?;
        l.add_symlink("usr/lib/up", "../../..")
    });
    let v = view(vec![base]);
    assert_eq!(
        v.canonicalize("/lib/libc.so").unwrap(),
        p("usr/lib/libc.so")
    );
    assert_eq!(v.canonicalize("lib/up/lib").unwrap(), p("usr/lib"));
    assert_eq!(v.canonicalize("/../..").unwrap(), LayerPath::root());
    assert_eq!(kind(v.canonicalize("lib/missing")), ErrorKind::NotFound);
}

#[test]
fn concurrent_appenders_through_handles_never_overwrite_each_other() {
    let v = view(vec![layer(|l| l.add_file("log", ""))]);
    std::thread::scope(|s| {
        for who in [b'a', b'b'] {
            let v = &v;
            s.spawn(move || {
                let mut o = OpenOptions::new();
                o.append(true);
                let mut f = v.open("log", &o).unwrap();
                for _ in 0..200 {
                    f.write_all(&[who; 10]).unwrap();
                }
            });
        }
    });
    let data = v.read("log").unwrap();
    assert_eq!(data.len(), 4000);
    for chunk in data.chunks(10) {
        assert!(chunk.iter().all(|b| *b == chunk[0]), "an interleaved write");
    }
    assert_eq!(data.iter().filter(|b| **b == b'a').count(), 2000);
}

/// `stat` answers a plain path whose directory was visited from the
/// directory's index, and remembers the metadata of objects a lower layer
/// holds. Every change that moves, replaces or copies up an object, or
/// one of its parents, must show at once; paths that are not plain
/// (symlinks on the way, `..`, `//`, a trailing `/`) still walk.
#[test]
fn stat_shortcuts_follow_every_change() {
    let v = view_with(
        vec![layer(|l| {
            l.add_file("a/b/f", "lower")?;
            l.add_file("a/b/g", "lower")?;
            l.add_file("d/h", "lower h")?;
            l.add_file("ab/f", "a sibling whose name starts like a")?;
            l.add_symlink("s", "a/b")
        })],
        ViewOptions::default().dir_rename(DirRename::Redirect),
    );
    let mode = |p: &str| v.symlink_metadata(p).map(|m| m.mode);
    // Twice each: the first fills the shortcuts, the second uses them.
    for _ in 0..2 {
        assert_eq!(mode("a/b/f").unwrap(), 0o644);
        assert_eq!(mode("/a/b/f").unwrap(), 0o644);
        assert_eq!(v.metadata("s/f").unwrap().size, 5);
        assert_eq!(kind(mode("a/b/f/")), ErrorKind::NotADirectory);
        assert_eq!(kind(mode("a/b/missing")), ErrorKind::NotFound);
        assert_eq!(mode("a//b/../b/f").unwrap(), 0o644);
    }
    // A copy-up changes what the lower layer said.
    v.set_permissions("a/b/f", 0o600).unwrap();
    assert_eq!(mode("a/b/f").unwrap(), 0o600);
    v.write("a/b/g", "longer now").unwrap();
    assert_eq!(v.metadata("a/b/g").unwrap().size, 10);
    // Removing a parent removes everything under it.
    assert_eq!(mode("a/b/g").unwrap(), 0o644);
    assert_eq!(mode("ab/f").unwrap(), 0o644);
    v.remove_dir_all("a").unwrap();
    assert_eq!(kind(mode("a/b/f")), ErrorKind::NotFound);
    assert_eq!(kind(mode("a/b/g")), ErrorKind::NotFound);
    assert_eq!(v.metadata("ab/f").unwrap().size, 34);
    // A symlink where the directory was: the path now goes through it.
    v.create_dir_all("x/b").unwrap();
    v.write("x/b/f", "new").unwrap();
    v.symlink("x", "a").unwrap();
    assert_eq!(v.metadata("a/b/f").unwrap().size, 3);
    assert_eq!(
        v.symlink_metadata("a").unwrap().file_type,
        FileType::Symlink
    );
    // A renamed directory takes its children along.
    assert_eq!(mode("d").unwrap(), 0o755);
    assert_eq!(mode("d/h").unwrap(), 0o644);
    v.rename("d", "e").unwrap();
    assert_eq!(kind(mode("d")), ErrorKind::NotFound);
    assert_eq!(kind(mode("d/h")), ErrorKind::NotFound);
    assert_eq!(v.metadata("e/h").unwrap().size, 7);
    // A commit renumbers the layers: inode numbers stay, answers too.
    let ino = v.metadata("e/h").unwrap().ino;
    v.commit().unwrap();
    assert_eq!(v.metadata("e/h").unwrap().ino, ino);
    assert_eq!(mode("x/b/f").unwrap(), 0o644);
}

/// "привет" in KOI8-R and "日本" in EUC-JP: names real images hold, not
/// UTF-8.
const KOI8R: &[u8] = b"\xd0\xd2\xc9\xd7\xc5\xd4";
const EUCJP: &[u8] = b"\xc6\xfc\xcb\xdc";

#[cfg(feature = "proptest")]
#[test]
fn a_view_over_names_in_legacy_encodings_matches_the_model() {
    use layerstack::testing::{Op, check_model_vs_view};
    /// "café" in Latin-1 and "привет" in CP866.
    const LATIN1: &[u8] = b"caf\xe9";
    const CP866: &[u8] = b"\xaf\xe0\xa8\xa2\xa5\xe2";
    fn slash(parts: &[&[u8]]) -> NameBuf {
        NameBuf::from(parts.join(&b'/'))
    }
    let mut bottom = MemLayer::new();
    bottom
        .add_file(slash(&[KOI8R, LATIN1]), "koi8-r/latin-1")
        .unwrap();
    bottom.add_file(slash(&[EUCJP, CP866]), "cp866").unwrap();
    bottom.add_file(slash(&[EUCJP, KOI8R]), "koi8-r").unwrap();
    bottom
        .add_symlink(b"link", slash(&[KOI8R, LATIN1]))
        .unwrap();
    let mut top = MemLayer::new();
    top.add_whiteout(slash(&[EUCJP, CP866])).unwrap();
    top.add_file(slash(&[EUCJP, LATIN1]), "top").unwrap();
    top.add_symlink(CP866, slash(&[b"..".as_slice(), EUCJP]))
        .unwrap();

    let v = view(vec![top.clone(), bottom.clone()]);
    assert_eq!(&v.read(b"link").unwrap()[..], b"koi8-r/latin-1");
    let listed: Vec<NameBuf> = v
        .read_dir(EUCJP)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    // In byte order: `c` (0x63) before the KOI8-R 0xd0.
    assert_eq!(listed, [NameBuf::from(LATIN1), NameBuf::from(KOI8R)]);
    assert_eq!(
        v.read_link(CP866).unwrap(),
        slash(&[b"..".as_slice(), EUCJP])
    );
    // Through a symlink whose target is not UTF-8 either.
    assert_eq!(&v.read(slash(&[CP866, LATIN1])).unwrap()[..], b"top");
    assert_eq!(
        v.read(slash(&[EUCJP, CP866])).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    v.rename(slash(&[KOI8R, LATIN1]), slash(&[EUCJP, CP866]))
        .unwrap();
    assert_eq!(
        &v.read(slash(&[EUCJP, CP866])).unwrap()[..],
        b"koi8-r/latin-1"
    );

    let ops = vec![
        Op::Read {
            path: "link".into(),
        },
        Op::ReadDir { path: EUCJP.into() },
        Op::ReadLink { path: CP866.into() },
        Op::Rename {
            from: slash(&[KOI8R, LATIN1]),
            to: slash(&[EUCJP, CP866]),
            mode: RenameMode::Replace,
        },
        Op::Symlink {
            target: slash(&[b"/".as_slice(), LATIN1]),
            link: slash(&[KOI8R, EUCJP]),
        },
        Op::Write {
            path: slash(&[KOI8R, EUCJP]),
            data: b"through a dangling link".to_vec(),
        },
        Op::RemoveDir { path: KOI8R.into() },
        Op::Commit,
        Op::RemoveFile {
            path: slash(&[EUCJP, KOI8R]),
        },
        Op::CreateDirAll {
            path: slash(&[CP866, KOI8R, LATIN1]),
        },
        Op::ReadDir { path: "/".into() },
    ];
    check_model_vs_view(&[top, bottom], &ops, ViewOptions::default()).unwrap();
}

#[test]
fn an_error_shows_a_name_that_is_not_utf8_escaped_and_keeps_its_bytes() {
    let v = view(vec![]);
    let err = v.read(b"caf\xe9/\x1b[0m").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.path().as_bytes(), b"caf\xe9/\x1b[0m");
    assert_eq!(
        err.to_string(),
        "failed to read `caf\\351/\\033[0m`: no such file or directory"
    );
    let err = v.rename(KOI8R, EUCJP).unwrap_err();
    assert_eq!(err.second_path().map(|p| p.as_bytes()), Some(EUCJP));
    assert_eq!(
        err.to_string(),
        "failed to rename `\\320\\322\\311\\327\\305\\324`: no such file or directory"
    );
}

#[test]
fn owner_and_times_nofollow_change_a_lower_symlink_itself() {
    let lower = layer(|l| {
        l.add_file("target", "data")?;
        l.add_symlink("link", "target")
    });
    let v = view(vec![lower]);
    let target_before = v.symlink_metadata("target").unwrap();
    v.set_owner_nofollow("link", Some(7), Some(8)).unwrap();
    let t = Timestamp { sec: 3000, nsec: 5 };
    v.set_times_nofollow("link", Some(t), Some(t)).unwrap();
    let link = v.symlink_metadata("link").unwrap();
    assert_eq!((link.uid, link.gid, link.mtime, link.atime), (7, 8, t, t));
    assert_eq!(v.symlink_metadata("target").unwrap(), target_before);
    // Only the link was copied up.
    assert_eq!(upper(&v), pairs(&[("link", "Symlink")]));
    // Through a trailing slash the name must be a directory, as `lstat`.
    assert_eq!(
        kind(v.set_owner_nofollow("link/", Some(1), None)),
        ErrorKind::NotADirectory
    );
    // The following forms change the target.
    v.set_owner("link", Some(9), None).unwrap();
    assert_eq!(v.symlink_metadata("target").unwrap().uid, 9);
    assert_eq!(v.symlink_metadata("link").unwrap().uid, 7);
}
