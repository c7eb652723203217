//! Hostile layers: one named test per attack class of DESIGN.md §4 (issue
//! 6, part 1).
//!
//! Each tar attack runs through both ways a layer is consumed —
//! [`oci::import_layer`] (into a `MemLayer`, with the layers below) and
//! [`oci::flatten_layers`] (onto disk, into `<scratch>/rootfs`) — and
//! asserts the exact outcome: the error kind and message, or the
//! documented safe result. Every flatten runs beside a canary directory
//! (`<scratch>/canary`: files, a subdirectory, a symlink, odd modes) that
//! the hostile layers aim at by absolute and by relative names; its names,
//! contents, modes, owners and modification times are compared before and
//! after, as is the list of names beside the target.
//!
//! The `DirLayer` attacks (symlinks planted in a layer directory, parts of
//! a layer directory swapped for symlinks between operations) and the
//! overlay-xattr one need root (a real overlay mount); without it they
//! print `SKIP <test>: <reason>` and pass, unless `LAYERSTACK_REQUIRE_ROOT`
//! is set.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use camino::{Utf8Path, Utf8PathBuf};
use layerstack::oci::{
    Compression, Compressor, FlattenOptions, FlattenSummary, ImportOptions, Limits, Policy,
    flatten_layers, import_into, import_layer,
};
use layerstack::testing::{Hdr, RawTar};
use layerstack::{DirLayer, Entry, ErrorKind, FileType, Layer, LayerPath, MemLayer, MergedView};

// ---------------------------------------------------------------------------
// Tars built byte by byte (names `tar::Header::set_path` would refuse).

fn tar() -> RawTar {
    RawTar::new()
}

// ---------------------------------------------------------------------------
// Outcomes.

/// `Ok` or `<ErrorKind>: <message>`, for exact comparison.
fn outcome<T>(r: &layerstack::Result<T>) -> String {
    match r {
        Ok(_) => "Ok".to_owned(),
        Err(e) => format!("{:?}: {e}", e.kind()),
    }
}

/// Imports `layers` (bottom first) one on top of the other; the top one.
fn import_stack(layers: &[Vec<u8>], options: &ImportOptions) -> layerstack::Result<MemLayer> {
    let mut below: Vec<Arc<dyn Layer>> = Vec::new();
    let mut top = None;
    for bytes in layers {
        let (layer, _) = import_layer(&bytes[..], &below, options)?;
        let layer = Arc::new(layer);
        below.insert(0, layer.clone());
        top = Some(layer);
    }
    Ok(Arc::try_unwrap(top.expect("at least one layer")).unwrap_or_else(|a| (*a).clone()))
}

/// A view over imported `layers` (bottom first), to see what they show.
fn import_view(layers: &[Vec<u8>], options: &ImportOptions) -> layerstack::Result<MergedView> {
    let mut below: Vec<Arc<dyn Layer>> = Vec::new();
    for bytes in layers {
        let (layer, _) = import_layer(&bytes[..], &below, options)?;
        below.insert(0, Arc::new(layer));
    }
    MergedView::new(below, MemLayer::new())
}

fn p(s: &str) -> LayerPath {
    LayerPath::new(s).unwrap()
}

// ---------------------------------------------------------------------------
// The arena: a target beside a canary.

/// One file's or directory's observable state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    mtime: (i64, i64),
    /// Contents (files) or target (symlinks).
    data: Vec<u8>,
}

fn seen(path: &Utf8Path) -> Seen {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {path}: {e}"));
    let ft = m.file_type();
    let (kind, data) = if ft.is_symlink() {
        let t = std::fs::read_link(path).unwrap();
        ("symlink", t.into_os_string().into_encoded_bytes())
    } else if ft.is_dir() {
        ("dir", Vec::new())
    } else if ft.is_file() {
        ("file", std::fs::read(path).unwrap())
    } else {
        ("special", Vec::new())
    };
    Seen {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        nlink: if ft.is_dir() { 0 } else { m.nlink() },
        mtime: (m.mtime(), m.mtime_nsec()),
        data,
    }
}

/// Everything under `root` (itself as ``), without following symlinks.
fn snapshot(root: &Utf8Path) -> BTreeMap<String, Seen> {
    fn walk(root: &Utf8Path, rel: &str, out: &mut BTreeMap<String, Seen>) {
        let path = if rel.is_empty() {
            root.to_owned()
        } else {
            root.join(rel)
        };
        let s = seen(&path);
        let is_dir = s.kind == "dir";
        out.insert(rel.to_owned(), s);
        if is_dir {
            for e in std::fs::read_dir(&path).unwrap() {
                let name = e.unwrap().file_name().into_string().unwrap();
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                walk(root, &child, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

/// A tree as `path kind mode [data]` lines, for asserting a flatten's result.
fn shape(root: &Utf8Path) -> Vec<String> {
    snapshot(root)
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(path, s)| {
            let data = match s.kind {
                "file" | "symlink" => format!(" {}", String::from_utf8_lossy(&s.data)),
                _ => String::new(),
            };
            format!("{path} {} {:04o}{data}", s.kind, s.mode)
        })
        .collect()
}

/// A scratch directory holding `canary/` and (once flattened) `rootfs/`.
struct Arena {
    dir: Utf8PathBuf,
    before: BTreeMap<String, Seen>,
}

const SECRET: &[u8] = b"the canary's secret\n";

impl Arena {
    fn new(tag: &str) -> Arena {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = Utf8PathBuf::from_path_buf(std::env::temp_dir()).unwrap();
        let dir = base.join(format!(
            "layerstack-hostile-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let canary = dir.join("canary");
        std::fs::create_dir_all(canary.join("dir")).unwrap();
        std::fs::write(canary.join("secret"), SECRET).unwrap();
        std::fs::write(canary.join("dir/inner"), "inner\n").unwrap();
        std::os::unix::fs::symlink("secret", canary.join("link")).unwrap();
        let set_mode = |p: &str, m: u32| {
            std::fs::set_permissions(canary.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        };
        set_mode("secret", 0o640);
        set_mode("dir/inner", 0o600);
        set_mode("dir", 0o750);
        // Times in the past, so that any touch shows.
        for p in ["secret", "dir/inner", "dir", ""] {
            let path = if p.is_empty() {
                canary.clone()
            } else {
                canary.join(p)
            };
            let t = rustix::fs::Timespec {
                tv_sec: 1_000_000_000,
                tv_nsec: 123,
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                path.as_str(),
                &rustix::fs::Timestamps {
                    last_access: t,
                    last_modification: t,
                },
                rustix::fs::AtFlags::empty(),
            )
            .unwrap();
        }
        let before = snapshot(&canary);
        Arena { dir, before }
    }

    fn canary(&self) -> Utf8PathBuf {
        self.dir.join("canary")
    }

    fn target(&self) -> Utf8PathBuf {
        self.dir.join("rootfs")
    }

    /// Flattens in-memory `layers` (bottom first) into the target.
    fn flatten(
        &self,
        layers: &[Vec<u8>],
        options: &FlattenOptions,
    ) -> layerstack::Result<FlattenSummary> {
        let openers: Vec<_> = layers
            .iter()
            .map(|bytes| {
                move || -> layerstack::Result<Box<dyn Read + Send>> {
                    Ok(Box::new(Cursor::new(bytes.clone())))
                }
            })
            .collect();
        self.flatten_with(&openers, options)
    }

    fn flatten_with<F>(
        &self,
        openers: &[F],
        options: &FlattenOptions,
    ) -> layerstack::Result<FlattenSummary>
    where
        F: Fn() -> layerstack::Result<Box<dyn Read + Send>> + Sync,
    {
        let _ = std::fs::remove_dir_all(self.target());
        flatten_layers(openers, &self.target(), options)
    }

    fn assert_canary_untouched(&self) {
        assert_eq!(snapshot(&self.canary()), self.before, "the canary changed");
    }

    /// The canary is as it was, and nothing new appeared beside the target.
    fn assert_untouched(&self) {
        self.assert_canary_untouched();
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names.retain(|n| n != "rootfs");
        assert_eq!(names, ["canary"], "something was written beside the target");
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asserts an outcome; with `HOSTILE_BLESS` set, prints it instead (to
/// read what the crate says when a test is written).
#[track_caller]
fn expect(what: &str, actual: String, expected: &str) {
    if std::env::var_os("HOSTILE_BLESS").is_some() {
        println!("BLESS {what}\n  {actual}");
        return;
    }
    assert_eq!(actual, expected, "{what}");
}

fn flat() -> FlattenOptions {
    FlattenOptions::default().threads(2)
}

fn imp() -> ImportOptions {
    ImportOptions::default()
}

/// Whether we are root; prints why a test is skipped otherwise.
fn root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("LAYERSTACK_REQUIRE_ROOT").is_none(),
        "{test} needs root and LAYERSTACK_REQUIRE_ROOT is set"
    );
    eprintln!("SKIP {test}: needs root (devices, owners, trusted.* xattrs, overlay mounts)");
    false
}

// ---------------------------------------------------------------------------
// Tar attacks, on import and flatten.

#[test]
fn names_with_dotdot_are_refused_and_absolute_names_stay_inside() {
    let arena = Arena::new("dotdot");
    for name in [
        "../canary/evil",
        "a/../../canary/evil",
        "./../evil",
        "a/b/../../../evil",
    ] {
        let layer = tar().file(name, b"pwned").end();
        expect(
            &format!("import {name}"),
            outcome(&import_stack(std::slice::from_ref(&layer), &imp())),
            &format!(
                "InvalidInput: failed to import layer entry `{name}`: the name contains `..` (it could reach outside the layer)"
            ),
        );
        expect(
            &format!("flatten {name}"),
            outcome(&arena.flatten(&[layer], &flat())),
            &format!(
                "InvalidInput: failed to flatten layer entry `{name}` in layer 0: the name contains `..` (it could reach outside the layer)"
            ),
        );
        arena.assert_untouched();
    }
    // An absolute name loses its leading `/` (as GNU tar does): aimed at
    // the canary by its host path, it lands inside the root.
    let abs = format!("{}/secret", arena.canary());
    let layer = tar()
        .file(&abs, b"pwned")
        .file("/etc/passwd", b"root::0:0::/:\n")
        .end();
    let inside = abs.trim_start_matches('/');
    let view = import_view(std::slice::from_ref(&layer), &imp()).unwrap();
    assert_eq!(view.read(inside).unwrap(), &b"pwned"[..]);
    assert_eq!(view.read("etc/passwd").unwrap(), &b"root::0:0::/:\n"[..]);
    arena.flatten(&[layer], &flat()).unwrap();
    assert_eq!(
        std::fs::read(arena.target().join(inside)).unwrap(),
        b"pwned"
    );
    assert_eq!(
        std::fs::read(arena.target().join("etc/passwd")).unwrap(),
        b"root::0:0::/:\n"
    );
    arena.assert_untouched();
}

#[test]
fn a_write_through_a_symlink_of_the_same_layer_is_refused() {
    let arena = Arena::new("same-layer-symlink");
    let canary = arena.canary();
    for (link, target) in [
        ("abs", canary.as_str()),
        ("rel", "../canary"),
        ("deep", "../../../../../../../../"),
    ] {
        let write = format!("{link}/secret");
        for (what, layer) in [
            (
                "file",
                tar().symlink(link, target).file(&write, b"pwned").end(),
            ),
            (
                "dir",
                tar().symlink(link, target).dir(&format!("{write}/")).end(),
            ),
            (
                "symlink",
                tar().symlink(link, target).symlink(&write, "/").end(),
            ),
            (
                "hard link",
                tar()
                    .file("f", b"x")
                    .symlink(link, target)
                    .hard_link(&write, "f")
                    .end(),
            ),
        ] {
            let entry = if what == "dir" {
                format!("{write}/")
            } else {
                write.clone()
            };
            expect(
                &format!("import {what} through {link}"),
                outcome(&import_stack(std::slice::from_ref(&layer), &imp())),
                &format!(
                    "NotADirectory: failed to import layer entry `{entry}`: its parent `{link}` is a symlink in this layer"
                ),
            );
            expect(
                &format!("flatten {what} through {link}"),
                outcome(&arena.flatten(&[layer], &flat())),
                &format!(
                    "NotADirectory: failed to flatten layer entry `{entry}` in layer 0: its parent `{link}` is a symlink in this layer"
                ),
            );
            arena.assert_untouched();
        }
    }
}

#[test]
fn a_write_through_a_symlink_of_a_lower_layer_is_refused() {
    let arena = Arena::new("lower-symlink");
    let canary = arena.canary();
    for (link, target) in [("abs", canary.as_str()), ("rel", "../canary")] {
        let lower = tar().symlink(link, target).end();
        let write = format!("{link}/secret");
        for (what, upper) in [
            ("file", tar().file(&write, b"pwned").end()),
            ("dir", tar().dir(&format!("{link}/new/")).end()),
            (
                "deep file",
                tar().file(&format!("{link}/dir/inner"), b"pwned").end(),
            ),
            (
                "hard link",
                tar().file("f", b"x").hard_link(&write, "f").end(),
            ),
        ] {
            let layers = [lower.clone(), upper];
            let first = if what == "deep file" {
                format!("{link}/dir/inner")
            } else if what == "dir" {
                format!("{link}/new/")
            } else {
                write.clone()
            };
            expect(
                &format!("import {what} through lower {link}"),
                outcome(&import_stack(&layers, &imp())),
                &format!(
                    "NotADirectory: failed to import layer entry `{first}`: its parent `{link}` is a symlink in a lower layer (the layer must replace it with a directory entry first)"
                ),
            );
            expect(
                &format!("flatten {what} through lower {link}"),
                outcome(&arena.flatten(&layers, &flat())),
                &format!(
                    "NotADirectory: failed to flatten layer entry `{first}` in layer 1: its parent `{link}` is a symlink in a lower layer (the layer must replace it with a directory entry first)"
                ),
            );
            arena.assert_untouched();
        }
    }
}

#[test]
fn a_relative_symlink_climbing_out_of_the_root_is_stored_verbatim_and_never_followed() {
    let arena = Arena::new("climbing-symlink");
    let climb = "../../../../../../../../../canary/secret";
    let layers = [
        tar()
            .symlink("up", climb)
            .symlink("updir", "../canary")
            .end(),
        // A higher layer hard-links the symlink itself, and lists the
        // directory next to it: neither follows it.
        tar().hard_link("up2", "up").dir("updir2/").end(),
    ];
    let view = import_view(&layers, &imp()).unwrap();
    assert_eq!(view.read_link("up").unwrap(), climb);
    assert_eq!(view.read_link("up2").unwrap(), climb);
    assert_eq!(view.read_link("updir").unwrap(), "../canary");
    // The view resolves it in its own root, where there is no canary.
    assert_eq!(view.read("up").unwrap_err().kind(), ErrorKind::NotFound);
    arena.flatten(&layers, &flat()).unwrap();
    let target = arena.target();
    assert_eq!(
        shape(&target),
        [
            format!("up symlink 0777 {climb}"),
            format!("up2 symlink 0777 {climb}"),
            "updir symlink 0777 ../canary".to_owned(),
            "updir2 dir 0755".to_owned(),
        ]
    );
    assert_eq!(
        seen(&target.join("up")).nlink,
        2,
        "up and up2 are one inode"
    );
    arena.assert_untouched();
}

#[test]
fn hard_links_to_outside_or_missing_targets_are_refused() {
    let arena = Arena::new("hard-links");
    let passwd_before = seen(Utf8Path::new("/etc/passwd"));
    let canary_secret = format!("{}/secret", arena.canary());
    let cases = [
        ("../x", "InvalidInput", "bad hard link target `../x`: the name contains `..` (it could reach outside the layer)".to_owned()),
        ("../canary/secret", "InvalidInput", "bad hard link target `../canary/secret`: the name contains `..` (it could reach outside the layer)".to_owned()),
        // An absolute target is a name in the layer, like an absolute
        // entry name: here, nothing.
        ("/etc/passwd", "NotFound", "hard link target `etc/passwd` is neither in this layer nor below it".to_owned()),
        (canary_secret.as_str(), "NotFound", format!("hard link target `{}` is neither in this layer nor below it", canary_secret.trim_start_matches('/'))),
        ("missing", "NotFound", "hard link target `missing` is neither in this layer nor below it".to_owned()),
        ("dir", "NotPermitted", "hard link target `dir` is a directory".to_owned()),
    ];
    for (target, kind, detail) in &cases {
        let layer = tar().dir("dir/").hard_link("h", target).end();
        expect(
            &format!("import link to {target}"),
            outcome(&import_stack(std::slice::from_ref(&layer), &imp())),
            &format!("{kind}: failed to import layer entry `h`: {detail}"),
        );
        expect(
            &format!("flatten link to {target}"),
            outcome(&arena.flatten(&[layer], &flat())),
            &format!("{kind}: failed to flatten layer entry `h` in layer 0: {detail}"),
        );
        arena.assert_untouched();
    }
    assert_eq!(
        seen(Utf8Path::new("/etc/passwd")),
        passwd_before,
        "/etc/passwd changed"
    );
}

#[test]
fn a_symlink_replaced_by_a_file_or_directory_is_replaced_never_written_through() {
    let arena = Arena::new("replaced-symlink");
    let canary = arena.canary();
    let secret = format!("{canary}/secret");
    let dir = format!("{canary}/dir");
    let lower = tar()
        .symlink("l", &secret)
        .symlink("m", &dir)
        .symlink("r", "../canary/secret")
        .end();
    let owned = |name, kind| {
        let mut h = Hdr::new(name, kind);
        h.uid = 4242;
        h.gid = 4242;
        h.mode = if kind == b'5' { 0o700 } else { 0o4777 };
        h
    };
    let mut l = owned("l", b'0');
    l.size = 3;
    let upper = tar()
        .header(&l)
        .data(b"new")
        .header(&owned("m/", b'5'))
        .file("m/inner", b"mine")
        .dir("r/")
        .end();
    // In one layer, the same replacements, after the symlinks.
    let same = tar()
        .symlink("l", &secret)
        .symlink("m", &dir)
        .header(&l)
        .data(b"new")
        .header(&owned("m/", b'5'))
        .file("m/inner", b"mine")
        .end();
    for layers in [vec![lower.clone(), upper], vec![same]] {
        let view = import_view(&layers, &imp()).unwrap();
        let meta = view.symlink_metadata("l").unwrap();
        assert_eq!(
            (meta.file_type, meta.mode, meta.uid),
            (FileType::File, 0o4777, 4242)
        );
        assert_eq!(view.read("l").unwrap(), &b"new"[..]);
        let meta = view.symlink_metadata("m").unwrap();
        assert_eq!(
            (meta.file_type, meta.mode, meta.uid),
            (FileType::Dir, 0o700, 4242)
        );
        assert_eq!(view.read("m/inner").unwrap(), &b"mine"[..]);
        if !root("a_symlink_replaced_by_a_file_or_directory_is_replaced_never_written_through") {
            return;
        }
        arena.flatten(&layers, &flat()).unwrap();
        let target = arena.target();
        let mut expected = vec![
            "l file 4777 new".to_owned(),
            "m dir 0700".to_owned(),
            "m/inner file 0644 mine".to_owned(),
        ];
        if layers.len() == 2 {
            expected.push("r dir 0755".to_owned());
        }
        assert_eq!(shape(&target), expected);
        assert_eq!(seen(&target.join("l")).uid, 4242);
        assert_eq!(seen(&target.join("m")).uid, 4242);
        arena.assert_untouched();
    }
}

#[test]
fn whiteouts_named_dot_wh_dot_and_dotdot_are_refused() {
    let arena = Arena::new("bad-whiteouts");
    let cases = [
        (".wh.", "invalid whiteout `.wh.`: it names nothing"),
        (
            ".wh..",
            "invalid whiteout `.wh..`: it would delete its own directory",
        ),
        (
            ".wh...",
            "invalid whiteout `.wh...`: it would delete the parent directory",
        ),
    ];
    let lower = tar()
        .dir("d/")
        .file("d/f", b"keep")
        .file("top", b"keep")
        .end();
    for (name, detail) in cases {
        for entry in [name.to_owned(), format!("d/{name}")] {
            let layers = [lower.clone(), tar().file(&entry, b"").end()];
            expect(
                &format!("import {entry}"),
                outcome(&import_stack(&layers, &imp())),
                &format!("InvalidInput: failed to import layer entry `{entry}`: {detail}"),
            );
            expect(
                &format!("flatten {entry}"),
                outcome(&arena.flatten(&layers, &flat())),
                &format!(
                    "InvalidInput: failed to flatten layer entry `{entry}` in layer 1: {detail}"
                ),
            );
            arena.assert_untouched();
        }
    }
}

#[test]
fn whiteouts_and_opaque_markers_under_a_lower_symlink_are_refused() {
    let arena = Arena::new("whiteout-under-symlink");
    let canary = arena.canary();
    let lower = tar().symlink("link", canary.as_str()).end();
    for name in ["link/.wh.secret", "link/.wh..wh..opq", "link/dir/.wh.inner"] {
        let layers = [lower.clone(), tar().file(name, b"").end()];
        expect(
            &format!("import {name}"),
            outcome(&import_stack(&layers, &imp())),
            &format!(
                "NotADirectory: failed to import layer entry `{name}`: its parent `link` is a symlink in a lower layer (the layer must replace it with a directory entry first)"
            ),
        );
        expect(
            &format!("flatten {name}"),
            outcome(&arena.flatten(&layers, &flat())),
            &format!(
                "NotADirectory: failed to flatten layer entry `{name}` in layer 1: its parent `link` is a symlink in a lower layer (the layer must replace it with a directory entry first)"
            ),
        );
        arena.assert_untouched();
    }
}

#[test]
fn duplicate_entries_replace_the_earlier_one_and_directories_merge() {
    let arena = Arena::new("duplicates");
    let canary = arena.canary();
    let layer = tar()
        .file("f", b"one")
        .file("f", b"two")
        .dir("d/")
        .file("d/old", b"gone with d")
        .file("d", b"a file now")
        .dir("e/")
        .file("e/kept", b"kept")
        .header(&Hdr {
            mode: 0o700,
            ..Hdr::new("e/", b'5')
        })
        .symlink("s", canary.as_str())
        .file("s", b"not through")
        .file("g", b"file first")
        .dir("g/")
        .end();
    let view = import_view(std::slice::from_ref(&layer), &imp()).unwrap();
    assert_eq!(view.read("f").unwrap(), &b"two"[..]);
    assert_eq!(view.read("d").unwrap(), &b"a file now"[..]);
    assert_eq!(view.read("e/kept").unwrap(), &b"kept"[..]);
    assert_eq!(view.metadata("e").unwrap().mode, 0o700);
    assert_eq!(view.read("s").unwrap(), &b"not through"[..]);
    assert!(view.metadata("g").unwrap().is_dir());
    arena.flatten(&[layer], &flat()).unwrap();
    assert_eq!(
        shape(&arena.target()),
        [
            "d file 0644 a file now",
            "e dir 0700",
            "e/kept file 0644 kept",
            "f file 0644 two",
            "g dir 0755",
            "s file 0644 not through",
        ]
    );
    arena.assert_untouched();
}

#[test]
fn the_root_entry_as_a_symlink_or_a_file_is_refused() {
    let arena = Arena::new("root-entry");
    let canary = arena.canary();
    for (name, layer) in [
        (
            ".",
            tar()
                .symlink(".", canary.as_str())
                .file("secret", b"pwned")
                .end(),
        ),
        (
            "./",
            tar()
                .symlink("./", "../canary")
                .file("secret", b"pwned")
                .end(),
        ),
        ("/", tar().symlink("/", "/").end()),
        (".", tar().file(".", b"pwned").end()),
        ("./", tar().header(&Hdr::new("./", b'6')).end()),
    ] {
        expect(
            &format!("import root {name}"),
            outcome(&import_stack(std::slice::from_ref(&layer), &imp())),
            &format!(
                "InvalidInput: failed to import layer entry `{name}`: the root of a layer can only be a directory"
            ),
        );
        expect(
            &format!("flatten root {name}"),
            outcome(&arena.flatten(&[layer], &flat())),
            &format!(
                "InvalidInput: failed to flatten layer entry `{name}` in layer 0: the root of a layer can only be a directory"
            ),
        );
        arena.assert_untouched();
    }
}

#[test]
fn pax_sizes_that_disagree_with_the_header_are_refused_both_ways() {
    let arena = Arena::new("pax-size");
    for (pax, header) in [(600u64, 5u64), (5, 600)] {
        // The data is framed by neither size alone: 600 bytes whose tail
        // looks like a header, so a parser that trusted the smaller size
        // would see a second entry.
        let mut data = vec![b'x'; 512];
        data.extend_from_slice(&Hdr::new("smuggled", b'0').bytes()[..88]);
        let mut h = Hdr::new("f", b'0');
        h.size = header;
        let layer = tar()
            .pax(&[("size", pax.to_string().as_bytes())])
            .header(&h)
            .data(&data)
            .end();
        let detail = format!("PAX size {pax} disagrees with the header's size {header}");
        expect(
            &format!("import pax {pax} header {header}"),
            outcome(&import_stack(std::slice::from_ref(&layer), &imp())),
            &format!("InvalidData: failed to import layer entry `f`: {detail}"),
        );
        expect(
            &format!("flatten pax {pax} header {header}"),
            outcome(&arena.flatten(&[layer], &flat())),
            &format!("InvalidData: failed to flatten layer entry `f` in layer 0: {detail}"),
        );
        arena.assert_untouched();
    }
    // Documented: a header size of 0 defers to PAX (Go writes files of 8
    // GiB and more so).
    let mut h = Hdr::new("big", b'0');
    h.size = 0;
    let layer = tar().pax(&[("size", b"3")]).header(&h).data(b"abc").end();
    assert_eq!(
        import_view(std::slice::from_ref(&layer), &imp())
            .unwrap()
            .read("big")
            .unwrap(),
        &b"abc"[..]
    );
    arena.flatten(&[layer], &flat()).unwrap();
    assert_eq!(shape(&arena.target()), ["big file 0644 abc"]);
    arena.assert_untouched();
}

/// Zeros, `n` of them, without holding them.
struct Zeros(u64);

impl Read for Zeros {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.0.min(buf.len() as u64)).unwrap();
        buf[..n].fill(0);
        self.0 -= n as u64;
        Ok(n)
    }
}

const GIB: u64 = 1 << 30;

/// A gzip layer holding one file of 1 GiB of zeros, about 1 MB, built once.
fn gzip_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let mut gz = Compressor::new(Vec::new(), Compression::Gzip);
        let mut h = Hdr::new("bomb", b'0');
        h.size = GIB;
        gz.write_all(&h.bytes()).unwrap();
        io::copy(&mut Zeros(GIB + 1024), &mut gz).unwrap();
        gz.finish().unwrap()
    })
}

#[test]
fn a_gzip_bomb_stops_at_the_size_limit() {
    let arena = Arena::new("gzip-bomb");
    let bomb = gzip_bomb();
    assert!(
        bomb.len() < 2 << 20,
        "1 GiB of zeros compresses to about 1 MB, not {} bytes",
        bomb.len()
    );
    let default = Limits::default().max_bytes;
    assert_eq!(
        default,
        64 << 30,
        "the default limit of uncompressed bytes per layer is {default} (64 GiB): a 1 GiB bomb is within it, so the test sets 64 MiB"
    );
    let limits = Limits::default().max_bytes(64 << 20);
    let detail = "the layer is larger than the limit of 67108864 bytes uncompressed";
    expect(
        "import",
        outcome(&import_layer(bomb, &[], &imp().limits(limits))),
        &format!("LimitExceeded: failed to import layer entry `bomb`: {detail}"),
    );
    expect(
        "flatten",
        outcome(&arena.flatten(&[bomb.to_vec()], &flat().import(imp().limits(limits)))),
        &format!("LimitExceeded: failed to flatten layer entry `bomb` in layer 0: {detail}"),
    );
    arena.assert_untouched();
}

/// `count` empty directory entries named `d/`, streamed.
struct ManyEntries {
    header: [u8; 512],
    left: u64,
    at: usize,
}

impl ManyEntries {
    fn new(count: u64) -> ManyEntries {
        ManyEntries {
            header: Hdr::new("d/", b'5').bytes(),
            left: count,
            at: 0,
        }
    }
}

impl Read for ManyEntries {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = (512 - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.header[self.at..self.at + n]);
        self.at += n;
        if self.at == 512 {
            self.at = 0;
            self.left -= 1;
        }
        Ok(n)
    }
}

#[test]
fn a_million_and_one_entries_exceed_the_default_entry_limit() {
    let arena = Arena::new("million");
    let default = Limits::default().max_entries;
    assert_eq!(default, 1_000_000, "the default entry limit");
    let detail = "the layer has more than 1000000 entries";
    expect(
        "import",
        outcome(&import_layer(ManyEntries::new(default + 1), &[], &imp())),
        &format!("LimitExceeded: failed to import layer entry `d/`: {detail}"),
    );
    let opener = || -> layerstack::Result<Box<dyn Read + Send>> {
        Ok(Box::new(ManyEntries::new(1_000_001)))
    };
    expect(
        "flatten",
        outcome(&arena.flatten_with(&[opener], &flat())),
        &format!("LimitExceeded: failed to flatten layer entry `d/` in layer 0: {detail}"),
    );
    arena.assert_untouched();
    // Exactly the limit is accepted.
    let (_, summary) = import_layer(ManyEntries::new(default), &[], &imp()).unwrap();
    assert_eq!(summary.entries, default);
}

/// A reader that counts what is read from it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn a_100_mib_pax_header_is_refused_before_it_is_read() {
    let arena = Arena::new("big-pax");
    const SIZE: u64 = 100 << 20;
    let stream = || {
        let mut h = Hdr::new("././@PaxHeader", b'x');
        h.size = SIZE;
        let read = Arc::new(AtomicU64::new(0));
        let body = Cursor::new(h.bytes().to_vec()).chain(Zeros(SIZE + 1024));
        (
            Counting {
                inner: body,
                read: read.clone(),
            },
            read,
        )
    };
    let detail =
        "a PAX extended header of 104857600 bytes is larger than the limit of 1048576 bytes";
    let (reader, read) = stream();
    expect(
        "import",
        outcome(&import_layer(reader, &[], &imp())),
        &format!("LimitExceeded: failed to import layer entry `<header at byte 0>`: {detail}"),
    );
    let consumed = read.load(Ordering::Relaxed);
    assert!(consumed < 1 << 20, "refused after reading {consumed} bytes");
    let flatten_read = Arc::new(AtomicU64::new(0));
    expect(
        "flatten",
        outcome(&arena.flatten_with(
            &[|| -> layerstack::Result<Box<dyn Read + Send>> {
                let (reader, _) = stream();
                Ok(Box::new(Counting {
                    inner: reader,
                    read: flatten_read.clone(),
                }))
            }],
            &flat(),
        )),
        &format!(
            "LimitExceeded: failed to flatten layer entry `<header at byte 0>` in layer 0: {detail}"
        ),
    );
    let consumed = flatten_read.load(Ordering::Relaxed);
    assert!(
        consumed < 1 << 20,
        "flatten refused after reading {consumed} bytes"
    );
    arena.assert_untouched();
}

#[test]
fn device_nodes_follow_the_device_policy() {
    let arena = Arena::new("devices");
    let mut null = Hdr::new("dev/null", b'3');
    null.major = 1;
    null.minor = 3;
    let mut sda = Hdr::new("dev/sda", b'4');
    sda.major = 8;
    sda.minor = 0;
    let layer = tar().header(&null).header(&sda).end();
    let privileged = root("device_nodes_follow_the_device_policy");
    for policy in [Policy::Keep, Policy::Strip, Policy::Refuse] {
        let result = import_layer(&layer[..], &[], &imp().devices(policy));
        let flattened = privileged.then(|| {
            arena.flatten(
                std::slice::from_ref(&layer),
                &flat().import(imp().devices(policy)),
            )
        });
        match policy {
            Policy::Keep => {
                let (mem, summary) = result.unwrap();
                let node = |path| match mem.lookup(&p(path)).unwrap() {
                    Some(Entry::Node(n)) => (n.meta.file_type, n.meta.rdev),
                    other => panic!("{path}: {other:?}"),
                };
                assert_eq!(
                    node("dev/null"),
                    (FileType::CharDevice, layerstack::makedev(1, 3))
                );
                assert_eq!(
                    node("dev/sda"),
                    (FileType::BlockDevice, layerstack::makedev(8, 0))
                );
                assert_eq!(summary.devices_stripped, 0);
                if let Some(flattened) = flattened {
                    assert_eq!(flattened.unwrap().specials, 2);
                    let rdev = |path: &str| {
                        std::fs::symlink_metadata(arena.target().join(path))
                            .unwrap()
                            .rdev()
                    };
                    assert_eq!(rdev("dev/null"), layerstack::makedev(1, 3));
                    assert_eq!(rdev("dev/sda"), layerstack::makedev(8, 0));
                }
            }
            Policy::Strip => {
                let (mem, summary) = result.unwrap();
                assert_eq!(mem.lookup(&p("dev/null")).unwrap(), None);
                assert_eq!(mem.lookup(&p("dev/sda")).unwrap(), None);
                assert_eq!(summary.devices_stripped, 2);
                if let Some(flattened) = flattened {
                    assert_eq!(flattened.unwrap().devices_stripped, 2);
                    // The implied parent stays, as a directory with nothing in it.
                    assert_eq!(shape(&arena.target()), ["dev dir 0755"]);
                }
            }
            Policy::Refuse => {
                expect(
                    "import refuse",
                    outcome(&result),
                    "NotPermitted: failed to import layer entry `dev/null`: device node refused by policy",
                );
                if let Some(flattened) = flattened {
                    expect(
                        "flatten refuse",
                        outcome(&flattened),
                        "NotPermitted: failed to flatten layer entry `dev/null` in layer 0: device node refused by policy",
                    );
                }
            }
        }
        arena.assert_untouched();
    }
    // Character device 0/0 is overlayfs's whiteout, never an OCI entry:
    // refused under every policy.
    let layer = tar().header(&Hdr::new("wh", b'3')).end();
    let detail = "character device 0/0 is the overlayfs whiteout marker; an OCI layer deletes with `.wh.` names";
    for policy in [Policy::Keep, Policy::Strip, Policy::Refuse] {
        expect(
            "import 0/0",
            outcome(&import_layer(&layer[..], &[], &imp().devices(policy))),
            &format!("NotPermitted: failed to import layer entry `wh`: {detail}"),
        );
        expect(
            "flatten 0/0",
            outcome(&arena.flatten(
                std::slice::from_ref(&layer),
                &flat().import(imp().devices(policy)),
            )),
            &format!("NotPermitted: failed to flatten layer entry `wh` in layer 0: {detail}"),
        );
        arena.assert_untouched();
    }
}

#[test]
fn setuid_files_follow_the_setuid_policy() {
    let arena = Arena::new("setuid");
    let mut su = Hdr::new("bin/su", b'0');
    su.mode = 0o6755;
    su.size = 2;
    let mut dir = Hdr::new("shared/", b'5');
    dir.mode = 0o2775;
    let layer = tar().header(&su).data(b"#!").header(&dir).end();
    for policy in [Policy::Keep, Policy::Strip, Policy::Refuse] {
        let result = import_view(std::slice::from_ref(&layer), &imp().setuid(policy));
        let flattened = arena.flatten(
            std::slice::from_ref(&layer),
            &flat().import(imp().setuid(policy)),
        );
        let mode = match policy {
            Policy::Keep => 0o6755,
            Policy::Strip => 0o755,
            Policy::Refuse => {
                let detail = "setuid/setgid file (mode 6755) refused by policy";
                expect(
                    "import refuse",
                    outcome(&result),
                    &format!("NotPermitted: failed to import layer entry `bin/su`: {detail}"),
                );
                expect(
                    "flatten refuse",
                    outcome(&flattened),
                    &format!(
                        "NotPermitted: failed to flatten layer entry `bin/su` in layer 0: {detail}"
                    ),
                );
                arena.assert_untouched();
                continue;
            }
        };
        let view = result.unwrap();
        assert_eq!(view.metadata("bin/su").unwrap().mode, mode);
        // setgid on a directory only passes its group on: always kept.
        assert_eq!(view.metadata("shared").unwrap().mode, 0o2775);
        let summary = flattened.unwrap();
        assert_eq!(summary.setuid_stripped, u64::from(policy == Policy::Strip));
        assert_eq!(
            shape(&arena.target()),
            [
                "bin dir 0755".to_owned(),
                format!("bin/su file {mode:04o} #!"),
                "shared dir 2775".to_owned(),
            ]
        );
        arena.assert_untouched();
    }
}

#[test]
fn overlay_xattrs_in_a_layer_never_become_overlay_flags_of_a_dir_layer() {
    let test = "overlay_xattrs_in_a_layer_never_become_overlay_flags_of_a_dir_layer";
    if !root(test) {
        return;
    }
    let arena = Arena::new("overlay-xattrs");
    let dir = &arena.dir;
    // The layer below the imported one, on disk.
    std::fs::create_dir_all(dir.join("base/d")).unwrap();
    std::fs::write(dir.join("base/d/below"), "below").unwrap();
    std::fs::create_dir_all(dir.join("base/r")).unwrap();
    std::fs::write(dir.join("base/r/below"), "below").unwrap();
    let bookkeeping: [(&str, &[u8]); 4] = [
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.user.overlay.opaque", b"y"),
        ("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere"),
        ("SCHILY.xattr.user.overlay.redirect", b"/elsewhere"),
    ];
    let layer = tar()
        .pax(&bookkeeping)
        .dir("d/")
        .file("d/new", b"new")
        .pax(&bookkeeping)
        .dir("r/")
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.whiteout", b"y"),
            ("SCHILY.xattr.user.keep", b"1"),
        ])
        .file("d/kept", b"kept")
        .end();
    let upper = dir.join("upper");
    let mut layer_dir = DirLayer::open_upper(&upper, dir.join("work")).unwrap();
    let summary = import_into(&layer[..], &mut layer_dir, &[], &imp()).unwrap();
    drop(layer_dir);
    assert_eq!(summary.overlay_xattrs_dropped, 9);
    for path in ["d", "r", "d/kept"] {
        let mut names = vec![0u8; 4096];
        let n = rustix::fs::llistxattr(upper.join(path).as_str(), &mut names[..]).unwrap();
        let names: Vec<&str> = names[..n]
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| std::str::from_utf8(n).unwrap())
            .filter(|n| n.contains("overlay"))
            .collect();
        assert_eq!(
            names,
            Vec::<&str>::new(),
            "{path} holds overlay xattrs on disk"
        );
    }
    // Through this crate: neither opaque nor anything but a directory.
    let read = DirLayer::open(&upper).unwrap();
    assert!(!read.read_dir(&p("d")).unwrap().opaque);
    assert!(!read.read_dir(&p("r")).unwrap().opaque);
    drop(read);
    // Through the kernel: d and r merge with the base, d/kept is a file.
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let data = std::ffi::CString::new(format!("lowerdir={upper}:{}", dir.join("base"))).unwrap();
    rustix::mount::mount(
        "overlay",
        mnt.as_str(),
        "overlay",
        rustix::mount::MountFlags::RDONLY,
        Some(data.as_c_str()),
    )
    .expect("mount the kernel overlay");
    let list = |d: &str| {
        let mut names: Vec<String> = std::fs::read_dir(mnt.join(d))
            .map(|it| {
                it.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_else(|e| vec![format!("error: {e}")]);
        names.sort();
        names
    };
    let (d, r) = (list("d"), list("r"));
    let kept = std::fs::read_to_string(mnt.join("d/kept"));
    rustix::mount::unmount(mnt.as_str(), rustix::mount::UnmountFlags::DETACH).unwrap();
    assert_eq!(d, ["below", "kept", "new"], "d must not be opaque");
    assert_eq!(r, ["below"], "r must not be opaque nor redirected");
    assert_eq!(kept.unwrap(), "kept");
    arena.assert_canary_untouched();
}

/// `a -> <canary>`, `rel -> ../canary` (which, from the layer directory,
/// is the canary on the host) and `file -> ../canary/secret`, planted in
/// a layer directory.
fn plant(dir: &Utf8Path, canary: &Utf8Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::os::unix::fs::symlink(canary, dir.join("a")).unwrap();
    std::os::unix::fs::symlink("../canary", dir.join("rel")).unwrap();
    std::os::unix::fs::symlink("../canary/secret", dir.join("file")).unwrap();
}

#[test]
fn symlinks_planted_in_a_layer_directory_resolve_inside_the_view() {
    // tests/dir_layer.rs `symlinks_in_a_layer_are_never_followed` shows
    // the layer itself refusing them; here a view walks them.
    let arena = Arena::new("planted");
    let canary = arena.canary();
    let dir = &arena.dir;
    plant(&dir.join("lower"), &canary);
    plant(&dir.join("upper"), &canary);
    for (what, upper) in [("lower", "fresh"), ("upper", "upper")] {
        let lower: Arc<dyn Layer> = Arc::new(DirLayer::open(dir.join("lower")).unwrap());
        let upper =
            DirLayer::open_upper(dir.join(upper), dir.join(format!("{upper}.work"))).unwrap();
        let view = MergedView::new(vec![lower], upper).unwrap();
        assert_eq!(view.read_link("a").unwrap(), canary.as_str(), "{what}");
        assert_eq!(view.read_link("rel").unwrap(), "../canary");
        let ops: [(&str, layerstack::Result<()>); 9] = [
            ("read a/secret", view.read("a/secret").map(drop)),
            ("read rel/secret", view.read("rel/secret").map(drop)),
            ("read file", view.read("file").map(drop)),
            ("write a/new", view.write("a/new", "pwned")),
            ("write rel/secret", view.write("rel/secret", "pwned")),
            ("write file", view.write("file", "pwned")),
            ("chmod a", view.set_permissions("a", 0o777)),
            ("chmod file", view.set_permissions("file", 0o777)),
            ("mkdir a/dir/x", view.create_dir_all("a/dir/x")),
        ];
        for (op, result) in ops {
            let path = op.split_once(' ').unwrap().1;
            let expected = match op.split_once(' ').unwrap().0 {
                "read" => format!("NotFound: failed to read `{path}`: no such file or directory"),
                "write" => format!("NotFound: failed to open `{path}`: no such file or directory"),
                "chmod" => format!(
                    "NotFound: failed to set permissions of `{path}`: no such file or directory"
                ),
                // As `std::fs::create_dir_all`: `a` exists, as something
                // other than a directory of the view.
                _ => format!("AlreadyExists: failed to create directory `{path}`: already exists"),
            };
            expect(&format!("{what}: {op}"), outcome(&result), &expected);
        }
        arena.assert_canary_untouched();
    }
}

#[test]
fn a_layer_directory_whose_parts_are_swapped_for_symlinks_never_reaches_outside() {
    let arena = Arena::new("swapped");
    let canary = arena.canary();
    let dir = &arena.dir;
    std::fs::create_dir_all(dir.join("lower/d")).unwrap();
    std::fs::write(dir.join("lower/d/secret"), "lower").unwrap();
    std::fs::create_dir_all(dir.join("upper/e")).unwrap();
    std::fs::write(dir.join("upper/e/secret"), "upper").unwrap();
    let lower: Arc<dyn Layer> = Arc::new(DirLayer::open(dir.join("lower")).unwrap());
    let upper = DirLayer::open_upper(dir.join("upper"), dir.join("work")).unwrap();
    let view = MergedView::new(vec![lower], upper).unwrap();
    assert_eq!(view.read("d/secret").unwrap(), "lower");
    assert_eq!(view.read("e/secret").unwrap(), "upper");
    // Between two operations, another process swaps both directories for
    // symlinks to the canary.
    for swapped in ["lower/d", "upper/e"] {
        std::fs::rename(dir.join(swapped), dir.join(format!("{swapped}.moved"))).unwrap();
        std::os::unix::fs::symlink(&canary, dir.join(swapped)).unwrap();
    }
    let ops: [(&str, layerstack::Result<()>); 8] = [
        ("read d/secret", view.read("d/secret").map(drop)),
        ("read e/secret", view.read("e/secret").map(drop)),
        ("write d/secret", view.write("d/secret", "pwned")),
        ("write e/secret", view.write("e/secret", "pwned")),
        ("write e/new", view.write("e/new", "pwned")),
        ("chmod e", view.set_permissions("e", 0o777)),
        ("remove e/secret", view.remove_file("e/secret")),
        ("list d", view.read_dir("d").map(drop)),
    ];
    let expected = [
        format!(
            "NotFound: failed to read `d/secret` in layer {dir}/lower: no such file or directory"
        ),
        format!(
            "NotFound: failed to read `e/secret` in layer {dir}/upper: no such file or directory"
        ),
        format!(
            "Io: failed to open `d/secret` in layer {dir}/lower: a layer changed while the view was using it"
        ),
        "NotFound: failed to open `e/secret`: no such file or directory".to_owned(),
        "NotFound: failed to open `e/new`: no such file or directory".to_owned(),
        "NotFound: failed to set permissions of `e`: no such file or directory".to_owned(),
        "NotFound: failed to remove file `e/secret`: no such file or directory".to_owned(),
        // The view listed `d` before the swap; the listing of the lower
        // layer's `d` now fails beneath and shows nothing of the canary.
        "Ok".to_owned(),
    ];
    for ((op, result), expected) in ops.into_iter().zip(expected) {
        expect(op, outcome(&result), &expected);
    }
    // Nothing of the canary shows through the view.
    assert_eq!(view.read_dir("d").unwrap().len(), 0);
    assert_eq!(view.read_dir("e").map(|l| l.len()).unwrap_or(0), 0);
    arena.assert_canary_untouched();
}
