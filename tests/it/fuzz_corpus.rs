//! The body of the `ops` fuzz target (`fuzz/fuzz_targets/ops.rs`) over
//! every file of its committed corpus, `fuzz/corpus/ops/`, so that plain
//! `cargo test` replays the seeds and every crash input added there.
//!
//! The seeds are written by `write_seed_corpus` below (ignored; run it with
//! `cargo test --all-features --test fuzz_corpus -- --ignored` after
//! changing the byte encoding or the seeds).

use std::fs;
use std::path::{Path, PathBuf};

use layerstack::FileType;
use layerstack::merged::{OpenOptions, RenameMode};
use layerstack::testing::{Attrs, LayerItem, Op, Scenario, check_ops_bytes};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ops")
}

#[test]
fn every_corpus_input_agrees_between_model_and_view() {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .expect("the corpus directory exists")
        .map(|e| e.expect("readable corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the seed corpus is missing: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let data = fs::read(file).expect("readable corpus file");
        if let Err(divergence) = check_ops_bytes(&data) {
            failures.push(format!("{}: {divergence}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus inputs diverge:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn seed_files_are_what_the_seeds_encode_to() {
    for (name, scenario) in seeds() {
        let bytes = scenario.to_bytes().expect("seeds are encodable");
        assert_eq!(Scenario::from_bytes(&bytes), scenario, "{name}");
        let stored = fs::read(corpus_dir().join(name)).expect("seed file exists");
        assert_eq!(
            stored, bytes,
            "{name} is stale: run the ignored write_seed_corpus test"
        );
    }
}

#[test]
#[ignore = "writes the seed corpus files"]
fn write_seed_corpus() {
    fs::create_dir_all(corpus_dir()).unwrap();
    for (name, scenario) in seeds() {
        let bytes = scenario.to_bytes().expect("seeds are encodable");
        fs::write(corpus_dir().join(name), bytes).unwrap();
    }
}

fn attrs(mode: u32) -> Attrs {
    Attrs {
        mode,
        uid: 0,
        gid: 0,
        time: 0,
    }
}

fn file(path: &str, data: &[u8]) -> LayerItem {
    LayerItem::File {
        path: path.into(),
        data: data.to_vec(),
        attrs: attrs(0o644),
    }
}

fn dir(path: &str) -> LayerItem {
    LayerItem::Dir {
        path: path.into(),
        attrs: attrs(0o755),
    }
}

fn p(s: &str) -> layerstack::NameBuf {
    s.into()
}

fn opts(f: impl FnOnce(&mut OpenOptions) -> &mut OpenOptions) -> OpenOptions {
    let mut o = OpenOptions::new();
    f(&mut o);
    o
}

/// One scenario per rule of the merge, small enough to read.
fn seeds() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "copy-up-on-write",
            Scenario {
                layers: vec![vec![file("a/b", b"lower")]],
                ops: vec![
                    Op::Read { path: p("a/b") },
                    Op::WriteAt {
                        path: p("a/b"),
                        offset: 2,
                        data: b"xy".to_vec(),
                    },
                    Op::Append {
                        path: p("/a/b"),
                        data: b"z".to_vec(),
                    },
                    Op::ReadAt {
                        path: p("a/./b"),
                        offset: 1,
                        len: 4,
                    },
                    Op::SetLen {
                        path: p("a/b"),
                        len: 12,
                    },
                    Op::Metadata { path: p("a/b") },
                ],
            },
        ),
        (
            "whiteout-then-recreate-dir",
            Scenario {
                layers: vec![vec![file("a/b/c", b"old"), dir("a/c")]],
                ops: vec![
                    Op::RemoveDirAll { path: p("a/b") },
                    Op::ReadDir { path: p("a") },
                    Op::CreateDir { path: p("a/b") },
                    Op::ReadDir { path: p("a/b") },
                    Op::RemoveDir { path: p("a/c") },
                    Op::RemoveDir { path: p("a") },
                    Op::RemoveDirAll { path: p("a") },
                    Op::CreateDirAll { path: p("a/c/b") },
                ],
            },
        ),
        (
            "opaque-and-whiteouts-across-layers",
            Scenario {
                layers: vec![
                    vec![
                        LayerItem::OpaqueDir { path: p("a") },
                        file("a/b", b"top"),
                        LayerItem::Whiteout { path: p("b/a") },
                    ],
                    vec![
                        file("a/a", b"hidden"),
                        file("b/a", b"gone"),
                        file("b/b", b"kept"),
                    ],
                    vec![file("c", b"bottom")],
                ],
                ops: vec![
                    Op::ReadDir { path: p("a") },
                    Op::ReadDir { path: p("/b") },
                    Op::Write {
                        path: p("b/a"),
                        data: b"new".to_vec(),
                    },
                    Op::RemoveFile { path: p("a/b") },
                    Op::RemoveDir { path: p("a") },
                    Op::Commit,
                    Op::ReadDir { path: p("/") },
                ],
            },
        ),
        (
            "rename-lower-directory",
            Scenario {
                layers: vec![vec![file("a/b/c", b"x"), dir("b")]],
                ops: vec![
                    Op::Rename {
                        from: p("a/b"),
                        to: p("c"),
                        mode: RenameMode::Replace,
                    },
                    Op::Rename {
                        from: p("a"),
                        to: p("b"),
                        mode: RenameMode::Replace,
                    },
                    Op::ReadDir { path: p("b") },
                    Op::Rename {
                        from: p("c"),
                        to: p("a/c"),
                        mode: RenameMode::NoReplace,
                    },
                    Op::Rename {
                        from: p("a/b/c"),
                        to: p("b"),
                        mode: RenameMode::Exchange,
                    },
                    Op::Rename {
                        from: p("a"),
                        to: p("a/b"),
                        mode: RenameMode::Replace,
                    },
                ],
            },
        ),
        (
            "hard-links-copy-up-and-commit",
            Scenario {
                layers: vec![vec![
                    file("a", b"one"),
                    LayerItem::HardLink {
                        existing: p("a"),
                        new: p("b/c"),
                    },
                ]],
                ops: vec![
                    Op::Metadata { path: p("b/c") },
                    Op::Append {
                        path: p("a"),
                        data: b"2".to_vec(),
                    },
                    Op::Read { path: p("b/c") },
                    Op::HardLink {
                        original: p("b/c"),
                        link: p("c"),
                    },
                    Op::Commit,
                    Op::RemoveFile { path: p("a") },
                    Op::SymlinkMetadata { path: p("c") },
                    Op::HardLink {
                        original: p("b"),
                        link: p("a"),
                    },
                ],
            },
        ),
        (
            "symlinks-dangling-looping-absolute",
            Scenario {
                layers: vec![vec![
                    LayerItem::Symlink {
                        path: p("a"),
                        target: p("/b/../c"),
                    },
                    LayerItem::Symlink {
                        path: p("b"),
                        target: p("b"),
                    },
                    LayerItem::Symlink {
                        path: p("c/a"),
                        target: p("../.."),
                    },
                ]],
                ops: vec![
                    Op::ReadDir { path: p("a/a") },
                    Op::Read { path: p("b") },
                    Op::Write {
                        path: p("a/b"),
                        data: b"via".to_vec(),
                    },
                    Op::ReadLink { path: p("a/a") },
                    Op::Symlink {
                        target: p("c"),
                        link: p("a/c"),
                    },
                    Op::Open {
                        path: p("c/c/b"),
                        options: opts(|o| o.write(true).create(true)),
                    },
                    Op::CreateDirAll { path: p("a/a/b/") },
                    Op::RemoveFile { path: p("c/a/") },
                ],
            },
        ),
        (
            "xattrs-modes-owners",
            Scenario {
                layers: vec![vec![
                    LayerItem::File {
                        path: p("a"),
                        data: b"s".to_vec(),
                        attrs: Attrs {
                            mode: 0o4755,
                            uid: 1000,
                            gid: 1000,
                            time: 1,
                        },
                    },
                    LayerItem::Xattr {
                        path: p("a"),
                        name: String::from("user.x"),
                        value: b"v".to_vec(),
                    },
                    LayerItem::Symlink {
                        path: p("b"),
                        target: p("a"),
                    },
                ]],
                ops: vec![
                    Op::ListXattr { path: p("b") },
                    Op::SetOwner {
                        path: p("b"),
                        uid: Some(1),
                        gid: None,
                    },
                    Op::GetXattr {
                        path: p("a"),
                        name: String::from("user.x"),
                    },
                    Op::SetXattr {
                        path: p("a"),
                        name: String::from("trusted.y"),
                        value: b"w".to_vec(),
                    },
                    Op::RemoveXattr {
                        path: p("a"),
                        name: String::from("user.z"),
                    },
                    Op::GetXattr {
                        path: p("a"),
                        name: String::from("foo.bar"),
                    },
                    Op::SetPermissions {
                        path: p("a"),
                        mode: 0o2775,
                    },
                    Op::SetTimes {
                        path: p("/a"),
                        atime: None,
                        mtime: Some(layerstack::Timestamp::new(5, 0)),
                    },
                    Op::SymlinkMetadata { path: p("a") },
                ],
            },
        ),
        (
            "special-files",
            Scenario {
                layers: vec![vec![LayerItem::Special {
                    path: p("a/b"),
                    file_type: FileType::CharDevice,
                    rdev: layerstack::makedev(1, 3),
                    attrs: attrs(0o644),
                }]],
                ops: vec![
                    Op::Read { path: p("a/b") },
                    Op::Mknod {
                        path: p("c"),
                        file_type: FileType::CharDevice,
                        mode: 0o644,
                        rdev: 0,
                    },
                    Op::Mknod {
                        path: p("c"),
                        file_type: FileType::Fifo,
                        mode: 0o7777,
                        rdev: layerstack::makedev(8, 1),
                    },
                    Op::Mknod {
                        path: p("b"),
                        file_type: FileType::Dir,
                        mode: 0o755,
                        rdev: 0,
                    },
                    Op::Open {
                        path: p("c"),
                        options: opts(|o| o.write(true)),
                    },
                    Op::SetLen {
                        path: p("a/b"),
                        len: 1,
                    },
                    Op::Metadata { path: p("a/b") },
                ],
            },
        ),
        (
            "dot-dot-and-trailing-slashes",
            Scenario {
                layers: vec![vec![file("a/b", b"f"), dir("c/a")]],
                ops: vec![
                    Op::Read { path: p("a/b/") },
                    Op::Metadata { path: p("/../a") },
                    Op::ReadDir { path: p("c/a/..") },
                    Op::CreateDir { path: p("a/..") },
                    Op::RemoveDir { path: p("/") },
                    Op::Write {
                        path: p("c/"),
                        data: Vec::new(),
                    },
                    Op::Rename {
                        from: p("a/b"),
                        to: p("c/a/"),
                        mode: RenameMode::Replace,
                    },
                    Op::Read { path: p("") },
                ],
            },
        ),
        (
            "open-options",
            Scenario {
                layers: vec![vec![
                    file("a", b"data"),
                    LayerItem::Symlink {
                        path: p("b"),
                        target: p("c/a"),
                    },
                    dir("c"),
                ]],
                ops: vec![
                    Op::Open {
                        path: p("a"),
                        options: opts(|o| o.read(true)),
                    },
                    Op::Open {
                        path: p("a"),
                        options: opts(|o| o.append(true).truncate(true)),
                    },
                    Op::Open {
                        path: p("b"),
                        options: opts(|o| o.write(true).create_new(true)),
                    },
                    Op::Open {
                        path: p("b"),
                        options: opts(|o| o.write(true).create(true)),
                    },
                    Op::Open {
                        path: p("a"),
                        options: opts(|o| o.write(true).truncate(true)),
                    },
                    Op::Open {
                        path: p("c"),
                        options: opts(|o| o.read(true).write(true)),
                    },
                    Op::ReadDir { path: p("c") },
                ],
            },
        ),
        (
            "commits-between-changes",
            Scenario {
                layers: vec![],
                ops: vec![
                    Op::Write {
                        path: p("a"),
                        data: b"1".to_vec(),
                    },
                    Op::CreateDirAll { path: p("b/c") },
                    Op::Commit,
                    Op::RemoveFile { path: p("a") },
                    Op::RemoveDirAll { path: p("b") },
                    Op::Commit,
                    Op::CreateDir { path: p("b") },
                    Op::ReadDir { path: p("b") },
                    Op::Commit,
                    Op::Write {
                        path: p("a"),
                        data: b"2".to_vec(),
                    },
                    Op::Metadata { path: p("b") },
                ],
            },
        ),
        (
            "redirected-directory-in-a-layer",
            Scenario {
                layers: vec![
                    vec![
                        dir("b"),
                        LayerItem::Redirect {
                            path: p("b"),
                            redirect: p("a"),
                        },
                        LayerItem::Whiteout { path: p("a") },
                    ],
                    vec![file("a/c", b"moved")],
                ],
                ops: vec![
                    Op::ReadDir { path: p("b") },
                    Op::Read { path: p("b/c") },
                    Op::Rename {
                        from: p("b"),
                        to: p("c"),
                        mode: RenameMode::Replace,
                    },
                    Op::ReadDir { path: p("/") },
                ],
            },
        ),
        (
            // Names that are not UTF-8 (Latin-1 `café`, EUC-JP `日本`):
            // a copy-up, a rename and a symlink through them.
            "names-not-utf8",
            Scenario {
                layers: vec![vec![
                    LayerItem::File {
                        path: b"caf\xe9/\xc6\xfc\xcb\xdc".as_slice().into(),
                        data: b"bytes".to_vec(),
                        attrs: attrs(0o644),
                    },
                    LayerItem::Symlink {
                        path: "a".into(),
                        target: b"caf\xe9".as_slice().into(),
                    },
                ]],
                ops: vec![
                    Op::Append {
                        path: b"a/\xc6\xfc\xcb\xdc".as_slice().into(),
                        data: b"!".to_vec(),
                    },
                    Op::Rename {
                        from: b"caf\xe9/\xc6\xfc\xcb\xdc".as_slice().into(),
                        to: b"\xc6\xfc\xcb\xdc".as_slice().into(),
                        mode: RenameMode::Replace,
                    },
                    Op::ReadDir { path: p("/") },
                    Op::ReadLink { path: p("a") },
                ],
            },
        ),
    ]
}
