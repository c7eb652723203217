//! Resolution: a user path to the directories that hold its last name, with
//! symlinks, `..`, trailing slashes and the kernel's order of errors.

use super::*;

/// Whether a final symlink is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Follow {
    /// Always (the operations marked FOLLOW).
    Always,
    /// Only when the path has a trailing slash.
    WithSlash,
    /// Never (`create_new`).
    Never,
    /// Never, and a trailing slash is left to the caller (operations that
    /// make or remove a name, as the kernel's `filename_create` and
    /// `do_unlinkat`).
    Create,
    /// Always, for an open that may create (`O_CREAT`): the last name of
    /// the path or of a symlink target, with a trailing slash, is `EISDIR`
    /// before it is looked up (the kernel's `open_last_lookups`).
    Creating,
}

/// Where a path leads: the directories from the root to the one that holds
/// the last name (physical, after symlinks), and that name.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    /// Never empty: the root is always first.
    pub(super) stack: Vec<Id>,
    pub(super) last: Last,
    /// A trailing slash applies: the object must be a directory.
    pub(super) must_dir: bool,
}

#[derive(Debug, Clone)]
pub(super) enum Last {
    /// A name in the last directory of the stack (present or not).
    Name(NameBuf),
    /// The path names the last directory of the stack itself (it is the
    /// root, or ends in `..`): there is no parent and name.
    Itself,
}

impl Resolved {
    pub(super) fn dir(&self) -> Id {
        top(&self.stack)
    }

    pub(super) fn name(&self) -> Option<&Name> {
        match &self.last {
            Last::Name(name) => Some(name),
            Last::Itself => None,
        }
    }
}

pub(super) fn top(stack: &[Id]) -> Id {
    stack.last().copied().unwrap_or(ROOT)
}

/// `..`: the physical parent; the root's parent is the root.
fn pop_to_parent(stack: &mut Vec<Id>) {
    if stack.len() > 1 {
        stack.pop();
    }
}

impl Model {
    /// Parses and resolves `path` for `op`, then applies the trailing-slash
    /// rule: an object that exists there must be a directory.
    pub(super) fn resolve(&self, path: &Name, op: Operation, follow: Follow) -> Result<Resolved> {
        let user = UserPath::parse(path.as_bytes(), op)?;
        self.resolve_user(&user, path, op, follow)
    }

    pub(super) fn resolve_user(
        &self,
        user: &UserPath<'_>,
        path: &Name,
        op: Operation,
        follow: Follow,
    ) -> Result<Resolved> {
        let follow_last = match follow {
            Follow::Always | Follow::Creating => true,
            Follow::WithSlash => user.trailing_slash,
            Follow::Never | Follow::Create => false,
        };
        let resolved = self
            .walk(
                vec![ROOT],
                user,
                follow_last,
                follow == Follow::Creating,
                &mut 0,
            )
            .map_err(|kind| Error::new(kind, op, path))?;
        if follow != Follow::Create
            && resolved.must_dir
            && self.found(&resolved).is_some_and(|c| !self.is_dir(c))
        {
            return Err(Error::new(ErrorKind::NotADirectory, op, path));
        }
        Ok(resolved)
    }

    /// Resolves `path` to an existing object (`ENOENT` if missing).
    pub(super) fn object(
        &self,
        path: &Name,
        op: Operation,
        follow: Follow,
    ) -> Result<(Resolved, Child)> {
        let resolved = self.resolve(path, op, follow)?;
        match self.found(&resolved) {
            Some(found) => Ok((resolved, found)),
            None => Err(Error::new(ErrorKind::NotFound, op, path)),
        }
    }

    /// Walks `path` from the directories `stack`. Every component but the
    /// last must lead to a directory (symlinks followed); the last is
    /// followed if it is a symlink and `follow_last`.
    pub(super) fn walk(
        &self,
        mut stack: Vec<Id>,
        path: &UserPath<'_>,
        follow_last: bool,
        creating: bool,
        links: &mut u32,
    ) -> Result<Resolved, ErrorKind> {
        if path.ends_in_dot {
            // `a/.`: every name is a directory on the way; the path names
            // the last one itself (the kernel's `LAST_DOT`).
            for component in &path.components {
                match component {
                    Component::Parent => pop_to_parent(&mut stack),
                    Component::Name(name) => stack = self.enter(stack, name, links)?,
                }
            }
            return Ok(Resolved {
                stack,
                last: Last::Itself,
                must_dir: true,
            });
        }
        let Some((last, init)) = path.components.split_last() else {
            return Ok(Resolved {
                stack,
                last: Last::Itself,
                must_dir: path.trailing_slash,
            });
        };
        for component in init {
            match component {
                Component::Parent => pop_to_parent(&mut stack),
                Component::Name(name) => stack = self.enter(stack, name, links)?,
            }
        }
        match last {
            Component::Parent => {
                pop_to_parent(&mut stack);
                Ok(Resolved {
                    stack,
                    last: Last::Itself,
                    must_dir: path.trailing_slash,
                })
            }
            Component::Name(name) => {
                if creating && path.trailing_slash {
                    return Err(ErrorKind::IsADirectory);
                }
                if follow_last
                    && let Some(Child::Obj(id)) = self.child(top(&stack), name)
                    && let Body::Symlink(target) = &self.obj(id).body
                {
                    let mut resolved = self.follow(&stack, target, creating, links)?;
                    resolved.must_dir |= path.trailing_slash;
                    return Ok(resolved);
                }
                Ok(Resolved {
                    stack,
                    last: Last::Name((*name).to_owned()),
                    must_dir: path.trailing_slash,
                })
            }
        }
    }

    /// Follows a symlink with `target` held in the directory `holder` (the
    /// last of the stack), to the end of its chain.
    pub(super) fn follow(
        &self,
        holder: &[Id],
        target: &Name,
        creating: bool,
        links: &mut u32,
    ) -> Result<Resolved, ErrorKind> {
        *links += 1;
        if *links > MAX_SYMLINKS {
            return Err(ErrorKind::FilesystemLoop);
        }
        let path = UserPath::parse(target.as_bytes(), Operation::Lookup).map_err(|e| e.kind())?;
        let start = if target.is_absolute() {
            vec![ROOT]
        } else {
            holder.to_vec()
        };
        self.walk(start, &path, true, creating, links)
    }

    /// Enters the directory `name` (following a symlink) below the last of
    /// `stack`.
    pub(super) fn enter(
        &self,
        mut stack: Vec<Id>,
        name: &Name,
        links: &mut u32,
    ) -> Result<Vec<Id>, ErrorKind> {
        match self.child(top(&stack), name) {
            None => Err(ErrorKind::NotFound),
            Some(Child::Dir(id)) => {
                stack.push(id);
                Ok(stack)
            }
            Some(Child::Obj(id)) => {
                let Body::Symlink(target) = &self.obj(id).body else {
                    return Err(ErrorKind::NotADirectory);
                };
                let resolved = self.follow(&stack, target, false, links)?;
                match self.found(&resolved) {
                    None => Err(ErrorKind::NotFound),
                    Some(Child::Obj(_)) => Err(ErrorKind::NotADirectory),
                    Some(Child::Dir(id)) => {
                        let is_name = resolved.name().is_some();
                        let mut stack = resolved.stack;
                        if is_name {
                            stack.push(id);
                        }
                        Ok(stack)
                    }
                }
            }
        }
    }

    /// What is where `resolved` leads, if anything.
    pub(super) fn found(&self, resolved: &Resolved) -> Option<Child> {
        match &resolved.last {
            Last::Itself => Some(Child::Dir(resolved.dir())),
            Last::Name(name) => self.child(resolved.dir(), name),
        }
    }

    /// Checks that `resolved` names a free name for a new object of
    /// `file_type`, and returns the name.
    pub(super) fn new_name(
        &self,
        resolved: &Resolved,
        op: Operation,
        path: &Name,
        file_type: FileType,
    ) -> Result<NameBuf> {
        let err = |kind| Error::new(kind, op, path);
        let Some(name) = resolved.name() else {
            return Err(err(ErrorKind::AlreadyExists));
        };
        if self.child(resolved.dir(), name).is_some() {
            return Err(err(ErrorKind::AlreadyExists));
        }
        if resolved.must_dir && !file_type.is_dir() {
            // The kernel's `filename_create`: a trailing slash asks for a
            // directory that does not exist.
            return Err(err(ErrorKind::NotFound));
        }
        Ok(name.to_owned())
    }

    /// Opens `path` as `MergedView::open` does, after the options were
    /// checked; returns the file opened for writing, if any.
    pub(super) fn open_file(
        &mut self,
        path: &Name,
        options: &OpenOptions,
        op: Operation,
    ) -> Result<Option<Id>> {
        let err = |kind| Error::new(kind, op, path);
        let user = UserPath::parse(path.as_bytes(), op)?;
        if options.creates() && user.trailing_slash && user.last_kind() == LastKind::Name {
            // The kernel refuses to create a name with a trailing slash,
            // whatever is there, once the parent is found (a path ending in
            // `.` or `..` names a directory: EEXIST or EISDIR below).
            self.resolve_user(&user, path, op, Follow::Create)?;
            return Err(err(ErrorKind::IsADirectory));
        }
        let follow = if options.create_new {
            Follow::Never
        } else if options.creates() {
            Follow::Creating
        } else {
            Follow::Always
        };
        let resolved = self.resolve_user(&user, path, op, follow)?;
        let writes = options.writes();
        match self.found(&resolved) {
            Some(_) if options.create_new => Err(err(ErrorKind::AlreadyExists)),
            Some(Child::Dir(_)) if writes => Err(err(ErrorKind::IsADirectory)),
            Some(Child::Obj(id)) if writes => {
                if self.obj(id).file_type != FileType::File {
                    return Err(err(ErrorKind::InvalidInput));
                }
                self.copy_up(&resolved);
                if options.truncate
                    && let Body::File(data) = &mut self.obj_mut(id).body
                {
                    data.set_len(0);
                }
                Ok(Some(id))
            }
            // Read-only: no effect.
            Some(_) => Ok(None),
            None if !options.creates() => Err(err(ErrorKind::NotFound)),
            // A dangling symlink whose target ends in a slash.
            None if resolved.must_dir => Err(err(ErrorKind::IsADirectory)),
            None => {
                let name = self.new_name(&resolved, op, path, FileType::File)?;
                let attrs = self.new_attrs(resolved.dir(), 0o666 & !self.options.umask, false);
                let id = self.add_obj(
                    &resolved.stack,
                    &name,
                    FileType::File,
                    attrs,
                    0,
                    Body::File(FileData::new()),
                );
                Ok(Some(id))
            }
        }
    }

    /// The data of the regular file at `path` (following symlinks).
    pub(super) fn file_data(&self, path: &Name) -> Result<&FileData> {
        let op = Operation::Read;
        match self.object(path, op, Follow::Always)? {
            (_, Child::Dir(_)) => Err(Error::new(ErrorKind::IsADirectory, op, path)),
            (_, Child::Obj(id)) => match &self.obj(id).body {
                Body::File(data) => Ok(data),
                _ => Err(Error::new(ErrorKind::InvalidInput, op, path)),
            },
        }
    }
}
