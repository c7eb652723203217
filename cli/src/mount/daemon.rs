//! The background process of `layerstack mount` and its signals.
//!
//! The tool forbids `unsafe`, so it cannot fork: `start` runs the tool
//! again with `--foreground --ready-pipe`, its stdin a socket (the
//! readiness channel: nothing else is written there) and its stdout and
//! stderr a pipe. That process starts a session of its own (no terminal,
//! so no SIGHUP or Ctrl-C from it), mounts, writes `ready` on the socket
//! and moves its stdio to /dev/null; or it fails, and its one-line error
//! and exit status are the command's. What it prints before (a warning)
//! is passed on either way.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use layerstack::mount::Unmounter;
use layerstack::{Error, ErrorKind, Operation, Result};

use super::MountArgs;

/// What the background process writes on its readiness socket once the
/// mount is ready.
const READY: &str = "ready\n";

/// Starts the background process that serves the mount and waits until it
/// is mounted (exit status 0) or has failed (its error and status).
pub fn start(args: &MountArgs, mountpoint: &Path) -> Result<ExitCode> {
    let exe = std::env::current_exe()
        .map_err(|e| start_failed(mountpoint, &e, "finding this program"))?;
    let mut command = Command::new(exe);
    command.args(child_arguments(args));
    let (code, said) = start_command(command, mountpoint)?;
    // Its warnings, or its one-line error: escaped already.
    let _ = std::io::stderr().write_all(&said);
    Ok(code)
}

fn start_failed(mountpoint: &Path, e: &std::io::Error, what: &str) -> Error {
    Error::from_io(e, Operation::Mount, mountpoint)
        .with_detail(format!("cannot start the background process ({what}): {e}"))
}

/// Runs `command` as the background process (see the module docs) and
/// waits for its answer: the command's exit status, and what the process
/// printed (its warnings, or its error) for the command's stderr.
fn start_command(mut command: Command, mountpoint: &Path) -> Result<(ExitCode, Vec<u8>)> {
    let fail = |e: std::io::Error, what: &str| start_failed(mountpoint, &e, what);
    let (mut ready, child_ready) = UnixStream::pair().map_err(|e| fail(e, "socket"))?;
    let (mut from_child, to_parent) = std::io::pipe().map_err(|e| fail(e, "pipe"))?;
    command
        .stdin(OwnedFd::from(child_ready))
        .stdout(to_parent.try_clone().map_err(|e| fail(e, "pipe"))?)
        .stderr(to_parent);
    let mut child = command.spawn().map_err(|e| fail(e, "spawn"))?;
    // The command holds the child's ends: only the child may keep them, or
    // the reads below never end.
    drop(command);
    // Its output, read as it comes: a child that prints much before it is
    // ready never waits on a full pipe.
    let output = std::thread::spawn(move || {
        let mut said = Vec::new();
        let _ = from_child.read_to_end(&mut said);
        said
    });
    // `ready`, or nothing when the child ends without mounting.
    let mut answer = Vec::new();
    ready
        .read_to_end(&mut answer)
        .map_err(|e| fail(e, "reading its answer"))?;
    // Once ready, the child's stdio is /dev/null: its output has ended.
    let mut said = output.join().unwrap_or_default();
    if answer == READY.as_bytes() {
        return Ok((ExitCode::SUCCESS, said));
    }
    let status = child.wait().map_err(|e| fail(e, "waiting for it"))?;
    let mnt = super::shown(mountpoint.as_os_str());
    let why = match (status.code(), status.signal()) {
        (Some(code), _) if code != 0 => {
            return Ok((ExitCode::from(u8::try_from(code).unwrap_or(1)), said));
        }
        (_, Some(signal)) => {
            format!("failed to mount `{mnt}`: the background process was killed by signal {signal}")
        }
        _ => format!("failed to mount `{mnt}`: the background process ended without mounting"),
    };
    said.extend_from_slice(format!("error: {}\n", crate::output::escape_message(&why)).as_bytes());
    Ok((ExitCode::from(1), said))
}

/// The background process's command line: this one, in the foreground,
/// with the readiness channel.
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

/// Said by the background process once mounted, on its readiness socket
/// (its stdin): it leaves its stdio (the socket and the pipe) for
/// /dev/null, and its working directory for `/`, so it holds nothing of
/// the caller's busy.
pub fn announce_ready() {
    let _ = std::io::stderr().flush();
    let _ = rustix::io::write(std::io::stdin().as_fd(), READY.as_bytes());
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = rustix::stdio::dup2_stdin(&null);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the background process: a shell script.
    fn child(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    /// The end of a background process that is ready: the answer on the
    /// socket (its stdin), then stdio to /dev/null.
    const READY_SH: &str = "printf 'ready\\n' >&0; exec 0</dev/null 1>/dev/null 2>&1";

    #[test]
    fn readiness_comes_on_its_own_channel_whatever_is_printed_before() {
        let mnt = Path::new("/mnt/x");
        // Output before, on both streams, even the word itself: ready all
        // the same once the socket says so, the output passed on.
        let (code, said) = start_command(
            child(&format!(
                "echo ready; echo 'warning: w' >&2; {READY_SH}; sleep 0.2"
            )),
            mnt,
        )
        .unwrap();
        assert_eq!(
            (code, said.as_slice()),
            (ExitCode::SUCCESS, &b"ready\nwarning: w\n"[..])
        );
        // `ready` printed on stdout is not the answer: the status is.
        let (code, said) =
            start_command(child("echo ready; echo 'error: e' >&2; exit 3"), mnt).unwrap();
        assert_eq!(
            (code, said.as_slice()),
            (ExitCode::from(3), &b"ready\nerror: e\n"[..])
        );
        let (code, said) = start_command(child("exit 0"), mnt).unwrap();
        assert_eq!(
            (code, String::from_utf8(said).unwrap()),
            (
                ExitCode::from(1),
                "error: failed to mount `/mnt/x`: the background process ended without mounting\n"
                    .to_owned()
            )
        );
        // More output before than a pipe holds: no deadlock.
        let (code, said) = start_command(
            child(&format!("head -c 200000 /dev/zero >&2; {READY_SH}")),
            mnt,
        )
        .unwrap();
        assert_eq!((code, said.len()), (ExitCode::SUCCESS, 200_000));
    }
}
