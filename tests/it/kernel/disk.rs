//! The kernel and a view over `DirLayer`s side by side, step by step.
//!
//! One scratch tmpfs (mounted `strictatime`, so that every access that
//! updates an atime shows) holds two copies of the lower stack: the kernel
//! mounts an overlay (always with the `noatime` mount flag, plus the
//! variant's options) over one, and a [`MergedView`] over [`DirLayer::open`]
//! lowers and a [`DirLayer::open_upper`] upper works on the other. Each
//! operation goes to both (the kernel through the chrooted child) and after
//! every step the harness compares:
//!
//! - the outcome (result or errno);
//! - the merged tree (types, modes, owners, sizes, links, data, targets,
//!   attributes);
//! - per path, whether its mtime, its ctime and its atime changed since the
//!   previous step. The view has `noatime` semantics (no read changes an
//!   atime), so the kernel mounts with `noatime` and neither side may
//!   change an atime by reading; the harness's own walks of both trees
//!   count as reads too. Symlinks' atimes are left out (see the lowers
//!   below: the view cannot read a target without updating it). A ctime the kernel changes where the view does not
//!   is accepted only where the kernel also changed its own bookkeeping
//!   attributes of that upper object (`impure`, `origin`: it writes them
//!   lazily, on a lookup or a `readdir`);
//! - which paths share an inode (classes of `st_ino` among
//!   non-directories) and, per path, whether its inode number is the one of
//!   the previous step (not across `Commit`: the kernel's commit is a
//!   remount, after which a copied-up file shows its own inode number, not
//!   its origin's);
//! - the upper directory's on-disk form: every entry's type, mode, owner,
//!   size, data, target and attributes, the whiteout form (device 0/0 or
//!   xattr), the `opaque` and `redirect` values; the kernel's bookkeeping
//!   attributes (origin, impure, nlink, uuid, metacopy, upper, protattr),
//!   directory sizes and link counts are left out. One kernel habit is
//!   accepted: it marks a pure upper directory (no origin) opaque when it
//!   moves one into a merged directory, a flag that hides nothing;
//! - the work directory: `workdir/work` must be empty on both sides after
//!   every step, except, on the kernel's side, the one whiteout (`#<hex>`,
//!   a character device 0/0) it keeps there to hard-link new whiteouts to;
//!   its `index` and `incompat` beside `work` are its own;
//! - the lower layers (and committed uppers, once committed): tree and
//!   times exactly as when first seen, on both sides. The atime of a lower
//!   *symlink* is left out: the view reads a target with `readlinkat`, which
//!   updates the atime, and no system call reads a symlink without doing
//!   so (the kernel's overlay does not touch it).
//!
//! The harness reads layers, uppers and work directories through a
//! read-only `noatime` bind mount of the scratch root (the "observer"), so
//! that its own reading changes no time.
//!
//! `Op::Commit`: the kernel unmounts, the upper becomes the top lower, and
//! it remounts with a fresh upper whose root keeps the old root's mode,
//! owner, attributes, atime and mtime (`harness::Overlay::commit`); the
//! view calls [`MergedView::commit`] with [`DirLayerOptions::commit_dir`]
//! set, which moves the upper into that directory and opens a fresh one at
//! the same path.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use layerstack::layer::dir::DirLayerOptions;
use layerstack::merged::ViewOptions;
use layerstack::model::Snapshot;
use layerstack::testing::{Op, apply_to_view, snapshot_dir, snapshot_view, xattrs_of};
use layerstack::{DirLayer, Layer, MemLayer, MergedView, Name, NameBuf};
use rustix::mount::MountFlags;

use crate::support::harness::{ESTALE_MARK, Overlay, RunError, Scratch, materialize};

/// Kernel bookkeeping attributes, left out of the upper's form.
const BOOKKEEPING: [&str; 7] = [
    "trusted.overlay.origin",
    "trusted.overlay.impure",
    "trusted.overlay.nlink",
    "trusted.overlay.uuid",
    "trusted.overlay.metacopy",
    "trusted.overlay.upper",
    "trusted.overlay.protattr",
];
const OPAQUE: &str = "trusted.overlay.opaque";
const REDIRECT: &str = "trusted.overlay.redirect";
const XATTR_WHITEOUT: &str = "trusted.overlay.whiteout";
const ESTALE: i32 = 116;

fn utf8(p: &Path) -> camino::Utf8PathBuf {
    camino::Utf8PathBuf::from_path_buf(p.to_owned()).expect("a UTF-8 scratch path")
}

/// The kernel's overlay and a view over `DirLayer`s on one scratch tmpfs.
pub struct SideBySide {
    /// The kernel's side (owns the scratch tmpfs).
    pub kernel: Overlay,
    /// Our side.
    pub view: MergedView,
    /// The observer mount (see the module docs).
    obs: PathBuf,
    root: PathBuf,
    view_upper: PathBuf,
    view_work: PathBuf,
    /// Every lower directory of each side, as first seen.
    kernel_lowers: BTreeMap<PathBuf, LowerState>,
    view_lowers: BTreeMap<PathBuf, LowerState>,
    /// The observations of the previous step (kernel, view).
    prev: Option<(Observed, Observed)>,
}

/// What one side shows after a step.
struct Observed {
    stats: BTreeMap<NameBuf, Stat>,
    tree: Snapshot,
    upper: BTreeMap<NameBuf, UpperEntry>,
    work: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    atime: (i64, i64),
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dir: bool,
    symlink: bool,
}

/// One entry of an upper directory, in its on-disk form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UpperEntry {
    /// Type, mode, owner, size, data or target, non-bookkeeping attributes
    /// but for `opaque` and `redirect`; or the whiteout form.
    what: String,
    opaque: Option<Vec<u8>>,
    redirect: Option<Vec<u8>>,
    /// The kernel's bookkeeping attributes (not compared as such).
    bookkeeping: Vec<(String, Vec<u8>)>,
}

impl UpperEntry {
    fn has_origin(&self) -> bool {
        self.bookkeeping
            .iter()
            .any(|(k, _)| k == "trusted.overlay.origin")
    }
}

/// A time as (seconds, nanoseconds).
type Time = (i64, i64);
/// A lower object's atime (none for a symlink), mtime and ctime.
type LowerTimes = (Option<Time>, Time, Time);

/// A lower layer's tree and times.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LowerState {
    tree: Snapshot,
    /// Path to (atime, unless a symlink; mtime; ctime).
    times: BTreeMap<String, LowerTimes>,
}

fn stat_of(m: &fs::Metadata) -> Stat {
    Stat {
        atime: (m.atime(), m.atime_nsec()),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        ino: m.ino(),
        dir: m.is_dir(),
        symlink: m.file_type().is_symlink(),
    }
}

fn user(path: &Name) -> NameBuf {
    if path.is_empty() {
        "/".into()
    } else {
        path.to_owned()
    }
}

fn join(dir: &Name, name: &Name) -> NameBuf {
    if dir.is_empty() {
        name.to_owned()
    } else {
        NameBuf::from([dir.as_bytes(), b"/", name.as_bytes()].concat())
    }
}

fn stale(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(ESTALE)
}

/// Per path of the kernel's mount: times, inode; names `lstat` does not
/// find (whiteouts the kernel lists by mistake) left out.
fn kernel_stats(mnt: &Path) -> Result<BTreeMap<NameBuf, Stat>, RunError> {
    let unsupported = |e: std::io::Error| RunError::Unsupported(format!("walking the mount: {e}"));
    let mut out = BTreeMap::new();
    let mut todo = vec![NameBuf::new()];
    while let Some(p) = todo.pop() {
        let at = mnt.join(p.to_path());
        let m = match fs::symlink_metadata(&at) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !p.is_empty() => continue,
            Err(e) if stale(&e) => return Err(unsupported(e)),
            Err(e) => panic!("lstat `{}`: {e}", at.display()),
        };
        if m.is_dir() {
            let entries = fs::read_dir(&at).map_err(|e| {
                if stale(&e) {
                    unsupported(e)
                } else {
                    panic!("readdir `{}`: {e}", at.display())
                }
            })?;
            for e in entries {
                let name = e.expect("a mount entry").file_name();
                todo.push(join(&p, Name::new(name.as_bytes())));
            }
        }
        out.insert(p, stat_of(&m));
    }
    Ok(out)
}

/// Per path of the view: times, inode.
fn view_stats(view: &MergedView) -> BTreeMap<NameBuf, Stat> {
    let mut out = BTreeMap::new();
    let mut todo = vec![NameBuf::new()];
    while let Some(p) = todo.pop() {
        let m = view
            .symlink_metadata(user(&p))
            .unwrap_or_else(|e| panic!("the view cannot stat `{p}`: {e}"));
        if m.is_dir() {
            for e in view
                .read_dir(user(&p))
                .unwrap_or_else(|e| panic!("the view cannot list `{p}`: {e}"))
            {
                todo.push(join(&p, &e.name));
            }
        }
        let t = |t: layerstack::Timestamp| (t.sec, i64::from(t.nsec));
        out.insert(
            p,
            Stat {
                atime: t(m.atime),
                mtime: t(m.mtime),
                ctime: t(m.ctime),
                ino: m.ino,
                dir: m.is_dir(),
                symlink: m.is_symlink(),
            },
        );
    }
    out
}

/// Every entry of the upper directory `dir` (read through the observer),
/// the root as "".
fn upper_form(dir: &Path) -> BTreeMap<NameBuf, UpperEntry> {
    let mut out = BTreeMap::new();
    let mut todo = vec![NameBuf::new()];
    while let Some(p) = todo.pop() {
        let at = dir.join(p.to_path());
        let m = fs::symlink_metadata(&at)
            .unwrap_or_else(|e| panic!("lstat in an upper `{}`: {e}", at.display()));
        let t = m.file_type();
        let attrs = xattrs_of(&at, false)
            .unwrap_or_else(|e| panic!("xattrs in an upper `{}`: {e}", at.display()));
        let get = |name: &str| {
            attrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let bookkeeping: Vec<(String, Vec<u8>)> = attrs
            .iter()
            .filter(|(k, _)| BOOKKEEPING.contains(&k.as_str()))
            .cloned()
            .collect();
        let kept: Vec<String> = attrs
            .iter()
            .filter(|(k, _)| !BOOKKEEPING.contains(&k.as_str()) && k != OPAQUE && k != REDIRECT)
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
            .collect();
        let what = if t.is_char_device() && m.rdev() == 0 {
            "whiteout (device 0/0)".to_owned()
        } else if t.is_file() && m.len() == 0 && get(XATTR_WHITEOUT).is_some() {
            "whiteout (xattr)".to_owned()
        } else {
            let mut what = format!(
                "{} {:o} {}:{}",
                layerstack::FileType::from_mode(m.mode()).map_or('?', |t| t.letter()),
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            );
            if t.is_dir() {
                for e in fs::read_dir(&at).expect("list an upper directory") {
                    let name = e.expect("an upper entry").file_name();
                    todo.push(join(&p, Name::new(name.as_bytes())));
                }
            } else if t.is_file() {
                let data = fs::read(&at).expect("read an upper file");
                what += &format!(" size {} {:?}", m.len(), String::from_utf8_lossy(&data));
            } else if t.is_symlink() {
                what += &format!(" -> {:?}", fs::read_link(&at).expect("readlink"));
            } else {
                what += &format!(" rdev {:#x}", m.rdev());
            }
            if !kept.is_empty() {
                what += &format!(" {kept:?}");
            }
            what
        };
        out.insert(
            p,
            UpperEntry {
                what,
                opaque: get(OPAQUE),
                redirect: get(REDIRECT),
                bookkeeping,
            },
        );
    }
    out
}

/// The names in `workdir/work`.
fn work_entries(work: &Path) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = fs::read_dir(work.join("work"))
        .unwrap_or_else(|e| panic!("list `{}/work`: {e}", work.display()))
        .map(|e| {
            let e = e.expect("a work entry");
            let m = e.metadata().expect("lstat a work entry");
            let whiteout = m.file_type().is_char_device() && m.rdev() == 0;
            (e.file_name().into_string().expect("UTF-8 names"), whiteout)
        })
        .collect();
    out.sort();
    out
}

fn lower_state(dir: &Path) -> LowerState {
    let tree = snapshot_dir(dir).unwrap_or_else(|e| panic!("walk `{}`: {e}", dir.display()));
    let mut times = BTreeMap::new();
    for path in tree.keys() {
        let m = fs::symlink_metadata(dir.join(path.to_path())).expect("lstat in a lower");
        let s = stat_of(&m);
        let atime = (!m.file_type().is_symlink()).then_some(s.atime);
        times.insert(path.to_string(), (atime, s.mtime, s.ctime));
    }
    LowerState { tree, times }
}

/// The first difference between two snapshots, the first one ours.
pub fn tree_difference(ours: &Snapshot, kernel: &Snapshot) -> Option<String> {
    let mut paths: Vec<_> = ours.keys().chain(kernel.keys()).collect();
    paths.sort();
    paths.dedup();
    paths.into_iter().find_map(|p| {
        let (o, k) = (ours.get(p), kernel.get(p));
        (o != k).then(|| format!("`{p}`:\n  ours:   {o:?}\n  kernel: {k:?}"))
    })
}

fn changed(yes: bool) -> &'static str {
    if yes { "changed" } else { "unchanged" }
}

/// Path to the sorted paths (itself included) sharing its inode, among
/// non-directories.
fn inode_classes(stats: &BTreeMap<NameBuf, Stat>) -> BTreeMap<&Name, Vec<&Name>> {
    let mut by_ino: BTreeMap<u64, Vec<&Name>> = BTreeMap::new();
    for (p, s) in stats.iter().filter(|(_, s)| !s.dir) {
        by_ino.entry(s.ino).or_default().push(p);
    }
    stats
        .iter()
        .filter(|(_, s)| !s.dir)
        .map(|(p, s)| (p.as_name(), by_ino[&s.ino].clone()))
        .collect()
}

impl SideBySide {
    /// Materializes `layers` (top first) twice on a fresh scratch tmpfs,
    /// mounts the kernel's overlay on one copy with `noatime` and `extra`,
    /// and opens a view with `options` over the other.
    pub fn new(layers: &[MemLayer], options: ViewOptions, extra: &str) -> SideBySide {
        let mut scratch =
            Scratch::with_flags(MountFlags::STRICTATIME).expect("mount the scratch tmpfs");
        let obs = scratch.observer("obs");
        let root = scratch.root.clone();
        let ours = root.join("ours");
        let mut lowers = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let dir = ours.join(format!("l{i}"));
            fs::create_dir_all(&dir).expect("mkdir a lower");
            materialize(layer, &dir);
            lowers.push(Arc::new(DirLayer::open(utf8(&dir)).expect("open a lower")) as Arc<dyn Layer>);
        }
        let (view_upper, view_work) = (ours.join("upper"), ours.join("work"));
        // As the kernel's upper root: 0755 root:root.
        fs::create_dir(&view_upper).expect("mkdir our upper");
        fs::set_permissions(
            &view_upper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod our upper");
        let upper = DirLayer::open_upper_with(
            utf8(&view_upper),
            utf8(&view_work),
            DirLayerOptions::default().commit_dir(utf8(&ours.join("committed"))),
        )
        .expect("open our upper");
        let view = MergedView::with_options(lowers, upper, options).expect("open the view");
        let extra = if extra.is_empty() {
            "noatime".to_owned()
        } else {
            format!("noatime,{extra}")
        };
        let kernel = Overlay::in_scratch(scratch, layers, &extra);
        let mut pair = SideBySide {
            kernel,
            view,
            obs,
            root,
            view_upper,
            view_work,
            kernel_lowers: BTreeMap::new(),
            view_lowers: BTreeMap::new(),
            prev: None,
        };
        // The lowers as they are before anything reads them.
        assert_eq!(pair.check_lowers(), None, "lowers seen for the first time");
        pair
    }

    /// Our copy of lower layer `i` (as given, top first).
    pub fn our_lower(&self, i: usize) -> PathBuf {
        self.root.join("ours").join(format!("l{i}"))
    }

    /// Our upper directory.
    pub fn our_upper(&self) -> &Path {
        &self.view_upper
    }

    /// `path` (on the scratch tmpfs) as the observer sees it.
    fn seen(&self, path: &Path) -> PathBuf {
        self.obs.join(
            path.strip_prefix(&self.root)
                .expect("a path on the scratch tmpfs"),
        )
    }

    fn view_lower_dirs(&self) -> Vec<PathBuf> {
        self.view
            .layers()
            .iter()
            .map(|l| {
                let dir = l.as_any().downcast_ref::<DirLayer>().expect("a disk layer");
                dir.path().as_std_path().to_owned()
            })
            .collect()
    }

    fn observe_kernel(&self) -> Result<Observed, RunError> {
        let stats = kernel_stats(self.kernel.mnt())?;
        let tree = self.kernel.snapshot()?;
        Ok(Observed {
            stats,
            tree,
            upper: upper_form(&self.seen(self.kernel.upper())),
            work: work_entries(&self.seen(self.kernel.work()))
                .into_iter()
                // The whiteout the kernel keeps to link new ones to.
                .filter(|(name, whiteout)| !(*whiteout && name.starts_with('#')))
                .map(|(name, _)| name)
                .collect(),
        })
    }

    fn observe_view(&self) -> Observed {
        let stats = view_stats(&self.view);
        let tree = snapshot_view(&self.view).unwrap_or_else(|e| panic!("walk the view: {e}"));
        Observed {
            stats,
            tree,
            upper: upper_form(&self.seen(&self.view_upper)),
            work: work_entries(&self.seen(&self.view_work))
                .into_iter()
                .map(|(name, _)| name)
                .collect(),
        }
    }

    /// Waits until the filesystem's clock is past every ctime the last
    /// observation saw, so that every time set from now on differs from
    /// every time seen before. The kernel stamps new times from a coarse
    /// clock (the jiffy) and, with multigrain timestamps, from a floor:
    /// two objects changed within one jiffy can get exactly the same time,
    /// and a "changed" time would read as unchanged. A chmod of a file whose
    /// ctime was just queried (`stat`) takes a fine-grained time once the
    /// coarse one is not newer; repeat until it is past the mark.
    fn tick(&self) {
        let mark = self
            .prev
            .iter()
            .flat_map(|(k, v)| k.stats.values().chain(v.stats.values()))
            .map(|s| s.ctime)
            .max()
            .unwrap_or((0, 0));
        let clock = self.root.join("clock");
        if !clock.exists() {
            fs::write(&clock, "").expect("create the clock file");
        }
        let mut mode = 0o600;
        loop {
            let _ = fs::symlink_metadata(&clock).expect("stat the clock file");
            mode ^= 0o011;
            fs::set_permissions(&clock, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .expect("chmod the clock file");
            let now = fs::symlink_metadata(&clock).expect("stat the clock file");
            if (now.ctime(), now.ctime_nsec()) > mark {
                return;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }

    /// Applies `op` to both sides and compares them (step `step`, 1-based).
    pub fn step(&mut self, step: usize, op: &Op) -> Result<(), RunError> {
        self.tick();
        let kernel = self.kernel.apply(op);
        if kernel == ESTALE_MARK {
            return Err(RunError::Unsupported(format!("{op:?}: ESTALE")));
        }
        let ours = format!("{:?}", apply_to_view(&self.view, op));
        if ours != kernel {
            return Err(RunError::Diverged {
                step,
                detail: format!("{op:?}: ours gives {ours}, the kernel {kernel}"),
            });
        }
        self.check(step, Some(op))
    }

    /// Compares both sides now with each other and with the previous step.
    pub fn check(&mut self, step: usize, op: Option<&Op>) -> Result<(), RunError> {
        let k = self.observe_kernel()?;
        let v = self.observe_view();
        let after = match op {
            Some(op) => format!("after {op:?}"),
            None => "before any operation".to_owned(),
        };
        let diverged = |detail: String| RunError::Diverged {
            step,
            detail: format!("{after}: {detail}"),
        };
        if let Some(d) = tree_difference(&v.tree, &k.tree) {
            return Err(diverged(format!("the merged trees differ at {d}")));
        }
        if let Some(d) = self.compare_stats(&k, &v, op == Some(&Op::Commit)) {
            return Err(diverged(d));
        }
        if let Some(d) = compare_uppers(&k.upper, &v.upper) {
            return Err(diverged(d));
        }
        if !k.work.is_empty() || !v.work.is_empty() {
            return Err(diverged(format!(
                "leftovers in workdir/work: ours {:?}, the kernel's {:?}",
                v.work, k.work
            )));
        }
        if let Some(d) = self.check_lowers() {
            return Err(diverged(d));
        }
        self.prev = Some((k, v));
        Ok(())
    }

    fn compare_stats(&self, k: &Observed, v: &Observed, commit: bool) -> Option<String> {
        let kp: Vec<&NameBuf> = k.stats.keys().collect();
        let vp: Vec<&NameBuf> = v.stats.keys().collect();
        if kp != vp {
            return Some(format!(
                "the walks list other paths: ours {vp:?}, the kernel's {kp:?}"
            ));
        }
        let (kc, vc) = (inode_classes(&k.stats), inode_classes(&v.stats));
        if let Some((p, class)) = vc.iter().find(|(p, c)| kc.get(*p) != Some(*c)) {
            return Some(format!(
                "`{p}` shares its inode with {class:?} on ours, with {:?} on the kernel",
                kc.get(p)
            ));
        }
        let (kprev, vprev) = match &self.prev {
            Some((kprev, vprev)) => (kprev, vprev),
            None => return None,
        };
        for (p, ks) in &k.stats {
            let vs = &v.stats[p];
            let (Some(kb), Some(vb)) = (kprev.stats.get(p), vprev.stats.get(p)) else {
                continue;
            };
            let bookkeeping_changed = || {
                k.upper.get(p).map(|e| &e.bookkeeping) != kprev.upper.get(p).map(|e| &e.bookkeeping)
            };
            // A symlink's atime is left out: the view reads targets with
            // `readlinkat`, which updates it (see the module docs).
            let symlink = ks.symlink || kb.symlink || vs.symlink || vb.symlink;
            // Another object at the path on both sides (a rename or an
            // exchange put it there): whether its times "changed" compares
            // two objects' times, and the kernel's coarse clock often gives
            // objects made in one step the same time, ours never. The
            // objects' own times are compared where they were before.
            let replaced = ks.ino != kb.ino && vs.ino != vb.ino;
            for (what, kchanged, vchanged) in [
                ("mtime", ks.mtime != kb.mtime, vs.mtime != vb.mtime),
                ("ctime", ks.ctime != kb.ctime, vs.ctime != vb.ctime),
                ("atime", ks.atime != kb.atime, vs.atime != vb.atime),
            ] {
                if replaced || (what == "atime" && symlink) {
                    continue;
                }
                if kchanged == vchanged
                    || (what == "ctime" && kchanged && !vchanged && bookkeeping_changed())
                {
                    continue;
                }
                return Some(format!(
                    "the {what} of `{p}` {} on ours ({:?} -> {:?}), {} on the kernel ({:?} -> {:?})",
                    changed(vchanged),
                    time_of(what, vb),
                    time_of(what, vs),
                    changed(kchanged),
                    time_of(what, kb),
                    time_of(what, ks),
                ));
            }
            let same_objects = !ks.dir && !kb.dir && !vs.dir && !vb.dir;
            if !commit && same_objects && (ks.ino == kb.ino) != (vs.ino == vb.ino) {
                return Some(format!(
                    "the inode number of `{p}` {} on ours, {} on the kernel",
                    changed(vs.ino != vb.ino),
                    changed(ks.ino != kb.ino)
                ));
            }
        }
        None
    }

    /// Every lower directory of both sides must be as when first seen.
    fn check_lowers(&mut self) -> Option<String> {
        let kernel_dirs = self.kernel.lowers().to_vec();
        let view_dirs = self.view_lower_dirs();
        for (side, dirs, seen_before) in [
            ("the kernel's", kernel_dirs, &mut self.kernel_lowers),
            ("our", view_dirs, &mut self.view_lowers),
        ] {
            for dir in dirs {
                let seen = self
                    .obs
                    .join(dir.strip_prefix(&self.root).expect("on the scratch tmpfs"));
                let now = lower_state(&seen);
                match seen_before.get(&dir) {
                    None => {
                        seen_before.insert(dir, now);
                    }
                    Some(before) if *before == now => {}
                    Some(before) => {
                        return Some(format!(
                            "{side} lower `{}` changed: {}",
                            dir.display(),
                            lower_difference(before, &now)
                        ));
                    }
                }
            }
        }
        None
    }
}

fn time_of(what: &str, s: &Stat) -> (i64, i64) {
    match what {
        "mtime" => s.mtime,
        "ctime" => s.ctime,
        _ => s.atime,
    }
}

fn lower_difference(before: &LowerState, now: &LowerState) -> String {
    if let Some(d) = tree_difference(&now.tree, &before.tree) {
        return format!("tree (now / before) at {d}");
    }
    let (p, b) = before
        .times
        .iter()
        .find(|(p, t)| now.times.get(*p) != Some(*t))
        .expect("a difference in the times");
    format!(
        "times of `{p}` (atime, mtime, ctime) were {b:?}, now {:?}",
        now.times.get(p)
    )
}

fn compare_uppers(
    k: &BTreeMap<NameBuf, UpperEntry>,
    v: &BTreeMap<NameBuf, UpperEntry>,
) -> Option<String> {
    let mut paths: Vec<&NameBuf> = k.keys().chain(v.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        let (ke, ve) = (k.get(p), v.get(p));
        let same = match (ke, ve) {
            (Some(ke), Some(ve)) => {
                ke.what == ve.what
                    && ke.redirect == ve.redirect
                    && (ke.opaque == ve.opaque
                        // The kernel's optimistic flag on a pure upper
                        // directory: it hides nothing.
                        || (ke.opaque.as_deref() == Some(b"y")
                            && ve.opaque.is_none()
                            && !ke.has_origin()))
            }
            _ => false,
        };
        if !same {
            let show = |e: Option<&UpperEntry>| match e {
                None => "nothing".to_owned(),
                Some(e) => format!(
                    "{} opaque={:?} redirect={:?}",
                    e.what,
                    e.opaque.as_deref().map(String::from_utf8_lossy),
                    e.redirect.as_deref().map(String::from_utf8_lossy)
                ),
            };
            return Some(format!(
                "the uppers differ at `{p}`:\n  ours:   {}\n  kernel: {}",
                show(ve),
                show(ke)
            ));
        }
    }
    None
}

/// Runs `ops` on the kernel (with `noatime` and `extra`) and on a view
/// over `DirLayer`s (with `options`) side by side, comparing everything
/// the module docs list before the first and after every step.
pub fn run_side_by_side(
    layers: &[MemLayer],
    ops: &[Op],
    options: ViewOptions,
    extra: &str,
) -> Result<SideBySide, RunError> {
    let mut pair = SideBySide::new(layers, options, extra);
    pair.check(0, None)?;
    for (i, op) in ops.iter().enumerate() {
        pair.step(i + 1, op)?;
    }
    Ok(pair)
}

/// Applies `ops` to the kernel's overlay alone (`extra` mount options),
/// whatever their outcomes; `Unsupported` if the kernel refuses the stack.
pub fn kernel_only(layers: &[MemLayer], ops: &[Op], extra: &str) -> Result<Overlay, RunError> {
    let mut overlay = Overlay::new(layers, extra);
    for op in ops {
        if overlay.apply(op) == ESTALE_MARK {
            return Err(RunError::Unsupported(format!("{op:?}: ESTALE")));
        }
    }
    Ok(overlay)
}

/// Runs `ops` on the kernel alone (mount options `extra`), unmounts it and
/// opens a view with `options` over its upperdir and workdir (the pair, so
/// that its `work/index` is there) and its lowers: the view must show the
/// kernel's final tree. The one refusal accepted is the documented one:
/// an upper whose `work/index` holds entries does not open
/// (`EOPNOTSUPP`), since the crate cannot compute the file handles the
/// index is keyed by. `Err` with the first difference.
pub fn read_back_kernels_upper(
    layers: &[MemLayer],
    ops: &[Op],
    options: ViewOptions,
    extra: &str,
) -> Result<(), RunError> {
    let mut overlay = kernel_only(layers, ops, extra)?;
    let kernel = overlay.snapshot()?;
    overlay.unmount_for_good();
    let lowers: Vec<Arc<dyn Layer>> = overlay
        .lowers()
        .iter()
        .map(|d| Arc::new(DirLayer::open(utf8(d)).expect("open a lower")) as Arc<dyn Layer>)
        .collect();
    let indexed = fs::read_dir(overlay.work().join("index")).map_or(0, Iterator::count);
    let view = DirLayer::open_upper(utf8(overlay.upper()), utf8(overlay.work()))
        .and_then(|upper| MergedView::with_options(lowers, upper, options));
    let view = match view {
        Ok(view) => view,
        Err(e) if e.kind() == layerstack::ErrorKind::Unsupported && indexed > 0 => return Ok(()),
        Err(e) => {
            return Err(RunError::Diverged {
                step: ops.len(),
                detail: format!(
                    "a view over the kernel's upperdir ({extra:?}, {indexed} index entries) does not open: {e}"
                ),
            });
        }
    };
    let ours = snapshot_view(&view).map_err(|e| RunError::Diverged {
        step: ops.len(),
        detail: format!("a view over the kernel's upperdir ({extra:?}) cannot be walked: {e}"),
    })?;
    match tree_difference(&ours, &kernel) {
        None => Ok(()),
        Some(d) => Err(RunError::Diverged {
            step: ops.len(),
            detail: format!(
                "a view over the kernel's upperdir ({extra:?}) shows another tree at {d}"
            ),
        }),
    }
}
