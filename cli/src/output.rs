//! What the commands print: stdout, JSON, the shapes of a listing line, and
//! a progress bar on stderr when it is a terminal.

use std::fmt;
use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use layerstack::{Error, FileType, Metadata, Operation, Result, major, minor};

/// Text for people, or JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Standard output, buffered. A closed pipe (`layerstack ls ... | head`)
/// ends the program quietly and successfully, as the reader wanted no more.
pub struct Out {
    w: BufWriter<StdoutLock<'static>>,
}

impl Out {
    pub fn stdout() -> Out {
        Out {
            w: BufWriter::new(io::stdout().lock()),
        }
    }

    fn check(r: io::Result<()>) -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
            Err(e) => Err(Error::from_io(&e, Operation::Write, "<stdout>")),
        }
    }

    /// Prints one line.
    pub fn line(&mut self, args: fmt::Arguments<'_>) -> Result<()> {
        Out::check(
            self.w
                .write_fmt(args)
                .and_then(|()| self.w.write_all(b"\n")),
        )
    }

    /// Prints bytes as they are.
    pub fn bytes(&mut self, data: &[u8]) -> Result<()> {
        Out::check(self.w.write_all(data))
    }

    /// Prints `value` as pretty JSON and a newline.
    pub fn json(&mut self, value: &serde_json::Value) -> Result<()> {
        let text = serde_json::to_string_pretty(value).expect("a Value always serialises");
        self.line(format_args!("{text}"))
    }

    pub fn flush(&mut self) -> Result<()> {
        Out::check(self.w.flush())
    }
}

/// Prints a line to an [`Out`]: `outln!(out, "{x}")?`.
#[macro_export]
macro_rules! outln {
    ($out:expr) => { $out.line(format_args!("")) };
    ($out:expr, $($arg:tt)*) => { $out.line(format_args!($($arg)*)) };
}

/// A progress bar or spinner on stderr, drawn only when stderr is a
/// terminal; otherwise it does nothing. Cleared when dropped.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    fn enabled() -> bool {
        io::stderr().is_terminal()
    }

    /// A spinner with a message, for work of unknown length.
    pub fn spinner(message: impl Into<String>) -> Progress {
        if !Progress::enabled() {
            return Progress(None);
        }
        let bar = ProgressBar::new_spinner().with_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress(Some(bar))
    }

    /// A bar over `total` bytes.
    pub fn bytes(total: u64, message: impl Into<String>) -> Progress {
        if !Progress::enabled() {
            return Progress(None);
        }
        let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::new(total)
            .with_style(style)
            .with_message(message.into());
        Progress(Some(bar))
    }

    /// Moves the bar to `done` bytes.
    pub fn set_position(&self, done: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(done);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// `drwxr-xr-x`, as `ls -l` prints a mode.
pub fn mode_string(meta: &Metadata) -> String {
    let m = meta.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special = |exec: bool, set: bool, lower: char, upper: char| match (exec, set) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(meta.file_type.letter());
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(m & 0o100 != 0, m & 0o4000 != 0, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(special(m & 0o010 != 0, m & 0o2000 != 0, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(special(m & 0o001 != 0, m & 0o1000 != 0, 't', 'T'));
    s
}

/// The size column: bytes, or `major,minor` for a device.
pub fn size_string(meta: &Metadata) -> String {
    match meta.file_type {
        FileType::CharDevice | FileType::BlockDevice => {
            format!("{},{}", major(meta.rdev), minor(meta.rdev))
        }
        _ => meta.size.to_string(),
    }
}

/// The name of a type in JSON.
pub fn type_name(file_type: FileType) -> &'static str {
    match file_type {
        FileType::File => "file",
        FileType::Dir => "dir",
        FileType::Symlink => "symlink",
        FileType::CharDevice => "char_device",
        FileType::BlockDevice => "block_device",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
    }
}

/// `1,234,567`: digits in groups of three, for byte counts people read.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_numbers_print_as_ls_and_people_write_them() {
        let meta = |t: FileType, mode: u32| Metadata::new(t).with_mode(mode);
        assert_eq!(mode_string(&meta(FileType::Dir, 0o755)), "drwxr-xr-x");
        assert_eq!(mode_string(&meta(FileType::File, 0o4755)), "-rwsr-xr-x");
        assert_eq!(mode_string(&meta(FileType::File, 0o2644)), "-rw-r-Sr--");
        assert_eq!(mode_string(&meta(FileType::Dir, 0o1777)), "drwxrwxrwt");
        assert_eq!(mode_string(&meta(FileType::Symlink, 0o777)), "lrwxrwxrwx");
        let dev = meta(FileType::CharDevice, 0o666).with_rdev(layerstack::makedev(1, 3));
        assert_eq!(size_string(&dev), "1,3");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}

/// A name for a line of text, as `ls -b` prints it: a backslash, a
/// control character or any other character that is not printable is
/// escaped (`\n`, `\t`, `\\`, else `\ooo` per byte), and so is every byte
/// that is not part of valid UTF-8 (a Latin-1 `caf\xe9` is `caf\351`), so
/// that a name can neither forge a line of a listing nor send escape
/// sequences to the terminal, and two names never print alike. JSON
/// output keeps names exact ([`json_name`]).
pub fn escape_name(name: impl AsRef<[u8]>) -> String {
    layerstack::escape_name(name.as_ref())
}

/// Sets `key` of a JSON object to a name given as bytes: the name itself
/// when it is UTF-8 (as every document had it before names were bytes);
/// else [`escape_name`]'s text, and the exact bytes as an array of numbers
/// under `<key>_bytes`, the one place a reader finds such a name whole.
pub fn json_name(object: &mut serde_json::Value, key: &str, name: &[u8]) {
    match std::str::from_utf8(name) {
        Ok(text) => object[key] = serde_json::json!(text),
        Err(_) => {
            object[key] = serde_json::json!(escape_name(name));
            object[format!("{key}_bytes")] = serde_json::json!(name);
        }
    }
}

/// The bytes of `/<path>`, as listings show a path of an image.
pub fn rooted(path: &layerstack::LayerPath) -> Vec<u8> {
    [b"/", path.as_bytes()].concat()
}

/// A path of the command line as the bytes the image's paths are (any
/// bytes: Linux names are).
pub fn image_path(arg: &std::ffi::OsStr) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    arg.as_bytes()
}

/// A message for a line of text (an error): control and other
/// non-printable characters escaped as in [`escape_name`]; backslashes are
/// kept (messages already spell escaped bytes with them).
pub fn escape_message(message: &str) -> String {
    escape(message, false)
}

/// The library's escaping (one rule for the crate and the tool).
fn escape(s: &str, backslash: bool) -> String {
    if backslash {
        escape_name(s)
    } else {
        layerstack::path::escape_message(s.as_bytes())
    }
}

#[cfg(test)]
mod escape_tests {
    use super::*;

    #[test]
    fn names_are_escaped_as_ls_b_escapes_them() {
        assert_eq!(escape_name("plain/name.txt"), "plain/name.txt");
        assert_eq!(escape_name("a\nb"), "a\\nb");
        assert_eq!(escape_name("\x1b[31mred"), "\\033[31mred");
        assert_eq!(escape_name("back\\slash"), "back\\\\slash");
        assert_eq!(escape_name("caf\u{e9}"), "caf\u{e9}");
        assert_eq!(escape_name("\u{202e}txt.exe"), "\\342\\200\\256txt.exe");
        assert_eq!(escape_name("nul\0"), "nul\\000");
    }

    #[test]
    fn json_names_are_exact_and_give_bytes_only_when_not_utf8() {
        let mut v = serde_json::json!({});
        json_name(&mut v, "path", "/caf\u{e9}\n".as_bytes());
        assert_eq!(v, serde_json::json!({"path": "/caf\u{e9}\n"}));
        let mut v = serde_json::json!({});
        json_name(&mut v, "path", b"/caf\xe9");
        assert_eq!(
            v,
            serde_json::json!({"path": "/caf\\351", "path_bytes": [47, 99, 97, 102, 233]})
        );
    }

    #[test]
    fn messages_keep_their_backslashes() {
        assert_eq!(
            escape_message("failed: `\\x1b` and\n\x07"),
            "failed: `\\x1b` and\\n\\007"
        );
    }
}
