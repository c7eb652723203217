//! Readers and a writer on one `MergedView` (issue 6, part 3): a reader
//! sees each file entirely old or entirely new, and never a half-done
//! copy-up (a truncated or partly copied file), over memory layers and over
//! disk layers. Seeds are fixed and the work is bounded (well under 5 s
//! each in release).
//!
//! tests/dir_layer.rs has the single-file disk case
//! (`readers_never_see_a_torn_file_or_a_half_done_copy_up_on_disk`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use camino::Utf8PathBuf;
use layerstack::layer::copy_layer;
use layerstack::{DirLayer, Layer, MemLayer, MergedView};

const LEN: usize = 64 * 1024;
/// The tail a partial write (`write_at`) replaces.
const TAIL: usize = 16;

/// xorshift64*: a fixed seed gives a fixed sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A scratch directory, removed when dropped.
struct Scratch(Utf8PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = Utf8PathBuf::from_path_buf(std::env::temp_dir()).unwrap();
        let dir = base.join(format!("layerstack-conc-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn names(dirs: usize, files: usize) -> Vec<String> {
    (0..dirs)
        .flat_map(|d| (0..files).map(move |f| format!("d{d}/sub/f{f}")))
        .collect()
}

/// The lower layer: every file `LEN` bytes of `a`.
fn base(names: &[String]) -> MemLayer {
    let mut base = MemLayer::new();
    for name in names {
        base.add_file(name, vec![b'a'; LEN]).unwrap();
    }
    base
}

/// Checks one read: `LEN` bytes, a uniform body and a uniform tail (the
/// tail may differ from the body: a partial write replaced only it).
fn check(name: &str, data: &[u8]) {
    assert_eq!(
        data.len(),
        LEN,
        "{name}: a torn length (a half-done copy-up?)"
    );
    let (body, tail) = data.split_at(LEN - TAIL);
    assert!(
        body.iter().all(|b| *b == body[0]),
        "{name}: a torn body (a half-done write or copy-up)"
    );
    assert!(
        tail.iter().all(|b| *b == tail[0]),
        "{name}: a torn tail (a half-done partial write)"
    );
}

/// Two readers reading files at random while one writer replaces whole
/// files and rewrites tails (`write_at`: on a file still in the lower
/// layer, that is a copy-up first). Returns the reads checked.
fn hammer(view: &MergedView, names: &[String], writes: usize, seed: u64) -> u64 {
    let done = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    std::thread::scope(|s| {
        for r in 0..2u64 {
            let (done, reads) = (&done, &reads);
            s.spawn(move || {
                let mut rng = Rng(seed ^ ((r + 1) * 0x9E37_79B9));
                // At least a few rounds even if the writer is done first.
                let mut n = 0;
                while !done.load(Ordering::Relaxed) || n < 64 {
                    let name = &names[rng.below(names.len())];
                    check(name, &view.read(name).expect("read"));
                    n += 1;
                }
                reads.fetch_add(n, Ordering::Relaxed);
            });
        }
        let mut rng = Rng(seed);
        for i in 0..writes {
            let name = &names[rng.below(names.len())];
            let byte = b'b' + (i % 24) as u8;
            if rng.below(2) == 0 {
                view.write(name, vec![byte; LEN]).expect("write");
            } else {
                view.write_at(name, (LEN - TAIL) as u64, [byte; TAIL])
                    .expect("write_at");
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    reads.into_inner()
}

/// Every file as the writer left it, read once more: still whole.
fn check_all(view: &MergedView, names: &[String]) {
    for name in names {
        check(name, &view.read(name).unwrap());
    }
}

fn mem_view(names: &[String]) -> MergedView {
    let lower: Arc<dyn Layer> = Arc::new(base(names));
    MergedView::new(vec![lower], MemLayer::new()).unwrap()
}

/// A view over the same files in a `DirLayer` lower, with a `DirLayer`
/// upper, in `scratch`.
fn disk_view(names: &[String], scratch: &Scratch) -> MergedView {
    let lower_dir = scratch.0.join("lower");
    let mut lower = DirLayer::open_upper(&lower_dir, scratch.0.join("lower.work")).unwrap();
    copy_layer(&base(names), &mut lower).unwrap();
    drop(lower);
    let lower: Arc<dyn Layer> = Arc::new(DirLayer::open(&lower_dir).unwrap());
    let upper = DirLayer::open_upper(scratch.0.join("upper"), scratch.0.join("work")).unwrap();
    MergedView::new(vec![lower], upper).unwrap()
}

#[test]
fn readers_never_see_a_torn_file_or_a_half_done_copy_up_in_memory() {
    let names = names(1, 1);
    let view = mem_view(&names);
    let reads = hammer(&view, &names, 400, 0x5EED_0001);
    assert!(reads >= 128, "{reads} reads");
    check_all(&view, &names);
}

#[test]
fn readers_never_see_a_torn_file_among_many_in_memory() {
    let names = names(4, 8);
    let view = mem_view(&names);
    let reads = hammer(&view, &names, 400, 0x5EED_0002);
    assert!(reads >= 128, "{reads} reads");
    check_all(&view, &names);
    // Every file the writer touched was copied up, whole.
    view.with_upper(|upper| {
        for name in &names {
            let path = layerstack::LayerPath::new(name).unwrap();
            if let Some(layerstack::Entry::Node(node)) = upper.lookup(&path).unwrap() {
                assert_eq!(node.meta.size, LEN as u64, "{name} in the upper");
            }
        }
    });
}

#[test]
fn readers_never_see_a_torn_file_among_many_on_disk() {
    let scratch = Scratch::new("many");
    let names = names(4, 8);
    let view = disk_view(&names, &scratch);
    let reads = hammer(&view, &names, 200, 0x5EED_0003);
    assert!(reads >= 128, "{reads} reads");
    check_all(&view, &names);
    // What the upper holds on disk is whole too, and the work directory
    // holds nothing half-made.
    for name in &names {
        if let Ok(data) = std::fs::read(scratch.0.join("upper").join(name)) {
            check(name, &data);
        }
    }
    assert_eq!(
        std::fs::read_dir(scratch.0.join("work/work")).map_or(0, |d| d.count()),
        0,
        "leftovers in the work directory"
    );
}

/// Readers: one more than the cores of the machines the tests run on, so
/// that readers also share the view's per-thread memos.
const READERS: u64 = 4;
/// The length of version 0 of every file; version `v` is `v` bytes longer,
/// so `metadata` tells the version too.
const BASE_LEN: usize = 64;

/// Version `v` of `name`: a header naming both, padded to `BASE_LEN + v`.
fn versioned(name: &str, v: u64) -> Vec<u8> {
    let mut data = format!("{name}@{v}\n").into_bytes();
    data.resize(BASE_LEN + v as usize, b'.');
    data
}

/// The version a read of `name` returned, after checking it is that
/// version exactly (not torn, not another file's).
fn version_read(name: &str, data: &[u8]) -> u64 {
    let header = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let header = std::str::from_utf8(header).expect("a UTF-8 header");
    let (who, v) = header.rsplit_once('@').expect("a versioned header");
    assert_eq!(who, name, "{name}: another file's contents");
    let v: u64 = v.parse().expect("a version");
    assert_eq!(data, versioned(name, v), "{name}: version {v} torn");
    v
}

/// What the writer has done to each file: the step of the last change
/// that completed (and whether it removed the file), and the step of the
/// last one that started. Steps count from 1; step 0 is the lower layer.
struct Progress {
    done: Vec<AtomicU64>,
    started: Vec<AtomicU64>,
}

impl Progress {
    /// A completed step `step` as stored in `done`.
    fn pack(step: u64, removed: bool) -> u64 {
        (step << 1) | u64::from(removed)
    }
}

/// `READERS` threads stat and read files at random while one writer
/// rewrites, removes and re-creates them, creates names that did not
/// exist, and (with `commit_every`) commits the upper layer. Every answer
/// a reader gets must be one state the file was in while the reader
/// asked: never a torn file, and never older than a change the writer had
/// completed before the reader asked (a stale index, stale metadata, a
/// name still missing after its creation or still there after its
/// removal). Returns the reads checked.
fn many_readers_one_writer(
    view: &MergedView,
    names: &[String],
    lower: usize,
    steps: u64,
    commit_every: Option<u64>,
    seed: u64,
) -> u64 {
    let progress = Progress {
        done: (0..names.len())
            .map(|i| AtomicU64::new(Progress::pack(0, i >= lower)))
            .collect(),
        started: (0..names.len()).map(|_| AtomicU64::new(0)).collect(),
    };
    let finished = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    std::thread::scope(|s| {
        for r in 0..READERS {
            let (progress, finished, reads) = (&progress, &finished, &reads);
            s.spawn(move || {
                let mut rng = Rng(seed ^ ((r + 1) * 0x9E37_79B9));
                let mut n = 0;
                while !finished.load(Ordering::Relaxed) || n < 256 {
                    let f = rng.below(names.len());
                    let name = &names[f];
                    let done = progress.done[f].load(Ordering::Acquire);
                    let got = if rng.below(2) == 0 {
                        view.metadata(name).map(|m| m.size - BASE_LEN as u64)
                    } else {
                        view.read(name).map(|data| version_read(name, &data))
                    };
                    let started = progress.started[f].load(Ordering::Acquire);
                    let (done_step, removed) = (done >> 1, done & 1 == 1);
                    match got {
                        Ok(v) => {
                            assert!(
                                v >= done_step && v <= started.max(done_step),
                                "{name}: version {v}, but step {done_step} was done \
                                 and {started} started"
                            );
                        }
                        Err(e) if e.kind() == layerstack::ErrorKind::NotFound => {
                            assert!(
                                removed || started > done_step,
                                "{name}: missing, but step {done_step} (re)wrote it"
                            );
                        }
                        Err(e) => panic!("{name}: {e}"),
                    }
                    n += 1;
                }
                reads.fetch_add(n, Ordering::Relaxed);
            });
        }
        let mut rng = Rng(seed);
        let mut exists: Vec<bool> = (0..names.len()).map(|i| i < lower).collect();
        for step in 1..=steps {
            let f = rng.below(names.len());
            let name = &names[f];
            progress.started[f].store(step, Ordering::Release);
            let remove = exists[f] && rng.below(3) == 0;
            if remove {
                view.remove_file(name).expect("remove_file");
            } else {
                view.write(name, versioned(name, step)).expect("write");
            }
            exists[f] = !remove;
            progress.done[f].store(Progress::pack(step, remove), Ordering::Release);
            if commit_every.is_some_and(|k| step % k == 0) {
                view.commit().expect("commit");
            }
            // Let the readers in between the changes (on two cores a
            // memory writer would otherwise be done before they start).
            std::thread::yield_now();
        }
        finished.store(true, Ordering::Relaxed);
    });
    // What the view shows at the end is what the writer left.
    for (f, name) in names.iter().enumerate() {
        let done = progress.done[f].load(Ordering::Relaxed);
        match view.read(name) {
            Ok(data) => assert_eq!(version_read(name, &data), done >> 1),
            Err(e) => {
                assert_eq!(e.kind(), layerstack::ErrorKind::NotFound);
                assert_eq!(done & 1, 1, "{name}: missing at the end");
            }
        }
    }
    reads.into_inner()
}

/// The files of the many-readers tests: `lower` of them (first) in the
/// lower layer at version 0, the rest names that do not exist yet.
fn versioned_files() -> (Vec<String>, usize, MemLayer) {
    let old = names(4, 8);
    let mut base = MemLayer::new();
    for name in &old {
        base.add_file(name, versioned(name, 0)).unwrap();
    }
    let new = (0..4).flat_map(|d| (0..4).map(move |f| format!("d{d}/sub/new{f}")));
    let lower = old.len();
    (old.into_iter().chain(new).collect(), lower, base)
}

#[test]
fn many_readers_see_each_change_once_it_is_done_in_memory() {
    let (names, lower, base) = versioned_files();
    let view = MergedView::new(vec![Arc::new(base) as Arc<dyn Layer>], MemLayer::new()).unwrap();
    let reads = many_readers_one_writer(&view, &names, lower, 600, None, 0x5EED_0004);
    assert!(reads >= 4 * 256, "{reads} reads");
}

#[test]
fn many_readers_see_each_change_across_commits_in_memory() {
    // A commit renumbers the layers: an index or a layer a reader kept
    // from before it would now point at the wrong layer.
    let (names, lower, base) = versioned_files();
    let view = MergedView::new(vec![Arc::new(base) as Arc<dyn Layer>], MemLayer::new()).unwrap();
    let reads = many_readers_one_writer(&view, &names, lower, 600, Some(37), 0x5EED_0005);
    assert!(reads >= 4 * 256, "{reads} reads");
    assert_eq!(view.layers().len(), 1 + 600 / 37);
}

#[test]
fn many_readers_see_each_change_once_it_is_done_on_disk() {
    let scratch = Scratch::new("versions");
    let (names, lower, base) = versioned_files();
    let lower_dir = scratch.0.join("lower");
    let mut disk = DirLayer::open_upper(&lower_dir, scratch.0.join("lower.work")).unwrap();
    copy_layer(&base, &mut disk).unwrap();
    drop(disk);
    let lowers = vec![Arc::new(DirLayer::open(&lower_dir).unwrap()) as Arc<dyn Layer>];
    let upper = DirLayer::open_upper(scratch.0.join("upper"), scratch.0.join("work")).unwrap();
    let view = MergedView::new(lowers, upper).unwrap();
    let reads = many_readers_one_writer(&view, &names, lower, 300, None, 0x5EED_0006);
    assert!(reads >= 4 * 256, "{reads} reads");
}
