//! Words of a Dockerfile line as Docker's shell lexer reads them: quotes
//! removed, escapes applied, `$VAR` and `${VAR…}` replaced from the build's
//! variables (`ARG` and `ENV`). This is BuildKit's `ProcessWord`, the step
//! between the parsed line and what an instruction uses (a `COPY` source, an
//! `ENV` value, a `WORKDIR`): `RUN`, `CMD`, `ENTRYPOINT`, `SHELL` and
//! `HEALTHCHECK` are not expanded here (a shell expands them at run time).
//!
//! The rules, as Docker has them:
//! - `'…'` is literal; `"…"` expands `$` and takes the escape character
//!   before `"`, `$` or itself as that character (other escapes stay);
//! - outside quotes the escape character makes the next character literal
//!   (and disappears; a final lone escape is dropped);
//! - `$NAME` takes letters, digits and `_` (a leading digit is a name of one
//!   digit); `$` before anything else is a literal `$`;
//! - `${NAME}`, `${NAME:-word}` (word if unset or empty), `${NAME-word}`
//!   (word if unset), `${NAME:+word}` (word if set and not empty),
//!   `${NAME+word}` (word if set), `${NAME:?message}` and `${NAME?message}`
//!   (an error if unset, or empty with `:`); `word` is itself expanded;
//! - an unset variable is the empty string.

use std::fmt;

/// Where a word's variables come from: the name's value, `None` if unset.
pub trait Vars {
    /// The value of `name`, if it is set.
    fn get(&self, name: &str) -> Option<&str>;
}

impl Vars for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        // The last definition wins, as for `ENV` lines.
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Vars for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Vars::get(self.as_slice(), name)
    }
}

impl Vars for std::collections::BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        std::collections::BTreeMap::get(self, name).map(String::as_str)
    }
}

/// A word that cannot be expanded: an unclosed quote or brace, a bad
/// substitution, or a `${NAME?message}` whose variable is unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordError {
    /// The byte offset in the word where the problem starts.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for WordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WordError {}

/// Expands one word: quotes removed, escapes applied, variables replaced.
/// Whitespace in the result is kept (an `ENV` value may hold spaces).
///
/// ```
/// use layerstack::oci::build::expand_word;
///
/// let vars = vec![("NAME".to_owned(), "app".to_owned())];
/// assert_eq!(expand_word(r#"/srv/$NAME/"${MISSING:-x y}""#, '\\', &vars)?, "/srv/app/x y");
/// assert_eq!(expand_word(r"'$NAME' \$NAME", '\\', &vars)?, "$NAME $NAME");
/// # Ok::<(), layerstack::oci::build::WordError>(())
/// ```
///
/// # Errors
/// A [`WordError`] for an unclosed quote or `${`, an unknown modifier, or a
/// `${NAME?message}` whose variable is unset.
pub fn expand_word(
    word: &str,
    escape: char,
    vars: &(impl Vars + ?Sized),
) -> Result<String, WordError> {
    let mut lexer = Lexer {
        chars: word.char_indices().collect(),
        pos: 0,
        escape,
        vars,
        end: word.len(),
    };
    let (text, _) = lexer.run(None)?;
    Ok(text)
}

/// Expands a line into words: as [`expand_word`], then split at whitespace
/// that was neither quoted nor escaped (Docker's `ProcessWords`, used by
/// `EXPOSE` and the shell form of `VOLUME`). A variable's value is split
/// too.
///
/// # Errors
/// As [`expand_word`].
pub fn expand_words(
    line: &str,
    escape: char,
    vars: &(impl Vars + ?Sized),
) -> Result<Vec<String>, WordError> {
    let mut lexer = Lexer {
        chars: line.char_indices().collect(),
        pos: 0,
        escape,
        vars,
        end: line.len(),
    };
    let (_, words) = lexer.run(None)?;
    Ok(words.finish())
}

struct Lexer<'a, V: Vars + ?Sized> {
    chars: Vec<(usize, char)>,
    pos: usize,
    escape: char,
    vars: &'a V,
    end: usize,
}

/// Words being built: a word ends at whitespace that came from the line or
/// from a variable's value, never at quoted or escaped whitespace.
#[derive(Default)]
struct Words {
    words: Vec<String>,
    word: String,
    in_word: bool,
}

impl Words {
    fn split_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.raw_char(c);
        }
    }

    fn raw_char(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }

    fn raw_str(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn split_str(&mut self, s: &str) {
        for c in s.chars() {
            self.split_char(c);
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.in_word {
            self.words.push(self.word);
        }
        self.words
    }
}

impl<V: Vars + ?Sized> Lexer<'_, V> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn offset(&self) -> usize {
        self.chars.get(self.pos).map_or(self.end, |&(o, _)| o)
    }

    fn error(&self, offset: usize, message: impl Into<String>) -> WordError {
        WordError {
            offset,
            message: message.into(),
        }
    }

    /// Reads until `stop` (consumed) or the end; the text and its words.
    fn run(&mut self, stop: Option<char>) -> Result<(String, Words), WordError> {
        let start = self.offset();
        let mut text = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((text, words));
            }
            match c {
                '\'' => {
                    let s = self.single_quoted()?;
                    words.raw_str(&s);
                    text.push_str(&s);
                }
                '"' => {
                    let s = self.double_quoted()?;
                    words.raw_str(&s);
                    text.push_str(&s);
                }
                '$' => {
                    let s = self.dollar()?;
                    words.split_str(&s);
                    text.push_str(&s);
                }
                c if c == self.escape => {
                    self.pos += 1;
                    let Some(next) = self.next() else { break };
                    words.raw_char(next);
                    text.push(next);
                }
                c => {
                    self.pos += 1;
                    words.split_char(c);
                    text.push(c);
                }
            }
        }
        match stop {
            Some(stop) => Err(self.error(start, format!("missing `{stop}`"))),
            None => Ok((text, words)),
        }
    }

    fn single_quoted(&mut self) -> Result<String, WordError> {
        let start = self.offset();
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.next() {
                Some('\'') => return Ok(s),
                Some(c) => s.push(c),
                None => return Err(self.error(start, "unclosed single quote")),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, WordError> {
        let start = self.offset();
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error(start, "unclosed double quote")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some('$') => s.push_str(&self.dollar()?),
                Some(c) => {
                    self.pos += 1;
                    if c == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                s.push(n);
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    s.push(c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        if let Some(c) = self.peek()
            && c.is_ascii_digit()
        {
            self.pos += 1;
            name.push(c);
            return name;
        }
        while let Some(c) = self.peek() {
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            self.pos += 1;
            name.push(c);
        }
        name
    }

    fn value(&self, name: &str) -> Option<String> {
        self.vars.get(name).map(str::to_owned)
    }

    fn dollar(&mut self) -> Result<String, WordError> {
        let start = self.offset();
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(self.value(&name).unwrap_or_default());
        }
        self.pos += 1;
        let name = self.name();
        if name.is_empty() {
            return Err(self.error(start, "bad substitution: no variable name after `${`"));
        }
        let colon = self.peek() == Some(':');
        if colon {
            self.pos += 1;
        }
        let modifier = self.next();
        let value = self.value(&name);
        let set = match (&value, colon) {
            (Some(v), true) => !v.is_empty(),
            (Some(_), false) => true,
            (None, _) => false,
        };
        match modifier {
            Some('}') if !colon => Ok(value.unwrap_or_default()),
            Some('-') => {
                let (word, _) = self.run(Some('}'))?;
                Ok(if set { value.unwrap_or_default() } else { word })
            }
            Some('+') => {
                let (word, _) = self.run(Some('}'))?;
                Ok(if set { word } else { String::new() })
            }
            Some('?') => {
                let (word, _) = self.run(Some('}'))?;
                if set {
                    Ok(value.unwrap_or_default())
                } else if word.is_empty() {
                    Err(self.error(start, format!("{name}: is not set")))
                } else {
                    Err(self.error(start, format!("{name}: {word}")))
                }
            }
            None => Err(self.error(start, "missing `}`")),
            Some(other) => Err(self.error(
                start,
                format!("bad substitution: unsupported modifier `{other}` in `${{{name}…}}`"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(String, String)> {
        [
            ("A", "apple"),
            ("EMPTY", ""),
            ("SPACED", "x  y"),
            ("A_1", "a1"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    fn ex(word: &str) -> String {
        expand_word(word, '\\', &vars()).unwrap()
    }

    #[test]
    fn plain_variables_and_their_names() {
        assert_eq!(ex("$A"), "apple");
        assert_eq!(ex("${A}"), "apple");
        assert_eq!(ex("$A_1/$A-x"), "a1/apple-x");
        assert_eq!(ex("${A}_1"), "apple_1");
        assert_eq!(ex("$MISSING."), ".");
        assert_eq!(ex("$1x"), "x");
        assert_eq!(ex("cost: $ 5 $"), "cost: $ 5 $");
        assert_eq!(ex("$/"), "$/");
    }

    #[test]
    fn modifiers_tell_unset_from_empty() {
        assert_eq!(ex("${A:-d}"), "apple");
        assert_eq!(ex("${EMPTY:-d}"), "d");
        assert_eq!(ex("${EMPTY-d}"), "");
        assert_eq!(ex("${MISSING-d}"), "d");
        assert_eq!(ex("${A:+alt}"), "alt");
        assert_eq!(ex("${EMPTY:+alt}"), "");
        assert_eq!(ex("${EMPTY+alt}"), "alt");
        assert_eq!(ex("${MISSING+alt}"), "");
        assert_eq!(ex("${MISSING:-$A/${EMPTY:-z}}"), "apple/z");
        assert_eq!(ex("${A:?}"), "apple");
        let err = expand_word("x${MISSING:?say why}", '\\', &vars()).unwrap_err();
        assert_eq!((err.offset, err.message.as_str()), (1, "MISSING: say why"));
        let err = expand_word("${EMPTY:?}", '\\', &vars()).unwrap_err();
        assert_eq!(err.message, "EMPTY: is not set");
        assert_eq!(expand_word("${EMPTY?}", '\\', &vars()).unwrap(), "");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(ex(r#""$A b""#), "apple b");
        assert_eq!(ex("'$A b'"), "$A b");
        assert_eq!(ex(r"\$A"), "$A");
        assert_eq!(ex(r#""\$A \"q\" \\ \n""#), r#"$A "q" \ \n"#);
        assert_eq!(ex(r"a\ b\"), "a b");
        assert_eq!(ex(r#"it's"#.replace('\'', "\\'").as_str()), "it's");
        assert_eq!(ex(r#"a"b"'c'd"#), "abcd");
        // Another escape character: the backslash is then an ordinary one.
        assert_eq!(
            expand_word(r"C:\dir `$A", '`', &vars()).unwrap(),
            r"C:\dir $A"
        );
    }

    #[test]
    fn words_split_at_unquoted_whitespace_and_in_values() {
        let words = |line: &str| expand_words(line, '\\', &vars()).unwrap();
        assert_eq!(words("80/tcp  $A"), ["80/tcp", "apple"]);
        assert_eq!(words(r#""a b" c\ d"#), ["a b", "c d"]);
        assert_eq!(words("$SPACED"), ["x", "y"]);
        assert_eq!(words(r#""$SPACED""#), ["x  y"]);
        assert_eq!(words("  "), Vec::<String>::new());
    }

    #[test]
    fn malformed_words_are_errors_with_offsets() {
        for (word, offset, message) in [
            ("a'b", 1, "unclosed single quote"),
            ("a\"b", 1, "unclosed double quote"),
            ("x${A", 1, "missing `}`"),
            ("x${A:-b", 6, "missing `}`"),
            ("${}", 0, "bad substitution: no variable name after `${`"),
            (
                "${A:x}",
                0,
                "bad substitution: unsupported modifier `x` in `${A…}`",
            ),
            (
                "${A:}",
                0,
                "bad substitution: unsupported modifier `}` in `${A…}`",
            ),
        ] {
            let err = expand_word(word, '\\', &vars()).unwrap_err();
            assert_eq!(
                (err.offset, err.message.as_str()),
                (offset, message),
                "{word}"
            );
        }
    }
}
