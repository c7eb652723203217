//! The image store and the tool under faults: every system call of
//! `commit` and `demo` failed in turn (with `strace -e inject`), kills at
//! spread-out moments, hostile layouts (a symlinked `blobs`, fifos), bad
//! tags, and a tree wider than the descriptor limit. After each, the
//! layout must be whole: every tag opens and its blobs verify, every file
//! in `blobs/sha256` is a whole blob or a temporary file, and the next run
//! just works.
//!
//! The fault-injection tests need Debian's `strace`; without it they print
//! `SKIP <test>: <reason>` and pass, unless `LAYERSTACK_REQUIRE_TOOLS` is
//! set. `LAYERSTACK_FAULT_REPORT=1` prints how many faults and kills were
//! tried.

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::Instant;

use camino::{Utf8Path, Utf8PathBuf};
use layerstack::oci::{Digest, ImageStore, OciLayout};

use crate::tools::{Scratch, have};

const BIN: &str = env!("CARGO_BIN_EXE_layerstack");

/// What one run of the tool did.
#[derive(Debug)]
struct Ran {
    /// The exit code; `None` if a signal ended it.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Ran {
    let out = cmd
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn layerstack(args: &[&str]) -> Ran {
    run(Command::new(BIN).args(args))
}

fn ok(args: &[&str]) -> String {
    let ran = layerstack(args);
    assert_eq!(ran.code, Some(0), "layerstack {args:?}: {ran:?}");
    ran.stdout
}

fn copy_tree(from: &Utf8Path, to: &Utf8Path) {
    let _ = fs::remove_dir_all(to);
    let st = Command::new("cp")
        .args(["-a", from.as_str(), to.as_str()])
        .status()
        .expect("cp");
    assert!(st.success());
}

/// Checks that `dir` is a whole layout and returns its tags: every tag
/// opens, its layers import with digests and DiffIDs verified, and every
/// file in `blobs/sha256` is either a temporary file or a blob whose bytes
/// hash to its name.
fn whole_layout(dir: &Utf8Path) -> Vec<String> {
    let layout = OciLayout::open(dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let store = ImageStore::new(layout.clone());
    let tags: Vec<String> = layout
        .tags()
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    for tag in &tags {
        let image = store
            .image(Some(tag))
            .unwrap_or_else(|e| panic!("{dir}:{tag}: {e}"));
        store
            .layers(&image)
            .unwrap_or_else(|e| panic!("{dir}:{tag}: {e}"));
    }
    for name in blob_names(dir) {
        if name.starts_with(".tmp-") {
            continue;
        }
        let digest = Digest::from_hex(&name).unwrap_or_else(|| panic!("{dir}: stray {name}"));
        let bytes = fs::read(dir.join("blobs/sha256").join(&name)).unwrap();
        assert_eq!(
            Digest::of(&bytes),
            digest,
            "{dir}: blob {name} is not whole"
        );
    }
    tags
}

fn blob_names(dir: &Utf8Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir.join("blobs/sha256")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn temps(dir: &Utf8Path) -> Vec<String> {
    blob_names(dir)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// A demo layout and a tree unpacked from it with one edit: what `commit`
/// is run on.
struct Fixture {
    _scratch: Scratch,
    layout: Utf8PathBuf,
    tree: Utf8PathBuf,
}

fn fixture(name: &str) -> Fixture {
    let scratch = Scratch::new(name);
    let layout = scratch.path("pristine");
    let tree = scratch.path("rootfs");
    ok(&["demo", layout.as_str()]);
    ok(&["unpack", &format!("{layout}:demo"), tree.as_str()]);
    fs::write(tree.join("etc/app.conf"), "port = 9090\n").unwrap();
    Fixture {
        layout,
        tree,
        _scratch: scratch,
    }
}

/// How often each system call of `traced` is made by `args` (a dry run
/// under `strace -c`).
fn syscall_counts(args: &[&str], traced: &[&str], out: &Utf8Path) -> BTreeMap<String, u64> {
    let counts = out.with_extension("counts");
    let ran = run(Command::new("strace")
        .args(["-f", "-c", "-o", counts.as_str()])
        .arg("-e")
        .arg(format!("trace={}", traced.join(",")))
        .arg(BIN)
        .args(args));
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let text = fs::read_to_string(&counts).unwrap();
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(calls)) = (fields.last(), fields.get(3)) else {
            continue;
        };
        if let (true, Ok(calls)) = (traced.contains(name), calls.parse::<u64>()) {
            map.insert((*name).to_owned(), calls);
        }
    }
    map
}

/// Runs `args` with the `n`-th call of `syscall` failing with `errno`.
fn with_fault(args: &[&str], syscall: &str, errno: &str, n: u64) -> Ran {
    run(Command::new("strace")
        .args(["-f", "-o", "/dev/null"])
        .args(["-e", &format!("trace={syscall}")])
        .args(["-e", &format!("inject={syscall}:error={errno}:when={n}")])
        .arg(BIN)
        .args(args))
}

/// The dynamic loader failing to load the C library: the tool never ran.
fn never_started(ran: &Ran) -> bool {
    ran.code == Some(127) && ran.stderr.contains("error while loading shared libraries")
}

fn report(what: &str, n: usize) {
    note(&format!("{what}: {n}"));
}

/// Prints a figure when `LAYERSTACK_FAULT_REPORT` is set.
fn note(what: &str) {
    if std::env::var_os("LAYERSTACK_FAULT_REPORT").is_some() {
        eprintln!("{what}");
    }
}

/// The system calls whose failure is injected, and with which errno:
/// a full disk for those that write, an I/O error for all.
const FAULTS: &[(&str, &str)] = &[
    ("openat", "ENOSPC"),
    ("write", "ENOSPC"),
    ("fsync", "ENOSPC"),
    ("renameat", "ENOSPC"),
    ("mkdirat", "ENOSPC"),
    ("openat", "EIO"),
    ("read", "EIO"),
    ("write", "EIO"),
    ("fsync", "EIO"),
    ("renameat", "EIO"),
    ("getdents64", "EIO"),
    ("fstat", "EIO"),
    ("newfstatat", "EIO"),
    ("statx", "EIO"),
    ("flock", "EIO"),
    ("unlinkat", "EIO"),
    ("listxattr", "EIO"),
    ("readlinkat", "EIO"),
    ("pread64", "EIO"),
    ("lseek", "EIO"),
];

#[test]
fn every_failed_system_call_of_commit_leaves_the_old_index_or_the_new_tag() {
    let test = "every_failed_system_call_of_commit_leaves_the_old_index_or_the_new_tag";
    if !have("strace", test) {
        return;
    }
    let fx = fixture("fault-commit");
    let work = fx.layout.with_file_name("work");
    let image = format!("{work}:demo");
    let args = ["commit", image.as_str(), fx.tree.as_str(), "--tag", "v2"];
    copy_tree(&fx.layout, &work);
    let traced: Vec<&str> = FAULTS.iter().map(|(s, _)| *s).collect();
    let counts = syscall_counts(&args, &traced, &work);
    assert!(
        counts["fsync"] >= 4 && counts["renameat"] >= 3,
        "{counts:?}"
    );
    let index_before = fs::read(fx.layout.join("index.json")).unwrap();
    let tags_before = whole_layout(&fx.layout);
    let (mut tried, mut failed, mut tagged, mut warned) = (0, 0, 0, 0);
    for (syscall, errno) in FAULTS {
        for n in 1..=counts.get(*syscall).copied().unwrap_or(0) {
            copy_tree(&fx.layout, &work);
            let ran = with_fault(&args, syscall, errno, n);
            tried += 1;
            let at = format!("{syscall}={errno} at call {n}: {ran:?}");
            let index_now = fs::read(work.join("index.json")).unwrap();
            match ran.code {
                Some(0) => {
                    tagged += 1;
                    let tags = whole_layout(&work);
                    assert!(tags.contains(&"v2".to_owned()), "{at}");
                    assert_eq!(tags.len(), tags_before.len() + 1, "{at}");
                    if !ran.stderr.is_empty() {
                        warned += 1;
                        assert!(
                            ran.stderr.starts_with("warning: ")
                                && ran.stderr.contains(" is tagged"),
                            "{at}"
                        );
                    }
                }
                Some(1) => {
                    failed += 1;
                    assert_eq!(index_now, index_before, "{at}");
                    assert_eq!(whole_layout(&work), tags_before, "{at}");
                    assert!(ran.stderr.starts_with("error: failed to "), "{at}");
                    assert_eq!(ran.stderr.lines().count(), 1, "{at}");
                }
                _ => {
                    assert!(never_started(&ran), "{at}");
                    assert_eq!(index_now, index_before, "{at}");
                }
            }
            // The next run just works, and cleans what the failed one left.
            let again = layerstack(&args);
            assert_eq!(again.code, Some(0), "after {at}: {again:?}");
            assert_eq!(temps(&work), Vec::<String>::new(), "after {at}");
            assert!(whole_layout(&work).contains(&"v2".to_owned()));
        }
    }
    report(
        &format!(
            "commit: injected faults (failed / tagged / tagged with a warning = {failed} / {tagged} / {warned})"
        ),
        tried,
    );
    assert!(failed > 100 && tagged > 0, "{failed} {tagged}");
}

#[test]
fn every_failed_write_of_demo_leaves_a_layout_the_next_demo_finishes() {
    let test = "every_failed_write_of_demo_leaves_a_layout_the_next_demo_finishes";
    if !have("strace", test) {
        return;
    }
    let scratch = Scratch::new("fault-demo");
    let dir = scratch.path("demo");
    let args = ["demo", dir.as_str()];
    let writes = [
        "openat", "write", "fsync", "renameat", "mkdirat", "unlinkat",
    ];
    let counts = syscall_counts(&args, &writes, &dir);
    let mut tried = 0;
    for syscall in writes {
        for n in 1..=counts.get(syscall).copied().unwrap_or(0) {
            let _ = fs::remove_dir_all(&dir);
            let ran = with_fault(&args, syscall, "ENOSPC", n);
            tried += 1;
            let at = format!("{syscall}=ENOSPC at call {n}: {ran:?}");
            assert!(
                matches!(ran.code, Some(0 | 1)) || never_started(&ran),
                "{at}"
            );
            if dir.join("oci-layout").exists() {
                whole_layout(&dir);
            }
            let again = layerstack(&args);
            assert_eq!(again.code, Some(0), "after {at}: {again:?}");
            assert_eq!(whole_layout(&dir), ["demo", "demo-web"], "after {at}");
            assert_eq!(temps(&dir), Vec::<String>::new(), "after {at}");
        }
    }
    report("demo: injected faults", tried);
    assert!(tried > 100, "{tried}");
}

/// Kills `args` after each of `steps` delays spread over one run's
/// duration; after each kill, `check` looks at what is left and the next
/// run must succeed.
fn kill_at_spread_moments(
    args: &[&str],
    steps: u32,
    mut reset: impl FnMut(),
    mut check: impl FnMut(&str),
) -> usize {
    // The shortest of three runs: the first run of a command is slower
    // (cold caches), and delays spread over a run longer than the ones
    // killed would mostly come after the process has ended.
    let full = (0..3)
        .map(|_| {
            reset();
            let start = Instant::now();
            ok(args);
            start.elapsed()
        })
        .min()
        .expect("three runs");
    let mut killed = 0;
    for i in 0..steps {
        reset();
        let delay = full * i / steps;
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        check(&format!("killed after {delay:?} of {full:?}"));
        ok(args);
    }
    killed
}

#[test]
fn kills_during_demo_and_commit_leave_whole_layouts() {
    let scratch = Scratch::new("kill-demo");
    let dir = scratch.path("demo");
    let demo_kills = kill_at_spread_moments(
        &["demo", dir.as_str()],
        40,
        || {
            let _ = fs::remove_dir_all(&dir);
        },
        |at| {
            if dir.join("oci-layout").exists() {
                whole_layout(&dir);
            }
            let _ = at;
        },
    );
    assert_eq!(whole_layout(&dir), ["demo", "demo-web"]);

    let fx = fixture("kill-commit");
    let work = fx.layout.with_file_name("work");
    let image = format!("{work}:demo");
    let tags_before = whole_layout(&fx.layout);
    let index_before = fs::read(fx.layout.join("index.json")).unwrap();
    let commit_kills = kill_at_spread_moments(
        &["commit", image.as_str(), fx.tree.as_str(), "--tag", "v2"],
        40,
        || copy_tree(&fx.layout, &work),
        |at| {
            let tags = whole_layout(&work);
            if tags == tags_before {
                assert_eq!(
                    fs::read(work.join("index.json")).unwrap(),
                    index_before,
                    "{at}"
                );
            } else {
                assert!(tags.contains(&"v2".to_owned()), "{at}");
            }
        },
    );
    assert_eq!(temps(&work), Vec::<String>::new());
    report(
        &format!("kills that hit a running process (demo {demo_kills}, commit {commit_kills})"),
        demo_kills + commit_kills,
    );
    assert!(
        demo_kills > 10 && commit_kills > 10,
        "{demo_kills} {commit_kills}"
    );
}

#[test]
fn a_symlinked_blobs_directory_is_refused_and_nothing_is_written_outside() {
    let fx = fixture("symlinked-blobs");
    for part in ["blobs", "blobs/sha256"] {
        let work = fx.layout.with_file_name("work");
        copy_tree(&fx.layout, &work);
        let outside = fx.layout.with_file_name("outside");
        let _ = fs::remove_dir_all(&outside);
        fs::rename(work.join(part), &outside).unwrap();
        std::os::unix::fs::symlink(&outside, work.join(part)).unwrap();
        let listing = |d: &Utf8Path| {
            let mut names: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        let before = listing(&outside);
        let index_before = fs::read(work.join("index.json")).unwrap();
        let want = format!(
            "error: failed to open `{work}/{part}`: it is a symlink, and no part of an image layout is followed\n"
        );
        let image = format!("{work}:demo");
        for args in [
            vec!["commit", image.as_str(), fx.tree.as_str(), "--tag", "v2"],
            vec!["ls", image.as_str()],
            vec!["inspect", image.as_str()],
            vec!["gc", work.as_str()],
        ] {
            let ran = layerstack(&args);
            assert_eq!(
                (ran.code, ran.stderr.as_str()),
                (Some(1), want.as_str()),
                "{args:?}"
            );
        }
        assert_eq!(listing(&outside), before, "{part}");
        assert_eq!(fs::read(work.join("index.json")).unwrap(), index_before);
    }
}

#[test]
fn fifos_in_a_layout_give_an_error_instead_of_a_hang() {
    let fx = fixture("fifos");
    let work = fx.layout.with_file_name("work");
    let image = format!("{work}:demo");
    let target = fx.layout.with_file_name("target");
    for part in ["index.json", "oci-layout"] {
        copy_tree(&fx.layout, &work);
        fs::remove_file(work.join(part)).unwrap();
        let made = Command::new("mkfifo")
            .arg(work.join(part))
            .status()
            .unwrap();
        assert!(made.success());
        let what = if part == "oci-layout" {
            "open image"
        } else {
            "open"
        };
        let want =
            format!("error: failed to {what} `{work}/{part}`: it is a fifo, not a regular file\n");
        for args in [
            vec!["inspect", image.as_str()],
            vec!["ls", image.as_str()],
            vec!["cat", image.as_str(), "etc/app.conf"],
            vec!["unpack", image.as_str(), target.as_str()],
            vec!["commit", image.as_str(), fx.tree.as_str(), "--tag", "v2"],
            vec!["gc", work.as_str()],
        ] {
            let ran = run(Command::new("timeout").arg("20").arg(BIN).args(&args));
            assert_eq!(
                (ran.code, ran.stderr.as_str()),
                (Some(1), want.as_str()),
                "{part} {args:?}"
            );
        }
    }
}

#[test]
fn tags_that_cannot_be_named_again_are_refused_before_anything_is_written() {
    let fx = fixture("bad-tags");
    let work = fx.layout.with_file_name("work");
    copy_tree(&fx.layout, &work);
    let image = format!("{work}:demo");
    let blobs_before = blob_names(&work);
    let index_before = fs::read(work.join("index.json")).unwrap();
    let digest_tag = format!("sha256:{}", "ab".repeat(32));
    let allowed = "(a tag is 1 to 128 of A-Z a-z 0-9 _ . -, and does not start with . or -)";
    for (tag, why) in [
        ("a/b", "`/` is not allowed"),
        ("x:y", "`:` is not allowed"),
        ("../../escape", "it starts with `.`"),
        (digest_tag.as_str(), "`:` is not allowed"),
        ("", "it is empty"),
        ("tab\there", "`\\t` is not allowed"),
    ] {
        let ran = layerstack(&["commit", image.as_str(), fx.tree.as_str(), "--tag", tag]);
        let shown = tag.escape_debug();
        assert_eq!(
            (ran.code, ran.stderr),
            (
                Some(1),
                format!("error: failed to write `{shown}`: invalid tag: {why} {allowed}\n")
            ),
            "{tag:?}"
        );
        assert_eq!(blob_names(&work), blobs_before);
        assert_eq!(fs::read(work.join("index.json")).unwrap(), index_before);
    }
    ok(&[
        "commit",
        image.as_str(),
        fx.tree.as_str(),
        "--tag",
        "V2_x-1.0",
    ]);
    ok(&["cat", &format!("{work}:V2_x-1.0"), "etc/app.conf"]);
}

#[test]
fn gc_removes_what_no_tag_reaches_and_what_killed_runs_left() {
    let fx = fixture("gc");
    let work = fx.layout.with_file_name("work");
    copy_tree(&fx.layout, &work);
    let blobs = work.join("blobs/sha256");
    fs::write(blobs.join(".tmp-999999-1"), b"left by a killed run").unwrap();
    let stray = Digest::of(b"stray");
    fs::write(blobs.join(stray.hex()), b"stray").unwrap();
    let want_lines = format!(
        "blob {stray}\n\
         {{verb}} temporary file blobs/sha256/.tmp-999999-1\n\
         {work}: {{verb}} 1 unreferenced blob and 1 stale temporary file (25 bytes)\n"
    );
    let dry = ok(&["gc", work.as_str(), "--dry-run"]);
    assert_eq!(
        dry,
        format!(
            "would remove {}",
            want_lines.replace("{verb}", "would remove")
        )
    );
    assert_eq!(blob_names(&work).len(), blob_names(&fx.layout).len() + 2);
    let done = ok(&["gc", work.as_str()]);
    assert_eq!(
        done,
        format!("removed {}", want_lines.replace("{verb}", "removed"))
    );
    assert_eq!(blob_names(&work), blob_names(&fx.layout));
    assert_eq!(
        ok(&["gc", work.as_str()]),
        format!("{work}: removed 0 unreferenced blobs and 0 stale temporary files (0 bytes)\n")
    );
    whole_layout(&work);
}

#[test]
fn a_demo_stopped_before_the_layout_was_finished_is_finished_by_the_next() {
    let scratch = Scratch::new("demo-resume");
    let dir = scratch.path("demo");
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("blobs/sha256/.tmp-999999-3"), b"partial").unwrap();
    let whole = Digest::of(b"whole");
    fs::write(dir.join("blobs/sha256").join(whole.hex()), b"whole").unwrap();
    ok(&["demo", dir.as_str()]);
    assert_eq!(whole_layout(&dir), ["demo", "demo-web"]);
    assert_eq!(temps(&dir), Vec::<String>::new());

    // Something that is not ours is never taken over.
    let other = scratch.path("other");
    fs::create_dir_all(other.join("blobs/sha256")).unwrap();
    fs::write(other.join("blobs/sha256/notes.txt"), b"mine").unwrap();
    let ran = layerstack(&["demo", other.as_str()]);
    assert_eq!(ran.code, Some(1));
    assert_eq!(
        ran.stderr,
        format!(
            "error: failed to build image `{other}`: it is not an image layout, nor one an earlier \
             run left unfinished; `layerstack demo` writes only into a new or empty directory, or one it wrote before\n"
        )
    );
}

#[test]
fn commit_of_a_tree_wider_than_the_descriptor_limit() {
    let fx = fixture("wide");
    for i in 0..2000 {
        let d = fx.tree.join(format!("wide/d{i:04}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f"), format!("{i}\n")).unwrap();
    }
    let work = fx.layout.with_file_name("work");
    copy_tree(&fx.layout, &work);
    // `ulimit -n` sets the hard limit too: raising the soft one at start
    // does not help; only a bounded walk does.
    let script = format!(
        "ulimit -n 1024 && exec {BIN} commit {work}:demo {} --tag wide",
        fx.tree
    );
    let ran = run(Command::new("bash").args(["-c", &script]));
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let listed = ok(&["ls", &format!("{work}:wide"), "/wide"]);
    assert_eq!(
        listed.lines().filter(|l| l.contains(" /wide/d")).count(),
        2000
    );
    assert_eq!(
        ok(&["cat", &format!("{work}:wide"), "wide/d1999/f"]),
        "1999\n"
    );
}

#[test]
fn the_tool_raises_its_soft_descriptor_limit_to_the_hard_one() {
    let test = "the_tool_raises_its_soft_descriptor_limit_to_the_hard_one";
    if !have("strace", test) {
        return;
    }
    let scratch = Scratch::new("raise");
    let trace = scratch.path("trace");
    let script = format!(
        "ulimit -S -n 64 && ulimit -H -n 1000 && exec strace -o {trace} -e trace=prlimit64,setrlimit {BIN} gc {}",
        scratch.path("none")
    );
    let ran = run(Command::new("bash").args(["-c", &script]));
    assert_eq!(ran.code, Some(1), "{ran:?}");
    let text = fs::read_to_string(&trace).unwrap();
    assert!(
        text.contains("RLIMIT_NOFILE, {rlim_cur=1000, rlim_max=1000}"),
        "{text}"
    );
}

/// The peak resident memory of `args`, in KiB, measured by GNU time (the
/// kernel's `ru_maxrss` of the child).
fn peak_kib(args: &[&str]) -> u64 {
    let ran = run(Command::new("/usr/bin/time")
        .args(["-f", "peak %M"])
        .arg(BIN)
        .args(args)
        .stdout(Stdio::null()));
    assert_eq!(ran.code, Some(0), "{args:?}: {ran:?}");
    let line = ran.stderr.lines().last().unwrap_or_default();
    line.strip_prefix("peak ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak in {ran:?}"))
}

/// The most memory a command may use above the baseline (the same command
/// on the tree without the large file).
const MEMORY_BOUND_KIB: u64 = 64 * 1024;

/// Whether GNU time is here to measure peaks; prints why not.
fn have_gnu_time(test: &str) -> bool {
    let ok = std::path::Path::new("/usr/bin/time").exists();
    if !ok {
        assert!(
            std::env::var_os("LAYERSTACK_REQUIRE_TOOLS").is_none(),
            "{test} needs GNU time (/usr/bin/time) and LAYERSTACK_REQUIRE_TOOLS is set"
        );
        eprintln!("SKIP {test}: GNU time is not installed (apt-get install time)");
    }
    ok
}

/// Runs each command of `commands` under GNU time and checks that its
/// peak stays within [`MEMORY_BOUND_KIB`] of `baseline`.
fn check_peaks(baseline: u64, commands: &[(&str, Vec<&str>)]) {
    let mut peaks = Vec::new();
    for (what, args) in commands {
        let peak = peak_kib(args);
        assert!(
            peak <= baseline + MEMORY_BOUND_KIB,
            "{what}: peak {peak} KiB, baseline {baseline} KiB"
        );
        peaks.push(format!("{what} {peak} KiB"));
    }
    note(&format!(
        "peak memory (baseline {baseline} KiB): {}",
        peaks.join(", ")
    ));
}

/// The commands whose peaks are bounded with a large `file` in `tree`:
/// `commit` of `tree` on `base` as `big`, `ls -R` and `cat` of `big`,
/// and `commit` of the unchanged tree on `big`.
fn large_file_commands<'a>(
    base: &'a str,
    big: &'a str,
    tree: &'a str,
    file: &'a str,
) -> Vec<(&'static str, Vec<&'a str>)> {
    vec![
        ("commit", vec!["commit", base, tree, "--tag", "big"]),
        ("ls", vec!["ls", big, "-R"]),
        ("cat", vec!["cat", big, file]),
        (
            "commit unchanged",
            vec!["commit", big, tree, "--tag", "big2"],
        ),
    ]
}

#[test]
fn a_1_gib_sparse_or_zero_file_is_committed_listed_and_read_in_bounded_memory() {
    let test = "a_1_gib_sparse_or_zero_file_is_committed_listed_and_read_in_bounded_memory";
    if !have_gnu_time(test) {
        return;
    }
    let fx = fixture("memory");
    let work = fx.layout.with_file_name("work");
    copy_tree(&fx.layout, &work);
    let base = format!("{work}:demo");
    let baseline = peak_kib(&["commit", &base, fx.tree.as_str(), "--tag", "baseline"]);
    const GIB: u64 = 1 << 30;
    // A hole of 1 GiB with a little data at both ends, and 256 MiB of
    // zeros written as data (not a hole).
    let sparse = fs::File::create(fx.tree.join("sparse.img")).unwrap();
    sparse.set_len(GIB).unwrap();
    drop(sparse);
    let mut ends = fs::OpenOptions::new()
        .write(true)
        .open(fx.tree.join("sparse.img"))
        .unwrap();
    use std::io::{Seek, SeekFrom, Write};
    ends.write_all(b"start").unwrap();
    ends.seek(SeekFrom::Start(GIB - 3)).unwrap();
    ends.write_all(b"end").unwrap();
    drop(ends);
    let zeros = fs::File::create(fx.tree.join("zeros.img")).unwrap();
    let block = vec![0u8; 1 << 20];
    let mut zeros = std::io::BufWriter::new(zeros);
    for _ in 0..256 {
        zeros.write_all(&block).unwrap();
    }
    zeros.into_inner().unwrap().sync_all().unwrap();

    let big = format!("{work}:big");
    check_peaks(
        baseline,
        &large_file_commands(&base, &big, fx.tree.as_str(), "sparse.img"),
    );
    // What was stored is the file: its length, and its ends.
    let mut cat = Command::new(BIN)
        .args(["cat", big.as_str(), "sparse.img"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = cat.stdout.take().unwrap();
    let mut head = [0u8; 5];
    std::io::Read::read_exact(&mut out, &mut head).unwrap();
    assert_eq!(&head, b"start");
    let mut rest = Vec::new();
    let mut total = 5u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut out, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        rest.clear();
        rest.extend_from_slice(&buf[..n]);
    }
    assert!(cat.wait().unwrap().success());
    assert_eq!(total, GIB);
    assert!(rest.ends_with(b"end"));
    let listed = ok(&["ls", big.as_str(), "/zeros.img"]);
    assert!(
        listed.contains(" 268,435,456 ") || listed.contains(" 268435456 "),
        "{listed}"
    );
}

/// Block `i` of [`write_data_file`]'s data: `seed`, a 4 KiB block of
/// pseudo-random bytes (splitmix64, none zero), with `i` in its first 8
/// bytes.
fn data_block(seed: &[u8], i: u64) -> Vec<u8> {
    let mut block = seed.to_vec();
    block[..8].copy_from_slice(&(i | 1 << 63).to_le_bytes());
    block
}

/// 4 KiB of pseudo-random bytes, none of them zero.
fn data_seed() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..4096 / 8)
        .flat_map(|_| next().to_le_bytes())
        .map(|b| b | 1)
        .collect()
}

/// Writes `len` bytes (a multiple of 4 KiB) of data without a zero byte
/// to `path`: distinct blocks (so nothing can share them) that gzip still
/// compresses fast (each repeats the seed), so that the commit of 1 GiB
/// takes seconds, not the half minute random bytes take.
fn write_data_file(path: &Utf8Path, len: u64) {
    use std::io::Write;
    let seed = data_seed();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path).unwrap());
    for i in 0..len / 4096 {
        out.write_all(&data_block(&seed, i)).unwrap();
    }
    out.into_inner().unwrap().sync_all().unwrap();
}

/// Checks that `reader` gives exactly [`write_data_file`]'s `len` bytes.
fn check_data(mut reader: impl std::io::Read, len: u64, what: &str) {
    let seed = data_seed();
    let mut got = vec![0u8; 4096];
    for i in 0..len / 4096 {
        reader
            .read_exact(&mut got)
            .unwrap_or_else(|e| panic!("{what}: block {i}: {e}"));
        assert!(got == data_block(&seed, i), "{what}: block {i} differs");
    }
    assert_eq!(reader.read(&mut [0u8; 1]).unwrap(), 0, "{what}: too long");
}

#[test]
fn a_1_gib_file_of_data_is_committed_listed_read_and_unpacked_in_bounded_memory() {
    let test = "a_1_gib_file_of_data_is_committed_listed_read_and_unpacked_in_bounded_memory";
    if !have_gnu_time(test) {
        return;
    }
    let started = Instant::now();
    let fx = fixture("data-memory");
    let base = format!("{}:demo", fx.layout);
    let baseline = peak_kib(&["commit", &base, fx.tree.as_str(), "--tag", "baseline"]);
    const GIB: u64 = 1 << 30;
    write_data_file(&fx.tree.join("data.bin"), GIB);
    let big = format!("{}:big", fx.layout);
    let unpacked = fx.layout.with_file_name("unpacked");
    let mut commands = large_file_commands(&base, &big, fx.tree.as_str(), "data.bin");
    commands.push(("unpack", vec!["unpack", big.as_str(), unpacked.as_str()]));
    check_peaks(baseline, &commands);
    // The spill files had no names: nothing is left in the layout.
    assert_eq!(temps(&fx.layout), Vec::<String>::new());
    // What was stored, read back and unpacked is the file.
    let mut cat = Command::new(BIN)
        .args(["cat", big.as_str(), "data.bin"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    check_data(
        std::io::BufReader::with_capacity(1 << 20, cat.stdout.take().unwrap()),
        GIB,
        "cat",
    );
    assert!(cat.wait().unwrap().success());
    let file = fs::File::open(unpacked.join("data.bin")).unwrap();
    check_data(
        std::io::BufReader::with_capacity(1 << 20, file),
        GIB,
        "unpack",
    );
    note(&format!("{test}: {:?}", started.elapsed()));
}

#[test]
fn a_user_without_root_commits_mode_000_objects_and_gets_their_modes_back() {
    let test = "a_user_without_root_commits_mode_000_objects_and_gets_their_modes_back";
    if !crate::tools::root(test) {
        return;
    }
    let fx = fixture("mode-000");
    fs::create_dir_all(fx.tree.join("locked/inner")).unwrap();
    fs::write(fx.tree.join("locked/inner/secret"), "hidden\n").unwrap();
    fs::write(fx.tree.join("etc/unreadable"), "no one may read me\n").unwrap();
    let chmod = |path: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(fx.tree.join(path), fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod("etc/unreadable", 0o000);
    chmod("locked/inner/secret", 0o000);
    chmod("locked/inner", 0o000);
    chmod("locked", 0o000);
    let nobody = "65534";
    let own = Command::new("chown")
        .args([
            "-R",
            &format!("{nobody}:{nobody}"),
            fx.tree.as_str(),
            fx.layout.as_str(),
        ])
        .status()
        .unwrap();
    assert!(own.success());
    // The same tree committed by root and by an ordinary user: the same
    // layer, byte for byte.
    let mut digests = Vec::new();
    for (who, user) in [("root", None), ("user", Some(nobody))] {
        let work = fx.layout.with_file_name(format!("work-{who}"));
        let tree = fx.tree.with_file_name(format!("tree-{who}"));
        copy_tree(&fx.layout, &work);
        copy_tree(&fx.tree, &tree);
        let mut cmd = Command::new("env");
        cmd.arg("SOURCE_DATE_EPOCH=1700000000");
        if let Some(id) = user {
            cmd.args([
                "setpriv",
                &format!("--reuid={id}"),
                &format!("--regid={id}"),
                "--clear-groups",
            ]);
        }
        let image = format!("{work}:demo");
        let ran = run(cmd
            .arg(BIN)
            .args(["commit", image.as_str(), tree.as_str(), "--tag", "v2"]));
        assert_eq!(ran.code, Some(0), "{who}: {ran:?}");
        let store = ImageStore::new(OciLayout::open(&work).unwrap());
        let image = store.image(Some("v2")).unwrap();
        digests.push(image.layers().last().unwrap().digest);
        let view = store.container(&image).unwrap();
        assert_eq!(
            view.read_to_string("locked/inner/secret").unwrap(),
            "hidden\n"
        );
        assert_eq!(view.symlink_metadata("locked").unwrap().mode, 0o000);
        assert_eq!(view.symlink_metadata("etc/unreadable").unwrap().mode, 0o000);
        // The modes on disk are as they were.
        for path in [
            "etc/unreadable",
            "locked/inner/secret",
            "locked/inner",
            "locked",
        ] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::symlink_metadata(tree.join(path))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0, "{who}: {path}");
        }
    }
    assert_eq!(digests[0], digests[1]);
}
