//! Resources written to this machine's cgroup v1 controllers, and the cgroup
//! commands (pause, resume, update, ps, events); each limit enforced on a real
//! container is in limits.rs, which runs on v1 and v2 hosts.
//! Needs root and the v1 controllers (cpu, cpuacct, cpuset, memory, pids,
//! freezer, blkio).

use std::path::PathBuf;

use lucid_tests::{
    assert_nothing_left, cgroup_path, spawn_lucid, unique_id, wait_until, Bundle, Runtime,
};
use serde_json::{json, Value};

/// The container's directory in a v1 hierarchy (`memory`, `cpu`, …).
fn v1(controller: &str, id: &str) -> PathBuf {
    let dir = PathBuf::from("/sys/fs/cgroup").join(controller);
    assert!(
        dir.join("cgroup.procs").exists(),
        "this test needs the v1 {controller} controller at {}",
        dir.display()
    );
    dir.join(cgroup_path(id).trim_start_matches('/'))
}

fn read(dir: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.join(file).display()))
        .trim()
        .to_owned()
}

fn set_resources(bundle: &mut Bundle, resources: Value) {
    bundle.edit(|c| {
        let r = c["linux"]["resources"].as_object_mut().unwrap();
        for (k, v) in resources.as_object().unwrap() {
            r.insert(k.clone(), v.clone());
        }
    });
}

/// runc 1.1.5's field names in `events --stats` (checked against its output
/// on this machine), by JSON path; `*` is any key of a map.
const RUNC_STATS_FIELDS: &[&str] = &[
    "cpu",
    "cpu.usage",
    "cpu.usage.total",
    "cpu.usage.percpu",
    "cpu.usage.percpu_kernel",
    "cpu.usage.percpu_user",
    "cpu.usage.kernel",
    "cpu.usage.user",
    "cpu.throttling",
    "cpu.throttling.periods",
    "cpu.throttling.throttledPeriods",
    "cpu.throttling.throttledTime",
    "cpuset",
    "cpuset.cpus",
    "cpuset.cpu_exclusive",
    "cpuset.mems",
    "cpuset.mem_hardwall",
    "cpuset.mem_exclusive",
    "cpuset.memory_migrate",
    "cpuset.memory_spread_page",
    "cpuset.memory_spread_slab",
    "cpuset.memory_pressure",
    "cpuset.sched_load_balance",
    "cpuset.sched_relax_domain_level",
    "memory",
    "memory.cache",
    "memory.usage",
    "memory.swap",
    "memory.kernel",
    "memory.kernelTCP",
    "memory.*.limit",
    "memory.*.usage",
    "memory.*.max",
    "memory.*.failcnt",
    "memory.raw",
    "memory.raw.*",
    "pids",
    "pids.current",
    "pids.limit",
    "blkio",
    "blkio.ioServiceBytesRecursive",
    "blkio.ioServicedRecursive",
    "hugetlb",
    "hugetlb.*",
    "hugetlb.*.usage",
    "hugetlb.*.max",
    "hugetlb.*.failcnt",
    "intel_rdt",
    "network_interfaces",
];

fn paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = value {
        for (k, v) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(path.clone());
            if !v.is_array() {
                paths(v, &path, out);
            }
        }
    }
}

fn known(path: &str) -> bool {
    RUNC_STATS_FIELDS.iter().any(|pattern| {
        let p: Vec<&str> = pattern.split('.').collect();
        let q: Vec<&str> = path.split('.').collect();
        p.len() == q.len() && p.iter().zip(&q).all(|(a, b)| *a == "*" || a == b)
    })
}

#[test]
fn pause_resume_update_ps_and_events_work_on_a_running_container() {
    let rt = Runtime::new();
    let id = unique_id("cmds");
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", "sleep 60 & sleep 60; true"]);
    set_resources(
        &mut bundle,
        json!({ "memory": { "limit": 67108864 }, "cpu": { "shares": 256 } }),
    );
    rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    let init = rt.state(&id)["pid"].as_i64().unwrap();

    rt.ok(&["pause", &id]);
    assert_eq!(rt.status(&id), "paused");
    assert_eq!(read(&v1("freezer", &id), "freezer.state"), "FROZEN");
    let again = rt.lucid(&["pause", &id]);
    assert!(
        !again.status.success(),
        "pausing a paused container must fail"
    );
    rt.ok(&["resume", &id]);
    assert_eq!(rt.status(&id), "running");
    assert_eq!(read(&v1("freezer", &id), "freezer.state"), "THAWED");

    rt.ok(&[
        "update",
        "--memory",
        "32m",
        "--pids-limit",
        "20",
        "--cpu-quota",
        "50000",
        &id,
    ]);
    assert_eq!(
        read(&v1("memory", &id), "memory.limit_in_bytes"),
        "33554432"
    );
    assert_eq!(read(&v1("pids", &id), "pids.max"), "20");
    assert_eq!(read(&v1("cpu", &id), "cpu.cfs_quota_us"), "50000");
    // What update did not name stays.
    assert_eq!(read(&v1("cpu", &id), "cpu.shares"), "256");
    let file = bundle.path().join("update.json");
    std::fs::write(
        &file,
        r#"{ "pids": { "limit": 30 }, "cpu": { "shares": 128 } }"#,
    )
    .unwrap();
    rt.ok(&["update", "--resources", file.to_str().unwrap(), &id]);
    assert_eq!(read(&v1("pids", &id), "pids.max"), "30");
    assert_eq!(read(&v1("cpu", &id), "cpu.shares"), "128");
    assert_eq!(
        read(&v1("memory", &id), "memory.limit_in_bytes"),
        "33554432"
    );

    let pids: Vec<i64> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(pids.len(), 3, "sh and two sleeps: {pids:?}");
    assert!(pids.contains(&init));
    let table = rt.ok(&["ps", &id]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().contains("PID"), "{table}");
    assert_eq!(lines.count(), 3, "{table}");
    let custom = rt.ok(&["ps", &id, "-o", "pid,comm"]);
    assert!(
        custom
            .lines()
            .any(|l| l.trim().starts_with(&init.to_string()) && l.contains("sh")),
        "{custom}"
    );

    let event: Value = serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(event["type"], "stats");
    assert_eq!(event["id"], id.as_str());
    let data = &event["data"];
    assert_eq!(data["memory"]["usage"]["limit"], 33554432);
    assert!(data["memory"]["usage"]["usage"].as_u64().unwrap() > 0);
    assert!(data["cpu"]["usage"]["total"].as_u64().unwrap() > 0);
    assert_eq!(data["pids"]["current"], 3);
    assert_eq!(data["pids"]["limit"], 30);
    assert!(data["memory"]["raw"]["total_rss"].is_u64(), "{data}");
    assert!(data["network_interfaces"].is_null());
    let mut found = Vec::new();
    paths(data, "", &mut found);
    let unknown: Vec<&String> = found.iter().filter(|p| !known(p)).collect();
    assert!(unknown.is_empty(), "fields runc does not have: {unknown:?}");
    for required in [
        "cpu.usage.total",
        "memory.usage.limit",
        "memory.kernelTCP",
        "cpuset.cpus",
        "pids.current",
        "blkio",
        "hugetlb",
        "intel_rdt",
    ] {
        assert!(
            found.iter().any(|p| p == required),
            "no {required} in {data}"
        );
    }

    // Streaming events print stats at each interval.
    let (mut events, mut out) = spawn_lucid(&rt, &["events", "--interval", "100ms", &id]);
    wait_until(10, "two stats events", || {
        lucid_tests::read_file(&mut out).lines().count() >= 2
    });
    events.kill().unwrap();
    events.wait().unwrap();
    let first: Value =
        serde_json::from_str(lucid_tests::read_file(&mut out).lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "stats");

    rt.ok(&["pause", &id]);
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

fn create_fails(rt: &Runtime, bundle: &Bundle, id: &str) -> String {
    let out = rt.lucid(&["create", "--bundle", bundle.arg(), id]);
    assert!(!out.status.success(), "create {id} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_value_the_kernel_rejects_is_named_and_leaves_nothing() {
    let rt = Runtime::new();
    let id = unique_id("badquota");
    let mut bundle = Bundle::new(&rt, &id, &["true"]);
    // The kernel's minimum CFS quota is 1 ms.
    set_resources(
        &mut bundle,
        json!({ "cpu": { "quota": 500, "period": 100000 } }),
    );
    let err = create_fails(&rt, &bundle, &id);
    assert!(err.contains("linux.resources.cpu.quota"), "{err}");
    assert!(err.contains("cpu.cfs_quota_us"), "{err}");
    assert!(err.contains("rejected"), "{err}");
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn a_cgroups_path_that_escapes_the_root_is_refused() {
    let rt = Runtime::new();
    let id = unique_id("escape");
    let mut bundle = Bundle::new(&rt, &id, &["true"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = json!("/lucid-test/../../escaped"));
    let err = create_fails(&rt, &bundle, &id);
    assert!(err.contains("linux.cgroupsPath"), "{err}");
    assert!(err.contains("leaves the cgroup root"), "{err}");
    assert!(!std::path::Path::new("/sys/fs/cgroup/memory/escaped").exists());
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn update_of_a_stopped_container_is_refused() {
    let rt = Runtime::new();
    let id = unique_id("updstop");
    let bundle = Bundle::new(&rt, &id, &["true"]);
    rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    rt.wait_status(&id, "stopped");
    let out = rt.lucid(&["update", "--memory", "10m", &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stopped") && err.contains("not running"),
        "{err}"
    );
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn controllers_and_files_the_host_lacks_are_named() {
    let rt = Runtime::new();
    // net_cls and rdma are not mounted here (hugetlb may be, in the v2
    // hierarchy, once any container enabled it there), unified needs a v2
    // host, and swappiness is a percentage.
    for (name, resources, field, why) in [
        (
            "netcls",
            json!({ "network": { "classID": 1048577 } }),
            "linux.resources.network.classID",
            "no net_cls cgroup controller",
        ),
        (
            "unified",
            json!({ "unified": { "memory.high": "1000000" } }),
            "linux.resources.unified",
            "cgroup v2 hosts only",
        ),
        (
            "rdma",
            json!({ "rdma": { "mlx5_0": { "hcaHandles": 3, "hcaObjects": 100 } } }),
            "linux.resources.rdma",
            "no rdma cgroup controller",
        ),
        (
            "swappiness",
            json!({ "memory": { "swappiness": 101 } }),
            "linux.resources.memory.swappiness",
            "outside 0-100",
        ),
    ] {
        assert!(
            !std::path::Path::new("/sys/fs/cgroup/net_cls").exists(),
            "this test expects a host without the v1 net_cls controller"
        );
        let id = unique_id(name);
        let mut bundle = Bundle::new(&rt, &id, &["true"]);
        set_resources(&mut bundle, resources);
        let err = create_fails(&rt, &bundle, &id);
        assert!(err.contains(field) && err.contains(why), "{name}: {err}");
        assert_nothing_left(&rt, &id, bundle.path());
    }
}

#[test]
fn the_cgroup_procs_placement_can_be_forced_for_benchmarks() {
    let rt = Runtime::new();
    let id = unique_id("procs");
    let bundle = Bundle::new(&rt, &id, &["sleep", "60"]);
    let log = bundle.path().join("lucid.log");
    // The container inherits stdout and stderr: no pipes, or we would wait for it.
    let status = rt
        .command()
        .env("LUCID_CGROUP_PLACEMENT", "procs")
        .args([
            "--debug",
            "--log",
            log.to_str().unwrap(),
            "run",
            "--detach",
            "--bundle",
            bundle.arg(),
            &id,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains("placed through cgroup.procs"), "{text}");
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroups
            .lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&cgroup_path(&id))),
        "{cgroups}"
    );
    rt.ok(&["delete", "--force", &id]);
    let bad = rt
        .command()
        .env("LUCID_CGROUP_PLACEMENT", "fast")
        .args(["create", "--bundle", bundle.arg(), &id])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("LUCID_CGROUP_PLACEMENT"));
    assert_nothing_left(&rt, &id, bundle.path());
}
