//! `DirLayer`: the conformance suite on layers written to disk, the
//! on-disk format read as the kernel writes it, and merged views over disk
//! layers checked against the reference model.
//!
//! Writing whiteouts (character device 0/0) and `trusted.*` xattrs needs
//! root; without it these tests print why and pass without checking (CI
//! runs as root, and sets `LAYERSTACK_REQUIRE_ROOT=1` so a skip fails).

use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;

use camino::Utf8Path;
use layerstack::layer::dir::{DirLayerOptions, OverlayXattrs, WhiteoutFormat};
use layerstack::layer::{Redirect, copy_layer, walk};
use layerstack::merged::HardLinkCopyUp;
use layerstack::merged::ViewOptions;
use layerstack::model::Model;
use layerstack::testing::{
    Op, Strictness, apply_to_model, apply_to_view, check_layer_conformance_with, ops_strategy,
    snapshot_view, stack_strategy,
};
use layerstack::{
    DirLayer, Entry, ErrorKind, FileType, Layer, LayerMut, LayerPath, MemLayer, MergedView,
    Metadata,
};
use proptest::prelude::*;

use crate::support::TempDir as Scratch;

/// Whether the tests can write the overlay format here (root); prints why
/// not.
fn privileged(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("LAYERSTACK_REQUIRE_ROOT").is_none(),
        "{test} needs root and LAYERSTACK_REQUIRE_ROOT is set"
    );
    eprintln!(
        "SKIP {test}: needs root (whiteouts are character devices 0/0, overlay xattrs are trusted.*)"
    );
    false
}

/// Writes `mem` to `dir` as a layer and opens it read-only.
fn to_disk(mem: &MemLayer, scratch: &Scratch, name: &str) -> DirLayer {
    let upper = scratch.path(name);
    let work = scratch.path(&format!("{name}.work"));
    let mut layer = DirLayer::open_upper(&upper, &work).expect("open an upper layer");
    copy_layer(mem, &mut layer).expect("copy a MemLayer to disk");
    drop(layer);
    DirLayer::open(&upper).expect("open the layer read-only")
}

fn p(s: &str) -> LayerPath {
    LayerPath::new(s).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_layers_written_to_disk_conform(layer in layerstack::testing::layer_strategy()) {
        if !privileged("random_layers_written_to_disk_conform") {
            return Ok(());
        }
        let scratch = Scratch::new("conform");
        let disk = to_disk(&layer, &scratch, "l");
        if let Err(e) = check_layer_conformance_with(&disk, &layer, Strictness::Filesystem) {
            prop_assert!(false, "{e}\nlayer: {layer:?}");
        }
    }
}

#[test]
fn every_kind_of_entry_round_trips_through_disk() {
    if !privileged("every_kind_of_entry_round_trips_through_disk") {
        return;
    }
    let mut mem = MemLayer::new();
    let mut meta = Metadata::new(FileType::File)
        .with_mode(0o4751)
        .with_owner(1000, 1001)
        .with_times(layerstack::Timestamp::new(1_600_000_000, 123_456_789));
    meta.xattrs.insert("user.color", "blue");
    meta.xattrs.insert("trusted.overlay.mine", "escaped");
    mem.add_file_with("bin/tool", vec![7u8; 100_000], meta)
        .unwrap();
    mem.add_hard_link("bin/tool", "bin/alias").unwrap();
    mem.add_symlink("bin/link", "../etc/../bin/tool").unwrap();
    mem.add_special(
        "dev/null",
        Metadata::new(FileType::CharDevice).with_rdev(layerstack::makedev(1, 3)),
    )
    .unwrap();
    mem.add_special("run/fifo", Metadata::new(FileType::Fifo))
        .unwrap();
    mem.add_whiteout("etc/gone").unwrap();
    mem.add_opaque_dir("var/cache").unwrap();
    mem.add_dir("moved").unwrap();
    mem.set_redirect(&p("moved"), Some(Redirect::parse("/orig/place")))
        .unwrap();
    // Names, a symlink target and a redirect that are not UTF-8.
    mem.add_file(b"srv/caf\xe9", "latin-1").unwrap();
    mem.add_symlink(b"srv/\xd0\xd2", b"../srv/caf\xe9").unwrap();
    mem.add_whiteout(b"srv/\xc6\xfc\xcb\xdc").unwrap();
    mem.add_dir(b"moved-\xe9").unwrap();
    mem.set_redirect(
        &LayerPath::new(b"moved-\xe9").unwrap(),
        Some(Redirect::parse(b"/orig/\xe9")),
    )
    .unwrap();
    let scratch = Scratch::new("kinds");
    let disk = to_disk(&mem, &scratch, "l");
    check_layer_conformance_with(&disk, &mem, Strictness::Filesystem).unwrap();
    // On disk it is the kernel's format.
    let raw = std::fs::symlink_metadata(scratch.path("l/etc/gone")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(raw.file_type().is_char_device());
    assert_eq!(raw.rdev(), 0);
    let xattr = |path: &Utf8Path, name: &str| {
        let mut buf = vec![0u8; 64];
        let n = rustix::fs::lgetxattr(path.as_str(), name, &mut buf[..]).ok()?;
        buf.truncate(n);
        Some(buf)
    };
    assert_eq!(
        xattr(&scratch.path("l/var/cache"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert_eq!(
        xattr(&scratch.path("l/moved"), "trusted.overlay.redirect"),
        Some(b"/orig/place".to_vec())
    );
    assert_eq!(
        xattr(&scratch.path("l/bin/tool"), "trusted.overlay.overlay.mine"),
        Some(b"escaped".to_vec())
    );
    assert_eq!(raw.nlink(), 1);
    assert_eq!(
        std::fs::metadata(scratch.path("l/bin/alias"))
            .unwrap()
            .nlink(),
        2
    );
}

/// A redirect the kernel would ignore or refuse is still data of the
/// layer: a copy to disk and back keeps its bytes exactly, and the layer
/// hands it out parsed the same way.
#[test]
fn redirects_the_kernel_would_not_follow_keep_their_bytes_through_copies() {
    if !privileged("redirects_the_kernel_would_not_follow_keep_their_bytes") {
        return;
    }
    let stored: [&[u8]; 6] = [b"a/b", b"..", b"//x", b"/a/../b", b"/d/\xe9/", b"old"];
    let mut mem = MemLayer::new();
    for (i, bytes) in stored.iter().enumerate() {
        let dir = p(&format!("d{i}"));
        mem.add_dir(&dir).unwrap();
        mem.set_redirect(&dir, Some(Redirect::parse(bytes)))
            .unwrap();
    }
    let scratch = Scratch::new("redirect-bytes");
    let disk = to_disk(&mem, &scratch, "l");
    let mut back = MemLayer::new();
    copy_layer(&disk, &mut back).unwrap();
    for (i, bytes) in stored.iter().enumerate() {
        let on_disk = rustix::fs::lgetxattr(
            scratch.path(&format!("l/d{i}")).as_str(),
            "trusted.overlay.redirect",
            &mut [0u8; 64][..],
        );
        assert_eq!(on_disk, Ok(bytes.len()), "d{i}");
        for layer in [&disk as &dyn Layer, &back] {
            let node = layer.lookup(&p(&format!("d{i}"))).unwrap().unwrap();
            let redirect = node.node().unwrap().redirect.clone().unwrap();
            assert_eq!(redirect.to_bytes().as_ref(), *bytes, "d{i}");
            assert_eq!(redirect, Redirect::parse(bytes), "d{i}");
        }
    }
    check_layer_conformance_with(&back, &mem, Strictness::Filesystem).unwrap();
}

#[test]
fn kernel_bookkeeping_xattrs_are_never_shown() {
    if !privileged("kernel_bookkeeping_xattrs_are_never_shown") {
        return;
    }
    let scratch = Scratch::new("bookkeeping");
    let dir = scratch.path("l");
    std::fs::create_dir_all(dir.join("d")).unwrap();
    std::fs::write(dir.join("d/f"), "x").unwrap();
    for (path, name, value) in [
        ("d", "trusted.overlay.impure", &b"y"[..]),
        ("d", "trusted.overlay.origin", b"\x00\xfb"),
        ("d/f", "trusted.overlay.origin", b"\x00\xfb"),
        ("d/f", "trusted.overlay.nlink", b"U+1"),
        ("d/f", "trusted.overlay.overlay.kept", b"1"),
        ("d/f", "user.kept", b"2"),
    ] {
        rustix::fs::lsetxattr(
            dir.join(path).as_str(),
            name,
            value,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    let layer = DirLayer::open(&dir).unwrap();
    let Some(Entry::Node(d)) = layer.lookup(&p("d")).unwrap() else {
        panic!("d is a directory")
    };
    assert!(d.meta.xattrs.is_empty());
    let Some(Entry::Node(f)) = layer.lookup(&p("d/f")).unwrap() else {
        panic!("d/f is a file")
    };
    let names: Vec<&str> = f.meta.xattrs.names().collect();
    assert_eq!(names, ["trusted.overlay.kept", "user.kept"]);
}

#[test]
fn xattr_whiteouts_count_only_in_a_directory_marked_x() {
    if !privileged("xattr_whiteouts_count_only_in_a_directory_marked_x") {
        return;
    }
    let scratch = Scratch::new("xwhiteout");
    let dir = scratch.path("l");
    for sub in ["x", "plain"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::write(dir.join(sub).join("w"), "").unwrap();
        rustix::fs::lsetxattr(
            dir.join(sub).join("w").as_str(),
            "trusted.overlay.whiteout",
            b"",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    rustix::fs::lsetxattr(
        dir.join("x").as_str(),
        "trusted.overlay.opaque",
        b"x",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let layer = DirLayer::open(&dir).unwrap();
    assert_eq!(layer.lookup(&p("x/w")).unwrap(), Some(Entry::Whiteout));
    assert!(
        !layer.read_dir(&p("x")).unwrap().opaque,
        "opaque=x is not opaque"
    );
    assert!(matches!(
        layer.lookup(&p("plain/w")).unwrap(),
        Some(Entry::Node(_))
    ));
}

#[test]
fn user_namespace_mode_reads_and_writes_user_overlay_xattrs() {
    if !privileged("user_namespace_mode_reads_and_writes_user_overlay_xattrs") {
        return;
    }
    let scratch = Scratch::new("userxattr");
    let options = DirLayerOptions::default().xattrs(OverlayXattrs::User);
    let mut upper =
        DirLayer::open_upper_with(scratch.path("u"), scratch.path("w"), options.clone()).unwrap();
    upper
        .create(
            &p("d"),
            &Metadata::new(FileType::Dir),
            layerstack::Content::Dir,
        )
        .unwrap();
    upper.set_opaque(&p("d"), true).unwrap();
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(
        scratch.path("u/d").as_str(),
        "user.overlay.opaque",
        &mut buf[..],
    )
    .unwrap();
    assert_eq!(&buf[..n], b"y");
    let read = DirLayer::open_with(scratch.path("u"), options).unwrap();
    assert!(read.read_dir(&p("d")).unwrap().opaque);
    // In the trusted namespace the same directory is not opaque.
    let trusted = DirLayer::open(scratch.path("u")).unwrap();
    assert!(!trusted.read_dir(&p("d")).unwrap().opaque);
}

#[test]
fn symlinks_in_a_layer_are_never_followed() {
    if !privileged("symlinks_in_a_layer_are_never_followed") {
        return;
    }
    let scratch = Scratch::new("symlinks");
    let outside = scratch.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "do not read").unwrap();
    let dir = scratch.path("l");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("escape")).unwrap();
    std::os::unix::fs::symlink("../outside/secret", dir.join("file")).unwrap();
    let layer = DirLayer::open(&dir).unwrap();
    assert_eq!(layer.lookup(&p("escape/secret")).unwrap(), None);
    assert_eq!(
        layer.read_at(&p("file"), 0, 100).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        layer.read_dir(&p("escape")).unwrap_err().kind(),
        ErrorKind::NotADirectory
    );
    assert_eq!(layer.read_link(&p("escape")).unwrap(), outside.as_str());
    // Writes through a planted symlink are refused too.
    let mut upper = DirLayer::open_upper(&dir, scratch.path("w")).unwrap();
    let err = upper
        .create(
            &p("escape/new"),
            &Metadata::new(FileType::File),
            layerstack::Content::File(Default::default()),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotADirectory);
    assert!(!outside.join("new").exists());
    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        "do not read"
    );
}

#[test]
fn the_work_directory_is_checked_and_cleaned() {
    if !privileged("the_work_directory_is_checked_and_cleaned") {
        return;
    }
    let scratch = Scratch::new("work");
    let err = DirLayer::open_upper(scratch.path("u"), scratch.path("u/w")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    std::fs::create_dir_all(scratch.path("w/work/leftover/deep")).unwrap();
    std::fs::write(scratch.path("w/work/leftover/deep/f"), "half").unwrap();
    let _upper = DirLayer::open_upper(scratch.path("u"), scratch.path("w")).unwrap();
    assert_eq!(
        std::fs::read_dir(scratch.path("w/work")).unwrap().count(),
        0
    );
}

#[test]
fn commit_moves_the_upper_into_the_commit_directory() {
    if !privileged("commit_moves_the_upper_into_the_commit_directory") {
        return;
    }
    let scratch = Scratch::new("commit");
    let options = DirLayerOptions::default().commit_dir(scratch.path("layers"));
    let upper = DirLayer::open_upper_with(scratch.path("u"), scratch.path("w"), options).unwrap();
    let view = MergedView::new(vec![], upper).unwrap();
    view.write("one", "1").unwrap();
    view.commit().unwrap();
    view.write("two", "2").unwrap();
    view.remove_file("one").unwrap();
    view.commit().unwrap();
    assert_eq!(
        std::fs::read_to_string(scratch.path("layers/0/one")).unwrap(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.path("layers/1/two")).unwrap(),
        "2"
    );
    assert_eq!(view.read_dir("/").unwrap().len(), 1);
    assert_eq!(view.read("two").unwrap(), "2");
    assert!(
        std::fs::read_dir(scratch.path("u"))
            .unwrap()
            .next()
            .is_none()
    );
}

/// An upper layer locks its upper and work directories while it lives: a
/// second upper layer on either (in this process or another) fails with
/// `EBUSY` before it empties the work directory, as the kernel refuses a
/// second mount of an upper or work directory in use; once the first is
/// dropped the pair opens again.
#[test]
fn a_second_upper_layer_on_the_same_upper_or_work_is_busy() {
    let scratch = Scratch::new("busy");
    let (u, w, u2, w2) = (
        scratch.path("u"),
        scratch.path("w"),
        scratch.path("u2"),
        scratch.path("w2"),
    );
    let first = DirLayer::open_upper(&u, &w).unwrap();
    // What the live layer has in progress in its work directory.
    std::fs::write(w.join("work/in-flight"), "half").unwrap();
    for (upper, work, busy, what) in [
        (&u, &w, &u, "upperdir"),
        (&u, &w2, &u, "upperdir"),
        (&u2, &w, &w, "workdir"),
    ] {
        let err = DirLayer::open_upper(upper, work).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy);
        assert_eq!(
            err.to_string(),
            format!(
                "failed to access `{busy}`: resource busy: {what} is in use as the upperdir or \
                 workdir of another open upper layer (a mount, build or unpack)"
            )
        );
    }
    assert_eq!(
        std::fs::read_to_string(w.join("work/in-flight")).unwrap(),
        "half",
        "the refused opens left the live work directory alone"
    );
    // The directories the refused opens made are free.
    drop(DirLayer::open_upper(&u2, &w2).unwrap());
    drop(first);
    let again = DirLayer::open_upper(&u, &w).unwrap();
    assert!(again.is_writable());
    assert!(!w.join("work/in-flight").exists(), "leftovers are cleaned");
}

/// After a commit the lock is on the fresh upper directory, the one the
/// layer now writes; the committed directory is free.
#[test]
fn after_a_commit_the_fresh_upper_is_locked() {
    let scratch = Scratch::new("busy-commit");
    let (u, w) = (scratch.path("u"), scratch.path("w"));
    let options = DirLayerOptions::default().commit_dir(scratch.path("layers"));
    let mut upper = DirLayer::open_upper_with(&u, &w, options).unwrap();
    let committed = upper.commit().unwrap();
    let err = DirLayer::open_upper(&u, scratch.path("w2")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert_eq!(
        err.to_string(),
        format!(
            "failed to access `{u}`: resource busy: upperdir is in use as the upperdir or \
             workdir of another open upper layer (a mount, build or unpack)"
        )
    );
    drop(committed);
    let layers0 = scratch.path("layers/0");
    drop(DirLayer::open_upper(&layers0, scratch.path("w3")).unwrap());
    drop(upper);
    drop(DirLayer::open_upper(&u, &w).unwrap());
}

/// Runs `ops` on the model and on a view over the stack written to disk
/// (with a disk upper), comparing every outcome and the whole tree.
fn model_vs_disk_view(layers: &[MemLayer], ops: &[Op], options: ViewOptions) -> Result<(), String> {
    let scratch = Scratch::new("views");
    let mem: Vec<Arc<dyn Layer>> = layers
        .iter()
        .map(|l| Arc::new(l.clone()) as Arc<dyn Layer>)
        .collect();
    let disk: Vec<Arc<dyn Layer>> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| Arc::new(to_disk(l, &scratch, &format!("l{i}"))) as Arc<dyn Layer>)
        .collect();
    let mut model = Model::from_layers(&mem, options).map_err(|e| e.to_string())?;
    let upper = DirLayer::open_upper_with(
        scratch.path("upper"),
        scratch.path("work"),
        DirLayerOptions::default().commit_dir(scratch.path("committed")),
    )
    .map_err(|e| e.to_string())?;
    let view = MergedView::with_options(disk, upper, options).map_err(|e| e.to_string())?;
    let compare = |model: &Model, step: &str| -> Result<(), String> {
        let got = snapshot_view(&view).map_err(|e| e.to_string())?;
        let want = model.snapshot();
        if got != want {
            let diff = want
                .iter()
                .find(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, v)| format!("`{k}`: model {v:?}, disk view {:?}", got.get(k)))
                .or_else(|| {
                    got.iter()
                        .find(|(k, _)| !want.contains_key(*k))
                        .map(|(k, v)| format!("`{k}` only in the disk view: {v:?}"))
                })
                .unwrap_or_default();
            return Err(format!("trees differ {step}: {diff}"));
        }
        Ok(())
    };
    compare(&model, "before any operation")?;
    for (i, op) in ops.iter().enumerate() {
        let want = apply_to_model(&mut model, op);
        let got = apply_to_view(&view, op);
        if got != want {
            return Err(format!(
                "step {i} {op:?}: model {want:?}, disk view {got:?}"
            ));
        }
        compare(&model, &format!("after step {i} {op:?}"))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn views_over_disk_layers_match_the_model(
        layers in stack_strategy(3).prop_filter("a lower layer", |l| !l.is_empty()),
        ops in ops_strategy(24),
    ) {
        if !privileged("views_over_disk_layers_match_the_model") {
            return Ok(());
        }
        if let Err(e) = model_vs_disk_view(&layers, &ops, ViewOptions::default()) {
            prop_assert!(false, "{e}\nlayers: {layers:?}");
        }
    }
}

#[test]
fn layer_walk_of_disk_equals_memory() {
    if !privileged("layer_walk_of_disk_equals_memory") {
        return;
    }
    let mut mem = MemLayer::new();
    mem.add_file("a/b/c", "x").unwrap();
    mem.add_whiteout("a/w").unwrap();
    let scratch = Scratch::new("walk");
    let disk = to_disk(&mem, &scratch, "l");
    let names = |l: &dyn Layer| -> Vec<(String, bool)> {
        walk(l)
            .unwrap()
            .into_iter()
            .map(|(p, e)| (p.to_string(), e.is_whiteout()))
            .collect()
    };
    assert_eq!(names(&disk), names(&mem));
}

#[test]
fn xattr_whiteouts_are_written_where_devices_are_refused_and_the_kernel_honours_them() {
    if !privileged(
        "xattr_whiteouts_are_written_where_devices_are_refused_and_the_kernel_honours_them",
    ) {
        return;
    }
    let scratch = Scratch::new("xwhiteout-write");
    let mut lower = MemLayer::new();
    lower.add_file("d/gone", "below").unwrap();
    lower.add_file("d/kept", "below").unwrap();
    let lower_dir = to_disk(&lower, &scratch, "lower");
    drop(lower_dir);
    let (upper, work) = (scratch.path("upper"), scratch.path("work"));
    let options = DirLayerOptions::default().whiteouts(WhiteoutFormat::Xattr);
    let mut layer = DirLayer::open_upper_with(&upper, &work, options).expect("open upper");
    layer
        .create(
            &p("d"),
            &Metadata::new(FileType::Dir),
            layerstack::Content::Dir,
        )
        .expect("create d");
    layer.whiteout(&p("d/gone")).expect("an xattr whiteout");
    assert_eq!(layer.lookup(&p("d/gone")).unwrap(), Some(Entry::Whiteout));
    assert_eq!(
        layer.read_dir(&p("d")).unwrap().entries,
        [(
            layerstack::NameBuf::from("gone"),
            layerstack::EntryKind::Whiteout
        )]
    );
    drop(layer);
    use std::os::unix::fs::MetadataExt;
    let raw = std::fs::symlink_metadata(upper.join("d/gone")).unwrap();
    assert!(
        raw.is_file() && raw.size() == 0,
        "a zero-size file, not a device"
    );
    // The kernel reads it as a whiteout.
    let mnt = scratch.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let data =
        std::ffi::CString::new(format!("lowerdir={}:{}", upper, scratch.path("lower"))).unwrap();
    rustix::mount::mount(
        "overlay",
        mnt.as_str(),
        "overlay",
        rustix::mount::MountFlags::RDONLY,
        Some(data.as_c_str()),
    )
    .expect("mount the kernel overlay");
    let names: Vec<String> = std::fs::read_dir(mnt.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    rustix::mount::unmount(mnt.as_str(), rustix::mount::UnmountFlags::DETACH).unwrap();
    assert_eq!(names, ["kept"]);
}

#[test]
fn readers_never_see_a_torn_file_or_a_half_done_copy_up_on_disk() {
    if !privileged("readers_never_see_a_torn_file_or_a_half_done_copy_up_on_disk") {
        return;
    }
    let scratch = Scratch::new("concurrency");
    let mut base = MemLayer::new();
    for i in 0..8 {
        base.add_file(format!("f{i}"), vec![b'a'; 64 * 1024])
            .unwrap();
    }
    let lower: Arc<dyn Layer> = Arc::new(to_disk(&base, &scratch, "lower"));
    let upper = DirLayer::open_upper(scratch.path("upper"), scratch.path("work")).unwrap();
    let view = MergedView::new(vec![lower], upper).unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for round in 0..200 {
                    let name = format!("f{}", round % 8);
                    let data = view.read(&name).expect("read");
                    assert_eq!(data.len(), 64 * 1024, "{name}: a torn length");
                    assert!(
                        data.iter().all(|b| *b == data[0]),
                        "{name}: a torn copy-up or write"
                    );
                }
            });
        }
        for round in 0..64u8 {
            let name = format!("f{}", round % 8);
            // Each write replaces the whole file with one byte value: the
            // first one per file is also its copy-up.
            view.write(&name, vec![b'b' + round % 20; 64 * 1024])
                .expect("write");
        }
    });
}

#[test]
fn device_numbers_mknod_would_cut_are_refused_never_turned_into_whiteouts() {
    if !privileged("device_numbers_mknod_would_cut_are_refused_never_turned_into_whiteouts") {
        return;
    }
    let scratch = Scratch::new("rdev");
    let upper = DirLayer::open_upper(scratch.path("u"), scratch.path("w")).unwrap();
    let view = MergedView::new(vec![], upper).unwrap();
    // 1 << 32 is major 0, minor 0x100000: its low 32 bits are 0/0.
    let err = view
        .mknod("x", FileType::CharDevice, 0o644, 1 << 32)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!view.exists("x").unwrap());
    // A lower device with such a number cannot be copied up onto disk either.
    let mut lower = MemLayer::new();
    lower
        .add_special(
            "dev/odd",
            Metadata::new(FileType::BlockDevice).with_rdev(1 << 32),
        )
        .unwrap();
    let mut disk = DirLayer::open_upper(scratch.path("u2"), scratch.path("w2")).unwrap();
    let err = copy_layer(&lower, &mut disk).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!scratch.path("u2/dev/odd").exists());
}

#[test]
fn a_new_file_never_inherits_the_inode_number_of_a_removed_copy_up() {
    if !privileged("a_new_file_never_inherits_the_inode_number_of_a_removed_copy_up") {
        return;
    }
    let scratch = Scratch::new("ino-reuse");
    let mut base = MemLayer::new();
    for i in 0..20 {
        base.add_file(format!("a{i}"), "x").unwrap();
    }
    let lower: Arc<dyn Layer> = Arc::new(to_disk(&base, &scratch, "lower"));
    let upper = DirLayer::open_upper(scratch.path("u"), scratch.path("w")).unwrap();
    let view = MergedView::new(vec![lower], upper).unwrap();
    for i in 0..20 {
        let a = format!("a{i}");
        let lower_ino = view.metadata(&a).unwrap().ino;
        view.append(&a, "y").unwrap();
        assert_eq!(
            view.metadata(&a).unwrap().ino,
            lower_ino,
            "copy-up keeps st_ino"
        );
        view.remove_file(&a).unwrap();
        // The filesystem may hand the freed inode to the new file.
        view.write(format!("c{i}"), "new").unwrap();
        assert_ne!(view.metadata(format!("c{i}")).unwrap().ino, lower_ino);
    }
}

/// Issue: a hard link broken by copy-up kept the shared inode number, so
/// tools that find links by inode (tar, `rsync -H`, `cp -a`) took two
/// different files for one. The kernel (`index=off`) gives the copy its
/// own number; with `index=on` (`HardLinkCopyUp::Keep`) both names stay
/// one inode, and keep the number.
#[test]
fn copying_up_one_name_of_a_lower_hard_link_gives_it_its_own_inode() {
    if !privileged("copying_up_one_name_of_a_lower_hard_link_gives_it_its_own_inode") {
        return;
    }
    let scratch = Scratch::new("broken-link-ino");
    let mut base = MemLayer::new();
    base.add_file("a", "x").unwrap();
    base.add_hard_link("a", "b").unwrap();
    let disk: Arc<dyn Layer> = Arc::new(to_disk(&base, &scratch, "lower"));
    for keep in [false, true] {
        let options = ViewOptions::default().hard_links(if keep {
            HardLinkCopyUp::Keep
        } else {
            HardLinkCopyUp::Break
        });
        let views = [
            MergedView::with_options(
                vec![Arc::new(base.clone()) as Arc<dyn Layer>],
                MemLayer::new(),
                options,
            )
            .unwrap(),
            MergedView::with_options(
                vec![disk.clone()],
                DirLayer::open_upper(
                    scratch.path(&format!("u{keep}")),
                    scratch.path(&format!("w{keep}")),
                )
                .unwrap(),
                options,
            )
            .unwrap(),
        ];
        for view in views {
            let before = view.metadata("b").unwrap();
            assert_eq!(view.metadata("a").unwrap().ino, before.ino);
            view.append("a", "y").unwrap();
            let (a, b) = (view.metadata("a").unwrap(), view.metadata("b").unwrap());
            assert_eq!(b.ino, before.ino, "the name left below keeps its number");
            if keep {
                assert_eq!((a.ino, a.nlink, b.nlink), (before.ino, 2, 2));
                assert_eq!(view.read("b").unwrap(), "xy");
            } else {
                assert_ne!(a.ino, b.ino, "two different files share no inode");
                assert_eq!((a.nlink, b.nlink), (1, 2));
                assert_eq!(view.read("b").unwrap(), "x");
            }
        }
    }
}

#[test]
fn the_commit_directory_cannot_be_inside_the_upper() {
    if !privileged("the_commit_directory_cannot_be_inside_the_upper") {
        return;
    }
    let scratch = Scratch::new("commit-inside");
    let options = DirLayerOptions::default().commit_dir(scratch.path("u/layers"));
    let upper = DirLayer::open_upper_with(scratch.path("u"), scratch.path("w"), options).unwrap();
    let view = MergedView::new(vec![], upper).unwrap();
    view.write("f", "1").unwrap();
    assert_eq!(view.commit().unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(view.read("f").unwrap(), "1");
    assert_eq!(
        view.read_dir("/").unwrap().len(),
        1,
        "nothing was made in the upper"
    );
}

/// The view over `lower` and a fresh upper, in memory and on disk.
fn both_views(lower: &MemLayer, scratch: &Scratch, tag: &str) -> [MergedView; 2] {
    let disk: Arc<dyn Layer> = Arc::new(to_disk(lower, scratch, &format!("{tag}-lower")));
    [
        MergedView::new(
            vec![Arc::new(lower.clone()) as Arc<dyn Layer>],
            MemLayer::new(),
        )
        .unwrap(),
        MergedView::new(
            vec![disk],
            DirLayer::open_upper(
                scratch.path(&format!("{tag}-u")),
                scratch.path(&format!("{tag}-w")),
            )
            .unwrap(),
        )
        .unwrap(),
    ]
}

/// Issue: any copy-up through a view over `DirLayer`s left the copied-up
/// parents (and the upper root) with "now" as mtime. The kernel copies the
/// parents up with their lower times and keeps them so; only a change of
/// the directory's own entries (a new name) changes its mtime.
#[test]
fn copy_up_on_disk_keeps_the_times_of_every_parent() {
    if !privileged("copy_up_on_disk_keeps_the_times_of_every_parent") {
        return;
    }
    let scratch = Scratch::new("parent-times");
    let old = layerstack::Timestamp::new(1_500_000_000, 5);
    let dir = Metadata::new(FileType::Dir)
        .with_mode(0o755)
        .with_times(old);
    let mut lower = MemLayer::new();
    lower.add_dir_with("a", dir.clone()).unwrap();
    lower.add_dir_with("a/b", dir.clone()).unwrap();
    let file = Metadata::new(FileType::File)
        .with_mode(0o644)
        .with_times(old);
    lower.add_file_with("a/b/f", "data", file).unwrap();
    type Change = fn(&MergedView) -> layerstack::Result<()>;
    let changes: [(&str, Change); 9] = [
        ("open for write", |v| {
            let mut o = layerstack::merged::OpenOptions::new();
            o.write(true);
            v.open("a/b/f", &o).map(drop)
        }),
        ("append", |v| v.append("a/b/f", "+")),
        ("set_len", |v| v.set_len("a/b/f", 1)),
        ("set_permissions", |v| v.set_permissions("a/b/f", 0o600)),
        ("set_owner", |v| v.set_owner("a/b/f", Some(7), Some(8))),
        ("set_times", |v| {
            v.set_times("a/b/f", None, Some(layerstack::Timestamp::new(9, 0)))
        }),
        ("set_xattr", |v| v.set_xattr("a/b/f", "user.k", "v")),
        ("set_permissions of a directory", |v| {
            v.set_permissions("a/b", 0o700)
        }),
        // The new name changes `a/b`'s own mtime; `a` and the root keep theirs.
        ("hard_link", |v| v.hard_link("a/b/f", "a/b/g")),
    ];
    for (i, (what, change)) in changes.iter().enumerate() {
        for (view, backend) in both_views(&lower, &scratch, &format!("c{i}"))
            .iter()
            .zip(["memory", "disk"])
        {
            let root_before = view.metadata("/").unwrap().mtime;
            change(view).unwrap_or_else(|e| panic!("{what} on {backend}: {e}"));
            assert_eq!(
                view.metadata("a").unwrap().mtime,
                old,
                "{what} on {backend}: `a` keeps its mtime"
            );
            assert_eq!(
                view.metadata("/").unwrap().mtime,
                root_before,
                "{what} on {backend}: the root keeps its mtime"
            );
            let b = view.metadata("a/b").unwrap().mtime;
            if *what == "hard_link" {
                assert_ne!(b, old, "{what} on {backend}: a new name changes `a/b`");
            } else if !what.ends_with("directory") {
                assert_eq!(b, old, "{what} on {backend}: `a/b` keeps its mtime");
            }
        }
    }
}

/// Issue: reading through a `DirLayer` updated the atime of the lower file
/// and of the upper root. Reading never writes to a layer: the kernel
/// opens its layers' files `O_NOATIME`, and the view is a `noatime` mount.
#[test]
fn reading_through_a_dir_layer_changes_no_atime() {
    if !privileged("reading_through_a_dir_layer_changes_no_atime") {
        return;
    }
    let scratch = Scratch::new("atime");
    let mut lower = MemLayer::new();
    lower.add_file("d/f", "lower data").unwrap();
    let [_, view] = both_views(&lower, &scratch, "r");
    view.write("up", "upper data").unwrap();
    // atime before mtime: `relatime` would update it on the next read.
    let stale = |p: &Utf8Path| {
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p.as_str(),
            &rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: 1_000,
                    tv_nsec: 0,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: 2_000,
                    tv_nsec: 0,
                },
            },
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    };
    let watched = [
        scratch.path("r-lower/d/f"),
        scratch.path("r-lower/d"),
        scratch.path("r-lower"),
        scratch.path("r-u/up"),
        scratch.path("r-u"),
    ];
    for p in &watched {
        stale(p);
    }
    assert_eq!(view.read("d/f").unwrap(), "lower data");
    assert_eq!(view.read("up").unwrap(), "upper data");
    assert_eq!(view.read_dir("/").unwrap().len(), 2);
    assert_eq!(view.read_dir("d").unwrap().len(), 1);
    view.metadata("d/f").unwrap();
    for p in &watched {
        let atime = std::fs::metadata(p).unwrap().atime();
        assert_eq!(atime, 1_000, "reading changed the atime of `{p}`");
    }
}

/// Issue: `open_upper` failed with `ENOTDIR` when `work/work` was a regular
/// file; the kernel replaces it.
#[test]
fn a_work_dir_that_is_a_file_is_replaced() {
    if !privileged("a_work_dir_that_is_a_file_is_replaced") {
        return;
    }
    let scratch = Scratch::new("work-file");
    std::fs::create_dir_all(scratch.path("w")).unwrap();
    std::fs::write(scratch.path("w/work"), "not a directory").unwrap();
    let upper = DirLayer::open_upper(scratch.path("u"), scratch.path("w")).unwrap();
    let view = MergedView::new(vec![], upper).unwrap();
    view.write("f", "1").unwrap();
    assert!(scratch.path("w/work").is_dir());
    assert_eq!(
        std::fs::read_dir(scratch.path("w/work")).unwrap().count(),
        0
    );
}

/// Issue: opening an upper after a volatile session deleted the kernel's
/// `work/work/incompat/volatile` marker, and `Durability::Volatile` left
/// none. Both now as the kernel: a volatile session leaves the mark, and a
/// marked pair is refused (`EINVAL`) until the work directory is removed.
#[test]
fn a_volatile_session_marks_the_work_dir_and_a_marked_one_is_refused() {
    if !privileged("a_volatile_session_marks_the_work_dir_and_a_marked_one_is_refused") {
        return;
    }
    let scratch = Scratch::new("volatile");
    let (u, w) = (scratch.path("u"), scratch.path("w"));
    let options =
        DirLayerOptions::default().durability(layerstack::layer::dir::Durability::Volatile);
    let upper = DirLayer::open_upper_with(&u, &w, options.clone()).unwrap();
    let view = MergedView::new(vec![], upper).unwrap();
    view.write("f", "1").unwrap();
    drop(view);
    assert!(scratch.path("w/work/incompat/volatile/dirty").is_file());
    for again in [DirLayerOptions::default(), options] {
        let err = DirLayer::open_upper_with(&u, &w, again).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("`volatile` session"), "{err}");
    }
    assert!(
        scratch.path("w/work/incompat/volatile/dirty").is_file(),
        "the mark stays"
    );
    std::fs::remove_dir_all(&w).unwrap();
    let upper = DirLayer::open_upper(&u, &w).unwrap();
    assert_eq!(
        MergedView::new(vec![], upper).unwrap().read("f").unwrap(),
        "1"
    );
}

/// Issue: the upper directory also given as a lower layer was accepted;
/// the kernel refuses it (`ELOOP`), as it refuses a lower inside the upper
/// or the work directory. A lower that holds the upper is allowed (the
/// kernel mounts it too).
#[test]
fn a_lower_that_is_or_lies_in_the_upper_or_work_dir_is_refused() {
    if !privileged("a_lower_that_is_or_lies_in_the_upper_or_work_dir_is_refused") {
        return;
    }
    let scratch = Scratch::new("eloop");
    for d in ["x/u/sub", "x/w/sub"] {
        std::fs::create_dir_all(scratch.path(d)).unwrap();
    }
    for (dir, refused) in [
        ("x/u", true),
        ("x/u/sub", true),
        ("x/w", true),
        ("x/w/sub", true),
        ("x", false),
    ] {
        let upper = DirLayer::open_upper(scratch.path("x/u"), scratch.path("x/w")).unwrap();
        let lower: Arc<dyn Layer> = Arc::new(DirLayer::open(scratch.path(dir)).unwrap());
        match MergedView::new(vec![lower], upper) {
            Ok(_) => assert!(!refused, "a lower at `{dir}` was accepted"),
            Err(e) => {
                assert!(refused, "a lower at `{dir}` was refused: {e}");
                assert_eq!(e.kind(), ErrorKind::FilesystemLoop);
            }
        }
    }
}

/// Writes a metadata-only copy at `path` in upper directory `upper`, as a
/// kernel mounted with `metacopy=on` writes one (checked against 6.18): a
/// hole of the file's size with `overlay.metacopy` and, after a rename,
/// `overlay.redirect` naming the lower data.
fn metacopy_file(upper: &Utf8Path, path: &str, size: u64, mode: u32, redirect: Option<&str>) {
    use std::os::unix::fs::PermissionsExt;
    let at = upper.join(path);
    let f = std::fs::File::create(&at).unwrap();
    f.set_len(size).unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .unwrap();
    let set = |name: &str, value: &[u8]| {
        rustix::fs::lsetxattr(at.as_str(), name, value, rustix::fs::XattrFlags::empty()).unwrap();
    };
    set("trusted.overlay.metacopy", b"");
    if let Some(r) = redirect {
        set("trusted.overlay.redirect", r.as_bytes());
    }
}

/// Issue: an upper the kernel wrote with `metacopy=on` read as zeros. A
/// view now refuses such files (`EPERM`) by default, as the kernel's
/// default `metacopy=off` does, and with `Metacopy::Follow` reads the data
/// from the lower file, copying it up before its first change. The layer
/// itself never hands out the hole as data.
#[test]
fn metadata_only_copies_read_their_lower_data_or_are_refused() {
    if !privileged("metadata_only_copies_read_their_lower_data_or_are_refused") {
        return;
    }
    use layerstack::merged::Metacopy;
    let scratch = Scratch::new("metacopy");
    let mut base = MemLayer::new();
    base.add_file("f", "hello\n").unwrap();
    base.add_file("d/g", "world\n").unwrap();
    let lower = to_disk(&base, &scratch, "lower");
    let open = |tag: &str, metacopy: Metacopy| {
        let (u, w) = (
            scratch.path(&format!("u{tag}")),
            scratch.path(&format!("w{tag}")),
        );
        let upper = DirLayer::open_upper(&u, &w).unwrap();
        std::fs::create_dir(u.join("d")).unwrap();
        metacopy_file(&u, "f", 6, 0o600, None);
        metacopy_file(&u, "g2", 6, 0o640, Some("/d/g"));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            u.join("d/g").as_str(),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        let lowers = vec![Arc::new(DirLayer::open(lower.path()).unwrap()) as Arc<dyn Layer>];
        let options = ViewOptions::default().metacopy(metacopy);
        (MergedView::with_options(lowers, upper, options).unwrap(), u)
    };

    let (view, u) = open("refuse", Metacopy::Refuse);
    for path in ["f", "g2"] {
        assert_eq!(
            view.metadata(path).unwrap_err().kind(),
            ErrorKind::NotPermitted
        );
        assert_eq!(view.read(path).unwrap_err().kind(), ErrorKind::NotPermitted);
    }
    let upper = DirLayer::open(&u).unwrap();
    let err = upper.read_at(&p("f"), 0, 100).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotPermitted, "{err}");
    assert!(err.to_string().contains("metadata-only copy"), "{err}");

    let (view, u) = open("follow", Metacopy::Follow);
    assert_eq!(view.read("f").unwrap(), "hello\n");
    assert_eq!(view.read("g2").unwrap(), "world\n");
    let g2 = view.metadata("g2").unwrap();
    assert_eq!((g2.size, g2.mode), (6, 0o640));
    assert!(!view.exists("d/g").unwrap());
    // The first change of the data copies it up, into the copy itself.
    view.append("g2", "!").unwrap();
    assert_eq!(view.read("g2").unwrap(), "world\n!");
    assert_eq!(std::fs::read(u.join("g2")).unwrap(), b"world\n!");
    assert_eq!(std::fs::read(lower.path().join("d/g")).unwrap(), b"world\n");
    assert_eq!(view.metadata("g2").unwrap().mode, 0o640);
    // A copy that finds its data by its path gets it before it moves.
    view.rename("f", "d/f2").unwrap();
    assert_eq!(view.read("d/f2").unwrap(), "hello\n");
    assert_eq!(std::fs::read(u.join("d/f2")).unwrap(), b"hello\n");
    // With its data gone below, a copy is an I/O error, never zeros.
    let (view, u) = open("lost", Metacopy::Follow);
    std::fs::remove_file(u.join("g2")).unwrap();
    metacopy_file(&u, "g2", 6, 0o640, Some("/nowhere"));
    assert_eq!(view.read("g2").unwrap_err().kind(), ErrorKind::Io);
}
