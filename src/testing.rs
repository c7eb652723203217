//! Test support for this crate and for downstream users (feature
//! `proptest`).
//!
//! - **Layer conformance**: [`check_layer_conformance`] checks that a
//!   [`Layer`](crate::Layer) implementation (a tar, a remote store, a
//!   directory format) answers every call exactly as a reference
//!   [`MemLayer`](crate::MemLayer) with the same content does, including
//!   whiteouts, opaque and redirect flags, metadata, hard-link identity and
//!   the error kinds of misuse.
//! - **Random layers**: [`LayerItem`] describes one thing put into a layer;
//!   [`layer_strategy`], [`stack_strategy`] and [`layer_items_strategy`]
//!   generate layers over a tiny name alphabet ([`NAMES`]: `a`, `b`, `c` and
//!   two names that are not UTF-8, depth at most 3) so that names collide across layers and every rule of the merge
//!   gets exercised.
//! - **Operations**: [`Op`] is one call of the merged view, [`Outcome`] its
//!   comparable result; [`op_strategy`] generates them over the same
//!   alphabet, and [`apply`] runs one on anything that implements the
//!   merged-view contract [`MergedFs`](crate::MergedFs): the reference
//!   [`Model`](crate::model::Model), a [`MergedView`](crate::MergedView)
//!   ([`apply_to_model`] and [`apply_to_view`] name the two).
//! - **Model against view**: [`check_model_vs_view`] runs an operation
//!   sequence on both and reports the first [`Divergence`] (results, errors
//!   or the whole visible tree, compared after every step);
//!   [`snapshot_view`] reads the whole visible tree of a view (or of any
//!   [`MergedFs`](crate::MergedFs)).
//! - **Fuzzing**: [`Scenario`] has a compact byte encoding
//!   ([`Scenario::from_bytes`], [`Scenario::to_bytes`]) that any input
//!   decodes into; [`ops_from_bytes`] and [`check_ops_bytes`] are the body of
//!   the `ops` fuzz target, which `cargo test` also runs over the committed
//!   seed corpus. [`fuzz`] holds the bodies of the `tar_import` and
//!   `dir_ops` targets.
//!
//! ```
//! use layerstack::MemLayer;
//! use layerstack::testing::check_layer_conformance;
//!
//! let mut layer = MemLayer::new();
//! layer.add_file("etc/hostname", "box\n")?;
//! layer.add_whiteout("etc/motd")?;
//! // A layer always conforms when compared with itself; a third-party
//! // layer would be built from the same content and passed first.
//! check_layer_conformance(&layer, &layer.clone()).unwrap();
//! # Ok::<(), layerstack::Error>(())
//! ```

mod codec;
mod compare;
mod conformance;
pub mod fuzz;
mod items;
mod ops;
#[cfg(feature = "oci")]
mod raw_tar;

pub use codec::{
    MAX_LAYERS, MAX_OPS, Scenario, check_ops_bytes, ops_from_bytes, scenario_strategy,
};
pub use compare::{Divergence, check_model_vs_view, snapshot_dir, snapshot_view, xattrs_of};
pub use conformance::{
    Nonconformance, Strictness, check_layer_conformance, check_layer_conformance_with,
};
pub use items::{
    Attrs, LayerItem, MAX_ITEMS, build_layer, layer_items_strategy, layer_strategy,
    stack_items_strategy, stack_strategy,
};
pub use ops::{
    MetadataSummary, Op, Outcome, apply, apply_to_model, apply_to_view, op_strategy, ops_strategy,
};
#[cfg(feature = "oci")]
pub use raw_tar::{Hdr, RawTar};

/// The names every generated path is made of: few, so that paths collide.
/// Names are bytes, as in the kernel: besides `a`, `b`, `c`, a Latin-1
/// `café` (`caf\xe9`) and an EUC-JP `日本` (`\xc6\xfc\xcb\xdc`), neither
/// of them UTF-8, so that every operation also meets names that are not.
pub const NAMES: [&[u8]; 5] = [b"a", b"b", b"c", b"caf\xe9", b"\xc6\xfc\xcb\xdc"];

/// How the crate reads a path a user gives, for an oracle that must decide
/// as the crate does (the kernel child's `remove_dir_all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathShape {
    /// The last component is a name: not the root, `.` or `..`.
    pub last_is_name: bool,
    /// The path ends in `/`.
    pub trailing_slash: bool,
}

/// The [`PathShape`] of `path` as the view parses it for `op`.
///
/// # Errors
/// Those of the view for that path: `ENOENT` for the empty string, `EINVAL`
/// for a NUL byte, `ENAMETOOLONG` for a name or path over the kernel's
/// limits.
pub fn path_shape(path: impl crate::PathLike, op: crate::Operation) -> crate::Result<PathShape> {
    let parsed = crate::path::UserPath::parse(path.path_bytes(), op)?;
    Ok(PathShape {
        last_is_name: parsed.last_kind() == crate::path::LastKind::Name,
        trailing_slash: parsed.trailing_slash,
    })
}
