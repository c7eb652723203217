//! Layered filesystem semantics — the copy-on-write layers of Linux
//! overlayfs and of Docker/OCI images — as a value a program can hold.
//!
//! Read-only lower layers stack under one writable upper layer. A
//! [`MergedView`] reads top-down, copies a file up into the upper layer
//! before changing it, and records a whiteout when something that exists
//! below is deleted, exactly as the kernel's overlayfs does (errno for
//! errno). Layers are plain values: [`MemLayer`] keeps one in memory, cheap
//! to snapshot, and any type can be a layer by implementing [`Layer`].
//!
//! ```
//! use std::sync::Arc;
//! use layerstack::{Entry, Layer, LayerPath, MemLayer, MergedView};
//!
//! // A base layer, as an image's first layer would be.
//! let mut base = MemLayer::new();
//! base.add_file("etc/app.conf", "port = 80\n")?;
//! base.add_file("etc/motd", "hello\n")?;
//! let view = MergedView::new(vec![Arc::new(base) as Arc<dyn Layer>], MemLayer::new())?;
//!
//! view.write("etc/app.conf", "port = 8080\n")?; // copied up, then changed
//! view.remove_file("etc/motd")?; // the base keeps it: a whiteout hides it
//! assert_eq!(view.read_to_string("etc/app.conf")?, "port = 8080\n");
//! assert!(!view.exists("etc/motd")?);
//!
//! // The upper layer is the changeset: one Dockerfile step.
//! let changes = view.changes()?;
//! assert_eq!(changes[2].0, LayerPath::new("etc/motd")?);
//! assert_eq!(changes[2].1, Entry::Whiteout);
//! view.commit()?; // freeze it into a read-only layer, start a fresh upper
//! assert_eq!(view.layers().len(), 2);
//! # Ok::<(), layerstack::Error>(())
//! ```
//!
//! # The parts
//!
//! - [`layer`]: the [`Layer`] and [`LayerMut`] traits, with whiteouts and
//!   opaque directories as first-class data; [`MemLayer`] in memory and
//!   [`DirLayer`] on disk, in exactly the format the kernel's overlayfs
//!   mounts (see [`layer::dir`] for the format, and the example
//!   `overlay_on_disk`, which prints the `mount -t overlay` command for a
//!   stack it wrote).
//! - [`view`]: [`MergedView`], shaped like `std::fs`; each method's
//!   documentation says only how layers change what `std::fs` does.
//! - [`model`]: the reference model, a plain tree with the same operations,
//!   results and errors: the oracle this crate tests itself against, public
//!   so other projects can test their layered storage against it.
//! - [`error`]: [`Error`] carries the errno the kernel would return
//!   ([`Error::kind`]) with the operation and the path.
//! - `testing` (feature `proptest`): operations, proptest strategies for
//!   layer stacks and operation sequences, and a conformance suite for any
//!   [`Layer`] implementation.
//! - `oci` (feature `oci`): OCI images, below.
//!
//! # OCI images
//!
//! With the feature `oci` a layer goes in and out of an OCI layer tarball
//! (plain, gzip or zstd; whiteouts `.wh.NAME` and opaque markers
//! `.wh..wh..opq` become [`Entry::Whiteout`] and [`Node::opaque`] and back;
//! export is deterministic, so the same content gives the same digest), and
//! an OCI image layout is a verified, content-addressed blob store with
//! tags. `oci::ImageStore` opens an image as a stack of layers: a
//! container is a [`MergedView`] over them, `builder` builds an image one
//! step at a time as a Dockerfile does (each step changes a view, what it
//! changed becomes a layer), `changes` lists what each layer adds, changes
//! and deletes as `docker diff` does, and `oci::layer_from_dir`
//! turns an edited root filesystem into the layer that makes the image show
//! it, as `umoci repack` does. The `layerstack` command-line tool (the
//! workspace's `layerstack-cli` crate) puts this in a shell: `layerstack demo` builds and
//! explains an example image; `ls`, `cat`, `diff`, `inspect` and `commit`
//! work on any image layout (`umoci`, `skopeo copy oci:...`).
//!
//! With the feature `registry`, `oci::registry` pushes images to a
//! registry and pulls them from one (the OCI distribution spec): each blob
//! is sent once, mounted from another repository of the same registry when
//! it is there, and checked against its digest as it streams into the
//! layout; `layerstack push`, `pull` and `copy` use it.
//!
//! # Semantics
//!
//! The reference is the Linux kernel's overlayfs with its default options
//! (`redirect_dir` off, `index` off, `metacopy` off): lookup top-down, a
//! whiteout hides a name only in the layers below it, an opaque directory
//! hides everything below it, a merged directory lists each name once,
//! copy-up on any change (open for writing, truncate, chmod, chown,
//! utimes, xattrs, `link`) with parents first and metadata kept, a
//! whiteout on deletion of a name a lower layer holds, `EXDEV` for renaming
//! a directory that exists below (or a redirect, with
//! [`DirRename::Redirect`](merged::DirRename::Redirect)), hard links broken by
//! copy-up (or kept, with
//! [`HardLinkCopyUp::Keep`](merged::HardLinkCopyUp::Keep)). Symlinks resolve
//! inside the view as in a chroot.
//!
//! # Security
//!
//! The threat model: layers, layer tars and image layouts come from
//! strangers; the process using the crate, its host filesystem outside the
//! directories it hands to the crate, and the kernel are trusted.
//!
//! **Defended.**
//! - *Escaping a layer's root.* A [`LayerPath`] is validated (relative,
//!   normalised, no `..`), so a backend is never handed a path outside its
//!   root. Layers never follow symlinks themselves; the merged view
//!   resolves every symlink inside its own root (`..` stops at the root, an
//!   absolute target starts there, at most 40 links).
//! - *Symlinks planted on disk.* A [`DirLayer`] and a flatten's target
//!   are [confined on disk](#confinement-on-disk): a symlink in a layer
//!   directory is never followed, fifos and devices in it are never
//!   opened, and no entry of any layer can write, chmod or chown through a
//!   symlink another entry made.
//! - *Hostile layer tars.* Tars are applied, never extracted. Refused with
//!   a clear error naming the entry: names with `..` (a leading `/` is
//!   dropped, as GNU tar does), whiteouts named `.wh.`, `.wh..`, `.wh...`,
//!   hard links to targets outside the stack, to nothing or reached
//!   through a symlink, entries under a symlink or file of their own or a
//!   lower layer, a root entry that is not a directory, a PAX size that
//!   disagrees with a nonzero header size (two parsers must never see two
//!   different layers), the character device 0/0 (the overlay whiteout
//!   marker) and unknown entry types (GNU sparse files are read, their
//!   holes kept as holes). A whiteout never deletes an entry of its own
//!   layer. Overlay bookkeeping xattrs (`trusted.overlay.*`,
//!   `user.overlay.*`) in a tar are never applied.
//! - *Resource exhaustion.* [`oci::Limits`] are checked while a tar
//!   streams, before anything is buffered: entries (default 1,000,000),
//!   uncompressed bytes (64 GiB, which stops a decompression bomb at the
//!   limit), one PAX header or GNU long name (1 MiB) and path depth (256
//!   components). File data streams into the layer, so memory stays
//!   bounded by the layer's own storage; JSON documents are read up to
//!   4 MiB.
//! - *Tampered blobs.* An image layout turns only validated sha256 digests
//!   into file names, writes blobs atomically (temporary file, fsync,
//!   rename) and checks every blob it reads against its digest and size; a
//!   layer's DiffID is checked against the image config.
//! - *Hostile registries.* What a registry sends is checked like a layout's
//!   blobs (a blob or manifest is stored under its digest only when its
//!   bytes hash to it); a `Location` or token realm on another host with a
//!   private or loopback address is refused; credentials go to the
//!   registry's own host only; answers are read to a bounded size and
//!   their text is stripped of control characters.
//! - *Hostile image layouts.* Every part of a layout (`oci-layout`,
//!   `index.json`, `blobs`, `blobs/sha256`, each blob) is opened by a
//!   single name relative to the layout's directory with `O_NOFOLLOW`: a
//!   symlinked `blobs` is refused (`ELOOP`), never written through.
//!   Layout files are opened `O_NONBLOCK` and must be regular files, so a
//!   fifo is an error, not a hang. Tags follow the OCI and Docker grammar
//!   (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`) and are checked before anything
//!   is written; a tag held by two descriptors is an error. A layer's
//!   media type must be a known layer type and agree with its content
//!   (containerd refuses unknown layer types too).
//! - *Risky entries*, under a policy ([`oci::Policy`]: `Keep`, the
//!   default, as Docker does; `Strip`; `Refuse`): device nodes, and setuid
//!   and setgid bits on files.
//! - Nothing from a layer is ever executed. Names starting with `.wh.` have
//!   no special meaning in a [`MemLayer`] or a view: whiteouts are data,
//!   never inferred from names.
//!
//! **Not defended.** Another process changing a layer's directories, a
//! flatten target or an image layout while the crate uses them (the crate
//! never follows a symlink such a process plants, but it can read a file
//! that was swapped, and a read-only `DirLayer` remembers its lookups);
//! running out of disk space; the contents of files (a layer may hold a
//! malicious program — the crate only never runs it); the host's view of
//! setuid files and device nodes a flatten writes when the policy keeps
//! them.
//!
//! **An image layout after a failure.** Blobs are written to a temporary
//! file in `blobs/sha256/`, synced, renamed to their digest and the
//! directory synced; `index.json` is replaced the same way, under an
//! exclusive lock, and a tag is written last, after every blob it needs.
//! So whatever fails, every tag points at a whole image:
//! - *A crash or a kill* leaves the old `index.json` or the new one, whole;
//!   blobs are whole or absent. What can be left: temporary files (removed
//!   by the next tag change or `gc` once their process is gone, or after
//!   an hour) and blobs no tag reaches (removed by
//!   [`OciLayout::collect_garbage`](oci::OciLayout::collect_garbage)). A
//!   layout whose creation was cut short (no `oci-layout` yet) is finished
//!   by [`OciLayout::resume`](oci::OciLayout::resume).
//! - *An I/O error or a full disk* before the rename of `index.json`: the
//!   operation fails and `index.json` is exactly as before. After it, only
//!   the `fsync` of the directory is left; if that fails, the tag is in
//!   (every later read sees it) and
//!   [`Durability::Unconfirmed`](oci::Durability::Unconfirmed) says that a
//!   crash may still bring the old index back. The `layerstack` tool then
//!   succeeds with a warning that says so.
//!
//!
//! ## Confinement on disk
//!
//! Every path on disk ([`DirLayer`], a flatten's target) is opened relative
//! to a descriptor of its root, never as a joined string. A [`LayerPath`]
//! (relative, normalised, no `..`) is opened with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, or,
//! where `openat2` is missing, by a walk of `O_PATH | O_NOFOLLOW` opens, so
//! no symlink is ever followed and nothing outside the root is reached
//! whatever the tree below it holds; a symlink on the way is `ENOTDIR`.
//! Objects are made with `O_CREAT | O_EXCL | O_NOFOLLOW`, `mkdirat`,
//! `symlinkat`, `mknodat` and `linkat` (never following), and changed with
//! `AT_SYMLINK_NOFOLLOW` calls. Fifos and devices are never opened: their
//! mode and extended attributes (and those of symlinks) are read and set
//! through `/proc/self/fd` on an `O_PATH` descriptor, after checking that
//! `/proc` is a real procfs (its magic links then lead to our own
//! descriptors), so `/proc` must be mounted.
//! # Limitations
//!
//! - The view acts as root and checks no permissions.
//! - Fifos, devices and sockets are metadata only: reading or writing one
//!   fails with `EINVAL`.
//! - A [`view::File`] refers to the path its file had when opened; it does
//!   not follow the file through a later rename.
//! - With [`HardLinkCopyUp::Keep`](merged::HardLinkCopyUp::Keep), copy-up
//!   links the names the view shows at that moment (the kernel also counts
//!   names hidden by higher layers in `nlink`).
//! - Error numbers are Linux's.
//! - The view behaves as a `noatime` mount: reading never changes an
//!   atime (a [`DirLayer`] reads `O_NOATIME`), where the kernel's default
//!   `relatime` updates an upper object's atime. Reading a symlink on disk
//!   touches its atime all the same: no system call avoids it.
//! - An upper the kernel wrote with `index=on` whose `work/index` holds
//!   entries (a hard-linked lower file it copied up once) is refused:
//!   the kernel finds the copy from the file's other lower names by file
//!   handle, which this crate cannot compute without `unsafe` code.
//! - Metadata-only copies (the kernel's `metacopy=on`) are read, following
//!   [`merged::Metacopy`], but never written by the view.
//! - Xattr whiteouts count only in directories marked `opaque="x"` (the
//!   kernel's documented rule; its lookups also honour them elsewhere, its
//!   listings do not). `docs/semantics.md` lists every known difference
//!   from the kernel, with its reason.
//! - Lower layers must not change while a view uses them (the kernel says
//!   the same of its lower directories). A view keeps an index of every
//!   directory it visited and the metadata of lower objects it has
//!   `stat`ed, so a lower [`DirLayer`] changed behind its back may not
//!   show the change; when a change is noticed, the error is `EIO` "a
//!   layer changed while the view was using it".
//! - A layer imported from a tar, or committed from a directory, is a
//!   `MemLayer`: its tree is in memory, and its file data too up to a
//!   [`Spill`]'s budget (16 MiB by default), beyond which data goes to an
//!   anonymous file on disk (in the layout's `blobs/sha256` for an
//!   [`ImageStore`](oci::ImageStore) and the tool, in `$TMPDIR` for
//!   [`layer_from_dir`](oci::layer_from_dir)); so listing,
//!   reading and committing an image with a 1 GiB file take tens of MB,
//!   not 1 GiB, but the spill directory needs room for the data. Runs of
//!   zeros and holes are neither held nor spilled (a committed file is
//!   read with `SEEK_DATA`/`SEEK_HOLE`, and zeros are stored as holes).
//!   [`import_layer`](oci::import_layer) alone keeps all data in
//!   memory; import into a [`DirLayer`] to keep a large layer on disk in
//!   the kernel's format. Opening an image still reads every layer whole
//!   (decompressed and hashed) until layers are read lazily.
//! - Layer tars: GNU sparse files, multi-volume archives and names that
//!   are not UTF-8 are refused; PAX global headers are ignored.
//! - A whiteout or opaque marker in a directory that neither its layer nor
//!   any layer below holds makes that directory appear, empty (Docker's
//!   applier skips such a marker; real layer writers always list the
//!   directory first).
//! - Flattening writes into a new or empty directory only; on error the
//!   directory holds part of the tree.
//! - A rootless unpack keeps what it could not write (owners, device
//!   nodes, privileged xattrs) in a file beside the tree, keyed by inode
//!   ([`oci::RootlessMap`]): a copy of the tree (new inodes) loses it, and
//!   commits every owner as root's. Recording it reads the image's layers
//!   a second time.
//! - A [`DirLayer`] is crash-safe (every change is staged in its work
//!   directory and renamed into place) except for one case of
//!   [`WhiteoutFormat::Xattr`](layer::dir::WhiteoutFormat::Xattr): a
//!   rename that leaves a whiteout takes two steps there.
//! - An image layout shared by processes in different pid namespaces: a
//!   temporary file is judged stale when the process its name records is
//!   gone, so a writer in another namespace can lose its temporary file;
//!   its write then fails cleanly (nothing of the layout is damaged).
//! - Garbage collection must not run while another process writes blobs
//!   for an image it has not tagged yet: those blobs are unreferenced.
// No unsafe code but one cast: `path::Name::new` makes a `&Name` of a
// `&[u8]` as std makes a `&Path` of an `&OsStr` (its safety argument is there).
#![deny(unsafe_code)]
#![deny(missing_docs)]
// The crate documentation links to the `oci` items it describes; a build
// without them renders those links as plain text.
#![cfg_attr(not(feature = "oci"), allow(rustdoc::broken_intra_doc_links))]

pub mod data;
pub mod error;
mod fs;
pub mod layer;
pub mod merged;
pub mod meta;
pub mod model;
#[cfg(feature = "mount")]
pub mod mount;
#[cfg(feature = "oci")]
pub mod oci;
pub mod path;
pub mod spill;
#[cfg(any(test, feature = "proptest"))]
pub mod testing;
pub mod view;

pub use data::FileData;
pub use error::{Error, ErrorKind, Operation, Result};
pub use layer::dir::DirLayer;
pub use layer::mem::MemLayer;
pub use layer::{Content, DirListing, Entry, EntryKind, Layer, LayerMut, Node};
pub use merged::MergedFs;
pub use meta::{FileType, Metadata, Timestamp, Xattrs, major, makedev, minor};
pub use path::{LayerPath, Name, NameBuf, PathLike, escape_name};
pub use spill::Spill;
pub use view::MergedView;

/// The README's Rust examples, compiled and run as doctests so the front
/// door never shows code that does not build.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
