//! Two images, one stored base layer.
//!
//! Builds a base image, then two images `FROM` it. All three manifests
//! name the base layer by the same digest, and the image layout stores a
//! blob once under its digest, so the base layer is on disk once. The
//! example counts the blobs the manifests name and the files the layout
//! really holds, and shows that an `ImageStore` also imports the shared
//! layer into memory once.
//!
//! Run it with `cargo run --features oci --example shared_layers [DIR]` (default: a fresh
//! directory under the system's temporary directory, removed at the end).

use std::collections::BTreeSet;
use std::error::Error;
use std::io::Write;

use camino::{Utf8Path, Utf8PathBuf};
use layerstack::oci::{BuildOptions, Image, ImageStore, OciLayout};

fn main() -> Result<(), Box<dyn Error>> {
    let (dir, keep) = match std::env::args().nth(1) {
        Some(dir) => (Utf8PathBuf::from(dir), true),
        None => {
            let tmp = Utf8PathBuf::from_path_buf(std::env::temp_dir())
                .map_err(|p| format!("temporary directory {} is not UTF-8", p.display()))?;
            let dir = tmp.join(format!("layerstack-shared-{}", std::process::id()));
            (dir, false)
        }
    };
    let result = run(&dir, &mut std::io::stdout().lock());
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The files in the layout's `blobs/sha256` and their bytes, counted on disk.
fn stored(dir: &Utf8Path) -> std::io::Result<(usize, u64)> {
    let (mut files, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir.join("blobs/sha256"))? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

/// `len` bytes that do not compress (xorshift), the same every run.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn layer_ids(image: &Image) -> String {
    let ids: Vec<String> = image.layers().iter().map(|d| d.digest.short()).collect();
    ids.join(" ")
}

/// The example: writes the images into a layout in `dir`, prints to `out`.
pub fn run(dir: &Utf8Path, out: &mut dyn Write) -> Result<(), Box<dyn Error>> {
    let store = ImageStore::new(OciLayout::create(dir)?);

    let mut build = store.builder(None, BuildOptions::default())?;
    build.step("COPY rootfs/ /", |fs| {
        fs.create_dir_all("usr/lib")?;
        // A base layer worth sharing: 64 KiB that gzip cannot shrink.
        fs.write("usr/lib/libbig.so", noise(64 << 10))?;
        fs.create_dir_all("etc")?;
        fs.write("etc/os-release", "NAME=demo\n")
    })?;
    let base = build.finish("base")?;

    let mut build = store.builder(Some(&base), BuildOptions::default())?;
    build.step("COPY web/ /srv/web/", |fs| {
        fs.create_dir_all("srv/web")?;
        fs.write("srv/web/index.html", "<h1>web</h1>\n")
    })?;
    let web = build.finish("web")?;

    let mut build = store.builder(Some(&base), BuildOptions::default())?;
    build.step("COPY worker /usr/bin/", |fs| {
        fs.create_dir_all("usr/bin")?;
        fs.write("usr/bin/worker", "#!/bin/sh\n")
    })?;
    let worker = build.finish("worker")?;

    writeln!(
        out,
        "Three images in {dir}, each layer named by its digest:"
    )?;
    for image in [&base, &web, &worker] {
        writeln!(out, "  {:<7} layers {}", image.reference, layer_ids(image))?;
    }
    writeln!(
        out,
        "All three start with layer {}: `web` and `worker` were built FROM `base`.",
        base.layers()[0].digest.short()
    )?;

    let mut named = Vec::new();
    for image in [&base, &web, &worker] {
        named.push(&image.descriptor);
        named.push(&image.manifest.config);
        named.extend(image.layers());
    }
    let named_bytes: u64 = named.iter().map(|d| d.size).sum();
    let different: BTreeSet<_> = named.iter().map(|d| d.digest).collect();
    let (files, bytes) = stored(dir)?;
    writeln!(
        out,
        "The manifests name {} blobs (manifest, config, layers), {} different, {named_bytes} bytes in all.",
        named.len(),
        different.len()
    )?;
    writeln!(
        out,
        "The layout holds {files} blob files, {bytes} bytes: each blob once."
    )?;
    writeln!(out, "Sharing saved {} bytes on disk.", named_bytes - bytes)?;
    writeln!(
        out,
        "In memory too: the store imported {} layers for 5 layer references (cached by ChainID).",
        store.cached_layers()
    )?;
    Ok(())
}
