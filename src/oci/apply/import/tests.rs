use std::io::Write;

use super::*;
use crate::layer::walk;
use crate::meta::{Timestamp, makedev};
use crate::oci::tar::compress::Compressor;
use crate::testing::{Hdr, RawTar};

fn p(s: &str) -> LayerPath {
    LayerPath::new(s).unwrap()
}

fn import(tar: &[u8]) -> Result<(MemLayer, ImportSummary)> {
    import_layer(tar, &[], &ImportOptions::default())
}

fn import_below(tar: &[u8], below: &[Arc<dyn Layer>]) -> Result<MemLayer> {
    import_layer(tar, below, &ImportOptions::default()).map(|(l, _)| l)
}

/// The layer as `path kind [opaque]` lines.
fn shape(layer: &MemLayer) -> Vec<String> {
    walk(layer)
        .unwrap()
        .into_iter()
        .map(|(path, entry)| match entry {
            Entry::Whiteout => format!("{path} whiteout"),
            Entry::Node(n) => format!(
                "{path} {:?}{}",
                n.meta.file_type,
                if n.opaque { " opaque" } else { "" }
            ),
        })
        .collect()
}

fn meta(layer: &MemLayer, path: &str) -> Metadata {
    layer
        .lookup(&p(path))
        .unwrap()
        .unwrap()
        .node()
        .unwrap()
        .meta
        .clone()
}

fn err(tar: &[u8]) -> Error {
    import(tar).unwrap_err()
}

#[test]
fn entries_become_objects_with_their_attributes() {
    let mut t = RawTar::new();
    t.dir("etc/");
    let mut h = Hdr::new("etc/app.conf", b'0');
    h.size = 9;
    h.mode = 0o640;
    h.uid = 1000;
    h.gid = 50;
    h.mtime = 1_600_000_000;
    t.header(&h).data(b"port = 80");
    t.symlink("etc/link", "../usr/lib/x");
    t.header(&Hdr::new("run/fifo", b'6'));
    let mut dev = Hdr::new("dev/null", b'3');
    dev.major = 1;
    dev.minor = 3;
    t.header(&dev);
    let (layer, summary) = import(&t.end()).unwrap();
    assert_eq!(
        shape(&layer),
        [
            "dev Dir",
            "dev/null CharDevice",
            "etc Dir",
            "etc/app.conf File",
            "etc/link Symlink",
            "run Dir",
            "run/fifo Fifo"
        ]
    );
    let m = meta(&layer, "etc/app.conf");
    assert_eq!((m.mode, m.uid, m.gid, m.size), (0o640, 1000, 50, 9));
    assert_eq!(m.mtime, Timestamp::new(1_600_000_000, 0));
    assert_eq!(
        &layer.read_at(&p("etc/app.conf"), 0, 100).unwrap()[..],
        b"port = 80"
    );
    assert_eq!(layer.read_link(&p("etc/link")).unwrap(), "../usr/lib/x");
    assert_eq!(meta(&layer, "dev/null").rdev, makedev(1, 3));
    // Implied parents: mode 0755, owner root, time 0.
    let d = meta(&layer, "dev");
    assert_eq!((d.mode, d.uid, d.mtime), (0o755, 0, Timestamp::EPOCH));
    assert_eq!(summary.entries, 5);
}

#[test]
fn whiteouts_and_opaque_markers_become_data() {
    let mut t = RawTar::new();
    t.dir("a/");
    t.file("a/.wh.gone", b"");
    t.file("b/.wh..wh..opq", b"");
    t.file(".wh.top", b"");
    t.file("c/.wh..wh.plnk", b"");
    let (layer, summary) = import(&t.end()).unwrap();
    assert_eq!(
        shape(&layer),
        ["a Dir", "a/gone whiteout", "b Dir opaque", "top whiteout"]
    );
    assert_eq!(
        (
            summary.whiteouts,
            summary.opaque_markers,
            summary.aufs_skipped
        ),
        (2, 1, 1)
    );
}

#[test]
fn an_opaque_marker_after_its_own_entries_keeps_them() {
    let mut t = RawTar::new();
    t.dir("d/");
    t.file("d/kept", b"same layer");
    t.file("d/.wh..wh..opq", b"");
    t.file("d/later", b"also kept");
    let layer = import(&t.end()).unwrap().0;
    assert_eq!(
        shape(&layer),
        ["d Dir opaque", "d/kept File", "d/later File"]
    );
}

#[test]
fn a_whiteout_never_deletes_an_entry_of_its_own_layer() {
    // Before or after: the same-layer directory stays, becomes opaque.
    for whiteout_first in [true, false] {
        let mut t = RawTar::new();
        if whiteout_first {
            t.file(".wh.d", b"");
        }
        t.dir("d/");
        t.file("d/new", b"x");
        if !whiteout_first {
            t.file(".wh.d", b"");
        }
        t.file("f", b"file");
        t.file(".wh.f", b"");
        let layer = import(&t.end()).unwrap().0;
        assert_eq!(
            shape(&layer),
            ["d Dir opaque", "d/new File", "f File"],
            "whiteout first: {whiteout_first}"
        );
    }
}

#[test]
fn a_deleted_then_used_parent_is_a_new_opaque_directory() {
    let mut t = RawTar::new();
    t.file(".wh.d", b"");
    t.file("d/x", b"x");
    let layer = import(&t.end()).unwrap().0;
    assert_eq!(shape(&layer), ["d Dir opaque", "d/x File"]);
}

#[test]
fn invalid_whiteout_names_are_refused() {
    for (name, why) in [
        (".wh.", "invalid whiteout `.wh.`: it names nothing"),
        (
            "d/.wh..",
            "invalid whiteout `.wh..`: it would delete its own directory",
        ),
        (
            "d/.wh...",
            "invalid whiteout `.wh...`: it would delete the parent directory",
        ),
    ] {
        let mut t = RawTar::new();
        t.file(name, b"");
        let e = err(&t.end());
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            format!("failed to import layer entry `{name}`: {why}")
        );
    }
}

#[test]
fn a_directory_over_a_directory_merges_and_anything_else_replaces() {
    let mut t = RawTar::new();
    t.dir("d/");
    t.file("d/child", b"c");
    let mut again = Hdr::new("d/", b'5');
    again.mode = 0o700;
    again.uid = 7;
    t.header(&again);
    t.dir("e/");
    t.file("e/child", b"c");
    t.file("e", b"now a file");
    t.file("f", b"old");
    t.file("f", b"new");
    let layer = import(&t.end()).unwrap().0;
    assert_eq!(shape(&layer), ["d Dir", "d/child File", "e File", "f File"]);
    let d = meta(&layer, "d");
    assert_eq!((d.mode, d.uid), (0o700, 7));
    assert_eq!(&layer.read_at(&p("f"), 0, 10).unwrap()[..], b"new");
}

#[test]
fn implied_parents_take_the_attributes_of_the_directory_below() {
    let mut base = MemLayer::new();
    base.add_dir_with(
        "usr",
        Metadata::new(FileType::Dir)
            .with_mode(0o711)
            .with_owner(3, 4)
            .with_times(Timestamp::new(5, 6)),
    )
    .unwrap();
    let below: Vec<Arc<dyn Layer>> = vec![Arc::new(base)];
    let mut t = RawTar::new();
    t.file("usr/bin/tool", b"#!");
    let layer = import_below(&t.end(), &below).unwrap();
    let usr = meta(&layer, "usr");
    assert_eq!(
        (usr.mode, usr.uid, usr.gid, usr.mtime),
        (0o711, 3, 4, Timestamp::new(5, 6))
    );
    assert_eq!(meta(&layer, "usr/bin").mode, 0o755);
}

#[test]
fn nothing_is_written_through_a_symlink() {
    // Same layer: a symlink, then an entry below it.
    let mut t = RawTar::new();
    t.symlink("etc", "/tmp/elsewhere");
    t.file("etc/passwd", b"root::0:0");
    let e = err(&t.end());
    assert_eq!(e.kind(), ErrorKind::NotADirectory);
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `etc/passwd`: its parent `etc` is a symlink in this layer"
    );

    // A lower layer's symlink, and a write through it in a higher layer.
    let mut base = MemLayer::new();
    base.add_symlink("etc", "/tmp/elsewhere").unwrap();
    let below: Vec<Arc<dyn Layer>> = vec![Arc::new(base)];
    let mut t = RawTar::new();
    t.file("etc/passwd", b"root::0:0");
    let e = import_below(&t.end(), &below).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotADirectory);
    assert!(
        e.to_string().contains("is a symlink in a lower layer"),
        "{e}"
    );

    // Replacing it with a directory first is fine.
    let mut t = RawTar::new();
    t.dir("etc/");
    t.file("etc/passwd", b"root::0:0");
    let layer = import_below(&t.end(), &below).unwrap();
    assert_eq!(shape(&layer), ["etc Dir", "etc/passwd File"]);
}

#[test]
fn hard_links_resolve_in_this_layer_or_below_and_never_outside() {
    let mut t = RawTar::new();
    t.file("bin/a", b"same inode");
    t.hard_link("bin/b", "bin/a");
    let (layer, summary) = import(&t.end()).unwrap();
    assert_eq!(summary.hard_links, 1);
    assert_eq!(meta(&layer, "bin/a").ino, meta(&layer, "bin/b").ino);
    assert_eq!(meta(&layer, "bin/b").nlink, 2);

    let mut base = MemLayer::new();
    base.add_file("lib/libc.so", "ELF").unwrap();
    let below: Vec<Arc<dyn Layer>> = vec![Arc::new(base)];
    let mut t = RawTar::new();
    t.hard_link("lib/libc.so.6", "lib/libc.so");
    let layer = import_below(&t.end(), &below).unwrap();
    assert_eq!(
        shape(&layer),
        ["lib Dir", "lib/libc.so File", "lib/libc.so.6 File"]
    );
    assert_eq!(
        meta(&layer, "lib/libc.so").ino,
        meta(&layer, "lib/libc.so.6").ino
    );
    assert_eq!(
        &layer.read_at(&p("lib/libc.so.6"), 0, 9).unwrap()[..],
        b"ELF"
    );

    for (target, kind, detail) in [
        (
            "missing",
            ErrorKind::NotFound,
            "hard link target `missing` is neither in this layer nor below it",
        ),
        (
            "d",
            ErrorKind::NotPermitted,
            "hard link target `d` is a directory",
        ),
        (
            "../../etc/shadow",
            ErrorKind::InvalidInput,
            "bad hard link target `../../etc/shadow`: the name contains `..` (it could reach outside the layer)",
        ),
    ] {
        let mut t = RawTar::new();
        t.dir("d/");
        t.hard_link("x", target);
        let e = err(&t.end());
        assert_eq!(e.kind(), kind, "{target}");
        assert_eq!(
            e.to_string(),
            format!("failed to import layer entry `x`: {detail}")
        );
    }
}

#[test]
fn names_are_normalised_and_dot_dot_is_refused() {
    let mut t = RawTar::new();
    t.file("./a//b/./c", b"1");
    t.file("/abs", b"2");
    let layer = import(&t.end()).unwrap().0;
    assert_eq!(
        shape(&layer),
        ["a Dir", "a/b Dir", "a/b/c File", "abs File"]
    );

    for name in ["../escape", "a/../../escape", "a/.."] {
        let mut t = RawTar::new();
        t.file(name, b"x");
        let e = err(&t.end());
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}");
        assert_eq!(
            e.to_string(),
            format!(
                "failed to import layer entry `{name}`: the name contains `..` (it could reach outside the layer)"
            )
        );
    }
}

#[test]
fn the_root_entry_can_only_be_a_directory() {
    let mut t = RawTar::new();
    let mut root = Hdr::new("./", b'5');
    root.mode = 0o700;
    t.header(&root);
    let layer = import(&t.end()).unwrap().0;
    assert_eq!(
        layer
            .lookup(&LayerPath::root())
            .unwrap()
            .unwrap()
            .node()
            .unwrap()
            .meta
            .mode,
        0o700
    );

    for kind in [b'2', b'0'] {
        let mut t = RawTar::new();
        let mut h = Hdr::new(".", kind);
        h.link = "/etc";
        t.header(&h);
        let e = err(&t.end());
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "failed to import layer entry `.`: the root of a layer can only be a directory"
        );
    }
}

#[test]
fn pax_records_apply_and_a_size_that_disagrees_is_refused() {
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
    let mut t = RawTar::new();
    t.pax(&[
        ("path", long.as_bytes()),
        ("uid", b"4000000000"),
        ("mtime", b"1700000000.123456789"),
        ("SCHILY.xattr.user.note", b"\x00binary\xff"),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.security.capability", b"cap"),
    ]);
    let mut h = Hdr::new("short-name", b'0');
    h.size = 3;
    t.header(&h).data(b"abc");
    // Go writes a size of 8 GiB or more only in PAX, with 0 in the header.
    t.pax(&[("size", b"4")]);
    let mut h = Hdr::new("big", b'0');
    h.size = 0;
    t.header(&h).data(b"four");
    let (layer, summary) = import(&t.end()).unwrap();
    let m = meta(&layer, &long);
    assert_eq!(m.uid, 4_000_000_000);
    assert_eq!(m.mtime, Timestamp::new(1_700_000_000, 123_456_789));
    assert_eq!(
        m.xattrs
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect::<Vec<_>>(),
        [
            ("security.capability".to_owned(), b"cap".to_vec()),
            ("user.note".to_owned(), b"\x00binary\xff".to_vec())
        ]
    );
    assert_eq!(summary.overlay_xattrs_dropped, 1);
    assert_eq!(&layer.read_at(&p("big"), 0, 10).unwrap()[..], b"four");

    // Both ways: PAX larger and PAX smaller than the header.
    for (pax_size, header_size) in [(b"1024".as_slice(), 3u64), (b"1", 3)] {
        let mut t = RawTar::new();
        t.pax(&[("size", pax_size)]);
        let mut h = Hdr::new("smuggle", b'0');
        h.size = header_size;
        t.header(&h).data(b"abc");
        let e = err(&t.end());
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        assert_eq!(
            e.to_string(),
            format!(
                "failed to import layer entry `smuggle`: PAX size {} disagrees with the header's size 3",
                std::str::from_utf8(pax_size).unwrap()
            )
        );
    }
}

#[test]
fn gnu_long_names_apply() {
    let long = "n".repeat(200);
    let mut t = RawTar::new();
    let mut l = Hdr::new("././@LongLink", b'L');
    l.size = long.len() as u64 + 1;
    let mut name = long.clone().into_bytes();
    name.push(0);
    t.header(&l).data(&name);
    t.file("truncated", b"data");
    let layer = import(&t.end()).unwrap().0;
    assert_eq!(shape(&layer), [format!("{long} File")]);
}

#[test]
fn limits_stop_hostile_layers_with_a_clear_error() {
    let opts = |limits: Limits| ImportOptions::default().limits(limits);

    let mut t = RawTar::new();
    for i in 0..11 {
        t.file(&format!("f{i}"), b"");
    }
    let e = import_layer(&t.end()[..], &[], &opts(Limits::new().max_entries(10))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `f10`: the layer has more than 10 entries"
    );

    // A gzip bomb: 8 MiB of zeros in a few KiB, against a 1 MiB limit.
    let mut t = RawTar::new();
    t.file("zeros", &vec![0u8; 8 << 20]);
    let mut gz = Compressor::new(Vec::new(), Compression::Gzip);
    gz.write_all(&t.end()).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 64 << 10);
    let e = import_layer(&bomb[..], &[], &opts(Limits::new().max_bytes(1 << 20))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    assert!(
        e.to_string()
            .ends_with(": the layer is larger than the limit of 1048576 bytes uncompressed"),
        "{e}"
    );

    // A PAX header over the limit is refused before it is read.
    let mut t = RawTar::new();
    let mut h = Hdr::new("././@PaxHeader", b'x');
    h.size = 2 << 20;
    t.header(&h);
    let e = import_layer(&t.end()[..], &[], &opts(Limits::new())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `<header at byte 0>`: a PAX extended header of 2097152 bytes is larger than the limit of 1048576 bytes"
    );

    let mut t = RawTar::new();
    t.file("a/b/c/d", b"");
    let e = import_layer(&t.end()[..], &[], &opts(Limits::new().max_path_depth(3))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `a/b/c/d`: the path is deeper than the limit of 3 components"
    );
}

#[test]
fn device_and_setuid_policies() {
    let tar = {
        let mut t = RawTar::new();
        let mut dev = Hdr::new("dev/sda", b'4');
        dev.major = 8;
        t.header(&dev);
        let mut su = Hdr::new("bin/su", b'0');
        su.mode = 0o4755;
        t.header(&su);
        let mut sgid_dir = Hdr::new("shared/", b'5');
        sgid_dir.mode = 0o2775;
        t.header(&sgid_dir);
        t.end()
    };
    let (keep, _) = import_layer(&tar[..], &[], &ImportOptions::default()).unwrap();
    assert_eq!(meta(&keep, "bin/su").mode, 0o4755);
    assert_eq!(meta(&keep, "dev/sda").rdev, makedev(8, 0));

    let strip = ImportOptions::default()
        .devices(Policy::Strip)
        .setuid(Policy::Strip);
    let (stripped, summary) = import_layer(&tar[..], &[], &strip).unwrap();
    assert_eq!(
        shape(&stripped),
        ["bin Dir", "bin/su File", "dev Dir", "shared Dir"]
    );
    assert_eq!(meta(&stripped, "bin/su").mode, 0o755);
    assert_eq!(meta(&stripped, "shared").mode, 0o2775);
    assert_eq!((summary.devices_stripped, summary.setuid_stripped), (1, 1));

    let e = import_layer(
        &tar[..],
        &[],
        &ImportOptions::default().devices(Policy::Refuse),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `dev/sda`: device node refused by policy"
    );
    let e = import_layer(
        &tar[..],
        &[],
        &ImportOptions::default().setuid(Policy::Refuse),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotPermitted);
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `bin/su`: setuid/setgid file (mode 4755) refused by policy"
    );

    let mut t = RawTar::new();
    t.header(&Hdr::new("wh", b'3'));
    let e = err(&t.end());
    assert_eq!(e.kind(), ErrorKind::NotPermitted);
}

#[test]
fn digests_cover_the_stored_and_the_uncompressed_bytes() {
    let mut t = RawTar::new();
    t.file("a", b"hello");
    let plain = t.end();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let mut w = Compressor::new(Vec::new(), c);
        w.write_all(&plain).unwrap();
        let stored = w.finish().unwrap();
        let (_, s) = import(&stored).unwrap();
        assert_eq!(s.compression, c);
        assert_eq!(s.digest, Digest::of(&stored));
        assert_eq!(s.size, stored.len() as u64);
        assert_eq!(s.diff_id, Digest::of(&plain));
        assert_eq!(s.uncompressed_size, plain.len() as u64);
    }
}

#[test]
fn malformed_tars_are_refused() {
    let mut t = RawTar::new();
    t.file("a", b"hello");
    let mut bytes = t.end();
    bytes[0] ^= 1; // the checksum no longer matches
    let e = err(&bytes);
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `<header at byte 0>`: header checksum mismatch (not a tar, or a corrupt one)"
    );

    let mut t = RawTar::new();
    let mut h = Hdr::new("a", b'0');
    h.size = 10_000;
    t.header(&h);
    t.bytes.extend_from_slice(b"short");
    let e = import(&t.bytes).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `a`: the tar is truncated inside the file's data"
    );

    let e = err(b"this is not a tar at all, just some text that is long enough ........");
    assert_eq!(e.kind(), ErrorKind::InvalidData);

    // An empty stream is an empty layer.
    let (layer, _) = import(b"").unwrap();
    assert!(layer.is_empty());
}

#[test]
fn large_files_stream_into_the_layer() {
    let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 253) as u8).collect();
    let mut t = RawTar::new();
    t.file("big", &data);
    let layer = import(&t.end()).unwrap().0;
    assert_eq!(meta(&layer, "big").size, data.len() as u64);
    assert_eq!(
        layer.file_data(&p("big")).unwrap().to_bytes().unwrap(),
        data
    );
}

#[test]
fn a_file_that_replaces_a_directory_keeps_its_own_attributes() {
    let mut t = RawTar::new();
    let mut d = Hdr::new("d/", b'5');
    d.mode = 0o700;
    d.uid = 9;
    t.header(&d);
    t.dir("d/sub/");
    t.file("d/sub/f", b"gone");
    let mut f = Hdr::new("d", b'0');
    f.size = 1;
    f.mode = 0o640;
    t.header(&f).data(b"x");
    t.file("e", b"e");
    t.dir("l/");
    t.hard_link("l", "e");
    let layer = import(&t.end()).unwrap().0;
    assert_eq!(shape(&layer), ["d File", "e File", "l File"]);
    let m = meta(&layer, "d");
    assert_eq!(
        (m.mode, m.uid, m.mtime),
        (0o640, 0, Timestamp::new(1_700_000_000, 0))
    );
    assert_eq!(meta(&layer, "l").mode, 0o644);
}

#[test]
fn a_hard_link_to_a_file_at_the_root_of_a_lower_layer() {
    let mut base = MemLayer::new();
    base.add_file("libc.so", "ELF").unwrap();
    let below: Vec<Arc<dyn Layer>> = vec![Arc::new(base)];
    let mut t = RawTar::new();
    t.hard_link("libc.so.6", "libc.so");
    let layer = import_below(&t.end(), &below).unwrap();
    assert_eq!(shape(&layer), ["libc.so File", "libc.so.6 File"]);
    assert_eq!(meta(&layer, "libc.so").ino, meta(&layer, "libc.so.6").ino);
    assert_eq!(&layer.read_at(&p("libc.so.6"), 0, 9).unwrap()[..], b"ELF");
}

#[test]
fn an_implied_directory_under_an_opaque_one_is_new() {
    let mut base = MemLayer::new();
    base.add_dir_with(
        "d/x",
        Metadata::new(FileType::Dir)
            .with_mode(0o700)
            .with_owner(5, 5),
    )
    .unwrap();
    let below: Vec<Arc<dyn Layer>> = vec![Arc::new(base)];
    for opaque_first in [".wh.d", "d/.wh..wh..opq"] {
        let mut t = RawTar::new();
        if opaque_first == "d/.wh..wh..opq" {
            t.dir("d/");
        }
        t.file(opaque_first, b"");
        t.file("d/x/y", b"y");
        let layer = import_below(&t.end(), &below).unwrap();
        let x = meta(&layer, "d/x");
        assert_eq!((x.mode, x.uid), (0o755, 0), "{opaque_first}");
    }
    // Without the opaque parent the lower directory's attributes are kept.
    let mut t = RawTar::new();
    t.file("d/x/y", b"y");
    let layer = import_below(&t.end(), &below).unwrap();
    let x = meta(&layer, "d/x");
    assert_eq!((x.mode, x.uid), (0o700, 5));
}

#[test]
fn an_xattr_name_with_a_nul_byte_is_refused() {
    // Found by the tar_import fuzz target: such a name was imported, and
    // the layer could then not be exported.
    let mut t = RawTar::new();
    t.pax(&[("SCHILY.xattr.user. \0r", b"blue")]);
    t.file("f", b"");
    let e = err(&t.end());
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `<header at byte 0>`: malformed PAX record: `SCHILY.xattr.user. \\x00r=blue` is not a valid record"
    );
}
