//! `layerstack ls|inspect|diff|unpack STORAGE:REPO:TAG` read what a
//! registry stored in its storage directory; two repositories link one blob.

use std::process::Command;

use layerstack::oci::registry::{self, NoProgress};

use super::harness::{Auth, TestRegistry};
use super::push_pull::{build_images, options, reference};
use super::tools::{Scratch, run};

fn tool(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_layerstack"))
        .args(args)
        .output()
        .expect("run layerstack")
}

#[test]
fn the_tool_reads_images_from_a_registry_storage_directory() {
    let test = "the_tool_reads_images_from_a_registry_storage_directory";
    let Some(reg) = TestRegistry::start(test, Auth::Htpasswd) else {
        return;
    };
    let s = Scratch::new(test);
    let (store, base, app) = build_images(&s.path("src"));
    for (tag, name) in [("base", "base:1.0.0"), ("app", "app:1.0.0")] {
        registry::push(
            store.layout(),
            Some(tag),
            &reference(&reg.host, name),
            &options(),
            &NoProgress,
        )
        .unwrap();
    }
    let storage = reg.storage();
    let inspect = |image: &str| -> serde_json::Value {
        serde_json::from_str(&run(
            Command::new(env!("CARGO_BIN_EXE_layerstack")).args(["inspect", image, "--json"])
        ))
        .unwrap()
    };
    let app_json = inspect(&format!("{storage}:app:1.0.0"));
    let base_json = inspect(&format!("{storage}:base:1.0.0"));
    assert_eq!(
        app_json["manifest"]["digest"],
        app.descriptor.digest.to_string()
    );
    let digests = |v: &serde_json::Value| -> Vec<String> {
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        digests(&app_json),
        app.manifest
            .layers
            .iter()
            .map(|l| l.digest.to_string())
            .collect::<Vec<_>>()
    );
    // The two repositories name the same base layer, stored once.
    assert_eq!(digests(&base_json)[0], digests(&app_json)[0]);
    assert_eq!(
        digests(&base_json)[0],
        base.manifest.layers[0].digest.to_string()
    );

    let ls = run(Command::new(env!("CARGO_BIN_EXE_layerstack")).args([
        "cat",
        &format!("{storage}:app:1.0.0"),
        "app/run.sh",
    ]));
    assert_eq!(ls, "#!/bin/sh\necho app\n");
    let diff = run(Command::new(env!("CARGO_BIN_EXE_layerstack")).args([
        "diff",
        &format!("{storage}:app:1.0.0"),
        "--layer",
        "1",
    ]));
    let lines: Vec<&str> = diff.lines().map(str::trim).collect();
    let header = format!("layer 1 {}  app", app.manifest.layers[1].digest.short());
    assert_eq!(
        lines,
        [
            header.as_str(),
            "A /app",
            "A /app/run.sh",
            "C /etc",
            "D /etc/os-release",
        ]
    );
    let rootfs = s.path("rootfs");
    run(Command::new(env!("CARGO_BIN_EXE_layerstack")).args([
        "unpack",
        &format!("{storage}:app:1.0.0"),
        rootfs.as_str(),
    ]));
    assert_eq!(
        std::fs::read(rootfs.join("app/run.sh")).unwrap(),
        b"#!/bin/sh\necho app\n"
    );
    assert!(!rootfs.join("etc/os-release").exists());

    // Read only: commit refuses, and unknown tags are named.
    let out = tool(&[
        "commit",
        &format!("{storage}:app:1.0.0"),
        rootfs.as_str(),
        "--tag",
        "x",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!(
            "error: failed to commit `{storage}:app:1.0.0`: a registry's storage directory is read only: pull the image into a layout first"
        )
    );
    let out = tool(&["ls", &format!("{storage}:app:9.9")]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!("error: failed to open image `{storage}:app:9.9`: the registry has no such tag")
    );
    // Nothing was left behind in the temporary directory.
    let leftover = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("layerstack-registry-storage-")
        });
    assert!(!leftover, "a temporary layout was left behind");
}

#[test]
fn copy_takes_a_registry_or_a_layout_on_either_side() {
    let test = "copy_takes_a_registry_or_a_layout_on_either_side";
    let Some((reg, s, store, _, app)) = super::push_pull::setup(test) else {
        return;
    };
    let creds = format!("{}:{}", super::harness::USER, super::harness::PASSWORD);
    let copy = |from: &str, to: &str| -> serde_json::Value {
        let out = run(Command::new(env!("CARGO_BIN_EXE_layerstack")).args([
            "copy",
            from,
            to,
            "--creds",
            &creds,
            "--authfile",
            "/nonexistent",
            "--json",
        ]));
        serde_json::from_str(&out).unwrap()
    };
    let digest = app.descriptor.digest.to_string();
    let layout = format!("{}:app", store.layout().root());
    let sent = copy(&layout, &format!("{}/one:1", reg.host));
    assert_eq!(
        (
            sent["digest"].as_str(),
            sent["transferred"]["blobs"].as_u64()
        ),
        (Some(digest.as_str()), Some(3))
    );
    // Registry to registry: through a temporary layout that remembers
    // where the blobs came from, so the push mounts them.
    let moved = copy(
        &format!("docker://{}/one:1", reg.host),
        &format!("{}/two:1", reg.host),
    );
    assert_eq!(moved["mounted"]["blobs"], 3);
    assert_eq!(moved["transferred"]["bytes"], 0);
    assert_eq!(reg.tag_link("two", "1"), digest);
    let pulled = copy(
        &format!("{}/two:1", reg.host),
        &format!("{}:got", s.path("pulled")),
    );
    assert_eq!(pulled["transferred"]["blobs"], 3);
    let local = copy(
        &format!("{}:got", s.path("pulled")),
        &format!("{}:again", s.path("local")),
    );
    assert_eq!(local["transferred"]["blobs"], 3);
    assert_eq!(local["manifests"], 1);
    let again = layerstack::oci::OciLayout::open(s.path("local")).unwrap();
    assert_eq!(
        again.resolve(Some("again")).unwrap().digest,
        app.descriptor.digest
    );
}
