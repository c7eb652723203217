//! The merged-view contract: what every implementation of overlay semantics
//! promises, stated once as a trait, and the options they share.
//!
//! [`MergedFs`] is implemented by [`MergedView`] (and by
//! `&MergedView`, since the view's methods take `&self`: a shared reference
//! is enough to write), by the reference [`Model`], and can
//! be by anything downstream that shows a merged tree (a FUSE adapter over a
//! view, a wrapper that injects faults). Code written against the trait
//! runs on all of them: the test dispatcher `testing::apply` and the tree
//! walk `testing::snapshot_view` (feature `proptest`) are written once
//! this way.
//!
//! The options ([`ViewOptions`], [`OpenOptions`], [`RenameMode`], ...) live
//! here, below both the view and the model, so that the oracle does not
//! import what it checks. This is their one public path:
//! `layerstack::merged::ViewOptions`, and so on.
//!
//! ```
//! use layerstack::merged::MergedFs;
//! use layerstack::model::Model;
//! use layerstack::{MemLayer, MergedView};
//!
//! fn make_motd<F: MergedFs + ?Sized>(fs: &mut F) -> layerstack::Result<()> {
//!     fs.create_dir_all("etc")?;
//!     fs.write("etc/motd", b"hello\n")
//! }
//!
//! let view = MergedView::new(vec![], MemLayer::new())?;
//! make_motd(&mut &view)?;
//! let mut model = Model::from_layers(&[], Default::default())?;
//! make_motd(&mut model)?;
//! assert_eq!(MergedFs::read(&&view, "etc/motd")?, model.read("etc/motd")?);
//! # Ok::<(), layerstack::Error>(())
//! ```

pub(crate) mod options;

use bytes::Bytes;

use crate::error::Result;
use crate::meta::{FileType, Metadata, Timestamp};
use crate::model::Model;
use crate::path::{NameBuf, PathLike};
use crate::view::MergedView;

pub use options::{
    Clock, DirEntry, DirEntryRef, DirRename, HandleId, HardLinkCopyUp, LayerSource, Metacopy,
    OpenOptions, RenameMode, ViewOptions,
};

/// A merged tree with the `std::fs`-shaped operations of overlay
/// semantics (`docs/semantics.md`): the contract the view and the model
/// share.
///
/// Paths are user paths as a caller writes them (relative or absolute,
/// with `.`, `..` and trailing slashes); errors carry the errno the kernel
/// gives on an overlay mount. Each method's documentation is that of the
/// [`MergedView`] method of the same name.
pub trait MergedFs {
    /// As [`MergedView::metadata`].
    ///
    /// # Errors
    /// As [`MergedView::metadata`].
    fn metadata(&self, path: impl PathLike) -> Result<Metadata>;
    /// As [`MergedView::symlink_metadata`].
    ///
    /// # Errors
    /// As [`MergedView::symlink_metadata`].
    fn symlink_metadata(&self, path: impl PathLike) -> Result<Metadata>;
    /// As [`MergedView::read`].
    ///
    /// # Errors
    /// As [`MergedView::read`].
    fn read(&self, path: impl PathLike) -> Result<Bytes>;
    /// As [`MergedView::read_at`].
    ///
    /// # Errors
    /// As [`MergedView::read_at`].
    fn read_at(&self, path: impl PathLike, offset: u64, len: usize) -> Result<Bytes>;
    /// As [`MergedView::read_dir`]: names and types, in name order.
    ///
    /// # Errors
    /// As [`MergedView::read_dir`].
    fn read_dir(&self, path: impl PathLike) -> Result<Vec<(NameBuf, FileType)>>;
    /// As [`MergedView::read_link`].
    ///
    /// # Errors
    /// As [`MergedView::read_link`].
    fn read_link(&self, path: impl PathLike) -> Result<NameBuf>;
    /// As [`MergedView::write`].
    ///
    /// # Errors
    /// As [`MergedView::write`].
    fn write(&mut self, path: impl PathLike, data: &[u8]) -> Result<()>;
    /// As [`MergedView::append`].
    ///
    /// # Errors
    /// As [`MergedView::append`].
    fn append(&mut self, path: impl PathLike, data: &[u8]) -> Result<()>;
    /// As [`MergedView::write_at`].
    ///
    /// # Errors
    /// As [`MergedView::write_at`].
    fn write_at(&mut self, path: impl PathLike, offset: u64, data: &[u8]) -> Result<()>;
    /// As [`MergedView::set_len`].
    ///
    /// # Errors
    /// As [`MergedView::set_len`].
    fn set_len(&mut self, path: impl PathLike, len: u64) -> Result<()>;
    /// As [`MergedView::open`], the handle dropped at once (what opening
    /// does to the tree: a copy-up, a creation, a truncation).
    ///
    /// # Errors
    /// As [`MergedView::open`].
    fn open(&mut self, path: impl PathLike, options: &OpenOptions) -> Result<()>;
    /// As [`MergedView::create_dir`].
    ///
    /// # Errors
    /// As [`MergedView::create_dir`].
    fn create_dir(&mut self, path: impl PathLike) -> Result<()>;
    /// As [`MergedView::create_dir_all`].
    ///
    /// # Errors
    /// As [`MergedView::create_dir_all`].
    fn create_dir_all(&mut self, path: impl PathLike) -> Result<()>;
    /// As [`MergedView::remove_file`].
    ///
    /// # Errors
    /// As [`MergedView::remove_file`].
    fn remove_file(&mut self, path: impl PathLike) -> Result<()>;
    /// As [`MergedView::remove_dir`].
    ///
    /// # Errors
    /// As [`MergedView::remove_dir`].
    fn remove_dir(&mut self, path: impl PathLike) -> Result<()>;
    /// As [`MergedView::remove_dir_all`].
    ///
    /// # Errors
    /// As [`MergedView::remove_dir_all`].
    fn remove_dir_all(&mut self, path: impl PathLike) -> Result<()>;
    /// As [`MergedView::rename_with`].
    ///
    /// # Errors
    /// As [`MergedView::rename_with`].
    fn rename_with(
        &mut self,
        from: impl PathLike,
        to: impl PathLike,
        mode: RenameMode,
    ) -> Result<()>;
    /// As [`MergedView::symlink`].
    ///
    /// # Errors
    /// As [`MergedView::symlink`].
    fn symlink(&mut self, target: impl PathLike, link: impl PathLike) -> Result<()>;
    /// As [`MergedView::hard_link`].
    ///
    /// # Errors
    /// As [`MergedView::hard_link`].
    fn hard_link(&mut self, original: impl PathLike, link: impl PathLike) -> Result<()>;
    /// As [`MergedView::set_permissions`].
    ///
    /// # Errors
    /// As [`MergedView::set_permissions`].
    fn set_permissions(&mut self, path: impl PathLike, mode: u32) -> Result<()>;
    /// As [`MergedView::set_owner`].
    ///
    /// # Errors
    /// As [`MergedView::set_owner`].
    fn set_owner(&mut self, path: impl PathLike, uid: Option<u32>, gid: Option<u32>) -> Result<()>;
    /// As [`MergedView::set_times`].
    ///
    /// # Errors
    /// As [`MergedView::set_times`].
    fn set_times(
        &mut self,
        path: impl PathLike,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()>;
    /// As [`MergedView::get_xattr`].
    ///
    /// # Errors
    /// As [`MergedView::get_xattr`].
    fn get_xattr(&self, path: impl PathLike, name: &str) -> Result<Bytes>;
    /// As [`MergedView::set_xattr`].
    ///
    /// # Errors
    /// As [`MergedView::set_xattr`].
    fn set_xattr(&mut self, path: impl PathLike, name: &str, value: &[u8]) -> Result<()>;
    /// As [`MergedView::remove_xattr`].
    ///
    /// # Errors
    /// As [`MergedView::remove_xattr`].
    fn remove_xattr(&mut self, path: impl PathLike, name: &str) -> Result<()>;
    /// As [`MergedView::list_xattr`].
    ///
    /// # Errors
    /// As [`MergedView::list_xattr`].
    fn list_xattr(&self, path: impl PathLike) -> Result<Vec<String>>;
    /// As [`MergedView::mknod`].
    ///
    /// # Errors
    /// As [`MergedView::mknod`].
    fn mknod(
        &mut self,
        path: impl PathLike,
        file_type: FileType,
        mode: u32,
        rdev: u64,
    ) -> Result<()>;
    /// As [`MergedView::commit`]: the writable layer becomes the top lower
    /// one, under a fresh writable layer.
    ///
    /// # Errors
    /// As [`MergedView::commit`].
    fn commit(&mut self) -> Result<()>;
    /// As [`MergedView::open_handle`].
    ///
    /// # Errors
    /// As [`MergedView::open_handle`].
    fn open_handle(&mut self, path: impl PathLike, options: &OpenOptions) -> Result<HandleId>;
    /// As [`MergedView::close_handle`].
    ///
    /// # Errors
    /// As [`MergedView::close_handle`].
    fn close_handle(&mut self, h: HandleId) -> Result<()>;
    /// As [`MergedView::open_handles`].
    fn open_handles(&self) -> Vec<HandleId>;
    /// As [`MergedView::handle_read_at`].
    ///
    /// # Errors
    /// As [`MergedView::handle_read_at`].
    fn handle_read_at(&self, h: HandleId, offset: u64, len: usize) -> Result<Bytes>;
    /// As [`MergedView::handle_write_at`].
    ///
    /// # Errors
    /// As [`MergedView::handle_write_at`].
    fn handle_write_at(&mut self, h: HandleId, offset: u64, data: &[u8]) -> Result<u64>;
    /// As [`MergedView::handle_set_len`].
    ///
    /// # Errors
    /// As [`MergedView::handle_set_len`].
    fn handle_set_len(&mut self, h: HandleId, len: u64) -> Result<()>;
    /// As [`MergedView::handle_metadata`].
    ///
    /// # Errors
    /// As [`MergedView::handle_metadata`].
    fn handle_metadata(&self, h: HandleId) -> Result<Metadata>;
}

/// The methods whose signature is the same on the trait and on the
/// implementation's own type: forwarded as they are.
macro_rules! forward {
    ($imp:ident) => {
        fn metadata(&self, path: impl PathLike) -> Result<Metadata> {
            $imp::metadata(self, path)
        }
        fn symlink_metadata(&self, path: impl PathLike) -> Result<Metadata> {
            $imp::symlink_metadata(self, path)
        }
        fn read(&self, path: impl PathLike) -> Result<Bytes> {
            $imp::read(self, path)
        }
        fn read_at(&self, path: impl PathLike, offset: u64, len: usize) -> Result<Bytes> {
            $imp::read_at(self, path, offset, len)
        }
        fn read_link(&self, path: impl PathLike) -> Result<NameBuf> {
            $imp::read_link(self, path)
        }
        fn write(&mut self, path: impl PathLike, data: &[u8]) -> Result<()> {
            $imp::write(self, path, data)
        }
        fn append(&mut self, path: impl PathLike, data: &[u8]) -> Result<()> {
            $imp::append(self, path, data)
        }
        fn write_at(&mut self, path: impl PathLike, offset: u64, data: &[u8]) -> Result<()> {
            $imp::write_at(self, path, offset, data)
        }
        fn set_len(&mut self, path: impl PathLike, len: u64) -> Result<()> {
            $imp::set_len(self, path, len)
        }
        fn create_dir(&mut self, path: impl PathLike) -> Result<()> {
            $imp::create_dir(self, path)
        }
        fn create_dir_all(&mut self, path: impl PathLike) -> Result<()> {
            $imp::create_dir_all(self, path)
        }
        fn remove_file(&mut self, path: impl PathLike) -> Result<()> {
            $imp::remove_file(self, path)
        }
        fn remove_dir(&mut self, path: impl PathLike) -> Result<()> {
            $imp::remove_dir(self, path)
        }
        fn remove_dir_all(&mut self, path: impl PathLike) -> Result<()> {
            $imp::remove_dir_all(self, path)
        }
        fn rename_with(
            &mut self,
            from: impl PathLike,
            to: impl PathLike,
            mode: RenameMode,
        ) -> Result<()> {
            $imp::rename_with(self, from, to, mode)
        }
        fn symlink(&mut self, target: impl PathLike, link: impl PathLike) -> Result<()> {
            $imp::symlink(self, target, link)
        }
        fn hard_link(&mut self, original: impl PathLike, link: impl PathLike) -> Result<()> {
            $imp::hard_link(self, original, link)
        }
        fn set_permissions(&mut self, path: impl PathLike, mode: u32) -> Result<()> {
            $imp::set_permissions(self, path, mode)
        }
        fn set_owner(
            &mut self,
            path: impl PathLike,
            uid: Option<u32>,
            gid: Option<u32>,
        ) -> Result<()> {
            $imp::set_owner(self, path, uid, gid)
        }
        fn set_times(
            &mut self,
            path: impl PathLike,
            atime: Option<Timestamp>,
            mtime: Option<Timestamp>,
        ) -> Result<()> {
            $imp::set_times(self, path, atime, mtime)
        }
        fn get_xattr(&self, path: impl PathLike, name: &str) -> Result<Bytes> {
            $imp::get_xattr(self, path, name)
        }
        fn set_xattr(&mut self, path: impl PathLike, name: &str, value: &[u8]) -> Result<()> {
            $imp::set_xattr(self, path, name, value)
        }
        fn remove_xattr(&mut self, path: impl PathLike, name: &str) -> Result<()> {
            $imp::remove_xattr(self, path, name)
        }
        fn list_xattr(&self, path: impl PathLike) -> Result<Vec<String>> {
            $imp::list_xattr(self, path)
        }
        fn mknod(
            &mut self,
            path: impl PathLike,
            file_type: FileType,
            mode: u32,
            rdev: u64,
        ) -> Result<()> {
            $imp::mknod(self, path, file_type, mode, rdev)
        }
        fn open_handle(&mut self, path: impl PathLike, options: &OpenOptions) -> Result<HandleId> {
            $imp::open_handle(self, path, options)
        }
        fn close_handle(&mut self, h: HandleId) -> Result<()> {
            $imp::close_handle(self, h)
        }
        fn open_handles(&self) -> Vec<HandleId> {
            $imp::open_handles(self)
        }
        fn handle_read_at(&self, h: HandleId, offset: u64, len: usize) -> Result<Bytes> {
            $imp::handle_read_at(self, h, offset, len)
        }
        fn handle_write_at(&mut self, h: HandleId, offset: u64, data: &[u8]) -> Result<u64> {
            $imp::handle_write_at(self, h, offset, data)
        }
        fn handle_set_len(&mut self, h: HandleId, len: u64) -> Result<()> {
            $imp::handle_set_len(self, h, len)
        }
        fn handle_metadata(&self, h: HandleId) -> Result<Metadata> {
            $imp::handle_metadata(self, h)
        }
    };
}

/// The view's methods take `&self` (writers serialise inside), so the view
/// and a shared reference to it both implement the contract; one body
/// serves both.
macro_rules! view_contract {
    ($($view:ty),*) => {$(
        impl MergedFs for $view {
            forward!(MergedView);

            fn read_dir(&self, path: impl PathLike) -> Result<Vec<(NameBuf, FileType)>> {
                let entries = MergedView::read_dir(self, path)?;
                Ok(entries.into_iter().map(|e| (e.name, e.file_type)).collect())
            }
            fn open(&mut self, path: impl PathLike, options: &OpenOptions) -> Result<()> {
                MergedView::open(self, path, options).map(drop)
            }
            fn commit(&mut self) -> Result<()> {
                MergedView::commit(self)
            }
        }
    )*};
}

view_contract!(MergedView, &MergedView);

impl MergedFs for Model {
    forward!(Model);

    fn read_dir(&self, path: impl PathLike) -> Result<Vec<(NameBuf, FileType)>> {
        Model::read_dir(self, path)
    }
    fn open(&mut self, path: impl PathLike, options: &OpenOptions) -> Result<()> {
        Model::open(self, path, options)
    }
    fn commit(&mut self) -> Result<()> {
        Model::try_commit(self)
    }
}
