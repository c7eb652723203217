//! The parent side of the kernel harness: a scratch tmpfs per case, layers
//! materialized in the kernel's overlay format, the overlay mount, the
//! chrooted child that applies operations, `commit` by remounting, and
//! snapshots of the mounted tree.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use layerstack::layer::walk;
use layerstack::merged::ViewOptions;
use layerstack::model::{Model, Snapshot};
use layerstack::testing::{Op, Outcome, Scenario, apply_to_model};
use layerstack::{Entry, FileType, Layer, MemLayer};
use rustix::fs::{AtFlags, CWD, Mode};
use rustix::mount::{MountFlags, UnmountFlags};

use crate::support::child::{CHILD_ENV, OUTCOME_MARK, encode_hex};

/// Set to `1` to make the kernel tests fail instead of skipping.
const REQUIRE_ENV: &str = "LAYERSTACK_REQUIRE_KERNEL";
/// The test function that serves as the child: its name in the one test
/// binary, module path included.
const CHILD_TEST: &str = "kernel::kernel_child";

/// Whether the kernel tests can run: `true`, or `false` after printing one
/// loud line; panics instead when `LAYERSTACK_REQUIRE_KERNEL=1`.
pub fn kernel_available() -> bool {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    match PROBE.get_or_init(probe) {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("kernel tests required ({REQUIRE_ENV}=1) but unavailable: {reason}");
            }
            // Once per process, and past libtest's capture (which takes
            // only the print macros), so that it shows in a passing run.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                let _ = writeln!(std::io::stderr(), "SKIP kernel tests: {reason}");
            });
            false
        }
    }
}

fn probe() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not running as root".into());
    }
    let mut scratch = Scratch::new().map_err(|e| format!("cannot mount a tmpfs: {e}"))?;
    for d in ["l", "u", "w", "m"] {
        fs::create_dir(scratch.root.join(d)).map_err(|e| format!("mkdir in tmpfs: {e}"))?;
    }
    let mnt = scratch.root.join("m");
    let data = format!(
        "lowerdir={0}/l,upperdir={0}/u,workdir={0}/w",
        scratch.root.display()
    );
    mount_overlay(&mnt, &data, MountFlags::empty())
        .map_err(|e| format!("cannot mount an overlay: {e}"))?;
    scratch.mounts.push(mnt);
    Ok(())
}

/// Mounts an overlay with `data`; the token `noatime` in it is the mount
/// flag (it is no overlay option), added to `flags`.
fn mount_overlay(mnt: &Path, data: &str, mut flags: MountFlags) -> std::io::Result<()> {
    let mut options = Vec::new();
    for token in data.split(',') {
        if token == "noatime" {
            flags |= MountFlags::NOATIME;
        } else {
            options.push(token);
        }
    }
    let data = CString::new(options.join(",")).expect("mount options have no NUL");
    // nodev: the layers hold device nodes (8/1 is a real disk); nothing
    // may ever open one through the mount.
    // EBUSY: a layer is still the upper or work dir of a mount that was
    // detached lazily (see `unmount`) and not yet released, which
    // `index=on` refuses; it is released once the forked child that holds
    // it execs, so wait for that (at most 10 s).
    let mut tries = 0;
    loop {
        match rustix::mount::mount("overlay", mnt, "overlay", flags | MountFlags::NODEV, &*data) {
            Err(rustix::io::Errno::BUSY) if tries < 1000 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// Unmounts `path`, lazily if it is busy.
fn unmount(path: &Path) {
    if rustix::mount::unmount(path, UnmountFlags::empty()).is_err() {
        let _ = rustix::mount::unmount(path, UnmountFlags::DETACH);
    }
}

/// A tmpfs on a fresh directory, unmounted (with everything mounted below
/// it) and removed on drop.
pub struct Scratch {
    /// The tmpfs mount point.
    pub root: PathBuf,
    /// Mounts below `root`, unmounted first (last first).
    mounts: Vec<PathBuf>,
}

impl Scratch {
    /// A fresh tmpfs.
    pub fn new() -> std::io::Result<Scratch> {
        Scratch::with_flags(MountFlags::empty())
    }

    /// A fresh tmpfs mounted with `flags` (and `nodev`).
    pub fn with_flags(flags: MountFlags) -> std::io::Result<Scratch> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("lsk-{}-{n}", std::process::id()));
        fs::create_dir(&root)?;
        let data = CString::new("mode=0755").expect("no NUL");
        if let Err(e) =
            rustix::mount::mount("tmpfs", &root, "tmpfs", flags | MountFlags::NODEV, &*data)
        {
            let _ = fs::remove_dir(&root);
            return Err(e.into());
        }
        Ok(Scratch {
            root,
            mounts: Vec::new(),
        })
    }
}

impl Scratch {
    /// Mounts an overlay with `data` on `mnt` (a directory below the root),
    /// unmounted with the scratch.
    pub fn mount_overlay(&mut self, mnt: &Path, data: &str) {
        fs::create_dir_all(mnt).expect("mkdir the mount point");
        mount_overlay(mnt, data, MountFlags::empty())
            .unwrap_or_else(|e| panic!("mount overlay {data}: {e}"));
        self.mounts.push(mnt.to_owned());
    }

    /// Binds the scratch root (alone, not the mounts below it) at
    /// `root/name`, read-only and `noatime`: the harness reads layers
    /// through it without changing any access time.
    pub fn observer(&mut self, name: &str) -> PathBuf {
        let at = self.root.join(name);
        fs::create_dir(&at).expect("mkdir the observer mount point");
        rustix::mount::mount_bind(&self.root, &at).expect("bind the scratch root");
        self.mounts.push(at.clone());
        rustix::mount::mount_remount(
            &at,
            MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOATIME | MountFlags::NODEV,
            "",
        )
        .expect("make the observer mount read-only and noatime");
        at
    }

    /// Unmounts the last overlay mounted with [`Scratch::mount_overlay`].
    pub fn unmount_last(&mut self) {
        if let Some(m) = self.mounts.pop() {
            unmount(&m);
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in self.mounts.drain(..).rev() {
            unmount(&m);
        }
        unmount(&self.root);
        let _ = fs::remove_dir(&self.root);
    }
}

/// Writes `layer` into the empty directory `dir` in the kernel's overlay
/// format: whiteouts as character devices 0/0, opaque directories with
/// `trusted.overlay.opaque="y"`, redirects in `trusted.overlay.redirect`,
/// hard links as links, owners with `lchown`, modes (setuid and sticky too)
/// after the owner (a change of owner clears setuid), attributes with
/// `lsetxattr`. Times are left out: the model does not compare them.
pub fn materialize(layer: &dyn Layer, dir: &Path) {
    let ctx = |what: &str, path: &Path| format!("materialize: {what} `{}`", path.display());
    // Lower inode -> the first name written for it.
    let mut links: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for (path, entry) in walk(layer).expect("walk a layer") {
        let at = dir.join(path.to_path());
        let node = match entry {
            Entry::Whiteout => {
                rustix::fs::mknodat(
                    CWD,
                    &at,
                    rustix::fs::FileType::CharacterDevice,
                    Mode::empty(),
                    0,
                )
                .unwrap_or_else(|e| panic!("{}: {e}", ctx("whiteout", &at)));
                continue;
            }
            Entry::Node(node) => node,
        };
        let meta = &node.meta;
        if meta.file_type != FileType::Dir && meta.nlink > 1 {
            if let Some(first) = links.get(&meta.ino) {
                fs::hard_link(first, &at).unwrap_or_else(|e| panic!("{}: {e}", ctx("link", &at)));
                continue;
            }
            links.insert(meta.ino, at.clone());
        }
        match meta.file_type {
            FileType::Dir => fs::create_dir(&at),
            FileType::File => {
                let data = layer
                    .read_at(&path, 0, usize::MAX)
                    .expect("read a layer file");
                fs::write(&at, &data)
            }
            FileType::Symlink => {
                let target = layer.read_link(&path).expect("read a layer symlink");
                std::os::unix::fs::symlink(target, &at)
            }
            t => rustix::fs::mknodat(
                CWD,
                &at,
                crate::support::child::rustix_file_type(t),
                Mode::empty(),
                meta.rdev,
            )
            .map_err(Into::into),
        }
        .unwrap_or_else(|e| panic!("{}: {e}", ctx("create", &at)));
        rustix::fs::chownat(
            CWD,
            &at,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", ctx("lchown", &at)));
        if meta.file_type != FileType::Symlink {
            fs::set_permissions(&at, fs::Permissions::from_mode(meta.mode))
                .unwrap_or_else(|e| panic!("{}: {e}", ctx("chmod", &at)));
        }
        let mut attrs: Vec<(String, Vec<u8>)> = meta
            .xattrs
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect();
        if node.opaque {
            attrs.push(("trusted.overlay.opaque".into(), b"y".to_vec()));
        }
        if let Some(redirect) = &node.redirect {
            attrs.push((
                "trusted.overlay.redirect".into(),
                redirect.to_bytes().into_owned(),
            ));
        }
        for (name, value) in attrs {
            rustix::fs::lsetxattr(&at, name.as_str(), &value, rustix::fs::XattrFlags::empty())
                .unwrap_or_else(|e| panic!("{}: {e}", ctx(&format!("lsetxattr {name}"), &at)));
        }
    }
}

/// The first difference between two trees, in words.
pub fn first_difference(model: &Snapshot, kernel: &Snapshot) -> Option<String> {
    for (path, want) in model {
        match kernel.get(path) {
            None => {
                return Some(format!(
                    "`{path}` is in the model, not in the kernel: {want:?}"
                ));
            }
            Some(got) if got != want => {
                return Some(format!(
                    "`{path}` differs:\n  model:  {want:?}\n  kernel: {got:?}"
                ));
            }
            Some(_) => {}
        }
    }
    kernel
        .keys()
        .find(|p| !model.contains_key(*p))
        .map(|p| format!("`{p}` is in the kernel, not in the model: {:?}", kernel[p]))
}

/// A chrooted child applying operations.
pub struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts a child chrooted into `mnt`.
    pub fn start(mnt: &Path) -> Server {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, mnt)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child test process");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Server {
            child,
            stdin,
            stdout,
        }
    }

    /// Applies `op` in the child; its outcome in Debug form.
    pub fn apply(&mut self, op: &Op) -> String {
        let bytes = Scenario {
            layers: vec![],
            ops: vec![op.clone()],
        }
        .to_bytes()
        .unwrap_or_else(|| panic!("the scenario codec cannot hold {op:?}"));
        writeln!(self.stdin, "{}", encode_hex(&bytes))
            .and_then(|()| self.stdin.flush())
            .expect("send the operation to the child");
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("read the child's answer");
            assert!(n > 0, "the child died applying {op:?} (see its stderr)");
            // libtest may print `test kernel_child ... ` on the same line.
            if let Some(at) = line.find(OUTCOME_MARK) {
                return line[at + OUTCOME_MARK.len()..].trim_end().to_owned();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An overlay mount over materialized layers, with the child that applies
/// operations inside it.
pub struct Overlay {
    /// First, to be dropped (killed) before the mount goes.
    server: Option<Server>,
    scratch: Scratch,
    /// Lower directories, top first.
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
    /// Extra mount options (`redirect_dir=on`).
    extra: String,
    generation: usize,
    /// How many handles the child holds open (`Op::OpenHandle`): the
    /// kernel's commit is an unmount, which a busy mount refuses.
    handles: usize,
}

impl Overlay {
    /// Materializes `layers` (top first; at least one) and mounts them with
    /// an empty upper whose root is `0755 root:root` (as a fresh
    /// `MemLayer`'s root, which the model's root shows).
    pub fn new(layers: &[MemLayer], extra: &str) -> Overlay {
        Overlay::in_scratch(
            Scratch::new().expect("mount the scratch tmpfs"),
            layers,
            extra,
        )
    }

    /// As [`Overlay::new`], on `scratch` (its mounts stay below the
    /// overlay's).
    pub fn in_scratch(scratch: Scratch, layers: &[MemLayer], extra: &str) -> Overlay {
        assert!(!layers.is_empty(), "overlayfs needs a lower layer");
        let mut lowers = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let dir = scratch.root.join(format!("l{i}"));
            fs::create_dir(&dir).expect("mkdir a lower");
            materialize(layer, &dir);
            lowers.push(dir);
        }
        let mnt = scratch.root.join("m");
        fs::create_dir(&mnt).expect("mkdir the mount point");
        let mut overlay = Overlay {
            scratch,
            lowers,
            upper: PathBuf::new(),
            work: PathBuf::new(),
            mnt,
            extra: extra.to_owned(),
            generation: 0,
            server: None,
            handles: 0,
        };
        overlay.fresh_upper(0o755, 0, 0, &[]);
        overlay.mount();
        overlay
    }

    /// The current upper directory.
    pub fn upper(&self) -> &Path {
        &self.upper
    }

    /// The current work directory (`workdir`).
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// The mount point.
    pub fn mnt(&self) -> &Path {
        &self.mnt
    }

    /// Unmounts the overlay (stopping the child) for good: the layers stay
    /// for other readers.
    pub fn unmount_for_good(&mut self) {
        self.unmount();
    }

    /// The lower directories, top first (committed uppers included).
    pub fn lowers(&self) -> &[PathBuf] {
        &self.lowers
    }

    /// A directory on the scratch tmpfs for other uses.
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        let dir = self.scratch.root.join(name);
        fs::create_dir_all(&dir).expect("mkdir on the scratch tmpfs");
        dir
    }

    fn fresh_upper(&mut self, mode: u32, uid: u32, gid: u32, attrs: &[(String, Vec<u8>)]) {
        let g = self.generation;
        self.generation += 1;
        self.upper = self.scratch.root.join(format!("u{g}"));
        self.work = self.scratch.root.join(format!("w{g}"));
        fs::create_dir(&self.upper).expect("mkdir upper");
        fs::create_dir(&self.work).expect("mkdir work");
        std::os::unix::fs::chown(&self.upper, Some(uid), Some(gid)).expect("chown upper");
        fs::set_permissions(&self.upper, fs::Permissions::from_mode(mode)).expect("chmod upper");
        for (name, value) in attrs {
            rustix::fs::lsetxattr(
                &self.upper,
                name.as_str(),
                value,
                rustix::fs::XattrFlags::empty(),
            )
            .expect("copy a root attribute to the new upper");
        }
    }

    fn mount(&mut self) {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let mut data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            self.upper.display(),
            self.work.display()
        );
        if !self.extra.is_empty() {
            data.push(',');
            data.push_str(&self.extra);
        }
        mount_overlay(&self.mnt, &data, MountFlags::empty())
            .unwrap_or_else(|e| panic!("mount overlay {data}: {e}"));
        self.scratch.mounts.push(self.mnt.clone());
    }

    fn unmount(&mut self) {
        self.server = None;
        let mnt = self.scratch.mounts.pop().expect("the overlay is mounted");
        // Busy only for an instant when another test thread forks while this
        // one has a directory of the mount open (the fork's copy of the
        // descriptor lives until its exec): detach lazily then.
        unmount(&mnt);
    }

    /// The layer commit of the crate: unmount; the upper becomes the
    /// topmost lower; a fresh upper and work dir; remount. The new upper's
    /// root gets the old root's mode, owner and attributes, as
    /// `MergedView::commit` keeps the root's metadata (a plain new upper
    /// dir would show `0755 root:root` and lose a `chmod /`).
    pub fn commit(&mut self) {
        let m = fs::symlink_metadata(&self.mnt).expect("stat the mount root");
        let attrs = layerstack::testing::xattrs_of(&self.mnt, false).expect("root attributes");
        self.unmount();
        let old = self.upper.clone();
        self.lowers.insert(0, old);
        self.fresh_upper(m.mode() & 0o7777, m.uid(), m.gid(), &attrs);
        // And its times, as `MergedView::commit` keeps them.
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: m.atime(),
                tv_nsec: m.atime_nsec(),
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: m.mtime(),
                tv_nsec: m.mtime_nsec(),
            },
        };
        rustix::fs::utimensat(CWD, &self.upper, &times, AtFlags::empty())
            .expect("copy the root's times to the new upper");
        self.mount();
    }

    /// Applies `op` through the mount (commit by remounting); its outcome
    /// in Debug form.
    pub fn apply(&mut self, op: &Op) -> String {
        if *op == Op::Commit {
            if self.handles > 0 {
                return busy();
            }
            self.commit();
            return format!("{:?}", Outcome::Unit);
        }
        apply_in_child(&mut self.server, &mut self.handles, &self.mnt, op)
    }

    /// The merged tree.
    pub fn snapshot(&self) -> Result<Snapshot, RunError> {
        layerstack::testing::snapshot_dir(&self.mnt).map_err(|e| {
            if e.raw_os_error() == Some(ESTALE) {
                RunError::Unsupported(format!("walking the mount: {e}"))
            } else {
                panic!("walking the mount: {e}")
            }
        })
    }
}

/// `Op::Commit`'s outcome while the child holds a handle open: umount(2)
/// of a mount with open files.
pub fn busy() -> String {
    format!("{:?}", Outcome::Err(layerstack::ErrorKind::Busy))
}

/// Applies `op` (not `Op::Commit`) in the child `server` chrooted into
/// `mnt` (started on first use), counting in `handles` the handles it holds
/// open; its outcome in Debug form.
pub fn apply_in_child(
    server: &mut Option<Server>,
    handles: &mut usize,
    mnt: &Path,
    op: &Op,
) -> String {
    let got = server.get_or_insert_with(|| Server::start(mnt)).apply(op);
    if got == format!("{:?}", Outcome::Unit) {
        match op {
            Op::OpenHandle { .. } => *handles += 1,
            Op::CloseHandle { .. } => *handles -= 1,
            _ => {}
        }
    }
    got
}

/// Why a run stopped.
#[derive(Debug)]
pub enum RunError {
    /// The model and the kernel differ.
    Diverged {
        /// The step (0: before any operation).
        step: usize,
        /// What differs.
        detail: String,
    },
    /// The kernel refuses the layer stack itself (`ESTALE`): see
    /// [`ESTALE_MARK`]. Not a divergence; the case is discarded.
    Unsupported(String),
}

/// The kernel's answer, instead of an outcome, when it refuses the layers
/// with `ESTALE`: a redirect in a lower layer that makes one lower
/// directory show at two merged paths (which no kernel-made layer holds: a
/// directory rename whites out the old name). Once one of the two is copied
/// up, the kernel finds the lower directory already bound to another
/// overlay inode and fails every lookup of the other ("failed to get inode
/// (-116)"). The crate shows both paths; such stacks are outside what the
/// kernel supports and are left out of the comparison.
pub const ESTALE_MARK: &str = "KERNEL-ESTALE";
const ESTALE: i32 = 116;

/// Runs `ops` on the model (with `options`) and on an overlay over `layers`
/// (with the extra mount options), comparing every outcome and the whole
/// tree before the first and after every step. Returns the outcomes.
pub fn run(
    layers: &[MemLayer],
    ops: &[Op],
    options: ViewOptions,
    extra: &str,
) -> Result<(Vec<Outcome>, Overlay, Model), RunError> {
    let lowers: Vec<std::sync::Arc<dyn Layer>> = layers
        .iter()
        .map(|l| std::sync::Arc::new(l.clone()) as std::sync::Arc<dyn Layer>)
        .collect();
    let mut model = Model::from_layers(&lowers, options).expect("the model flattens MemLayers");
    let mut overlay = Overlay::new(layers, extra);
    let diverged = |step, detail| RunError::Diverged { step, detail };
    if let Some(d) = first_difference(&model.snapshot(), &overlay.snapshot()?) {
        return Err(diverged(0, format!("initial trees differ: {d}")));
    }
    let mut outcomes = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let want = apply_to_model(&mut model, op);
        let got = overlay.apply(op);
        if got == ESTALE_MARK {
            return Err(RunError::Unsupported(format!("{op:?}: ESTALE")));
        }
        if format!("{want:?}") != got {
            return Err(diverged(
                i + 1,
                format!("{op:?}: model gives {want:?}, kernel gives {got}"),
            ));
        }
        if let Some(d) = first_difference(&model.snapshot(), &overlay.snapshot()?) {
            return Err(diverged(i + 1, format!("after {op:?}: {d}")));
        }
        outcomes.push(want);
    }
    Ok((outcomes, overlay, model))
}
