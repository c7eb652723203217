//! What a FUSE session writes, the kernel reads: changes made through our
//! mount into an upper on disk, the view committed after the unmount (the
//! upper moves to a committed layer), then the kernel's overlayfs mounts
//! the committed layer over the same lower. The tree the kernel shows must
//! be the tree our mount showed, walked the same way with `std::fs`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use camino::Utf8PathBuf;
use layerstack::layer::dir::DirLayerOptions;
use layerstack::mount::{MountOptions, mount};
use layerstack::{DirLayer, Layer, MergedView};
use rustix::fs::{CWD, FileType as RFileType, Mode};

use super::fuse_ready;
use crate::support::harness::{Scratch, kernel_available};

/// One object as `lstat` and friends show it (times left out: a commit
/// and a remount keep them, but the kernel updates atime on reads).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Regular files and symlinks: link count.
    nlink: Option<u64>,
    /// Content, symlink target, or device number.
    data: Vec<u8>,
    /// `user.*` attributes.
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn user_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, &mut names).unwrap();
    let mut out = BTreeMap::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8(name.to_vec()).unwrap();
        if !name.starts_with("user.") {
            continue;
        }
        let mut value = vec![0u8; 4096];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value).unwrap();
        value.truncate(len);
        out.insert(name, value);
    }
    out
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, Seen>) {
    let path = root.join(rel);
    let meta = fs::symlink_metadata(&path).unwrap();
    let ft = meta.file_type();
    let (kind, data, nlink) = if ft.is_dir() {
        ("dir", Vec::new(), None)
    } else if ft.is_symlink() {
        let t = fs::read_link(&path).unwrap();
        (
            "symlink",
            t.into_os_string().into_encoded_bytes(),
            Some(meta.nlink()),
        )
    } else if ft.is_file() {
        ("file", fs::read(&path).unwrap(), Some(meta.nlink()))
    } else {
        (
            "special",
            meta.rdev().to_string().into_bytes(),
            Some(meta.nlink()),
        )
    };
    out.insert(
        rel.to_string_lossy().into_owned(),
        Seen {
            kind: kind.to_owned(),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            nlink,
            data,
            xattrs: user_xattrs(&path),
        },
    );
    if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            walk(root, &rel.join(n), out);
        }
    }
}

fn tree(root: &Path) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn make_lower(l: &Path) {
    fs::create_dir_all(l.join("etc")).unwrap();
    fs::create_dir_all(l.join("d")).unwrap();
    fs::create_dir_all(l.join("keep/deep/er")).unwrap();
    fs::write(l.join("etc/conf"), "lower conf\n").unwrap();
    fs::write(l.join("etc/other"), "other\n").unwrap();
    fs::write(l.join("d/a"), "a\n").unwrap();
    fs::write(l.join("d/b"), "b\n").unwrap();
    fs::write(l.join("keep/x"), "x\n").unwrap();
    fs::write(l.join("keep/deep/er/f"), "deep\n").unwrap();
    fs::write(l.join("secret"), "s\n").unwrap();
    fs::set_permissions(l.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("etc/conf", l.join("link")).unwrap();
}

/// The changes: every kind the mount serves.
fn change(m: &Path) {
    fs::write(m.join("etc/conf"), "changed through FUSE\n").unwrap();
    fs::remove_file(m.join("etc/other")).unwrap();
    fs::remove_dir_all(m.join("d")).unwrap();
    fs::create_dir(m.join("d")).unwrap();
    fs::write(m.join("d/new"), "new\n").unwrap();
    fs::rename(m.join("keep/x"), m.join("keep/y")).unwrap();
    fs::hard_link(m.join("etc/conf"), m.join("etc/conf2")).unwrap();
    fs::set_permissions(m.join("secret"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(m.join("keep/deep/er/f"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::symlink("../keep/y", m.join("d/to-y")).unwrap();
    rustix::fs::setxattr(
        m.join("etc/conf"),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    fs::create_dir_all(m.join("newdir/inner")).unwrap();
    fs::write(m.join("newdir/inner/f"), vec![7u8; 70_000]).unwrap();
    rustix::fs::mknodat(
        CWD,
        m.join("fifo"),
        RFileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

#[test]
fn what_the_mount_wrote_the_kernel_shows_after_commit() {
    let test = "what_the_mount_wrote_the_kernel_shows_after_commit";
    if !fuse_ready(test) || !kernel_available() {
        return;
    }
    let mut scratch = Scratch::new().expect("a scratch tmpfs");
    let root = scratch.root.clone();
    let utf8 = |p: &Path| Utf8PathBuf::from_path_buf(p.to_owned()).unwrap();
    let (l, u, w, c) = (
        root.join("l"),
        root.join("u"),
        root.join("w"),
        root.join("c"),
    );
    make_lower(&l);
    let lower = DirLayer::open(utf8(&l)).unwrap();
    let upper = DirLayer::open_upper_with(
        utf8(&u),
        utf8(&w),
        DirLayerOptions::default().commit_dir(utf8(&c)),
    )
    .unwrap();
    let view = MergedView::new(vec![Arc::new(lower) as Arc<dyn Layer>], upper).unwrap();
    let ours = root.join("ours");
    fs::create_dir(&ours).unwrap();
    let mounted = mount(view, &ours, &MountOptions::default()).expect("mount");
    change(&ours);
    let seen_through_fuse = tree(&ours);
    let view = super::unmount_settled(mounted).expect("unmount");
    view.commit().expect("commit");
    let committed = c.join("0");
    assert!(
        committed.join("etc/conf").exists(),
        "the commit moved the upper"
    );
    drop(view);

    let theirs = root.join("theirs");
    let w2 = root.join("w2");
    fs::create_dir(&w2).unwrap();
    scratch.mount_overlay(
        &theirs,
        &format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            committed.display(),
            l.display(),
            u.display(),
            w2.display()
        ),
    );
    let seen_by_kernel = tree(&theirs);
    for (path, ours) in &seen_through_fuse {
        assert_eq!(Some(ours), seen_by_kernel.get(path), "{path:?}");
    }
    let only_kernel: Vec<_> = seen_by_kernel
        .keys()
        .filter(|k| !seen_through_fuse.contains_key(*k))
        .collect();
    assert!(
        only_kernel.is_empty(),
        "only the kernel shows {only_kernel:?}"
    );
    // Spot checks of what the comparison covers.
    let conf = &seen_by_kernel["etc/conf"];
    assert_eq!(
        (conf.nlink, conf.data.as_slice()),
        (Some(2), &b"changed through FUSE\n"[..])
    );
    assert_eq!(seen_by_kernel["d"].kind, "dir");
    assert!(!seen_by_kernel.contains_key("d/a"));
    assert_eq!(seen_by_kernel["keep/deep/er/f"].uid, 1234);
    scratch.unmount_last();
}

// ----- the same checks on the kernel's overlayfs and on our mount -----

/// Runs `check` on a kernel overlay and on our mount (of `DirLayer`s), both
/// over one lower directory that `make` fills and with uppers of their
/// own, both on a scratch tmpfs.
fn on_both(test: &str, make: impl FnOnce(&Path), check: impl Fn(&Path)) {
    if !fuse_ready(test) || !kernel_available() {
        return;
    }
    let mut scratch = Scratch::new().expect("a scratch tmpfs");
    let root = scratch.root.clone();
    let utf8 = |p: &Path| Utf8PathBuf::from_path_buf(p.to_owned()).unwrap();
    let l = root.join("l");
    fs::create_dir(&l).unwrap();
    make(&l);
    for d in ["ku", "kw"] {
        fs::create_dir(root.join(d)).unwrap();
    }
    let kernel = root.join("k");
    scratch.mount_overlay(
        &kernel,
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            l.display(),
            root.join("ku").display(),
            root.join("kw").display()
        ),
    );
    let lower = DirLayer::open(utf8(&l)).unwrap();
    let upper = DirLayer::open_upper(utf8(&root.join("ou")), utf8(&root.join("ow"))).unwrap();
    let view = MergedView::new(vec![Arc::new(lower) as Arc<dyn Layer>], upper).unwrap();
    let ours = root.join("o");
    fs::create_dir(&ours).unwrap();
    let mounted = mount(view, &ours, &MountOptions::default()).expect("mount");
    check(&kernel);
    check(&ours);
    drop(mounted);
    scratch.unmount_last();
}

#[test]
fn names_of_a_lower_hard_link_part_at_a_copy_up_as_on_the_kernel() {
    on_both(
        "names_of_a_lower_hard_link_part_at_a_copy_up_as_on_the_kernel",
        |l| {
            fs::write(l.join("a"), "lower\n").unwrap();
            fs::create_dir(l.join("b")).unwrap();
            fs::hard_link(l.join("a"), l.join("b/c")).unwrap();
        },
        |m| {
            let (a, c) = (m.join("a"), m.join("b/c"));
            let stat = |p: &Path| {
                let s = fs::symlink_metadata(p).unwrap();
                (s.ino(), s.nlink(), s.mode() & 0o7777)
            };
            let (ino, nlink, mode) = stat(&a);
            assert_eq!(stat(&c), (ino, 2, mode), "{}: one file below", m.display());
            assert_eq!(nlink, 2);
            // A write through `b/c` copies up `b/c` only.
            fs::write(&c, "upper\n").unwrap();
            assert_eq!(
                fs::read_to_string(&a).unwrap(),
                "lower\n",
                "{}",
                m.display()
            );
            assert_eq!(fs::read_to_string(&c).unwrap(), "upper\n");
            assert_eq!(
                stat(&a),
                (ino, 2, mode),
                "{}: `a` is still below",
                m.display()
            );
            let (c_ino, c_nlink, _) = stat(&c);
            assert_ne!(
                c_ino,
                ino,
                "{}: the copy has a number of its own",
                m.display()
            );
            assert_eq!(c_nlink, 1);
            // A chmod through `a` copies up `a` only.
            fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).unwrap();
            assert_eq!(stat(&c), (c_ino, 1, mode), "{}", m.display());
            let (a_ino, a_nlink, a_mode) = stat(&a);
            assert_eq!((a_nlink, a_mode), (1, 0o600), "{}", m.display());
            assert_ne!(a_ino, ino);
            assert_ne!(a_ino, c_ino);
            assert_eq!(fs::read_to_string(&a).unwrap(), "lower\n");
            // A hard link to the copy: one file of two names again.
            fs::hard_link(&c, m.join("b/d")).unwrap();
            fs::write(m.join("b/d"), "both\n").unwrap();
            assert_eq!(fs::read_to_string(&c).unwrap(), "both\n", "{}", m.display());
            assert_eq!(stat(&c), stat(&m.join("b/d")));
            assert_eq!(stat(&c).1, 2);
        },
    );
}

#[test]
fn a_merged_directory_copied_up_by_chown_of_nothing_has_one_link_as_on_the_kernel() {
    on_both(
        "a_merged_directory_copied_up_by_chown_of_nothing_has_one_link_as_on_the_kernel",
        |l| {
            fs::create_dir_all(l.join("c/sub")).unwrap();
            fs::write(l.join("c/a"), "x").unwrap();
        },
        |m| {
            let c = m.join("c");
            assert_eq!(
                fs::symlink_metadata(&c).unwrap().nlink(),
                3,
                "{}",
                m.display()
            );
            let before = fs::symlink_metadata(&c).unwrap();
            let ctime = (before.ctime(), before.ctime_nsec());
            std::thread::sleep(std::time::Duration::from_millis(20));
            std::os::unix::fs::lchown(&c, None, None).unwrap();
            let after = fs::symlink_metadata(&c).unwrap();
            assert_eq!(after.nlink(), 1, "{}: merged now", m.display());
            assert_ne!(
                (after.ctime(), after.ctime_nsec()),
                ctime,
                "{}: a new ctime",
                m.display()
            );
        },
    );
}

#[test]
fn rewinddir_shows_new_names_as_on_the_kernel() {
    on_both(
        "rewinddir_shows_new_names_as_on_the_kernel",
        |l| {
            fs::create_dir(l.join("d")).unwrap();
            fs::write(l.join("d/a"), "a").unwrap();
            fs::write(l.join("d/b"), "b").unwrap();
        },
        super::rewinddir_shows_new_names,
    );
}
