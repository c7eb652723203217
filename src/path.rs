//! Paths and names: the validated, normalised path of an object inside a
//! layer, the names it is made of, and the parsing of the paths users give
//! the merged view.
//!
//! Names are bytes, as in the kernel and in tar: any bytes but `/` and NUL,
//! UTF-8 or not (Latin-1, KOI8-R, EUC-JP names are found in real images).
//! [`Name`] and [`NameBuf`] hold one name, a path text or a symlink target;
//! [`LayerPath`] a validated path. Every method that takes a path takes
//! anything [`PathLike`]: `&str`, `&Utf8Path`, `&std::path::Path`, bytes.
//! What is not printable UTF-8 shows escaped ([`escape_name`]).
//!
//! Inside a layer every path is relative to the layer's root and
//! normalised: no empty, `.` or `..` components, no leading or trailing
//! slash. The root itself is the empty path. Such a path can never name
//! anything outside the layer, so backends can join it to their root safely.
//!
//! Users of the merged view may write absolute or relative paths (both are
//! taken from the view's root), with `.`, `..` and repeated slashes; those
//! are resolved by the view as inside a chroot (see
//! [`MergedView`](crate::MergedView)).

use std::borrow::{Borrow, Cow};
use std::cmp::Ordering;
use std::ffi::{OsStr, OsString};
use std::fmt::{self, Write as _};
use std::ops::Deref;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, ErrorKind, Operation, Result};

/// The longest name of one component, in bytes (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// The longest path, in bytes (Linux `PATH_MAX` less its NUL).
pub const PATH_MAX: usize = 4095;

/// Anything that names a path or a name by its bytes: `str`, `String`,
/// byte slices and vectors, `Utf8Path`, `std::path::Path`, `OsStr`,
/// [`Name`], [`LayerPath`] and references to them.
///
/// ```
/// use layerstack::{LayerPath, PathLike};
///
/// assert_eq!("a/b".path_bytes(), b"a/b");
/// assert_eq!(LayerPath::new(b"caf\xe9")?.path_bytes(), b"caf\xe9");
/// assert_eq!(std::path::Path::new("x").path_bytes(), b"x");
/// # Ok::<(), layerstack::Error>(())
/// ```
pub trait PathLike {
    /// The bytes of the path, as the kernel would see them.
    fn path_bytes(&self) -> &[u8];
}

impl PathLike for str {
    fn path_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl PathLike for String {
    fn path_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl PathLike for [u8] {
    fn path_bytes(&self) -> &[u8] {
        self
    }
}
impl PathLike for Vec<u8> {
    fn path_bytes(&self) -> &[u8] {
        self
    }
}
impl<const N: usize> PathLike for [u8; N] {
    fn path_bytes(&self) -> &[u8] {
        self
    }
}
impl PathLike for Utf8Path {
    fn path_bytes(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}
impl PathLike for Utf8PathBuf {
    fn path_bytes(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}
impl PathLike for Path {
    fn path_bytes(&self) -> &[u8] {
        self.as_os_str().as_bytes()
    }
}
impl PathLike for PathBuf {
    fn path_bytes(&self) -> &[u8] {
        self.as_os_str().as_bytes()
    }
}
impl PathLike for OsStr {
    fn path_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl PathLike for OsString {
    fn path_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl PathLike for Cow<'_, str> {
    fn path_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl PathLike for LayerPath {
    fn path_bytes(&self) -> &[u8] {
        &self.0
    }
}
impl PathLike for Name {
    fn path_bytes(&self) -> &[u8] {
        &self.0
    }
}
impl PathLike for NameBuf {
    fn path_bytes(&self) -> &[u8] {
        &self.0
    }
}
impl<T: PathLike + ?Sized> PathLike for &T {
    fn path_bytes(&self) -> &[u8] {
        (**self).path_bytes()
    }
}
impl<T: PathLike + ?Sized> PathLike for &mut T {
    fn path_bytes(&self) -> &[u8] {
        (**self).path_bytes()
    }
}

/// A name as the kernel sees it: a file name, a path text or a symlink
/// target, any bytes (the unsized borrowed form, like `Path`; the owned
/// form is [`NameBuf`]).
///
/// It is compared, ordered and hashed by its bytes (for UTF-8 names the
/// order of `str`). It shows escaped ([`escape_name`]): what is not
/// printable UTF-8 shows as `\ooo` per byte.
///
/// ```
/// use layerstack::Name;
///
/// let name = Name::new(b"caf\xe9");
/// assert_eq!(name.as_bytes(), b"caf\xe9");
/// assert_eq!(name.to_str(), None);
/// assert_eq!(name.to_string(), "caf\\351");
/// assert_eq!(Name::new("café").to_str(), Some("café"));
/// assert_eq!(Name::new("a"), "a");
/// ```
#[repr(transparent)]
#[derive(PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name([u8]);

impl Name {
    /// The bytes as a name (no validation: any bytes are a name's text).
    #[must_use]
    #[allow(unsafe_code)]
    pub fn new<S: AsRef<[u8]> + ?Sized>(bytes: &S) -> &Name {
        let bytes: &[u8] = bytes.as_ref();
        // SAFETY: `Name` is `#[repr(transparent)]` over `[u8]`, so a
        // `*const [u8]` and a `*const Name` have the same layout and
        // metadata (the length); the lifetime is carried over unchanged.
        // This is how std builds `&Path` from `&OsStr`.
        unsafe { &*(std::ptr::from_ref::<[u8]>(bytes) as *const Name) }
    }

    /// The bytes of the name.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name as a `str`, if it is UTF-8.
    #[must_use]
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The name as text, with U+FFFD for what is not UTF-8 (lossy: use
    /// [`Display`](fmt::Display) to show a name, [`as_bytes`](Name::as_bytes)
    /// to keep it).
    #[must_use]
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// The name as a `std::path::Path` (the same bytes).
    #[must_use]
    pub fn to_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// The length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the name has no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether it is a path from the root (starts with `/`).
    pub(crate) fn is_absolute(&self) -> bool {
        self.0.first() == Some(&b'/')
    }

    /// The path without one leading `/` (the view is its own root).
    pub(crate) fn strip_root(&self) -> &Name {
        Name::new(self.0.strip_prefix(b"/").unwrap_or(&self.0))
    }
}

impl fmt::Display for Name {
    /// Escaped as [`escape_name`] does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.width().is_some() || f.precision().is_some() {
            f.pad(&escape_name(&self.0))
        } else {
            write_escaped(f, &self.0, Backslash::Escape)
        }
    }
}

impl fmt::Debug for Name {
    /// The escaped name in double quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        write_escaped(f, &self.0, Backslash::EscapeQuote)?;
        f.write_char('"')
    }
}

impl Default for &Name {
    /// The empty name.
    fn default() -> Self {
        Name::new("")
    }
}

impl ToOwned for Name {
    type Owned = NameBuf;
    fn to_owned(&self) -> NameBuf {
        NameBuf(self.0.to_vec())
    }
}

impl AsRef<[u8]> for Name {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<Path> for Name {
    fn as_ref(&self) -> &Path {
        self.to_path()
    }
}

impl AsRef<Name> for Name {
    fn as_ref(&self) -> &Name {
        self
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &self.0 == other.as_bytes()
    }
}

impl PartialEq<[u8]> for Name {
    fn eq(&self, other: &[u8]) -> bool {
        &self.0 == other
    }
}

impl PartialEq<NameBuf> for Name {
    fn eq(&self, other: &NameBuf) -> bool {
        self.0 == other.0[..]
    }
}

impl PartialEq<NameBuf> for &Name {
    fn eq(&self, other: &NameBuf) -> bool {
        self.0 == other.0[..]
    }
}

/// An owned [`Name`]: a file name, path text or symlink target, any bytes.
///
/// ```
/// use std::collections::BTreeMap;
/// use layerstack::{Name, NameBuf};
///
/// let mut map = BTreeMap::new();
/// map.insert(NameBuf::from(b"caf\xe9".to_vec()), 1);
/// map.insert(NameBuf::from("b"), 2);
/// assert_eq!(map.get(Name::new(b"caf\xe9")), Some(&1));
/// assert_eq!(NameBuf::from("b"), "b");
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameBuf(Vec<u8>);

impl NameBuf {
    /// An empty name.
    #[must_use]
    pub fn new() -> NameBuf {
        NameBuf(Vec::new())
    }

    /// The bytes, owned.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The name, borrowed.
    #[must_use]
    pub fn as_name(&self) -> &Name {
        Name::new(&self.0)
    }
}

impl Deref for NameBuf {
    type Target = Name;
    fn deref(&self) -> &Name {
        Name::new(&self.0)
    }
}

impl Borrow<Name> for NameBuf {
    fn borrow(&self) -> &Name {
        self
    }
}

impl AsRef<[u8]> for NameBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<Path> for NameBuf {
    fn as_ref(&self) -> &Path {
        self.to_path()
    }
}

impl AsRef<Name> for NameBuf {
    fn as_ref(&self) -> &Name {
        self
    }
}

impl From<&str> for NameBuf {
    fn from(s: &str) -> NameBuf {
        NameBuf(s.as_bytes().to_vec())
    }
}

impl From<String> for NameBuf {
    fn from(s: String) -> NameBuf {
        NameBuf(s.into_bytes())
    }
}

impl From<Vec<u8>> for NameBuf {
    fn from(v: Vec<u8>) -> NameBuf {
        NameBuf(v)
    }
}

impl From<&[u8]> for NameBuf {
    fn from(v: &[u8]) -> NameBuf {
        NameBuf(v.to_vec())
    }
}

impl From<&Name> for NameBuf {
    fn from(n: &Name) -> NameBuf {
        n.to_owned()
    }
}

impl From<&LayerPath> for NameBuf {
    fn from(p: &LayerPath) -> NameBuf {
        NameBuf(p.0.clone())
    }
}

impl From<LayerPath> for NameBuf {
    fn from(p: LayerPath) -> NameBuf {
        NameBuf(p.0)
    }
}

impl PartialEq<str> for NameBuf {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for NameBuf {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<Name> for NameBuf {
    fn eq(&self, other: &Name) -> bool {
        self.0[..] == other.0
    }
}

impl PartialEq<&Name> for NameBuf {
    fn eq(&self, other: &&Name) -> bool {
        self.0[..] == other.0
    }
}

impl fmt::Display for NameBuf {
    /// Escaped as [`escape_name`] does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl fmt::Debug for NameBuf {
    /// The escaped name in double quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Whether a backslash is escaped (as `\\`) or kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backslash {
    Escape,
    Keep,
    /// Escaped, and `"` too (the `Debug` form, in double quotes).
    EscapeQuote,
}

/// A name (or path) as text safe to print: what `ls -b` shows. Printable
/// UTF-8 shows as it is; `\` as `\\`; newline, tab and carriage return as
/// `\n`, `\t`, `\r`; C0 and C1 controls, DEL, and the invisible characters
/// that reorder or hide text (bidi marks, overrides and isolates, zero
/// widths, word joiners, line separators, tag characters) as
/// `\ooo` per byte of their UTF-8; and in a name (a component of a path)
/// that is not UTF-8, every byte that is not ASCII as `\ooo` (such a name
/// is in another charset, whatever pieces of it happen to decode).
///
/// ```
/// use layerstack::escape_name;
///
/// assert_eq!(escape_name(b"caf\xe9"), "caf\\351"); // Latin-1
/// assert_eq!(escape_name("café".as_bytes()), "café");
/// assert_eq!(escape_name(b"a\nb\\c"), "a\\nb\\\\c");
/// ```
#[must_use]
pub fn escape_name(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    // Writing into a String cannot fail.
    let _ = write_escaped(&mut out, bytes, Backslash::Escape);
    out
}

/// A line of text (an error message) safe to print: escaped as
/// [`escape_name`] does, except that backslashes are kept (messages
/// already spell escaped bytes with them).
///
/// ```
/// use layerstack::path::escape_message;
///
/// assert_eq!(escape_message(b"failed: `a\\351`\n\x07"), "failed: `a\\351`\\n\\007");
/// ```
#[must_use]
pub fn escape_message(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let _ = write_escaped(&mut out, bytes, Backslash::Keep);
    out
}

fn write_escaped(out: &mut impl fmt::Write, bytes: &[u8], backslash: Backslash) -> fmt::Result {
    for (i, name) in bytes.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.write_char('/')?;
        }
        write_escaped_name(out, name, backslash)?;
    }
    Ok(())
}

/// One name (no `/`) of [`write_escaped`].
fn write_escaped_name(
    out: &mut impl fmt::Write,
    bytes: &[u8],
    backslash: Backslash,
) -> fmt::Result {
    // A name that is not UTF-8 is in another charset: the pieces of it that
    // happen to decode (EUC-JP's `\xdc\xb8` is a Syriac combining mark)
    // are not its characters, so every byte past ASCII is escaped.
    let foreign = std::str::from_utf8(bytes).is_err();
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        let mut start = 0;
        for (i, c) in valid.char_indices() {
            let escaped = match c {
                '\\' if backslash != Backslash::Keep => Some("\\\\"),
                '"' if backslash == Backslash::EscapeQuote => Some("\\\""),
                '\n' => Some("\\n"),
                '\t' => Some("\\t"),
                '\r' => Some("\\r"),
                c if is_hidden(c) || (foreign && !c.is_ascii()) => None,
                _ => continue,
            };
            out.write_str(&valid[start..i])?;
            start = i + c.len_utf8();
            match escaped {
                Some(s) => out.write_str(s)?,
                None => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        write!(out, "\\{b:03o}")?;
                    }
                }
            }
        }
        out.write_str(&valid[start..])?;
        for b in chunk.invalid() {
            write!(out, "\\{b:03o}")?;
        }
    }
    Ok(())
}

/// C0 and C1 controls, DEL, and the invisible characters that reorder or
/// hide text (bidi marks, overrides and isolates, the Arabic letter mark,
/// zero widths, word joiners, line and paragraph separators, tag
/// characters).
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// `bytes` without leading and trailing `/`.
pub(crate) fn trim_slashes(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b'/').unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b'/')
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// Splits bytes on `/`.
fn split_slash(bytes: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> + Clone {
    bytes.split(|&b| b == b'/')
}

/// A validated, normalised, relative path inside a layer; its names are
/// bytes (any but `/` and NUL).
///
/// The root is the empty path. Components are compared one by one, so a
/// directory sorts right before its children (`a`, `a/b`, `a-b`).
///
/// ```
/// use layerstack::LayerPath;
///
/// let p = LayerPath::new("etc/app.conf")?;
/// assert_eq!(p.file_name().unwrap(), "app.conf");
/// assert_eq!(p.parent().unwrap().to_str(), Some("etc"));
/// assert!(LayerPath::new("../etc").is_err());
/// assert!(LayerPath::new("/etc").is_err());
/// assert!(LayerPath::root().is_root());
/// let latin1 = LayerPath::new(b"srv/caf\xe9")?;
/// assert_eq!(latin1.to_str(), None);
/// assert_eq!(latin1.to_string(), "srv/caf\\351");
/// # Ok::<(), layerstack::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct LayerPath(Vec<u8>);

impl LayerPath {
    /// The root of a layer (the empty path).
    #[must_use]
    pub fn root() -> LayerPath {
        LayerPath(Vec::new())
    }

    /// Validates a normalised relative path.
    ///
    /// # Errors
    /// `EINVAL` for an absolute path, an empty, `.` or `..` component, or a
    /// NUL byte; `ENAMETOOLONG` for a component over [`NAME_MAX`] bytes or a
    /// path over [`PATH_MAX`] bytes. The empty string is the root.
    pub fn new(path: impl PathLike) -> Result<LayerPath> {
        Self::new_inner(path.path_bytes())
    }

    fn new_inner(path: &[u8]) -> Result<LayerPath> {
        if path.len() > PATH_MAX {
            return Err(Error::new(
                ErrorKind::NameTooLong,
                Operation::ParsePath,
                path,
            ));
        }
        if !path.is_empty() {
            for name in split_slash(path) {
                validate_name(name).map_err(|e| e.reframe(Operation::ParsePath, path))?;
            }
        }
        Ok(LayerPath(path.to_vec()))
    }

    /// Builds a path from validated names.
    ///
    /// # Errors
    /// As [`LayerPath::new`].
    pub fn from_names(names: impl IntoIterator<Item = impl PathLike>) -> Result<LayerPath> {
        let mut p = LayerPath::root();
        for name in names {
            p = p.join(name)?;
        }
        Ok(p)
    }

    /// This path with one more component.
    ///
    /// # Errors
    /// `EINVAL` if `name` is not a single valid name, `ENAMETOOLONG` if it or
    /// the result is too long.
    pub fn join(&self, name: impl PathLike) -> Result<LayerPath> {
        self.join_inner(name.path_bytes())
    }

    fn join_inner(&self, name: &[u8]) -> Result<LayerPath> {
        validate_name(name)?;
        let len = self.0.len() + usize::from(!self.is_root()) + name.len();
        if len > PATH_MAX {
            let mut full = self.0.clone();
            full.push(b'/');
            full.extend_from_slice(name);
            return Err(Error::new(
                ErrorKind::NameTooLong,
                Operation::ParsePath,
                full,
            ));
        }
        Ok(self.join_unchecked(Name::new(name)))
    }

    /// Joins a name known to be valid (the caller checked it).
    pub(crate) fn join_unchecked(&self, name: &Name) -> LayerPath {
        debug_assert!(
            validate_name(name.as_bytes()).is_ok(),
            "invalid name {name:?}"
        );
        if self.is_root() {
            LayerPath(name.as_bytes().to_vec())
        } else {
            let mut s = Vec::with_capacity(self.0.len() + 1 + name.len());
            s.extend_from_slice(&self.0);
            s.push(b'/');
            s.extend_from_slice(name.as_bytes());
            LayerPath(s)
        }
    }

    /// Whether this is the root.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes of the path (empty for the root).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path as a [`Name`] (the text of the whole path).
    #[must_use]
    pub fn as_name(&self) -> &Name {
        Name::new(&self.0)
    }

    /// The path as a `str` (`""` for the root), if it is UTF-8.
    #[must_use]
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The path as a `std::path::Path` (the same bytes; empty for the root).
    #[must_use]
    pub fn to_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// The last component, `None` for the root.
    #[must_use]
    pub fn file_name(&self) -> Option<&Name> {
        if self.is_root() {
            None
        } else {
            split_slash(&self.0).next_back().map(Name::new)
        }
    }

    /// The parent directory, `None` for the root.
    #[must_use]
    pub fn parent(&self) -> Option<LayerPath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => LayerPath(self.0[..i].to_vec()),
            None => LayerPath::root(),
        })
    }

    /// The components, root first.
    pub fn names(&self) -> impl DoubleEndedIterator<Item = &Name> + Clone + '_ {
        split_slash(&self.0)
            .filter(|s| !s.is_empty())
            .map(Name::new)
    }

    /// The number of components (0 for the root).
    #[must_use]
    pub fn depth(&self) -> usize {
        self.names().count()
    }

    /// Whether `ancestor` is this path or one of its ancestors.
    #[must_use]
    pub fn starts_with(&self, ancestor: &LayerPath) -> bool {
        ancestor.is_root()
            || self == ancestor
            || (self.0.starts_with(&ancestor.0) && self.0.get(ancestor.0.len()) == Some(&b'/'))
    }

    /// The rest of this path below `ancestor`, if it is one.
    #[must_use]
    pub fn strip_prefix(&self, ancestor: &LayerPath) -> Option<LayerPath> {
        if ancestor.is_root() {
            Some(self.clone())
        } else if self == ancestor {
            Some(LayerPath::root())
        } else if self.starts_with(ancestor) {
            Some(LayerPath(self.0[ancestor.0.len() + 1..].to_vec()))
        } else {
            None
        }
    }

    /// This path moved from below `from` to below `to` (for renames).
    #[must_use]
    pub fn rebase(&self, from: &LayerPath, to: &LayerPath) -> Option<LayerPath> {
        let rest = self.strip_prefix(from)?;
        Some(rest.names().fold(to.clone(), |p, n| p.join_unchecked(n)))
    }
}

impl Ord for LayerPath {
    fn cmp(&self, other: &Self) -> Ordering {
        self.names().cmp(other.names())
    }
}

impl PartialOrd for LayerPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for LayerPath {
    /// The escaped path in double quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_name(), f)
    }
}

impl fmt::Display for LayerPath {
    /// Escaped as [`escape_name`] does; the root shows as `.`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.pad(".")
        } else {
            fmt::Display::fmt(self.as_name(), f)
        }
    }
}

impl AsRef<Path> for LayerPath {
    fn as_ref(&self) -> &Path {
        self.to_path()
    }
}

impl AsRef<[u8]> for LayerPath {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<Name> for LayerPath {
    fn as_ref(&self) -> &Name {
        self.as_name()
    }
}

impl PartialEq<str> for LayerPath {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for LayerPath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl TryFrom<&str> for LayerPath {
    type Error = Error;
    fn try_from(s: &str) -> Result<LayerPath> {
        LayerPath::new(s)
    }
}

impl TryFrom<&[u8]> for LayerPath {
    type Error = Error;
    fn try_from(s: &[u8]) -> Result<LayerPath> {
        LayerPath::new(s)
    }
}

/// Checks one name: not empty, not `.` or `..`, no `/` or NUL, at most
/// [`NAME_MAX`] bytes.
///
/// # Errors
/// `EINVAL` or `ENAMETOOLONG`, with a detail that says which rule failed.
pub(crate) fn validate_name(name: &(impl AsRef<[u8]> + ?Sized)) -> Result<()> {
    let name = name.as_ref();
    let invalid = |detail: &str| {
        Err(Error::new(ErrorKind::InvalidInput, Operation::ParsePath, name).with_detail(detail))
    };
    if name.is_empty() {
        return invalid("empty name");
    }
    if name == b"." || name == b".." {
        return invalid("`.` and `..` are not names");
    }
    if name.contains(&b'/') {
        return invalid("a name cannot contain `/`");
    }
    if name.contains(&0) {
        return invalid("a name cannot contain a NUL byte");
    }
    if name.len() > NAME_MAX {
        return Err(Error::new(
            ErrorKind::NameTooLong,
            Operation::ParsePath,
            name,
        ));
    }
    Ok(())
}

/// One component of a user path, before resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Component<'a> {
    /// `..`: the parent (the root's parent is the root).
    Parent,
    /// A name.
    Name(&'a Name),
}

/// A user path split into components (`.` and empty components dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserPath<'a> {
    /// The components in order.
    pub(crate) components: Vec<Component<'a>>,
    /// Whether the path ended in `/` or `.` (the object must then be a
    /// directory).
    pub(crate) trailing_slash: bool,
    /// Whether the last component is `.` (`a/.`, `.`, `/.`, `a/./`): the
    /// path then names the directory the other components lead to, which
    /// must exist (the kernel's `LAST_DOT`), and it has no name to create,
    /// remove or rename.
    pub(crate) ends_in_dot: bool,
}

/// What the last component of a user path is, as the kernel classifies it
/// (`LAST_NORM`, `LAST_DOT`, `LAST_DOTDOT`, `LAST_ROOT`): the operations
/// that make, remove or rename a name fail on the last three, each its own
/// way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastKind {
    /// A name.
    Name,
    /// `.`.
    Dot,
    /// `..`.
    DotDot,
    /// No component at all (`/`).
    Root,
}

impl<'a> UserPath<'a> {
    /// Splits a user path; `op` names the operation in errors.
    ///
    /// # Errors
    /// `ENOENT` for the empty string, `EINVAL` for a NUL byte,
    /// `ENAMETOOLONG` for a component over [`NAME_MAX`] or a path over
    /// [`PATH_MAX`] bytes.
    pub(crate) fn parse<P: AsRef<[u8]> + ?Sized>(
        path: &'a P,
        op: Operation,
    ) -> Result<UserPath<'a>> {
        let path: &'a [u8] = path.as_ref();
        if path.is_empty() {
            return Err(Error::new(ErrorKind::NotFound, op, path));
        }
        if path.contains(&0) {
            return Err(Error::new(ErrorKind::InvalidInput, op, path)
                .with_detail("path contains a NUL byte"));
        }
        if path.len() > PATH_MAX {
            return Err(Error::new(ErrorKind::NameTooLong, op, path));
        }
        let mut components = Vec::new();
        for part in split_slash(path) {
            match part {
                b"" | b"." => {}
                b".." => components.push(Component::Parent),
                name if name.len() > NAME_MAX => {
                    return Err(Error::new(ErrorKind::NameTooLong, op, path));
                }
                name => components.push(Component::Name(Name::new(name))),
            }
        }
        let ends_in_dot = split_slash(path).rev().find(|p| !p.is_empty()) == Some(b".".as_slice());
        let trailing_slash = path.ends_with(b"/") || ends_in_dot;
        Ok(UserPath {
            components,
            trailing_slash,
            ends_in_dot,
        })
    }

    /// The kind of the last component.
    #[must_use]
    pub(crate) fn last_kind(&self) -> LastKind {
        if self.ends_in_dot {
            return LastKind::Dot;
        }
        match self.components.last() {
            None => LastKind::Root,
            Some(Component::Parent) => LastKind::DotDot,
            Some(Component::Name(_)) => LastKind::Name,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_escapes_quotes_and_every_invisible_character() {
        assert_eq!(format!("{:?}", Name::new(b"a\"b\\")), r#""a\"b\\""#);
        for c in ['\u{061c}', '\u{2028}', '\u{2060}', '\u{e0041}', '\u{202e}'] {
            let text = format!("x{c}y");
            let escaped = escape_name(text.as_bytes());
            assert!(
                escaped.starts_with("x\\") && escaped.ends_with('y'),
                "{escaped}"
            );
            assert!(!escaped.contains(c), "{escaped}");
        }
    }

    use super::*;

    #[test]
    fn layer_path_rejects_non_normal_forms() {
        for bad in ["/a", "a/", "a//b", "./a", "a/..", "..", "a\0b"] {
            assert_eq!(
                LayerPath::new(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
        let long = "x".repeat(256);
        assert_eq!(
            LayerPath::new(&long).unwrap_err().kind(),
            ErrorKind::NameTooLong
        );
        let deep = vec!["abcdefg"; 600].join("/");
        assert_eq!(
            LayerPath::new(&deep).unwrap_err().kind(),
            ErrorKind::NameTooLong
        );
    }

    #[test]
    fn layer_path_takes_any_bytes_but_slash_and_nul() {
        let p = LayerPath::new(b"d\xff/caf\xe9").unwrap();
        assert_eq!(p.as_bytes(), b"d\xff/caf\xe9");
        assert_eq!(p.file_name().unwrap().as_bytes(), b"caf\xe9");
        assert_eq!(p.parent().unwrap().as_bytes(), b"d\xff");
        assert_eq!(p.to_str(), None);
        assert_eq!(p.to_string(), "d\\377/caf\\351");
        assert_eq!(format!("{p:?}"), "\"d\\377/caf\\351\"");
        assert_eq!(p.to_path().as_os_str().as_bytes(), b"d\xff/caf\xe9");
        let names: Vec<&[u8]> = p.names().map(Name::as_bytes).collect();
        assert_eq!(names, [b"d\xff".as_slice(), b"caf\xe9"]);
        assert_eq!(
            LayerPath::from_names([b"d\xff".as_slice(), b"caf\xe9"]).unwrap(),
            p
        );
        assert_eq!(
            LayerPath::new(b"a\0\xe9").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            LayerPath::new(vec![0xe9; 256]).unwrap_err().kind(),
            ErrorKind::NameTooLong
        );
        assert_eq!(LayerPath::root().to_string(), ".");
    }

    #[test]
    fn ordering_is_by_component_then_bytes() {
        let mut v: Vec<LayerPath> = [
            b"a-b".as_slice(),
            b"a/b",
            b"a",
            b"",
            b"caf\xe9",
            b"caf\xc3\xa9",
            b"z",
        ]
        .iter()
        .map(|s| LayerPath::new(s).unwrap())
        .collect();
        v.sort();
        let got: Vec<&[u8]> = v.iter().map(LayerPath::as_bytes).collect();
        assert_eq!(
            got,
            [
                b"".as_slice(),
                b"a",
                b"a/b",
                b"a-b",
                b"caf\xc3\xa9",
                b"caf\xe9",
                b"z"
            ]
        );
        // The order of names is `str`'s for UTF-8 names.
        let mut names: Vec<NameBuf> = ["é", "z", "a", "É"].map(NameBuf::from).to_vec();
        names.sort();
        assert_eq!(names, ["a", "z", "É", "é"]);
    }

    #[test]
    fn prefix_helpers() {
        let p = LayerPath::new("a/b/c").unwrap();
        let a = LayerPath::new("a").unwrap();
        let ab = LayerPath::new("ab").unwrap();
        assert!(p.starts_with(&a));
        assert!(!ab.starts_with(&a));
        assert_eq!(p.strip_prefix(&a).unwrap(), "b/c");
        assert_eq!(
            p.rebase(&a, &LayerPath::new(b"x\xe9").unwrap()).unwrap(),
            LayerPath::new(b"x\xe9/b/c").unwrap()
        );
        assert_eq!(p.parent().unwrap().parent().unwrap(), a);
        assert_eq!(a.parent().unwrap(), LayerPath::root());
        assert_eq!(p.depth(), 3);
    }

    #[test]
    fn names_in_legacy_encodings_are_escaped_byte_by_byte() {
        // "café" in Latin-1.
        assert_eq!(escape_name(b"caf\xe9"), "caf\\351");
        // "привет" in KOI8-R.
        assert_eq!(
            escape_name(b"\xd0\xd2\xc9\xd7\xc5\xd4"),
            "\\320\\322\\311\\327\\305\\324"
        );
        // "日本" in EUC-JP.
        assert_eq!(escape_name(b"\xc6\xfc\xcb\xdc"), "\\306\\374\\313\\334");
        // Per name: a UTF-8 directory stays readable beside a Latin-1 file;
        // EUC-JP's `\xdc\xb8` (a Syriac mark as UTF-8) is escaped too.
        assert_eq!(escape_name(b"caf\xc3\xa9/caf\xe9"), "caf\u{e9}/caf\\351");
        assert_eq!(
            escape_name(b"\xc6\xfc\xcb\xdc\xb8\xec"),
            "\\306\\374\\313\\334\\270\\354"
        );
        // "привет" in CP866: its bytes E0 A8 A2 happen to be valid UTF-8
        // (U+0A22, a Gurmukhi letter), which is not what the name says.
        assert_eq!(
            escape_name(b"\xaf\xe0\xa8\xa2\xa5\xe2"),
            "\\257\\340\\250\\242\\245\\342"
        );
        // The same names in UTF-8 show as they are.
        assert_eq!(
            escape_name("café привет 日本".as_bytes()),
            "café привет 日本"
        );
    }

    #[test]
    fn controls_bidi_and_backslashes_are_escaped() {
        assert_eq!(escape_name(b"plain/name.txt"), "plain/name.txt");
        assert_eq!(escape_name(b"a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escape_name(b"\x1b[31mred\x7f"), "\\033[31mred\\177");
        assert_eq!(escape_name("\u{85}".as_bytes()), "\\302\\205");
        assert_eq!(escape_name(b"back\\slash"), "back\\\\slash");
        assert_eq!(
            escape_name("\u{202e}txt.exe\u{200b}".as_bytes()),
            "\\342\\200\\256txt.exe\\342\\200\\213"
        );
        assert_eq!(escape_name(b"nul\0"), "nul\\000");
        assert_eq!(
            escape_message(b"failed: `\\x1b` and\n\x07\xe9"),
            "failed: `\\x1b` and\\n\\007\\351"
        );
        let name = Name::new(b"a\\\xe9");
        assert_eq!(name.to_string(), escape_name(name.as_bytes()));
        assert_eq!(format!("[{name:>8}]"), "[ a\\\\\\351]");
        assert_eq!(format!("{name:?}"), "\"a\\\\\\351\"");
    }

    #[test]
    fn path_like_takes_every_path_type() {
        fn bytes(p: impl PathLike) -> Vec<u8> {
            p.path_bytes().to_vec()
        }
        let want = b"a/\xe9".to_vec();
        assert_eq!(bytes(b"a/\xe9"), want);
        assert_eq!(bytes(b"a/\xe9".as_slice()), want);
        assert_eq!(bytes(want.clone()), want);
        assert_eq!(bytes(Path::new(OsStr::from_bytes(&want))), want);
        assert_eq!(bytes(OsStr::from_bytes(&want).to_os_string()), want);
        assert_eq!(bytes(NameBuf::from(want.clone())), want);
        assert_eq!(bytes(Name::new(&want)), want);
        assert_eq!(bytes(LayerPath::new(&want).unwrap()), want);
        assert_eq!(bytes("a/b"), b"a/b");
        assert_eq!(bytes(String::from("a/b")), b"a/b");
        assert_eq!(bytes(Utf8Path::new("a/b")), b"a/b");
        assert_eq!(bytes(Utf8PathBuf::from("a/b")), b"a/b");
        assert_eq!(bytes(Cow::Borrowed("a/b")), b"a/b");
        assert_eq!(bytes(PathBuf::from("a/b")), b"a/b");
    }

    #[test]
    fn user_paths() {
        let u = UserPath::parse(b"//a/./b/../c\xe9/", Operation::Lookup).unwrap();
        assert_eq!(
            u.components,
            vec![
                Component::Name(Name::new("a")),
                Component::Name(Name::new("b")),
                Component::Parent,
                Component::Name(Name::new(b"c\xe9"))
            ]
        );
        assert!(u.trailing_slash);
        assert_eq!(u.last_kind(), LastKind::Name);
        for (path, kind) in [
            ("a/.", LastKind::Dot),
            ("./", LastKind::Dot),
            ("/.", LastKind::Dot),
            ("a/..", LastKind::DotDot),
            ("a/../", LastKind::DotDot),
            ("/", LastKind::Root),
            ("./a", LastKind::Name),
        ] {
            let u = UserPath::parse(path.as_bytes(), Operation::Lookup).unwrap();
            assert_eq!(u.last_kind(), kind, "{path}");
            assert_eq!(u.ends_in_dot, kind == LastKind::Dot, "{path}");
        }
        assert_eq!(
            UserPath::parse(b"", Operation::Lookup).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            UserPath::parse(b"a\0", Operation::Lookup)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        let long = format!("a/{}", "y".repeat(256));
        assert_eq!(
            UserPath::parse(long.as_bytes(), Operation::Lookup)
                .unwrap_err()
                .kind(),
            ErrorKind::NameTooLong
        );
        assert_eq!(
            UserPath::parse("a/".repeat(2048).as_bytes(), Operation::Lookup)
                .unwrap_err()
                .kind(),
            ErrorKind::NameTooLong
        );
    }
}
