use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use camino::Utf8PathBuf;

use super::*;
use crate::layer::Layer;
use crate::layer::mem::MemLayer;
use crate::meta::makedev;
use crate::oci::apply::import::{ImportOptions, import_layer};
use crate::oci::tar::compress::{Compression, Compressor};
use crate::testing::{Hdr, RawTar};
use crate::view::MergedView;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Says why a test that needs root does nothing.
fn skip_unless_root(what: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipped: {what} needs root (mknod, chown or trusted.* xattrs)");
    true
}

/// A path under the temp dir, unique to this test; removed on drop.
struct Temp(Utf8PathBuf);

impl Temp {
    fn new(name: &str) -> Temp {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, AtomicOrdering::SeqCst);
        let dir = Utf8PathBuf::from_path_buf(std::env::temp_dir())
            .unwrap()
            .join(format!(
                "layerstack-flatten-{}-{n}-{name}",
                std::process::id()
            ));
        Temp(dir)
    }

    fn path(&self) -> &Utf8Path {
        &self.0
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        // Read-only directories would stop the removal.
        fn writable(p: &std::path::Path) {
            if let Ok(m) = std::fs::symlink_metadata(p)
                && m.is_dir()
            {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                if let Ok(rd) = std::fs::read_dir(p) {
                    for e in rd.flatten() {
                        writable(&e.path());
                    }
                }
            }
        }
        writable(self.0.as_std_path());
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

type Opener = Box<dyn Fn() -> Result<Box<dyn Read + Send>> + Sync>;

fn openers(tars: &[Vec<u8>]) -> Vec<Opener> {
    tars.iter()
        .map(|t| {
            let bytes: Arc<[u8]> = Arc::from(t.as_slice());
            Box::new(move || Ok(Box::new(Cursor::new(bytes.clone())) as Box<dyn Read + Send>))
                as Opener
        })
        .collect()
}

/// Owners preserved as root; left to the caller otherwise.
fn opts() -> FlattenOptions {
    if is_root() {
        FlattenOptions::default()
    } else {
        FlattenOptions::default().owners(Owners::Ignore)
    }
}

/// One line per path but the root: what a user of the tree can see.
type Listing = BTreeMap<String, String>;

struct Row {
    file_type: FileType,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    rdev: u64,
    data: Vec<u8>,
    target: String,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn line(row: &Row, link: &str) -> String {
    let mode = if row.file_type == FileType::Symlink {
        "-".to_owned() // Linux has no modes on symlinks
    } else {
        format!("{:04o}", row.mode)
    };
    let owner = if is_root() {
        format!("{}:{}", row.uid, row.gid)
    } else {
        "-".to_owned()
    };
    let xattrs: Vec<String> = row
        .xattrs
        .iter()
        .filter(|(n, _)| xattr_allowed_on(row.file_type, n))
        .map(|(n, v)| format!("{n}={}", v.escape_ascii()))
        .collect();
    format!(
        "{} {mode} {owner} size={} mtime={}.{:09} rdev={:x} data={} target={} xattrs=[{}] link={link}",
        row.file_type.letter(),
        row.size,
        row.mtime.0,
        row.mtime.1,
        row.rdev,
        row.data.escape_ascii(),
        row.target,
        xattrs.join(","),
    )
}

/// Lines, with `link=` naming the first path of each inode that has more
/// than one name.
fn listing(rows: BTreeMap<String, (Row, Option<u64>)>) -> Listing {
    let mut groups: HashMap<u64, Vec<String>> = HashMap::new();
    for (path, (_, ino)) in &rows {
        if let Some(ino) = ino {
            groups.entry(*ino).or_default().push(path.clone());
        }
    }
    rows.iter()
        .map(|(path, (row, ino))| {
            let link = match ino.and_then(|i| groups.get(&i)) {
                Some(names) if names.len() > 1 => names[0].clone(),
                _ => "-".to_owned(),
            };
            (path.clone(), line(row, &link))
        })
        .collect()
}

/// What importing the layers and flattening them in the model shows.
fn oracle(tars: &[Vec<u8>], o: &FlattenOptions) -> Result<Listing> {
    let mut lowers: Vec<Arc<dyn Layer>> = Vec::new();
    for tar in tars {
        let (layer, _) = import_layer(&tar[..], &lowers, &o.import)?;
        lowers.insert(0, Arc::new(layer));
    }
    let snapshot = crate::model::flatten(&lowers)?;
    let view = MergedView::new(lowers.clone(), MemLayer::new())?;
    let mut rows = BTreeMap::new();
    for (path, e) in snapshot {
        if path.is_root() {
            continue;
        }
        let m = view.symlink_metadata(&path)?;
        let row = Row {
            file_type: e.meta.file_type,
            mode: e.meta.mode,
            uid: e.meta.uid,
            gid: e.meta.gid,
            size: if e.meta.file_type.is_dir() {
                0
            } else {
                e.meta.size
            },
            mtime: (m.mtime.sec, i64::from(m.mtime.nsec)),
            rdev: e.meta.rdev,
            data: e.data.to_vec(),
            target: e.target.to_string_lossy().into_owned(),
            xattrs: e
                .meta
                .xattrs
                .iter()
                .map(|(k, v)| (k.clone(), v.to_vec()))
                .collect(),
        };
        let ino = (!e.meta.file_type.is_dir()).then_some(m.ino);
        rows.insert(path.as_name().to_string_lossy().into_owned(), (row, ino));
    }
    Ok(listing(rows))
}

fn xattrs_on_disk(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 64 << 10];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap();
    let mut out = Vec::new();
    for raw in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(raw).unwrap().to_owned();
        let mut value = vec![0u8; 64 << 10];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]).unwrap();
        value.truncate(len);
        out.push((name, value));
    }
    out.sort();
    out
}

/// What the directory holds.
fn on_disk(root: &Utf8Path) -> Listing {
    fn walk(root: &Utf8Path, rel: &str, rows: &mut BTreeMap<String, (Row, Option<u64>)>) {
        let dir = if rel.is_empty() {
            root.to_owned()
        } else {
            root.join(rel)
        };
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let full = root.join(&path);
            let m = std::fs::symlink_metadata(&full).unwrap();
            let ft = m.file_type();
            let file_type = if ft.is_dir() {
                FileType::Dir
            } else if ft.is_file() {
                FileType::File
            } else if ft.is_symlink() {
                FileType::Symlink
            } else if ft.is_fifo() {
                FileType::Fifo
            } else if ft.is_char_device() {
                FileType::CharDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else {
                FileType::Socket
            };
            let row = Row {
                file_type,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if file_type.is_dir() { 0 } else { m.size() },
                mtime: (m.mtime(), m.mtime_nsec()),
                rdev: if ft.is_char_device() || ft.is_block_device() {
                    m.rdev()
                } else {
                    0
                },
                data: if ft.is_file() {
                    std::fs::read(&full).unwrap()
                } else {
                    Vec::new()
                },
                target: if ft.is_symlink() {
                    std::fs::read_link(&full)
                        .unwrap()
                        .into_os_string()
                        .into_string()
                        .unwrap()
                } else {
                    String::new()
                },
                xattrs: xattrs_on_disk(full.as_std_path()),
            };
            let ino = (!ft.is_dir()).then_some(m.ino());
            rows.insert(path.clone(), (row, ino));
            if ft.is_dir() {
                walk(root, &path, rows);
            }
        }
    }
    let mut rows = BTreeMap::new();
    walk(root, "", &mut rows);
    listing(rows)
}

fn flatten(tars: &[Vec<u8>], target: &Utf8Path, o: &FlattenOptions) -> Result<FlattenSummary> {
    flatten_layers(&openers(tars), target, o)
}

/// Flattens `tars` (bottom first) and checks the tree against the oracle,
/// line by line; returns the tree and the summary.
fn check_with(tars: &[Vec<u8>], o: &FlattenOptions) -> (Listing, FlattenSummary) {
    let expected = oracle(tars, o).expect("the oracle imports the layers");
    let dir = Temp::new("check");
    let summary = flatten(tars, dir.path(), o).expect("flatten");
    let got = on_disk(dir.path());
    assert_eq!(lines(&got), lines(&expected));
    (got, summary)
}

fn check(tars: &[Vec<u8>]) -> (Listing, FlattenSummary) {
    check_with(tars, &opts())
}

fn lines(l: &Listing) -> Vec<String> {
    l.iter().map(|(p, s)| format!("{p} {s}")).collect()
}

fn paths(l: &Listing) -> Vec<&str> {
    l.keys().map(String::as_str).collect()
}

fn tar(build: impl FnOnce(&mut RawTar)) -> Vec<u8> {
    let mut t = RawTar::new();
    build(&mut t);
    t.end()
}

fn file_with(t: &mut RawTar, name: &str, data: &[u8], f: impl FnOnce(&mut Hdr<'_>)) {
    let mut h = Hdr::new(name, b'0');
    h.size = data.len() as u64;
    f(&mut h);
    t.header(&h).data(data);
}

fn dir_with(t: &mut RawTar, name: &str, f: impl FnOnce(&mut Hdr<'_>)) {
    let mut h = Hdr::new(name, b'5');
    f(&mut h);
    t.header(&h);
}

#[test]
fn an_upper_layer_deletes_a_file_and_a_directory_which_are_never_written() {
    let base = tar(|t| {
        t.dir("etc/");
        t.file("etc/a", b"a");
        t.file("etc/b", b"b");
        t.dir("d/");
        t.file("d/x", b"x");
        t.file("d/y/z", b"z");
    });
    let top = tar(|t| {
        t.file("etc/.wh.a", b"");
        t.file(".wh.d", b"");
    });
    let (tree, summary) = check(&[base, top]);
    assert_eq!(paths(&tree), ["etc", "etc/b"]);
    // etc/a, d, d/x and d/y/z were skipped; the implied d/y is no entry.
    assert_eq!(summary.hidden, 4);
    assert_eq!((summary.files, summary.dirs, summary.bytes), (1, 1, 1));
}

#[test]
fn a_directory_deleted_and_made_again_is_opaque() {
    let base = tar(|t| {
        t.file("d/old", b"old");
        t.file("d/sub/deep", b"deep");
    });
    // With a whiteout and a new directory entry, or with an opaque marker.
    let whiteout = tar(|t| {
        t.file(".wh.d", b"");
        t.dir("d/");
        t.file("d/new", b"new");
    });
    let marker = tar(|t| {
        t.dir("d/");
        t.file("d/.wh..wh..opq", b"");
        t.file("d/new", b"new");
    });
    for top in [whiteout, marker] {
        let (tree, summary) = check(&[base.clone(), top]);
        assert_eq!(paths(&tree), ["d", "d/new"]);
        assert_eq!(summary.hidden, 2);
    }
}

#[test]
fn an_opaque_marker_hides_only_lower_layers_wherever_it_is_in_the_tar() {
    let base = tar(|t| {
        t.file("d/old", b"old");
    });
    let before = tar(|t| {
        t.file("d/.wh..wh..opq", b"");
        t.file("d/a", b"a");
    });
    let after = tar(|t| {
        t.file("d/a", b"a");
        t.file("d/.wh..wh..opq", b"");
        t.file("d/b", b"b");
    });
    let (tree, _) = check(&[base.clone(), before]);
    assert_eq!(paths(&tree), ["d", "d/a"]);
    let (tree, _) = check(&[base, after]);
    assert_eq!(paths(&tree), ["d", "d/a", "d/b"]);
}

#[test]
fn a_file_replaced_by_a_directory_and_a_directory_by_a_file() {
    let base = tar(|t| {
        t.file("a", b"file a");
        t.dir("b/");
        t.file("b/x", b"x");
    });
    let top = tar(|t| {
        dir_with(t, "a/", |h| h.mode = 0o750);
        t.file("a/y", b"y");
        file_with(t, "b", b"file b", |h| h.mode = 0o600);
    });
    let (tree, summary) = check(&[base, top]);
    assert_eq!(paths(&tree), ["a", "a/y", "b"]);
    assert!(tree["a"].starts_with("d 0750"), "{}", tree["a"]);
    assert!(tree["b"].starts_with("- 0600"), "{}", tree["b"]);
    assert_eq!(summary.hidden, 3);
}

#[test]
fn duplicates_in_one_layer_replace_earlier_entries_on_disk() {
    let layer = tar(|t| {
        t.dir("d/");
        t.file("d/child", b"gone");
        t.file("d", b"now a file");
        t.file("f", b"old");
        t.file("f", b"new");
        t.dir("e/");
        t.file("e/child", b"kept");
        dir_with(t, "e/", |h| h.mode = 0o700);
    });
    let (tree, _) = check(&[layer]);
    assert_eq!(paths(&tree), ["d", "e", "e/child", "f"]);
    assert!(tree["f"].contains("data=new"), "{}", tree["f"]);
    assert!(tree["e"].starts_with("d 0700"), "{}", tree["e"]);
}

#[test]
fn implied_directories_take_the_attributes_of_the_directory_below() {
    let base = tar(|t| {
        dir_with(t, "usr/", |h| {
            h.mode = 0o711;
            h.uid = 3;
            h.gid = 4;
            h.mtime = 5;
        });
        // Implied here too: the attributes come from further below.
        t.file("opt/x", b"x");
    });
    let middle = tar(|t| {
        t.file("usr/lib/a", b"a");
        dir_with(t, "opt/", |h| h.mode = 0o701);
    });
    let top = tar(|t| {
        t.file("usr/bin/tool", b"#!");
        t.file("usr/lib/b", b"b");
        t.file("opt/y", b"y");
    });
    let (tree, _) = check(&[base, middle, top]);
    assert!(tree["usr"].starts_with("d 0711"), "{}", tree["usr"]);
    assert!(tree["usr"].contains("mtime=5.000000000"), "{}", tree["usr"]);
    assert!(tree["usr/bin"].starts_with("d 0755"), "{}", tree["usr/bin"]);
    assert!(
        tree["usr/bin"].contains("mtime=0.000000000"),
        "{}",
        tree["usr/bin"]
    );
    assert!(tree["opt"].starts_with("d 0701"), "{}", tree["opt"]);
}

#[test]
fn implied_directories_under_an_opaque_one_are_new_as_import_makes_them() {
    // An implied directory takes the attributes of the directory below,
    // unless a directory above it is opaque in this layer: nothing below
    // shows there, so it is new (0755, root, time 0).
    let base = tar(|t| {
        dir_with(t, "a/", |h| h.mode = 0o700);
        dir_with(t, "a/b/", |h| h.mode = 0o711);
        t.file("a/b/old", b"old");
    });
    let top = tar(|t| {
        t.file("a/.wh..wh..opq", b"");
        t.file("a/b/new", b"new");
    });
    let (tree, _) = check(&[base, top]);
    assert_eq!(paths(&tree), ["a", "a/b", "a/b/new"]);
    assert!(tree["a"].starts_with("d 0700"), "{}", tree["a"]);
    assert!(tree["a/b"].starts_with("d 0755"), "{}", tree["a/b"]);
}

#[test]
fn hard_links_of_one_layer_are_one_inode() {
    let layer = tar(|t| {
        file_with(t, "bin/a", b"same inode", |h| h.mode = 0o755);
        t.hard_link("bin/b", "bin/a");
        t.hard_link("c", "bin/b");
    });
    let (tree, summary) = check(&[layer]);
    assert!(tree["bin/b"].ends_with("link=bin/a"), "{}", tree["bin/b"]);
    assert!(tree["c"].ends_with("link=bin/a"), "{}", tree["c"]);
    assert_eq!((summary.files, summary.hard_links), (1, 2));
}

#[test]
fn a_hard_link_whose_target_a_higher_layer_hides_gets_the_data() {
    let base = tar(|t| {
        file_with(t, "a", b"target data", |h| {
            h.mode = 0o640;
            h.mtime = 1_600_000_000;
        });
        t.hard_link("b", "a");
        t.hard_link("c", "a");
        t.file("z", b"after");
    });
    let top = tar(|t| {
        t.file(".wh.a", b"");
        t.file("c", b"replaced");
    });
    let (tree, summary) = check(&[base.clone(), top]);
    assert_eq!(paths(&tree), ["b", "c", "z"]);
    assert!(tree["b"].contains("data=target data"), "{}", tree["b"]);
    assert!(tree["b"].starts_with("- 0640"), "{}", tree["b"]);
    assert!(tree["b"].contains("mtime=1600000000."), "{}", tree["b"]);
    assert!(tree["c"].contains("data=replaced"), "{}", tree["c"]);
    assert_eq!(summary.hidden, 2);

    // Two links that show, their target hidden: one inode, filled once.
    let top = tar(|t| {
        t.file(".wh.a", b"");
    });
    let (tree, summary) = check(&[base, top]);
    assert!(tree["c"].ends_with("link=b"), "{}", tree["c"]);
    assert_eq!((summary.files, summary.hard_links), (2, 1));
}

#[test]
fn a_hard_link_to_a_lower_layer_copies_the_target_up() {
    let base = tar(|t| {
        file_with(t, "lib/libc.so", b"ELF", |h| h.mode = 0o755);
        t.symlink("lib/ld.so", "libc.so");
    });
    let top = tar(|t| {
        t.hard_link("lib/libc.so.6", "lib/libc.so");
        t.hard_link("lib/ld2.so", "lib/ld.so");
    });
    let (tree, summary) = check(&[base.clone(), top]);
    assert_eq!(
        paths(&tree),
        [
            "lib",
            "lib/ld.so",
            "lib/ld2.so",
            "lib/libc.so",
            "lib/libc.so.6"
        ]
    );
    assert!(tree["lib/libc.so.6"].ends_with("link=lib/libc.so"));
    assert!(tree["lib/ld2.so"].ends_with("link=lib/ld.so"));
    // The base's own copies are hidden by the top's.
    assert_eq!(summary.hidden, 2);

    // The copy's first name hidden by a higher layer, the link not.
    let higher = tar(|t| {
        t.file("lib/.wh.libc.so", b"");
    });
    let (tree, _) = check(&[
        base.clone(),
        tar(|t| {
            t.hard_link("x", "lib/libc.so");
        }),
        higher,
    ]);
    assert_eq!(paths(&tree), ["lib", "lib/ld.so", "x"]);
    assert!(tree["x"].contains("data=ELF"));

    // Through a middle layer that hides the original: the data comes
    // from a second read of the base.
    let middle = tar(|t| {
        t.hard_link("m", "lib/libc.so");
        t.file("lib/.wh.libc.so", b"");
    });
    let top = tar(|t| {
        t.hard_link("n", "m");
    });
    let (tree, _) = check(&[base, middle, top]);
    assert!(tree["n"].contains("data=ELF"), "{}", tree["n"]);

    // Nothing below: refused, as import refuses it.
    let e = flatten(
        &[tar(|t| {
            t.hard_link("x", "nothing");
        })],
        Temp::new("nolink").path(),
        &opts(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        e.to_string(),
        "failed to flatten layer entry `x` in layer 0: hard link target `nothing` is neither in this layer nor below it"
    );
}

#[test]
fn nothing_is_written_through_a_lower_layers_symlink() {
    let outside = Temp::new("outside");
    std::fs::create_dir(outside.path()).unwrap();
    for target in [outside.path().as_str(), "../../../../../../../tmp", "."] {
        let base = tar(|t| {
            t.symlink("etc", target);
        });
        let top = tar(|t| {
            t.file("etc/passwd", b"root::0:0");
        });
        let refused = oracle(&[base.clone(), top.clone()], &opts()).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::NotADirectory, "{refused}");
        let dir = Temp::new("symlink");
        let e = flatten(&[base, top], dir.path(), &opts()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotADirectory, "{e}");
        assert_eq!(
            e.to_string(),
            "failed to flatten layer entry `etc/passwd` in layer 1: its parent `etc` is a symlink in a lower layer (the layer must replace it with a directory entry first)"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(!dir.path().join("passwd").exists());
    }
    // Same layer.
    let layer = tar(|t| {
        t.symlink("etc", outside.path().as_str());
        t.file("etc/passwd", b"x");
    });
    let e = flatten(&[layer], Temp::new("same").path(), &opts()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to flatten layer entry `etc/passwd` in layer 0: its parent `etc` is a symlink in this layer"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

    // A higher layer that replaces the symlink with a directory is fine.
    let base = tar(|t| {
        t.symlink("etc", outside.path().as_str());
    });
    let top = tar(|t| {
        t.dir("etc/");
        t.file("etc/passwd", b"x");
    });
    let (tree, _) = check(&[base, top]);
    assert_eq!(paths(&tree), ["etc", "etc/passwd"]);
}

#[test]
fn dot_dot_names_are_refused_and_nothing_escapes() {
    let outside = Temp::new("escape");
    std::fs::create_dir(outside.path()).unwrap();
    let inside = outside.path().join("target");
    for name in ["../escape", "a/../../escape"] {
        let layer = tar(|t| {
            t.file(name, b"x");
        });
        let e = flatten(&[layer], &inside, &opts()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            format!(
                "failed to flatten layer entry `{name}` in layer 0: the name contains `..` (it could reach outside the layer)"
            )
        );
        let names: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        // Nothing beside the target, and the target flatten created is
        // gone again.
        assert_eq!(names, Vec::<std::ffi::OsString>::new());
    }
    let layer = tar(|t| {
        t.file("a", b"x");
        t.hard_link("b", "../../etc/passwd");
    });
    let e = flatten(&[layer], Temp::new("link").path(), &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn the_target_must_be_new_or_an_empty_directory() {
    let layer = tar(|t| {
        t.file("a", b"x");
    });
    let dir = Temp::new("nonempty");
    std::fs::create_dir(dir.path()).unwrap();
    std::fs::write(dir.path().join("keep"), "mine").unwrap();
    let e = flatten(std::slice::from_ref(&layer), dir.path(), &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DirectoryNotEmpty);
    assert_eq!(
        e.to_string(),
        format!(
            "failed to flatten into `{}`: the target directory is not empty",
            dir.path()
        )
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep")).unwrap(),
        "mine"
    );

    let real = Temp::new("real");
    std::fs::create_dir(real.path()).unwrap();
    let link = Temp::new("link");
    std::os::unix::fs::symlink(real.path(), link.path()).unwrap();
    let e = flatten(std::slice::from_ref(&layer), link.path(), &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FilesystemLoop);
    assert_eq!(
        e.to_string(),
        format!(
            "failed to flatten into `{}`: the target is a symlink (refused: it could lead anywhere)",
            link.path()
        )
    );
    assert_eq!(std::fs::read_dir(real.path()).unwrap().count(), 0);

    let file = Temp::new("file");
    std::fs::write(file.path(), "x").unwrap();
    let e = flatten(std::slice::from_ref(&layer), file.path(), &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotADirectory);

    // An empty directory is used as it is; a new one is made with 0755.
    let empty = Temp::new("empty");
    std::fs::create_dir(empty.path()).unwrap();
    flatten(std::slice::from_ref(&layer), empty.path(), &opts()).unwrap();
    assert_eq!(std::fs::read(empty.path().join("a")).unwrap(), b"x");
    let new = Temp::new("new");
    flatten(&[layer], new.path(), &opts()).unwrap();
    let m = std::fs::metadata(new.path()).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);
}

#[test]
fn the_root_takes_the_attributes_of_the_highest_root_entry() {
    let base = tar(|t| {
        dir_with(t, "./", |h| {
            h.mode = 0o750;
            h.mtime = 42;
        });
        t.file("a", b"a");
    });
    let top = tar(|t| {
        t.file("b", b"b");
    });
    let dir = Temp::new("root");
    flatten(&[base, top], dir.path(), &opts()).unwrap();
    let m = std::fs::metadata(dir.path()).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o750, 42));
}

#[test]
fn gzip_and_zstd_layers() {
    let base = tar(|t| {
        t.file("a", b"from gzip");
        t.file("big", &vec![7u8; 3 * CHUNK + 5]);
    });
    let top = tar(|t| {
        t.file("b", b"from zstd");
        t.file(".wh.a", b"");
    });
    let compress = |c: Compression, bytes: &[u8]| {
        let mut w = Compressor::new(Vec::new(), c);
        w.write_all(bytes).unwrap();
        w.finish().unwrap()
    };
    let layers = [
        compress(Compression::Gzip, &base),
        compress(Compression::Zstd, &top),
    ];
    let (tree, summary) = check(&layers);
    assert_eq!(paths(&tree), ["b", "big"]);
    assert_eq!(summary.bytes, 9 + 3 * CHUNK as u64 + 5);

    // A corrupt stream fails, naming its layer.
    let mut bad = layers[0].clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let e = flatten(&[bad, layers[1].clone()], Temp::new("bad").path(), &opts()).unwrap_err();
    assert_eq!(e.layer(), Some("0"), "{e}");
}

#[test]
fn setuid_bits_under_each_policy() {
    let layer = tar(|t| {
        file_with(t, "bin/su", b"su", |h| h.mode = 0o4755);
        file_with(t, "bin/wall", b"wall", |h| h.mode = 0o2755);
        dir_with(t, "shared/", |h| h.mode = 0o2775);
    });
    let (tree, summary) = check(std::slice::from_ref(&layer));
    assert!(tree["bin/su"].starts_with("- 4755"), "{}", tree["bin/su"]);
    assert_eq!(summary.setuid_stripped, 0);

    let strip = opts().import(ImportOptions::new().setuid(Policy::Strip));
    let (tree, summary) = check_with(std::slice::from_ref(&layer), &strip);
    assert!(tree["bin/su"].starts_with("- 0755"), "{}", tree["bin/su"]);
    assert!(
        tree["bin/wall"].starts_with("- 0755"),
        "{}",
        tree["bin/wall"]
    );
    assert!(tree["shared"].starts_with("d 2775"), "{}", tree["shared"]);
    assert_eq!(summary.setuid_stripped, 2);

    // Refused even where a higher layer would hide it.
    let top = tar(|t| {
        t.file(".wh.bin", b"");
    });
    let e = flatten(
        &[layer, top],
        Temp::new("refuse").path(),
        &opts().import(ImportOptions::new().setuid(Policy::Refuse)),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotPermitted);
    assert_eq!(
        e.to_string(),
        "failed to flatten layer entry `bin/su` in layer 0: setuid/setgid file (mode 4755) refused by policy"
    );
}

#[test]
fn devices_under_each_policy() {
    if skip_unless_root("devices_under_each_policy") {
        return;
    }
    let layer = tar(|t| {
        let mut dev = Hdr::new("dev/null", b'3');
        (dev.major, dev.minor, dev.mode) = (1, 3, 0o666);
        t.header(&dev);
        let mut blk = Hdr::new("dev/sda", b'4');
        (blk.major, blk.minor, blk.mode) = (8, 0, 0o660);
        t.header(&blk);
        let mut fifo = Hdr::new("run/fifo", b'6');
        fifo.mode = 0o620;
        t.header(&fifo);
    });
    let (tree, summary) = check(std::slice::from_ref(&layer));
    assert!(
        tree["dev/null"].starts_with("c 0666"),
        "{}",
        tree["dev/null"]
    );
    assert!(tree["dev/null"].contains(&format!("rdev={:x}", makedev(1, 3))));
    assert!(tree["dev/sda"].starts_with("b 0660"));
    assert!(tree["run/fifo"].starts_with("p 0620"));
    assert_eq!(summary.specials, 3);

    let (tree, summary) = check_with(
        std::slice::from_ref(&layer),
        &opts().import(ImportOptions::new().devices(Policy::Strip)),
    );
    assert_eq!(paths(&tree), ["dev", "run", "run/fifo"]);
    assert_eq!(summary.devices_stripped, 2);

    let e = flatten(
        &[layer],
        Temp::new("refuse").path(),
        &opts().import(ImportOptions::new().devices(Policy::Refuse)),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to flatten layer entry `dev/null` in layer 0: device node refused by policy"
    );

    // 0/0 is the overlay whiteout marker: refused under any policy.
    let wh = tar(|t| {
        t.header(&Hdr::new("wh", b'3'));
    });
    for policy in [Policy::Keep, Policy::Strip] {
        let e = flatten(
            std::slice::from_ref(&wh),
            Temp::new("wh").path(),
            &opts().import(ImportOptions::new().devices(policy)),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotPermitted);
    }
}

/// A symlink, a fifo and a device get exactly the owners, modes, times and
/// (trusted) attributes their headers give: each is set on the object
/// itself, through its descriptor, never by a name a symlink could stand
/// in for.
#[test]
fn symlinks_fifos_and_devices_get_exact_owners_modes_and_times() {
    if skip_unless_root("symlinks_fifos_and_devices_get_exact_owners_modes_and_times") {
        return;
    }
    let layer = tar(|t| {
        t.dir("d/");
        t.pax(&[
            ("mtime", b"1600000000.25"),
            ("SCHILY.xattr.trusted.l", b"on the link"),
        ]);
        let mut link = Hdr::new("d/l", b'2');
        (link.link, link.mode, link.uid, link.gid) = ("../nowhere", 0o777, 5, 6);
        t.header(&link);
        t.pax(&[("SCHILY.xattr.trusted.f", b"on the fifo")]);
        let mut fifo = Hdr::new("d/fifo", b'6');
        (fifo.mode, fifo.uid, fifo.gid, fifo.mtime) = (0o640, 7, 8, 1_600_000_002);
        t.header(&fifo);
        let mut dev = Hdr::new("d/tty", b'3');
        (dev.major, dev.minor, dev.mode) = (4, 64, 0o620);
        (dev.uid, dev.gid, dev.mtime) = (0, 5, 1_600_000_003);
        t.header(&dev);
    });
    let (tree, summary) = check(std::slice::from_ref(&layer));
    assert_eq!(
        tree["d/l"],
        "l - 5:6 size=10 mtime=1600000000.250000000 rdev=0 data= target=../nowhere \
         xattrs=[trusted.l=on the link] link=-"
    );
    assert_eq!(
        tree["d/fifo"],
        "p 0640 7:8 size=0 mtime=1600000002.000000000 rdev=0 data= target= \
         xattrs=[trusted.f=on the fifo] link=-"
    );
    assert_eq!(
        tree["d/tty"],
        format!(
            "c 0620 0:5 size=0 mtime=1600000003.000000000 rdev={:x} data= target= xattrs=[] link=-",
            makedev(4, 64)
        )
    );
    assert_eq!((summary.symlinks, summary.specials), (1, 2));
}

/// `cap_net_bind_service=e` (VFS_CAP_REVISION_2: 20 bytes).
const CAPABILITY: &[u8] = &[1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

#[test]
fn owners_times_and_xattrs_are_kept_and_bookkeeping_is_dropped() {
    if skip_unless_root("owners_times_and_xattrs") {
        return;
    }
    let layer = tar(|t| {
        t.pax(&[
            ("mtime", b"1700000000.123456789"),
            ("SCHILY.xattr.user.note", b"\x00binary\xff"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.trusted.x", b"t"),
            ("SCHILY.xattr.security.capability", CAPABILITY),
        ]);
        file_with(t, "f", b"data", |h| {
            h.uid = 1000;
            h.gid = 100;
            h.mode = 0o4750;
        });
        t.pax(&[
            ("SCHILY.xattr.user.on_link", b"no"),
            ("SCHILY.xattr.trusted.l", b"yes"),
        ]);
        t.symlink("l", "f");
        t.pax(&[("SCHILY.xattr.user.d", b"dir")]);
        dir_with(t, "d/", |h| {
            h.uid = 7;
            h.mode = 0o1777;
        });
    });
    let (tree, _) = check(&[layer]);
    let cap = CAPABILITY.escape_ascii();
    assert_eq!(
        tree["f"],
        format!(
            "- 4750 1000:100 size=4 mtime=1700000000.123456789 rdev=0 data=data target= xattrs=[security.capability={cap},trusted.x=t,user.note=\\x00binary\\xff] link=-"
        )
    );
    assert!(
        tree["l"].contains("xattrs=[trusted.l=yes]"),
        "{}",
        tree["l"]
    );
    assert!(tree["d"].starts_with("d 1777 7:0"), "{}", tree["d"]);
}

#[test]
fn owners_preserve_as_a_user_says_to_ignore_owners() {
    if is_root() {
        eprintln!("skipped: the EPERM of chown needs a user other than root");
        return;
    }
    let layer = tar(|t| file_with(t, "f", b"x", |h| h.uid = 0));
    let e = flatten(
        &[layer],
        Temp::new("eperm").path(),
        &FlattenOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotPermitted);
    assert!(e.to_string().contains("`Owners::Ignore`"), "{e}");
}

#[test]
fn one_thread_many_layers_and_large_files() {
    // More layers than threads, each with more data than its channel holds.
    let big = vec![1u8; 20 << 20];
    let layers: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            tar(|t| {
                t.file(&format!("f{i}"), &big[..(17 << 20) + i]);
                t.file("same", format!("layer {i}").as_bytes());
            })
        })
        .collect();
    for threads in [1, 2, 0] {
        let o = opts().threads(threads);
        let dir = Temp::new("threads");
        let summary = flatten(&layers, dir.path(), &o).unwrap();
        assert_eq!(summary.files, 6);
        assert_eq!(summary.hidden, 4);
        assert_eq!(std::fs::read(dir.path().join("same")).unwrap(), b"layer 4");
        assert_eq!(
            std::fs::metadata(dir.path().join("f3")).unwrap().len(),
            (17 << 20) + 3
        );
    }
}

#[test]
fn no_layers_is_an_empty_tree() {
    let dir = Temp::new("none");
    let summary = flatten(&[], dir.path(), &opts()).unwrap();
    assert_eq!(summary, FlattenSummary::default());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Where each kind of entry goes: mostly apart, sometimes at the same
/// path (a file over a directory, a symlink over a parent).
const DIRS: [&str; 5] = ["a", "a/x", "b", "c", "a/x/y"];
const FILES: [&str; 8] = ["a/f", "a/x/f", "a/x/g", "b/f", "c", "d", "a/x/y/f", "e"];
const SYMLINKS: [&str; 3] = ["a/l", "d", "b"];

/// A random layer; `written` are the files of the layers below, and get
/// this layer's.
fn random_layer(rng: &mut Rng, devices: bool, written: &mut Vec<&'static str>) -> Vec<u8> {
    let mut t = RawTar::new();
    for _ in 0..rng.below(10) + 1 {
        let mtime = *rng.pick(&[1_600_000_000, 1_700_000_000, 5]);
        let uid = *rng.pick(&[0, 1000]);
        match rng.below(20) {
            0..=5 => {
                let path = *rng.pick(&FILES);
                written.push(path);
                if rng.below(4) == 0 {
                    let xattr: (&str, &[u8]) = match rng.below(3) {
                        0 => ("SCHILY.xattr.user.k", b"v"),
                        1 => ("SCHILY.xattr.trusted.overlay.origin", b"x"),
                        _ => ("mtime", b"1700000000.5"),
                    };
                    t.pax(&[xattr]);
                }
                let data = rng.pick(&[&b""[..], b"1", b"22", b"333"]).to_vec();
                let mode = *rng.pick(&[0o644, 0o755, 0o4755, 0o600]);
                file_with(&mut t, path, &data, |h| {
                    h.mode = mode;
                    h.mtime = mtime;
                    h.uid = uid;
                });
            }
            6..=8 => {
                let path = *rng.pick(&DIRS);
                let mode = *rng.pick(&[0o755, 0o700, 0o2775, 0o555]);
                dir_with(&mut t, &format!("{path}/"), |h| {
                    h.mode = mode;
                    h.mtime = mtime;
                    h.gid = uid;
                });
            }
            9 => {
                let target = *rng.pick(&["x", "../a", "/etc/passwd"]);
                let link = *rng.pick(&SYMLINKS);
                t.symlink(link, target);
            }
            10..=12 => {
                // Mostly to a file of this layer, sometimes to one below.
                let target = match rng.below(8) {
                    0 => *rng.pick(&FILES),
                    _ if !written.is_empty() => *rng.pick(written),
                    _ => continue,
                };
                let path = *rng.pick(&FILES);
                t.hard_link(if path == target { "a/h" } else { path }, target);
            }
            13..=15 => {
                let path = if rng.below(2) == 0 {
                    *rng.pick(&FILES)
                } else {
                    *rng.pick(&DIRS)
                };
                let whiteout = match path.rsplit_once('/') {
                    Some((parent, name)) => format!("{parent}/.wh.{name}"),
                    None => format!(".wh.{path}"),
                };
                t.file(&whiteout, b"");
            }
            16 => {
                let dir = *rng.pick(&DIRS);
                t.file(&format!("{dir}/.wh..wh..opq"), b"");
            }
            17 => {
                let path = *rng.pick(&FILES);
                written.push(path);
                let mut h = Hdr::new(path, b'6');
                h.mtime = mtime;
                t.header(&h);
            }
            18 if devices => {
                let path = *rng.pick(&FILES);
                let mut h = Hdr::new(path, b'3');
                (h.major, h.minor) = (1, 3);
                t.header(&h);
            }
            _ => {
                dir_with(&mut t, "./", |h| h.mode = 0o750);
            }
        }
    }
    t.end()
}

#[test]
fn random_stacks_flatten_as_the_merged_view_shows_them() {
    let devices = is_root();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut refused) = (0, 0);
    for case in 0..400 {
        let mut written = Vec::new();
        let layers: Vec<Vec<u8>> = (0..rng.below(4) + 1)
            .map(|_| random_layer(&mut rng, devices, &mut written))
            .collect();
        let o = opts().threads(rng.below(3));
        let expected = oracle(&layers, &o);
        let dir = Temp::new("random");
        let got = flatten(&layers, dir.path(), &o);
        match (expected, got) {
            (Ok(expected), Ok(_)) => {
                assert_eq!(lines(&on_disk(dir.path())), lines(&expected), "case {case}");
                ok += 1;
            }
            (Err(e), Err(f)) => {
                eprintln!("case {case}: both refuse: {e} / {f}");
                refused += 1;
            }
            (Ok(_), Err(e)) => panic!("case {case}: flatten failed where import did not: {e}"),
            (Err(e), Ok(_)) => panic!("case {case}: flatten succeeded where import failed: {e}"),
        }
    }
    // Both outcomes are exercised.
    eprintln!("{ok} stacks flattened, {refused} refused by both");
    assert!(ok > 250 && refused > 20, "ok {ok}, refused {refused}");
}

#[test]
fn a_lower_file_where_a_higher_layer_implies_a_directory() {
    let base = tar(|t| {
        file_with(t, "a", b"file", |h| h.mode = 0o600);
    });
    let top = tar(|t| {
        t.file("a/x", b"x");
    });
    let e = flatten(
        &[base.clone(), top.clone()],
        Temp::new("enotdir").path(),
        &opts(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotADirectory);
    assert_eq!(
        e.to_string(),
        "failed to flatten layer entry `a/x` in layer 1: its parent `a` is a file in a lower layer (the layer must replace it with a directory entry first)"
    );
    // Deleted in between: the directory is new, with the defaults.
    let middle = tar(|t| {
        t.file(".wh.a", b"");
    });
    let (tree, summary) = check(&[base, middle, top]);
    assert_eq!(paths(&tree), ["a", "a/x"]);
    assert!(tree["a"].starts_with("d 0755"), "{}", tree["a"]);
    assert!(tree["a"].contains("mtime=0.000000000"), "{}", tree["a"]);
    assert_eq!(summary.hidden, 1);
}

#[test]
fn a_60_gib_sparse_file_keeps_its_holes_in_memory_and_on_disk() {
    let mut t = RawTar::new();
    sparse_file(&mut t, 60 << 30);
    let tar = t.end();

    let (layer, _) = import_layer(&tar[..], &[], &ImportOptions::default()).unwrap();
    let path = LayerPath::new("huge").unwrap();
    let Some(crate::layer::Entry::Node(node)) = layer.lookup(&path).unwrap() else {
        panic!("no file");
    };
    assert_eq!(node.meta.size, 60 << 30);
    assert_eq!(&layer.read_at(&path, 0, 5).unwrap()[..], b"start");
    assert_eq!(
        &layer.read_at(&path, (60 << 30) - 5, 5).unwrap()[..],
        b"end!!"
    );
    assert_eq!(&layer.read_at(&path, 1 << 30, 4).unwrap()[..], b"\0\0\0\0");

    let dir = Temp::new("sparse");
    let summary = flatten(&[tar], dir.path(), &FlattenOptions::default()).unwrap();
    assert_eq!(summary.files, 1);
    let file = dir.path().join("huge");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.len(), 60 << 30);
    // Two data blocks and some metadata, not 60 GiB of zeros.
    assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
    let mut f = std::fs::File::open(&file).unwrap();
    let mut end = [0u8; 5];
    use std::io::{Read as _, Seek as _, SeekFrom};
    f.seek(SeekFrom::Start((60 << 30) - 5)).unwrap();
    f.read_exact(&mut end).unwrap();
    assert_eq!(&end, b"end!!");
}

/// Import and flatten refuse `tars` with the same kind and cause; the
/// cause.
fn refused_alike(tars: &[Vec<u8>]) -> (ErrorKind, String) {
    let imported = oracle(tars, &opts()).expect_err("import refuses the stack");
    let dir = Temp::new("refused");
    let flattened = flatten(tars, dir.path(), &opts()).expect_err("flatten refuses the stack");
    assert_eq!(
        (flattened.kind(), flattened.cause()),
        (imported.kind(), imported.cause()),
        "import: {imported}; flatten: {flattened}"
    );
    (imported.kind(), imported.cause())
}

#[test]
fn hard_link_targets_resolve_alike_in_import_and_flatten() {
    // The target's parent is a symlink below: nothing shows at the target
    // (a lookup never follows a symlink). Flatten used to refuse the
    // parent instead.
    let base = tar(|t| {
        t.dir("d/");
        t.file("d/f", b"data");
        t.symlink("s", "d");
    });
    let top = tar(|t| {
        t.hard_link("x", "s/f");
    });
    assert_eq!(
        refused_alike(&[base, top]),
        (
            ErrorKind::NotFound,
            "hard link target `s/f` is neither in this layer nor below it".to_owned()
        )
    );
    // The target's parent is a symlink of this layer, with or without the
    // target below: this layer answers first. Import used to say the
    // target was missing when nothing was below.
    let under_own_symlink = tar(|t| {
        t.symlink("s", "d");
        t.hard_link("x", "s/f");
    });
    let below = tar(|t| {
        t.dir("s/");
        t.file("s/f", b"data");
    });
    for tars in [
        vec![under_own_symlink.clone()],
        vec![below, under_own_symlink],
    ] {
        assert_eq!(
            refused_alike(&tars),
            (
                ErrorKind::NotADirectory,
                "its parent `s` is a symlink in this layer".to_owned()
            )
        );
    }
    // A link named like the directory that holds its target removes the
    // target first. Import used to give the layer's own error.
    let layer = tar(|t| {
        t.dir("a/");
        t.file("a/f", b"data");
        t.hard_link("a", "a/f");
    });
    assert_eq!(
        refused_alike(&[layer]),
        (
            ErrorKind::NotFound,
            "hard link target `a/f` is removed by this entry".to_owned()
        )
    );
    // A whiteout of this layer acts below only: the link still finds the
    // target there, under a new opaque directory, in both.
    let base = tar(|t| {
        t.dir("d/");
        t.file("d/f", b"data");
        t.file("d/g", b"gone");
    });
    let top = tar(|t| {
        t.file(".wh.d", b"");
        t.hard_link("x", "d/f");
    });
    let (tree, _) = check(&[base, top]);
    assert_eq!(paths(&tree), ["d", "d/f", "x"]);
}

/// `huge`, a sparse file of `size` bytes with five bytes of data at each
/// end (`start`, `end!!`).
fn sparse_file(t: &mut RawTar, size: u64) {
    let map = format!("0,5,{},5", size - 5);
    let size = size.to_string();
    t.pax(&[
        ("GNU.sparse.major", b"0"),
        ("GNU.sparse.minor", b"1"),
        ("GNU.sparse.name", b"huge"),
        ("GNU.sparse.numblocks", b"2"),
        ("GNU.sparse.map", map.as_bytes()),
        ("GNU.sparse.size", size.as_bytes()),
    ]);
    let mut h = Hdr::new("GNUSparseFile.0/huge", b'0');
    h.size = 10;
    t.header(&h).data(b"startend!!");
}

#[test]
fn a_hard_link_copy_of_a_sparse_file_keeps_its_holes() {
    const SIZE: u64 = 60 << 30;
    // The higher layer links to `huge2`: `huge2` and `h` are a copy of the
    // lower file, made from `huge` (the name of it that still shows, written
    // first), and the copy must keep the holes.
    let top = tar(|t| {
        t.hard_link("h", "huge2");
    });
    let base = tar(|t| {
        sparse_file(t, SIZE);
        t.hard_link("huge2", "huge");
    });
    let dir = Temp::new("sparse-link");
    let summary = flatten(&[base, top], dir.path(), &opts()).unwrap();
    assert_eq!((summary.files, summary.hard_links), (2, 1));
    for (name, links) in [("huge", 1), ("huge2", 2), ("h", 2)] {
        let path = dir.path().join(name);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.nlink()), (SIZE, links), "{name}");
        // Two data blocks and some metadata, not 60 GiB of zeros.
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "{name}: {} blocks",
            meta.blocks()
        );
        let mut f = std::fs::File::open(&path).unwrap();
        use std::io::{Read as _, Seek as _, SeekFrom};
        let mut ends = [0u8; 10];
        f.read_exact(&mut ends[..5]).unwrap();
        f.seek(SeekFrom::Start(SIZE - 5)).unwrap();
        f.read_exact(&mut ends[5..]).unwrap();
        assert_eq!(&ends, b"startend!!", "{name}");
    }
}

#[test]
fn a_failed_flatten_leaves_the_target_as_it_was() {
    // The top layer is written first; the bottom one then fails (a hard
    // link to nothing is known only once every layer is read).
    let base = tar(|t| {
        t.file("kept", b"x");
        t.hard_link("h", "nothing");
    });
    let top = tar(|t| {
        t.dir("a/");
        dir_with(t, "a/b/", |h| h.mode = 0o500);
        t.file("a/b/f", b"data");
        t.symlink("s", "/etc");
        t.hard_link("s2", "s");
        t.header(&Hdr::new("p", b'6'));
    });
    let tars = [base.clone(), top.clone()];
    let want = "failed to flatten layer entry `h` in layer 0: hard link target `nothing` is neither in this layer nor below it";

    // A new target is not left behind.
    let new = Temp::new("undo-new");
    let e = flatten(&tars, new.path(), &opts()).unwrap_err();
    assert_eq!(e.to_string(), want);
    assert!(!new.path().exists());

    // An empty directory is left empty, with its mode and times.
    let empty = Temp::new("undo-empty");
    std::fs::create_dir(empty.path()).unwrap();
    std::fs::set_permissions(empty.path(), std::fs::Permissions::from_mode(0o751)).unwrap();
    let at = |sec, nsec| std::time::UNIX_EPOCH + std::time::Duration::new(sec, nsec);
    let times = std::fs::FileTimes::new()
        .set_accessed(at(1_000_000_000, 5))
        .set_modified(at(1_100_000_000, 7));
    std::fs::File::open(empty.path())
        .unwrap()
        .set_times(times)
        .unwrap();
    let before = std::fs::metadata(empty.path()).unwrap();
    let e = flatten(&tars, empty.path(), &opts()).unwrap_err();
    assert_eq!(e.to_string(), want);
    let after = std::fs::metadata(empty.path()).unwrap();
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
    assert_eq!(
        (after.mode(), after.uid(), after.gid()),
        (before.mode(), before.uid(), before.gid())
    );
    assert_eq!(
        (
            after.mtime(),
            after.mtime_nsec(),
            after.atime(),
            after.atime_nsec()
        ),
        (1_100_000_000, 7, 1_000_000_000, 5)
    );

    // A layer that does not match its DiffID, found at its end.
    let base = tar(|t| {
        t.file("kept", b"x");
    });
    let good = Digest::of(&top);
    let e = flatten_layers_verified(
        &openers(&[base, top]),
        &[Digest::of(b"not this layer"), good],
        new.path(),
        &opts(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    assert!(!new.path().exists());
}
