//! The span spool: finished spans wait under the state root for
//! `lucid-exporter` to ship them, and for `lucid trace` to draw them. The
//! format is defined in `docs/spool.md`; this module is its writer (with the
//! size bound and oldest-first eviction) and its reader.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// The spool's directory name under the state root. `@` cannot appear in a
/// container ID, so it never collides with a container's directory.
pub const SPOOL_DIR: &str = "@spool";
/// The file holding the spool's total size in bytes.
pub const USAGE_FILE: &str = "usage";
/// The environment variable that sets the spool's size bound in bytes.
pub const MAX_BYTES_ENV: &str = "LUCID_SPOOL_MAX_BYTES";
/// The size bound when [`MAX_BYTES_ENV`] is not set: 16 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;
/// The suffix of a batch not shipped yet.
pub const BATCH_SUFFIX: &str = ".json";
/// The suffix of a batch already shipped (renamed by `lucid-exporter`, or
/// written so by lucid after exporting it itself).
pub const SENT_SUFFIX: &str = ".json.sent";

/// What can go wrong with the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file or directory of the spool could not be read or written.
    #[error("span spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A batch is larger than the whole spool may be.
    #[error("span spool {path}: a batch of {size} bytes does not fit in the bound of {max} bytes: raise {MAX_BYTES_ENV}")]
    TooLarge {
        /// The spool.
        path: PathBuf,
        /// The batch's size.
        size: u64,
        /// The bound.
        max: u64,
    },
    /// A batch file is not OTLP-JSON.
    #[error("span spool {path}: not an OTLP-JSON ExportTraceServiceRequest: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Nothing was spooled for the container.
    #[error("no spans of container {0} in the spool (telemetry off, or evicted)")]
    NoTrace(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The spool of one state root.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
}

/// One container's trace in the spool.
#[derive(Debug, Clone)]
pub struct SpooledTrace {
    /// Its directory (`<container>/<trace id>-<root span id>`).
    pub dir: PathBuf,
    /// Its batches, oldest first.
    pub batches: Vec<ExportTraceServiceRequest>,
}

impl Spool {
    /// The spool under `root`, bounded by [`MAX_BYTES_ENV`] (or the default).
    pub fn new(root: &Path) -> Self {
        let max_bytes = std::env::var(MAX_BYTES_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_BYTES);
        Self::with_bound(root, max_bytes)
    }

    /// The spool under `root` with an explicit bound.
    pub fn with_bound(root: &Path, max_bytes: u64) -> Self {
        Spool {
            dir: root.join(SPOOL_DIR),
            max_bytes,
        }
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a batch (an OTLP-JSON `ExportTraceServiceRequest`) to the trace
    /// `trace` of `container`, atomically; evicts the oldest traces when the
    /// spool outgrows its bound. `shipped` marks a batch already exported.
    pub fn write(
        &self,
        container: &str,
        trace: &str,
        batch: &[u8],
        shipped: bool,
    ) -> Result<PathBuf, SpoolError> {
        self.begin(container, trace)?.commit(batch, shipped)
    }

    /// Makes the trace's directory and the batch's temporary file, the
    /// costly part of a write, so that a command can do it before its span
    /// ends; [`Pending::commit`] then only writes and renames.
    pub fn begin(&self, container: &str, trace: &str) -> Result<Pending, SpoolError> {
        let trace_dir = self.dir.join(container).join(trace);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&trace_dir)
            .map_err(io_err(&trace_dir))?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("{now:020}-{}", std::process::id());
        let tmp = trace_dir.join(format!(".{name}.tmp"));
        let file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        Ok(Pending {
            spool: self.clone(),
            trace_dir,
            name,
            tmp,
            file: Some(file),
        })
    }

    /// Adds `size` to the usage file and evicts when over the bound, under
    /// the spool's lock. Refuses a batch larger than the whole bound.
    fn account(&self, size: u64, keep: &Path) -> Result<(), SpoolError> {
        if size > self.max_bytes {
            return Err(SpoolError::TooLarge {
                path: self.dir.clone(),
                size,
                max: self.max_bytes,
            });
        }
        let dir = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&self.dir)
            .map_err(io_err(&self.dir))?;
        let _lock =
            Flock::lock(dir, FlockArg::LockExclusive).map_err(|(_, errno)| SpoolError::Io {
                path: self.dir.clone(),
                source: errno.into(),
            })?;
        let usage_path = self.dir.join(USAGE_FILE);
        let mut usage_file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&usage_path)
            .map_err(io_err(&usage_path))?;
        let mut text = String::new();
        let usage = match usage_file.read_to_string(&mut text) {
            Ok(_) => text.trim().parse::<u64>().ok(),
            Err(_) => None,
        };
        let usage = match usage {
            Some(usage) => usage + size,
            // No usage file yet (or a damaged one): count what is there.
            None => {
                let _ = usage_file.set_len(0);
                self.walk()?.iter().map(|t| t.bytes).sum()
            }
        };
        let usage = if usage > self.max_bytes {
            self.evict(keep)?
        } else {
            usage
        };
        // Rewritten in place under the lock: always the same width, one small
        // write at the start. A torn file reads as garbage and is recounted.
        use std::os::unix::fs::FileExt;
        usage_file
            .write_all_at(format!("{usage:020}\n").as_bytes(), 0)
            .map_err(io_err(&usage_path))
    }

    /// Every trace directory with its size and last change.
    fn walk(&self) -> Result<Vec<TraceDir>, SpoolError> {
        let mut traces = Vec::new();
        for container in read_dir_paths(&self.dir)? {
            if !container.is_dir() {
                continue;
            }
            for trace in read_dir_paths(&container)? {
                let Ok(meta) = std::fs::metadata(&trace) else {
                    continue;
                };
                if !meta.is_dir() {
                    continue;
                }
                let bytes = read_dir_paths(&trace)?
                    .iter()
                    .filter_map(|f| std::fs::metadata(f).ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum();
                traces.push(TraceDir {
                    path: trace,
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    bytes,
                });
            }
        }
        Ok(traces)
    }

    /// Removes whole traces, least recently written first, until the spool
    /// is under three quarters of its bound (so that eviction is rare), never
    /// the trace just written. Returns the size left.
    fn evict(&self, keep: &Path) -> Result<u64, SpoolError> {
        let mut traces = self.walk()?;
        traces.sort_by_key(|t| t.modified);
        let mut usage: u64 = traces.iter().map(|t| t.bytes).sum();
        let target = self.max_bytes / 4 * 3;
        for trace in traces {
            if usage <= target {
                break;
            }
            if trace.path == keep {
                continue;
            }
            match std::fs::remove_dir_all(&trace.path) {
                Ok(()) => usage -= trace.bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => usage -= trace.bytes,
                Err(e) => {
                    return Err(SpoolError::Io {
                        path: trace.path,
                        source: e,
                    })
                }
            }
            if let Some(container) = trace.path.parent() {
                // Only succeeds once the container has no trace left.
                let _ = std::fs::remove_dir(container);
            }
        }
        Ok(usage)
    }

    /// The container's trace: the one named `preferred` (from its state) if
    /// given and spooled, else the most recently written one.
    pub fn find(&self, container: &str, preferred: Option<&str>) -> Result<PathBuf, SpoolError> {
        let dir = self.dir.join(container);
        if let Some(name) = preferred {
            let path = dir.join(name);
            if path.is_dir() {
                return Ok(path);
            }
        }
        let traces = match read_dir_paths(&dir) {
            Ok(traces) => traces,
            Err(SpoolError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(SpoolError::NoTrace(container.to_owned()))
            }
            Err(e) => return Err(e),
        };
        traces
            .into_iter()
            .filter_map(|p| {
                let modified = std::fs::metadata(&p).ok()?.modified().ok()?;
                Some((modified, p))
            })
            .max()
            .map(|(_, p)| p)
            .ok_or_else(|| SpoolError::NoTrace(container.to_owned()))
    }

    /// Reads every batch of a trace directory, oldest first.
    pub fn read(&self, trace_dir: &Path) -> Result<SpooledTrace, SpoolError> {
        let mut files: Vec<PathBuf> = read_dir_paths(trace_dir)?
            .into_iter()
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                !name.starts_with('.')
                    && (name.ends_with(BATCH_SUFFIX) || name.ends_with(SENT_SUFFIX))
            })
            .collect();
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        let mut batches = Vec::new();
        for path in files {
            let mut text = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut text))
                .map_err(io_err(&path))?;
            let batch = serde_json::from_slice(&text).map_err(|e| SpoolError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
            batches.push(batch);
        }
        Ok(SpooledTrace {
            dir: trace_dir.to_path_buf(),
            batches,
        })
    }
}

/// A batch being written: its temporary file exists, its content does not.
/// Dropped without [`Pending::commit`], it leaves nothing.
#[derive(Debug)]
pub struct Pending {
    spool: Spool,
    trace_dir: PathBuf,
    name: String,
    tmp: PathBuf,
    file: Option<File>,
}

impl Pending {
    /// Writes the batch, gives it its final name, counts it against the bound.
    pub fn commit(mut self, batch: &[u8], shipped: bool) -> Result<PathBuf, SpoolError> {
        let size = batch.len() as u64;
        if size > self.spool.max_bytes {
            return Err(SpoolError::TooLarge {
                path: self.spool.dir.clone(),
                size,
                max: self.spool.max_bytes,
            });
        }
        let suffix = if shipped { SENT_SUFFIX } else { BATCH_SUFFIX };
        let path = self.trace_dir.join(format!("{}{suffix}", self.name));
        let mut file = self.file.take().expect("a pending batch has its file");
        let written = file
            .write_all(batch)
            .and_then(|()| std::fs::rename(&self.tmp, &path));
        if let Err(e) = written {
            return Err(SpoolError::Io {
                path: self.tmp.clone(),
                source: e,
            });
        }
        drop(file);
        self.spool.account(batch.len() as u64, &self.trace_dir)?;
        Ok(path)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

struct TraceDir {
    path: PathBuf,
    modified: SystemTime,
    bytes: u64,
}

fn read_dir_paths(dir: &Path) -> Result<Vec<PathBuf>, SpoolError> {
    Ok(std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Vec<u8> {
        // A valid, empty request padded to n bytes with whitespace.
        let mut text = b"{\"resourceSpans\":[]}".to_vec();
        text.resize(n.max(text.len()), b' ');
        text
    }

    fn usage(spool: &Spool) -> u64 {
        std::fs::read_to_string(spool.dir().join(USAGE_FILE))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn batches_are_written_whole_and_counted() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 10_000);
        let a = spool.write("c1", "t1-s1", &batch(100), false).unwrap();
        let b = spool.write("c1", "t1-s1", &batch(50), true).unwrap();
        assert!(a.to_string_lossy().ends_with(BATCH_SUFFIX));
        assert!(b.to_string_lossy().ends_with(SENT_SUFFIX));
        assert_eq!(usage(&spool), 150);
        let trace = spool.read(&spool.find("c1", None).unwrap()).unwrap();
        assert_eq!(trace.batches.len(), 2);
        // No temporary file is left.
        let names: Vec<_> = std::fs::read_dir(&trace.dir).unwrap().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn the_oldest_traces_are_evicted_first_and_the_bound_holds() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 1000);
        for i in 0..12 {
            spool
                .write(&format!("c{i}"), "t-s", &batch(200), false)
                .unwrap();
            // Directory times must differ for the order to be observable.
            std::thread::sleep(std::time::Duration::from_millis(5));
            let total: u64 = spool.walk().unwrap().iter().map(|t| t.bytes).sum();
            assert!(total <= 1000, "spool holds {total} bytes after write {i}");
            assert_eq!(usage(&spool), total);
        }
        assert!(
            spool.find("c11", None).is_ok(),
            "the newest trace was evicted"
        );
        assert!(matches!(
            spool.find("c0", None),
            Err(SpoolError::NoTrace(_))
        ));
        assert!(
            !spool.dir().join("c0").exists(),
            "an empty container dir is left"
        );
    }

    #[test]
    fn a_batch_larger_than_the_bound_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 100);
        let err = spool.write("c", "t-s", &batch(200), false).unwrap_err();
        assert!(err.to_string().contains(MAX_BYTES_ENV), "{err}");
    }

    #[test]
    fn a_lost_usage_file_is_recounted() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 10_000);
        spool.write("c", "t-s", &batch(300), false).unwrap();
        std::fs::write(spool.dir().join(USAGE_FILE), "garbage").unwrap();
        spool.write("c", "t-s", &batch(100), false).unwrap();
        assert_eq!(usage(&spool), 400);
    }

    #[test]
    fn the_named_trace_wins_over_the_newest() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 10_000);
        spool.write("c", "old-1", &batch(10), false).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        spool.write("c", "new-2", &batch(10), false).unwrap();
        assert!(spool.find("c", None).unwrap().ends_with("new-2"));
        assert!(spool.find("c", Some("old-1")).unwrap().ends_with("old-1"));
    }
}
