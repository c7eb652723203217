//! `unpack`: an image's root filesystem written into a directory.
//!
//! NOT YET AVAILABLE: this waits for `oci::flatten`, which writes layers
//! into a directory with every path confined beneath it (it lands on main
//! separately). Until then [`unpack_image`] fails with a clear message, and
//! the end-to-end test of `unpack` (`tests/cli.rs`) is ignored.
//!
//! With `flatten_layers(layers, target, options)` (layers bottom first,
//! each an opener `Fn() -> Result<Box<dyn Read + Send>> + Sync`), the body
//! becomes:
//!
//! ```text
//! let layout = store.layout();
//! let openers: Vec<_> = image
//!     .layers()
//!     .iter()
//!     .map(|d| {
//!         move || -> Result<Box<dyn Read + Send>> {
//!             Ok(Box::new(layout.open_blob(&d.digest, Some(d.size))?))
//!         }
//!     })
//!     .collect();
//! flatten_layers(&openers, dir, &FlattenOptions::default())?;
//! Ok(())
//! ```
//!
//! (A container's `MergedView` copied out with `std::fs` calls on joined
//! paths is deliberately not used as a stand-in: a path planted by one
//! layer could then lead a write outside `dir`.)

use camino::Utf8Path;
use layerstack::oci::{Image, ImageStore};
use layerstack::{Error, ErrorKind, Operation, Result};

/// Writes the root filesystem of `image` into `dir`.
pub fn unpack_image(store: &ImageStore, image: &Image, dir: &Utf8Path) -> Result<()> {
    let _ = (store, image);
    Err(Error::new(ErrorKind::Unsupported, Operation::Flatten, dir)
        .with_detail("unpack: not yet available (it waits for oci::flatten)"))
}
