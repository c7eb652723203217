//! Garbage collection: unreferenced blobs, their cache records and the
//! temporary files of runs that ended.

use super::cache::{CACHE_DIR, CACHE_LAYERS, CACHE_SUFFIX};
use super::index::Node;
use super::*;

/// How old a temporary file must be before garbage collection removes it:
/// younger ones may belong to a writer that is still running.
pub(crate) const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

impl OciLayout {
    /// Removes the blobs nothing in `index.json` reaches, and temporary
    /// files of runs that ended; the same as
    /// [`collect_garbage_with(GcMode::Remove)`](OciLayout::collect_garbage_with).
    ///
    /// # Errors
    /// Those of [`collect_garbage_with`](OciLayout::collect_garbage_with).
    pub fn collect_garbage(&self) -> Result<GcReport> {
        self.collect_garbage_with(GcMode::Remove)
    }

    /// Finds (and with [`GcMode::Remove`] removes) the blobs nothing in
    /// `index.json` reaches, and temporary files of runs that ended: older
    /// than an hour, or named by a process that no longer runs.
    ///
    /// Reachable are the descriptors of `index.json`, and from an index its
    /// manifests, from a manifest its config and layers. A descriptor of an
    /// unknown media type keeps its blob, and is followed only if it holds
    /// a manifest or an index. A missing blob is skipped. Nothing is removed
    /// but regular files in `blobs/sha256/` named by a digest and temporary
    /// files of this module. It holds the layout's lock, so no tag changes
    /// meanwhile.
    ///
    /// # Errors
    /// When a manifest or index that is reachable cannot be read (corrupt or
    /// invalid), nothing is removed: what it references is unknown. I/O
    /// errors.
    pub fn collect_garbage_with(&self, mode: GcMode) -> Result<GcReport> {
        let root = self.open_root()?;
        let _lock = self.lock(&root)?;
        let mut live: HashSet<Digest> = HashSet::new();
        let mut pending = self.read_index()?.manifests;
        while let Some(desc) = pending.pop() {
            if !live.insert(desc.digest) {
                continue;
            }
            let is_document =
                media_type::is_manifest(&desc.media_type) || media_type::is_index(&desc.media_type);
            match self.read_node(&desc) {
                Ok(Node::Manifest(m)) => {
                    let Manifest { config, layers, .. } = *m;
                    pending.push(config);
                    pending.extend(layers);
                }
                Ok(Node::Index(i)) => pending.extend(i.manifests),
                Ok(Node::Other) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if is_document => return Err(e),
                Err(_) => {}
            }
        }

        let shown = self.blobs_dir();
        let blobs = match self.open_blobs_in(&root, false) {
            Ok(blobs) => blobs,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(GcReport::default()),
            Err(e) => return Err(e),
        };
        let fail = |e: Errno| errno_error(e, Operation::CollectGarbage, shown.as_str());
        let mut report = GcReport::default();
        for name in list_dir(&blobs).map_err(fail)? {
            let Some(digest) = Digest::from_hex(&name) else {
                continue;
            };
            if live.contains(&digest) {
                continue;
            }
            let st = match stat_nofollow(&blobs, &name) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(fail(e)),
            };
            if FileType::from_mode(st.st_mode) != Some(FileType::File) {
                continue;
            }
            if mode == GcMode::Remove {
                match rustix::fs::unlinkat(&*blobs, name.as_str(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(fail(e)),
                }
            }
            report.bytes_freed += u64::try_from(st.st_size).unwrap_or(0);
            report.removed.push(digest);
        }
        self.remove_stale_temps(&blobs, mode, &mut report);
        self.remove_cache_records(&root, &live, mode, &mut report);
        report.removed.sort();
        report.temporaries.sort();
        report.cache_records.sort();
        if mode == GcMode::Remove {
            rustix::fs::fsync(&*blobs).map_err(fail)?;
        }
        Ok(report)
    }

    /// Removes (or, in a dry run, lists) the temporary files in `blobs`
    /// that runs which ended left, adding them to `report`. Best effort:
    /// a file that cannot be removed stays for the next run.
    pub(super) fn remove_stale_temps(&self, blobs: &OwnedFd, mode: GcMode, report: &mut GcReport) {
        let Ok(names) = list_dir(blobs) else {
            return;
        };
        let now = SystemTime::now();
        for name in names.into_iter().filter(|n| is_temp_name(n)) {
            let Ok(st) = stat_nofollow(blobs, &name) else {
                continue;
            };
            if FileType::from_mode(st.st_mode) != Some(FileType::File) {
                continue;
            }
            let mtime = u64::try_from(st.st_mtime)
                .ok()
                .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            if !is_stale_temp(&name, mtime, now) {
                continue;
            }
            if mode == GcMode::Remove
                && rustix::fs::unlinkat(blobs, name.as_str(), AtFlags::empty()).is_err()
            {
                continue;
            }
            report.bytes_freed += u64::try_from(st.st_size).unwrap_or(0);
            report.temporaries.push(format!("{BLOBS_DIR}/{name}"));
        }
    }

    /// Removes (or, in a dry run, lists) the layer cache's records of blobs
    /// that are not `live`, and its stale temporary files. Best effort, as
    /// for temporary files: the cache is never worth failing over.
    pub(super) fn remove_cache_records(
        &self,
        root: &OwnedFd,
        live: &HashSet<Digest>,
        mode: GcMode,
        report: &mut GcReport,
    ) {
        let Ok(dir) = self.open_cache(root, false) else {
            return;
        };
        let Ok(names) = list_dir(&dir) else {
            return;
        };
        let now = SystemTime::now();
        for name in names {
            let digest = name.strip_suffix(CACHE_SUFFIX).and_then(Digest::from_hex);
            let Ok(st) = stat_nofollow(&dir, &name) else {
                continue;
            };
            if FileType::from_mode(st.st_mode) != Some(FileType::File) {
                continue;
            }
            let stale_temp = is_temp_name(&name) && {
                let mtime = u64::try_from(st.st_mtime)
                    .ok()
                    .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
                is_stale_temp(&name, mtime, now)
            };
            let dead = digest.is_some_and(|d| !live.contains(&d));
            if !(dead || stale_temp) {
                continue;
            }
            if mode == GcMode::Remove
                && rustix::fs::unlinkat(&*dir, name.as_str(), AtFlags::empty()).is_err()
            {
                continue;
            }
            report.bytes_freed += u64::try_from(st.st_size).unwrap_or(0);
            match digest {
                Some(d) => report.cache_records.push(d),
                None => report
                    .temporaries
                    .push(format!("{CACHE_DIR}/{CACHE_LAYERS}/{name}")),
            }
        }
    }
}

/// Whether the temporary file `name`, last modified at `mtime`, is left
/// over from a run that ended: it is older than [`STALE_TEMP_AGE`], or the
/// process its name records is gone (and it is not our own).
pub(super) fn is_stale_temp(name: &str, mtime: Option<SystemTime>, now: SystemTime) -> bool {
    let Some(pid) = temp_pid(name) else {
        return false;
    };
    let old = mtime
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age >= STALE_TEMP_AGE);
    let gone = pid != std::process::id()
        && rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(0))
            .is_none_or(|pid| rustix::process::test_kill_process(pid) == Err(Errno::SRCH));
    old || gone
}
