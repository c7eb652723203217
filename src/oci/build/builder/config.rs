//! The instructions that change only the image config (`ENV`, `LABEL`,
//! `USER`, `CMD`, `ENTRYPOINT`, `EXPOSE`, `VOLUME`, `STOPSIGNAL`,
//! `HEALTHCHECK`, `SHELL`, `ONBUILD`, `MAINTAINER`), with the fields and
//! history texts BuildKit writes (its texts print Go values: `%q` of a
//! list is `["a" "b"]`, `%v` of a map `map[80/tcp:{}]`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::super::dockerfile::{Command, CommandLine, Healthcheck, Instruction};
use super::super::words::expand_words;
use super::{Engine, Stage, fail, flag, word_error};
use crate::MergedView;
use crate::error::{ErrorKind, Result};
use crate::oci::image::spec::ImageConfig;

/// A change to the config object.
type Apply = Box<dyn FnOnce(&mut Map<String, Value>)>;

/// What a config instruction does.
pub(super) struct Change {
    /// The history entry's `created_by` (`None`: no entry, as `ONBUILD`).
    pub(super) created_by: Option<String>,
    /// The change to the config object.
    pub(super) apply: Apply,
    /// Variables set for the instructions that follow (`ENV`).
    pub(super) env: Vec<(String, String)>,
    /// Whether it sets `CMD`.
    pub(super) sets_cmd: bool,
    /// The image's author (`MAINTAINER`).
    pub(super) author: Option<String>,
}

impl Change {
    fn new(created_by: String, apply: impl FnOnce(&mut Map<String, Value>) + 'static) -> Change {
        Change {
            created_by: Some(created_by),
            apply: Box::new(apply),
            env: Vec::new(),
            sets_cmd: false,
            author: None,
        }
    }
}

/// The config's `Env` as pairs.
pub(super) fn env_pairs(config: &ImageConfig) -> Vec<(String, String)> {
    config
        .config
        .get("Env")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (e.to_owned(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Pairs as the config's `Env` list.
pub(super) fn env_list(env: &[(String, String)]) -> Value {
    Value::Array(
        env.iter()
            .map(|(k, v)| Value::String(format!("{k}={v}")))
            .collect(),
    )
}

/// The object `field` of the config object, made (or replaced, if it is
/// not an object) when needed.
fn object<'a>(c: &'a mut Map<String, Value>, field: &str) -> &'a mut Map<String, Value> {
    let value = c.entry(field).or_insert_with(|| Value::Object(Map::new()));
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("made an object above"),
    }
}

fn strings(words: &[String]) -> Value {
    Value::Array(words.iter().cloned().map(Value::String).collect())
}

/// Go's `strconv.Quote`.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub(super) fn go_quote_list(words: &[String]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| go_quote(w)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%q` of an int (a rune): `'\x03'`.
fn go_quote_rune(n: i64) -> String {
    match u32::try_from(n).ok().and_then(char::from_u32) {
        Some('\'') => "'\\''".to_owned(),
        Some('\\') => "'\\\\'".to_owned(),
        Some(c) if (' '..='~').contains(&c) => format!("'{c}'"),
        Some(c) if (c as u32) < 0x80 => format!("'\\x{:02x}'", c as u32),
        Some(c) if !c.is_control() => format!("'{c}'"),
        Some(c) if (c as u32) < 0x10000 => format!("'\\u{:04x}'", c as u32),
        Some(c) => format!("'\\U{:08x}'", c as u32),
        None => "'\u{fffd}'".to_owned(),
    }
}

/// `v` in units of `10^-digits` as a decimal with trailing zeros dropped.
fn decimal(v: u128, digits: u32) -> String {
    let scale = 10u128.pow(digits);
    let (int, frac) = (v / scale, v % scale);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// Go's `time.Duration.String`: `1h2m3.5s`, `500ms`, `0s`.
pub(super) fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".to_owned();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = u128::from(ns.unsigned_abs());
    let text = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", decimal(u, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", decimal(u, 6))
    } else {
        let (h, m) = (u / 3_600_000_000_000, u / 60_000_000_000 % 60);
        let s = format!("{}s", decimal(u % 60_000_000_000, 9));
        if h > 0 {
            format!("{h}h{m}m{s}")
        } else if m > 0 {
            format!("{m}m{s}")
        } else {
            s
        }
    };
    format!("{sign}{text}")
}

/// Go's `time.ParseDuration` (no sign: Docker's durations are positive).
pub(super) fn parse_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut value = int.checked_mul(scale)?;
        let mut place = scale;
        for d in frac.chars() {
            place /= 10;
            value = value.checked_add(u128::from(d.to_digit(10)?) * place)?;
        }
        total = total.checked_add(value)?;
        rest = tail;
    }
    i64::try_from(total).ok()
}

/// `requested` against the working directory `current`, cleaned (as
/// Docker's `NormalizeWorkdir`).
pub(super) fn normalize_workdir(current: &str, requested: &str) -> String {
    let joined = if requested.starts_with('/') {
        requested.to_owned()
    } else {
        format!("{current}/{requested}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `WORKDIR`'s directory: created with its parents (mode 0755, owned by
/// `owner` when the stage has a `USER`) if missing, as Docker does.
pub(super) fn make_workdir(view: &MergedView, wd: &str, owner: Option<(u32, u32)>) -> Result<()> {
    let rel = wd.trim_start_matches('/');
    if rel.is_empty() || view.metadata(rel).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    // The components that are missing, to own them afterwards.
    let mut missing = Vec::new();
    let mut at = String::new();
    for part in rel.split('/') {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(part);
        if view.metadata(at.as_str()).is_err() {
            missing.push(at.clone());
        }
    }
    view.create_dir_all(rel)?;
    for dir in &missing {
        view.set_permissions(dir.as_str(), 0o755)?;
        if let Some((uid, gid)) = owner {
            view.set_owner(dir.as_str(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// `EXPOSE`'s ports: `80`, `80/udp`, `8000-8002/tcp` → `80/tcp` ...
fn ports(words: &[String]) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for word in words {
        let (range, proto) = match word.split_once('/') {
            Some((r, p)) => (r, p.to_ascii_lowercase()),
            None => (word.as_str(), "tcp".to_owned()),
        };
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(format!(
                "EXPOSE {word}: the protocol must be tcp, udp or sctp"
            ));
        }
        let bad = || format!("EXPOSE {word}: not a port or a range of ports");
        let (start, end) = match range.split_once('-') {
            Some((a, b)) => (a, b),
            None => (range, range),
        };
        let start: u16 = start.parse().map_err(|_| bad())?;
        let end: u16 = end.parse().map_err(|_| bad())?;
        if end < start {
            return Err(bad());
        }
        for port in start..=end {
            out.push(format!("{port}/{proto}"));
        }
    }
    Ok(out)
}

/// Whether `signal` is one Docker's `signal.ParseSignal` takes.
fn valid_signal(signal: &str) -> bool {
    if let Ok(n) = signal.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let upper = signal.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU",
        "XFSZ", "RTMIN", "RTMAX",
    ];
    if NAMES.contains(&name) {
        return true;
    }
    let offset = |base: &str, sep: char| {
        name.strip_prefix(base)
            .and_then(|r| r.strip_prefix(sep))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=15).contains(&n))
    };
    offset("RTMIN", '+') || offset("RTMAX", '-')
}

/// `CMD`/`ENTRYPOINT`'s words: the exec form as is, the shell form through
/// the config's shell.
fn command_words(stage: &Stage<'_>, line: &CommandLine) -> Vec<String> {
    match line {
        CommandLine::Exec(words) => words.clone(),
        CommandLine::Shell(text) => {
            let mut words = stage.shell();
            words.push(text.clone());
            words
        }
    }
}

/// The config change of a config-only instruction.
pub(super) fn change(
    engine: &Engine<'_, '_>,
    stage: &Stage<'_>,
    ins: &Instruction,
) -> Result<Change> {
    let path = engine.path();
    let line = ins.line;
    let escape = engine.file.escape;
    let expand = |word: &str| engine.expand(stage, line, word);
    let invalid = |m: String| fail(path, line, ErrorKind::InvalidInput, m);
    Ok(match &ins.command {
        Command::Env(pairs) => {
            // Each value sees the ones before it on the line.
            let mut env = stage.env.clone();
            let mut set = Vec::new();
            for (k, v) in pairs {
                let v = super::super::words::expand_word(v, escape, &env)
                    .map_err(|e| word_error(path, line, v, &e))?;
                super::set_var(&mut env, k, &v);
                set.push((k.clone(), v));
            }
            let created_by = format!(
                "ENV {}",
                set.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let mut config_env = env_pairs(stage.builder.config());
            for (k, v) in &set {
                super::set_var(&mut config_env, k, v);
            }
            let list = env_list(&config_env);
            let mut change = Change::new(created_by, move |c| {
                c.insert("Env".to_owned(), list);
            });
            change.env = set;
            change
        }
        Command::Label(pairs) => {
            let mut set = Vec::new();
            for (k, v) in pairs {
                set.push((expand(k)?, expand(v)?));
            }
            let created_by = format!(
                "LABEL {}",
                set.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            Change::new(created_by, move |c| {
                let labels = object(c, "Labels");
                for (k, v) in set {
                    labels.insert(k, Value::String(v));
                }
            })
        }
        Command::User(user) => {
            let user = expand(user)?;
            if user.is_empty() {
                return Err(invalid("USER: the user is empty".to_owned()));
            }
            Change::new(format!("USER {user}"), move |c| {
                c.insert("User".to_owned(), Value::String(user));
            })
        }
        Command::Cmd(cmd) => {
            let words = command_words(stage, cmd);
            let mut change = Change::new(format!("CMD {}", go_quote_list(&words)), move |c| {
                c.insert("Cmd".to_owned(), strings(&words));
                c.insert("ArgsEscaped".to_owned(), Value::Bool(true));
            });
            change.sets_cmd = true;
            change
        }
        Command::Entrypoint(cmd) => {
            let words = command_words(stage, cmd);
            let keep_cmd = stage.cmd_set;
            Change::new(format!("ENTRYPOINT {}", go_quote_list(&words)), move |c| {
                c.insert("Entrypoint".to_owned(), strings(&words));
                // An inherited CMD does not go with a new ENTRYPOINT.
                if !keep_cmd {
                    c.remove("Cmd");
                }
            })
        }
        Command::Shell(words) => Change::new(format!("SHELL [{}]", words.join(" ")), {
            let words = words.clone();
            move |c| {
                c.insert("Shell".to_owned(), strings(&words));
            }
        }),
        Command::Expose(text) => {
            let words = expand_words(text, escape, &stage.env)
                .map_err(|e| word_error(path, line, text, &e))?;
            let ports = ports(&words).map_err(invalid)?;
            let shown: BTreeMap<&str, ()> = ports.iter().map(|p| (p.as_str(), ())).collect();
            let created_by = format!(
                "EXPOSE map[{}]",
                shown
                    .keys()
                    .map(|p| format!("{p}:{{}}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            Change::new(created_by, move |c| {
                let map = object(c, "ExposedPorts");
                for p in ports {
                    map.insert(p, Value::Object(Map::new()));
                }
            })
        }
        Command::Volume(words) => {
            let mut volumes = Vec::new();
            for w in words {
                // The JSON form is one word each; the shell form splits.
                let expanded = expand_words(w, escape, &stage.env)
                    .map_err(|e| word_error(path, line, w, &e))?;
                volumes.extend(expanded);
            }
            if volumes.iter().any(String::is_empty) || volumes.is_empty() {
                return Err(invalid(
                    "VOLUME specified can not be an empty string".to_owned(),
                ));
            }
            Change::new(format!("VOLUME [{}]", volumes.join(" ")), move |c| {
                let map = object(c, "Volumes");
                for v in volumes {
                    map.insert(v, Value::Object(Map::new()));
                }
            })
        }
        Command::StopSignal(signal) => {
            let signal = expand(signal)?;
            if !valid_signal(&signal) {
                return Err(invalid(format!("STOPSIGNAL {signal}: not a signal")));
            }
            Change::new(format!("STOPSIGNAL {signal}"), move |c| {
                c.insert("StopSignal".to_owned(), Value::String(signal));
            })
        }
        Command::Healthcheck(check) => healthcheck(ins, check).map_err(invalid)?,
        Command::Onbuild(trigger) => {
            let text = trigger.source.clone();
            Change {
                created_by: None,
                apply: Box::new(move |c| {
                    let list = c
                        .entry("OnBuild")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if !list.is_array() {
                        *list = Value::Array(Vec::new());
                    }
                    if let Value::Array(list) = list {
                        list.push(Value::String(text));
                    }
                }),
                env: Vec::new(),
                sets_cmd: false,
                author: None,
            }
        }
        Command::Maintainer(name) => {
            let name = expand(name)?;
            let mut change = Change::new(format!("MAINTAINER {name}"), |_| {});
            change.author = Some(name);
            change
        }
        other => unreachable!("{} is not a config instruction", other.keyword()),
    })
}

/// `HEALTHCHECK`: Docker's `Healthcheck` config (durations in
/// nanoseconds, zero ones left out) and BuildKit's history text, the Go
/// struct printed with `%q`.
fn healthcheck(ins: &Instruction, check: &Healthcheck) -> std::result::Result<Change, String> {
    let test: Vec<String> = match check {
        Healthcheck::None => vec!["NONE".to_owned()],
        Healthcheck::Cmd(CommandLine::Shell(cmd)) => vec!["CMD-SHELL".to_owned(), cmd.clone()],
        Healthcheck::Cmd(CommandLine::Exec(words)) => {
            let mut test = vec!["CMD".to_owned()];
            test.extend(words.iter().cloned());
            test
        }
    };
    let mut durations = [0i64; 4];
    for (slot, name) in
        durations
            .iter_mut()
            .zip(["interval", "timeout", "start-period", "start-interval"])
    {
        if let Some(value) = flag(&ins.flags, name) {
            let ns = parse_duration(value)
                .ok_or_else(|| format!("HEALTHCHECK --{name}={value}: not a duration"))?;
            if ns != 0 && ns < 1_000_000 {
                return Err(format!(
                    "HEALTHCHECK --{name}={value}: cannot be less than 1ms"
                ));
            }
            *slot = ns;
        }
    }
    let retries: i64 = match flag(&ins.flags, "retries") {
        Some(value) => value
            .parse()
            .ok()
            .filter(|&n| n >= 0)
            .ok_or_else(|| format!("HEALTHCHECK --retries={value}: not a count"))?,
        None => 0,
    };
    let created_by = format!(
        "HEALTHCHECK &{{{} {} {} {} {} {}}}",
        go_quote_list(&test),
        go_quote(&go_duration(durations[0])),
        go_quote(&go_duration(durations[1])),
        go_quote(&go_duration(durations[2])),
        go_quote(&go_duration(durations[3])),
        go_quote_rune(retries)
    );
    Ok(Change::new(created_by, move |c| {
        let mut health = Map::new();
        health.insert("Test".to_owned(), strings(&test));
        for (name, ns) in ["Interval", "Timeout", "StartPeriod", "StartInterval"]
            .into_iter()
            .zip(durations)
        {
            if ns != 0 {
                health.insert(name.to_owned(), Value::from(ns));
            }
        }
        if retries != 0 {
            health.insert("Retries".to_owned(), Value::from(retries));
        }
        c.insert("Healthcheck".to_owned(), Value::Object(health));
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_print_as_go_prints_them() {
        for (ns, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (500_000_000, "500ms"),
            (3_000_000_000, "3s"),
            (90_000_000_000, "1m30s"),
            (300_000_000_000, "5m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (1_500_000_000, "1.5s"),
        ] {
            assert_eq!(go_duration(ns), text);
            assert_eq!(parse_duration(text), Some(ns), "{text}");
        }
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("30"), None);
        assert_eq!(parse_duration("x"), None);
        // Past u128 in the fraction: refused, not wrapped.
        assert_eq!(parse_duration("340282366920938463463374607431.9s"), None);
    }

    #[test]
    fn go_quotes_as_strconv_quote() {
        assert_eq!(go_quote("a \"b\"\n\\"), r#""a \"b\"\n\\""#);
        assert_eq!(go_quote("\x01é"), "\"\\x01é\"");
        assert_eq!(go_quote_rune(0), r"'\x00'");
        assert_eq!(go_quote_rune(3), r"'\x03'");
        assert_eq!(go_quote_rune(65), "'A'");
    }

    #[test]
    fn workdirs_normalize_against_the_current_one() {
        assert_eq!(normalize_workdir("/", "app"), "/app");
        assert_eq!(normalize_workdir("/app", "../srv/./x/"), "/srv/x");
        assert_eq!(normalize_workdir("/app", "/abs"), "/abs");
        assert_eq!(normalize_workdir("/", ".."), "/");
    }

    #[test]
    fn exposed_ports_expand_ranges_and_default_to_tcp() {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            ports(&words(&["80", "53/UDP", "8000-8002"])).unwrap(),
            ["80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(ports(&words(&["http"])).is_err());
        assert!(ports(&words(&["80/icmp"])).is_err());
    }
}
