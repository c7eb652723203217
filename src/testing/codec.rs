//! A compact byte encoding of a layer stack and an operation sequence, for
//! fuzzing: every byte string decodes to some [`Scenario`], and the
//! scenarios the strategies generate encode back to bytes (to write seed
//! files).
//!
//! Layout (a read past the end gives 0; every choice is a byte taken modulo
//! the number of choices):
//!
//! ```text
//! scenario  = layers:u8 (0..=3) layer* op* (until the input ends, at most MAX_OPS)
//! layer     = items:u8 (0..=MAX_ITEMS) item*
//! item      = tag:u8 (9) fields    File lpath data attrs | Dir lpath attrs | OpaqueDir lpath
//!             | Symlink lpath upath | HardLink lpath lpath | Special lpath type(4) rdev(3) attrs
//!             | Whiteout lpath | Redirect (0 name | 1 lpath) | Xattr lpath name(2) data
//! lpath     = depth:u8 (1..=3) name(5)*          "a/b/c" (NAMES: bytes)
//! upath     = flags:u8 (bits 0-1 count, bit 2 leading /, bit 3 trailing /) token(7)*
//! attrs     = mode(8) uid(3) gid(3) time(3)
//! data      = len:u8 (0..=8) byte*
//! op        = tag:u8 (34) fields, in the order of the `Op` variants; offsets and lengths
//!             one byte (0..16), modes two bytes little-endian, ids one byte (0 = None),
//!             times one byte (0 = None, else seconds + 1), open options one byte of flags,
//!             handle slots one byte (the place among the open handles)
//! ```

use std::sync::Arc;

use crate::layer::Layer;
use crate::layer::mem::MemLayer;
use crate::merged::{DirRename, HardLinkCopyUp, OpenOptions, ViewOptions};
use crate::meta::Timestamp;
use crate::path::NameBuf;
use crate::testing::compare::{Divergence, check_model_vs_view};
use crate::testing::items::{
    Attrs, IDS, LAYER_XATTRS, LayerItem, MAX_ITEMS, MODES, RDEVS, SPECIAL_TYPES, TIMES, build_layer,
};
use crate::testing::ops::{
    FILE_TYPES, MKNOD_RDEVS, Op, RENAME_MODES, TOKENS, XATTR_NAMES, join_user_path,
    open_options_bits, open_options_from_bits,
};
use crate::testing::{NAMES, items, ops};

/// The most lower layers a decoded scenario has.
pub const MAX_LAYERS: usize = 3;
/// The most operations a decoded scenario has.
pub const MAX_OPS: usize = 64;
/// Number of `Op` variants.
const OP_COUNT: u8 = 34;
/// Number of `LayerItem` variants.
const ITEM_COUNT: u8 = 9;
/// The longest data an item or operation carries.
const MAX_DATA: usize = 8;
/// Offsets and lengths are below this.
const MAX_OFFSET: u8 = 16;

/// A lower layer stack (top first, as items) and operations to run on a
/// view over it: what the `ops` fuzz target decodes its input into.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scenario {
    /// The lower layers, top first.
    pub layers: Vec<Vec<LayerItem>>,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Scenario {
    /// Decodes any bytes into a scenario (never fails, never panics).
    ///
    /// ```
    /// use layerstack::testing::{Op, Scenario};
    ///
    /// let s = Scenario::from_bytes(&[0, 27]);
    /// assert!(s.layers.is_empty());
    /// assert_eq!(s.ops, [Op::Commit]);
    /// ```
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Scenario {
        let mut r = Reader { bytes, pos: 0 };
        let layer_count = r.below(MAX_LAYERS as u8 + 1);
        let layers = (0..layer_count)
            .map(|_| {
                let n = r.below(MAX_ITEMS as u8 + 1);
                (0..n).map(|_| r.item()).collect()
            })
            .collect();
        let mut ops = Vec::new();
        while !r.is_empty() && ops.len() < MAX_OPS {
            ops.push(r.op());
        }
        Scenario { layers, ops }
    }

    /// Encodes the scenario, so that [`Scenario::from_bytes`] gives it
    /// back; `None` if some value is outside what the encoding can hold
    /// (more than [`MAX_LAYERS`] layers, [`MAX_ITEMS`] items or [`MAX_OPS`]
    /// operations, names other than `a`, `b`, `c`, values the generators do
    /// not produce).
    ///
    /// ```
    /// use layerstack::testing::{LayerItem, Op, Scenario};
    ///
    /// let s = Scenario {
    ///     layers: vec![vec![LayerItem::Whiteout { path: "a/b".into() }]],
    ///     ops: vec![Op::RemoveDir { path: "/a/../a".into() }],
    /// };
    /// assert_eq!(Scenario::from_bytes(&s.to_bytes().unwrap()), s);
    /// ```
    #[must_use]
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        let mut w = Writer::default();
        if self.layers.len() > MAX_LAYERS || self.ops.len() > MAX_OPS {
            return None;
        }
        w.push(self.layers.len())?;
        for items in &self.layers {
            if items.len() > MAX_ITEMS {
                return None;
            }
            w.push(items.len())?;
            for item in items {
                w.item(item)?;
            }
        }
        for op in &self.ops {
            w.op(op)?;
        }
        Some(w.bytes)
    }

    /// The lower layers, built.
    #[must_use]
    pub fn build_layers(&self) -> Vec<MemLayer> {
        self.layers.iter().map(|items| build_layer(items)).collect()
    }

    /// Runs the scenario on the model and on a view with `options`.
    ///
    /// # Errors
    /// The first difference, as [`check_model_vs_view`].
    pub fn check(&self, options: ViewOptions) -> Result<(), Divergence> {
        check_model_vs_view(&self.build_layers(), &self.ops, options)
    }
}

/// Random scenarios within what the byte encoding holds: up to
/// [`MAX_LAYERS`] layers and `max_ops` (at most [`MAX_OPS`]) operations.
pub fn scenario_strategy(max_ops: usize) -> impl proptest::strategy::Strategy<Value = Scenario> {
    use proptest::prelude::*;
    (
        proptest::collection::vec(items::layer_items_strategy(), 0..=MAX_LAYERS),
        ops::ops_strategy(max_ops.min(MAX_OPS)),
    )
        .prop_map(|(layers, ops)| Scenario { layers, ops })
}

/// Decodes bytes into a built lower stack (top first) and operations: the
/// input of the `ops` fuzz target. See [`Scenario::from_bytes`].
#[must_use]
pub fn ops_from_bytes(bytes: &[u8]) -> (Vec<MemLayer>, Vec<Op>) {
    let s = Scenario::from_bytes(bytes);
    (s.build_layers(), s.ops)
}

/// The body of the `ops` fuzz target: decodes `bytes`, runs the operations
/// on the model and on a view over the decoded layers, once with the
/// default [`ViewOptions`] and once with directory redirects and kept hard
/// links, and compares every result and the whole tree after each step.
///
/// ```
/// // One layer holding the file `a` and a whiteout `b/a`; then `create_dir_all("a")`.
/// let bytes = [1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 6, 1, 1, 0, 12, 1, 0];
/// layerstack::testing::check_ops_bytes(&bytes).unwrap();
/// ```
///
/// # Errors
/// The first difference between the model and the view.
pub fn check_ops_bytes(bytes: &[u8]) -> Result<(), Divergence> {
    let (layers, ops) = ops_from_bytes(bytes);
    for options in [
        ViewOptions::default(),
        ViewOptions::default()
            .dir_rename(DirRename::Redirect)
            .hard_links(HardLinkCopyUp::Keep),
    ] {
        check_model_vs_view(&layers, &ops, options)?;
    }
    Ok(())
}

/// The layers as the view and the model take them.
pub(crate) fn shared(layers: &[MemLayer]) -> Vec<Arc<dyn Layer>> {
    layers
        .iter()
        .map(|l| Arc::new(l.clone()) as Arc<dyn Layer>)
        .collect()
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn below(&mut self, n: u8) -> usize {
        usize::from(self.byte() % n)
    }

    fn pick<T: Copy>(&mut self, table: &[T]) -> T {
        table[usize::from(self.byte()) % table.len()]
    }

    fn u16(&mut self) -> u32 {
        u32::from(self.byte()) | (u32::from(self.byte()) << 8)
    }

    fn layer_path(&mut self) -> NameBuf {
        let depth = self.below(3) + 1;
        let names: Vec<&[u8]> = (0..depth).map(|_| self.pick(&NAMES)).collect();
        NameBuf::from(names.join(&b'/'))
    }

    fn user_path(&mut self) -> NameBuf {
        let flags = self.byte();
        let count = usize::from(flags & 3);
        let tokens: Vec<&[u8]> = (0..count).map(|_| self.pick(&TOKENS)).collect();
        join_user_path(flags & 4 != 0, &tokens, flags & 8 != 0)
    }

    fn data(&mut self) -> Vec<u8> {
        let len = self.below(MAX_DATA as u8 + 1);
        (0..len).map(|_| self.byte()).collect()
    }

    fn attrs(&mut self) -> Attrs {
        Attrs {
            mode: self.pick(&MODES),
            uid: self.pick(&IDS),
            gid: self.pick(&IDS),
            time: self.pick(&TIMES),
        }
    }

    fn id(&mut self) -> Option<u32> {
        match self.below(IDS.len() as u8 + 1) {
            0 => None,
            i => Some(IDS[i - 1]),
        }
    }

    fn time(&mut self) -> Option<Timestamp> {
        match self.byte() {
            0 => None,
            b => Some(Timestamp::new(i64::from(b) - 1, 0)),
        }
    }

    fn offset(&mut self) -> u8 {
        self.byte() % MAX_OFFSET
    }

    fn item(&mut self) -> LayerItem {
        match self.byte() % ITEM_COUNT {
            0 => LayerItem::File {
                path: self.layer_path(),
                data: self.data(),
                attrs: self.attrs(),
            },
            1 => LayerItem::Dir {
                path: self.layer_path(),
                attrs: self.attrs(),
            },
            2 => LayerItem::OpaqueDir {
                path: self.layer_path(),
            },
            3 => {
                let path = self.layer_path();
                let target = self.user_path();
                LayerItem::Symlink {
                    path,
                    target: if target.is_empty() {
                        ".".into()
                    } else {
                        target
                    },
                }
            }
            4 => LayerItem::HardLink {
                existing: self.layer_path(),
                new: self.layer_path(),
            },
            5 => LayerItem::Special {
                path: self.layer_path(),
                file_type: self.pick(&SPECIAL_TYPES),
                rdev: self.pick(&RDEVS),
                attrs: self.attrs(),
            },
            6 => LayerItem::Whiteout {
                path: self.layer_path(),
            },
            7 => {
                let path = self.layer_path();
                let redirect = if self.byte() & 1 == 0 {
                    NameBuf::from(self.pick(&NAMES))
                } else {
                    NameBuf::from([b"/".as_slice(), self.layer_path().as_bytes()].concat())
                };
                LayerItem::Redirect { path, redirect }
            }
            _ => LayerItem::Xattr {
                path: self.layer_path(),
                name: self.pick(&LAYER_XATTRS).to_owned(),
                value: self.data(),
            },
        }
    }

    fn op(&mut self) -> Op {
        match self.byte() % OP_COUNT {
            0 => Op::Metadata {
                path: self.user_path(),
            },
            1 => Op::SymlinkMetadata {
                path: self.user_path(),
            },
            2 => Op::Read {
                path: self.user_path(),
            },
            3 => Op::ReadAt {
                path: self.user_path(),
                offset: u64::from(self.offset()),
                len: usize::from(self.offset()),
            },
            4 => Op::ReadDir {
                path: self.user_path(),
            },
            5 => Op::ReadLink {
                path: self.user_path(),
            },
            6 => Op::Write {
                path: self.user_path(),
                data: self.data(),
            },
            7 => Op::Append {
                path: self.user_path(),
                data: self.data(),
            },
            8 => Op::WriteAt {
                path: self.user_path(),
                offset: u64::from(self.offset()),
                data: self.data(),
            },
            9 => Op::SetLen {
                path: self.user_path(),
                len: u64::from(self.offset()),
            },
            10 => {
                let path = self.user_path();
                let options = self.open_options();
                Op::Open { path, options }
            }
            11 => Op::CreateDir {
                path: self.user_path(),
            },
            12 => Op::CreateDirAll {
                path: self.user_path(),
            },
            13 => Op::RemoveFile {
                path: self.user_path(),
            },
            14 => Op::RemoveDir {
                path: self.user_path(),
            },
            15 => Op::RemoveDirAll {
                path: self.user_path(),
            },
            16 => Op::Rename {
                from: self.user_path(),
                to: self.user_path(),
                mode: self.pick(&RENAME_MODES),
            },
            17 => Op::Symlink {
                target: self.user_path(),
                link: self.user_path(),
            },
            18 => Op::HardLink {
                original: self.user_path(),
                link: self.user_path(),
            },
            19 => Op::SetPermissions {
                path: self.user_path(),
                mode: self.u16(),
            },
            20 => Op::SetOwner {
                path: self.user_path(),
                uid: self.id(),
                gid: self.id(),
            },
            21 => Op::SetTimes {
                path: self.user_path(),
                atime: self.time(),
                mtime: self.time(),
            },
            22 => Op::GetXattr {
                path: self.user_path(),
                name: self.pick(&XATTR_NAMES).to_owned(),
            },
            23 => Op::SetXattr {
                path: self.user_path(),
                name: self.pick(&XATTR_NAMES).to_owned(),
                value: self.data(),
            },
            24 => Op::RemoveXattr {
                path: self.user_path(),
                name: self.pick(&XATTR_NAMES).to_owned(),
            },
            25 => Op::ListXattr {
                path: self.user_path(),
            },
            26 => Op::Mknod {
                path: self.user_path(),
                file_type: self.pick(&FILE_TYPES),
                mode: self.u16(),
                rdev: self.pick(&MKNOD_RDEVS),
            },
            27 => Op::Commit,
            28 => {
                let path = self.user_path();
                let options = self.open_options();
                Op::OpenHandle { path, options }
            }
            29 => Op::HandleReadAt {
                slot: self.byte(),
                offset: u64::from(self.offset()),
                len: usize::from(self.offset()),
            },
            30 => Op::HandleWriteAt {
                slot: self.byte(),
                offset: u64::from(self.offset()),
                data: self.data(),
            },
            31 => Op::HandleSetLen {
                slot: self.byte(),
                len: u64::from(self.offset()),
            },
            32 => Op::HandleMetadata { slot: self.byte() },
            _ => Op::CloseHandle { slot: self.byte() },
        }
    }

    fn open_options(&mut self) -> OpenOptions {
        let b = self.byte();
        open_options_from_bits([0, 1, 2, 3, 4, 5].map(|i| b & (1 << i) != 0))
    }
}

#[derive(Default)]
struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    fn push(&mut self, v: usize) -> Option<()> {
        self.bytes.push(u8::try_from(v).ok()?);
        Some(())
    }

    fn index<T: PartialEq>(&mut self, table: &[T], v: &T) -> Option<()> {
        self.push(table.iter().position(|t| t == v)?)
    }

    fn name(&mut self, name: &[u8]) -> Option<()> {
        self.index(&NAMES, &name)
    }

    fn layer_path(&mut self, path: &(impl AsRef<[u8]> + ?Sized)) -> Option<()> {
        let path = path.as_ref();
        let names: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        if names.is_empty() || names.len() > 3 {
            return None;
        }
        self.push(names.len() - 1)?;
        names.into_iter().try_for_each(|n| self.name(n))
    }

    fn user_path(&mut self, path: &(impl AsRef<[u8]> + ?Sized)) -> Option<()> {
        let path = path.as_ref();
        let (absolute, rest) = match path.strip_prefix(b"/") {
            Some(rest) => (true, rest),
            None => (false, path),
        };
        let (trailing, rest) = match rest.strip_suffix(b"/") {
            Some(r) if !r.is_empty() => (true, r),
            _ => (false, rest),
        };
        let tokens: Vec<&[u8]> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split(|&b| b == b'/').collect()
        };
        if tokens.len() > 3 || (trailing && tokens.is_empty()) {
            return None;
        }
        self.push(tokens.len() | usize::from(absolute) << 2 | usize::from(trailing) << 3)?;
        tokens.into_iter().try_for_each(|t| self.index(&TOKENS, &t))
    }

    fn data(&mut self, data: &[u8]) -> Option<()> {
        if data.len() > MAX_DATA {
            return None;
        }
        self.push(data.len())?;
        self.bytes.extend_from_slice(data);
        Some(())
    }

    fn attrs(&mut self, a: &Attrs) -> Option<()> {
        self.index(&MODES, &a.mode)?;
        self.index(&IDS, &a.uid)?;
        self.index(&IDS, &a.gid)?;
        self.index(&TIMES, &a.time)
    }

    fn id(&mut self, id: Option<u32>) -> Option<()> {
        match id {
            None => self.push(0),
            Some(id) => self.push(IDS.iter().position(|&i| i == id)? + 1),
        }
    }

    fn time(&mut self, t: Option<Timestamp>) -> Option<()> {
        match t {
            None => self.push(0),
            Some(t) if t.nsec == 0 && (0..255).contains(&t.sec) => {
                self.push(usize::try_from(t.sec).ok()? + 1)
            }
            Some(_) => None,
        }
    }

    fn offset(&mut self, v: u64) -> Option<()> {
        if v >= u64::from(MAX_OFFSET) {
            return None;
        }
        self.push(usize::try_from(v).ok()?)
    }

    fn u16(&mut self, v: u32) -> Option<()> {
        let v = u16::try_from(v).ok()?;
        self.bytes.extend_from_slice(&v.to_le_bytes());
        Some(())
    }

    fn xattr_name(&mut self, name: &str) -> Option<()> {
        self.index(&XATTR_NAMES, &name)
    }

    fn item(&mut self, item: &LayerItem) -> Option<()> {
        match item {
            LayerItem::File { path, data, attrs } => {
                self.push(0)?;
                self.layer_path(path)?;
                self.data(data)?;
                self.attrs(attrs)
            }
            LayerItem::Dir { path, attrs } => {
                self.push(1)?;
                self.layer_path(path)?;
                self.attrs(attrs)
            }
            LayerItem::OpaqueDir { path } => {
                self.push(2)?;
                self.layer_path(path)
            }
            LayerItem::Symlink { path, target } => {
                if target.is_empty() {
                    return None;
                }
                self.push(3)?;
                self.layer_path(path)?;
                self.user_path(target)
            }
            LayerItem::HardLink { existing, new } => {
                self.push(4)?;
                self.layer_path(existing)?;
                self.layer_path(new)
            }
            LayerItem::Special {
                path,
                file_type,
                rdev,
                attrs,
            } => {
                self.push(5)?;
                self.layer_path(path)?;
                self.index(&SPECIAL_TYPES, file_type)?;
                self.index(&RDEVS, rdev)?;
                self.attrs(attrs)
            }
            LayerItem::Whiteout { path } => {
                self.push(6)?;
                self.layer_path(path)
            }
            LayerItem::Redirect { path, redirect } => {
                self.push(7)?;
                self.layer_path(path)?;
                match redirect.as_bytes().strip_prefix(b"/") {
                    None => {
                        self.push(0)?;
                        self.name(redirect.as_bytes())
                    }
                    Some(abs) => {
                        self.push(1)?;
                        self.layer_path(abs)
                    }
                }
            }
            LayerItem::Xattr { path, name, value } => {
                self.push(8)?;
                self.layer_path(path)?;
                self.index(&LAYER_XATTRS, &name.as_str())?;
                self.data(value)
            }
        }
    }

    fn op(&mut self, op: &Op) -> Option<()> {
        let tag = match op {
            Op::Metadata { .. } => 0,
            Op::SymlinkMetadata { .. } => 1,
            Op::Read { .. } => 2,
            Op::ReadAt { .. } => 3,
            Op::ReadDir { .. } => 4,
            Op::ReadLink { .. } => 5,
            Op::Write { .. } => 6,
            Op::Append { .. } => 7,
            Op::WriteAt { .. } => 8,
            Op::SetLen { .. } => 9,
            Op::Open { .. } => 10,
            Op::CreateDir { .. } => 11,
            Op::CreateDirAll { .. } => 12,
            Op::RemoveFile { .. } => 13,
            Op::RemoveDir { .. } => 14,
            Op::RemoveDirAll { .. } => 15,
            Op::Rename { .. } => 16,
            Op::Symlink { .. } => 17,
            Op::HardLink { .. } => 18,
            Op::SetPermissions { .. } => 19,
            Op::SetOwner { .. } => 20,
            Op::SetTimes { .. } => 21,
            Op::GetXattr { .. } => 22,
            Op::SetXattr { .. } => 23,
            Op::RemoveXattr { .. } => 24,
            Op::ListXattr { .. } => 25,
            Op::Mknod { .. } => 26,
            Op::Commit => 27,
            Op::OpenHandle { .. } => 28,
            Op::HandleReadAt { .. } => 29,
            Op::HandleWriteAt { .. } => 30,
            Op::HandleSetLen { .. } => 31,
            Op::HandleMetadata { .. } => 32,
            Op::CloseHandle { .. } => 33,
        };
        debug_assert!(tag < OP_COUNT);
        self.push(usize::from(tag))?;
        match op {
            Op::Metadata { path }
            | Op::SymlinkMetadata { path }
            | Op::Read { path }
            | Op::ReadDir { path }
            | Op::ReadLink { path }
            | Op::CreateDir { path }
            | Op::CreateDirAll { path }
            | Op::RemoveFile { path }
            | Op::RemoveDir { path }
            | Op::RemoveDirAll { path }
            | Op::ListXattr { path } => self.user_path(path),
            Op::ReadAt { path, offset, len } => {
                self.user_path(path)?;
                self.offset(*offset)?;
                self.offset(u64::try_from(*len).ok()?)
            }
            Op::Write { path, data } | Op::Append { path, data } => {
                self.user_path(path)?;
                self.data(data)
            }
            Op::WriteAt { path, offset, data } => {
                self.user_path(path)?;
                self.offset(*offset)?;
                self.data(data)
            }
            Op::SetLen { path, len } => {
                self.user_path(path)?;
                self.offset(*len)
            }
            Op::Open { path, options } | Op::OpenHandle { path, options } => {
                self.user_path(path)?;
                let bits = open_options_bits(options);
                let b = (0..6).fold(0usize, |acc, i| acc | usize::from(bits[i]) << i);
                self.push(b)
            }
            Op::HandleReadAt { slot, offset, len } => {
                self.push(usize::from(*slot))?;
                self.offset(*offset)?;
                self.offset(u64::try_from(*len).ok()?)
            }
            Op::HandleWriteAt { slot, offset, data } => {
                self.push(usize::from(*slot))?;
                self.offset(*offset)?;
                self.data(data)
            }
            Op::HandleSetLen { slot, len } => {
                self.push(usize::from(*slot))?;
                self.offset(*len)
            }
            Op::HandleMetadata { slot } | Op::CloseHandle { slot } => self.push(usize::from(*slot)),
            Op::Rename { from, to, mode } => {
                self.user_path(from)?;
                self.user_path(to)?;
                self.index(&RENAME_MODES, mode)
            }
            Op::Symlink { target, link } => {
                self.user_path(target)?;
                self.user_path(link)
            }
            Op::HardLink { original, link } => {
                self.user_path(original)?;
                self.user_path(link)
            }
            Op::SetPermissions { path, mode } => {
                self.user_path(path)?;
                self.u16(*mode)
            }
            Op::SetOwner { path, uid, gid } => {
                self.user_path(path)?;
                self.id(*uid)?;
                self.id(*gid)
            }
            Op::SetTimes { path, atime, mtime } => {
                self.user_path(path)?;
                self.time(*atime)?;
                self.time(*mtime)
            }
            Op::GetXattr { path, name } | Op::RemoveXattr { path, name } => {
                self.user_path(path)?;
                self.xattr_name(name)
            }
            Op::SetXattr { path, name, value } => {
                self.user_path(path)?;
                self.xattr_name(name)?;
                self.data(value)
            }
            Op::Mknod {
                path,
                file_type,
                mode,
                rdev,
            } => {
                self.user_path(path)?;
                self.index(&FILE_TYPES, file_type)?;
                self.u16(*mode)?;
                self.index(&MKNOD_RDEVS, rdev)
            }
            Op::Commit => Some(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_never_panics_and_reencodes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = Scenario::from_bytes(&bytes);
            prop_assert!(s.layers.len() <= MAX_LAYERS);
            prop_assert!(s.ops.len() <= MAX_OPS);
            let again = s.to_bytes().expect("a decoded scenario encodes");
            prop_assert_eq!(Scenario::from_bytes(&again), s);
        }

        #[test]
        fn generated_scenarios_round_trip(s in scenario_strategy(MAX_OPS)) {
            let bytes = s.to_bytes().expect("generated scenarios are encodable");
            prop_assert_eq!(Scenario::from_bytes(&bytes), s);
        }
    }

    #[test]
    fn layout_of_a_small_scenario() {
        let s = Scenario::from_bytes(&[1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 6, 1, 1, 0, 12, 1, 0]);
        assert_eq!(
            s.layers,
            vec![vec![
                LayerItem::File {
                    path: "a".into(),
                    data: Vec::new(),
                    attrs: Attrs {
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                        time: 0
                    }
                },
                LayerItem::Whiteout { path: "b/a".into() },
            ]]
        );
        assert_eq!(s.ops, vec![Op::CreateDirAll { path: "a".into() }]);
        assert_eq!(Scenario::default().to_bytes(), Some(vec![0]));
    }
}
