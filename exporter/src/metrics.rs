//! The one list of every metric the exporter serves ([`METRICS`]), which
//! `docs/metrics.md` is checked against, and the writer that puts per-container
//! samples straight into the text exposition format at scrape time (building
//! `prometheus` protobuf families for 20,000 series and encoding them cost
//! more than the whole collection; the exporter's own counters and histograms
//! stay `prometheus` crate metrics).

use std::collections::HashMap;
use std::sync::LazyLock;

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

const TRACE: &[&str] = &[
    "container_id",
    "name",
    "container",
    "pod",
    "namespace",
    "image",
    "trace_id",
];

macro_rules! def {
    ($name:literal, $kind:ident, $labels:expr, $help:expr, $source:literal) => {
        MetricDef {
            name: $name,
            kind: Kind::$kind,
            labels: $labels,
            help: $help,
            source: $source,
        }
    };
}

/// Lists the kinds of `lucid_exporter_errors_total` once, for the counter
/// (each present from the start at 0) and for its help text.
macro_rules! error_kinds {
    ($first:literal $(, $rest:literal)* $(,)?) => {
        /// Every kind of the `lucid_exporter_errors_total` counter.
        pub const ERROR_KINDS: &[&str] = &[$first $(, $rest)*];
        const ERRORS_HELP: &str =
            concat!("Errors met while collecting, by kind (", $first $(, ", ", $rest)*, ").");
    };
}

error_kinds!(
    "state_corrupt",
    "state_read",
    "cgroup_gone",
    "cgroup_read",
    "ebpf_open",
    "ebpf_read",
    "bpf_stats",
    "ledger",
    "spool_read",
    "spool_write",
    "otlp_export",
    "http",
);

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
    def!("lucid_container_startup_seconds", Gauge, CONTAINER_LABELS,
        "Time this container took from the start of `create` until its init process was ready to exec.",
        "state.json created and the end of the last phase"),
    def!("lucid_container_info", Gauge, TRACE,
        "Always 1: the container's trace id (empty when the runtime recorded no trace), to join with its other series.",
        "state.json trace.trace_id"),
    // The exporter's own health.
    def!("lucid_exporter_scrape_duration_seconds", Histogram, &[],
        "Time taken to collect and encode one /metrics response.",
        "measured by the exporter"),
    def!("lucid_exporter_containers_tracked", Gauge, &[],
        "Containers found in the state root at the last discovery.",
        "the state root"),
    def!("lucid_exporter_errors_total", Counter, &["kind"], ERRORS_HELP,
        "the exporter"),
    def!("lucid_ebpf_up", Gauge, &[],
        "1 when the pinned eBPF programs are open, 0 when eBPF metrics are unavailable.",
        "lucid-ebpf Programs::open_or_load"),
    def!("lucid_ebpf_feature_enabled", Gauge, &["feature"],
        "1 when the eBPF feature (devices, network, syscalls, syscall_latency, exec, exit, oom, nested) works on this host, 0 when the kernel refused its programs or a setting switched it off.",
        "lucid-ebpf Programs::features (the FEATURES map and /etc/lucid/lucid.conf)"),
    def!("lucid_ebpf_feature_info", Gauge, &["feature", "state", "program"],
        "Always 1: each eBPF feature's state (on, switched_off, unsupported) and the program the kernel took; the exporter's log says why a feature is off.",
        "lucid-ebpf Programs::features"),
    def!("lucid_ebpf_syscall_hook_info", Gauge, &["hook"],
        "Always 1, when the kernel took a syscall hook: fexit (only syscalls pay) or tracepoint (every task of the host takes the slow syscall path while a container is counted).",
        "lucid-ebpf Programs::syscall_hook"),
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
    def!("lucid_spool_unshipped_batches", Gauge, &[],
        "Batches in the runtime's span spool waiting to be shipped.",
        "*.json files under <root>/@spool/<container>/<trace>/"),
    def!("lucid_spool_unshipped_bytes", Gauge, &[],
        "Bytes of the batches in the runtime's span spool waiting to be shipped.",
        "*.json files under <root>/@spool/<container>/<trace>/"),
    def!("lucid_spool_oldest_unshipped_age_seconds", Gauge, &[],
        "Age of the oldest batch in the runtime's span spool waiting to be shipped, 0 when none waits.",
        "the write time in the batch's file name"),
    // Span forwarding (with an OTLP endpoint).
    def!("lucid_forward_spans_total", Counter, &[],
        "Spans shipped from the runtime's span spool that the OTLP endpoint accepted.",
        "the exporter's OTLP export requests"),
    def!("lucid_forward_requests_total", Counter, &[],
        "OTLP export requests the endpoint accepted, each made of one or more spooled batches.",
        "the exporter's OTLP export requests"),
    def!("lucid_forward_failures_total", Counter, &["reason"],
        "OTLP export requests that failed, by reason (unreachable, tls, timeout, throttled, unavailable, refused, rejected, too_large, not_otlp); each failed retry counts.",
        "the exporter's OTLP export requests"),
    def!("lucid_forward_rejected_spans_total", Counter, &[],
        "Spans the OTLP endpoint refused: a partial success, or a batch refused for its content, which is not sent again.",
        "OTLP partial success; HTTP 400 or 413, gRPC INVALID_ARGUMENT"),
    def!("lucid_spool_evicted_batches_total", Counter, &[],
        "Spooled batches the runtime evicted (the spool reached its bound) before they were shipped.",
        "batches that left the spool without being renamed *.json.sent"),
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

/// Renders label pairs as the text format writes them between braces: `a="x",b="y"`.
pub fn render_labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for ch in value.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// Labels rendered once, plus one more pair: `base,name="value"`.
pub fn with_label(base: &str, name: &str, value: &str) -> String {
    let extra = render_labels(&[(name, value)]);
    if base.is_empty() {
        extra
    } else {
        format!("{base},{extra}")
    }
}

fn push_value(out: &mut String, v: f64) {
    use std::fmt::Write as _;
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Writing to a String cannot fail.
        let _ = write!(out, "{v}");
    }
}

/// Samples gathered during one scrape, written straight in the text exposition
/// format, one buffer per metric of [`METRICS`] so each family stays together.
pub struct Exposition {
    bodies: Vec<String>,
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

impl Exposition {
    /// No samples yet.
    pub fn new() -> Self {
        Exposition {
            bodies: vec![String::new(); METRICS.len()],
        }
    }

    fn body(&mut self, name: &str) -> &mut String {
        let i = INDEX
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("metric {name} is not in METRICS"));
        &mut self.bodies[i]
    }

    fn line(out: &mut String, name: &str, suffix: &str, labels: &str, v: f64) {
        out.push_str(name);
        out.push_str(suffix);
        if !labels.is_empty() {
            out.push('{');
            out.push_str(labels);
            out.push('}');
        }
        out.push(' ');
        push_value(out, v);
        out.push('\n');
    }

    /// Adds a counter or gauge sample; `labels` as [`render_labels`] makes them.
    pub fn value(&mut self, name: &str, labels: &str, value: f64) {
        debug_assert_ne!(def(name).kind, Kind::Histogram, "{name} is a histogram");
        Self::line(self.body(name), name, "", labels, value);
    }

    /// Adds a histogram: `buckets` are (upper bound, cumulative count) in order,
    /// without `+Inf`, which is `count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &str,
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        debug_assert_eq!(def(name).kind, Kind::Histogram, "{name} is not a histogram");
        let out = self.body(name);
        let mut le = String::new();
        for &(upper, cumulative) in buckets
            .iter()
            .chain(std::iter::once(&(f64::INFINITY, count)))
        {
            le.clear();
            push_value(&mut le, upper);
            Self::line(
                out,
                name,
                "_bucket",
                &with_label(labels, "le", &le),
                cumulative as f64,
            );
        }
        Self::line(out, name, "_sum", labels, sum);
        Self::line(out, name, "_count", labels, count as f64);
    }

    /// Appends another exposition's samples (gathered on another thread).
    pub fn merge(&mut self, other: Exposition) {
        for (mine, theirs) in self.bodies.iter_mut().zip(other.bodies) {
            mine.push_str(&theirs);
        }
    }

    /// The text: each family with samples, `# HELP` and `# TYPE` first, in [`METRICS`] order.
    pub fn finish(self) -> String {
        let mut out =
            String::with_capacity(self.bodies.iter().map(String::len).sum::<usize>() + 8192);
        for (def, body) in METRICS.iter().zip(self.bodies) {
            if body.is_empty() {
                continue;
            }
            out.push_str("# HELP ");
            out.push_str(def.name);
            out.push(' ');
            out.push_str(&def.help.replace('\\', "\\\\").replace('\n', "\\n"));
            out.push_str("\n# TYPE ");
            out.push_str(def.name);
            out.push(' ');
            out.push_str(def.kind.as_str());
            out.push('\n');
            out.push_str(&body);
        }
        out
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
    fn families_come_out_grouped_in_list_order_with_help_and_type() {
        let mut a = Exposition::new();
        a.value("lucid_ebpf_up", "", 1.0);
        a.value(
            "container_memory_usage_bytes",
            &render_labels(&[("container_id", "a")]),
            10.0,
        );
        let mut b = Exposition::new();
        b.value(
            "container_memory_usage_bytes",
            &render_labels(&[("container_id", "b\"x")]),
            0.5,
        );
        a.merge(b);
        let text = a.finish();
        let expected = "# HELP container_memory_usage_bytes Current memory usage in bytes, including all memory regardless of when it was accessed.\n\
            # TYPE container_memory_usage_bytes gauge\n\
            container_memory_usage_bytes{container_id=\"a\"} 10\n\
            container_memory_usage_bytes{container_id=\"b\\\"x\"} 0.5\n";
        assert!(text.starts_with(expected), "{text}");
        assert!(
            text.ends_with("# TYPE lucid_ebpf_up gauge\nlucid_ebpf_up 1\n"),
            "{text}"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_inf_sum_and_count() {
        let mut e = Exposition::new();
        e.histogram(
            "lucid_container_syscall_duration_seconds",
            "syscall=\"read\"",
            &[(0.5, 1), (1.0, 3)],
            4,
            2.5,
        );
        let text = e.finish();
        for line in [
            "lucid_container_syscall_duration_seconds_bucket{syscall=\"read\",le=\"0.5\"} 1",
            "lucid_container_syscall_duration_seconds_bucket{syscall=\"read\",le=\"1\"} 3",
            "lucid_container_syscall_duration_seconds_bucket{syscall=\"read\",le=\"+Inf\"} 4",
            "lucid_container_syscall_duration_seconds_sum{syscall=\"read\"} 2.5",
            "lucid_container_syscall_duration_seconds_count{syscall=\"read\"} 4",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }
}
