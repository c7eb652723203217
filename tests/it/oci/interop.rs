//! Interop with umoci and skopeo: images go both ways and show the same
//! tree, and our digests survive a copy.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use layerstack::oci::{BuildOptions, FlattenOptions, Image, ImageStore, OciLayout};
use layerstack::{MergedView, Result};

use crate::support::tools::{Scratch, Tree, difference, dir_tree, have, root, run, view_tree};

fn assert_same(want: &Tree, got: &Tree, what: &str) {
    if let Some(d) = difference(want, got) {
        panic!("{what}: {d}");
    }
}

/// Writes files of every kind into a view (the steps of our image).
fn base_step(fs: &MergedView) -> Result<()> {
    fs.create_dir_all("etc/app")?;
    fs.write("etc/app/app.conf", "port = 80\n")?;
    fs.set_permissions("etc/app/app.conf", 0o640)?;
    fs.set_owner("etc/app/app.conf", Some(1000), Some(1000))?;
    fs.write("etc/motd", "welcome\n")?;
    fs.create_dir_all("usr/bin")?;
    fs.write("usr/bin/tool", "#!/bin/sh\necho tool\n")?;
    fs.set_permissions("usr/bin/tool", 0o4755)?;
    fs.hard_link("usr/bin/tool", "usr/bin/tool-alias")?;
    fs.symlink("tool", "usr/bin/tool-link")?;
    fs.symlink("/etc/motd", "etc/motd-abs")?;
    fs.set_xattr("etc/app/app.conf", "user.origin", b"layerstack")?;
    fs.set_xattr("usr/bin/tool", "trusted.note", b"\x00\x0a\xff")?;
    fs.create_dir_all("var/cache/app/sub")?;
    fs.write("var/cache/app/sub/old.dat", "old")?;
    fs.create_dir_all("var/log")?;
    fs.write("var/log/empty", "")?;
    fs.create_dir("deep")?;
    // A name past the 100 bytes of a ustar header: a PAX path.
    fs.write(format!("deep/{}", "n".repeat(120)), "long name")
}

fn edit_step(fs: &MergedView) -> Result<()> {
    fs.write("etc/app/app.conf", "port = 8080\n")?;
    fs.remove_file("etc/motd")?;
    fs.remove_dir_all("var/log")?;
    fs.remove_dir_all("var/cache/app")?;
    // A link to a lower file copies it up, which breaks its old link (the
    // kernel's default, index=off).
    fs.hard_link("usr/bin/tool", "usr/bin/tool2")
}

fn recreate_step(fs: &MergedView) -> Result<()> {
    fs.create_dir("var/cache/app")?;
    fs.write("var/cache/app/new.dat", "new")
}

fn build_ours(store: &ImageStore, tag: &str) -> Image {
    let mut b = store.builder(None, BuildOptions::default()).unwrap();
    b.step("base", base_step).unwrap();
    b.step("edit", edit_step).unwrap();
    b.step("recreate", recreate_step).unwrap();
    b.finish(tag).unwrap()
}

#[test]
fn umoci_unpacks_our_image_to_the_tree_our_view_shows() {
    let test = "umoci_unpacks_our_image_to_the_tree_our_view_shows";
    if !have("umoci", test) || !root(test) {
        return;
    }
    let s = Scratch::new("umoci-ours");
    let store = ImageStore::new(OciLayout::create(s.path("layout")).unwrap());
    let image = build_ours(&store, "v1");
    let ours = view_tree(&store.container(&image).unwrap());

    let bundle = s.path("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", s.path("layout")))
        .arg(&bundle));
    let theirs = dir_tree(bundle.join("rootfs").as_std_path());
    assert_same(&ours, &theirs, "umoci unpack of our image");
    // Our flatten writes the same tree umoci unpacks.
    let flat = s.path("flat");
    store
        .flatten(&image, &flat, &FlattenOptions::default())
        .unwrap();
    assert_same(
        &theirs,
        &dir_tree(flat.as_std_path()),
        "our flatten against umoci's unpack",
    );
    assert_eq!(
        ours.links,
        vec![vec!["usr/bin/tool".to_owned(), "usr/bin/tool2".to_owned()]]
    );
}

/// umoci builds an image with a deleted file, a deleted directory and a
/// directory deleted and recreated; our view of it equals umoci's unpack.
#[test]
fn our_view_of_an_umoci_image_equals_its_unpack() {
    let test = "our_view_of_an_umoci_image_equals_its_unpack";
    if !have("umoci", test) || !root(test) {
        return;
    }
    let s = Scratch::new("umoci-theirs");
    let layout = s.path("img");
    let image = |tag: &str| format!("{layout}:{tag}");
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image("base")]));

    let b1 = s.path("b1");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image("base")])
        .arg(&b1));
    let r = b1.join("rootfs");
    fs::create_dir_all(r.join("etc/d")).unwrap();
    fs::create_dir_all(r.join("gone/inner")).unwrap();
    fs::create_dir_all(r.join("re")).unwrap();
    fs::write(r.join("etc/f"), "hi\n").unwrap();
    fs::write(r.join("etc/del"), "delete me\n").unwrap();
    fs::write(r.join("gone/inner/x"), "x").unwrap();
    fs::write(r.join("re/old"), "old").unwrap();
    fs::hard_link(r.join("etc/f"), r.join("etc/f-link")).unwrap();
    std::os::unix::fs::symlink("../etc/f", r.join("re/to-f")).unwrap();
    fs::set_permissions(r.join("etc/d"), fs::Permissions::from_mode(0o700)).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image("v1")])
        .arg(&b1));

    let b2 = s.path("b2");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image("v1")])
        .arg(&b2));
    let r = b2.join("rootfs");
    fs::remove_file(r.join("etc/del")).unwrap();
    fs::remove_dir_all(r.join("gone")).unwrap();
    fs::remove_dir_all(r.join("re")).unwrap();
    fs::create_dir(r.join("re")).unwrap();
    fs::write(r.join("re/new"), "new").unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image("v2")])
        .arg(&b2));

    let b3 = s.path("b3");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image("v2")])
        .arg(&b3));
    let theirs = dir_tree(b3.join("rootfs").as_std_path());

    let store = ImageStore::new(OciLayout::open(&layout).unwrap());
    let v2 = store.image(Some("v2")).unwrap();
    assert_eq!(v2.layers().len(), 2);
    let ours = view_tree(&store.container(&v2).unwrap());
    assert_same(&theirs, &ours, "our view of umoci's v2");
    let flat = s.path("flat");
    store
        .flatten(&v2, &flat, &FlattenOptions::default())
        .unwrap();
    assert_same(
        &theirs,
        &dir_tree(flat.as_std_path()),
        "our flatten of umoci's v2",
    );
    assert!(
        !ours
            .entries
            .keys()
            .any(|p| p.as_bytes().starts_with(b"gone"))
    );
    assert!(
        ours.entries
            .contains_key(&layerstack::LayerPath::new("re/new").unwrap())
    );
    assert!(
        !ours
            .entries
            .contains_key(&layerstack::LayerPath::new("re/old").unwrap())
    );
}

#[test]
fn skopeo_copies_our_image_keeping_its_digests() {
    let test = "skopeo_copies_our_image_keeping_its_digests";
    if !have("skopeo", test) {
        return;
    }
    let s = Scratch::new("skopeo");
    let store = ImageStore::new(OciLayout::create(s.path("ours")).unwrap());
    let image = build_ours(&store, "v1");

    let inspect = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:v1", s.path("ours"))));
    assert_eq!(
        layerstack::oci::Digest::of(inspect.as_bytes()),
        image.descriptor.digest,
        "skopeo reads our manifest byte for byte"
    );
    let info: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:v1", s.path("ours")))))
    .unwrap();
    assert_eq!(info["Digest"], image.descriptor.digest.to_string());
    let layers: Vec<String> = image
        .layers()
        .iter()
        .map(|l| l.digest.to_string())
        .collect();
    assert_eq!(info["Layers"], serde_json::json!(layers));

    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:v1", s.path("ours")))
        .arg(format!("oci:{}:copied", s.path("other"))));
    let other = ImageStore::new(OciLayout::open(s.path("other")).unwrap());
    let copied = other.image(Some("copied")).unwrap();
    assert_eq!(copied.descriptor.digest, image.descriptor.digest);
    assert_eq!(copied.manifest, image.manifest);
    assert_same(
        &view_tree(&store.container(&image).unwrap()),
        &view_tree(&other.container(&copied).unwrap()),
        "the copied image",
    );
}
