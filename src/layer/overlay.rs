//! The kernel overlayfs's on-disk format, as pure types and functions: no
//! disk is touched here, so every rule is unit-tested on its own.
//!
//! What a directory in the kernel's format holds besides plain objects:
//!
//! - **whiteout**: a character device 0/0 ([`is_whiteout_device`]), or a
//!   zero-size regular file with the xattr `overlay.whiteout`, honoured
//!   only inside a directory marked `overlay.opaque="x"`
//!   ([`Opaque::XattrWhiteouts`]);
//! - **opaque directory**: `overlay.opaque="y"` ([`Opaque::Yes`]);
//! - **redirect**: `overlay.redirect` on a directory or a metadata-only
//!   copy ([`Redirect`]): a single name is relative to the parent, a path
//!   starting with `/` is from the root;
//! - the attributes live in the namespace `trusted.overlay.` (the
//!   default, which needs `CAP_SYS_ADMIN`) or `user.overlay.` (the
//!   `userxattr` mount option): [`OverlayXattrs`];
//! - **escaping**: a user's attribute in the overlay's own namespace is
//!   stored with one more `overlay.` (`trusted.overlay.overlay.X` is the
//!   user's `trusted.overlay.X`): [`OverlayXattrs::stored_name`],
//!   [`OverlayXattrs::visible_name`];
//! - everything else in the namespace (`origin`, `impure`, `uuid`, `nlink`,
//!   `metacopy`, `upper`, `protattr`, ...) is the kernel's **bookkeeping**,
//!   never shown to users; and no layer tar carries an attribute of either
//!   overlay namespace ([`is_bookkeeping_xattr`]).

use std::borrow::Cow;
use std::fmt;

use crate::path::{LayerPath, Name, NameBuf, PathLike, escape_name};

/// The xattr namespace of the overlay's own attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlayXattrs {
    /// `trusted.overlay.*`, the kernel's default (needs `CAP_SYS_ADMIN`).
    #[default]
    Trusted,
    /// `user.overlay.*`, the kernel's `userxattr` mount option (for
    /// unprivileged overlays).
    User,
}

/// The prefixes of the two overlay namespaces.
const PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];

/// An overlay attribute, named without its namespace prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OverlayAttr {
    /// `overlay.opaque`: `y` (opaque) or `x` (holds xattr whiteouts).
    Opaque,
    /// `overlay.whiteout`: a zero-size file that is a whiteout.
    Whiteout,
    /// `overlay.redirect`.
    Redirect,
    /// `overlay.metacopy`: a metadata-only copy.
    Metacopy,
}

impl OverlayAttr {
    fn key(self) -> &'static str {
        match self {
            OverlayAttr::Opaque => "opaque",
            OverlayAttr::Whiteout => "whiteout",
            OverlayAttr::Redirect => "redirect",
            OverlayAttr::Metacopy => "metacopy",
        }
    }
}

impl OverlayXattrs {
    /// The namespace prefix, with its trailing dot.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            OverlayXattrs::Trusted => PREFIXES[0],
            OverlayXattrs::User => PREFIXES[1],
        }
    }

    /// The full name of overlay attribute `attr` in this namespace.
    pub(crate) fn name(self, attr: OverlayAttr) -> String {
        format!("{}{}", self.prefix(), attr.key())
    }

    /// The value of overlay attribute `attr` among raw (stored) xattrs.
    pub(crate) fn find(self, raw: &[(String, Vec<u8>)], attr: OverlayAttr) -> Option<&[u8]> {
        let prefix = self.prefix();
        raw.iter()
            .find(|(n, _)| n.strip_prefix(prefix) == Some(attr.key()))
            .map(|(_, v)| v.as_slice())
    }

    /// The name a user sees for the stored attribute `stored`: itself
    /// outside the overlay namespace, unescaped inside it, `None` for the
    /// overlay's own bookkeeping.
    pub(crate) fn visible_name(self, stored: &str) -> Option<std::borrow::Cow<'_, str>> {
        let prefix = self.prefix();
        match stored.strip_prefix(prefix) {
            Some(rest) => rest
                .strip_prefix("overlay.")
                .map(|escaped| format!("{prefix}{escaped}").into()),
            None => Some(stored.into()),
        }
    }

    /// How a user-visible attribute name is stored: escaped with one more
    /// `overlay.` when it is in the overlay's own namespace.
    pub(crate) fn stored_name(self, name: &str) -> String {
        let prefix = self.prefix();
        match name.strip_prefix(prefix) {
            Some(rest) => format!("{prefix}overlay.{rest}"),
            None => name.to_owned(),
        }
    }
}

/// Whether an extended attribute is overlay bookkeeping, in either
/// namespace: what a layer tar never carries (export leaves it out, import
/// drops it, commit neither compares nor keeps it), since a tar can be
/// unpacked under either namespace and its meaning there is the kernel's.
pub(crate) fn is_bookkeeping_xattr(name: &str) -> bool {
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether a character device with these numbers is a whiteout (0/0).
pub(crate) fn is_whiteout_device(major: u32, minor: u32) -> bool {
    major == 0 && minor == 0
}

/// What `overlay.opaque` says about a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opaque {
    /// Absent, or a value the kernel does not act on.
    No,
    /// `y`: nothing below this layer shows through.
    Yes,
    /// `x`: not opaque, but zero-size files marked `overlay.whiteout` in it
    /// are whiteouts.
    XattrWhiteouts,
}

impl Opaque {
    /// Reads the value of `overlay.opaque` (`None`: not set).
    pub(crate) fn parse(value: Option<&[u8]>) -> Opaque {
        match value {
            Some(b"y") => Opaque::Yes,
            Some(b"x") => Opaque::XattrWhiteouts,
            _ => Opaque::No,
        }
    }

    /// The value written for this state (`None`: the attribute is removed).
    pub(crate) fn value(self) -> Option<&'static [u8]> {
        match self {
            Opaque::No => None,
            Opaque::Yes => Some(b"y"),
            Opaque::XattrWhiteouts => Some(b"x"),
        }
    }
}

/// An `overlay.redirect`, parsed once where a layer reads it: where the
/// layers below hold a directory's contents (or a metadata-only copy's
/// data), in the kernel's format: a single name is relative to the parent,
/// a path starting with `/` is from the root.
///
/// A redirect keeps the bytes it was stored as, even one the kernel would
/// ignore or refuse, so a layer copied to another backend (or exported and
/// committed) holds exactly what it held: [`Redirect::to_bytes`] gives
/// them back, and [`Redirect::parse`] of those bytes is the same redirect.
/// What it says is [`Redirect::target`].
///
/// ```
/// use layerstack::layer::{Redirect, RedirectTarget};
/// use layerstack::{LayerPath, Name};
///
/// let moved = Redirect::parse("/usr/lib");
/// assert_eq!(moved.target(), RedirectTarget::Absolute(&LayerPath::new("usr/lib")?));
/// assert_eq!(Redirect::parse("old").target(), RedirectTarget::Name(Name::new("old")));
/// // Not a single name: the kernel looks below at the directory's own name.
/// let odd = Redirect::parse("a/b");
/// assert_eq!(odd.target(), RedirectTarget::Ignored);
/// assert_eq!(odd.to_bytes().as_ref(), b"a/b");
/// # Ok::<(), layerstack::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Redirect(Form);

/// The parsed forms; those the lookup does not follow keep their bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Form {
    Name(NameBuf),
    Absolute(LayerPath),
    Ignored(NameBuf),
    Invalid(NameBuf),
}

/// What a [`Redirect`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectTarget<'a> {
    /// A single name: the same parent, another name.
    Name(&'a Name),
    /// A path from the root (stored with a leading `/`; `/` alone is the
    /// root).
    Absolute(&'a LayerPath),
    /// A value the kernel does not follow as a relative redirect (empty,
    /// `.`, `..`, or a name with a `/` that does not start with one): the
    /// lookup continues at the object's own name.
    Ignored,
    /// A leading `/` and then no valid path (an empty, `.` or `..`
    /// component, a trailing `/`, a NUL byte, a name too long): refused
    /// where it is followed.
    Invalid,
}

impl Redirect {
    /// Parses a stored redirect (the value of `overlay.redirect`). Any
    /// bytes parse: those the kernel would not follow give
    /// [`RedirectTarget::Ignored`] or [`RedirectTarget::Invalid`].
    #[must_use]
    pub fn parse(stored: impl PathLike) -> Redirect {
        Self::parse_bytes(stored.path_bytes())
    }

    fn parse_bytes(stored: &[u8]) -> Redirect {
        Redirect(match stored.strip_prefix(b"/") {
            Some(abs) => match LayerPath::new(abs) {
                Ok(path) => Form::Absolute(path),
                Err(_) => Form::Invalid(NameBuf::from(stored)),
            },
            None if stored.is_empty()
                || stored.contains(&b'/')
                || stored == b"."
                || stored == b".." =>
            {
                Form::Ignored(NameBuf::from(stored))
            }
            None => Form::Name(NameBuf::from(stored)),
        })
    }

    /// The redirect to sibling `name`, a name the caller validated.
    pub(crate) fn sibling(name: &Name) -> Redirect {
        debug_assert!(crate::path::validate_name(name).is_ok(), "{name:?}");
        Redirect(Form::Name(name.to_owned()))
    }

    /// What the redirect says.
    #[must_use]
    pub fn target(&self) -> RedirectTarget<'_> {
        match &self.0 {
            Form::Name(n) => RedirectTarget::Name(n),
            Form::Absolute(p) => RedirectTarget::Absolute(p),
            Form::Ignored(_) => RedirectTarget::Ignored,
            Form::Invalid(_) => RedirectTarget::Invalid,
        }
    }

    /// Whether it is a path from the root (valid or not).
    #[must_use]
    pub fn is_absolute(&self) -> bool {
        matches!(self.0, Form::Absolute(_) | Form::Invalid(_))
    }

    /// The bytes it is stored as, exactly as it was parsed from.
    #[must_use]
    pub fn to_bytes(&self) -> Cow<'_, [u8]> {
        match &self.0 {
            Form::Name(b) | Form::Ignored(b) | Form::Invalid(b) => Cow::Borrowed(b.as_bytes()),
            Form::Absolute(p) => Cow::Owned([b"/".as_slice(), p.as_bytes()].concat()),
        }
    }
}

impl fmt::Debug for Redirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Redirect")
            .field(&escape_name(&self.to_bytes()))
            .finish()
    }
}

/// The stored bytes, escaped where they are not printable UTF-8
/// ([`escape_name`]).
impl fmt::Display for Redirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_name(&self.to_bytes()))
    }
}

#[cfg(test)]
mod tests;
