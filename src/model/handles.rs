//! Open handles: a regular file by identity (it follows renames and
//! outlives its last name while open), anything else by path.

use super::*;

/// An open handle: a regular file by identity (it follows renames, and an
/// identity with no name left lives on while a handle holds it), anything
/// else by the physical path it was opened at, as the view holds them.
#[derive(Debug, Clone)]
pub(super) struct ModelHandle {
    options: OpenOptions,
    file_type: FileType,
    target: HandleTarget,
}

#[derive(Debug, Clone)]
enum HandleTarget {
    Obj(Id),
    Path(NameBuf),
}

impl Model {
    /// As `MergedView::open_handle`.
    ///
    /// # Errors
    /// As `MergedView::open_handle`.
    pub fn open_handle(
        &mut self,
        path: impl PathLike,
        options: &OpenOptions,
    ) -> Result<crate::merged::HandleId> {
        self.open_handle_inner(Name::new(path.path_bytes()), options)
    }

    fn open_handle_inner(
        &mut self,
        path: &Name,
        options: &OpenOptions,
    ) -> Result<crate::merged::HandleId> {
        let op = Operation::Open;
        if !options.is_valid() {
            return Err(Error::new(ErrorKind::InvalidInput, op, path)
                .with_detail("invalid combination of open options"));
        }
        let (file_type, target) = match self.open_file(path, options, op)? {
            Some(id) => (FileType::File, HandleTarget::Obj(id)),
            None => {
                let (resolved, child) = self.object(path, op, Follow::Always)?;
                let file_type = self.file_type(child);
                match child {
                    Child::Obj(id) if file_type == FileType::File => {
                        (file_type, HandleTarget::Obj(id))
                    }
                    _ => (file_type, HandleTarget::Path(self.physical_path(&resolved))),
                }
            }
        };
        let n = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(
            n,
            ModelHandle {
                options: *options,
                file_type,
                target,
            },
        );
        Ok(crate::merged::HandleId(n))
    }

    /// As `MergedView::close_handle`.
    ///
    /// # Errors
    /// As `MergedView::close_handle`.
    pub fn close_handle(&mut self, h: crate::merged::HandleId) -> Result<()> {
        let handle = self
            .handles
            .remove(&h.0)
            .ok_or_else(|| bad_handle(h, Operation::Close))?;
        if let HandleTarget::Obj(id) = handle.target
            && self.obj(id).names == 0
            && !self.is_open(id)
        {
            self.objs.remove(&id);
        }
        Ok(())
    }

    /// As `MergedView::open_handles`.
    #[must_use]
    pub fn open_handles(&self) -> Vec<crate::merged::HandleId> {
        self.handles
            .keys()
            .map(|n| crate::merged::HandleId(*n))
            .collect()
    }

    /// As `MergedView::handle_read_at`.
    ///
    /// # Errors
    /// As `MergedView::handle_read_at`.
    pub fn handle_read_at(
        &self,
        h: crate::merged::HandleId,
        offset: u64,
        len: usize,
    ) -> Result<Bytes> {
        let op = Operation::Read;
        let handle = self.handle(h, op)?;
        self.check_handle(handle, op)?;
        match &handle.target {
            HandleTarget::Obj(id) => match &self.obj(*id).body {
                Body::File(data) => data.read_at(offset, len),
                _ => Err(Error::new(ErrorKind::InvalidInput, op, "")),
            },
            HandleTarget::Path(p) => self.read_at(p, offset, len),
        }
    }

    /// As `MergedView::handle_write_at`.
    ///
    /// # Errors
    /// As `MergedView::handle_write_at`.
    pub fn handle_write_at(
        &mut self,
        h: crate::merged::HandleId,
        offset: u64,
        data: &[u8],
    ) -> Result<u64> {
        let op = Operation::Write;
        let handle = self.handle(h, op)?;
        self.check_handle(handle, op)?;
        let (append, target) = (handle.options.append, handle.target.clone());
        let HandleTarget::Obj(id) = target else {
            return Err(Error::new(ErrorKind::BadHandle, op, ""));
        };
        let at = if append { self.obj(id).size() } else { offset };
        self.write_data(id, at, data)
            .map_err(|k| Error::new(k, op, ""))?;
        Ok(at + data.len() as u64)
    }

    /// As `MergedView::handle_set_len`.
    ///
    /// # Errors
    /// As `MergedView::handle_set_len`.
    pub fn handle_set_len(&mut self, h: crate::merged::HandleId, len: u64) -> Result<()> {
        let op = Operation::SetLen;
        let handle = self.handle(h, op)?;
        if !handle.options.writes() {
            return Err(Error::new(ErrorKind::InvalidInput, op, ""));
        }
        let HandleTarget::Obj(id) = handle.target else {
            return Err(Error::new(ErrorKind::InvalidInput, op, ""));
        };
        if len > MAX_FILE_SIZE {
            return Err(Error::new(ErrorKind::FileTooLarge, op, ""));
        }
        if let Body::File(data) = &mut self.obj_mut(id).body {
            data.set_len(len);
        }
        Ok(())
    }

    /// As `MergedView::handle_metadata`.
    ///
    /// # Errors
    /// As `MergedView::handle_metadata`.
    pub fn handle_metadata(&self, h: crate::merged::HandleId) -> Result<Metadata> {
        let handle = self.handle(h, Operation::Metadata)?;
        match &handle.target {
            HandleTarget::Obj(id) => Ok(self.metadata_of(Child::Obj(*id))),
            HandleTarget::Path(p) => self.symlink_metadata(p),
        }
    }

    pub(super) fn handle(&self, h: crate::merged::HandleId, op: Operation) -> Result<&ModelHandle> {
        self.handles.get(&h.0).ok_or_else(|| bad_handle(h, op))
    }

    /// `EBADF` without the access `op` needs, `EISDIR` for a directory.
    pub(super) fn check_handle(&self, handle: &ModelHandle, op: Operation) -> Result<()> {
        let allowed = match op {
            Operation::Read => handle.options.read,
            _ => handle.options.writes(),
        };
        if !allowed {
            return Err(Error::new(ErrorKind::BadHandle, op, ""));
        }
        if handle.file_type == FileType::Dir {
            return Err(Error::new(ErrorKind::IsADirectory, op, ""));
        }
        Ok(())
    }

    pub(super) fn is_open(&self, id: Id) -> bool {
        self.handles
            .values()
            .any(|h| matches!(h.target, HandleTarget::Obj(o) if o == id))
    }

    /// The physical path (absolute, no symlinks) of what `resolved` names.
    pub(super) fn physical_path(&self, resolved: &Resolved) -> NameBuf {
        let mut path = Vec::new();
        for pair in resolved.stack.windows(2) {
            let name = self
                .dir(pair[0])
                .entries
                .iter()
                .find(|(_, c)| **c == Child::Dir(pair[1]))
                .map(|(n, _)| n.clone())
                .expect("model invariant: a directory on the stack is in its parent");
            path.push(b'/');
            path.extend_from_slice(name.as_bytes());
        }
        if let Last::Name(name) = &resolved.last {
            path.push(b'/');
            path.extend_from_slice(name.as_bytes());
        }
        if path.is_empty() {
            path.push(b'/');
        }
        NameBuf::from(path)
    }
}

fn bad_handle(h: crate::merged::HandleId, op: Operation) -> Error {
    Error::new(
        ErrorKind::BadHandle,
        op,
        format!("(handle {})", h.0).as_str(),
    )
    .with_detail("no such open handle")
}
