//! Reads that take no lock another thread takes: per-thread memos of the
//! view's caches.
//!
//! A warm `metadata` costs about 65 ns. Any lock every reader takes — the
//! view's `RwLock`, a cache's `Mutex` — is an atomic write to one cache
//! line, and two cores passing that line back and forth cost as much as
//! the lookup itself: two reader threads got less done than one. So each
//! thread reads through a *memo* of its own (one of a few shards, each on
//! its own cache line, picked by a number the thread draws once): the
//! directory indexes and remembered metadata it has used, copied from the
//! view's caches, and the lower layers. A lookup the memo answers locks
//! only the memo; anything else (a miss, an object in the upper layer,
//! a symlink, a path that is not plain) takes the view's read lock as
//! before and then copies what it used into the memo.
//!
//! Why a memo is never stale: it is filled only under the view's read
//! lock, from caches that writers keep current, and every writer empties
//! every memo right after taking the write lock, before it changes
//! anything. A reader that holds its memo while a writer starts is
//! answered from the state before the change (the writer waits for the
//! memo); a reader after the writer is done finds an empty memo and takes
//! the read lock. Each answer therefore comes from one state, and a read
//! that starts after a change completes sees it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::error::{ErrorKind, Result};
use crate::layer::Layer;
use crate::meta::{FileType, Metadata};
use crate::path::{Name, NameBuf};
use crate::view::resolve::{DirIndex, State, UPPER, plain_split};

/// Memos per view: enough that the threads of a small pool rarely share
/// one (threads draw their numbers in turn, so up to this many threads
/// started together get a memo each).
const SHARDS: usize = 8;

/// Reads up to this many bytes are made holding the memo; larger ones let
/// it go first (see [`Readers::read_lower`]).
const SMALL_READ: usize = 64 << 10;

/// What the threads of one view remember, one memo per shard.
pub(crate) struct Readers {
    shards: Box<[Shard]>,
}

/// One memo on its own cache line (128 bytes: the prefetcher of common
/// x86 cores pulls lines in pairs), so two memos never share one.
#[repr(align(128))]
struct Shard(Mutex<Memo>);

/// A copy of what the view's caches held, all of one state of the view.
#[derive(Default)]
struct Memo {
    /// The view's lower layers, top first (layer index `i` is `lowers[i - 1]`),
    /// each behind an `Arc` of this memo's own: a reader that takes a
    /// layer out of the memo counts on this shard's count, not on the
    /// layer's, which every reader of the layer on every core would write.
    lowers: Vec<Arc<Arc<dyn Layer>>>,
    /// Directory indexes by merged path (as `State::cache`).
    dirs: HashMap<NameBuf, Arc<DirIndex>>,
    /// Remembered metadata of lower objects by merged path (as `State::metas`).
    metas: HashMap<NameBuf, Metadata>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl Default for Readers {
    fn default() -> Readers {
        Readers {
            shards: (0..SHARDS).map(|_| Shard(Mutex::default())).collect(),
        }
    }
}

impl Readers {
    /// This thread's memo.
    fn memo(&self) -> MutexGuard<'_, Memo> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static DRAWN: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        let shard = DRAWN.with(|n| *n) % self.shards.len();
        self.shards[shard]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Empties every memo. Writers call it holding the write lock, before
    /// they change anything.
    pub fn forget(&self) {
        for shard in &self.shards {
            let mut memo = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            if !memo.lowers.is_empty() || !memo.dirs.is_empty() || !memo.metas.is_empty() {
                *memo = Memo::default();
            }
        }
    }

    /// `stat` from the memo: `Some(Some(meta))` for remembered metadata,
    /// `Some(None)` for a plain path whose parent's index lacks the name
    /// (`ENOENT`), `None` when the memo cannot tell.
    pub fn stat(&self, user: &Name) -> Option<Option<Metadata>> {
        let memo = self.memo();
        if let Some(meta) = memo.metas.get(user.strip_root()) {
            return Some(Some(meta.clone()));
        }
        let (parent, name) = plain_split(user)?;
        match memo.dirs.get(parent)?.peek(name) {
            None => Some(None),
            Some(_) => None,
        }
    }

    /// `read_at` of a regular file that a lower layer holds, found through
    /// the memo; `None` when the memo cannot tell or the layer refuses a
    /// metadata-only copy (the caller then reads through the view's lock).
    pub fn read_lower(&self, user: &Name, offset: u64, len: usize) -> Option<Result<Bytes>> {
        let memo = self.memo();
        let (parent, name) = plain_split(user)?;
        let dir = memo.dirs.get(parent)?;
        if dir.peek(name)?.0 != FileType::File {
            return None;
        }
        let res = dir.get(name)?;
        let (idx, path) = res.top();
        if idx == UPPER {
            return None;
        }
        let read = if len <= SMALL_READ {
            // A small read holds the memo (another thread's only by chance
            // of the shard): cloning the layer's `Arc` instead would write
            // to a count every reader of the layer shares.
            memo.lowers.get(idx - 1)?.read_at(path, offset, len)
        } else {
            // A large one (a whole file, from disk maybe) must not hold up
            // the threads that share this shard, nor a writer's `forget`:
            // the layer is immutable, so it is read after the memo is let
            // go, as of the state the memo showed (the clone writes this
            // memo's own count, see `Memo::lowers`).
            let layer = Arc::clone(memo.lowers.get(idx - 1)?);
            drop(memo);
            layer.read_at(path, offset, len)
        };
        match read {
            Err(e) if e.kind() == ErrorKind::NotPermitted => None,
            read => Some(read),
        }
    }

    /// Copies into this thread's memo what the view's caches know about
    /// `user` (its parent's index) and `meta`, the metadata `stat`
    /// remembered for it. `st` is the state under the caller's read lock.
    pub fn learn(&self, st: &State, user: &Name, meta: Option<&Metadata>) {
        let Some((parent, _)) = plain_split(user) else {
            return;
        };
        let mut memo = self.memo();
        if memo.lowers.len() != st.lowers.len() {
            memo.lowers = st.lowers.iter().map(|l| Arc::new(Arc::clone(l))).collect();
        }
        if !memo.dirs.contains_key(parent)
            && let Some(ix) = st.cached_index(parent)
        {
            memo.dirs.insert(parent.to_owned(), ix);
        }
        if let Some(meta) = meta {
            let path = user.strip_root();
            memo.metas.insert(path.to_owned(), meta.clone());
        }
    }
}
