//! `RUN`: a command in the image being built, as Docker runs it, through
//! the real kernel overlayfs.
//!
//! The image's layers, each a directory in the kernel's format
//! ([`DirLayer`](crate::layer::dir::DirLayer)), are the lower layers of an
//! overlay mount with a fresh upper directory; the command runs with that
//! mount as its root, in namespaces of its own:
//! - a private mount namespace (the overlay, `/proc` and `/dev` exist only
//!   there and vanish with it, even if this process is killed);
//! - a PID namespace (the command is PID 1 of its own tree, and every
//!   process it leaves is killed when it exits);
//! - a network namespace with no interface up but loopback: builds are
//!   offline;
//! - `/proc` of its PID namespace, and a minimal `/dev` on a small tmpfs
//!   (`null`, `zero`, `full`, `random`, `urandom`, `tty`, and the `fd`,
//!   `stdin`, `stdout`, `stderr` links), none of which reaches the upper;
//! - exactly the environment, user, group and working directory given.
//!
//! What the command changed is then in the upper directory, in the
//! kernel's format (whiteouts, opaque directories): the step's layer. A
//! `/proc` or `/dev` the image lacked is created for the mount point and
//! removed from the upper afterwards.
//!
//! The namespaces and the mount are made by util-linux's `unshare(1)` and
//! `mount(8)` (present on every Linux system) running a short script, so
//! that this crate needs no `unsafe` code: a process cannot enter new
//! namespaces between `fork` and `exec` from safe Rust.
//!
//! # Requirements
//! Root (for the overlay mount and the namespaces) and a kernel with
//! overlayfs; [`run_step`] says which is missing.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::path::PathLike;

/// What a `RUN` step runs and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    /// The image's layers, top first: directories in the kernel's format.
    pub lowers: Vec<Utf8PathBuf>,
    /// The empty directory that receives the step's changes.
    pub upper: Utf8PathBuf,
    /// An empty work directory on the same filesystem as `upper`.
    pub work: Utf8PathBuf,
    /// An empty directory to mount the merged root on.
    pub root: Utf8PathBuf,
    /// The program and its arguments (for the shell form, the shell, its
    /// option and the command line).
    pub argv: Vec<String>,
    /// The environment, exactly (`NAME`, `value`).
    pub env: Vec<(String, String)>,
    /// The user id the command runs as.
    pub uid: u32,
    /// The group id the command runs as (supplementary groups: none).
    pub gid: u32,
    /// The working directory inside the image (absolute).
    pub workdir: String,
}

/// How a `RUN` step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// The exit status (128 + the signal's number if a signal ended it, as
    /// a shell reports it).
    pub status: i32,
    /// The last lines of its output (standard output and error together),
    /// at most [`TAIL_LINES`], each cut to [`TAIL_LINE_BYTES`].
    pub tail: Vec<String>,
}

impl RunOutcome {
    /// Whether the command succeeded (status 0).
    #[must_use]
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// How many lines of output a [`RunOutcome`] keeps.
pub const TAIL_LINES: usize = 20;
/// The longest line a [`RunOutcome`] keeps (longer ones are cut).
pub const TAIL_LINE_BYTES: usize = 512;

/// The script `unshare(1)` runs as PID 1 of the new namespaces: the overlay
/// mount, `/proc`, `/dev`, then the command with `unshare --root`.
///
/// Arguments: the merged root, the `lowerdir` list, the upper, the work
/// directory, the directory the `lowerdir` list is relative to, the file to
/// report the mount points it had to create in, then `env -i`'s arguments
/// (the environment, the host's `unshare`, its options and the command).
const SCRIPT: &str = r#"set -eu
root=$1 lowers=$2 upper=$3 work=$4 base=$5 report=$6
shift 6
cd "$base"
mount -t overlay overlay -o "lowerdir=$lowers,upperdir=$upper,workdir=$work" "$root"
made=""
for d in proc dev; do
    if [ ! -d "$root/$d" ] && [ ! -e "$root/$d" ] && [ ! -L "$root/$d" ]; then
        mkdir -m 755 "$root/$d"
        made="$made $d"
    fi
done
printf '%s\n' "$made" > "$report"
mount -t proc -o nosuid,noexec,nodev proc "$root/proc"
mount -t tmpfs -o nosuid,noexec,mode=755,size=64k dev "$root/dev"
mknod -m 666 "$root/dev/null" c 1 3
mknod -m 666 "$root/dev/zero" c 1 5
mknod -m 666 "$root/dev/full" c 1 7
mknod -m 666 "$root/dev/random" c 1 8
mknod -m 666 "$root/dev/urandom" c 1 9
mknod -m 666 "$root/dev/tty" c 5 0
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
cd /
: > "$report.ready"
exec env -i "$@"
"#;

fn error(kind: ErrorKind, path: impl PathLike, detail: impl Into<String>) -> Error {
    Error::new(kind, Operation::BuildImage, path).with_detail(detail)
}

/// A program on the host's `PATH`.
fn host_program(name: &str) -> Option<Utf8PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':')
        .map(|dir| Utf8Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// The `lowerdir` option and the directory it is relative to: the layers'
/// names when they share a parent (short, so that many layers fit in a
/// page of mount options), else their absolute paths.
fn lowerdir(lowers: &[Utf8PathBuf]) -> Result<(String, Utf8PathBuf)> {
    for l in lowers {
        if !l.is_absolute() {
            return Err(error(
                ErrorKind::InvalidInput,
                l,
                "a layer's path must be absolute",
            ));
        }
        if l.as_str().contains([':', ',', '\\', '\n']) {
            return Err(error(
                ErrorKind::InvalidInput,
                l,
                "a layer's path cannot hold `:`, `,`, `\\` or a newline (overlayfs's separators)",
            ));
        }
    }
    let parent = lowers.first().and_then(|l| l.parent());
    let shared = parent.filter(|p| lowers.iter().all(|l| l.parent() == Some(*p)));
    Ok(match shared {
        Some(base) => (
            lowers
                .iter()
                .map(|l| l.file_name().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(":"),
            base.to_owned(),
        ),
        None => (
            lowers
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join(":"),
            Utf8PathBuf::from("/"),
        ),
    })
}

/// Keeps the last lines of a stream.
struct Tail {
    lines: std::collections::VecDeque<String>,
}

impl Tail {
    fn push(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let cut = &line[..line.len().min(TAIL_LINE_BYTES)];
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines
            .push_back(String::from_utf8_lossy(cut).into_owned());
    }
}

/// Runs one `RUN` step: the command in a private overlay mount of
/// `step.lowers` under `step.upper` (see the module documentation), its
/// output handed to `output` as it comes (whole lines, standard output and
/// error together). A command that fails is an outcome, not an error.
///
/// # Errors
/// `EPERM` without root; `ENOENT` when util-linux's `unshare` or `mount`
/// is missing; `EINVAL` for a relative layer path or one holding an
/// overlayfs separator, a working directory that is not absolute, an empty
/// command or a bad environment variable; `ENAMETOOLONG` when the mount
/// options do not fit a page; `EIO` when the kernel refuses the mount (with
/// its message); an I/O error of the pipe.
pub fn run_step(step: &RunStep, output: &mut dyn FnMut(&[u8])) -> Result<RunOutcome> {
    if !rustix::process::geteuid().is_root() {
        return Err(error(
            ErrorKind::NotPermitted,
            &step.upper,
            "RUN needs root: it mounts the image with the kernel's overlayfs in namespaces of its own",
        ));
    }
    if !step.workdir.starts_with('/') {
        return Err(error(
            ErrorKind::InvalidInput,
            &step.workdir,
            "the working directory must be absolute",
        ));
    }
    if step.argv.is_empty() {
        return Err(error(
            ErrorKind::InvalidInput,
            &step.upper,
            "RUN needs a command",
        ));
    }
    let unshare = host_program("unshare").ok_or_else(|| {
        error(
            ErrorKind::NotFound,
            "unshare",
            "RUN needs util-linux's `unshare` on the PATH",
        )
    })?;
    if host_program("mount").is_none() {
        return Err(error(
            ErrorKind::NotFound,
            "mount",
            "RUN needs util-linux's `mount` on the PATH",
        ));
    }
    let (lowers, base) = lowerdir(&step.lowers)?;
    let options_len = "lowerdir=,upperdir=,workdir=".len()
        + lowers.len()
        + step.upper.as_str().len()
        + step.work.as_str().len();
    if options_len >= 4096 {
        return Err(error(
            ErrorKind::NameTooLong,
            &step.upper,
            format!(
                "the overlay mount options of {} layers are {options_len} bytes, over a page",
                step.lowers.len()
            ),
        ));
    }
    let report_dir = private_dir()?;
    let report = report_dir.path.join("made");
    let mut command = Command::new(&unshare);
    command
        .args([
            "--mount",
            "--net",
            "--pid",
            "--kill-child",
            "--propagation",
            "private",
            "--",
        ])
        .args(["/bin/sh", "-c", SCRIPT, "layerstack-run"])
        .arg(&step.root)
        .arg(&lowers)
        .arg(&step.upper)
        .arg(&step.work)
        .arg(&base)
        .arg(&report);
    for (name, value) in &step.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            return Err(error(
                ErrorKind::InvalidInput,
                name,
                "an environment variable's name must be non-empty without `=`, and neither may hold NUL",
            ));
        }
        command.arg(format!("{name}={value}"));
    }
    command
        .arg(&unshare)
        .arg(format!("--root={}", step.root))
        .arg(format!("--wd={}", step.workdir))
        .args([
            "--setgid",
            &step.gid.to_string(),
            "--setuid",
            &step.uid.to_string(),
            "--",
        ])
        .args(&step.argv);
    let host_path =
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    command
        .env_clear()
        .env("PATH", host_path)
        .stdin(Stdio::null());
    let io = |e: std::io::Error| Error::from_io(&e, Operation::BuildImage, &step.upper);
    let (reader, writer) = std::io::pipe().map_err(io)?;
    command
        .stdout(writer.try_clone().map_err(io)?)
        .stderr(writer);
    let mut child = command.spawn().map_err(io)?;
    // The command's copies of the pipe's write end are its own now.
    drop(command);
    let mut tail = Tail {
        lines: std::collections::VecDeque::new(),
    };
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                output(&line);
                tail.push(&line);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    let status = child.wait().map_err(io)?;
    let status = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 255,
    };
    let made = std::fs::read_to_string(&report).unwrap_or_default();
    for name in made.split_whitespace() {
        // Mount points made for `/proc` and `/dev` leave the layer again.
        let dir = step.upper.join(name);
        std::fs::remove_dir(&dir).map_err(|e| Error::from_io(&e, Operation::BuildImage, &dir))?;
    }
    if !report_dir.path.join("made.ready").exists() {
        // The script stopped before the command: the mount failed.
        let why = tail.lines.iter().cloned().collect::<Vec<_>>().join("; ");
        return Err(error(
            ErrorKind::Io,
            &step.root,
            format!("the overlay mount of the image failed: {why}"),
        ));
    }
    Ok(RunOutcome {
        status,
        tail: tail.lines.into_iter().collect(),
    })
}

/// A private temporary directory, removed on drop.
struct PrivateDir {
    path: Utf8PathBuf,
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn private_dir() -> Result<PrivateDir> {
    use std::os::unix::fs::DirBuilderExt;
    let tmp = Utf8PathBuf::from_path_buf(std::env::temp_dir()).unwrap_or_else(|_| "/tmp".into());
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = tmp.join(format!(
            "layerstack-run-{}-{nanos}-{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(PrivateDir { path }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::from_io(&e, Operation::BuildImage, &path)),
        }
    }
    Err(error(
        ErrorKind::AlreadyExists,
        &tmp,
        "no free name for a temporary directory",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_is_short_when_the_layers_share_a_parent() {
        let p = |s: &str| Utf8PathBuf::from(s);
        assert_eq!(
            lowerdir(&[p("/l/layers/b"), p("/l/layers/a")]).unwrap(),
            ("b:a".to_owned(), p("/l/layers"))
        );
        assert_eq!(
            lowerdir(&[p("/x/b"), p("/y/a")]).unwrap(),
            ("/x/b:/y/a".to_owned(), p("/"))
        );
        assert_eq!(
            lowerdir(&[p("/x/a:b")]).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            lowerdir(&[p("rel")]).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn the_tail_keeps_the_last_lines_cut_to_length() {
        let mut tail = Tail {
            lines: std::collections::VecDeque::new(),
        };
        for i in 0..25 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        tail.push(&vec![b'x'; 1000]);
        assert_eq!(tail.lines.len(), TAIL_LINES);
        assert_eq!(tail.lines[0], "line 6");
        assert_eq!(tail.lines[TAIL_LINES - 1].len(), TAIL_LINE_BYTES);
    }
}
