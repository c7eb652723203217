use crate::path::{Name, NameBuf, PathLike};

/// The prefix that marks a whiteout name.
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// The name that marks its directory opaque.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// The prefix of AUFS bookkeeping names (skipped on import).
pub const AUFS_META_PREFIX: &str = ".wh..wh.";

/// What one name of a layer tar means.
///
/// The OCI whiteout encoding of a layer tar.
///
/// The image spec (`layer.md`, "Whiteouts") encodes deletions as names:
///
/// - `DIR/.wh.NAME` (an empty regular file) deletes `DIR/NAME` in the
///   layers below. Its own type, mode and contents mean nothing.
/// - `DIR/.wh..wh..opq` makes `DIR` opaque: nothing below the layer shows
///   through it.
/// - Whiteouts apply to the layers *below* only, whatever their position in
///   the tar: an entry of the same layer is never deleted by one, even if
///   the whiteout comes after it.
/// - Other names starting with `.wh..wh.` are AUFS bookkeeping (`.wh..wh.plnk`,
///   `.wh..wh.aufs`) and are skipped.
/// - `.wh.`, `.wh..` and `.wh...` would delete nothing, the directory
///   itself or its parent: they are invalid and refused.
///
/// In a [`Layer`](crate::Layer) the same facts are data:
/// [`Entry::Whiteout`](crate::Entry::Whiteout) and
/// [`Node::opaque`](crate::Node::opaque). This module converts between the
/// two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarName<'a> {
    /// An ordinary name.
    Plain(&'a Name),
    /// A whiteout that deletes this name (in the same directory) below.
    Whiteout(&'a Name),
    /// The opaque marker of its directory.
    Opaque,
    /// AUFS bookkeeping, to be skipped.
    AufsMeta,
}

/// Classifies the last component of a tar entry name. Names are bytes:
/// a whiteout of a name that is not UTF-8 deletes that name.
///
/// ```
/// use layerstack::Name;
/// use layerstack::oci::{TarName, classify};
/// assert_eq!(classify("app.conf"), Ok(TarName::Plain(Name::new("app.conf"))));
/// assert_eq!(classify(".wh.app.conf"), Ok(TarName::Whiteout(Name::new("app.conf"))));
/// assert_eq!(classify(b".wh.caf\xe9"), Ok(TarName::Whiteout(Name::new(b"caf\xe9"))));
/// assert_eq!(classify(".wh..wh..opq"), Ok(TarName::Opaque));
/// assert_eq!(classify(".wh..wh.plnk"), Ok(TarName::AufsMeta));
/// assert!(classify(".wh..").is_err());
/// ```
///
/// # Errors
/// For `.wh.`, `.wh..` and `.wh...`, a message saying why.
pub fn classify<N: PathLike + ?Sized>(name: &N) -> Result<TarName<'_>, &'static str> {
    let name = name.path_bytes();
    if name == OPAQUE_MARKER.as_bytes() {
        return Ok(TarName::Opaque);
    }
    if name.starts_with(AUFS_META_PREFIX.as_bytes()) {
        return Ok(TarName::AufsMeta);
    }
    match name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        None => Ok(TarName::Plain(Name::new(name))),
        Some(b"") => Err("invalid whiteout `.wh.`: it names nothing"),
        Some(b".") => Err("invalid whiteout `.wh..`: it would delete its own directory"),
        Some(b"..") => Err("invalid whiteout `.wh...`: it would delete the parent directory"),
        Some(target) => Ok(TarName::Whiteout(Name::new(target))),
    }
}

/// The tar name that deletes `name` (a single component).
#[must_use]
pub fn whiteout_name(name: impl PathLike) -> NameBuf {
    NameBuf::from([WHITEOUT_PREFIX.as_bytes(), name.path_bytes()].concat())
}

/// Whether a name a user gives is reserved by the OCI encoding (it starts
/// with `.wh.`) and so cannot be stored in a layer tar as itself.
#[must_use]
pub fn is_reserved(name: impl PathLike) -> bool {
    name.path_bytes().starts_with(WHITEOUT_PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_classify_as_the_spec_says() {
        let n = Name::new::<str>;
        assert_eq!(classify(".wh.a"), Ok(TarName::Whiteout(n("a"))));
        assert_eq!(classify(".wh..a"), Ok(TarName::Whiteout(n(".a"))));
        assert_eq!(classify(".wh.wh."), Ok(TarName::Whiteout(n("wh."))));
        assert_eq!(classify("a.wh.b"), Ok(TarName::Plain(n("a.wh.b"))));
        assert_eq!(
            classify(b".wh.\xf0\xd2\xc9\xd7\xc5\xd4"),
            Ok(TarName::Whiteout(Name::new(b"\xf0\xd2\xc9\xd7\xc5\xd4")))
        );
        assert_eq!(classify(".wh..wh.aufs"), Ok(TarName::AufsMeta));
        assert_eq!(classify(".wh..wh..opq"), Ok(TarName::Opaque));
        assert_eq!(
            classify(".wh."),
            Err("invalid whiteout `.wh.`: it names nothing")
        );
        assert_eq!(
            classify(".wh.."),
            Err("invalid whiteout `.wh..`: it would delete its own directory")
        );
        assert_eq!(
            classify(".wh..."),
            Err("invalid whiteout `.wh...`: it would delete the parent directory")
        );
        assert_eq!(whiteout_name("x"), ".wh.x");
        assert_eq!(whiteout_name(b"caf\xe9").as_bytes(), b".wh.caf\xe9");
        assert!(is_reserved(".wh.x"));
        assert!(!is_reserved("x.wh."));
    }
}
