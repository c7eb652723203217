//! Helpers several test modules share, compiled once. Each is used by only
//! some modules, and which of those are built depends on the features, so
//! what a build leaves unused is not an error.
#![allow(dead_code)]

#[cfg(feature = "proptest")]
pub mod child;
#[cfg(feature = "proptest")]
pub mod harness;
#[cfg(feature = "proptest")]
pub mod legacy_names;
#[cfg(feature = "proptest")]
pub mod tools;

use std::sync::atomic::{AtomicU64, Ordering};

use camino::Utf8PathBuf;

/// A scratch directory under the system's temporary directory, removed
/// when dropped.
pub struct TempDir(pub Utf8PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let base = Utf8PathBuf::from_path_buf(std::env::temp_dir()).expect("UTF-8 temp dir");
        let dir = base.join(format!("layerstack-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        TempDir(dir)
    }

    pub fn path(&self, sub: &str) -> Utf8PathBuf {
        self.0.join(sub)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
