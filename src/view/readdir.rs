//! Merged directory listings.
//!
//! A directory that comes from one layer is passed through; a merged one
//! lists each name once, from the topmost layer that holds it, with
//! whiteouts and everything they hide left out. The listing comes from the
//! directory's index (see `resolve`), sorted by name.

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::path::{Name, PathLike};

use super::resolve::{Follow, UPPER};
use super::{DirEntry, LayerSource, MergedView};

impl MergedView {
    /// As [`std::fs::read_dir`], collected and sorted by name; each entry
    /// says which layer it comes from (follows symlinks).
    ///
    /// # Errors
    /// `ENOTDIR` if the object is not a directory, and the errors of
    /// resolution.
    pub fn read_dir(&self, path: impl PathLike) -> Result<Vec<DirEntry>> {
        self.read_dir_inner(Name::new(path.path_bytes()))
    }

    fn read_dir_inner(&self, user: &Name) -> Result<Vec<DirEntry>> {
        let op = Operation::ReadDir;
        let st = self.read_state();
        let r = st.resolve(user, op, Follow::Always)?;
        r.existing(op, user)?;
        let Some(dir) = r.dir() else {
            return Err(Error::new(ErrorKind::NotADirectory, op, user));
        };
        let index = st.index(&dir)?;
        Ok(index
            .listing()
            .map(|l| DirEntry {
                name: l.name.to_owned(),
                file_type: l.file_type,
                source: if l.layer == UPPER {
                    LayerSource::Upper
                } else {
                    LayerSource::Lower(l.layer - 1)
                },
            })
            .collect())
    }
}
