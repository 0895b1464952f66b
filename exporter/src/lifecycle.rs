//! Lifecycle histograms: each container's recorded set-up phases and start
//! duration, observed once per container.
//!
//! "Once" holds across restarts of the exporter: the keys (`id@created`) of
//! containers already observed are kept in a ledger file under the exporter's
//! state directory, pruned to the containers still present. A restarted
//! exporter starts its histograms at zero (a counter reset, which Prometheus's
//! `rate` and `increase` handle) and observes only containers not in the
//! ledger, i.e. those created while it was down or since. So `increase()` over
//! any window counts each created container exactly once.

use std::collections::HashSet;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lucid_layout::state::files::{self, EntryError};
use prometheus::{Histogram, HistogramOpts, HistogramVec, Registry};

use crate::discovery::Container;
use crate::metrics::def;

/// Phase durations are micro- to milliseconds; slow hosts reach seconds.
pub const PHASE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// `create` takes tens of milliseconds; hooks can make it seconds.
pub const START_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The ledger file's name in the exporter's state directory.
pub const LEDGER_FILE: &str = "lifecycle-counted.json";

/// The most bytes of the ledger read: a key (`ID@created`) is at most about
/// 300 bytes, so some 50,000 containers.
pub const MAX_LEDGER_BYTES: u64 = 16 << 20;

/// The most phase names the phase histogram keeps a series for: lucid
/// records about a dozen; a phase named otherwise past this is not observed.
pub const MAX_PHASE_SERIES: usize = 64;

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Reading or writing the file failed.
    #[error("lifecycle ledger {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not a JSON list of keys; it is replaced at the next write.
    #[error("lifecycle ledger {path} is corrupt ({message}); containers present now may be counted again")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// The lifecycle histograms and the ledger of containers they counted.
pub struct Lifecycle {
    ledger: Option<PathBuf>,
    counted: HashSet<String>,
    phases: HistogramVec,
    /// The phase names with a series.
    phase_names: HashSet<String>,
    /// Whether a phase past [`MAX_PHASE_SERIES`] was reported.
    phase_names_full: bool,
    start: Histogram,
}

impl Lifecycle {
    /// Registers the histograms in `registry` and loads the ledger from
    /// `state_dir` (none: counted once per exporter process only).
    pub fn new(
        registry: &Registry,
        state_dir: Option<&Path>,
    ) -> Result<(Self, Option<LedgerError>), prometheus::Error> {
        let d = def("lucid_phase_duration_seconds");
        let phases = HistogramVec::new(
            HistogramOpts::new(d.name, d.help).buckets(PHASE_BUCKETS.to_vec()),
            d.labels,
        )?;
        let d = def("lucid_container_start_duration_seconds");
        let start = Histogram::with_opts(
            HistogramOpts::new(d.name, d.help).buckets(START_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(phases.clone()))?;
        registry.register(Box::new(start.clone()))?;
        let ledger = state_dir.map(|d| d.join(LEDGER_FILE));
        let (counted, err) = match &ledger {
            Some(path) => match load(path) {
                Ok(set) => (set, None),
                Err(e) => (HashSet::new(), Some(e)),
            },
            None => (HashSet::new(), None),
        };
        Ok((
            Lifecycle {
                ledger,
                counted,
                phases,
                phase_names: HashSet::new(),
                phase_names_full: false,
                start,
            },
            err,
        ))
    }

    /// Observes every container of `containers` not counted yet whose phases
    /// are recorded. With `complete` (the list is every container present) the
    /// ledger also forgets containers that are gone. Writes the ledger if it changed.
    pub fn observe(
        &mut self,
        containers: &[Arc<Container>],
        complete: bool,
    ) -> Result<(), LedgerError> {
        let mut changed = false;
        for c in containers {
            if c.phases.is_empty() {
                continue;
            }
            let key = c.key();
            if self.counted.contains(&key) {
                continue;
            }
            for p in &c.phases {
                if !self.phase_names.contains(&p.name) {
                    if self.phase_names.len() >= MAX_PHASE_SERIES {
                        if !self.phase_names_full {
                            log::warn!(
                                "container {}: phase {:?} is not observed: the phase histogram \
                                 has series for {MAX_PHASE_SERIES} phase names already",
                                c.id,
                                p.name
                            );
                            self.phase_names_full = true;
                        }
                        continue;
                    }
                    self.phase_names.insert(p.name.clone());
                }
                self.phases
                    .with_label_values(&[p.name.as_str()])
                    .observe(p.end_ns.saturating_sub(p.start_ns) as f64 / 1e9);
            }
            if let Some(d) = c.start_duration() {
                self.start.observe(d);
            }
            self.counted.insert(key);
            changed = true;
        }
        if complete {
            let present: HashSet<String> = containers.iter().map(|c| c.key()).collect();
            let before = self.counted.len();
            self.counted.retain(|k| present.contains(k));
            changed |= self.counted.len() != before;
        }
        match (&self.ledger, changed) {
            (Some(path), true) => save(path, &self.counted),
            _ => Ok(()),
        }
    }

    /// How many containers the ledger holds.
    pub fn counted(&self) -> usize {
        self.counted.len()
    }
}

/// Reads the ledger as the state root is read: a regular file (not a link),
/// opened without blocking, of at most [`MAX_LEDGER_BYTES`].
fn load(path: &Path) -> Result<HashSet<String>, LedgerError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(HashSet::new());
    };
    let read = match files::open_root(dir) {
        Ok(fd) => files::read(fd.as_fd(), Path::new(name), MAX_LEDGER_BYTES),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(EntryError::Missing),
        Err(e) => Err(EntryError::Io(e)),
    };
    let text = match read {
        Ok(text) => text,
        Err(EntryError::Missing) => return Ok(HashSet::new()),
        Err(EntryError::Io(source)) => {
            return Err(LedgerError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(e) => {
            return Err(LedgerError::Corrupt {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        }
    };
    let keys: Vec<String> = serde_json::from_slice(&text).map_err(|e| LedgerError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(keys.into_iter().collect())
}

fn save(path: &Path, counted: &HashSet<String>) -> Result<(), LedgerError> {
    let io = |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut keys: Vec<&String> = counted.iter().collect();
    keys.sort();
    let tmp = path.with_extension("json.tmp");
    // Never written through a link left in its place.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(&serde_json::to_vec(&keys).map_err(|e| io(std::io::Error::other(e)))?)
        .map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::ContainerLabels;
    use lucid_layout::state::PhaseTiming;
    use std::time::{Duration, UNIX_EPOCH};

    fn container(id: &str, created_s: u64, phases: &[(&str, u64, u64)]) -> Arc<Container> {
        Arc::new(Container {
            id: id.into(),
            labels: ContainerLabels::from_annotations(id, &Default::default()),
            label_text: String::new(),
            created: UNIX_EPOCH + Duration::from_secs(created_s),
            created_text: format!("t{created_s}"),
            cgroup: Default::default(),
            open_files: Default::default(),
            cgroup_id: None,
            trace_id: String::new(),
            phases: phases
                .iter()
                .map(|(n, s, e)| PhaseTiming {
                    name: (*n).into(),
                    start_ns: *s,
                    end_ns: *e,
                    ..Default::default()
                })
                .collect(),
        })
    }

    fn count_and_sum(l: &Lifecycle, phase: &str) -> (u64, f64) {
        let h = l.phases.with_label_values(&[phase]);
        (h.get_sample_count(), h.get_sample_sum())
    }

    #[test]
    fn each_container_is_counted_once_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = container("a", 1, &[("rootfs.mount", 1_000_000_000, 1_002_000_000)]);
        let b = container("b", 2, &[("rootfs.mount", 2_000_000_000, 2_001_000_000)]);
        {
            let (mut l, err) = Lifecycle::new(&Registry::new(), Some(dir.path())).unwrap();
            assert!(err.is_none());
            l.observe(std::slice::from_ref(&a), true).unwrap();
            l.observe(std::slice::from_ref(&a), true).unwrap();
            let (n, sum) = count_and_sum(&l, "rootfs.mount");
            assert_eq!(n, 1);
            assert!((sum - 0.002).abs() < 1e-9);
            assert_eq!(l.start.get_sample_count(), 1);
        }
        // A new exporter process: a was counted before, b is new.
        let (mut l, _) = Lifecycle::new(&Registry::new(), Some(dir.path())).unwrap();
        l.observe(&[a.clone(), b.clone()], true).unwrap();
        assert_eq!(count_and_sum(&l, "rootfs.mount").0, 1);
        // a is deleted: the ledger forgets it; a later container reusing the ID counts.
        l.observe(std::slice::from_ref(&b), true).unwrap();
        assert_eq!(l.counted(), 1);
        let a2 = container("a", 3, &[("rootfs.mount", 3_000_000_000, 3_000_500_000)]);
        l.observe(&[b, a2], true).unwrap();
        assert_eq!(count_and_sum(&l, "rootfs.mount").0, 2);
    }

    #[test]
    fn a_container_without_phases_waits_until_they_are_recorded() {
        let (mut l, _) = Lifecycle::new(&Registry::new(), None).unwrap();
        l.observe(&[container("c", 1, &[])], true).unwrap();
        assert_eq!(l.counted(), 0);
    }

    #[test]
    fn a_corrupt_ledger_is_reported_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEDGER_FILE), "{not json").unwrap();
        let (mut l, err) = Lifecycle::new(&Registry::new(), Some(dir.path())).unwrap();
        assert!(matches!(err, Some(LedgerError::Corrupt { .. })));
        l.observe(&[container("a", 1, &[("x", 0, 1)])], true)
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap();
        assert_eq!(text, r#"["a@t1"]"#);
    }

    #[test]
    fn phase_series_stop_at_the_bound() {
        let (mut l, _) = Lifecycle::new(&Registry::new(), None).unwrap();
        let names: Vec<String> = (0..MAX_PHASE_SERIES + 10)
            .map(|i| format!("p{i}"))
            .collect();
        let phases: Vec<(&str, u64, u64)> = names.iter().map(|n| (n.as_str(), 0, 1)).collect();
        l.observe(&[container("a", 1, &phases)], true).unwrap();
        assert_eq!(l.phase_names.len(), MAX_PHASE_SERIES);
        // Names that have a series go on being observed.
        l.observe(&[container("b", 2, &[("p0", 0, 1)])], true)
            .unwrap();
        assert_eq!(count_and_sum(&l, "p0").0, 2);
    }

    #[test]
    fn a_ledger_that_is_a_fifo_is_reported_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &dir.path().join(LEDGER_FILE),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let (_, err) = Lifecycle::new(&Registry::new(), Some(dir.path())).unwrap();
        assert!(matches!(err, Some(LedgerError::Corrupt { .. })), "{err:?}");
    }
}
