//! The Dockerfile parser and word expansion against buildah's own,
//! `openshift/imagebuilder` (Debian's source package
//! `golang-github-openshift-imagebuilder-dev`, the version buildah 1.28
//! builds with): both read a corpus of Dockerfiles and must agree
//! instruction by instruction on the lines, the joined text, the flags and
//! the arguments; both expand a corpus of words and must agree on the
//! result.
//!
//! And the rules of the build context against Docker's own code, packaged
//! in Debian beside it: `.dockerignore` (BuildKit's `dockerignore.ReadAll`
//! and `moby/patternmatcher`) and `COPY` wildcards (Go's `filepath.Match`),
//! on names that are not UTF-8 too.
//!
//! The corpus keeps to what both implement. Left out, each a documented
//! difference: heredocs and `${VAR-x}`/`${VAR+x}`/`${VAR?x}` (newer Docker,
//! which imagebuilder lacks), unknown instructions (imagebuilder skips
//! them, we refuse them as Docker does), and the escape directive inside
//! words (imagebuilder's word lexer always uses `\`).
//!
//! The peer (`tests/dockerfile_parser/main.go`) is built offline in GOPATH
//! mode against the packaged source. Without `go` or the package the test
//! prints `SKIP` and passes, unless `LAYERSTACK_REQUIRE_TOOLS` is set.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use layerstack::oci::build::{
    Command, CommandLine, Dockerfile, Healthcheck, Ignore, expand_word, glob_match,
};
use serde_json::Value;

use crate::support::tools::{Scratch, go_build_with};

const IMAGEBUILDER: &str = "/usr/share/gocode/src/github.com/openshift/imagebuilder";

/// Builds the peer; `None` (after a SKIP line) without `go` or the source.
fn peer(test: &str) -> Option<PathBuf> {
    let go = Process::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = if !go {
        Some("`go` is not installed (apt-get install golang-go)")
    } else if !Path::new(IMAGEBUILDER).is_dir() {
        Some(
            "buildah's parser source is not installed (apt-get install golang-github-openshift-imagebuilder-dev)",
        )
    } else {
        None
    };
    if let Some(why) = missing {
        assert!(
            std::env::var_os("LAYERSTACK_REQUIRE_TOOLS").is_none(),
            "{test}: {why}, and LAYERSTACK_REQUIRE_TOOLS is set"
        );
        eprintln!("SKIP {test}: {why}");
        return None;
    }
    Some(go_build_with("dockerfile_parser", &["/usr/share/gocode"]))
}

/// Dockerfiles both parsers read alike.
const CORPUS: &[&str] = &[
    "FROM scratch\n",
    "from debian:12 as build\nrun make\n",
    "FROM --platform=linux/amd64 base AS b\nCOPY --from=b --chown=1:2 a b /dst/\n",
    "FROM x\nRUN apt-get update && \\\n    apt-get install -y curl \\\n    && rm -rf /var/lib/apt/lists/*\n",
    "FROM x\nRUN a \\\n# a comment between\n  b \\   \n\tc\n",
    "# escape=`\nFROM x\nRUN dir `\n  c:\\\nCOPY a\\b c\\d\n",
    "#escape = `\nFROM x\nRUN a \\\nRUN b\n",
    "# comment first\n# escape=`\nFROM x\nRUN a \\\n  b\n",
    "FROM x\nCMD [\"/bin/app\", \"--flag\", \"a b\"]\nENTRYPOINT [\"tini\", \"--\"]\n",
    "FROM x\nCMD [not json\nRUN [\"a\",]\nENTRYPOINT exec app \"$@\"\n",
    "FROM x\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\n",
    "FROM x\nCOPY [\"a b\", \"c\", \"/d e/\"]\nADD src/ /app/\nADD --chown=app:app x.tar /\n",
    "FROM x\nENV A=1 B=\"two words\" C=x\\ y D='single'\n",
    "FROM x\nENV OLD value with  spaces\nENV  PATH=/usr/local/bin:$PATH\n",
    "FROM x\nLABEL \"com.example.vendor\"=\"ACME\" version=1.0 description=\"a \\\"quoted\\\" one\"\n",
    "FROM x\nLABEL multi=\"line \\\n  continued\"\n",
    "ARG BASE=debian\nFROM $BASE\nARG V=1 W\nARG X=\"q u\"\n",
    "FROM x\nWORKDIR /srv/app\nUSER 1000:1000\nSTOPSIGNAL SIGTERM\nMAINTAINER Some One <one@example.org>\n",
    "FROM x\nEXPOSE 80/tcp 443  8080/udp\nVOLUME /a /b\nVOLUME [\"/c\", \"/d\"]\n",
    "FROM x\nHEALTHCHECK --interval=5s --retries=3 CMD curl -f http://localhost/ || exit 1\nHEALTHCHECK CMD [\"true\"]\nHEALTHCHECK NONE\n",
    "FROM x\nONBUILD RUN make\nONBUILD COPY --chown=1:1 . /src\n",
    "FROM x\r\nRUN a \\\r\n  b\r\nCMD c\r\n",
    "\u{feff}FROM x\nRUN y\n",
    "  FROM x\n\t RUN   spaced    out  \nCOPY\ta\tb\n",
    "FROM x\n\n\n# trailing comment\nRUN a # not a comment\n",
    "FROM x\nRUN echo \"a \\\n\nb\"\n",
    "FROM x\nCOPY --chown=\"1:1\" --chmod=0755 a /b\nRUN --network=none true\n",
    "FROM x AS one\nFROM one AS two\nCOPY --from=one /a /b\n",
];

/// Our parse of a Dockerfile, in the peer's shape.
fn ours(text: &str) -> Value {
    let file = Dockerfile::parse(text).expect("our parser reads the corpus");
    let mut instructions = Vec::new();
    for i in &file.instructions {
        let flags: Vec<String> = i
            .flags
            .iter()
            .map(|f| match &f.value {
                Some(v) => format!("--{}={v}", f.name),
                None => format!("--{}", f.name),
            })
            .collect();
        let line = |l: &CommandLine| match l {
            CommandLine::Exec(v) => (v.clone(), true),
            CommandLine::Shell(s) => (vec![s.clone()], false),
        };
        let pairs = |p: &[(String, String)]| {
            p.iter()
                .flat_map(|(k, v)| [k.clone(), v.clone()])
                .collect::<Vec<_>>()
        };
        let (args, json) = match &i.command {
            Command::From { image, name } => {
                // The peer keeps `AS` as written; take it from the source.
                let words: Vec<String> = i
                    .source
                    .split_whitespace()
                    .skip(1 + i.flags.len())
                    .map(str::to_owned)
                    .collect();
                assert_eq!(words.first(), Some(image));
                assert_eq!(words.get(2), name.as_ref());
                (words, false)
            }
            Command::Run(l) | Command::Cmd(l) | Command::Entrypoint(l) => line(l),
            Command::Shell(v) => (v.clone(), true),
            Command::Copy(v) | Command::Add(v) | Command::Volume(v) => {
                let json = i
                    .source
                    .split_whitespace()
                    .nth(1 + i.flags.len())
                    .is_some_and(|w| w.starts_with('['));
                (v.clone(), json)
            }
            Command::Env(p) | Command::Label(p) => (pairs(p), false),
            Command::Arg(a) => (
                a.iter()
                    .map(|(n, d)| match d {
                        Some(d) => format!("{n}={d}"),
                        None => n.clone(),
                    })
                    .collect(),
                false,
            ),
            Command::Workdir(s)
            | Command::User(s)
            | Command::StopSignal(s)
            | Command::Maintainer(s) => (vec![s.clone()], false),
            Command::Expose(s) => (s.split_whitespace().map(str::to_owned).collect(), false),
            Command::Healthcheck(Healthcheck::None) => (vec!["NONE".to_owned()], false),
            Command::Healthcheck(Healthcheck::Cmd(l)) => {
                let (mut v, json) = line(l);
                v.insert(0, "CMD".to_owned());
                (v, json)
            }
            Command::Onbuild(inner) => (vec![inner.source.clone()], false),
        };
        instructions.push(serde_json::json!({
            "cmd": i.command.keyword().to_ascii_lowercase(),
            "flags": flags,
            "args": args,
            "json": json,
            "start": i.line,
            "end": i.end_line,
            "original": i.source,
        }));
    }
    serde_json::json!({
        "escape": file.escape.to_string(),
        "instructions": instructions,
    })
}

#[test]
fn dockerfiles_parse_as_buildah_parses_them() {
    let Some(peer) = peer("dockerfiles_parse_as_buildah_parses_them") else {
        return;
    };
    let scratch = Scratch::new("dockerfile");
    let files: Vec<PathBuf> = CORPUS
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let path = scratch.path(&format!("Dockerfile.{i}"));
            std::fs::write(&path, text).expect("write a Dockerfile");
            path.into_std_path_buf()
        })
        .collect();
    let out = Process::new(&peer)
        .arg("parse")
        .args(&files)
        .output()
        .expect("run the peer");
    assert!(out.status.success(), "the peer failed");
    let text = String::from_utf8(out.stdout).expect("JSON output");
    let theirs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(theirs.len(), CORPUS.len());
    for (text, theirs) in CORPUS.iter().zip(theirs) {
        assert_eq!(ours(text), theirs, "the parsers differ on {text:?}");
    }
}

#[test]
fn words_expand_as_buildah_expands_them() {
    let Some(peer) = peer("words_expand_as_buildah_expands_them") else {
        return;
    };
    let vars = [
        ("A", "apple"),
        ("EMPTY", ""),
        ("SPACED", "x  y"),
        ("A_1", "a1"),
        ("P", "/usr/bin:/bin"),
    ];
    let ours_vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let env: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for word in [
        "$A",
        "${A}",
        "$A_1/$A-x",
        "${A}_1",
        "$MISSING.",
        "$1x",
        "cost $ 5 $",
        "${A:-d}",
        "${EMPTY:-d}",
        "${MISSING:-d}",
        "${A:+alt}",
        "${EMPTY:+alt}",
        "${MISSING:-$A/${EMPTY:-z}}",
        "\"$A b\"",
        "'$A b'",
        "\\$A",
        "\"\\$A \\\" \\\\ \\n\"",
        "a\\ b",
        "a\"b\"'c'd",
        "/opt/$A:$P",
        "\"${SPACED}\"",
        "${SPACED}",
        "it\\'s",
        "trailing\\",
    ] {
        let out = Process::new(&peer)
            .arg("word")
            .arg(word)
            .args(&env)
            .output()
            .expect("run the peer");
        let theirs: Value = serde_json::from_slice(&out.stdout).expect("a JSON line");
        let theirs = theirs["word"].as_str().expect("an expansion").to_owned();
        assert_eq!(
            expand_word(word, '\\', &ours_vars).expect("ours expands it"),
            theirs,
            "the expansions of {word:?} differ"
        );
    }
}

/// Names to match, UTF-8 or not.
const NAMES: &[&[u8]] = &[
    b"main.go",
    b"cmd/main.go",
    b"a",
    b"ab",
    b"abc",
    b"a/b",
    b"a*b",
    b".hidden",
    b"caf\xc3\xa9",
    b"caf\xe9",
    b"x.tmp",
    b"deep/er/x.tmp",
    b"build",
    b"build/out/bin",
    b"build/keep",
    b"docs/guide.md",
    b"docs/README.md",
    b"docs/sub/x.md",
    b"file.bak",
    b"dir/file.bak",
    b"a/z",
    b"a/b/c/z",
    b"node_modules/pkg/index.js",
    b"src/node_modules/x",
    b"\xf0\xd2\xc9\xd7\xc5\xd4/x",
];

#[test]
fn globs_match_as_go_matches_them() {
    let Some(peer) = peer("globs_match_as_go_matches_them") else {
        return;
    };
    for pattern in [
        "*",
        "*.go",
        "*/*.go",
        "a?",
        "a?c",
        "?",
        "[a-c]*",
        "[^a]*",
        "a\\*b",
        "caf?",
        "caf[^x]",
        "*/b",
        "a*",
        "*.*",
        "caf\u{e9}",
        "[",
        "a\\",
    ] {
        let out = Process::new(&peer)
            .arg("glob")
            .arg(pattern)
            .args(NAMES.iter().map(|n| OsStr::from_bytes(n)))
            .output()
            .expect("run the peer");
        let theirs: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let ours: Vec<Value> = NAMES
            .iter()
            .map(|n| match glob_match(pattern, n) {
                Ok(m) => Value::Bool(m),
                Err(_) => Value::String("error".into()),
            })
            .collect();
        assert_eq!(
            Value::Array(ours),
            theirs,
            "the matches of {pattern:?} differ"
        );
    }
}

#[test]
fn dockerignore_leaves_out_what_docker_leaves_out() {
    let Some(peer) = peer("dockerignore_leaves_out_what_docker_leaves_out") else {
        return;
    };
    let scratch = Scratch::new("dockerignore");
    for (i, text) in [
        "*.go\n",
        "# comment\n  build  \n!build/keep\n",
        "/docs/*.md\n!docs/README.md\n",
        "**/*.tmp\n**.bak\n",
        "build/**\n",
        "a/**/z\n",
        "**/node_modules\n",
        "*\n!cmd\n",
        "caf?\n",
        "\u{feff}a\\*b\n./a/../ab\n",
        "**\n!docs/**\n",
        "[a-b]*\n!a/b\n",
    ]
    .iter()
    .enumerate()
    {
        let path = scratch.path(&format!("ignore.{i}"));
        std::fs::write(&path, text).expect("write");
        let out = Process::new(&peer)
            .arg("ignore")
            .arg(&path)
            .args(NAMES.iter().map(|n| OsStr::from_bytes(n)))
            .output()
            .expect("run the peer");
        let theirs: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let ignore = Ignore::parse(text).expect("our parse");
        let ours: Vec<Value> = NAMES
            .iter()
            .map(|n| Value::Bool(ignore.is_ignored(n)))
            .collect();
        assert_eq!(Value::Array(ours), theirs, "the results of {text:?} differ");
    }
}
