//! lucid's eBPF programs on real containers: the syscall table, network
//! bytes, exec and exit events, and nothing left after delete (the device
//! filter is tested in cgroups_v2.rs, on a pure v2 view). Needs root, BPF, BTF
//! and the cgroup v2 hierarchy. Each `Runtime` pins under a pin root of its
//! own and removes it when dropped.

use std::path::Path;
use std::time::Duration;

use lucid_ebpf::{Event, Programs};
use lucid_tests::{
    assert_nothing_left, cgroup_id, host_has_v1_devices, run_output, unique_id, Bundle, Runtime,
};
use serde_json::{json, Value};

const HELPER: &str = env!("CARGO_BIN_EXE_syscall-loop");

/// A bundle running the syscall-loop helper (a host binary: the host's
/// libraries are bound read-only into the busybox rootfs).
fn helper_bundle(rt: &Runtime, id: &str, args: &[&str]) -> Bundle {
    let mut argv = vec!["/syscall-loop"];
    argv.extend_from_slice(args);
    let mut bundle = Bundle::new(rt, id, &argv);
    let rootfs = bundle.rootfs();
    for dir in ["lib", "lib64"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    std::fs::write(rootfs.join("syscall-loop"), "").unwrap();
    bundle.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        for (source, destination) in [
            ("/usr/lib", "/lib"),
            ("/usr/lib64", "/lib64"),
            (HELPER, "/syscall-loop"),
        ] {
            mounts.push(json!({
                "destination": destination, "type": "bind", "source": source,
                "options": ["rbind", "ro"]
            }));
        }
    });
    bundle
}

fn wait_stopped(rt: &Runtime, id: &str) {
    rt.wait_status(id, "stopped");
}

fn syscalls_json(rt: &Runtime, id: &str) -> Vec<Value> {
    serde_json::from_str(&rt.ok(&["syscalls", "--format", "json", id])).unwrap()
}

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {rows:?}"))
}

#[test]
fn syscalls_counts_exactly_the_containers_getppid_and_failing_opens() {
    const N: usize = 1000;
    let rt = Runtime::new();
    let id = unique_id("sys");
    let bundle = helper_bundle(&rt, &id, &[&N.to_string()]);
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    // The same calls outside the container, at the same time, must not count.
    let outside = std::thread::spawn(|| {
        for _ in 0..20 * N {
            // SAFETY: getppid has no arguments and no memory effects.
            unsafe { libc::syscall(libc::SYS_getppid) };
            // SAFETY: a NUL-terminated path; the call fails with ENOENT.
            unsafe {
                libc::syscall(
                    libc::SYS_open,
                    c"/lucid-no-such-file".as_ptr(),
                    libc::O_RDONLY,
                )
            };
        }
    });
    rt.ok(&["start", &id]);
    wait_stopped(&rt, &id);
    outside.join().unwrap();
    let rows = syscalls_json(&rt, &id);
    let getppid = row(&rows, "getppid");
    assert_eq!(
        (getppid["calls"].as_u64(), getppid["errors"].as_u64()),
        (Some(N as u64), Some(0))
    );
    let open = row(&rows, "open");
    assert_eq!(
        (open["calls"].as_u64(), open["errors"].as_u64()),
        (Some(N as u64), Some(N as u64))
    );
    assert!(
        getppid.get("latency_buckets").is_none(),
        "latency is off by default"
    );
    let table = rt.ok(&["syscalls", &id]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1000", "1000", "open"]),
        "{table}"
    );
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn syscall_counting_switched_off_host_wide_attaches_no_hook_and_says_why() {
    let settings = tempfile::tempdir().unwrap();
    let conf = settings.path().join("lucid.conf");
    std::fs::write(&conf, "ebpf.syscalls = off\n").unwrap();
    let mut rt = Runtime::new();
    rt.set_env("LUCID_CONFIG", conf.to_str().unwrap());
    let id = unique_id("nosys");
    let bundle = helper_bundle(&rt, &id, &["100"]);
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    let pins = Programs::open(rt.pin_root()).expect("the create loaded the programs");
    assert!(
        !pins.pin_dir().join("links/syscall_exit").exists(),
        "a syscall hook is attached although counting is off"
    );
    let features = rt.ok(&["features"]);
    assert!(
        features.contains("\"lucid.ebpf.syscalls\": \"off: ebpf.syscalls = off in"),
        "{features}"
    );
    rt.ok(&["start", &id]);
    wait_stopped(&rt, &id);
    let out = rt.lucid(&["syscalls", &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("syscalls feature is off") && stderr.contains(conf.to_str().unwrap()),
        "{stderr}"
    );
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn the_latency_annotation_records_a_histogram_per_syscall() {
    const N: usize = 200;
    let rt = Runtime::new();
    let id = unique_id("lat");
    let mut bundle = helper_bundle(&rt, &id, &[&N.to_string()]);
    bundle.edit(|c| c["annotations"] = json!({ "lucid.ebpf/syscall-latency": "true" }));
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    rt.ok(&["start", &id]);
    wait_stopped(&rt, &id);
    let rows = syscalls_json(&rt, &id);
    let getppid = row(&rows, "getppid");
    let samples: u64 = getppid["latency_buckets"]
        .as_array()
        .expect("a histogram")
        .iter()
        .map(|b| b.as_u64().unwrap())
        .sum();
    assert_eq!(samples, N as u64);
    assert!(rt.ok(&["syscalls", &id]).contains("p99(ns)"));
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn loopback_bytes_are_counted_both_ways_with_their_headers() {
    const BYTES: u64 = 1_000_000;
    let rt = Runtime::new();
    let id = unique_id("net");
    let mut bundle = helper_bundle(&rt, &id, &["tcp", &BYTES.to_string()]);
    // The host's network namespace: its loopback is up. Only sockets of the
    // container's cgroup count, so other traffic on lo does not.
    bundle.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|ns| ns["type"] != "network");
    });
    // --keep: the container stays registered after it exits, to be read.
    let out = rt.lucid(&["run", "--keep", "--bundle", bundle.arg(), &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let (got, sent) = printed
        .trim()
        .split_once(' ')
        .and_then(|(g, s)| Some((g.parse::<u64>().ok()?, s.parse::<u64>().ok()?)))
        .unwrap_or_else(|| panic!("the helper printed {printed:?}"));
    assert_eq!(got, BYTES, "the server got every byte");
    // What went on the wire: the payload, and any segment the sender
    // resent (a stall past the retransmission timeout on a loaded machine).
    assert!((BYTES..BYTES + BYTES / 2).contains(&sent), "sent {sent}");
    let cgroup = cgroup_id(&rt, &id);
    let stats = Programs::open(rt.pin_root())
        .unwrap()
        .container_stats(cgroup)
        .unwrap();
    // Client and server are both in the container: the payload (with what
    // was resent) leaves it once and enters it once. Each packet carries 20 bytes of IPv4 and 32 of
    // TCP header with timestamps; the SYN and SYN-ACK 8 more of options.
    // (The counts of the two directions differ by a few bare ACKs: those the
    // kernel sends for a request or time-wait socket, not a full socket,
    // skip the egress hook.)
    for (direction, bytes, packets) in [
        ("egress", stats.tx_bytes, stats.tx_packets),
        ("ingress", stats.rx_bytes, stats.rx_packets),
    ] {
        assert!(packets >= 3, "{direction}: {stats:?}");
        let overhead = bytes - sent;
        assert!(
            (52 * packets..=60 * packets).contains(&overhead),
            "{direction}: {sent} payload bytes in {packets} packets counted as {bytes}: {stats:?}"
        );
    }
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn exec_and_exit_events_of_sh_carry_the_path_and_exit_code() {
    let rt = Runtime::new();
    let id = unique_id("events");
    let bundle = Bundle::new(&rt, &id, &["sh", "-c", "true; /bin/true; exit 7"]);
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    let cgroup = cgroup_id(&rt, &id);
    let programs = Programs::open(rt.pin_root()).unwrap();
    let mut reader = programs.events().unwrap();
    reader.drain();
    rt.ok(&["start", &id]);
    wait_stopped(&rt, &id);
    let mut events: Vec<Event> = Vec::new();
    let deadline = lucid_tests::deadline(5);
    while !events.iter().any(|e| {
        matches!(
            e,
            Event::Exit {
                exit_code: Some(7),
                ..
            }
        )
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "no exit 7 among {events:?}"
        );
        events.extend(reader.wait(Duration::from_millis(100)).unwrap());
    }
    let ours: Vec<&Event> = events.iter().filter(|e| e.cgroup_id() == cgroup).collect();
    let execs: Vec<(&str, &str)> = ours
        .iter()
        .filter_map(|e| match e {
            Event::Exec { comm, filename, .. } => Some((comm.as_str(), filename.as_str())),
            _ => None,
        })
        .collect();
    // lucid's init execs sh; `true` is a builtin, /bin/true is not.
    assert_eq!(
        execs,
        [("sh", "/bin/sh"), ("true", "/bin/true")],
        "{ours:?}"
    );
    let exits: Vec<Option<u8>> = ours
        .iter()
        .filter_map(|e| match e {
            Event::Exit { exit_code, .. } => Some(*exit_code),
            _ => None,
        })
        .collect();
    assert_eq!(exits, [Some(0), Some(7)], "{ours:?}");
    let stats = programs.container_stats(cgroup).unwrap();
    assert_eq!((stats.execs, stats.exits), (2, 2));
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn a_flood_of_exec_events_is_counted_as_dropped_not_lost() {
    let rt = Runtime::new();
    let id = unique_id("flood");
    let bundle = Bundle::new(
        &rt,
        &id,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 3000 ]; do /bin/true; i=$((i+1)); done",
        ],
    );
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    let cgroup = cgroup_id(&rt, &id);
    let programs = Programs::open(rt.pin_root()).unwrap();
    let mut reader = programs.events().unwrap();
    reader.drain();
    let before = programs.health().unwrap().events_dropped;
    rt.ok(&["start", &id]);
    wait_stopped(&rt, &id);
    // 6002 events (sh and 3000 children, exec and exit) into a 256 KiB ring
    // that nobody read meanwhile.
    let received = reader
        .drain()
        .iter()
        .filter(|e| e.cgroup_id() == cgroup)
        .count() as u64;
    let dropped = programs.health().unwrap().events_dropped - before;
    let stats = programs.container_stats(cgroup).unwrap();
    assert_eq!((stats.execs, stats.exits), (3001, 3001));
    assert!(dropped > 0, "the ring cannot hold 6002 events");
    assert_eq!(
        received + dropped,
        stats.execs + stats.exits,
        "every event arrives or is counted as dropped"
    );
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn delete_leaves_no_pin_link_or_map_entry() {
    let rt = Runtime::new();
    let id = unique_id("clean");
    let mut bundle = Bundle::new(&rt, &id, &["sleep", "60"]);
    bundle.edit(|c| c["annotations"] = json!({ "lucid.ebpf/syscall-latency": "true" }));
    rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    let cgroup = cgroup_id(&rt, &id);
    let programs = Programs::open(rt.pin_root()).unwrap();
    let pins = programs
        .pin_dir()
        .join("containers")
        .join(cgroup.to_string());
    assert!(pins.join("net_ingress").exists() && pins.join("net_egress").exists());
    assert!(
        programs.pin_dir().join("links/syscall_enter").exists(),
        "latency hook attached"
    );
    assert!(programs
        .registered()
        .unwrap()
        .iter()
        .any(|r| r.cgroup_id == cgroup));
    rt.ok(&["delete", "--force", &id]);
    assert!(!pins.exists(), "{} outlived delete", pins.display());
    assert!(
        !programs.pin_dir().join("links/syscall_enter").exists(),
        "latency hook detached"
    );
    assert!(programs
        .registered()
        .unwrap()
        .iter()
        .all(|r| r.cgroup_id != cgroup));
    assert!(matches!(
        programs.syscalls(cgroup),
        Err(lucid_ebpf::Error::NotRegistered(_))
    ));
    assert!(matches!(
        rt.lucid(&["syscalls", &id]).status.code(),
        Some(1)
    ));
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn without_bpf_lucid_warns_once_or_refuses_where_only_ebpf_filters_devices() {
    let mut rt = Runtime::new();
    // Not a BPF file system, and none can be mounted there.
    rt.set_pin_root(Path::new("/sys/kernel/lucid-no-bpf"));
    if !host_has_v1_devices() {
        // A pure v2 host: the default device rules need the eBPF filter, and lucid will not
        // run a container with every device allowed.
        let id = unique_id("nobpf");
        let bundle = Bundle::new(&rt, &id, &["sh", "-c", "echo ran"]);
        let out = rt.lucid(&["create", "--bundle", bundle.arg(), &id]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "created without a device filter");
        assert!(
            stderr.contains("linux.resources.devices") && stderr.contains("cgroup_device"),
            "{stderr}"
        );
        assert_nothing_left(&rt, &id, bundle.path());
        return;
    }
    let mut stderrs = Vec::new();
    for round in 0..2 {
        let id = unique_id(&format!("nobpf{round}"));
        let bundle = Bundle::new(&rt, &id, &["sh", "-c", "echo ran"]);
        let out = rt.lucid(&["create", "--bundle", bundle.arg(), &id]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderrs.push(stderr);
        let out = rt.lucid(&["syscalls", &id]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("not watched"));
        rt.ok(&["delete", &id]);
        assert_eq!(run_output(&rt, &bundle, &id).trim(), "ran");
        assert_nothing_left(&rt, &id, bundle.path());
    }
    assert!(
        stderrs[0].contains("running containers without eBPF")
            && stderrs[0].contains("not permitted"),
        "{stderrs:?}"
    );
    assert!(
        !stderrs[1].contains("without eBPF"),
        "warned twice: {stderrs:?}"
    );
    assert!(
        rt.root().join(".ebpf-unavailable").exists(),
        "the warning leaves its marker"
    );
}
