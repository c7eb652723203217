//! Paths: the validated, normalised path of an object inside a layer, and
//! the parsing of the paths users give the merged view.
//!
//! Inside a layer every path is relative to the layer's root, UTF-8, and
//! normalised: no empty, `.` or `..` components, no leading or trailing
//! slash. The root itself is the empty path. Such a path can never name
//! anything outside the layer, so backends can join it to their root safely.
//!
//! Users of the merged view may write absolute or relative paths (both are
//! taken from the view's root), with `.`, `..` and repeated slashes; those
//! are resolved by the view as inside a chroot (see
//! [`MergedView`](crate::MergedView)).

use std::cmp::Ordering;
use std::fmt;

use camino::Utf8Path;

use crate::error::{Error, ErrorKind, Operation, Result};

/// The longest name of one component, in bytes (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// The longest path, in bytes (Linux `PATH_MAX` less its NUL).
pub const PATH_MAX: usize = 4095;

/// A validated, normalised, relative UTF-8 path inside a layer.
///
/// The root is the empty path. Components are compared one by one, so a
/// directory sorts right before its children (`a`, `a/b`, `a-b`).
///
/// ```
/// use layerstack::LayerPath;
///
/// let p = LayerPath::new("etc/app.conf")?;
/// assert_eq!(p.file_name(), Some("app.conf"));
/// assert_eq!(p.parent().unwrap().as_str(), "etc");
/// assert!(LayerPath::new("../etc").is_err());
/// assert!(LayerPath::new("/etc").is_err());
/// assert!(LayerPath::root().is_root());
/// # Ok::<(), layerstack::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct LayerPath(String);

impl LayerPath {
    /// The root of a layer (the empty path).
    #[must_use]
    pub fn root() -> LayerPath {
        LayerPath(String::new())
    }

    /// Validates a normalised relative path.
    ///
    /// # Errors
    /// `EINVAL` for an absolute path, an empty, `.` or `..` component, or a
    /// NUL byte; `ENAMETOOLONG` for a component over [`NAME_MAX`] bytes or a
    /// path over [`PATH_MAX`] bytes. The empty string is the root.
    pub fn new(path: &str) -> Result<LayerPath> {
        if path.len() > PATH_MAX {
            return Err(Error::new(
                ErrorKind::NameTooLong,
                Operation::ParsePath,
                path,
            ));
        }
        if !path.is_empty() {
            for name in path.split('/') {
                validate_name(name).map_err(|e| e.reframe(Operation::ParsePath, path))?;
            }
        }
        Ok(LayerPath(path.to_owned()))
    }

    /// Builds a path from validated names.
    ///
    /// # Errors
    /// As [`LayerPath::new`].
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<LayerPath> {
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
    pub fn join(&self, name: &str) -> Result<LayerPath> {
        validate_name(name)?;
        let len = self.0.len() + usize::from(!self.is_root()) + name.len();
        if len > PATH_MAX {
            return Err(Error::new(
                ErrorKind::NameTooLong,
                Operation::ParsePath,
                format!("{}/{name}", self.0),
            ));
        }
        Ok(self.join_unchecked(name))
    }

    /// Joins a name known to be valid (the caller checked it).
    pub(crate) fn join_unchecked(&self, name: &str) -> LayerPath {
        debug_assert!(validate_name(name).is_ok(), "invalid name {name:?}");
        if self.is_root() {
            LayerPath(name.to_owned())
        } else {
            let mut s = String::with_capacity(self.0.len() + 1 + name.len());
            s.push_str(&self.0);
            s.push('/');
            s.push_str(name);
            LayerPath(s)
        }
    }

    /// Whether this is the root.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as a string (`""` for the root).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as a camino path.
    #[must_use]
    pub fn as_path(&self) -> &Utf8Path {
        Utf8Path::new(&self.0)
    }

    /// The last component, `None` for the root.
    #[must_use]
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            None
        } else {
            Some(self.0.rsplit('/').next().unwrap_or_default())
        }
    }

    /// The parent directory, `None` for the root.
    #[must_use]
    pub fn parent(&self) -> Option<LayerPath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => LayerPath(self.0[..i].to_owned()),
            None => LayerPath::root(),
        })
    }

    /// The components, root first.
    pub fn names(&self) -> impl DoubleEndedIterator<Item = &str> + '_ {
        self.0.split('/').filter(|s| !s.is_empty())
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
            || (self.0.starts_with(ancestor.as_str())
                && self.0.as_bytes().get(ancestor.as_str().len()) == Some(&b'/'))
    }

    /// The rest of this path below `ancestor`, if it is one.
    #[must_use]
    pub fn strip_prefix(&self, ancestor: &LayerPath) -> Option<LayerPath> {
        if ancestor.is_root() {
            Some(self.clone())
        } else if self == ancestor {
            Some(LayerPath::root())
        } else if self.starts_with(ancestor) {
            Some(LayerPath(self.0[ancestor.as_str().len() + 1..].to_owned()))
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for LayerPath {
    /// The root shows as `.`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.pad(".")
        } else {
            f.pad(&self.0)
        }
    }
}

impl AsRef<Utf8Path> for LayerPath {
    fn as_ref(&self) -> &Utf8Path {
        self.as_path()
    }
}

impl AsRef<str> for LayerPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for LayerPath {
    type Error = Error;
    fn try_from(s: &str) -> Result<LayerPath> {
        LayerPath::new(s)
    }
}

/// Checks one name: not empty, not `.` or `..`, no `/` or NUL, at most
/// [`NAME_MAX`] bytes.
///
/// # Errors
/// `EINVAL` or `ENAMETOOLONG`, with a detail that says which rule failed.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let invalid = |detail: &str| {
        Err(Error::new(ErrorKind::InvalidInput, Operation::ParsePath, name).with_detail(detail))
    };
    if name.is_empty() {
        return invalid("empty name");
    }
    if name == "." || name == ".." {
        return invalid("`.` and `..` are not names");
    }
    if name.contains('/') {
        return invalid("a name cannot contain `/`");
    }
    if name.contains('\0') {
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
    Name(&'a str),
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
    pub(crate) fn parse(path: &'a str, op: Operation) -> Result<UserPath<'a>> {
        if path.is_empty() {
            return Err(Error::new(ErrorKind::NotFound, op, path));
        }
        if path.contains('\0') {
            return Err(Error::new(ErrorKind::InvalidInput, op, path)
                .with_detail("path contains a NUL byte"));
        }
        if path.len() > PATH_MAX {
            return Err(Error::new(ErrorKind::NameTooLong, op, path));
        }
        let mut components = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => components.push(Component::Parent),
                name if name.len() > NAME_MAX => {
                    return Err(Error::new(ErrorKind::NameTooLong, op, path));
                }
                name => components.push(Component::Name(name)),
            }
        }
        let ends_in_dot = path.split('/').rev().find(|p| !p.is_empty()) == Some(".");
        let trailing_slash = path.ends_with('/') || ends_in_dot;
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
    fn ordering_is_by_component() {
        let mut v: Vec<LayerPath> = ["a-b", "a/b", "a", ""]
            .iter()
            .map(|s| LayerPath::new(s).unwrap())
            .collect();
        v.sort();
        let got: Vec<&str> = v.iter().map(LayerPath::as_str).collect();
        assert_eq!(got, ["", "a", "a/b", "a-b"]);
    }

    #[test]
    fn prefix_helpers() {
        let p = LayerPath::new("a/b/c").unwrap();
        let a = LayerPath::new("a").unwrap();
        let ab = LayerPath::new("ab").unwrap();
        assert!(p.starts_with(&a));
        assert!(!ab.starts_with(&a));
        assert_eq!(p.strip_prefix(&a).unwrap().as_str(), "b/c");
        assert_eq!(
            p.rebase(&a, &LayerPath::new("x").unwrap())
                .unwrap()
                .as_str(),
            "x/b/c"
        );
        assert_eq!(p.parent().unwrap().parent().unwrap(), a);
        assert_eq!(a.parent().unwrap(), LayerPath::root());
        assert_eq!(p.depth(), 3);
    }

    #[test]
    fn user_paths() {
        let u = UserPath::parse("//a/./b/../c/", Operation::Lookup).unwrap();
        assert_eq!(
            u.components,
            vec![
                Component::Name("a"),
                Component::Name("b"),
                Component::Parent,
                Component::Name("c")
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
            let u = UserPath::parse(path, Operation::Lookup).unwrap();
            assert_eq!(u.last_kind(), kind, "{path}");
            assert_eq!(u.ends_in_dot, kind == LastKind::Dot, "{path}");
        }
        assert_eq!(
            UserPath::parse("", Operation::Lookup).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            UserPath::parse("a\0", Operation::Lookup)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        let long = format!("a/{}", "y".repeat(256));
        assert_eq!(
            UserPath::parse(&long, Operation::Lookup)
                .unwrap_err()
                .kind(),
            ErrorKind::NameTooLong
        );
        assert_eq!(
            UserPath::parse(&"a/".repeat(2048), Operation::Lookup)
                .unwrap_err()
                .kind(),
            ErrorKind::NameTooLong
        );
    }
}
