use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use camino::Utf8Path;
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::fs::beneath::{
    copy_fd, errno_kind, open_beneath, open_o_path, proc_path, procfs_is_mounted,
};
use crate::fs::node::{self, FdMeta, MetaStep, Steps};
use crate::meta::{FileType, MODE_MASK, Metadata, rdev_fits_mknod, xattr_allowed_on};
use crate::oci::apply::applier::{
    Answer, ApplyTarget, Ask, Held, Refusal, apply_entry, implied_dir_meta, link_target_below,
};
use crate::oci::apply::import::{Counts, ImportOptions, Policy};
use crate::oci::image::digest::{Digest, PipedHasher};
use crate::oci::tar::compress::Decompressor;
use crate::oci::tar::read::{Limits, TarEntry, TarKind, TarReader};
use crate::path::{LayerPath, Name, NameBuf, PathLike};

/// Who owns what is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Owners {
    /// The owners the layers give (`lchown`); as a user other than root
    /// this fails with `EPERM` for anything not owned by that user.
    #[default]
    Preserve,
    /// Leave everything owned by the caller.
    Ignore,
}

/// Options of [`flatten_layers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FlattenOptions {
    /// What each layer's entries may hold, as for an import: the limits on
    /// each layer tar, and what to do with device nodes and setuid bits.
    /// Only root can make device nodes: as another user, strip or refuse
    /// them.
    pub import: ImportOptions,
    /// Owners of what is written.
    pub owners: Owners,
    /// Extended attributes only a privileged user may set: `trusted.*`
    /// (`CAP_SYS_ADMIN`) and `security.*` (`security.capability` needs
    /// `CAP_SETFCAP`). As a user other than root, strip them (a rootless
    /// unpack keeps them in its [`RootlessMap`](crate::oci::RootlessMap))
    /// or refuse them.
    pub privileged_xattrs: Policy,
    /// Layers decompressed at the same time; 0 for
    /// [`std::thread::available_parallelism`].
    pub threads: usize,
}

impl FlattenOptions {
    /// The defaults: default limits, devices, setuid bits and privileged
    /// extended attributes kept, owners preserved, one thread per core.
    #[must_use]
    pub fn new() -> FlattenOptions {
        FlattenOptions::default()
    }

    /// Sets [`FlattenOptions::import`].
    #[must_use]
    pub fn import(mut self, import: ImportOptions) -> FlattenOptions {
        self.import = import;
        self
    }

    /// Sets [`FlattenOptions::owners`].
    #[must_use]
    pub fn owners(mut self, owners: Owners) -> FlattenOptions {
        self.owners = owners;
        self
    }

    /// Sets [`FlattenOptions::privileged_xattrs`].
    #[must_use]
    pub fn privileged_xattrs(mut self, policy: Policy) -> FlattenOptions {
        self.privileged_xattrs = policy;
        self
    }

    /// Sets [`FlattenOptions::threads`].
    #[must_use]
    pub fn threads(mut self, threads: usize) -> FlattenOptions {
        self.threads = threads;
        self
    }
}

/// What [`flatten_layers`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FlattenSummary {
    /// Regular files created (each inode once).
    pub files: u64,
    /// Directories created (the target itself not counted).
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Extra names linked to an inode already written.
    pub hard_links: u64,
    /// Fifos and devices created.
    pub specials: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Entries never written because a higher layer hides or replaces them.
    pub hidden: u64,
    /// Device entries skipped by [`Policy::Strip`] (in any layer).
    pub devices_stripped: u64,
    /// Entries whose setuid or setgid bits [`Policy::Strip`] cleared (in
    /// any layer).
    pub setuid_stripped: u64,
}

/// Writes the root filesystem of the stack of layer tars `layers` into the
/// directory `target`.
///
/// `layers` are bottom first (manifest order); each opener returns a fresh
/// reader of that layer's blob, plain, gzip or zstd (detected from its
/// bytes). An opener is called once, from a worker thread, and again (from
/// the calling thread) in the rare case described in the [module
/// documentation](flatten_layers). Layers are numbered from 0, bottom first, in
/// errors.
///
/// `target` must not exist (it is created, mode `0755`) or be an empty
/// directory; it is never a symlink. On error it is left as it was found
/// (see the [module documentation](flatten_layers)).
///
/// # Errors
/// `ENOTEMPTY` if `target` is a non-empty directory,
/// `ELOOP` if it is a symlink, `ENOTDIR` if it is something else; for an
/// entry, each error [`import_layer`](crate::oci::import_layer) would give for
/// it (`EBADMSG`, `EDQUOT`, `EINVAL`, `ENOTDIR`, `ENOENT`, `EPERM`, ...),
/// naming the entry and its layer; `EPERM` for [`Owners::Preserve`] as a
/// user other than root; the errors of the openers and of the disk.
///
/// Writing the root filesystem of an image — a stack of layer tars — into a
/// directory, safely and fast.
///
/// The result is what a [`MergedView`](crate::MergedView) over the layers
/// imported with [`import_layer`](crate::oci::import_layer) shows: the same
/// types, permission bits (setuid included), owners, contents, symlink
/// targets, nanosecond modification times, extended attributes (overlay
/// bookkeeping `trusted.overlay.*` / `user.overlay.*` never applied) and
/// device numbers; names that are one inode in one layer, and are both
/// still visible from that layer, are one inode on disk. Whiteout markers
/// never appear.
///
/// ```no_run
/// use std::fs::File;
/// use std::io::Read;
/// use camino::Utf8Path;
/// use layerstack::oci::{FlattenOptions, flatten_layers};
///
/// let blobs = ["base.tar.gz", "app.tar.zst"];
/// let openers: Vec<_> = blobs
///     .iter()
///     .map(|blob| {
///         move || -> layerstack::Result<Box<dyn Read + Send>> {
///             let file = File::open(blob).map_err(|e| {
///                 layerstack::Error::from_io(&e, layerstack::Operation::ReadBlob, blob)
///             })?;
///             Ok(Box::new(file))
///         }
///     })
///     .collect();
/// let summary = flatten_layers(&openers, Utf8Path::new("rootfs"), &FlattenOptions::default())?;
/// println!("{} files, {} hidden by higher layers", summary.files, summary.hidden);
/// # Ok::<(), layerstack::Error>(())
/// ```
///
/// # How
///
/// Layers are read from the **top down**, so that what a higher layer
/// deletes or replaces is never written at all. An index keeps what the
/// layers above decided for each path: a directory (open, or closed to the
/// layers below by an opaque marker, a whiteout or a non-directory in a
/// layer between), a non-directory, or gone (a whiteout). An entry of a
/// lower layer at a path the index already decided, or under a closed one,
/// is skipped (counted in [`FlattenSummary::hidden`]); a directory merges
/// into an open one. The index takes a layer's decisions only once the
/// layer is done, so entries of one layer never hide each other (a later
/// duplicate replaces an earlier one, a directory over a directory merges,
/// as [`import_layer`](crate::oci::import_layer) does).
///
/// A producer thread per layer (at most [`FlattenOptions::threads`] at a
/// time, taken top first) decompresses and parses its layer into a bounded
/// channel (at most 16 MiB of data in flight per layer); one writer
/// consumes the layers in order. A layer's DiffID (of
/// [`flatten_layers_verified`]) is hashed on a thread of its own, fed in
/// 256 KiB chunks through a bounded channel (at most 1.5 MiB per layer),
/// so a producer inflates at the speed of its inflater rather than of
/// sha256; an unchecked flatten does not hash the tars at all.
///
/// Some answers come from *below* a layer, and so arrive after it:
///
/// - a directory a layer only implies (no entry of its own) takes the
///   attributes of the directory the layers below show there, as import
///   gives them;
/// - a hard link to a file that is not in its own layer links to a copy of
///   the file the layers below show at the target path (as `link()` on an
///   overlay mount copies up); its names are created when that layer is
///   reached.
///
/// Each is a *search* that moves down with the writer, layer by layer,
/// until a layer answers it; what each entry means, and the rule each
/// answer goes through, are decided by the applier import uses too (the
/// layers' entries are read once, in order, by the same reader). When the
/// data a hard link needs belongs to a
/// file that was never written (a higher layer hides that name, but not
/// the link), the layer is opened a second time and read up to that file:
/// a rare case, which costs a second read of one layer rather than keeping
/// hidden files in memory or on disk.
///
/// Directories are created with mode `0700`; their attributes are set at
/// the end, deepest first, so that a read-only directory can still be
/// filled. Every mode is set explicitly (`fchmod`), never left to the
/// umask; owners are set before modes (a change of owner clears setuid)
/// and extended attributes after owners (it also clears
/// `security.capability`).
///
/// # Security
///
/// The layers are untrusted; the target directory is the caller's. The
/// target must not exist (it is created with mode `0755`) or be an empty
/// directory, and is opened with `O_DIRECTORY | O_NOFOLLOW`. Every
/// operation after that is relative to that descriptor and
/// [confined](crate#confinement-on-disk) beneath it. So even a bug in the
/// bookkeeping above cannot write through a symlink: nothing outside the
/// target is read, written or removed. An entry under a symlink or file of
/// a lower layer is refused (`ENOTDIR`), as import refuses it. Limits
/// ([`Limits`]) apply to each layer.
///
/// # Limitations
///
/// - The root directory takes the attributes of the highest layer that has
///   an entry for it (`./`), if any; otherwise it is left as it is (a view
///   shows its writable layer's root there).
/// - `user.*` extended attributes of symlinks and special files are not
///   written: Linux cannot store them (a view does not show them either).
/// - On error, what was written is removed before the error is returned:
///   a target this flatten created is gone, an empty one is empty again
///   with its mode, owner and times. A process killed half-way leaves part
///   of the tree; to never show one, write beside the place and rename
///   (the `unpack` command does).
/// - Another process changing the target while it is written is not
///   defended against beyond the confinement above.
/// - Counts in the summary are of objects created; a duplicate entry of one
///   layer that replaces an earlier one counts both.
pub fn flatten_layers<F>(
    layers: &[F],
    target: &Utf8Path,
    options: &FlattenOptions,
) -> Result<FlattenSummary>
where
    F: Fn() -> Result<Box<dyn Read + Send>> + Sync,
{
    let checks = vec![None; layers.len()];
    flatten_checked(layers, &checks, target, options).map(|(summary, _)| summary)
}

/// As [`flatten_layers`], checking each layer's DiffID (the sha256 of its
/// uncompressed tar, `diff_ids[i]` for `layers[i]`, as an image config
/// lists them): a layer that does not match fails the flatten, as it
/// fails `ImageStore::layers` and umoci. The hash is computed on a thread
/// of its own beside the producer's (see [`flatten_layers`]). The check
/// ends each layer's stream, so entries of a layer that turns out not to match may have been
/// written; they are removed with the rest before the error is returned.
///
/// [`ImageStore::flatten`](crate::oci::ImageStore::flatten) does the
/// same, leaving out the DiffIDs that [the layer
/// cache](crate::oci::OciLayout#the-layer-cache) vouches for (its blob
/// readers check every blob's digest).
///
/// # Errors
/// As [`flatten_layers`]; `EINVAL` if there are not as many DiffIDs as
/// layers; `EBADMSG` for a layer whose DiffID does not match.
pub fn flatten_layers_verified<F>(
    layers: &[F],
    diff_ids: &[Digest],
    target: &Utf8Path,
    options: &FlattenOptions,
) -> Result<FlattenSummary>
where
    F: Fn() -> Result<Box<dyn Read + Send>> + Sync,
{
    if diff_ids.len() != layers.len() {
        return Err(
            Error::new(ErrorKind::InvalidInput, Operation::Flatten, target).with_detail(format!(
                "{} layers but {} DiffIDs",
                layers.len(),
                diff_ids.len()
            )),
        );
    }
    let checks: Vec<Option<Digest>> = diff_ids.iter().copied().map(Some).collect();
    flatten_checked(layers, &checks, target, options).map(|(summary, _)| summary)
}

/// As [`flatten_layers`], checking the DiffID of each layer `i` for which
/// `checks[i]` is `Some` (as [`flatten_layers_verified`] does) and no
/// other's: for a caller that knows another check proves the rest (the
/// blob digest of a layer whose DiffID a full read established before).
/// Also returns, for each layer whose DiffID was checked, its
/// uncompressed size. `checks` has one entry per layer.
pub(crate) fn flatten_checked<F>(
    layers: &[F],
    checks: &[Option<Digest>],
    target: &Utf8Path,
    options: &FlattenOptions,
) -> Result<(FlattenSummary, Vec<Option<u64>>)>
where
    F: Fn() -> Result<Box<dyn Read + Send>> + Sync,
{
    let n = layers.len();
    if checks.len() != n {
        return Err(
            Error::new(ErrorKind::InvalidInput, Operation::Flatten, target)
                .with_detail(format!("{n} layers but {} DiffIDs", checks.len())),
        );
    }
    let mut disk = Disk::open(target, options.owners)?;
    disk.privileged_xattrs = options.privileged_xattrs;
    let checked: Mutex<Vec<Option<u64>>> = Mutex::new(vec![None; n]);
    let open = |i: usize| -> Result<Box<dyn Read + Send>> {
        match layers.get(i) {
            Some(opener) => opener(),
            None => Err(Error::new(
                ErrorKind::InvalidInput,
                Operation::Flatten,
                target,
            )),
        }
    };
    let mut writer = Writer {
        open: &open,
        options,
        target,
        disk,
        index: HashMap::new(),
        root_closed: false,
        root_meta: None,
        seeks: Vec::new(),
        active: Vec::new(),
        dir_results: HashMap::new(),
        disk_dirs: Vec::new(),
        summary: FlattenSummary::default(),
    };
    if n == 0 {
        return Ok((writer.summary, Vec::new()));
    }
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        t => t,
    }
    .clamp(1, n);

    let abort = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let mut receivers = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = sync_channel::<Batch>(CHANNEL_BATCHES);
        senders.push(Mutex::new(Some(tx)));
        receivers.push(Some(rx));
    }
    let written = std::thread::scope(|scope| {
        let produce_layers = || {
            loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= n || abort.load(Ordering::SeqCst) {
                    return;
                }
                // Top first: the writer's next layer is always produced.
                let layer = n - 1 - k;
                let tx = senders[layer]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(tx) = tx {
                    produce(
                        &layers[layer],
                        layer,
                        checks[layer],
                        options.import.limits,
                        target,
                        tx,
                        &checked,
                    );
                }
            }
        };
        let mut started = 0;
        for _ in 0..threads {
            if std::thread::Builder::new()
                .name("layerstack-flatten".into())
                .spawn_scoped(scope, produce_layers)
                .is_ok()
            {
                started += 1;
            }
        }
        if started == 0 {
            return Err(Error::new(ErrorKind::Io, Operation::Flatten, target)
                .with_detail("cannot start a thread to read the layers"));
        }
        // Owned here, so that they are dropped however the writer ends:
        // that ends every producer at its next send.
        let mut receivers = receivers;
        let result = writer.run(&mut receivers);
        abort.store(true, Ordering::SeqCst);
        drop(receivers);
        result
    });
    match written {
        Ok(()) => Ok((
            writer.summary,
            checked
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )),
        Err(e) => match writer.disk.undo(target) {
            Ok(()) => Err(e),
            Err(why) => {
                let cause = e.cause();
                Err(e.with_detail(format!(
                    "{cause}; what was written could not all be removed ({why})"
                )))
            }
        },
    }
}

/// Data chunks are at most this large.
const CHUNK: usize = 256 << 10;
/// A batch is sent once it holds this much data...
const BATCH_BYTES: usize = 256 << 10;
/// ... or this many items.
const BATCH_ITEMS: usize = 1024;
/// Batches in flight per layer: with at most `2 * BATCH_BYTES` each, 16 MiB.
const CHANNEL_BATCHES: usize = (16 << 20) / (2 * BATCH_BYTES);

/// What a producer sends: an entry, then for a regular file exactly its
/// size in data chunks.
enum Item {
    Entry(Box<TarEntry>),
    /// Data at this offset in the file (past the holes of a sparse one).
    Data(u64, Vec<u8>),
    End,
    Failed(Error),
}

type Batch = Vec<Item>;

/// The receiver is gone: the writer stopped.
struct Closed;

struct Batcher {
    tx: SyncSender<Batch>,
    items: Batch,
    bytes: usize,
}

impl Batcher {
    fn push(&mut self, item: Item) -> Result<(), Closed> {
        if let Item::Data(_, d) = &item {
            self.bytes += d.len();
        }
        self.items.push(item);
        if self.bytes >= BATCH_BYTES || self.items.len() >= BATCH_ITEMS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Closed> {
        if self.items.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        let items = std::mem::replace(&mut self.items, Vec::with_capacity(64));
        self.tx.send(items).map_err(|_| Closed)
    }
}

enum ProduceError {
    Closed,
    Failed(Error),
}

impl From<Closed> for ProduceError {
    fn from(_: Closed) -> ProduceError {
        ProduceError::Closed
    }
}

impl From<Error> for ProduceError {
    fn from(e: Error) -> ProduceError {
        ProduceError::Failed(e)
    }
}

/// Decompresses and parses one layer into `tx`.
fn produce<F>(
    open: &F,
    layer: usize,
    want: Option<Digest>,
    limits: Limits,
    target: &Utf8Path,
    tx: SyncSender<Batch>,
    checked: &Mutex<Vec<Option<u64>>>,
) where
    F: Fn() -> Result<Box<dyn Read + Send>>,
{
    let mut batch = Batcher {
        tx,
        items: Vec::with_capacity(64),
        bytes: 0,
    };
    let last = match produce_items(open, layer, want, limits, target, &mut batch) {
        Ok(size) => {
            if let (Some(_), Some(slot)) = (
                want,
                checked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_mut(layer),
            ) {
                *slot = Some(size);
            }
            Item::End
        }
        Err(ProduceError::Failed(e)) => Item::Failed(e),
        Err(ProduceError::Closed) => return,
    };
    if batch.push(last).is_ok() {
        let _ = batch.flush();
    }
}

fn produce_items<F>(
    open: &F,
    layer: usize,
    want: Option<Digest>,
    limits: Limits,
    target: &Utf8Path,
    batch: &mut Batcher,
) -> Result<u64, ProduceError>
where
    F: Fn() -> Result<Box<dyn Read + Send>>,
{
    let mut tar = open_layer(open(), layer, want.is_some(), limits, target)?;
    while let Some(entry) = tar.next_entry().map_err(|e| reframe(layer, e))? {
        let size = if entry.kind == TarKind::File {
            entry.stored_size()
        } else {
            0
        };
        let name = entry.name.clone();
        batch.push(Item::Entry(Box::new(entry)))?;
        let mut left = size;
        while left > 0 {
            let (offset, buf) = read_piece(&mut tar, left, layer, Name::new(&name))?;
            left -= buf.len() as u64;
            batch.push(Item::Data(offset, buf))?;
        }
    }
    let uncompressed = tar.finish().map_err(|e| reframe(layer, e))?;
    let size = uncompressed.len;
    if let Some(want) = want {
        let Some(diff_id) = uncompressed.hasher.and_then(PipedHasher::finish) else {
            return Err(Error::new(ErrorKind::Io, Operation::Flatten, target)
                .with_layer(layer.to_string())
                .with_detail("the thread hashing the layer stopped")
                .into());
        };
        if diff_id != want {
            return Err(
                Error::new(ErrorKind::InvalidData, Operation::Flatten, target)
                    .with_layer(layer.to_string())
                    .with_detail(format!(
                        "the layer's DiffID is {diff_id} but the config says {want}"
                    ))
                    .into(),
            );
        }
    }
    Ok(size)
}

/// The uncompressed tar of a layer, counted, and hashed (on a thread of
/// its own) when its DiffID is checked.
struct Uncompressed {
    inner: Decompressor<Box<dyn Read + Send>>,
    hasher: Option<PipedHasher>,
    len: u64,
}

impl Read for Uncompressed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.len += n as u64;
        Ok(n)
    }
}

type LayerReader = TarReader<Uncompressed>;

fn open_layer(
    reader: Result<Box<dyn Read + Send>>,
    layer: usize,
    hash: bool,
    limits: Limits,
    target: &Utf8Path,
) -> Result<LayerReader> {
    let reader = reader.map_err(|e| match e.layer() {
        Some(_) => e,
        None => e.with_layer(layer.to_string()),
    })?;
    let decompressor = Decompressor::new(reader).map_err(|e| {
        Error::from_io(&e, Operation::Flatten, target)
            .with_layer(layer.to_string())
            .with_detail(format!("reading the layer: {e}"))
    })?;
    let uncompressed = Uncompressed {
        inner: decompressor,
        hasher: hash.then(PipedHasher::new),
        len: 0,
    };
    Ok(TarReader::new(uncompressed, limits))
}

/// The next piece of the current file's data, up to `left` bytes (and
/// [`CHUNK`]), all of one region: where it goes in the file, and the bytes.
fn read_piece(
    tar: &mut LayerReader,
    left: u64,
    layer: usize,
    name: &Name,
) -> Result<(u64, Vec<u8>)> {
    let offset = tar.data_offset();
    let len = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < buf.len() && (filled == 0 || tar.data_offset() == offset + filled as u64) {
        let n = tar
            .read_data(&mut buf[filled..])
            .map_err(|e| reframe(layer, e.reframe(Operation::FlattenEntry, name)))?;
        if n == 0 {
            return Err(entry_error(
                layer,
                name,
                ErrorKind::InvalidData,
                "the tar is truncated inside the file's data",
            ));
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok((offset, buf))
}

/// An error of the tar reader or of import's rules, as flatten's.
fn reframe(layer: usize, e: Error) -> Error {
    let path = e.path().to_string();
    e.reframe(Operation::FlattenEntry, path)
        .with_layer(layer.to_string())
}

fn entry_error(
    layer: usize,
    name: impl PathLike,
    kind: ErrorKind,
    detail: impl Into<String>,
) -> Error {
    Error::new(kind, Operation::FlattenEntry, name)
        .with_layer(layer.to_string())
        .with_detail(detail)
}

/// The items of one layer, as the writer pulls them.
struct Stream {
    rx: Receiver<Batch>,
    items: std::vec::IntoIter<Item>,
    layer: usize,
}

impl Stream {
    fn next(&mut self) -> Result<Item> {
        loop {
            if let Some(item) = self.items.next() {
                return Ok(item);
            }
            match self.rx.recv() {
                Ok(batch) => self.items = batch.into_iter(),
                Err(_) => {
                    return Err(Error::new(ErrorKind::Io, Operation::Flatten, "<layer>")
                        .with_layer(self.layer.to_string())
                        .with_detail("the thread reading the layer stopped"));
                }
            }
        }
    }
}

/// The data of the current file entry: `left` bytes still in the stream.
struct DataIn<'s> {
    stream: &'s mut Stream,
    left: u64,
}

impl DataIn<'_> {
    /// The next chunk and where it goes, `None` at the end of the file.
    fn chunk(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        if self.left == 0 {
            return Ok(None);
        }
        match self.stream.next()? {
            Item::Data(offset, d) => {
                self.left = self.left.saturating_sub(d.len() as u64);
                Ok(Some((offset, d)))
            }
            Item::Failed(e) => Err(e),
            Item::Entry(_) | Item::End => {
                Err(Error::new(ErrorKind::Io, Operation::Flatten, "<layer>")
                    .with_layer(self.stream.layer.to_string())
                    .with_detail("the layer's data ended early"))
            }
        }
    }

    fn skip(&mut self) -> Result<()> {
        while self.chunk()?.is_some() {}
        Ok(())
    }
}

/// What the layers above decided at a path that shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decided {
    /// A directory; `closed` if the layers below no longer contribute.
    Dir { closed: bool },
    /// A non-directory: nothing below shows here.
    NonDir,
    /// A whiteout: nothing shows here.
    Gone,
}

/// Where a directory's attributes come from.
#[derive(Debug, Clone)]
enum DirAttrs {
    /// Its own entry, or the defaults of an implied directory with nothing
    /// below it.
    Known(Metadata),
    /// Implied: the directory below, as the search with this id finds it.
    Seek(usize),
}

/// What one layer holds at a path (what import would put in a layer).
#[derive(Debug)]
enum Slot {
    Dir {
        opaque: bool,
        attrs: DirAttrs,
        /// Created on disk by this layer.
        on_disk: bool,
    },
    NonDir {
        ino: usize,
        disk: OnDisk,
    },
    Whiteout,
}

/// Whether a non-directory name of a layer is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDisk {
    /// Hidden by a higher layer.
    No,
    Written,
    /// Shows, but its inode's type and data come from below: created when
    /// the search for them ends.
    Deferred,
}

/// One object of a layer, with all its names that show.
#[derive(Debug)]
struct Inode {
    meta: Metadata,
    body: Body,
    /// The names on disk (or deferred), first one first.
    names: Vec<LayerPath>,
    /// The first name is an empty file still waiting for its data.
    needs_fill: bool,
}

#[derive(Debug)]
enum Body {
    /// A regular file whose data is entry `ordinal` of the layer.
    File {
        ordinal: u64,
        name: NameBuf,
    },
    Symlink(NameBuf),
    Special,
    /// A copy of what the layers below show at `path` (a hard link target
    /// from below), found by search `seek`.
    CopyUp {
        seek: usize,
        path: LayerPath,
    },
}

/// A question for the layers below one layer: what they show at `path`.
#[derive(Debug)]
struct Seek {
    /// The layer that asked, and the entry that made it ask (for errors).
    layer: usize,
    entry: NameBuf,
    /// The original path, for messages.
    asked: LayerPath,
    /// The path asked of the layers still to come.
    path: LayerPath,
    kind: SeekKind,
}

#[derive(Debug)]
enum SeekKind {
    /// The attributes of an implied directory.
    Dir,
    /// The object a hard link copies up; `names` are the copy's names that
    /// show.
    Link { names: Vec<LayerPath> },
}

/// Data a layer must be read a second time for: entry ordinal to (name,
/// size, the files to fill with their attributes).
type Sinks = BTreeMap<u64, (NameBuf, u64, Vec<(LayerPath, Metadata, usize)>)>;

struct Writer<'a> {
    open: &'a (dyn Fn(usize) -> Result<Box<dyn Read + Send>> + Sync),
    options: &'a FlattenOptions,
    target: &'a Utf8Path,
    disk: Disk,
    /// Keyed by path bytes (`LayerPath::as_bytes`).
    index: HashMap<Vec<u8>, Decided>,
    root_closed: bool,
    /// The highest `./` entry, and its layer.
    root_meta: Option<(Metadata, usize)>,
    seeks: Vec<Seek>,
    /// Searches still going.
    active: Vec<usize>,
    /// Attributes found by directory searches.
    dir_results: HashMap<usize, Metadata>,
    /// Directories created, with their attributes and layer.
    disk_dirs: Vec<(LayerPath, DirAttrs, usize)>,
    summary: FlattenSummary,
}

impl Writer<'_> {
    fn run(&mut self, receivers: &mut [Option<Receiver<Batch>>]) -> Result<()> {
        for layer in (0..receivers.len()).rev() {
            let Some(rx) = receivers.get_mut(layer).and_then(Option::take) else {
                continue;
            };
            let mut stream = Stream {
                rx,
                items: Vec::new().into_iter(),
                layer,
            };
            let mut pass = Pass::new(self, layer);
            loop {
                match stream.next()? {
                    Item::Entry(entry) => pass.apply(&entry, &mut stream)?,
                    Item::End => break,
                    Item::Failed(e) => return Err(e),
                    Item::Data(..) => {
                        return Err(Error::new(ErrorKind::Io, Operation::Flatten, "<layer>")
                            .with_layer(layer.to_string())
                            .with_detail("data without an entry"));
                    }
                }
            }
            pass.finish()?;
        }
        // What no layer answered: implied directories keep the default
        // attributes; a hard link to nothing is an error.
        for &id in &self.active {
            let seek = &self.seeks[id];
            if let SeekKind::Link { .. } = seek.kind
                && let Err(r) = link_target_below(&seek.asked, None)
            {
                return Err(refused(seek, r));
            }
        }
        self.finish_dirs()
    }

    fn finish_dirs(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.disk_dirs);
        dirs.sort_by(|a, b| b.0.depth().cmp(&a.0.depth()).then_with(|| a.0.cmp(&b.0)));
        for (path, attrs, layer) in dirs {
            let meta = match attrs {
                DirAttrs::Known(m) => m,
                DirAttrs::Seek(id) => self
                    .dir_results
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| Metadata::new(FileType::Dir)),
            };
            self.disk
                .set_dir_meta(&path, &meta)
                .map_err(|e| e.error(layer, path.as_bytes()))?;
        }
        if let Some((meta, layer)) = self.root_meta.take() {
            self.disk
                .set_dir_meta(&LayerPath::root(), &meta)
                .map_err(|e| e.error(layer, "."))?;
        }
        Ok(())
    }

    /// Reads layer `layer` again, filling the files in `sinks` with the
    /// data of their entries.
    fn reread(&mut self, layer: usize, mut sinks: Sinks) -> Result<()> {
        let mut tar = open_layer(
            (self.open)(layer),
            layer,
            false,
            self.options.import.limits,
            self.target,
        )?;
        let mut ordinal = 0u64;
        while !sinks.is_empty() {
            let Some(entry) = tar.next_entry().map_err(|e| reframe(layer, e))? else {
                break;
            };
            let this = ordinal;
            ordinal += 1;
            let Some((name, size, files)) = sinks.remove(&this) else {
                continue;
            };
            if entry.name.as_bytes() != name.as_bytes()
                || entry.kind != TarKind::File
                || entry.size != size
            {
                return Err(changed_layer(layer, &name));
            }
            let mut fds = Vec::with_capacity(files.len());
            for (path, _, from) in &files {
                fds.push(
                    self.disk
                        .open_file(path, OFlags::WRONLY)
                        .map_err(|e| e.error(*from, path.as_bytes()))?,
                );
            }
            let mut left = entry.stored_size();
            while left > 0 {
                let (offset, buf) = read_piece(&mut tar, left, layer, Name::new(&name))?;
                for (fd, (path, _, from)) in fds.iter().zip(&files) {
                    write_all_at(fd, offset, &buf).map_err(|e| {
                        DiskError::new(e, "cannot write it").error(*from, path.as_bytes())
                    })?;
                }
                left -= buf.len() as u64;
            }
            if entry.sparse.is_some() {
                for (fd, (path, _, from)) in fds.iter().zip(&files) {
                    rustix::fs::ftruncate(fd, size).map_err(|e| {
                        DiskError::new(e, "cannot write it").error(*from, path.as_bytes())
                    })?;
                }
            }
            for (fd, (path, meta, from)) in fds.iter().zip(&files) {
                self.disk
                    .set_fd_meta(fd, meta)
                    .map_err(|e| e.error(*from, path.as_bytes()))?;
                self.summary.bytes += size;
            }
        }
        if let Some((_, (name, _, _))) = sinks.into_iter().next() {
            return Err(changed_layer(layer, &name));
        }
        Ok(())
    }
}

fn changed_layer(layer: usize, name: impl PathLike) -> Error {
    entry_error(
        layer,
        name,
        ErrorKind::InvalidData,
        "the layer read differently the second time (its opener must return the same bytes each time)",
    )
}

/// A search's refusal, as an error of the entry that started it.
fn refused(seek: &Seek, r: Refusal) -> Error {
    entry_error(seek.layer, &seek.entry, r.kind, r.detail)
}

/// Whether an entry of the current layer shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vis {
    /// Nothing above: it is written.
    New,
    /// A directory above that lets this layer through: a directory merges
    /// into it, anything else is hidden (and closes it).
    Merge,
    /// A higher layer hides or replaces it.
    Hidden,
}

/// One layer being written.
struct Pass<'w, 'a> {
    w: &'w mut Writer<'a>,
    layer: usize,
    /// Keyed by path bytes: byte order keeps a directory's descendants
    /// together (`d/` up to `d0`) and compares fast.
    slots: BTreeMap<Vec<u8>, Slot>,
    inodes: Vec<Inode>,
    /// Names a whiteout of this layer deleted below.
    whited: HashSet<LayerPath>,
    /// Directory searches this layer made, by path.
    dir_seeks: HashMap<LayerPath, usize>,
    new_seeks: Vec<usize>,
    /// Whether the layers above let this layer show under a directory.
    open_cache: HashMap<Vec<u8>, bool>,
    root_meta: Option<Metadata>,
    root_opaque: bool,
    counts: Counts,
    ordinal: u64,
    sinks: Sinks,
}

impl<'s> ApplyTarget<DataIn<'s>> for Pass<'_, '_> {
    /// The layers below come later: a search, by its id.
    type Search = usize;

    fn entry_error(&self, entry: &TarEntry, kind: ErrorKind, detail: &str) -> Error {
        self.err(entry, kind, detail)
    }

    fn reframe(&self, entry: &TarEntry, e: Error) -> Error {
        self.path_err(entry, &e)
    }

    fn policies(&mut self) -> (Policy, Policy, &mut Counts) {
        (
            self.w.options.import.devices,
            self.w.options.import.setuid,
            &mut self.counts,
        )
    }

    fn set_root(&mut self, meta: Metadata) -> Result<()> {
        self.root_meta = Some(meta);
        Ok(())
    }

    fn held(&mut self, path: &LayerPath, _entry: &TarEntry) -> Result<Held> {
        if path.is_root() {
            return Ok(Held::Dir {
                opaque: self.root_opaque,
            });
        }
        Ok(match self.slots.get(path.as_bytes()) {
            Some(Slot::Dir { opaque, .. }) => Held::Dir { opaque: *opaque },
            Some(Slot::NonDir { ino, .. }) => Held::NonDir(self.inodes[*ino].meta.file_type),
            Some(Slot::Whiteout) => Held::Whiteout,
            None => Held::Nothing,
        })
    }

    fn below(
        &mut self,
        path: &LayerPath,
        ask: Ask,
        entry: &TarEntry,
    ) -> Result<Answer<Option<Metadata>, usize>> {
        let id = match ask {
            Ask::ImpliedDir => match self.dir_seeks.get(path) {
                Some(&id) => id,
                None => {
                    let id = self.seek(entry, path.clone(), SeekKind::Dir);
                    self.dir_seeks.insert(path.clone(), id);
                    id
                }
            },
            Ask::LinkTarget => self.seek(entry, path.clone(), SeekKind::Link { names: Vec::new() }),
        };
        Ok(Answer::Search(id))
    }

    fn implied_dir(
        &mut self,
        dir: &LayerPath,
        meta: Answer<Metadata, usize>,
        opaque: bool,
        entry: &TarEntry,
    ) -> Result<()> {
        let attrs = match meta {
            Answer::Now(meta) => DirAttrs::Known(meta),
            Answer::Search(id) => DirAttrs::Seek(id),
        };
        let on_disk = self.make_dir(dir, entry)?;
        self.slots.insert(
            dir.as_bytes().to_owned(),
            Slot::Dir {
                opaque,
                attrs,
                on_disk,
            },
        );
        Ok(())
    }

    fn note_whited(&mut self, path: &LayerPath) {
        self.whited.insert(path.clone());
    }

    fn whited(&self, path: &LayerPath) -> bool {
        self.whited.contains(path)
    }

    fn set_opaque(&mut self, dir: &LayerPath, _entry: &TarEntry) -> Result<()> {
        if dir.is_root() {
            self.root_opaque = true;
        } else if let Some(Slot::Dir { opaque, .. }) = self.slots.get_mut(dir.as_bytes()) {
            *opaque = true;
        }
        Ok(())
    }

    fn whiteout(&mut self, path: &LayerPath, _entry: &TarEntry) -> Result<()> {
        self.slots
            .insert(path.as_bytes().to_owned(), Slot::Whiteout);
        Ok(())
    }

    fn merge_dir(&mut self, path: &LayerPath, meta: Metadata) -> Result<()> {
        if let Some(Slot::Dir { attrs, .. }) = self.slots.get_mut(path.as_bytes()) {
            *attrs = DirAttrs::Known(meta);
        }
        Ok(())
    }

    fn replace(&mut self, path: &LayerPath, entry: &TarEntry) -> Result<()> {
        Pass::replace(self, path, entry)
    }

    fn copy_up(
        &mut self,
        link: &LayerPath,
        found: Answer<Metadata, usize>,
        entry: &TarEntry,
    ) -> Result<()> {
        let Answer::Search(seek) = found else {
            // `below` always searches.
            return Err(self.err(entry, ErrorKind::Io, "no search for the hard link target"));
        };
        self.copy_up_from(seek, link)
    }

    fn link(&mut self, entry: &TarEntry, link: &LayerPath) -> Result<()> {
        let path = &entry.path;
        let Some(&Slot::NonDir { ino, .. }) = self.slots.get(link.as_bytes()) else {
            // The applier checked it is there.
            return Err(self.err(entry, ErrorKind::NotFound, "no hard link target"));
        };
        let disk = if self.vis(path) == Vis::New {
            self.add_name(ino, path, entry)?
        } else {
            self.w.summary.hidden += 1;
            OnDisk::No
        };
        self.slots
            .insert(path.as_bytes().to_owned(), Slot::NonDir { ino, disk });
        Ok(())
    }

    fn create(
        &mut self,
        entry: &TarEntry,
        meta: Metadata,
        whited: bool,
        data: &mut DataIn<'s>,
    ) -> Result<()> {
        self.create_object(entry, meta, whited, data)
    }
}

impl<'w, 'a> Pass<'w, 'a> {
    fn new(w: &'w mut Writer<'a>, layer: usize) -> Pass<'w, 'a> {
        Pass {
            w,
            layer,
            slots: BTreeMap::new(),
            inodes: Vec::new(),
            whited: HashSet::new(),
            dir_seeks: HashMap::new(),
            new_seeks: Vec::new(),
            open_cache: HashMap::new(),
            root_meta: None,
            root_opaque: false,
            counts: Counts::default(),
            ordinal: 0,
            sinks: Sinks::new(),
        }
    }

    fn err(&self, entry: &TarEntry, kind: ErrorKind, detail: impl Into<String>) -> Error {
        entry_error(self.layer, &entry.name, kind, detail)
    }

    /// An error of a path operation, reframed onto the entry.
    fn path_err(&self, entry: &TarEntry, e: &Error) -> Error {
        self.err(entry, e.kind(), e.cause())
    }

    fn disk_err(&self, entry: &TarEntry) -> impl Fn(DiskError) -> Error + '_ {
        let name = entry.name.clone();
        move |e: DiskError| e.error(self.layer, &name)
    }

    /// Whether the layers above let this layer's entries under `dir` show.
    fn open(&mut self, dir: &[u8]) -> bool {
        let mut chain = Vec::new();
        let mut cur = dir;
        let mut open = loop {
            if cur.is_empty() {
                break !self.w.root_closed;
            }
            if let Some(&b) = self.open_cache.get(cur) {
                break b;
            }
            chain.push(cur);
            cur = parent_str(cur);
        };
        for p in chain.into_iter().rev() {
            open = open
                && matches!(
                    self.w.index.get(p),
                    None | Some(Decided::Dir { closed: false })
                );
            self.open_cache.insert(p.to_owned(), open);
        }
        open
    }

    fn vis(&mut self, path: &LayerPath) -> Vis {
        if path.is_root() {
            return Vis::Merge;
        }
        if !self.open(parent_str(path.as_bytes())) {
            return Vis::Hidden;
        }
        match self.w.index.get(path.as_bytes()) {
            None => Vis::New,
            Some(Decided::Dir { closed: false }) => Vis::Merge,
            Some(_) => Vis::Hidden,
        }
    }

    fn apply(&mut self, entry: &TarEntry, stream: &mut Stream) -> Result<()> {
        let ordinal = self.ordinal;
        self.ordinal += 1;
        let mut data = DataIn {
            stream,
            left: if entry.kind == TarKind::File {
                entry.stored_size()
            } else {
                0
            },
        };
        debug_assert_eq!(ordinal + 1, self.ordinal);
        apply_entry(self, entry, &mut data)?;
        data.skip()
    }

    fn seek(&mut self, entry: &TarEntry, path: LayerPath, kind: SeekKind) -> usize {
        let id = self.w.seeks.len();
        self.w.seeks.push(Seek {
            layer: self.layer,
            entry: entry.name.clone(),
            asked: path.clone(),
            path,
            kind,
        });
        self.new_seeks.push(id);
        id
    }

    /// Creates directory `dir` on disk if it shows and is new; whether it
    /// did.
    fn make_dir(&mut self, dir: &LayerPath, entry: &TarEntry) -> Result<bool> {
        if self.vis(dir) != Vis::New {
            return Ok(false);
        }
        self.w.disk.mkdir(dir).map_err(self.disk_err(entry))?;
        self.w.summary.dirs += 1;
        Ok(true)
    }

    /// Creates the object of `entry` where this layer holds nothing: in
    /// the layer's slots, and on disk where it shows.
    fn create_object(
        &mut self,
        entry: &TarEntry,
        meta: Metadata,
        whited: bool,
        data: &mut DataIn<'_>,
    ) -> Result<()> {
        let ordinal = self.ordinal - 1;
        let path = &entry.path;
        let vis = self.vis(path);
        if vis != Vis::New && !(vis == Vis::Merge && entry.kind == TarKind::Dir) {
            self.w.summary.hidden += 1;
        }
        let body = match &entry.kind {
            TarKind::Dir => {
                let on_disk = self.make_dir(path, entry)?;
                self.slots.insert(
                    path.as_bytes().to_owned(),
                    Slot::Dir {
                        opaque: whited,
                        attrs: DirAttrs::Known(meta),
                        on_disk,
                    },
                );
                return Ok(());
            }
            TarKind::File => Body::File {
                ordinal,
                name: entry.name.clone(),
            },
            TarKind::Symlink(target) => Body::Symlink(target.clone()),
            TarKind::CharDevice(_) | TarKind::BlockDevice(_) | TarKind::Fifo => Body::Special,
            TarKind::HardLink(_) => return Ok(()),
        };
        let ino = self.inodes.len();
        self.inodes.push(Inode {
            meta,
            body,
            names: Vec::new(),
            needs_fill: false,
        });
        let disk = if vis == Vis::New {
            let inode = &self.inodes[ino];
            match &inode.body {
                Body::File { .. } => {
                    let fd = self
                        .w
                        .disk
                        .create_file(path)
                        .map_err(self.disk_err(entry))?;
                    let write_error =
                        |e| DiskError::new(e, "cannot write it").error(self.layer, &entry.name);
                    // A sparse file's regions are written where they go and
                    // its holes stay holes on disk.
                    while let Some((offset, chunk)) = data.chunk()? {
                        write_all_at(&fd, offset, &chunk).map_err(write_error)?;
                    }
                    if entry.sparse.is_some() {
                        rustix::fs::ftruncate(&fd, entry.size).map_err(write_error)?;
                    }
                    self.w
                        .disk
                        .set_fd_meta(&fd, &inode.meta)
                        .map_err(self.disk_err(entry))?;
                    self.w.summary.files += 1;
                    self.w.summary.bytes += entry.size;
                }
                body => {
                    self.w
                        .disk
                        .make_object(path, &inode.meta, body)
                        .map_err(self.disk_err(entry))?;
                    count_object(&mut self.w.summary, inode.meta.file_type);
                }
            }
            self.inodes[ino].names.push(path.clone());
            OnDisk::Written
        } else {
            OnDisk::No
        };
        self.slots
            .insert(path.as_bytes().to_owned(), Slot::NonDir { ino, disk });
        Ok(())
    }

    /// Brings a hard link's target from the layers below into this layer:
    /// an inode whose type and data search `seek` finds.
    fn copy_up_from(&mut self, seek: usize, target: &LayerPath) -> Result<()> {
        let ino = self.inodes.len();
        self.inodes.push(Inode {
            meta: Metadata::new(FileType::File),
            body: Body::CopyUp {
                seek,
                path: target.clone(),
            },
            names: Vec::new(),
            needs_fill: false,
        });
        let disk = if self.vis(target) == Vis::New {
            self.inodes[ino].names.push(target.clone());
            OnDisk::Deferred
        } else {
            OnDisk::No
        };
        self.slots
            .insert(target.as_bytes().to_owned(), Slot::NonDir { ino, disk });
        Ok(())
    }

    /// Gives inode `ino` the name `path` on disk.
    fn add_name(&mut self, ino: usize, path: &LayerPath, entry: &TarEntry) -> Result<OnDisk> {
        let inode = &self.inodes[ino];
        if let Body::CopyUp { .. } = inode.body {
            self.inodes[ino].names.push(path.clone());
            return Ok(OnDisk::Deferred);
        }
        if let Some(first) = inode.names.first() {
            self.w
                .disk
                .link(first, path)
                .map_err(self.disk_err(entry))?;
            self.w.summary.hard_links += 1;
        } else {
            // The first name of this inode was never written (a higher
            // layer hides it): this name gets the object.
            match &inode.body {
                Body::File { .. } => {
                    let fd = self
                        .w
                        .disk
                        .create_file(path)
                        .map_err(self.disk_err(entry))?;
                    if inode.meta.size == 0 {
                        self.w
                            .disk
                            .set_fd_meta(&fd, &inode.meta)
                            .map_err(self.disk_err(entry))?;
                    } else {
                        self.inodes[ino].needs_fill = true;
                    }
                    self.w.summary.files += 1;
                }
                body => {
                    self.w
                        .disk
                        .make_object(path, &inode.meta, body)
                        .map_err(self.disk_err(entry))?;
                    count_object(&mut self.w.summary, inode.meta.file_type);
                }
            }
        }
        self.inodes[ino].names.push(path.clone());
        Ok(OnDisk::Written)
    }

    /// Removes what this layer holds at `path`, with everything below it,
    /// from the layer and from the disk (only what this layer wrote).
    fn replace(&mut self, path: &LayerPath, entry: &TarEntry) -> Result<()> {
        let mut doomed: Vec<Vec<u8>> = vec![path.as_bytes().to_owned()];
        if let Some(Slot::Dir { .. }) = self.slots.get(path.as_bytes()) {
            let (from, to) = (
                [path.as_bytes(), b"/"].concat(),
                [path.as_bytes(), b"0"].concat(),
            );
            doomed.extend(self.slots.range(from..to).map(|(p, _)| p.clone()));
        }
        // Deepest first, so that each directory is empty when it goes.
        doomed.sort_by_key(|p| std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count()));
        for key in doomed {
            let slot = self.slots.remove(&key);
            let p = LayerPath::new(&key).map_err(|e| self.path_err(entry, &e))?;
            match slot {
                Some(Slot::Dir { on_disk: true, .. }) => {
                    self.w.disk.remove(&p, true).map_err(self.disk_err(entry))?;
                }
                Some(Slot::NonDir { ino, disk }) => {
                    if disk == OnDisk::Written {
                        self.w
                            .disk
                            .remove(&p, false)
                            .map_err(self.disk_err(entry))?;
                    }
                    self.inodes[ino].names.retain(|n| n != &p);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Ends the layer: answers the searches of the layers above, fills
    /// files from a second read where needed, and hands this layer's
    /// decisions to the index.
    fn finish(mut self) -> Result<()> {
        let active = std::mem::take(&mut self.w.active);
        let mut still = Vec::with_capacity(active.len());
        for id in active {
            if self.step(id)? {
                still.push(id);
            }
        }
        for inode in &self.inodes {
            if let (true, Some(first), Body::File { ordinal, name }) =
                (inode.needs_fill, inode.names.first(), &inode.body)
            {
                self.sinks
                    .entry(*ordinal)
                    .or_insert_with(|| (name.clone(), inode.meta.size, Vec::new()))
                    .2
                    .push((first.clone(), inode.meta.clone(), self.layer));
            }
        }
        let sinks = std::mem::take(&mut self.sinks);
        if !sinks.is_empty() {
            self.w.reread(self.layer, sinks)?;
        }
        for inode in &mut self.inodes {
            if let Body::CopyUp { seek, .. } = inode.body
                && let SeekKind::Link { names } = &mut self.w.seeks[seek].kind
            {
                *names = std::mem::take(&mut inode.names);
            }
        }
        still.append(&mut self.new_seeks);
        self.w.active = still;

        let mut candidates = Vec::new();
        for (path, slot) in &self.slots {
            if let Slot::Dir {
                on_disk: true,
                attrs,
                ..
            } = slot
            {
                let dir = LayerPath::new(path).map_err(|e| reframe(self.layer, e))?;
                self.w.disk_dirs.push((dir, attrs.clone(), self.layer));
            }
            let update = match (self.w.index.get(path), slot) {
                (None, Slot::Dir { opaque, .. }) => Decided::Dir { closed: *opaque },
                (None, Slot::NonDir { .. }) => Decided::NonDir,
                (None, Slot::Whiteout) => Decided::Gone,
                (
                    Some(Decided::Dir { closed: false }),
                    Slot::Dir { opaque: true, .. } | Slot::NonDir { .. } | Slot::Whiteout,
                ) => Decided::Dir { closed: true },
                _ => continue,
            };
            candidates.push((path.clone(), update));
        }
        // Only what shows is decided: under a closed directory the index
        // already hides everything.
        let mut updates = Vec::with_capacity(candidates.len());
        for (path, update) in candidates {
            if self.open(parent_str(&path)) {
                updates.push((path, update));
            }
        }
        self.w.index.extend(updates);
        if self.root_opaque {
            self.w.root_closed = true;
        }
        if self.w.root_meta.is_none() {
            self.w.root_meta = self.root_meta.take().map(|m| (m, self.layer));
        }
        self.w.summary.devices_stripped += self.counts.devices_stripped;
        self.w.summary.setuid_stripped += self.counts.setuid_stripped;
        Ok(())
    }

    /// Asks this layer search `id`'s question; whether the search goes on.
    fn step(&mut self, id: usize) -> Result<bool> {
        let seek = &self.w.seeks[id];
        let is_link = matches!(seek.kind, SeekKind::Link { .. });
        let q = seek.path.clone();
        // What this layer shows at `q` to the layers above, as import's
        // view of the layers below would show it.
        let (found, ino) = match self.slots.get(q.as_bytes()) {
            // This layer only implies it too: its attributes come from
            // further below.
            Some(Slot::Dir {
                attrs: DirAttrs::Seek(_),
                ..
            }) if !is_link => return Ok(true),
            Some(Slot::Dir { attrs, .. }) => {
                let meta = match attrs {
                    DirAttrs::Known(m) => m.clone(),
                    DirAttrs::Seek(_) => Metadata::new(FileType::Dir),
                };
                (Some(meta), None)
            }
            Some(Slot::NonDir { ino, .. }) => {
                let ino = *ino;
                if let (true, Body::CopyUp { path, .. }) = (is_link, &self.inodes[ino].body) {
                    // A copy of what is below this layer: ask further down.
                    self.w.seeks[id].path = path.clone();
                    return Ok(true);
                }
                (Some(self.inodes[ino].meta.clone()), Some(ino))
            }
            Some(Slot::Whiteout) => (None, None),
            None if self.closed_above(&q) => (None, None),
            None => return Ok(true),
        };
        let seek = &self.w.seeks[id];
        if is_link {
            link_target_below(&seek.asked, found).map_err(|r| refused(seek, r))?;
            if let Some(ino) = ino {
                self.resolve_link(id, ino)?;
            }
        } else {
            let meta = implied_dir_meta(&seek.asked, found).map_err(|r| refused(seek, r))?;
            self.w.dir_results.insert(id, meta);
        }
        Ok(false)
    }

    /// Whether this layer hides everything below it at `path` from above
    /// (an opaque directory, a whiteout or a non-directory on the way).
    fn closed_above(&self, path: &LayerPath) -> bool {
        if self.root_opaque {
            return true;
        }
        let mut cur = path.parent();
        while let Some(dir) = cur {
            if dir.is_root() {
                break;
            }
            if let Some(Slot::Dir { opaque: true, .. } | Slot::NonDir { .. } | Slot::Whiteout) =
                self.slots.get(dir.as_bytes())
            {
                return true;
            }
            cur = dir.parent();
        }
        false
    }

    /// Creates the names of a copied-up hard link target, now that the
    /// layer that holds the original (inode `ino` of this layer) is known.
    fn resolve_link(&mut self, id: usize, ino: usize) -> Result<()> {
        let seek = &mut self.w.seeks[id];
        let (from, entry) = (seek.layer, seek.entry.clone());
        let names = match &mut seek.kind {
            SeekKind::Link { names } => std::mem::take(names),
            SeekKind::Dir => return Ok(()),
        };
        let Some((first, rest)) = names.split_first() else {
            return Ok(());
        };
        let fail = |e: DiskError| e.error(from, &entry);
        let inode = &self.inodes[ino];
        let meta = inode.meta.clone();
        match &inode.body {
            Body::File { ordinal, name } => {
                let fd = self.w.disk.create_file(first).map_err(fail)?;
                self.w.summary.files += 1;
                let source = match (inode.needs_fill, inode.names.first()) {
                    _ if meta.size == 0 => None,
                    (false, Some(original)) => {
                        match self.w.disk.open_file(original, OFlags::RDONLY) {
                            Ok(src) => Some(src),
                            // Not readable by us (a file of mode 0): read the
                            // layer again instead.
                            Err(e) if e.errno == Errno::ACCESS => None,
                            Err(e) => return Err(fail(e)),
                        }
                    }
                    _ => None,
                };
                match source {
                    Some(src) => {
                        copy_fd(&src, &fd)
                            .map_err(|e| fail(DiskError::new(e, "cannot copy the data into it")))?;
                        self.w.disk.set_fd_meta(&fd, &meta).map_err(fail)?;
                        self.w.summary.bytes += meta.size;
                    }
                    None if meta.size == 0 => {
                        self.w.disk.set_fd_meta(&fd, &meta).map_err(fail)?;
                    }
                    None => {
                        self.sinks
                            .entry(*ordinal)
                            .or_insert_with(|| (name.clone(), meta.size, Vec::new()))
                            .2
                            .push((first.clone(), meta.clone(), from));
                    }
                }
            }
            body => {
                self.w.disk.make_object(first, &meta, body).map_err(fail)?;
                count_object(&mut self.w.summary, meta.file_type);
            }
        }
        for name in rest {
            self.w.disk.link(first, name).map_err(fail)?;
            self.w.summary.hard_links += 1;
        }
        Ok(())
    }
}

/// A failed system call, and what was being done.
#[derive(Debug)]
struct DiskError {
    errno: Errno,
    what: String,
}

impl DiskError {
    fn new(errno: Errno, what: impl Into<String>) -> DiskError {
        DiskError {
            errno,
            what: what.into(),
        }
    }

    fn error(self, layer: usize, name: impl PathLike) -> Error {
        let kind = errno_kind(self.errno);
        entry_error(layer, name, kind, format!("{}: {}", self.what, self.errno))
    }
}

/// The target directory, and every operation on it, beneath its descriptor.
struct Disk {
    root: OwnedFd,
    /// What the target was before: `None` if this flatten created it.
    found: Option<rustix::fs::Stat>,
    owners: Owners,
    privileged_xattrs: Policy,
    /// Owners that need no `chown`: what new files get anyway.
    native: Option<(u32, u32)>,
    /// The last parent directory opened.
    cached: Option<(LayerPath, OwnedFd)>,
    procfs: Option<bool>,
}

impl Disk {
    /// Creates or opens the target: it must be new or an empty directory.
    fn open(target: &Utf8Path, owners: Owners) -> Result<Disk> {
        let created = match rustix::fs::mkdir(target.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(open_error(target, e, "cannot create the directory")),
        };
        let disk = Disk::open_dir(target, owners, created);
        if disk.is_err() && created {
            // Best effort: the error says what went wrong.
            let _ = rustix::fs::unlinkat(rustix::fs::CWD, target.as_str(), AtFlags::REMOVEDIR);
        }
        disk
    }

    fn open_dir(target: &Utf8Path, owners: Owners, created: bool) -> Result<Disk> {
        let fail = |e: Errno, what: &str| open_error(target, e, what);
        let root = rustix::fs::open(
            target.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // `O_DIRECTORY | O_NOFOLLOW` on a symlink is ENOTDIR: say which.
            Errno::LOOP | Errno::NOTDIR
                if rustix::fs::statat(
                    rustix::fs::CWD,
                    target.as_str(),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .is_ok_and(|st| FileType::from_mode(st.st_mode) == Some(FileType::Symlink)) =>
            {
                Error::new(ErrorKind::FilesystemLoop, Operation::Flatten, target)
                    .with_detail("the target is a symlink (refused: it could lead anywhere)")
            }
            Errno::NOTDIR => Error::new(ErrorKind::NotADirectory, Operation::Flatten, target)
                .with_detail("the target exists and is not a directory"),
            e => fail(e, "cannot open the directory"),
        })?;
        // Before it is listed: listing changes its access time.
        let found = rustix::fs::fstat(&root).map_err(|e| fail(e, "cannot stat it"))?;
        if created {
            rustix::fs::fchmod(&root, Mode::from_raw_mode(0o755))
                .map_err(|e| fail(e, "cannot set its mode"))?;
        } else {
            let mut dir =
                rustix::fs::Dir::read_from(&root).map_err(|e| fail(e, "cannot list it"))?;
            while let Some(e) = dir.read() {
                let e = e.map_err(|e| fail(e, "cannot list it"))?;
                let name = e.file_name().to_bytes();
                if name != b"." && name != b".." {
                    return Err(Error::new(
                        ErrorKind::DirectoryNotEmpty,
                        Operation::Flatten,
                        target,
                    )
                    .with_detail("the target directory is not empty"));
                }
            }
        }
        let st = rustix::fs::fstat(&root).map_err(|e| fail(e, "cannot stat it"))?;
        let (uid, gid) = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        // New files get our ids unless the directory hands its group on
        // (setgid, or a filesystem mounted with `grpid`).
        let native = (st.st_mode & 0o2000 == 0 && st.st_gid == gid).then_some((uid, gid));
        Ok(Disk {
            root,
            found: (!created).then_some(found),
            owners,
            privileged_xattrs: Policy::Keep,
            native,
            cached: None,
            procfs: None,
        })
    }

    /// Removes everything this flatten wrote after an error: the whole
    /// target if it created it, else what is in it, giving the directory
    /// back its mode, owner and times.
    fn undo(&mut self, target: &Utf8Path) -> Result<(), Errno> {
        self.cached = None;
        let st = rustix::fs::fstat(&self.root)?;
        if st.st_mode & 0o700 != 0o700 {
            // A layer's `./` entry may have made it read-only.
            rustix::fs::fchmod(&self.root, Mode::from_raw_mode(0o700))?;
        }
        remove_children(&self.root)?;
        let Some(found) = &self.found else {
            return rustix::fs::unlinkat(rustix::fs::CWD, target.as_str(), AtFlags::REMOVEDIR);
        };
        if (st.st_uid, st.st_gid) != (found.st_uid, found.st_gid) {
            rustix::fs::fchown(
                &self.root,
                Some(rustix::fs::Uid::from_raw(found.st_uid)),
                Some(rustix::fs::Gid::from_raw(found.st_gid)),
            )?;
        }
        rustix::fs::fchmod(&self.root, Mode::from_raw_mode(found.st_mode & MODE_MASK))?;
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: found.st_atime,
                tv_nsec: found.st_atime_nsec as _,
            },
            last_modification: Timespec {
                tv_sec: found.st_mtime,
                tv_nsec: found.st_mtime_nsec as _,
            },
        };
        rustix::fs::futimens(&self.root, &times)
    }

    /// An `O_PATH` descriptor of directory `dir` beneath the root.
    fn dir(&mut self, dir: &LayerPath) -> Result<&OwnedFd, DiskError> {
        if dir.is_root() {
            return Ok(&self.root);
        }
        let hit = matches!(&self.cached, Some((p, _)) if p == dir);
        if !hit {
            let fd = open_beneath(&self.root, dir, OFlags::PATH | OFlags::DIRECTORY)
                .map_err(|e| DiskError::new(e, format!("cannot open its directory `{dir}`")))?;
            self.cached = Some((dir.clone(), fd));
        }
        match &self.cached {
            Some((_, fd)) => Ok(fd),
            None => Err(DiskError::new(Errno::NOENT, "no directory")),
        }
    }

    fn parent_of<'p>(&mut self, path: &'p LayerPath) -> Result<(&OwnedFd, &'p [u8]), DiskError> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(DiskError::new(Errno::BUSY, "it is the root"));
        };
        Ok((self.dir(&parent)?, name.as_bytes()))
    }

    fn owner(&self, meta: &Metadata) -> Option<(u32, u32)> {
        match self.owners {
            Owners::Ignore => None,
            Owners::Preserve if self.native == Some((meta.uid, meta.gid)) => None,
            Owners::Preserve => Some((meta.uid, meta.gid)),
        }
    }

    /// Whether extended attribute `name` of an object of `file_type` is
    /// written, by the privileged-xattrs policy (refused: an error).
    fn writes_xattr(&self, file_type: FileType, name: &str) -> Result<bool, DiskError> {
        let privileged = name.starts_with("trusted.") || name.starts_with("security.");
        match self.privileged_xattrs {
            Policy::Strip if privileged => Ok(false),
            Policy::Refuse if privileged => Err(DiskError::new(
                Errno::PERM,
                format!("extended attribute `{name}` needs privilege (refused)"),
            )),
            _ => Ok(xattr_allowed_on(file_type, name)),
        }
    }

    fn check_procfs(&mut self) -> Result<(), DiskError> {
        let ok = *self.procfs.get_or_insert_with(procfs_is_mounted);
        if ok {
            Ok(())
        } else {
            Err(DiskError::new(
                Errno::NOENT,
                "no procfs at /proc (needed to set attributes of symlinks and special files)",
            ))
        }
    }

    fn mkdir(&mut self, path: &LayerPath) -> Result<(), DiskError> {
        let (dir, name) = self.parent_of(path)?;
        rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
            .map_err(|e| DiskError::new(e, "cannot create the directory"))
    }

    fn create_file(&mut self, path: &LayerPath) -> Result<OwnedFd, DiskError> {
        let (dir, name) = self.parent_of(path)?;
        rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| DiskError::new(e, "cannot create the file"))
    }

    /// Opens a regular file this flatten wrote (never a fifo or device).
    fn open_file(&mut self, path: &LayerPath, flags: OFlags) -> Result<OwnedFd, DiskError> {
        let fd = open_beneath(&self.root, path, flags | OFlags::NONBLOCK)
            .map_err(|e| DiskError::new(e, format!("cannot open `{path}`")))?;
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| DiskError::new(e, format!("cannot stat `{path}`")))?;
        if FileType::from_mode(st.st_mode) != Some(FileType::File) {
            return Err(DiskError::new(
                Errno::INVAL,
                format!("`{path}` is not a regular file"),
            ));
        }
        Ok(fd)
    }

    /// Creates a symlink, fifo or device with its attributes.
    fn make_object(
        &mut self,
        path: &LayerPath,
        meta: &Metadata,
        body: &Body,
    ) -> Result<(), DiskError> {
        let owner = self.owner(meta);
        let mut xattrs: Vec<(&str, &[u8])> = Vec::new();
        for (n, v) in meta.xattrs.iter() {
            if self.writes_xattr(meta.file_type, n)? {
                xattrs.push((n, &v[..]));
            }
        }
        let is_symlink = matches!(body, Body::Symlink(_));
        if !is_symlink || !xattrs.is_empty() {
            self.check_procfs()?;
        }
        if !is_symlink && !rdev_fits_mknod(meta.rdev) {
            return Err(DiskError::new(
                Errno::INVAL,
                format!(
                    "device number {}:{} does not fit mknod",
                    crate::meta::major(meta.rdev),
                    crate::meta::minor(meta.rdev)
                ),
            ));
        }
        let (dir, name) = self.parent_of(path)?;
        match body {
            Body::Symlink(target) => rustix::fs::symlinkat(target.as_bytes(), dir, name)
                .map_err(|e| DiskError::new(e, "cannot create the symlink"))?,
            _ => node::make_special(Steps::Uncounted, dir, name, meta)
                .map_err(|e| DiskError::new(e, "cannot create the special file"))?,
        }
        // From here on the object is reached by its descriptor alone, and
        // only if it is still what was made: something swapped in under
        // its name (a symlink to anywhere) gets no call.
        let obj = open_o_path(dir, name).map_err(|e| DiskError::new(e, "cannot open it"))?;
        let st = rustix::fs::fstat(&obj).map_err(|e| DiskError::new(e, "cannot stat it"))?;
        if FileType::from_mode(st.st_mode) != Some(meta.file_type) {
            return Err(DiskError::new(
                Errno::AGAIN,
                "it was replaced while it was made",
            ));
        }
        let want = FdMeta {
            owner,
            mode: (!is_symlink).then_some(meta.mode),
            remove_xattrs: Vec::new(),
            set_xattrs: xattrs.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
            times: Some(node::timestamps(meta)),
        };
        node::set_path_fd_meta(Steps::Uncounted, &obj, &want)
            .map_err(|(step, e)| meta_error(step, e, owner, meta))
    }

    /// Owner, mode, extended attributes and times of an open file or
    /// directory, in that order.
    fn set_fd_meta(&self, fd: &OwnedFd, meta: &Metadata) -> Result<(), DiskError> {
        let owner = self.owner(meta);
        let mut set_xattrs = Vec::new();
        let mut refused = None;
        for (name, value) in meta.xattrs.iter() {
            match self.writes_xattr(meta.file_type, name) {
                Ok(true) => set_xattrs.push((name.to_owned(), &value[..])),
                Ok(false) => {}
                Err(e) => {
                    // Owner and mode go on first all the same, and may fail
                    // first.
                    refused = Some(e);
                    set_xattrs.clear();
                    break;
                }
            }
        }
        let want = FdMeta {
            owner,
            mode: Some(meta.mode),
            remove_xattrs: Vec::new(),
            set_xattrs,
            times: refused.is_none().then(|| node::timestamps(meta)),
        };
        node::set_fd_meta(Steps::Uncounted, fd, &want)
            .map_err(|(step, e)| meta_error(step, e, owner, meta))?;
        refused.map_or(Ok(()), Err)
    }

    fn set_dir_meta(&mut self, path: &LayerPath, meta: &Metadata) -> Result<(), DiskError> {
        let fd = if path.is_root() {
            rustix::fs::openat(
                &self.root,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        } else {
            open_beneath(&self.root, path, OFlags::RDONLY | OFlags::DIRECTORY)
        }
        .map_err(|e| DiskError::new(e, "cannot open the directory"))?;
        self.set_fd_meta(&fd, meta)
    }

    fn link(&mut self, existing: &LayerPath, new: &LayerPath) -> Result<(), DiskError> {
        let (Some(parent), Some(old_name)) = (existing.parent(), existing.file_name()) else {
            return Err(DiskError::new(Errno::PERM, "a hard link to the root"));
        };
        let old_dir = open_beneath(&self.root, &parent, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| DiskError::new(e, format!("cannot open the directory of `{existing}`")))?;
        let (dir, name) = self.parent_of(new)?;
        rustix::fs::linkat(&old_dir, old_name.as_bytes(), dir, name, AtFlags::empty())
            .map_err(|e| DiskError::new(e, format!("cannot link it to `{existing}`")))
    }

    fn remove(&mut self, path: &LayerPath, is_dir: bool) -> Result<(), DiskError> {
        let flags = if is_dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        let (dir, name) = self.parent_of(path)?;
        rustix::fs::unlinkat(dir, name, flags).map_err(|e| {
            DiskError::new(e, format!("cannot remove `{path}` (replaced in its layer)"))
        })?;
        if is_dir {
            self.cached = None;
        }
        Ok(())
    }
}

fn open_error(target: &Utf8Path, e: Errno, what: &str) -> Error {
    Error::new(errno_kind(e), Operation::Flatten, target).with_detail(format!("{what}: {e}"))
}

/// Removes everything in directory `dir`, never following a symlink;
/// every directory on the way is made readable and writable first (a layer
/// may have made one read-only, or mode 0).
fn remove_children(dir: &OwnedFd) -> Result<(), Errno> {
    let mut names = Vec::new();
    let mut list = rustix::fs::Dir::read_from(dir)?;
    while let Some(e) = list.read() {
        let e = e?;
        let name = e.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push((name.to_owned(), e.file_type()));
        }
    }
    drop(list);
    for (name, kind) in names {
        let is_dir = match kind {
            rustix::fs::FileType::Directory => true,
            rustix::fs::FileType::Unknown => {
                let st = rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_mode(st.st_mode) == Some(FileType::Dir)
            }
            _ => false,
        };
        if !is_dir {
            rustix::fs::unlinkat(dir, &name, AtFlags::empty())?;
            continue;
        }
        let open = || {
            rustix::fs::openat(
                dir,
                &name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        let sub = match open() {
            Ok(sub) => sub,
            Err(Errno::ACCESS) => {
                // Mode 0, as a user other than root: change the mode of
                // exactly that directory through `/proc/self/fd`.
                let obj = open_o_path(dir, &name)?;
                rustix::fs::chmodat(
                    rustix::fs::CWD,
                    proc_path(&obj).as_str(),
                    Mode::from_raw_mode(0o700),
                    AtFlags::empty(),
                )?;
                open()?
            }
            Err(e) => return Err(e),
        };
        rustix::fs::fchmod(&sub, Mode::from_raw_mode(0o700))?;
        remove_children(&sub)?;
        rustix::fs::unlinkat(dir, &name, AtFlags::REMOVEDIR)?;
    }
    Ok(())
}

/// The parent of a path string (`""` for the root and its children).
fn parent_str(path: &[u8]) -> &[u8] {
    path.iter()
        .rposition(|&b| b == b'/')
        .map_or(&[], |i| &path[..i])
}

fn count_object(summary: &mut FlattenSummary, file_type: FileType) {
    match file_type {
        FileType::File => summary.files += 1,
        FileType::Symlink => summary.symlinks += 1,
        _ => summary.specials += 1,
    }
}

/// The error of step `step` of setting `meta` (with `owner`, the owner
/// given, if any).
fn meta_error(step: MetaStep, e: Errno, owner: Option<(u32, u32)>, meta: &Metadata) -> DiskError {
    match step {
        MetaStep::Owner => {
            let (uid, gid) = owner.unwrap_or((meta.uid, meta.gid));
            chown_error(e, uid, gid)
        }
        MetaStep::Mode => DiskError::new(e, "cannot set its mode"),
        MetaStep::Xattr(name) => {
            DiskError::new(e, format!("cannot set extended attribute `{name}`"))
        }
        MetaStep::Times => DiskError::new(e, "cannot set its times"),
    }
}

fn chown_error(e: Errno, uid: u32, gid: u32) -> DiskError {
    if e == Errno::PERM {
        DiskError::new(
            e,
            format!(
                "cannot give it owner {uid}:{gid} (only root can; flatten with `Owners::Ignore` to leave files owned by the caller)"
            ),
        )
    } else {
        DiskError::new(e, format!("cannot give it owner {uid}:{gid}"))
    }
}

fn write_all_at(fd: &OwnedFd, mut offset: u64, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match rustix::io::pwrite(fd, data, offset) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
