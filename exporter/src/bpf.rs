//! The eBPF side as the exporter sees it: the pinned programs (loaded and
//! pinned here if the runtime has not), each registered container's counters,
//! the programs' health counters and, when the kernel records it, their run time.
//!
//! Syscall series are bounded per container: the first `top_n` distinct
//! syscalls seen, in order of count at the scrape that first saw them, get a
//! series of their own and keep it; every other syscall is summed into
//! `syscall="other"`. Because a syscall never moves out of `other`, no counter
//! ever goes down.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lucid_ebpf::{ContainerStats, Health, LatencyHistogram, Programs};

/// How long to wait before trying again to open the pins after a failure.
const RETRY_OPEN: Duration = Duration::from_secs(10);

/// The name of the series that sums every syscall beyond the first `top_n`.
pub const OTHER: &str = "other";

/// One syscall series of a container.
#[derive(Debug, Clone, PartialEq)]
pub struct SyscallSeries {
    /// The syscall's name, or [`OTHER`].
    pub name: String,
    /// Calls.
    pub count: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Latency, when the container records it (merged for [`OTHER`]).
    pub latency: Option<LatencyHistogram>,
}

/// What eBPF counted for one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerBpf {
    /// Network and process counters.
    pub stats: ContainerStats,
    /// Syscall series, bounded by `top_n` + 1.
    pub syscalls: Vec<SyscallSeries>,
}

/// Run time of one of lucid's BPF programs.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramRunTime {
    /// The pin's name (`syscall_exit_tp`, `net_ingress`, …).
    pub program: String,
    /// Total time spent running it.
    pub run_time: Duration,
    /// Times it ran.
    pub runs: u64,
}

/// Errors reading eBPF, by kind of the error counter.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BpfErrors {
    /// Opening or loading the pins failed.
    pub open: u64,
    /// Reading a map failed.
    pub read: u64,
    /// Reading program statistics failed.
    pub stats: u64,
}

/// Host-wide figures read once per scrape.
#[derive(Debug, Default, Clone)]
pub struct BpfHost {
    /// Whether the pinned programs are open.
    pub up: bool,
    /// The programs' health counters.
    pub health: Option<Health>,
    /// Whether `kernel.bpf_stats_enabled` is 1.
    pub stats_enabled: bool,
    /// Run time per program, when stats are enabled.
    pub programs: Vec<ProgramRunTime>,
    /// Each eBPF feature and whether it works here (empty when the programs are not open).
    pub features: Vec<lucid_ebpf::FeatureStatus>,
    /// The hook counting syscalls, when the kernel took one.
    pub syscall_hook: Option<lucid_ebpf::SyscallHook>,
}

/// The pinned programs, opened lazily and reopened after a failure.
pub struct Bpf {
    pin_root: PathBuf,
    programs: Option<Programs>,
    next_attempt: Instant,
    top_n: usize,
    /// Syscall numbers with a series of their own, per container key.
    named: HashMap<String, Vec<u32>>,
}

impl Bpf {
    /// Uses the pins under `pin_root`; opens them at the first scrape.
    pub fn new(pin_root: &Path, top_n: usize) -> Self {
        Bpf {
            pin_root: pin_root.to_path_buf(),
            programs: None,
            next_attempt: Instant::now(),
            top_n,
            named: HashMap::new(),
        }
    }

    /// Opens (or loads and pins) the programs now, if they are not open and the
    /// last failure is older than the retry interval.
    pub fn ensure_open(&mut self, errors: &mut BpfErrors) -> bool {
        if self.programs.is_some() {
            return true;
        }
        if Instant::now() < self.next_attempt {
            return false;
        }
        match Programs::open_or_load(&self.pin_root) {
            Ok(programs) => {
                log::info!(
                    "eBPF programs {} at {}",
                    match programs.opened() {
                        lucid_ebpf::Opened::Loaded => "loaded and pinned",
                        lucid_ebpf::Opened::Existing => "opened",
                    },
                    programs.pin_dir().display()
                );
                match programs.features() {
                    Ok(features) => {
                        for f in &features {
                            if let Some(why) = f.why_off() {
                                log::warn!("eBPF feature {} is off: {why}", f.name);
                            }
                        }
                    }
                    Err(e) => log::warn!("reading eBPF features: {e}"),
                }
                self.programs = Some(programs);
                true
            }
            Err(e) => {
                log::warn!("eBPF metrics unavailable: {e}; retrying in {RETRY_OPEN:?}");
                errors.open += 1;
                self.next_attempt = Instant::now() + RETRY_OPEN;
                false
            }
        }
    }

    /// The cgroup ids registered with the programs, `None` when eBPF is unavailable.
    pub fn registered(&mut self, errors: &mut BpfErrors) -> Option<HashSet<u64>> {
        if !self.ensure_open(errors) {
            return None;
        }
        let programs = self.programs.as_ref()?;
        match programs.registered() {
            Ok(list) => Some(list.into_iter().map(|r| r.cgroup_id).collect()),
            Err(e) => {
                log::warn!("reading registered containers: {e}; reopening the pins");
                errors.read += 1;
                self.programs = None;
                None
            }
        }
    }

    /// The open programs, to read containers' counters from several threads.
    pub fn programs(&self) -> Option<&Programs> {
        self.programs.as_ref()
    }

    /// Syscall series per container before `other`.
    pub fn top_n(&self) -> usize {
        self.top_n
    }

    /// Takes the container's named syscalls out, to bound its series on another thread.
    pub fn take_named(&mut self, key: &str) -> Vec<u32> {
        self.named.remove(key).unwrap_or_default()
    }

    /// Puts the container's named syscalls back after the scrape.
    pub fn put_named(&mut self, key: String, named: Vec<u32>) {
        self.named.insert(key, named);
    }

    /// Forgets the syscall series of containers whose keys are not in `present`.
    pub fn retain(&mut self, present: &HashSet<&str>) {
        self.named.retain(|k, _| present.contains(k.as_str()));
    }

    /// Host-wide health and program run time.
    pub fn host(&mut self, errors: &mut BpfErrors) -> BpfHost {
        let stats_enabled = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .is_ok_and(|s| s.trim() == "1");
        let Some(programs) = self.programs.as_ref() else {
            return BpfHost {
                stats_enabled,
                ..Default::default()
            };
        };
        let health = match programs.health() {
            Ok(h) => Some(h),
            Err(e) => {
                log::warn!("reading eBPF health counters: {e}");
                errors.read += 1;
                None
            }
        };
        let run_times = if stats_enabled {
            match program_run_times(programs.pin_dir()) {
                Ok(list) => list,
                Err(e) => {
                    log::warn!("reading BPF program statistics: {e}");
                    errors.stats += 1;
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let features = match programs.features() {
            Ok(features) => features,
            Err(e) => {
                log::warn!("reading eBPF features: {e}");
                errors.read += 1;
                Vec::new()
            }
        };
        BpfHost {
            up: true,
            health,
            stats_enabled,
            programs: run_times,
            features,
            syscall_hook: programs.syscall_hook(),
        }
    }
}

/// What eBPF counted for the container with cgroup `cgroup_id`, its syscall
/// series bounded with its `named` syscalls; `Ok(None)` when it is not registered.
pub fn read_container(
    programs: &Programs,
    cgroup_id: u64,
    named: &mut Vec<u32>,
    top_n: usize,
) -> Result<Option<ContainerBpf>, lucid_ebpf::Error> {
    let read = programs
        .container_stats(cgroup_id)
        .and_then(|stats| Ok((stats, programs.syscalls(cgroup_id)?)));
    match read {
        Ok((stats, rows)) => Ok(Some(ContainerBpf {
            stats,
            syscalls: bound_series(named, top_n, rows),
        })),
        // Unregistered between the listing and this read.
        Err(lucid_ebpf::Error::NotRegistered(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Bounds a container's syscall rows (highest count first) to the sticky named
/// set plus `other`; see the module documentation.
pub fn bound_series(
    named: &mut Vec<u32>,
    top_n: usize,
    rows: Vec<lucid_ebpf::SyscallRow>,
) -> Vec<SyscallSeries> {
    let mut out = Vec::with_capacity(named.len().min(top_n) + 1);
    let mut other: Option<SyscallSeries> = None;
    for row in rows {
        if !named.contains(&row.nr) && named.len() < top_n {
            named.push(row.nr);
        }
        if named.contains(&row.nr) {
            out.push(SyscallSeries {
                name: row.name,
                count: row.count,
                errors: row.errors,
                latency: row.latency,
            });
        } else {
            let o = other.get_or_insert_with(|| SyscallSeries {
                name: OTHER.to_owned(),
                count: 0,
                errors: 0,
                latency: row.latency.as_ref().map(|_| LatencyHistogram {
                    buckets: Default::default(),
                }),
            });
            o.count += row.count;
            o.errors += row.errors;
            if let (Some(sum), Some(h)) = (o.latency.as_mut(), row.latency.as_ref()) {
                for (s, b) in sum.buckets.iter_mut().zip(h.buckets.iter()) {
                    *s += b;
                }
            }
        }
    }
    out.extend(other);
    out
}

/// Run time and count of each pinned program and of the program behind each pinned global link
/// (once per program: a link to a pinned program, such as `links/syscall_exit` while containers
/// are registered, is reported under the program's name).
fn program_run_times(pin_dir: &Path) -> std::io::Result<Vec<ProgramRunTime>> {
    use aya::programs::{links::FdLink, links::PinnedLink, loaded_programs, ProgramInfo};
    let mut by_id: HashMap<u32, String> = HashMap::new();
    let mut pinned_ids = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (sub, is_link) in [("progs", false), ("links", true)] {
        let entries = match std::fs::read_dir(pin_dir.join(sub)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if is_link {
                let link: FdLink = PinnedLink::from_pin(&path)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?
                    .into();
                let info = link
                    .info()
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                if !pinned_ids.contains(&info.program_id()) {
                    by_id.insert(info.program_id(), name);
                }
            } else {
                let info = ProgramInfo::from_pin(&path)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                pinned_ids.insert(info.id());
                out.push(ProgramRunTime {
                    program: name,
                    run_time: info.run_time(),
                    runs: info.run_count(),
                });
            }
        }
    }
    if !by_id.is_empty() {
        for info in loaded_programs().flatten() {
            if let Some(name) = by_id.remove(&info.id()) {
                out.push(ProgramRunTime {
                    program: name,
                    run_time: info.run_time(),
                    runs: info.run_count(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.program.cmp(&b.program));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucid_ebpf::SyscallRow;

    fn row(nr: u32, name: &str, count: u64) -> SyscallRow {
        SyscallRow {
            nr,
            name: name.into(),
            count,
            errors: count / 10,
            latency: None,
        }
    }

    #[test]
    fn syscalls_beyond_top_n_are_summed_into_other() {
        let mut named = Vec::new();
        let s = bound_series(
            &mut named,
            2,
            vec![
                row(0, "read", 50),
                row(1, "write", 40),
                row(39, "getpid", 30),
                row(2, "open", 20),
            ],
        );
        let names: Vec<_> = s.iter().map(|s| (s.name.as_str(), s.count)).collect();
        assert_eq!(names, [("read", 50), ("write", 40), ("other", 50)]);
        assert_eq!(s[2].errors, 3 + 2);
    }

    #[test]
    fn a_named_syscall_keeps_its_series_and_other_never_goes_down() {
        let mut named = Vec::new();
        bound_series(&mut named, 1, vec![row(0, "read", 5), row(1, "write", 1)]);
        // write overtakes read: it stays in other, so other only grows.
        let s = bound_series(&mut named, 1, vec![row(1, "write", 100), row(0, "read", 6)]);
        let names: Vec<_> = s.iter().map(|s| (s.name.as_str(), s.count)).collect();
        assert_eq!(names, [("read", 6), ("other", 100)]);
    }
}
