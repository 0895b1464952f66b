//! The span spool's depth: how much the runtime has spooled under its state
//! root, and how many batches still wait to be shipped to an OTLP endpoint.
//!
//! The layout is the runtime's: `<root>/@spool/usage` holds the total size of
//! the batch files in bytes (decimal digits and a newline), and each batch is
//! a file `<root>/@spool/<container-id>/<trace>/<name>.json`, renamed to
//! `<name>.json.sent` once shipped; names starting with `.` are batches being
//! written. The runtime evicts whole trace directories at any moment, so a
//! directory that vanishes during the walk is not an error. The exporter only
//! reads here.

use std::path::Path;

/// The spool's directory name under the state root (`@` cannot appear in a
/// container ID, so it never collides with a container's state directory).
pub const SPOOL_DIR: &str = "@spool";
/// The file holding the spool's total size in bytes.
pub const USAGE_FILE: &str = "usage";

/// What the spool holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of batch files: the `usage` file, or the files' sizes added up
    /// when it is missing or unreadable.
    pub bytes: u64,
    /// Batch files not shipped yet (`*.json`).
    pub pending: u64,
}

/// Why the spool could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the span spool {path}: {source}")]
pub struct SpoolError {
    /// The file or directory.
    pub path: std::path::PathBuf,
    /// The failure.
    pub source: std::io::Error,
}

fn entries(dir: &Path) -> Result<Option<std::fs::ReadDir>, SpoolError> {
    match std::fs::read_dir(dir) {
        Ok(e) => Ok(Some(e)),
        // Evicted, or not a directory (the spool's own `usage` file).
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(source) => Err(SpoolError {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Reads the spool under the state root `root`; no spool is an empty one.
pub fn read(root: &Path) -> Result<SpoolStats, SpoolError> {
    let spool = root.join(SPOOL_DIR);
    let Some(containers) = entries(&spool)? else {
        return Ok(SpoolStats::default());
    };
    let usage = std::fs::read_to_string(spool.join(USAGE_FILE))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    let mut stats = SpoolStats::default();
    let mut summed = 0u64;
    for container in containers.flatten() {
        let Some(traces) = entries(&container.path())? else {
            continue;
        };
        for trace in traces.flatten() {
            let Some(batches) = entries(&trace.path())? else {
                continue;
            };
            for batch in batches.flatten() {
                let name = batch.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') {
                    continue;
                }
                let pending = name.ends_with(".json");
                if !pending && !name.ends_with(".json.sent") {
                    continue;
                }
                stats.pending += u64::from(pending);
                if usage.is_none() {
                    summed += batch.metadata().map_or(0, |m| m.len());
                }
            }
        }
    }
    stats.bytes = usage.unwrap_or(summed);
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(root: &Path, container: &str, trace: &str, name: &str, bytes: usize) {
        let dir = root.join(SPOOL_DIR).join(container).join(trace);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), vec![b'x'; bytes]).unwrap();
    }

    #[test]
    fn no_spool_is_an_empty_spool() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(read(root.path()).unwrap(), SpoolStats::default());
    }

    #[test]
    fn unshipped_batches_are_pending_and_usage_gives_the_size() {
        let root = tempfile::tempdir().unwrap();
        batch(root.path(), "c1", "t1-s1", "001-1.json", 10);
        batch(root.path(), "c1", "t1-s1", "002-1.json.sent", 20);
        batch(root.path(), "c1", "t1-s1", ".003-1.tmp", 5);
        batch(root.path(), "c2", "t2-s2", "001-2.json", 30);
        std::fs::write(root.path().join(SPOOL_DIR).join(USAGE_FILE), "60\n").unwrap();
        assert_eq!(
            read(root.path()).unwrap(),
            SpoolStats {
                bytes: 60,
                pending: 2
            }
        );
    }

    #[test]
    fn without_usage_the_batch_files_are_added_up() {
        let root = tempfile::tempdir().unwrap();
        batch(root.path(), "c1", "t1-s1", "001-1.json", 10);
        batch(root.path(), "c1", "t1-s1", "002-1.json.sent", 20);
        batch(root.path(), "c1", "t1-s1", ".003-1.tmp", 5);
        assert_eq!(
            read(root.path()).unwrap(),
            SpoolStats {
                bytes: 30,
                pending: 1
            }
        );
    }
}
