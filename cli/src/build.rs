//! `build`: a Dockerfile built into a tag of a layout (`oci::build::build`),
//! printed as a build tool's users expect: `STEP n/N: <instruction>`, RUN's
//! output as it comes, what each step left (`--> CACHED`, `--> layer
//! sha256:… (size)`, `--> no layer`), a bar for a long COPY, and the
//! image's digest; or one JSON document with every step.

use camino::Utf8PathBuf;
use layerstack::oci::build::{BuildEvent, BuildReport, BuildSpec, StepReport, build};
use layerstack::oci::{BuildOptions, Compression, ImageStore, OciLayout, check_tag};
use layerstack::{Error, ErrorKind, Operation, Result, Timestamp};
use serde_json::{Value, json};

use crate::ImageRef;
use crate::output::{Format, Out, Progress, escape_message, json_name};

/// A COPY or ADD of at least this many bytes gets a progress bar (on a
/// terminal): below it the step is over before a bar would be seen.
const BAR_FROM_BYTES: u64 = 4 << 20;

/// What `layerstack build` was asked.
#[derive(Debug)]
pub struct Request {
    /// `-f`: the Dockerfile; `None`: `CONTEXT/Dockerfile`.
    pub dockerfile: Option<Utf8PathBuf>,
    /// `-t LAYOUT:TAG`.
    pub image: ImageRef,
    /// `--build-arg K=V`, in order.
    pub build_args: Vec<(String, String)>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--compression`.
    pub compression: Compression,
    /// The build context directory.
    pub context: Utf8PathBuf,
}

/// `--build-arg K=V`; a bare `K` takes its value from the environment (as
/// `docker build` does) and is left out when the environment has none.
pub fn parse_build_arg(s: &str) -> std::result::Result<(String, Option<String>), String> {
    let (key, value) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (s, None),
    };
    if key.is_empty() {
        return Err(format!("`{s}` names no argument: K=V is expected"));
    }
    Ok((key.to_owned(), value))
}

/// `-t LAYOUT:TAG`: a tag is needed (a build writes one).
pub fn parse_target_image(s: &str) -> std::result::Result<ImageRef, String> {
    let image: ImageRef = s.parse()?;
    match &image.tag {
        None => Err(format!("`{s}` has no tag: LAYOUT:TAG is expected")),
        Some(tag) => check_tag(tag).map(|()| image).map_err(|e| e.to_string()),
    }
}

/// The build arguments given on the command line, with a bare `K` taken
/// from the environment.
pub fn resolve_build_args(args: Vec<(String, Option<String>)>) -> Vec<(String, String)> {
    args.into_iter()
        .filter_map(|(k, v)| match v {
            Some(v) => Some((k, v)),
            None => std::env::var(&k).ok().map(|v| (k, v)),
        })
        .collect()
}

/// The image's creation time: `SOURCE_DATE_EPOCH` (seconds since 1970),
/// else the epoch itself, so that builds are reproducible by default.
///
/// # Errors
/// `EINVAL` naming `SOURCE_DATE_EPOCH` when it is not a number of seconds.
fn created() -> Result<Timestamp> {
    match std::env::var_os("SOURCE_DATE_EPOCH") {
        None => Ok(Timestamp::EPOCH),
        Some(value) => {
            let text = value.to_string_lossy();
            text.parse::<i64>()
                .ok()
                .filter(|_| !text.starts_with('+'))
                .map(|sec| Timestamp::new(sec, 0))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        Operation::BuildImage,
                        "SOURCE_DATE_EPOCH",
                    )
                    .with_detail(format!(
                        "`{text}` is not a whole number of seconds since 1970-01-01"
                    ))
                })
        }
    }
}

/// `12 B`, `12.3 KB`, `4.5 MB`: a size as build tools print it (SI units).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The line after a step.
fn step_result(step: &StepReport) -> String {
    if step.cached {
        return "--> CACHED".to_owned();
    }
    match &step.layer {
        None => "--> no layer".to_owned(),
        Some(layer) => format!(
            "--> layer sha256:{}… ({})",
            layer.digest.short(),
            human_size(layer.size)
        ),
    }
}

/// A step as JSON.
fn step_json(step: &StepReport) -> Value {
    json!({
        "number": step.number,
        "line": step.line,
        "stage": step.stage,
        "text": step.text,
        "layer": step.layer.as_ref().map(|l| json!({
            "digest": l.digest.to_string(),
            "diff_id": l.diff_id.to_string(),
            "size": l.size,
            "uncompressed_size": l.uncompressed_size,
        })),
        "cached": step.cached,
    })
}

/// What the events print, and the first error writing it.
struct Printer<'o> {
    out: &'o mut Out,
    format: Format,
    bar: Option<Progress>,
    failed: Option<Error>,
}

impl Printer<'_> {
    /// Runs `write` unless an earlier write failed; keeps the first error.
    fn write(&mut self, write: impl FnOnce(&mut Out) -> Result<()>) {
        if self.failed.is_none()
            && let Err(e) = write(self.out).and_then(|()| self.out.flush())
        {
            self.failed = Some(e);
        }
    }

    fn event(&mut self, event: BuildEvent<'_>) {
        let text = self.format == Format::Text;
        match event {
            BuildEvent::Step {
                number,
                total,
                text: line,
            } if text => {
                let line = escape_message(line);
                self.write(|out| out.line(format_args!("STEP {number}/{total}: {line}")));
            }
            // RUN's output goes where the build's text goes; with --json
            // to stderr, so that stdout holds the one document.
            BuildEvent::Output(bytes) => {
                let shown = escape_output(bytes);
                if text {
                    self.write(|out| out.bytes(shown.as_bytes()));
                } else {
                    use std::io::Write;
                    let _ = std::io::stderr().write_all(shown.as_bytes());
                }
            }
            BuildEvent::Progress { done, total } => {
                if total >= BAR_FROM_BYTES {
                    let bar = self
                        .bar
                        .get_or_insert_with(|| Progress::bytes(total, "copying"));
                    bar.set_position(done);
                }
            }
            BuildEvent::Warning(message) => crate::warn(format_args!("{message}")),
            BuildEvent::RunFailed { status, tail } => {
                // The text output streamed these lines already.
                if !text {
                    for line in tail {
                        crate::warn(format_args!("RUN exited with status {status}: {line}"));
                    }
                }
            }
            BuildEvent::Done(step) => {
                self.bar = None;
                if text {
                    let line = step_result(step);
                    self.write(|out| out.line(format_args!("{line}")));
                }
            }
            BuildEvent::Step { .. } => {}
        }
    }
}

/// RUN's output for a terminal: whole lines, control bytes escaped, the
/// newlines kept.
fn escape_output(bytes: &[u8]) -> String {
    let mut shown = String::with_capacity(bytes.len());
    for piece in bytes.split_inclusive(|&b| b == b'\n') {
        let (line, newline) = match piece.strip_suffix(b"\n") {
            Some(line) => (line, true),
            None => (piece, false),
        };
        shown.push_str(&layerstack::path::escape_message(line));
        if newline {
            shown.push('\n');
        }
    }
    shown
}

/// `layerstack build`.
///
/// # Errors
/// A bad `SOURCE_DATE_EPOCH`; the layout's; the build's (a RUN that failed
/// is one, after its last lines were printed).
pub fn run(request: Request, format: Format, out: &mut Out) -> Result<()> {
    let created = created()?;
    let tag = request
        .image
        .tag
        .clone()
        .expect("parse_target_image requires a tag");
    let dockerfile = request
        .dockerfile
        .clone()
        .unwrap_or_else(|| request.context.join("Dockerfile"));
    let layout = OciLayout::create(&request.image.layout)?;
    let store = ImageStore::new(layout);
    let mut spec = BuildSpec::new(dockerfile.clone(), request.context.clone(), tag)
        .no_cache(request.no_cache)
        .options(
            BuildOptions::default()
                .created(created)
                .compression(request.compression),
        );
    for (k, v) in &request.build_args {
        spec = spec.build_arg(k, v);
    }
    if let Some(target) = &request.target {
        spec = spec.target(target);
    }
    let mut printer = Printer {
        out,
        format,
        bar: None,
        failed: None,
    };
    let built = build(&store, &spec, &mut |event| printer.event(event));
    let Printer { out, failed, .. } = printer;
    let report = built?;
    if let Some(e) = failed {
        return Err(e);
    }
    print_report(&request, &dockerfile, &report, format, out)
}

fn print_report(
    request: &Request,
    dockerfile: &Utf8PathBuf,
    report: &BuildReport,
    format: Format,
    out: &mut Out,
) -> Result<()> {
    let manifest = report.image.descriptor.digest;
    match format {
        Format::Text => out.line(format_args!(
            "Successfully built {} {manifest}",
            escape_message(&request.image.to_string())
        )),
        Format::Json => {
            let mut doc = json!({
                "manifest": manifest.to_string(),
                "config": report.image.manifest.config.digest.to_string(),
                "steps": report.steps.iter().map(step_json).collect::<Vec<_>>(),
            });
            json_name(&mut doc, "image", request.image.to_string().as_bytes());
            json_name(&mut doc, "dockerfile", dockerfile.as_str().as_bytes());
            json_name(&mut doc, "context", request.context.as_str().as_bytes());
            out.json(&doc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_build_tools_print_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1000), "1.0 KB");
        assert_eq!(human_size(12_345), "12.3 KB");
        assert_eq!(human_size(999_960), "1.0 MB");
        assert_eq!(human_size(4_500_000), "4.5 MB");
        assert_eq!(human_size(7_000_000_000), "7.0 GB");
    }

    #[test]
    fn run_output_keeps_its_lines_and_loses_its_control_bytes() {
        assert_eq!(escape_output(b"ok\n\x1b[31mred\n"), "ok\n\\033[31mred\n");
        assert_eq!(escape_output(b"no newline"), "no newline");
        assert_eq!(escape_output(b"tab\there\r\n"), "tab\\there\\r\n");
    }

    #[test]
    fn build_args_and_tags_are_checked_before_the_build() {
        assert_eq!(
            parse_build_arg("A=b=c"),
            Ok(("A".to_owned(), Some("b=c".to_owned())))
        );
        assert_eq!(parse_build_arg("A"), Ok(("A".to_owned(), None)));
        assert!(parse_build_arg("=x").is_err());
        assert!(parse_target_image("layout").is_err());
        assert_eq!(
            parse_target_image("out:app").unwrap().tag.as_deref(),
            Some("app")
        );
    }
}
