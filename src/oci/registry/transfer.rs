//! Push and pull: the walk over an image (index → manifests → config and
//! layers), blobs on a few threads, manifests last.

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use camino::Utf8Path;
use ureq::http::Response;

use super::cache::BlobInfoCache;
use super::client::{self, Method, Registry, header, read_body, status_error};
use super::{BlobOutcome, Progress, Reference, RegistryOptions, TransferSummary, Upload};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::oci::Digest;
use crate::oci::OciLayout;
use crate::oci::{Descriptor, Index, MAX_DOCUMENT_BYTES, Manifest, media_type};

/// Every manifest type we read, best first.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// How deep indexes may nest.
const MAX_DEPTH: usize = 8;

/// The most manifests and indexes one pull fetches: a registry cannot make
/// a pull go on for ever with indexes of indexes.
const MAX_MANIFESTS: u64 = 10_000;

/// Counters shared by the threads of one transfer.
#[derive(Default)]
struct Tally {
    manifests: AtomicU64,
    transferred: (AtomicU64, AtomicU64),
    skipped: (AtomicU64, AtomicU64),
    mounted: (AtomicU64, AtomicU64),
    resumed: AtomicU64,
}

impl Tally {
    fn add(&self, outcome: BlobOutcome, size: u64) {
        let (blobs, bytes) = match outcome {
            BlobOutcome::Transferred => &self.transferred,
            BlobOutcome::Skipped => &self.skipped,
            BlobOutcome::Mounted => &self.mounted,
        };
        blobs.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(size, Ordering::Relaxed);
    }

    fn summary(&self, digest: Digest, registry: &Registry) -> TransferSummary {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransferSummary {
            digest,
            manifests: n(&self.manifests),
            blobs_transferred: n(&self.transferred.0),
            bytes_transferred: n(&self.transferred.1),
            blobs_skipped: n(&self.skipped.0),
            bytes_skipped: n(&self.skipped.1),
            blobs_mounted: n(&self.mounted.0),
            bytes_mounted: n(&self.mounted.1),
            resumed: n(&self.resumed),
            requests: registry.request_counts(),
        }
    }
}

struct Session<'a> {
    registry: &'a Registry,
    reference: &'a Reference,
    layout: &'a OciLayout,
    options: &'a RegistryOptions,
    progress: &'a dyn Progress,
    cache: BlobInfoCache,
    tally: Tally,
}

impl Session<'_> {
    fn repo(&self) -> &str {
        &self.reference.repository
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.registry.base(), self.repo())
    }

    fn scope(&self, push: bool) -> String {
        let actions = if push { "pull,push" } else { "pull" };
        format!("repository:{}:{actions}", self.repo())
    }

    /// A request of a push: its operation and scope.
    fn push_request(
        &self,
        method: Method,
        what: &str,
        retry: bool,
        call: impl FnMut(Option<&str>) -> std::result::Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>> {
        self.registry.send(
            method,
            Operation::Push,
            what,
            &self.scope(true),
            retry,
            call,
        )
    }

    fn what(&self, digest: &Digest) -> String {
        format!("{}/{}@{digest}", self.registry.host(), self.repo())
    }
}

/// Pushes the image `tag` of `layout` (`None`: `latest` or the only one) to
/// `target` (its tag, or the digest alone when it has none), blobs first,
/// each only if the registry lacks it.
///
/// # Errors
/// Errors reading the layout; the registry's refusals (with its error
/// JSON), failed authentication, a transport failure that outlasted the
/// retries.
pub fn push(
    layout: &OciLayout,
    tag: Option<&str>,
    target: &Reference,
    options: &RegistryOptions,
    progress: &dyn Progress,
) -> Result<TransferSummary> {
    let (registry, options) = connect(target, options)?;
    push_with(&registry, layout, tag, target, &options, progress)
}

/// The registry of `reference`, with the credentials for its repository.
fn connect(
    reference: &Reference,
    options: &RegistryOptions,
) -> Result<(Registry, RegistryOptions)> {
    let mut options = options.clone();
    options
        .repository_hint
        .get_or_insert_with(|| reference.repository.clone());
    Ok((Registry::new(&reference.registry, &options)?, options))
}

/// [`push`] through a [`Registry`] already set up.
///
/// # Errors
/// Those of [`push`].
pub fn push_with(
    registry: &Registry,
    layout: &OciLayout,
    tag: Option<&str>,
    target: &Reference,
    options: &RegistryOptions,
    progress: &dyn Progress,
) -> Result<TransferSummary> {
    let top = layout.resolve(tag)?;
    let session = Session {
        registry,
        reference: target,
        layout,
        options,
        progress,
        cache: BlobInfoCache::open(Some(layout)),
        tally: Tally::default(),
    };
    let reference = target.tag.clone().unwrap_or_else(|| top.digest.to_string());
    let pushed = push_node(&session, &top, &reference, 0);
    session.cache.save();
    pushed?;
    Ok(session.tally.summary(top.digest, registry))
}

fn push_node(s: &Session<'_>, desc: &Descriptor, reference: &str, depth: usize) -> Result<()> {
    let what = format!("{}/{}:{reference}", s.registry.host(), s.repo());
    if depth > MAX_DEPTH {
        return Err(Error::new(ErrorKind::LimitExceeded, Operation::Push, &what)
            .with_detail("indexes nest too deep"));
    }
    // An unchanged image costs one HEAD: the registry has the manifest
    // under this reference, so it has everything the manifest names.
    if head_manifest(s, reference, &what)?.as_ref() == Some(&desc.digest) {
        return Ok(());
    }
    let bytes = s
        .layout
        .read_blob(&desc.digest, Some(desc.size), MAX_DOCUMENT_BYTES)?;
    let declared = declared_media_type(&bytes);
    let media = if desc.media_type.is_empty() {
        declared.unwrap_or_else(|| media_type::OCI_MANIFEST.to_owned())
    } else {
        desc.media_type.clone()
    };
    if media_type::is_index(&media) {
        let index = Index::from_json(&bytes)?;
        for child in &index.manifests {
            push_node(s, child, &child.digest.to_string(), depth + 1)?;
        }
    } else {
        let manifest = Manifest::from_json(&bytes)?;
        let mut blobs = vec![manifest.config.clone()];
        blobs.extend(manifest.layers.iter().cloned());
        for_each_blob(s, blobs, push_blob)?;
    }
    put_manifest(s, reference, &media, &bytes, &desc.digest, &what)
}

/// The `mediaType` a document declares.
fn declared_media_type(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()?
        .get("mediaType")?
        .as_str()
        .map(str::to_owned)
}

/// `HEAD` of a manifest: its digest when the registry has it.
fn head_manifest(s: &Session<'_>, reference: &str, what: &str) -> Result<Option<Digest>> {
    let url = s.url(&format!("manifests/{reference}"));
    let mut response = s.push_request(Method::Head, what, true, |auth| {
        s.registry
            .authorized(s.registry.agent().head(&url).header("Accept", ACCEPT), auth)
            .call()
    })?;
    match response.status().as_u16() {
        200 => Ok(header(&response, "docker-content-digest").and_then(|d| Digest::parse(d).ok())),
        404 => Ok(None),
        _ => Err(status_error(Operation::Push, what, &mut response)),
    }
}

fn put_manifest(
    s: &Session<'_>,
    reference: &str,
    media: &str,
    bytes: &[u8],
    digest: &Digest,
    what: &str,
) -> Result<()> {
    let url = s.url(&format!("manifests/{reference}"));
    let mut response = s.push_request(Method::Put, what, true, |auth| {
        s.registry
            .authorized(
                s.registry.agent().put(&url).header("Content-Type", media),
                auth,
            )
            .send(bytes)
    })?;
    if response.status() != 201 {
        return Err(status_error(Operation::Push, what, &mut response));
    }
    check_digest_header(&response, digest, Operation::Push, what)?;
    s.tally.manifests.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn check_digest_header(
    response: &Response<ureq::Body>,
    digest: &Digest,
    op: Operation,
    what: &str,
) -> Result<()> {
    match header(response, "docker-content-digest") {
        Some(d) if Digest::parse(d).ok().as_ref() != Some(digest) => {
            Err(
                Error::new(ErrorKind::InvalidData, op, what).with_detail(format!(
                    "the registry names it {}, not {digest}",
                    client::escape(d)
                )),
            )
        }
        _ => Ok(()),
    }
}

/// Runs `each` on every distinct blob, on up to `options.parallel`
/// threads; the first error stops the others from starting new blobs.
fn for_each_blob(
    s: &Session<'_>,
    blobs: Vec<Descriptor>,
    each: fn(&Session<'_>, &Descriptor) -> Result<BlobOutcome>,
) -> Result<()> {
    let mut seen = HashSet::new();
    let blobs: Vec<Descriptor> = blobs
        .into_iter()
        .filter(|d| seen.insert(d.digest))
        .collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    let workers = s.options.parallel.clamp(1, 16).min(blobs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(desc) = blobs.get(i) else { break };
                    s.progress.started(&desc.digest, desc.size);
                    match each(s, desc) {
                        Ok(outcome) => {
                            s.tally.add(outcome, desc.size);
                            s.progress.finished(&desc.digest, outcome);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

// ---- push: one blob ---------------------------------------------------

fn push_blob(s: &Session<'_>, desc: &Descriptor) -> Result<BlobOutcome> {
    let what = s.what(&desc.digest);
    if head_blob(s, &desc.digest, &what)? == Some(desc.size) {
        s.cache.record(s.registry.host(), s.repo(), &desc.digest);
        return Ok(BlobOutcome::Skipped);
    }
    // A mount only of a blob the layout holds: a layout that names a blob
    // it lacks must not copy another repository's blob into this one.
    let held = s.layout.has_blob(&desc.digest)? && s.layout.blob_size(&desc.digest)? == desc.size;
    let sources = if held {
        s.cache
            .repositories(s.registry.host(), &desc.digest, s.repo())
    } else {
        Vec::new()
    };
    for from in sources {
        if mount_blob(s, &desc.digest, &from, &what)? {
            s.cache.record(s.registry.host(), s.repo(), &desc.digest);
            return Ok(BlobOutcome::Mounted);
        }
    }
    let mut attempt = 0;
    loop {
        match upload_blob(s, desc, &what) {
            Ok(()) => break,
            // A lost connection or a 5xx mid-upload: start over.
            Err(e) if e.kind() == ErrorKind::Io && attempt < s.options.retries => {
                attempt += 1;
                std::thread::sleep(s.options.retry_delay * attempt);
            }
            Err(e) => return Err(e),
        }
    }
    s.cache.record(s.registry.host(), s.repo(), &desc.digest);
    Ok(BlobOutcome::Transferred)
}

/// `HEAD` of a blob: its size when the registry has it.
fn head_blob(s: &Session<'_>, digest: &Digest, what: &str) -> Result<Option<u64>> {
    let url = s.url(&format!("blobs/{digest}"));
    let mut response = s.push_request(Method::Head, what, true, |auth| {
        s.registry
            .authorized(s.registry.agent().head(&url), auth)
            .call()
    })?;
    match response.status().as_u16() {
        200 => Ok(Some(
            header(&response, "content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(u64::MAX),
        )),
        404 => Ok(None),
        // Redirects to storage mean it exists.
        307 | 302 | 303 => Ok(None),
        _ => Err(status_error(Operation::Push, what, &mut response)),
    }
}

/// `POST ?mount=&from=`: true when mounted; when the registry opens an
/// upload session instead, that session is deleted.
fn mount_blob(s: &Session<'_>, digest: &Digest, from: &str, what: &str) -> Result<bool> {
    let url = format!(
        "{}?mount={}&from={}",
        s.url("blobs/uploads/"),
        client::percent_encode(&digest.to_string()),
        client::percent_encode(from)
    );
    let scope = format!("{} repository:{from}:pull", s.scope(true));
    let mut response =
        s.registry
            .send(Method::Post, Operation::Push, what, &scope, true, |auth| {
                s.registry
                    .authorized(s.registry.agent().post(&url), auth)
                    .send_empty()
            })?;
    match response.status().as_u16() {
        201 => Ok(true),
        202 => {
            if let Some(location) = header(&response, "location") {
                let location = s.registry.resolve_location(location, Operation::Push)?;
                cancel_upload(s, &location, what);
            }
            Ok(false)
        }
        _ => Err(status_error(Operation::Push, what, &mut response)),
    }
}

/// `DELETE` of an upload session, best effort: the registry expires
/// abandoned sessions anyway.
fn cancel_upload(s: &Session<'_>, location: &str, what: &str) {
    let _ = s.push_request(Method::Delete, what, false, |auth| {
        s.registry
            .authorized(s.registry.agent().delete(location), auth)
            .call()
    });
}

/// The `Location` of a reply, resolved and checked.
fn location_of(s: &Session<'_>, response: &Response<ureq::Body>, what: &str) -> Result<String> {
    let location = header(response, "location").ok_or_else(|| {
        Error::new(ErrorKind::InvalidData, Operation::Push, what)
            .with_detail("the registry's reply has no Location")
    })?;
    s.registry.resolve_location(location, Operation::Push)
}

fn upload_blob(s: &Session<'_>, desc: &Descriptor, what: &str) -> Result<()> {
    let url = s.url("blobs/uploads/");
    let mut response = s.push_request(Method::Post, what, true, |auth| {
        s.registry
            .authorized(s.registry.agent().post(&url), auth)
            .send_empty()
    })?;
    if response.status() != 202 {
        return Err(status_error(Operation::Push, what, &mut response));
    }
    let mut location = location_of(s, &response, what)?;
    let sent = send_chunks(s, desc, &mut location, what);
    let finished = sent.and_then(|()| finish_upload(s, desc, &location, what));
    if finished.is_err() {
        cancel_upload(s, &location, what);
    }
    finished
}

/// The blob's bytes, read from the layout (checked against the digest
/// as they pass) and counted for the progress bar.
struct Sending<'a> {
    reader: crate::oci::BlobReader,
    progress: &'a dyn Progress,
    digest: Digest,
}

impl Read for Sending<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read(buf)?;
        self.progress.advanced(&self.digest, n as u64);
        Ok(n)
    }
}

fn send_chunks(
    s: &Session<'_>,
    desc: &Descriptor,
    location: &mut String,
    what: &str,
) -> Result<()> {
    if desc.size == 0 {
        return Ok(());
    }
    let mut source = Sending {
        reader: s.layout.open_blob(&desc.digest, Some(desc.size))?,
        progress: s.progress,
        digest: desc.digest,
    };
    let chunk = match s.options.upload {
        Upload::Streamed => desc.size,
        Upload::Chunked(n) => n.max(1),
    };
    let mut offset = 0u64;
    let mut buffer = Vec::new();
    while offset < desc.size {
        let len = chunk.min(desc.size - offset);
        let end = offset + len - 1;
        let url = location.clone();
        let mut response = if matches!(s.options.upload, Upload::Streamed) {
            // One request, the body streamed from the file.
            let mut reader = (&mut source).take(len);
            s.push_request(Method::Patch, what, false, |auth| {
                s.registry
                    .authorized(
                        s.registry
                            .agent()
                            .patch(&url)
                            .header("Content-Type", "application/octet-stream")
                            .header("Content-Length", len.to_string()),
                        auth,
                    )
                    .send(ureq::SendBody::from_reader(&mut reader))
            })?
        } else {
            buffer.clear();
            (&mut source)
                .take(len)
                .read_to_end(&mut buffer)
                .map_err(|e| Error::from_io(&e, Operation::Push, what))?;
            if buffer.len() as u64 != len {
                return Err(Error::new(ErrorKind::InvalidData, Operation::Push, what)
                    .with_detail("the stored blob is shorter than its descriptor says"));
            }
            s.push_request(Method::Patch, what, true, |auth| {
                s.registry
                    .authorized(
                        s.registry
                            .agent()
                            .patch(&url)
                            .header("Content-Type", "application/octet-stream")
                            .header("Content-Range", format!("{offset}-{end}")),
                        auth,
                    )
                    .send(&buffer[..])
            })?
        };
        if response.status() != 202 {
            return Err(status_error(Operation::Push, what, &mut response));
        }
        // The registry must say it holds exactly what was sent so far: the
        // reference registry does not reject chunks out of order itself.
        let range = header(&response, "range").unwrap_or("");
        if range != format!("0-{end}") {
            return Err(
                Error::new(ErrorKind::InvalidData, Operation::Push, what).with_detail(format!(
                    "after sending bytes 0-{end} the registry holds `{}`",
                    client::escape(range)
                )),
            );
        }
        *location = location_of(s, &response, what)?;
        offset += len;
    }
    // Drain the reader so it checks the digest of the stored blob.
    let mut rest = [0u8; 1];
    source
        .read(&mut rest)
        .map_err(|e| Error::from_io(&e, Operation::Push, what))?;
    Ok(())
}

fn finish_upload(s: &Session<'_>, desc: &Descriptor, location: &str, what: &str) -> Result<()> {
    let sep = if location.contains('?') { '&' } else { '?' };
    let url = format!(
        "{location}{sep}digest={}",
        client::percent_encode(&desc.digest.to_string())
    );
    let mut response = s.push_request(Method::Put, what, false, |auth| {
        s.registry
            .authorized(
                s.registry
                    .agent()
                    .put(&url)
                    .header("Content-Type", "application/octet-stream"),
                auth,
            )
            .send_empty()
    })?;
    if response.status() != 201 {
        return Err(status_error(Operation::Push, what, &mut response));
    }
    check_digest_header(&response, &desc.digest, Operation::Push, what)
}

// ---- tags ---------------------------------------------------------------

/// The most pages of a tag list followed.
const MAX_TAG_PAGES: usize = 10_000;

/// The most tags a list may hold in all its pages.
const MAX_TAGS: usize = 100_000;

/// The tags of `repository`'s repository, in the registry's order, asked
/// `page` at a time (`None`: as many as the registry gives at once),
/// following each page's `Link: <...>; rel="next"`.
///
/// # Errors
/// The registry's refusals (`ENOENT` for an unknown repository), an answer
/// that is not a tag list, a `Link` to another host on a private address.
pub fn list_tags(
    repository: &Reference,
    options: &RegistryOptions,
    page: Option<usize>,
) -> Result<Vec<String>> {
    let (registry, _) = connect(repository, options)?;
    let what = format!("{}/{}", registry.host(), repository.repository);
    let scope = format!("repository:{}:pull", repository.repository);
    let mut url = format!("{}/v2/{}/tags/list", registry.base(), repository.repository);
    if let Some(n) = page {
        url.push_str(&format!("?n={n}"));
    }
    let mut tags = Vec::new();
    for _ in 0..MAX_TAG_PAGES {
        let target = url.clone();
        let mut response =
            registry.send(Method::Get, Operation::Pull, &what, &scope, true, |auth| {
                registry
                    .authorized(registry.agent().get(&target), auth)
                    .call()
            })?;
        if response.status() != 200 {
            return Err(status_error(Operation::Pull, &what, &mut response));
        }
        let next = header(&response, "link")
            .and_then(next_link)
            .map(str::to_owned);
        let body = read_body(&mut response, Operation::Pull, &what)?;
        let list: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            Error::new(ErrorKind::InvalidData, Operation::Pull, &what)
                .with_detail("the tag list is not JSON")
        })?;
        match list.get("tags") {
            Some(serde_json::Value::Array(page)) => {
                tags.extend(page.iter().filter_map(|t| t.as_str()).map(str::to_owned));
                if tags.len() > MAX_TAGS {
                    return Err(Error::new(ErrorKind::LimitExceeded, Operation::Pull, &what)
                        .with_detail(format!("more than {MAX_TAGS} tags")));
                }
            }
            Some(serde_json::Value::Null) | None => {}
            Some(_) => {
                return Err(Error::new(ErrorKind::InvalidData, Operation::Pull, &what)
                    .with_detail("`tags` is not a list"));
            }
        }
        match next {
            Some(link) => url = registry.resolve_location(&link, Operation::Pull)?,
            None => return Ok(tags),
        }
    }
    Err(Error::new(ErrorKind::LimitExceeded, Operation::Pull, &what)
        .with_detail(format!("more than {MAX_TAG_PAGES} pages of tags")))
}

/// The target of `<url>; rel="next"` in a `Link` header.
fn next_link(link: &str) -> Option<&str> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let rel_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next");
        rel_next.then(|| target.trim().trim_start_matches('<').trim_end_matches('>'))
    })
}

// ---- pull ---------------------------------------------------------------

/// Pulls `source` into the layout in `dir` (created if needed) and tags it
/// `tag` (`None`: the source's tag, or `latest`). Blobs the layout has are
/// not fetched; each blob is verified as it streams in, manifests are
/// stored after what they name, the tag last.
///
/// # Errors
/// The registry's refusals, failed authentication, a blob or manifest
/// whose bytes do not match its digest (nothing of it is stored), errors
/// writing the layout.
pub fn pull(
    source: &Reference,
    dir: &Utf8Path,
    tag: Option<&str>,
    options: &RegistryOptions,
    progress: &dyn Progress,
) -> Result<TransferSummary> {
    let (registry, options) = connect(source, options)?;
    let layout = OciLayout::create(dir)?;
    let tag = tag
        .map(str::to_owned)
        .or_else(|| source.tag.clone())
        .unwrap_or_else(|| "latest".to_owned());
    crate::oci::check_tag(&tag)?;
    let session = Session {
        registry: &registry,
        reference: source,
        layout: &layout,
        options: &options,
        progress,
        cache: BlobInfoCache::open(Some(&layout)),
        tally: Tally::default(),
    };
    // A failed pull leaves the layout as it was: the cache too.
    let top = pull_node(&session, &source.reference(), source.digest, 0)?;
    session.cache.save();
    let digest = top.digest;
    layout.set_tag(&tag, top)?;
    Ok(session.tally.summary(digest, &registry))
}

/// Fetches the manifest or index `reference` and all it names; returns
/// its descriptor once it is stored.
fn pull_node(
    s: &Session<'_>,
    reference: &str,
    expected: Option<Digest>,
    depth: usize,
) -> Result<Descriptor> {
    let what = format!("{}/{}:{reference}", s.registry.host(), s.repo());
    if depth > MAX_DEPTH {
        return Err(Error::new(ErrorKind::LimitExceeded, Operation::Pull, &what)
            .with_detail("indexes nest too deep"));
    }
    if s.tally.manifests.load(Ordering::Relaxed) >= MAX_MANIFESTS {
        return Err(Error::new(ErrorKind::LimitExceeded, Operation::Pull, &what)
            .with_detail(format!("more than {MAX_MANIFESTS} manifests and indexes")));
    }
    let url = s.url(&format!("manifests/{reference}"));
    let mut response = s.registry.send(
        Method::Get,
        Operation::Pull,
        &what,
        &s.scope(false),
        true,
        |auth| {
            s.registry
                .authorized(s.registry.agent().get(&url).header("Accept", ACCEPT), auth)
                .call()
        },
    )?;
    if response.status() != 200 {
        return Err(status_error(Operation::Pull, &what, &mut response));
    }
    let content_type = header(&response, "content-type")
        .map(|t| t.split(';').next().unwrap_or("").trim().to_owned());
    let bytes = read_body(&mut response, Operation::Pull, &what)?;
    let digest = Digest::of(&bytes);
    if let Some(want) = expected
        && want != digest
    {
        return Err(Error::new(ErrorKind::InvalidData, Operation::Pull, &what)
            .with_detail(format!("digest mismatch: the content is {digest}")));
    }
    check_digest_header(&response, &digest, Operation::Pull, &what)?;
    let media = declared_media_type(&bytes)
        .or(content_type)
        .unwrap_or_else(|| media_type::OCI_MANIFEST.to_owned());
    if media_type::is_index(&media) {
        let index = Index::from_json(&bytes)?;
        for child in &index.manifests {
            // A manifest is stored after everything it names, so one the
            // layout has (pulled before, or named twice) is complete.
            if !s.layout.has_blob(&child.digest)? {
                pull_node(s, &child.digest.to_string(), Some(child.digest), depth + 1)?;
            }
        }
    } else if media_type::is_manifest(&media) {
        let manifest = Manifest::from_json(&bytes)?;
        let mut blobs = vec![manifest.config.clone()];
        blobs.extend(manifest.layers.iter().cloned());
        for_each_blob(s, blobs, pull_blob)?;
    } else {
        return Err(
            Error::new(ErrorKind::Unsupported, Operation::Pull, &what).with_detail(format!(
                "not a manifest or an index: `{}`",
                client::escape(&media)
            )),
        );
    }
    s.layout
        .put_blob_verified(&bytes[..], &digest, bytes.len() as u64)?;
    s.tally.manifests.fetch_add(1, Ordering::Relaxed);
    Ok(Descriptor::new(media, digest, bytes.len() as u64))
}

fn pull_blob(s: &Session<'_>, desc: &Descriptor) -> Result<BlobOutcome> {
    let what = s.what(&desc.digest);
    if s.layout.has_blob(&desc.digest)? && s.layout.blob_size(&desc.digest)? == desc.size {
        s.cache.record(s.registry.host(), s.repo(), &desc.digest);
        return Ok(BlobOutcome::Skipped);
    }
    let mut body = Download {
        s,
        url: s.url(&format!("blobs/{}", desc.digest)),
        what: what.clone(),
        digest: desc.digest,
        reader: None,
        offset: 0,
        size: desc.size,
        resumes: 0,
        error: None,
    };
    let stored = s
        .layout
        .put_blob_verified(&mut body, &desc.digest, desc.size);
    if let Some(e) = body.error.take() {
        // The registry's own error says more than "failed to read".
        return Err(e);
    }
    stored.map_err(|e| e.reframe(Operation::Pull, &what))?;
    s.cache.record(s.registry.host(), s.repo(), &desc.digest);
    Ok(BlobOutcome::Transferred)
}

/// A blob's body that resumes with `Range` when the connection is lost.
struct Download<'a, 'b> {
    s: &'a Session<'b>,
    url: String,
    what: String,
    digest: Digest,
    reader: Option<ureq::BodyReader<'static>>,
    offset: u64,
    size: u64,
    resumes: u32,
    /// The error that ended the download, kept whole for the caller.
    error: Option<Error>,
}

impl Download<'_, '_> {
    /// `GET` from `offset` on (following one redirect, without
    /// credentials to another host).
    fn open(&mut self) -> Result<ureq::BodyReader<'static>> {
        let s = self.s;
        let range = (self.offset > 0).then(|| format!("bytes={}-", self.offset));
        let mut url = self.url.clone();
        for hop in 0..2 {
            let own = hop == 0;
            let target = url.clone();
            let mut response = s.registry.send(
                Method::Get,
                Operation::Pull,
                &self.what,
                &s.scope(false),
                true,
                |auth| {
                    let mut r = s.registry.authorized(s.registry.agent().get(&target), auth);
                    if let Some(range) = &range {
                        r = r.header("Range", range);
                    }
                    r.call()
                },
            )?;
            match response.status().as_u16() {
                301 | 302 | 303 | 307 | 308 if own => {
                    url = location_of_pull(s, &response, &self.what)?;
                }
                200 if self.offset == 0 => return Ok(response.into_body().into_reader()),
                206 if self.offset > 0 => {
                    let start = header(&response, "content-range")
                        .and_then(|r| r.strip_prefix("bytes "))
                        .and_then(|r| r.split('-').next())
                        .and_then(|n| n.parse::<u64>().ok());
                    if start != Some(self.offset) {
                        return Err(Error::new(
                            ErrorKind::InvalidData,
                            Operation::Pull,
                            &self.what,
                        )
                        .with_detail(format!(
                            "asked for bytes from {} on, the registry sent another range",
                            self.offset
                        )));
                    }
                    return Ok(response.into_body().into_reader());
                }
                200 => {
                    return Err(Error::new(ErrorKind::Io, Operation::Pull, &self.what).with_detail(
                        format!("the connection was lost at byte {} and the registry cannot resume (no Range support)", self.offset),
                    ));
                }
                _ => return Err(status_error(Operation::Pull, &self.what, &mut response)),
            }
        }
        Err(Error::new(ErrorKind::Io, Operation::Pull, &self.what)
            .with_detail("redirected more than once"))
    }
}

fn location_of_pull(
    s: &Session<'_>,
    response: &Response<ureq::Body>,
    what: &str,
) -> Result<String> {
    let location = header(response, "location").ok_or_else(|| {
        Error::new(ErrorKind::InvalidData, Operation::Pull, what)
            .with_detail("the registry's redirect has no Location")
    })?;
    s.registry.resolve_location(location, Operation::Pull)
}

impl Read for Download<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.reader.is_none() {
                match self.open() {
                    Ok(r) => self.reader = Some(r),
                    Err(e) => {
                        let io = io::Error::other(e.to_string());
                        self.error = Some(e);
                        return Err(io);
                    }
                }
            }
            let reader = self.reader.as_mut().expect("opened above");
            match reader.read(buf) {
                Ok(0) if self.offset < self.size => {}
                Ok(n) => {
                    self.offset += n as u64;
                    self.s.progress.advanced(&self.digest, n as u64);
                    return Ok(n);
                }
                Err(_) if self.resumes < self.s.options.retries.max(1) => {}
                Err(e) => return Err(e),
            }
            // Cut short: ask for the rest.
            if self.offset >= self.size || self.resumes >= self.s.options.retries.max(1) {
                return Ok(0);
            }
            self.resumes += 1;
            self.s.tally.resumed.fetch_add(1, Ordering::Relaxed);
            self.reader = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn the_next_page_is_found_in_a_link_header() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"</x>; rel="prev", </y?n=1>; rel="next""#),
            Some("/y?n=1")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }
}
