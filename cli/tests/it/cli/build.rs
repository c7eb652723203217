//! `layerstack build`: the exact output of a small build from scratch, the
//! cached second run, `--json`, the README's example (`examples/build/`)
//! on the demo image, and the one-line errors and exit codes.

use camino::Utf8Path;
use serde_json::json;

use super::{demo, fails, image, json_of, layerstack, layerstack_with, ok};
use crate::tools::{Scratch, run};

const DOCKERFILE: &str = "\
FROM scratch
COPY hello.txt /hello.txt
ENV GREETING=hi
CMD [\"/hello\"]
";

/// A context with DOCKERFILE and its file, every mtime fixed (the layer
/// keeps them: the digests of two contexts alike are alike).
fn context(s: &Scratch) -> camino::Utf8PathBuf {
    let dir = s.path("context");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello\n").unwrap();
    run(std::process::Command::new("touch")
        .args(["-h", "-d", "@1000000000"])
        .arg(dir.join("Dockerfile"))
        .arg(dir.join("hello.txt")));
    dir
}

/// `--> layer sha256:<12>… (N B)` of layer `i` of the image.
fn layer_line(layout: &Utf8Path, tag: &str, i: usize) -> String {
    let img = image(layout, tag);
    let size = img.layers()[i].size;
    assert!(size < 1000, "a small layer: {size}");
    format!(
        "--> layer sha256:{}\u{2026} ({size} B)",
        img.layers()[i].digest.short()
    )
}

#[test]
fn build_prints_each_step_and_its_layer_then_every_step_cached() {
    let s = Scratch::new("cli-build");
    let ctx = context(&s);
    let layout = s.path("out");
    let at = format!("{layout}:app");
    let first = ok(&["build", "-t", &at, ctx.as_str()]);
    let img = image(&layout, "app");
    let manifest = img.descriptor.digest;
    assert_eq!(
        first,
        format!(
            "\
STEP 1/4: FROM scratch
--> no layer
STEP 2/4: COPY hello.txt /hello.txt
{}
STEP 3/4: ENV GREETING=hi
--> no layer
STEP 4/4: CMD [\"/hello\"]
--> no layer
Successfully built {at} {manifest}
",
            layer_line(&layout, "app", 0)
        )
    );
    assert_eq!(img.layers().len(), 1);
    assert_eq!(img.config.created.as_deref(), Some("1970-01-01T00:00:00Z"));
    // Again: every step from the cache, the same image.
    let second = ok(&["build", "-t", &at, ctx.as_str()]);
    assert_eq!(
        second,
        format!(
            "\
STEP 1/4: FROM scratch
--> no layer
STEP 2/4: COPY hello.txt /hello.txt
--> CACHED
STEP 3/4: ENV GREETING=hi
--> CACHED
STEP 4/4: CMD [\"/hello\"]
--> CACHED
Successfully built {at} {manifest}
"
        )
    );
    // --no-cache builds the steps again, to the same digests.
    let third = ok(&["build", "--no-cache", "-t", &at, ctx.as_str()]);
    assert_eq!(third, first);
    // SOURCE_DATE_EPOCH dates the image: another manifest.
    let dated = layerstack_with(
        &["build", "-t", &format!("{layout}:dated"), ctx.as_str()],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(dated.code, 0, "{dated:?}");
    let img = image(&layout, "dated");
    assert_eq!(img.config.created.as_deref(), Some("2023-11-14T22:13:20Z"));
    assert_ne!(img.descriptor.digest, manifest);
}

#[test]
fn build_json_gives_every_step_and_the_manifest() {
    let s = Scratch::new("cli-build-json");
    let ctx = context(&s);
    let layout = s.path("out");
    let at = format!("{layout}:app");
    let doc = json_of(&ok(&[
        "build",
        "--json",
        "--compression",
        "zstd",
        "-f",
        ctx.join("Dockerfile").as_str(),
        "-t",
        &at,
        ctx.as_str(),
    ]));
    let img = image(&layout, "app");
    let layer = &img.layers()[0];
    assert_eq!(
        layer.media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let step = |n: usize, line: usize, text: &str| json!({"number": n, "line": line, "stage": 0, "text": text, "layer": null, "cached": false});
    let mut copy = step(2, 2, "COPY hello.txt /hello.txt");
    copy["layer"] = json!({
        "digest": layer.digest.to_string(),
        "diff_id": img.diff_ids()[0].to_string(),
        "size": layer.size,
        "uncompressed_size": doc["steps"][1]["layer"]["uncompressed_size"],
    });
    assert_eq!(
        doc,
        json!({
            "image": at,
            "manifest": img.descriptor.digest.to_string(),
            "config": img.manifest.config.digest.to_string(),
            "dockerfile": ctx.join("Dockerfile").as_str(),
            "context": ctx.as_str(),
            "steps": [
                step(1, 1, "FROM scratch"),
                copy,
                step(3, 3, "ENV GREETING=hi"),
                step(4, 4, "CMD [\"/hello\"]"),
            ],
        })
    );
    // A tar of 512-byte blocks: the file's header, its data, the end.
    assert!(
        doc["steps"][1]["layer"]["uncompressed_size"]
            .as_u64()
            .unwrap()
            >= 2048
    );
}

/// The README's example Dockerfile is `examples/build/Dockerfile` (its
/// comments aside), and it builds on the demo image without root.
#[test]
fn build_makes_the_readme_example_on_the_demo_image() {
    let root = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let shown = readme
        .split("```dockerfile\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a Dockerfile block in the README");
    let example = root.join("examples/build");
    let file = std::fs::read_to_string(example.join("Dockerfile")).unwrap();
    let uncommented: String = file
        .lines()
        .filter(|l| !l.starts_with('#'))
        .skip_while(|l| l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        shown, uncommented,
        "the README shows examples/build/Dockerfile"
    );

    let s = Scratch::new("cli-build-example");
    let dir = demo(&s);
    let base = format!("BASE={dir}:demo");
    let at = format!("{dir}:app");
    let out = ok(&["build", "--build-arg", &base, "-t", &at, example.as_str()]);
    let app = image(&dir, "app");
    let demo_image = image(&dir, "demo");
    assert_eq!(&app.layers()[..3], demo_image.layers());
    // WORKDIR (it creates /srv/app) and the three COPYs.
    assert_eq!(app.layers().len(), 7, "{out}");
    assert!(out.ends_with(&format!(
        "Successfully built {at} {}\n",
        app.descriptor.digest
    )));
    let cfg = &app.config.config;
    assert_eq!(cfg["WorkingDir"], "/srv/app");
    assert_eq!(cfg["User"], "1000:1000");
    assert_eq!(cfg["Cmd"], json!(["/usr/bin/serve"]));
    assert_eq!(cfg["ExposedPorts"], json!({"8080/tcp": {}}));
    let ls = ok(&["ls", &at, "/srv/app", "-R"]);
    for name in ["index.html", "static/style.css"] {
        assert!(ls.contains(&format!("/srv/app/{name}")), "{ls}");
    }
    assert!(!ls.contains("NOTES.md"), "{ls}");
    assert_eq!(
        ok(&["cat", &at, "/etc/app.conf"]),
        "port = 8080\nroot = /srv/app\n"
    );
}

#[test]
fn build_errors_are_one_line_and_exit_1_and_bad_usage_exits_2() {
    let s = Scratch::new("cli-build-errors");
    let ctx = context(&s);
    let at = format!("{}:app", s.path("out"));
    // No Dockerfile in the context.
    let empty = s.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_eq!(
        fails(&["build", "-t", &at, empty.as_str()], 1),
        format!(
            "error: failed to build image `{empty}/Dockerfile`: No such file or directory (os error 2)\n"
        )
    );
    // A bad SOURCE_DATE_EPOCH: named, nothing built.
    let never = s.path("never");
    let ran = layerstack_with(
        &["build", "-t", &format!("{never}:app"), ctx.as_str()],
        &[("SOURCE_DATE_EPOCH", "yesterday")],
    );
    assert_eq!(ran.code, 1, "{ran:?}");
    assert_eq!(
        ran.stderr,
        "error: failed to build image `SOURCE_DATE_EPOCH`: `yesterday` is not a whole number of seconds since 1970-01-01\n"
    );
    assert!(!never.exists());
    // -t needs a tag.
    let ran = layerstack(&["build", "-t", s.path("out").as_str(), ctx.as_str()]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert_eq!(
        ran.stderr.lines().next().unwrap(),
        format!(
            "error: invalid value '{}' for '--tag <LAYOUT:TAG>': `{}` has no tag: LAYOUT:TAG is expected",
            s.path("out"),
            s.path("out")
        )
    );
    // A parse error: its line and column.
    let bad = s.path("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("Dockerfile"), "FROM scratch\nCOPPY a b\n").unwrap();
    let err = fails(&["build", "-t", &at, bad.as_str()], 1);
    assert!(
        err.starts_with(&format!(
            "error: failed to build image `{bad}/Dockerfile`: line 2, column 1: "
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
