//! The Dockerfile parser: text in, instructions out, with the line and
//! column of every problem.
//!
//! It reads a Dockerfile as Docker's parser does:
//! - parser directives (`# syntax=…`, `# escape=…`, `# check=…`) only at the
//!   top, before any other comment, blank line or instruction; each at most
//!   once; `escape` is `\` (the default) or `` ` ``; other `# key=value`
//!   lines are comments;
//! - a line ending in the escape character (spaces and tabs may follow)
//!   continues on the next; comment lines and blank lines inside a
//!   continued instruction are dropped (the latter with a warning, as
//!   Docker warns); a byte-order mark at the start is ignored;
//! - the instruction is the first word, in any case; leading `--name=value`
//!   words are its flags (`--` ends them);
//! - `RUN`, `CMD`, `ENTRYPOINT` and `SHELL` take a JSON array of strings
//!   (exec form) or else the rest of the line (shell form; `SHELL` only the
//!   JSON form); `COPY`, `ADD` and `VOLUME` a JSON array or whitespace-
//!   separated words; `ENV` and `LABEL` `key=value` pairs (quotes kept for
//!   [`expand_word`](super::expand_word) to remove) or the old `ENV key
//!   value`; `ARG` names with optional defaults;
//! - heredocs (`<<EOF`, `<<-EOF` which strips leading tabs, `<<"EOF"` or
//!   `<<'EOF'` which are not expanded) in `RUN`, `COPY` and `ADD`: the lines
//!   after the instruction up to the delimiter.
//!
//! Variables are not expanded here: which variables an instruction sees
//! depends on the build (`ARG`, `ENV`, `--build-arg`), so the builder calls
//! [`expand_word`](super::expand_word) on the words this parser keeps raw.

use std::fmt;

use serde_json::Value;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\`, or `` ` `` by the `escape` directive).
    pub escape: char,
    /// The `syntax` directive, if any (recorded; this parser is the only
    /// frontend).
    pub syntax: Option<String>,
    /// The instructions in order.
    pub instructions: Vec<Instruction>,
    /// What Docker would warn about (blank lines inside a continued
    /// instruction), each naming its line.
    pub warnings: Vec<String>,
}

/// One instruction and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The line it starts on (1-based).
    pub line: usize,
    /// The line it ends on (its last continuation line or heredoc
    /// delimiter).
    pub end_line: usize,
    /// Its text with continuations joined, comment lines dropped and
    /// leading blanks removed, as Docker keeps it (`RUN apt-get update &&
    /// apt-get install -y x`).
    pub source: String,
    /// Its flags (`--from=build`, `--chown=1:1`, `--link`), in order.
    pub flags: Vec<Flag>,
    /// What it does.
    pub command: Command,
    /// Its heredocs, in the order they appear.
    pub heredocs: Vec<Heredoc>,
}

/// A `--name=value` (or `--name`) flag of an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The name without the dashes.
    pub name: String,
    /// The value (quotes removed), `None` for a bare `--name`.
    pub value: Option<String>,
}

/// A command line of `RUN`, `CMD`, `ENTRYPOINT` or `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// The JSON form: the program and its arguments.
    Exec(Vec<String>),
    /// The shell form: one string for the image's shell.
    Shell(String),
}

/// A here-document: lines of the Dockerfile used as a file or a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter's name (quotes removed).
    pub name: String,
    /// The content, each line with its newline.
    pub content: String,
    /// Whether `$` in the content is expanded (the delimiter was not
    /// quoted).
    pub expand: bool,
    /// Whether leading tabs were stripped from its lines (`<<-`).
    pub strip_tabs: bool,
}

/// `HEALTHCHECK`'s argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [flags] CMD …`.
    Cmd(CommandLine),
}

/// What an instruction does, its words as written (not yet expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `FROM image [AS name]`.
    From {
        /// The image.
        image: String,
        /// The stage's name.
        name: Option<String>,
    },
    /// `RUN`.
    Run(CommandLine),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `SHELL ["executable", "parameters"]`.
    Shell(Vec<String>),
    /// `COPY src… dest`: the sources then the destination.
    Copy(Vec<String>),
    /// `ADD src… dest`.
    Add(Vec<String>),
    /// `ENV key=value…`: pairs, quotes and escapes still in.
    Env(Vec<(String, String)>),
    /// `LABEL key=value…`.
    Label(Vec<(String, String)>),
    /// `ARG name[=default]…`.
    Arg(Vec<(String, Option<String>)>),
    /// `WORKDIR path`.
    Workdir(String),
    /// `USER user[:group]`.
    User(String),
    /// `EXPOSE port[/proto]…` (split after expansion).
    Expose(String),
    /// `VOLUME`: a JSON array or words.
    Volume(Vec<String>),
    /// `STOPSIGNAL signal`.
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `ONBUILD instruction`: recorded in the image for its children.
    Onbuild(Box<Instruction>),
    /// `MAINTAINER name` (deprecated; a label in effect).
    Maintainer(String),
}

impl Command {
    /// The instruction's name as Docker prints it (`COPY`).
    #[must_use]
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::From { .. } => "FROM",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Shell(_) => "SHELL",
            Command::Copy(_) => "COPY",
            Command::Add(_) => "ADD",
            Command::Env(_) => "ENV",
            Command::Label(_) => "LABEL",
            Command::Arg(_) => "ARG",
            Command::Workdir(_) => "WORKDIR",
            Command::User(_) => "USER",
            Command::Expose(_) => "EXPOSE",
            Command::Volume(_) => "VOLUME",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Onbuild(_) => "ONBUILD",
            Command::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// A Dockerfile that cannot be parsed: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The line (1-based).
    pub line: usize,
    /// The column (1-based, in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// The flags each instruction takes (Docker's, for the instructions it
/// has); any other is an error.
fn known_flags(keyword: &str) -> &'static [&'static str] {
    match keyword {
        "FROM" => &["platform"],
        "COPY" => &["from", "chown", "chmod", "link", "parents", "exclude"],
        "ADD" => &[
            "chown",
            "chmod",
            "link",
            "checksum",
            "keep-git-dir",
            "exclude",
        ],
        "RUN" => &["mount", "network", "security"],
        "HEALTHCHECK" => &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        _ => &[],
    }
}

/// The longest Dockerfile read (Docker's own limit is the context's; this
/// keeps a hostile one from taking the memory).
pub const MAX_DOCKERFILE_BYTES: usize = 16 << 20;

/// One physical line of the text.
struct Line<'a> {
    /// 1-based.
    number: usize,
    text: &'a str,
}

/// The joined text of an instruction and, for each of its pieces, the line
/// and column it came from (to point errors at the source).
struct Joined {
    text: String,
    /// (offset in `text`, line, 1-based column of that offset).
    pieces: Vec<(usize, usize, usize)>,
}

impl Joined {
    fn position(&self, offset: usize) -> (usize, usize) {
        let (start, line, column) = self
            .pieces
            .iter()
            .rev()
            .find(|(start, ..)| *start <= offset)
            .copied()
            .unwrap_or((0, 1, 1));
        let chars = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        (line, column + chars)
    }
}

impl Dockerfile {
    /// Parses a Dockerfile.
    ///
    /// ```
    /// use layerstack::oci::build::{Command, CommandLine, Dockerfile};
    ///
    /// let file = Dockerfile::parse("FROM scratch\nCOPY --chown=1:1 a b /dst/\nRUN make \\\n  install\n")?;
    /// assert_eq!(file.instructions.len(), 3);
    /// assert_eq!(file.instructions[1].command, Command::Copy(vec!["a".into(), "b".into(), "/dst/".into()]));
    /// assert_eq!(file.instructions[2].command, Command::Run(CommandLine::Shell("make   install".into())));
    /// assert_eq!(file.instructions[2].line, 3);
    /// # Ok::<(), layerstack::oci::build::ParseError>(())
    /// ```
    ///
    /// # Errors
    /// A [`ParseError`] naming the line and column: an unknown instruction
    /// or flag, a bad directive, a malformed JSON array, a missing argument,
    /// an unterminated heredoc, a NUL byte, or a text over
    /// [`MAX_DOCKERFILE_BYTES`].
    pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
        if text.len() > MAX_DOCKERFILE_BYTES {
            return Err(ParseError {
                line: 1,
                column: 1,
                message: format!("the Dockerfile is over {MAX_DOCKERFILE_BYTES} bytes"),
            });
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines: Vec<Line<'_>> = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| Line {
                number: i + 1,
                text: l.strip_suffix('\r').unwrap_or(l),
            })
            .collect();
        for line in &lines {
            if let Some(col) = line.text.find('\0') {
                return Err(ParseError {
                    line: line.number,
                    column: line.text[..col].chars().count() + 1,
                    message: "a NUL byte".to_owned(),
                });
            }
        }
        let mut parser = Parser {
            lines,
            next: 0,
            escape: '\\',
            syntax: None,
            warnings: Vec::new(),
        };
        parser.directives()?;
        let mut instructions = Vec::new();
        while let Some(instruction) = parser.instruction()? {
            instructions.push(instruction);
        }
        Ok(Dockerfile {
            escape: parser.escape,
            syntax: parser.syntax,
            instructions,
            warnings: parser.warnings,
        })
    }
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    next: usize,
    escape: char,
    syntax: Option<String>,
    warnings: Vec<String>,
}

fn is_comment(text: &str) -> bool {
    text.trim_start().starts_with('#')
}

/// `# key = value` → (key in lower case, value).
fn directive(text: &str) -> Option<(String, &str)> {
    let rest = text.strip_prefix('#')?.trim_start_matches([' ', '\t']);
    let key_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    if key_len == 0 || !rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let value = rest
        .trim_start_matches([' ', '\t'])
        .strip_prefix('=')?
        .trim();
    if value.is_empty() {
        return None;
    }
    Some((key.to_ascii_lowercase(), value))
}

fn error(line: usize, column: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        column,
        message: message.into(),
    }
}

impl Parser<'_> {
    fn directives(&mut self) -> Result<(), ParseError> {
        let mut seen: Vec<String> = Vec::new();
        while let Some(line) = self.lines.get(self.next) {
            let Some((key, value)) = directive(line.text) else {
                return Ok(());
            };
            if !matches!(key.as_str(), "syntax" | "escape" | "check") {
                // A comment: directives end here.
                return Ok(());
            }
            if seen.contains(&key) {
                return Err(error(
                    line.number,
                    1,
                    format!("only one `{key}` parser directive can be used"),
                ));
            }
            match key.as_str() {
                "escape" => {
                    self.escape = match value {
                        "\\" => '\\',
                        "`" => '`',
                        _ => {
                            return Err(error(
                                line.number,
                                1,
                                format!("invalid escape `{value}`: it must be ` or \\"),
                            ));
                        }
                    };
                }
                "syntax" => self.syntax = Some(value.to_owned()),
                _ => {}
            }
            seen.push(key);
            self.next += 1;
        }
        Ok(())
    }

    /// Whether `text` ends in the escape character and blanks: then the
    /// text without them.
    fn continued<'t>(&self, text: &'t str) -> Option<&'t str> {
        let trimmed = text.trim_end_matches([' ', '\t']);
        trimmed.strip_suffix(self.escape)
    }

    fn instruction(&mut self) -> Result<Option<Instruction>, ParseError> {
        // Skip blank and comment lines.
        let first = loop {
            let Some(line) = self.lines.get(self.next) else {
                return Ok(None);
            };
            self.next += 1;
            let trimmed = line.text.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            break self.next - 1;
        };
        let start = &self.lines[first];
        let start_number = start.number;
        let lead = start.text.len() - start.text.trim_start().len();
        let mut joined = Joined {
            text: String::new(),
            pieces: vec![(0, start.number, start.text[..lead].chars().count() + 1)],
        };
        let mut end_line = start.number;
        let mut text = &start.text[lead..];
        let mut blank_inside = false;
        loop {
            match self.continued(text) {
                Some(head) => {
                    joined.text.push_str(head);
                    // The next line that is neither a comment nor blank.
                    let mut found = false;
                    while let Some(line) = self.lines.get(self.next) {
                        self.next += 1;
                        end_line = line.number;
                        if is_comment(line.text) {
                            continue;
                        }
                        if line.text.trim().is_empty() {
                            blank_inside = true;
                            continue;
                        }
                        joined.pieces.push((joined.text.len(), line.number, 1));
                        text = line.text;
                        found = true;
                        break;
                    }
                    if !found {
                        break;
                    }
                }
                None => {
                    joined.text.push_str(text);
                    break;
                }
            }
        }
        if blank_inside {
            self.warnings.push(format!(
                "line {start_number}: empty continuation line (Docker will refuse these)"
            ));
        }
        let mut instruction = self.parse_joined(&joined, 0)?;
        if !instruction.heredocs.is_empty() {
            self.read_heredocs(&mut instruction, &joined)?;
            end_line = end_line.max(instruction.end_line);
        }
        instruction.line = start_number;
        instruction.end_line = end_line;
        Ok(Some(instruction))
    }

    /// Parses the joined text from `offset` (0, or past `ONBUILD`).
    fn parse_joined(&self, joined: &Joined, offset: usize) -> Result<Instruction, ParseError> {
        let text = &joined.text[offset..];
        // As Docker keeps it: trailing blanks stay, but not after an
        // `ONBUILD` trigger (the rest of a line, which Docker trims).
        let source = if offset == 0 {
            text.trim_start()
        } else {
            text.trim()
        }
        .to_owned();
        let at = |o: usize| joined.position(offset + o);
        let err = |o: usize, message: String| {
            let (line, column) = at(o);
            error(line, column, message)
        };
        let word_end = text.find(|c: char| c.is_whitespace()).unwrap_or(text.len());
        let keyword = text[..word_end].to_ascii_uppercase();
        let mut pos = word_end;
        let skip_blanks =
            |pos: usize| -> usize { pos + text[pos..].len() - text[pos..].trim_start().len() };
        pos = skip_blanks(pos);
        // Flags.
        let mut flags = Vec::new();
        while text[pos..].starts_with("--") {
            let end = text[pos..]
                .find(|c: char| c.is_whitespace())
                .map_or(text.len(), |e| pos + e);
            let word = &text[pos + 2..end];
            if word.is_empty() {
                pos = skip_blanks(end);
                break;
            }
            let (name, value) = match word.split_once('=') {
                Some((n, v)) => (n, Some(unquote_flag(v))),
                None => (word, None),
            };
            if !known_flags(&keyword).contains(&name) {
                return Err(err(pos, format!("unknown flag `--{name}` for {keyword}")));
            }
            flags.push(Flag {
                name: name.to_owned(),
                value,
            });
            pos = skip_blanks(end);
        }
        let args_offset = pos;
        let args = text[pos..].trim_end();
        let missing = || err(word_end, format!("{keyword} needs an argument"));
        let mut heredocs = Vec::new();
        let command = match keyword.as_str() {
            "FROM" => {
                let words: Vec<&str> = args.split_whitespace().collect();
                match words.as_slice() {
                    [image] => Command::From {
                        image: (*image).to_owned(),
                        name: None,
                    },
                    [image, as_, name] if as_.eq_ignore_ascii_case("as") => Command::From {
                        image: (*image).to_owned(),
                        name: Some((*name).to_owned()),
                    },
                    [] => return Err(missing()),
                    _ => {
                        return Err(err(
                            args_offset,
                            "FROM takes an image and an optional `AS name`".to_owned(),
                        ));
                    }
                }
            }
            "RUN" | "CMD" | "ENTRYPOINT" => {
                if args.is_empty() && keyword == "RUN" {
                    return Err(missing());
                }
                let line = command_line(args).map_err(|(o, m)| err(args_offset + o, m))?;
                if keyword == "RUN" {
                    heredocs = heredoc_markers(args);
                }
                match keyword.as_str() {
                    "RUN" => Command::Run(line),
                    "CMD" => Command::Cmd(line),
                    _ => Command::Entrypoint(line),
                }
            }
            "SHELL" => match json_array(args) {
                Some(Ok(words)) if !words.is_empty() => Command::Shell(words),
                Some(Err((o, m))) => return Err(err(args_offset + o, m)),
                _ => {
                    return Err(err(
                        args_offset,
                        "SHELL takes a JSON array: SHELL [\"executable\", \"parameters\"]"
                            .to_owned(),
                    ));
                }
            },
            "COPY" | "ADD" | "VOLUME" => {
                let words = match json_array(args) {
                    Some(Ok(words)) => words,
                    Some(Err((o, m))) => return Err(err(args_offset + o, m)),
                    None => args.split_whitespace().map(str::to_owned).collect(),
                };
                if keyword == "VOLUME" {
                    if words.is_empty() {
                        return Err(missing());
                    }
                    Command::Volume(words)
                } else {
                    heredocs = heredoc_markers(args);
                    if words.len() < 2 {
                        return Err(err(
                            args_offset,
                            format!("{keyword} needs at least one source and a destination"),
                        ));
                    }
                    if keyword == "COPY" {
                        Command::Copy(words)
                    } else {
                        Command::Add(words)
                    }
                }
            }
            "ENV" | "LABEL" => {
                let pairs = name_values(args, &keyword, self.escape)
                    .map_err(|(o, m)| err(args_offset + o, m))?;
                if pairs.is_empty() {
                    return Err(missing());
                }
                if keyword == "ENV" {
                    Command::Env(pairs)
                } else {
                    Command::Label(pairs)
                }
            }
            "ARG" => {
                let words = split_words(args, self.escape);
                if words.is_empty() {
                    return Err(missing());
                }
                let mut args_out = Vec::new();
                for (o, word) in words {
                    let (name, default) = match word.split_once('=') {
                        Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                        None => (word.clone(), None),
                    };
                    if name.is_empty() {
                        return Err(err(args_offset + o, "ARG needs a name".to_owned()));
                    }
                    args_out.push((name, default));
                }
                Command::Arg(args_out)
            }
            "WORKDIR" | "USER" | "STOPSIGNAL" | "MAINTAINER" | "EXPOSE" => {
                if args.is_empty() {
                    return Err(missing());
                }
                let value = args.to_owned();
                match keyword.as_str() {
                    "WORKDIR" => Command::Workdir(value),
                    "USER" => Command::User(value),
                    "STOPSIGNAL" => Command::StopSignal(value),
                    "EXPOSE" => Command::Expose(value),
                    _ => Command::Maintainer(value),
                }
            }
            "HEALTHCHECK" => {
                let type_end = args.find(char::is_whitespace).unwrap_or(args.len());
                let kind = args[..type_end].to_ascii_uppercase();
                let rest = args[type_end..].trim_start();
                match kind.as_str() {
                    "NONE" if rest.is_empty() && flags.is_empty() => {
                        Command::Healthcheck(Healthcheck::None)
                    }
                    "NONE" => {
                        return Err(err(
                            args_offset,
                            "HEALTHCHECK NONE takes no flags or arguments".to_owned(),
                        ));
                    }
                    "CMD" if !rest.is_empty() => {
                        let rest_offset = args_offset + (args.len() - rest.len());
                        let line = command_line(rest).map_err(|(o, m)| err(rest_offset + o, m))?;
                        Command::Healthcheck(Healthcheck::Cmd(line))
                    }
                    _ => {
                        return Err(err(
                            args_offset,
                            "HEALTHCHECK takes NONE or CMD and a command".to_owned(),
                        ));
                    }
                }
            }
            "ONBUILD" => {
                if args.is_empty() {
                    return Err(missing());
                }
                let inner = self.parse_joined(joined, offset + args_offset)?;
                match inner.command.keyword() {
                    "ONBUILD" | "FROM" | "MAINTAINER" => {
                        return Err(err(
                            args_offset,
                            format!(
                                "{} is not allowed as an ONBUILD trigger",
                                inner.command.keyword()
                            ),
                        ));
                    }
                    _ => {}
                }
                if !inner.heredocs.is_empty() {
                    return Err(err(
                        args_offset,
                        "heredocs are not allowed in an ONBUILD trigger".to_owned(),
                    ));
                }
                Command::Onbuild(Box::new(inner))
            }
            "" => return Err(err(0, "an empty instruction".to_owned())),
            _ => {
                let shown: String = text[..word_end].chars().take(40).collect();
                return Err(err(
                    0,
                    format!("unknown instruction `{}`", shown.escape_debug()),
                ));
            }
        };
        let (line, _) = at(0);
        Ok(Instruction {
            line,
            end_line: line,
            source,
            flags,
            command,
            heredocs,
        })
    }

    /// Reads the heredocs' content from the lines after the instruction.
    fn read_heredocs(
        &mut self,
        instruction: &mut Instruction,
        joined: &Joined,
    ) -> Result<(), ParseError> {
        for heredoc in &mut instruction.heredocs {
            let strip_tabs = heredoc.strip_tabs;
            let mut closed = false;
            while let Some(line) = self.lines.get(self.next) {
                self.next += 1;
                instruction.end_line = line.number;
                let text = if strip_tabs {
                    line.text.trim_start_matches('\t')
                } else {
                    line.text
                };
                if text == heredoc.name {
                    closed = true;
                    break;
                }
                heredoc.content.push_str(text);
                heredoc.content.push('\n');
            }
            if !closed {
                let (line, column) = joined.position(0);
                return Err(error(
                    line,
                    column,
                    format!(
                        "the heredoc `{}` has no line `{}` that ends it",
                        heredoc.name, heredoc.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A flag's value without its quotes (`--chown="1:1"`).
fn unquote_flag(value: &str) -> String {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner.to_owned();
        }
    }
    value.to_owned()
}

/// The JSON form, if `args` is one: `None` if it does not start with `[`
/// or is not valid JSON (then it is the shell form, as in Docker); an
/// error if it is a JSON array with an element that is not a string.
fn json_array(args: &str) -> Option<Result<Vec<String>, (usize, String)>> {
    if !args.starts_with('[') {
        return None;
    }
    let value: Value = serde_json::from_str(args).ok()?;
    let Value::Array(items) = value else {
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) => out.push(s),
            _ => {
                return Some(Err((
                    0,
                    "a JSON array here must hold only strings".to_owned(),
                )));
            }
        }
    }
    Some(Ok(out))
}

fn command_line(args: &str) -> Result<CommandLine, (usize, String)> {
    match json_array(args) {
        Some(Ok(words)) => Ok(CommandLine::Exec(words)),
        Some(Err(e)) => Err(e),
        None => Ok(CommandLine::Shell(args.to_owned())),
    }
}

/// Words separated by whitespace outside quotes; quotes and escapes are
/// kept in the words (Docker's `parseWords`), each with its offset.
fn split_words(text: &str, escape: char) -> Vec<(usize, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut start = None;
    let mut quote: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if let Some(s) = start.take() {
                    words.push((s, std::mem::take(&mut word)));
                }
                continue;
            }
            None if c == '\'' || c == '"' => quote = Some(c),
            Some(q) if c == q => quote = None,
            _ => {}
        }
        start.get_or_insert(i);
        if c == escape && quote != Some('\'') {
            word.push(c);
            match chars.next() {
                Some((_, n)) => word.push(n),
                None => {
                    word.pop();
                }
            }
            continue;
        }
        word.push(c);
    }
    if let Some(s) = start {
        words.push((s, word));
    }
    words
}

/// `key=value` pairs, or the old form `key value with spaces`.
fn name_values(
    args: &str,
    keyword: &str,
    escape: char,
) -> Result<Vec<(String, String)>, (usize, String)> {
    let words = split_words(args, escape);
    let Some((_, first)) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let mut parts = args.splitn(2, char::is_whitespace);
        let key = parts.next().unwrap_or_default();
        let value = parts.next().map(str::trim_start).unwrap_or_default();
        if value.is_empty() {
            return Err((0, format!("{keyword} needs a value: {keyword} key=value")));
        }
        return Ok(vec![(key.to_owned(), value.to_owned())]);
    }
    let mut pairs = Vec::new();
    for (offset, word) in words {
        match word.split_once('=') {
            Some(("", _)) => {
                return Err((offset, format!("{keyword} needs a name before `=`")));
            }
            Some((key, value)) => pairs.push((key.to_owned(), value.to_owned())),
            None => {
                return Err((
                    offset,
                    format!(
                        "`{}` has no `=`: {keyword} takes key=value pairs",
                        word.escape_debug()
                    ),
                ));
            }
        }
    }
    Ok(pairs)
}

/// The heredoc markers of a line (`<<EOF`, `<<-EOF`, `<<"EOF"`), in order,
/// their content still empty.
fn heredoc_markers(args: &str) -> Vec<Heredoc> {
    let mut found = Vec::new();
    let mut rest = args;
    while let Some(i) = rest.find("<<") {
        let after = &rest[i + 2..];
        // `<<<` is a here-string of the shell, not a heredoc.
        if after.starts_with('<') || (i > 0 && rest[..i].ends_with('<')) {
            rest = after.trim_start_matches('<');
            continue;
        }
        let (strip, after) = match after.strip_prefix('-') {
            Some(a) => (true, a),
            None => (false, after),
        };
        let (quote, body) = match after.chars().next() {
            Some(q @ ('"' | '\'')) => (Some(q), &after[1..]),
            _ => (None, after),
        };
        let len = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .unwrap_or(body.len());
        let name = &body[..len];
        let mut consumed = len;
        if let Some(q) = quote {
            if !body[len..].starts_with(q) {
                rest = after;
                continue;
            }
            consumed += 1;
        }
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            rest = after;
            continue;
        }
        found.push(Heredoc {
            name: name.to_owned(),
            content: String::new(),
            expand: quote.is_none(),
            strip_tabs: strip,
        });
        rest = &body[consumed..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Dockerfile {
        Dockerfile::parse(text).unwrap()
    }

    fn commands(text: &str) -> Vec<Command> {
        parse(text)
            .instructions
            .into_iter()
            .map(|i| i.command)
            .collect()
    }

    fn fails(text: &str) -> (usize, usize, String) {
        let e = Dockerfile::parse(text).unwrap_err();
        (e.line, e.column, e.message)
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn directives_only_at_the_top_and_once() {
        let f = parse("# syntax=docker/dockerfile:1\n#escape=`\nFROM scratch\nRUN a `\n b\n");
        assert_eq!(f.escape, '`');
        assert_eq!(f.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(
            f.instructions[1].command,
            Command::Run(CommandLine::Shell("a  b".into()))
        );
        // After a comment, a blank line or an instruction: a comment.
        for text in [
            "# hello\n# escape=`\nFROM x\n",
            "\n# escape=`\nFROM x\n",
            "FROM x\n# escape=`\n",
            "# other=1\n# escape=`\nFROM x\n",
        ] {
            assert_eq!(parse(text).escape, '\\', "{text:?}");
        }
        assert_eq!(
            fails("# escape=\\\n# escape=`\nFROM x\n"),
            (
                2,
                1,
                "only one `escape` parser directive can be used".into()
            )
        );
        assert_eq!(
            fails("# escape=x\nFROM x\n"),
            (1, 1, "invalid escape `x`: it must be ` or \\".into())
        );
        assert_eq!(parse("\u{feff}# escape=`\r\nFROM x\r\n").escape, '`');
    }

    #[test]
    fn continuations_comments_and_lines() {
        let f = parse(
            "FROM base AS build\n\nRUN apt-get update && \\\n# a comment inside\n    apt-get install -y x \\  \n\n  && true\nCMD [\"/bin/app\", \"-v\"]\n",
        );
        assert_eq!(f.instructions.len(), 3);
        let run = &f.instructions[1];
        assert_eq!((run.line, run.end_line), (3, 7));
        assert_eq!(
            run.command,
            Command::Run(CommandLine::Shell(
                "apt-get update &&     apt-get install -y x   && true".into()
            ))
        );
        assert_eq!(
            run.source,
            "RUN apt-get update &&     apt-get install -y x   && true"
        );
        assert_eq!(
            f.warnings,
            ["line 3: empty continuation line (Docker will refuse these)"]
        );
        assert_eq!(
            f.instructions[0].command,
            Command::From {
                image: "base".into(),
                name: Some("build".into())
            }
        );
        assert_eq!(
            f.instructions[2].command,
            Command::Cmd(CommandLine::Exec(s(&["/bin/app", "-v"])))
        );
        // A continuation at the end of the file ends the instruction.
        assert_eq!(
            commands("FROM x\nRUN a \\"),
            [
                Command::From {
                    image: "x".into(),
                    name: None
                },
                Command::Run(CommandLine::Shell("a".into()))
            ]
        );
    }

    #[test]
    fn instruction_forms() {
        let cmds = commands(concat!(
            "from img\n",
            "copy --from=build --chown=\"1:2\" --link a b /d/\n",
            "ADD [\"a b\", \"/x y/\"]\n",
            "ENV A=1 B=\"two words\" C=x\\ y\n",
            "ENV OLD value with  spaces\n",
            "LABEL \"com.example\"=v\n",
            "ARG V=1 W\n",
            "WORKDIR /srv/$V\n",
            "USER 1000:1000\n",
            "EXPOSE 80/tcp 443\n",
            "VOLUME /a /b\n",
            "VOLUME [\"/c\"]\n",
            "STOPSIGNAL SIGTERM\n",
            "SHELL [\"/bin/bash\", \"-c\"]\n",
            "ENTRYPOINT exec app\n",
            "HEALTHCHECK --interval=5s CMD curl -f http://x/ || exit 1\n",
            "HEALTHCHECK NONE\n",
            "ONBUILD RUN make\n",
            "MAINTAINER someone\n",
        ));
        assert_eq!(
            cmds,
            [
                Command::From {
                    image: "img".into(),
                    name: None
                },
                Command::Copy(s(&["a", "b", "/d/"])),
                Command::Add(s(&["a b", "/x y/"])),
                Command::Env(vec![
                    ("A".into(), "1".into()),
                    ("B".into(), "\"two words\"".into()),
                    ("C".into(), "x\\ y".into())
                ]),
                Command::Env(vec![("OLD".into(), "value with  spaces".into())]),
                Command::Label(vec![("\"com.example\"".into(), "v".into())]),
                Command::Arg(vec![("V".into(), Some("1".into())), ("W".into(), None)]),
                Command::Workdir("/srv/$V".into()),
                Command::User("1000:1000".into()),
                Command::Expose("80/tcp 443".into()),
                Command::Volume(s(&["/a", "/b"])),
                Command::Volume(s(&["/c"])),
                Command::StopSignal("SIGTERM".into()),
                Command::Shell(s(&["/bin/bash", "-c"])),
                Command::Entrypoint(CommandLine::Shell("exec app".into())),
                Command::Healthcheck(Healthcheck::Cmd(CommandLine::Shell(
                    "curl -f http://x/ || exit 1".into()
                ))),
                Command::Healthcheck(Healthcheck::None),
                Command::Onbuild(Box::new(Instruction {
                    line: 18,
                    end_line: 18,
                    source: "RUN make".into(),
                    flags: vec![],
                    command: Command::Run(CommandLine::Shell("make".into())),
                    heredocs: vec![],
                })),
                Command::Maintainer("someone".into()),
            ]
        );
        let f = parse("FROM x\ncopy --from=build --chown=\"1:2\" --link a /d/\n");
        assert_eq!(
            f.instructions[1].flags,
            [
                Flag {
                    name: "from".into(),
                    value: Some("build".into())
                },
                Flag {
                    name: "chown".into(),
                    value: Some("1:2".into())
                },
                Flag {
                    name: "link".into(),
                    value: None
                },
            ]
        );
        // Not JSON (or not an array): the shell form, as Docker reads it.
        assert_eq!(
            commands("RUN [not json\nCMD [\"a\",]\n"),
            [
                Command::Run(CommandLine::Shell("[not json".into())),
                Command::Cmd(CommandLine::Shell("[\"a\",]".into())),
            ]
        );
    }

    #[test]
    fn heredocs_take_the_lines_up_to_their_delimiter() {
        let f = parse(concat!(
            "FROM x\n",
            "RUN <<EOF\n",
            "echo $HOME\n",
            "  indented\n",
            "EOF\n",
            "COPY <<-\"ONE\" <<'TWO' /dst/\n",
            "\tfirst $X\n",
            "\tONE\n",
            "second\n",
            "TWO\n",
            "RUN cat <<<word\n",
        ));
        let run = &f.instructions[1];
        assert_eq!((run.line, run.end_line), (2, 5));
        assert_eq!(
            run.heredocs,
            [Heredoc {
                name: "EOF".into(),
                content: "echo $HOME\n  indented\n".into(),
                expand: true,
                strip_tabs: false
            }]
        );
        let copy = &f.instructions[2];
        assert_eq!(
            copy.heredocs,
            [
                Heredoc {
                    name: "ONE".into(),
                    content: "first $X\n".into(),
                    expand: false,
                    strip_tabs: true
                },
                Heredoc {
                    name: "TWO".into(),
                    content: "second\n".into(),
                    expand: false,
                    strip_tabs: false
                },
            ]
        );
        assert_eq!((copy.line, copy.end_line), (6, 10));
        assert!(f.instructions[3].heredocs.is_empty());
        assert_eq!(
            fails("FROM x\nRUN <<EOF\necho\n"),
            (
                2,
                1,
                "the heredoc `EOF` has no line `EOF` that ends it".into()
            )
        );
    }

    #[test]
    fn errors_name_the_line_and_column() {
        assert_eq!(
            fails("FROM x\n  FOO bar\n"),
            (2, 3, "unknown instruction `FOO`".into())
        );
        assert_eq!(
            fails("FROM x\nCOPY --frm=a b c\n"),
            (2, 6, "unknown flag `--frm` for COPY".into())
        );
        assert_eq!(
            fails("FROM x\nRUN a \\\n  && b\nCOPY \\\n   --nope b c\n"),
            (5, 4, "unknown flag `--nope` for COPY".into())
        );
        assert_eq!(fails("FROM\n"), (1, 5, "FROM needs an argument".into()));
        assert_eq!(
            fails("FROM a b\n"),
            (1, 6, "FROM takes an image and an optional `AS name`".into())
        );
        assert_eq!(
            fails("FROM x\nCMD [\"a\", 1]\n"),
            (2, 5, "a JSON array here must hold only strings".into())
        );
        assert_eq!(
            fails("FROM x\nSHELL /bin/sh\n"),
            (
                2,
                7,
                "SHELL takes a JSON array: SHELL [\"executable\", \"parameters\"]".into()
            )
        );
        assert_eq!(
            fails("FROM x\nENV A=1 B\n"),
            (2, 9, "`B` has no `=`: ENV takes key=value pairs".into())
        );
        assert_eq!(
            fails("FROM x\nENV A\n"),
            (2, 5, "ENV needs a value: ENV key=value".into())
        );
        assert_eq!(
            fails("FROM x\nCOPY a\n"),
            (
                2,
                6,
                "COPY needs at least one source and a destination".into()
            )
        );
        assert_eq!(
            fails("FROM x\nONBUILD FROM y\n"),
            (2, 9, "FROM is not allowed as an ONBUILD trigger".into())
        );
        assert_eq!(fails("FROM x\nRUN a\0b\n"), (2, 6, "a NUL byte".into()));
        assert_eq!(
            fails("FROM x\n\u{1b}[31m\n"),
            (2, 1, "unknown instruction `\\u{1b}[31m`".into())
        );
    }
}
