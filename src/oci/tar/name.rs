//! Names in layer tars are bytes: how the real tools write and read names
//! that are not UTF-8, and the one place where a name read from a tar
//! meets the core's types.
//!
//! Linux names are any bytes but `/` and NUL, and tar stores them as
//! bytes. What the writers do with a name that is not UTF-8 (measured with
//! Go 1.19 `archive/tar` and GNU tar 1.34, names in Latin-1, KOI8-R,
//! EUC-JP and CP866; `docs/semantics.md`, "Names that are not UTF-8"):
//!
//! - **Go's `archive/tar`** (the writer of Docker, containerd, buildkit,
//!   umoci), with the format left to it: any name or link target that is
//!   not ASCII makes the entry PAX, with a `path` (or `linkpath`) record
//!   holding the bytes as they are; no `hdrcharset` record. The ustar
//!   name and linkname fields get the name with every byte ≥ 0x80 removed
//!   (`toASCII`), cut at 100 bytes, and the prefix field stays empty.
//!   With `Format: FormatGNU` the bytes go raw into the name and linkname
//!   fields, and a name over 100 bytes into a GNU `L` (link: `K`) long
//!   name, NUL-terminated.
//! - **GNU tar** `--format=gnu`: the bytes raw in the name and linkname
//!   fields, `././@LongLink` `L`/`K` entries past 100 bytes.
//!   `--format=posix`: a name that is not ASCII gets a PAX `path` record
//!   with the bytes *and* the same bytes in the ustar name field (when
//!   they fit); a link target gets a `linkpath` record only past 100 bytes
//!   (shorter ones are raw in the linkname field); GNU tar transcodes to
//!   UTF-8 only what the locale's charset converts (in the C locale and
//!   in a UTF-8 locale, bytes that are not UTF-8 stay as they are), and it
//!   writes no `hdrcharset` record either.
//! - Python's `tarfile` and libarchive write `hdrcharset=BINARY` before a
//!   `path` that is not UTF-8.
//!
//! And the readers: Go takes the `path`, `linkpath`, long-name and field
//! bytes as they are and ignores `hdrcharset` (it stays in
//! `Header.PAXRecords`); GNU tar 1.34 also keeps the bytes (it warns
//! "Ignoring unknown extended header keyword 'hdrcharset'" and extracts
//! the names byte for byte, in the C and in a UTF-8 locale). A PAX record
//! is UTF-8 by the standard's default; no reader in use converts it.
//!
//! So this reader keeps the bytes of every framing (ustar name and prefix,
//! GNU long names, PAX `path`/`linkpath` with or without
//! `hdrcharset=BINARY`) as they are, never re-encoded; and export writes
//! a name that is not UTF-8 as Go does (`header.rs`).

use crate::error::{Error, ErrorKind};
use crate::path::LayerPath;

/// The components of a tar name as a [`LayerPath`] (the components are
/// already split, with `.`, empty and `..` components dealt with): the one
/// place where a name read from a tar meets the core's types. Every byte
/// is kept.
///
/// # Errors
/// What [`LayerPath`] refuses (a NUL byte, a component over 255 bytes, a
/// path too long), as a kind and a cause.
pub(super) fn layer_path(
    components: &[&[u8]],
) -> std::result::Result<LayerPath, (ErrorKind, String)> {
    LayerPath::from_names(components).map_err(|e: Error| (e.kind(), e.cause()))
}
