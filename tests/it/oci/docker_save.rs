//! `docker save` archives as Docker writes them: a repeated layer written
//! once and linked (`<id>/layer.tar -> ../<id0>/layer.tar`), and Docker
//! 25's `index.json` with `"manifests": null` beside `manifest.json`.

use layerstack::oci::{Digest, ImageConfig, ImageStore, OciLayout};

use crate::support::tools::Scratch;

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
}

fn symlink(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_mode(0o777);
    h.set_entry_type(tar::EntryType::Symlink);
    b.append_link(&mut h, name, target).unwrap();
}

fn layer(path: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, path, content);
    b.into_inner().unwrap()
}

/// An archive of one image whose layers are `layers` (bottom first), the
/// layers whose index is in `linked` written as symlinks to the first
/// layer with the same bytes; `index` adds Docker 25's files.
fn archive(layers: &[Vec<u8>], linked: &[usize], index: Option<&str>) -> Vec<u8> {
    let mut config = ImageConfig::new("linux", "amd64");
    config.diff_ids = layers.iter().map(|l| Digest::of(l)).collect();
    let config = config.to_json();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let mut b = tar::Builder::new(Vec::new());
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let id = Digest::of(format!("layer {i}").as_bytes()).hex();
        let name = format!("{id}/layer.tar");
        if linked.contains(&i) {
            let first = layers.iter().position(|x| x == l).unwrap();
            let first_id = Digest::of(format!("layer {first}").as_bytes()).hex();
            symlink(&mut b, &name, &format!("../{first_id}/layer.tar"));
        } else {
            file(&mut b, &name, l);
        }
        names.push(name);
    }
    file(&mut b, &config_name, &config);
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["app:1.0"],
        "Layers": names,
    }]);
    file(&mut b, "manifest.json", manifest.to_string().as_bytes());
    if let Some(index) = index {
        file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        file(&mut b, "index.json", index.as_bytes());
    }
    b.into_inner().unwrap()
}

fn check_image(dir: &camino::Utf8Path, layers: &[Vec<u8>]) {
    let store = ImageStore::new(OciLayout::open(dir).unwrap());
    let image = store.image(Some("1.0")).unwrap();
    let want: Vec<Digest> = layers.iter().map(|l| Digest::of(l)).collect();
    assert_eq!(image.diff_ids(), want.as_slice());
    // Every layer reads, each checked against its DiffID.
    assert_eq!(store.layers(&image).unwrap().len(), layers.len());
}

#[test]
fn a_docker_save_layer_tar_linked_to_another_layers_is_read() {
    let s = Scratch::new("docker-save-link");
    let base = layer("etc/os-release", b"ID=test\n");
    let app = layer("app/bin", b"#!/bin/sh\n");
    let layers = vec![base.clone(), app, base];
    let tar = archive(&layers, &[2], None);
    let dir = s.path("layout");
    OciLayout::import_docker_archive(&tar[..], &dir).unwrap();
    check_image(&dir, &layers);
}

#[test]
fn docker_25_null_manifests_fall_back_to_manifest_json() {
    let s = Scratch::new("docker-save-null");
    let layers = vec![layer("f", b"one\n")];
    let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}"#;
    let tar = archive(&layers, &[], Some(index));
    let dir = s.path("layout");
    OciLayout::import_docker_archive(&tar[..], &dir).unwrap();
    check_image(&dir, &layers);
}

#[test]
fn null_manifests_without_manifest_json_say_null_of_the_archive_file() {
    let s = Scratch::new("docker-save-null-alone");
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    file(
        &mut b,
        "index.json",
        br#"{"schemaVersion":2,"manifests":null}"#,
    );
    let tar = b.into_inner().unwrap();
    let e = OciLayout::import_docker_archive(&tar[..], s.path("layout")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to open image `index.json`: `manifests` is null"
    );
}
