//! Kernel differential tests: the reference [`Model`] (and so the view,
//! which `tests/state_machine.rs` keeps equal to the model) against a real
//! Linux overlayfs mount.
//!
//! Each case mounts a scratch tmpfs, writes the lower layers into it in
//! the kernel's format, mounts an overlay (default options: `redirect_dir`
//! off/follow, `index=off`; `nodev`, so no device node is ever opened) and
//! applies the same operations to the model and, through a child process
//! chrooted into the mount (so absolute symlinks and `..` stay inside, as
//! the view resolves them), to the kernel; `commit` is an unmount, the
//! upper becoming the top lower, and a remount. Every outcome (result or
//! errno) and the whole visible tree after every step must agree.
//!
//! A second harness (`kernel/disk.rs`) steps the kernel and a view over
//! `DirLayer`s side by side on one tmpfs and compares, after every step,
//! what the model cannot: times (changed or not), which names share an
//! inode, the upper's on-disk form, work-dir leftovers and untouched
//! lowers; with the default options, `redirect_dir=on` and `index=on`
//! (`PROPTEST_CASES / 80` sequences each, 100 by default). Uppers the
//! kernel wrote (also with `metacopy=on`) are read back by a view, and the
//! kernel mounts ours. `kernel/regressions.rs` holds issue 12's named
//! cases.
//!
//! The tests need root and mounts; elsewhere they print one
//! `SKIP kernel tests: <reason>` line and pass, unless
//! `LAYERSTACK_REQUIRE_KERNEL=1` (CI) makes them fail.
//!
//! `PROPTEST_CASES=N` sets the number of random sequences (default 8,000:
//! about a minute; each case mounts its own tmpfs and overlay).
//!
//! What the model comparison deliberately leaves out (see also `aliasing_redirect` and
//! `harness::ESTALE_MARK`: lower redirects the kernel does not support):
//! - times and inode numbers (the model does not track them);
//! - directory sizes (the model shows 0; tmpfs counts bytes);
//! - the kernel's own bookkeeping attributes (`trusted.overlay.*`), which
//!   overlayfs hides from users itself;
//! - whiteouts the kernel lists by mistake: in a directory from a single
//!   lower layer, readdir passes through to the real directory and shows a
//!   whiteout that hides nothing, which a lookup then cannot find
//!   (`layerstack::testing::snapshot_dir` leaves them out);
//! - the upper directory's format where it does not show in the mount
//!   (the kernel's optimistic opaque flags, see the named tests);
//! - opening fifos, sockets and devices: the crate's `read`, `write`,
//!   `set_len` and `open` refuse them (`EINVAL`) before opening, and so does
//!   the child (see `kernel/child.rs`), where the syscall would block, fail
//!   with `ENXIO` or reach a host device.
mod bytes;
pub(crate) mod disk;
mod handles;
mod readback;
mod regressions;

use crate::support::{child, harness};

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use layerstack::layer::dir::DirLayerOptions;
use layerstack::layer::{RedirectTarget, walk};
use layerstack::merged::ViewOptions;
use layerstack::merged::{DirRename, HardLinkCopyUp, Metacopy, OpenOptions, RenameMode};
use layerstack::testing::{
    LayerItem, MetadataSummary, Op, Outcome, apply_to_view, build_layer, ops_strategy,
    snapshot_view, stack_items_strategy,
};
use layerstack::{
    DirLayer, Entry, ErrorKind, FileType, Layer, LayerPath, MemLayer, MergedView, Metadata, NameBuf,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use harness::{Overlay, RunError, kernel_available, run};

/// The child process: serves operations inside the mount when started by
/// the harness, does nothing in a normal test run.
#[test]
fn kernel_child() {
    if let Some(root) = std::env::var_os(child::CHILD_ENV) {
        child::serve(&root);
    }
}

fn config() -> Config {
    config_scaled(1, 8_000)
}

/// `PROPTEST_CASES / divisor` cases (`default` without it); failing seeds
/// are kept in `tests/it/kernel.proptest-regressions`.
fn config_scaled(divisor: u32, default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(default, |n: u32| (n / divisor).max(1));
    Config {
        cases,
        max_shrink_iters: 2_000,
        // Stacks the kernel refuses (ESTALE, see `harness::ESTALE_MARK`)
        // are rare; they never fail the run.
        max_global_rejects: cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/it/kernel.proptest-regressions",
        ))),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random lower stacks (1 to 3 layers) and random operation sequences
    /// on the model and on the kernel, with the kernel's default options.
    #[test]
    fn model_matches_kernel_with_default_options(
        stack in stack_items_strategy(3),
        ops in ops_strategy(40),
    ) {
        if !kernel_available() {
            return Ok(());
        }
        let layers: Vec<_> = stack.iter().map(|items| build_layer(items)).collect();
        if let Some(why) = aliasing_redirect(&layers) {
            return Err(TestCaseError::reject(why));
        }
        match run(&layers, &ops, ViewOptions::default(), "") {
            Ok(_) => {}
            Err(RunError::Unsupported(why)) => {
                return Err(TestCaseError::reject(format!("the kernel refuses the layers: {why}")));
            }
            Err(RunError::Diverged { step, detail }) => {
                prop_assert!(false, "step {}: {}", step, detail);
            }
        }
    }
}

/// A redirect the kernel never writes and does not support: one whose old
/// name the same layer does not hide (no whiteout, non-directory or opaque
/// directory there or above it). A directory rename writes the redirect
/// and a whiteout at the old name in the same layer; without it one lower
/// directory shows at two merged paths, and the kernel then binds it to one
/// overlay inode: lookups of the other path fail with `ESTALE`, or a file
/// below it changes at both paths at once (one copy-up). The crate shows
/// two independent paths. Such stacks are left out (rejected).
pub(crate) fn aliasing_redirect(layers: &[MemLayer]) -> Option<String> {
    for (i, layer) in layers.iter().enumerate() {
        for (path, entry) in walk(layer).expect("walk a MemLayer") {
            let Some(redirect) = entry.node().and_then(|n| n.redirect.clone()) else {
                continue;
            };
            let old = match redirect.target() {
                RedirectTarget::Absolute(abs) => abs.clone(),
                RedirectTarget::Name(name) => match path
                    .parent()
                    .expect("a redirected directory is not the root")
                    .join(name)
                {
                    Ok(old) => old,
                    Err(_) => continue,
                },
                RedirectTarget::Ignored | RedirectTarget::Invalid => continue,
            };
            let below = layers[i + 1..]
                .iter()
                .any(|l| l.lookup(&old).expect("lookup in a MemLayer").is_some());
            if old == path || !below {
                continue;
            }
            let mut at = Some(old.clone());
            let mut hidden = false;
            while let Some(p) = at {
                if p.is_root() {
                    break;
                }
                hidden |= match layer.lookup(&p).expect("lookup in a MemLayer") {
                    Some(Entry::Whiteout) => true,
                    Some(Entry::Node(n)) => !n.meta.is_dir() || n.opaque,
                    None => false,
                };
                at = p.parent();
            }
            if !hidden {
                return Some(format!(
                    "layer {i}: `{path}` redirects to `{old}`, which the layer does not hide"
                ));
            }
        }
    }
    None
}

// ----- named cases: one per rule of DESIGN §2, against the kernel -----

/// Runs `ops` on the model and the kernel (default options), comparing
/// every step, and returns the outcomes and the overlay (still mounted, to
/// inspect its upper directory); `None` when the kernel tests skip.
fn kernel_case(layers: &[MemLayer], ops: &[Op]) -> Option<(Vec<Outcome>, Overlay)> {
    kernel_case_with(layers, ops, ViewOptions::default(), "")
}

fn kernel_case_with(
    layers: &[MemLayer],
    ops: &[Op],
    options: ViewOptions,
    mount_options: &str,
) -> Option<(Vec<Outcome>, Overlay)> {
    if !kernel_available() {
        return None;
    }
    match run(layers, ops, options, mount_options) {
        Ok((outcomes, overlay, _)) => Some((outcomes, overlay)),
        Err(RunError::Diverged { step, detail }) => {
            panic!("model and kernel differ at step {step}: {detail}")
        }
        Err(RunError::Unsupported(why)) => panic!("the kernel refuses the layers: {why}"),
    }
}

/// What the view's upper holds after `ops`, in the shape of
/// [`kernel_upper`].
fn view_upper(layers: &[MemLayer], ops: &[Op], options: ViewOptions) -> Vec<(String, String)> {
    let lowers: Vec<Arc<dyn Layer>> = layers
        .iter()
        .map(|l| Arc::new(l.clone()) as Arc<dyn Layer>)
        .collect();
    let view = MergedView::with_options(lowers, MemLayer::new(), options).expect("a view opens");
    for op in ops {
        apply_to_view(&view, op);
    }
    view.changes()
        .expect("the upper can be walked")
        .into_iter()
        .map(|(path, entry)| {
            let what = match entry {
                Entry::Whiteout => "whiteout".to_owned(),
                Entry::Node(n) if n.opaque => "opaque dir".to_owned(),
                Entry::Node(n) if n.redirect.is_some() => "redirected dir".to_owned(),
                Entry::Node(n) => format!("{:?}", n.meta.file_type),
            };
            (path.to_string(), what)
        })
        .collect()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// What the kernel's upper directory holds, read in its on-disk format:
/// (path, "whiteout" | "opaque dir" | "redirected dir" | type), sorted.
fn kernel_upper(overlay: &Overlay) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(dir) = todo.pop() {
        let at = overlay.upper().join(&dir);
        for e in std::fs::read_dir(&at).expect("read the upper") {
            let e = e.expect("an upper entry");
            let name = e.file_name().into_string().expect("UTF-8 names");
            let rel = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let m = std::fs::symlink_metadata(e.path()).expect("lstat in the upper");
            let t = m.file_type();
            let what = if t.is_char_device() && m.rdev() == 0 {
                "whiteout".to_owned()
            } else if t.is_dir() {
                todo.push(rel.clone());
                if xattr(&e.path(), "trusted.overlay.opaque").as_deref() == Some(b"y") {
                    "opaque dir".to_owned()
                } else if xattr(&e.path(), "trusted.overlay.redirect").is_some() {
                    "redirected dir".to_owned()
                } else {
                    "Dir".to_owned()
                }
            } else if t.is_file() {
                "File".to_owned()
            } else if t.is_symlink() {
                "Symlink".to_owned()
            } else {
                format!("{t:?}")
            };
            out.push((rel, what));
        }
    }
    out.sort();
    out
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn layer(build: impl FnOnce(&mut MemLayer) -> layerstack::Result<()>) -> MemLayer {
    let mut l = MemLayer::new();
    build(&mut l).expect("build a test layer");
    l
}

fn file_meta(mode: u32, uid: u32, gid: u32) -> Metadata {
    Metadata::new(FileType::File)
        .with_mode(mode)
        .with_owner(uid, gid)
}

fn path(p: &str) -> NameBuf {
    p.into()
}

fn err(kind: ErrorKind) -> Outcome {
    Outcome::Err(kind)
}

fn meta_of(outcome: &Outcome) -> &MetadataSummary {
    match outcome {
        Outcome::Metadata(m) => m,
        other => panic!("expected metadata, got {other:?}"),
    }
}

fn open(write: bool) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(write);
    o
}

#[test]
fn open_for_write_copies_up_and_open_for_read_never() {
    let lower = layer(|l| {
        l.add_file_with("a/b", "data", file_meta(0o4755, 1, 1000))?;
        l.add_file("a/c", "other")?;
        l.add_dir("a/a")
    });
    let ops = [
        Op::Open {
            path: path("a/c"),
            options: open(false),
        },
        Op::Metadata { path: path("a") },
        Op::Open {
            path: path("a/b"),
            options: open(true),
        },
        Op::Metadata { path: path("a") },
        Op::Metadata { path: path("a/b") },
    ];
    let Some((outcomes, overlay)) = kernel_case(std::slice::from_ref(&lower), &ops) else {
        return;
    };
    assert_eq!(outcomes[0], Outcome::Unit);
    // A single-layer directory: 2 + its subdirectory; merged once copied up.
    assert_eq!(meta_of(&outcomes[1]).nlink, 3);
    assert_eq!(outcomes[2], Outcome::Unit);
    assert_eq!(meta_of(&outcomes[3]).nlink, 1);
    // Copy-up keeps the mode (setuid too), the owner and the data.
    let b = meta_of(&outcomes[4]);
    assert_eq!((b.mode, b.uid, b.gid, b.size), (0o4755, 1, 1000, 4));
    let upper = pairs(&[("a", "Dir"), ("a/b", "File")]);
    assert_eq!(kernel_upper(&overlay), upper);
    assert_eq!(view_upper(&[lower], &ops, ViewOptions::default()), upper);
}

#[test]
fn deleting_a_lower_file_leaves_a_whiteout_and_an_upper_one_nothing() {
    let lower = layer(|l| l.add_file("a/b", "x"));
    let ops = [
        Op::RemoveFile { path: path("a/b") },
        Op::Write {
            path: path("a/c"),
            data: b"new".to_vec(),
        },
        Op::RemoveFile { path: path("a/c") },
        Op::ReadDir { path: path("a") },
        Op::Read { path: path("a/b") },
    ];
    let Some((outcomes, overlay)) = kernel_case(std::slice::from_ref(&lower), &ops) else {
        return;
    };
    assert_eq!(
        outcomes,
        [
            Outcome::Unit,
            Outcome::Unit,
            Outcome::Unit,
            Outcome::Listing(vec![]),
            err(ErrorKind::NotFound),
        ]
    );
    let upper = pairs(&[("a", "Dir"), ("a/b", "whiteout")]);
    assert_eq!(kernel_upper(&overlay), upper);
    assert_eq!(view_upper(&[lower], &ops, ViewOptions::default()), upper);
}

#[test]
fn a_directory_recreated_over_a_deleted_one_is_opaque_and_a_new_one_not() {
    let lower = layer(|l| l.add_file("a/b", "x"));
    let ops = [
        Op::RemoveDirAll { path: path("a") },
        Op::CreateDir { path: path("a") },
        Op::ReadDir { path: path("a") },
        Op::CreateDir { path: path("b") },
        Op::Metadata { path: path("a") },
    ];
    let Some((outcomes, overlay)) = kernel_case(std::slice::from_ref(&lower), &ops) else {
        return;
    };
    assert_eq!(
        outcomes[..4],
        [
            Outcome::Unit,
            Outcome::Unit,
            Outcome::Listing(vec![]),
            Outcome::Unit
        ]
    );
    // Opaque: no lower part, so 2 links like any new directory.
    assert_eq!(meta_of(&outcomes[4]).nlink, 2);
    let upper = pairs(&[("a", "opaque dir"), ("b", "Dir")]);
    assert_eq!(kernel_upper(&overlay), upper);
    assert_eq!(view_upper(&[lower], &ops, ViewOptions::default()), upper);
}

#[test]
fn rmdir_of_a_merged_directory_that_lists_entries_is_enotempty() {
    let bottom = layer(|l| l.add_file("a/b", "x"));
    let top = layer(|l| l.add_dir("a"));
    let ops = [
        Op::RemoveDir { path: path("a") },
        Op::RemoveFile { path: path("a/b") },
        Op::RemoveDir { path: path("a") },
        Op::Metadata { path: path("a") },
    ];
    let Some((outcomes, overlay)) = kernel_case(&[top, bottom], &ops) else {
        return;
    };
    assert_eq!(
        outcomes,
        [
            err(ErrorKind::DirectoryNotEmpty),
            Outcome::Unit,
            Outcome::Unit,
            err(ErrorKind::NotFound),
        ]
    );
    assert_eq!(kernel_upper(&overlay), pairs(&[("a", "whiteout")]));
}

#[test]
fn renaming_a_lower_directory_is_exdev_and_an_upper_one_moves() {
    let lower = layer(|l| l.add_file("a/b", "x"));
    let ops = [
        Op::Rename {
            from: path("a"),
            to: path("b"),
            mode: RenameMode::Replace,
        },
        Op::CreateDir { path: path("c") },
        Op::Write {
            path: path("c/a"),
            data: b"y".to_vec(),
        },
        Op::Rename {
            from: path("c"),
            to: path("b"),
            mode: RenameMode::Replace,
        },
        Op::Read { path: path("b/a") },
        // A lower file renames (copy-up, whiteout at the old name).
        Op::Rename {
            from: path("a/b"),
            to: path("c"),
            mode: RenameMode::NoReplace,
        },
        Op::Read { path: path("c") },
    ];
    let Some((outcomes, overlay)) = kernel_case(&[lower], &ops) else {
        return;
    };
    assert_eq!(
        outcomes,
        [
            err(ErrorKind::CrossesDevices),
            Outcome::Unit,
            Outcome::Unit,
            Outcome::Unit,
            Outcome::Bytes(b"y".to_vec()),
            Outcome::Unit,
            Outcome::Bytes(b"x".to_vec()),
        ]
    );
    // The kernel marks a pure upper directory opaque when it moves into a
    // merged directory, whether or not anything below has its new name
    // (`ovl_rename`): invisible in the mount; the view sets the flag only
    // where a lower layer has the name.
    assert_eq!(
        kernel_upper(&overlay),
        pairs(&[
            ("a", "Dir"),
            ("a/b", "whiteout"),
            ("b", "opaque dir"),
            ("b/a", "File"),
            ("c", "File")
        ])
    );
}

#[test]
fn with_redirect_dir_on_a_lower_directory_moves_with_its_contents() {
    let lower = layer(|l| {
        l.add_file("a/b", "1")?;
        l.add_file("a/c/a", "2")
    });
    let ops = [
        Op::Rename {
            from: path("a"),
            to: path("b"),
            mode: RenameMode::Replace,
        },
        Op::ReadDir { path: path("b") },
        Op::Read {
            path: path("b/c/a"),
        },
        Op::Metadata { path: path("a") },
        // Into another directory: an absolute redirect.
        Op::CreateDir { path: path("c") },
        Op::Rename {
            from: path("b/c"),
            to: path("c/a"),
            mode: RenameMode::Replace,
        },
        Op::Read {
            path: path("c/a/a"),
        },
        // The redirects keep working from a lower layer.
        Op::Commit,
        Op::Read { path: path("b/b") },
        Op::Read {
            path: path("c/a/a"),
        },
        Op::ReadDir { path: path("b") },
    ];
    let options = ViewOptions::default().dir_rename(DirRename::Redirect);
    let Some((outcomes, overlay)) = kernel_case_with(
        std::slice::from_ref(&lower),
        &ops,
        options,
        "redirect_dir=on",
    ) else {
        return;
    };
    assert_eq!(
        outcomes,
        [
            Outcome::Unit,
            Outcome::Listing(vec![
                (NameBuf::from("b"), FileType::File),
                (NameBuf::from("c"), FileType::Dir)
            ]),
            Outcome::Bytes(b"2".to_vec()),
            err(ErrorKind::NotFound),
            Outcome::Unit,
            Outcome::Unit,
            Outcome::Bytes(b"2".to_vec()),
            Outcome::Unit,
            Outcome::Bytes(b"1".to_vec()),
            Outcome::Bytes(b"2".to_vec()),
            Outcome::Listing(vec![(NameBuf::from("b"), FileType::File)]),
        ]
    );
    // Before the commit, both uppers hold the same shape.
    let before = &ops[..7];
    let Some((_, overlay_before)) = kernel_case_with(
        std::slice::from_ref(&lower),
        before,
        options,
        "redirect_dir=on",
    ) else {
        return;
    };
    // The same shape, but for the opaque flag the kernel puts on `c`, a
    // directory made in a merged one that then got a subdirectory moved in
    // (invisible in the mount, see the test above).
    let shape = |c: &str| {
        pairs(&[
            ("a", "whiteout"),
            ("b", "redirected dir"),
            ("b/c", "whiteout"),
            ("c", c),
            ("c/a", "redirected dir"),
        ])
    };
    assert_eq!(kernel_upper(&overlay_before), shape("opaque dir"));
    assert_eq!(view_upper(&[lower], before, options), shape("Dir"));
    drop(overlay);
}

#[test]
fn copy_up_breaks_lower_hard_links_with_index_off() {
    let lower = layer(|l| {
        l.add_file("a", "x")?;
        l.add_hard_link("a", "b")
    });
    let ops = [
        Op::Metadata { path: path("b") },
        Op::Append {
            path: path("a"),
            data: b"y".to_vec(),
        },
        Op::Read { path: path("a") },
        Op::Read { path: path("b") },
        Op::Metadata { path: path("a") },
        Op::Metadata { path: path("b") },
        Op::HardLink {
            original: path("b"),
            link: path("c"),
        },
        Op::Metadata { path: path("c") },
    ];
    let Some((outcomes, _overlay)) = kernel_case(&[lower], &ops) else {
        return;
    };
    assert_eq!(meta_of(&outcomes[0]).nlink, 2);
    assert_eq!(outcomes[2], Outcome::Bytes(b"xy".to_vec()));
    assert_eq!(outcomes[3], Outcome::Bytes(b"x".to_vec()));
    // The copy is its own object; the other name is still the lower inode.
    assert_eq!(meta_of(&outcomes[4]).nlink, 1);
    assert_eq!(meta_of(&outcomes[5]).nlink, 2);
    // link() to a lower file copies it up and links in the upper.
    assert_eq!(outcomes[6], Outcome::Unit);
    assert_eq!(meta_of(&outcomes[7]).nlink, 2);
}

#[test]
fn symlinks_resolve_inside_the_mount_root() {
    let lower = layer(|l| {
        l.add_file("b", "root b")?;
        l.add_symlink("a", "/b")?;
        l.add_symlink("c/a", "../../../b")?;
        l.add_symlink("c/b", "/c/../../c/a")?;
        l.add_symlink("c/c", "c")
    });
    let ops = [
        Op::Read { path: path("a") },
        Op::Read { path: path("c/a") },
        Op::Read { path: path("c/b") },
        Op::Read { path: path("c/c") },
        Op::ReadLink { path: path("c/a") },
        Op::Write {
            path: path("/a"),
            data: b"via a".to_vec(),
        },
        Op::Read { path: path("b") },
    ];
    let Some((outcomes, _overlay)) = kernel_case(&[lower], &ops) else {
        return;
    };
    assert_eq!(
        outcomes,
        [
            Outcome::Bytes(b"root b".to_vec()),
            Outcome::Bytes(b"root b".to_vec()),
            Outcome::Bytes(b"root b".to_vec()),
            err(ErrorKind::FilesystemLoop),
            Outcome::Target("../../../b".into()),
            Outcome::Unit,
            Outcome::Bytes(b"via a".to_vec()),
        ]
    );
}

#[test]
fn merged_directories_show_one_link() {
    let bottom = layer(|l| {
        l.add_dir("a/a")?;
        l.add_dir("b/a")?;
        l.add_dir("b/b")
    });
    let top = layer(|l| l.add_dir("a/b"));
    let ops = [
        Op::Metadata { path: path("a") },
        Op::Metadata { path: path("b") },
        Op::Metadata { path: path("/") },
        Op::SetPermissions {
            path: path("b"),
            mode: 0o700,
        },
        Op::Metadata { path: path("b") },
        Op::CreateDirAll { path: path("c/a") },
        Op::Metadata { path: path("c") },
    ];
    let Some((outcomes, _overlay)) = kernel_case(&[top, bottom], &ops) else {
        return;
    };
    let nlinks: Vec<u64> = [0, 1, 2, 4, 6]
        .iter()
        .map(|&i| meta_of(&outcomes[i]).nlink)
        .collect();
    // Two layers: 1. One layer: 2 + subdirectories. The root merges the
    // upper and the lowers: 1. Copied up: merged, 1. Upper only: counted.
    assert_eq!(nlinks, [1, 4, 1, 1, 3]);
}

#[test]
fn chown_clears_setuid_and_setgid_with_group_exec_even_for_root() {
    let lower = layer(|l| {
        l.add_file_with("a", "", file_meta(0o6755, 0, 0))?;
        l.add_file_with("b", "", file_meta(0o2745, 0, 0))?;
        l.add_dir_with("c", Metadata::new(FileType::Dir).with_mode(0o6755))
    });
    let ops = [
        Op::SetOwner {
            path: path("a"),
            uid: Some(1),
            gid: None,
        },
        Op::SetOwner {
            path: path("b"),
            uid: None,
            gid: None,
        },
        Op::SetOwner {
            path: path("c"),
            uid: Some(1000),
            gid: Some(1),
        },
        Op::Metadata { path: path("a") },
        Op::Metadata { path: path("b") },
        Op::Metadata { path: path("c") },
    ];
    let Some((outcomes, _overlay)) = kernel_case(&[lower], &ops) else {
        return;
    };
    let got: Vec<(u32, u32, u32)> = outcomes[3..]
        .iter()
        .map(|o| {
            let m = meta_of(o);
            (m.mode, m.uid, m.gid)
        })
        .collect();
    assert_eq!(got, [(0o0755, 1, 0), (0o2745, 0, 0), (0o6755, 1000, 1)]);
}

#[test]
fn trailing_slash_rules() {
    let lower = layer(|l| {
        l.add_file("a", "x")?;
        l.add_symlink("b", "c/")
    });
    let ops = [
        Op::Metadata { path: path("a/") },
        Op::CreateDir { path: path("c/") },
        Op::Write {
            path: path("a/c/"),
            data: vec![],
        },
        Op::Write {
            path: path("c/a/"),
            data: vec![],
        },
        Op::RemoveFile { path: path("a/") },
        Op::RemoveDir { path: path("b/") },
        Op::Symlink {
            target: path("a"),
            link: path("c/b/"),
        },
        Op::Rename {
            from: path("a"),
            to: path("c/b/"),
            mode: RenameMode::Replace,
        },
        Op::Rename {
            from: path("a/"),
            to: path("c/b"),
            mode: RenameMode::Replace,
        },
        // Creating through a symlink whose target ends in `/`: EISDIR.
        Op::Open {
            path: path("b"),
            options: {
                let mut o = open(true);
                o.create(true);
                o
            },
        },
        Op::RemoveDir { path: path("c/.") },
        Op::RemoveDir { path: path("c/..") },
        Op::RemoveDir { path: path("/") },
        Op::Rename {
            from: path("c"),
            to: path("c/.."),
            mode: RenameMode::NoReplace,
        },
        Op::CreateDir { path: path("b/.") },
        Op::CreateDirAll { path: path("") },
    ];
    let Some((outcomes, _overlay)) = kernel_case(&[lower], &ops) else {
        return;
    };
    use ErrorKind::*;
    assert_eq!(
        outcomes,
        [
            err(NotADirectory),
            Outcome::Unit,
            err(NotADirectory),
            err(IsADirectory),
            err(NotADirectory),
            err(NotADirectory),
            err(NotFound),
            err(NotADirectory),
            err(NotADirectory),
            err(IsADirectory),
            err(InvalidInput),
            err(DirectoryNotEmpty),
            err(Busy),
            err(AlreadyExists),
            err(AlreadyExists),
            Outcome::Unit,
        ]
    );
}

#[test]
fn extended_attribute_name_rules() {
    let lower = layer(|l| {
        l.add_file("a/a", "")?;
        l.add_file("b/a", "")?;
        l.add_symlink("c", "a/a")
    });
    let ops = [
        // Checked by the upper filesystem after the copy-up: `a` merges.
        Op::SetXattr {
            path: path("a/a"),
            name: String::from("user."),
            value: vec![],
        },
        Op::Metadata { path: path("a") },
        Op::SetXattr {
            path: path("b/a"),
            name: String::from("foo.bar"),
            value: vec![],
        },
        Op::Metadata { path: path("b") },
        Op::GetXattr {
            path: path("a/a"),
            name: String::from("user."),
        },
        Op::RemoveXattr {
            path: path("a/a"),
            name: String::from("user.x"),
        },
        // `user.` on a symlink: refused before anything else.
        Op::SetXattr {
            path: path("/"),
            name: String::from("user.x"),
            value: b"v".to_vec(),
        },
        Op::Symlink {
            target: path("a"),
            link: path("b/b"),
        },
        Op::RemoveXattr {
            path: path("b/b"),
            name: String::from("user."),
        },
    ];
    let Some((outcomes, _overlay)) = kernel_case(&[lower], &ops) else {
        return;
    };
    use ErrorKind::*;
    assert_eq!(outcomes[0], err(InvalidInput));
    assert_eq!(meta_of(&outcomes[1]).nlink, 1);
    assert_eq!(outcomes[2], err(Unsupported));
    assert_eq!(meta_of(&outcomes[3]).nlink, 1);
    assert_eq!(
        outcomes[4..],
        [
            err(InvalidInput),
            err(NoData),
            Outcome::Unit,
            Outcome::Unit,
            err(InvalidInput)
        ]
    );
}

#[test]
fn set_times_with_nothing_to_set_does_not_look_up_the_path() {
    let ops = [
        Op::SetTimes {
            path: path("a/b"),
            atime: None,
            mtime: None,
        },
        Op::SetTimes {
            path: path("a/b"),
            atime: Some(layerstack::Timestamp::new(1, 0)),
            mtime: None,
        },
    ];
    let Some((outcomes, _overlay)) = kernel_case(&[MemLayer::new()], &ops) else {
        return;
    };
    assert_eq!(outcomes, [Outcome::Unit, err(ErrorKind::NotFound)]);
}

#[test]
fn commit_keeps_what_the_mount_shows() {
    let lower = layer(|l| l.add_file("a/b", "x"));
    let ops = [
        Op::SetPermissions {
            path: path("/"),
            mode: 0o700,
        },
        Op::RemoveFile { path: path("a/b") },
        Op::Write {
            path: path("b"),
            data: b"y".to_vec(),
        },
        Op::Commit,
        Op::Metadata { path: path("/") },
        Op::ReadDir { path: path("a") },
        Op::Metadata { path: path("a") },
        Op::RemoveDir { path: path("a") },
        Op::Commit,
        Op::ReadDir { path: path("/") },
    ];
    let Some((outcomes, _overlay)) = kernel_case(&[lower], &ops) else {
        return;
    };
    assert_eq!(meta_of(&outcomes[4]).mode, 0o700);
    assert_eq!(outcomes[5], Outcome::Listing(vec![]));
    // `a` merges the old upper (now a lower) and the first layer.
    assert_eq!(meta_of(&outcomes[6]).nlink, 1);
    assert_eq!(outcomes[7], Outcome::Unit);
    assert_eq!(
        outcomes[9],
        Outcome::Listing(vec![(NameBuf::from("b"), FileType::File)])
    );
}

// ----- each side reads the other's layers -----

fn utf8(p: &Path) -> camino::Utf8PathBuf {
    camino::Utf8PathBuf::from_path_buf(p.to_owned()).expect("a UTF-8 scratch path")
}

fn dir_lowers(dirs: &[std::path::PathBuf]) -> Vec<Arc<dyn Layer>> {
    dirs.iter()
        .map(|d| Arc::new(DirLayer::open(utf8(d)).expect("open a lower")) as Arc<dyn Layer>)
        .collect()
}

/// Runs `ops` through a view over the stack written to disk with a disk
/// upper, then mounts the kernel overlay over the very same directories,
/// once with our upper as `upperdir` and once with it as the top
/// `lowerdir`: both mounts must show exactly the view's tree.
fn kernel_reads_ours(layers: &[MemLayer], ops: &[Op], options: ViewOptions, extra: &str) {
    let mut scratch = harness::Scratch::new().expect("mount the scratch tmpfs");
    let root = scratch.root.clone();
    let mut lowers = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let dir = root.join(format!("l{i}"));
        std::fs::create_dir(&dir).expect("mkdir a lower");
        harness::materialize(layer, &dir);
        lowers.push(dir);
    }
    let (upper, work) = (root.join("upper"), root.join("work"));
    let disk_upper = DirLayer::open_upper_with(
        utf8(&upper),
        utf8(&work),
        DirLayerOptions::default().commit_dir(utf8(&root.join("committed"))),
    )
    .expect("open our upper");
    let view = MergedView::with_options(dir_lowers(&lowers), disk_upper, options).expect("view");
    for op in ops {
        apply_to_view(&view, op);
    }
    let ours = snapshot_view(&view).expect("walk the view");
    let stack: Vec<std::path::PathBuf> = view
        .layers()
        .iter()
        .map(|l| {
            let dir = l.as_any().downcast_ref::<DirLayer>().expect("a disk layer");
            dir.path().as_std_path().to_owned()
        })
        .collect();
    drop(view);
    let lowerdir = |dirs: &[std::path::PathBuf]| {
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    };
    let with_extra = |mut data: String| {
        if !extra.is_empty() {
            data.push(',');
            data.push_str(extra);
        }
        data
    };
    let mnt = root.join("mnt-upper");
    let kwork = root.join("kernel-work");
    std::fs::create_dir_all(&kwork).expect("mkdir a workdir");
    scratch.mount_overlay(
        &mnt,
        &with_extra(format!(
            "lowerdir={},upperdir={},workdir={}",
            lowerdir(&stack),
            upper.display(),
            kwork.display()
        )),
    );
    let kernel = layerstack::testing::snapshot_dir(&mnt).expect("walk the mount");
    if let Some(d) = harness::first_difference(&ours, &kernel) {
        panic!("the kernel mounting our upper as upperdir shows another tree: {d}");
    }
    scratch.unmount_last();
    let mut all = vec![upper.clone()];
    all.extend(stack);
    let mnt = root.join("mnt-lower");
    scratch.mount_overlay(&mnt, &with_extra(format!("lowerdir={}", lowerdir(&all))));
    let kernel = layerstack::testing::snapshot_dir(&mnt).expect("walk the mount");
    if let Some(d) = harness::first_difference(&ours, &kernel) {
        panic!("the kernel mounting our upper as the top lowerdir shows another tree: {d}");
    }
}

/// Runs `ops` through the kernel mount, then opens its upperdir (and the
/// lowers) as `DirLayer`s: our view must show exactly the mount's tree.
fn we_read_the_kernels(layers: &[MemLayer], ops: &[Op], options: ViewOptions, extra: &str) {
    let (_, overlay, _) = match run(layers, ops, options, extra) {
        Ok(done) => done,
        Err(RunError::Unsupported(_)) => return,
        Err(RunError::Diverged { step, detail }) => {
            panic!("model and kernel differ at step {step}: {detail}")
        }
    };
    let kernel = overlay.snapshot().expect("walk the mount");
    let our_work = overlay.scratch_dir("our-work");
    let upper = DirLayer::open_upper(utf8(overlay.upper()), utf8(&our_work))
        .expect("open the kernel's upperdir");
    let view =
        MergedView::with_options(dir_lowers(overlay.lowers()), upper, options).expect("view");
    let ours = snapshot_view(&view).expect("walk the view");
    if let Some(d) = harness::first_difference(&ours, &kernel) {
        panic!("our view of the kernel's upperdir differs from its mount: {d}");
    }
}

/// The layers of a generated stack, with the view options and the mount
/// options that agree (`redirect_dir=on` or the defaults); stacks the
/// kernel does not support are rejected.
fn interop_case(
    stack: &[Vec<layerstack::testing::LayerItem>],
    redirect: bool,
) -> Result<(Vec<MemLayer>, ViewOptions, &'static str), TestCaseError> {
    let layers: Vec<_> = stack.iter().map(|items| build_layer(items)).collect();
    if let Some(why) = aliasing_redirect(&layers) {
        return Err(TestCaseError::reject(why));
    }
    if layers.is_empty() {
        return Err(TestCaseError::reject("overlayfs needs a lower layer"));
    }
    Ok(if redirect {
        (
            layers,
            ViewOptions::default().dir_rename(DirRename::Redirect),
            "redirect_dir=on",
        )
    } else {
        (layers, ViewOptions::default(), "")
    })
}

fn interop_config() -> Config {
    config_scaled(10, 300)
}

proptest! {
    #![proptest_config(interop_config())]

    #[test]
    fn the_kernel_mounts_our_layers_and_shows_our_tree(
        stack in stack_items_strategy(3),
        ops in ops_strategy(30),
        redirect in any::<bool>(),
    ) {
        if !kernel_available() {
            return Ok(());
        }
        let (layers, options, extra) = interop_case(&stack, redirect)?;
        kernel_reads_ours(&layers, &ops, options, extra);
    }

    #[test]
    fn we_open_the_kernels_upperdir_and_show_its_tree(
        stack in stack_items_strategy(3),
        ops in ops_strategy(30),
        redirect in any::<bool>(),
    ) {
        if !kernel_available() {
            return Ok(());
        }
        let (layers, options, extra) = interop_case(&stack, redirect)?;
        we_read_the_kernels(&layers, &ops, options, extra);
    }
}

// ----- the kernel and a view over DirLayers, side by side -----

/// The three option sets the side-by-side runs use: the view's options and
/// the kernel's mount options that agree with them.
fn side_by_side_options(variant: u8) -> (ViewOptions, &'static str) {
    match variant {
        0 => (ViewOptions::default(), ""),
        1 => (
            ViewOptions::default().dir_rename(DirRename::Redirect),
            "redirect_dir=on",
        ),
        _ => (
            ViewOptions::default().hard_links(HardLinkCopyUp::Keep),
            "index=on",
        ),
    }
}

/// Runs one random case side by side (see `kernel/disk.rs`).
fn side_by_side_case(
    stack: &[Vec<layerstack::testing::LayerItem>],
    ops: &[Op],
    variant: u8,
) -> Result<(), TestCaseError> {
    if !kernel_available() {
        return Ok(());
    }
    let layers: Vec<_> = stack.iter().map(|items| build_layer(items)).collect();
    if layers.is_empty() {
        return Err(TestCaseError::reject("overlayfs needs a lower layer"));
    }
    if let Some(why) = aliasing_redirect(&layers) {
        return Err(TestCaseError::reject(why));
    }
    let (options, extra) = side_by_side_options(variant);
    match disk::run_side_by_side(&layers, ops, options, extra) {
        Ok(_) => Ok(()),
        Err(RunError::Unsupported(why)) => Err(TestCaseError::reject(format!(
            "the kernel refuses the layers: {why}"
        ))),
        Err(RunError::Diverged { step, detail }) => Err(TestCaseError::fail(format!(
            "{extra:?}: step {step}: {detail}"
        ))),
    }
}

/// `PROPTEST_CASES / 80` cases per option set (100 without it).
fn side_by_side_config() -> Config {
    config_scaled(80, 100)
}

proptest! {
    #![proptest_config(side_by_side_config())]

    #[test]
    fn side_by_side_with_default_options(
        stack in stack_items_strategy(3),
        ops in ops_strategy(30),
    ) {
        side_by_side_case(&stack, &ops, 0)?;
    }

    #[test]
    fn side_by_side_with_redirect_dir(
        stack in stack_items_strategy(3),
        ops in ops_strategy(30),
    ) {
        side_by_side_case(&stack, &ops, 1)?;
    }

    /// `index=on` against `HardLinkCopyUp::Keep`, without hard links: the
    /// kernel copies up one name of a lower hard link and finds it again
    /// through its index, the view links every name at once (a documented
    /// difference, pinned by `with_index_on_*`), so the stacks' hard links
    /// are left out and the sequences make none. What is left checks that
    /// `index=on` changes nothing else a user sees.
    #[test]
    fn side_by_side_with_index(
        stack in stack_items_strategy(3),
        ops in ops_strategy(30),
    ) {
        let unlinked: Vec<Vec<LayerItem>> = stack
            .iter()
            .map(|items| {
                items
                    .iter()
                    .filter(|item| !matches!(item, LayerItem::HardLink { .. }))
                    .cloned()
                    .collect()
            })
            .collect();
        let ops: Vec<Op> = ops
            .into_iter()
            .filter(|op| !matches!(op, Op::HardLink { .. }))
            .collect();
        side_by_side_case(&unlinked, &ops, 2)?;
    }
}

/// The four kernel option sets whose uppers a view reads back, with the
/// view options that agree.
fn read_back_options(variant: u8) -> (ViewOptions, &'static str) {
    match variant {
        0..=2 => side_by_side_options(variant),
        _ => (
            ViewOptions::default()
                .dir_rename(DirRename::Redirect)
                .metacopy(Metacopy::Follow),
            "metacopy=on,redirect_dir=on",
        ),
    }
}

proptest! {
    #![proptest_config(side_by_side_config())]

    /// The kernel runs a random sequence alone, with the default options,
    /// `redirect_dir=on`, `index=on` or `metacopy=on,redirect_dir=on`; a
    /// view over its upperdir (and workdir, for the index) must show its
    /// final tree, or refuse an `index=on` upper whose index holds entries
    /// (`EOPNOTSUPP`: a documented limitation).
    #[test]
    fn we_read_back_the_kernels_upper_with_any_options(
        stack in stack_items_strategy(3),
        ops in ops_strategy(30),
        variant in 0u8..4,
    ) {
        if !kernel_available() {
            return Ok(());
        }
        let (layers, _, _) = interop_case(&stack, false)?;
        let (options, extra) = read_back_options(variant);
        match disk::read_back_kernels_upper(&layers, &ops, options, extra) {
            Ok(()) => {}
            Err(RunError::Unsupported(why)) => {
                return Err(TestCaseError::reject(format!("the kernel refuses the layers: {why}")));
            }
            Err(RunError::Diverged { step, detail }) => {
                prop_assert!(false, "step {}: {}", step, detail);
            }
        }
    }

    /// A view over `DirLayer`s runs a random sequence with
    /// `HardLinkCopyUp::Keep`; the kernel mounting its upper with
    /// `index=on` must show the view's tree.
    #[test]
    fn the_kernel_mounts_our_upper_with_index(
        stack in stack_items_strategy(3),
        ops in ops_strategy(30),
    ) {
        if !kernel_available() {
            return Ok(());
        }
        let (layers, _, _) = interop_case(&stack, false)?;
        let (options, extra) = side_by_side_options(2);
        kernel_reads_ours(&layers, &ops, options, extra);
    }
}
