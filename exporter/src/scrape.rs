//! One scrape: discover containers, read their cgroups and eBPF counters,
//! add the exporter's own metrics, encode the text exposition format.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use std::time::Instant;

use lucid_ebpf::Programs;
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

use crate::bpf::{read_container, Bpf, BpfErrors, BpfHost, ContainerBpf};
use crate::discovery::{unix_seconds, Container, Inventory};
use crate::lifecycle::Lifecycle;
use crate::metrics::{def, render_labels, with_label, Exposition};
use crate::resources::{Reader, ResourceError, ResourceStats};
use crate::spool::Spool;

pub use crate::metrics::ERROR_KINDS;

/// Reasons of `lucid_ebpf_samples_lost_total`.
const LOST_REASONS: &[&str] = &[
    "inflight_full",
    "latency_full",
    "unknown_syscall",
    "bad_slot",
    "oom_victims_full",
];

/// What the scrape needs to know.
#[derive(Debug, Clone)]
pub struct ScrapeSettings {
    /// The runtime's state root.
    pub root: PathBuf,
    /// Where the eBPF programs are pinned.
    pub bpf_pin_root: PathBuf,
    /// The exporter's own state (the lifecycle ledger); `None` keeps nothing.
    pub state_dir: Option<PathBuf>,
    /// Syscall series per container before the rest go to `other`.
    pub syscall_top_n: usize,
    /// Threads reading cgroup files.
    pub threads: usize,
}

/// The exporter's own metrics, registered in a `prometheus` registry.
pub struct SelfMetrics {
    registry: Registry,
    scrape_duration: Histogram,
    errors: IntCounterVec,
    tracked: IntGauge,
}

impl SelfMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let d = def("lucid_exporter_scrape_duration_seconds");
        let scrape_duration =
            Histogram::with_opts(HistogramOpts::new(d.name, d.help).buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]))?;
        let d = def("lucid_exporter_errors_total");
        let errors = IntCounterVec::new(Opts::new(d.name, d.help), d.labels)?;
        for kind in ERROR_KINDS {
            errors.with_label_values(&[*kind]);
        }
        let d = def("lucid_exporter_containers_tracked");
        let tracked = IntGauge::new(d.name, d.help)?;
        registry.register(Box::new(scrape_duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(tracked.clone()))?;
        Ok(SelfMetrics {
            registry,
            scrape_duration,
            errors,
            tracked,
        })
    }

    /// Counts `n` errors of `kind` (one of [`ERROR_KINDS`]).
    pub fn error(&self, kind: &str, n: u64) {
        debug_assert!(ERROR_KINDS.contains(&kind), "unknown error kind {kind}");
        if n > 0 {
            self.errors.with_label_values(&[kind]).inc_by(n);
        }
    }

    /// The registry the exporter's own metrics are in (served after the scrape's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The count of errors of `kind` so far.
    pub fn errors(&self, kind: &str) -> u64 {
        self.errors.with_label_values(&[kind]).get()
    }
}

struct State {
    inventory: Inventory,
    bpf: Bpf,
    lifecycle: Lifecycle,
    readers: Vec<Reader>,
    spool: Spool,
}

/// The exporter's collecting side: everything a `/metrics` response needs.
pub struct Exporter {
    state: Mutex<State>,
    metrics: Arc<SelfMetrics>,
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A metric could not be registered (a programming error).
    #[error("registering metrics: {0}")]
    Registry(#[from] prometheus::Error),
    /// The host's cgroup mounts could not be read.
    #[error("reading /proc/self/mountinfo: {0}")]
    Mounts(std::io::Error),
}

impl Exporter {
    /// An exporter for these settings; nothing is read until the first scrape.
    pub fn new(settings: &ScrapeSettings) -> Result<Self, StartError> {
        let metrics = Arc::new(SelfMetrics::new()?);
        let hierarchies = lucid_layout::hierarchy::detect().map_err(StartError::Mounts)?;
        let (lifecycle, ledger_err) =
            Lifecycle::new(&metrics.registry, settings.state_dir.as_deref())?;
        if let Some(e) = ledger_err {
            log::warn!("{e}");
            metrics.error("ledger", 1);
        }
        let threads = settings.threads.max(1);
        Ok(Exporter {
            state: Mutex::new(State {
                inventory: Inventory::new(&settings.root, hierarchies),
                bpf: Bpf::new(&settings.bpf_pin_root, settings.syscall_top_n),
                lifecycle,
                readers: (0..threads).map(|_| Reader::new()).collect(),
                spool: Spool::new(&settings.root),
            }),
            metrics,
        })
    }

    /// The exporter's own metrics, for the parts that count errors outside a scrape.
    pub fn self_metrics(&self) -> Arc<SelfMetrics> {
        self.metrics.clone()
    }

    /// Collects every metric and returns the text exposition. Blocking: call it
    /// from a blocking thread.
    pub fn scrape(&self) -> String {
        let started = Instant::now();
        let mut text = {
            // A panic in an earlier scrape leaves nothing half-done that matters here.
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.collect(&mut state).finish()
        };
        let mut own = Vec::with_capacity(16 * 1024);
        match prometheus::TextEncoder::new().encode(&self.metrics.registry.gather(), &mut own) {
            // The text encoder writes UTF-8 only.
            Ok(()) => text.push_str(&String::from_utf8_lossy(&own)),
            Err(e) => log::error!("encoding the exporter's own metrics: {e}"),
        }
        self.metrics
            .scrape_duration
            .observe(started.elapsed().as_secs_f64());
        text
    }

    fn collect(&self, state: &mut State) -> Exposition {
        let scan = state.inventory.scan();
        self.metrics.error("state_corrupt", scan.corrupt);
        self.metrics.error("state_read", scan.unreadable);
        let containers = state.inventory.containers();
        self.metrics.tracked.set(containers.len() as i64);
        if let Err(e) = state.lifecycle.observe(&containers, scan.unreadable == 0) {
            log::warn!("{e}");
            self.metrics.error("ledger", 1);
        }

        let mut bpf_errors = BpfErrors::default();
        let registered = state.bpf.registered(&mut bpf_errors).unwrap_or_default();
        let keys: Vec<String> = containers.iter().map(|c| c.key()).collect();
        state
            .bpf
            .retain(&keys.iter().map(String::as_str).collect::<HashSet<_>>());
        let mut items: Vec<Item> = containers
            .iter()
            .zip(keys)
            .map(|(c, key)| {
                let watched = c.cgroup_id.filter(|id| registered.contains(id));
                Item {
                    named: watched.map(|_| state.bpf.take_named(&key)),
                    container: c,
                    key,
                }
            })
            .collect();

        let top_n = state.bpf.top_n();
        let programs = state.bpf.programs();
        let (mut out, counts) = collect_parallel(&mut state.readers, &mut items, programs, top_n);
        for item in items {
            if let Some(named) = item.named {
                state.bpf.put_named(item.key, named);
            }
        }
        bpf_errors.read += counts.ebpf_read;
        self.metrics.error("cgroup_gone", counts.cgroup_gone);
        self.metrics.error("cgroup_read", counts.cgroup_read);

        let host = state.bpf.host(&mut bpf_errors);
        self.metrics.error("ebpf_open", bpf_errors.open);
        self.metrics.error("ebpf_read", bpf_errors.read);
        self.metrics.error("bpf_stats", bpf_errors.stats);
        put_host(&mut out, &host);
        match state.spool.read() {
            Ok(spool) => {
                out.value(
                    "lucid_spool_unshipped_batches",
                    "",
                    spool.unshipped_batches as f64,
                );
                out.value(
                    "lucid_spool_unshipped_bytes",
                    "",
                    spool.unshipped_bytes as f64,
                );
                let now_ns = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128);
                out.value(
                    "lucid_spool_oldest_unshipped_age_seconds",
                    "",
                    spool.oldest_unshipped_age(now_ns).as_secs_f64(),
                );
            }
            Err(e) => {
                log::warn!("{e}");
                self.metrics.error("spool_read", 1);
            }
        }
        out
    }
}

/// One container's work in a scrape.
struct Item<'a> {
    container: &'a Arc<Container>,
    key: String,
    /// Its named syscalls, when it is registered with eBPF.
    named: Option<Vec<u32>>,
}

/// Errors counted by the collecting threads.
#[derive(Default)]
struct Counts {
    cgroup_gone: u64,
    cgroup_read: u64,
    ebpf_read: u64,
}

/// Reads every container's cgroup and eBPF counters and writes its samples,
/// the containers split over one thread per reader.
fn collect_parallel(
    readers: &mut [Reader],
    items: &mut [Item],
    programs: Option<&Programs>,
    top_n: usize,
) -> (Exposition, Counts) {
    let mut out = Exposition::new();
    let mut counts = Counts::default();
    if items.is_empty() {
        return (out, counts);
    }
    let chunk = items.len().div_ceil(readers.len().max(1));
    std::thread::scope(|scope| {
        let mut parts = items.chunks_mut(chunk).zip(readers.iter_mut());
        let first = parts.next();
        let handles: Vec<_> = parts
            .map(|(part, reader)| scope.spawn(move || collect_part(reader, part, programs, top_n)))
            .collect();
        if let Some((part, reader)) = first {
            let (o, c) = collect_part(reader, part, programs, top_n);
            out.merge(o);
            counts.add(c);
        }
        for handle in handles {
            match handle.join() {
                Ok((o, c)) => {
                    out.merge(o);
                    counts.add(c);
                }
                Err(_) => {
                    log::error!(
                        "a collecting thread panicked; its containers are missing from this scrape"
                    );
                    counts.cgroup_read += 1;
                }
            }
        }
    });
    (out, counts)
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.cgroup_gone += other.cgroup_gone;
        self.cgroup_read += other.cgroup_read;
        self.ebpf_read += other.ebpf_read;
    }
}

fn collect_part(
    reader: &mut Reader,
    items: &mut [Item],
    programs: Option<&Programs>,
    top_n: usize,
) -> (Exposition, Counts) {
    let mut out = Exposition::new();
    let mut counts = Counts::default();
    for item in items {
        let c = item.container;
        let mut open = c.open_files.lock().unwrap_or_else(|p| p.into_inner());
        let read = reader.read(&c.cgroup, &mut open);
        drop(open);
        match read {
            Ok(stats) => put_resources(&mut out, c, &stats),
            Err(ResourceError::Gone(dir)) => {
                log::debug!("container {}: cgroup {} is gone", c.id, dir.display());
                counts.cgroup_gone += 1;
            }
            Err(e) => {
                log::warn!("container {}: {e}", c.id);
                counts.cgroup_read += 1;
            }
        }
        out.value(
            "container_start_time_seconds",
            &c.label_text,
            unix_seconds(c.created),
        );
        if let Some(d) = c.start_duration() {
            out.value("lucid_container_startup_seconds", &c.label_text, d);
        }
        out.value(
            "lucid_container_info",
            &with_label(&c.label_text, "trace_id", &c.trace_id),
            1.0,
        );
        if let (Some(named), Some(programs), Some(id)) =
            (item.named.as_mut(), programs, c.cgroup_id)
        {
            match read_container(programs, id, named, top_n) {
                Ok(Some(bpf)) => put_bpf(&mut out, &c.label_text, &bpf),
                Ok(None) => {}
                Err(e) => {
                    log::warn!(
                        "container {}: reading eBPF counters of cgroup {id}: {e}",
                        c.id
                    );
                    counts.ebpf_read += 1;
                }
            }
        }
    }
    (out, counts)
}

fn put_resources(f: &mut Exposition, c: &Container, s: &ResourceStats) {
    let l = c.label_text.as_str();
    let mut put = |name: &str, v: Option<f64>| {
        if let Some(v) = v {
            f.value(name, l, v);
        }
    };
    let n = |v: Option<u64>| v.map(|x| x as f64);
    put("container_cpu_user_seconds_total", s.cpu_user);
    put("container_cpu_system_seconds_total", s.cpu_system);
    put("container_cpu_cfs_periods_total", n(s.cfs_periods));
    put(
        "container_cpu_cfs_throttled_periods_total",
        n(s.cfs_throttled_periods),
    );
    put("container_cpu_cfs_throttled_seconds_total", s.cfs_throttled);
    put("container_memory_usage_bytes", n(s.memory_usage));
    put(
        "container_memory_working_set_bytes",
        n(s.memory_working_set),
    );
    put("container_memory_rss", n(s.memory_rss));
    put("container_memory_cache", n(s.memory_cache));
    put("container_memory_mapped_file", n(s.memory_mapped_file));
    put("container_memory_swap", n(s.memory_swap));
    put("container_memory_max_usage_bytes", n(s.memory_max_usage));
    put("container_memory_failcnt", n(s.memory_failcnt));
    put("container_processes", n(s.processes));
    put("container_threads", n(s.threads));
    put("container_threads_max", n(s.threads_max));
    if let Some(v) = s.cpu_usage {
        f.value(
            "container_cpu_usage_seconds_total",
            &with_label(l, "cpu", "total"),
            v,
        );
    }
}

fn put_bpf(f: &mut Exposition, l: &str, b: &ContainerBpf) {
    let s = &b.stats;
    for (name, v) in [
        ("container_network_receive_bytes_total", s.rx_bytes),
        ("container_network_receive_packets_total", s.rx_packets),
        ("container_network_transmit_bytes_total", s.tx_bytes),
        ("container_network_transmit_packets_total", s.tx_packets),
        ("lucid_container_execs_total", s.execs),
        ("lucid_container_exits_total", s.exits),
        ("lucid_container_oom_kills_total", s.oom_kills),
        ("lucid_container_devices_denied_total", s.devices_denied),
    ] {
        f.value(name, l, v as f64);
    }
    for sc in &b.syscalls {
        let labels = with_label(l, "syscall", &sc.name);
        f.value("lucid_container_syscalls_total", &labels, sc.count as f64);
        f.value(
            "lucid_container_syscall_errors_total",
            &labels,
            sc.errors as f64,
        );
        if let Some(h) = &sc.latency {
            let (buckets, count, sum) = latency_buckets(&h.buckets);
            f.histogram(
                "lucid_container_syscall_duration_seconds",
                &labels,
                &buckets,
                count,
                sum,
            );
        }
    }
}

/// A log2 nanosecond histogram as Prometheus buckets (upper bounds in seconds,
/// cumulative), its count, and an estimated sum (each sample at its bucket's midpoint).
pub fn latency_buckets(log2_ns: &[u64]) -> (Vec<(f64, u64)>, u64, f64) {
    let mut cumulative = 0;
    let mut sum = 0.0;
    let buckets = log2_ns
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            cumulative += n;
            let low = if i == 0 { 0.0 } else { (1u64 << i) as f64 };
            let high = (1u64 << (i + 1)) as f64;
            sum += n as f64 * (low + high) / 2.0 / 1e9;
            (high / 1e9, cumulative)
        })
        .collect();
    (buckets, cumulative, sum)
}

fn put_host(f: &mut Exposition, host: &BpfHost) {
    f.value("lucid_ebpf_up", "", if host.up { 1.0 } else { 0.0 });
    for feature in &host.features {
        let (state, program) = match &feature.availability {
            lucid_ebpf::Availability::On { program } => ("on", program.as_str()),
            lucid_ebpf::Availability::SwitchedOff { .. } => ("switched_off", ""),
            lucid_ebpf::Availability::Unsupported { .. } => ("unsupported", ""),
        };
        f.value(
            "lucid_ebpf_feature_enabled",
            &render_labels(&[("feature", feature.name)]),
            if feature.is_on() { 1.0 } else { 0.0 },
        );
        f.value(
            "lucid_ebpf_feature_info",
            &render_labels(&[
                ("feature", feature.name),
                ("state", state),
                ("program", program),
            ]),
            1.0,
        );
    }
    if let Some(hook) = host.syscall_hook {
        let hook = match hook {
            lucid_ebpf::SyscallHook::Fexit => "fexit",
            lucid_ebpf::SyscallHook::Tracepoint => "tracepoint",
        };
        f.value(
            "lucid_ebpf_syscall_hook_info",
            &render_labels(&[("hook", hook)]),
            1.0,
        );
    }
    f.value(
        "lucid_bpf_stats_enabled",
        "",
        if host.stats_enabled { 1.0 } else { 0.0 },
    );
    if let Some(h) = &host.health {
        f.value(
            "lucid_ebpf_events_dropped_total",
            "",
            h.events_dropped as f64,
        );
        for (reason, v) in LOST_REASONS.iter().zip([
            h.inflight_full,
            h.latency_full,
            h.unknown_syscalls,
            h.bad_slots,
            h.oom_victims_full,
        ]) {
            f.value(
                "lucid_ebpf_samples_lost_total",
                &render_labels(&[("reason", reason)]),
                v as f64,
            );
        }
    }
    for p in &host.programs {
        let labels = render_labels(&[("program", &p.program)]);
        f.value(
            "lucid_bpf_program_run_seconds_total",
            &labels,
            p.run_time.as_secs_f64(),
        );
        f.value("lucid_bpf_program_runs_total", &labels, p.runs as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_latency_becomes_cumulative_second_buckets() {
        let mut h = [0u64; 32];
        h[6] = 3; // 64-127 ns
        h[10] = 1; // 1024-2047 ns
        let (b, count, sum) = latency_buckets(&h);
        assert_eq!(count, 4);
        assert_eq!(b[5], (64e-9, 0));
        assert_eq!(b[6], (128e-9, 3));
        assert_eq!(b[10], (2048e-9, 4));
        assert!((sum - (3.0 * 96e-9 + 1536e-9)).abs() < 1e-15);
    }
}
