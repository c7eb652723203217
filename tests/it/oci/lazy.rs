//! Lazy layers: a `BlobLayer` shows exactly what import of the same blob
//! shows (random stacks, every compression, through the conformance
//! suite), its cached index is rebuilt when damaged or foreign, and a read
//! of one small file of a large gzip layer by another writer inflates at
//! most two spans.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use camino::Utf8PathBuf;
use layerstack::oci::{
    BlobLayer, BuildOptions, Compression, Descriptor, Digest, ExportOptions, ImageStore,
    ImportOptions, IndexSource, OciLayout, export_layer, import_layer, index_path,
};
use layerstack::testing::{build_layer, check_layer_conformance, stack_items_strategy};
use layerstack::{Layer, LayerPath, MemLayer};
use proptest::prelude::*;

use super::round_trip::tar_writable;
use crate::support::tools::{Scratch, have};

/// Writes `blob` into `dir` and opens it lazily over `below`.
fn lazy(dir: &Scratch, name: &str, blob: &[u8], below: &[Arc<dyn Layer>]) -> BlobLayer {
    let path = dir.path(name);
    std::fs::write(&path, blob).unwrap();
    BlobLayer::open_file(&path, &Digest::of(blob), below, &ImportOptions::default())
        .unwrap_or_else(|e| panic!("open {name} lazily: {e}"))
}

fn lazy_equals_import(
    stack_items: &[Vec<layerstack::testing::LayerItem>],
    compression: Compression,
) -> Result<(), TestCaseError> {
    let dir = Scratch::new("lazy-eq");
    let originals: Vec<Arc<dyn Layer>> = stack_items
        .iter()
        .map(|items| Arc::new(build_layer(&tar_writable(items))) as Arc<dyn Layer>)
        .collect();
    let mut imported: Vec<Arc<dyn Layer>> = Vec::new();
    let mut lazies: Vec<Arc<dyn Layer>> = Vec::new();
    let layout = OciLayout::create(dir.path("layout")).unwrap();
    for i in (0..originals.len()).rev() {
        let (tar, _) = export_layer(
            &originals[i],
            &originals[i + 1..],
            Vec::new(),
            &ExportOptions::new().compression(compression),
        )
        .map_err(|e| TestCaseError::fail(format!("export layer {i}: {e}")))?;
        let (mem, summary) = import_layer(&tar[..], &imported, &ImportOptions::default())
            .map_err(|e| TestCaseError::fail(format!("import layer {i}: {e}")))?;
        let blob = lazy(&dir, &format!("layer{i}"), &tar, &lazies);
        prop_assert_eq!(blob.diff_id(), &summary.diff_id);
        prop_assert_eq!(blob.uncompressed_size(), summary.uncompressed_size);
        if let Err(e) = check_layer_conformance(&blob, &mem) {
            return Err(TestCaseError::fail(format!(
                "layer {i} ({compression}): {e}"
            )));
        }
        // Its index through the layout's cache: every index built is
        // trusted when loaded back, and shows the same.
        let (digest, size) = layout.put_blob(&tar).unwrap();
        let d = Descriptor::new(compression.layer_media_type(), digest, size);
        let options = ImportOptions::default();
        BlobLayer::open(&layout, &d, &lazies, &options, None).unwrap();
        let (cached, source) = BlobLayer::open(&layout, &d, &lazies, &options, None).unwrap();
        prop_assert_eq!(source, IndexSource::Cached, "layer {}", i);
        if let Err(e) = check_layer_conformance(&cached, &mem) {
            return Err(TestCaseError::fail(format!(
                "layer {i} ({compression}), its index loaded: {e}"
            )));
        }
        imported.insert(0, Arc::new(mem));
        lazies.insert(0, Arc::new(blob));
    }
    let want =
        layerstack::model::flatten(&imported).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got =
        layerstack::model::flatten(&lazies).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(got, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("LAYERSTACK_OCI_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_lazy_stack_shows_what_the_imported_stack_shows(stack in stack_items_strategy(4), c in 0..3u8) {
        let compression = [Compression::None, Compression::Gzip, Compression::Zstd][usize::from(c)];
        lazy_equals_import(&stack, compression)?;
    }
}

/// A layer with `files` files of `size` bytes of text that compresses
/// about as a root filesystem does, plus `etc/os-release`.
fn big_layer(files: usize, size: usize) -> MemLayer {
    let mut layer = MemLayer::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for f in 0..files {
        let mut data = Vec::with_capacity(size + 64);
        while data.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word = [
                "lib", "usr", "share", "doc", "bin", "locale", "zoneinfo", "perl",
            ][(x % 8) as usize];
            writeln!(data, "{word}{} {:x}", x % 1000, x >> 40).unwrap();
        }
        data.truncate(size);
        layer
            .add_file(format!("usr/lib/pkg{}/file{f}.dat", f % 17).as_str(), data)
            .unwrap();
    }
    layer
        .add_file(
            "etc/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n",
        )
        .unwrap();
    layer
}

fn plain_tar(layer: MemLayer) -> Vec<u8> {
    let layer: Arc<dyn Layer> = Arc::new(layer);
    export_layer(
        &layer,
        &[],
        Vec::new(),
        &ExportOptions::new().compression(Compression::None),
    )
    .unwrap()
    .0
}

fn gnu_gzip(tar: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(["-6", "-c", "-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().unwrap();
    let input = tar.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn one_small_file_of_a_200_mib_gzip_layer_inflates_at_most_two_spans() {
    let test = "one_small_file_of_a_200_mib_gzip_layer_inflates_at_most_two_spans";
    if !have("gzip", test) {
        return;
    }
    let tar = plain_tar(big_layer(200, 1 << 20));
    assert!(tar.len() > 200 << 20);
    let blob = gnu_gzip(&tar);
    let dir = Scratch::new("lazy-big");
    let layer = lazy(&dir, "big.tar.gz", &blob, &[]);
    // GNU gzip's stream is one deflate stream: checkpoints with windows
    // every 4 MiB of output.
    assert!(layer.restart_points() >= 50, "{}", layer.restart_points());
    let path = LayerPath::new("etc/os-release").unwrap();
    let data = layer.read_at(&path, 0, 1 << 20).unwrap();
    assert_eq!(&data[..], b"PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n");
    assert!(
        layer.spans_inflated() <= 2,
        "{} spans",
        layer.spans_inflated()
    );
    // A file in the middle of the stream, read whole, against import.
    let (mem, _) = import_layer(&blob[..], &[], &ImportOptions::default()).unwrap();
    let before = layer.spans_inflated();
    let mid = LayerPath::new("usr/lib/pkg3/file105.dat").unwrap();
    assert_eq!(
        layer.read_at(&mid, 1000, 5000).unwrap(),
        mem.read_at(&mid, 1000, 5000).unwrap()
    );
    assert!(layer.spans_inflated() - before <= 2);
}

#[test]
fn our_gzip_restarts_at_every_chunk_without_a_window() {
    let tar = plain_tar(big_layer(12, 1 << 20));
    let dir = Scratch::new("lazy-ours");
    let mut enc = layerstack::oci::Compressor::new(Vec::new(), Compression::Gzip);
    enc.write_all(&tar).unwrap();
    let blob = enc.finish().unwrap();
    let lazy_layer = lazy(&dir, "ours.tar.gz", &blob, &[]);
    // One point per 1 MiB chunk (plus the member's start).
    assert_eq!(lazy_layer.restart_points(), tar.len().div_ceil(1 << 20));
    let (mem, _) = import_layer(&blob[..], &[], &ImportOptions::default()).unwrap();
    check_layer_conformance(&lazy_layer, &mem).unwrap();
}

/// flate2's `GzEncoder` (as Go's `compress/gzip`) writes the same gzip
/// header as our encoder at its default level, but one deflate stream
/// whose blocks do not end at our chunk sizes: it still gets a checkpoint
/// every 4 MiB, so a file near the end is read from the last one.
#[test]
fn another_writers_gzip_with_our_header_gets_checkpoints() {
    let tar = plain_tar(big_layer(24, 1 << 20));
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&tar).unwrap();
    let blob = enc.finish().unwrap();
    assert_eq!(blob[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let dir = Scratch::new("lazy-flate2");
    let layer = lazy(&dir, "flate2.tar.gz", &blob, &[]);
    // The member's start and a checkpoint at the first block end past
    // each 4 MiB of output (without them: the member's start alone).
    assert!(
        layer.restart_points() > tar.len() / (5 << 20),
        "{} restart points for {} bytes",
        layer.restart_points(),
        tar.len()
    );
    let last = LayerPath::new("usr/lib/pkg6/file23.dat").unwrap();
    let (mem, _) = import_layer(&blob[..], &[], &ImportOptions::default()).unwrap();
    assert_eq!(
        layer.read_at(&last, 4096, 4096).unwrap(),
        mem.read_at(&last, 4096, 4096).unwrap()
    );
    assert!(
        layer.spans_inflated() <= 2,
        "{} spans",
        layer.spans_inflated()
    );
}

/// A layout with two layer blobs (gzip), and their descriptors.
fn layout_with_two_layers(dir: &Scratch) -> (OciLayout, Vec<Descriptor>) {
    let layout = OciLayout::create(dir.path("layout")).unwrap();
    let mut descriptors = Vec::new();
    for n in 0..2 {
        let mut layer = MemLayer::new();
        layer
            .add_file(format!("layer{n}/hello").as_str(), format!("hello {n}\n"))
            .unwrap();
        let layer: Arc<dyn Layer> = Arc::new(layer);
        let (blob, _) = export_layer(&layer, &[], Vec::new(), &ExportOptions::new()).unwrap();
        let (digest, size) = layout.put_blob(&blob).unwrap();
        descriptors.push(Descriptor::new(
            Compression::Gzip.layer_media_type(),
            digest,
            size,
        ));
    }
    (layout, descriptors)
}

fn open(layout: &OciLayout, d: &Descriptor) -> (BlobLayer, IndexSource) {
    BlobLayer::open(layout, d, &[], &ImportOptions::default(), None).unwrap()
}

fn hello(layer: &BlobLayer, n: usize) -> Vec<u8> {
    let path = LayerPath::new(format!("layer{n}/hello").as_str()).unwrap();
    layer.read_at(&path, 0, 100).unwrap().to_vec()
}

#[test]
fn a_damaged_or_foreign_index_is_rebuilt_never_trusted() {
    let dir = Scratch::new("lazy-cache");
    let (layout, ds) = layout_with_two_layers(&dir);
    let (_, source) = open(&layout, &ds[0]);
    assert_eq!(source, IndexSource::Built("missing"));
    let (layer, source) = open(&layout, &ds[0]);
    assert_eq!(source, IndexSource::Cached);
    assert_eq!(hello(&layer, 0), b"hello 0\n");
    let (_, _) = open(&layout, &ds[1]);
    let path0: Utf8PathBuf = index_path(&layout, &ds[0].digest);
    let path1: Utf8PathBuf = index_path(&layout, &ds[1].digest);
    let good = std::fs::read(&path0).unwrap();

    // Every single flipped byte is caught.
    for at in (0..good.len()).step_by(good.len() / 40 + 1) {
        let mut bad = good.clone();
        bad[at] ^= 0x20;
        std::fs::write(&path0, &bad).unwrap();
        let (layer, source) = open(&layout, &ds[0]);
        assert!(
            matches!(source, IndexSource::Built(_)),
            "byte {at}: {source:?}"
        );
        assert_eq!(hello(&layer, 0), b"hello 0\n");
        assert_eq!(std::fs::read(&path0).unwrap(), good, "rewritten");
    }
    // Truncated.
    std::fs::write(&path0, &good[..good.len() / 2]).unwrap();
    assert!(matches!(open(&layout, &ds[0]).1, IndexSource::Built(_)));
    // The index of the other layer in its place.
    std::fs::copy(&path1, &path0).unwrap();
    let (layer, source) = open(&layout, &ds[0]);
    assert_eq!(source, IndexSource::Built("the index of another blob"));
    assert_eq!(hello(&layer, 0), b"hello 0\n");
    assert!(
        layer
            .lookup(&LayerPath::new("layer1").unwrap())
            .unwrap()
            .is_none()
    );
    // Built under other import options.
    let strict = ImportOptions::default().devices(layerstack::oci::Policy::Refuse);
    let (_, source) = BlobLayer::open(&layout, &ds[0], &[], &strict, None).unwrap();
    assert_eq!(
        source,
        IndexSource::Built("built under other import options")
    );
    // Not an index at all.
    std::fs::write(&path0, b"{}").unwrap();
    assert_eq!(
        open(&layout, &ds[0]).1,
        IndexSource::Built("not a layer index")
    );
}

#[test]
fn a_blob_that_is_not_its_digest_is_refused() {
    let dir = Scratch::new("lazy-digest");
    let blob = plain_tar(big_layer(1, 100));
    let path = dir.path("blob");
    std::fs::write(&path, &blob).unwrap();
    let wrong = Digest::of(b"something else");
    let err = BlobLayer::open_file(&path, &wrong, &[], &ImportOptions::default()).unwrap_err();
    assert_eq!(err.kind(), layerstack::ErrorKind::InvalidData);
    assert!(err.to_string().contains("digest mismatch"), "{err}");
}

#[test]
fn squash_imports_every_layer_again_and_checks_its_digest() {
    let dir = Scratch::new("lazy-squash");
    let store = ImageStore::new(OciLayout::create(dir.path("layout")).unwrap());
    let mut layer = MemLayer::new();
    layer.add_file("etc/motd", "hello\n").unwrap();
    let options = BuildOptions::new().compression(Compression::None);
    let mut builder = store.builder(None, options).unwrap();
    builder.add_layer_from(layer, "add motd").unwrap();
    let image = builder.finish("v1").unwrap();
    // Read lazily once (a store of its own: the builder's keeps the layer
    // it made in memory): the index is built, and the blob checked.
    let read = |store: &ImageStore| store.container(&image).unwrap().read("etc/motd").unwrap();
    let reopen = || ImageStore::new(OciLayout::open(dir.path("layout")).unwrap());
    assert_eq!(&read(&reopen())[..], b"hello\n");
    assert!(index_path(store.layout(), &image.layers()[0].digest).exists());
    // The blob changed on disk afterwards, at the same size.
    let blob = store.layout().blob_path(&image.layers()[0].digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.windows(6).position(|w| w == b"hello\n").unwrap();
    bytes[at] = b'j';
    std::fs::write(&blob, &bytes).unwrap();
    // A lazy read trusts the index built from the checked blob and reads
    // the data as it now is (the documented limitation of `BlobLayer`)...
    let fresh = reopen();
    assert_eq!(&read(&fresh)[..], b"jello\n");
    // ...but a squash imports every layer again, in one checked pass.
    let err = fresh.squash(&image, "flat", options).unwrap_err();
    assert_eq!(err.kind(), layerstack::ErrorKind::InvalidData);
    let digest = image.layers()[0].digest;
    assert_eq!(
        err.to_string(),
        format!(
            "failed to import layer entry `<header at byte 0>` in layer 0 ({}): reading the layer: \
             failed to read blob `{digest}`: digest mismatch: the content is {}",
            digest.short(),
            Digest::of(&bytes)
        )
    );
    assert!(fresh.image(Some("flat")).is_err());
}
