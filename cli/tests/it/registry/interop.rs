//! skopeo both ways: what we push, skopeo reads with the same digests;
//! what skopeo pushes, we pull, and our flatten equals umoci's unpack.

use std::process::Command;

use layerstack::oci::registry::{self, NoProgress};
use layerstack::oci::{FlattenOptions, ImageStore, OciLayout};

use super::harness::{Auth, PASSWORD, TestRegistry, USER};
use super::push_pull::{build_images, options, pull_into, reference};
use super::tools::{Scratch, difference, dir_tree, have, root, run};

fn creds() -> String {
    format!("{USER}:{PASSWORD}")
}

#[test]
fn skopeo_reads_what_we_push_with_the_same_digests() {
    let test = "skopeo_reads_what_we_push_with_the_same_digests";
    if !have("skopeo", test) {
        return;
    }
    let Some(reg) = TestRegistry::start(test, Auth::Htpasswd) else {
        return;
    };
    let s = Scratch::new(test);
    let (store, _, app) = build_images(&s.path("src"));
    registry::push(
        store.layout(),
        Some("app"),
        &reference(&reg.host, "app:1.0"),
        &options(),
        &NoProgress,
    )
    .unwrap();
    let image = format!("docker://{}/app:1.0", reg.host);
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds(),
        &image,
    ]));
    let ours = store
        .layout()
        .read_blob(&app.descriptor.digest, Some(app.descriptor.size), 1 << 20)
        .unwrap();
    assert_eq!(raw.as_bytes(), ours, "skopeo reads another manifest");
    // skopeo copies it into a layout of its own: the same blobs.
    let dest = s.path("skopeo");
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds(),
        &image,
        &format!("oci:{dest}:copied"),
    ]));
    let theirs = ImageStore::new(OciLayout::open(&dest).unwrap());
    let copied = theirs.image(Some("copied")).unwrap();
    assert_eq!(copied.descriptor.digest, app.descriptor.digest);
    assert_eq!(copied.manifest, app.manifest);
}

#[test]
fn we_pull_what_skopeo_pushes_and_our_flatten_equals_umocis_unpack() {
    let test = "we_pull_what_skopeo_pushes_and_our_flatten_equals_umocis_unpack";
    if !have("skopeo", test) || !have("umoci", test) || !root(test) {
        return;
    }
    let Some(reg) = TestRegistry::start(test, Auth::Htpasswd) else {
        return;
    };
    let s = Scratch::new(test);
    let (store, _, _) = build_images(&s.path("src"));
    // skopeo pushes (from a layout: Docker's v2 schema 2 when asked, so
    // the pull reads a Docker manifest too).
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds(),
        "--format",
        "v2s2",
        &format!("oci:{}:app", store.layout().root()),
        &format!("docker://{}/skopeo:1", reg.host),
    ]));
    let digest = run(Command::new("skopeo").args([
        "inspect",
        "--format",
        "{{.Digest}}",
        "--tls-verify=false",
        "--creds",
        &creds(),
        &format!("docker://{}/skopeo:1", reg.host),
    ]));
    let pulled = pull_into(&reg.host, "skopeo:1", &s.path("pulled"), &options()).unwrap();
    assert_eq!(pulled.digest.to_string(), digest.trim());
    let ours = ImageStore::new(OciLayout::open(s.path("pulled")).unwrap());
    let image = ours.image(Some("1")).unwrap();
    assert_eq!(
        image.descriptor.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let flat = s.path("flat");
    ours.flatten(&image, &flat, &FlattenOptions::default())
        .unwrap();
    // umoci unpacks what skopeo pushed (copied back into an OCI layout).
    let back = s.path("back");
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds(),
        &format!("docker://{}/skopeo:1", reg.host),
        &format!("oci:{back}:1"),
    ]));
    let bundle = s.path("bundle");
    run(Command::new("umoci").args(["unpack", "--image", &format!("{back}:1"), bundle.as_str()]));
    let theirs = dir_tree(bundle.join("rootfs").as_std_path());
    if let Some(d) = difference(&theirs, &dir_tree(flat.as_std_path())) {
        panic!("our flatten of the pulled image against umoci's unpack: {d}");
    }
}
