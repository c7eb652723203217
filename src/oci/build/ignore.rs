//! `.dockerignore` and `COPY` wildcards, with Docker's rules.
//!
//! [`Ignore`] reads a `.dockerignore` as Docker's `dockerignore.ReadAll`
//! does (lines starting with `#` are comments; each pattern is trimmed,
//! cleaned as a path, made relative; `!` makes an exception) and decides
//! what the build context leaves out as Docker's `patternmatcher` does: the
//! last pattern that matches a path, or one of its parent directories,
//! wins; `*` and `?` stay within one name, `**` spans directories, `[…]`
//! is a class.
//!
//! [`glob_match`] is Go's `filepath.Match`, the rule of `COPY` sources with
//! wildcards: `*` any run of bytes without `/`, `?` one character but `/`,
//! `[…]` and `[^…]` classes with ranges, `\` quoting the next character.
//!
//! Paths are bytes (a context may hold names that are not UTF-8), relative
//! to the context, separated by `/`, already clean.
//!
//! # Limitations
//! A malformed pattern (an unclosed `[`, a `\` at the end, an empty class or
//! range) is an error wherever it is; Go reports it only when matching
//! reaches it. In `.dockerignore` classes and `\` escapes follow the glob
//! rules above, where Docker hands them to Go's regular expressions (which
//! read `\d` as a digit and `[[:alpha:]]` as a POSIX class).

use std::fmt;

/// A malformed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPattern {
    /// The pattern.
    pub pattern: String,
    /// The line of the `.dockerignore` (1-based), if it came from one.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for BadPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(
            f,
            "bad pattern `{}`: {}",
            self.pattern.escape_debug(),
            self.message
        )
    }
}

impl std::error::Error for BadPattern {}

/// One piece of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// These bytes.
    Literal(Vec<u8>),
    /// One character, not `/`.
    One,
    /// Any run of characters without `/`.
    Star,
    /// Any run of characters but a newline (`**` at the end).
    Any,
    /// Nothing, or anything ending in `/` (`**/` inside).
    Dirs,
    /// A class: negated, ranges.
    Class(bool, Vec<(char, char)>),
}

/// Compiles a glob into tokens; `double_star` makes `**` span directories
/// (`.dockerignore`), else `**` is `*` (Go's `filepath.Match`).
fn compile(pattern: &str, double_star: bool) -> Result<Vec<Token>, String> {
    let mut tokens: Vec<Token> = Vec::new();
    let literal = |tokens: &mut Vec<Token>, c: char| {
        let mut buf = [0u8; 4];
        let bytes = c.encode_utf8(&mut buf).as_bytes();
        if let Some(Token::Literal(l)) = tokens.last_mut() {
            l.extend_from_slice(bytes);
        } else {
            tokens.push(Token::Literal(bytes.to_vec()));
        }
    };
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if double_star && chars.peek() == Some(&'*') {
                    chars.next();
                    if chars.peek() == Some(&'/') {
                        chars.next();
                    }
                    tokens.push(if chars.peek().is_none() {
                        Token::Any
                    } else {
                        Token::Dirs
                    });
                } else if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
            }
            '?' => tokens.push(Token::One),
            '\\' => match chars.next() {
                Some(n) => literal(&mut tokens, n),
                None => return Err("a `\\` at the end quotes nothing".into()),
            },
            '[' => {
                let negated = chars.peek() == Some(&'^');
                if negated {
                    chars.next();
                }
                let mut ranges = Vec::new();
                loop {
                    match chars.peek() {
                        Some(']') if !ranges.is_empty() => {
                            chars.next();
                            break;
                        }
                        None => return Err("an unclosed `[`".into()),
                        _ => {}
                    }
                    let lo = class_char(&mut chars)?;
                    let hi = if chars.peek() == Some(&'-') {
                        chars.next();
                        class_char(&mut chars)?
                    } else {
                        lo
                    };
                    ranges.push((lo, hi));
                }
                tokens.push(Token::Class(negated, ranges));
            }
            c => literal(&mut tokens, c),
        }
    }
    Ok(tokens)
}

fn class_char(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    match chars.next() {
        None => Err("an unclosed `[`".into()),
        Some('-' | ']') => Err("a class or range is empty or starts with `-`".into()),
        Some('\\') => chars.next().ok_or_else(|| "an unclosed `[`".into()),
        Some(c) => Ok(c),
    }
}

/// The character at the start of `s` (an invalid byte is one unit, as Go
/// decodes it) and its length.
fn unit(s: &[u8]) -> (Option<char>, usize) {
    let len = match s[0] {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    };
    match s.get(..len).map(std::str::from_utf8) {
        Some(Ok(text)) => (text.chars().next(), len),
        _ => (None, 1),
    }
}

fn matches(tokens: &[Token], s: &[u8]) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match token {
        Token::Literal(l) => s.starts_with(l) && matches(rest, &s[l.len()..]),
        Token::One => !s.is_empty() && s[0] != b'/' && matches(rest, &s[unit(s).1..]),
        Token::Class(negated, ranges) => {
            if s.is_empty() {
                return false;
            }
            let (c, len) = unit(s);
            let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
            let hit = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
            hit != *negated && matches(rest, &s[len..])
        }
        Token::Star | Token::Any => {
            let stop = if *token == Token::Star { b'/' } else { b'\n' };
            let mut i = 0;
            loop {
                if matches(rest, &s[i..]) {
                    return true;
                }
                if i == s.len() || s[i] == stop {
                    return false;
                }
                i += unit(&s[i..]).1;
            }
        }
        Token::Dirs => {
            if matches(rest, s) {
                return true;
            }
            // Anything (but a newline) up to and including a `/`.
            let mut i = 0;
            while i < s.len() && s[i] != b'\n' {
                if s[i] == b'/' && matches(rest, &s[i + 1..]) {
                    return true;
                }
                i += unit(&s[i..]).1;
            }
            false
        }
    }
}

/// Go's `filepath.Match`: whether `name` matches the glob `pattern` (the
/// rule of `COPY` sources with wildcards).
///
/// ```
/// use layerstack::oci::build::glob_match;
///
/// assert!(glob_match("*.go", b"main.go")?);
/// assert!(!glob_match("*.go", b"cmd/main.go")?);
/// assert!(glob_match("caf[e\u{e9}]", "caf\u{e9}".as_bytes())?);
/// assert!(glob_match("[^a]?", b"b\xe9")?);
/// # Ok::<(), layerstack::oci::build::BadPattern>(())
/// ```
///
/// # Errors
/// A [`BadPattern`] for an unclosed `[`, a `\` at the end, or an empty
/// class or range.
pub fn glob_match(pattern: &str, name: &[u8]) -> Result<bool, BadPattern> {
    let tokens = compile(pattern, false).map_err(|message| BadPattern {
        pattern: pattern.to_owned(),
        line: None,
        message,
    })?;
    Ok(matches(&tokens, name))
}

/// How a `.dockerignore` pattern matches, as Docker's `patternmatcher`
/// decides it.
#[derive(Debug, Clone)]
enum Kind {
    /// The whole path equals these bytes (the pattern, escapes applied).
    Exact(Vec<u8>),
    /// The path starts with the pattern's text before a final `**`.
    Prefix(Vec<u8>),
    /// The path ends with the pattern's text after a leading `**`.
    Suffix(Vec<u8>),
    /// The tokens.
    Glob(Vec<Token>),
}

#[derive(Debug, Clone)]
struct Pattern {
    exception: bool,
    kind: Kind,
}

impl Pattern {
    fn new(text: &str, exception: bool) -> Result<Pattern, String> {
        let tokens = compile(text, true)?;
        let plain = tokens.iter().all(|t| matches!(t, Token::Literal(_)));
        let kind = if plain {
            Kind::Exact(
                tokens
                    .iter()
                    .flat_map(|t| match t {
                        Token::Literal(l) => l.clone(),
                        _ => Vec::new(),
                    })
                    .collect(),
            )
        } else if let Some(rest) = text.strip_prefix("**")
            && !rest.contains(['*', '?', '[', ']', '\\'])
        {
            Kind::Suffix(rest.as_bytes().to_vec())
        } else if let Some(head) = text.strip_suffix("**")
            && !head.contains(['*', '?', '[', ']', '\\'])
        {
            Kind::Prefix(head.as_bytes().to_vec())
        } else {
            Kind::Glob(tokens)
        };
        Ok(Pattern { exception, kind })
    }

    fn matches(&self, path: &[u8]) -> bool {
        match &self.kind {
            Kind::Exact(bytes) => path == bytes.as_slice(),
            Kind::Prefix(head) => path.starts_with(head),
            Kind::Suffix(tail) => {
                path.ends_with(tail) || (tail.first() == Some(&b'/') && path == &tail[1..])
            }
            Kind::Glob(tokens) => matches(tokens, path),
        }
    }
}

/// Go's `filepath.Clean` on a `/`-separated path.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// The patterns of a `.dockerignore`.
///
/// ```
/// use layerstack::oci::build::Ignore;
///
/// let ignore = Ignore::parse("# build output\ntarget\n*.log\n!keep.log\n**/.git\n")?;
/// assert!(ignore.is_ignored(b"target/debug/app"));
/// assert!(ignore.is_ignored(b"err.log"));
/// assert!(!ignore.is_ignored(b"keep.log"));
/// assert!(ignore.is_ignored(b"vendor/lib/.git/HEAD"));
/// assert!(!ignore.is_ignored(b"src/main.rs"));
/// # Ok::<(), layerstack::oci::build::BadPattern>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

impl Ignore {
    /// Reads a `.dockerignore`.
    ///
    /// # Errors
    /// A [`BadPattern`] naming its line, for a malformed pattern or a lone
    /// `!`.
    pub fn parse(text: &str) -> Result<Ignore, BadPattern> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
            }
            let bad = |message: String| BadPattern {
                pattern: line.trim().to_owned(),
                line: Some(i + 1),
                message,
            };
            if pattern.is_empty() {
                return Err(bad("`!` needs a pattern".into()));
            }
            let mut cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            patterns.push(Pattern::new(&cleaned, exception).map_err(bad)?);
        }
        Ok(Ignore { patterns })
    }

    /// Whether the context leaves `path` out: the last pattern that
    /// matches it or one of its parent directories decides (an exception
    /// keeps it).
    #[must_use]
    pub fn is_ignored(&self, path: &[u8]) -> bool {
        // Its parent directories, shortest first.
        let parents: Vec<&[u8]> = path
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'/')
            .map(|(i, _)| &path[..i])
            .collect();
        let mut ignored = false;
        for pattern in &self.patterns {
            if pattern.exception != ignored {
                continue;
            }
            if pattern.matches(path) || parents.iter().any(|p| pattern.matches(p)) {
                ignored = !pattern.exception;
            }
        }
        ignored
    }

    /// Whether any pattern is an exception (`!`): then a directory that is
    /// left out may still hold something kept, and must be walked.
    #[must_use]
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_as_go_matches_them() {
        for (pattern, name, want) in [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*", "a/b", false),
            ("*c", "abc", true),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abe", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a\u{e9}b", true),
            ("a?b", "a/b", false),
            ("[\\]a]", "]", true),
            ("*x", "xxx", true),
        ] {
            assert_eq!(
                glob_match(pattern, name.as_bytes()),
                Ok(want),
                "{pattern} {name}"
            );
        }
        // One byte that is not UTF-8 is one character.
        assert_eq!(glob_match("caf?", b"caf\xe9"), Ok(true));
        assert_eq!(glob_match("caf??", b"caf\xe9"), Ok(false));
        for bad in ["[", "a[", "[]", "[a-", "\\", "[-]", "[^]"] {
            assert!(glob_match(bad, b"a").is_err(), "{bad}");
        }
    }

    #[test]
    fn clean_as_go_cleans() {
        for (path, want) in [
            ("", "."),
            ("a//b/./c/", "a/b/c"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("./", "."),
            ("/", "/"),
        ] {
            assert_eq!(clean(path), want, "{path}");
        }
    }

    #[test]
    fn dockerignore_rules() {
        let ignore = Ignore::parse(concat!(
            "\u{feff}# comment\n",
            "  # not a comment\n",
            "/abs/dir/\n",
            "docs/*.md\n",
            "!docs/README.md\n",
            "**/*.tmp\n",
            "build/**\n",
            "**.bak\n",
            "a/**/z\n",
            "\n",
            "   \n",
        ))
        .unwrap();
        for (path, want) in [
            ("abs/dir", true),
            ("abs/dir/deep/file", true),
            ("abs", false),
            ("docs/guide.md", true),
            ("docs/README.md", false),
            ("docs/sub/x.md", false),
            ("x.tmp", true),
            ("a/b/c.tmp", true),
            ("build", false),
            ("build/out", true),
            ("file.bak", true),
            ("dir/file.bak", true),
            ("a/z", true),
            ("a/b/c/z", true),
            ("a/zz", false),
            ("# not a comment", true),
        ] {
            assert_eq!(ignore.is_ignored(path.as_bytes()), want, "{path}");
        }
        assert!(ignore.has_exceptions());
        assert_eq!(
            Ignore::parse("ok\n!\n").unwrap_err().to_string(),
            "line 2: bad pattern `!`: `!` needs a pattern"
        );
        assert_eq!(
            Ignore::parse("a[\n").unwrap_err().to_string(),
            "line 1: bad pattern `a[`: an unclosed `[`"
        );
    }
}
