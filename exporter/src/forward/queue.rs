//! The batches in the runtime's span spool that wait to be shipped
//! (`docs/spool.md`): found by walking `<root>/@spool/<container>/<trace>/`,
//! marked shipped by renaming `X.json` to `X.json.sent`, the only change the
//! exporter makes to the spool. The runtime evicts whole trace directories
//! at any moment; a batch that vanishes before it was shipped is counted as
//! evicted.
//!
//! A full spool holds about a thousand trace directories. A directory's
//! modification time changes whenever an entry in it is added, renamed or
//! removed, so a directory is listed again only when its time changed since
//! the last walk, or was too recent then to be trusted (file times are coarse:
//! a change in the same tick leaves the time as it was); otherwise one `stat`
//! per directory suffices.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use lucid::telemetry::spool::{BATCH_SUFFIX, SENT_SUFFIX, SPOOL_DIR};

/// A directory modified this recently (ns) may change again within the same
/// timestamp tick: it is listed again at the next walk.
const RACY_NS: i128 = 1_000_000_000;

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

#[derive(Debug)]
struct TraceDir {
    mtime_ns: i128,
    racy: bool,
    /// Its `*.json` files: name, size.
    waiting: Vec<(OsString, u64)>,
}

#[derive(Debug, Default)]
struct ContainerDir {
    mtime_ns: i128,
    racy: bool,
    traces: HashMap<OsString, Option<TraceDir>>,
}

/// The batches waiting in one spool, as of the last [`Queue::walk`].
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    containers: HashMap<OsString, ContainerDir>,
    /// Oldest first.
    waiting: Vec<Waiting>,
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

/// A directory's modification time, `None` when it is gone or not a directory.
fn dir_mtime(path: &Path) -> Result<Option<i128>, QueueError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(Some(mtime_ns(&meta))),
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
fn written_ns(name: &str) -> Option<i128> {
    name.split('-').next()?.parse().ok()
}

/// A batch not shipped yet: `*.json`, not hidden (being written).
fn is_waiting(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(BATCH_SUFFIX)
}

impl Queue {
    /// The queue of the spool under the state root `root`; nothing is read yet.
    pub fn new(root: &Path) -> Self {
        Queue {
            dir: root.join(SPOOL_DIR),
            containers: HashMap::new(),
            waiting: Vec::new(),
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
        // No spool yet: nothing was spooled, or everything was evicted.
        let containers = list(&self.dir)?.unwrap_or_default();
        let mut seen = HashSet::new();
        for entry in containers {
            let name = entry.file_name();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            let Some(mtime) = dir_mtime(&path)? else {
                continue;
            };
            seen.insert(name.clone());
            let cached = self.containers.entry(name).or_default();
            if cached.racy || cached.mtime_ns != mtime || cached.traces.is_empty() {
                let Some(traces) = list(&path)? else {
                    cached.traces.clear();
                    continue;
                };
                let mut keep: HashMap<OsString, Option<TraceDir>> = HashMap::new();
                for trace in traces {
                    if trace.file_type().is_ok_and(|t| t.is_dir()) {
                        let name = trace.file_name();
                        let old = cached.traces.remove(&name).flatten();
                        keep.insert(name, old);
                    }
                }
                cached.traces = keep;
                cached.mtime_ns = mtime;
                cached.racy = now - mtime < RACY_NS;
            }
            for (trace, state) in cached.traces.iter_mut() {
                let trace_path = path.join(trace);
                let Some(mtime) = dir_mtime(&trace_path)? else {
                    *state = None;
                    continue;
                };
                if state
                    .as_ref()
                    .is_some_and(|s| !s.racy && s.mtime_ns == mtime)
                {
                    continue;
                }
                *state = match list(&trace_path)? {
                    None => None,
                    Some(files) => {
                        let mut waiting = Vec::new();
                        for file in files {
                            let name = file.file_name();
                            if !name.to_str().is_some_and(is_waiting) {
                                continue;
                            }
                            match file.metadata() {
                                Ok(meta) if meta.is_file() => waiting.push((name, meta.len())),
                                Ok(_) => {}
                                Err(e) if gone(&e) => {}
                                Err(source) => {
                                    return Err(QueueError {
                                        path: file.path(),
                                        source,
                                    })
                                }
                            }
                        }
                        Some(TraceDir {
                            mtime_ns: mtime,
                            racy: now - mtime < RACY_NS,
                            waiting,
                        })
                    }
                };
            }
        }
        self.containers.retain(|name, _| seen.contains(name));

        let mut waiting = Vec::new();
        for (container, cached) in &self.containers {
            for (trace, state) in &cached.traces {
                let Some(state) = state else { continue };
                let dir = self.dir.join(container).join(trace);
                for (name, bytes) in &state.waiting {
                    let written = name.to_str().and_then(written_ns).unwrap_or(now);
                    waiting.push(Waiting {
                        path: dir.join(name),
                        bytes: *bytes,
                        written_ns: written,
                    });
                }
            }
        }
        // Names start with the write time: oldest first, as the runtime wrote them.
        waiting.sort_by(|a, b| {
            (a.written_ns, a.path.file_name()).cmp(&(b.written_ns, b.path.file_name()))
        });
        let now_waiting: HashSet<&Path> = waiting.iter().map(|w| w.path.as_path()).collect();
        let evicted = self
            .waiting
            .iter()
            .filter(|w| !now_waiting.contains(w.path.as_path()))
            // Shipped by someone else (another exporter) is not evicted.
            .filter(|w| !sent_path(&w.path).exists())
            .count() as u64;
        self.given_up.retain(|p| now_waiting.contains(p.as_path()));
        self.alone.retain(|p| now_waiting.contains(p.as_path()));
        self.waiting = waiting;
        Ok(evicted)
    }

    /// What waits to be shipped (batches given up are not counted).
    pub fn depth(&self) -> Depth {
        let mut depth = Depth::default();
        for w in self
            .waiting
            .iter()
            .filter(|w| !self.given_up.contains(&w.path))
        {
            depth.batches += 1;
            depth.bytes += w.bytes;
            depth.oldest_ns = Some(
                depth
                    .oldest_ns
                    .map_or(w.written_ns, |o| o.min(w.written_ns)),
            );
        }
        depth
    }

    /// The oldest batches to send next, together up to `max_bytes` (at least
    /// one, however large); empty when nothing waits.
    pub fn next(&self, max_bytes: u64) -> Vec<Waiting> {
        let mut out: Vec<Waiting> = Vec::new();
        let mut bytes = 0;
        for w in self
            .waiting
            .iter()
            .filter(|w| !self.given_up.contains(&w.path))
        {
            let alone = self.alone.contains(&w.path);
            if !out.is_empty() && (alone || bytes + w.bytes > max_bytes) {
                break;
            }
            bytes += w.bytes;
            out.push(w.clone());
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
        let leaving: HashSet<&Path> = batches.iter().map(|b| b.path.as_path()).collect();
        self.waiting.retain(|w| !leaving.contains(w.path.as_path()));
        let mut first_error = None;
        for batch in batches {
            match std::fs::rename(&batch.path, sent_path(&batch.path)) {
                Ok(()) => {}
                Err(e) if gone(&e) => {}
                Err(source) => {
                    // Kept out of the queue until it leaves the spool.
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
        let leaving: HashSet<&Path> = batches.iter().map(|b| b.path.as_path()).collect();
        self.waiting.retain(|w| !leaving.contains(w.path.as_path()));
        batches
            .iter()
            .filter(|b| !sent_path(&b.path).exists())
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
    use lucid::telemetry::spool::Spool;

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
    fn a_missing_spool_is_empty() {
        let root = tempfile::tempdir().unwrap();
        let mut queue = Queue::new(&root.path().join("nothing"));
        assert_eq!(queue.walk().unwrap(), 0);
        assert_eq!(queue.depth(), Depth::default());
    }
}
