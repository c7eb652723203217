//! The conformance suite for [`Layer`] implementations.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{ErrorKind, Result};
use crate::layer::mem::MemLayer;
use crate::layer::{DirListing, Entry, Layer, Node};
use crate::meta::{FileType, Metadata};
use crate::path::LayerPath;

/// A call that a [`Layer`] answered differently from the reference, as
/// [`check_layer_conformance`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nonconformance {
    /// The path the call was given.
    pub path: LayerPath,
    /// The call, for example `read_dir` or `read_at(3, 4)`.
    pub call: String,
    /// What the reference (or the [`Layer`] documentation) says.
    pub expected: String,
    /// What the layer answered.
    pub got: String,
}

impl fmt::Display for Nonconformance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of `{}`: expected {}, got {}",
            self.call, self.path, self.expected, self.got
        )
    }
}

impl std::error::Error for Nonconformance {}

/// Checks that `layer` answers every [`Layer`] call exactly as `expected`,
/// a [`MemLayer`] holding the same content, does.
///
/// The suite walks `expected` from its root, and for every path in it,
/// every name it does not hold in each of its directories, and a name below
/// every non-directory and whiteout, compares:
///
/// - [`Layer::lookup`]: whiteout or object, the opaque and redirect flags,
///   and every metadata field but `ino`. Inode numbers need only be
///   consistent: names of one inode in `expected` (hard links) share one
///   `ino` in `layer`, and different inodes have different ones.
/// - [`Layer::read_dir`]: the listing, whiteouts and opaque flag included;
///   names are compared byte for byte (names are bytes: a backend must
///   store and list one that is not UTF-8 exactly).
/// - [`Layer::read_at`] at several offsets and lengths, past the end
///   included, and the whole contents read in small pieces.
/// - [`Layer::read_link`]: the target, verbatim, byte for byte.
/// - The error kinds the [`Layer`] documentation gives for misuse:
///   `read_dir` of a non-directory is `ENOTDIR`, of a missing path (a
///   whiteout, or anything below a non-directory or a whiteout, included)
///   `ENOENT`; `read_at` of a directory is `EISDIR`, of another
///   non-regular file `EINVAL`, of a missing path `ENOENT`; `read_link` of
///   anything but a symlink `EINVAL`, of a missing path `ENOENT`; `lookup`
///   of a missing path is `Ok(None)`.
///
/// ```
/// use layerstack::MemLayer;
/// use layerstack::testing::check_layer_conformance;
///
/// let mut reference = MemLayer::new();
/// reference.add_file("a", "1")?;
/// let mut other = MemLayer::new();
/// other.add_file("a", "2")?;
/// let err = check_layer_conformance(&other, &reference).unwrap_err();
/// assert_eq!(err.path, "a");
/// assert_eq!(err.to_string(), "read_at(0, 2) of `a`: expected Ok(b\"1\"), got Ok(b\"2\")");
/// # Ok::<(), layerstack::Error>(())
/// ```
///
/// # Errors
/// The first call answered differently, naming the path and the call.
pub fn check_layer_conformance(
    layer: &dyn Layer,
    expected: &MemLayer,
) -> Result<(), Nonconformance> {
    check_layer_conformance_with(layer, expected, Strictness::Exact)
}

/// Which metadata a conformance check compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    /// Every field but `ino` (which must only map one to one).
    #[default]
    Exact,
    /// What a filesystem lets a writer choose: no `ctime` (the kernel sets
    /// it), no `atime` (reads may move it), no directory size (each
    /// filesystem has its own). For layers on disk.
    Filesystem,
}

/// As [`check_layer_conformance`], comparing the metadata `strictness` says.
///
/// # Errors
/// The first call answered differently, naming the path and the call.
pub fn check_layer_conformance_with(
    layer: &dyn Layer,
    expected: &MemLayer,
    strictness: Strictness,
) -> Result<(), Nonconformance> {
    Checker {
        layer,
        reference: expected,
        strictness,
        inos: BTreeMap::new(),
        inos_back: BTreeMap::new(),
    }
    .visit(&LayerPath::root())
}

/// Names probed in every directory when the reference does not hold them:
/// the generator's alphabet (names that are not UTF-8 among them), names
/// no generator uses (a Latin-1 one too), and the names the OCI encoding
/// reserves (a layer must never show its bookkeeping).
const PROBE_NAMES: [&[u8]; 10] = [
    b"a",
    b"b",
    b"c",
    b"caf\xe9",
    b"\xc6\xfc\xcb\xdc",
    b"d",
    b"missing-name",
    b"na\xefve",
    b".wh.a",
    b".wh..wh..opq",
];

struct Checker<'a> {
    layer: &'a dyn Layer,
    reference: &'a MemLayer,
    strictness: Strictness,
    /// Reference ino to the layer's ino.
    inos: BTreeMap<u64, u64>,
    /// The layer's ino to the reference ino.
    inos_back: BTreeMap<u64, u64>,
}

fn fail(
    path: &LayerPath,
    call: impl Into<String>,
    expected: impl Into<String>,
    got: impl Into<String>,
) -> Nonconformance {
    Nonconformance {
        path: path.clone(),
        call: call.into(),
        expected: expected.into(),
        got: got.into(),
    }
}

/// A value as a message shows it.
fn dbg(v: impl fmt::Debug) -> String {
    format!("{v:?}")
}

/// A result with the error reduced to its kind, for comparison.
fn kind_of<T>(r: Result<T>) -> Result<T, ErrorKind> {
    r.map_err(|e| e.kind())
}

impl Checker<'_> {
    fn visit(&mut self, path: &LayerPath) -> Result<(), Nonconformance> {
        let want = self
            .reference
            .lookup(path)
            .map_err(|e| fail(path, "lookup (of the reference)", "Ok", e.to_string()))?;
        let got = self
            .layer
            .lookup(path)
            .map_err(|e| fail(path, "lookup", describe(&want), e.to_string()))?;
        match (&want, &got) {
            (None, None) => self.check_missing(path),
            (Some(Entry::Whiteout), Some(Entry::Whiteout)) => {
                self.check_missing_calls(path)?;
                self.check_nothing_below(path)
            }
            (Some(Entry::Node(w)), Some(Entry::Node(g))) => {
                self.check_node(path, w, g)?;
                match w.meta.file_type {
                    FileType::Dir => self.check_dir(path),
                    FileType::File => self.check_file(path, w.meta.size),
                    FileType::Symlink => self.check_symlink(path),
                    _ => self.check_special(path),
                }
            }
            _ => Err(fail(path, "lookup", describe(&want), describe(&got))),
        }
    }

    fn check_node(
        &mut self,
        path: &LayerPath,
        want: &Node,
        got: &Node,
    ) -> Result<(), Nonconformance> {
        if want.opaque != got.opaque {
            return Err(fail(
                path,
                "lookup (opaque)",
                want.opaque.to_string(),
                got.opaque.to_string(),
            ));
        }
        if want.redirect != got.redirect {
            return Err(fail(
                path,
                "lookup (redirect)",
                dbg(&want.redirect),
                dbg(&got.redirect),
            ));
        }
        if let Some((field, w, g)) = metadata_difference(&want.meta, &got.meta, self.strictness) {
            return Err(Nonconformance {
                path: path.clone(),
                call: format!("lookup ({field})"),
                expected: w,
                got: g,
            });
        }
        let (w, g) = (want.meta.ino, got.meta.ino);
        match (self.inos.get(&w), self.inos_back.get(&g)) {
            (None, None) => {
                self.inos.insert(w, g);
                self.inos_back.insert(g, w);
                Ok(())
            }
            (Some(&seen), _) if seen != g => Err(fail(
                path,
                "lookup (ino: names of one inode share it)",
                format!("ino {seen}, as another name of this inode"),
                format!("ino {g}"),
            )),
            (_, Some(&other)) if other != w => Err(fail(
                path,
                "lookup (ino: distinct inodes differ)",
                "an ino no other inode has",
                format!("ino {g}, which another inode has"),
            )),
            _ => Ok(()),
        }
    }

    fn check_dir(&mut self, path: &LayerPath) -> Result<(), Nonconformance> {
        let want = kind_of(self.reference.read_dir(path));
        let got = kind_of(self.layer.read_dir(path));
        if want != got {
            return Err(fail(path, "read_dir", listing(&want), listing(&got)));
        }
        self.expect_kind(
            path,
            "read_at(0, 1)",
            self.layer.read_at(path, 0, 1),
            ErrorKind::IsADirectory,
        )?;
        self.expect_kind(
            path,
            "read_link",
            self.layer.read_link(path),
            ErrorKind::InvalidInput,
        )?;
        let Ok(listing) = want else {
            return Err(fail(
                path,
                "read_dir (of the reference)",
                "Ok",
                listing(&want),
            ));
        };
        for (name, _) in &listing.entries {
            let child = path.join(name).map_err(|e| {
                fail(
                    path,
                    "read_dir (of the reference)",
                    "valid names",
                    e.to_string(),
                )
            })?;
            self.visit(&child)?;
        }
        for name in PROBE_NAMES {
            if listing.entries.iter().all(|(n, _)| n.as_bytes() != name) {
                self.visit(&path.join(name).expect("probe names are valid"))?;
            }
        }
        Ok(())
    }

    fn check_file(&mut self, path: &LayerPath, size: u64) -> Result<(), Nonconformance> {
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        let probes = [
            (0, len.saturating_add(1)),
            (0, 0),
            (0, 1),
            (1, 2),
            (size / 2, len),
            (size.saturating_sub(1), 1),
            (size, 1),
            (size.saturating_add(7), 3),
        ];
        for (offset, len) in probes {
            let want = kind_of(self.reference.read_at(path, offset, len));
            let got = kind_of(self.layer.read_at(path, offset, len));
            if want != got {
                return Err(fail(
                    path,
                    format!("read_at({offset}, {len})"),
                    shown(&want),
                    shown(&got),
                ));
            }
        }
        // The whole file in pieces: no short reads inside the file.
        let mut offset = 0;
        while offset < size {
            let want = kind_of(self.reference.read_at(path, offset, 3));
            let got = kind_of(self.layer.read_at(path, offset, 3));
            if want != got {
                return Err(fail(
                    path,
                    format!("read_at({offset}, 3)"),
                    shown(&want),
                    shown(&got),
                ));
            }
            offset += 3;
        }
        self.expect_kind(
            path,
            "read_dir",
            self.layer.read_dir(path),
            ErrorKind::NotADirectory,
        )?;
        self.expect_kind(
            path,
            "read_link",
            self.layer.read_link(path),
            ErrorKind::InvalidInput,
        )?;
        self.check_nothing_below(path)
    }

    fn check_symlink(&mut self, path: &LayerPath) -> Result<(), Nonconformance> {
        let want = kind_of(self.reference.read_link(path));
        let got = kind_of(self.layer.read_link(path));
        if want != got {
            return Err(fail(path, "read_link", shown(&want), shown(&got)));
        }
        self.expect_kind(
            path,
            "read_dir",
            self.layer.read_dir(path),
            ErrorKind::NotADirectory,
        )?;
        self.expect_kind(
            path,
            "read_at(0, 1)",
            self.layer.read_at(path, 0, 1),
            ErrorKind::InvalidInput,
        )?;
        self.check_nothing_below(path)
    }

    fn check_special(&mut self, path: &LayerPath) -> Result<(), Nonconformance> {
        self.expect_kind(
            path,
            "read_dir",
            self.layer.read_dir(path),
            ErrorKind::NotADirectory,
        )?;
        self.expect_kind(
            path,
            "read_at(0, 1)",
            self.layer.read_at(path, 0, 1),
            ErrorKind::InvalidInput,
        )?;
        self.expect_kind(
            path,
            "read_link",
            self.layer.read_link(path),
            ErrorKind::InvalidInput,
        )?;
        self.check_nothing_below(path)
    }

    /// Nothing exists below a non-directory or a whiteout.
    fn check_nothing_below(&mut self, path: &LayerPath) -> Result<(), Nonconformance> {
        let below = path.join("a").expect("valid name");
        self.check_missing(&below)
    }

    /// `path` is missing: `lookup` is `None` and the other calls `ENOENT`.
    fn check_missing(&mut self, path: &LayerPath) -> Result<(), Nonconformance> {
        match self.layer.lookup(path) {
            Ok(None) => {}
            Ok(got) => return Err(fail(path, "lookup", "nothing", describe(&got))),
            Err(e) => return Err(fail(path, "lookup", "nothing", e.to_string())),
        }
        self.check_missing_calls(path)
    }

    fn check_missing_calls(&mut self, path: &LayerPath) -> Result<(), Nonconformance> {
        self.expect_kind(
            path,
            "read_dir",
            self.layer.read_dir(path),
            ErrorKind::NotFound,
        )?;
        self.expect_kind(
            path,
            "read_at(0, 1)",
            self.layer.read_at(path, 0, 1),
            ErrorKind::NotFound,
        )?;
        self.expect_kind(
            path,
            "read_link",
            self.layer.read_link(path),
            ErrorKind::NotFound,
        )
    }

    fn expect_kind<T: fmt::Debug>(
        &self,
        path: &LayerPath,
        call: &str,
        got: Result<T>,
        kind: ErrorKind,
    ) -> Result<(), Nonconformance> {
        match got {
            Err(e) if e.kind() == kind => Ok(()),
            Err(e) => Err(fail(
                path,
                call,
                kind.errno_name(),
                format!("{} ({e})", e.kind().errno_name()),
            )),
            Ok(v) => Err(fail(path, call, kind.errno_name(), format!("Ok({v:?})"))),
        }
    }
}

/// How a lookup answer shows in a message.
fn describe(entry: &Option<Entry>) -> String {
    match entry {
        None => String::from("nothing"),
        Some(Entry::Whiteout) => String::from("a whiteout"),
        Some(Entry::Node(n)) => format!("{:?}", n.meta.file_type),
    }
}

/// How a result shows in a message: the value, or the errno name.
fn shown<T: fmt::Debug>(r: &Result<T, ErrorKind>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(k) => k.errno_name().to_owned(),
    }
}

/// How a read_dir answer shows in a message.
fn listing(r: &Result<DirListing, ErrorKind>) -> String {
    match r {
        Ok(l) => format!("{l:?}"),
        Err(k) => k.errno_name().to_owned(),
    }
}

/// The first field (but `ino`) in which two metadata differ, with both
/// values.
fn metadata_difference(
    want: &Metadata,
    got: &Metadata,
    strictness: Strictness,
) -> Option<(&'static str, String, String)> {
    let exact = strictness == Strictness::Exact;
    macro_rules! field {
        ($name:ident) => {
            if want.$name != got.$name {
                return Some((
                    stringify!($name),
                    format!("{:?}", want.$name),
                    format!("{:?}", got.$name),
                ));
            }
        };
    }
    field!(file_type);
    if want.mode != got.mode {
        return Some((
            "mode",
            format!("{:#o}", want.mode),
            format!("{:#o}", got.mode),
        ));
    }
    field!(uid);
    field!(gid);
    if exact || !want.is_dir() {
        field!(size);
    }
    field!(nlink);
    field!(rdev);
    if exact {
        field!(atime);
    }
    field!(mtime);
    if exact {
        field!(ctime);
    }
    field!(xattrs);
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{LayerMut, Redirect};

    #[test]
    fn memlayer_conforms_to_itself() {
        let mut l = MemLayer::new();
        l.add_file("a/b", "hello").unwrap();
        l.add_hard_link("a/b", "c").unwrap();
        l.add_symlink("a/l", "../c").unwrap();
        l.add_whiteout("b").unwrap();
        l.add_opaque_dir("a/o").unwrap();
        l.set_redirect(&LayerPath::new("a/o").unwrap(), Some(Redirect::parse("/x")))
            .unwrap();
        l.add_special(
            "a/dev",
            Metadata::new(FileType::CharDevice).with_rdev(crate::makedev(1, 3)),
        )
        .unwrap();
        check_layer_conformance(&l, &l.clone()).unwrap();
    }

    #[test]
    fn reports_differences_with_the_path() {
        let mut reference = MemLayer::new();
        reference.add_file("d/f", "x").unwrap();
        let mut other = MemLayer::new();
        other.add_dir("d").unwrap();
        other.add_whiteout("d/f").unwrap();
        let err = check_layer_conformance(&other, &reference).unwrap_err();
        assert_eq!(err.path, "d");
        assert_eq!(err.call, "read_dir");

        let mut other = MemLayer::new();
        other
            .add_file_with("d/f", "x", Metadata::new(FileType::File).with_mode(0o600))
            .unwrap();
        let err = check_layer_conformance(&other, &reference).unwrap_err();
        assert_eq!(
            err.to_string(),
            "lookup (mode) of `d/f`: expected 0o644, got 0o600"
        );
    }
}
