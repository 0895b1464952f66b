//! Each namespace type, created new and joined by path. Needs root.

use lucid_tests::{assert_nothing_left, run_output, unique_id, Bundle, Runtime};

const TYPES: [(&str, &str); 7] = [
    ("pid", "pid"),
    ("mount", "mnt"),
    ("uts", "uts"),
    ("ipc", "ipc"),
    ("network", "net"),
    ("cgroup", "cgroup"),
    ("time", "time"),
];

fn host_ns(pid: &str, name: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{name}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A script printing `name target` for each namespace of the process.
fn print_namespaces() -> String {
    TYPES
        .iter()
        .map(|(_, name)| format!("echo {name} $(readlink /proc/self/ns/{name});"))
        .collect()
}

fn parse_namespaces(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

#[test]
fn every_new_namespace_differs_from_the_host() {
    let rt = Runtime::new();
    let id = unique_id("nsnew");
    let mut bundle = Bundle::new(
        &rt,
        &id,
        &["sh", "-c", &format!("{} echo pid1 $$", print_namespaces())],
    );
    bundle.edit(|c| {
        c["linux"]["namespaces"] = serde_json::json!(TYPES
            .iter()
            .map(|(t, _)| serde_json::json!({ "type": t }))
            .collect::<Vec<_>>());
    });
    let out = run_output(&rt, &bundle, &id);
    let seen = parse_namespaces(&out);
    for (_, name) in TYPES {
        assert_ne!(
            seen[name],
            host_ns("self", name),
            "{name} namespace is the host's: {out}"
        );
    }
    assert_eq!(
        seen["pid1"], "1",
        "the container's shell is not pid 1: {out}"
    );
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn namespaces_left_out_are_the_hosts() {
    let rt = Runtime::new();
    let id = unique_id("nshost");
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", &print_namespaces()]);
    bundle.edit(|c| {
        c["linux"]["namespaces"] = serde_json::json!([{ "type": "mount" }]);
        c["hostname"] = serde_json::Value::Null;
    });
    let out = run_output(&rt, &bundle, &id);
    let seen = parse_namespaces(&out);
    for name in ["net", "ipc", "uts", "pid"] {
        assert_eq!(
            seen[name],
            host_ns("self", name),
            "{name} namespace is not the host's"
        );
    }
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn namespaces_are_joined_by_path() {
    let rt = Runtime::new();
    let first = unique_id("nsowner");
    let mut owner = Bundle::new(&rt, &first, &["sleep", "30"]);
    owner.edit(|c| {
        c["linux"]["namespaces"] = serde_json::json!(TYPES
            .iter()
            .map(|(t, _)| serde_json::json!({ "type": t }))
            .collect::<Vec<_>>());
    });
    rt.ok(&["run", "-d", "--bundle", owner.arg(), &first]);
    let pid = rt.state(&first)["pid"].as_i64().unwrap().to_string();

    let second = unique_id("nsjoiner");
    let mut joiner = Bundle::new(&rt, &second, &["sh", "-c", &print_namespaces()]);
    let joined = ["pid", "uts", "ipc", "network", "cgroup", "time"];
    joiner.edit(|c| {
        let mut namespaces = vec![serde_json::json!({ "type": "mount" })];
        for (typ, name) in TYPES.iter().filter(|(t, _)| joined.contains(t)) {
            namespaces
                .push(serde_json::json!({ "type": typ, "path": format!("/proc/{pid}/ns/{name}") }));
        }
        c["linux"]["namespaces"] = serde_json::json!(namespaces);
    });
    let out = run_output(&rt, &joiner, &second);
    let seen = parse_namespaces(&out);
    for (typ, name) in TYPES.iter().filter(|(t, _)| joined.contains(t)) {
        assert_eq!(
            seen[*name],
            host_ns(&pid, name),
            "{typ} namespace was not joined: {out}"
        );
    }
    assert_ne!(seen["mnt"], host_ns(&pid, "mnt"));
    rt.ok(&["delete", "--force", &first]);
    assert_nothing_left(&rt, &first, owner.path());
    assert_nothing_left(&rt, &second, joiner.path());
}

fn user_namespace(c: &mut serde_json::Value) {
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "type": "user" }));
    c["linux"]["uidMappings"] =
        serde_json::json!([{ "containerID": 0, "hostID": 200000, "size": 65536 }]);
    c["linux"]["gidMappings"] =
        serde_json::json!([{ "containerID": 0, "hostID": 200000, "size": 65536 }]);
}

#[test]
fn user_namespace_maps_ids() {
    let rt = Runtime::new();
    let id = unique_id("userns");
    let mut bundle = Bundle::new(
        &rt,
        &id,
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; id -u; sleep 0.5",
        ],
    );
    bundle.edit(user_namespace);
    rt.ok(&["run", "-d", "--bundle", bundle.arg(), &id]);
    // Seen from the host, the container's root is the mapped id.
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    assert!(uid_line.contains("200000"), "{uid_line}");
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    let out = run_output(&rt, &bundle, &id);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        &words[..7],
        ["0", "200000", "65536", "0", "200000", "65536", "0"],
        "{out}"
    );
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn user_namespace_is_joined_by_path() {
    let rt = Runtime::new();
    let first = unique_id("userowner");
    let mut owner = Bundle::new(&rt, &first, &["sleep", "30"]);
    owner.edit(user_namespace);
    rt.ok(&["run", "-d", "--bundle", owner.arg(), &first]);
    let pid = rt.state(&first)["pid"].as_i64().unwrap();

    let second = unique_id("userjoiner");
    let mut joiner = Bundle::new(
        &rt,
        &second,
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/user; cat /proc/self/uid_map",
        ],
    );
    joiner.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({ "type": "user", "path": format!("/proc/{pid}/ns/user") }));
    });
    let out = run_output(&rt, &joiner, &second);
    assert!(out.starts_with(&host_ns(&pid.to_string(), "user")), "{out}");
    assert!(out.contains("200000"), "{out}");
    rt.ok(&["delete", "--force", &first]);
    assert_nothing_left(&rt, &first, owner.path());
    assert_nothing_left(&rt, &second, joiner.path());
}

#[test]
fn time_namespace_applies_offsets() {
    let rt = Runtime::new();
    let id = unique_id("timens");
    let mut bundle = Bundle::new(&rt, &id, &["cat", "/proc/uptime"]);
    bundle.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({ "type": "time" }));
        c["linux"]["timeOffsets"] =
            serde_json::json!({ "boottime": { "secs": 1000000, "nanosecs": 0 } });
    });
    let out = run_output(&rt, &bundle, &id);
    let uptime: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
    let host: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        uptime >= 1_000_000.0 && uptime - host > 999_000.0,
        "uptime {uptime}, host {host}"
    );
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn cgroup_namespace_roots_at_the_container_cgroup() {
    let rt = Runtime::new();
    let id = unique_id("cgns");
    let mut bundle = Bundle::new(&rt, &id, &["cat", "/proc/self/cgroup"]);
    bundle.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({ "type": "cgroup" }));
    });
    let out = run_output(&rt, &bundle, &id);
    for line in out.lines() {
        assert!(
            line.ends_with(":/"),
            "cgroup not at the namespace root: {line}"
        );
    }
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn network_namespace_has_only_loopback() {
    let rt = Runtime::new();
    let id = unique_id("netns");
    let bundle = Bundle::new(&rt, &id, &["cat", "/proc/net/dev"]);
    let out = run_output(&rt, &bundle, &id);
    let interfaces: Vec<&str> = out
        .lines()
        .skip(2)
        .map(|l| l.trim().split(':').next().unwrap())
        .collect();
    assert_eq!(interfaces, ["lo"], "{out}");
    assert_nothing_left(&rt, &id, bundle.path());
}
