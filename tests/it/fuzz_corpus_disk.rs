//! The bodies of the `tar_import` and `dir_ops` fuzz targets
//! (`layerstack::testing::fuzz`) over every file of their committed
//! corpora, `fuzz/corpus/tar_import/` and `fuzz/corpus/dir_ops/`, so that
//! plain `cargo test` replays the seeds and every crash input added there.
//!
//! The tar seeds are written by `write_tar_seed_corpus` below (ignored; run
//! it with `cargo test --all-features --test fuzz_corpus_disk -- --ignored`
//! after changing the seeds). The `dir_ops` seeds are the `ops` seeds
//! (same encoding), copied, plus crash inputs.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use layerstack::oci::{Compression, ExportOptions, ImportOptions, export_layer, import_layer};
use layerstack::testing::fuzz::{dir_ops, tar_import};
use layerstack::{FileType, Layer, MemLayer, Metadata};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus_dir(target))
        .expect("the corpus directory exists")
        .map(|e| e.expect("readable corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "the {target} corpus is missing: {files:?}"
    );
    files
}

fn run_corpus<E: std::fmt::Display>(target: &str, body: impl Fn(&[u8]) -> Result<(), E>) {
    let files = corpus_files(target);
    let mut failures = Vec::new();
    for file in &files {
        let data = fs::read(file).expect("readable corpus file");
        if let Err(e) = body(&data) {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {target} corpus inputs fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_tar_import_corpus_input_round_trips_and_flattens_as_the_model() {
    run_corpus("tar_import", tar_import);
}

#[test]
fn every_dir_ops_corpus_input_agrees_between_model_and_disk_view() {
    run_corpus("dir_ops", dir_ops);
}

#[test]
fn every_ops_seed_is_in_the_dir_ops_corpus() {
    for file in corpus_files("ops") {
        let name = file.file_name().unwrap();
        let copy = fs::read(corpus_dir("dir_ops").join(name))
            .unwrap_or_else(|e| panic!("dir_ops lacks the ops seed {name:?}: {e}"));
        assert_eq!(copy, fs::read(&file).unwrap(), "{name:?} differs");
    }
}

#[test]
fn tar_seed_files_are_what_the_generator_writes() {
    for (name, bytes) in tar_seeds() {
        // The seeds are written with every feature (as CI builds): zstd
        // without `zstd-levels` writes other bytes for the same layer.
        if name == "zstd" && !cfg!(feature = "zstd-levels") {
            continue;
        }
        let stored = fs::read(corpus_dir("tar_import").join(name)).expect("seed file exists");
        assert!(
            stored == bytes,
            "{name} is stale: run the ignored write_tar_seed_corpus test"
        );
    }
}

#[test]
fn exported_tar_seeds_import() {
    // Otherwise the round trip and flatten checks would never run on them.
    let options = ImportOptions::default();
    for (name, bytes) in tar_seeds().into_iter().take(EXPORTED_SEEDS) {
        import_layer(&bytes[..], &[], &options)
            .unwrap_or_else(|e| panic!("the seed {name} does not import: {e}"));
    }
}

#[test]
#[ignore = "writes the tar seed corpus files"]
fn write_tar_seed_corpus() {
    fs::create_dir_all(corpus_dir("tar_import")).unwrap();
    for (name, bytes) in tar_seeds() {
        fs::write(corpus_dir("tar_import").join(name), bytes).unwrap();
    }
}

fn export(layer: MemLayer, compression: Compression) -> Vec<u8> {
    let layer: Arc<dyn Layer> = Arc::new(layer);
    let options = ExportOptions::new()
        .compression(compression)
        .clamp_mtime(layerstack::Timestamp::new(1_700_000_000, 0));
    export_layer(&layer, &[], Vec::new(), &options)
        .expect("the seed layer exports")
        .0
}

fn basic() -> MemLayer {
    let mut l = MemLayer::new();
    l.add_file("etc/hostname", "box\n").unwrap();
    l.add_dir("var/empty").unwrap();
    l.add_symlink("etc/localtime", "../usr/share/zoneinfo/UTC")
        .unwrap();
    l
}

/// A ustar header block for `name` (kind `b'0'` a file, `b'5'` a
/// directory, `b'1'` a hard link, `b'x'` PAX, `b'L'` GNU long name) with
/// `size` bytes of data.
fn header(name: &str, kind: u8, size: u64, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mode = if kind == b'5' { 0o755 } else { 0o644 };
    let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}", w = width - 1);
        h[at..at + width - 1].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, mode);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 1_700_000_000);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// `data` padded to whole blocks.
fn blocks(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(512) * 512, 0);
    v
}

fn pax_record(key: &str, value: &str) -> String {
    // The length counts its own digits.
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}")
}

fn raw_tar(parts: &[&[u8]]) -> Vec<u8> {
    let mut v: Vec<u8> = parts.concat();
    v.extend_from_slice(&[0u8; 1024]);
    v
}

/// How many of [`tar_seeds`] come first and are exports of the crate.
const EXPORTED_SEEDS: usize = 8;

/// Small real layers as the crate exports them, then hand-made edge cases.
fn tar_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = vec![
        ("plain", export(basic(), Compression::None)),
        ("gzip", export(basic(), Compression::Gzip)),
        ("zstd", export(basic(), Compression::Zstd)),
    ];

    let mut l = MemLayer::new();
    l.add_whiteout("etc/motd").unwrap();
    l.add_opaque_dir("var/cache").unwrap();
    l.add_file("var/cache/new", "n").unwrap();
    l.add_whiteout("gone").unwrap();
    seeds.push(("whiteouts-and-opaque", export(l, Compression::None)));

    let mut l = MemLayer::new();
    l.add_file("bin/tool", "#!/bin/sh\n").unwrap();
    l.add_hard_link("bin/tool", "bin/alias").unwrap();
    l.add_hard_link("bin/tool", "usr/bin/tool").unwrap();
    seeds.push(("hard-links", export(l, Compression::Gzip)));

    let long = format!("{}/{}", "d".repeat(90), "f".repeat(80));
    let mut l = MemLayer::new();
    l.add_file(&long, "deep").unwrap();
    l.add_symlink("link", format!("/{}", "t".repeat(150)))
        .unwrap();
    seeds.push(("pax-long-names", export(l, Compression::None)));

    let mut l = MemLayer::new();
    let mut meta = Metadata::new(FileType::File).with_mode(0o640);
    meta.xattrs.insert("user.color", "blue");
    meta.xattrs
        .insert("security.capability", vec![1u8, 0, 0, 2]);
    meta.xattrs.insert("trusted.overlay.opaque", "y");
    l.add_file_with("f", "x", meta).unwrap();
    seeds.push(("xattrs", export(l, Compression::Zstd)));

    let mut l = MemLayer::new();
    l.add_special(
        "dev/null",
        Metadata::new(FileType::CharDevice).with_rdev(layerstack::makedev(1, 3)),
    )
    .unwrap();
    l.add_special("run/fifo", Metadata::new(FileType::Fifo))
        .unwrap();
    l.add_file_with(
        "bin/su",
        "s",
        Metadata::new(FileType::File)
            .with_mode(0o4755)
            .with_owner(0, 0),
    )
    .unwrap();
    seeds.push(("specials-and-setuid", export(l, Compression::None)));

    // Hand-made: a PAX size that disagrees with the ustar size (PAX wins).
    let pax = pax_record("size", "3");
    seeds.push((
        "pax-size-disagrees",
        raw_tar(&[
            &header("PaxHeaders/a", b'x', pax.len() as u64, ""),
            &blocks(pax.as_bytes()),
            &header("a", b'0', 700, ""),
            &blocks(b"abc"),
        ]),
    ));
    // A GNU long name.
    let name = format!("{}/file", "g".repeat(120));
    seeds.push((
        "gnu-long-name",
        raw_tar(&[
            &header("././@LongLink", b'L', name.len() as u64 + 1, ""),
            &blocks(format!("{name}\0").as_bytes()),
            &header("short", b'0', 2, ""),
            &blocks(b"hi"),
        ]),
    ));
    // Cut in the middle of a file's data.
    let mut truncated = export(basic(), Compression::None);
    truncated.truncate(512 + 512 + 100);
    seeds.push(("truncated", truncated));
    // A hard link to nothing, and a name climbing out.
    seeds.push((
        "hard-link-to-nothing",
        raw_tar(&[&header("a", b'1', 0, "missing")]),
    ));
    seeds.push((
        "dot-dot-name",
        raw_tar(&[&header("../escape", b'0', 1, ""), &blocks(b"x")]),
    ));
    seeds
}
