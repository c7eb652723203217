//! The background process of `layerstack mount` and its signals.
//!
//! The tool forbids `unsafe`, so it cannot fork: `start` runs the tool
//! again with `--foreground --ready-pipe`, its stdout and stderr on a pipe.
//! That process starts a session of its own (no terminal, so no SIGHUP or
//! Ctrl-C from it), mounts, writes `ready` on the pipe and moves its stdio
//! to /dev/null; or it fails, and its one-line error and exit status are
//! the command's.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use layerstack::mount::Unmounter;
use layerstack::{Error, ErrorKind, Operation, Result};

use super::MountArgs;

/// What the background process writes once the mount is ready.
const READY: &str = "ready\n";

/// Starts the background process that serves the mount and waits until it
/// is mounted (exit status 0) or has failed (its error and status).
pub fn start(args: &MountArgs, mountpoint: &Path) -> Result<ExitCode> {
    let fail = |e: std::io::Error, what: &str| {
        Error::from_io(&e, Operation::Mount, mountpoint)
            .with_detail(format!("cannot start the background process ({what}): {e}"))
    };
    let exe = std::env::current_exe().map_err(|e| fail(e, "finding this program"))?;
    let (mut from_child, to_parent) = std::io::pipe().map_err(|e| fail(e, "pipe"))?;
    let mut command = Command::new(exe);
    command
        .args(child_arguments(args))
        .stdin(Stdio::null())
        .stdout(to_parent.try_clone().map_err(|e| fail(e, "pipe"))?)
        .stderr(to_parent);
    let mut child = command.spawn().map_err(|e| fail(e, "spawn"))?;
    // The command holds the pipe's write ends: only the child may keep one,
    // or the read below never ends.
    drop(command);
    let mut said = Vec::new();
    from_child
        .read_to_end(&mut said)
        .map_err(|e| fail(e, "reading its answer"))?;
    if said == READY.as_bytes() {
        return Ok(ExitCode::SUCCESS);
    }
    let status = child.wait().map_err(|e| fail(e, "waiting for it"))?;
    // The child's own one-line error, escaped already.
    let _ = std::io::stderr().write_all(&said);
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) if code != 0 => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (_, Some(signal)) => {
            crate::print_error(&format!(
                "failed to mount `{}`: the background process was killed by signal {signal}",
                super::shown(mountpoint.as_os_str())
            ));
            ExitCode::from(1)
        }
        _ => {
            crate::print_error(&format!(
                "failed to mount `{}`: the background process ended without mounting",
                super::shown(mountpoint.as_os_str())
            ));
            ExitCode::from(1)
        }
    })
}

/// The background process's command line: this one, in the foreground,
/// with the readiness pipe.
fn child_arguments(args: &MountArgs) -> Vec<OsString> {
    let mut out: Vec<OsString> = ["mount", "--foreground", "--ready-pipe"]
        .map(OsString::from)
        .to_vec();
    if args.sloppy {
        out.push("--sloppy".into());
    }
    for o in &args.options {
        out.extend(["-o".into(), o.into()]);
    }
    if let (Some(upper), Some(work)) = (&args.upper, &args.work) {
        out.extend(["--upper".into(), upper.into(), "--work".into(), work.into()]);
    }
    out.push("--".into());
    out.extend(args.operands.iter().cloned());
    out
}

/// The background process's first step: a session of its own, so no
/// terminal's hangup or Ctrl-C reaches it.
pub fn new_session() {
    // Fails only for a process group leader, which `start` never makes.
    let _ = rustix::process::setsid();
}

/// Said by the background process once mounted: it leaves its stdio (the
/// pipe) for /dev/null, and its working directory for `/`, so it holds
/// nothing of the caller's busy.
pub fn announce_ready() {
    let mut out = std::io::stdout();
    let _ = out.write_all(READY.as_bytes());
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    let _ = std::env::set_current_dir("/");
}

/// SIGTERM, SIGINT and SIGHUP, caught from before the mount: each wakes a
/// thread that unmounts.
pub struct Signals {
    woken: UnixStream,
    mountpoint: PathBuf,
}

impl Signals {
    /// Catches the signals: from now on they write a byte each into a
    /// socket (the self-pipe pattern) instead of ending the process.
    pub fn register(mountpoint: &Path) -> Result<Signals> {
        let fail = |e: std::io::Error| {
            Error::from_io(&e, Operation::Mount, mountpoint)
                .with_detail(format!("cannot catch signals: {e}"))
        };
        let (woken, wake) = UnixStream::pair().map_err(fail)?;
        for signal in [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ] {
            let wake = wake.try_clone().map_err(fail)?;
            signal_hook::low_level::pipe::register(signal, wake).map_err(fail)?;
        }
        Ok(Signals {
            woken,
            mountpoint: mountpoint.to_owned(),
        })
    }

    /// Unmounts on the first signal (a signal that came before is in the
    /// socket already). A mount in use stays (`EBUSY`): the process
    /// keeps serving and says so, and the next signal tries again.
    pub fn unmount_on_signal(self, unmounter: Unmounter) {
        let Signals {
            mut woken,
            mountpoint,
        } = self;
        std::thread::spawn(move || {
            let mut bytes = [0u8; 64];
            while woken.read(&mut bytes).is_ok_and(|n| n > 0) {
                match unmounter.unmount() {
                    Ok(()) => return,
                    Err(e) if e.kind() == ErrorKind::Busy => crate::warn(format_args!(
                        "{e}; still serving `{}` (unmount it when it is no longer in use)",
                        super::shown(mountpoint.as_os_str())
                    )),
                    Err(e) => crate::warn(format_args!("{e}")),
                }
            }
        });
    }
}
