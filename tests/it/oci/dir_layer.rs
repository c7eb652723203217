//! Layer tars imported into disk layers: the kernel's overlayfs, mounting
//! them as lower layers, shows the tree our view of the image shows.

use std::sync::Arc;

use layerstack::oci::{BuildOptions, ImageStore, ImportOptions, OciLayout, import_into};
use layerstack::{DirLayer, Layer};
use rustix::mount::{MountFlags, UnmountFlags};

use crate::support::tools::{Scratch, difference, dir_tree, root, view_tree};

#[test]
fn imported_disk_layers_mount_as_the_image() {
    let test = "imported_disk_layers_mount_as_the_image";
    if !root(test) {
        return;
    }
    let s = Scratch::new("dir-import");
    let store = ImageStore::new(OciLayout::create(s.path("layout")).unwrap());
    let mut b = store.builder(None, BuildOptions::default()).unwrap();
    b.step("base", |fs| {
        fs.create_dir_all("etc/app")?;
        fs.write("etc/app/app.conf", "port = 80\n")?;
        fs.write("etc/motd", "welcome\n")?;
        fs.create_dir_all("var/lib/db")?;
        fs.write("var/lib/db/data", vec![7u8; 3 << 20])?;
        fs.hard_link("etc/motd", "etc/motd.bak")?;
        fs.symlink("/etc/motd", "motd")?;
        fs.set_xattr("etc/app/app.conf", "user.x", b"1")
    })
    .unwrap();
    b.step("edit", |fs| {
        fs.write("etc/app/app.conf", "port = 8080\n")?;
        fs.remove_file("etc/motd")?;
        fs.remove_dir_all("var/lib/db")?;
        fs.create_dir("var/lib/db")?;
        fs.write("var/lib/db/fresh", "f")
    })
    .unwrap();
    let image = b.finish("v1").unwrap();

    // Each layer into a DirLayer, over the disk layers below it.
    let mut below: Vec<Arc<dyn Layer>> = Vec::new();
    let mut dirs = Vec::new();
    for (i, desc) in image.layers().iter().enumerate() {
        let upper = s.path(&format!("layer{i}"));
        let mut layer = DirLayer::open_upper(&upper, s.path(&format!("work{i}"))).unwrap();
        let blob = store
            .layout()
            .open_blob(&desc.digest, Some(desc.size))
            .unwrap();
        let summary = import_into(blob, &mut layer, &below, &ImportOptions::default()).unwrap();
        assert_eq!(summary.diff_id, image.diff_ids()[i]);
        drop(layer);
        below.insert(0, Arc::new(DirLayer::open(&upper).unwrap()));
        dirs.insert(0, upper);
    }

    let mnt = s.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let lowerdir: Vec<&str> = dirs.iter().map(|d| d.as_str()).collect();
    let data = std::ffi::CString::new(format!("lowerdir={}", lowerdir.join(":"))).unwrap();
    rustix::mount::mount(
        "overlay",
        mnt.as_std_path(),
        "overlay",
        MountFlags::NODEV | MountFlags::RDONLY,
        &*data,
    )
    .expect("mount the imported layers");
    let kernel = dir_tree(mnt.as_std_path());
    let _ = rustix::mount::unmount(mnt.as_std_path(), UnmountFlags::DETACH);

    let ours = view_tree(&store.container(&image).unwrap());
    if let Some(d) = difference(&ours, &kernel) {
        panic!("kernel mount of the imported layers: {d}");
    }
    // And our view over the disk layers agrees too.
    let disk_view = layerstack::MergedView::new(below, layerstack::MemLayer::new()).unwrap();
    if let Some(d) = difference(&ours, &view_tree(&disk_view)) {
        panic!("our view over the imported disk layers: {d}");
    }
}
