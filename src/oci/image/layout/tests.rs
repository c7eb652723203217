use super::archive::{ANNOTATION_IMAGE_NAME, DOCKER_LAYER_TAR, tag_of};
use super::blobs::error_from_read;
use super::gc::STALE_TEMP_AGE;
use super::*;

/// A directory under the system's temp dir, removed on drop (the lazy
/// index's tests use it too).
pub(crate) struct Scratch(pub(crate) Utf8PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = Utf8PathBuf::from_path_buf(std::env::temp_dir()).expect("UTF-8 temp dir");
        let dir = base.join(format!(
            "layerstack-layout-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn blob_files(layout: &OciLayout) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(layout.blobs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn sorted_hex(digests: &[Digest]) -> Vec<String> {
    let mut hex: Vec<String> = digests.iter().map(Digest::hex).collect();
    hex.sort();
    hex.dedup();
    hex
}

struct Image {
    manifest: Descriptor,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

impl Image {
    fn blobs(&self) -> Vec<Digest> {
        let mut all = vec![self.manifest.digest, self.config.digest];
        all.extend(self.layers.iter().map(|l| l.digest));
        all
    }
}

fn put_image(layout: &OciLayout, arch: &str, layers: &[&[u8]]) -> Image {
    let layers: Vec<Descriptor> = layers
        .iter()
        .map(|bytes| {
            let (d, s) = layout.put_blob(bytes).unwrap();
            Descriptor::new(Compression::None.layer_media_type(), d, s)
        })
        .collect();
    let mut config = ImageConfig::new("linux", arch);
    config.diff_ids = layers.iter().map(|l| l.digest).collect();
    let config = layout.put_json(&config, media_type::OCI_CONFIG).unwrap();
    let manifest = layout
        .put_json(
            &Manifest::new(config.clone(), layers.clone()),
            media_type::OCI_MANIFEST,
        )
        .unwrap();
    Image {
        manifest,
        config,
        layers,
    }
}

/// A fifo at `path` (where nothing is).
fn make_fifo(path: &Utf8Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path.as_str(),
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

fn err_of<T: std::fmt::Debug>(r: Result<T>) -> (ErrorKind, String) {
    let e = r.unwrap_err();
    (e.kind(), e.to_string())
}

#[test]
fn create_writes_the_layout_and_open_checks_it() {
    let dir = Scratch::new("create");
    let layout = OciLayout::create(&dir.0).unwrap();
    assert_eq!(
        fs::read_to_string(dir.0.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    assert_eq!(
        fs::read(dir.0.join("index.json")).unwrap(),
        Index::default().to_json()
    );
    assert!(blob_files(&layout).is_empty());
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 3);

    // Creating again opens, keeping the tags.
    let image = put_image(&layout, "amd64", &[b"l"]);
    layout.set_tag("v1", image.manifest.clone()).unwrap();
    let again = OciLayout::create(&dir.0).unwrap();
    assert_eq!(again.tags().unwrap().len(), 1);

    let empty = Scratch::new("not-a-layout");
    fs::create_dir_all(&empty.0).unwrap();
    assert_eq!(
        err_of(OciLayout::open(&empty.0)),
        (
            ErrorKind::NotFound,
            format!(
                "failed to open image `{}`: not an OCI image layout (no `oci-layout` file)",
                empty.0
            )
        )
    );
    fs::write(
        empty.0.join("oci-layout"),
        r#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    assert_eq!(
        err_of(OciLayout::open(&empty.0)),
        (
            ErrorKind::Unsupported,
            format!(
                "failed to open image `{}/oci-layout`: image layout version `2.0.0` is not supported (only 1.x)",
                empty.0
            )
        )
    );
    fs::write(empty.0.join("oci-layout"), r#"{"imageLayoutVersion":1}"#).unwrap();
    assert_eq!(err_of(OciLayout::open(&empty.0)).0, ErrorKind::InvalidData);
}

#[test]
fn writes_are_atomic_and_leave_no_temp_file() {
    let dir = Scratch::new("atomic");
    let layout = OciLayout::create(&dir.0).unwrap();
    let (digest, size) = layout.put_blob(b"hello").unwrap();
    assert_eq!((digest, size), (Digest::of(b"hello"), 5));
    assert_eq!(blob_files(&layout), vec![digest.hex()]);
    assert_eq!(fs::read(layout.blob_path(&digest)).unwrap(), b"hello");

    // A writer dropped without a commit leaves nothing.
    let mut writer = layout.blob_writer().unwrap();
    writer.write_all(b"half a blob").unwrap();
    assert_eq!(blob_files(&layout).len(), 2);
    drop(writer);
    assert_eq!(blob_files(&layout), vec![digest.hex()]);

    // Streaming through a writer gives the digest of all it was given.
    let mut writer = layout.blob_writer().unwrap();
    writer.write_all(b"hel").unwrap();
    writer.write_all(b"lo, world").unwrap();
    assert_eq!(writer.len(), 12);
    let (d2, s2) = writer.commit().unwrap();
    assert_eq!((d2, s2), (Digest::of(b"hello, world"), 12));
    assert_eq!(blob_files(&layout), sorted_hex(&[digest, d2]));
}

#[test]
fn the_same_blob_is_stored_once() {
    let dir = Scratch::new("dedup");
    let layout = OciLayout::create(&dir.0).unwrap();
    let first = layout.put_blob(b"same").unwrap();
    let inode =
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(layout.blob_path(&first.0)).unwrap());
    let second = layout.put_blob(b"same").unwrap();
    assert_eq!(first, second);
    assert_eq!(blob_files(&layout), vec![first.0.hex()]);
    // The stored file was kept, not replaced.
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(layout.blob_path(&first.0)).unwrap()),
        inode
    );
    // A truncated copy on disk is replaced by the whole blob.
    fs::write(layout.blob_path(&first.0), b"sa").unwrap();
    layout.put_blob(b"same").unwrap();
    assert_eq!(fs::read(layout.blob_path(&first.0)).unwrap(), b"same");
}

#[test]
fn a_corrupted_blob_fails_on_read() {
    let dir = Scratch::new("corrupt");
    let layout = OciLayout::create(&dir.0).unwrap();
    let data = b"some layer bytes".repeat(1000);
    let (digest, size) = layout.put_blob(&data).unwrap();
    assert_eq!(
        layout.read_blob(&digest, Some(size), u64::MAX).unwrap(),
        data
    );

    let mut on_disk = fs::read(layout.blob_path(&digest)).unwrap();
    on_disk[7000] ^= 0x01;
    fs::write(layout.blob_path(&digest), &on_disk).unwrap();
    let actual = Digest::of(&on_disk);
    let expected_message =
        format!("failed to read blob `{digest}`: digest mismatch: the content is {actual}");
    assert_eq!(
        err_of(layout.read_blob(&digest, Some(size), u64::MAX)),
        (ErrorKind::InvalidData, expected_message.clone())
    );

    // Streaming: the error comes before the last bytes are handed out.
    let mut reader = layout.open_blob(&digest, Some(size)).unwrap();
    let mut out = Vec::new();
    let err = reader.read_to_end(&mut out).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), expected_message);
    assert!(out.len() < data.len());
    // It stays failed.
    assert_eq!(
        reader.read(&mut [0; 8]).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );

    // read_exact of the whole size checks too.
    let mut reader = layout.open_blob(&digest, None).unwrap();
    let mut all = vec![0; data.len()];
    assert_eq!(
        reader.read_exact(&mut all).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
}

#[test]
fn a_blob_of_the_wrong_size_fails() {
    let dir = Scratch::new("size");
    let layout = OciLayout::create(&dir.0).unwrap();
    let (digest, _) = layout.put_blob(b"0123456789").unwrap();
    assert_eq!(
        err_of(layout.open_blob(&digest, Some(11))),
        (
            ErrorKind::InvalidData,
            format!(
                "failed to read blob `{digest}`: size mismatch: expected 11 bytes, the blob has 10"
            )
        )
    );
    // A longer file on disk than the descriptor says.
    fs::write(layout.blob_path(&digest), b"0123456789!").unwrap();
    assert_eq!(
        err_of(layout.read_blob(&digest, Some(10), 100)).1,
        format!(
            "failed to read blob `{digest}`: size mismatch: expected 10 bytes, the blob has 11"
        )
    );
    // Over the caller's limit.
    assert_eq!(
        err_of(layout.read_blob(&digest, None, 5)),
        (
            ErrorKind::LimitExceeded,
            format!(
                "failed to read blob `{digest}`: the blob is 11 bytes, more than the limit of 5"
            )
        )
    );
    assert_eq!(layout.blob_size(&digest).unwrap(), 11);
    // A file that shrinks after it was opened.
    let mut reader = layout.open_blob(&digest, Some(11)).unwrap();
    fs::write(layout.blob_path(&digest), b"0123").unwrap();
    assert_eq!(
        error_from_read(&reader.read_to_end(&mut Vec::new()).unwrap_err(), &digest).to_string(),
        format!("failed to read blob `{digest}`: the blob ended after 4 of its 11 bytes")
    );
    let absent = Digest::of(b"absent");
    assert!(!layout.has_blob(&absent).unwrap());
    assert_eq!(
        err_of(layout.open_blob(&absent, None)),
        (
            ErrorKind::NotFound,
            format!(
                "failed to read blob `{absent}`: no such blob in `{}`",
                dir.0
            )
        )
    );
}

#[test]
fn a_symlinked_blob_is_not_followed() {
    let dir = Scratch::new("symlink");
    let layout = OciLayout::create(&dir.0).unwrap();
    fs::write(dir.0.join("outside"), b"secret").unwrap();
    let digest = Digest::of(b"secret");
    std::os::unix::fs::symlink(dir.0.join("outside"), layout.blob_path(&digest)).unwrap();
    assert_eq!(
        err_of(layout.open_blob(&digest, None)),
        (
            ErrorKind::InvalidData,
            format!("failed to read blob `{digest}`: the blob is not a regular file")
        )
    );
    assert!(!layout.has_blob(&digest).unwrap());
}

#[test]
fn put_blob_verified_refuses_the_wrong_content() {
    let dir = Scratch::new("verified");
    let layout = OciLayout::create(&dir.0).unwrap();
    let want = Digest::of(b"expected");
    let got = Digest::of(b"EXPECTED");
    assert_eq!(
        err_of(layout.put_blob_verified(&b"EXPECTED"[..], &want, 8)),
        (
            ErrorKind::InvalidData,
            format!("failed to write blob `{want}`: digest mismatch: the content is {got}")
        )
    );
    assert_eq!(
        err_of(layout.put_blob_verified(&b"expected!"[..], &want, 8)).1,
        format!("failed to write blob `{want}`: size mismatch: expected 8 bytes, got more")
    );
    assert_eq!(
        err_of(layout.put_blob_verified(&b"expect"[..], &want, 8)).1,
        format!("failed to write blob `{want}`: size mismatch: expected 8 bytes, got 6")
    );
    assert!(blob_files(&layout).is_empty());
    layout
        .put_blob_verified(&b"expected"[..], &want, 8)
        .unwrap();
    assert_eq!(blob_files(&layout), vec![want.hex()]);
}

#[test]
fn a_digest_with_dot_dot_never_becomes_a_path() {
    let dir = Scratch::new("dotdot");
    let layout = OciLayout::create(&dir.0).unwrap();
    assert_eq!(
        Digest::parse("sha256:../../../etc/passwd")
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    // An index.json naming one is refused as a whole.
    fs::write(
        dir.0.join("index.json"),
        r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../../../etc/passwd","size":1}]}"#,
    )
    .unwrap();
    assert_eq!(
        err_of(layout.resolve(None)),
        (
            ErrorKind::InvalidData,
            format!(
                r#"failed to read blob `{}/index.json`: `manifests[0].digest` is not a sha256 digest: "sha256:../../../../etc/passwd""#,
                dir.0
            )
        )
    );
}

#[test]
fn tags_round_trip_and_keep_other_entries() {
    let dir = Scratch::new("tags");
    let layout = OciLayout::create(&dir.0).unwrap();
    let a = put_image(&layout, "amd64", &[b"a"]);
    let b = put_image(&layout, "amd64", &[b"b"]);
    let (odd, odd_size) = layout.put_blob(b"something else").unwrap();
    // An untagged entry of an unknown media type, and an unknown field.
    let mut index = layout.read_index().unwrap();
    let mut unknown = Descriptor::new("application/vnd.example.thing", odd, odd_size);
    unknown
        .extra
        .insert("artifactType".into(), Value::from("x"));
    index.manifests.push(unknown.clone());
    index.extra.insert("future".into(), Value::from(1));
    fs::write(dir.0.join("index.json"), index.to_json()).unwrap();

    layout.set_tag("v2", b.manifest.clone()).unwrap();
    layout.set_tag("v1", a.manifest.clone()).unwrap();
    let tagged = |d: &Descriptor, tag: &str| {
        let mut d = d.clone();
        d.annotations.insert(ANNOTATION_REF_NAME.into(), tag.into());
        d
    };
    assert_eq!(
        layout.tags().unwrap(),
        vec![
            ("v1".to_owned(), tagged(&a.manifest, "v1")),
            ("v2".to_owned(), tagged(&b.manifest, "v2")),
        ]
    );
    // Moving a tag replaces its descriptor in place.
    layout.set_tag("v2", a.manifest.clone()).unwrap();
    let index = layout.read_index().unwrap();
    assert_eq!(
        index.manifests,
        vec![
            unknown.clone(),
            tagged(&a.manifest, "v2"),
            tagged(&a.manifest, "v1")
        ]
    );
    assert_eq!(index.extra.get("future"), Some(&Value::from(1)));

    assert_eq!(layout.remove_tag("v2").unwrap(), tagged(&a.manifest, "v2"));
    assert_eq!(
        layout.read_index().unwrap().manifests,
        vec![unknown, tagged(&a.manifest, "v1")]
    );
    assert_eq!(
        err_of(layout.remove_tag("v2")),
        (
            ErrorKind::NotFound,
            format!("failed to write `{}/index.json`: no tag `v2`", dir.0)
        )
    );
    // No temporary file is left behind by the index rewrites.
    assert!(
        blob_files(&layout)
            .iter()
            .all(|n| !n.starts_with(TEMP_PREFIX))
    );
}

#[test]
fn invalid_tags_and_missing_blobs_are_refused() {
    let dir = Scratch::new("bad-tags");
    let layout = OciLayout::create(&dir.0).unwrap();
    let image = put_image(&layout, "amd64", &[b"x"]);
    let long = "a".repeat(129);
    for (tag, shown, why) in [
        ("", "", "it is empty"),
        ("/abs", "/abs", "`/` is not allowed"),
        ("a/b", "a/b", "`/` is not allowed"),
        ("x:y", "x:y", "`:` is not allowed"),
        ("../../escape", "../../escape", "it starts with `.`"),
        ("-x", "-x", "it starts with `-`"),
        ("a\nb", "a\\nb", "`\\n` is not allowed"),
        ("a b", "a b", "` ` is not allowed"),
        ("caf\u{e9}", "caf\u{e9}", "`\u{e9}` is not allowed"),
        (long.as_str(), long.as_str(), "it is 129 characters long"),
    ] {
        assert_eq!(
            err_of(layout.set_tag(tag, image.manifest.clone())),
            (
                ErrorKind::InvalidInput,
                format!(
                    "failed to write `{shown}`: invalid tag: {why} (a tag is 1 to 128 of \
                     A-Z a-z 0-9 _ . -, and does not start with . or -)"
                )
            )
        );
    }
    let digest_tag = format!("sha256:{}", image.manifest.digest.hex());
    assert_eq!(
        err_of(layout.set_tag(&digest_tag, image.manifest.clone())).0,
        ErrorKind::InvalidInput
    );
    // Nothing was written: no temporary file, no tag.
    assert_eq!(
        fs::read(dir.0.join("index.json")).unwrap(),
        Index::default().to_json()
    );
    for tag in ["_", "0", "A.b-c_d", "a".repeat(128).as_str()] {
        check_tag(tag).unwrap();
    }
    let ghost = Descriptor::new(media_type::OCI_MANIFEST, Digest::of(b"ghost"), 5);
    assert_eq!(
        err_of(layout.set_tag("ghost", ghost.clone())),
        (
            ErrorKind::NotFound,
            format!(
                "failed to write `{}/index.json`: cannot tag `ghost`: blob {} is not in the layout",
                dir.0, ghost.digest
            )
        )
    );
    let mut wrong_size = image.manifest.clone();
    wrong_size.size += 1;
    assert_eq!(
        err_of(layout.set_tag("x", wrong_size)).0,
        ErrorKind::InvalidData
    );
    assert!(layout.tags().unwrap().is_empty());
    layout.set_tag("v1.0", image.manifest).unwrap();
}

#[test]
fn layer_media_types_must_be_known_and_match_the_content() {
    let dir = Scratch::new("media-types");
    let layout = OciLayout::create(&dir.0).unwrap();
    let tar = b"plain tar bytes".to_vec();
    let pack = |c: Compression| {
        let mut w = crate::oci::Compressor::new(Vec::new(), c);
        w.write_all(&tar).unwrap();
        w.finish().unwrap()
    };
    let zstd_type = Compression::Zstd.layer_media_type();
    for (bytes, media_type, want) in [
        (tar.clone(), Compression::None.layer_media_type(), None),
        (
            pack(Compression::Gzip),
            Compression::Gzip.layer_media_type(),
            None,
        ),
        (pack(Compression::Zstd), zstd_type, None),
        (
            pack(Compression::Gzip),
            DOCKER_LAYER_TAR,
            Some("says an uncompressed tar, but the blob is gzip"),
        ),
        (
            pack(Compression::Gzip),
            zstd_type,
            Some("says zstd, but the blob is gzip"),
        ),
        (
            tar.clone(),
            Compression::Gzip.layer_media_type(),
            Some("says gzip, but the blob is an uncompressed tar"),
        ),
        (
            Vec::new(),
            zstd_type,
            Some("says zstd, but the blob is an uncompressed tar"),
        ),
    ] {
        let (digest, size) = layout.put_blob(&bytes).unwrap();
        let desc = Descriptor::new(media_type, digest, size);
        match want {
            None => {
                let mut read = Vec::new();
                layout
                    .open_layer(&desc)
                    .unwrap()
                    .read_to_end(&mut read)
                    .unwrap();
                assert_eq!(read, bytes);
            }
            Some(why) => assert_eq!(
                err_of(layout.open_layer(&desc)),
                (
                    ErrorKind::InvalidData,
                    format!("failed to read blob `{digest}`: media type `{media_type}` {why}")
                )
            ),
        }
    }
    let (digest, size) = layout.put_blob(&tar).unwrap();
    for unknown in [
        "application/vnd.oci.image.layer.v1.tar+lz4",
        "application/octet-stream",
    ] {
        assert_eq!(
            err_of(layout.open_layer(&Descriptor::new(unknown, digest, size))),
            (
                ErrorKind::Unsupported,
                format!(
                    "failed to read blob `{digest}`: media type `{unknown}` is not a layer media \
                     type (tar, tar+gzip or tar+zstd)"
                )
            )
        );
    }
}

#[test]
fn a_tag_held_twice_is_an_error_and_tagging_again_repairs_it() {
    let dir = Scratch::new("dup-tag");
    let layout = OciLayout::create(&dir.0).unwrap();
    let a = put_image(&layout, "amd64", &[b"a"]);
    let b = put_image(&layout, "amd64", &[b"b"]);
    let mut index = Index::default();
    for image in [&a, &b] {
        let mut d = image.manifest.clone();
        d.annotations
            .insert(ANNOTATION_REF_NAME.to_owned(), "v1".to_owned());
        index.manifests.push(d);
    }
    fs::write(dir.0.join("index.json"), index.to_json()).unwrap();
    let want = (
        ErrorKind::InvalidData,
        format!(
            "failed to open image `{}/index.json`: the tag \"v1\" names more than one image; \
             tag it again (or remove it) to repair",
            dir.0
        ),
    );
    assert_eq!(err_of(layout.resolve(Some("v1"))), want);
    assert_eq!(err_of(layout.resolve(None)), want);
    assert_eq!(err_of(layout.tags()), want);
    layout.set_tag("v1", b.manifest.clone()).unwrap();
    assert_eq!(
        layout.resolve(Some("v1")).unwrap().digest,
        b.manifest.digest
    );
}

#[test]
fn symlinked_blobs_are_refused_and_nothing_is_written_through_them() {
    for link in ["blobs", "blobs/sha256"] {
        let dir = Scratch::new("blobs-link");
        let layout = OciLayout::create(&dir.0).unwrap();
        let image = put_image(&layout, "amd64", &[b"l"]);
        layout.set_tag("v1", image.manifest.clone()).unwrap();
        let outside = dir
            .0
            .with_file_name(format!("{}-outside", dir.0.file_name().unwrap()));
        let _cleanup = Scratch(outside.clone());
        fs::rename(dir.0.join(link), &outside).unwrap();
        std::os::unix::fs::symlink(&outside, dir.0.join(link)).unwrap();
        let before = fs::read_dir(&outside).unwrap().count();
        let want = (
            ErrorKind::FilesystemLoop,
            format!(
                "failed to open `{}/{link}`: it is a symlink, and no part of an image layout is followed",
                dir.0
            ),
        );
        assert_eq!(err_of(OciLayout::open(&dir.0)), want);
        assert_eq!(err_of(layout.put_blob(b"new")), want);
        assert_eq!(err_of(layout.set_tag("v2", image.manifest.clone())), want);
        assert_eq!(err_of(layout.open_blob(&image.manifest.digest, None)), want);
        assert_eq!(err_of(layout.collect_garbage()), want);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), before);
        assert_eq!(
            layout.resolve(Some("v1")).unwrap().digest,
            image.manifest.digest
        );
    }
}

#[test]
fn fifos_and_directories_in_a_layout_are_refused_without_blocking() {
    let dir = Scratch::new("fifo");
    let layout = OciLayout::create(&dir.0).unwrap();
    let image = put_image(&layout, "amd64", &[b"l"]);
    layout.set_tag("v1", image.manifest.clone()).unwrap();
    let fifo = |path: &Utf8Path| {
        fs::remove_file(path).unwrap();
        make_fifo(path);
    };
    fifo(&dir.0.join("index.json"));
    let want = (
        ErrorKind::InvalidData,
        format!(
            "failed to open `{}/index.json`: it is a fifo, not a regular file",
            dir.0
        ),
    );
    assert_eq!(err_of(layout.read_index()), want);
    assert_eq!(err_of(layout.set_tag("v2", image.manifest.clone())), want);
    fifo(&dir.0.join("oci-layout"));
    assert_eq!(
        err_of(OciLayout::open(&dir.0)),
        (
            ErrorKind::InvalidData,
            format!(
                "failed to open image `{}/oci-layout`: it is a fifo, not a regular file",
                dir.0
            )
        )
    );
    fifo(&layout.blob_path(&image.config.digest));
    assert_eq!(
        err_of(layout.read_config(&image.manifest)).1,
        format!(
            "failed to read blob `{}`: the blob is not a regular file",
            image.config.digest
        )
    );
}

#[test]
fn resume_finishes_what_an_interrupted_create_left_and_nothing_else() {
    // What a run killed before `oci-layout` was written leaves: blobs,
    // a temporary file of a process that is gone, maybe `index.json`.
    let dir = Scratch::new("resume");
    let layout = OciLayout::create(&dir.0).unwrap();
    let (blob, _) = layout.put_blob(b"whole").unwrap();
    fs::write(layout.blobs_dir().join(".tmp-999999-7"), b"part").unwrap();
    fs::remove_file(dir.0.join("oci-layout")).unwrap();
    assert_eq!(err_of(OciLayout::open(&dir.0)).0, ErrorKind::NotFound);
    let resumed = OciLayout::resume(&dir.0).unwrap();
    assert_eq!(blob_files(&resumed), vec![blob.hex()]);
    assert!(resumed.tags().unwrap().is_empty());
    // Resuming a layout opens it.
    assert_eq!(OciLayout::resume(&dir.0).unwrap(), resumed);

    // Without `index.json`, and without `blobs/sha256`.
    let bare = Scratch::new("resume-bare");
    fs::create_dir_all(bare.0.join("blobs")).unwrap();
    OciLayout::resume(&bare.0).unwrap();
    assert_eq!(
        fs::read(bare.0.join("index.json")).unwrap(),
        Index::default().to_json()
    );

    // Anything that is not ours is left alone.
    for (name, what) in [
        ("etc", "etc"),
        ("blobs/sha256/notes.txt", "blobs/sha256/notes.txt"),
        ("blobs/other", "blobs/other"),
        ("index.json", "index.json"),
    ] {
        let foreign = Scratch::new("resume-foreign");
        fs::create_dir_all(foreign.0.join("blobs/sha256")).unwrap();
        fs::write(foreign.0.join(name), b"not ours").unwrap();
        assert_eq!(
            err_of(OciLayout::resume(&foreign.0)),
            (
                ErrorKind::DirectoryNotEmpty,
                format!(
                    "failed to create directory `{}`: `{what}` is not part of an unfinished image layout",
                    foreign.0
                )
            )
        );
        assert!(!foreign.0.join("oci-layout").exists());
    }
}

#[test]
fn resolve_defaults_to_latest_or_the_only_image() {
    let dir = Scratch::new("resolve");
    let layout = OciLayout::create(&dir.0).unwrap();
    assert_eq!(
        err_of(layout.resolve(None)),
        (
            ErrorKind::NotFound,
            format!("failed to open image `{}`: the layout has no images", dir.0)
        )
    );
    let a = put_image(&layout, "amd64", &[b"a"]);
    let b = put_image(&layout, "amd64", &[b"b"]);
    // One untagged image: that one; two: ambiguous.
    layout.add_untagged(a.manifest.clone()).unwrap();
    assert_eq!(layout.resolve(None).unwrap(), a.manifest);
    layout.add_untagged(b.manifest.clone()).unwrap();
    assert_eq!(
        err_of(layout.resolve(None)),
        (
            ErrorKind::InvalidInput,
            format!(
                "failed to open image `{}`: no tag given and the layout has 2 untagged images",
                dir.0
            )
        )
    );
    // By digest.
    assert_eq!(
        layout
            .resolve(Some(&a.manifest.digest.to_string()))
            .unwrap(),
        a.manifest
    );
    // The only tag.
    layout.set_tag("v1", b.manifest.clone()).unwrap();
    assert_eq!(layout.resolve(None).unwrap().digest, b.manifest.digest);
    // Two tags and no latest: ambiguous.
    layout.set_tag("v2", a.manifest.clone()).unwrap();
    assert_eq!(
        err_of(layout.resolve(None)),
        (
            ErrorKind::InvalidInput,
            format!(
                "failed to open image `{}`: no tag given, no `latest` tag, and several tags: v1, v2",
                dir.0
            )
        )
    );
    layout.set_tag("latest", a.manifest.clone()).unwrap();
    assert_eq!(layout.resolve(None).unwrap().digest, a.manifest.digest);
    assert_eq!(
        layout.resolve(Some("v1")).unwrap().digest,
        b.manifest.digest
    );
    assert_eq!(
        err_of(layout.resolve(Some("v3"))),
        (
            ErrorKind::NotFound,
            format!(
                "failed to open image `v3`: no such tag in `{}` (tags: latest, v1, v2)",
                dir.0
            )
        )
    );
}

#[test]
fn manifests_and_configs_are_found_through_indexes() {
    let dir = Scratch::new("read");
    let layout = OciLayout::create(&dir.0).unwrap();
    let amd = put_image(&layout, "amd64", &[b"amd"]);
    let arm = put_image(&layout, "arm64", &[b"arm"]);
    let with_platform = |d: &Descriptor, p: Platform| {
        let mut d = d.clone();
        d.platform = Some(p);
        d
    };
    let mut attestation = Descriptor::new(media_type::OCI_MANIFEST, Digest::of(b"att"), 3);
    attestation.platform = Some(Platform::new("unknown", "unknown"));
    let index = Index {
        manifests: vec![
            with_platform(&arm.manifest, Platform::new("linux", "arm64")),
            with_platform(&amd.manifest, Platform::new("linux", "amd64")),
        ],
        ..Index::default()
    };
    let index = layout.put_json(&index, media_type::OCI_INDEX).unwrap();
    // An index of the index.
    let outer = Index {
        manifests: vec![index.clone()],
        ..Index::default()
    };
    let outer = layout.put_json(&outer, media_type::OCI_INDEX).unwrap();

    let m = layout.read_manifest(&outer).unwrap();
    assert_eq!(m.config, amd.config);
    assert_eq!(m.layers, amd.layers);
    let m = layout
        .read_manifest_for(&index, &Platform::new("linux", "arm64"))
        .unwrap();
    assert_eq!(m.config, arm.config);
    assert_eq!(layout.read_config(&outer).unwrap().architecture, "amd64");
    assert_eq!(
        layout.read_config(&amd.config).unwrap().architecture,
        "amd64"
    );

    // Only one image (and an attestation): that one, whatever its platform.
    let single = Index {
        manifests: vec![
            with_platform(&arm.manifest, Platform::new("linux", "arm64")),
            attestation.clone(),
        ],
        ..Index::default()
    };
    let single = layout.put_json(&single, media_type::OCI_INDEX).unwrap();
    assert_eq!(layout.read_manifest(&single).unwrap().config, arm.config);

    let none = Index {
        manifests: vec![
            with_platform(&arm.manifest, Platform::new("linux", "arm64")),
            with_platform(&arm.manifest, Platform::new("linux", "s390x")),
            attestation,
        ],
        ..Index::default()
    };
    let none = layout.put_json(&none, media_type::OCI_INDEX).unwrap();
    assert_eq!(
        err_of(layout.read_manifest(&none)),
        (
            ErrorKind::NotFound,
            format!(
                "failed to open image `{}`: the image index has no manifest for linux/amd64 (it has: linux/arm64, linux/s390x, unknown/unknown)",
                none.digest
            )
        )
    );

    // Docker media types, and a manifest under an unknown media type.
    let mut docker = Manifest::new(
        Descriptor::new(
            media_type::DOCKER_CONFIG,
            amd.config.digest,
            amd.config.size,
        ),
        amd.layers.clone(),
    );
    docker.media_type = Some(media_type::DOCKER_MANIFEST.into());
    let docker_desc = layout
        .put_json(&docker, media_type::DOCKER_MANIFEST)
        .unwrap();
    assert_eq!(layout.read_manifest(&docker_desc).unwrap(), docker);
    assert_eq!(layout.read_config(&docker_desc).unwrap().os, "linux");
    let mut unknown = docker_desc.clone();
    unknown.media_type = "application/octet-stream".into();
    assert_eq!(layout.read_manifest(&unknown).unwrap(), docker);

    // A layer is not a manifest.
    assert_eq!(
        err_of(layout.read_manifest(&amd.layers[0])),
        (
            ErrorKind::Unsupported,
            format!(
                "failed to open image `{}`: media type `application/vnd.oci.image.layer.v1.tar` is neither an image manifest nor an image index",
                amd.layers[0].digest
            )
        )
    );
    // A descriptor of the wrong kind of document.
    let mut wrong = index.clone();
    wrong.media_type = media_type::OCI_MANIFEST.into();
    assert_eq!(
        err_of(layout.read_manifest(&wrong)),
        (
            ErrorKind::InvalidData,
            format!(
                "failed to read blob `{}`: `mediaType` is `{}`, not an image manifest",
                index.digest,
                media_type::OCI_INDEX
            )
        )
    );
}

#[test]
fn gc_removes_exactly_the_unreferenced_blobs() {
    let dir = Scratch::new("gc");
    let layout = OciLayout::create(&dir.0).unwrap();
    let tagged = put_image(&layout, "amd64", &[b"base", b"app"]);
    layout.set_tag("app", tagged.manifest.clone()).unwrap();
    // Reached through a nested index.
    let nested = put_image(&layout, "arm64", &[b"base", b"arm"]);
    let index = Index {
        manifests: vec![nested.manifest.clone()],
        ..Index::default()
    };
    let index = layout.put_json(&index, media_type::OCI_INDEX).unwrap();
    layout.set_tag("multi", index.clone()).unwrap();
    // A root of an unknown media type: kept, not followed.
    let (thing, thing_size) = layout.put_blob(b"not json").unwrap();
    layout
        .set_tag(
            "thing",
            Descriptor::new("application/x-thing", thing, thing_size),
        )
        .unwrap();
    // Garbage: an image nothing tags (sharing the base layer), a stray blob.
    let orphan = put_image(&layout, "amd64", &[b"base", b"orphan layer"]);
    let (stray, _) = layout.put_blob(b"stray").unwrap();
    // A stale and a fresh temporary file; files that are not ours.
    let stale = layout.blobs_dir().join(".tmp-999999-1");
    fs::write(&stale, b"12345").unwrap();
    File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(1))
        .unwrap();
    // Fresh, but its process is gone: left by a run that ended.
    let dead = layout.blobs_dir().join(".tmp-999999-2");
    fs::write(&dead, b"123").unwrap();
    // Fresh, of a process that runs (ours): a writer at work.
    let live_temp = format!(".tmp-{}-999999", std::process::id());
    fs::write(layout.blobs_dir().join(&live_temp), b"1").unwrap();
    fs::write(layout.blobs_dir().join("README"), b"keep").unwrap();
    fs::create_dir(layout.blobs_dir().join("f".repeat(64))).unwrap();
    fs::create_dir_all(dir.0.join("blobs/sha512")).unwrap();
    fs::write(dir.0.join("blobs/sha512").join("ab".repeat(64)), b"x").unwrap();

    let mut live = tagged.blobs();
    live.extend(nested.blobs());
    live.extend([index.digest, thing]);
    let removed = [
        orphan.manifest.digest,
        orphan.config.digest,
        orphan.layers[1].digest,
        stray,
    ];
    let bytes: u64 = removed
        .iter()
        .map(|d| layout.blob_size(d).unwrap())
        .sum::<u64>()
        + 5
        + 3;

    let mut want = removed.to_vec();
    want.sort();
    let want = GcReport {
        removed: want,
        temporaries: vec![
            "blobs/sha256/.tmp-999999-1".to_owned(),
            "blobs/sha256/.tmp-999999-2".to_owned(),
        ],
        cache_records: vec![],
        bytes_freed: bytes,
    };
    // A dry run finds the same and removes nothing.
    let before = blob_files(&layout);
    assert_eq!(layout.collect_garbage_with(GcMode::DryRun).unwrap(), want);
    assert_eq!(blob_files(&layout), before);
    assert_eq!(layout.collect_garbage().unwrap(), want);
    let mut left = sorted_hex(&live);
    left.extend([live_temp, "README".to_owned(), "f".repeat(64)]);
    left.sort();
    assert_eq!(blob_files(&layout), left);
    assert!(dir.0.join("blobs/sha512").join("ab".repeat(64)).exists());
    // Nothing left to collect.
    assert_eq!(layout.collect_garbage().unwrap(), GcReport::default());
    assert_eq!(layout.read_config(&index).unwrap().architecture, "arm64");
}

#[test]
fn the_layer_cache_gives_a_record_back_only_for_its_blob_and_diff_id() {
    let dir = Scratch::new("cache");
    let layout = OciLayout::create(&dir.0).unwrap();
    let (blob, diff_id, other) = (Digest::of(b"gz"), Digest::of(b"tar"), Digest::of(b"x"));
    assert_eq!(layout.layer_record(&blob, &diff_id), None);
    let record = LayerRecord {
        digest: blob,
        diff_id,
        uncompressed_size: 10_240,
    };
    layout.record_layer(&record).unwrap();
    assert_eq!(layout.layer_record(&blob, &diff_id), Some(record));
    assert_eq!(layout.layer_record(&blob, &other), None);
    assert_eq!(layout.layer_record(&other, &diff_id), None);
    // A newer record replaces the old one.
    let newer = LayerRecord {
        uncompressed_size: 7,
        ..record
    };
    layout.record_layer(&newer).unwrap();
    assert_eq!(layout.layer_record(&blob, &diff_id), Some(newer));
    let path = dir
        .0
        .join(format!(".layerstack/layers/{}.json", blob.hex()));
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        format!(r#"{{"diff_id":"{diff_id}","digest":"{blob}","uncompressed_size":7}}"#)
    );
    // The same record again writes nothing: the file is the same inode.
    let ino = |p: &Utf8Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
    let before = ino(&path);
    layout.record_layer(&newer).unwrap();
    assert_eq!(ino(&path), before);
    // Damaged, renamed, oversized or not a file: no record, no hang.
    for bad in [
        "{".to_owned(),
        fs::read_to_string(&path)
            .unwrap()
            .replace(&blob.to_string(), &other.to_string()),
        format!("{:4097}", ""),
        r#"{"digest":1,"diff_id":2,"uncompressed_size":"3"}"#.to_owned(),
    ] {
        fs::write(&path, bad).unwrap();
        assert_eq!(layout.layer_record(&blob, &diff_id), None);
    }
    fs::remove_file(&path).unwrap();
    make_fifo(&path);
    assert_eq!(layout.layer_record(&blob, &diff_id), None);
    // A symlinked cache directory is refused both ways.
    let outside = Scratch::new("cache-outside");
    fs::create_dir_all(&outside.0).unwrap();
    fs::remove_dir_all(dir.0.join(".layerstack")).unwrap();
    std::os::unix::fs::symlink(&outside.0, dir.0.join(".layerstack")).unwrap();
    assert_eq!(
        err_of(layout.record_layer(&record)).0,
        ErrorKind::FilesystemLoop
    );
    assert_eq!(fs::read_dir(&outside.0).unwrap().count(), 0);
}

#[test]
fn gc_removes_the_cache_records_of_the_blobs_it_removes() {
    let dir = Scratch::new("gc-cache");
    let layout = OciLayout::create(&dir.0).unwrap();
    let kept = put_image(&layout, "amd64", &[b"kept"]);
    let gone = put_image(&layout, "arm64", &[b"gone"]);
    layout.set_tag("v1", kept.manifest.clone()).unwrap();
    for image in [&kept, &gone] {
        let d = image.layers[0].digest;
        layout
            .record_layer(&LayerRecord {
                digest: d,
                diff_id: d,
                uncompressed_size: 4,
            })
            .unwrap();
    }
    let cache = dir.0.join(".layerstack/layers");
    fs::write(cache.join(".tmp-999999-5"), "x").unwrap();
    let record_len = fs::metadata(cache.join(format!("{}.json", gone.layers[0].digest.hex())))
        .unwrap()
        .len();
    let blobs: u64 = gone
        .blobs()
        .iter()
        .map(|d| layout.blob_size(d).unwrap())
        .sum();
    let want = GcReport {
        removed: sorted_digests(&gone.blobs()),
        temporaries: vec![".layerstack/layers/.tmp-999999-5".to_owned()],
        cache_records: vec![gone.layers[0].digest],
        bytes_freed: blobs + record_len + 1,
    };
    assert_eq!(layout.collect_garbage_with(GcMode::DryRun).unwrap(), want);
    assert!(
        layout
            .layer_record(&gone.layers[0].digest, &gone.layers[0].digest)
            .is_some()
    );
    assert_eq!(layout.collect_garbage().unwrap(), want);
    assert_eq!(
        layout.layer_record(&gone.layers[0].digest, &gone.layers[0].digest),
        None
    );
    let d = kept.layers[0].digest;
    assert_eq!(
        layout.layer_record(&d, &d).map(|r| r.uncompressed_size),
        Some(4)
    );
    assert_eq!(layout.collect_garbage().unwrap(), GcReport::default());
}

#[test]
fn gc_removes_nothing_when_a_manifest_is_corrupt() {
    let dir = Scratch::new("gc-corrupt");
    let layout = OciLayout::create(&dir.0).unwrap();
    let image = put_image(&layout, "amd64", &[b"layer"]);
    layout.set_tag("v1", image.manifest.clone()).unwrap();
    let (stray, _) = layout.put_blob(b"stray").unwrap();
    let path = layout.blob_path(&image.manifest.digest);
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] = b' ';
    fs::write(&path, &bytes).unwrap();
    assert_eq!(
        err_of(layout.collect_garbage()),
        (
            ErrorKind::InvalidData,
            format!(
                "failed to read blob `{}`: digest mismatch: the content is {}",
                image.manifest.digest,
                Digest::of(&bytes)
            )
        )
    );
    assert!(layout.has_blob(&stray).unwrap());
    assert!(layout.has_blob(&image.layers[0].digest).unwrap());
    // A missing manifest is skipped: there is nothing to follow.
    fs::remove_file(&path).unwrap();
    assert_eq!(
        layout.collect_garbage().unwrap().removed,
        sorted_digests(&[stray, image.config.digest, image.layers[0].digest])
    );
}

fn sorted_digests(digests: &[Digest]) -> Vec<Digest> {
    let mut v = digests.to_vec();
    v.sort();
    v
}

// ---- docker save ----

fn append(builder: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, data).unwrap();
}

fn layer_tar(file: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, file, content);
    b.into_inner().unwrap()
}

/// A `docker save` archive as Docker before 25 wrote it.
fn legacy_archive(layers: &[Vec<u8>], repo_tags: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let mut config = ImageConfig::new("linux", "amd64");
    config.diff_ids = layers.iter().map(|l| Digest::of(l)).collect();
    config.config = serde_json::json!({"Cmd": ["sh"]});
    let config = config.to_json();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let mut b = tar::Builder::new(Vec::new());
    let mut layer_names = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let id = Digest::of(format!("layer id {i}").as_bytes()).hex();
        append(&mut b, &format!("{id}/VERSION"), b"1.0");
        append(&mut b, &format!("{id}/json"), br#"{"id":"x"}"#);
        append(&mut b, &format!("{id}/layer.tar"), layer);
        layer_names.push(format!("{id}/layer.tar"));
    }
    append(&mut b, &config_name, &config);
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": repo_tags,
        "Layers": layer_names,
    }]);
    append(&mut b, "manifest.json", manifest.to_string().as_bytes());
    append(&mut b, "repositories", b"{}");
    (b.into_inner().unwrap(), config)
}

#[test]
fn import_reads_the_legacy_docker_save_format() {
    let layers = vec![
        layer_tar("etc/os-release", b"ID=test\n"),
        layer_tar("bin/sh", b"#!"),
    ];
    let (archive, config) = legacy_archive(&layers, &["busybox:1.36", "localhost:5000/app"]);
    // A repository without a tag is Docker's `latest`.
    let dir = Scratch::new("import-legacy");
    let layout = OciLayout::import_docker_archive(&archive[..], &dir.0).unwrap();

    let tags = layout.tags().unwrap();
    assert_eq!(
        tags.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        vec!["1.36", "latest"]
    );
    assert_eq!(
        tags[0]
            .1
            .annotations
            .get(ANNOTATION_IMAGE_NAME)
            .map(String::as_str),
        Some("busybox:1.36")
    );
    let manifest = layout.read_manifest(&tags[0].1).unwrap();
    assert_eq!(
        manifest.media_type.as_deref(),
        Some(media_type::OCI_MANIFEST)
    );
    assert_eq!(
        manifest.config,
        Descriptor::new(
            media_type::DOCKER_CONFIG,
            Digest::of(&config),
            config.len() as u64
        )
    );
    assert_eq!(
        manifest.layers,
        layers
            .iter()
            .map(|l| Descriptor::new(DOCKER_LAYER_TAR, Digest::of(l), l.len() as u64))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        Compression::from_media_type(DOCKER_LAYER_TAR),
        Some(Compression::None)
    );
    for (layer, desc) in layers.iter().zip(&manifest.layers) {
        assert_eq!(
            &layout
                .read_blob(&desc.digest, Some(desc.size), u64::MAX)
                .unwrap(),
            layer
        );
    }
    let cfg = layout.read_config(&tags[0].1).unwrap();
    assert_eq!(cfg.config, serde_json::json!({"Cmd": ["sh"]}));
    // Only the image's blobs are stored: no `json`, `VERSION` or the like.
    let mut want = vec![tags[0].1.digest, Digest::of(&config)];
    want.extend(layers.iter().map(|l| Digest::of(l)));
    assert_eq!(blob_files(&layout), sorted_hex(&want));
    assert_eq!(layout.collect_garbage().unwrap(), GcReport::default());
}

#[test]
fn import_checks_legacy_layers_against_the_config() {
    let layers = vec![layer_tar("a", b"1")];
    let (archive, _) = legacy_archive(&layers, &["x:1"]);
    // Swap the layer's bytes for others of the same length.
    let tampered = {
        let other = layer_tar("b", b"1");
        assert_eq!(other.len(), layers[0].len());
        let mut a = archive.clone();
        let at = a
            .windows(layers[0].len())
            .position(|w| w == &layers[0][..])
            .unwrap();
        a[at..at + other.len()].copy_from_slice(&other);
        // Keep the outer tar's header checksum valid: only data changed.
        (a, Digest::of(&other))
    };
    let dir = Scratch::new("import-tampered");
    let (kind, message) = err_of(OciLayout::import_docker_archive(&tampered.0[..], &dir.0));
    assert_eq!(kind, ErrorKind::InvalidData);
    assert!(
        message.ends_with(&format!(
            "the layer is {}, but the config's DiffID is {}",
            tampered.1,
            Digest::of(&layers[0])
        )),
        "{message}"
    );
    assert!(OciLayout::open(&dir.0).unwrap().tags().unwrap().is_empty());
}

#[test]
fn import_reads_the_oci_docker_save_format() {
    let src_dir = Scratch::new("import-oci-src");
    let src = OciLayout::create(&src_dir.0).unwrap();
    let image = put_image(&src, "amd64", &[b"layer one", b"layer two"]);
    src.set_tag("latest", image.manifest.clone()).unwrap();
    let mut named = image.manifest.clone();
    named.annotations.insert(
        ANNOTATION_IMAGE_NAME.into(),
        "docker.io/library/app:2.0".into(),
    );
    // Docker 25 also writes the legacy manifest.json, and symlinks.
    let mut b = tar::Builder::new(Vec::new());
    let mut index = src.read_index().unwrap();
    index.manifests.push(named);
    append(&mut b, "./oci-layout", LAYOUT_JSON);
    append(&mut b, "index.json", &index.to_json());
    for name in blob_files(&src) {
        let bytes = fs::read(src.blobs_dir().join(&name)).unwrap();
        append(&mut b, &format!("blobs/sha256/{name}"), &bytes);
    }
    append(&mut b, "manifest.json", b"[]");
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    b.append_link(&mut link, "abc/layer.tar", "../blobs/sha256/x")
        .unwrap();
    let archive = b.into_inner().unwrap();

    let dir = Scratch::new("import-oci");
    let layout = OciLayout::import_docker_archive(&archive[..], &dir.0).unwrap();
    assert_eq!(
        layout
            .tags()
            .unwrap()
            .iter()
            .map(|(t, d)| (t.as_str(), d.digest))
            .collect::<Vec<_>>(),
        vec![
            ("2.0", image.manifest.digest),
            ("latest", image.manifest.digest)
        ]
    );
    assert_eq!(blob_files(&layout), sorted_hex(&image.blobs()));
    let manifest = layout
        .read_manifest(&layout.resolve(None).unwrap())
        .unwrap();
    assert_eq!(manifest.layers, image.layers);

    // A blob whose content is not its name's digest is refused.
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, "oci-layout", LAYOUT_JSON);
    let claimed = Digest::of(b"claimed");
    append(
        &mut b,
        &format!("blobs/sha256/{}", claimed.hex()),
        b"CLAIMED",
    );
    let bad = Scratch::new("import-oci-bad");
    assert_eq!(
        err_of(OciLayout::import_docker_archive(
            &b.into_inner().unwrap()[..],
            &bad.0
        )),
        (
            ErrorKind::InvalidData,
            format!(
                "failed to write blob `{claimed}`: digest mismatch: the content is {}",
                Digest::of(b"CLAIMED")
            )
        )
    );
    assert!(blob_files(&OciLayout::open(&bad.0).unwrap()).is_empty());
}

#[test]
fn import_refuses_names_that_leave_the_archive() {
    for name in ["../evil", "a/../../evil", "/etc/passwd"] {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(1);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header, &b"x"[..]).unwrap();
        let dir = Scratch::new("import-evil");
        let why = if name.starts_with('/') {
            "it is absolute"
        } else {
            "it contains `..`"
        };
        assert_eq!(
            err_of(OciLayout::import_docker_archive(
                &b.into_inner().unwrap()[..],
                &dir.0
            )),
            (
                ErrorKind::InvalidData,
                format!("failed to open image `{name}`: invalid name in the archive: {why}")
            )
        );
    }
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, "something.txt", b"x");
    let dir = Scratch::new("import-neither");
    assert_eq!(
        err_of(OciLayout::import_docker_archive(&b.into_inner().unwrap()[..], &dir.0)),
        (
            ErrorKind::InvalidData,
            "failed to open image `<archive>`: not a `docker save` archive (neither `oci-layout` nor `manifest.json`)".to_owned()
        )
    );
}

#[test]
fn tag_of_takes_the_part_after_the_last_colon() {
    assert_eq!(tag_of("busybox:latest"), "latest");
    assert_eq!(tag_of("registry:5000/app:1.0"), "1.0");
    assert_eq!(tag_of("registry:5000/app"), "latest");
    assert_eq!(tag_of("app"), "latest");
    assert!(is_temp_name(".tmp-12-3"));
    assert!(!is_temp_name(".tmp-12-"));
    assert!(!is_temp_name(".tmp-a-3"));
    assert!(!is_temp_name("tmp-1-2"));
}
