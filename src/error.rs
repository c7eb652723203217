//! Errors: an errno-like kind, the operation that failed and the path it
//! failed on.
//!
//! Every error of the crate is an [`Error`]. Its [`kind`](Error::kind) maps
//! one to one to the errno the Linux kernel returns for the same situation
//! on an overlay mount, so callers and tests can compare with the kernel;
//! [`From<Error> for io::Error`](#impl-From<Error>-for-Error) keeps that errno
//! as [`io::Error::raw_os_error`].

use std::fmt;
use std::io;

use crate::path::{Name, NameBuf, PathLike, escape_message};

/// The class of an error, named after the errno the kernel returns for it.
///
/// The numbers are Linux's (they are the same on every Linux architecture
/// for the kinds listed here).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// `EPERM`: the operation is not permitted (for example `mknod` of the
    /// character device 0/0, which is the whiteout marker, or a hard link
    /// to a directory).
    NotPermitted,
    /// `ENOENT`: no such file or directory.
    NotFound,
    /// `EIO`: the layer's storage failed.
    Io,
    /// `E2BIG`: an extended attribute value is too large.
    ArgumentListTooLong,
    /// `EBADF`: a handle was used for something it was not opened for.
    BadHandle,
    /// `EACCES`: access denied by the layer's storage.
    AccessDenied,
    /// `EBUSY`: the object is in use (for example the root directory).
    Busy,
    /// `EEXIST`: the name already exists.
    AlreadyExists,
    /// `EXDEV`: the operation would need to copy a directory tree up (rename
    /// of a directory that exists in a lower layer, without the redirect
    /// option).
    CrossesDevices,
    /// `ENOTDIR`: a path component, or the object, is not a directory.
    NotADirectory,
    /// `EISDIR`: the object is a directory.
    IsADirectory,
    /// `EINVAL`: an invalid argument (for example renaming a directory into
    /// itself, or `read_link` of something that is not a symlink).
    InvalidInput,
    /// `EFBIG`: a file would grow beyond the largest supported size.
    FileTooLarge,
    /// `EROFS`: the layer is read-only.
    ReadOnly,
    /// `EMLINK`: too many hard links.
    TooManyLinks,
    /// `ERANGE`: an extended attribute name is too long.
    OutOfRange,
    /// `ENAMETOOLONG`: a component is longer than 255 bytes or the path
    /// longer than 4095 bytes.
    NameTooLong,
    /// `ENOTEMPTY`: a directory (as the merged view shows it) is not empty.
    DirectoryNotEmpty,
    /// `ELOOP`: more than 40 symbolic links were followed.
    FilesystemLoop,
    /// `ENODATA`: no such extended attribute.
    NoData,
    /// `EOPNOTSUPP`: the operation is not supported (for example an
    /// extended attribute outside the `user.`, `trusted.`, `security.` and
    /// `system.` namespaces).
    Unsupported,
    /// `EBADMSG`: input data is malformed (a corrupt tar header, invalid
    /// JSON, a blob whose digest or size is not what was declared).
    InvalidData,
    /// `EDQUOT`: a configured limit was exceeded (entries, bytes, header
    /// size or path depth of a layer being imported).
    LimitExceeded,
}

impl ErrorKind {
    /// The Linux errno of this kind.
    ///
    /// ```
    /// assert_eq!(layerstack::ErrorKind::NotFound.errno(), 2);
    /// ```
    #[must_use]
    pub const fn errno(self) -> i32 {
        match self {
            ErrorKind::NotPermitted => 1,
            ErrorKind::NotFound => 2,
            ErrorKind::Io => 5,
            ErrorKind::ArgumentListTooLong => 7,
            ErrorKind::BadHandle => 9,
            ErrorKind::AccessDenied => 13,
            ErrorKind::Busy => 16,
            ErrorKind::AlreadyExists => 17,
            ErrorKind::CrossesDevices => 18,
            ErrorKind::NotADirectory => 20,
            ErrorKind::IsADirectory => 21,
            ErrorKind::InvalidInput => 22,
            ErrorKind::FileTooLarge => 27,
            ErrorKind::ReadOnly => 30,
            ErrorKind::TooManyLinks => 31,
            ErrorKind::OutOfRange => 34,
            ErrorKind::NameTooLong => 36,
            ErrorKind::DirectoryNotEmpty => 39,
            ErrorKind::FilesystemLoop => 40,
            ErrorKind::NoData => 61,
            ErrorKind::InvalidData => 74,
            ErrorKind::Unsupported => 95,
            ErrorKind::LimitExceeded => 122,
        }
    }

    /// The kind for a Linux errno, if it is one of the kinds above.
    #[must_use]
    pub fn from_errno(errno: i32) -> Option<ErrorKind> {
        ALL_KINDS.iter().copied().find(|k| k.errno() == errno)
    }

    /// The symbolic errno name, for example `"ENOENT"`.
    #[must_use]
    pub const fn errno_name(self) -> &'static str {
        match self {
            ErrorKind::NotPermitted => "EPERM",
            ErrorKind::NotFound => "ENOENT",
            ErrorKind::Io => "EIO",
            ErrorKind::ArgumentListTooLong => "E2BIG",
            ErrorKind::BadHandle => "EBADF",
            ErrorKind::AccessDenied => "EACCES",
            ErrorKind::Busy => "EBUSY",
            ErrorKind::AlreadyExists => "EEXIST",
            ErrorKind::CrossesDevices => "EXDEV",
            ErrorKind::NotADirectory => "ENOTDIR",
            ErrorKind::IsADirectory => "EISDIR",
            ErrorKind::InvalidInput => "EINVAL",
            ErrorKind::FileTooLarge => "EFBIG",
            ErrorKind::ReadOnly => "EROFS",
            ErrorKind::TooManyLinks => "EMLINK",
            ErrorKind::OutOfRange => "ERANGE",
            ErrorKind::NameTooLong => "ENAMETOOLONG",
            ErrorKind::DirectoryNotEmpty => "ENOTEMPTY",
            ErrorKind::FilesystemLoop => "ELOOP",
            ErrorKind::NoData => "ENODATA",
            ErrorKind::Unsupported => "EOPNOTSUPP",
            ErrorKind::InvalidData => "EBADMSG",
            ErrorKind::LimitExceeded => "EDQUOT",
        }
    }

    fn description(self) -> &'static str {
        match self {
            ErrorKind::NotPermitted => "operation not permitted",
            ErrorKind::NotFound => "no such file or directory",
            ErrorKind::Io => "input/output error",
            ErrorKind::ArgumentListTooLong => "value too large",
            ErrorKind::BadHandle => "bad handle",
            ErrorKind::AccessDenied => "permission denied",
            ErrorKind::Busy => "resource busy",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::CrossesDevices => {
                "directory exists in a lower layer (would need a copy-up of the whole tree)"
            }
            ErrorKind::NotADirectory => "not a directory",
            ErrorKind::IsADirectory => "is a directory",
            ErrorKind::InvalidInput => "invalid argument",
            ErrorKind::FileTooLarge => "file too large",
            ErrorKind::ReadOnly => "read-only layer",
            ErrorKind::TooManyLinks => "too many links",
            ErrorKind::OutOfRange => "name out of range",
            ErrorKind::NameTooLong => "file name too long",
            ErrorKind::DirectoryNotEmpty => "directory not empty",
            ErrorKind::FilesystemLoop => "too many levels of symbolic links",
            ErrorKind::NoData => "no such attribute",
            ErrorKind::Unsupported => "operation not supported",
            ErrorKind::InvalidData => "invalid data",
            ErrorKind::LimitExceeded => "limit exceeded",
        }
    }

    /// The closest [`io::ErrorKind`].
    #[must_use]
    pub fn io_kind(self) -> io::ErrorKind {
        io::Error::from_raw_os_error(self.errno()).kind()
    }
}

const ALL_KINDS: [ErrorKind; 23] = [
    ErrorKind::NotPermitted,
    ErrorKind::NotFound,
    ErrorKind::Io,
    ErrorKind::ArgumentListTooLong,
    ErrorKind::BadHandle,
    ErrorKind::AccessDenied,
    ErrorKind::Busy,
    ErrorKind::AlreadyExists,
    ErrorKind::CrossesDevices,
    ErrorKind::NotADirectory,
    ErrorKind::IsADirectory,
    ErrorKind::InvalidInput,
    ErrorKind::FileTooLarge,
    ErrorKind::ReadOnly,
    ErrorKind::TooManyLinks,
    ErrorKind::OutOfRange,
    ErrorKind::NameTooLong,
    ErrorKind::DirectoryNotEmpty,
    ErrorKind::FilesystemLoop,
    ErrorKind::NoData,
    ErrorKind::Unsupported,
    ErrorKind::InvalidData,
    ErrorKind::LimitExceeded,
];

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// What was being done when an error happened; it names the operation in
/// the message ("failed to remove directory `a/b`: ...").
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Resolving a path (a lookup).
    Lookup,
    /// Reading metadata.
    Metadata,
    /// Reading file contents.
    Read,
    /// Writing file contents.
    Write,
    /// Opening a file.
    Open,
    /// Closing an open file (a handle).
    Close,
    /// Making an open file durable (`fsync`).
    Sync,
    /// Listing a directory.
    ReadDir,
    /// Reading a symlink target.
    ReadLink,
    /// Creating a directory.
    CreateDir,
    /// Removing a file.
    RemoveFile,
    /// Removing a directory.
    RemoveDir,
    /// Renaming.
    Rename,
    /// Creating a symlink.
    Symlink,
    /// Creating a hard link.
    HardLink,
    /// Changing the permission bits.
    SetPermissions,
    /// Changing the owner.
    SetOwner,
    /// Changing timestamps.
    SetTimes,
    /// Changing the size.
    SetLen,
    /// Reading an extended attribute.
    GetXattr,
    /// Setting an extended attribute.
    SetXattr,
    /// Removing an extended attribute.
    RemoveXattr,
    /// Listing extended attributes.
    ListXattr,
    /// Creating a special file.
    Mknod,
    /// Copying an object up into the writable layer.
    CopyUp,
    /// Committing the writable layer.
    Commit,
    /// Validating a path.
    ParsePath,
    /// An operation of a layer backend.
    Layer,
    /// Reading a layer tar into a layer.
    ImportLayer,
    /// Writing a layer as a tar.
    ExportLayer,
    /// Reading a blob or a document of an image layout.
    ReadBlob,
    /// Storing a blob or a document in an image layout.
    WriteBlob,
    /// Opening an image (by tag or digest).
    OpenImage,
    /// Building an image.
    BuildImage,
    /// Writing an image's root filesystem into a directory (the path is
    /// the target directory).
    Flatten,
    /// Writing one entry of a layer while flattening (the path is the
    /// entry's name in the tar).
    FlattenEntry,
    /// Removing unreferenced blobs.
    CollectGarbage,
    /// Analysing where an image's bytes go.
    Analyze,
    /// Pulling an image or a blob from a registry (the path is the
    /// reference).
    Pull,
    /// Pushing an image or a blob to a registry (the path is the
    /// reference).
    Push,
    /// Logging in to a registry (the path is the registry or the token
    /// server).
    Authenticate,
    /// Mounting a view as a filesystem (the path is the mount point).
    Mount,
    /// Unmounting a mounted view (the path is the mount point).
    Unmount,
}

impl Operation {
    fn verb(self) -> &'static str {
        match self {
            Operation::Lookup => "look up",
            Operation::Metadata => "read metadata of",
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Open => "open",
            Operation::Close => "close",
            Operation::Sync => "sync",
            Operation::ReadDir => "list directory",
            Operation::ReadLink => "read symlink",
            Operation::CreateDir => "create directory",
            Operation::RemoveFile => "remove file",
            Operation::RemoveDir => "remove directory",
            Operation::Rename => "rename",
            Operation::Symlink => "create symlink",
            Operation::HardLink => "create hard link",
            Operation::SetPermissions => "set permissions of",
            Operation::SetOwner => "set owner of",
            Operation::SetTimes => "set times of",
            Operation::SetLen => "set length of",
            Operation::GetXattr => "get extended attribute of",
            Operation::SetXattr => "set extended attribute of",
            Operation::RemoveXattr => "remove extended attribute of",
            Operation::ListXattr => "list extended attributes of",
            Operation::Mknod => "create special file",
            Operation::CopyUp => "copy up",
            Operation::Commit => "commit",
            Operation::ParsePath => "parse path",
            Operation::Layer => "access",
            Operation::ImportLayer => "import layer entry",
            Operation::ExportLayer => "export layer entry",
            Operation::ReadBlob => "read blob",
            Operation::WriteBlob => "write blob",
            Operation::OpenImage => "open image",
            Operation::BuildImage => "build image",
            Operation::Flatten => "flatten into",
            Operation::FlattenEntry => "flatten layer entry",
            Operation::CollectGarbage => "collect garbage in",
            Operation::Analyze => "analyze image",
            Operation::Pull => "pull",
            Operation::Push => "push",
            Operation::Authenticate => "authenticate to",
            Operation::Mount => "mount on",
            Operation::Unmount => "unmount",
        }
    }
}

/// The error type of the crate.
///
/// It carries the [`ErrorKind`] (an errno), the [`Operation`], the path the
/// operation was given, and the layer where that matters. The message reads
/// `` failed to <operation> `<path>`: <cause> ``, the path escaped as
/// [`escape_name`](crate::escape_name) does (a Latin-1 `é` shows as `\351`).
///
/// ```
/// use layerstack::{ErrorKind, MemLayer, MergedView};
///
/// let view = MergedView::new(vec![], MemLayer::new())?;
/// let err = view.remove_file("etc/app.conf").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::NotFound);
/// assert_eq!(err.to_string(), "failed to remove file `etc/app.conf`: no such file or directory");
/// let io: std::io::Error = err.into();
/// assert_eq!(io.raw_os_error(), Some(2));
/// # Ok::<(), layerstack::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    op: Operation,
    path: NameBuf,
    layer: Option<String>,
    layer_index: Option<usize>,
    second_path: Option<NameBuf>,
    detail: Option<String>,
}

impl Error {
    /// A new error of `kind` for `op` on `path`.
    #[must_use]
    pub fn new(kind: ErrorKind, op: Operation, path: impl PathLike) -> Error {
        Error::new_inner(kind, op, path.path_bytes())
    }

    fn new_inner(kind: ErrorKind, op: Operation, path: &[u8]) -> Error {
        Error {
            kind,
            op,
            path: NameBuf::from(path),
            layer: None,
            layer_index: None,
            second_path: None,
            detail: None,
        }
    }

    /// An error for `op` on `path` from an I/O error: its errno when it is
    /// one of the kinds, else `EIO`; the I/O error's text is the cause.
    #[must_use]
    pub fn from_io(err: &io::Error, op: Operation, path: impl PathLike) -> Error {
        let kind = err
            .raw_os_error()
            .and_then(ErrorKind::from_errno)
            .unwrap_or(ErrorKind::Io);
        Error::new(kind, op, path).with_detail(err.to_string())
    }

    /// Names the layer the error happened in (shown in the message).
    #[must_use]
    pub fn with_layer(mut self, layer: impl Into<String>) -> Error {
        self.layer = Some(layer.into());
        self
    }

    /// Names the layer the error happened in by its index in the stack the
    /// failing call was given, top first (in a [`MergedView`](crate::MergedView),
    /// 0 is the upper layer and 1 the top lower one; for the model and
    /// flatten, 0 is the top lower one), typed, so that callers
    /// need not parse [`layer`](Error::layer) back into a number. The
    /// message shows the index unless the layer was also given a name.
    ///
    /// ```
    /// use layerstack::{Error, ErrorKind, Operation};
    ///
    /// let err = Error::new(ErrorKind::NotFound, Operation::Lookup, "a").with_layer_index(2);
    /// assert_eq!(err.layer_index(), Some(2));
    /// assert_eq!(err.layer(), Some("2"));
    /// assert_eq!(err.to_string(), "failed to look up `a` in layer 2: no such file or directory");
    /// ```
    #[must_use]
    pub fn with_layer_index(mut self, index: usize) -> Error {
        self.layer_index = Some(index);
        if self.layer.is_none() {
            self.layer = Some(index.to_string());
        }
        self
    }

    /// Names the second path a two-path operation was given: the target of
    /// a rename, the new name of a hard link.
    #[must_use]
    pub fn with_second_path(mut self, path: impl PathLike) -> Error {
        self.second_path = Some(NameBuf::from(path.path_bytes()));
        self
    }

    /// Replaces the generic description of the kind with a specific cause.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Error {
        self.detail = Some(detail.into());
        self
    }

    /// The cause the message ends with: the detail given, else the
    /// description of the kind.
    #[must_use]
    pub fn cause(&self) -> String {
        match &self.detail {
            Some(detail) => detail.clone(),
            None => self.kind.to_string(),
        }
    }

    /// The specific cause given with [`with_detail`](Error::with_detail),
    /// if any: what the message says after the path, without the prefix
    /// (the operation, the path and the layer), so that an error can be
    /// reframed onto another path without parsing its message.
    ///
    /// ```
    /// use layerstack::{Error, ErrorKind, Operation};
    ///
    /// let err = Error::new(ErrorKind::InvalidInput, Operation::ParsePath, "a")
    ///     .with_detail("bad name");
    /// assert_eq!(err.detail(), Some("bad name"));
    /// assert_eq!(Error::new(ErrorKind::NotFound, Operation::Read, "a").detail(), None);
    /// ```
    #[must_use]
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The errno-like kind.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The errno the kernel would return.
    #[must_use]
    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }

    /// The operation that failed.
    #[must_use]
    pub fn operation(&self) -> Operation {
        self.op
    }

    /// The path the operation was given (as the caller wrote it: any
    /// bytes; the message shows it escaped).
    #[must_use]
    pub fn path(&self) -> &Name {
        &self.path
    }

    /// The layer the error happened in, where that matters.
    #[must_use]
    pub fn layer(&self) -> Option<&str> {
        self.layer.as_deref()
    }

    /// The layer the error happened in, as its index in the stack (top
    /// first), where the error was made with
    /// [`with_layer_index`](Error::with_layer_index).
    #[must_use]
    pub fn layer_index(&self) -> Option<usize> {
        self.layer_index
    }

    /// The second path the operation was given: a rename's target, a hard
    /// link's new name. [`path`](Error::path) is the one the error is
    /// about, which may be either of the two.
    ///
    /// ```
    /// use layerstack::{ErrorKind, MemLayer, MergedView};
    ///
    /// let view = MergedView::new(vec![], MemLayer::new())?;
    /// let err = view.rename("a", "b").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotFound);
    /// assert_eq!((err.path().to_str(), err.second_path().and_then(|p| p.to_str())), (Some("a"), Some("b")));
    /// # Ok::<(), layerstack::Error>(())
    /// ```
    #[must_use]
    pub fn second_path(&self) -> Option<&Name> {
        self.second_path.as_deref()
    }

    /// The same error for another operation and path (used when a layer's
    /// error surfaces through the merged view).
    #[must_use]
    pub fn reframe(mut self, op: Operation, path: impl PathLike) -> Error {
        self.op = op;
        self.path = NameBuf::from(path.path_bytes());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed to {} `{}`", self.op.verb(), self.path)?;
        // A layer's name and a detail can carry text from outside (a
        // directory's path, a tar header's keys): never raw control bytes.
        if let Some(layer) = &self.layer {
            write!(f, " in layer {}", escape_message(layer.as_bytes()))?;
        }
        match &self.detail {
            Some(detail) => write!(f, ": {}", escape_message(detail.as_bytes())),
            None => write!(f, ": {}", self.kind),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    /// Keeps the errno ([`io::Error::raw_os_error`]); the operation and path
    /// are not kept, since `io::Error` cannot carry both.
    fn from(err: Error) -> io::Error {
        io::Error::from_raw_os_error(err.errno())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_round_trips_for_every_kind() {
        for kind in ALL_KINDS {
            assert_eq!(ErrorKind::from_errno(kind.errno()), Some(kind));
        }
        assert_eq!(ErrorKind::from_errno(9999), None);
    }

    #[test]
    fn message_names_operation_path_and_layer_once() {
        let err =
            Error::new(ErrorKind::DirectoryNotEmpty, Operation::RemoveDir, "etc").with_layer("2");
        assert_eq!(
            err.to_string(),
            "failed to remove directory `etc` in layer 2: directory not empty"
        );
        let err = Error::new(ErrorKind::InvalidInput, Operation::ParsePath, "a\0b")
            .with_detail("path contains a NUL byte");
        assert_eq!(
            err.to_string(),
            "failed to parse path `a\\000b`: path contains a NUL byte"
        );
    }

    #[test]
    fn message_escapes_a_path_that_is_not_utf8() {
        let err = Error::new(ErrorKind::NotFound, Operation::Read, b"srv/caf\xe9\n")
            .with_second_path(b"\xd0\xd2");
        assert_eq!(err.path().as_bytes(), b"srv/caf\xe9\n");
        assert_eq!(
            err.second_path().map(Name::as_bytes),
            Some(b"\xd0\xd2".as_slice())
        );
        assert_eq!(
            err.to_string(),
            "failed to read `srv/caf\\351\\n`: no such file or directory"
        );
    }

    #[test]
    fn a_layer_name_and_a_detail_reach_the_message_without_control_bytes() {
        let err = Error::new(ErrorKind::InvalidData, Operation::ImportLayer, "a")
            .with_layer("/srv/\x1b[31mlayer")
            .with_detail("bad key `\x07x\u{202e}` in `a\\b`");
        assert_eq!(
            err.to_string(),
            "failed to import layer entry `a` in layer /srv/\\033[31mlayer: bad key `\\007x\\342\\200\\256` in `a\\b`"
        );
        assert_eq!(err.detail(), Some("bad key `\x07x\u{202e}` in `a\\b`"));
    }

    #[test]
    fn detail_layer_index_and_second_path_are_typed_and_leave_the_message_alone() {
        let err = Error::new(ErrorKind::AlreadyExists, Operation::Rename, "a")
            .with_layer("/srv/upper")
            .with_layer_index(0)
            .with_second_path("b")
            .with_detail("taken");
        assert_eq!(err.detail(), Some("taken"));
        assert_eq!(err.layer_index(), Some(0));
        assert_eq!(err.layer(), Some("/srv/upper"));
        assert_eq!(err.second_path().and_then(Name::to_str), Some("b"));
        assert_eq!(
            err.to_string(),
            "failed to rename `a` in layer /srv/upper: taken"
        );
        let plain = Error::new(ErrorKind::NotFound, Operation::Read, "a");
        assert_eq!(
            (plain.detail(), plain.layer_index(), plain.second_path()),
            (None, None, None)
        );
    }

    #[test]
    fn io_error_keeps_errno() {
        let io: io::Error = Error::new(ErrorKind::CrossesDevices, Operation::Rename, "d").into();
        assert_eq!(io.raw_os_error(), Some(18));
        assert_eq!(io.kind(), io::ErrorKind::CrossesDevices);
    }
}
