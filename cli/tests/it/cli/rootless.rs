//! Rootless round trips: `unpack` as an ordinary user (or with
//! `--rootless`), `commit` of the tree unchanged and edited, and the map
//! kept beside the tree as hostile input.
//!
//! The user is uid 65534 through `setpriv` (util-linux) when the tests run
//! as root (CI); a test that runs as another user is that user. As root
//! without `setpriv`, the tests print `SKIP` (they fail with
//! `LAYERSTACK_REQUIRE_TOOLS`).

use std::process::Command;

use camino::{Utf8Path, Utf8PathBuf};
use layerstack::oci::{BuildOptions, ImageStore, OciLayout};
use layerstack::{FileType, LayerPath, MemLayer, Metadata, makedev};

use super::{Ran, image, short, thousands};
use crate::tools::{Scratch, difference, have, view_tree};

const NOBODY: &str = "65534";

/// Who runs the tool.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runner {
    /// An ordinary user: uid 65534 by `setpriv` if we are root, else us.
    User,
    /// Root, with `unpack --rootless`.
    RootRootless,
}

impl Runner {
    /// Whether this runner can run here; prints why not.
    fn available(self, test: &str) -> bool {
        let root = rustix::process::geteuid().is_root();
        match self {
            Runner::User => !root || have("setpriv", test),
            Runner::RootRootless => {
                if !root {
                    eprintln!("SKIP {test}: needs root (it unpacks as root with --rootless)");
                }
                root
            }
        }
    }

    /// `program` with `args`, as this runner.
    fn command(self, program: &str, args: &[&str]) -> Command {
        if self == Runner::User && rustix::process::geteuid().is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                program,
            ]);
            cmd.args(args);
            cmd
        } else {
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
    }

    /// The tool, as this runner.
    fn layerstack(self, args: &[&str]) -> Ran {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_layerstack"), args);
        let out = cmd
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .expect("run layerstack");
        Ran {
            code: out.status.code().expect("an exit code"),
            stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
        }
    }

    /// The tool, which must succeed silently on stderr; its stdout.
    fn ok(self, args: &[&str]) -> String {
        let ran = self.layerstack(args);
        assert_eq!(
            (ran.code, ran.stderr.as_str()),
            (0, ""),
            "{args:?}: {ran:?}"
        );
        ran.stdout
    }

    /// A shell command, as this runner.
    fn sh(self, script: &str) {
        let out = self.command("sh", &["-ec", script]).output().unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
    }

    /// Gives `paths` to the runner (uid 65534 when it is `setpriv`-ed).
    fn own(self, paths: &[&Utf8Path]) {
        if self == Runner::User && rustix::process::geteuid().is_root() {
            let who = format!("{NOBODY}:{NOBODY}");
            let mut cmd = Command::new("chown");
            cmd.args(["-R", who.as_str()]);
            cmd.args(paths.iter().map(|p| p.as_str()));
            assert!(cmd.status().unwrap().success());
        }
    }
}

fn meta(file_type: FileType, mode: u32, uid: u32, gid: u32) -> Metadata {
    let mut m = Metadata::new(file_type)
        .with_mode(mode)
        .with_owner(uid, gid);
    m.mtime = layerstack::Timestamp::new(1_700_000_000, 0);
    m
}

/// An image (`LAYOUT:v1`) with what only root can unpack as it is: owners
/// other than root (1000:1000, 0:42), a symlink of user 1000, a character
/// and a block device, setuid and setgid files, a mode-000 file and
/// directory, a `trusted.*` extended attribute, a fifo and hard links.
fn rootless_image(s: &Scratch) -> Utf8PathBuf {
    let dir = s.path("image");
    let store = ImageStore::new(OciLayout::create(&dir).unwrap());
    let mut l = MemLayer::new();
    let dirs = [
        ("etc", 0o755, 0, 0),
        ("home", 0o755, 0, 0),
        ("home/user", 0o700, 1000, 1000),
        ("dev", 0o755, 0, 0),
        ("usr", 0o755, 0, 0),
        ("usr/bin", 0o755, 0, 0),
        ("locked", 0o000, 0, 0),
    ];
    for (path, mode, uid, gid) in dirs {
        l.add_dir_with(path, meta(FileType::Dir, mode, uid, gid))
            .unwrap();
    }
    let files: [(&str, &str, u32, u32, u32); 8] = [
        ("etc/app.conf", "port = 80\n", 0o644, 1000, 1000),
        ("etc/shadow", "root:*:1::::::\n", 0o640, 0, 42),
        ("etc/secret", "hidden\n", 0o000, 1000, 1000),
        ("etc/note", "note\n", 0o644, 0, 0),
        ("home/user/.profile", "PATH=/bin\n", 0o644, 1000, 1000),
        ("usr/bin/su", "#!/bin/sh\n", 0o4755, 0, 0),
        ("usr/bin/wall", "#!/bin/sh\n", 0o2755, 0, 5),
        ("locked/key", "key\n", 0o600, 0, 0),
    ];
    for (path, data, mode, uid, gid) in files {
        let mut m = meta(FileType::File, mode, uid, gid);
        if path == "etc/note" {
            m.xattrs.insert("trusted.layerstack.note", &b"kept"[..]);
            m.xattrs.insert("user.note", &b"also"[..]);
        }
        l.add_file_with(path, data.to_owned(), m).unwrap();
    }
    l.add_hard_link("home/user/.profile", "home/user/.profile.bak")
        .unwrap();
    l.add_symlink("home/user/link", ".profile").unwrap();
    let link = LayerPath::new("home/user/link").unwrap();
    let mut m = meta(FileType::Symlink, 0o777, 1000, 1000);
    m.size = ".profile".len() as u64;
    layerstack::LayerMut::set_metadata(&mut l, &link, &m).unwrap();
    let mut null = meta(FileType::CharDevice, 0o666, 0, 0);
    null.rdev = makedev(1, 3);
    l.add_special("dev/null", null).unwrap();
    let mut sda = meta(FileType::BlockDevice, 0o660, 0, 6);
    sda.rdev = makedev(8, 0);
    l.add_special("dev/sda", sda).unwrap();
    l.add_special("dev/initctl", meta(FileType::Fifo, 0o600, 0, 0))
        .unwrap();
    let mut b = store.builder(None, BuildOptions::default()).unwrap();
    b.add_layer_from(l, "COPY rootfs/ /").unwrap();
    b.finish("v1").unwrap();
    dir
}

/// The changes the top layer of `tag` makes, as `docker diff` prints them.
fn top_changes(layout: &Utf8Path, tag: &str) -> Vec<String> {
    let store = ImageStore::new(OciLayout::open(layout).unwrap());
    let img = store.image(Some(tag)).unwrap();
    let changes = store.changes(&img).unwrap();
    changes
        .last()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Unpacks the image as `runner` rootless, commits it unchanged (an empty
/// layer), edited in place (exactly that file, with the image's owner),
/// then with a new file, a replaced file and a deleted directory.
fn round_trip(runner: Runner, test: &str) {
    if !runner.available(test) {
        return;
    }
    let s = Scratch::new("cli-rootless");
    let layout = rootless_image(&s);
    let work = s.path("work");
    std::fs::create_dir(&work).unwrap();
    runner.own(&[&layout, &work]);
    let rootfs = work.join("rootfs");
    let map = work.join("rootfs.layerstack-rootless.json");
    let v1 = format!("{layout}:v1");

    let mut unpack = vec!["unpack", v1.as_str(), rootfs.as_str()];
    if runner == Runner::RootRootless {
        unpack.insert(1, "--rootless");
    }
    let out = runner.ok(&unpack);
    assert!(
        out.ends_with(&format!(
            "2 device nodes skipped: making them needs root\n\
             rootless: what only root can write (9 objects with other owners, modes or extended attributes, 2 device nodes) is kept in {map} for commit\n"
        )),
        "{out}"
    );
    // What only root can write is not on disk: no devices, no trusted.*
    // attribute, the caller's owners everywhere.
    assert!(!rootfs.join("dev/null").exists());
    assert!(!rootfs.join("dev/sda").exists());
    let me = std::fs::metadata(&work).unwrap();
    for path in ["etc/app.conf", "etc/shadow", "home/user", "usr/bin/wall"] {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(rootfs.join(path)).unwrap();
        assert_eq!((m.uid(), m.gid()), (me.uid(), me.gid()), "{path}");
    }

    // Unchanged: an empty layer.
    let mapped = format!(
        "{rootfs} was unpacked rootless: owners, modes, extended attributes and device nodes only root can write are mapped back from {map}\n"
    );
    assert_eq!(
        runner.ok(&["commit", &v1, rootfs.as_str(), "--tag", "same"]),
        format!(
            "{mapped}{rootfs} is what {v1} shows: {layout}:same has no new layer, only a history entry\n"
        )
    );
    assert_eq!(
        image(&layout, "same").layers(),
        image(&layout, "v1").layers()
    );

    // One file edited in place: exactly that file (and its directory, as
    // a layer needs it), with the image's owner.
    runner.sh(&format!("printf 'port = 9090\\n' > {rootfs}/etc/app.conf"));
    let out = runner.ok(&["commit", &v1, rootfs.as_str(), "--tag", "edited"]);
    let edited = image(&layout, "edited");
    assert_eq!(
        out,
        format!(
            "{mapped}{layout}:edited: layer 1 {} ({} bytes) on {v1}\n  C /etc\n  C /etc/app.conf\n",
            short(&edited, 1),
            thousands(edited.layers()[1].size)
        )
    );
    let store = ImageStore::new(OciLayout::open(&layout).unwrap());
    let view = store.container(&edited).unwrap();
    let conf = view.symlink_metadata("etc/app.conf").unwrap();
    assert_eq!(
        (conf.uid, conf.gid, conf.mode),
        (1000, 1000, 0o644),
        "the edited file keeps the image's owner"
    );
    assert_eq!(
        view.read_to_string("etc/app.conf").unwrap(),
        "port = 9090\n"
    );
    // Everything else is the image's, owners, modes, devices and
    // attributes included.
    let mut want = view_tree(&store.container(&image(&layout, "v1")).unwrap());
    let mut got = view_tree(&view);
    let conf_path = LayerPath::new("etc/app.conf").unwrap();
    want.entries.remove(&conf_path);
    got.entries.remove(&conf_path);
    if let Some(d) = difference(&want, &got) {
        panic!("the edited image differs elsewhere: {d}");
    }

    // A new file is root's; a file replaced by a new one (as `sed -i`
    // does) is the caller's, so root's; a deleted directory takes its
    // skipped devices with it.
    let edited_ref = format!("{layout}:edited");
    runner.sh(&format!(
        "cd {rootfs}; printf 'new\\n' > etc/new; \
         cp etc/shadow etc/shadow.tmp; chmod 640 etc/shadow.tmp; mv etc/shadow.tmp etc/shadow; \
         rm -r dev"
    ));
    let out = runner.ok(&["commit", &edited_ref, rootfs.as_str(), "--tag", "more"]);
    assert!(out.starts_with(&mapped), "{out}");
    assert_eq!(
        top_changes(&layout, "more"),
        ["D /dev", "C /etc", "A /etc/new", "C /etc/shadow"],
        "{out}"
    );
    let view = store.container(&image(&layout, "more")).unwrap();
    for (path, owner) in [("etc/new", (0, 0)), ("etc/shadow", (0, 0)), ("etc", (0, 0))] {
        let m = view.symlink_metadata(path).unwrap();
        assert_eq!((m.uid, m.gid), owner, "{path}");
    }
    assert_eq!(view.symlink_metadata("etc/shadow").unwrap().mode, 0o640);
}

#[test]
fn rootless_round_trip_as_an_unprivileged_user() {
    round_trip(Runner::User, "rootless_round_trip_as_an_unprivileged_user");
}

#[test]
fn rootless_round_trip_as_root_with_the_rootless_flag() {
    round_trip(
        Runner::RootRootless,
        "rootless_round_trip_as_root_with_the_rootless_flag",
    );
}

#[test]
fn commit_refuses_a_hostile_rootless_map_in_one_line_and_tags_nothing() {
    let s = Scratch::new("cli-rootless-hostile");
    let layout = rootless_image(&s);
    let rootfs = s.path("rootfs");
    let map = s.path("rootfs.layerstack-rootless.json");
    let v1 = format!("{layout}:v1");
    super::ok(&["unpack", "--rootless", &v1, rootfs.as_str()]);
    let good = std::fs::read_to_string(&map).unwrap();
    let index = std::fs::read(layout.join("index.json")).unwrap();
    let another_root = {
        let v: serde_json::Value = serde_json::from_str(&good).unwrap();
        let ino = v["root"]["ino"].as_u64().unwrap();
        good.replacen(
            &format!("\"ino\":{ino}"),
            &format!("\"ino\":{}", ino + 1),
            1,
        )
    };
    let cases = [
        ("{".to_owned(), "not a rootless map: EOF while parsing an object at line 1 column 1".to_owned()),
        (
            good.replacen("\"objects\": [", "\"objects\": [{\"path\": \"/../../etc/passwd\"},", 1),
            "not a rootless map: objects[0]: path \"/../../etc/passwd\" is not valid (`.` and `..` are not names)".to_owned(),
        ),
        (
            good.replacen("\"objects\": [", "\"objects\": [{\"path\": \"/\\u001b[2J/..\"},", 1),
            "not a rootless map: objects[0]: path \"/\\u{1b}[2J/..\" is not valid (`.` and `..` are not names)".to_owned(),
        ),
        (
            another_root,
            String::new(),
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&map, &text).unwrap();
        let ran = super::layerstack(&["commit", &v1, rootfs.as_str(), "--tag", "bad"]);
        assert_eq!((ran.code, ran.stdout.as_str()), (1, ""), "{ran:?}");
        let want = if want.is_empty() {
            format!(
                "error: failed to commit `{rootfs}`: `{map}` was recorded for another tree (its root is another directory): remove it to commit the tree as it is, owners and all\n"
            )
        } else {
            format!("error: failed to read `{map}`: {want}\n")
        };
        assert_eq!(ran.stderr, want);
        assert!(!ran.stderr.contains('\u{1b}'));
        assert_eq!(std::fs::read(layout.join("index.json")).unwrap(), index);
    }
    // Not a regular file: refused without reading it.
    std::fs::remove_file(&map).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &map).unwrap();
    let ran = super::layerstack(&["commit", &v1, rootfs.as_str(), "--tag", "bad"]);
    assert_eq!(
        (ran.code, ran.stderr),
        (
            1,
            format!(
                "error: failed to read `{map}`: it is a symlink (refused: a rootless map is a regular file)\n"
            )
        )
    );
    // Without the map the tree is committed as it is (as root, the owners
    // are root's: the image's others are changes).
    std::fs::remove_file(&map).unwrap();
    let out = super::ok(&["commit", &v1, rootfs.as_str(), "--tag", "as-is"]);
    assert!(out.contains("C /etc/app.conf"), "{out}");
    // An unpack that is not rootless removes a map left beside its target.
    std::fs::write(&map, &good).unwrap();
    let again = s.path("again");
    let stale = s.path("again.layerstack-rootless.json");
    std::fs::write(&stale, &good).unwrap();
    if rustix::process::geteuid().is_root() {
        super::ok(&["unpack", &v1, again.as_str()]);
        assert!(!stale.exists());
    }
}
