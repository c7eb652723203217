//! Metadata changes (mode, owner, times) and extended attributes, each
//! after a copy-up.

use super::*;

impl MergedView {
    /// Changes an object's metadata after copying it up (follows symlinks).
    fn change_meta(
        &self,
        user: &Name,
        op: Operation,
        f: impl FnOnce(&mut Metadata) -> Result<()>,
    ) -> Result<()> {
        self.change_meta_checked(user, op, Follow::Always, |_, _| Ok(()), f)
    }

    /// As [`MergedView::change_meta`], with `check` run on the resolved
    /// object under the same lock, before the copy-up (so nothing can
    /// change between the check and the change).
    fn change_meta_checked(
        &self,
        user: &Name,
        op: Operation,
        follow: Follow,
        check: impl FnOnce(&State, &Res) -> Result<()>,
        f: impl FnOnce(&mut Metadata) -> Result<()>,
    ) -> Result<()> {
        let mut st = self.write_state();
        let r = st.resolve(user, op, follow)?;
        check(&st, r.existing(op, user)?)?;
        st.copy_up(&r.path, &self.options)
            .map_err(|e| e.reframe(op, user))?;
        let Some(Entry::Node(node)) = st.upper.lookup(&r.path)? else {
            return Err(Error::new(ErrorKind::NotFound, op, user));
        };
        let mut meta = node.meta;
        f(&mut meta)?;
        meta.ctime = self.now();
        st.upper
            .set_metadata(&r.path, &meta)
            .map_err(|e| e.reframe(op, user))
    }

    /// As [`std::fs::set_permissions`] with the mode bits (`0o7777`,
    /// setuid, setgid and sticky included). Copies up.
    ///
    /// # Errors
    /// The errors of resolution.
    pub fn set_permissions(&self, path: impl PathLike, mode: u32) -> Result<()> {
        self.set_permissions_inner(Name::new(path.path_bytes()), mode)
    }

    fn set_permissions_inner(&self, user: &Name, mode: u32) -> Result<()> {
        self.change_meta(user, Operation::SetPermissions, |m| {
            m.mode = mode & MODE_MASK;
            Ok(())
        })
    }

    /// As [`std::os::unix::fs::chown`] (`None` keeps the id). Like Linux, it
    /// clears setuid (and setgid with group-execute) on a non-directory.
    /// Copies up.
    ///
    /// # Errors
    /// The errors of resolution.
    pub fn set_owner(&self, path: impl PathLike, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        self.chown(Name::new(path.path_bytes()), Follow::Always, uid, gid)
    }

    /// As [`std::os::unix::fs::lchown`]: [`MergedView::set_owner`] of a
    /// symlink itself, not of what it points to. Copies up.
    ///
    /// # Errors
    /// The errors of resolution.
    pub fn set_owner_nofollow(
        &self,
        path: impl PathLike,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<()> {
        self.chown(Name::new(path.path_bytes()), Follow::OnSlash, uid, gid)
    }

    fn chown(&self, user: &Name, follow: Follow, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let op = Operation::SetOwner;
        self.change_meta_checked(
            user,
            op,
            follow,
            |_, _| Ok(()),
            |m| {
                if let Some(uid) = uid {
                    m.uid = uid;
                }
                if let Some(gid) = gid {
                    m.gid = gid;
                }
                m.mode = mode_after_chown(m.file_type, m.mode);
                Ok(())
            },
        )
    }

    /// Sets the access and modification times (`None` keeps one), as
    /// `utimensat`. Copies up.
    ///
    /// # Errors
    /// The errors of resolution.
    pub fn set_times(
        &self,
        path: impl PathLike,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()> {
        self.utimens(Name::new(path.path_bytes()), Follow::Always, atime, mtime)
    }

    /// [`MergedView::set_times`] of a symlink itself, not of what it
    /// points to (`utimensat` with `AT_SYMLINK_NOFOLLOW`). Copies up.
    ///
    /// # Errors
    /// The errors of resolution.
    pub fn set_times_nofollow(
        &self,
        path: impl PathLike,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()> {
        self.utimens(Name::new(path.path_bytes()), Follow::OnSlash, atime, mtime)
    }

    fn utimens(
        &self,
        user: &Name,
        follow: Follow,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()> {
        if atime.is_none() && mtime.is_none() {
            // As `utimensat` with both `UTIME_OMIT`: nothing to do, and
            // the path is not even looked up.
            return Ok(());
        }
        let op = Operation::SetTimes;
        self.change_meta_checked(
            user,
            op,
            follow,
            |_, _| Ok(()),
            |m| {
                if let Some(t) = atime {
                    m.atime = t;
                }
                if let Some(t) = mtime {
                    m.mtime = t;
                }
                Ok(())
            },
        )
    }

    /// The value of extended attribute `name` (follows symlinks).
    ///
    /// # Errors
    /// `ERANGE` for an empty or too long name, `ENODATA` for a `user.`
    /// attribute of anything but a regular file or directory, `EINVAL` for a
    /// bare namespace prefix, `EOPNOTSUPP` for an unknown namespace,
    /// `ENODATA` if absent.
    pub fn get_xattr(&self, path: impl PathLike, name: &str) -> Result<Bytes> {
        self.get_xattr_inner(Name::new(path.path_bytes()), name)
    }

    fn get_xattr_inner(&self, user: &Name, name: &str) -> Result<Bytes> {
        let op = Operation::GetXattr;
        check_xattr_len(name, op, user)?;
        let st = self.read_state();
        let r = st.resolve(user, op, Follow::Always)?;
        let res = r.existing(op, user)?;
        let meta = meta_of(&st, res)?;
        let no_data = || {
            Error::new(ErrorKind::NoData, op, user)
                .with_detail(format!("no extended attribute `{name}`"))
        };
        // The kernel's `xattr_permission` comes before the name check.
        if !xattr_allowed_on(meta.file_type, name) {
            return Err(no_data());
        }
        check_xattr_name(name, op, user)?;
        meta.xattrs.get(name).cloned().ok_or_else(no_data)
    }

    /// Sets extended attribute `name` (follows symlinks). Copies up.
    ///
    /// # Errors
    /// `E2BIG` for a value over 64 KiB, `ERANGE` for an empty or too long
    /// name, `EPERM` for a `user.` attribute on anything but a regular file
    /// or directory, then (after the copy-up, as the kernel)
    /// `EINVAL` for a bare namespace prefix (`user.`), `EOPNOTSUPP` for a
    /// namespace other than `user.`, `trusted.`, `security.`, `system.`.
    pub fn set_xattr(
        &self,
        path: impl PathLike,
        name: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<()> {
        self.set_xattr_inner(Name::new(path.path_bytes()), name, value.as_ref())
    }

    fn set_xattr_inner(&self, user: &Name, name: &str, value: &[u8]) -> Result<()> {
        let op = Operation::SetXattr;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::new(ErrorKind::ArgumentListTooLong, op, user));
        }
        check_xattr_len(name, op, user)?;
        let value = Bytes::copy_from_slice(value);
        let allowed = |_: &State, res: &Res| {
            if xattr_allowed_on(res.file_type, name) {
                Ok(())
            } else {
                Err(Error::new(ErrorKind::NotPermitted, op, user).with_detail(
                    "user attributes are only allowed on regular files and directories",
                ))
            }
        };
        // As the kernel: the copy-up comes first, then the upper
        // filesystem refuses a bad name.
        self.change_meta_checked(user, op, Follow::Always, allowed, |m| {
            check_xattr_name(name, op, user)?;
            m.xattrs.insert(name, value);
            Ok(())
        })
    }

    /// Removes extended attribute `name` (follows symlinks). Copies up,
    /// unless the attribute is absent.
    ///
    /// # Errors
    /// As [`MergedView::set_xattr`], and `ENODATA` if absent.
    pub fn remove_xattr(&self, path: impl PathLike, name: &str) -> Result<()> {
        self.remove_xattr_inner(Name::new(path.path_bytes()), name)
    }

    fn remove_xattr_inner(&self, user: &Name, name: &str) -> Result<()> {
        let op = Operation::RemoveXattr;
        check_xattr_len(name, op, user)?;
        let present = |st: &State, res: &Res| {
            if !xattr_allowed_on(res.file_type, name) {
                return Err(Error::new(ErrorKind::NotPermitted, op, user));
            }
            check_xattr_name(name, op, user)?;
            if meta_of(st, res)?.xattrs.get(name).is_none() {
                return Err(Error::new(ErrorKind::NoData, op, user)
                    .with_detail(format!("no extended attribute `{name}`")));
            }
            Ok(())
        };
        self.change_meta_checked(user, op, Follow::Always, present, |m| {
            m.xattrs.remove(name);
            Ok(())
        })
    }

    /// The names of the extended attributes, sorted (follows symlinks).
    ///
    /// # Errors
    /// The errors of resolution.
    pub fn list_xattr(&self, path: impl PathLike) -> Result<Vec<String>> {
        let meta = self.stat(
            Name::new(path.path_bytes()),
            Operation::ListXattr,
            Follow::Always,
        )?;
        Ok(meta.xattrs.names().map(str::to_owned).collect())
    }
}

fn check_xattr_len(name: &str, op: Operation, user: &Name) -> Result<()> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Error::new(ErrorKind::OutOfRange, op, user)
            .with_detail(format!("invalid extended attribute name `{name}`")));
    }
    Ok(())
}
