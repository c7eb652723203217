//! A blocking client of image registries (feature `registry`): push an
//! image of a layout to a registry, pull one into a layout, each blob sent
//! once.
//!
//! The contract is the OCI distribution spec v1.1, as Debian's
//! `docker-registry` (the reference registry, distribution 2.8) speaks it:
//!
//! - `GET /v2/` first: a 401 names the authentication scheme. Basic sends
//!   the credentials with every request; Bearer gets a token per scope from
//!   the token server the challenge names (cached, refreshed before it
//!   expires, fetched again when the registry answers 401 naming a scope).
//!   Credentials are given ([`RegistryOptions::credentials`]) or read from
//!   `auth.json` / `~/.docker/config.json` ([`Credentials::default_auth_files`]).
//! - Manifests and indexes: `GET`/`HEAD`/`PUT /v2/<name>/manifests/<ref>`
//!   with the full `Accept` list (OCI and Docker v2 media types). The bytes
//!   are stored and sent as they are, so digests never change.
//! - Blobs: `HEAD` first (what the registry has is skipped); a blob known in
//!   another repository of the same registry (the blob-info cache, see
//!   below) is mounted (`POST ?mount=&from=`; when refused, the session the
//!   registry opened instead is deleted and the blob uploaded); an upload
//!   is `POST` → `PATCH` (one streamed request, or chunks with
//!   `Content-Range`) → `PUT ?digest=`, following each reply's `Location`
//!   and checking its `Range`. A failed upload's session is deleted.
//! - Downloads stream into the layout through a temporary file hashed as
//!   it is written ([`OciLayout::put_blob_verified`](crate::oci::OciLayout::put_blob_verified)): a blob appears under
//!   its digest only when its bytes hash to it, so nothing unverified is
//!   ever visible in the store. A connection lost mid-blob is resumed with
//!   `Range: bytes=<n>-`; manifests are stored after everything they name.
//! - Errors: the registry's error JSON becomes the error's cause; 5xx
//!   answers and lost connections are retried a bounded number of times;
//!   blobs move on a bounded number of threads.
//! - Tag lists ([`list_tags`]) follow the `Link` header page by page.
//!
//! # Security
//!
//! Plain HTTP is used only for loopback registries (unless [`Tls::Roots`]
//! is given) and with [`Tls::Insecure`]; HTTPS goes through rustls
//! (feature `registry-tls`). A `Location` (upload session, redirect) or a
//! token realm that points to another host on a private, loopback or
//! link-local address is refused, unless it is the registry's own host (on
//! any port). Credentials go to the registry and, for a token, to the
//! realm only over HTTPS or when it is the registry's host; redirects are
//! followed without them. Text from the registry is shortened and
//! stripped of control characters before it is put into an error.
//!
//! # The blob-info cache
//!
//! Which repositories of which registry hold a blob is remembered beside
//! the layout, in `.layerstack/registry-blobs.json` (a hint, like
//! containers/image's blob-info cache): a later push of that blob to
//! another repository of the same registry mounts it instead of uploading.
//!
//! # Limitations
//!
//! - Credential helpers (`credsStore`, `credHelpers`) are not run.
//! - Only sha256 digests; the referrers API, blob deletion and manifest
//!   deletion are not used.
//! - An index is copied with all its manifests (no platform choice).

mod auth;
mod cache;
mod client;
pub mod storage;
mod transfer;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use camino::Utf8PathBuf;

pub use auth::{Challenge, Credentials};
pub use client::{Registry, is_loopback_host};
pub use storage::RegistryStorage;
pub use transfer::{list_tags, pull, push, push_with};

use super::Digest;
use crate::error::{Error, ErrorKind, Operation, Result};

/// How to reach a registry: by default HTTPS, and plain HTTP for one on a
/// loopback address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Tls {
    /// HTTPS, checked against the web's root certificates.
    #[default]
    Verify,
    /// HTTPS (a loopback registry too), checked against the certificates
    /// of this PEM file only.
    Roots(Utf8PathBuf),
    /// Plain HTTP (`--insecure`).
    Insecure,
}

/// How blobs are uploaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Upload {
    /// One `PATCH` with the whole blob.
    #[default]
    Streamed,
    /// `PATCH`es of at most this many bytes, each with its `Content-Range`.
    Chunked(u64),
}

/// How to talk to a registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// HTTPS and its roots, or plain HTTP.
    pub tls: Tls,
    /// The credentials; `None`: look in [`auth_files`](Self::auth_files).
    pub credentials: Option<Credentials>,
    /// The auth files to look in; `None`: [`Credentials::default_auth_files`].
    pub auth_files: Option<Vec<Utf8PathBuf>>,
    /// The repository the credentials are for (auth files may hold
    /// per-repository entries).
    pub repository_hint: Option<String>,
    /// How often a request that failed with a 5xx answer or a lost
    /// connection is sent again.
    pub retries: u32,
    /// The pause before the first retry; the n-th waits n times as long.
    pub retry_delay: Duration,
    /// How many blobs move at once.
    pub parallel: usize,
    /// Streamed or chunked uploads.
    pub upload: Upload,
}

impl Default for RegistryOptions {
    fn default() -> RegistryOptions {
        RegistryOptions {
            tls: Tls::Verify,
            credentials: None,
            auth_files: None,
            repository_hint: None,
            retries: 3,
            retry_delay: Duration::from_millis(200),
            parallel: 3,
            upload: Upload::Streamed,
        }
    }
}

/// The requests a transfer made, by method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// `HEAD` requests.
    pub head: u64,
    /// `GET` requests (the ping and token requests too).
    pub get: u64,
    /// `PUT` requests.
    pub put: u64,
    /// `POST` requests.
    pub post: u64,
    /// `PATCH` requests.
    pub patch: u64,
    /// `DELETE` requests.
    pub delete: u64,
}

impl RequestCounts {
    /// All requests.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.head + self.get + self.put + self.post + self.patch + self.delete
    }
}

/// What a push or a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSummary {
    /// The digest of the image's manifest (or index).
    pub digest: Digest,
    /// Manifests and indexes sent or stored.
    pub manifests: u64,
    /// Blobs whose bytes were sent (push) or received (pull).
    pub blobs_transferred: u64,
    /// The bytes of those blobs.
    pub bytes_transferred: u64,
    /// Blobs the other side had already: not sent.
    pub blobs_skipped: u64,
    /// The bytes of those blobs.
    pub bytes_skipped: u64,
    /// Blobs mounted from another repository of the registry: not sent.
    pub blobs_mounted: u64,
    /// The bytes of those blobs.
    pub bytes_mounted: u64,
    /// Downloads resumed with `Range` after a lost connection.
    pub resumed: u64,
    /// The requests made.
    pub requests: RequestCounts,
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Its bytes were sent or received.
    Transferred,
    /// The other side had it.
    Skipped,
    /// Mounted from another repository.
    Mounted,
}

/// Told how blobs move (the tool draws progress bars); every method does
/// nothing by default. Called from several threads.
pub trait Progress: Sync {
    /// A blob of `size` bytes starts to move.
    fn started(&self, _digest: &Digest, _size: u64) {}
    /// `bytes` more bytes of it moved.
    fn advanced(&self, _digest: &Digest, _bytes: u64) {}
    /// It is done.
    fn finished(&self, _digest: &Digest, _outcome: BlobOutcome) {}
}

/// A [`Progress`] that is told nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// An image in a registry: `HOST[:PORT]/NAME[:TAG][@sha256:HEX]`
/// (a leading `docker://` is allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry: `HOST[:PORT]`.
    pub registry: String,
    /// The repository: `NAME` (lower-case components separated by `/`).
    pub repository: String,
    /// The tag, if one was given.
    pub tag: Option<String>,
    /// The manifest digest, if one was given.
    pub digest: Option<Digest>,
}

impl Reference {
    /// What goes into a manifest URL: the digest, else the tag, else
    /// `latest`.
    #[must_use]
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// Whether `s` names a registry image rather than a layout directory:
    /// `docker://…`, or a first component that is a host (it holds a `.`
    /// or a `:port`, or is `localhost`) followed by a repository.
    #[must_use]
    pub fn looks_like(s: &str) -> bool {
        if s.starts_with("docker://") {
            return true;
        }
        let Some((first, rest)) = s.split_once('/') else {
            return false;
        };
        if rest.is_empty() || first == "." || first == ".." || first.is_empty() {
            return false;
        }
        let (name, port) = match first.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (first, None),
        };
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        port_ok && name_ok && (name.contains('.') || port.is_some() || name == "localhost")
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Reference> {
        let bad = |detail: &str| {
            Error::new(
                ErrorKind::InvalidInput,
                Operation::OpenImage,
                client::escape(s),
            )
            .with_detail(detail.to_owned())
        };
        let text = s.strip_prefix("docker://").unwrap_or(s);
        let (rest, digest) = match text.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(
                    Digest::parse(d)
                        .map_err(|_| bad("the part after `@` is not a sha256 digest"))?,
                ),
            ),
            None => (text, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected HOST[:PORT]/NAME[:TAG]"))?;
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) => (repo, Some(tag)),
            None => (path, None),
        };
        if registry.is_empty() || registry.contains(['@', '?', '#']) {
            return Err(bad("expected HOST[:PORT]/NAME[:TAG]"));
        }
        if !valid_repository(repository) {
            return Err(bad(
                "the repository name must be lower-case letters, digits and `._-` separated by `/`",
            ));
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(bad(
                "a tag is up to 128 of `A-Za-z0-9_.-`, not starting with `.` or `-`",
            ));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The distribution spec's `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/…)*`.
fn valid_repository(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
                && !part.contains("..")
                && !part.contains("___")
        })
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r: Reference = "127.0.0.1:5000/demo/app:1.0.0".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "demo/app", Some("1.0.0"))
        );
        assert_eq!(r.reference(), "1.0.0");
        assert_eq!(r.to_string(), "127.0.0.1:5000/demo/app:1.0.0");
        let hex = "ab".repeat(32);
        let r: Reference = format!("docker://localhost/x@sha256:{hex}")
            .parse()
            .unwrap();
        assert_eq!(r.reference(), format!("sha256:{hex}"));
        assert_eq!(r.tag, None);
        let r: Reference = "reg.example/x".parse().unwrap();
        assert_eq!(r.reference(), "latest");
        for bad in [
            "reg.example",
            "reg.example/UP",
            "reg.example/a//b",
            "reg.example/a:-x",
            "reg.example/a@sha256:12",
            "/a:b",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }

    #[test]
    fn registry_names_are_told_from_layout_paths() {
        for yes in [
            "127.0.0.1:5000/a:b",
            "localhost/a",
            "reg.example/a/b:1",
            "docker://x/y",
        ] {
            assert!(Reference::looks_like(yes), "{yes}");
        }
        for no in [
            "./img:v1",
            "img:v1",
            "/tmp/img:v1",
            "layerstack-demo:demo",
            "dir:with:colons/",
            "../x/y",
            "a/b:c",
        ] {
            assert!(!Reference::looks_like(no), "{no}");
        }
    }
}
