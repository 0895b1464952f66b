//! The span spool's depth: the batches (and their bytes) the runtime spooled
//! under its state root that still wait to be shipped to an OTLP endpoint,
//! and when the oldest of them was written.
//!
//! The layout is the runtime's (`docs/spool.md`, `lucid_layout::spool`):
//! each batch is a file `<root>/@spool/<container-id>/<trace>/<name>.json`,
//! renamed to `<name>.json.sent` once shipped; names starting with `.` are
//! batches being written. The runtime evicts whole trace directories at any moment, so a
//! directory that vanishes during the walk is not an error. The exporter only
//! reads here.
//!
//! A full spool (16 MiB) holds thousands of batches in about a thousand
//! directories: listing them all took 27 ms (1,000 traces of 4 batches on
//! tmpfs), too much for every scrape. A directory's modification time changes
//! whenever an entry in it is added, renamed or removed, so [`Spool::read`]
//! lists only the directories whose time changed since the last scrape (or is
//! too recent to trust) and costs one `stat` per directory otherwise: 6 ms for
//! the same spool.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use lucid_layout::spool::{BATCH_SUFFIX, SPOOL_DIR};

/// A directory modified this recently may change again within the same
/// timestamp tick (file times are coarse): it is listed again.
const RACY_NS: i128 = 1_000_000_000;

/// What waits in the spool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Batch files not shipped yet (`*.json`).
    pub unshipped_batches: u64,
    /// Their bytes.
    pub unshipped_bytes: u64,
    /// When the oldest of them was written (ns since the epoch, from its
    /// name: `<unix-ns>-<pid>.json`), if any waits.
    pub oldest_unshipped_ns: Option<i128>,
}

impl SpoolStats {
    fn add(&mut self, other: &SpoolStats) {
        self.unshipped_batches += other.unshipped_batches;
        self.unshipped_bytes += other.unshipped_bytes;
        self.oldest_unshipped_ns = match (self.oldest_unshipped_ns, other.oldest_unshipped_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// The age of the oldest unshipped batch at `now_ns`, 0 when none waits.
    pub fn oldest_unshipped_age(&self, now_ns: i128) -> std::time::Duration {
        let age = self
            .oldest_unshipped_ns
            .map_or(0, |written| (now_ns - written).max(0));
        std::time::Duration::from_nanos(u64::try_from(age).unwrap_or(u64::MAX))
    }
}

/// Why the spool could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the span spool {path}: {source}")]
pub struct SpoolError {
    /// The file or directory.
    pub path: PathBuf,
    /// The failure.
    pub source: std::io::Error,
}

/// What one trace directory held when it was last listed.
#[derive(Debug, Clone, Copy)]
struct Trace {
    mtime_ns: i128,
    unshipped: SpoolStats,
}

/// One container directory's trace directories when it was last listed.
#[derive(Debug, Default)]
struct Container {
    mtime_ns: i128,
    traces: HashMap<OsString, Option<Trace>>,
}

/// The spool under one state root, with what its directories held.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    containers: HashMap<OsString, Container>,
    /// The spool is something else than a directory (a link), and that was
    /// reported.
    refused: bool,
}

/// Whether `dir` is a directory itself, not a link to one: nothing under
/// the state root is reached through a link. `None` when it is gone.
pub fn real_dir(dir: &Path) -> std::io::Result<Option<bool>> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => Ok(Some(meta.is_dir())),
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// A directory's modification time, `None` when it is gone.
fn mtime_ns(dir: &Path) -> Result<Option<i128>, SpoolError> {
    match std::fs::metadata(dir) {
        Ok(m) => Ok(Some(
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        )),
        Err(e) if gone(&e) => Ok(None),
        Err(source) => Err(SpoolError {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// A directory's entries, `None` when it is gone.
fn list(dir: &Path) -> Result<Option<Vec<std::fs::DirEntry>>, SpoolError> {
    let read = std::fs::read_dir(dir).and_then(|entries| entries.collect());
    match read {
        Ok(entries) => Ok(Some(entries)),
        Err(e) if gone(&e) => Ok(None),
        Err(source) => Err(SpoolError {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn is_dir(entry: &std::fs::DirEntry) -> bool {
    entry.file_type().is_ok_and(|t| t.is_dir())
}

/// Counts a trace directory's unshipped batches.
fn count(dir: &Path, mtime_ns: i128) -> Result<Option<Trace>, SpoolError> {
    let Some(batches) = list(dir)? else {
        return Ok(None);
    };
    let mut unshipped = SpoolStats::default();
    for batch in batches {
        let name = batch.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(BATCH_SUFFIX) {
            continue;
        }
        let written = name.split('-').next().and_then(|n| n.parse::<i128>().ok());
        unshipped.add(&SpoolStats {
            unshipped_batches: 1,
            unshipped_bytes: batch.metadata().map_or(0, |m| m.len()),
            oldest_unshipped_ns: written,
        });
    }
    Ok(Some(Trace {
        mtime_ns,
        unshipped,
    }))
}

impl Spool {
    /// The spool of the state root `root`; nothing is read until [`Spool::read`].
    pub fn new(root: &Path) -> Self {
        Spool {
            dir: root.join(SPOOL_DIR),
            containers: HashMap::new(),
            refused: false,
        }
    }

    /// What waits in the spool now; no spool is an empty one.
    pub fn read(&mut self) -> Result<SpoolStats, SpoolError> {
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let fresh = |mtime: i128, cached: i128| mtime == cached && now_ns - mtime > RACY_NS;
        let spool_is_dir = real_dir(&self.dir).map_err(|source| SpoolError {
            path: self.dir.clone(),
            source,
        })?;
        if spool_is_dir == Some(false) {
            self.containers.clear();
            // Reported (and counted) once while it stays so.
            if std::mem::replace(&mut self.refused, true) {
                return Ok(SpoolStats::default());
            }
            return Err(SpoolError {
                path: self.dir.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a directory (a link is never followed under the state root): remove it",
                ),
            });
        }
        self.refused = false;
        let Some(entries) = list(&self.dir)? else {
            self.containers.clear();
            return Ok(SpoolStats::default());
        };
        let mut stats = SpoolStats::default();
        let mut seen = Vec::with_capacity(entries.len());
        for entry in entries.into_iter().filter(is_dir) {
            let name = entry.file_name();
            let path = entry.path();
            let Some(mtime) = mtime_ns(&path)? else {
                continue;
            };
            let container = self.containers.entry(name.clone()).or_default();
            if !fresh(mtime, container.mtime_ns) {
                let Some(traces) = list(&path)? else {
                    continue;
                };
                let mut listed = HashMap::with_capacity(traces.len());
                for t in traces.into_iter().filter(is_dir) {
                    let known = container.traces.remove(&t.file_name()).flatten();
                    listed.insert(t.file_name(), known);
                }
                container.traces = listed;
                container.mtime_ns = mtime;
            }
            for (trace_name, cached) in container.traces.iter_mut() {
                let trace_path = path.join(trace_name);
                let Some(trace_mtime) = mtime_ns(&trace_path)? else {
                    *cached = None;
                    continue;
                };
                let current = match cached {
                    Some(t) if fresh(trace_mtime, t.mtime_ns) => Some(*t),
                    _ => count(&trace_path, trace_mtime)?,
                };
                *cached = current;
                if let Some(t) = current {
                    stats.add(&t.unshipped);
                }
            }
            seen.push(name);
        }
        self.containers
            .retain(|name, _| seen.iter().any(|s| s == name));
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(root: &Path, container: &str, trace: &str, name: &str, bytes: usize) {
        let dir = root.join(SPOOL_DIR).join(container).join(trace);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), vec![b'x'; bytes]).unwrap();
    }

    /// Sets a directory's modification time to `secs` after the epoch, long
    /// enough ago to be trusted.
    fn set_mtime(dir: &Path, secs: u64) {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(secs);
        std::fs::File::open(dir).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn no_spool_is_an_empty_spool() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(
            Spool::new(root.path()).read().unwrap(),
            SpoolStats::default()
        );
    }

    #[test]
    fn only_unshipped_batches_count() {
        let root = tempfile::tempdir().unwrap();
        batch(root.path(), "c1", "t1-s1", "001-1.json", 10);
        batch(root.path(), "c1", "t1-s1", "002-1.json.sent", 20);
        batch(root.path(), "c1", "t1-s1", ".003-1.tmp", 5);
        batch(root.path(), "c2", "t2-s2", "001-2.json", 30);
        std::fs::write(root.path().join(SPOOL_DIR).join("usage"), "65\n").unwrap();
        assert_eq!(
            Spool::new(root.path()).read().unwrap(),
            SpoolStats {
                unshipped_batches: 2,
                unshipped_bytes: 40,
                oldest_unshipped_ns: Some(1),
            }
        );
    }

    #[test]
    fn the_oldest_unshipped_batch_is_found_by_its_name() {
        let root = tempfile::tempdir().unwrap();
        batch(
            root.path(),
            "c1",
            "t1-s1",
            "00000000002000000000-7.json",
            10,
        );
        batch(
            root.path(),
            "c1",
            "t1-s1",
            "00000000001000000000-7.json.sent",
            10,
        );
        batch(
            root.path(),
            "c2",
            "t2-s2",
            "00000000003000000000-8.json",
            10,
        );
        let stats = Spool::new(root.path()).read().unwrap();
        assert_eq!(stats.oldest_unshipped_ns, Some(2_000_000_000));
        assert_eq!(
            stats.oldest_unshipped_age(5_000_000_000),
            std::time::Duration::from_secs(3)
        );
        assert_eq!(
            SpoolStats::default().oldest_unshipped_age(5_000_000_000),
            std::time::Duration::ZERO
        );
    }

    #[test]
    fn an_unchanged_directory_is_not_listed_again_and_a_changed_one_is() {
        let root = tempfile::tempdir().unwrap();
        batch(root.path(), "c1", "t1-s1", "001-1.json", 10);
        batch(root.path(), "c1", "t1-s1", "002-1.json", 10);
        let spool = root.path().join(SPOOL_DIR);
        let trace = spool.join("c1/t1-s1");
        set_mtime(&trace, 1_000_000);
        set_mtime(&spool.join("c1"), 1_000_000);
        let mut s = Spool::new(root.path());
        assert_eq!(s.read().unwrap().unshipped_batches, 2);
        // A batch shipped while the directory's time is put back: the cached count
        // stands, which proves the directory was not listed again.
        std::fs::rename(trace.join("001-1.json"), trace.join("001-1.json.sent")).unwrap();
        set_mtime(&trace, 1_000_000);
        assert_eq!(s.read().unwrap().unshipped_batches, 2);
        // Its time changes, as a rename does: listed again.
        set_mtime(&trace, 2_000_000);
        assert_eq!(s.read().unwrap().unshipped_batches, 1);
        // A recent change is never trusted, and a new trace directory is found.
        batch(root.path(), "c1", "t2-s2", "001-1.json", 10);
        assert_eq!(s.read().unwrap().unshipped_batches, 2);
        // An evicted trace and a removed container leave the count.
        std::fs::remove_dir_all(spool.join("c1")).unwrap();
        batch(root.path(), "c2", "t3-s3", "001-1.json", 10);
        assert_eq!(s.read().unwrap().unshipped_batches, 1);
        std::fs::remove_dir_all(&spool).unwrap();
        assert_eq!(s.read().unwrap(), SpoolStats::default());
    }

    #[test]
    fn a_linked_spool_is_reported_once_and_not_walked() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        batch(elsewhere.path(), "c1", "t1-s1", "001-1.json", 10);
        std::os::unix::fs::symlink(
            elsewhere.path().join(SPOOL_DIR),
            root.path().join(SPOOL_DIR),
        )
        .unwrap();
        let mut s = Spool::new(root.path());
        assert!(s.read().is_err());
        assert_eq!(s.read().unwrap(), SpoolStats::default());
    }
}
