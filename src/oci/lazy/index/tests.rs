//! Hand-crafted indexes in the cache, each as a hostile writer of the
//! layout could leave it (with a checksum that matches): every one is
//! rebuilt (or, where the blob itself breaks the options, refused), for
//! exactly the reason expected, and the layer then shows what the blob
//! holds.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::MemLayer;
use crate::layer::{Entry, Layer};
use crate::meta::makedev;
use crate::oci::image::layout::OciLayout;
use crate::oci::image::layout::tests::Scratch;
use crate::oci::image::spec::Descriptor;
use crate::oci::lazy::{BlobLayer, IndexSource, index_path};
use crate::oci::{ExportOptions, export_layer};

/// A layout with one layer: `bin/su` setuid (`0o4755`), the device
/// `dev/null` (1/3) and `etc/hostname`.
fn fixture(s: &Scratch, compression: Compression) -> (OciLayout, Descriptor) {
    let layout = OciLayout::create(s.0.join("layout")).unwrap();
    let mut layer = MemLayer::new();
    let mut su = Metadata::new(FileType::File);
    su.mode = 0o4755;
    layer.add_file_with("bin/su", "#!/bin/true\n", su).unwrap();
    let mut null = Metadata::new(FileType::CharDevice);
    null.mode = 0o666;
    null.rdev = makedev(1, 3);
    layer.add_special("dev/null", null).unwrap();
    layer.add_file("etc/hostname", "box\n").unwrap();
    let layer: Arc<dyn Layer> = Arc::new(layer);
    let options = ExportOptions::new().compression(compression);
    let (blob, _) = export_layer(&layer, &[], Vec::new(), &options).unwrap();
    let (digest, size) = layout.put_blob(&blob).unwrap();
    let d = Descriptor::new(compression.layer_media_type(), digest, size);
    (layout, d)
}

fn open(layout: &OciLayout, d: &Descriptor, options: &ImportOptions) -> (BlobLayer, IndexSource) {
    BlobLayer::open(layout, d, &[], options, None).unwrap()
}

/// The cached index's bytes after an open under `options` built it.
fn cached_bytes(layout: &OciLayout, d: &Descriptor, options: &ImportOptions) -> Vec<u8> {
    let _ = open(layout, d, options);
    std::fs::read(index_path(layout, &d.digest)).unwrap()
}

/// The cached index, as built under `options`.
fn cached(layout: &OciLayout, d: &Descriptor, options: &ImportOptions) -> LayerIndex {
    let bytes = cached_bytes(layout, d, options);
    LayerIndex::decode(bytes.into(), &d.digest, d.size, options).unwrap()
}

/// Puts `bytes` in the cache in place of the layer's index.
fn plant(layout: &OciLayout, d: &Descriptor, bytes: &[u8]) {
    std::fs::write(index_path(layout, &d.digest), bytes).unwrap();
}

/// Why the next open under `options` rebuilt the index (it must have).
fn rebuilt(layout: &OciLayout, d: &Descriptor, options: &ImportOptions) -> &'static str {
    match open(layout, d, options).1 {
        IndexSource::Built(why) => why,
        IndexSource::Cached => panic!("the planted index was trusted"),
    }
}

/// A change that damages an index.
type Change = fn(&mut LayerIndex);

/// Plants `good` changed by each case in turn: each is rebuilt for
/// exactly its reason, and the rebuilt index is then trusted and reads
/// the blob.
fn each_rebuilt<const N: usize>(
    layout: &OciLayout,
    d: &Descriptor,
    options: &ImportOptions,
    good: &LayerIndex,
    cases: [(Change, &str); N],
) {
    for (n, (change, why)) in cases.into_iter().enumerate() {
        let mut bad = good.clone();
        change(&mut bad);
        plant(layout, d, &bad.encode());
        assert_eq!(rebuilt(layout, d, options), why, "case {n}");
        let (layer, source) = open(layout, d, options);
        assert_eq!(source, IndexSource::Cached);
        let hostname = LayerPath::new("etc/hostname").unwrap();
        assert_eq!(&layer.read_at(&hostname, 0, 100).unwrap()[..], b"box\n");
    }
}

/// The checksum set again over `bytes`, as a writer that knows the
/// format would.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = checksum(&bytes);
    bytes[CRC_AT].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn node<'a>(index: &'a mut LayerIndex, path: &str) -> &'a mut Metadata {
    let at = node_at(index, path);
    match index.nodes[at].kind.clone() {
        Kind::Obj(i) => match &mut index.inodes[i as usize].meta {
            MetaSrc::Known(m) => m,
            MetaSrc::Below(_) => panic!("{path}: from below"),
        },
        _ => panic!("{path}: not an object"),
    }
}

fn meta_of(layer: &BlobLayer, path: &str) -> Option<Metadata> {
    match layer.lookup(&LayerPath::new(path).unwrap()).unwrap() {
        Some(Entry::Node(n)) => Some(n.meta),
        _ => None,
    }
}

#[test]
fn a_changed_header_byte_is_caught_with_or_without_its_checksum() {
    let s = Scratch::new("header");
    let (layout, d) = fixture(&s, Compression::None);
    let keep = ImportOptions::default();
    let good = cached_bytes(&layout, &d, &keep);
    let flipped = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 1;
        b
    };
    // Each field of the header, with the checksum left as it was and set
    // again.
    let cases: [(usize, &str); 6] = [
        (0, "not a layer index"),
        (8, "another version"),
        (20, "the index of another blob"),
        (45, "checksum mismatch"),
        (48, "the table has another length"),
        (63, "the table goes past the end"),
    ];
    for (at, why) in cases {
        plant(&layout, &d, &flipped(at));
        let without = rebuilt(&layout, &d, &keep);
        let expected = if at < 12 { why } else { "checksum mismatch" };
        assert_eq!(without, expected, "byte {at}, checksum as it was");
        if at != 45 {
            plant(&layout, &d, &reseal(flipped(at)));
            assert_eq!(rebuilt(&layout, &d, &keep), why, "byte {at}, checksum set");
        }
        assert_eq!(std::fs::read(index_path(&layout, &d.digest)).unwrap(), good);
    }
    assert_eq!(open(&layout, &d, &keep).1, IndexSource::Cached);
}

#[test]
fn an_index_saying_more_than_the_blob_holds_is_rebuilt() {
    let s = Scratch::new("bounds");
    let (layout, d) = fixture(&s, Compression::Gzip);
    let keep = ImportOptions::default();
    let good = cached(&layout, &d, &keep);
    let cases: [(Change, &str); 9] = [
        (
            |i| i.uncompressed_size = i.blob_size * 1033,
            "more data than the blob could hold",
        ),
        (
            |i| i.entries = i.uncompressed_size / 512 + 1,
            "more entries than the blob could hold",
        ),
        (
            |i| i.entries = 0,
            "a count is larger than the blob could hold",
        ),
        (
            |i| {
                for ino in &mut i.inodes {
                    if let Body::File { start, .. } = &mut ino.body {
                        *start = i.uncompressed_size - 1;
                    }
                }
            },
            "file data outside the stream",
        ),
        (
            |i| {
                for ino in &mut i.inodes {
                    if let (MetaSrc::Known(m), Body::File { .. }) = (&mut ino.meta, &ino.body) {
                        m.size = 1 << 40;
                    }
                }
            },
            "a file larger than its data",
        ),
        (
            |i| {
                for ino in &mut i.inodes {
                    if let Body::File { sparse, .. } = &mut ino.body {
                        *sparse = Some(vec![(0, 1 << 40)]);
                    }
                }
            },
            "a sparse region outside the file",
        ),
        (
            |i| i.points[0].bit = i.blob_size * 8,
            "restart points out of order or out of the blob",
        ),
        (
            |i| i.points[0].out = 1,
            "restart points out of order or out of the blob",
        ),
        (
            |i| i.inodes[0].links += 1,
            "a link count that is not the names'",
        ),
    ];
    each_rebuilt(&layout, &d, &keep, &good, cases);
}

#[test]
fn what_the_options_forbid_is_never_shown_from_an_index() {
    let s = Scratch::new("policies");
    let (layout, d) = fixture(&s, Compression::Gzip);
    let keep = ImportOptions::default();
    let strip = ImportOptions::default()
        .devices(Policy::Strip)
        .setuid(Policy::Strip);
    // Built under Keep: the device and the setuid bit are there.
    let kept = cached(&layout, &d, &keep);
    let (layer, _) = open(&layout, &d, &keep);
    assert_eq!(meta_of(&layer, "bin/su").unwrap().mode, 0o4755);
    assert!(meta_of(&layer, "dev/null").is_some());

    // The same index claiming to be built under each Strip: rebuilt, and
    // then stripped as import strips.
    let forged = |options: &ImportOptions| {
        let mut forged = kept.clone();
        forged.options = options_key(options);
        plant(&layout, &d, &forged.encode());
    };
    let strip_devices = ImportOptions::default().devices(Policy::Strip);
    forged(&strip_devices);
    assert_eq!(
        rebuilt(&layout, &d, &strip_devices),
        "a device node the options forbid"
    );
    let strip_setuid = ImportOptions::default().setuid(Policy::Strip);
    forged(&strip_setuid);
    assert_eq!(
        rebuilt(&layout, &d, &strip_setuid),
        "a setuid or setgid file the options forbid"
    );
    forged(&strip);
    assert_eq!(
        rebuilt(&layout, &d, &strip),
        "a setuid or setgid file the options forbid"
    );
    let (layer, source) = open(&layout, &d, &strip);
    assert_eq!(source, IndexSource::Cached);
    assert_eq!(meta_of(&layer, "bin/su").unwrap().mode, 0o755);
    assert!(meta_of(&layer, "dev/null").is_none());

    // Under Refuse the rebuild meets the setuid file in the blob and
    // refuses the layer, as import does.
    let refuse = ImportOptions::default().setuid(Policy::Refuse);
    forged(&refuse);
    let err = BlobLayer::open(&layout, &d, &[], &refuse, None).unwrap_err();
    assert_eq!(err.kind(), crate::error::ErrorKind::NotPermitted);
    assert_eq!(
        err.to_string(),
        "failed to import layer entry `bin/su`: setuid/setgid file (mode 4755) refused by policy"
    );

    // What import never lets through under any options.
    let cases: [(Change, &str); 3] = [
        (|i| node(i, "dev/null").rdev = 0, "a whiteout device"),
        (
            |i| {
                node(i, "etc/hostname")
                    .xattrs
                    .insert("trusted.overlay.opaque", "y");
            },
            "an overlay bookkeeping extended attribute",
        ),
        (
            |i| {
                node(i, "etc/hostname").xattrs.insert("user.", "y");
            },
            "an invalid extended attribute name",
        ),
    ];
    for (change, why) in cases {
        let mut bad = kept.clone();
        change(&mut bad);
        plant(&layout, &d, &bad.encode());
        assert_eq!(rebuilt(&layout, &d, &keep), why);
    }
    // A body that does not fit its object's type.
    let mut bad = kept.clone();
    node(&mut bad, "etc/hostname").file_type = FileType::Symlink;
    plant(&layout, &d, &bad.encode());
    assert_eq!(
        rebuilt(&layout, &d, &keep),
        "an object whose body does not fit its type"
    );
}

#[test]
fn an_index_loads_back_as_it_was_built_windows_and_all() {
    // Another writer's gzip (flate2's, with our header but no 1 MiB
    // chunks): checkpoints with windows.
    let s = Scratch::new("round-trip");
    let layout = OciLayout::create(s.0.join("layout")).unwrap();
    let mut layer = MemLayer::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..10 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"abcdefgh"[(x % 8) as usize]
        })
        .collect();
    layer.add_file("big", data).unwrap();
    let layer: Arc<dyn Layer> = Arc::new(layer);
    let none = ExportOptions::new().compression(Compression::None);
    let (tar, _) = export_layer(&layer, &[], Vec::new(), &none).unwrap();
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &tar).unwrap();
    let blob = z.finish().unwrap();
    let (digest, size) = layout.put_blob(&blob).unwrap();
    let d = Descriptor::new(Compression::Gzip.layer_media_type(), digest, size);
    let keep = ImportOptions::default();
    let open_file = BlobLayer::open_file(&layout.blob_path(&digest), &digest, &[], &keep).unwrap();
    let index = cached(&layout, &d, &keep);
    assert!(index.points.len() > 2, "{} points", index.points.len());
    assert!(
        index
            .points
            .iter()
            .any(|p| matches!(&p.kind, PointKind::Deflate(w) if !w.is_empty()))
    );
    assert_eq!(index, open_file.index);
}

/// A valid index's table with one byte changed, sealed as a writer that
/// knows the format would seal it.
fn with_table_byte(good: &[u8], at: usize, value: u8) -> Vec<u8> {
    let word = |at: usize| u64::from_le_bytes(good[at..at + 8].try_into().unwrap());
    let end = HEADER + usize::try_from(word(56)).unwrap();
    let mut table = Vec::new();
    flate2::read::DeflateDecoder::new(&good[HEADER..end])
        .read_to_end(&mut table)
        .unwrap();
    let at = at % table.len();
    table[at] = value;
    let mut packed = Vec::new();
    let mut z = flate2::write::DeflateEncoder::new(&mut packed, flate2::Compression::fast());
    std::io::Write::write_all(&mut z, &table).unwrap();
    z.finish().unwrap();
    let mut out = good[..HEADER].to_vec();
    out[56..64].copy_from_slice(&(packed.len() as u64).to_le_bytes());
    out.extend_from_slice(&packed);
    out.extend_from_slice(&good[end..]);
    reseal(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any one byte of the table changed: the decoder never panics, and
    /// what it accepts passes every check a load makes.
    #[test]
    fn a_changed_table_never_panics_the_decoder(at in any::<usize>(), value in any::<u8>()) {
        thread_local! {
            static GOOD: (Scratch, Descriptor, Vec<u8>) = {
                let s = Scratch::new("fuzz");
                let (layout, d) = fixture(&s, Compression::Gzip);
                let bytes = cached_bytes(&layout, &d, &ImportOptions::default());
                (s, d, bytes)
            };
        }
        GOOD.with(|(_, d, good)| {
            let bad = with_table_byte(good, at, value);
            let keep = ImportOptions::default();
            if let Ok(index) = LayerIndex::decode(bad.into(), &d.digest, d.size, &keep) {
                // Accepted: it describes a tree a lookup can walk.
                prop_assert!(check_tree(&index.nodes, &index.inodes).is_ok());
                prop_assert!(index.check_policies(&keep).is_ok());
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}

/// The node at `path`'s index in `index.nodes`.
fn node_at(index: &LayerIndex, path: &str) -> usize {
    let mut at = 0usize;
    for name in LayerPath::new(path).unwrap().names() {
        let Kind::Dir { children, .. } = &index.nodes[at].kind else {
            panic!("{path}: not a directory on the way");
        };
        at = children
            .iter()
            .map(|&c| c as usize)
            .find(|&c| index.nodes[c].name.as_bytes() == name.as_bytes())
            .unwrap();
    }
    at
}

#[test]
fn names_modes_and_counts_import_would_refuse_are_rebuilt() {
    let s = Scratch::new("refused");
    let (layout, d) = fixture(&s, Compression::Gzip);
    let keep = ImportOptions::default();
    let good = cached(&layout, &d, &keep);
    let cases: [(Change, &str); 3] = [
        (
            |i| {
                let at = node_at(i, "etc/hostname");
                i.nodes[at].name = NameBuf::from(vec![b'a'; 256]);
            },
            "a bad name",
        ),
        (
            |i| {
                let at = node_at(i, "etc/hostname");
                i.nodes[at].name = NameBuf::from(b".wh.hostname".to_vec());
            },
            "a bad name",
        ),
        (
            |i| node(i, "etc/hostname").mode = 0o10644,
            "mode bits past 0o7777",
        ),
    ];
    each_rebuilt(&layout, &d, &keep, &good, cases);

    // More entries than the limits let import read, though the stream
    // could hold them.
    let mut limited = ImportOptions::default();
    limited.limits.max_entries = good.entries;
    let mut bad = cached(&layout, &d, &limited);
    bad.entries += 1;
    bad.uncompressed_size = bad.uncompressed_size.max(bad.entries * 512);
    plant(&layout, &d, &bad.encode());
    assert_eq!(
        rebuilt(&layout, &d, &limited),
        "more entries than the limits allow"
    );

    // A table far larger than any real one for this blob is not inflated.
    let mut bytes = cached_bytes(&layout, &d, &keep);
    let huge = max_table_len(d.size) + 1;
    bytes[48..56].copy_from_slice(&huge.to_le_bytes());
    plant(&layout, &d, &reseal(bytes));
    assert_eq!(rebuilt(&layout, &d, &keep), "too large");
}
