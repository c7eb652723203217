use camino::Utf8PathBuf;

use super::*;
use crate::model;

struct TempDir(Utf8PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("layerstack-image-{tag}-{}-{n}", std::process::id()));
        let dir = Utf8PathBuf::from_path_buf(dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store(dir: &TempDir) -> ImageStore {
    ImageStore::new(OciLayout::create(&dir.0).unwrap())
}

/// The three Dockerfile-like steps of the demo: base files; modify a file,
/// delete a file and a directory; recreate that directory.
fn build_app(store: &ImageStore, tag: &str) -> Image {
    let mut b = store.builder(None, BuildOptions::default()).unwrap();
    b.step("ADD base", |fs| {
        fs.create_dir_all("etc")?;
        fs.write("etc/app.conf", "port = 80\n")?;
        fs.write("etc/motd", "welcome\n")?;
        fs.create_dir_all("var/cache/app")?;
        fs.write("var/cache/app/old.dat", "old")?;
        fs.symlink("app.conf", "etc/link")
    })
    .unwrap();
    b.step("RUN edit", |fs| {
        fs.write("etc/app.conf", "port = 8080\n")?;
        fs.remove_file("etc/motd")?;
        fs.remove_dir_all("var/cache/app")
    })
    .unwrap();
    b.configure("ENV MODE=prod", |c| {
        c.insert("Env".into(), serde_json::json!(["MODE=prod"]));
    })
    .unwrap();
    b.step("RUN recreate", |fs| {
        fs.create_dir("var/cache/app")?;
        fs.write("var/cache/app/new.dat", "new")
    })
    .unwrap();
    b.finish(tag).unwrap()
}

fn lines(changes: &[Change]) -> Vec<String> {
    changes.iter().map(ToString::to_string).collect()
}

#[test]
fn a_build_gives_one_layer_per_changing_step_and_history_for_all() {
    let dir = TempDir::new("build");
    let store = store(&dir);
    let image = build_app(&store, "app");
    assert_eq!(image.layers().len(), 3);
    let history: Vec<(Option<&str>, bool)> = image
        .config
        .history
        .iter()
        .map(|h| (h.created_by.as_deref(), h.empty_layer))
        .collect();
    assert_eq!(
        history,
        [
            (Some("ADD base"), false),
            (Some("RUN edit"), false),
            (Some("ENV MODE=prod"), true),
            (Some("RUN recreate"), false)
        ]
    );
    assert_eq!(
        image.config.created.as_deref(),
        Some("1970-01-01T00:00:00Z")
    );
    assert_eq!(image.config.config["Env"], serde_json::json!(["MODE=prod"]));

    let view = store.container(&image).unwrap();
    assert_eq!(
        view.read_to_string("etc/app.conf").unwrap(),
        "port = 8080\n"
    );
    assert!(!view.exists("etc/motd").unwrap());
    let names: Vec<crate::NameBuf> = view
        .read_dir("var/cache/app")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["new.dat"]);

    let changes: Vec<Vec<String>> = store
        .changes(&image)
        .unwrap()
        .iter()
        .map(|c| lines(c))
        .collect();
    assert_eq!(
        changes,
        [
            vec![
                "A /etc",
                "A /etc/app.conf",
                "A /etc/link",
                "A /etc/motd",
                "A /var",
                "A /var/cache",
                "A /var/cache/app",
                "A /var/cache/app/old.dat"
            ],
            vec![
                "C /etc",
                "C /etc/app.conf",
                "D /etc/motd",
                "C /var",
                "C /var/cache",
                "D /var/cache/app"
            ],
            vec![
                "C /var",
                "C /var/cache",
                "A /var/cache/app",
                "A /var/cache/app/new.dat"
            ],
        ]
    );
}

#[test]
fn building_the_same_steps_twice_gives_the_same_digests() {
    let (d1, d2) = (TempDir::new("det1"), TempDir::new("det2"));
    let a = build_app(&store(&d1), "app");
    let b = build_app(&store(&d2), "app");
    assert_eq!(a.descriptor.digest, b.descriptor.digest);
    assert_eq!(a.manifest, b.manifest);
    // Twice in one layout: the same blobs, a second tag.
    let d3 = TempDir::new("det3");
    let s3 = store(&d3);
    let first = build_app(&s3, "one");
    let blobs = std::fs::read_dir(d3.0.join("blobs/sha256"))
        .unwrap()
        .count();
    let second = build_app(&s3, "two");
    assert_eq!(first.descriptor.digest, second.descriptor.digest);
    assert_eq!(
        std::fs::read_dir(d3.0.join("blobs/sha256"))
            .unwrap()
            .count(),
        blobs
    );
    for c in [Compression::None, Compression::Zstd] {
        let d = TempDir::new("det-c");
        let s = store(&d);
        let mut builder = s.builder(None, BuildOptions::new().compression(c)).unwrap();
        builder.step("x", |fs| fs.write("f", "x")).unwrap();
        let one = builder.finish("t").unwrap();
        assert_eq!(one.layers()[0].media_type, c.layer_media_type());
    }
}

#[test]
fn a_failed_step_leaves_the_build_as_it_was() {
    let dir = TempDir::new("fail");
    let s = store(&dir);
    let mut b = s.builder(None, BuildOptions::default()).unwrap();
    b.step("ok", |fs| fs.write("a", "1")).unwrap();
    let err = b
        .step("bad", |fs| {
            fs.write("b", "2")?;
            fs.remove_file("missing")
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(b.step("noop", |_| Ok(())).unwrap(), StepOutcome::Empty);
    let image = b.finish("t").unwrap();
    assert_eq!(image.layers().len(), 1);
    let view = s.container(&image).unwrap();
    assert!(!view.exists("b").unwrap());
    assert_eq!(image.config.history.len(), 2);
}

#[test]
fn images_on_one_base_store_and_import_it_once() {
    let dir = TempDir::new("share");
    let s = store(&dir);
    let mut b = s.builder(None, BuildOptions::default()).unwrap();
    b.step("base", |fs| fs.write("base.txt", "shared".repeat(1000)))
        .unwrap();
    let base = b.finish("base").unwrap();
    let blobs_before = std::fs::read_dir(dir.0.join("blobs/sha256"))
        .unwrap()
        .count();

    let mut one = s.builder(Some(&base), BuildOptions::default()).unwrap();
    one.step("one", |fs| fs.write("one.txt", "1")).unwrap();
    let one = one.finish("one").unwrap();
    let mut two = s.builder(Some(&base), BuildOptions::default()).unwrap();
    two.step("two", |fs| fs.write("two.txt", "2")).unwrap();
    let two = two.finish("two").unwrap();
    assert_eq!(one.layers()[0], two.layers()[0]);
    // Each new image adds its layer, its config and its manifest; the base
    // layer is not stored again.
    let blobs_after = std::fs::read_dir(dir.0.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs_after, blobs_before + 6);

    // A fresh store imports the shared base once for both.
    let fresh = ImageStore::new(OciLayout::open(&dir.0).unwrap());
    let one = fresh.image(Some("one")).unwrap();
    let two = fresh.image(Some("two")).unwrap();
    let l1 = fresh.layers(&one).unwrap();
    let l2 = fresh.layers(&two).unwrap();
    assert!(Arc::ptr_eq(&l1[1], &l2[1]));
    assert_eq!(fresh.cached_layers(), 3);
    assert_eq!(
        fresh
            .container(&two)
            .unwrap()
            .read_to_string("two.txt")
            .unwrap(),
        "2"
    );
}

#[test]
fn a_container_is_gone_when_dropped() {
    let dir = TempDir::new("container");
    let s = store(&dir);
    let image = build_app(&s, "app");
    {
        let c = s.container(&image).unwrap();
        c.write("etc/app.conf", "scribbled").unwrap();
    }
    let c = s.container(&image).unwrap();
    assert_eq!(c.read_to_string("etc/app.conf").unwrap(), "port = 8080\n");
}

#[test]
fn a_corrupt_layer_or_a_wrong_diff_id_is_refused() {
    let dir = TempDir::new("corrupt");
    let s = store(&dir);
    let image = build_app(&s, "app");
    let blob = s.layout().blob_path(&image.layers()[1].digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let fresh = ImageStore::new(OciLayout::open(&dir.0).unwrap());
    let err = fresh
        .layers(&fresh.image(Some("app")).unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");

    // A config whose DiffID does not match its layer.
    let dir = TempDir::new("diffid");
    let s = store(&dir);
    let image = build_app(&s, "app");
    let lying = tag_lying(&s, &image, Digest::of(b"not the layer"));
    let fresh = ImageStore::new(OciLayout::open(&dir.0).unwrap());
    let err = fresh.layers(&lying).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(
        err.to_string().contains("but the config says sha256:"),
        "{err}"
    );
}

#[test]
fn squash_keeps_what_the_image_shows_in_one_layer() {
    let dir = TempDir::new("squash");
    let s = store(&dir);
    let image = build_app(&s, "app");
    let flat = s.squash(&image, "flat", BuildOptions::default()).unwrap();
    assert_eq!(flat.layers().len(), 1);
    assert_eq!(flat.config.history.len(), 5);
    assert!(flat.config.history[..4].iter().all(|h| h.empty_layer));
    // A merged directory reports one link, a directory of one layer its
    // own count: left out.
    let tree = |stack: &[Arc<dyn Layer>]| {
        let mut t = model::flatten(stack).unwrap();
        for e in t.values_mut().filter(|e| e.meta.file_type == FileType::Dir) {
            e.meta.nlink = 0;
        }
        t
    };
    let want = tree(&s.layers(&image).unwrap());
    let fresh = ImageStore::new(OciLayout::open(&dir.0).unwrap());
    let got = tree(&fresh.layers(&fresh.image(Some("flat")).unwrap()).unwrap());
    assert_eq!(got, want);
}

#[test]
fn rfc3339_formats_like_image_configs() {
    assert_eq!(rfc3339(Timestamp::EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(
        rfc3339(Timestamp::new(1_700_000_000, 0)),
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(
        rfc3339(Timestamp::new(951_782_400, 500_000_000)),
        "2000-02-29T00:00:00.5Z"
    );
    assert_eq!(rfc3339(Timestamp::new(-1, 0)), "1969-12-31T23:59:59Z");
}

#[test]
fn layers_spill_their_data_past_the_budget_and_read_it_back() {
    let dir = TempDir::new("spill");
    let data: Vec<u8> = (0..(5u32 << 20) / 2).map(|i| (i % 249) as u8 + 1).collect();
    let spill_dir = dir.0.with_extension("spill");
    std::fs::create_dir_all(&spill_dir).unwrap();
    let store = store(&dir).with_spill(Spill::new(&spill_dir, 1 << 20));
    let mut b = store.builder(None, BuildOptions::default()).unwrap();
    b.step("ADD big", |fs| fs.write("big", &data)).unwrap();
    b.step("chmod", |fs| fs.set_permissions("big", 0o600))
        .unwrap();
    let image = b.finish("big").unwrap();
    // The build's uppers and the imports of the layers it wrote spilled:
    // only the first MiB ever stayed in memory.
    let spilled = store.spill().spilled_bytes();
    assert!(spilled >= 3 * data.len() as u64 - (1 << 20), "{spilled}");

    // A fresh store spills to the layout, and leaves nothing there.
    let fresh = ImageStore::new(OciLayout::open(&dir.0).unwrap());
    let blobs = dir.0.join("blobs/sha256");
    assert_eq!(fresh.spill().dir(), blobs);
    assert_eq!(fresh.spill().budget(), Spill::DEFAULT_BUDGET);
    let fresh = fresh.with_spill(Spill::new(&blobs, 0));
    let names = || std::fs::read_dir(&blobs).unwrap().count();
    let before = names();
    let big = fresh.image(Some("big")).unwrap();
    let view = fresh.container(&big).unwrap();
    assert_eq!(view.read("big").unwrap(), data);
    assert_eq!(view.metadata("big").unwrap().mode, 0o600);
    // Lazy layers read their blobs: nothing is copied, nothing spills.
    assert_eq!(fresh.spill().spilled_bytes(), 0);
    // Imported layers spill past the budget.
    let imported = fresh.import_layers(&big).unwrap();
    assert_eq!(
        &imported[0]
            .read_at(&LayerPath::new("big").unwrap(), 0, usize::MAX)
            .unwrap()[..],
        &data[..]
    );
    assert_eq!(fresh.spill().spilled_bytes(), 2 * data.len() as u64);
    drop(imported);
    assert_eq!(names(), before);
    assert_eq!(image.layers().len(), 2);
    std::fs::remove_dir_all(&spill_dir).unwrap();
}

/// An image whose bottom layer is larger than the chunks the hashing
/// threads take (1 MiB that gzip cannot shrink), so the digests are
/// computed on their own threads, and a small layer above it.
/// `image` with a config whose first DiffID is `lie`, tagged `lying`.
fn tag_lying(s: &ImageStore, image: &Image, lie: Digest) -> Image {
    let mut config = image.config.clone();
    config.diff_ids[0] = lie;
    let config = s
        .layout()
        .put_json(&config, media_type::OCI_CONFIG)
        .unwrap();
    let manifest = Manifest::new(config, image.manifest.layers.clone());
    let desc = s
        .layout()
        .put_json(&manifest, media_type::OCI_MANIFEST)
        .unwrap();
    s.layout().set_tag("lying", desc).unwrap();
    s.image(Some("lying")).unwrap()
}

fn build_big(store: &ImageStore, tag: &str) -> Image {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    let mut b = store.builder(None, BuildOptions::default()).unwrap();
    b.step("ADD noise", |fs| {
        fs.create_dir_all("data")?;
        fs.write("data/noise", &noise)?;
        fs.write("data/gone", "deleted above")
    })
    .unwrap();
    b.step("RUN edit", |fs| {
        fs.remove_file("data/gone")?;
        fs.write("data/kept", "kept")
    })
    .unwrap();
    b.finish(tag).unwrap()
}

fn record_dir(dir: &TempDir) -> Utf8PathBuf {
    dir.0.join(".layerstack/layers")
}

fn flat_opts() -> FlattenOptions {
    FlattenOptions::default().owners(crate::oci::apply::flatten::Owners::Ignore)
}

/// Flips the gzip header's OS byte: the blob no longer matches its
/// digest, but inflates to the very same tar (its DiffID still matches),
/// so only the digest check can catch it.
fn retag_gzip_os(store: &ImageStore, digest: &Digest) {
    let blob = store.layout().blob_path(digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    assert_eq!(&bytes[..2], [0x1f, 0x8b]);
    bytes[9] ^= 0x01;
    std::fs::write(&blob, &bytes).unwrap();
}

#[test]
fn flatten_records_each_layer_it_checked_and_then_checks_only_the_digest() {
    let dir = TempDir::new("flat-record");
    let s = store(&dir);
    let image = build_big(&s, "big");
    // The build recorded its layers; a layout from elsewhere has none.
    let built: Vec<LayerRecord> = image
        .layers()
        .iter()
        .zip(image.diff_ids())
        .map(|(d, id)| s.layout().layer_record(&d.digest, id).unwrap())
        .collect();
    std::fs::remove_dir_all(record_dir(&dir)).unwrap();

    let out = dir.0.join("out");
    let summary = s.flatten(&image, &out, &flat_opts()).unwrap();
    assert_eq!((summary.files, summary.hidden), (2, 1));
    assert_eq!(
        std::fs::read(out.join("data/noise")).unwrap().len(),
        1 << 20
    );
    assert_eq!(
        std::fs::read_to_string(out.join("data/kept")).unwrap(),
        "kept"
    );
    assert!(!out.join("data/gone").exists());
    // A full read with both checks passed: the same records the build
    // wrote, sizes and all.
    for (d, want) in image.layers().iter().zip(&built) {
        assert_eq!(
            s.layout().layer_record(&d.digest, &want.diff_id),
            Some(*want)
        );
    }

    // With the records, only the digest is checked: still every byte.
    let bottom = image.layers()[0].digest;
    retag_gzip_os(&s, &bottom);
    let out2 = dir.0.join("out2");
    let err = s.flatten(&image, &out2, &flat_opts()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    let digest_err = format!(
        "failed to flatten layer entry `data/noise` in layer 0: reading the layer: \
         failed to read blob `{bottom}`: digest mismatch: the content is {}",
        Digest::of(&std::fs::read(s.layout().blob_path(&bottom)).unwrap())
    );
    assert_eq!(err.to_string(), digest_err);
    assert!(!out2.exists());

    // Without them, the same.
    std::fs::remove_dir_all(record_dir(&dir)).unwrap();
    let err = s.flatten(&image, &out2, &flat_opts()).unwrap_err();
    assert_eq!(err.to_string(), digest_err);
    assert!(!out2.exists());
    // A failed flatten records nothing.
    assert!(!record_dir(&dir).exists());
}

#[test]
fn flatten_checks_the_diff_id_unless_a_record_vouches_for_it() {
    let dir = TempDir::new("flat-diffid");
    let s = store(&dir);
    let image = build_big(&s, "big");
    let (blob, real) = (image.layers()[0].digest, image.diff_ids()[0]);
    let lie = Digest::of(b"not the layer");
    let lying = tag_lying(&s, &image, lie);
    let out = dir.0.join("out");
    let refused = format!(
        "failed to flatten into `{out}` in layer 0: the layer's DiffID is {real} but the config says {lie}"
    );

    // No record: refused, nothing left, nothing recorded for it.
    std::fs::remove_dir_all(record_dir(&dir)).unwrap();
    let err = s.flatten(&lying, &out, &flat_opts()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert_eq!(err.to_string(), refused);
    assert!(!out.exists());
    assert!(!record_dir(&dir).exists());

    // The record of the true DiffID does not vouch for another one.
    s.layout()
        .record_layer(&LayerRecord {
            digest: blob,
            diff_id: real,
            uncompressed_size: 1,
        })
        .unwrap();
    let err = s.flatten(&lying, &out, &flat_opts()).unwrap_err();
    assert_eq!(err.to_string(), refused);
    assert!(!out.exists());

    // A forged record of a wrong DiffID does not skip the check of the
    // right one, and a full read puts the truth in its place.
    s.layout()
        .record_layer(&LayerRecord {
            digest: blob,
            diff_id: Digest::of(b"forged"),
            uncompressed_size: 1,
        })
        .unwrap();
    s.flatten(&image, &out, &flat_opts()).unwrap();
    assert_eq!(s.layout().layer_record(&blob, &Digest::of(b"forged")), None);
    let truth = s.layout().layer_record(&blob, &real).unwrap();
    assert!(truth.uncompressed_size > 1 << 20, "{truth:?}");
    std::fs::remove_dir_all(&out).unwrap();

    // What a record can hide (as documented): a forged record agreeing
    // with a lying config. The bytes written are still the blob's, whose
    // digest is checked.
    s.layout()
        .record_layer(&LayerRecord {
            digest: blob,
            diff_id: lie,
            uncompressed_size: 1,
        })
        .unwrap();
    s.flatten(&lying, &out, &flat_opts()).unwrap();
    assert_eq!(
        std::fs::read(out.join("data/noise")).unwrap().len(),
        1 << 20
    );
}
