//! A private registry, each layer sent once.
//!
//! Docker's layered filesystem does not end on one machine: images go to a
//! registry, which stores each layer once by digest. This example builds a
//! base image and a second one `FROM` it, pushes the first to
//! `REGISTRY/demo:1.0.0` and the second to `REGISTRY/demo-web:1.0.0`, and
//! shows that the second push sends no byte of the shared base layer: the
//! registry already holds it, so it is mounted from `demo` (or skipped,
//! when `demo-web` has it already).
//!
//! Start a registry on this machine first, for example Debian's
//! `docker-registry` with a config that listens on 127.0.0.1:5000, then:
//!
//! ```text
//! cargo run --example private_registry --features registry 127.0.0.1:5000
//! ```
//!
//! Credentials, when the registry wants them, come from auth.json or
//! `~/.docker/config.json`, as for `docker push`.

use std::error::Error;
use std::io::Write;

use camino::{Utf8Path, Utf8PathBuf};
use layerstack::oci::registry::{self, NoProgress, Reference, RegistryOptions, TransferSummary};
use layerstack::oci::{BuildOptions, ImageStore, OciLayout};

fn main() -> Result<(), Box<dyn Error>> {
    let Some(address) = std::env::args().nth(1) else {
        return Err("usage: private_registry HOST:PORT (a registry to push to)".into());
    };
    let tmp = Utf8PathBuf::from_path_buf(std::env::temp_dir())
        .map_err(|p| format!("temporary directory {} is not UTF-8", p.display()))?;
    let dir = tmp.join(format!(
        "layerstack-private-registry-{}",
        std::process::id()
    ));
    let result = run(
        &address,
        &RegistryOptions::default(),
        &dir,
        &mut std::io::stdout().lock(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Builds the two images in a layout in `dir`, pushes them to the registry
/// at `address` and tells what each push sent.
pub fn run(
    address: &str,
    options: &RegistryOptions,
    dir: &Utf8Path,
    out: &mut impl Write,
) -> Result<(), Box<dyn Error>> {
    let store = ImageStore::new(OciLayout::create(dir)?);
    let mut build = store.builder(None, BuildOptions::default())?;
    build.step("ADD rootfs /", |fs| {
        fs.create_dir_all("etc")?;
        fs.write("etc/os-release", "PRETTY_NAME=\"demo base\"\n")?;
        fs.create_dir_all("usr/lib")?;
        // A base layer of some size: what a second push must not send.
        fs.write("usr/lib/libdemo.so", vec![0x5a; 256 << 10])
    })?;
    let base = build.finish("demo")?;
    let mut build = store.builder(Some(&base), BuildOptions::default())?;
    build.step("COPY index.html /srv/www/", |fs| {
        fs.create_dir_all("srv/www")?;
        fs.write("srv/www/index.html", "<h1>hello</h1>\n")
    })?;
    let web = build.finish("demo-web")?;
    let shared = &base.manifest.layers[0];
    writeln!(
        out,
        "built demo (1 layer) and demo-web (FROM demo, 2 layers): the base layer {} ({} bytes) is in both",
        shared.digest.short(),
        shared.size
    )?;

    let push = |tag: &str, repository: &str| -> Result<TransferSummary, Box<dyn Error>> {
        let target: Reference = format!("{address}/{repository}:1.0.0").parse()?;
        Ok(registry::push(
            store.layout(),
            Some(tag),
            &target,
            options,
            &NoProgress,
        )?)
    };
    let first = push("demo", "demo")?;
    writeln!(
        out,
        "push demo -> {address}/demo:1.0.0: {} blobs sent, {} bytes",
        first.blobs_transferred, first.bytes_transferred
    )?;
    let second = push("demo-web", "demo-web")?;
    writeln!(
        out,
        "push demo-web -> {address}/demo-web:1.0.0: {} blobs sent, {} bytes; {} mounted from demo, {} already there",
        second.blobs_transferred,
        second.bytes_transferred,
        second.blobs_mounted,
        second.blobs_skipped
    )?;
    let new_bytes = web.manifest.layers[1].size + web.manifest.config.size;
    let shared_sent = second.bytes_transferred.saturating_sub(new_bytes);
    writeln!(
        out,
        "bytes of the shared base layer sent by the second push: {shared_sent}"
    )?;
    writeln!(
        out,
        "the registry stores the base layer once, under blobs/sha256/{}/{}/data, and both repositories link it",
        &shared.digest.hex()[..2],
        shared.digest.hex()
    )?;
    Ok(())
}
