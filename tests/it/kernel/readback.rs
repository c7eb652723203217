//! Uppers the kernel wrote with non-default options, read back by a view
//! over `DirLayer`s, and the work-directory states both sides must agree
//! on: each checked against a real overlay mount.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use camino::Utf8Path;
use layerstack::layer::dir::{DirLayerOptions, Durability};
use layerstack::merged::Metacopy;
use layerstack::merged::ViewOptions;
use layerstack::{DirLayer, ErrorKind, Layer, MergedView, NameBuf};

use crate::support::harness::{Scratch, kernel_available};

fn utf8(p: &Path) -> &Utf8Path {
    Utf8Path::from_path(p).expect("scratch paths are UTF-8")
}

/// A scratch tmpfs with `l`, `u`, `w` and `m`, the lower holding `files`.
fn scratch_with(files: &[(&str, &str)]) -> Scratch {
    let scratch = Scratch::new().expect("mount the scratch tmpfs");
    for d in ["l", "u", "w", "m"] {
        fs::create_dir(scratch.root.join(d)).expect("mkdir in the scratch");
    }
    for (path, data) in files {
        let at = scratch.root.join("l").join(path);
        fs::create_dir_all(at.parent().expect("a parent")).expect("mkdir a lower dir");
        fs::write(at, data).expect("write a lower file");
    }
    scratch
}

fn overlay_data(scratch: &Scratch, extra: &str) -> String {
    let r = scratch.root.display();
    let mut data = format!("lowerdir={r}/l,upperdir={r}/u,workdir={r}/w");
    if !extra.is_empty() {
        data.push(',');
        data.push_str(extra);
    }
    data
}

fn view_over(scratch: &Scratch, options: ViewOptions) -> layerstack::Result<MergedView> {
    let lower = DirLayer::open(utf8(&scratch.root.join("l")))?;
    let upper = DirLayer::open_upper(utf8(&scratch.root.join("u")), utf8(&scratch.root.join("w")))?;
    MergedView::with_options(vec![Arc::new(lower) as Arc<dyn Layer>], upper, options)
}

/// Issue: an upper written with `metacopy=on` read as zeros. The kernel
/// without `metacopy=on` refuses such files (`EPERM`), and so does a view
/// by default; with `Metacopy::Follow` the view reads what the kernel with
/// `metacopy=on` reads, and its first write copies the data up.
#[test]
fn a_metacopy_upper_reads_as_the_kernel_reads_it() {
    if !kernel_available() {
        return;
    }
    let mut scratch = scratch_with(&[("f", "hello\n"), ("d/g", "world\n"), ("h", "third\n")]);
    let mnt = scratch.root.join("m");
    scratch.mount_overlay(&mnt, &overlay_data(&scratch, "metacopy=on,redirect_dir=on"));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(mnt.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(mnt.join("d/g"), mnt.join("g2")).unwrap();
    std::os::unix::fs::chown(mnt.join("h"), Some(5), None).unwrap();
    let seen: Vec<Vec<u8>> = ["f", "g2", "h"]
        .iter()
        .map(|p| fs::read(mnt.join(p)).unwrap())
        .collect();
    scratch.unmount_last();
    // What the kernel left: metadata-only copies, holes of the right size.
    let upper_g2 = scratch.root.join("u/g2");
    assert_eq!(fs::metadata(&upper_g2).unwrap().len(), 6);
    assert_eq!(fs::read(&upper_g2).unwrap(), [0u8; 6]);

    let view = view_over(&scratch, ViewOptions::default()).unwrap();
    for p in ["f", "g2", "h"] {
        assert_eq!(view.read(p).unwrap_err().kind(), ErrorKind::NotPermitted);
        assert_eq!(
            view.metadata(p).unwrap_err().kind(),
            ErrorKind::NotPermitted
        );
    }
    drop(view);
    scratch.mount_overlay(&mnt, &overlay_data(&scratch, ""));
    let refused = fs::read(mnt.join("g2")).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc_eperm()));
    scratch.unmount_last();

    let view = view_over(&scratch, ViewOptions::default().metacopy(Metacopy::Follow)).unwrap();
    for (p, want) in ["f", "g2", "h"].iter().zip(&seen) {
        assert_eq!(&view.read(p).unwrap()[..], &want[..], "{p}");
    }
    assert_eq!(view.metadata("f").unwrap().mode, 0o600);
    assert_eq!(view.metadata("h").unwrap().uid, 5);
    view.append("g2", "!").unwrap();
    drop(view);
    // The kernel reads the data the view copied up.
    scratch.mount_overlay(&mnt, &overlay_data(&scratch, "metacopy=on,redirect_dir=on"));
    assert_eq!(fs::read(mnt.join("g2")).unwrap(), b"world\n!");
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"hello\n");
}

fn libc_eperm() -> i32 {
    rustix::io::Errno::PERM.raw_os_error()
}

/// Issue: after the kernel appended to one name of a lower hard link with
/// `index=on`, a view showed the other name with its old contents. The
/// kernel finds the copy by the lower inode's file handle, which the crate
/// cannot compute: such an upper is refused with a clear error (an
/// `index=on` upper whose index is empty opens).
#[test]
fn an_index_on_upper_with_a_copied_up_hard_link_is_refused() {
    if !kernel_available() {
        return;
    }
    let mut scratch = scratch_with(&[("a", "one\n"), ("c", "solo\n")]);
    fs::hard_link(scratch.root.join("l/a"), scratch.root.join("l/b")).unwrap();
    let mnt = scratch.root.join("m");
    scratch.mount_overlay(&mnt, &overlay_data(&scratch, "index=on"));
    fs::write(mnt.join("c"), "changed\n").unwrap();
    scratch.unmount_last();
    let view = view_over(&scratch, ViewOptions::default()).unwrap();
    assert_eq!(view.read("c").unwrap(), "changed\n");
    drop(view);

    scratch.mount_overlay(&mnt, &overlay_data(&scratch, "index=on"));
    let mut a = fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("a"))
        .unwrap();
    std::io::Write::write_all(&mut a, b"more\n").unwrap();
    drop(a);
    assert_eq!(fs::read(mnt.join("b")).unwrap(), b"one\nmore\n");
    scratch.unmount_last();
    let err = view_over(&scratch, ViewOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        err.to_string()
            .contains("inode index (index=on) with 1 entry"),
        "{err}"
    );
}

/// Issue: opening an upper deleted the kernel's volatile marker, and a
/// volatile `DirLayer` left none. Now each side refuses what the other's
/// volatile session left, as the kernel refuses its own.
#[test]
fn a_volatile_session_of_either_side_is_refused_by_both() {
    if !kernel_available() {
        return;
    }
    let mut scratch = scratch_with(&[("f", "x")]);
    let mnt = scratch.root.join("m");
    scratch.mount_overlay(&mnt, &overlay_data(&scratch, "volatile"));
    fs::write(mnt.join("f"), "y").unwrap();
    scratch.unmount_last();
    let err = view_over(&scratch, ViewOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(scratch.root.join("w/work/incompat/volatile").is_dir());

    fs::remove_dir_all(scratch.root.join("w")).unwrap();
    fs::create_dir(scratch.root.join("w")).unwrap();
    let upper = DirLayer::open_upper_with(
        utf8(&scratch.root.join("u")),
        utf8(&scratch.root.join("w")),
        DirLayerOptions::default().durability(Durability::Volatile),
    )
    .unwrap();
    let lower = DirLayer::open(utf8(&scratch.root.join("l"))).unwrap();
    let view = MergedView::new(vec![Arc::new(lower) as Arc<dyn Layer>], upper).unwrap();
    view.write("f", "z").unwrap();
    drop(view);
    let data = std::ffi::CString::new(overlay_data(&scratch, "")).unwrap();
    let refused = rustix::mount::mount(
        "overlay",
        &mnt,
        "overlay",
        rustix::mount::MountFlags::NODEV,
        &*data,
    )
    .expect_err("the kernel refuses the pair a volatile session left");
    assert_eq!(refused, rustix::io::Errno::INVAL);
}

/// Issue: the upper directory given as a lower layer too was accepted;
/// the kernel refuses it with `ELOOP`, and so does the view now.
#[test]
fn the_upper_given_as_a_lower_is_refused_by_both() {
    if !kernel_available() {
        return;
    }
    let scratch = scratch_with(&[("f", "x")]);
    let r = scratch.root.display();
    let data =
        std::ffi::CString::new(format!("lowerdir={r}/u,upperdir={r}/u,workdir={r}/w")).unwrap();
    let refused = rustix::mount::mount(
        "overlay",
        scratch.root.join("m"),
        "overlay",
        rustix::mount::MountFlags::NODEV,
        &*data,
    )
    .expect_err("the kernel refuses the upper as a lower");
    assert_eq!(refused, rustix::io::Errno::LOOP);
    let upper =
        DirLayer::open_upper(utf8(&scratch.root.join("u")), utf8(&scratch.root.join("w"))).unwrap();
    let lower = DirLayer::open(utf8(&scratch.root.join("u"))).unwrap();
    let err = MergedView::new(vec![Arc::new(lower) as Arc<dyn Layer>], upper).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FilesystemLoop);
}

/// Issue: xattr whiteouts outside the kernel's documented rule. The view
/// follows the rule (a zero-size file with `overlay.whiteout` is a
/// whiteout in a directory marked `opaque="x"`, in any layer) in lookups
/// and listings alike; the kernel's lookup honours the xattr everywhere
/// while its readdir filters only lower `opaque="x"` directories. This
/// test pins both sides, so a change of either shows (see
/// `docs/semantics.md`).
#[test]
fn xattr_whiteouts_follow_the_documented_rule() {
    if !kernel_available() {
        return;
    }
    let mut scratch = scratch_with(&[("a/f", "x"), ("b/f", "x"), ("c/f", "x")]);
    let r = scratch.root.clone();
    let xwhiteout = |path: &Path, mark_dir: bool| {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "").unwrap();
        let set = |at: &Path, name: &str, value: &[u8]| {
            rustix::fs::lsetxattr(at, name, value, rustix::fs::XattrFlags::empty()).unwrap();
        };
        set(path, "trusted.overlay.whiteout", b"y");
        if mark_dir {
            set(path.parent().unwrap(), "trusted.overlay.opaque", b"x");
        }
    };
    // Layer `x` above `l`: `a` unmarked, `b` marked; the upper's `c` marked.
    xwhiteout(&r.join("x/a/f"), false);
    xwhiteout(&r.join("x/b/f"), true);
    xwhiteout(&r.join("u/c/f"), true);
    let data = format!(
        "lowerdir={0}/x:{0}/l,upperdir={0}/u,workdir={0}/w",
        r.display()
    );
    let mnt = r.join("m");
    scratch.mount_overlay(&mnt, &data);
    let kernel = |d: &str| {
        let listed: Vec<String> = fs::read_dir(mnt.join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let stat = fs::symlink_metadata(mnt.join(d).join("f")).map(|m| m.len());
        (listed, stat.map_err(|e| e.raw_os_error()))
    };
    let enoent = Err(Some(rustix::io::Errno::NOENT.raw_os_error()));
    assert_eq!(kernel("a"), (vec!["f".to_owned()], enoent));
    assert_eq!(kernel("b"), (vec![], enoent));
    assert_eq!(kernel("c"), (vec!["f".to_owned()], enoent));
    scratch.unmount_last();

    let lowers = ["x", "l"]
        .iter()
        .map(|l| Arc::new(DirLayer::open(utf8(&r.join(l))).unwrap()) as Arc<dyn Layer>)
        .collect();
    let upper = DirLayer::open_upper(utf8(&r.join("u")), utf8(&r.join("w"))).unwrap();
    let view = MergedView::new(lowers, upper).unwrap();
    let ours = |d: &str| {
        let listed: Vec<NameBuf> = view
            .read_dir(d)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        let stat = view.symlink_metadata(format!("{d}/f")).map(|m| m.size);
        (listed, stat.map_err(|e| e.kind()))
    };
    // Unmarked: an ordinary empty file (the kernel: listed, but ENOENT).
    assert_eq!(ours("a"), (vec![NameBuf::from("f")], Ok(0)));
    assert_eq!(ours("b"), (vec![], Err(ErrorKind::NotFound)));
    // The upper's marked directory: a whiteout (the kernel lists it).
    assert_eq!(ours("c"), (vec![], Err(ErrorKind::NotFound)));
}
