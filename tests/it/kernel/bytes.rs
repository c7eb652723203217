//! Names are bytes (issue 14): a `DirLayer` holding names that are not
//! UTF-8 reads, lists, copies up, renames and commits them byte for byte,
//! and the kernel's overlay over the same directories shows the same tree.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use layerstack::testing::snapshot_dir;
use layerstack::{Name, PathLike};

use super::disk::tree_difference;
use super::*;

/// "café" in Latin-1.
const LATIN1: &[u8] = b"caf\xe9";
/// "привет" in KOI8-R.
const KOI8R: &[u8] = b"\xd0\xd2\xc9\xd7\xc5\xd4";
/// "日本" in EUC-JP.
const EUCJP: &[u8] = b"\xc6\xfc\xcb\xdc";
/// "привет" in CP866.
const CP866: &[u8] = b"\xaf\xe0\xa8\xa2\xa5\xe2";

fn at(dir: &Path, path: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(path))
}

fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

fn names_on_disk(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list `{}`: {e}", dir.display()))
        .map(|e| e.expect("an entry").file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    names
}

fn mount_overlay(root: &Path, lowers: &str) {
    let data = format!(
        "lowerdir={lowers},upperdir={0}/u,workdir={0}/w",
        root.display()
    );
    let data = std::ffi::CString::new(data).expect("no NUL");
    rustix::mount::mount(
        "overlay",
        root.join("m"),
        "overlay",
        rustix::mount::MountFlags::NODEV,
        &*data,
    )
    .expect("mount the overlay");
}

fn unmount(mnt: &Path) {
    if rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::empty()).is_err() {
        rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::DETACH).expect("unmount");
    }
}

#[test]
fn a_dir_layer_with_a_latin1_name_reads_lists_copies_up_renames_and_commits_as_the_kernel_shows() {
    if !kernel_available() {
        return;
    }
    let scratch = harness::Scratch::new().expect("mount the scratch tmpfs");
    let root = scratch.root.clone();
    for d in ["l", "u", "w", "m", "c"] {
        fs::create_dir(root.join(d)).expect("mkdir");
    }
    let l = root.join("l");
    fs::write(at(&l, LATIN1), "latin-1 name").expect("write a Latin-1 name");
    fs::create_dir(at(&l, KOI8R)).expect("mkdir a KOI8-R name");
    fs::write(at(&l, &joined(&[KOI8R, EUCJP])), "euc-jp name").expect("write");
    fs::write(at(&l, CP866), "cp866 name").expect("write a CP866 name");
    std::os::unix::fs::symlink(OsStr::from_bytes(LATIN1), at(&l, b"link"))
        .expect("a symlink to a Latin-1 name");

    // The lower on disk, read as a layer: names and target byte for byte.
    let lower = DirLayer::open(utf8(&l)).expect("open the lower");
    let listing = lower.read_dir(&LayerPath::root()).expect("list the root");
    let names: Vec<&[u8]> = listing.entries.iter().map(|(n, _)| n.as_bytes()).collect();
    let mut want: Vec<&[u8]> = vec![LATIN1, KOI8R, CP866, b"link"];
    want.sort();
    assert_eq!(names, want);
    assert_eq!(
        lower.read_link(&LayerPath::new("link").unwrap()).unwrap(),
        Name::new(LATIN1)
    );
    let latin1 = LayerPath::new(LATIN1).unwrap();
    assert_eq!(
        &lower.read_at(&latin1, 0, 100).unwrap()[..],
        b"latin-1 name"
    );

    // A view over it: reads (through the symlink too), a copy-up, a
    // rename that leaves a whiteout, a new symlink to a KOI8-R name.
    let upper = DirLayer::open_upper_with(
        utf8(&root.join("u")),
        utf8(&root.join("w")),
        DirLayerOptions::default().commit_dir(utf8(&root.join("c"))),
    )
    .expect("open the upper");
    let view = MergedView::new(vec![Arc::new(lower) as Arc<dyn Layer>], upper).expect("a view");
    assert_eq!(&view.read(b"link").unwrap()[..], b"latin-1 name");
    view.append(LATIN1, "!").expect("append: a copy-up");
    view.rename(CP866, joined(&[KOI8R, CP866]))
        .expect("rename a CP866 name into a KOI8-R directory");
    view.symlink(KOI8R, b"to-koi8r")
        .expect("a symlink to a KOI8-R name");
    assert_eq!(
        &view.read(joined(&[b"to-koi8r".as_slice(), EUCJP])).unwrap()[..],
        b"euc-jp name"
    );
    let ours = snapshot_view(&view).expect("walk the view");
    let listed: Vec<Vec<u8>> = view
        .read_dir(KOI8R)
        .unwrap()
        .into_iter()
        .map(|e| e.name.into_bytes())
        .collect();
    assert_eq!(listed, [CP866.to_vec(), EUCJP.to_vec()]);
    // The upper on disk holds the raw names: the copy, the moved file,
    // the whiteout of the old name.
    let u = root.join("u");
    assert_eq!(
        fs::read(at(&u, LATIN1)).expect("the copied-up file"),
        b"latin-1 name!"
    );
    assert!(
        fs::symlink_metadata(at(&u, CP866))
            .expect("a whiteout at the old name")
            .file_type()
            .is_char_device()
    );
    assert_eq!(
        fs::read(at(&u, &joined(&[KOI8R, CP866]))).expect("the moved file"),
        b"cp866 name"
    );

    // Commit: the upper becomes a lower (moved below `c`); the view shows
    // the same tree.
    view.commit().expect("commit");
    assert_eq!(snapshot_view(&view).expect("walk the view"), ours);
    drop(view);
    let committed = fs::read_dir(root.join("c"))
        .expect("list the commit directory")
        .map(|e| e.expect("an entry").path())
        .collect::<Vec<_>>();
    assert_eq!(committed.len(), 1, "one committed layer: {committed:?}");
    assert_eq!(
        fs::read(at(&committed[0], LATIN1)).expect("the committed copy"),
        b"latin-1 name!"
    );

    // The kernel mounts the same directories and shows the same tree.
    mount_overlay(
        &root,
        &format!("{}:{}", committed[0].display(), l.display()),
    );
    let mnt = root.join("m");
    let kernel = snapshot_dir(&mnt).expect("walk the mount");
    let root_names = names_on_disk(&mnt);
    let koi8r_names = names_on_disk(&at(&mnt, KOI8R));
    unmount(&mnt);
    assert_eq!(tree_difference(&ours, &kernel), None);
    let mut want: Vec<Vec<u8>> = vec![
        LATIN1.to_vec(),
        KOI8R.to_vec(),
        b"link".to_vec(),
        b"to-koi8r".to_vec(),
    ];
    want.sort();
    assert_eq!(root_names, want);
    assert_eq!(koi8r_names, [CP866.to_vec(), EUCJP.to_vec()]);
}

/// `layer_from_dir` (the tool's `commit`) keeps names and symlink targets
/// that are not UTF-8, byte for byte.
#[cfg(feature = "oci")]
#[test]
fn a_directory_with_names_in_legacy_encodings_commits_byte_for_byte() {
    let dir = std::env::temp_dir().join(format!("layerstack-bytes-commit-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(at(&dir, KOI8R)).expect("mkdir");
    fs::write(at(&dir, LATIN1), "latin-1").expect("write");
    fs::write(at(&dir, &joined(&[KOI8R, EUCJP])), "euc-jp").expect("write");
    std::os::unix::fs::symlink(OsStr::from_bytes(CP866), at(&dir, b"link")).expect("symlink");
    let base = MergedView::new(vec![], MemLayer::new()).expect("an empty base");
    let layer = layerstack::oci::layer_from_dir(&base, &utf8(&dir)).expect("commit the directory");
    let _ = fs::remove_dir_all(&dir);
    let view = MergedView::new(vec![Arc::new(layer) as Arc<dyn Layer>], MemLayer::new()).unwrap();
    assert_eq!(&view.read(LATIN1).unwrap()[..], b"latin-1");
    assert_eq!(&view.read(joined(&[KOI8R, EUCJP])).unwrap()[..], b"euc-jp");
    assert_eq!(view.read_link(b"link").unwrap().path_bytes(), CP866);
    let mut names: Vec<Vec<u8>> = view
        .read_dir("/")
        .unwrap()
        .into_iter()
        .map(|e| e.name.into_bytes())
        .collect();
    names.sort();
    let mut want = vec![LATIN1.to_vec(), KOI8R.to_vec(), b"link".to_vec()];
    want.sort();
    assert_eq!(names, want);
}
