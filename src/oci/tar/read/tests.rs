//! One named test per way a layer tar was read differently from Go's
//! `archive/tar` (issue 13); the Go differential (`tests/it/oci/tar_diff.rs`)
//! covers the same ground at random.

use super::*;
use crate::testing::{Hdr, RawTar};

/// A header with raw bytes written over it at offsets, checksum fixed.
fn patched(h: &Hdr<'_>, patches: &[(usize, &[u8])]) -> [u8; 512] {
    let mut b = h.bytes();
    for (at, raw) in patches {
        b[*at..*at + raw.len()].copy_from_slice(raw);
    }
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&c| u32::from(c)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

fn sized(name: &str, kind: u8, size: u64) -> Hdr<'_> {
    let mut h = Hdr::new(name, kind);
    h.size = size;
    h
}

/// Every entry as (name, kind, size), reading all data.
fn list(tar: &[u8]) -> Result<Vec<(String, TarKind, u64)>> {
    let mut r = TarReader::new(tar, Limits::default());
    let mut out = Vec::new();
    while let Some(e) = r.next_entry()? {
        let mut buf = [0u8; 4096];
        while r.read_data(&mut buf)? > 0 {}
        out.push((
            e.name.to_str().expect("UTF-8 names").to_owned(),
            e.kind,
            e.size,
        ));
    }
    Ok(out)
}

fn names(tar: &[u8]) -> Vec<String> {
    list(tar)
        .expect("the tar reads")
        .into_iter()
        .map(|(n, _, _)| n)
        .collect()
}

/// Pieces of data and where each goes.
type Pieces = Vec<(u64, Vec<u8>)>;

/// The first entry and its data, holes as zeros, with where each piece
/// went.
fn first(tar: &[u8], limits: Limits) -> Result<(TarEntry, Pieces)> {
    let mut r = TarReader::new(tar, limits);
    let e = r.next_entry()?.expect("an entry");
    let mut pieces = Vec::new();
    loop {
        let at = r.data_offset();
        let mut buf = [0u8; 4096];
        let n = r.read_data(&mut buf)?;
        if n == 0 {
            break;
        }
        pieces.push((at, buf[..n].to_vec()));
    }
    Ok((e, pieces))
}

#[test]
fn header_only_types_with_a_size_carry_no_data() {
    // Each of these has a size field of one block; the entry after it is
    // a header, not data (it was skipped as data, and lost).
    let mut t = RawTar::new();
    let mut dev = sized("chr", b'3', 512);
    (dev.major, dev.minor) = (1, 3);
    let mut link = sized("sym", b'2', 1024);
    link.link = "d/one";
    let mut hard = sized("hard", b'1', 512);
    hard.link = "d/one";
    t.header(&sized("d", b'5', 512)).file("d/one", b"1");
    t.header(&link).file("d/two", b"2");
    t.header(&hard).file("d/three", b"3");
    t.header(&sized("fifo", b'6', 512)).file("d/four", b"4");
    t.header(&dev).file("d/five", b"5");
    // An old-style directory: type NUL, a name ending in `/`.
    t.bytes
        .extend_from_slice(&patched(&sized("old/", b'0', 512), &[(156, b"\0")]));
    t.file("old/six", b"6");
    let got = list(&t.end()).unwrap();
    let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "d", "d/one", "sym", "d/two", "hard", "d/three", "fifo", "d/four", "chr", "d/five",
            "old/", "old/six"
        ]
    );
    assert_eq!(got[10].1, TarKind::Dir);
    assert!(
        got.iter()
            .all(|(_, kind, size)| *kind == TarKind::File || *size == 0)
    );
}

#[test]
fn an_old_tars_sized_hard_link_at_the_end_is_read() {
    let mut t = RawTar::new();
    t.file("f", b"data\n");
    let mut hard = sized("h", b'1', 5);
    hard.link = "f";
    t.header(&hard);
    // No data and no end blocks follow: it was "truncated".
    let got = list(&t.bytes).unwrap();
    assert_eq!(
        got[1],
        (
            "h".into(),
            TarKind::HardLink(LayerPath::new("f").unwrap()),
            0
        )
    );
}

#[test]
fn a_regular_file_named_with_a_slash_is_a_file_as_in_go() {
    let mut t = RawTar::new();
    t.header(&sized("notadir/", b'0', 3)).data(b"abc");
    assert_eq!(
        list(&t.end()).unwrap(),
        [("notadir/".into(), TarKind::File, 3)]
    );
}

#[test]
fn the_prefix_is_joined_whatever_the_ustar_version() {
    // A 2014 Docker layer: magic `ustar\0`, version ` \0`.
    let mut t = RawTar::new();
    t.bytes.extend_from_slice(&patched(
        &sized("name.txt", b'0', 0),
        &[(263, b" \0"), (345, b"usr/share/doc")],
    ));
    assert_eq!(names(&t.end()), ["usr/share/doc/name.txt"]);
}

#[test]
fn go_before_1_8_gnu_headers_with_a_prefix_read_as_go_reads_them() {
    // GNU magic, a base-256 uid, and a ustar prefix over atime/ctime.
    let gnu: &[(usize, &[u8])] = &[(257, b"ustar "), (263, b" \0")];
    let mut pre18 = gnu.to_vec();
    pre18.push((108, &[0x80, 0, 0, 0, 0, 0x2d, 0xc6, 0xc0]));
    pre18.push((345, b"go/wrote/this"));
    let mut t = RawTar::new();
    t.bytes
        .extend_from_slice(&patched(&sized("file", b'0', 0), &pre18));
    let (e, _) = first(&t.end(), Limits::default()).unwrap();
    assert_eq!(e.name, "go/wrote/this/file");
    assert_eq!(e.uid, 3_000_000);

    // A real GNU header whose atime and ctime are numbers keeps its name.
    let mut real = gnu.to_vec();
    real.push((345, b"14524770400\0"));
    let mut t = RawTar::new();
    t.bytes
        .extend_from_slice(&patched(&sized("file", b'0', 0), &real));
    assert_eq!(names(&t.end()), ["file"]);
}

#[test]
fn numeric_fields_all_nul_or_led_by_nuls_are_numbers() {
    let mut t = RawTar::new();
    t.bytes.extend_from_slice(&patched(
        &sized("all-nul", b'0', 0),
        &[
            (100, &[0; 8]),
            (108, &[0; 8]),
            (116, &[0; 8]),
            (124, &[0; 12]),
            (136, &[0; 12]),
        ],
    ));
    t.bytes.extend_from_slice(&patched(
        &sized("leading-nul", b'0', 0),
        &[(100, b"\x00\x00000644"), (124, b"\x00\x00\x0000000001\x00")],
    ));
    t.data(b"x");
    let tar = t.end();
    let mut r = TarReader::new(&tar[..], Limits::default());
    let a = r.next_entry().unwrap().unwrap();
    assert_eq!((a.mode, a.size, a.mtime), (0, 0, Timestamp::new(0, 0)));
    let b = r.next_entry().unwrap().unwrap();
    assert_eq!(
        (b.name.to_str().unwrap(), b.mode, b.size),
        ("leading-nul", 0o644, 1)
    );
    assert!(r.next_entry().unwrap().is_none());
}

#[test]
fn pax_numbers_longer_than_20_digits_are_read() {
    let mut t = RawTar::new();
    t.pax(&[
        ("uid", b"0000000000000000000000001000"),
        ("gid", b"+2000"),
        ("mtime", b"00000000000000000000001700000000.123456789123"),
        ("size", b"00000000000000000000000000003"),
    ]);
    t.file("f", b"abc");
    let (e, _) = first(&t.end(), Limits::default()).unwrap();
    assert_eq!((e.uid, e.gid, e.size), (1000, 2000, 3));
    assert_eq!(e.mtime, Timestamp::new(1_700_000_000, 123_456_789));
}

#[test]
fn a_bad_number_is_named_with_its_field_and_escaped() {
    let mut t = RawTar::new();
    t.bytes
        .extend_from_slice(&patched(&sized("f", b'0', 0), &[(100, b"\x1b[31m\n")]));
    let e = list(&t.end()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `<header at byte 0>`: the mode field is not a number: `\\x1b[31m\\n4\\x00`"
    );
}

/// A PAX header of `records`, then a file `name` storing `data`.
fn pax_sparse(records: &[(&str, &[u8])], name: &str, data: &[u8]) -> Vec<u8> {
    let mut t = RawTar::new();
    t.pax(records);
    t.header(&sized(name, b'0', data.len() as u64)).data(data);
    t.end()
}

#[test]
fn pax_sparse_files_keep_their_holes_in_every_format() {
    let v00 = pax_sparse(
        &[
            ("GNU.sparse.size", b"4096"),
            ("GNU.sparse.numblocks", b"2"),
            ("GNU.sparse.offset", b"10"),
            ("GNU.sparse.numbytes", b"2"),
            ("GNU.sparse.offset", b"4000"),
            ("GNU.sparse.numbytes", b"4"),
        ],
        "sparse",
        b"ab1234",
    );
    let v01 = pax_sparse(
        &[
            ("GNU.sparse.major", b"0"),
            ("GNU.sparse.minor", b"1"),
            ("GNU.sparse.name", b"sparse"),
            ("GNU.sparse.numblocks", b"2"),
            ("GNU.sparse.map", b"10,2,4000,4"),
            ("GNU.sparse.size", b"4096"),
        ],
        "GNUSparseFile.0/sparse",
        b"ab1234",
    );
    let mut map = b"2\n10\n2\n4000\n4\n".to_vec();
    map.resize(512, 0);
    map.extend_from_slice(b"ab1234");
    let v10 = pax_sparse(
        &[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"sparse"),
            ("GNU.sparse.realsize", b"4096"),
        ],
        "GNUSparseFile.0/sparse",
        &map,
    );
    for tar in [v00, v01, v10] {
        let (e, pieces) = first(&tar, Limits::default()).unwrap();
        assert_eq!((e.name.to_str().unwrap(), e.size), ("sparse", 4096));
        assert_eq!(e.sparse, Some(vec![(10, 2), (4000, 4)]));
        assert_eq!(e.stored_size(), 6);
        assert_eq!(pieces, [(10, b"ab".to_vec()), (4000, b"1234".to_vec())]);
    }
}

#[test]
fn a_sparse_map_that_disagrees_with_the_data_is_refused() {
    let tar = pax_sparse(
        &[
            ("GNU.sparse.major", b"0"),
            ("GNU.sparse.minor", b"1"),
            ("GNU.sparse.numblocks", b"1"),
            ("GNU.sparse.map", b"0,5"),
            ("GNU.sparse.size", b"100"),
        ],
        "s",
        b"too much data",
    );
    let e = first(&tar, Limits::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `s`: bad sparse map: its regions hold 5 bytes but the entry stores 13"
    );
}

/// A 60 GiB sparse file that stores 10 bytes.
fn sparse_60_gib() -> Vec<u8> {
    pax_sparse(
        &[
            ("GNU.sparse.major", b"0"),
            ("GNU.sparse.minor", b"1"),
            ("GNU.sparse.name", b"huge"),
            ("GNU.sparse.numblocks", b"2"),
            ("GNU.sparse.map", b"0,5,64424509435,5"),
            ("GNU.sparse.size", b"64424509440"),
        ],
        "GNUSparseFile.0/huge",
        b"startend!!",
    )
}

#[test]
fn the_holes_of_sparse_files_count_against_the_byte_limit() {
    let tar = sparse_60_gib();
    let (e, pieces) = first(&tar, Limits::default()).unwrap();
    assert_eq!(e.size, 60 << 30);
    assert_eq!(
        pieces,
        [(0, b"start".to_vec()), ((60 << 30) - 5, b"end!!".to_vec())]
    );
    let e = first(&tar, Limits::new().max_bytes(1 << 30)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `huge`: the layer is larger than the limit of 1073741824 bytes uncompressed (holes of sparse files included)"
    );
}

#[test]
fn a_negative_size_on_an_old_style_directory_is_refused_as_go_does() {
    // Go frames the header's size before it reads a type-NUL name ending
    // in `/` as a directory (found by the Go differential).
    let mut t = RawTar::new();
    let negative: &[u8] = &[
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb,
    ];
    t.bytes.extend_from_slice(&patched(
        &sized("old/", b'0', 0),
        &[(156, b"\0"), (124, negative)],
    ));
    let e = list(&t.end()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to import layer entry `<header at byte 0>`: the entry `old/` has a negative size (-5)"
    );
}

// Issue 14: names are bytes. Each framing a writer uses for a name that is
// not UTF-8 (`name.rs` says which writer uses which) must give back the
// bytes it holds, never re-encoded.

/// Latin-1 `café`, KOI8-R `Привет`, EUC-JP `日本語`, CP866 `Привет`.
const LATIN1: &[u8] = b"caf\xe9";
const KOI8R: &[u8] = b"\xf0\xd2\xc9\xd7\xc5\xd4";
const EUCJP: &[u8] = b"\xc6\xfc\xcb\xdc\xb8\xec";
const CP866: &[u8] = b"\x8f\xe0\xa8\xa2\xa5\xe2";

/// A GNU long name (`L`) or long link name (`K`) entry holding `name`.
fn gnu_long(t: &mut RawTar, kind: u8, name: &[u8]) {
    let mut data = name.to_vec();
    data.push(0);
    t.header(&sized("././@LongLink", kind, data.len() as u64))
        .data(&data);
}

/// A header whose name (and link name) fields hold these bytes.
fn raw_header(kind: u8, name: &[u8], link: &[u8]) -> [u8; 512] {
    let mut terminated_name = name.to_vec();
    terminated_name.push(0);
    let mut terminated_link = link.to_vec();
    terminated_link.push(0);
    patched(
        &Hdr::new("x", kind),
        &[(0, &terminated_name), (157, &terminated_link)],
    )
}

fn path_bytes(p: &LayerPath) -> &[u8] {
    p.as_bytes()
}

/// The single entry of `tar`: its name bytes, its normalised path's bytes
/// and its link bytes (symlink target or hard link path).
fn names_of(tar: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (e, _) = first(tar, Limits::default()).expect("the tar reads");
    let name: &[u8] = e.name.as_ref();
    let link = match &e.kind {
        TarKind::Symlink(target) => AsRef::<[u8]>::as_ref(target).to_vec(),
        TarKind::HardLink(path) => path_bytes(path).to_vec(),
        _ => Vec::new(),
    };
    (name.to_vec(), path_bytes(&e.path).to_vec(), link)
}

fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

#[test]
fn names_that_are_not_utf8_keep_their_bytes_in_every_framing() {
    for raw in [LATIN1, KOI8R, EUCJP, CP866] {
        // Raw in the ustar name and linkname fields (GNU tar, Go's GNU
        // format).
        let mut t = RawTar::new();
        t.bytes.extend_from_slice(&raw_header(b'2', raw, raw));
        assert_eq!(
            names_of(&t.end()),
            (raw.to_vec(), raw.to_vec(), raw.to_vec())
        );

        // ustar prefix and name, both not UTF-8.
        let mut prefix = raw.to_vec();
        prefix.push(0);
        let mut t = RawTar::new();
        let mut name = raw.to_vec();
        name.push(0);
        t.bytes.extend_from_slice(&patched(
            &Hdr::new("x", b'0'),
            &[(0, &name), (345, &prefix)],
        ));
        let both = joined(&[raw, raw]);
        assert_eq!(names_of(&t.end()), (both.clone(), both.clone(), vec![]));

        // GNU long names past 100 bytes (`L` and `K`).
        let long = joined(&[&b"d".repeat(100), raw]);
        let mut t = RawTar::new();
        gnu_long(&mut t, b'L', &long);
        gnu_long(&mut t, b'K', &long);
        t.bytes
            .extend_from_slice(&raw_header(b'2', b"short", b"short"));
        assert_eq!(
            names_of(&t.end()),
            (long.clone(), long.clone(), long.clone())
        );

        // PAX `path` and `linkpath`, without `hdrcharset` (Go, GNU tar)
        // and with `hdrcharset=BINARY` (Python, libarchive): the same.
        for binary in [false, true] {
            let mut records: Vec<(&str, &[u8])> = vec![("path", raw), ("linkpath", raw)];
            if binary {
                records.insert(0, ("hdrcharset", b"BINARY"));
            }
            let mut t = RawTar::new();
            t.pax(&records);
            t.bytes.extend_from_slice(&raw_header(b'1', b"caf", b"caf"));
            assert_eq!(
                names_of(&t.end()),
                (raw.to_vec(), raw.to_vec(), raw.to_vec())
            );
        }
    }
}

#[test]
fn pax_names_in_utf8_the_default_charset_are_kept_as_they_are() {
    let privet = "Привет".as_bytes();
    let mut t = RawTar::new();
    t.pax(&[("path", privet), ("linkpath", privet)]);
    t.bytes.extend_from_slice(&raw_header(b'2', b"x", b"y"));
    assert_eq!(
        names_of(&t.end()),
        (privet.to_vec(), privet.to_vec(), privet.to_vec())
    );
}
