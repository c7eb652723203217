//! Push, pull, mounts, uploads, resume, corruption and failures against a
//! real `docker-registry`.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use camino::Utf8Path;
use layerstack::ErrorKind;
use layerstack::oci::MAX_DOCUMENT_BYTES;
use layerstack::oci::registry::{
    self, Credentials, NoProgress, Reference, RegistryOptions, TransferSummary, Upload,
};
use layerstack::oci::{BuildOptions, Image, ImageStore, OciLayout};

use super::harness::{Auth, PASSWORD, Proxy, TestRegistry, USER, self_signed};
use super::tools::{Scratch, run};

/// The big file of the base layer: incompressible, so the layer is about
/// this size.
pub const BIG: usize = 2 << 20;

/// Bytes that do not compress (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A base image with a 2 MiB layer, and an app image built FROM it.
pub fn build_images(dir: &Utf8Path) -> (ImageStore, Image, Image) {
    let store = ImageStore::new(OciLayout::create(dir).unwrap());
    let mut b = store.builder(None, BuildOptions::default()).unwrap();
    b.step("base", |fs| {
        fs.create_dir_all("data")?;
        fs.write("data/big.bin", noise(BIG, 7))?;
        fs.create_dir_all("etc")?;
        fs.write("etc/os-release", "NAME=base\n")
    })
    .unwrap();
    let base = b.finish("base").unwrap();
    let mut b = store.builder(Some(&base), BuildOptions::default()).unwrap();
    b.step("app", |fs| {
        fs.create_dir_all("app")?;
        fs.write("app/run.sh", "#!/bin/sh\necho app\n")?;
        fs.remove_file("etc/os-release")
    })
    .unwrap();
    let app = b.finish("app").unwrap();
    (store, base, app)
}

/// A registry for `test`, a scratch directory and the two images in a
/// layout in it; `None` when the test is skipped.
pub fn setup(test: &str) -> Option<(TestRegistry, Scratch, ImageStore, Image, Image)> {
    let reg = TestRegistry::start(test, Auth::Htpasswd)?;
    let s = Scratch::new(test);
    let (store, base, app) = build_images(&s.path("src"));
    Some((reg, s, store, base, app))
}

pub fn options() -> RegistryOptions {
    RegistryOptions {
        credentials: Some(Credentials::parse(&format!("{USER}:{PASSWORD}")).unwrap()),
        auth_files: Some(Vec::new()),
        retry_delay: Duration::from_millis(20),
        ..RegistryOptions::default()
    }
}

pub fn reference(host: &str, name: &str) -> Reference {
    format!("{host}/{name}").parse().unwrap()
}

/// Pulls `host/name` into the layout in `dir`, tagged as the source.
pub fn pull_into(
    host: &str,
    name: &str,
    dir: &Utf8Path,
    options: &RegistryOptions,
) -> layerstack::Result<TransferSummary> {
    registry::pull(&reference(host, name), dir, None, options, &NoProgress)
}

fn push(
    layout: &OciLayout,
    tag: &str,
    host: &str,
    name: &str,
    options: &RegistryOptions,
) -> TransferSummary {
    registry::push(
        layout,
        Some(tag),
        &reference(host, name),
        options,
        &NoProgress,
    )
    .unwrap_or_else(|e| panic!("push {tag} to {host}/{name}: {e}"))
}

/// The image's blob digests: config, then layers.
fn blobs(image: &Image) -> Vec<(layerstack::oci::Digest, u64)> {
    std::iter::once(&image.manifest.config)
        .chain(&image.manifest.layers)
        .map(|d| (d.digest, d.size))
        .collect()
}

#[test]
fn push_pull_round_trip_keeps_every_digest() {
    let test = "push_pull_round_trip_keeps_every_digest";
    let Some((reg, s, store, base, app)) = setup(test) else {
        return;
    };
    let layout = store.layout();
    let first = push(layout, "base", &reg.host, "base:1.0", &options());
    assert_eq!(first.digest, base.descriptor.digest);
    assert_eq!((first.blobs_transferred, first.blobs_skipped), (2, 0));
    assert_eq!(first.manifests, 1);
    // The registry's storage names the manifest under the tag.
    assert_eq!(
        reg.tag_link("base", "1.0"),
        base.descriptor.digest.to_string()
    );
    for (digest, size) in blobs(&base) {
        let stored = std::fs::read(reg.blob_data(&digest.hex())).unwrap();
        assert_eq!(stored.len() as u64, size);
        assert_eq!(layerstack::oci::Digest::of(&stored), digest);
    }
    push(layout, "app", &reg.host, "app:1.0", &options());
    assert_eq!(
        reg.tag_link("app", "1.0"),
        app.descriptor.digest.to_string()
    );

    let pulled = pull_into(&reg.host, "app:1.0", &s.path("pulled"), &options()).unwrap();
    assert_eq!(pulled.digest, app.descriptor.digest);
    assert_eq!(pulled.blobs_transferred, 3);
    assert_eq!(
        pulled.bytes_transferred,
        blobs(&app).iter().map(|b| b.1).sum::<u64>()
    );
    let copy = ImageStore::new(OciLayout::open(s.path("pulled")).unwrap());
    let image = copy.image(Some("1.0")).unwrap();
    assert_eq!(image.descriptor.digest, app.descriptor.digest);
    assert_eq!(image.manifest, app.manifest);
    for (digest, size) in blobs(&app) {
        assert_eq!(
            copy.layout()
                .read_blob(&digest, Some(size), u64::MAX)
                .unwrap(),
            layout.read_blob(&digest, Some(size), u64::MAX).unwrap()
        );
    }
    assert_eq!(
        copy.layout()
            .read_blob(&app.descriptor.digest, None, MAX_DOCUMENT_BYTES)
            .unwrap(),
        layout
            .read_blob(&app.descriptor.digest, None, MAX_DOCUMENT_BYTES)
            .unwrap()
    );
    assert_eq!(
        copy.container(&image).unwrap().read("app/run.sh").unwrap(),
        &b"#!/bin/sh\necho app\n"[..]
    );

    // By digest, into the same layout: nothing to fetch but the manifest.
    let pinned: Reference = format!("{}/app@{}", reg.host, app.descriptor.digest)
        .parse()
        .unwrap();
    let again = registry::pull(
        &pinned,
        &s.path("pulled"),
        Some("pinned"),
        &options(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!((again.blobs_transferred, again.blobs_skipped), (0, 3));
    assert_eq!(
        copy.image(Some("pinned")).unwrap().descriptor.digest,
        app.descriptor.digest
    );
}

#[test]
fn a_shared_base_is_sent_once_and_mounted_into_another_repository() {
    let test = "a_shared_base_is_sent_once_and_mounted_into_another_repository";
    let Some(reg) = TestRegistry::start(test, Auth::Htpasswd) else {
        return;
    };
    let proxy = Proxy::start(&reg.host);
    let s = Scratch::new(test);
    let (store, base, app) = build_images(&s.path("src"));
    let layout = store.layout();
    let big_layer = base.manifest.layers[0].size;
    assert!(big_layer > BIG as u64, "the base layer does not compress");

    let first = push(layout, "base", &proxy.host, "shared:base", &options());
    assert_eq!(
        first.bytes_transferred,
        big_layer + base.manifest.config.size
    );
    assert!(proxy.up.load(Ordering::SeqCst) > big_layer);

    // FROM the same base: the shared layer is skipped, not one byte of it
    // goes over the wire.
    proxy.up.store(0, Ordering::SeqCst);
    let second = push(layout, "app", &proxy.host, "shared:app", &options());
    let app_layer = app.manifest.layers[1].size;
    assert_eq!((second.blobs_skipped, second.bytes_skipped), (1, big_layer));
    assert_eq!(second.blobs_transferred, 2);
    assert_eq!(
        second.bytes_transferred,
        app_layer + app.manifest.config.size
    );
    let up = proxy.up.load(Ordering::SeqCst);
    assert!(
        up < 64 << 10,
        "{up} bytes sent for a push without the base layer"
    );

    // Another repository: everything is mounted, nothing uploaded.
    proxy.up.store(0, Ordering::SeqCst);
    let third = push(layout, "app", &proxy.host, "other/app:1", &options());
    assert_eq!(
        (
            third.blobs_mounted,
            third.blobs_transferred,
            third.blobs_skipped
        ),
        (3, 0, 0)
    );
    assert_eq!(third.requests.patch, 0);
    let up = proxy.up.load(Ordering::SeqCst);
    assert!(up < 32 << 10, "{up} bytes sent for a push that mounts");
    // The two repositories link the same blob, stored once.
    let link = |repo: &str| {
        std::fs::read_to_string(reg.storage().join(format!(
            "docker/registry/v2/repositories/{repo}/_layers/sha256/{}/link",
            base.manifest.layers[0].digest.hex()
        )))
        .unwrap()
    };
    assert_eq!(link("shared"), link("other/app"));

    // An unchanged image again: the ping and one HEAD.
    proxy.up.store(0, Ordering::SeqCst);
    let fourth = push(layout, "app", &proxy.host, "shared:app", &options());
    assert_eq!(fourth.requests.total(), 2, "{:?}", fourth.requests);
    assert_eq!(fourth.requests.head, 1);
    assert_eq!((fourth.manifests, fourth.blobs_transferred), (0, 0));

    // The tool says the same, as JSON.
    let json = run(Command::new(env!("CARGO_BIN_EXE_layerstack")).args([
        "push",
        &format!("{}:app", layout.root()),
        &format!("{}/third:1", proxy.host),
        "--creds",
        &format!("{USER}:{PASSWORD}"),
        "--authfile",
        "/nonexistent",
        "--json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["mounted"]["blobs"], 3);
    assert_eq!(json["transferred"]["bytes"], 0);
    assert_eq!(json["digest"], app.descriptor.digest.to_string());
}

#[test]
fn chunked_uploads_send_every_range_in_order() {
    let test = "chunked_uploads_send_every_range_in_order";
    let Some((reg, _s, store, base, _)) = setup(test) else {
        return;
    };
    let chunk = 256 << 10;
    let chunked = RegistryOptions {
        upload: Upload::Chunked(chunk),
        ..options()
    };
    let summary = push(store.layout(), "base", &reg.host, "chunked:1", &chunked);
    let patches: u64 = blobs(&base)
        .iter()
        .map(|(_, size)| size.div_ceil(chunk))
        .sum();
    assert_eq!(summary.requests.patch, patches);
    assert_eq!(
        reg.tag_link("chunked", "1"),
        base.descriptor.digest.to_string()
    );
    for (digest, _) in blobs(&base) {
        let stored = std::fs::read(reg.blob_data(&digest.hex())).unwrap();
        assert_eq!(layerstack::oci::Digest::of(&stored), digest);
    }
}

#[test]
fn a_download_cut_mid_blob_resumes_with_range_to_the_same_digest() {
    let test = "a_download_cut_mid_blob_resumes_with_range_to_the_same_digest";
    let Some((reg, s, store, base, _)) = setup(test) else {
        return;
    };
    push(store.layout(), "base", &reg.host, "base:1", &options());
    let proxy = Proxy::start(&reg.host);
    proxy.cut_after.store(1 << 20, Ordering::SeqCst);
    let pulled = pull_into(&proxy.host, "base:1", &s.path("pulled"), &options()).unwrap();
    assert_eq!(
        proxy.cut_after.load(Ordering::SeqCst),
        0,
        "the proxy cut nothing"
    );
    assert_eq!(pulled.resumed, 1);
    assert_eq!(pulled.digest, base.descriptor.digest);
    let layout = OciLayout::open(s.path("pulled")).unwrap();
    let layer = &base.manifest.layers[0];
    let bytes = layout
        .read_blob(&layer.digest, Some(layer.size), u64::MAX)
        .unwrap();
    assert_eq!(layerstack::oci::Digest::of(&bytes), layer.digest);
    // The second request asked for the rest only.
    assert!(
        pulled.bytes_transferred < layer.size + base.manifest.config.size + (1 << 20),
        "{pulled:?}"
    );
}

/// Every file in a layout, with its bytes.
fn files(dir: &Utf8Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = camino::Utf8PathBuf::from_path_buf(entry.path()).unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                out.push((
                    path.strip_prefix(dir).unwrap().to_string(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_blob_served_corrupted_is_refused_and_the_layout_is_unchanged() {
    let test = "a_blob_served_corrupted_is_refused_and_the_layout_is_unchanged";
    let Some((reg, s, store, base, _)) = setup(test) else {
        return;
    };
    push(store.layout(), "base", &reg.host, "base:1", &options());
    // The registry serves what its disk holds: flip one byte.
    let layer = &base.manifest.layers[0];
    let data = reg.blob_data(&layer.digest.hex());
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let target = s.path("target");
    OciLayout::create(&target).unwrap();
    let before = files(&target);
    let one_thread = RegistryOptions {
        parallel: 1,
        ..options()
    };
    let err = pull_into(&reg.host, "base:1", &target, &one_thread).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "failed to pull `{}/base@{}`: digest mismatch: the content is {}",
            reg.host,
            layer.digest,
            layerstack::oci::Digest::of(&bytes)
        )
    );
    // The layer is the first blob on one thread (config second): nothing
    // was stored, no temporary file is left, no tag.
    let pulled_first = base.manifest.config.digest;
    let after: Vec<_> = files(&target)
        .into_iter()
        .filter(|(name, _)| !name.ends_with(&pulled_first.hex()))
        .collect();
    assert_eq!(after, before);
    assert!(
        !OciLayout::open(&target)
            .unwrap()
            .has_blob(&layer.digest)
            .unwrap()
    );
}

#[test]
fn wrong_password_and_unknown_repository_are_clear_errors() {
    let test = "wrong_password_and_unknown_repository_are_clear_errors";
    let Some((reg, s, store, _, _)) = setup(test) else {
        return;
    };
    let wrong = RegistryOptions {
        credentials: Some(Credentials::parse(&format!("{USER}:wrong")).unwrap()),
        ..options()
    };
    let err = registry::push(
        store.layout(),
        Some("base"),
        &reference(&reg.host, "base:1"),
        &wrong,
        &NoProgress,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied);
    assert_eq!(
        err.to_string(),
        format!(
            "failed to push `{}/base:1`: the registry answered 401 Unauthorized",
            reg.host
        )
    );
    let none = RegistryOptions {
        credentials: None,
        ..options()
    };
    let err = pull_into(&reg.host, "base:1", &s.path("p"), &none).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "failed to pull `{}/base:1`: the registry answered 401 Unauthorized: UNAUTHORIZED: authentication required (no credentials for {})",
            reg.host, reg.host
        )
    );
    let err = pull_into(&reg.host, "nothing/here:1", &s.path("p"), &options()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        format!(
            "failed to pull `{}/nothing/here:1`: the registry answered 404 Not Found: MANIFEST_UNKNOWN: manifest unknown",
            reg.host
        )
    );
    // Credentials from an auth file, as Docker writes it.
    let auth = s.path("config.json");
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.host,
            base64(&format!("{USER}:{PASSWORD}"))
        ),
    )
    .unwrap();
    let from_file = RegistryOptions {
        credentials: None,
        auth_files: Some(vec![auth]),
        ..options()
    };
    let ok = registry::push(
        store.layout(),
        Some("base"),
        &reference(&reg.host, "base:1"),
        &from_file,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(ok.blobs_transferred, 2);
}

fn base64(s: &str) -> String {
    let out = run(Command::new("sh").args(["-c", &format!("printf %s '{s}' | base64 -w0")]));
    out.trim().to_owned()
}

#[test]
fn server_errors_are_retried_a_bounded_number_of_times() {
    let test = "server_errors_are_retried_a_bounded_number_of_times";
    let Some((reg, s, store, base, _)) = setup(test) else {
        return;
    };
    let proxy = Proxy::start(&reg.host);
    proxy.fail_next.store(2, Ordering::SeqCst);
    let summary = push(store.layout(), "base", &proxy.host, "base:1", &options());
    assert_eq!(summary.digest, base.descriptor.digest);
    assert_eq!(proxy.fail_next.load(Ordering::SeqCst), 0);
    proxy.fail_next.store(100, Ordering::SeqCst);
    let few = RegistryOptions {
        retries: 2,
        ..options()
    };
    let err = pull_into(&proxy.host, "base:1", &s.path("p"), &few).unwrap_err();
    // The ping and its two retries: three connections, all refused.
    assert_eq!(proxy.fail_next.load(Ordering::SeqCst), 97);
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(
        err.to_string(),
        format!(
            "failed to authenticate to `{}`: the registry answered 503 Service Unavailable",
            proxy.host
        )
    );
}

#[test]
fn a_registry_over_tls_with_a_certificate_the_test_makes() {
    let test = "a_registry_over_tls_with_a_certificate_the_test_makes";
    if !super::harness::have_program("openssl", "openssl", test) {
        return;
    }
    let s = Scratch::new(test);
    // A CA, and the registry's certificate signed by it (webpki refuses a
    // CA certificate as the server's own).
    let (ca, cert, key) = (s.path("ca.pem"), s.path("cert.pem"), s.path("key.pem"));
    let ca_key = s.path("ca.key");
    self_signed(&ca_key, &ca, "/CN=layerstack test CA");
    let csr = s.path("leaf.csr");
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        key.as_str(),
        "-out",
        csr.as_str(),
    ]));
    let ext = s.path("leaf.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        csr.as_str(),
        "-CA",
        ca.as_str(),
        "-CAkey",
        ca_key.as_str(),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        ext.as_str(),
        "-out",
        cert.as_str(),
    ]));
    let Some(reg) = TestRegistry::start_with(test, Auth::Htpasswd, Some((cert.clone(), key)))
    else {
        return;
    };
    let (store, base, _) = build_images(&s.path("src"));
    let tls = RegistryOptions {
        tls: registry::Tls::Roots(ca),
        ..options()
    };
    let pushed = push(store.layout(), "base", &reg.host, "tls:1", &tls);
    assert_eq!(pushed.digest, base.descriptor.digest);
    let pulled = pull_into(&reg.host, "tls:1", &s.path("p"), &tls).unwrap();
    assert_eq!(pulled.digest, base.descriptor.digest);
    // Without the certificate the registry is not trusted.
    let other = s.path("other.pem");
    self_signed(&s.path("other.key"), &other, "/CN=other");
    let untrusted = RegistryOptions {
        tls: registry::Tls::Roots(other),
        ..options()
    };
    let err = pull_into(&reg.host, "tls:1", &s.path("q"), &untrusted).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(
        err.to_string()
            .starts_with(&format!("failed to authenticate to `{}`: ", reg.host)),
        "{err}"
    );
}

#[test]
fn tag_lists_name_every_tag() {
    let test = "tag_lists_name_every_tag";
    let Some((reg, _s, store, _, _)) = setup(test) else {
        return;
    };
    for tag in ["1.0", "1.1", "2.0"] {
        push(
            store.layout(),
            "base",
            &reg.host,
            &format!("paged:{tag}"),
            &options(),
        );
    }
    let repo = reference(&reg.host, "paged");
    // docker-registry 2.8 ignores `n` and sends no `Link` (pagination came
    // with distribution 3), nor lexical order: the client takes what comes.
    let sorted = |mut tags: Vec<String>| {
        tags.sort();
        tags
    };
    assert_eq!(
        sorted(registry::list_tags(&repo, &options(), Some(2)).unwrap()),
        ["1.0", "1.1", "2.0"]
    );
    assert_eq!(
        sorted(registry::list_tags(&repo, &options(), None).unwrap()),
        ["1.0", "1.1", "2.0"]
    );
    let err = registry::list_tags(&reference(&reg.host, "nothing"), &options(), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        format!(
            "failed to pull `{}/nothing`: the registry answered 404 Not Found: NAME_UNKNOWN: repository name not known to registry",
            reg.host
        )
    );
}
