//! The one list of every metric the exporter serves ([`METRICS`]), which
//! `docs/metrics.md` is checked against, and the builder that turns samples
//! into Prometheus metric families at scrape time.

use std::collections::HashMap;
use std::sync::LazyLock;

use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when its source restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into buckets.
    Histogram,
}

impl Kind {
    /// The name `docs/metrics.md` and the exposition format use.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }

    fn proto(self) -> MetricType {
        match self {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
            Kind::Histogram => MetricType::HISTOGRAM,
        }
    }
}

/// One metric: its name, type, labels, meaning and where its value comes from.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// The metric name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its label names, in order.
    pub labels: &'static [&'static str],
    /// What it means (the `# HELP` text).
    pub help: &'static str,
    /// Where the value is read from.
    pub source: &'static str,
}

/// The labels every per-container metric carries, in this order.
pub const CONTAINER_LABELS: &[&str] = &[
    "container_id",
    "name",
    "container",
    "pod",
    "namespace",
    "image",
];

const CPU: &[&str] = &[
    "container_id",
    "name",
    "container",
    "pod",
    "namespace",
    "image",
    "cpu",
];
const SYSCALL: &[&str] = &[
    "container_id",
    "name",
    "container",
    "pod",
    "namespace",
    "image",
    "syscall",
];

macro_rules! def {
    ($name:literal, $kind:ident, $labels:expr, $help:literal, $source:literal) => {
        MetricDef {
            name: $name,
            kind: Kind::$kind,
            labels: $labels,
            help: $help,
            source: $source,
        }
    };
}

/// Every metric the exporter serves. `docs/metrics.md` lists the same, checked by a test.
pub const METRICS: &[MetricDef] = &[
    // Resources, with cAdvisor's names, types, units and meanings.
    def!("container_cpu_usage_seconds_total", Counter, CPU,
        "Cumulative cpu time consumed in seconds.",
        "cgroup v1 cpuacct.usage; v2 cpu.stat usage_usec (cpu=\"total\")"),
    def!("container_cpu_user_seconds_total", Counter, CONTAINER_LABELS,
        "Cumulative user cpu time consumed in seconds.",
        "cgroup v1 cpuacct.stat user (USER_HZ ticks); v2 cpu.stat user_usec"),
    def!("container_cpu_system_seconds_total", Counter, CONTAINER_LABELS,
        "Cumulative system cpu time consumed in seconds.",
        "cgroup v1 cpuacct.stat system (USER_HZ ticks); v2 cpu.stat system_usec"),
    def!("container_cpu_cfs_periods_total", Counter, CONTAINER_LABELS,
        "Number of elapsed enforcement period intervals.",
        "cgroup v1 and v2 cpu.stat nr_periods"),
    def!("container_cpu_cfs_throttled_periods_total", Counter, CONTAINER_LABELS,
        "Number of throttled period intervals.",
        "cgroup v1 and v2 cpu.stat nr_throttled"),
    def!("container_cpu_cfs_throttled_seconds_total", Counter, CONTAINER_LABELS,
        "Total time duration the container has been throttled.",
        "cgroup v1 cpu.stat throttled_time (ns); v2 cpu.stat throttled_usec"),
    def!("container_memory_usage_bytes", Gauge, CONTAINER_LABELS,
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        "cgroup v1 memory.usage_in_bytes; v2 memory.current"),
    def!("container_memory_working_set_bytes", Gauge, CONTAINER_LABELS,
        "Current working set in bytes.",
        "usage minus inactive file pages (v1 memory.stat total_inactive_file, v2 inactive_file), never below 0"),
    def!("container_memory_rss", Gauge, CONTAINER_LABELS,
        "Size of RSS in bytes.",
        "cgroup v1 memory.stat total_rss; v2 memory.stat anon"),
    def!("container_memory_cache", Gauge, CONTAINER_LABELS,
        "Number of bytes of page cache memory.",
        "cgroup v1 memory.stat total_cache; v2 memory.stat file"),
    def!("container_memory_mapped_file", Gauge, CONTAINER_LABELS,
        "Size of memory mapped files in bytes.",
        "cgroup v1 memory.stat total_mapped_file; v2 memory.stat file_mapped"),
    def!("container_memory_swap", Gauge, CONTAINER_LABELS,
        "Container swap usage in bytes.",
        "cgroup v1 memory.stat total_swap; v2 memory.swap.current"),
    def!("container_memory_max_usage_bytes", Gauge, CONTAINER_LABELS,
        "Maximum memory usage recorded in bytes.",
        "cgroup v1 memory.max_usage_in_bytes; v2 memory.peak (Linux 5.19+)"),
    def!("container_memory_failcnt", Counter, CONTAINER_LABELS,
        "Number of memory usage hits limits.",
        "cgroup v1 memory.failcnt; v2 memory.events max"),
    def!("container_processes", Gauge, CONTAINER_LABELS,
        "Number of processes running inside the container.",
        "lines of cgroup.procs of the container's cgroup"),
    def!("container_threads", Gauge, CONTAINER_LABELS,
        "Number of threads running inside the container.",
        "cgroup v1 and v2 pids.current"),
    def!("container_threads_max", Gauge, CONTAINER_LABELS,
        "Maximum number of threads allowed inside the container, 0 for unlimited.",
        "cgroup v1 and v2 pids.max"),
    def!("container_start_time_seconds", Gauge, CONTAINER_LABELS,
        "Start time of the container since unix epoch in seconds.",
        "state.json created (when `create` began)"),
    def!("container_network_receive_bytes_total", Counter, CONTAINER_LABELS,
        "Cumulative count of bytes received.",
        "eBPF cgroup_skb ingress: IP packet length, all interfaces"),
    def!("container_network_receive_packets_total", Counter, CONTAINER_LABELS,
        "Cumulative count of packets received.",
        "eBPF cgroup_skb ingress, all interfaces"),
    def!("container_network_transmit_bytes_total", Counter, CONTAINER_LABELS,
        "Cumulative count of bytes transmitted.",
        "eBPF cgroup_skb egress: IP packet length, all interfaces"),
    def!("container_network_transmit_packets_total", Counter, CONTAINER_LABELS,
        "Cumulative count of packets transmitted.",
        "eBPF cgroup_skb egress, all interfaces"),
    // eBPF, per container.
    def!("lucid_container_syscalls_total", Counter, SYSCALL,
        "System calls the container's processes made, by syscall (top N per container, the rest as syscall=\"other\").",
        "eBPF raw_syscalls exit (or fexit x64_sys_call), SYSCALLS map"),
    def!("lucid_container_syscall_errors_total", Counter, SYSCALL,
        "System calls that returned an error, by syscall (same syscall series as lucid_container_syscalls_total).",
        "eBPF raw_syscalls exit (or fexit x64_sys_call), SYSCALLS map"),
    def!("lucid_container_syscall_duration_seconds", Histogram, SYSCALL,
        "System call latency, for containers registered with syscall latency (power-of-two buckets).",
        "eBPF sys_enter/sys_exit pair, LATENCY map"),
    def!("lucid_container_execs_total", Counter, CONTAINER_LABELS,
        "Successful execs in the container.",
        "eBPF sched_process_exec, COUNTERS map"),
    def!("lucid_container_exits_total", Counter, CONTAINER_LABELS,
        "Processes of the container that exited.",
        "eBPF sched_process_exit, COUNTERS map"),
    def!("lucid_container_oom_kills_total", Counter, CONTAINER_LABELS,
        "Processes of the container killed by the OOM killer.",
        "eBPF mark_victim + sched_process_exit, COUNTERS map"),
    def!("lucid_container_devices_denied_total", Counter, CONTAINER_LABELS,
        "Device accesses the container's cgroup v2 device filter denied.",
        "eBPF cgroup_device, DEVICE_RULES storage"),
    // Lifecycle, from the phases each container's state records.
    def!("lucid_phase_duration_seconds", Histogram, &["phase"],
        "Duration of each set-up phase the init process measured, each created container counted once.",
        "state.json phases (end_ns - start_ns)"),
    def!("lucid_container_start_duration_seconds", Histogram, &[],
        "Time from the start of `create` until the init process was ready to exec, each created container counted once.",
        "state.json created and the end of the last phase"),
    // The exporter's own health.
    def!("lucid_exporter_scrape_duration_seconds", Histogram, &[],
        "Time taken to collect and encode one /metrics response.",
        "measured by the exporter"),
    def!("lucid_exporter_containers_tracked", Gauge, &[],
        "Containers found in the state root at the last discovery.",
        "the state root"),
    def!("lucid_exporter_errors_total", Counter, &["kind"],
        "Errors met while collecting, by kind (state_corrupt, state_read, cgroup_gone, cgroup_read, ebpf_open, ebpf_read, bpf_stats, ledger, spool_read, otlp_export, http).",
        "the exporter"),
    def!("lucid_ebpf_up", Gauge, &[],
        "1 when the pinned eBPF programs are open, 0 when eBPF metrics are unavailable.",
        "lucid-ebpf Programs::open_or_load"),
    def!("lucid_ebpf_events_dropped_total", Counter, &[],
        "Exec and exit events dropped because the ring buffer was full.",
        "eBPF STATS map"),
    def!("lucid_ebpf_samples_lost_total", Counter, &["reason"],
        "eBPF samples lost, by reason (inflight_full, latency_full, unknown_syscall, bad_slot, oom_victims_full).",
        "eBPF STATS map"),
    def!("lucid_bpf_stats_enabled", Gauge, &[],
        "1 when the kernel records BPF program run time (sysctl kernel.bpf_stats_enabled).",
        "/proc/sys/kernel/bpf_stats_enabled"),
    def!("lucid_bpf_program_run_seconds_total", Counter, &["program"],
        "Time the kernel spent running each of lucid's BPF programs, while kernel.bpf_stats_enabled is 1.",
        "bpf_prog_info run_time_ns of the pinned programs and links"),
    def!("lucid_bpf_program_runs_total", Counter, &["program"],
        "Runs of each of lucid's BPF programs, while kernel.bpf_stats_enabled is 1.",
        "bpf_prog_info run_cnt of the pinned programs and links"),
];

static INDEX: LazyLock<HashMap<&'static str, usize>> = LazyLock::new(|| {
    METRICS
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name, i))
        .collect()
});

/// The definition of `name`.
///
/// # Panics
/// When `name` is not in [`METRICS`]: a programming error the unit tests catch.
pub fn def(name: &str) -> &'static MetricDef {
    match INDEX.get(name) {
        Some(&i) => &METRICS[i],
        None => panic!("metric {name} is not in METRICS"),
    }
}

/// Label pairs for `names` and `values` (same length).
pub fn label_pairs(names: &[&str], values: &[&str]) -> Vec<LabelPair> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let mut pair = LabelPair::default();
            pair.set_name((*n).to_owned());
            pair.set_value((*v).to_owned());
            pair
        })
        .collect()
}

/// Samples gathered during one scrape, grouped into families in [`METRICS`] order.
pub struct Families {
    families: Vec<Option<MetricFamily>>,
}

impl Default for Families {
    fn default() -> Self {
        Self::new()
    }
}

impl Families {
    /// No samples yet.
    pub fn new() -> Self {
        Families {
            families: vec![None; METRICS.len()],
        }
    }

    fn family(&mut self, name: &str) -> &mut MetricFamily {
        let i = INDEX[name];
        self.families[i].get_or_insert_with(|| {
            let def = &METRICS[i];
            let mut family = MetricFamily::default();
            family.set_name(def.name.to_owned());
            family.set_help(def.help.to_owned());
            family.set_field_type(def.kind.proto());
            family
        })
    }

    /// Adds a counter or gauge sample (its type is the one [`METRICS`] gives).
    pub fn value(&mut self, name: &str, labels: Vec<LabelPair>, value: f64) {
        debug_assert_eq!(
            labels.len(),
            def(name).labels.len(),
            "labels of {name} do not match METRICS"
        );
        let mut metric = proto::Metric::default();
        metric.set_label(labels);
        match def(name).kind {
            Kind::Counter => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                metric.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                metric.set_gauge(g);
            }
            Kind::Histogram => panic!("{name} is a histogram: use Families::histogram"),
        }
        self.family(name).mut_metric().push(metric);
    }

    /// Adds a histogram sample: `buckets` are (upper bound, cumulative count) in order,
    /// without `+Inf`, which is `count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: Vec<LabelPair>,
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        debug_assert_eq!(def(name).kind, Kind::Histogram);
        let mut h = proto::Histogram::default();
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        h.set_bucket(
            buckets
                .iter()
                .map(|&(upper, cumulative)| {
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(upper);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect(),
        );
        let mut metric = proto::Metric::default();
        metric.set_label(labels);
        metric.set_histogram(h);
        self.family(name).mut_metric().push(metric);
    }

    /// Adds families gathered elsewhere (the registry of the exporter's own metrics).
    pub fn extend(&mut self, gathered: Vec<MetricFamily>) {
        for family in gathered {
            let Some(&i) = INDEX.get(family.name()) else {
                // Only metrics of the list are ever registered; see `SelfMetrics::new`.
                continue;
            };
            match &mut self.families[i] {
                Some(existing) => existing.mut_metric().extend(family.get_metric().to_vec()),
                slot @ None => *slot = Some(family),
            }
        }
    }

    /// The families with at least one sample, in [`METRICS`] order.
    pub fn into_families(self) -> Vec<MetricFamily> {
        self.families.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_unique_and_valid() {
        let mut seen = std::collections::HashSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
            // cAdvisor's container_memory_failcnt keeps its historical name.
            if m.kind == Kind::Counter && m.name.starts_with("lucid_") {
                assert!(
                    m.name.ends_with("_total"),
                    "counter {} lacks _total",
                    m.name
                );
            }
            assert!(!m.help.is_empty() && !m.source.is_empty(), "{}", m.name);
        }
    }

    #[test]
    fn families_come_out_in_list_order_with_their_type() {
        let mut f = Families::new();
        f.value("lucid_exporter_containers_tracked", vec![], 3.0);
        f.value(
            "container_memory_usage_bytes",
            label_pairs(CONTAINER_LABELS, &["a", "a", "", "", "", ""]),
            10.0,
        );
        let out = f.into_families();
        assert_eq!(out[0].name(), "container_memory_usage_bytes");
        assert_eq!(out[0].get_field_type(), MetricType::GAUGE);
        assert_eq!(out[1].name(), "lucid_exporter_containers_tracked");
    }
}
