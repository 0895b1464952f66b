//! `lucid-exporter` against real containers, real eBPF programs and Debian's
//! real Prometheus server, as root.
//!
//! Every test starts its own exporter (and Prometheus) on loopback ports with
//! private state, pins its eBPF programs under its own pin root, and stops and
//! removes all of it by pid and path when it ends, also when it fails.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lucid_tests::prometheus::{http_get, wait_for, Exporter, Prometheus};
use lucid_tests::{Bundle, Runtime, CGROUP_PARENT};
use serde_json::Value;

// ---------------------------------------------------------------- eBPF pins

/// A private pin root under /sys/fs/bpf, removed (all links detached) on drop.
struct PinRoot(PathBuf);

impl PinRoot {
    fn new(name: &str) -> Self {
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/lucid-test-{name}-{}",
            std::process::id()
        ));
        let _ = lucid_ebpf::remove_pin_root(&path);
        PinRoot(path)
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        if let Err(e) = lucid_ebpf::remove_pin_root(&self.0) {
            eprintln!("removing {}: {e}", self.0.display());
        }
    }
}

/// Samples of `name` in exposition `text` whose labels include `filter`.
fn samples(
    text: &str,
    name: &str,
    filter: &[(&str, &str)],
) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let (metric, labels) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let labels: BTreeMap<String, String> = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once("=\""))
            .map(|(k, v)| (k.to_owned(), v.trim_end_matches('"').to_owned()))
            .collect();
        if filter
            .iter()
            .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        {
            out.push((labels, value.parse().expect("a sample value")));
        }
    }
    out
}

fn value(text: &str, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
    let found = samples(text, name, filter);
    assert!(
        found.len() <= 1,
        "{name}{filter:?} matches {} series",
        found.len()
    );
    found.first().map(|(_, v)| *v)
}

// ---------------------------------------------------------------- containers

fn state_json(rt: &Runtime, id: &str) -> Value {
    let text = std::fs::read_to_string(rt.root().join(id).join("state.json"))
        .unwrap_or_else(|e| panic!("reading the state of {id}: {e}"));
    serde_json::from_str(&text).expect("state.json is JSON")
}

/// (phase, duration in seconds) of every phase a container recorded.
fn phases(rt: &Runtime, id: &str) -> Vec<(String, f64)> {
    state_json(rt, id)["phases"]
        .as_array()
        .expect("recorded phases")
        .iter()
        .map(|p| {
            let start = p["start_ns"].as_u64().expect("start_ns");
            let end = p["end_ns"].as_u64().expect("end_ns");
            (
                p["name"].as_str().expect("a phase name").to_owned(),
                (end - start) as f64 / 1e9,
            )
        })
        .collect()
}

const HELPER: &str = env!("CARGO_BIN_EXE_syscall-loop");

/// A container running the syscall-loop helper with `args`, with `annotations`.
fn helper_container(rt: &Runtime, id: &str, args: &[&str], annotations: Value) -> Bundle {
    let mut argv = vec!["/syscall-loop"];
    argv.extend_from_slice(args);
    lucid_tests::helper_bundle(rt, id, HELPER, &argv, annotations)
}

fn create(rt: &Runtime, bundle: &Bundle, id: &str) {
    rt.ok(&["create", "--bundle", bundle.arg(), id]);
}

// ---------------------------------------------------------------- Done when 1 and 2

#[test]
fn prometheus_scrapes_per_container_series_with_labels_and_exact_syscall_counts() {
    const N: u64 = 4321;
    const BYTES: u64 = 100_000;
    let rt = Runtime::new();
    let web = lucid_tests::unique_id("web");
    let plain = lucid_tests::unique_id("plain");
    let net = lucid_tests::unique_id("net");
    let web_bundle = helper_container(
        &rt,
        &web,
        &[&N.to_string()],
        serde_json::json!({
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "web",
            "io.kubernetes.cri.sandbox-name": "web-6f7d",
            "io.kubernetes.cri.sandbox-namespace": "shop",
            "io.kubernetes.cri.image-name": "example/web:1",
        }),
    );
    let plain_bundle = Bundle::new(&rt, &plain, &["sleep", "600"]);
    let mut net_bundle = helper_container(&rt, &net, &["tcp", &BYTES.to_string()], Value::Null);
    // The host's network namespace, whose loopback is up; only the container's sockets count.
    net_bundle.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .retain(|ns| ns["type"] != "network");
    });
    // `lucid create` registers each container's cgroup with the eBPF programs.
    for (bundle, id) in [
        (&web_bundle, &web),
        (&plain_bundle, &plain),
        (&net_bundle, &net),
    ] {
        create(&rt, bundle, id);
        rt.ok(&["start", id]);
    }

    let state = tempfile::tempdir().expect("a state dir");
    let exporter = Exporter::start(rt.root(), rt.pin_root(), state.path(), &[]);
    let mut prom = Prometheus::start(exporter.port);

    // The container made exactly N getppid calls: eBPF counts N, Prometheus stores N.
    let q = format!(r#"lucid_container_syscalls_total{{container_id="{web}",syscall="getppid"}}"#);
    let got = wait_for(60, "the getppid count to reach N", || {
        let r = prom.query(&q);
        r.first().map(|(_, v)| *v).filter(|v| *v >= N as f64)
    });
    assert_eq!(got, N as f64, "getppid calls counted for {web}");

    // CPU, memory, syscall and network series with the container's labels.
    let (labels, cpu) = prom.one(&format!(
        r#"container_cpu_usage_seconds_total{{container_id="{web}"}}"#
    ));
    for (k, v) in [
        ("name", "web"),
        ("container", "web"),
        ("pod", "web-6f7d"),
        ("namespace", "shop"),
        ("image", "example/web:1"),
        ("cpu", "total"),
        ("job", "lucid"),
    ] {
        assert_eq!(
            labels.get(k).map(String::as_str),
            Some(v),
            "label {k} of {labels:?}"
        );
    }
    assert!(cpu > 0.0, "the container used no CPU: {cpu}");
    let (_, ws) = prom.one(&format!(
        r#"container_memory_working_set_bytes{{container_id="{web}"}}"#
    ));
    assert!(ws > 0.0, "working set {ws}");
    let (_, usage) = prom.one(&format!(
        r#"container_memory_usage_bytes{{container_id="{web}"}}"#
    ));
    assert!(usage >= ws, "usage {usage} below working set {ws}");
    for metric in [
        "container_network_receive_bytes_total",
        "container_network_receive_packets_total",
        "container_network_transmit_bytes_total",
        "container_network_transmit_packets_total",
        "lucid_container_execs_total",
        "lucid_container_oom_kills_total",
    ] {
        prom.one(&format!(
            r#"{metric}{{container_id="{web}",pod="web-6f7d"}}"#
        ));
    }
    // The net container sent BYTES over loopback to itself: both directions count them,
    // with 52 bytes of IPv4 and TCP headers per packet (60 for the SYNs), and any
    // segment resent on a loaded machine, as tests/tests/ebpf.rs allows (up to half the
    // payload). Measured here, three runs: 100,588 bytes in 11 packets each way.
    for metric in [
        "container_network_transmit_bytes_total",
        "container_network_receive_bytes_total",
    ] {
        let q = format!(r#"{metric}{{container_id="{net}"}}"#);
        let bytes = wait_for(60, &q, || {
            prom.query(&q)
                .first()
                .map(|(_, v)| *v)
                .filter(|v| *v >= BYTES as f64)
        });
        // Read after the bytes: never fewer packets than those counted in them.
        let packets_metric = metric.replace("bytes", "packets");
        let (_, packets) = prom.one(&format!(r#"{packets_metric}{{container_id="{net}"}}"#));
        assert!(
            bytes <= (BYTES + BYTES / 2) as f64 + 60.0 * packets,
            "{metric} of {net}: {bytes} in {packets} packets"
        );
    }
    let (_, procs) = prom.one(&format!(r#"container_processes{{container_id="{plain}"}}"#));
    assert_eq!(procs, 1.0, "processes of {plain}");
    // Without annotations: the name is the ID and there are no Kubernetes labels.
    let (labels, _) = prom.one(&format!(
        r#"container_memory_usage_bytes{{container_id="{plain}"}}"#
    ));
    assert_eq!(labels.get("name"), Some(&plain));
    assert_eq!(labels.get("pod"), None, "{labels:?}");
    let syscall_series = prom.query(&format!(
        r#"lucid_container_syscalls_total{{container_id="{plain}"}}"#
    ));
    assert!(
        !syscall_series.is_empty() && syscall_series.len() <= 33,
        "{plain} has {} syscall series (top 32 + other)",
        syscall_series.len()
    );

    // Phase histograms: each created container counted once, sums match the recorded phases.
    let mut expected: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for id in [&web, &plain, &net] {
        for (name, d) in phases(&rt, id) {
            let e = expected.entry(name).or_default();
            e.0 += 1;
            e.1 += d;
        }
    }
    assert!(!expected.is_empty(), "the containers recorded no phases");
    for (phase, (count, sum)) in &expected {
        let (_, c) = prom.one(&format!(
            r#"lucid_phase_duration_seconds_count{{phase="{phase}"}}"#
        ));
        assert_eq!(c, *count as f64, "count of phase {phase}");
        let (_, s) = prom.one(&format!(
            r#"lucid_phase_duration_seconds_sum{{phase="{phase}"}}"#
        ));
        assert!(
            (s - sum).abs() < 1e-6,
            "sum of phase {phase}: {s}, recorded {sum}"
        );
    }
    let (_, starts) = prom.one("lucid_container_start_duration_seconds_count");
    assert_eq!(starts, 3.0);
    let (_, tracked) = prom.one("lucid_exporter_containers_tracked");
    assert_eq!(tracked, 3.0);
}

#[test]
fn phase_histograms_count_each_container_once_across_exporter_restarts() {
    let rt = Runtime::new();
    let ids: Vec<String> = (0..3).map(|_| lucid_tests::unique_id("once")).collect();
    let bundles: Vec<Bundle> = ids
        .iter()
        .map(|id| Bundle::new(&rt, id, &["sleep", "600"]))
        .collect();
    let state = tempfile::tempdir().expect("a state dir");
    let count = |text: &str| {
        value(
            text,
            "lucid_phase_duration_seconds_count",
            &[("phase", "rootfs.mount")],
        )
    };
    let sum = |text: &str| {
        value(
            text,
            "lucid_phase_duration_seconds_sum",
            &[("phase", "rootfs.mount")],
        )
    };
    let recorded = |id: &str| -> f64 {
        phases(&rt, id)
            .into_iter()
            .filter(|(n, _)| n == "rootfs.mount")
            .map(|(_, d)| d)
            .sum()
    };

    create(&rt, &bundles[0], &ids[0]);
    create(&rt, &bundles[1], &ids[1]);
    {
        let mut first = Exporter::start(rt.root(), rt.pin_root(), state.path(), &[]);
        for _ in 0..3 {
            assert_eq!(count(&first.metrics()), Some(2.0));
        }
        let s = sum(&first.metrics()).expect("a sum");
        assert!((s - recorded(&ids[0]) - recorded(&ids[1])).abs() < 1e-6);
    }
    // A restarted exporter does not count the two again; it counts a container created since.
    let mut second = Exporter::start(rt.root(), rt.pin_root(), state.path(), &[]);
    assert_eq!(
        count(&second.metrics()),
        None,
        "already counted containers were counted again"
    );
    create(&rt, &bundles[2], &ids[2]);
    let text = second.metrics();
    assert_eq!(count(&text), Some(1.0));
    assert!((sum(&text).expect("a sum") - recorded(&ids[2])).abs() < 1e-6);
    drop(second);
    // Deleted containers leave the ledger, so it stays as small as the state root.
    rt.ok(&["delete", "--force", &ids[0]]);
    let mut third = Exporter::start(rt.root(), rt.pin_root(), state.path(), &[]);
    third.metrics();
    let ledger: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(state.path().join("lifecycle-counted.json")).expect("the ledger"),
    )
    .expect("the ledger is JSON");
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    assert!(ledger
        .iter()
        .all(|k| !k.starts_with(&format!("{}@", ids[0]))));
    // A fresh exporter state counts every container present.
    let fresh = tempfile::tempdir().expect("a state dir");
    let mut fourth = Exporter::start(rt.root(), rt.pin_root(), fresh.path(), &[]);
    assert_eq!(count(&fourth.metrics()), Some(2.0));
}

// ---------------------------------------------------------------- bad input

/// State and cgroup directories made for simulated containers, removed on drop
/// (before the `Runtime`, which must not try to delete them: they have no process).
#[derive(Default)]
struct Simulated {
    cgroups: Vec<PathBuf>,
    states: Vec<PathBuf>,
}

impl Drop for Simulated {
    fn drop(&mut self) {
        for dir in &self.states {
            let _ = std::fs::remove_dir_all(dir);
        }
        for dir in self.cgroups.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Writes state directories for `n` simulated containers cloned from real
/// container `template`'s state, each with cgroup directories of its own
/// (every hierarchy the template has) and no process.
fn simulated(
    rt: &Runtime,
    template: &str,
    prefix: &str,
    n: usize,
    sim: &mut Simulated,
) -> Vec<String> {
    let base = state_json(rt, template);
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{}-{i}", std::process::id());
        let mut st = base.clone();
        st["id"] = Value::String(id.clone());
        // No such process (above any pid_max), should anything try to signal it.
        st["pid"] = Value::from(i32::MAX);
        st["annotations"] = serde_json::json!({ "lucid.name": format!("sim-{i}") });
        let rel = format!("{CGROUP_PARENT}/{id}");
        let mut dirs = Vec::new();
        for dir in base["cgroup"]["dirs"].as_array().expect("cgroup dirs") {
            let old = PathBuf::from(dir.as_str().expect("a path"));
            let mount = old
                .ancestors()
                .find(|a| a.parent() == Some(Path::new("/sys/fs/cgroup")))
                .expect("a hierarchy under /sys/fs/cgroup")
                .to_path_buf();
            let new = mount.join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(&new)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", new.display()));
            sim.cgroups.push(new.clone());
            dirs.push(Value::String(new.display().to_string()));
        }
        let unified = PathBuf::from("/sys/fs/cgroup/unified").join(rel.trim_start_matches('/'));
        st["cgroup"]["path"] = Value::String(rel);
        st["cgroup"]["dirs"] = Value::Array(dirs);
        st["cgroup"]["unified"] = Value::String(unified.display().to_string());
        st["cgroup"]["unified_id"] = Value::from(std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(&unified).expect("the v2 cgroup"),
        ));
        let dir = rt.root().join(&id);
        std::fs::create_dir_all(&dir).expect("a state dir");
        sim.states.push(dir.clone());
        std::fs::write(
            dir.join("state.json"),
            serde_json::to_vec(&st).expect("JSON"),
        )
        .expect("writing state");
        ids.push(id);
    }
    ids
}

fn errors(text: &str, kind: &str) -> f64 {
    value(text, "lucid_exporter_errors_total", &[("kind", kind)]).expect("the error counter")
}

#[test]
fn a_corrupt_state_file_and_a_vanished_cgroup_are_counted_and_the_rest_is_served() {
    let rt = Runtime::new();
    let real = lucid_tests::unique_id("real");
    let bundle = Bundle::new(&rt, &real, &["sleep", "600"]);
    create(&rt, &bundle, &real);
    let mut sim = Simulated::default();
    let sims = simulated(&rt, &real, "sim", 20, &mut sim);
    // A state file cut short, as a crash of some other writer could leave it.
    let corrupt = rt.root().join("corrupt-1");
    std::fs::create_dir(&corrupt).expect("a state dir");
    sim.states.push(corrupt.clone());
    std::fs::write(
        corrupt.join("state.json"),
        br#"{"ociVersion": "1.0.2", "id": "corr"#,
    )
    .expect("writing");

    let state = tempfile::tempdir().expect("a state dir");
    let mut exporter = Exporter::start(rt.root(), rt.pin_root(), state.path(), &[]);
    let text = exporter.metrics();
    assert_eq!(errors(&text, "state_corrupt"), 1.0);
    assert_eq!(
        value(&text, "lucid_exporter_containers_tracked", &[]),
        Some(21.0)
    );
    assert!(value(
        &text,
        "container_memory_usage_bytes",
        &[("container_id", &real)]
    )
    .is_some());
    // Counted once per version of the file, not once per scrape.
    let text = exporter.metrics();
    assert_eq!(errors(&text, "state_corrupt"), 1.0);

    // The cgroups vanish while the exporter still has the containers: their
    // series go, the error is counted, the others are served.
    let gone: Vec<PathBuf> = sim
        .cgroups
        .iter()
        .filter(|d| d.ends_with(&sims[0]))
        .cloned()
        .collect();
    assert!(!gone.is_empty());
    for dir in &gone {
        std::fs::remove_dir(dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
    }
    let text = exporter.metrics();
    assert!(errors(&text, "cgroup_gone") >= 1.0, "{text}");
    assert!(value(
        &text,
        "container_memory_usage_bytes",
        &[("container_id", &sims[0])]
    )
    .is_none());
    assert!(value(
        &text,
        "container_memory_usage_bytes",
        &[("container_id", &sims[1])]
    )
    .is_some());
    assert!(value(
        &text,
        "container_memory_usage_bytes",
        &[("container_id", &real)]
    )
    .is_some());

    // Cgroups removed while scrapes run: every scrape is served.
    let port = exporter.port;
    let scraper = std::thread::spawn(move || {
        (0..40)
            .map(|_| http_get(port, "/metrics").map(|(s, _)| s).unwrap_or(0))
            .collect::<Vec<u16>>()
    });
    for id in &sims[1..] {
        for dir in sim.cgroups.iter().filter(|d| d.ends_with(id)) {
            let _ = std::fs::remove_dir(dir);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let statuses = scraper.join().expect("the scraping thread");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let text = exporter.metrics();
    assert!(
        errors(&text, "cgroup_gone") >= 20.0,
        "{}",
        errors(&text, "cgroup_gone")
    );
    assert!(value(
        &text,
        "container_memory_usage_bytes",
        &[("container_id", &real)]
    )
    .is_some());
}

#[test]
fn incomplete_or_older_version_pins_do_not_stop_the_exporter() {
    let rt = Runtime::new();
    let id = lucid_tests::unique_id("pins");
    let bundle = Bundle::new(&rt, &id, &["sleep", "600"]);
    create(&rt, &bundle, &id);
    let state = tempfile::tempdir().expect("a state dir");

    // The current version's directory with its pins missing (a load cut short by an older
    // build): eBPF is unavailable, counted, and resources are still served.
    let broken = PinRoot::new("exporter-incomplete");
    std::fs::create_dir_all(
        broken
            .0
            .join(format!("v{}/maps", lucid_ebpf::LAYOUT_VERSION)),
    )
    .expect("making a broken pin dir");
    let mut exporter = Exporter::start(rt.root(), &broken.0, state.path(), &[]);
    let text = exporter.metrics();
    assert_eq!(value(&text, "lucid_ebpf_up", &[]), Some(0.0));
    assert!(errors(&text, "ebpf_open") >= 1.0);
    assert!(value(
        &text,
        "container_memory_usage_bytes",
        &[("container_id", &id)]
    )
    .is_some());
    assert!(
        exporter.log().contains("incomplete pins"),
        "{}",
        exporter.log()
    );
    drop(exporter);

    // An older layout version's directory: the exporter loads the current one and sweeps it.
    let older = PinRoot::new("exporter-older");
    let old_dir = older.0.join("v0");
    for sub in ["maps", "progs", "links", "containers/12345"] {
        std::fs::create_dir_all(old_dir.join(sub)).expect("making old pin dirs");
    }
    let mut exporter = Exporter::start(rt.root(), &older.0, state.path(), &[]);
    let text = exporter.metrics();
    assert_eq!(
        value(&text, "lucid_ebpf_up", &[]),
        Some(1.0),
        "{}",
        exporter.log()
    );
    assert_eq!(errors(&text, "ebpf_open"), 0.0);
    assert!(
        !old_dir.join("maps").exists(),
        "the older version was not swept"
    );
    // Which features work here, and the syscall hook the kernel took.
    for name in lucid_ebpf::feature::NAMES {
        assert_eq!(
            value(&text, "lucid_ebpf_feature_enabled", &[("feature", name)]),
            Some(1.0),
            "{name}"
        );
    }
    let hooks: Vec<f64> = ["fexit", "tracepoint"]
        .iter()
        .filter_map(|hook| value(&text, "lucid_ebpf_syscall_hook_info", &[("hook", hook)]))
        .collect();
    assert_eq!(hooks, [1.0], "one syscall hook");
}

#[test]
fn a_scrape_storm_is_served_with_bounded_memory() {
    let rt = Runtime::new();
    let id = lucid_tests::unique_id("storm");
    let bundle = Bundle::new(&rt, &id, &["sleep", "600"]);
    create(&rt, &bundle, &id);
    let mut sim = Simulated::default();
    simulated(&rt, &id, "storm-sim", 100, &mut sim);
    let state = tempfile::tempdir().expect("a state dir");
    let mut exporter = Exporter::start(rt.root(), rt.pin_root(), state.path(), &[]);
    exporter.metrics();
    let baseline = exporter.process.rss_kib();

    // 3 waves of 200 concurrent clients: scrapers, half-open connections that never send a
    // request, and health checks.
    let port = exporter.port;
    for _ in 0..3 {
        let idle: Vec<TcpStream> = (0..50)
            .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
            .collect();
        let clients: Vec<_> = (0..200)
            .map(|i| {
                std::thread::spawn(move || {
                    let path = if i % 10 == 0 { "/healthz" } else { "/metrics" };
                    http_get(port, path).map(|(s, _)| s).unwrap_or(0)
                })
            })
            .collect();
        let statuses: Vec<u16> = clients
            .into_iter()
            .map(|c| c.join().expect("a client thread"))
            .collect();
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(
            ok,
            statuses.len(),
            "{} of {} requests failed",
            statuses.len() - ok,
            statuses.len()
        );
        drop(idle);
        exporter.process.assert_running();
    }
    // Measured: 2.6 to 3.2 MiB of growth in three runs (debug build, 2 cores); the
    // margin leaves room for an allocator arena per thread on larger hosts.
    let after = exporter.process.rss_kib();
    assert!(
        after < baseline + 8 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB during the storm"
    );
    // Served as before, and the storm left no error behind.
    let text = exporter.metrics();
    assert_eq!(
        value(&text, "lucid_exporter_containers_tracked", &[]),
        Some(101.0)
    );
    assert_eq!(errors(&text, "http"), 0.0);
}

// ---------------------------------------------------------------- a hostile state root

/// The exporter's peak resident memory so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("the exporter (pid {pid}) is gone: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// GET /metrics from another thread: the answer, or `None` when none came
/// within `secs` (the request is left to fail when the exporter stops).
fn metrics_within(port: u16, secs: u64) -> Option<(u16, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(http_get(port, "/metrics"));
    });
    match rx.recv_timeout(Duration::from_secs(
        secs * u64::from(lucid_tests::time_scale()),
    )) {
        Ok(answer) => Some(answer.expect("GET /metrics")),
        Err(_) => None,
    }
}

/// Whether a thread of `pid` waits in the FUSE file system's request queue.
fn waits_on_fuse(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|task| {
            std::fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w.contains("fuse"))
        })
}

/// Whether `pid` exited (a zombie until its parent, this test, reaps it).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
    })
}

/// `lucid-exporter` (with [`Exporter::start_command`]'s `--listen` still to
/// come) in a mount namespace of its own where `hung` is a FUSE file system
/// no one answers: every lookup there waits, as on a dead NFS server, until
/// the exporter, which holds the device open, exits. Its address space is
/// bounded so that an unbounded read fails the test rather than the host.
fn exporter_beside_a_hung_mount(
    root: &Path,
    pin_root: &Path,
    state_dir: &Path,
    hung: &Path,
) -> std::process::Command {
    const SCRIPT: &str = r#"ulimit -v 4194304 || exit 1
exec 3<>/dev/fuse || exit 1
mount -i -t fuse -o fd=3,rootmode=40000,user_id=0,group_id=0 lucid-hung "$LUCID_TEST_HUNG" || exit 1
exec "$@""#;
    let mut command = std::process::Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            SCRIPT,
            "sh",
        ])
        .arg(lucid_tests::prometheus::exporter_bin())
        .arg("--root")
        .arg(root)
        .arg("--bpf-pin-root")
        .arg(pin_root)
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--log-level", "debug"])
        .env("LUCID_TEST_HUNG", hung)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    command
}

/// Writes `state` as `dir`'s state.json under the state root.
fn write_state(dir: &Path, state: &Value) {
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_vec(state).expect("JSON"),
    )
    .expect("writing state");
}

// The attack an adversarial probe made: one bad entry in the state root took
// the exporter down (a state.json linked to /dev/zero read without end, a
// FIFO waited on by every scrape, 100 KB IDs rendered into every series, a
// 200 MB state.json read whole), and a scrape stuck in the kernel kept it from
// stopping. Each entry here is what the probe planted, or the same reached
// through a path a state names (its cgroup, its podman storage).
#[test]
fn a_hostile_state_root_is_counted_and_skipped_and_sigterm_ends_a_stuck_scrape() {
    use std::os::unix::fs::symlink;
    let rt = Runtime::new();
    let good = lucid_tests::unique_id("good");
    let bundle = Bundle::new(&rt, &good, &["sleep", "600"]);
    create(&rt, &bundle, &good);
    let template = state_json(&rt, &good);
    let mut sim = Simulated::default();
    let outside = tempfile::tempdir().expect("a directory outside the root");
    let mut entry = |name: &str| -> PathBuf {
        let dir = rt.root().join(name);
        std::fs::create_dir(&dir).expect("a state dir");
        sim.states.push(dir.clone());
        dir
    };
    let fifo = |path: &Path| {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()))
    };
    let state = |id: &str, edit: &dyn Fn(&mut Value)| {
        let mut st = template.clone();
        st["id"] = Value::String(id.to_owned());
        edit(&mut st);
        st
    };

    // The probe's entries.
    symlink("/dev/zero", entry("zero-link").join("state.json")).expect("a link");
    fifo(&entry("fifo").join("state.json"));
    for i in 0..100 {
        let long = format!("{}{i}", "x".repeat(100_000));
        write_state(&entry(&format!("long-id-{i}")), &state(&long, &|_| {}));
    }
    {
        use std::io::Write;
        let mut f = std::fs::File::create(entry("huge").join("state.json")).expect("a file");
        f.write_all(br#"{"ociVersion":"1.0.2","id":""#)
            .expect("writing");
        let mib = vec![b'h'; 1 << 20];
        for _ in 0..200 {
            f.write_all(&mib).expect("writing 200 MB");
        }
        f.write_all(br#""}"#).expect("writing");
    }
    // The same through a state's cgroup: a directory outside the cgroup file
    // systems whose files are a FIFO and a link to /dev/zero, named directly
    // and through `..` from the v2 hierarchy.
    let fake_cgroup = outside.path().join("cgroup");
    std::fs::create_dir(&fake_cgroup).expect("a directory");
    fifo(&fake_cgroup.join("cpu.stat"));
    for name in [
        "memory.current",
        "memory.stat",
        "pids.current",
        "cgroup.procs",
    ] {
        symlink("/dev/zero", fake_cgroup.join(name)).expect("a link");
    }
    let v2 = lucid_tests::host_v2_root();
    let mut dotdot = v2.clone();
    for _ in v2.components().skip(1) {
        dotdot.push("..");
    }
    let dotdot = dotdot.join(fake_cgroup.strip_prefix("/").expect("absolute"));
    for (id, dir) in [("cg-outside", &fake_cgroup), ("cg-dotdot", &dotdot)] {
        let dir = Value::String(dir.display().to_string());
        write_state(
            &entry(id),
            &state(id, &|s| {
                s["cgroup"]["unified"] = dir.clone();
                s["cgroup"]["dirs"] = serde_json::json!([dir.clone()]);
            }),
        );
    }
    // A label value no name has.
    write_state(
        &entry("long-label"),
        &state("long-label", &|s| {
            s["annotations"] = serde_json::json!({"lucid.name": "n".repeat(100_000)})
        }),
    );
    // podman storage beside the bundle that is a link to /dev/zero, or a FIFO:
    // the container is served, without the name podman would give it.
    for (id, plant) in [
        (
            "podman-zero",
            &(|p: &Path| symlink("/dev/zero", p).expect("a link")) as &dyn Fn(&Path),
        ),
        ("podman-fifo", &fifo),
    ] {
        let storage = outside.path().join(id);
        std::fs::create_dir_all(storage.join("c/userdata")).expect("a bundle dir");
        plant(&storage.join("containers.json"));
        let bundle = Value::String(storage.join("c/userdata").display().to_string());
        write_state(
            &entry(id),
            &state(id, &|s| {
                s["bundle"] = bundle.clone();
                s["annotations"] = serde_json::json!({"io.container.manager": "libpod"});
            }),
        );
    }
    // What would show in a series of an entry served: its ID, or a long value.
    let never_served = [
        "\"zero-link\"".to_owned(),
        "\"fifo\"".to_owned(),
        "\"huge\"".to_owned(),
        "\"cg-outside\"".to_owned(),
        "\"cg-dotdot\"".to_owned(),
        "\"long-label\"".to_owned(),
        "x".repeat(1000),
        "n".repeat(1000),
    ];

    let exporter_state = tempfile::tempdir().expect("a state dir");
    let hung = outside.path().join("hung");
    std::fs::create_dir(&hung).expect("a mount point");
    let mut exporter = Exporter::start_command(
        exporter_beside_a_hung_mount(rt.root(), rt.pin_root(), exporter_state.path(), &hung),
        exporter_state.path(),
    );
    let pid = exporter.process.pid();
    let asked = std::time::Instant::now();
    let (status, text) = metrics_within(exporter.port, 10)
        .unwrap_or_else(|| panic!("no answer to /metrics within 10 s:\n{}", exporter.log()));
    let scrape_time = asked.elapsed();
    assert_eq!(status, 200, "{text}");
    let first_rss = peak_rss_kib(pid);
    for metric in [
        "container_start_time_seconds",
        "container_memory_usage_bytes",
    ] {
        assert!(
            value(&text, metric, &[("container_id", &good)]).is_some(),
            "{metric} of {good} is not served"
        );
    }
    for id in ["podman-zero", "podman-fifo"] {
        assert!(
            value(
                &text,
                "container_start_time_seconds",
                &[("container_id", id), ("name", id)]
            )
            .is_some(),
            "{id} is not served"
        );
    }
    for name in &never_served {
        assert!(!text.contains(name.as_str()), "{:.40} was served", name);
    }
    assert!(
        text.lines().all(|l| l.len() < 4096),
        "a series longer than 4 KiB was served"
    );
    // The link, the FIFO and the 200 MB file are not read; the rest are not what lucid writes.
    assert_eq!(errors(&text, "state_read"), 3.0);
    assert_eq!(errors(&text, "state_corrupt"), 103.0);
    assert_eq!(
        value(&text, "lucid_exporter_containers_tracked", &[]),
        Some(3.0)
    );
    // Counted and logged once, not at every scrape.
    let text = exporter.metrics();
    assert_eq!(errors(&text, "state_read"), 3.0);
    assert_eq!(errors(&text, "state_corrupt"), 103.0);
    let log = exporter.log();
    for name in [
        "zero-link/state.json",
        "fifo/state.json",
        "huge/state.json",
        "long-id-7/state.json",
    ] {
        assert_eq!(log.matches(name).count(), 1, "{name} in the log:\n{log}");
    }
    let rss = peak_rss_kib(pid);
    assert!(rss < 64 * 1024, "the exporter's peak RSS reached {rss} KiB");

    // A container whose podman storage is on the hung file system: the
    // next scrape waits there for good, and SIGTERM still ends the exporter.
    let stuck = outside.path().join("hung/c/userdata");
    write_state(
        &entry("podman-hung"),
        &state("podman-hung", &|s| {
            s["bundle"] = Value::String(stuck.display().to_string());
            s["annotations"] = serde_json::json!({"io.container.manager": "libpod"});
        }),
    );
    let port = exporter.port;
    std::thread::spawn(move || http_get(port, "/metrics"));
    lucid_tests::wait_until(10, "a scrape waiting on the hung file system", || {
        waits_on_fuse(pid)
    });
    let sent = std::time::Instant::now();
    // SAFETY: kill only sends a signal to the exporter this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let deadline = lucid_tests::deadline(5);
    while !exited(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the exporter did not stop within 5 s of SIGTERM during a stuck scrape:\n{}",
            exporter.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let exit_time = sent.elapsed();
    println!(
        "first scrape {scrape_time:?}, peak RSS {first_rss} KiB after it and {rss} KiB after two, \
         exit {exit_time:?} after SIGTERM"
    );
}
