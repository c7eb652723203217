//! `COPY`/`ADD` rules, one test each, with exact outcomes.

use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use camino::{Utf8Path, Utf8PathBuf};

use super::*;
use crate::layer::Layer;
use crate::layer::mem::MemLayer;
use crate::oci::tar::compress::{Compression, Compressor};
use crate::testing::RawTar;

/// A directory under the system's temporary directory, removed on drop.
struct Scratch(Utf8PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("layerstack-copy-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(Utf8PathBuf::from_path_buf(dir).expect("UTF-8 temp dir"))
    }

    fn path(&self, rel: &str) -> Utf8PathBuf {
        self.0.join(rel)
    }

    fn write(&self, rel: &str, data: &[u8], mode: u32) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        set_mode(&p, mode);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn set_mode(p: &Utf8Path, mode: u32) {
    rustix::fs::chmod(p.as_std_path(), Mode::from_raw_mode(mode)).unwrap();
}

fn set_mtime(p: &Utf8Path, sec: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p.as_std_path(),
        &times,
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// The context of most tests:
///
/// ```text
/// a.txt            "alpha" 0640, mtime 1000
/// b.txt            "bravo" 0600
/// c.md             "charlie"
/// sub/             0750, mtime 2000
/// sub/one          "one" 0755 (hard link to sub/two)
/// sub/two
/// sub/link -> one
/// sub/deep/x.txt   "x"
/// secret.key       ignored
/// Dockerfile       "FROM scratch\n"
/// latin1\xe9       "latin"
/// up -> ../../../etc  (resolves to the context root's etc: missing)
/// abs -> /sub       (resolves to the context's sub)
/// ```
fn context() -> Scratch {
    let s = Scratch::new();
    s.write("a.txt", b"alpha", 0o640);
    set_mtime(&s.path("a.txt"), 1000);
    s.write("b.txt", b"bravo", 0o600);
    s.write("c.md", b"charlie", 0o644);
    s.write("sub/one", b"one", 0o755);
    std::fs::hard_link(s.path("sub/one"), s.path("sub/two")).unwrap();
    std::os::unix::fs::symlink("one", s.path("sub/link")).unwrap();
    s.write("sub/deep/x.txt", b"x", 0o644);
    set_mode(&s.path("sub"), 0o750);
    set_mtime(&s.path("sub"), 2000);
    s.write("secret.key", b"hunter2", 0o600);
    s.write("Dockerfile", b"FROM scratch\n", 0o644);
    s.write(".dockerignore", b"*.key\n", 0o644);
    let latin =
        s.0.as_std_path()
            .join(std::ffi::OsStr::from_bytes(b"latin1\xe9"));
    std::fs::write(latin, b"latin").unwrap();
    std::os::unix::fs::symlink("../../../etc", s.path("up")).unwrap();
    std::os::unix::fs::symlink("/sub", s.path("abs")).unwrap();
    s
}

fn ignore() -> Ignore {
    Ignore::parse("*.key\n").unwrap()
}

fn empty_view() -> MergedView {
    MergedView::new(Vec::new(), MemLayer::new()).unwrap()
}

fn copy(
    view: &MergedView,
    ctx: &Scratch,
    sources: &[&str],
    dest: &str,
    workdir: &str,
    options: &CopyOptions,
) -> Result<()> {
    let ignore = ignore();
    let source = CopySource::Context {
        root: &ctx.0,
        ignore: &ignore,
    };
    let sources: Vec<String> = sources.iter().map(|s| (*s).to_owned()).collect();
    copy_into(
        view,
        &source,
        &sources,
        dest,
        workdir,
        options,
        &mut |_, _| {},
    )
}

fn names(view: &MergedView, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = view
        .read_dir(dir)
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string())
        .collect();
    v.sort();
    v
}

fn mode_owner(view: &MergedView, path: &str) -> (u32, u32, u32) {
    let m = view.symlink_metadata(path).unwrap();
    (m.mode, m.uid, m.gid)
}

#[test]
fn a_directory_source_copies_its_contents_with_their_metadata() {
    let ctx = context();
    let view = empty_view();
    copy(&view, &ctx, &["."], "/app/", "/", &CopyOptions::default()).unwrap();
    assert_eq!(
        names(&view, "app"),
        [
            ".dockerignore",
            "Dockerfile",
            "a.txt",
            "abs",
            "b.txt",
            "c.md",
            "latin1\\351",
            "sub",
            "up"
        ]
    );
    assert!(!view.exists("app/secret.key").unwrap());
    assert_eq!(view.read("app/a.txt").unwrap(), &b"alpha"[..]);
    assert_eq!(
        view.read(Name::new(b"app/latin1\xe9")).unwrap(),
        &b"latin"[..]
    );
    assert_eq!(mode_owner(&view, "app/a.txt"), (0o640, 0, 0));
    assert_eq!(view.metadata("app/a.txt").unwrap().mtime.sec, 1000);
    assert_eq!(mode_owner(&view, "app/sub"), (0o750, 0, 0));
    assert_eq!(view.metadata("app/sub").unwrap().mtime.sec, 2000);
    assert_eq!(names(&view, "app/sub"), ["deep", "link", "one", "two"]);
    assert_eq!(view.read_link("app/sub/link").unwrap(), "one");
    assert_eq!(view.read_link("app/up").unwrap(), "../../../etc");
    let (one, two) = (
        view.metadata("app/sub/one").unwrap(),
        view.metadata("app/sub/two").unwrap(),
    );
    assert_eq!((one.ino, one.nlink, two.nlink), (two.ino, 2, 2));
    assert_eq!(mode_owner(&view, "app/sub/one"), (0o755, 0, 0));
    // The destination named with a `/` is made by MkdirAll: 0755, root.
    assert_eq!(mode_owner(&view, "app"), (0o755, 0, 0));
}

#[test]
fn context_owners_become_root_and_chown_applies_to_everything_with_parents() {
    let ctx = context();
    rustix::fs::chown(
        ctx.path("a.txt").as_std_path(),
        Some(rustix::fs::Uid::from_raw(4321)),
        Some(rustix::fs::Gid::from_raw(4321)),
    )
    .ok();
    let view = empty_view();
    copy(
        &view,
        &ctx,
        &["a.txt"],
        "/plain",
        "/",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(mode_owner(&view, "plain"), (0o640, 0, 0));
    let options = CopyOptions {
        chown: Some((1000, 1001)),
        ..CopyOptions::default()
    };
    copy(&view, &ctx, &["sub"], "/x/y/z", "/", &options).unwrap();
    assert_eq!(mode_owner(&view, "x"), (0o755, 1000, 1001));
    assert_eq!(mode_owner(&view, "x/y"), (0o755, 1000, 1001));
    assert_eq!(mode_owner(&view, "x/y/z"), (0o750, 1000, 1001));
    assert_eq!(mode_owner(&view, "x/y/z/deep/x.txt"), (0o644, 1000, 1001));
    // A symlink gets the ids and the mtime itself, not its target.
    set_mtime(&ctx.path("sub/link"), 3000);
    copy(&view, &ctx, &["sub"], "/l", "/", &options).unwrap();
    let link = view.symlink_metadata("l/link").unwrap();
    assert_eq!((link.uid, link.gid, link.mtime.sec), (1000, 1001, 3000));
    assert_ne!(view.metadata("l/one").unwrap().mtime.sec, 3000);
}

#[test]
fn chmod_sets_files_and_directories() {
    let ctx = context();
    let view = empty_view();
    let options = CopyOptions {
        chmod: Some(0o700),
        ..CopyOptions::default()
    };
    copy(&view, &ctx, &["sub"], "/s", "/", &options).unwrap();
    assert_eq!(mode_owner(&view, "s").0, 0o700);
    assert_eq!(mode_owner(&view, "s/deep").0, 0o700);
    assert_eq!(mode_owner(&view, "s/deep/x.txt").0, 0o700);
    assert_eq!(view.read_link("s/link").unwrap(), "one");
}

#[test]
fn destination_forms() {
    let ctx = context();
    let view = empty_view();
    // No trailing slash: the new file's name.
    copy(
        &view,
        &ctx,
        &["a.txt"],
        "renamed",
        "/work",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(view.read("work/renamed").unwrap(), &b"alpha"[..]);
    // A trailing slash: inside.
    copy(
        &view,
        &ctx,
        &["a.txt"],
        "into/",
        "/work",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(view.read("work/into/a.txt").unwrap(), &b"alpha"[..]);
    // An existing directory: inside.
    copy(
        &view,
        &ctx,
        &["b.txt"],
        "/work/into",
        "/",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(view.read("work/into/b.txt").unwrap(), &b"bravo"[..]);
    // `.` is the workdir, a directory.
    copy(
        &view,
        &ctx,
        &["c.md"],
        ".",
        "/work",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(view.read("work/c.md").unwrap(), &b"charlie"[..]);
    // `..` and a leading `/` in a source stay in the context.
    copy(
        &view,
        &ctx,
        &["../../a.txt"],
        "/clamped",
        "/",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(view.read("clamped").unwrap(), &b"alpha"[..]);
    copy(
        &view,
        &ctx,
        &["/b.txt"],
        "/abs-src",
        "/",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(view.read("abs-src").unwrap(), &b"bravo"[..]);
}

#[test]
fn globs_and_several_sources() {
    let ctx = context();
    let view = empty_view();
    copy(&view, &ctx, &["*.txt"], "/t/", "/", &CopyOptions::default()).unwrap();
    assert_eq!(names(&view, "t"), ["a.txt", "b.txt"]);
    copy(
        &view,
        &ctx,
        &["s?b/d*/*.txt", "c.md"],
        "/g/",
        "/",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(names(&view, "g"), ["c.md", "x.txt"]);
    // The ignored file matches no wildcard.
    let err = copy(&view, &ctx, &["*.key"], "/k/", "/", &CopyOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.detail(),
        Some("no source files were specified: `*.key` matches nothing in the build context")
    );
    let err = copy(
        &view,
        &ctx,
        &["secret.key"],
        "/k",
        "/",
        &CopyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.detail(),
        Some("source `secret.key` not found in the build context")
    );
    assert_eq!(err.path(), ctx.0.as_str());
    let err = copy(&view, &ctx, &["*.txt"], "/t2", "/", &CopyOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "failed to build image `/t2`: When using COPY with more than one source file, the destination must be a directory and end with a /"
    );
    let err = copy(
        &view,
        &ctx,
        &["a.txt", "b.txt"],
        "/t3",
        "/",
        &CopyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!view.exists("t2").unwrap() && !view.exists("t3").unwrap());
}

#[test]
fn a_symlink_source_is_followed_inside_the_context() {
    let ctx = context();
    let view = empty_view();
    copy(
        &view,
        &ctx,
        &["sub/link"],
        "/l/",
        "/",
        &CopyOptions::default(),
    )
    .unwrap();
    let m = view.symlink_metadata("l/link").unwrap();
    assert_eq!((m.file_type, m.mode), (FileType::File, 0o755));
    assert_eq!(view.read("l/link").unwrap(), &b"one"[..]);
    // An absolute target starts at the context root.
    copy(
        &view,
        &ctx,
        &["abs/deep"],
        "/d",
        "/",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(names(&view, "d"), ["x.txt"]);
    // An absolute target starts at the context root, never the host's.
    std::os::unix::fs::symlink("/etc/passwd", ctx.path("host")).unwrap();
    let err = copy(&view, &ctx, &["host"], "/h", "/", &CopyOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // `..` stops at the context root: `up` is the context's `etc`, missing.
    let err = copy(&view, &ctx, &["up"], "/u", "/", &CopyOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!view.exists("u").unwrap());
}

#[test]
fn overwrite_rules() {
    let ctx = context();
    let mut base = MemLayer::new();
    base.add_file("etc/target", "keep me\n").unwrap();
    let view = MergedView::new(vec![Arc::new(base) as Arc<dyn Layer>], MemLayer::new()).unwrap();
    view.symlink("/etc/target", "planted").unwrap();
    view.create_dir("dir").unwrap();
    view.write("dir/old", "old").unwrap();
    view.write("file", "file").unwrap();
    // A file replaces a symlink: never written through it.
    copy(
        &view,
        &ctx,
        &["a.txt"],
        "/planted",
        "/",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(view.read("planted").unwrap(), &b"alpha"[..]);
    assert_eq!(view.read("etc/target").unwrap(), &b"keep me\n"[..]);
    // A directory merges into a directory.
    copy(
        &view,
        &ctx,
        &["sub/deep"],
        "/dir",
        "/",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(names(&view, "dir"), ["old", "x.txt"]);
    // A directory into a symlink to a directory (a merged-/usr `/lib`):
    // into the directory it names; the link stays.
    view.symlink("dir", "lib").unwrap();
    copy(&view, &ctx, &["sub"], "/lib/", "/", &CopyOptions::default()).unwrap();
    assert!(view.symlink_metadata("lib").unwrap().file_type.is_symlink());
    assert_eq!(
        names(&view, "dir"),
        ["deep", "link", "old", "one", "two", "x.txt"]
    );
    // A directory over a file, and a file over a directory: errors.
    let err = copy(
        &view,
        &ctx,
        &["sub/deep"],
        "/file",
        "/",
        &CopyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotADirectory);
    assert_eq!(
        err.to_string(),
        "failed to build image `/file`: cannot copy to non-directory"
    );
    let mut base = MemLayer::new();
    base.add_file("t/a.txt/inner", "x").unwrap();
    let view = MergedView::new(vec![Arc::new(base) as Arc<dyn Layer>], MemLayer::new()).unwrap();
    let err = copy(&view, &ctx, &["*.txt"], "/t/", "/", &CopyOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IsADirectory);
    assert_eq!(err.path(), "/t/a.txt");
}

#[test]
fn from_a_view_keeps_owners_unless_chown() {
    let mut layer = MemLayer::new();
    layer.add_file("opt/app/bin", "#!/bin/sh\n").unwrap();
    let other = MergedView::new(vec![Arc::new(layer) as Arc<dyn Layer>], MemLayer::new()).unwrap();
    other.set_owner("opt/app/bin", Some(7), Some(8)).unwrap();
    other.set_permissions("opt/app/bin", 0o751).unwrap();
    other.symlink("bin", "opt/app/run").unwrap();
    let source = CopySource::View(&other);
    let view = empty_view();
    let sources = ["/opt/app".to_owned()];
    copy_into(
        &view,
        &source,
        &sources,
        "/dst",
        "/",
        &CopyOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(mode_owner(&view, "dst/bin"), (0o751, 7, 8));
    assert_eq!(view.read_link("dst/run").unwrap(), "bin");
    let options = CopyOptions {
        chown: Some((1, 2)),
        ..CopyOptions::default()
    };
    copy_into(
        &view,
        &source,
        &sources,
        "/dst2",
        "/",
        &options,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(mode_owner(&view, "dst2/bin"), (0o751, 1, 2));
    let err = copy_into(
        &view,
        &source,
        &["nope".to_owned()],
        "/x",
        "/",
        &options,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert_eq!(err.path(), "/");
    assert_eq!(
        err.detail(),
        Some("source `nope` not found in the `--from` image")
    );
}

#[test]
fn resolve_chown_reads_passwd_and_group() {
    let view = empty_view();
    view.create_dir("etc").unwrap();
    view.write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1500::/home/app:/bin/sh\n",
    )
    .unwrap();
    view.write("etc/group", "root:x:0:\nstaff:x:50:app\n")
        .unwrap();
    assert_eq!(resolve_chown(&view, "app").unwrap(), (1000, 1500));
    assert_eq!(resolve_chown(&view, "app:staff").unwrap(), (1000, 50));
    assert_eq!(resolve_chown(&view, "1234").unwrap(), (1234, 1234));
    assert_eq!(resolve_chown(&view, "12:34").unwrap(), (12, 34));
    assert_eq!(resolve_chown(&view, "12:staff").unwrap(), (12, 50));
    let err = resolve_chown(&view, "nobody").unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to build image `etc/passwd`: user `nobody` not found"
    );
    let err = resolve_chown(&view, "app:wheel").unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to build image `etc/group`: group `wheel` not found"
    );
    let err = resolve_chown(&empty_view(), "app").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        resolve_chown(&view, "app:").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn sources_digest_follows_content_not_mtimes() {
    let ctx = context();
    let ignore = ignore();
    let source = CopySource::Context {
        root: &ctx.0,
        ignore: &ignore,
    };
    let all = [".".to_owned()];
    let opts = CopyOptions::default();
    let first = sources_digest(&source, &all, &opts).unwrap();
    assert_eq!(sources_digest(&source, &all, &opts).unwrap(), first);
    set_mtime(&ctx.path("a.txt"), 5000);
    assert_eq!(sources_digest(&source, &all, &opts).unwrap(), first);
    // The ignored file does not count.
    ctx.write("secret.key", b"changed", 0o600);
    assert_eq!(sources_digest(&source, &all, &opts).unwrap(), first);
    ctx.write("sub/deep/x.txt", b"y", 0o644);
    let changed = sources_digest(&source, &all, &opts).unwrap();
    assert_ne!(changed, first);
    let chmod = CopyOptions {
        chmod: Some(0o600),
        ..CopyOptions::default()
    };
    assert_ne!(sources_digest(&source, &all, &chmod).unwrap(), changed);
    let chown = CopyOptions {
        chown: Some((1, 1)),
        ..CopyOptions::default()
    };
    assert_ne!(sources_digest(&source, &all, &chown).unwrap(), changed);
    std::fs::remove_file(ctx.path("sub/link")).unwrap();
    std::os::unix::fs::symlink("two", ctx.path("sub/link")).unwrap();
    assert_ne!(sources_digest(&source, &all, &opts).unwrap(), changed);
}

#[test]
fn progress_counts_file_bytes_once_per_inode() {
    let ctx = context();
    ctx.write("big", &vec![7u8; 3 * CHUNK + 5], 0o644);
    let ignore = ignore();
    let source = CopySource::Context {
        root: &ctx.0,
        ignore: &ignore,
    };
    let view = empty_view();
    let mut calls = Vec::new();
    let sources = ["big".to_owned(), "sub".to_owned()];
    copy_into(
        &view,
        &source,
        &sources,
        "/p/",
        "/",
        &CopyOptions::default(),
        &mut |d, t| {
            calls.push((d, t));
        },
    )
    .unwrap();
    // big, one (two is its hard link), deep/x.txt.
    let total = (3 * CHUNK + 5) as u64 + 3 + 1;
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(view.metadata("p/big").unwrap().size, (3 * CHUNK + 5) as u64);
}

#[test]
fn add_extracts_tars_and_clamps_escaping_names() {
    let ctx = context();
    let tar = RawTar::new()
        .dir("etc/")
        .file("etc/conf", b"conf")
        .file("escape", b"replaced")
        .file("/abs", b"absolute")
        .file(".wh.plain", b"not a whiteout")
        .symlink("etc/link", "/etc/passwd")
        .hard_link("etc/again", "etc/conf")
        .end();
    std::fs::write(ctx.path("layer.tar"), &tar).unwrap();
    let mut gz = Compressor::new(Vec::new(), Compression::Gzip);
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    std::fs::write(ctx.path("layer.tar.gz"), gz.finish().unwrap()).unwrap();
    let add = CopyOptions {
        extract_archives: true,
        ..CopyOptions::default()
    };
    for (name, dest) in [("layer.tar", "/x"), ("layer.tar.gz", "/y/")] {
        let view = empty_view();
        view.create_dir("x").unwrap();
        view.write("x/escape", "old").unwrap();
        copy(&view, &ctx, &[name], dest, "/", &add).unwrap();
        let d = dest.trim_matches('/');
        assert_eq!(names(&view, d), [".wh.plain", "abs", "escape", "etc"]);
        assert_eq!(view.read(format!("{d}/escape")).unwrap(), &b"replaced"[..]);
        assert_eq!(view.read(format!("{d}/abs")).unwrap(), &b"absolute"[..]);
        assert_eq!(
            view.read_link(format!("{d}/etc/link")).unwrap(),
            "/etc/passwd"
        );
        let (a, b) = (
            view.metadata(format!("{d}/etc/conf")).unwrap(),
            view.metadata(format!("{d}/etc/again")).unwrap(),
        );
        assert_eq!((a.ino, a.nlink), (b.ino, 2));
        // Nothing lands outside the destination.
        let outside: Vec<String> = names(&view, "/")
            .into_iter()
            .filter(|n| n != d && n != "x")
            .collect();
        assert!(outside.is_empty(), "{outside:?}");
        assert_eq!(
            view.read("x/escape").unwrap(),
            if d == "x" {
                &b"replaced"[..]
            } else {
                &b"old"[..]
            }
        );
    }
    // Symlinks on the way (the archive's own, or the image's) resolve with
    // the destination as the root: nothing is written or linked outside.
    let through = RawTar::new()
        .symlink("root", "/")
        .symlink("up", "../..")
        .file("root/etc/passwd", b"inside")
        .file("up/up.txt", b"up")
        .file("ext/shadow", b"s")
        .hard_link("hl", "root/etc/passwd")
        .end();
    std::fs::write(ctx.path("through.tar"), &through).unwrap();
    let view = empty_view();
    view.create_dir("etc").unwrap();
    view.write("etc/passwd", "root:x:0:0::/root:/bin/sh\n")
        .unwrap();
    view.create_dir("z").unwrap();
    view.symlink("/etc", "z/ext").unwrap();
    copy(&view, &ctx, &["through.tar"], "/z/", "/", &add).unwrap();
    assert_eq!(
        view.read("etc/passwd").unwrap(),
        &b"root:x:0:0::/root:/bin/sh\n"[..]
    );
    assert_eq!(names(&view, "etc"), ["passwd"]);
    assert_eq!(names(&view, "/"), ["etc", "z"]);
    assert_eq!(view.read("z/etc/passwd").unwrap(), &b"inside"[..]);
    assert_eq!(view.read("z/up.txt").unwrap(), &b"up"[..]);
    // `ext` (the image's link to /etc) resolves to /z/etc.
    assert_eq!(view.read("z/etc/shadow").unwrap(), &b"s"[..]);
    let (a, b) = (
        view.symlink_metadata("z/etc/passwd").unwrap(),
        view.symlink_metadata("z/hl").unwrap(),
    );
    assert_eq!((a.ino, a.nlink), (b.ino, 2));
    // A name with `..` is refused, as the layer importer refuses it (and
    // Docker's `Untar` refuses a name that breaks out).
    let hostile = RawTar::new()
        .file("ok", b"1")
        .file("a/../../escape", b"x")
        .end();
    std::fs::write(ctx.path("hostile.tar"), &hostile).unwrap();
    let view = empty_view();
    let err = copy(&view, &ctx, &["hostile.tar"], "/h/", "/", &add).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.path(), ctx.path("hostile.tar").as_str());
    assert!(
        err.detail().unwrap().contains("the name contains `..`"),
        "{err}"
    );
    assert!(!view.exists("escape").unwrap());
    // Without extraction (COPY), and for a file that is no archive, a copy.
    let view = empty_view();
    copy(
        &view,
        &ctx,
        &["layer.tar"],
        "/copied",
        "/",
        &CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(view.read("copied").unwrap(), &tar[..]);
    copy(&view, &ctx, &["a.txt"], "/plain", "/", &add).unwrap();
    assert_eq!(view.read("plain").unwrap(), &b"alpha"[..]);
    std::fs::write(ctx.path("old.tar.bz2"), b"BZh91AY&SY").unwrap();
    let err = copy(&view, &ctx, &["old.tar.bz2"], "/b/", "/", &add).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(
        err.detail(),
        Some("ADD cannot extract a bzip2 archive (only plain, gzip and zstd tars)")
    );
}

#[test]
fn fifos_are_made_again_and_sockets_skipped() {
    let ctx = context();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        ctx.path("sub/pipe").as_std_path(),
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(ctx.path("sub/sock")).unwrap();
    let view = empty_view();
    copy(&view, &ctx, &["sub"], "/s", "/", &CopyOptions::default()).unwrap();
    assert_eq!(names(&view, "s"), ["deep", "link", "one", "pipe", "two"]);
    let m = view.symlink_metadata("s/pipe").unwrap();
    assert_eq!((m.file_type, m.mode, m.uid), (FileType::Fifo, 0o640, 0));
    // A socket named as a source, alone or by a wildcard, is skipped too.
    copy(
        &view,
        &ctx,
        &["sub/sock"],
        "/t",
        "/",
        &CopyOptions::default(),
    )
    .unwrap();
    assert!(!view.exists("t").unwrap());
    copy(&view, &ctx, &["sub/*"], "/w/", "/", &CopyOptions::default()).unwrap();
    // (`deep` is a directory source: its contents are copied.)
    assert_eq!(names(&view, "w"), ["link", "one", "pipe", "two", "x.txt"]);
}

#[test]
fn an_ignored_directory_holds_only_its_exceptions() {
    let ctx = context();
    ctx.write("docs/keep.md", b"keep", 0o644);
    ctx.write("docs/drop.txt", b"drop", 0o644);
    let ignore = Ignore::parse("docs\n!docs/*.md\nDockerfile\n").unwrap();
    let source = CopySource::Context {
        root: &ctx.0,
        ignore: &ignore,
    };
    let view = empty_view();
    let all = [".".to_owned()];
    copy_into(
        &view,
        &source,
        &all,
        "/c/",
        "/",
        &CopyOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(names(&view, "c/docs"), ["keep.md"]);
    assert!(!view.exists("c/Dockerfile").unwrap());
    assert!(view.exists("c/secret.key").unwrap());
}
