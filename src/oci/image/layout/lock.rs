//! The layout's lock: writers of `index.json` and the garbage collector
//! hold it, so that no blob is removed while a tag is being set to it.

use super::*;

impl OciLayout {
    /// An exclusive `flock` on `oci-layout`, a file that is never replaced,
    /// released when the returned file is dropped.
    pub(super) fn lock(&self, root: &OwnedFd) -> Result<File> {
        let path = self.root.join(LAYOUT_FILE);
        let file = open_regular(root, LAYOUT_FILE, &path)?;
        rustix::fs::flock(&file, FlockOperation::LockExclusive)
            .map_err(|e| Error::from_io(&e.into(), Operation::Write, &path))?;
        Ok(file)
    }
}
