//! The FUSE mount (`layerstack::mount`): one named test per rule, each
//! through real system calls (std::fs, rustix) on a mount of a view over
//! `MemLayer`s, with an upper in memory or on disk. They need root and
//! `/dev/fuse`; elsewhere each prints one `SKIP` line (and fails with
//! `LAYERSTACK_REQUIRE_ROOT=1`). `mount::kernel` mounts what a FUSE session
//! wrote, committed, with the kernel's overlayfs and compares.

#[cfg(feature = "proptest")]
mod differential;
#[cfg(feature = "proptest")]
mod kernel;
#[cfg(feature = "proptest")]
mod suites;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use layerstack::layer::Redirect;
use layerstack::merged::DirRename;
use layerstack::merged::ViewOptions;
use layerstack::mount::{MountOptions, Mounted, mount};
use layerstack::{
    Content, DirLayer, DirListing, Entry, Layer, LayerMut, LayerPath, MemLayer, MergedView,
    Metadata, NameBuf, Node, Timestamp,
};
use rustix::fs::{CWD, Mode, OFlags, RenameFlags};

use crate::support::TempDir;

/// Unmounts `mounted` and gives its view back, as [`Mounted::unmount`],
/// but retries `EBUSY` for up to two seconds: the kernel sends FUSE's
/// release of a file after its close returns, and a parallel test's child
/// holds copies of this process's descriptors (a file of the mount among
/// them) between its fork and its exec. A mount still busy after that is
/// the test's own doing, and its error is returned.
pub fn unmount_settled(mounted: Mounted) -> layerstack::Result<MergedView> {
    let unmounter = mounted.unmounter();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match unmounter.unmount() {
            Ok(()) => return mounted.wait(),
            Err(e)
                if e.kind() == layerstack::ErrorKind::Busy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the mount tests can run here: root and `/dev/fuse`. Prints one
/// `SKIP` line otherwise, or panics with `LAYERSTACK_REQUIRE_ROOT=1`.
pub fn fuse_ready(test: &str) -> bool {
    let reason = if !rustix::process::geteuid().is_root() {
        "needs root"
    } else if !Path::new("/dev/fuse").exists() {
        "needs /dev/fuse"
    } else {
        return true;
    };
    assert!(
        std::env::var_os("LAYERSTACK_REQUIRE_ROOT").is_none(),
        "mount::{test} {reason} and LAYERSTACK_REQUIRE_ROOT is set"
    );
    eprintln!("SKIP mount::{test}: {reason}");
    false
}

fn lower() -> MemLayer {
    let mut l = MemLayer::new();
    l.add_file("etc/conf", "lower data\n").unwrap();
    l.add_file("etc/other", "other\n").unwrap();
    l.add_file("d/a", "a\n").unwrap();
    l.add_file("d/b", "b\n").unwrap();
    l.add_symlink("link", "etc/conf").unwrap();
    l
}

/// A mounted view and its scratch directory (mount point `m`, and `u`,
/// `w` for an upper on disk).
pub struct Mnt {
    // Dropped first: the mount goes before its directory.
    mounted: Option<Mounted>,
    pub dir: TempDir,
}

impl Mnt {
    pub fn new(test: &str, make: impl FnOnce(&TempDir) -> MergedView) -> Mnt {
        let dir = TempDir::new(&format!("mount-{test}"));
        fs::create_dir(dir.path("m")).unwrap();
        let view = make(&dir);
        let mounted = mount(view, dir.path("m"), &MountOptions::default()).expect("mount");
        Mnt {
            mounted: Some(mounted),
            dir,
        }
    }

    /// A view over [`lower`] with an upper in memory.
    fn memory(test: &str, options: ViewOptions) -> Mnt {
        Mnt::new(test, |_| {
            MergedView::with_options(
                vec![Arc::new(lower()) as Arc<dyn Layer>],
                MemLayer::new(),
                options,
            )
            .unwrap()
        })
    }

    /// A view over [`lower`] with an upper on disk (`u`, work `w`).
    fn disk(test: &str) -> Mnt {
        Mnt::new(test, |dir| {
            let upper = DirLayer::open_upper(dir.path("u"), dir.path("w")).unwrap();
            MergedView::new(vec![Arc::new(lower()) as Arc<dyn Layer>], upper).unwrap()
        })
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        let m = self.mounted.as_ref().unwrap().mountpoint();
        if rel.is_empty() {
            m.to_owned()
        } else {
            m.join(rel)
        }
    }

    /// Unmounts; the scratch directory stays until `self` goes.
    pub fn unmount(&mut self) -> MergedView {
        unmount_settled(self.mounted.take().unwrap()).expect("unmount")
    }
}

fn errno(r: std::io::Result<impl std::fmt::Debug>) -> i32 {
    r.expect_err("the call fails")
        .raw_os_error()
        .expect("an errno")
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn copy_up_on_write_leaves_the_lower_untouched() {
    if !fuse_ready("copy_up_on_write_leaves_the_lower_untouched") {
        return;
    }
    let base = Arc::new(lower());
    let b2 = Arc::clone(&base);
    let mut m = Mnt::new("copyup", move |_| {
        MergedView::new(vec![b2 as Arc<dyn Layer>], MemLayer::new()).unwrap()
    });
    assert_eq!(fs::read_to_string(m.p("etc/conf")).unwrap(), "lower data\n");
    fs::write(m.p("etc/conf"), "upper data\n").unwrap();
    assert_eq!(fs::read_to_string(m.p("etc/conf")).unwrap(), "upper data\n");
    let view = m.unmount();
    assert_eq!(view.read_to_string("etc/conf").unwrap(), "upper data\n");
    let changed: Vec<String> = view
        .changes()
        .unwrap()
        .into_iter()
        .map(|(p, _)| p.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(changed, ["etc", "etc/conf"]);
    let lower: &dyn Layer = &*base;
    assert_eq!(
        &lower
            .read_at(&LayerPath::new("etc/conf").unwrap(), 0, 100)
            .unwrap()[..],
        b"lower data\n"
    );
}

#[test]
fn delete_leaves_a_whiteout_in_the_upper_after_unmount() {
    if !fuse_ready("delete_leaves_a_whiteout_in_the_upper_after_unmount") {
        return;
    }
    let mut m = Mnt::disk("whiteout");
    fs::remove_file(m.p("etc/conf")).unwrap();
    assert_eq!(names(&m.p("etc")), BTreeSet::from(["other".to_owned()]));
    assert_eq!(errno(fs::metadata(m.p("etc/conf"))), libc_errno::ENOENT);
    let upper = m.dir.path("u");
    let view = m.unmount();
    let meta = fs::symlink_metadata(upper.join("etc/conf")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &meta.file_type()
    ));
    assert_eq!(meta.rdev(), 0, "a whiteout is the device 0/0");
    assert!(!view.exists("etc/conf").unwrap());
}

#[test]
fn a_directory_made_again_after_rmdir_is_opaque() {
    if !fuse_ready("a_directory_made_again_after_rmdir_is_opaque") {
        return;
    }
    let mut m = Mnt::disk("opaque");
    fs::remove_dir_all(m.p("d")).unwrap();
    fs::create_dir(m.p("d")).unwrap();
    assert!(names(&m.p("d")).is_empty(), "old lower entries stay hidden");
    fs::write(m.p("d/new"), "n").unwrap();
    assert_eq!(names(&m.p("d")), BTreeSet::from(["new".to_owned()]));
    let upper = m.dir.path("u");
    let view = m.unmount();
    let opaque = xattr(upper.join("d").as_std_path(), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    assert_eq!(view.read_dir("d").unwrap().len(), 1);
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("lgetxattr {}: {e}", path.display()),
    }
}

#[test]
fn renaming_a_lower_directory_is_exdev_by_default() {
    if !fuse_ready("renaming_a_lower_directory_is_exdev_by_default") {
        return;
    }
    let m = Mnt::memory("exdev", ViewOptions::default());
    assert_eq!(errno(fs::rename(m.p("d"), m.p("e"))), libc_errno::EXDEV);
    // What `mv` does next: copy, then remove.
    fs::create_dir(m.p("e")).unwrap();
    assert!(m.p("d/a").exists());
}

#[test]
fn renaming_a_lower_directory_redirects_with_the_option() {
    if !fuse_ready("renaming_a_lower_directory_redirects_with_the_option") {
        return;
    }
    let mut m = Mnt::memory(
        "redirect",
        ViewOptions::default().dir_rename(DirRename::Redirect),
    );
    fs::rename(m.p("d"), m.p("e")).unwrap();
    assert_eq!(fs::read_to_string(m.p("e/a")).unwrap(), "a\n");
    assert_eq!(errno(fs::metadata(m.p("d"))), libc_errno::ENOENT);
    let view = m.unmount();
    assert_eq!(view.read_to_string("e/b").unwrap(), "b\n");
}

#[test]
fn rename_noreplace_and_exchange() {
    if !fuse_ready("rename_noreplace_and_exchange") {
        return;
    }
    let m = Mnt::memory("renameat2", ViewOptions::default());
    let (a, b) = (m.p("etc/conf"), m.p("etc/other"));
    let r = rustix::fs::renameat_with(CWD, &a, CWD, &b, RenameFlags::NOREPLACE);
    assert_eq!(r, Err(rustix::io::Errno::EXIST));
    rustix::fs::renameat_with(CWD, &a, CWD, &b, RenameFlags::EXCHANGE).unwrap();
    assert_eq!(fs::read_to_string(&a).unwrap(), "other\n");
    assert_eq!(fs::read_to_string(&b).unwrap(), "lower data\n");
    rustix::fs::renameat_with(CWD, &a, CWD, m.p("etc/new"), RenameFlags::NOREPLACE).unwrap();
    assert_eq!(
        names(&m.p("etc")),
        BTreeSet::from(["new".to_owned(), "other".to_owned()])
    );
    // As the kernel's overlayfs: no RENAME_WHITEOUT.
    let r = rustix::fs::renameat_with(
        CWD,
        m.p("etc/new"),
        CWD,
        m.p("etc/x"),
        RenameFlags::WHITEOUT,
    );
    assert_eq!(r, Err(rustix::io::Errno::INVAL));
}

#[test]
fn hard_links_share_st_ino_and_st_ino_survives_copy_up() {
    if !fuse_ready("hard_links_share_st_ino_and_st_ino_survives_copy_up") {
        return;
    }
    let m = Mnt::disk("links");
    let before = fs::metadata(m.p("etc/conf")).unwrap();
    fs::write(m.p("etc/conf"), "changed\n").unwrap();
    let after = fs::metadata(m.p("etc/conf")).unwrap();
    assert_eq!(before.ino(), after.ino(), "st_ino stable across copy-up");
    fs::hard_link(m.p("etc/conf"), m.p("etc/conf2")).unwrap();
    let (one, two) = (
        fs::metadata(m.p("etc/conf")).unwrap(),
        fs::metadata(m.p("etc/conf2")).unwrap(),
    );
    assert_eq!(one.ino(), two.ino());
    assert_eq!((one.nlink(), two.nlink()), (2, 2));
    fs::write(m.p("etc/conf2"), "through the link\n").unwrap();
    assert_eq!(
        fs::read_to_string(m.p("etc/conf")).unwrap(),
        "through the link\n"
    );
    fs::remove_file(m.p("etc/conf")).unwrap();
    assert_eq!(fs::metadata(m.p("etc/conf2")).unwrap().nlink(), 1);
}

#[test]
fn an_open_file_reads_and_writes_after_rename_and_unlink() {
    if !fuse_ready("an_open_file_reads_and_writes_after_rename_and_unlink") {
        return;
    }
    for mut m in [
        Mnt::memory("orphan-mem", ViewOptions::default()),
        Mnt::disk("orphan-disk"),
    ] {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.p("etc/conf"))
            .unwrap();
        fs::rename(m.p("etc/conf"), m.p("moved")).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(b"after rename\n").unwrap();
        assert_eq!(
            fs::read_to_string(m.p("moved")).unwrap(),
            "lower data\nafter rename\n"
        );
        fs::remove_file(m.p("moved")).unwrap();
        assert_eq!(f.metadata().unwrap().nlink(), 0, "fstat of an orphan");
        f.write_all(b"after unlink\n").unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "lower data\nafter rename\nafter unlink\n");
        assert_eq!(f.metadata().unwrap().len(), s.len() as u64);
        drop(f);
        assert!(!m.p("moved").exists());
        let view = m.unmount();
        assert!(view.open_handles().is_empty());
    }
}

#[test]
fn append_and_truncate_with_append() {
    if !fuse_ready("append_and_truncate_with_append") {
        return;
    }
    let m = Mnt::memory("append", ViewOptions::default());
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.p("etc/conf"))
        .unwrap();
    f.write_all(b"one\n").unwrap();
    f.write_all(b"two\n").unwrap();
    drop(f);
    assert_eq!(
        fs::read_to_string(m.p("etc/conf")).unwrap(),
        "lower data\none\ntwo\n"
    );
    let fd = rustix::fs::open(
        m.p("etc/other"),
        OFlags::WRONLY | OFlags::APPEND | OFlags::TRUNC,
        Mode::empty(),
    )
    .unwrap();
    assert_eq!(rustix::io::write(&fd, b"x").unwrap(), 1);
    assert_eq!(rustix::io::write(&fd, b"y").unwrap(), 1);
    drop(fd);
    assert_eq!(fs::read_to_string(m.p("etc/other")).unwrap(), "xy");
    // O_TRUNC on a read-only open truncates too, as Linux does.
    let fd = rustix::fs::open(m.p("d/a"), OFlags::RDONLY | OFlags::TRUNC, Mode::empty()).unwrap();
    drop(fd);
    assert_eq!(fs::metadata(m.p("d/a")).unwrap().len(), 0);
}

#[test]
fn extended_attributes() {
    if !fuse_ready("extended_attributes") {
        return;
    }
    let m = Mnt::disk("xattr");
    let f = m.p("etc/conf");
    rustix::fs::setxattr(&f, "user.color", b"blue", rustix::fs::XattrFlags::empty()).unwrap();
    let mut buf = [0u8; 64];
    let n = rustix::fs::getxattr(&f, "user.color", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"blue");
    let n = rustix::fs::listxattr(&f, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"user.color\0");
    assert_eq!(
        rustix::fs::setxattr(&f, "user.color", b"red", rustix::fs::XattrFlags::CREATE),
        Err(rustix::io::Errno::EXIST)
    );
    assert_eq!(
        rustix::fs::getxattr(&f, "user.color", &mut [0u8; 2]),
        Err(rustix::io::Errno::RANGE)
    );
    rustix::fs::removexattr(&f, "user.color").unwrap();
    assert_eq!(
        rustix::fs::getxattr(&f, "user.color", &mut buf),
        Err(rustix::io::Errno::NODATA)
    );
    assert_eq!(
        rustix::fs::setxattr(&f, "user.x", b"1", rustix::fs::XattrFlags::REPLACE),
        Err(rustix::io::Errno::NODATA)
    );
}

#[test]
fn statfs_reports_the_upper_filesystem() {
    if !fuse_ready("statfs_reports_the_upper_filesystem") {
        return;
    }
    let m = Mnt::disk("statfs");
    let ours = rustix::fs::statvfs(m.p("")).unwrap();
    let upper = rustix::fs::statvfs(m.dir.path("u").as_std_path()).unwrap();
    assert_eq!(ours.f_namemax, 255);
    assert_eq!(ours.f_blocks, upper.f_blocks);
    assert_eq!(ours.f_bsize, upper.f_bsize);
    assert_eq!(ours.f_files, upper.f_files);
}

#[test]
fn names_over_255_bytes_are_enametoolong() {
    if !fuse_ready("names_over_255_bytes_are_enametoolong") {
        return;
    }
    let m = Mnt::memory("nametoolong", ViewOptions::default());
    let long = "n".repeat(256);
    assert_eq!(errno(fs::write(m.p(&long), "x")), libc_errno::ENAMETOOLONG);
    assert_eq!(errno(fs::metadata(m.p(&long))), libc_errno::ENAMETOOLONG);
    assert_eq!(errno(fs::create_dir(m.p(&long))), libc_errno::ENAMETOOLONG);
    let ok = "n".repeat(255);
    fs::write(m.p(&ok), "x").unwrap();
    assert_eq!(
        errno(fs::rename(m.p(&ok), m.p(&long))),
        libc_errno::ENAMETOOLONG
    );
}

#[test]
fn a_big_directory_lists_each_name_once_while_names_go() {
    if !fuse_ready("a_big_directory_lists_each_name_once_while_names_go") {
        return;
    }
    const N: usize = 3000;
    let m = Mnt::new("bigdir", |_| {
        let mut l = MemLayer::new();
        for i in 0..N {
            l.add_file(format!("big/file-{i:05}").as_str(), "x")
                .unwrap();
        }
        MergedView::new(vec![Arc::new(l) as Arc<dyn Layer>], MemLayer::new()).unwrap()
    });
    assert_eq!(names(&m.p("big")).len(), N);
    let mut seen = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for (k, e) in fs::read_dir(m.p("big")).unwrap().enumerate() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(seen.insert(name.clone()), "{name} listed twice");
        if k == 10 {
            // Remove every odd-numbered name not listed yet.
            for i in (1..N).step_by(2) {
                let n = format!("file-{i:05}");
                if !seen.contains(&n) {
                    fs::remove_file(m.p("big").join(&n)).unwrap();
                    removed.insert(n);
                }
            }
        }
    }
    for i in 0..N {
        let n = format!("file-{i:05}");
        assert!(
            seen.contains(&n) || removed.contains(&n),
            "{n} never listed"
        );
    }
    assert_eq!(names(&m.p("big")).len(), N - removed.len());
}

#[test]
fn chmod_chown_and_utimens() {
    if !fuse_ready("chmod_chown_and_utimens") {
        return;
    }
    let mut m = Mnt::disk("attrs");
    let f = m.p("etc/conf");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4750)).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o4750);
    std::os::unix::fs::chown(&f, Some(1000), Some(1001)).unwrap();
    let meta = fs::metadata(&f).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
    assert_eq!(meta.mode() & 0o7777, 0o750, "chown clears setuid");
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 5,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 7,
        },
    };
    rustix::fs::utimensat(CWD, &f, &t, rustix::fs::AtFlags::empty()).unwrap();
    let meta = fs::metadata(&f).unwrap();
    assert_eq!((meta.atime(), meta.atime_nsec()), (1_000_000_000, 5));
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_500_000_000, 7));
    // A symlink's own times (utimensat AT_SYMLINK_NOFOLLOW).
    rustix::fs::utimensat(CWD, m.p("link"), &t, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
    assert_eq!(
        fs::symlink_metadata(m.p("link")).unwrap().mtime(),
        1_500_000_000
    );
    assert_eq!(fs::metadata(m.p("link")).unwrap().mtime(), 1_500_000_000);
    let view = m.unmount();
    let meta = view.metadata("etc/conf").unwrap();
    assert_eq!(
        (meta.uid, meta.gid, meta.mode & 0o7777),
        (1000, 1001, 0o750)
    );
}

#[test]
fn a_non_root_caller_is_checked_by_default_permissions() {
    if !fuse_ready("a_non_root_caller_is_checked_by_default_permissions") {
        return;
    }
    let m = Mnt::memory("perms", ViewOptions::default());
    fs::write(m.p("secret"), "s\n").unwrap();
    fs::set_permissions(m.p("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(m.p("tmp")).unwrap();
    fs::set_permissions(m.p("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let nobody = |script: &str| {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .current_dir(m.p(""))
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let out = nobody("cat secret");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    let out = nobody("cat etc/conf");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "lower data\n");
    let out = nobody("echo x > etc/new");
    assert!(!out.status.success(), "etc is root's, mode 0755");
    let out = nobody("umask 027; echo mine > tmp/mine && mkdir tmp/sub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = fs::metadata(m.p("tmp/mine")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, 65534, 0o640)
    );
    let meta = fs::metadata(m.p("tmp/sub")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, 65534, 0o750)
    );
}

/// Drops the kernel's unused dentries and inodes (it then sends FORGETs)
/// until the mount's node table holds `want` nodes, or 5 seconds pass.
fn forgotten_down_to(m: &Mnt, want: usize) -> usize {
    let mounted = m.mounted.as_ref().unwrap();
    for _ in 0..50 {
        fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        if mounted.known_nodes() == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    mounted.known_nodes()
}

#[test]
fn lookup_counts_are_exact_so_forgotten_nodes_leave_the_table() {
    if !fuse_ready("lookup_counts_are_exact_so_forgotten_nodes_leave_the_table") {
        return;
    }
    let m = Mnt::memory("lookups", ViewOptions::default());
    // Lookups (stat), readdirplus entries (ls -l), creations, links.
    for p in ["etc/conf", "etc/other", "d/a", "link"] {
        fs::symlink_metadata(m.p(p)).unwrap();
    }
    for e in fs::read_dir(m.p("d")).unwrap() {
        e.unwrap().metadata().unwrap();
    }
    fs::write(m.p("d/new"), "n").unwrap();
    fs::create_dir(m.p("d/sub")).unwrap();
    fs::hard_link(m.p("d/new"), m.p("d/sub/again")).unwrap();
    std::os::unix::fs::symlink("x", m.p("d/sl")).unwrap();
    fs::rename(m.p("d/a"), m.p("d/sub/a")).unwrap();
    fs::remove_file(m.p("d/b")).unwrap();
    let open = fs::File::open(m.p("etc/conf")).unwrap();
    assert!(m.mounted.as_ref().unwrap().known_nodes() >= 8);
    // The open file's node stays (and its parent, which its dentry holds).
    assert_eq!(forgotten_down_to(&m, 2), 2);
    drop(open);
    assert_eq!(forgotten_down_to(&m, 0), 0);
    // And the names still work after everything was forgotten.
    assert_eq!(fs::read_to_string(m.p("d/sub/again")).unwrap(), "n");
    assert_eq!(fs::read_to_string(m.p("d/sub/a")).unwrap(), "a\n");
}

#[test]
fn several_threads_read_at_once() {
    if !fuse_ready("several_threads_read_at_once") {
        return;
    }
    let m = Mnt::new("threads", |_| {
        let mut l = MemLayer::new();
        for i in 0..64 {
            l.add_file(format!("f{i}").as_str(), format!("{i}\n").repeat(1000))
                .unwrap();
        }
        MergedView::new(vec![Arc::new(l) as Arc<dyn Layer>], MemLayer::new()).unwrap()
    });
    let root = m.p("");
    std::thread::scope(|s| {
        for t in 0..8 {
            let root = &root;
            s.spawn(move || {
                for round in 0..20 {
                    let i = (t * 7 + round * 3) % 64;
                    let data = fs::read_to_string(root.join(format!("f{i}"))).unwrap();
                    assert_eq!(data, format!("{i}\n").repeat(1000));
                }
            });
        }
    });
}

#[test]
fn unmount_is_refused_while_busy_and_wait_returns_after_an_outside_unmount() {
    if !fuse_ready("unmount_is_refused_while_busy_and_wait_returns_after_an_outside_unmount") {
        return;
    }
    let mut m = Mnt::memory("busy", ViewOptions::default());
    let f = fs::File::open(m.p("etc/conf")).unwrap();
    let mounted = m.mounted.take().unwrap();
    let unmounter = mounted.unmounter();
    let e = unmounter.unmount().unwrap_err();
    assert_eq!(e.kind(), layerstack::ErrorKind::Busy);
    drop(f);
    let waiter = std::thread::spawn(move || mounted.wait());
    // As `umount MNT` from a shell.
    let st = Command::new("umount")
        .arg(m.dir.path("m").as_std_path())
        .status()
        .unwrap();
    assert!(st.success());
    let view = waiter.join().unwrap().expect("wait gives the view back");
    assert!(view.open_handles().is_empty());
    view.commit()
        .expect("the view commits after the mount is gone");
    // Nothing left to unmount: a no-op, not an unmount of what is below.
    unmounter.unmount().unwrap();
}

/// A view over [`lower`] whose upper in memory already holds a file of
/// two names, `x` and `d/y`, that the mount has never handed out.
fn upper_with_links(test: &str) -> Mnt {
    Mnt::new(test, |_| {
        let mut upper = MemLayer::new();
        upper.add_file("x", "data\n").unwrap();
        upper.add_hard_link("x", "d/y").unwrap();
        MergedView::new(vec![Arc::new(lower()) as Arc<dyn Layer>], upper).unwrap()
    })
}

#[test]
fn removing_the_only_known_name_of_a_linked_file_keeps_it_open_and_the_same() {
    if !fuse_ready("removing_the_only_known_name_of_a_linked_file_keeps_it_open_and_the_same") {
        return;
    }
    let m = upper_with_links("other-names");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("x"))
        .unwrap();
    let ino = f.metadata().unwrap().ino();
    fs::remove_file(m.p("x")).unwrap();
    // The other name is the same file: the same node, so the kernel keeps
    // the open descriptor (a new generation would make it fail with EIO).
    let y = fs::symlink_metadata(m.p("d/y")).unwrap();
    assert_eq!((y.ino(), y.nlink()), (ino, 1));
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(b"more\n").unwrap();
    assert_eq!(f.metadata().unwrap().nlink(), 1);
    assert_eq!(fs::read_to_string(m.p("d/y")).unwrap(), "data\nmore\n");
}

#[test]
fn a_file_known_by_two_names_keeps_a_path_when_one_directory_is_forgotten() {
    if !fuse_ready("a_file_known_by_two_names_keeps_a_path_when_one_directory_is_forgotten") {
        return;
    }
    let m = upper_with_links("forgotten-parent");
    // The kernel learns the file as `x` (in the root) and as `d/y`.
    assert_eq!(
        fs::symlink_metadata(m.p("x")).unwrap().ino(),
        fs::symlink_metadata(m.p("d/y")).unwrap().ino()
    );
    fs::create_dir(m.p("e")).unwrap();
    fs::hard_link(m.p("d/y"), m.p("e/z")).unwrap();
    fs::remove_file(m.p("x")).unwrap();
    // Pin `e/z` (an O_PATH descriptor: no FUSE handle), then let the
    // kernel drop `d/y` and `d` and forget `d`.
    let pinned = rustix::fs::open(m.p("e/z"), OFlags::PATH, Mode::empty()).unwrap();
    for _ in 0..5 {
        fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A fresh getattr of the node (no cached attributes, no handle): it
    // needs a path, and `d/y` was the first the table learned.
    let st = rustix::fs::statx(
        &pinned,
        "",
        rustix::fs::AtFlags::EMPTY_PATH | rustix::fs::AtFlags::STATX_FORCE_SYNC,
        rustix::fs::StatxFlags::BASIC_STATS,
    )
    .expect("a getattr of a file whose first known directory was forgotten");
    assert_eq!(st.stx_nlink, 2);
    drop(pinned);
    assert_eq!(fs::read_to_string(m.p("e/z")).unwrap(), "data\n");
}

/// The names `d` reads from where it stands, `.` and `..` left out.
fn dir_names(d: &mut rustix::fs::Dir) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    while let Some(e) = d.read() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.insert(name);
        }
    }
    names
}

/// `rewinddir` of `ROOT/d` (holding `a` and `b`) after a name was made
/// and one removed shows both changes (`mount::kernel` checks the kernel's
/// overlayfs the same way).
pub fn rewinddir_shows_new_names(root: &Path) {
    let dir = root.join("d");
    let fd = rustix::fs::open(&dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let mut d = rustix::fs::Dir::new(fd).unwrap();
    let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(dir_names(&mut d), set(&["a", "b"]));
    fs::write(dir.join("new"), "n").unwrap();
    fs::remove_file(dir.join("a")).unwrap();
    d.rewind();
    assert_eq!(dir_names(&mut d), set(&["b", "new"]), "after rewinddir");
}

#[test]
fn rewinddir_lists_names_made_since_opendir() {
    if !fuse_ready("rewinddir_lists_names_made_since_opendir") {
        return;
    }
    for m in [
        Mnt::memory("rewind-mem", ViewOptions::default()),
        Mnt::disk("rewind-disk"),
    ] {
        rewinddir_shows_new_names(&m.p(""));
    }
}

/// The kernel keeps one cached listing per directory (`FOPEN_CACHE_DIR`),
/// filled by whichever handle reads from offset 0: a handle opened before
/// a change must not fill it with the names as they were.
#[test]
fn a_directory_handle_opened_before_a_change_does_not_hide_it_from_later_ones() {
    if !fuse_ready("a_directory_handle_opened_before_a_change_does_not_hide_it_from_later_ones") {
        return;
    }
    let list = |fd: rustix::fd::OwnedFd| dir_names(&mut rustix::fs::Dir::new(fd).unwrap());
    let open = |dir: &Path| {
        rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
    };
    let want: BTreeSet<String> = ["a", "b", "y"].iter().map(|s| (*s).to_owned()).collect();
    for m in [
        Mnt::memory("stale-dir-mem", ViewOptions::default()),
        Mnt::disk("stale-dir-disk"),
    ] {
        let dir = m.p("d");
        // A listing cached by the kernel first, as `ls` leaves one.
        assert_eq!(names(&dir).len(), 2);
        let early = open(&dir);
        fs::write(dir.join("y"), "y").unwrap();
        let late = open(&dir);
        // The early handle reads first (from offset 0), the late one after.
        assert_eq!(list(early), want, "the handle opened before the change");
        assert_eq!(list(late), want, "the handle opened after the change");
        assert_eq!(names(&dir), want, "a new opendir");
    }
}

/// `fsync` of a directory succeeds on a memory and a disk upper (the
/// mount passes it to the view's `sync_dir`; that the call reaches the
/// upper layer is `fsync_through_the_mount_reaches_the_upper_layer`). The
/// durability it gives cannot be seen from here: this checks only that the
/// request is answered without an error.
#[test]
fn fsync_of_a_directory_succeeds() {
    if !fuse_ready("fsync_of_a_directory_succeeds") {
        return;
    }
    for m in [
        Mnt::memory("fsyncdir-mem", ViewOptions::default()),
        Mnt::disk("fsyncdir-disk"),
    ] {
        fs::create_dir(m.p("new")).unwrap();
        for dir in ["new", "d", ""] {
            fs::File::open(m.p(dir))
                .unwrap()
                .sync_all()
                .unwrap_or_else(|e| panic!("fsync of directory {dir:?}: {e}"));
        }
    }
}

/// A sync that reached the upper layer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SyncCall {
    /// [`LayerMut::sync_dir`] of this directory.
    Dir(LayerPath),
    /// [`LayerMut::object_sync`] of the open file with this inode number
    /// (the layer's), as `fdatasync` when `data_only`.
    File { ino: u64, data_only: bool },
}

/// An upper layer that records every sync it is asked for, and passes
/// everything on to the layer it wraps.
#[derive(Debug)]
struct CountingSyncs<L> {
    inner: L,
    calls: Arc<std::sync::Mutex<Vec<SyncCall>>>,
}

impl<L: LayerMut> Layer for CountingSyncs<L> {
    fn lookup(&self, path: &LayerPath) -> layerstack::Result<Option<Entry>> {
        self.inner.lookup(path)
    }
    fn read_dir(&self, path: &LayerPath) -> layerstack::Result<DirListing> {
        self.inner.read_dir(path)
    }
    fn read_at(&self, path: &LayerPath, offset: u64, len: usize) -> layerstack::Result<Bytes> {
        self.inner.read_at(path, offset, len)
    }
    fn read_link(&self, path: &LayerPath) -> layerstack::Result<NameBuf> {
        self.inner.read_link(path)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

impl<L: LayerMut> LayerMut for CountingSyncs<L> {
    fn create(
        &mut self,
        path: &LayerPath,
        meta: &Metadata,
        content: Content,
    ) -> layerstack::Result<()> {
        self.inner.create(path, meta, content)
    }
    fn create_opaque_dir(&mut self, path: &LayerPath, meta: &Metadata) -> layerstack::Result<()> {
        self.inner.create_opaque_dir(path, meta)
    }
    fn copy_file(
        &mut self,
        path: &LayerPath,
        meta: &Metadata,
        src: &dyn Layer,
        src_path: &LayerPath,
    ) -> layerstack::Result<()> {
        self.inner.copy_file(path, meta, src, src_path)
    }
    fn fill_metacopy(
        &mut self,
        path: &LayerPath,
        src: &dyn Layer,
        src_path: &LayerPath,
    ) -> layerstack::Result<()> {
        self.inner.fill_metacopy(path, src, src_path)
    }
    fn write_at(&mut self, path: &LayerPath, offset: u64, data: &[u8]) -> layerstack::Result<()> {
        self.inner.write_at(path, offset, data)
    }
    fn set_len(&mut self, path: &LayerPath, len: u64) -> layerstack::Result<()> {
        self.inner.set_len(path, len)
    }
    fn set_metadata(&mut self, path: &LayerPath, meta: &Metadata) -> layerstack::Result<()> {
        self.inner.set_metadata(path, meta)
    }
    fn remove(&mut self, path: &LayerPath) -> layerstack::Result<()> {
        self.inner.remove(path)
    }
    fn whiteout(&mut self, path: &LayerPath) -> layerstack::Result<()> {
        self.inner.whiteout(path)
    }
    fn clear_dir(&mut self, path: &LayerPath) -> layerstack::Result<()> {
        self.inner.clear_dir(path)
    }
    fn set_opaque(&mut self, path: &LayerPath, opaque: bool) -> layerstack::Result<()> {
        self.inner.set_opaque(path, opaque)
    }
    fn set_redirect(
        &mut self,
        path: &LayerPath,
        redirect: Option<Redirect>,
    ) -> layerstack::Result<()> {
        self.inner.set_redirect(path, redirect)
    }
    fn hard_link(&mut self, existing: &LayerPath, new: &LayerPath) -> layerstack::Result<()> {
        self.inner.hard_link(existing, new)
    }
    fn rename(&mut self, from: &LayerPath, to: &LayerPath) -> layerstack::Result<()> {
        self.inner.rename(from, to)
    }
    fn rename_whiteout(&mut self, from: &LayerPath, to: &LayerPath) -> layerstack::Result<()> {
        self.inner.rename_whiteout(from, to)
    }
    fn exchange(&mut self, a: &LayerPath, b: &LayerPath) -> layerstack::Result<()> {
        self.inner.exchange(a, b)
    }
    fn commit(&mut self) -> layerstack::Result<Arc<dyn Layer>> {
        self.inner.commit()
    }
    fn open_object(&mut self, path: &LayerPath) -> layerstack::Result<u64> {
        self.inner.open_object(path)
    }
    fn close_object(&mut self, id: u64) -> layerstack::Result<()> {
        self.inner.close_object(id)
    }
    fn object_node(&self, id: u64) -> layerstack::Result<Node> {
        self.inner.object_node(id)
    }
    fn object_read_at(&self, id: u64, offset: u64, len: usize) -> layerstack::Result<Bytes> {
        self.inner.object_read_at(id, offset, len)
    }
    fn object_write_at(&mut self, id: u64, offset: u64, data: &[u8]) -> layerstack::Result<()> {
        self.inner.object_write_at(id, offset, data)
    }
    fn object_set_len(&mut self, id: u64, len: u64) -> layerstack::Result<()> {
        self.inner.object_set_len(id, len)
    }
    fn object_set_times(
        &mut self,
        id: u64,
        mtime: Timestamp,
        ctime: Timestamp,
    ) -> layerstack::Result<()> {
        self.inner.object_set_times(id, mtime, ctime)
    }
    fn object_sync(&self, id: u64, data_only: bool) -> layerstack::Result<()> {
        let ino = self.inner.object_node(id)?.meta.ino;
        self.calls
            .lock()
            .unwrap()
            .push(SyncCall::File { ino, data_only });
        self.inner.object_sync(id, data_only)
    }
    fn sync_dir(&self, path: &LayerPath) -> layerstack::Result<()> {
        self.calls.lock().unwrap().push(SyncCall::Dir(path.clone()));
        self.inner.sync_dir(path)
    }
}

/// `fsync` of a directory through the mount reaches the upper layer's
/// `sync_dir` for exactly that directory, once; a directory the upper does
/// not hold has nothing to sync there (as on the kernel's overlayfs, which
/// syncs only the upper's directory). `fsync` and `fdatasync` of a file
/// reach the layer's `object_sync` of exactly that file.
#[test]
fn fsync_through_the_mount_reaches_the_upper_layer() {
    if !fuse_ready("fsync_through_the_mount_reaches_the_upper_layer") {
        return;
    }
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let m = Mnt::new("fsync-reaches", move |dir| {
        let upper = CountingSyncs {
            inner: DirLayer::open_upper(dir.path("u"), dir.path("w")).unwrap(),
            calls: seen,
        };
        MergedView::new(vec![Arc::new(lower()) as Arc<dyn Layer>], upper).unwrap()
    });
    let take = || std::mem::take(&mut *calls.lock().unwrap());
    let path = |p: &str| LayerPath::new(p).unwrap();
    let fsync_dir = |dir: &str| {
        fs::File::open(m.p(dir))
            .unwrap()
            .sync_all()
            .unwrap_or_else(|e| panic!("fsync of directory {dir:?}: {e}"));
    };
    fs::create_dir(m.p("new")).unwrap();
    fs::create_dir(m.p("new/sub")).unwrap();
    assert_eq!(take(), [], "nothing syncs unasked");
    for dir in ["new", "new/sub", ""] {
        fsync_dir(dir);
        assert_eq!(take(), [SyncCall::Dir(path(dir))], "fsync of {dir:?}");
    }
    // Only in the lower layer: nothing of the upper to sync.
    fsync_dir("d");
    assert_eq!(take(), [], "fsync of the lower-only `d`");
    // Once copied up (a file in it changed), it is the upper's.
    fs::write(m.p("d/a"), "changed\n").unwrap();
    take();
    fsync_dir("d");
    assert_eq!(
        take(),
        [SyncCall::Dir(path("d"))],
        "fsync of the copied-up `d`"
    );

    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.p("new/f"))
        .unwrap();
    f.write_all(b"data\n").unwrap();
    let ino = fs::metadata(m.dir.path("u/new/f")).unwrap().ino();
    take();
    f.sync_all().unwrap();
    assert_eq!(
        take(),
        [SyncCall::File {
            ino,
            data_only: false
        }],
        "fsync of new/f"
    );
    f.sync_data().unwrap();
    assert_eq!(
        take(),
        [SyncCall::File {
            ino,
            data_only: true
        }],
        "fdatasync of new/f"
    );
    drop(f);
    assert_eq!(
        fs::read_to_string(m.dir.path("u/new/f")).unwrap(),
        "data\n",
        "the data is in the upper directory"
    );
}

/// errno values (Linux's, on every architecture).
mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EXDEV: i32 = 18;
    pub const ENAMETOOLONG: i32 = 36;
}

/// Dropping a `Mounted` while a file in it is open (the unmount gets
/// `EBUSY`) detaches it: the mount point is an empty directory again at
/// once, and the open file is still served until it is closed. Before,
/// the mount stayed in the tree with no server left.
#[test]
fn dropping_a_busy_mount_detaches_it() {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    if !fuse_ready("dropping_a_busy_mount_detaches_it") {
        return;
    }
    let mut m = Mnt::memory("drop-busy", ViewOptions::default());
    let mnt = m.p("");
    let parent_dev = fs::metadata(m.dir.path("")).unwrap().dev();
    assert_ne!(fs::metadata(&mnt).unwrap().dev(), parent_dev, "mounted");
    let mut open = fs::File::open(m.p("etc/conf")).unwrap();
    drop(m.mounted.take());
    assert_eq!(
        fs::metadata(&mnt).unwrap().dev(),
        parent_dev,
        "the mount point is the scratch directory again"
    );
    assert_eq!(names(&mnt), BTreeSet::new());
    let mut read = String::new();
    open.read_to_string(&mut read).unwrap();
    assert_eq!(read, "lower data\n");
    drop(open);
    let mounted = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounted.contains(mnt.to_str().unwrap()),
        "nothing is left mounted at {}",
        mnt.display()
    );
}
