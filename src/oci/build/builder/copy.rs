//! `COPY` and `ADD`: the flags and sources of the instruction, handed to
//! [`copy_into`] in the step's view (heredoc sources are written here).

use super::super::copy::{CopyOptions, CopySource, copy_into, resolve_chown, sources_digest};
use super::super::dockerfile::{Command, Heredoc, Instruction};
use super::{BuildEvent, Engine, Stage, StepResult, base, fail, flag, stage_ref};
use crate::MergedView;
use crate::error::{ErrorKind, Result};
use crate::oci::image::digest::Digest;

/// Whether a `COPY`/`ADD` source is remote (a URL or a git repository).
fn is_remote(source: &str) -> bool {
    ["http://", "https://", "git@", "git://", "ssh://"]
        .iter()
        .any(|p| source.starts_with(p))
}

/// The heredoc a source word names (`<<EOF`, `<<-EOF`, `<<"EOF"`).
fn heredoc<'i>(ins: &'i Instruction, word: &str) -> Option<&'i Heredoc> {
    let name = word.strip_prefix("<<")?;
    let name = name.strip_prefix('-').unwrap_or(name);
    let name = name.trim_matches(|c| c == '"' || c == '\'');
    ins.heredocs.iter().find(|h| h.name == name)
}

/// A heredoc as a file in `view`: inside `dest` when it names a directory
/// (ends with `/`, or several sources), else `dest` itself; mode 0644
/// (or `--chmod`), owned by the `--chown` ids or root.
fn write_heredoc(
    view: &MergedView,
    doc: &Heredoc,
    dest: &str,
    into_dir: bool,
    workdir: &str,
    options: &CopyOptions,
) -> Result<()> {
    let joined = if dest.starts_with('/') {
        dest.to_owned()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    // As COPY's destination rules: a name ending in `/`, `.` or `..`, or
    // an existing directory, takes the heredoc inside it.
    let into_dir = into_dir
        || matches!(joined.rsplit('/').next(), Some("." | ".."))
        || view.metadata(joined.as_str()).is_ok_and(|m| m.is_dir());
    let mut names: Vec<&str> = Vec::new();
    for name in joined.split('/') {
        match name {
            "" | "." => {}
            ".." => {
                names.pop();
            }
            name => names.push(name),
        }
    }
    if into_dir {
        names.push(&doc.name);
    }
    let target = names.join("/");
    let target = target.as_str();
    if let Some((parent, _)) = target.rsplit_once('/') {
        view.create_dir_all(parent)?;
    }
    view.write(target, &doc.content)?;
    view.set_permissions(target, options.chmod.unwrap_or(0o644))?;
    let (uid, gid) = options.chown.unwrap_or((0, 0));
    view.set_owner(target, Some(uid), Some(gid))
}

impl<'s> Engine<'s, '_> {
    pub(super) fn copy_step(
        &mut self,
        stage: &mut Stage<'s>,
        ins: &Instruction,
        events: &mut dyn FnMut(BuildEvent<'_>),
    ) -> Result<StepResult> {
        let (Command::Copy(words) | Command::Add(words)) = &ins.command else {
            unreachable!("a COPY or ADD step");
        };
        let keyword = ins.command.keyword();
        let line = ins.line;
        let path = self.path().to_owned();
        for unsupported in ["parents", "exclude", "checksum", "keep-git-dir"] {
            if flag(&ins.flags, unsupported).is_some() {
                return Err(fail(
                    &path,
                    line,
                    ErrorKind::Unsupported,
                    format!("{keyword} --{unsupported} is not supported"),
                ));
            }
        }
        let (raw_sources, raw_dest) = words.split_at(words.len() - 1);
        let dest = self.expand(stage, line, &raw_dest[0])?;
        let mut files: Vec<String> = Vec::new();
        let mut docs: Vec<&Heredoc> = Vec::new();
        let mut shown: Vec<String> = Vec::new();
        for word in raw_sources {
            if let Some(doc) = heredoc(ins, word) {
                docs.push(doc);
                shown.push(format!("<<{}", doc.name));
                continue;
            }
            let source = self.expand(stage, line, word)?;
            if is_remote(&source) {
                return Err(fail(
                    &path,
                    line,
                    ErrorKind::Unsupported,
                    format!(
                        "{keyword} {source}: remote sources are not supported: builds are offline"
                    ),
                ));
            }
            shown.push(source.clone());
            files.push(source);
        }
        let view = stage.builder.view().map_err(|e| self.at(line, e))?;
        let chown = match flag(&ins.flags, "chown") {
            Some(spec) => Some(self.expand(stage, line, spec)?),
            None => None,
        };
        let chmod = match flag(&ins.flags, "chmod") {
            Some(spec) => Some(self.expand(stage, line, spec)?),
            None => None,
        };
        let options = CopyOptions {
            chown: match &chown {
                Some(spec) => Some(resolve_chown(&view, spec).map_err(|e| self.at(line, e))?),
                None => None,
            },
            chmod: match &chmod {
                Some(spec) => Some(
                    u32::from_str_radix(spec, 8)
                        .ok()
                        .filter(|&m| m <= 0o7777)
                        .ok_or_else(|| {
                            fail(
                                &path,
                                line,
                                ErrorKind::InvalidInput,
                                format!(
                                    "invalid chmod parameter: '{spec}'. it should be octal string and between 0 and 07777"
                                ),
                            )
                        })?,
                ),
                None => None,
            },
            extract_archives: matches!(ins.command, Command::Add(_)),
        };
        drop(view);
        // `--from`: an earlier stage's final image, or an image as FROM
        // takes one.
        let from_image = match flag(&ins.flags, "from") {
            None => None,
            Some(word) => {
                // With the global args, as the plan chose the stages to
                // build by (BuildKit expands `--from` with them).
                let name = self.expand_global(line, word)?;
                let image = match stage_ref(&self.plan.stages[..stage.index], &name) {
                    Some(i) => self.results[i].as_ref().map(|(image, _)| image.clone()),
                    None => base::resolve(self.store, &name, line, &path)?,
                };
                Some(image.ok_or_else(|| {
                    fail(
                        &path,
                        line,
                        ErrorKind::InvalidInput,
                        format!("{keyword} --from={name}: nothing to copy from"),
                    )
                })?)
            }
        };
        let from_view = match &from_image {
            Some(image) => Some(self.store.container(image).map_err(|e| self.at(line, e))?),
            None => None,
        };
        let source = match &from_view {
            Some(view) => CopySource::View(view),
            None => CopySource::Context {
                root: &self.spec.context,
                ignore: &self.ignore,
            },
        };
        let mut created_by = keyword.to_owned();
        if let Some(chown) = &chown {
            created_by.push_str(&format!(" --chown={chown}"));
        }
        if let Some(chmod) = &chmod {
            created_by.push_str(&format!(" --chmod={chmod}"));
        }
        for s in &shown {
            created_by.push(' ');
            created_by.push_str(s);
        }
        created_by.push_str(&format!(" {dest} # buildkit"));
        let workdir = stage.workdir();
        let content = if files.is_empty() {
            Digest::of(b"")
        } else {
            sources_digest(&source, &files, &options).map_err(|e| self.at(line, e))?
        };
        let mut heredocs = String::new();
        for doc in &docs {
            heredocs.push_str(&format!("{}\n{}", doc.name, doc.content));
        }
        let key = super::cache::key(
            &stage.key,
            &[
                keyword,
                &created_by,
                &content.to_string(),
                &heredocs,
                &workdir,
                &from_image
                    .as_ref()
                    .map(|i| i.descriptor.digest.to_string())
                    .unwrap_or_default(),
                &format!("{:?} {:?}", options.chown, options.chmod),
                &Self::args_in_scope(stage),
            ],
        );
        if let Some(entry) = self.lookup(stage, &key)
            && let Some(result) = self.reuse(stage, ins, &created_by, &entry)
        {
            self.record(stage, key, &entry, true);
            return Ok(result);
        }
        let into_dir = dest.ends_with('/') || raw_sources.len() > 1;
        let outcome = stage
            .builder
            .step(&created_by, |fs| {
                if !files.is_empty() {
                    copy_into(
                        fs,
                        &source,
                        &files,
                        &dest,
                        &workdir,
                        &options,
                        &mut |done, total| {
                            events(BuildEvent::Progress { done, total });
                        },
                    )?;
                }
                for doc in &docs {
                    write_heredoc(fs, doc, &dest, into_dir, &workdir, &options)?;
                }
                Ok(())
            })
            .map_err(|e| self.at(line, e))?;
        let (layer, entry) = self.outcome(stage, &outcome);
        self.record(stage, key, &entry, false);
        Ok(StepResult {
            layer,
            cached: false,
        })
    }
}
