//! Named regressions of issue 12, one or more per item, each checked
//! against the real kernel (the experiment is in the test).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use layerstack::layer::dir::{Durability, WhiteoutFormat};

use super::disk::{SideBySide, read_back_kernels_upper, tree_difference};
use super::*;

/// Runs `ops` side by side (`kernel/disk.rs`), panicking at the first
/// difference; `None` when the kernel tests skip.
fn side_by_side(
    layers: &[MemLayer],
    ops: &[Op],
    options: ViewOptions,
    extra: &str,
    before: impl FnOnce(&SideBySide),
) -> Option<SideBySide> {
    if !kernel_available() {
        return None;
    }
    let mut pair = SideBySide::new(layers, options, extra);
    before(&pair);
    let fail = |e: RunError| -> ! {
        match e {
            RunError::Diverged { step, detail } => {
                panic!("the kernel and our view differ at step {step}: {detail}")
            }
            RunError::Unsupported(why) => panic!("the kernel refuses the layers: {why}"),
        }
    };
    if let Err(e) = pair.check(0, None) {
        fail(e);
    }
    for (i, op) in ops.iter().enumerate() {
        if let Err(e) = pair.step(i + 1, op) {
            fail(e);
        }
    }
    Some(pair)
}

fn read_back(layers: &[MemLayer], ops: &[Op], options: ViewOptions, extra: &str) {
    if !kernel_available() {
        return;
    }
    match read_back_kernels_upper(layers, ops, options, extra) {
        Ok(()) => {}
        Err(RunError::Diverged { detail, .. }) => panic!("{detail}"),
        Err(RunError::Unsupported(why)) => panic!("the kernel refuses the layers: {why}"),
    }
}

fn mtime(view: &MergedView, path: &str) -> layerstack::Timestamp {
    view.metadata(path).expect("stat in the view").mtime
}

fn lstat(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat `{}`: {e}", path.display()))
}

/// Item 1: every kind of copy-up through `DirLayer`s keeps the mtimes of
/// the copied-up parents and of the upper root, as the kernel does.
#[test]
fn copy_up_on_disk_keeps_the_parents_mtimes() {
    // The codec the kernel's child reads holds only the names `a`, `b`,
    // `c`: one operation per file, in three directories.
    let lower = layer(|l| {
        for f in [
            "a/a/a", "a/a/b", "a/a/c", "a/b/a", "a/b/b", "a/b/c", "b/a/a", "b/a/b",
        ] {
            l.add_file(f, "data")?;
        }
        l.add_dir("c")
    });
    let ops = [
        Op::Open {
            path: path("a/a/a"),
            options: open(true),
        },
        Op::Append {
            path: path("a/a/b"),
            data: b"more".to_vec(),
        },
        Op::SetLen {
            path: path("a/a/c"),
            len: 1,
        },
        Op::SetPermissions {
            path: path("a/b/a"),
            mode: 0o600,
        },
        Op::SetOwner {
            path: path("a/b/b"),
            uid: Some(1),
            gid: Some(1),
        },
        Op::SetTimes {
            path: path("a/b/c"),
            atime: Some(layerstack::Timestamp::new(5, 0)),
            mtime: None,
        },
        Op::SetXattr {
            path: path("b/a/a"),
            name: String::from("user.x"),
            value: b"v".to_vec(),
        },
        // Copies `b/a/b` up (no new name in `b/a`) and links it into `c`,
        // whose mtime changes.
        Op::HardLink {
            original: path("b/a/b"),
            link: path("c/a"),
        },
    ];
    const WATCHED: [&str; 6] = ["/", "a", "a/a", "a/b", "b", "b/a"];
    let mut before = Vec::new();
    let Some(pair) = side_by_side(&[lower], &ops, ViewOptions::default(), "", |pair| {
        before = WATCHED.iter().map(|p| mtime(&pair.view, p)).collect();
    }) else {
        return;
    };
    let after: Vec<_> = WATCHED.iter().map(|p| mtime(&pair.view, p)).collect();
    assert_eq!(after, before, "mtimes of {WATCHED:?}");
}

/// Item 2: reading through `DirLayer`s changes no atime: not the lower
/// file's, not the lower or upper directories', not the upper root's (the
/// kernel opens with `O_NOATIME`). The scratch tmpfs is `strictatime`.
#[test]
fn reading_through_dir_layers_changes_no_atime() {
    let lower = layer(|l| {
        l.add_file("a/a", "data")?;
        l.add_file("b", "top")
    });
    let ops = [
        Op::Read { path: path("a/a") },
        Op::ReadAt {
            path: path("b"),
            offset: 1,
            len: 2,
        },
        Op::Open {
            path: path("a/a"),
            options: open(false),
        },
        Op::ReadDir { path: path("a") },
        Op::ReadDir { path: path("/") },
        Op::Metadata { path: path("a/a") },
        Op::ListXattr { path: path("a/a") },
        // A new upper file, then read again.
        Op::Write {
            path: path("c"),
            data: b"new".to_vec(),
        },
        Op::Read { path: path("c") },
        Op::ReadDir { path: path("/") },
    ];
    let watched = |pair: &SideBySide| {
        let l0 = pair.our_lower(0);
        [
            l0.join("a/a"),
            l0.join("a"),
            l0.clone(),
            pair.our_upper().to_owned(),
        ]
        .iter()
        .map(|p| {
            let m = lstat(p);
            (p.clone(), m.atime(), m.atime_nsec())
        })
        .collect::<Vec<_>>()
    };
    let mut before = Vec::new();
    let Some(pair) = side_by_side(&[lower], &ops, ViewOptions::default(), "", |pair| {
        before = watched(pair);
    }) else {
        return;
    };
    assert_eq!(watched(&pair), before, "atimes (path, sec, nsec)");
}

/// Item 3: with `HardLinkCopyUp::Break`, the copied-up name of a lower
/// hard link gets its own inode number; the other name keeps the lower
/// one (the kernel, `index=off`). On disk, and in memory.
#[test]
fn a_hard_link_broken_by_copy_up_gets_its_own_inode() {
    let lower = layer(|l| {
        l.add_file("a", "x")?;
        l.add_hard_link("a", "b")
    });
    let ops = [
        Op::Append {
            path: path("a"),
            data: b"y".to_vec(),
        },
        Op::Metadata { path: path("b") },
    ];
    let mut before = (0, 0);
    let Some(pair) = side_by_side(
        std::slice::from_ref(&lower),
        &ops,
        ViewOptions::default(),
        "",
        |pair| {
            let ino = |p| pair.view.metadata(p).expect("stat").ino;
            before = (ino("a"), ino("b"));
        },
    ) else {
        return;
    };
    assert_eq!(before.0, before.1, "one lower inode, two names");
    let (a, b) = (
        pair.view.metadata("a").expect("stat a"),
        pair.view.metadata("b").expect("stat b"),
    );
    assert_ne!(a.ino, b.ino, "on disk");
    assert_eq!((a.nlink, b.nlink, b.ino), (1, 2, before.1));

    let view = MergedView::new(vec![Arc::new(lower) as Arc<dyn Layer>], MemLayer::new())
        .expect("a view in memory");
    let lower_ino = view.metadata("b").expect("stat b").ino;
    view.append("a", "y").expect("append to a");
    let (a, b) = (
        view.metadata("a").expect("stat a"),
        view.metadata("b").expect("stat b"),
    );
    assert_ne!(a.ino, b.ino, "in memory");
    assert_eq!((a.nlink, b.nlink, b.ino), (1, 2, lower_ino));
}

/// Item 4: an upper the kernel wrote with `metacopy=on` (chmod, chown and
/// rename of lower files: metadata-only copies, the rename with a
/// redirect) reads the data from the lower layer.
#[test]
fn a_metacopy_upper_reads_the_lower_data() {
    let lower = layer(|l| {
        l.add_file("a", "hello")?;
        l.add_file("b", "two")?;
        l.add_file("c/a", "three")
    });
    let ops = [
        Op::SetPermissions {
            path: path("a"),
            mode: 0o600,
        },
        Op::SetOwner {
            path: path("c/a"),
            uid: Some(1),
            gid: None,
        },
        Op::Rename {
            from: path("b"),
            to: path("c/b"),
            mode: RenameMode::Replace,
        },
    ];
    let extra = "metacopy=on,redirect_dir=on";
    if !kernel_available() {
        return;
    }
    // The kernel did write metadata-only copies (the experiment).
    let overlay = disk::kernel_only(std::slice::from_ref(&lower), &ops, extra)
        .unwrap_or_else(|_| panic!("the kernel refuses the layers"));
    for p in ["a", "c/a", "c/b"] {
        let at = overlay.upper().join(p);
        assert!(
            layerstack::testing::xattrs_of(&at, false)
                .expect("upper xattrs")
                .iter()
                .any(|(k, _)| k == "trusted.overlay.metacopy"),
            "the kernel wrote `{p}` as a metacopy"
        );
        assert_eq!(
            lstat(&at).blocks(),
            0,
            "`{p}` holds no data (a sparse copy)"
        );
    }
    drop(overlay);
    read_back(
        &[lower],
        &ops,
        ViewOptions::default()
            .dir_rename(DirRename::Redirect)
            .metacopy(Metacopy::Follow),
        extra,
    );
}

/// Item 5: after the kernel appended to `a` (linked with `b`) with
/// `index=on`, a view over its upper (and workdir: the index) never shows
/// `b` stale: it shows the new content under both names (one inode, two
/// links), or it refuses the upper (`EOPNOTSUPP`, the documented
/// limitation: the index is keyed by file handles the crate cannot
/// compute; `readback.rs` checks the message).
#[test]
fn an_index_upper_never_shows_a_stale_name() {
    let lower = layer(|l| {
        l.add_file("a", "x")?;
        l.add_hard_link("a", "b")
    });
    let ops = [Op::Append {
        path: path("a"),
        data: b"y".to_vec(),
    }];
    if !kernel_available() {
        return;
    }
    let options = ViewOptions::default().hard_links(HardLinkCopyUp::Keep);
    let mut overlay = disk::kernel_only(&[lower], &ops, "index=on")
        .unwrap_or_else(|_| panic!("the kernel refuses the layers"));
    overlay.unmount_for_good();
    let view = DirLayer::open_upper(utf8(overlay.upper()), utf8(overlay.work()))
        .and_then(|upper| MergedView::with_options(dir_lowers(overlay.lowers()), upper, options));
    let view = match view {
        Ok(view) => view,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            return;
        }
    };
    let (a, b) = (
        view.metadata("a").expect("stat a"),
        view.metadata("b").expect("stat b"),
    );
    assert_eq!(&view.read("b").expect("read b")[..], b"xy");
    assert_eq!((a.ino == b.ino, a.nlink, b.nlink), (true, 2, 2));
}

/// A lower `l` with a file, an upper `u` and a work dir `w` on a scratch
/// tmpfs.
fn plain_dirs() -> (harness::Scratch, std::path::PathBuf) {
    let scratch = harness::Scratch::new().expect("mount the scratch tmpfs");
    let root = scratch.root.clone();
    for d in ["l", "u", "w", "m"] {
        fs::create_dir(root.join(d)).expect("mkdir");
    }
    fs::write(root.join("l/f"), "x").expect("write a lower file");
    (scratch, root)
}

/// Mounts (and at once unmounts) the kernel's overlay over `root`'s `l`,
/// `u`, `w` with `options`: its errno if it refuses.
fn kernel_mounts(root: &Path, options: &str) -> Result<(), i32> {
    let data = format!(
        "lowerdir={0}/l,upperdir={0}/u,workdir={0}/w{options}",
        root.display()
    );
    let data = std::ffi::CString::new(data).expect("no NUL");
    let mnt = root.join("m");
    rustix::mount::mount(
        "overlay",
        &mnt,
        "overlay",
        rustix::mount::MountFlags::NODEV,
        &*data,
    )
    .map_err(|e| e.raw_os_error())?;
    unmount(&mnt);
    Ok(())
}

/// Unmounts `mnt`, lazily if it is busy (another test thread's fork may
/// hold one of its directories for an instant).
fn unmount(mnt: &Path) {
    if rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::empty()).is_err() {
        rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::DETACH).expect("unmount");
    }
}

const EINVAL: i32 = 22;
const ELOOP: i32 = 40;

/// Item 6: a regular file at `workdir/work` is replaced by the work
/// directory, as the kernel replaces it.
#[test]
fn a_regular_file_at_work_work_is_replaced() {
    if !kernel_available() {
        return;
    }
    let (_scratch, root) = plain_dirs();
    fs::write(root.join("w/work"), "junk").expect("a file at work/work");
    // The kernel (the experiment).
    assert_eq!(kernel_mounts(&root, ""), Ok(()));
    assert!(lstat(&root.join("w/work")).is_dir());
    fs::remove_dir(root.join("w/work")).expect("rmdir work/work");
    fs::write(root.join("w/work"), "junk").expect("a file at work/work");
    let upper = DirLayer::open_upper(utf8(&root.join("u")), utf8(&root.join("w")))
        .expect("open_upper replaces a file at work/work");
    assert!(lstat(&root.join("w/work")).is_dir());
    drop(upper);
}

/// Item 6: after a kernel `volatile` session the kernel refuses the pair
/// (`EINVAL`) while its marker `workdir/work/incompat/volatile` is there;
/// `open_upper` refuses it the same way and keeps the marker.
#[test]
fn a_kernel_volatile_session_is_refused_and_its_marker_kept() {
    if !kernel_available() {
        return;
    }
    let (_scratch, root) = plain_dirs();
    assert_eq!(kernel_mounts(&root, ",volatile"), Ok(()));
    let marker = root.join("w/work/incompat/volatile");
    assert!(marker.is_dir(), "the kernel's marker");
    assert_eq!(kernel_mounts(&root, ""), Err(EINVAL), "the kernel refuses");
    let opened = DirLayer::open_upper(utf8(&root.join("u")), utf8(&root.join("w")));
    assert_eq!(
        opened.as_ref().map(|_| ()).map_err(layerstack::Error::kind),
        Err(ErrorKind::InvalidInput),
        "open_upper after a volatile kernel session"
    );
    assert!(marker.is_dir(), "the marker is kept");
    assert_eq!(kernel_mounts(&root, ""), Err(EINVAL), "still refused");
}

/// Item 6: an upper written with `Durability::Volatile` leaves the
/// kernel's marker, so the kernel refuses to mount it (`EINVAL`) as it
/// refuses after its own volatile session.
#[test]
fn a_volatile_upper_leaves_the_kernels_marker() {
    if !kernel_available() {
        return;
    }
    let (_scratch, root) = plain_dirs();
    let upper = DirLayer::open_upper_with(
        utf8(&root.join("u")),
        utf8(&root.join("w")),
        DirLayerOptions::default().durability(Durability::Volatile),
    )
    .expect("open a volatile upper");
    let lowers = dir_lowers(&[root.join("l")]);
    let view = MergedView::new(lowers, upper).expect("open the view");
    view.write("f", "changed").expect("write through the view");
    drop(view);
    assert!(
        root.join("w/work/incompat/volatile").is_dir(),
        "the kernel's volatile marker"
    );
    assert_eq!(kernel_mounts(&root, ""), Err(EINVAL));
}

/// Item 7: the upper directory also given as a lower layer is refused
/// with `ELOOP`, as the kernel refuses the mount.
#[test]
fn the_upper_given_as_a_lower_is_refused_with_eloop() {
    if !kernel_available() {
        return;
    }
    let (_scratch, root) = plain_dirs();
    let data = format!(
        "lowerdir={0}/u:{0}/l,upperdir={0}/u,workdir={0}/w",
        root.display()
    );
    let data = std::ffi::CString::new(data).expect("no NUL");
    let refused = rustix::mount::mount(
        "overlay",
        root.join("m"),
        "overlay",
        rustix::mount::MountFlags::NODEV,
        &*data,
    );
    assert_eq!(
        refused.map_err(|e| e.raw_os_error()),
        Err(ELOOP),
        "the kernel"
    );
    let upper =
        DirLayer::open_upper(utf8(&root.join("u")), utf8(&root.join("w"))).expect("open upper");
    let lowers = dir_lowers(&[root.join("u"), root.join("l")]);
    let view = MergedView::new(lowers, upper);
    assert_eq!(
        view.map(drop).map_err(|e| e.kind()),
        Err(ErrorKind::FilesystemLoop)
    );
}

/// Item 8 (the decision in `docs/semantics.md`): an upper written with
/// `WhiteoutFormat::Xattr`, mounted by the kernel as its upperdir, lists
/// every deleted name (one `stat` cannot find: the kernel's readdir never
/// filters xattr whiteouts in an upper directory); mounted as a lowerdir,
/// as after a commit, it reads exactly as the view reads it. `readback.rs`
/// pins the lookup rules.
#[test]
fn an_xattr_whiteout_upper_reads_as_ours_as_a_lowerdir_and_lists_deleted_names_as_upperdir() {
    if !kernel_available() {
        return;
    }
    let (_scratch, root) = plain_dirs();
    fs::create_dir_all(root.join("l/d")).expect("mkdir");
    fs::write(root.join("l/d/f"), "base").expect("write");
    fs::write(root.join("l/d/g"), "base").expect("write");
    let upper = DirLayer::open_upper_with(
        utf8(&root.join("u")),
        utf8(&root.join("w")),
        DirLayerOptions::default().whiteouts(WhiteoutFormat::Xattr),
    )
    .expect("open an upper writing xattr whiteouts");
    let view = MergedView::new(dir_lowers(&[root.join("l")]), upper).expect("open the view");
    view.remove_file("d/f").expect("remove a lower file");
    view.write("d/h", "new").expect("write a file");
    let ours = snapshot_view(&view).expect("walk the view");
    let listed_by_us: Vec<NameBuf> = view
        .read_dir("d")
        .expect("list d")
        .into_iter()
        .map(|e| e.name)
        .collect();
    drop(view);
    let mount = |data: String| {
        let mnt = root.join("m");
        let cdata = std::ffi::CString::new(data.clone()).expect("no NUL");
        rustix::mount::mount(
            "overlay",
            &mnt,
            "overlay",
            rustix::mount::MountFlags::NODEV,
            &*cdata,
        )
        .unwrap_or_else(|e| panic!("mount {data}: {e}"));
        let mut listed: Vec<NameBuf> = fs::read_dir(mnt.join("d"))
            .expect("list d in the mount")
            .map(|e| NameBuf::from(e.expect("an entry").file_name().into_encoded_bytes()))
            .collect();
        listed.sort();
        let f = fs::symlink_metadata(mnt.join("d/f")).map_err(|e| e.raw_os_error());
        let tree = layerstack::testing::snapshot_dir(&mnt).expect("walk the mount");
        unmount(&mnt);
        (listed, f.map(drop), tree)
    };
    fs::create_dir_all(root.join("kw")).expect("mkdir");
    let (listed, f, tree) = mount(format!(
        "lowerdir={0}/l,upperdir={0}/u,workdir={0}/kw",
        root.display()
    ));
    assert_eq!(listed_by_us, ["g", "h"]);
    assert_eq!(
        (listed, f),
        (
            vec![NameBuf::from("f"), "g".into(), "h".into()],
            Err(Some(2))
        )
    );
    assert_eq!(tree_difference(&ours, &tree), None, "as upperdir");
    let (listed, f, tree) = mount(format!("lowerdir={0}/u:{0}/l", root.display()));
    assert_eq!((listed, f), (listed_by_us, Err(Some(2))));
    assert_eq!(tree_difference(&ours, &tree), None, "as lowerdir");
}

// ----- found by the side-by-side runs (not in the list) -----

/// `chown` and `chmod` that change nothing still change the ctime in the
/// kernel (`notify_change` always sets `ATTR_CTIME`), for an upper object
/// and for a lower one (copied up).
#[test]
fn a_chown_or_chmod_that_changes_nothing_still_changes_the_ctime() {
    let lower = layer(|l| {
        l.add_file("a", "x")?;
        l.add_file("b", "y")
    });
    let ops = [
        Op::Write {
            path: path("c"),
            data: b"z".to_vec(),
        },
        Op::SetOwner {
            path: path("c"),
            uid: None,
            gid: None,
        },
        Op::SetOwner {
            path: path("c"),
            uid: Some(0),
            gid: Some(0),
        },
        Op::SetPermissions {
            path: path("c"),
            mode: 0o644,
        },
        Op::SetOwner {
            path: path("a"),
            uid: None,
            gid: None,
        },
        Op::SetPermissions {
            path: path("b"),
            mode: 0o644,
        },
    ];
    side_by_side(&[lower], &ops, ViewOptions::default(), "", |_| {});
}

/// Appending or writing no bytes opens the file for writing (a lower file
/// is copied up) but writes nothing: no time changes (`std`'s
/// `write_all(&[])` makes no `write` call, and a zero-length `write` on
/// tmpfs returns before touching the times).
#[test]
fn appending_or_writing_no_bytes_changes_no_time() {
    let lower = layer(|l| {
        l.add_file("a", "x")?;
        l.add_file("b", "y")
    });
    let ops = [
        Op::Append {
            path: path("a"),
            data: vec![],
        },
        Op::Append {
            path: path("a"),
            data: vec![],
        },
        Op::WriteAt {
            path: path("b"),
            offset: 1,
            data: vec![],
        },
        Op::WriteAt {
            path: path("b"),
            offset: 3,
            data: vec![],
        },
    ];
    side_by_side(&[lower], &ops, ViewOptions::default(), "", |_| {});
}

/// The outcomes of `ops` on the kernel (with `extra` options) and on a
/// view over the same layers in memory, in Debug form, step by step.
fn both_outcomes(
    layers: &[MemLayer],
    ops: &[Op],
    options: ViewOptions,
    extra: &str,
) -> Option<Vec<(String, String)>> {
    if !kernel_available() {
        return None;
    }
    let mut overlay = harness::Overlay::new(layers, extra);
    let lowers: Vec<Arc<dyn Layer>> = layers
        .iter()
        .map(|l| Arc::new(l.clone()) as Arc<dyn Layer>)
        .collect();
    let view = MergedView::with_options(lowers, MemLayer::new(), options).expect("a view");
    Some(
        ops.iter()
            .map(|op| (overlay.apply(op), format!("{:?}", apply_to_view(&view, op))))
            .collect(),
    )
}

/// The link count in a `Metadata` outcome's Debug form.
fn nlink_of(outcome: &str) -> u64 {
    let at = outcome.find("nlink: ").expect("a metadata outcome") + "nlink: ".len();
    outcome[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a link count")
}

/// A known, documented difference (`docs/semantics.md`, "Hard links kept
/// on copy-up"), pinned so that a change on either side shows: with
/// `index=on` the kernel copies up only the name used, and the other name
/// of a lower hard link (with its parent directory) stays below, showing
/// the new data through the index; `HardLinkCopyUp::Keep` links every name
/// at once, so the other name's parent becomes a merged directory (whose
/// link count is 1). The data and the file's link count agree.
#[test]
fn with_index_on_only_the_name_used_is_copied_up() {
    let lower = layer(|l| {
        l.add_file("a/a", "x")?;
        l.add_hard_link("a/a", "b/a")
    });
    let ops = [
        Op::Append {
            path: path("a/a"),
            data: b"y".to_vec(),
        },
        Op::Metadata { path: path("b") },
        Op::Read { path: path("b/a") },
        Op::Metadata { path: path("b/a") },
    ];
    let options = ViewOptions::default().hard_links(HardLinkCopyUp::Keep);
    let Some(steps) = both_outcomes(&[lower], &ops, options, "index=on") else {
        return;
    };
    let (kernel_b, ours_b) = &steps[1];
    assert_eq!((nlink_of(kernel_b), nlink_of(ours_b)), (2, 1));
    assert_eq!(steps[2].0, steps[2].1, "both read the new data");
    assert!(steps[2].0.contains("[120, 121]"), "{}", steps[2].0);
    assert_eq!(
        (nlink_of(&steps[3].0), nlink_of(&steps[3].1)),
        (2, 2),
        "the file shows both names on each side"
    );
}

/// Item 4, found by the read-back runs: a metadata-only copy without a
/// redirect of its own, inside a directory the kernel renamed (so the
/// directory holds `overlay.redirect`): the kernel finds the data below
/// the directory's lower path (`b/a`), not at the copy's own path (`a/a`).
/// Experiment: `chmod 600 m/b/a; mv m/b m/a` with `metacopy=on,
/// redirect_dir=on` leaves `u/a` (`redirect="b"`) and `u/a/a`
/// (`metacopy`, no redirect); `cat m/a/a` shows the lower data.
#[test]
fn a_metacopy_file_in_a_redirected_directory_reads_the_lower_data() {
    let lower = layer(|l| l.add_file("b/a", "data"));
    let ops = [
        Op::SetPermissions {
            path: path("b/a"),
            mode: 0o600,
        },
        Op::Rename {
            from: path("b"),
            to: path("a"),
            mode: RenameMode::Replace,
        },
    ];
    read_back(
        &[lower],
        &ops,
        ViewOptions::default()
            .dir_rename(DirRename::Redirect)
            .metacopy(Metacopy::Follow),
        "metacopy=on,redirect_dir=on",
    );
}

/// A known, documented difference (`docs/semantics.md`), pinned: with
/// `index=on`, removing one name of a lower hard link lowers the link
/// count the other names show (the kernel keeps the count in the index,
/// `overlay.nlink`); the view, as with `index=off`, shows a lower inode's
/// own count while it stays below.
#[test]
fn with_index_on_removing_one_name_of_a_lower_hard_link_lowers_nlink() {
    let lower = layer(|l| {
        l.add_file("a", "x")?;
        l.add_hard_link("a", "b")?;
        l.add_hard_link("a", "c")
    });
    let ops = [
        Op::RemoveFile { path: path("a") },
        Op::Metadata { path: path("b") },
    ];
    let options = ViewOptions::default().hard_links(HardLinkCopyUp::Keep);
    let Some(steps) = both_outcomes(&[lower], &ops, options, "index=on") else {
        return;
    };
    assert_eq!(steps[0].0, steps[0].1);
    assert_eq!((nlink_of(&steps[1].0), nlink_of(&steps[1].1)), (2, 3));
}
