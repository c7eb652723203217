//! Rename: files, directories (`EXDEV` or a redirect), `RENAME_NOREPLACE`,
//! `RENAME_EXCHANGE` and `RENAME_WHITEOUT`.

use super::*;
use crate::layer::{Redirect, RedirectTarget};

impl MergedView {
    /// As [`std::fs::rename`].
    ///
    /// A file is copied up and moved; the old name becomes a whiteout if a
    /// lower layer holds it. A directory that exists in a lower layer fails
    /// with `EXDEV` (as the kernel by default) unless the view was made
    /// with [`DirRename::Redirect`].
    ///
    /// # Errors
    /// See [`MergedView::rename_with`].
    pub fn rename(&self, from: impl PathLike, to: impl PathLike) -> Result<()> {
        self.rename_with(from, to, RenameMode::Replace)
    }

    /// As `renameat2` with its flags: [`RenameMode::NoReplace`] fails with
    /// `EEXIST` if `to` exists; [`RenameMode::Exchange`] swaps the two.
    ///
    /// # Errors
    /// `ENOENT` if `from` (or, to exchange, `to`) is missing; `EEXIST` (no
    /// replace); `EINVAL` to move a directory below itself; `ENOTEMPTY` for
    /// a non-empty target directory (or a target above the source);
    /// `EISDIR`/`ENOTDIR` when the types do not fit; `EXDEV` for a lower
    /// directory without the redirect option; `EBUSY` for the root.
    pub fn rename_with(
        &self,
        from: impl PathLike,
        to: impl PathLike,
        mode: RenameMode,
    ) -> Result<()> {
        let to = Name::new(to.path_bytes());
        self.rename_inner(Name::new(from.path_bytes()), to, mode)
            .map_err(|e| e.with_second_path(to))
    }

    fn rename_inner(&self, user: &Name, user_to: &Name, mode: RenameMode) -> Result<()> {
        let op = Operation::Rename;
        for p in [user, user_to] {
            if p.as_bytes().contains(&0) {
                // `std` refuses a NUL byte in either path before the call.
                crate::path::UserPath::parse(p.as_bytes(), op)?;
            }
        }
        let mut st = self.write_state();
        // As the kernel's `do_renameat2`: the source's parent is walked
        // before the target is even parsed.
        let src = st.resolve(user, op, Follow::Create)?;
        let dst = st.resolve(user_to, op, Follow::Create)?;
        let Some((sparent, sname)) = src.parent.clone() else {
            return Err(Error::new(ErrorKind::Busy, op, user));
        };
        let Some((dparent, dname)) = dst.parent.clone() else {
            // As the kernel's `do_renameat2`: no name to replace.
            let kind = if mode == RenameMode::NoReplace {
                ErrorKind::AlreadyExists
            } else {
                ErrorKind::Busy
            };
            return Err(Error::new(kind, op, user_to));
        };
        let sres = src.existing(op, user)?.clone();
        if mode == RenameMode::NoReplace && dst.obj.is_some() {
            return Err(Error::new(ErrorKind::AlreadyExists, op, user_to));
        }
        if mode == RenameMode::Exchange && dst.obj.is_none() {
            return Err(Error::new(ErrorKind::NotFound, op, user_to));
        }
        let exchange = mode == RenameMode::Exchange;
        if !sres.file_type.is_dir() && (src.trailing_slash || (!exchange && dst.trailing_slash)) {
            return Err(Error::new(ErrorKind::NotADirectory, op, user));
        }
        if exchange && dst.trailing_slash && dst.obj.as_ref().is_some_and(|d| !d.file_type.is_dir())
        {
            return Err(Error::new(ErrorKind::NotADirectory, op, user_to));
        }
        if dst.path != src.path && dst.path.starts_with(&src.path) {
            return Err(Error::new(ErrorKind::InvalidInput, op, user_to)
                .with_detail("cannot move a directory below itself"));
        }
        if src.path != dst.path && src.path.starts_with(&dst.path) {
            let kind = if exchange {
                ErrorKind::InvalidInput
            } else {
                ErrorKind::DirectoryNotEmpty
            };
            return Err(Error::new(kind, op, user_to));
        }
        if src.path == dst.path
            || dst
                .obj
                .as_ref()
                .is_some_and(|d| self.same_object(&st, &sres, d))
        {
            return Ok(());
        }
        if !exchange && let Some(dres) = &dst.obj {
            if sres.file_type.is_dir() && !dres.file_type.is_dir() {
                return Err(Error::new(ErrorKind::NotADirectory, op, user_to));
            }
            if !sres.file_type.is_dir() && dres.file_type.is_dir() {
                return Err(Error::new(ErrorKind::IsADirectory, op, user_to));
            }
        }
        let cross = |res: &Res| {
            self.options.dir_rename == DirRename::CrossDevice
                && res.file_type.is_dir()
                && res.has_lower()
        };
        if cross(&sres) || (exchange && dst.obj.as_ref().is_some_and(cross)) {
            return Err(Error::new(ErrorKind::CrossesDevices, op, user));
        }
        if !exchange
            && let Some(ddir) = dst.dir()
            && !st.index(&ddir)?.is_empty()
        {
            if !ddir.stack.iter().any(|(idx, _)| *idx != resolve::UPPER) {
                // The kernel checks only a target with a lower part before
                // it starts; a pure upper one fails in the upper's own
                // rename, after the source was copied up (and given its
                // redirect) and the target's parent too.
                let redirect = self
                    .prepare_moving(&mut st, &src.path, &sres, sparent.path == dparent.path)
                    .map_err(|e| e.reframe(op, user))?;
                if let Some(r) = redirect {
                    st.upper.set_redirect(&src.path, Some(r))?;
                    st.refresh(&sparent.path, &sname, true)?;
                }
                st.copy_up(&dparent.path, &self.options)
                    .map_err(|e| e.reframe(op, user_to))?;
            }
            return Err(Error::new(ErrorKind::DirectoryNotEmpty, op, user_to));
        }
        let r = if exchange {
            let dres = dst.obj.clone().expect("checked above");
            self.exchange_entries(
                &mut st,
                (&sparent, &sname, &sres),
                (&dparent, &dname, &dres),
            )
        } else {
            self.move_entry(
                &mut st,
                (&sparent, &sname, &sres),
                (&dparent, &dname, dst.obj.as_ref()),
            )
        };
        r.map_err(|e| e.reframe(op, user))
    }

    /// Whether two merged objects are one (names of one inode, as the
    /// kernel sees them: upper hard links always, lower hard links only
    /// with [`HardLinkCopyUp::Keep`]). A lower inode of one link that a
    /// redirect the kernel never writes shows at two merged paths is two
    /// independent objects here, as everywhere in the view and the model
    /// (the kernel binds both names to one overlay inode and its answers
    /// then depend on its caches; see `tests/it/kernel.rs`).
    fn same_object(&self, st: &State, a: &Res, b: &Res) -> bool {
        if a.file_type.is_dir() || b.file_type.is_dir() || a.top().0 != b.top().0 {
            return false;
        }
        match (st.node(a), st.node(b)) {
            (Ok(x), Ok(y)) => {
                x.meta.ino == y.meta.ino
                    && (a.in_upper()
                        || (self.options.hard_links == HardLinkCopyUp::Keep && x.meta.nlink > 1))
            }
            _ => false,
        }
    }

    /// Brings the object of a rename into the upper: a non-directory is
    /// copied up; a directory with a lower part is copied up alone and
    /// given a redirect to where its lower part is, as the kernel's
    /// `ovl_set_redirect` writes it: within one directory (`same_dir`) the
    /// old name, relative (or the redirect it already has); across
    /// directories an absolute path (or the absolute redirect it already
    /// has).
    fn prepare_moving(
        &self,
        st: &mut State,
        path: &LayerPath,
        res: &Res,
        same_dir: bool,
    ) -> Result<Option<Redirect>> {
        st.copy_up(path, &self.options)?;
        if res.file_type == FileType::File && st.metacopy == Metacopy::Follow {
            // A metadata-only copy that finds its data by its path would
            // lose it at the new one.
            st.fill_metacopy(path, false)?;
        }
        if !(res.file_type.is_dir() && res.has_lower()) {
            return Ok(None);
        }
        let existing = match st.upper.lookup(path)? {
            Some(Entry::Node(node)) => node.redirect,
            _ => None,
        };
        match existing {
            Some(r) if same_dir || r.is_absolute() => Ok(Some(r)),
            _ if same_dir => Ok(path.file_name().map(Redirect::sibling)),
            _ => Ok(Some(redirect_to(st, path)?)),
        }
    }

    fn move_entry(
        &self,
        st: &mut State,
        (sparent, sname, sres): (&Cursor, &Name, &Res),
        (dparent, dname, dres): (&Cursor, &Name, Option<&Res>),
    ) -> Result<()> {
        changing(st, |st| {
            let spath = sparent.path.join_unchecked(sname);
            let dpath = dparent.path.join_unchecked(dname);
            st.copy_up(&dparent.path, &self.options)?;
            let same_dir = sparent.path == dparent.path;
            let redirect = self.prepare_moving(st, &spath, sres, same_dir)?;
            // The source's lower part (if any) is what a whiteout must hide.
            let sparent = st.cursor_at(&sparent.path)?;
            let dparent = st.cursor_at(&dparent.path)?;
            let source_whiteout = st.lower_positive(&sparent, sname)?;
            let target_lower = st.lower_positive(&dparent, dname)?;
            if sres.file_type.is_dir() {
                // Flags go on before the move, as the kernel sets them, so the
                // directory never shows at its new place without them.
                set_dir_flags(st, &spath, redirect, target_lower)?;
            }
            if let Some(dres) = dres
                && dres.in_upper()
                && dres.file_type.is_dir()
            {
                // An empty merged target: its whiteouts go in one step, so it
                // can be replaced.
                if !st.upper.read_dir(&dpath)?.entries.is_empty() {
                    st.upper.clear_dir(&dpath)?;
                }
            }
            self.dropping_name(st, &dpath, dres, |st| {
                if source_whiteout {
                    st.upper.rename_whiteout(&spath, &dpath)
                } else {
                    st.upper.rename(&spath, &dpath)
                }
            })?;
            self.touch(st, &sparent.path, true)?;
            self.touch(st, &dparent.path, true)?;
            self.touch(st, &dpath, false)?;
            st.forget_subtree(&spath);
            st.forget_subtree(&dpath);
            st.refresh(&sparent.path, sname, true)?;
            st.refresh(&dparent.path, dname, true)
        })
    }

    fn exchange_entries(
        &self,
        st: &mut State,
        (aparent, aname, ares): (&Cursor, &Name, &Res),
        (bparent, bname, bres): (&Cursor, &Name, &Res),
    ) -> Result<()> {
        changing(st, |st| {
            let apath = aparent.path.join_unchecked(aname);
            let bpath = bparent.path.join_unchecked(bname);
            let same_dir = aparent.path == bparent.path;
            let aredirect = self.prepare_moving(st, &apath, ares, same_dir)?;
            let bredirect = self.prepare_moving(st, &bpath, bres, same_dir)?;
            let aparent = st.cursor_at(&aparent.path)?;
            let bparent = st.cursor_at(&bparent.path)?;
            let a_lower = st.lower_positive(&aparent, aname)?;
            let b_lower = st.lower_positive(&bparent, bname)?;
            // What goes to `bpath` gets the flags `bpath` needs, and the other
            // way round, before the swap.
            for (path, res, redirect, lower_there) in [
                (&apath, ares, aredirect, b_lower),
                (&bpath, bres, bredirect, a_lower),
            ] {
                if res.file_type.is_dir() {
                    set_dir_flags(st, path, redirect, lower_there)?;
                }
            }
            st.upper.exchange(&apath, &bpath)?;
            self.touch(st, &aparent.path, true)?;
            self.touch(st, &bparent.path, true)?;
            st.forget_subtree(&apath);
            st.forget_subtree(&bpath);
            st.refresh(&aparent.path, aname, true)?;
            st.refresh(&bparent.path, bname, true)
        })
    }
}

/// Gives a directory about to move the flag its new place needs: the
/// redirect to its lower part, or, for a pure upper directory going where a
/// lower layer has the name, opaqueness (nothing below may show through).
fn set_dir_flags(
    st: &mut State,
    path: &LayerPath,
    redirect: Option<Redirect>,
    lower_at_target: bool,
) -> Result<()> {
    match redirect {
        Some(r) => st.upper.set_redirect(path, Some(r)),
        None if lower_at_target => st.upper.set_opaque(path, true),
        None => Ok(()),
    }
}

/// The absolute redirect that makes the layers below find what they hold
/// for the directory now at `path`, computed as the kernel's
/// `ovl_get_redirect`: the path's names from the root, where a name of the
/// upper layer with a redirect stands for that redirect (an absolute one
/// ends the walk). The lower layers are then walked along this path from
/// their roots, so they find it exactly as the lookup of `path` did.
fn redirect_to(st: &State, path: &LayerPath) -> Result<Redirect> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut at = path.clone();
    while let (Some(parent), Some(name)) = (at.parent(), at.file_name()) {
        let redirect = match st.upper.lookup(&at)? {
            Some(Entry::Node(node)) => node.redirect,
            _ => None,
        };
        match redirect.as_ref().map(Redirect::target) {
            Some(RedirectTarget::Absolute(p)) => {
                names.push(p.as_bytes().to_vec());
                break;
            }
            // An invalid absolute one is walked by its names, as lookups
            // walk it.
            Some(RedirectTarget::Invalid) => {
                let stored = redirect
                    .as_ref()
                    .map(Redirect::to_bytes)
                    .unwrap_or_default();
                names.push(crate::path::trim_slashes(&stored).to_vec());
                break;
            }
            // A relative redirect is one valid name; anything else is
            // ignored, as lookups ignore it.
            Some(RedirectTarget::Name(r)) if crate::path::validate_name(r).is_ok() => {
                names.push(r.as_bytes().to_vec());
            }
            _ => names.push(name.as_bytes().to_vec()),
        }
        at = parent;
    }
    names.reverse();
    Ok(Redirect::parse(
        [b"/".as_slice(), &names.join(&b'/')].concat(),
    ))
}
