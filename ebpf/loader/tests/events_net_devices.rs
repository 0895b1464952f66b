//! Network counters, process events, the device filter and clean-up, against real cgroups
//! (needs root and BPF; never skipped).
mod support;

use std::{
    io::{Read as _, Write as _},
    time::{Duration, Instant},
};

use lucid_ebpf::{DeviceRule, DeviceType, Event, RegisterOptions};
use support::{command_in_cgroup, run_in_cgroup, TestCgroup, TestPins};

#[test]
fn loopback_bytes_are_counted_both_ways_with_ip_and_tcp_headers() {
    const BYTES: usize = 1_000_000;
    let pins = TestPins::new("net");
    let cgroup = TestCgroup::new("net");
    let mut bpf = pins.load();
    let reg = bpf
        .register(&cgroup.path, &RegisterOptions::default())
        .unwrap();
    // Client and server both in the cgroup: each packet leaves and enters it once.
    let code = run_in_cgroup(&cgroup.path, || {
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            return 1;
        };
        let Ok(addr) = listener.local_addr() else {
            return 2;
        };
        let Ok(mut client) = std::net::TcpStream::connect(addr) else {
            return 3;
        };
        let Ok((mut server, _)) = listener.accept() else {
            return 4;
        };
        let data = vec![7u8; BYTES];
        if client.write_all(&data).is_err() {
            return 5;
        }
        drop(client);
        let mut got = Vec::new();
        if server.read_to_end(&mut got).is_err() || got.len() != BYTES {
            return 6;
        }
        0
    });
    assert_eq!(code, 0);
    let stats = bpf.container_stats(reg.cgroup_id).unwrap();
    // Every packet carries 20 bytes of IPv4 and 20 of TCP header plus options: 12 of
    // timestamps on each packet, 20 on the SYN and SYN-ACK.
    for (bytes, packets) in [
        (stats.tx_bytes, stats.tx_packets),
        (stats.rx_bytes, stats.rx_packets),
    ] {
        assert!(packets >= 3, "{stats:?}");
        let overhead = bytes - BYTES as u64;
        assert!(
            (52 * packets..=60 * packets).contains(&overhead),
            "{BYTES} payload bytes in {packets} packets counted as {bytes}: {stats:?}"
        );
    }
    bpf.unregister(reg.cgroup_id).unwrap();
}

fn wait_for_exit(reader: &mut lucid_ebpf::EventReader, pid: u32) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while Instant::now() < deadline {
        events.extend(reader.wait(Duration::from_millis(100)).unwrap());
        if events
            .iter()
            .any(|e| matches!(e, Event::Exit { pid: p, .. } if *p == pid))
        {
            return events;
        }
    }
    panic!("no exit event for pid {pid}; got {events:?}");
}

#[test]
fn exec_and_exit_events_of_sh_carry_paths_parent_and_exit_code() {
    let pins = TestPins::new("events");
    let cgroup = TestCgroup::new("events");
    let mut bpf = pins.load();
    let reg = bpf
        .register(&cgroup.path, &RegisterOptions::default())
        .unwrap();
    let mut reader = bpf.events().unwrap();
    reader.drain();
    let status = command_in_cgroup(&cgroup.path, "/bin/sh")
        .args(["-c", "true; exit 7"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7));
    // Command forks then execs: the child's pid is not known before; find it by its events.
    let outside = std::process::Command::new("/bin/true").status().unwrap();
    assert!(outside.success());
    let events: Vec<Event> = {
        let mut all = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !all.iter().any(|e| matches!(e, Event::Exit { .. })) {
            all.extend(reader.wait(Duration::from_millis(100)).unwrap());
        }
        all
    };
    let exec = events
        .iter()
        .find_map(|e| match e {
            Event::Exec {
                pid,
                ppid,
                comm,
                filename,
                cgroup_id,
                ..
            } => Some((*pid, *ppid, comm.clone(), filename.clone(), *cgroup_id)),
            _ => None,
        })
        .expect("an exec event");
    assert_eq!(exec.1, std::process::id(), "parent is the test process");
    assert_eq!((exec.2.as_str(), exec.3.as_str()), ("sh", "/bin/sh"));
    assert_eq!(exec.4, reg.cgroup_id);
    let events = if events.iter().any(|e| matches!(e, Event::Exit { .. })) {
        events
    } else {
        wait_for_exit(&mut reader, exec.0)
    };
    let exit = events
        .iter()
        .find(|e| matches!(e, Event::Exit { pid, .. } if *pid == exec.0))
        .expect("the exit event of sh");
    assert!(
        matches!(
            exit,
            Event::Exit {
                exit_code: Some(7),
                signal: None,
                ..
            }
        ),
        "{exit:?}"
    );
    // Nothing from the /bin/true run outside the cgroup.
    assert!(events.iter().all(|e| e.cgroup_id() == reg.cgroup_id));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Exec { .. }))
            .count(),
        1
    );
    let stats = bpf.container_stats(reg.cgroup_id).unwrap();
    assert_eq!((stats.execs, stats.exits), (1, 1));
    bpf.unregister(reg.cgroup_id).unwrap();
}

#[test]
fn a_flood_of_events_counts_every_drop() {
    let pins = TestPins::new("flood");
    let cgroup = TestCgroup::new("flood");
    let mut bpf = pins.load();
    let reg = bpf
        .register(&cgroup.path, &RegisterOptions::default())
        .unwrap();
    let mut reader = bpf.events().unwrap();
    reader.drain();
    let before = bpf.health().unwrap().events_dropped;
    // 3000 execs and exits, about 1.9 MB of events, into a 256 KiB ring nobody reads meanwhile.
    let status = command_in_cgroup(&cgroup.path, "/bin/sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 3000 ]; do /bin/true; i=$((i+1)); done",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let received = reader.drain().len() as u64;
    let dropped = bpf.health().unwrap().events_dropped - before;
    let stats = bpf.container_stats(reg.cgroup_id).unwrap();
    assert!(dropped > 0, "the ring cannot hold 6000 events");
    assert_eq!(
        received + dropped,
        stats.execs + stats.exits,
        "every event either arrives or is counted as dropped"
    );
    bpf.unregister(reg.cgroup_id).unwrap();
}

fn open_dev(path: &std::ffi::CStr) -> i32 {
    // SAFETY: a raw open of a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
    if fd < 0 {
        // SAFETY: reading errno right after the failed call.
        return unsafe { *libc::__errno_location() };
    }
    // SAFETY: closing the descriptor just opened.
    unsafe { libc::close(fd) };
    0
}

#[test]
fn a_rule_denying_dev_null_fails_inside_the_cgroup_only_and_goes_with_unregister() {
    let pins = TestPins::new("devices");
    let cgroup = TestCgroup::new("devices");
    let mut bpf = pins.load();
    let rules = vec![
        DeviceRule {
            allow: true,
            kind: DeviceType::All,
            major: None,
            minor: None,
            access: "rwm".into(),
        },
        DeviceRule {
            allow: false,
            kind: DeviceType::Char,
            major: Some(1),
            minor: Some(3),
            access: "rwm".into(),
        },
    ];
    let reg = bpf
        .register(
            &cgroup.path,
            &RegisterOptions {
                devices: Some(rules),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(reg.devices);
    assert_eq!(
        run_in_cgroup(&cgroup.path, || open_dev(c"/dev/null")),
        libc::EPERM
    );
    assert_eq!(run_in_cgroup(&cgroup.path, || open_dev(c"/dev/zero")), 0);
    assert_eq!(
        open_dev(c"/dev/null"),
        0,
        "outside the cgroup /dev/null opens"
    );
    assert_eq!(
        bpf.container_stats(reg.cgroup_id).unwrap().devices_denied,
        1
    );
    bpf.unregister(reg.cgroup_id).unwrap();
    assert_eq!(
        run_in_cgroup(&cgroup.path, || open_dev(c"/dev/null")),
        0,
        "filter detached"
    );
}

#[test]
fn unregister_leaves_no_pin_link_or_map_entry() {
    let pins = TestPins::new("unregister");
    let cgroup = TestCgroup::new("unregister");
    let mut bpf = pins.load();
    let options = RegisterOptions {
        syscall_latency: true,
        devices: Some(lucid_ebpf::devices::runc_rules(&[])),
    };
    let reg = bpf.register(&cgroup.path, &options).unwrap();
    assert_eq!(
        run_in_cgroup(&cgroup.path, || {
            let _ = std::net::TcpListener::bind("127.0.0.1:0")
                .map(|l| std::net::TcpStream::connect(l.local_addr().unwrap()));
            0
        }),
        0
    );
    assert!(bpf.container_stats(reg.cgroup_id).unwrap().tx_packets > 0);
    let container_dir = bpf
        .pin_dir()
        .join("containers")
        .join(reg.cgroup_id.to_string());
    assert!(container_dir.exists());
    assert_eq!(
        bpf_storage_keys(&bpf, reg.cgroup_id),
        3,
        "storages exist while registered"
    );

    let entries = bpf.map_entries().unwrap();
    assert_eq!(entries.watched, 1, "{entries:?}");
    assert_eq!(entries.cgroup_storage, 3, "{entries:?}");
    assert_eq!(entries.stale_slots, 0, "{entries:?}");

    bpf.unregister(reg.cgroup_id).unwrap();
    let entries = bpf.map_entries().unwrap();
    assert_eq!(
        (entries.watched, entries.latency, entries.stale_slots),
        (0, 0, 0),
        "{entries:?}"
    );
    assert!(!container_dir.exists(), "container pins removed");
    assert!(
        !bpf.pin_dir().join("links/syscall_enter").exists(),
        "latency hook detached"
    );
    assert!(bpf.registered().unwrap().is_empty(), "watch entry removed");
    assert!(matches!(
        bpf.syscalls(reg.cgroup_id),
        Err(lucid_ebpf::Error::NotRegistered(_))
    ));
    // The kernel keeps per-attachment storage until the cgroup is freed; unregister zeroes it.
    assert_eq!(bpf_storage_sum(&bpf, reg.cgroup_id), 0, "storage zeroed");
    assert!(matches!(
        bpf.unregister(reg.cgroup_id),
        Err(lucid_ebpf::Error::NotRegistered(_))
    ));
    let id = reg.cgroup_id;
    drop(cgroup);
    let deadline = Instant::now() + Duration::from_secs(5);
    while bpf_storage_keys(&bpf, id) != 0 {
        assert!(
            Instant::now() < deadline,
            "storage entries outlived the cgroup"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(bpf.map_entries().unwrap().cgroup_storage, 0);
}

/// Sum of every counter in the container's per-attachment storage entries, which must all be
/// readable (the kernel keeps them while the cgroup lives): a failed read fails the test rather
/// than count as zero.
#[allow(deprecated)]
fn bpf_storage_sum(bpf: &lucid_ebpf::Programs, cgroup_id: u64) -> u64 {
    use aya::maps::{CgroupStorage, CgroupStorageKey, Map, MapData, PerCpuCgroupStorage};
    let dir = bpf.pin_dir().join("maps");
    let open = |name: &str| Map::from_map_data(MapData::from_pin(dir.join(name)).unwrap()).unwrap();
    let net: PerCpuCgroupStorage<_, lucid_ebpf_common::NetCounters> =
        open("NET").try_into().unwrap();
    let rules: CgroupStorage<_, lucid_ebpf_common::DeviceRules> =
        open("DEVICE_RULES").try_into().unwrap();
    let mut sum = 0;
    // Attach types: 0 ingress, 1 egress, 6 device.
    for attach in [0, 1] {
        let values = net
            .get(CgroupStorageKey::new(cgroup_id, attach), 0)
            .unwrap_or_else(|e| {
                panic!("reading the NET storage of cgroup {cgroup_id}, attach type {attach}: {e}")
            });
        sum += values.iter().map(|v| v.bytes + v.packets).sum::<u64>();
    }
    let r = rules
        .get(CgroupStorageKey::new(cgroup_id, 6), 0)
        .unwrap_or_else(|e| panic!("reading the DEVICE_RULES storage of cgroup {cgroup_id}: {e}"));
    sum += r.denied + u64::from(r.len) + u64::from(r.default_allow);
    sum
}

/// How many of the container's per-attachment storage entries (network counters for ingress
/// and egress, device rules) exist.
#[allow(deprecated)]
fn bpf_storage_keys(bpf: &lucid_ebpf::Programs, cgroup_id: u64) -> usize {
    use aya::maps::{CgroupStorage, CgroupStorageKey, Map, MapData, MapError, PerCpuCgroupStorage};
    let dir = bpf.pin_dir().join("maps");
    let open = |name: &str| Map::from_map_data(MapData::from_pin(dir.join(name)).unwrap()).unwrap();
    let net: PerCpuCgroupStorage<_, lucid_ebpf_common::NetCounters> =
        open("NET").try_into().unwrap();
    let rules: CgroupStorage<_, lucid_ebpf_common::DeviceRules> =
        open("DEVICE_RULES").try_into().unwrap();
    let present = |r: Result<(), MapError>| match r {
        Ok(()) => 1,
        Err(MapError::KeyNotFound) => 0,
        Err(e) => panic!("reading cgroup storage: {e}"),
    };
    // Attach types: 0 ingress, 1 egress, 6 device.
    present(net.get(CgroupStorageKey::new(cgroup_id, 0), 0).map(|_| ()))
        + present(net.get(CgroupStorageKey::new(cgroup_id, 1), 0).map(|_| ()))
        + present(
            rules
                .get(CgroupStorageKey::new(cgroup_id, 6), 0)
                .map(|_| ()),
        )
}
