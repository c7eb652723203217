//! `unpack`: an image's root filesystem written into a directory.
//!
//! The work is `ImageStore::flatten`: top layer first, so that nothing a
//! higher layer deletes or replaces is ever written, every path confined
//! beneath the target directory (no symlink the image holds is followed).

use camino::Utf8Path;
use layerstack::Result;
use layerstack::oci::{FlattenOptions, FlattenSummary, Image, ImageStore, Owners, Policy};

/// Writes the root filesystem of `image` into `dir`. As root, owners and
/// device nodes are kept; otherwise files are owned by the caller and
/// device nodes are skipped (an unprivileged user cannot make them), as
/// `umoci unpack --rootless` does.
pub fn unpack_image(store: &ImageStore, image: &Image, dir: &Utf8Path) -> Result<FlattenSummary> {
    let options = if rustix::process::geteuid().is_root() {
        FlattenOptions::new()
    } else {
        FlattenOptions::new()
            .with_owners(Owners::Ignore)
            .with_devices(Policy::Strip)
    };
    store.flatten(image, dir, &options)
}
