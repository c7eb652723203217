//! `RUN`: the command line as Docker makes it (shell form through the
//! config's `Shell`, heredocs), its environment, user and working
//! directory, run by [`run_step`](super::super::run_step) over the layer
//! directories of the image so far; what it changed becomes the layer.

use std::sync::atomic::{AtomicU64, Ordering};

use camino::Utf8PathBuf;

use super::super::dockerfile::{CommandLine, Instruction};
use super::super::run::{RunStep, run_step};
use super::{BuildEvent, Engine, Stage, StepResult, fail, flag};
use crate::MergedView;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::dir::DirLayer;

/// Docker's default `PATH` on Linux.
pub(super) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The program and arguments `RUN` runs.
///
/// A heredoc alone (`RUN <<EOF`) is a script for the shell, as BuildKit
/// runs one without a `#!` line (one with a `#!` line BuildKit runs as a
/// file with that interpreter; here the shell runs it too); heredocs
/// after a command are handed to the shell with the command, which reads
/// them itself.
pub(super) fn argv(stage: &Stage<'_>, ins: &Instruction, line: &CommandLine) -> Vec<String> {
    match line {
        CommandLine::Exec(words) => words.clone(),
        CommandLine::Shell(text) => {
            let command = match ins.heredocs.as_slice() {
                [] => text.clone(),
                [only] if is_lone_heredoc(text) => only.content.clone(),
                docs => {
                    let mut full = text.clone();
                    for doc in docs {
                        full.push('\n');
                        full.push_str(&doc.content);
                        full.push_str(&doc.name);
                    }
                    full
                }
            };
            let mut argv = stage.shell();
            argv.push(command);
            argv
        }
    }
}

/// Whether a shell-form line is only a heredoc marker (`<<EOF`, `<<-"EOF"`).
fn is_lone_heredoc(text: &str) -> bool {
    let Some(rest) = text.trim().strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    !rest.is_empty() && !rest.contains(char::is_whitespace)
}

/// BuildKit's history text of a `RUN`: the build args in scope (`|N K=V`)
/// and the command line, then ` # buildkit`.
pub(super) fn created_by(stage: &Stage<'_>, argv: &[String]) -> String {
    let mut args: Vec<(String, String)> = Vec::new();
    for (k, v) in &stage.args {
        let value = stage
            .env
            .iter()
            .rev()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .or_else(|| v.clone())
            .unwrap_or_default();
        match args.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = value,
            None => args.push((k.clone(), value)),
        }
    }
    let mut words: Vec<String> = Vec::new();
    if !args.is_empty() {
        words.push(format!("|{}", args.len()));
        words.extend(args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    words.extend(argv.iter().cloned());
    format!("RUN {} # buildkit", words.join(" "))
}

/// A line of `/etc/passwd` or `/etc/group` in `view`: the fields of the
/// entry whose name (field 0) or id (field 2) is `who`.
fn entry(view: &MergedView, file: &str, who: &str) -> Option<Vec<String>> {
    let text = view.read_to_string(file).ok()?;
    let lines: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    lines
        .iter()
        .find(|f| f[0] == who)
        .or_else(|| {
            lines
                .iter()
                .find(|f| f[2] == who && who.parse::<u32>().is_ok())
        })
        .cloned()
}

/// `USER`'s `user[:group]` as ids, through the image's `/etc/passwd` and
/// `/etc/group`: a numeric id needs neither; without a group, the user's
/// primary group from `/etc/passwd` (0 for a numeric user it lacks), as
/// Docker resolves it.
///
/// # Errors
/// A message naming the user or group that is missing.
pub(super) fn resolve_user(
    view: &MergedView,
    spec: &str,
) -> std::result::Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = entry(view, "etc/passwd", user);
    let uid = match user.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => passwd
            .as_ref()
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| format!("USER {spec}: no user `{user}` in the image's /etc/passwd"))?,
    };
    let gid = match group {
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entry(view, "etc/group", group)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("USER {spec}: no group `{group}` in the image's /etc/group")
                })?,
        },
        None => passwd
            .as_ref()
            .and_then(|f| f.get(3))
            .and_then(|g| g.parse().ok())
            .unwrap_or(0),
    };
    Ok((uid, gid))
}

/// A directory for one `RUN` (upper, work, root, and an empty lower when
/// the image has no layer) under the layout's `.layerstack/run/`, removed
/// when dropped, also after an error.
struct Scratch(Utf8PathBuf);

impl Scratch {
    fn new(layout_root: &camino::Utf8Path) -> Result<Scratch> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = layout_root.join(".layerstack").join("run").join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["upper", "work", "root", "empty"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::from_io(&e, Operation::BuildImage, dir.join(sub)))?;
        }
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl<'s> Engine<'s, '_> {
    pub(super) fn run_step(
        &mut self,
        stage: &mut Stage<'s>,
        ins: &Instruction,
        events: &mut dyn FnMut(BuildEvent<'_>),
    ) -> Result<StepResult> {
        let super::Command::Run(line) = &ins.command else {
            unreachable!("a RUN step");
        };
        if flag(&ins.flags, "mount").is_some() {
            return Err(fail(
                self.path(),
                ins.line,
                ErrorKind::Unsupported,
                "RUN --mount is not supported",
            ));
        }
        if flag(&ins.flags, "security").is_some_and(|s| s != "sandbox") {
            return Err(fail(
                self.path(),
                ins.line,
                ErrorKind::Unsupported,
                "RUN --security=insecure is not supported",
            ));
        }
        if let Some(network) = flag(&ins.flags, "network")
            && !matches!(network, "none" | "default")
        {
            let warning = format!(
                "line {}: RUN --network={network} ignored: RUN has no network (builds are offline)",
                ins.line
            );
            events(BuildEvent::Warning(&warning));
        }
        let argv = argv(stage, ins, line);
        let created_by = created_by(stage, &argv);
        let mut env = stage.env.clone();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".to_owned(), DEFAULT_PATH.to_owned()));
        }
        let user = stage.config_str("User").unwrap_or_default();
        let workdir = stage.workdir();
        let env_text: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = super::cache::key(
            &stage.key,
            &[
                "RUN",
                &created_by,
                &env_text.join("\n"),
                &user,
                &workdir,
                &Self::args_in_scope(stage),
            ],
        );
        if let Some(entry) = self.lookup(stage, &key)
            && let Some(result) = self.reuse(stage, ins, &created_by, &entry)
        {
            self.record(stage, key, &entry, true);
            return Ok(result);
        }
        let (uid, gid) = if user.is_empty() {
            (0, 0)
        } else {
            let view = stage.builder.view().map_err(|e| self.at(ins.line, e))?;
            resolve_user(&view, &user)
                .map_err(|m| fail(self.path(), ins.line, ErrorKind::NotFound, m))?
        };
        let scratch = Scratch::new(self.store.layout().root()).map_err(|e| self.at(ins.line, e))?;
        let mut lowers = stage
            .builder
            .layer_dirs()
            .map_err(|e| self.at(ins.line, e))?;
        if lowers.is_empty() {
            lowers.push(scratch.0.join("empty"));
        }
        let step = RunStep {
            lowers,
            upper: scratch.0.join("upper"),
            work: scratch.0.join("work"),
            root: scratch.0.join("root"),
            argv,
            env,
            uid,
            gid,
            workdir,
        };
        let outcome = run_step(&step, &mut |out| events(BuildEvent::Output(out)))
            .map_err(|e| self.at(ins.line, e))?;
        if !outcome.success() {
            events(BuildEvent::RunFailed {
                status: outcome.status,
                tail: &outcome.tail,
            });
            return Err(fail(
                self.path(),
                ins.line,
                ErrorKind::Io,
                format!("RUN exited with status {}", outcome.status),
            ));
        }
        let layer =
            DirLayer::open_upper(&step.upper, &step.work).map_err(|e| self.at(ins.line, e))?;
        let built = stage
            .builder
            .add_layer_copied(&layer, &created_by)
            .map_err(|e| self.at(ins.line, e))?;
        drop(layer);
        drop(scratch);
        let (layer, entry) = self.outcome(stage, &built);
        self.record(stage, key, &entry, false);
        Ok(StepResult {
            layer,
            cached: false,
        })
    }
}
