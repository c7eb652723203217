//! The FUSE mount (`layerstack::mount`), through real system calls.
//! `mount::suites` runs pjdfstest and fsx against it; `mount::differential`
//! steps it side by side with the kernel's overlayfs.

#[cfg(feature = "proptest")]
mod differential;
#[cfg(feature = "proptest")]
mod suites;
