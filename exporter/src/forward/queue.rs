//! The batches in the runtime's span spool that wait to be shipped
//! (`docs/spool.md`): found by walking `<root>/@spool/<container>/<trace>/`,
//! marked shipped by renaming `X.json` to `X.json.sent`, the only change the
//! exporter makes to the spool. The runtime evicts whole trace directories
//! at any moment; a batch that vanishes before it was shipped is counted as
//! evicted.
//!
//! A full spool holds over a thousand trace directories, and the spool is
//! polled every few seconds, so a walk does as little as it can:
//! - The runtime rewrites the spool's `usage` file whenever it adds or evicts
//!   a batch. While that file's modification time stays as it was, nothing
//!   was added or evicted, and the walk is one `stat` (with a full walk every
//!   [`FULL_WALK_EVERY`] anyway, in case a writer died between renaming its
//!   batch and counting it).
//! - A directory's modification time changes whenever an entry in it is
//!   added, renamed or removed, so a directory is listed again only when its
//!   time changed since the last walk; otherwise one `stat` suffices.
//! - File times are coarse (a change within the same tick leaves the time as
//!   it was): a time within [`RACY_NS`] of the walk is not trusted, and looked
//!   at again at the next walk.
//! - The waiting batches are kept in order and changed only where a directory changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lucid_layout::spool::{BATCH_SUFFIX, SENT_SUFFIX, SPOOL_DIR, USAGE_FILE};

/// A file time this close (ns) to the walk may change again within the same
/// timestamp tick: it is looked at again at the next walk.
pub const RACY_NS: i128 = 1_000_000_000;
/// A full walk happens at least this often, whatever `usage` says.
pub const FULL_WALK_EVERY: Duration = Duration::from_secs(60);

/// One batch file waiting to be shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// When the runtime wrote it (ns since the epoch, from its name).
    pub written_ns: i128,
}

/// How much waits to be shipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Batch files.
    pub batches: u64,
    /// Their bytes.
    pub bytes: u64,
    /// When the oldest was written (ns since the epoch), if any waits.
    pub oldest_ns: Option<i128>,
}

/// The spool could not be walked or a batch not marked.
#[derive(Debug, thiserror::Error)]
#[error("span spool {path}: {source}")]
pub struct QueueError {
    /// The file or directory.
    pub path: PathBuf,
    /// The failure.
    pub source: std::io::Error,
}

/// A file or directory's modification time as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    mtime_ns: i128,
    /// Too close to the walk to be trusted.
    racy: bool,
}

impl Seen {
    fn at(mtime_ns: i128, now: i128) -> Self {
        Seen {
            mtime_ns,
            racy: now - mtime_ns < RACY_NS,
        }
    }

    /// Whether a directory with this time now needs no new listing.
    fn unchanged(seen: Option<Seen>, mtime_ns: i128) -> bool {
        seen.is_some_and(|s| !s.racy && s.mtime_ns == mtime_ns)
    }
}

#[derive(Debug, Default)]
struct TraceDir {
    /// `None` until listed.
    seen: Option<Seen>,
    /// Its `*.json` files.
    names: HashSet<OsString>,
}

#[derive(Debug, Default)]
struct ContainerDir {
    seen: Option<Seen>,
    traces: HashMap<OsString, TraceDir>,
}

/// Where a waiting batch sorts: its write time (unknown ones last), its path.
type Key = (i128, PathBuf);

/// A waiting batch's size and write time.
#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    written_ns: i128,
}

/// The batches waiting in one spool, as of the last [`Queue::walk`].
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    /// The `usage` file at the last walk.
    usage: Option<Seen>,
    last_full_walk: Option<Instant>,
    full_walk_every: Duration,
    containers: HashMap<OsString, ContainerDir>,
    /// Oldest first.
    waiting: BTreeMap<Key, Entry>,
    /// Not sent again by this process: refused for their content, or not OTLP-JSON.
    given_up: HashSet<PathBuf>,
    /// Sent alone: the endpoint refused a request they were part of.
    alone: HashSet<PathBuf>,
}

fn gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default()
}

/// A file's modification time, `None` when it is gone; `dir` says whether
/// it must be a directory (else `None` too).
fn mtime(path: &Path, dir: bool) -> Result<Option<i128>, QueueError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() == dir => Ok(Some(mtime_ns(&meta))),
        Ok(_) => Ok(None),
        Err(e) if gone(&e) => Ok(None),
        Err(source) => Err(QueueError {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The entries of a directory, `None` when it is gone.
fn list(path: &Path) -> Result<Option<Vec<std::fs::DirEntry>>, QueueError> {
    let err = |source| QueueError {
        path: path.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => out.push(entry),
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(err(e)),
        }
    }
    Ok(Some(out))
}

/// The write time a batch's name carries: `<20-digit ns>-<pid>.json`.
fn written_ns(name: &OsStr) -> Option<i128> {
    name.to_str()?.split('-').next()?.parse().ok()
}

/// A batch not shipped yet: `*.json`, not hidden (being written).
fn is_waiting(name: &OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| !n.starts_with('.') && n.ends_with(BATCH_SUFFIX))
}

/// The key a batch's path sorts under.
fn key(path: &Path) -> Key {
    let written = path.file_name().and_then(written_ns).unwrap_or(i128::MAX);
    (written, path.to_path_buf())
}

/// Takes a batch that left the spool out of `waiting`; true when it was
/// evicted (it waited, and was not shipped by anyone).
fn left(waiting: &mut BTreeMap<Key, Entry>, path: PathBuf) -> bool {
    let sent = sent_path(&path);
    waiting.remove(&key(&path)).is_some() && !sent.exists()
}

impl Queue {
    /// The queue of the spool under the state root `root`; nothing is read yet.
    pub fn new(root: &Path) -> Self {
        Queue {
            dir: root.join(SPOOL_DIR),
            usage: None,
            last_full_walk: None,
            full_walk_every: FULL_WALK_EVERY,
            containers: HashMap::new(),
            waiting: BTreeMap::new(),
            given_up: HashSet::new(),
            alone: HashSet::new(),
        }
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Walks the spool again. Returns how many batches that waited at the
    /// last walk vanished without being shipped (evicted by the runtime).
    pub fn walk(&mut self) -> Result<u64, QueueError> {
        let now = now_ns();
        let usage = mtime(&self.dir.join(USAGE_FILE), false)?;
        let recent = self
            .last_full_walk
            .is_some_and(|at| at.elapsed() < self.full_walk_every);
        if recent && usage.is_some_and(|m| Seen::unchanged(self.usage, m)) {
            return Ok(0);
        }
        let evicted = self.walk_dirs(now)?;
        self.usage = usage.map(|m| Seen::at(m, now));
        self.last_full_walk = Some(Instant::now());
        Ok(evicted)
    }

    fn walk_dirs(&mut self, now: i128) -> Result<u64, QueueError> {
        let Queue {
            dir,
            containers,
            waiting,
            ..
        } = self;
        let mut evicted = 0;
        // Shipped batches are renamed: never through a link to elsewhere.
        let is_dir = crate::spool::real_dir(dir).map_err(|source| QueueError {
            path: dir.clone(),
            source,
        })?;
        if is_dir == Some(false) {
            return Err(QueueError {
                path: dir.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a directory (a link is never followed under the state root)",
                ),
            });
        }
        // No spool yet: nothing was spooled, or everything was evicted.
        let entries = list(dir)?.unwrap_or_default();
        let mut present = HashSet::new();
        for entry in entries {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            let path = entry.path();
            let Some(container_mtime) = mtime(&path, true)? else {
                continue;
            };
            present.insert(name.clone());
            let container = containers.entry(name).or_default();
            if !Seen::unchanged(container.seen, container_mtime) {
                let Some(listed) = list(&path)? else {
                    continue;
                };
                let names: HashSet<OsString> = listed
                    .iter()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name())
                    .collect();
                container.traces.retain(|trace, state| {
                    let keep = names.contains(trace);
                    if !keep {
                        for file in state.names.drain() {
                            evicted += u64::from(left(waiting, path.join(trace).join(file)));
                        }
                    }
                    keep
                });
                for trace in names {
                    container.traces.entry(trace).or_default();
                }
                container.seen = Some(Seen::at(container_mtime, now));
            }
            for (trace, state) in container.traces.iter_mut() {
                let trace_path = path.join(trace);
                let trace_mtime = mtime(&trace_path, true)?;
                if trace_mtime.is_some_and(|m| Seen::unchanged(state.seen, m)) {
                    continue;
                }
                let listed = match trace_mtime {
                    Some(m) => list(&trace_path)?.map(|files| (m, files)),
                    None => None,
                };
                let mut names = HashSet::new();
                if let Some((m, files)) = &listed {
                    for file in files {
                        let name = file.file_name();
                        if !is_waiting(&name) {
                            continue;
                        }
                        let meta = match file.metadata() {
                            Ok(meta) if meta.is_file() => meta,
                            Ok(_) => continue,
                            Err(e) if gone(&e) => continue,
                            Err(source) => {
                                return Err(QueueError {
                                    path: file.path(),
                                    source,
                                })
                            }
                        };
                        let file_path = trace_path.join(&name);
                        if !state.names.contains(&name) {
                            let written = written_ns(&name).unwrap_or_else(|| mtime_ns(&meta));
                            waiting.insert(
                                key(&file_path),
                                Entry {
                                    bytes: meta.len(),
                                    written_ns: written,
                                },
                            );
                        }
                        names.insert(name);
                    }
                    state.seen = Some(Seen::at(*m, now));
                } else {
                    state.seen = None;
                }
                for old in state.names.difference(&names) {
                    evicted += u64::from(left(waiting, trace_path.join(old)));
                }
                state.names = names;
            }
        }
        containers.retain(|name, container| {
            let keep = present.contains(name);
            if !keep {
                for (trace, state) in container.traces.drain() {
                    for file in state.names {
                        evicted += u64::from(left(waiting, dir.join(name).join(&trace).join(file)));
                    }
                }
            }
            keep
        });
        self.given_up.retain(|p| self.waiting.contains_key(&key(p)));
        self.alone.retain(|p| self.waiting.contains_key(&key(p)));
        Ok(evicted)
    }

    fn waiting(&self) -> impl Iterator<Item = Waiting> + '_ {
        self.waiting
            .iter()
            .filter(|((_, path), _)| !self.given_up.contains(path))
            .map(|((_, path), entry)| Waiting {
                path: path.clone(),
                bytes: entry.bytes,
                written_ns: entry.written_ns,
            })
    }

    /// What waits to be shipped (batches given up are not counted).
    pub fn depth(&self) -> Depth {
        let mut depth = Depth::default();
        for ((_, path), entry) in &self.waiting {
            if self.given_up.contains(path) {
                continue;
            }
            depth.batches += 1;
            depth.bytes += entry.bytes;
            depth.oldest_ns = Some(
                depth
                    .oldest_ns
                    .map_or(entry.written_ns, |o| o.min(entry.written_ns)),
            );
        }
        depth
    }

    /// The oldest batches to send next, together up to `max_bytes` (at least
    /// one, however large); empty when nothing waits.
    pub fn next(&self, max_bytes: u64) -> Vec<Waiting> {
        let mut out: Vec<Waiting> = Vec::new();
        let mut bytes = 0;
        for w in self.waiting() {
            let alone = self.alone.contains(&w.path);
            if !out.is_empty() && (alone || bytes + w.bytes > max_bytes) {
                break;
            }
            bytes += w.bytes;
            out.push(w);
            if alone {
                break;
            }
        }
        out
    }

    /// Marks batches shipped: renames each to `X.json.sent`. A batch evicted
    /// meanwhile is not an error. The batches leave the queue either way, so
    /// that this process never sends them again.
    pub fn shipped(&mut self, batches: &[Waiting]) -> Result<(), QueueError> {
        let mut first_error = None;
        for batch in batches {
            match std::fs::rename(&batch.path, sent_path(&batch.path)) {
                Ok(()) => {
                    self.waiting.remove(&key(&batch.path));
                }
                Err(e) if gone(&e) => {
                    self.waiting.remove(&key(&batch.path));
                }
                Err(source) => {
                    // Kept out of requests until it leaves the spool.
                    self.given_up.insert(batch.path.clone());
                    first_error.get_or_insert(QueueError {
                        path: batch.path.clone(),
                        source,
                    });
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Takes batches found gone out of the queue; returns how many of them
    /// were evicted (not shipped by someone else).
    pub fn vanished(&mut self, batches: &[Waiting]) -> u64 {
        batches
            .iter()
            .filter(|b| left(&mut self.waiting, b.path.clone()))
            .count() as u64
    }

    /// This process does not send `batch` again (it stays in the spool, to be
    /// read by `lucid trace` and evicted in its turn).
    pub fn give_up(&mut self, batch: &Waiting) {
        self.given_up.insert(batch.path.clone());
    }

    /// `batches` are sent one per request from now on.
    pub fn send_alone(&mut self, batches: &[Waiting]) {
        self.alone.extend(batches.iter().map(|b| b.path.clone()));
    }
}

/// `X.json` → `X.json.sent`.
fn sent_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(&SENT_SUFFIX[BATCH_SUFFIX.len()..]);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucid_layout::spool::Spool;

    fn batch(n: usize) -> Vec<u8> {
        let mut text = b"{\"resourceSpans\":[]}".to_vec();
        text.resize(n.max(text.len()), b' ');
        text
    }

    fn names(batches: &[Waiting]) -> Vec<String> {
        batches
            .iter()
            .map(|w| {
                let trace = w.path.parent().unwrap();
                format!(
                    "{}/{}",
                    trace
                        .parent()
                        .unwrap()
                        .file_name()
                        .unwrap()
                        .to_string_lossy(),
                    w.bytes
                )
            })
            .collect()
    }

    #[test]
    fn waiting_batches_are_found_oldest_first_and_batched_up_to_the_bound() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 1 << 20);
        spool.write("a", "t1-s1", &batch(100), false).unwrap();
        spool.write("b", "t2-s2", &batch(200), false).unwrap();
        spool.write("a", "t1-s1", &batch(300), true).unwrap();
        spool.write("a", "t1-s1", &batch(400), false).unwrap();
        let mut queue = Queue::new(root.path());
        assert_eq!(queue.walk().unwrap(), 0);
        assert_eq!(queue.depth().batches, 3);
        assert_eq!(queue.depth().bytes, 700);
        assert_eq!(names(&queue.next(1 << 20)), ["a/100", "b/200", "a/400"]);
        assert_eq!(names(&queue.next(350)), ["a/100", "b/200"]);
        // One batch however large.
        assert_eq!(names(&queue.next(10)), ["a/100"]);
    }

    #[test]
    fn shipped_batches_are_renamed_sent_and_not_found_again() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 1 << 20);
        let first = spool.write("a", "t-s", &batch(100), false).unwrap();
        spool.write("a", "t-s", &batch(200), false).unwrap();
        let mut queue = Queue::new(root.path());
        queue.walk().unwrap();
        let next = queue.next(150);
        queue.shipped(&next).unwrap();
        assert!(!first.exists());
        assert!(sent_path(&first).exists());
        assert_eq!(queue.walk().unwrap(), 0, "a shipped batch is not evicted");
        assert_eq!(names(&queue.next(1 << 20)), ["a/200"]);
        // A fresh queue (an exporter restart) finds only the one left.
        let mut fresh = Queue::new(root.path());
        fresh.walk().unwrap();
        assert_eq!(names(&fresh.next(1 << 20)), ["a/200"]);
    }

    #[test]
    fn batches_evicted_before_shipping_are_counted() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 1000);
        let mut queue = Queue::new(root.path());
        for i in 0..3 {
            spool
                .write(&format!("c{i}"), "t-s", &batch(300), false)
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(queue.walk().unwrap(), 0);
        assert_eq!(queue.depth().batches, 3);
        // The fourth write takes the spool over its bound: the runtime evicts the oldest.
        spool.write("c3", "t-s", &batch(300), false).unwrap();
        let evicted = queue.walk().unwrap();
        assert!(evicted >= 1, "nothing counted as evicted");
        assert_eq!(queue.depth().batches, 4 - evicted);
        assert!(queue.depth().bytes <= 1000);
    }

    #[test]
    fn a_batch_written_right_after_a_walk_is_found_at_the_next() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 1 << 20);
        let mut queue = Queue::new(root.path());
        spool.write("a", "t-s", &batch(10), false).unwrap();
        queue.walk().unwrap();
        // Same directory, within the same timestamp tick as the walk.
        spool.write("a", "t-s", &batch(20), false).unwrap();
        queue.walk().unwrap();
        assert_eq!(queue.depth().batches, 2);
    }

    #[test]
    fn given_up_and_alone_batches_are_left_out_of_requests() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 1 << 20);
        for n in [30, 40, 50] {
            spool.write("a", "t-s", &batch(n), false).unwrap();
        }
        let mut queue = Queue::new(root.path());
        queue.walk().unwrap();
        let all = queue.next(1 << 20);
        queue.send_alone(&all);
        assert_eq!(names(&queue.next(1 << 20)), ["a/30"]);
        queue.give_up(&all[0]);
        assert_eq!(names(&queue.next(1 << 20)), ["a/40"]);
        assert_eq!(queue.depth().batches, 2);
        queue.walk().unwrap();
        assert_eq!(
            names(&queue.next(1 << 20)),
            ["a/40"],
            "given up across walks"
        );
    }

    #[test]
    fn while_usage_is_unchanged_the_directories_are_not_walked() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 1 << 20);
        let first = spool.write("a", "t-s", &batch(30), false).unwrap();
        let usage = spool.dir().join(USAGE_FILE);
        let age = |path: &Path| {
            let old = SystemTime::now() - Duration::from_secs(10);
            std::fs::File::open(path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        };
        age(&usage);
        age(first.parent().unwrap());
        let mut queue = Queue::new(root.path());
        queue.walk().unwrap();
        assert_eq!(queue.depth().batches, 1);
        // A batch that appears without `usage` changing (its writer died
        // before counting it) is found by the next full walk only.
        std::fs::write(
            first.with_file_name("00000000000000000001-1.json"),
            batch(40),
        )
        .unwrap();
        queue.walk().unwrap();
        assert_eq!(queue.depth().batches, 1, "the directories were walked");
        queue.full_walk_every = Duration::ZERO;
        queue.walk().unwrap();
        assert_eq!(queue.depth().batches, 2);
        assert_eq!(
            names(&queue.next(1 << 20)),
            ["a/40", "a/30"],
            "by write time"
        );
    }

    #[test]
    fn a_missing_spool_is_empty() {
        let root = tempfile::tempdir().unwrap();
        let mut queue = Queue::new(&root.path().join("nothing"));
        assert_eq!(queue.walk().unwrap(), 0);
        assert_eq!(queue.depth(), Depth::default());
    }
}
