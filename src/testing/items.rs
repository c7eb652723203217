//! Random layers: what goes into one ([`LayerItem`]), how it is built
//! ([`build_layer`]) and the proptest strategies.

use std::fmt;

use proptest::collection::vec;
use proptest::prelude::*;

use crate::layer::mem::MemLayer;
use crate::layer::{Layer, LayerMut, Redirect};
use crate::meta::{FileType, Metadata, Timestamp, makedev};
use crate::path::{LayerPath, NameBuf};
use crate::testing::NAMES;

/// Mode, owner and modification time of a generated object.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Seconds of atime, mtime and ctime.
    pub time: i64,
}

impl fmt::Debug for Attrs {
    /// The mode in octal, as people read modes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attrs")
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("time", &self.time)
            .finish()
    }
}

impl Attrs {
    /// Metadata of a new object of `file_type` with these attributes.
    #[must_use]
    pub fn metadata(self, file_type: FileType) -> Metadata {
        Metadata::new(file_type)
            .with_mode(self.mode)
            .with_owner(self.uid, self.gid)
            .with_times(Timestamp::new(self.time, 0))
    }
}

/// One thing put into a generated layer, in order; [`build_layer`] applies
/// a list of them.
///
/// Paths are normalised layer paths (`a/b`); parents are created as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerItem {
    /// A regular file.
    File {
        /// Where.
        path: NameBuf,
        /// Contents.
        data: Vec<u8>,
        /// Mode, owner, time.
        attrs: Attrs,
    },
    /// A directory (an existing one gets the attributes).
    Dir {
        /// Where.
        path: NameBuf,
        /// Mode, owner, time.
        attrs: Attrs,
    },
    /// An opaque directory (an existing directory becomes opaque).
    OpaqueDir {
        /// Where.
        path: NameBuf,
    },
    /// A symlink, target verbatim.
    Symlink {
        /// Where.
        path: NameBuf,
        /// Target.
        target: NameBuf,
    },
    /// Another name for an existing non-directory.
    HardLink {
        /// The existing name.
        existing: NameBuf,
        /// The new name.
        new: NameBuf,
    },
    /// A fifo, device or socket.
    Special {
        /// Where.
        path: NameBuf,
        /// Which type (a special one).
        file_type: FileType,
        /// Device number (for devices).
        rdev: u64,
        /// Mode, owner, time.
        attrs: Attrs,
    },
    /// A whiteout.
    Whiteout {
        /// Where.
        path: NameBuf,
    },
    /// A redirect on an existing directory, as the kernel stores it (a
    /// single name, or an absolute path), parsed when the item is applied
    /// ([`Redirect::parse`]).
    Redirect {
        /// The directory.
        path: NameBuf,
        /// The redirect.
        redirect: NameBuf,
    },
    /// An extended attribute on an existing object (`user.` ones only on
    /// regular files and directories, as the kernel allows).
    Xattr {
        /// The object.
        path: NameBuf,
        /// Name.
        name: String,
        /// Value.
        value: Vec<u8>,
    },
}

/// Builds a [`MemLayer`] from `items`, in order, through its public API.
///
/// An item that cannot be added (the name is taken, a parent is not a
/// directory, a hard link to a directory, ...) is skipped: this never
/// fails and never panics.
///
/// ```
/// use layerstack::{Layer, LayerPath};
/// use layerstack::testing::{LayerItem, build_layer};
///
/// let layer = build_layer(&[
///     LayerItem::Whiteout { path: "a".into() },
///     LayerItem::Symlink { path: "a/b".into(), target: "..".into() }, // parent is a whiteout: a directory replaces it
///     LayerItem::Symlink { path: "a/b/c".into(), target: "x".into() }, // parent is a symlink: skipped
/// ]);
/// assert!(layer.lookup(&LayerPath::new("a/b")?)?.is_some());
/// assert!(layer.lookup(&LayerPath::new("a/b/c")?)?.is_none());
/// # Ok::<(), layerstack::Error>(())
/// ```
#[must_use]
pub fn build_layer(items: &[LayerItem]) -> MemLayer {
    let mut layer = MemLayer::new();
    for item in items {
        // Failing items are skipped by design.
        let _ = add_item(&mut layer, item);
    }
    layer
}

fn add_item(layer: &mut MemLayer, item: &LayerItem) -> crate::Result<()> {
    match item {
        LayerItem::File { path, data, attrs } => {
            layer.add_file_with(path, data.clone(), attrs.metadata(FileType::File))
        }
        LayerItem::Dir { path, attrs } => layer.add_dir_with(path, attrs.metadata(FileType::Dir)),
        LayerItem::OpaqueDir { path } => layer.add_opaque_dir(path),
        LayerItem::Symlink { path, target } => layer.add_symlink(path, target),
        LayerItem::HardLink { existing, new } => layer.add_hard_link(existing, new),
        LayerItem::Special {
            path,
            file_type,
            rdev,
            attrs,
        } => {
            let rdev = match file_type {
                FileType::CharDevice | FileType::BlockDevice => *rdev,
                _ => 0,
            };
            if !file_type.is_special() || (*file_type == FileType::CharDevice && rdev == 0) {
                // Not special, or the whiteout marker: not an object.
                return Ok(());
            }
            layer.add_special(path, attrs.metadata(*file_type).with_rdev(rdev))
        }
        LayerItem::Whiteout { path } => layer.add_whiteout(path),
        LayerItem::Redirect { path, redirect } => {
            let path = LayerPath::new(path)?;
            layer.set_redirect(&path, Some(Redirect::parse(redirect)))
        }
        LayerItem::Xattr { path, name, value } => {
            let path = LayerPath::new(path)?;
            let Some(node) = layer.lookup(&path)?.and_then(|e| e.node().cloned()) else {
                return Ok(());
            };
            if !crate::meta::xattr_allowed_on(node.meta.file_type, name) {
                return Ok(());
            }
            let mut meta = node.meta;
            meta.xattrs.insert(name.clone(), value.clone());
            layer.set_metadata(&path, &meta)
        }
    }
}

/// Modes generated for objects: the usual ones, and setuid, setgid and
/// sticky bits.
pub(crate) const MODES: [u32; 8] = [0o644, 0o755, 0o600, 0o000, 0o4755, 0o2775, 0o1777, 0o777];
/// Owners generated.
pub(crate) const IDS: [u32; 3] = [0, 1, 1000];
/// Times generated (seconds).
pub(crate) const TIMES: [i64; 3] = [0, 1, 1_700_000_000];
/// Special types generated in layers.
pub(crate) const SPECIAL_TYPES: [FileType; 4] = [
    FileType::Fifo,
    FileType::CharDevice,
    FileType::BlockDevice,
    FileType::Socket,
];
/// Device numbers generated (never 0/0 for a character device: that is the
/// whiteout marker).
pub(crate) const RDEVS: [u64; 3] = [makedev(1, 3), makedev(8, 1), makedev(4, 64)];
/// Extended attribute names generated in layers.
pub(crate) const LAYER_XATTRS: [&str; 2] = ["user.x", "trusted.y"];

/// A normalised layer path of depth 1 to 3 over [`NAMES`], shallow ones
/// more often (deep ones create their parents as directories, and a tree
/// of nothing but directories exercises little).
pub(crate) fn layer_path() -> impl Strategy<Value = NameBuf> {
    prop_oneof![3 => Just(1usize), 2 => Just(2), 1 => Just(3)]
        .prop_flat_map(|depth| vec(proptest::sample::select(&NAMES[..]), depth))
        .prop_map(|names| NameBuf::from(names.join(&b'/')))
}

fn attrs() -> impl Strategy<Value = Attrs> {
    (
        prop_oneof![3 => Just(0o644), 3 => Just(0o755), 2 => proptest::sample::select(&MODES[..])],
        proptest::sample::select(&IDS[..]),
        proptest::sample::select(&IDS[..]),
        proptest::sample::select(&TIMES[..]),
    )
        .prop_map(|(mode, uid, gid, time)| Attrs {
            mode,
            uid,
            gid,
            time,
        })
}

fn small_data() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![4 => proptest::sample::select(&b"xyz"[..]), 1 => any::<u8>()],
        0..=8,
    )
}

/// A symlink target: relative or absolute, dangling or not, with `.` and
/// `..`, looping back to itself at times; never empty.
pub(crate) fn symlink_target() -> impl Strategy<Value = NameBuf> {
    crate::testing::ops::user_path().prop_map(|p| if p.is_empty() { NameBuf::from(".") } else { p })
}

fn redirect() -> impl Strategy<Value = NameBuf> {
    prop_oneof![
        proptest::sample::select(&NAMES[..]).prop_map(NameBuf::from),
        layer_path().prop_map(|p| NameBuf::from([b"/".as_slice(), p.as_bytes()].concat())),
    ]
}

fn layer_item() -> impl Strategy<Value = LayerItem> {
    prop_oneof![
        6 => (layer_path(), small_data(), attrs())
            .prop_map(|(path, data, attrs)| LayerItem::File { path, data, attrs }),
        4 => (layer_path(), attrs()).prop_map(|(path, attrs)| LayerItem::Dir { path, attrs }),
        1 => layer_path().prop_map(|path| LayerItem::OpaqueDir { path }),
        3 => (layer_path(), symlink_target())
            .prop_map(|(path, target)| LayerItem::Symlink { path, target }),
        2 => (layer_path(), layer_path())
            .prop_map(|(existing, new)| LayerItem::HardLink { existing, new }),
        1 => (
            layer_path(),
            proptest::sample::select(&SPECIAL_TYPES[..]),
            proptest::sample::select(&RDEVS[..]),
            attrs()
        )
            .prop_map(|(path, file_type, rdev, attrs)| LayerItem::Special {
                path,
                file_type,
                rdev,
                attrs,
            }),
        3 => layer_path().prop_map(|path| LayerItem::Whiteout { path }),
        1 => (layer_path(), redirect())
            .prop_map(|(path, redirect)| LayerItem::Redirect { path, redirect }),
        2 => (
            layer_path(),
            proptest::sample::select(&LAYER_XATTRS[..]),
            vec(proptest::sample::select(&b"vw"[..]), 0..=3)
        )
            .prop_map(|(path, name, value)| LayerItem::Xattr {
                path,
                name: name.to_owned(),
                value,
            }),
    ]
}

/// One item, or a file with a second name or an attribute right after it
/// (independent items would rarely hit an existing file).
fn item_group() -> impl Strategy<Value = Vec<LayerItem>> {
    prop_oneof![
        6 => layer_item().prop_map(|item| vec![item]),
        1 => (layer_path(), small_data(), attrs(), layer_path()).prop_map(
            |(path, data, attrs, new)| vec![
                LayerItem::File { path: path.clone(), data, attrs },
                LayerItem::HardLink { existing: path, new },
            ]
        ),
        1 => (layer_item(), proptest::sample::select(&LAYER_XATTRS[..]), small_data()).prop_map(
            |(item, name, value)| {
                let path = match &item {
                    LayerItem::File { path, .. }
                    | LayerItem::Dir { path, .. }
                    | LayerItem::OpaqueDir { path }
                    | LayerItem::Symlink { path, .. }
                    | LayerItem::Special { path, .. }
                    | LayerItem::Whiteout { path }
                    | LayerItem::Redirect { path, .. }
                    | LayerItem::Xattr { path, .. } => path.clone(),
                    LayerItem::HardLink { new, .. } => new.clone(),
                };
                vec![item, LayerItem::Xattr { path, name: name.to_owned(), value }]
            }
        ),
    ]
}

/// The most items [`layer_items_strategy`] generates for one layer.
pub const MAX_ITEMS: usize = 20;

/// The items of one random layer (up to [`MAX_ITEMS`]), for
/// [`build_layer`].
///
/// Shrinks to fewer and simpler items, and shows readably in a failing
/// case, which a built [`MemLayer`] does not.
pub fn layer_items_strategy() -> impl Strategy<Value = Vec<LayerItem>> {
    vec(item_group(), 0..=MAX_ITEMS / 2).prop_map(|groups| groups.concat())
}

/// The items of a random stack of 1 to `max_layers` layers, top first.
pub fn stack_items_strategy(max_layers: usize) -> impl Strategy<Value = Vec<Vec<LayerItem>>> {
    vec(layer_items_strategy(), 1..=max_layers.max(1))
}

/// A random layer over the names `a`, `b`, `c`, at most 3 deep: files with
/// small contents, directories, symlinks (dangling, looping, absolute,
/// with `..`), hard links, extended attributes (`user.x`, `trusted.y`),
/// fifos, devices and sockets, whiteouts, opaque directories and
/// redirects, with varied modes (setuid, setgid, sticky), owners and times.
///
/// Whiteouts, opaque directories and redirects only mean something in a
/// layer that has layers below it, but they are generated in every layer.
///
/// ```
/// use layerstack::testing::{check_layer_conformance, layer_strategy};
/// use proptest::strategy::{Strategy, ValueTree};
/// use proptest::test_runner::TestRunner;
///
/// let mut runner = TestRunner::deterministic();
/// let layer = layer_strategy().new_tree(&mut runner).unwrap().current();
/// check_layer_conformance(&layer, &layer.clone()).unwrap();
/// ```
pub fn layer_strategy() -> impl Strategy<Value = MemLayer> {
    layer_items_strategy().prop_map(|items| build_layer(&items))
}

/// A random stack of 1 to `max_layers` layers (top first), each as
/// [`layer_strategy`].
pub fn stack_strategy(max_layers: usize) -> impl Strategy<Value = Vec<MemLayer>> {
    stack_items_strategy(max_layers)
        .prop_map(|layers| layers.iter().map(|items| build_layer(items)).collect())
}
