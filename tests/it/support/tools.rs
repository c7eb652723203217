//! External tools (umoci, skopeo) and trees on disk, for the interop tests.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use camino::Utf8PathBuf;
use layerstack::model::Snapshot;
use layerstack::testing::snapshot_view;
use layerstack::{FileType, MergedView};

/// Whether `tool` runs here; prints why not. With
/// `LAYERSTACK_REQUIRE_TOOLS` set (CI), a missing tool fails the test.
pub fn have(tool: &str, test: &str) -> bool {
    tool_runs(
        test,
        tool,
        tool,
        Command::new(tool).arg("--version"),
        |_| true,
    )
}

/// Whether `query` (a version query of `what`) succeeds and its output is
/// what `accept` wants; else prints why the test skips (install
/// `package`). With `LAYERSTACK_REQUIRE_TOOLS` set (CI), a missing tool
/// fails the test.
pub fn tool_runs(
    test: &str,
    what: &str,
    package: &str,
    query: &mut Command,
    accept: impl Fn(&[u8]) -> bool,
) -> bool {
    let ok = query
        .output()
        .is_ok_and(|o| o.status.success() && accept(&o.stdout));
    if !ok {
        assert!(
            std::env::var_os("LAYERSTACK_REQUIRE_TOOLS").is_none(),
            "{test} needs `{what}` and LAYERSTACK_REQUIRE_TOOLS is set"
        );
        eprintln!("SKIP {test}: `{what}` is not installed (apt-get install {package})");
    }
    ok
}

/// Builds the Go program `tests/<dir>/main.go` (standard library only)
/// offline (GOPROXY=off, caches under `target/tmp`); `None` (after a SKIP
/// line) without `go`. With `LAYERSTACK_REQUIRE_TOOLS` set (CI), a missing
/// `go` fails the test.
pub fn go_build(dir: &str, test: &str) -> Option<std::path::PathBuf> {
    // `go` has no `--version`: ask `go version`.
    if !tool_runs(
        test,
        "go",
        "golang-go",
        Command::new("go").arg("version"),
        |_| true,
    ) {
        return None;
    }
    Some(go_build_with(dir, &[]))
}

/// Builds `tests/<dir>/main.go` as [`go_build`] does, once `go` is known
/// to run, with `gopath` (Debian's Go sources, `/usr/share/gocode`) after
/// its own GOPATH.
pub fn go_build_with(dir: &str, gopath: &[&str]) -> std::path::PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
    let exe = tmp.join(dir);
    let mut path = tmp.join("path").into_os_string();
    for extra in gopath {
        path.push(":");
        path.push(extra);
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir)
        .join("main.go");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&exe)
        .arg(&src)
        .env("GOCACHE", tmp.join("cache"))
        .env("GOPATH", path)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run go build");
    assert!(
        out.status.success(),
        "go build of tests/{dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Debian's static busybox: the shell of the tiny root filesystems `RUN`
/// runs in.
pub const BUSYBOX: &str = "/bin/busybox";

/// Whether [`BUSYBOX`] is here; prints why not. With
/// `LAYERSTACK_REQUIRE_TOOLS` set (CI), a missing one fails the test.
pub fn busybox(test: &str) -> bool {
    let ok = Path::new(BUSYBOX).is_file();
    if !ok {
        assert!(
            std::env::var_os("LAYERSTACK_REQUIRE_TOOLS").is_none(),
            "{test} needs {BUSYBOX} and LAYERSTACK_REQUIRE_TOOLS is set"
        );
        eprintln!("SKIP {test}: {BUSYBOX} is missing (apt-get install busybox-static)");
    }
    ok
}

/// Whether we are root (umoci keeps owners and devices only as root).
pub fn root(test: &str) -> bool {
    let ok = rustix::process::geteuid().is_root();
    if !ok {
        assert!(
            std::env::var_os("LAYERSTACK_REQUIRE_ROOT").is_none(),
            "{test} needs root and LAYERSTACK_REQUIRE_ROOT is set"
        );
        eprintln!("SKIP {test}: needs root (owners, devices and trusted.* xattrs)");
    }
    ok
}

/// Runs a command, panicking with its output if it fails; its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A scratch directory, removed when dropped.
pub struct Scratch(pub Utf8PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("layerstack-oci-{tag}-{}-{n}", std::process::id()));
        let dir = Utf8PathBuf::from_path_buf(dir).expect("UTF-8 temp dir");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch");
        Scratch(dir)
    }

    pub fn path(&self, sub: &str) -> Utf8PathBuf {
        self.0.join(sub)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a tree shows, for comparing: the model's snapshot (type, mode,
/// owner, size, contents, symlink target, device, xattrs), and which paths
/// are one inode. Link counts are left out: a view reports a lower file's
/// own count even when a higher layer replaced one of its names (as the
/// kernel does), where an unpacked tree counts the names it has.
#[derive(Debug, PartialEq, Eq)]
pub struct Tree {
    pub entries: Snapshot,
    pub links: Vec<Vec<String>>,
}

fn normalise(mut entries: Snapshot) -> Snapshot {
    for e in entries.values_mut() {
        e.meta.nlink = 0;
        // Overlay bookkeeping is never in a tree a user sees, and
        // `security.*` labels depend on the host.
        e.meta
            .xattrs
            .retain(|(k, _)| k.starts_with("user.") || k.starts_with("trusted."));
    }
    entries
}

/// The tree a view shows.
pub fn view_tree(view: &MergedView) -> Tree {
    let entries = snapshot_view(view).expect("snapshot the view");
    let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (path, e) in &entries {
        if e.meta.file_type != FileType::Dir {
            let ino = view.symlink_metadata(path.as_name()).expect("stat").ino;
            groups.entry(ino).or_default().push(path.to_string());
        }
    }
    Tree {
        entries: normalise(entries),
        links: sorted_groups(groups),
    }
}

/// The tree in a directory on disk (a rootfs).
pub fn dir_tree(root: &Path) -> Tree {
    let entries = layerstack::testing::snapshot_dir(root).expect("read the tree");
    let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (path, e) in &entries {
        if e.meta.file_type != FileType::Dir {
            let ino = std::fs::symlink_metadata(root.join(path.as_name()))
                .unwrap()
                .ino();
            groups.entry(ino).or_default().push(path.to_string());
        }
    }
    Tree {
        entries: normalise(entries),
        links: sorted_groups(groups),
    }
}

fn sorted_groups(groups: BTreeMap<u64, Vec<String>>) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = groups
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    out.sort();
    out
}

/// The first difference between two trees, in words.
pub fn difference(want: &Tree, got: &Tree) -> Option<String> {
    for (path, w) in &want.entries {
        match got.entries.get(path) {
            None => return Some(format!("`{path}` is missing: {w:?}")),
            Some(g) if g != w => {
                return Some(format!("`{path}` differs:\n  want: {w:?}\n  got:  {g:?}"));
            }
            Some(_) => {}
        }
    }
    if let Some(p) = got.entries.keys().find(|p| !want.entries.contains_key(*p)) {
        return Some(format!("`{p}` is extra: {:?}", got.entries[p]));
    }
    (want.links != got.links).then(|| {
        format!(
            "hard links differ: want {:?}, got {:?}",
            want.links, got.links
        )
    })
}

/// The tool (`layerstack`), built beside this test binary (`cargo test`
/// builds the workspace's binaries before it runs the tests).
pub fn tool_exe() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>/layerstack
    let tool = exe
        .parent()
        .and_then(Path::parent)
        .expect("the profile directory")
        .join("layerstack");
    assert!(
        tool.is_file(),
        "{} is missing: build it with `cargo build --release -p layerstack-cli`",
        tool.display()
    );
    tool
}
