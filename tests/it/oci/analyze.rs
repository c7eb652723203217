//! `oci::analyze` against a brute-force count on random images: the
//! payloads counted by the `tar` crate's own reader, the visible bytes
//! from the image flattened on disk (each inode once), and the identities
//! that tie the per-path and per-layer figures to the totals.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use camino::Utf8PathBuf;
use layerstack::oci::Analysis;
use layerstack::oci::{BuildOptions, Decompressor, FlattenOptions, ImageStore, OciLayout};
use layerstack::testing::{build_layer, stack_items_strategy};
use proptest::prelude::*;

use super::round_trip::tar_writable;
use crate::support::tools::root;

/// A scratch directory, removed on drop.
struct Scratch(Utf8PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch() -> Scratch {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = Utf8PathBuf::from_path_buf(std::env::temp_dir())
        .expect("UTF-8 temp dir")
        .join(format!(
            "layerstack-analyze-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
    std::fs::create_dir_all(&dir).expect("make a scratch dir");
    Scratch(dir)
}

/// Payload bytes of a layer blob, as the `tar` crate reads the tar.
fn tar_payload(blob: impl Read) -> u64 {
    let mut archive = tar::Archive::new(Decompressor::new(blob).expect("a layer stream"));
    let mut total = 0;
    for entry in archive.entries().expect("tar entries") {
        let entry = entry.expect("a tar entry");
        let name = entry.path().expect("a name").into_owned();
        let whiteout = name
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".wh."));
        if entry.header().entry_type().is_file() && !whiteout {
            total += entry.size();
        }
    }
    total
}

/// Bytes of regular files below `dir`, each inode once.
fn visible_on_disk(dir: &std::path::Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read a flattened dir") {
            let e = e.expect("an entry");
            let m = std::fs::symlink_metadata(e.path()).expect("lstat");
            if m.is_dir() {
                todo.push(e.path());
            } else if m.is_file() && seen.insert((m.dev(), m.ino())) {
                total += m.len();
            }
        }
    }
    total
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn analysis_agrees_with_a_brute_force_count(stack in stack_items_strategy(3)) {
        if !root("analysis_agrees_with_a_brute_force_count") {
            return Ok(());
        }
        let dir = scratch();
        let layout = OciLayout::create(dir.0.join("img")).expect("a layout");
        let store = ImageStore::new(layout);
        let mut builder = store.builder(None, BuildOptions::new()).expect("a builder");
        // The strategy gives the stack top first.
        for (i, items) in stack.iter().rev().enumerate() {
            builder
                .add_layer_from(build_layer(&tar_writable(items)), &format!("step {i}"))
                .expect("add a layer");
        }
        let image = builder.finish("t").expect("an image");
        let a = Analysis::of_image(&store, &image, 1).expect("analyse");

        let shipped: u64 = image
            .layers()
            .iter()
            .map(|d| tar_payload(store.layout().open_blob(&d.digest, Some(d.size)).unwrap()))
            .sum();
        let rootfs = dir.0.join("rootfs");
        store.flatten(&image, &rootfs, &FlattenOptions::default()).expect("flatten");
        let visible = visible_on_disk(rootfs.as_std_path());

        prop_assert_eq!(a.shipped, shipped);
        prop_assert_eq!(a.visible, visible);
        prop_assert_eq!(a.wasted, shipped - visible);
        prop_assert_eq!(a.paths.iter().map(|p| p.bytes).sum::<u64>(), a.wasted);
        prop_assert_eq!(a.layers.iter().map(|l| l.adds).sum::<u64>(), a.visible);
        prop_assert_eq!(a.layers.iter().map(|l| l.wastes).sum::<u64>(), a.wasted);
        for l in &a.layers {
            prop_assert!(l.adds <= l.shipped);
        }
        for p in &a.paths {
            for c in &p.copies {
                prop_assert!(c.by >= c.layer, "{:?} caused by a layer below it", p);
            }
        }
        let user: u64 = a.layers[1.min(a.layers.len())..].iter().map(|l| l.shipped).sum();
        prop_assert_eq!(a.user_shipped, user);
    }
}
