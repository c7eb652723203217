//! The `layerstack` tool end to end, through the built binary: every
//! command on the demo image and on an image made by umoci, with exact
//! output, error messages and exit codes. Tests that need umoci (or root,
//! for umoci's owners) print `SKIP <test>: <reason>` and pass without it,
//! unless `LAYERSTACK_REQUIRE_TOOLS` (`LAYERSTACK_REQUIRE_ROOT`) is set.

use std::process::Command;

use camino::{Utf8Path, Utf8PathBuf};
use layerstack::oci::{Image, ImageStore, OciLayout};
use serde_json::{Value, json};

use crate::tools::{Scratch, difference, dir_tree, have, root, run, view_tree};

mod build;
#[cfg(feature = "mount")]
mod mount;
mod names;
mod rootless;

/// What one run of the tool did.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

fn layerstack_with(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_layerstack"));
    cmd.args(args).env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run layerstack");
    Ran {
        code: out.status.code().expect("an exit code"),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

fn layerstack(args: &[&str]) -> Ran {
    layerstack_with(args, &[])
}

/// Runs the tool, which must succeed silently on stderr; its stdout.
fn ok(args: &[&str]) -> String {
    let ran = layerstack(args);
    assert_eq!(ran.code, 0, "layerstack {args:?} failed: {}", ran.stderr);
    assert_eq!(ran.stderr, "", "layerstack {args:?} wrote to stderr");
    ran.stdout
}

/// Runs the tool, which must fail with `code` and print nothing on stdout;
/// its stderr.
fn fails(args: &[&str], code: i32) -> String {
    let ran = layerstack(args);
    assert_eq!(ran.code, code, "layerstack {args:?}: {ran:?}");
    assert_eq!(ran.stdout, "", "layerstack {args:?} wrote to stdout");
    ran.stderr
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON")
}

/// An image of a layout, read with the library (for the digests and sizes
/// the expected output names).
fn image(layout: &Utf8Path, tag: &str) -> Image {
    ImageStore::new(OciLayout::open(layout).unwrap())
        .image(Some(tag))
        .unwrap()
}

fn short(image: &Image, i: usize) -> String {
    image.layers()[i].digest.short()
}

fn full(image: &Image, i: usize) -> String {
    image.layers()[i].digest.to_string()
}

fn diff_id(image: &Image, i: usize) -> String {
    image.diff_ids()[i].to_string()
}

/// `1,234`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The demo's layout in a scratch directory.
fn demo(s: &Scratch) -> Utf8PathBuf {
    let dir = s.path("demo");
    ok(&["demo", dir.as_str()]);
    dir
}

/// `ls -R` of the demo image, with the image's layer digests.
fn demo_tree(img: &Image) -> String {
    let (l0, l1, l2) = (short(img, 0), short(img, 1), short(img, 2));
    format!(
        "\
MODE        OWNER  SIZE  LAYER           PATH
drwxr-xr-x  0:0       0  1 {l1}  /etc
-rw-r--r--  0:0      12  1 {l1}  /etc/app.conf
drwxr-xr-x  0:0       0  2 {l2}  /srv
drwxr-xr-x  0:0       0  2 {l2}  /srv/www
-rw-r--r--  0:0      12  2 {l2}  /srv/www/index.html
drwxr-xr-x  0:0       0  0 {l0}  /usr
drwxr-xr-x  0:0       0  0 {l0}  /usr/bin
-rwxr-xr-x  0:0      21  0 {l0}  /usr/bin/hello
lrwxrwxrwx  0:0       5  0 {l0}  /usr/bin/hi -> hello
drwxr-xr-x  0:0       0  2 {l2}  /var
drwxr-xr-x  0:0       0  2 {l2}  /var/cache
drwxr-xr-x  0:0       0  2 {l2}  /var/cache/app
-rw-r--r--  0:0      10  2 {l2}  /var/cache/app/index.db
"
    )
}

/// The demo's Dockerfile.
const DEMO_DOCKERFILE: [&str; 4] = ["FROM scratch", LINE_1, LINE_2, LINE_3];
/// The lines of the demo's Dockerfile that make its layers.
const LINE_1: &str = "COPY rootfs/ /";
const LINE_2: &str = "RUN sed -i s/80/8080/ /etc/app.conf && rm /etc/motd && rm -r /var/cache/app";
const LINE_3: &str = "RUN mkdir /var/cache/app && echo 'new index' > /var/cache/app/index.db && rm -r /srv/www && mkdir /srv/www && echo '<h1>v2</h1>' > /srv/www/index.html";
/// The history entries (`created_by`) of those lines, as BuildKit writes them.
const STEP_1: &str = "COPY rootfs/ / # buildkit";
const STEP_2: &str = "RUN /bin/sh -c sed -i s/80/8080/ /etc/app.conf && rm /etc/motd && rm -r /var/cache/app # buildkit";
const STEP_3: &str = "RUN /bin/sh -c mkdir /var/cache/app && echo 'new index' > /var/cache/app/index.db && rm -r /srv/www && mkdir /srv/www && echo '<h1>v2</h1>' > /srv/www/index.html # buildkit";

fn demo_diff(img: &Image) -> String {
    let (l0, l1, l2) = (short(img, 0), short(img, 1), short(img, 2));
    format!(
        "\
layer 0 {l0}  {STEP_1}
  A /etc
  A /etc/app.conf
  A /etc/motd
  A /srv
  A /srv/www
  A /srv/www/index.html
  A /srv/www/old.html
  A /usr
  A /usr/bin
  A /usr/bin/hello
  A /usr/bin/hi
  A /var
  A /var/cache
  A /var/cache/app
  A /var/cache/app/index.db
  A /var/cache/app/thumbs.db

layer 1 {l1}  {STEP_2}
  C /etc
  C /etc/app.conf
  D /etc/motd
  C /var
  C /var/cache
  D /var/cache/app

layer 2 {l2}  {STEP_3}
  C /srv
  C /srv/www
  C /srv/www/index.html
  D /srv/www/old.html
  C /var
  C /var/cache
  A /var/cache/app
  A /var/cache/app/index.db
"
    )
}

/// The files in `blobs/sha256` and their bytes.
fn blobs_on_disk(layout: &Utf8Path) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        files += 1;
        bytes += e.unwrap().metadata().unwrap().len();
    }
    (files, bytes)
}

#[test]
fn demo_builds_and_explains_the_image() {
    let s = Scratch::new("cli-demo");
    let dir = s.path("demo");
    let out = ok(&["demo", dir.as_str()]);
    let img = image(&dir, "demo");
    let web = image(&dir, "demo-web");
    let (l0, l1, l2, w1) = (
        short(&img, 0),
        short(&img, 1),
        short(&img, 2),
        short(&web, 1),
    );
    let size = |i: usize| thousands(img.layers()[i].size);
    let (s0, s1, s2) = (size(0), size(1), size(2));
    let referenced: u64 = [&img, &web]
        .iter()
        .flat_map(|i| {
            let mut d = vec![i.descriptor.size, i.manifest.config.size];
            d.extend(i.layers().iter().map(|l| l.size));
            d
        })
        .sum();
    let (files, stored) = blobs_on_disk(&dir);
    assert_eq!(files, 8, "2 manifests, 2 configs, 4 different layers");
    let referenced_s = thousands(referenced);
    let stored_s = thousands(stored);
    let saved = thousands(referenced - stored);
    assert_eq!(
        referenced - stored,
        img.layers()[0].size,
        "the saving is the shared layer"
    );
    let tree: String = demo_tree(&img)
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect();
    let dockerfile: String = DEMO_DOCKERFILE.iter().map(|l| format!("  {l}\n")).collect();
    let want = format!(
        "\
layerstack demo: an image built from a Dockerfile, one layer per line that
changes files, written to `{dir}` (an OCI image layout), and what is inside it.

{dockerfile}
`layerstack build`'s engine builds its FROM and COPY lines, from a context the
demo writes. A RUN runs its command inside the image, which takes a shell there
and root; this image has no shell, so the demo makes the changes each command
makes itself, as a build step in memory: nothing is mounted, nothing needs root.

Step 1: {LINE_1}
  made layer 0: {l0} ({s0} bytes, gzip)
  what it changes (as `docker diff` says it: A added, C changed, D deleted):
    A /etc
    A /etc/app.conf
    A /etc/motd
    A /srv
    A /srv/www
    A /srv/www/index.html
    A /srv/www/old.html
    A /usr
    A /usr/bin
    A /usr/bin/hello
    A /usr/bin/hi
    A /var
    A /var/cache
    A /var/cache/app
    A /var/cache/app/index.db
    A /var/cache/app/thumbs.db
  whiteouts and opaque markers in its tar: none

Step 2: {LINE_2}
  made layer 1: {l1} ({s1} bytes, gzip)
  what it changes (as `docker diff` says it: A added, C changed, D deleted):
    C /etc
    C /etc/app.conf
    D /etc/motd
    C /var
    C /var/cache
    D /var/cache/app
  whiteouts and opaque markers in its tar:
    etc/.wh.motd       whiteout: deletes /etc/motd
    var/cache/.wh.app  whiteout: deletes /var/cache/app and everything in it

Step 3: {LINE_3}
  made layer 2: {l2} ({s2} bytes, gzip)
  what it changes (as `docker diff` says it: A added, C changed, D deleted):
    C /srv
    C /srv/www
    C /srv/www/index.html
    D /srv/www/old.html
    C /var
    C /var/cache
    A /var/cache/app
    A /var/cache/app/index.db
  whiteouts and opaque markers in its tar:
    srv/www/.wh..wh..opq  opaque marker: nothing from the layers below shows in /srv/www

A layer tar can only add files, so a deletion is an empty file named
`.wh.<name>` (a whiteout), and a directory that was deleted and made again
within one step gets `.wh..wh..opq` (it is opaque). /var/cache/app was
deleted in step 2 and made again in step 3: the whiteout of layer 1 still
hides the old contents, so layer 2 needs no opaque marker for it.

The merged tree, as a container started from `demo` sees it
(LAYER: the layer each entry comes from, bottom = 0):
{tree}
A second image, `demo-web`, from a Dockerfile that starts with the same lines:
  STEP 1/3: FROM scratch
  STEP 2/3: COPY rootfs/ /
    --> layer 0 {l0}: CACHED (`demo`'s build made this step: the build cache gives its layer)
  STEP 3/3: COPY api/ /srv/api/
    --> layer 1 {w1}
  demo      layers {l0} {l1} {l2}
  demo-web  layers {l0} {w1}
  layer 0 of both is {l0}: the same step gave the same bytes (sorted entries, fixed times), so the same digest
  the two images reference 9 blobs (manifests, configs, layers): {referenced_s} bytes
  {dir}/blobs/sha256 holds 8 files (8 different digests): {stored_s} bytes
  stored once by digest, the shared layer saved {saved} bytes (1 fewer files)

Look further:
  layerstack ls {dir}:demo -R
  layerstack diff {dir}:demo
  layerstack cat {dir}:demo etc/app.conf
  layerstack inspect {dir}:demo-web
  layerstack unpack {dir}:demo rootfs
"
    );
    assert_eq!(out, want);

    // Again into the same layout: the same images, the same words.
    assert_eq!(ok(&["demo", dir.as_str()]), want);
    assert_eq!(blobs_on_disk(&dir), (files, stored));
}

#[test]
fn demo_refuses_a_directory_it_did_not_write() {
    let s = Scratch::new("cli-demo-refuse");
    let mine = s.path("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    assert_eq!(
        fails(&["demo", mine.as_str()], 1),
        format!(
            "error: failed to build image `{mine}`: the directory holds other files than an image layout; `layerstack demo` writes only into a new or empty directory, or one it wrote before\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );

    // A layout with a tag of someone else's.
    let layout = s.path("layout");
    ok(&["demo", layout.as_str()]);
    let l = OciLayout::open(&layout).unwrap();
    l.set_tag("app", l.resolve(Some("demo")).unwrap()).unwrap();
    assert_eq!(
        fails(&["demo", layout.as_str()], 1),
        format!(
            "error: failed to build image `{layout}`: the layout has the tag `app`, not one of the demo's; `layerstack demo` writes only into a new or empty directory, or one it wrote before\n"
        )
    );
}

#[test]
fn ls_lists_the_merged_tree_with_each_entry_s_layer() {
    let s = Scratch::new("cli-ls");
    let dir = demo(&s);
    let img = image(&dir, "demo");
    let at = format!("{dir}:demo");
    let (l0, l1, l2) = (short(&img, 0), short(&img, 1), short(&img, 2));

    assert_eq!(ok(&["ls", &at, "-R"]), demo_tree(&img));
    assert_eq!(ok(&["ls", &at, "/", "--recursive"]), demo_tree(&img));
    assert_eq!(
        ok(&["ls", &at]),
        format!(
            "\
MODE        OWNER  SIZE  LAYER           PATH
drwxr-xr-x  0:0       0  1 {l1}  /etc
drwxr-xr-x  0:0       0  2 {l2}  /srv
drwxr-xr-x  0:0       0  0 {l0}  /usr
drwxr-xr-x  0:0       0  2 {l2}  /var
"
        )
    );
    // A file, and a symlink, by themselves.
    assert_eq!(
        ok(&["ls", &at, "usr/bin/hi"]),
        format!(
            "\
MODE        OWNER  SIZE  LAYER           PATH
lrwxrwxrwx  0:0       5  0 {l0}  /usr/bin/hi -> hello
"
        )
    );
    assert_eq!(
        ok(&["ls", &at, "/var/cache/app/index.db"]),
        format!(
            "\
MODE        OWNER  SIZE  LAYER           PATH
-rw-r--r--  0:0      10  2 {l2}  /var/cache/app/index.db
"
        )
    );
    // Without a tag: `latest`, or the only tag; the demo layout has two.
    assert_eq!(
        json_of(&ok(&["ls", &at, "/etc", "--json"])),
        json!([{
            "path": "/etc/app.conf",
            "type": "file",
            "mode": "0644",
            "uid": 0,
            "gid": 0,
            "size": 12,
            "layer": 1,
            "layer_digest": full(&img, 1),
        }])
    );
    assert_eq!(
        json_of(&ok(&["ls", &at, "usr/bin/hi", "--json"])),
        json!([{
            "path": "/usr/bin/hi",
            "type": "symlink",
            "mode": "0777",
            "uid": 0,
            "gid": 0,
            "size": 5,
            "target": "hello",
            "layer": 0,
            "layer_digest": full(&img, 0),
        }])
    );
}

#[test]
fn cat_prints_a_file_following_symlinks_inside_the_image() {
    let s = Scratch::new("cli-cat");
    let dir = demo(&s);
    let at = format!("{dir}:demo");
    assert_eq!(ok(&["cat", &at, "etc/app.conf"]), "port = 8080\n");
    assert_eq!(ok(&["cat", &at, "/usr/bin/hi"]), "#!/bin/sh\necho hello\n");
    assert_eq!(
        fails(&["cat", &at, "etc"], 1),
        "error: failed to read `etc`: is a directory\n"
    );
}

#[test]
fn diff_lists_each_layer_s_changes() {
    let s = Scratch::new("cli-diff");
    let dir = demo(&s);
    let img = image(&dir, "demo");
    let at = format!("{dir}:demo");
    assert_eq!(ok(&["diff", &at]), demo_diff(&img));
    let one: String = demo_diff(&img).split("\n\n").nth(2).unwrap().to_owned();
    assert_eq!(ok(&["diff", &at, "--layer", "2"]), one);
    // A path keeps the changes at it and below it, in every layer.
    let (l0, l1, l2) = (short(&img, 0), short(&img, 1), short(&img, 2));
    let under_etc = format!(
        "\
layer 0 {l0}  {STEP_1}
  A /etc
  A /etc/app.conf
  A /etc/motd

layer 1 {l1}  {STEP_2}
  C /etc
  C /etc/app.conf
  D /etc/motd

layer 2 {l2}  {STEP_3}
  (no changes)
"
    );
    for arg in ["/etc", "etc/", "./etc"] {
        assert_eq!(ok(&["diff", &at, arg]), under_etc);
    }
    let change = |kind: &str, path: &str| json!({"kind": kind, "path": path});
    assert_eq!(
        json_of(&ok(&["diff", &at, "--layer", "1", "--json"])),
        json!([{
            "index": 1,
            "digest": full(&img, 1),
            "created_by": STEP_2,
            "changes": [
                change("changed", "/etc"),
                change("changed", "/etc/app.conf"),
                change("deleted", "/etc/motd"),
                change("changed", "/var"),
                change("changed", "/var/cache"),
                change("deleted", "/var/cache/app"),
            ],
        }])
    );
    assert_eq!(
        fails(&["diff", &at, "--layer", "3"], 1),
        "error: failed to open image `demo`: the image has no layer 3: its 3 layers are numbered from 0, bottom first\n"
    );
}

#[test]
fn inspect_shows_layers_sizes_history_and_sharing() {
    let s = Scratch::new("cli-inspect");
    let dir = demo(&s);
    let web = image(&dir, "demo-web");
    let img = image(&dir, "demo");
    let at = format!("{dir}:demo-web");
    let size = |i: &Image, n: usize| thousands(i.layers()[n].size);
    assert_eq!(
        ok(&["inspect", &at]),
        format!(
            "\
image       {at}
manifest    {} ({} bytes)
config      {} ({} bytes)
platform    linux/{arch}
created     1970-01-01T00:00:00Z

layer 0     {}
  DiffID      {}
  media type  application/vnd.oci.image.layer.v1.tar+gzip
  size        {} bytes compressed, 12,800 uncompressed
  created by  COPY rootfs/ / # buildkit
  shared by   demo (layer 0)

layer 1     {}
  DiffID      {}
  media type  application/vnd.oci.image.layer.v1.tar+gzip
  size        {} bytes compressed, 3,072 uncompressed
  created by  COPY api/ /srv/api/ # buildkit
  shared by   no other tag

history (bottom first)
  1970-01-01T00:00:00Z  layer 0   COPY rootfs/ / # buildkit
  1970-01-01T00:00:00Z  layer 1   COPY api/ /srv/api/ # buildkit
",
            web.descriptor.digest,
            thousands(web.descriptor.size),
            web.manifest.config.digest,
            thousands(web.manifest.config.size),
            full(&web, 0),
            diff_id(&web, 0),
            size(&web, 0),
            full(&web, 1),
            diff_id(&web, 1),
            size(&web, 1),
            arch = web.config.architecture,
        )
    );
    let v = json_of(&ok(&["inspect", &format!("{dir}:demo"), "--json"]));
    let layer = |n: usize, by: &str, uncompressed: u64, shared: Value| {
        json!({
            "index": n,
            "digest": full(&img, n),
            "diff_id": diff_id(&img, n),
            "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
            "size": img.layers()[n].size,
            "uncompressed_size": uncompressed,
            "created_by": by,
            "shared_with": shared,
        })
    };
    let history = |n: usize, by: &str| json!({"created": "1970-01-01T00:00:00Z", "created_by": by, "empty_layer": false, "layer": n});
    assert_eq!(
        v,
        json!({
            "image": format!("{dir}:demo"),
            "reference": "demo",
            "manifest": {
                "digest": img.descriptor.digest.to_string(),
                "media_type": "application/vnd.oci.image.manifest.v1+json",
                "size": img.descriptor.size,
            },
            "config": {
                "digest": img.manifest.config.digest.to_string(),
                "size": img.manifest.config.size,
            },
            "platform": format!("linux/{}", img.config.architecture),
            "created": "1970-01-01T00:00:00Z",
            "layers": [
                layer(0, STEP_1, 12_800, json!([{"tag": "demo-web", "layer": 0}])),
                layer(1, STEP_2, 4_608, json!([])),
                layer(2, STEP_3, 6_144, json!([])),
            ],
            "history": [history(0, STEP_1), history(1, STEP_2), history(2, STEP_3)],
        })
    );
}

/// The `size` line of each layer in `inspect`'s text output.
fn size_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("  size "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn inspect_reads_no_layer_and_sizes_learns_what_it_does_not_know() {
    let s = Scratch::new("cli-inspect-cache");
    let dir = demo(&s);
    let img = image(&dir, "demo");
    let at = format!("{dir}:demo");
    let known = |n: usize, len: u64| {
        format!(
            "  size        {} bytes compressed, {} uncompressed",
            thousands(img.layers()[n].size),
            thousands(len)
        )
    };
    let unknown = |n: usize| {
        format!(
            "  size        {} bytes compressed, uncompressed not known yet (--sizes reads the layer)",
            thousands(img.layers()[n].size)
        )
    };
    let all_known = vec![known(0, 12_800), known(1, 4_608), known(2, 6_144)];
    // The layers are moved away: what demo wrote is known without them.
    let blobs = dir.join("blobs/sha256");
    let away = s.path("away");
    std::fs::create_dir(&away).unwrap();
    let hide = |hidden: bool| {
        for d in img.layers() {
            let (from, to) = (blobs.join(d.digest.hex()), away.join(d.digest.hex()));
            let (from, to) = if hidden { (from, to) } else { (to, from) };
            std::fs::rename(from, to).unwrap();
        }
    };
    hide(true);
    assert_eq!(size_lines(&ok(&["inspect", &at])), all_known);

    // Without the cache, nothing is read: the sizes are not known yet...
    std::fs::remove_dir_all(dir.join(".layerstack")).unwrap();
    assert_eq!(
        size_lines(&ok(&["inspect", &at])),
        vec![unknown(0), unknown(1), unknown(2)]
    );
    let v = json_of(&ok(&["inspect", &at, "--json"]));
    for n in 0..3 {
        assert_eq!(v["layers"][n]["uncompressed_size"], Value::Null);
    }
    // ... and --sizes reads them, here failing on the missing blob.
    assert_eq!(
        fails(&["inspect", &at, "--sizes"], 1),
        format!(
            "error: failed to read blob `{}`: no such blob in `{dir}`\n",
            img.layers()[0].digest
        )
    );
    hide(false);
    assert_eq!(size_lines(&ok(&["inspect", &at, "--sizes"])), all_known);
    // What --sizes learnt is kept: known again with the layers away.
    hide(true);
    assert_eq!(size_lines(&ok(&["inspect", &at])), all_known);
    hide(false);

    // What --sizes learnt is also in the layers' indexes.
    std::fs::remove_dir_all(dir.join(".layerstack/layers")).unwrap();
    assert_eq!(size_lines(&ok(&["inspect", &at])), all_known);
    // Indexed again, with the records; then the records alone.
    std::fs::remove_dir_all(dir.join(".layerstack/index")).unwrap();
    assert_eq!(size_lines(&ok(&["inspect", &at, "--sizes"])), all_known);
    std::fs::remove_dir_all(dir.join(".layerstack/index")).unwrap();

    // A record for another DiffID, or damaged, is no record.
    let record = dir
        .join(".layerstack/layers")
        .join(format!("{}.json", img.layers()[1].digest.hex()));
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, text.replace(&diff_id(&img, 1), &diff_id(&img, 2))).unwrap();
    std::fs::write(
        dir.join(".layerstack/layers")
            .join(format!("{}.json", img.layers()[2].digest.hex())),
        "{\"digest\":",
    )
    .unwrap();
    assert_eq!(
        size_lines(&ok(&["inspect", &at])),
        vec![known(0, 12_800), unknown(1), unknown(2)]
    );

    // A symlinked cache is neither read nor written through.
    let outside = s.path("outside");
    std::fs::create_dir_all(outside.join("layers")).unwrap();
    std::fs::write(
        outside
            .join("layers")
            .join(format!("{}.json", img.layers()[0].digest.hex())),
        json!({"digest": full(&img, 0), "diff_id": diff_id(&img, 0), "uncompressed_size": 1})
            .to_string(),
    )
    .unwrap();
    std::fs::remove_dir_all(dir.join(".layerstack")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join(".layerstack")).unwrap();
    assert_eq!(size_lines(&ok(&["inspect", &at, "--sizes"])), all_known);
    assert_eq!(
        std::fs::read_dir(outside.join("layers")).unwrap().count(),
        1,
        "nothing written through the symlink"
    );
    assert_eq!(
        size_lines(&ok(&["inspect", &at])),
        vec![unknown(0), unknown(1), unknown(2)]
    );
}

#[test]
fn errors_name_the_operation_and_the_path_and_exit_1() {
    let s = Scratch::new("cli-errors");
    let dir = demo(&s);
    let missing = s.path("nowhere");
    let at = format!("{dir}:demo");
    for cmd in [
        vec!["ls", missing.as_str()],
        vec!["cat", missing.as_str(), "etc/app.conf"],
        vec!["diff", missing.as_str()],
        vec!["inspect", missing.as_str()],
    ] {
        assert_eq!(
            fails(&cmd, 1),
            format!(
                "error: failed to open image `{missing}`: not an OCI image layout (no `oci-layout` file)\n"
            ),
            "{cmd:?}"
        );
    }
    let unknown = format!("{dir}:v9");
    for cmd in [
        vec!["ls", unknown.as_str()],
        vec!["diff", unknown.as_str()],
        vec!["inspect", unknown.as_str()],
    ] {
        assert_eq!(
            fails(&cmd, 1),
            format!(
                "error: failed to open image `v9`: no such tag in `{dir}` (tags: demo, demo-web)\n"
            ),
            "{cmd:?}"
        );
    }
    // Two tags and none is `latest`: a tag is needed.
    assert_eq!(
        fails(&["ls", dir.as_str()], 1),
        format!(
            "error: failed to open image `{dir}`: no tag given, no `latest` tag, and several tags: demo, demo-web\n"
        )
    );
    assert_eq!(
        fails(&["ls", &at, "etc/motd"], 1),
        "error: failed to read metadata of `etc/motd`: no such file or directory\n"
    );
    assert_eq!(
        fails(&["cat", &at, "/var/cache/app/thumbs.db"], 1),
        "error: failed to read `/var/cache/app/thumbs.db`: no such file or directory\n"
    );
    assert_eq!(
        fails(&["commit", &at, missing.as_str(), "--tag", "x"], 1),
        format!("error: failed to open `{missing}`: no such file or directory\n")
    );
    // The target of unpack must be new or empty: nothing is overwritten.
    let full = s.path("full");
    std::fs::create_dir_all(full.join("keep")).unwrap();
    assert_eq!(
        fails(&["unpack", &at, full.as_str()], 1),
        format!("error: failed to flatten into `{full}`: the target directory is not empty\n")
    );
    assert!(full.join("keep").is_dir());
}

#[test]
fn help_exits_0_and_bad_usage_exits_2() {
    let help = ok(&["--help"]);
    for line in [
        "Usage: layerstack <COMMAND>",
        "  demo     Build a small image from a Dockerfile and show its layers, their whiteouts, the merged tree and a base layer shared through the cache",
        "  layerstack ls ./layerstack-demo:demo -R   every file, with the layer it comes from",
    ] {
        assert!(
            help.lines().any(|l| l == line),
            "--help lacks {line:?}:\n{help}"
        );
    }
    for cmd in ["demo", "unpack", "ls", "cat", "diff", "inspect", "commit"] {
        let help = ok(&[cmd, "--help"]);
        assert!(
            help.contains("Examples:\n  layerstack "),
            "{cmd} --help:\n{help}"
        );
    }
    assert!(ok(&["--version"]).starts_with("layerstack "));

    let usage = |args: &[&str], first_line: &str| {
        let err = fails(args, 2);
        assert_eq!(err.lines().next(), Some(first_line), "{args:?}: {err}");
    };
    // No command: the help, on stderr.
    let err = fails(&[], 2);
    assert!(
        err.lines().any(|l| l == "Usage: layerstack <COMMAND>"),
        "{err}"
    );
    usage(
        &["frobnicate"],
        "error: unrecognized subcommand 'frobnicate'",
    );
    usage(
        &["ls"],
        "error: the following required arguments were not provided:",
    );
    usage(
        &["ls", "img:"],
        "error: invalid value 'img:' for '<IMAGE>': `img:` has an empty tag after its last `:` (a layout directory whose name ends in `:` is written `img:/`)",
    );
    usage(
        &["diff", "img", "--layer", "top"],
        "error: invalid value 'top' for '--layer <N>': invalid digit found in string",
    );
    usage(
        &["commit", "img", "dir"],
        "error: the following required arguments were not provided:",
    );
}

// ---- images made by umoci ----------------------------------------------

/// An image made by umoci: `base` with one layer (files of each kind, a
/// hard link), `v2` adding a layer that changes a file and deletes a file
/// and a directory.
fn umoci_image(s: &Scratch) -> Utf8PathBuf {
    let layout = s.path("umoci");
    let bundle = s.path("bundle");
    let rootfs = bundle.join("rootfs");
    run(Command::new("umoci").args(["init", "--layout", layout.as_str()]));
    run(Command::new("umoci").args(["new", "--image", &format!("{layout}:base")]));
    run(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{layout}:base"),
        bundle.as_str(),
    ]));
    let write = |path: &str, data: &str| {
        let at = rootfs.join(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, data).unwrap();
    };
    write("etc/app.conf", "port = 80\n");
    write("etc/motd", "hi\n");
    write("usr/bin/tool", "#!/bin/sh\n");
    write("var/lib/app/data", "x\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        rootfs.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("tool", rootfs.join("usr/bin/t")).unwrap();
    std::fs::hard_link(rootfs.join("usr/bin/tool"), rootfs.join("usr/bin/tool2")).unwrap();
    run(Command::new("umoci").args([
        "repack",
        "--refresh-bundle",
        "--image",
        &format!("{layout}:base"),
        bundle.as_str(),
    ]));
    std::fs::remove_file(rootfs.join("etc/motd")).unwrap();
    std::fs::remove_dir_all(rootfs.join("var/lib/app")).unwrap();
    write("etc/app.conf", "port = 8080\n");
    run(Command::new("umoci").args([
        "repack",
        "--image",
        &format!("{layout}:v2"),
        bundle.as_str(),
    ]));
    layout
}

#[test]
fn ls_diff_cat_and_inspect_read_an_image_umoci_made() {
    let test = "ls_diff_cat_and_inspect_read_an_image_umoci_made";
    if !have("umoci", test) || !root(test) {
        return;
    }
    let s = Scratch::new("cli-umoci");
    let layout = umoci_image(&s);
    let img = image(&layout, "v2");
    let at = format!("{layout}:v2");
    let (l0, l1) = (short(&img, 0), short(&img, 1));
    assert_eq!(
        ok(&["ls", &at, "-R"]),
        format!(
            "\
MODE        OWNER  SIZE  LAYER           PATH
drwxr-xr-x  0:0       0  1 {l1}  /etc
-rw-r--r--  0:0      12  1 {l1}  /etc/app.conf
drwxr-xr-x  0:0       0  0 {l0}  /usr
drwxr-xr-x  0:0       0  0 {l0}  /usr/bin
lrwxrwxrwx  0:0       4  0 {l0}  /usr/bin/t -> tool
-rwxr-xr-x  0:0      10  0 {l0}  /usr/bin/tool
-rwxr-xr-x  0:0      10  0 {l0}  /usr/bin/tool2
drwxr-xr-x  0:0       0  1 {l1}  /var
drwxr-xr-x  0:0       0  1 {l1}  /var/lib
"
        )
    );
    assert_eq!(
        ok(&["diff", &at]),
        format!(
            "\
layer 0 {l0}  umoci repack
  A /etc
  A /etc/app.conf
  A /etc/motd
  A /usr
  A /usr/bin
  A /usr/bin/t
  A /usr/bin/tool
  A /usr/bin/tool2
  A /var
  A /var/lib
  A /var/lib/app
  A /var/lib/app/data

layer 1 {l1}  umoci repack
  C /etc
  C /etc/app.conf
  D /etc/motd
  C /var
  C /var/lib
  D /var/lib/app
"
        )
    );
    assert_eq!(ok(&["cat", &at, "usr/bin/t"]), "#!/bin/sh\n");
    assert_eq!(ok(&["cat", &at, "etc/app.conf"]), "port = 8080\n");

    let v = json_of(&ok(&["inspect", &at, "--json"]));
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for (n, l) in layers.iter().enumerate() {
        assert_eq!(l["digest"], json!(full(&img, n)));
        assert_eq!(l["diff_id"], json!(diff_id(&img, n)));
        assert_eq!(l["size"], json!(img.layers()[n].size));
        assert_eq!(l["created_by"], json!("umoci repack"));
    }
    // The uncompressed sizes, counted here on their own.
    let tar_len = |n: usize| {
        let blob = OciLayout::open(&layout)
            .unwrap()
            .read_blob(&img.layers()[n].digest, Some(img.layers()[n].size), 1 << 20)
            .unwrap();
        let mut tar = layerstack::oci::Decompressor::new(&blob[..]).unwrap();
        std::io::copy(&mut tar, &mut std::io::sink()).unwrap()
    };
    assert_eq!(layers[0]["uncompressed_size"], json!(tar_len(0)));
    assert_eq!(layers[1]["uncompressed_size"], json!(tar_len(1)));
    assert_eq!(
        layers[0]["shared_with"],
        json!([{"tag": "base", "layer": 0}])
    );
    assert_eq!(layers[1]["shared_with"], json!([]));
    let created: Vec<Value> = img
        .config
        .history
        .iter()
        .enumerate()
        .map(|(n, h)| {
            json!({"created": h.created, "created_by": "umoci repack", "empty_layer": false, "layer": n})
        })
        .collect();
    assert_eq!(v["history"], Value::Array(created));
}

/// Unpacks `image` with umoci; the rootfs.
fn umoci_unpack(image: &str, bundle: &Utf8Path) -> Utf8PathBuf {
    run(Command::new("umoci").args(["unpack", "--image", image, bundle.as_str()]));
    bundle.join("rootfs")
}

#[test]
fn commit_appends_an_edited_rootfs_as_one_layer() {
    let test = "commit_appends_an_edited_rootfs_as_one_layer";
    if !have("umoci", test) || !root(test) {
        return;
    }
    let s = Scratch::new("cli-commit");
    let dir = demo(&s);
    let at = format!("{dir}:demo");
    let rootfs = umoci_unpack(&at, &s.path("bundle"));

    // Unchanged: no layer, only a history entry.
    assert_eq!(
        ok(&["commit", &at, rootfs.as_str(), "--tag", "same"]),
        format!("{rootfs} is what {at} shows: {dir}:same has no new layer, only a history entry\n")
    );
    let same = image(&dir, "same");
    assert_eq!(same.layers(), image(&dir, "demo").layers());
    assert_eq!(same.config.history.len(), 4);
    assert!(same.config.history[3].empty_layer);

    // Edited: a file changed, a symlink deleted, a directory added.
    std::fs::write(rootfs.join("etc/app.conf"), "port = 9090\n").unwrap();
    std::fs::remove_file(rootfs.join("usr/bin/hi")).unwrap();
    std::fs::create_dir(rootfs.join("srv/api")).unwrap();
    std::fs::write(rootfs.join("srv/api/health"), "ok\n").unwrap();
    let ran = layerstack_with(
        &["commit", &at, rootfs.as_str(), "--tag", "edited"],
        &[("SOURCE_DATE_EPOCH", "0")],
    );
    assert_eq!((ran.code, ran.stderr.as_str()), (0, ""));
    let edited = image(&dir, "edited");
    assert_eq!(edited.layers().len(), 4);
    assert_eq!(edited.layers()[..3], image(&dir, "demo").layers()[..]);
    let l3 = short(&edited, 3);
    let changes = "  C /etc
  C /etc/app.conf
  C /srv
  A /srv/api
  A /srv/api/health
  C /usr
  C /usr/bin
  D /usr/bin/hi
";
    assert_eq!(
        ran.stdout,
        format!(
            "{dir}:edited: layer 3 {l3} ({} bytes) on {at}\n{changes}",
            thousands(edited.layers()[3].size)
        )
    );
    assert_eq!(
        ok(&["diff", &format!("{dir}:edited"), "--layer", "3"]),
        format!("layer 3 {l3}  layerstack commit\n{changes}")
    );
    assert_eq!(
        edited.config.created.as_deref(),
        Some("1970-01-01T00:00:00Z")
    );

    // umoci unpacks the new image to the tree that was committed.
    let again = umoci_unpack(&format!("{dir}:edited"), &s.path("bundle2"));
    if let Some(d) = difference(
        &dir_tree(rootfs.as_std_path()),
        &dir_tree(again.as_std_path()),
    ) {
        panic!("the committed image unpacks differently: {d}");
    }
}

#[test]
fn unpack_writes_the_tree_the_image_shows() {
    let s = Scratch::new("cli-unpack");
    let dir = demo(&s);
    let rootfs = s.path("rootfs");
    assert_eq!(
        ok(&["unpack", &format!("{dir}:demo"), rootfs.as_str()]),
        format!(
            "unpacked {dir}:demo into {rootfs}: 4 files, 8 directories, 1 symlink, 0 hard links, 0 special files, 55 bytes\n\
             8 entries of lower layers never written: a higher layer deletes or replaces them\n"
        )
    );
    let store = ImageStore::new(OciLayout::open(&dir).unwrap());
    let img = store.image(Some("demo")).unwrap();
    let want = view_tree(&store.container(&img).unwrap());
    if let Some(d) = difference(&want, &dir_tree(rootfs.as_std_path())) {
        panic!("unpack of the demo image: {d}");
    }

    let test = "unpack_writes_the_tree_the_image_shows (umoci)";
    if !have("umoci", test) || !root(test) {
        return;
    }
    let layout = umoci_image(&s);
    let ours = s.path("ours");
    ok(&["unpack", &format!("{layout}:v2"), ours.as_str()]);
    let theirs = umoci_unpack(&format!("{layout}:v2"), &s.path("theirs"));
    if let Some(d) = difference(
        &dir_tree(theirs.as_std_path()),
        &dir_tree(ours.as_std_path()),
    ) {
        panic!("unpack of the umoci image, against umoci's: {d}");
    }
}

#[test]
fn unpack_path_writes_one_path_of_the_image() {
    let s = Scratch::new("cli-unpack-path");
    let dir = demo(&s);
    let at = format!("{dir}:demo");
    let out = s.path("out");
    assert_eq!(
        ok(&["unpack", "--path", "etc/app.conf", &at, out.as_str()]),
        format!(
            "unpacked etc/app.conf of {at} into {out}: 1 file, 1 directory, 0 symlinks, 0 special files, 12 bytes\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(out.join("etc/app.conf")).unwrap(),
        "port = 8080\n"
    );
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["etc"]);
    // A directory with everything under it, as the image shows it.
    let usr = s.path("usr");
    ok(&["unpack", "--path", "/usr", &at, usr.as_str()]);
    assert_eq!(
        std::fs::read_to_string(usr.join("usr/bin/hi")).unwrap(),
        "#!/bin/sh\necho hello\n"
    );
    let err = fails(
        &["unpack", "--path", "nope", &at, s.path("none").as_str()],
        1,
    );
    assert!(
        err.starts_with("error: ") && err.contains("`nope`"),
        "{err}"
    );
    // Not with --rootless.
    let both = layerstack(&[
        "unpack",
        "--rootless",
        "--path",
        "etc",
        &at,
        s.path("r").as_str(),
    ]);
    assert_eq!(both.code, 2, "{both:?}");
}

#[test]
fn unpack_path_takes_trailing_slashes_and_keeps_to_its_own_work_directory() {
    let s = Scratch::new("cli-unpack-path-slash");
    let dir = demo(&s);
    let at = format!("{dir}:demo");
    // Another process's work directory beside the target.
    let theirs = s.path("out.layerstack-work.1");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("theirs"), "x").unwrap();
    let out = format!("{}/", s.path("out"));
    assert_eq!(
        ok(&["unpack", "--path", "etc/", &at, &out]),
        format!(
            "unpacked etc/ of {at} into {out}: 1 file, 1 directory, 0 symlinks, 0 special files, 12 bytes\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(s.path("out/etc/app.conf")).unwrap(),
        "port = 8080\n"
    );
    // Its own work directory is gone, the other's is as it was.
    let mut beside: Vec<String> = std::fs::read_dir(s.path("."))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("out"))
        .collect();
    beside.sort();
    assert_eq!(beside, ["out", "out.layerstack-work.1"]);
    assert_eq!(std::fs::read_to_string(theirs.join("theirs")).unwrap(), "x");
}

#[test]
fn analyze_counts_what_each_layer_ships_keeps_and_wastes() {
    let s = Scratch::new("cli-analyze");
    let dir = demo(&s);
    let img = image(&dir, "demo");
    let reference = format!("{dir}:demo");
    let size = |i: usize| img.layers()[i].size.to_string();
    let text = ok(&["analyze", &reference]);
    let lines: Vec<&str> = text.lines().collect();
    let compressed: u64 = img.layers().iter().map(|d| d.size).sum();
    assert_eq!(
        lines[0],
        format!(
            "{reference}: 3 layers ship 152 bytes ({compressed} compressed); 55 bytes visible, 97 wasted: efficiency 36.2%"
        )
    );
    let row = |i: usize, shipped: &str, adds: &str, wastes: &str, cmd: &str| {
        format!(
            "{i:>5}  {:<19}  {shipped:>13}  {:>13}  {adds:>13}  {wastes:>13}  {cmd}",
            &full(&img, i)[..19],
            size(i)
        )
    };
    assert_eq!(lines[3], row(0, "118", "21", "0", STEP_1));
    assert!(
        lines[4].starts_with(&row(1, "12", "12", "67", "RUN /bin/sh -c sed")),
        "{}",
        lines[4]
    );
    assert!(
        lines[5].starts_with(&row(2, "22", "22", "30", "RUN /bin/sh -c mkdir")),
        "{}",
        lines[5]
    );
    assert_eq!(
        lines[7..14],
        [
            "largest wasted paths:",
            "           32  etc/motd  (layer 0: deleted in layer 1)",
            "           18  srv/www/old.html  (layer 0: hidden by an opaque directory in layer 2)",
            "           15  var/cache/app/thumbs.db  (layer 0: deleted in layer 1)",
            "           12  srv/www/index.html  (layer 0: hidden by an opaque directory in layer 2)",
            "           10  etc/app.conf  (layer 0: overwritten in layer 1)",
            "           10  var/cache/app/index.db  (layer 0: deleted in layer 1)",
        ]
    );

    let j = json_of(&ok(&["analyze", &reference, "--json"]));
    assert_eq!(
        (&j["shipped"], &j["visible"], &j["wasted"]),
        (&json!(152), &json!(55), &json!(97))
    );
    assert_eq!(
        j["wasted_paths"][0],
        json!({"path": "etc/motd", "wasted": 32,
               "copies": [{"layer": 0, "bytes": 32, "reason": "deleted", "by": 1}]})
    );

    // The picture is well-formed and shows the text's figures.
    let svg = s.path("layers.svg");
    ok(&["analyze", &reference, "--svg", svg.as_str()]);
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(picture.ends_with("</svg>\n"));
    assert_eq!(
        picture.matches("<text").count(),
        picture.matches("</text>").count()
    );
    for shown in [
        "efficiency 36.2%",
        "shipped 152 bytes, visible 55, wasted 97",
        "21 of 118 visible",
        "etc/motd  (layer 0: deleted in layer 1)",
    ] {
        assert!(picture.contains(shown), "the picture lacks `{shown}`");
    }
}

#[test]
fn analyze_ci_fails_naming_the_broken_rule() {
    let s = Scratch::new("cli-analyze-ci");
    let dir = demo(&s);
    let reference = format!("{dir}:demo");
    let ran = layerstack(&["analyze", &reference, "--ci"]);
    assert_eq!(ran.code, 1);
    assert!(
        ran.stdout.contains("efficiency 36.2%"),
        "the report is printed"
    );
    assert_eq!(
        ran.stderr,
        format!(
            "error: failed to analyze image `{reference}`: efficiency 36.2% is below --min-efficiency 90.0%\n"
        )
    );
    let ran = layerstack(&["analyze", &reference, "--ci", "--max-wasted-bytes", "50"]);
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr
            .contains("97 wasted bytes are over --max-wasted-bytes 50"),
        "{}",
        ran.stderr
    );
    // Paths wasting less than 20 bytes do not count: 32 are left.
    ok(&[
        "analyze",
        &reference,
        "--ci",
        "--max-wasted-bytes",
        "50",
        "--ignore-below",
        "20",
    ]);
    // The web image over the demo's base wastes nothing of its own.
    let web = format!("{dir}:demo-web");
    let text = ok(&["analyze", &web, "--base-image", &reference, "--ci"]);
    assert!(
        text.contains("user layers (1 and up): ship 3 bytes, waste 0 (0.0%)"),
        "{text}"
    );
    let usage = layerstack(&["analyze", &reference, "--min-efficiency", "0.5"]);
    assert_eq!(usage.code, 2, "a rule without --ci is a usage error");
}

/// Tags `tag` as `img` with the DiffID of layer `i` replaced by another's:
/// its bytes no longer match what the config promises.
fn tamper_diff_id(dir: &Utf8Path, img: &Image, i: usize, tag: &str) {
    use layerstack::oci::Descriptor;
    use layerstack::oci::media_type;
    let layout = OciLayout::open(dir).unwrap();
    let mut config = img.config.clone();
    config.diff_ids[i] = layerstack::oci::Digest::of(b"not this layer");
    let bytes = config.to_json();
    let (digest, size) = layout.put_blob(&bytes).unwrap();
    let mut manifest = img.manifest.clone();
    manifest.config = Descriptor::new(media_type::OCI_CONFIG, digest, size);
    let bytes = manifest.to_json();
    let (digest, size) = layout.put_blob(&bytes).unwrap();
    layout
        .set_tag(tag, Descriptor::new(media_type::OCI_MANIFEST, digest, size))
        .unwrap();
}

#[test]
fn unpack_checks_diff_ids_and_leaves_nothing_when_it_fails() {
    let s = Scratch::new("cli-unpack-tampered");
    let dir = demo(&s);
    let img = image(&dir, "demo");
    let top = img.layers().len() - 1;
    tamper_diff_id(&dir, &img, top, "tampered");
    let at = format!("{dir}:tampered");

    // A new target: not created, and no staging directory left beside it.
    let rootfs = s.path("rootfs");
    let err = fails(&["unpack", &at, rootfs.as_str()], 1);
    let want = img.diff_ids()[top];
    assert_eq!(
        err,
        format!(
            "error: failed to flatten into `{rootfs}` in layer {top}: the layer's DiffID is {want} but the config says {}; nothing was written (`{rootfs}` was not created)\n",
            layerstack::oci::Digest::of(b"not this layer")
        )
    );
    assert!(!rootfs.exists());
    let left: Vec<_> = std::fs::read_dir(&s.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("layerstack-unpack"))
        .collect();
    assert_eq!(left, Vec::<String>::new());

    // An empty target the user made stays, empty.
    let empty = s.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = fails(&["unpack", &at, empty.as_str()], 1);
    assert!(
        err.ends_with(&format!("; `{empty}` was left as it was\n")),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

    // The untampered image unpacks into the empty directory.
    ok(&["unpack", &format!("{dir}:demo"), empty.as_str()]);
    assert!(empty.join("etc").is_dir());
}

#[test]
fn ls_and_diff_escape_control_bytes_in_names_and_json_keeps_them() {
    use layerstack::MemLayer;
    use layerstack::oci::BuildOptions;
    let s = Scratch::new("cli-escape");
    let dir = s.path("layout");
    let store = ImageStore::new(OciLayout::create(&dir).unwrap());
    let mut b = store.builder(None, BuildOptions::new()).unwrap();
    let mut layer = MemLayer::new();
    layer
        .add_file("evil\n-rw-r--r--  0:0  1  0 forged", "x")
        .unwrap();
    layer.add_file("\x1b[31mred", "y").unwrap();
    b.add_layer_from(layer, "names").unwrap();
    b.finish("names").unwrap();
    let at = format!("{dir}:names");

    let ls = ok(&["ls", &at]);
    assert_eq!(ls.lines().count(), 3, "{ls}");
    assert!(ls.contains("/\\033[31mred\n"), "{ls}");
    assert!(
        ls.contains("/evil\\n-rw-r--r--  0:0  1  0 forged\n"),
        "{ls}"
    );
    assert!(!ls.contains('\x1b'));

    let diff = ok(&["diff", &at]);
    assert!(diff.contains("  A /\\033[31mred\n"), "{diff}");
    assert!(
        diff.contains("  A /evil\\n-rw-r--r--  0:0  1  0 forged\n"),
        "{diff}"
    );

    let json = json_of(&ok(&["ls", "--json", &at]));
    let paths: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/\x1b[31mred"), "{paths:?}");
}

#[test]
fn import_reads_a_docker_save_archive_into_a_layout() {
    let s = Scratch::new("cli-import");
    // A legacy `docker save` archive of the demo image's bottom layer.
    let demo_dir = demo(&s);
    let img = image(&demo_dir, "demo");
    let layout = OciLayout::open(&demo_dir).unwrap();
    let blob = |d: &layerstack::oci::Digest| std::fs::read(layout.blob_path(d)).unwrap();
    let mut config = img.config.clone();
    config.diff_ids.truncate(1);
    config.history.clear();
    let config = config.to_json();
    let layer = &img.layers()[0];
    let mut layer_bytes = Vec::new();
    let compressed = blob(&layer.digest);
    let mut d = layerstack::oci::Decompressor::new(&compressed[..]).unwrap();
    std::io::Read::read_to_end(&mut d, &mut layer_bytes).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add("l0/layer.tar", &layer_bytes);
    add("config.json", &config);
    add(
        "manifest.json",
        br#"[{"Config":"config.json","RepoTags":["base:1"],"Layers":["l0/layer.tar"]}]"#,
    );
    let archive = s.path("base.tar");
    std::fs::write(&archive, b.into_inner().unwrap()).unwrap();

    let out = s.path("out");
    assert_eq!(
        ok(&["import", archive.as_str(), &format!("{out}:mine")]),
        format!("imported {archive} into {out}: 1 image, tagged 1, mine\n")
    );
    let listed = ok(&["ls", &format!("{out}:mine")]);
    assert!(
        listed.contains("/etc\n") || listed.contains("/etc "),
        "{listed}"
    );

    // An archive that lists no image says so.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest.json", &b"[]\n"[..])
        .unwrap();
    let empty = s.path("empty.tar");
    std::fs::write(&empty, b.into_inner().unwrap()).unwrap();
    assert_eq!(
        fails(&["import", empty.as_str(), s.path("out2").as_str()], 1),
        "error: failed to open image `manifest.json`: it lists no images (`[]`): the archive holds nothing to import\n"
    );
}
