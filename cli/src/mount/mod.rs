//! `layerstack mount`: a merged view as a FUSE filesystem, in the forms of
//! `mount -t overlay` (directories in the kernel's overlayfs format), of a
//! mount helper (`NAME SOURCE MNT -o ...`, as mount(8) and mount.fuse3
//! call one), and of an image (its layers as the lower layers).
//!
//! Without `-f` the command starts itself again in the foreground, in a
//! session of its own, and returns once that process says the mount is
//! ready (or relays its error and exit status); the tool forbids `unsafe`,
//! so it does not fork.

mod daemon;
mod options;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use camino::{Utf8Path, Utf8PathBuf};
use layerstack::layer::dir::DirLayerOptions;
use layerstack::merged::ViewOptions;
use layerstack::mount::MountOptions;
use layerstack::{DirLayer, Error, ErrorKind, Layer, MemLayer, MergedView, Operation, Result};

use crate::ImageRef;
use options::MountSpec;

/// `layerstack mount`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// Serve in the foreground until unmounted (without it the command
    /// returns once the mount is ready, and a process of its own serves it)
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Mount options, comma-separated (see below); may be repeated
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// An image only: the writable layer, a directory in the kernel's
    /// overlayfs format (created if missing, as --work); needs --work
    #[arg(long, value_name = "DIR", requires = "work")]
    upper: Option<Utf8PathBuf>,
    /// The work directory of --upper (on the same filesystem)
    #[arg(long, value_name = "DIR", requires = "upper")]
    work: Option<Utf8PathBuf>,
    /// [NAME] SOURCE MNT (see below).
    #[arg(num_args = 2..=3, required = true, hide = true)]
    operands: Vec<OsString>,
    /// The background process's side of the readiness channel: its stdin
    /// is a socket it writes `ready` on once mounted; then its stdio goes
    /// to /dev/null.
    #[arg(long, hide = true)]
    ready_pipe: bool,
    /// mount(8)'s `-f` to a helper: check everything, mount nothing.
    #[arg(long, hide = true)]
    fake: bool,
    /// mount(8)'s `-s` to a helper: pass over unknown options.
    #[arg(long, hide = true)]
    sloppy: bool,
}

pub const HELP: &str = "\
SOURCE is `overlay` (its layers are in -o lowerdir=...) or an image,
LAYOUT[:TAG]; MNT is the mount point, a directory. A first NAME (the
filesystem type a mount helper is called with) is passed over.

Options (-o, as mount -t overlay takes them):
  lowerdir=DIR[:DIR...]   the lower layers, leftmost on top (overlay source)
  upperdir=DIR            the writable layer; without it the mount is read-only
  workdir=DIR             the work directory of upperdir (same filesystem)
  redirect_dir=on|off|follow, index=on|off, metacopy=on|off, userxattr,
  volatile                as the kernel's overlayfs
  ro                      read-only: every change fails with EROFS
  fsname=NAME             the source the mount table shows
  allow_other             other users see the mount (needs root or
                          user_allow_other in /etc/fuse.conf; the default
                          wherever that holds)
A backslash escapes a comma or a colon in a path (`\\,` `\\:`). The generic
flags of mount(8) (rw, nosuid, nodev, noexec, noatime, _netdev, x-*, ...)
are accepted and change nothing; an unknown option is an error.

The directories are in the kernel's overlayfs format: what this mount
writes, the kernel can mount afterwards, and the reverse (never both at
once). As with the kernel, upperdir and workdir must exist; one session
at a time uses them (a second fails with EBUSY). An image's layers are read into memory; without --upper its mount
is read-only.

Without -f the command returns once the mount is ready and a process of
its own serves it until `umount MNT` or `fusermount3 -u MNT`; SIGTERM or
SIGINT unmounts it (if nothing holds it busy) and ends that process.

As a mount helper: `mount -t fuse.layerstack overlay MNT -o lowerdir=...`
runs mount.fuse3, which runs `layerstack overlay MNT -o ...` (the tool must
be on PATH); a symlink /sbin/mount.fuse.layerstack -> layerstack is called
by mount(8) directly. fstab: `overlay MNT fuse.layerstack lowerdir=...`.

Examples:
  layerstack mount overlay /mnt -o lowerdir=/l/top:/l/base,upperdir=/l/up,workdir=/l/work
  layerstack mount -f overlay /mnt -o lowerdir=/l/top:/l/base
                                  read-only, serving until Ctrl-C
  layerstack mount ./layerstack-demo:demo /mnt
  layerstack mount ./layerstack-demo:demo /mnt --upper /l/up --work /l/work
  umount /mnt";

/// What to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// Directories in the kernel's format (`lowerdir=`).
    Overlay,
    /// An image's layers.
    Image(ImageRef),
}

/// A checked `layerstack mount` command line.
#[derive(Debug)]
struct Request {
    source: Source,
    mountpoint: PathBuf,
    spec: MountSpec,
    /// The upper and work directories came from --upper and --work, which
    /// are made if missing (`upperdir=` and `workdir=` must exist).
    make_upper: bool,
}

/// Runs `layerstack mount`: exit status 0 once mounted (and, with `-f`,
/// unmounted), 1 when mounting fails, 2 for bad options.
pub fn main(args: MountArgs) -> ExitCode {
    let request = match request(&args) {
        Ok(r) => r,
        Err(message) => {
            crate::print_error(&message);
            return ExitCode::from(2);
        }
    };
    let served = if args.foreground || args.fake {
        serve(&request, &args)
    } else {
        daemon::start(&args, &request.mountpoint)
    };
    match served {
        Ok(code) => code,
        Err(e) => {
            crate::print_error(&e.to_string());
            ExitCode::from(1)
        }
    }
}

/// Checks the command line: a usage error is one line naming what is
/// wrong.
fn request(args: &MountArgs) -> std::result::Result<Request, String> {
    let (source, mountpoint) = match args.operands.as_slice() {
        [_, source, mnt] | [source, mnt] => (source, mnt),
        _ => unreachable!("clap takes 2 or 3 operands"),
    };
    let mut spec = options::parse(&args.options, args.sloppy)?;
    let source = if source == "overlay" {
        Source::Overlay
    } else {
        let text = source
            .to_str()
            .ok_or_else(|| format!("the source `{}` is not UTF-8", shown(source)))?;
        Source::Image(text.parse::<ImageRef>()?)
    };
    if args.upper.is_some() && spec.upper.is_some() {
        return Err("the upper layer is given twice (--upper and -o upperdir=)".to_owned());
    }
    if let (Some(upper), Some(work)) = (&args.upper, &args.work) {
        spec.upper = Some(upper.clone());
        spec.work = Some(work.clone());
    }
    match &source {
        Source::Overlay if spec.lowers.is_empty() => {
            return Err(
                "the overlay source needs its layers: -o lowerdir=DIR[:DIR...] (leftmost on top)"
                    .to_owned(),
            );
        }
        Source::Image(image) if !spec.lowers.is_empty() => {
            return Err(format!(
                "mount option `lowerdir=` is for the overlay source; the layers of {image} are the lower layers"
            ));
        }
        _ => {}
    }
    if spec.upper.is_some() && spec.work.is_none() {
        return Err(
            "mount option `upperdir=` needs `workdir=` (on the same filesystem)".to_owned(),
        );
    }
    if spec.fs_name.is_none() {
        // The source shown in the mount table, when FUSE can carry it.
        let name = match &source {
            Source::Overlay => "overlay".to_owned(),
            Source::Image(image) => image.to_string(),
        };
        spec.fs_name = options::safe_fs_name(&name).then_some(name);
    }
    Ok(Request {
        source,
        mountpoint: PathBuf::from(mountpoint),
        spec,
        make_upper: args.upper.is_some(),
    })
}

fn shown(s: &OsStr) -> String {
    crate::output::escape_name(s.as_encoded_bytes())
}

/// Opens the layers, mounts the view, and serves it until it is
/// unmounted: by `umount`, or by this process on SIGTERM, SIGINT or SIGHUP.
fn serve(request: &Request, args: &MountArgs) -> Result<ExitCode> {
    if args.ready_pipe {
        daemon::new_session();
    }
    // Handlers first: a signal from now on unmounts cleanly.
    let signals = daemon::Signals::register(&request.mountpoint)?;
    let mountpoint = canonical_mountpoint(&request.mountpoint)?;
    // Its upper layer holds the upper and work directories until the
    // session ends.
    let view = open_view(request)?;
    if args.fake {
        return Ok(ExitCode::SUCCESS);
    }
    let spec = &request.spec;
    let options = MountOptions {
        fs_name: spec
            .fs_name
            .clone()
            .unwrap_or_else(|| "layerstack".to_owned()),
        read_only: spec.read_only || spec.upper.is_none(),
        ..MountOptions::default()
    };
    // Asked for, it is tried even where it seems not permitted: fusermount3
    // then says why not.
    let options = MountOptions {
        allow_other: options.allow_other || spec.allow_other,
        ..options
    };
    let mounted = layerstack::mount::mount(view, &mountpoint, &options)?;
    if args.ready_pipe {
        daemon::announce_ready();
    }
    signals.unmount_on_signal(mounted.unmounter());
    mounted.wait()?;
    Ok(ExitCode::SUCCESS)
}

/// The mount point as an absolute path: the background process leaves its
/// working directory for `/`, and unmounts by this path.
fn canonical_mountpoint(mnt: &Path) -> Result<PathBuf> {
    let canonical = std::fs::canonicalize(mnt).map_err(|e| {
        let kind = e.raw_os_error().and_then(ErrorKind::from_errno);
        Error::new(kind.unwrap_or(ErrorKind::Io), Operation::Mount, mnt)
    })?;
    if !canonical.is_dir() {
        return Err(Error::new(ErrorKind::NotADirectory, Operation::Mount, mnt)
            .with_detail("the mount point must be a directory"));
    }
    Ok(canonical)
}

/// `path` from the working directory (as given if that cannot be read or
/// the result is not UTF-8: the open then reports the path).
fn absolute(path: &Utf8Path) -> Utf8PathBuf {
    std::path::absolute(path)
        .ok()
        .and_then(|p| Utf8PathBuf::from_path_buf(p).ok())
        .unwrap_or_else(|| path.to_owned())
}

/// `upperdir=` or `workdir=` `dir` must be there, a directory, as the
/// kernel's overlayfs wants them (it creates neither).
fn existing_dir(dir: &Utf8Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| io_error(&e, dir))?;
    if !meta.is_dir() {
        return Err(Error::new(
            ErrorKind::NotADirectory,
            Operation::Layer,
            dir.as_str(),
        ));
    }
    Ok(())
}

/// The view the request names: its lower layers, and an upper layer on
/// disk (which locks its upper and work directories for as long as the
/// view is served), or an empty one in memory for a read-only mount.
fn open_view(request: &Request) -> Result<MergedView> {
    let spec = &request.spec;
    let layer_options = DirLayerOptions::default()
        .xattrs(spec.xattrs)
        .durability(spec.durability);
    let lowers: Vec<Arc<dyn Layer>> = match &request.source {
        Source::Overlay => spec
            .lowers
            .iter()
            .map(|dir| {
                DirLayer::open_with(dir, layer_options.clone())
                    .map(|l| Arc::new(l) as Arc<dyn Layer>)
            })
            .collect::<Result<_>>()?,
        Source::Image(image) => {
            let (store, image) = image.open()?;
            store.layers(&image)?
        }
    };
    let view_options = ViewOptions::default()
        .dir_rename(spec.dir_rename)
        .hard_links(spec.hard_links)
        .metacopy(spec.metacopy);
    match (&spec.upper, &spec.work) {
        (Some(upper), Some(work)) => {
            if request.make_upper {
                for dir in [upper, work] {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::from_io(&e, Operation::Layer, dir))?;
                }
            }
            existing_dir(upper)?;
            existing_dir(work)?;
            // Absolute: the background process later leaves its working
            // directory for `/`, and `statfs` asks the upper's path.
            let upper = absolute(upper);
            // The layer locks both directories while it lives (the
            // session's): a second session on either is refused before its
            // work directory is touched, as the kernel refuses a second
            // mount with EBUSY.
            let upper = DirLayer::open_upper_with(&upper, work, layer_options).map_err(|e| {
                if e.kind() == ErrorKind::Busy {
                    let refused = Error::new(ErrorKind::Busy, Operation::Mount, e.path());
                    match e.detail() {
                        Some(detail) => refused.with_detail(detail),
                        None => refused,
                    }
                } else {
                    e
                }
            })?;
            MergedView::with_options(lowers, upper, view_options)
        }
        // The kernel, too, passes over a workdir without an upperdir.
        _ => MergedView::with_options(lowers, MemLayer::new(), view_options),
    }
}

/// An error of the system call on `dir`, as its errno's kind alone (the
/// message says "no such file or directory", as for a missing lowerdir).
fn io_error(e: &std::io::Error, dir: &Utf8Path) -> Error {
    let kind = e.raw_os_error().and_then(ErrorKind::from_errno);
    Error::new(
        kind.unwrap_or(ErrorKind::Io),
        Operation::Layer,
        dir.as_str(),
    )
}

/// Rewrites the command line of a mount helper into `layerstack mount ...`:
///
/// - called as `mount.fuse.layerstack` (a symlink mount(8) finds for
///   `-t fuse.layerstack`): `SOURCE MNT [-sfnv] [-o OPTS] [-t TYPE]`, where
///   `-f` is mount(8)'s fake mount, `-s` its sloppy mode, and `-n`, `-v`
///   and `-t` say nothing to a FUSE filesystem;
/// - called by mount.fuse3 (`-t fuse.layerstack` without that symlink),
///   which runs `layerstack SOURCE MNT -o OPTS`.
///
/// Any other command line is left as it is.
pub fn helper_arguments(mut args: Vec<OsString>, subcommands: &[&str]) -> Vec<OsString> {
    let called_as = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.as_encoded_bytes().starts_with(b"mount."))
        .unwrap_or(false);
    if called_as {
        let mut out = vec![OsString::from("layerstack"), OsString::from("mount")];
        let mut rest = args.drain(1..);
        while let Some(arg) = rest.next() {
            match arg.to_str() {
                Some("-n" | "-v") => {}
                Some("-f") => out.push("--fake".into()),
                Some("-s") => out.push("--sloppy".into()),
                Some("-t" | "-N") => {
                    rest.next();
                }
                _ => out.push(arg),
            }
        }
        return out;
    }
    let is_helper_call = args.len() >= 4
        && args[3] == "-o"
        && args[1]
            .to_str()
            .is_none_or(|a| !a.starts_with('-') && !subcommands.contains(&a));
    if is_helper_call {
        args.insert(1, OsString::from("mount"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command line, split at spaces.
    fn line(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn mount_helper_command_lines_become_layerstack_mount() {
        let subcommands = ["ls", "mount"];
        for (given, read) in [
            // mount(8) through /sbin/mount.fuse.layerstack.
            (
                "/sbin/mount.fuse.layerstack overlay /mnt -n -s -o rw,lowerdir=/a -t fuse.layerstack",
                "layerstack mount overlay /mnt --sloppy -o rw,lowerdir=/a",
            ),
            (
                "mount.fuse.layerstack img:v1 /mnt -f -o ro",
                "layerstack mount img:v1 /mnt --fake -o ro",
            ),
            // mount.fuse3 running `layerstack SOURCE MNT -o OPTS`.
            (
                "layerstack overlay /mnt -o rw,lowerdir=/a",
                "layerstack mount overlay /mnt -o rw,lowerdir=/a",
            ),
            // Everything else stays.
            ("layerstack ls img -o x", "layerstack ls img -o x"),
            (
                "layerstack mount overlay /mnt -o lowerdir=/a",
                "layerstack mount overlay /mnt -o lowerdir=/a",
            ),
            ("layerstack --help", "layerstack --help"),
            ("layerstack lss img", "layerstack lss img"),
        ] {
            assert_eq!(
                helper_arguments(line(given), &subcommands),
                line(read),
                "{given}"
            );
        }
    }
}
