//! Each kind of limit enforced on a real container, on whichever hierarchy
//! lucid uses on this host: the v1 controllers of a hybrid host (this
//! machine), or a pure cgroup v2 host with every controller (the guests of
//! `cargo xtask vm`). Memory (an OOM kill), pids (a fork bomb stopped), cpu
//! (a busy loop throttled) and block I/O (direct writes held to a rate), and
//! every `linux.resources` field in its file (runc's conversions on v2).
//! Needs root and those controllers; the I/O test needs a directory on a real
//! block device (`$LUCID_TEST_BLOCK_DIR`, else the temporary directory's).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lucid_tests::{
    assert_nothing_left, cgroup_path, spawn_lucid, unique_id, wait_until, Bundle, Runtime,
};
use serde_json::{json, Value};

/// The environment variable naming a directory on a real block device for
/// the I/O test.
const BLOCK_DIR_ENV: &str = "LUCID_TEST_BLOCK_DIR";

/// Whether lucid uses cgroup v2 for resources here (a pure v2 host).
fn pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The container's cgroup directory holding `controller`'s files.
fn dir(controller: &str, id: &str) -> PathBuf {
    let base = if pure_v2() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup").join(controller)
    };
    assert!(
        base.join("cgroup.procs").exists(),
        "this test needs the {controller} controller at {}",
        base.display()
    );
    base.join(cgroup_path(id).trim_start_matches('/'))
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.join(file).display()))
        .trim()
        .to_owned()
}

/// The number after `key` in a flat keyed file (`key value` lines).
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

fn set_resources(bundle: &mut Bundle, resources: Value) {
    bundle.edit(|c| {
        let r = c["linux"]["resources"].as_object_mut().unwrap();
        for (k, v) in resources.as_object().unwrap() {
            r.insert(k.clone(), v.clone());
        }
    });
}

/// The first real block device's `major:minor`.
fn a_block_device() -> (u64, u64) {
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(dev) = std::fs::read_to_string(entry.path().join("dev")) {
            let (major, minor) = dev.trim().split_once(':').unwrap();
            return (major.parse().unwrap(), minor.parse().unwrap());
        }
    }
    panic!("this test needs a block device in /sys/block");
}

/// The blkio weight file of this host's v1 hierarchy, as runc picks it: BFQ's
/// when the BFQ scheduler is built, else CFQ's; neither when the kernel has
/// no proportional-weight policy (kernels without BFQ and after CFQ's removal).
fn blkio_weight_file() -> Option<&'static str> {
    ["blkio.bfq.weight", "blkio.weight"]
        .into_iter()
        .find(|f| Path::new("/sys/fs/cgroup/blkio").join(f).exists())
}

#[test]
fn each_resource_is_written_to_its_file() {
    if pure_v2() {
        return each_resource_is_written_to_its_v2_file();
    }
    let rt = Runtime::new();
    let id = unique_id("res");
    let mut bundle = Bundle::new(&rt, &id, &["sleep", "60"]);
    let (major, minor) = a_block_device();
    let weight_file = blkio_weight_file();
    let mut block_io = json!({
        "throttleReadBpsDevice": [ { "major": major, "minor": minor, "rate": 1048576 } ],
        "throttleWriteIOPSDevice": [ { "major": major, "minor": minor, "rate": 100 } ]
    });
    let mut resources = json!({
        "memory": { "limit": 67108864, "reservation": 33554432, "swap": 134217728, "swappiness": 10 },
        "cpu": { "shares": 512, "quota": 30000, "period": 100000, "cpus": "0", "mems": "0", "idle": 0, "burst": 1000 },
        "pids": { "limit": 42 }
    });
    block_io["weight"] = json!(500);
    resources["blockIO"] = block_io.clone();
    if weight_file.is_none() {
        // No weight file to write: refused by name, as runc fails writing it,
        // and nothing is left of the attempt.
        set_resources(&mut bundle, resources.clone());
        let out = rt.lucid(&["run", "--detach", "--bundle", bundle.arg(), &id]);
        assert!(
            !out.status.success(),
            "a blkio weight with no weight file ran"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("linux.resources.blockIO.weight") && err.contains("lacks it"),
            "{err}"
        );
        assert_nothing_left(&rt, &id, bundle.path());
        block_io.as_object_mut().unwrap().remove("weight");
        resources["blockIO"] = block_io;
    }
    set_resources(&mut bundle, resources);
    rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    let memory = dir("memory", &id);
    assert_eq!(read(&memory, "memory.limit_in_bytes"), "67108864");
    assert_eq!(read(&memory, "memory.soft_limit_in_bytes"), "33554432");
    assert_eq!(read(&memory, "memory.memsw.limit_in_bytes"), "134217728");
    assert_eq!(read(&memory, "memory.swappiness"), "10");
    let cpu = dir("cpu", &id);
    assert_eq!(read(&cpu, "cpu.shares"), "512");
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "30000");
    assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
    assert_eq!(read(&cpu, "cpu.cfs_burst_us"), "1000");
    assert_eq!(read(&cpu, "cpu.idle"), "0");
    assert_eq!(read(&dir("cpuset", &id), "cpuset.cpus"), "0");
    assert_eq!(read(&dir("pids", &id), "pids.max"), "42");
    let blkio = dir("blkio", &id);
    if let Some(file) = weight_file {
        assert_eq!(read(&blkio, file), "500");
    }
    assert_eq!(
        read(&blkio, "blkio.throttle.read_bps_device"),
        format!("{major}:{minor} 1048576")
    );
    assert_eq!(
        read(&blkio, "blkio.throttle.write_iops_device"),
        format!("{major}:{minor} 100")
    );
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

/// The v2 cpu fields only newer kernels have files for: (field, file, value).
const NEWER_CPU_FIELDS: &[(&str, &str, u64)] = &[
    // Linux 5.14.
    ("burst", "cpu.max.burst", 1000),
    // Linux 5.15.
    ("idle", "cpu.idle", 0),
];

/// Which files of `files` this pure v2 host's kernel has, seen in a cgroup
/// made for the question.
fn v2_files_present(files: &[&str]) -> Vec<bool> {
    let probe = PathBuf::from(format!(
        "/sys/fs/cgroup/lucid-test-probe-{}",
        std::process::id()
    ));
    std::fs::create_dir(&probe).expect("making a probe cgroup");
    let cpu = probe.join("cpu.max").exists();
    let present = files.iter().map(|f| probe.join(f).exists()).collect();
    std::fs::remove_dir(&probe).expect("removing the probe cgroup");
    assert!(
        cpu,
        "the cpu controller is not enabled at the root of /sys/fs/cgroup"
    );
    present
}

/// [`each_resource_is_written_to_its_file`] on a pure v2 host: runc 1.1's
/// conversions of the v1 values, and the v2-only fields.
fn each_resource_is_written_to_its_v2_file() {
    let rt = Runtime::new();
    let id = unique_id("res2");
    let mut bundle = Bundle::new(&rt, &id, &["sleep", "60"]);
    let (major, minor) = a_block_device();
    let files: Vec<&str> = NEWER_CPU_FIELDS.iter().map(|(_, f, _)| *f).collect();
    let present = v2_files_present(&files);
    for (&(field, file, value), _) in NEWER_CPU_FIELDS.iter().zip(&present).filter(|(_, p)| !**p) {
        // An older kernel without the file: refused by name, and nothing is left.
        set_resources(&mut bundle, json!({ "cpu": { field: value } }));
        let out = rt.lucid(&["run", "--detach", "--bundle", bundle.arg(), &id]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{field} ran without {file}");
        assert!(
            err.contains(&format!("linux.resources.cpu.{field}")) && err.contains("lacks it"),
            "{err}"
        );
        assert_nothing_left(&rt, &id, bundle.path());
    }
    set_resources(
        &mut bundle,
        json!({
            "memory": { "limit": 67108864, "reservation": 33554432, "swap": 134217728 },
            "cpu": { "shares": 512, "quota": 30000, "period": 100000, "cpus": "0", "mems": "0" },
            "pids": { "limit": 42 },
            "blockIO": {
                "weight": 500,
                "throttleReadBpsDevice": [ { "major": major, "minor": minor, "rate": 1048576 } ],
                "throttleWriteIOPSDevice": [ { "major": major, "minor": minor, "rate": 100 } ]
            },
            "hugepageLimits": [ { "pageSize": "2MB", "limit": 4194304 } ],
            "unified": { "memory.high": "50331648" }
        }),
    );
    for (&(field, _, value), _) in NEWER_CPU_FIELDS.iter().zip(&present).filter(|(_, p)| **p) {
        bundle.edit(|c| c["linux"]["resources"]["cpu"][field] = json!(value));
    }
    rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    let d = dir("memory", &id);
    assert_eq!(read(&d, "memory.max"), "67108864");
    assert_eq!(read(&d, "memory.low"), "33554432");
    // v1's memory+swap less the memory limit.
    assert_eq!(read(&d, "memory.swap.max"), "67108864");
    assert_eq!(read(&d, "memory.high"), "50331648");
    // runc's shares → weight: 1 + (512 - 2) * 9999 / 262142.
    assert_eq!(read(&d, "cpu.weight"), "20");
    assert_eq!(read(&d, "cpu.max"), "30000 100000");
    for (&(_, file, value), _) in NEWER_CPU_FIELDS.iter().zip(&present).filter(|(_, p)| **p) {
        assert_eq!(read(&d, file), value.to_string());
    }
    assert_eq!(read(&d, "cpuset.cpus"), "0");
    assert_eq!(read(&d, "cpuset.mems"), "0");
    assert_eq!(read(&d, "pids.max"), "42");
    assert_eq!(read(&d, "hugetlb.2MB.max"), "4194304");
    // BFQ takes v1's weight; io.weight runc's conversion, 1 + (500 - 10) * 9999 / 990.
    let weight = if d.join("io.bfq.weight").exists() {
        (read(&d, "io.bfq.weight"), "default 500")
    } else {
        (read(&d, "io.weight"), "default 4950")
    };
    assert_eq!(weight.0.lines().next().unwrap_or(""), weight.1);
    assert_eq!(
        read(&d, "io.max"),
        format!("{major}:{minor} rbps=1048576 wbps=max riops=max wiops=100")
    );
    // What v2 has no file for is refused by name.
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
    let id = unique_id("res2");
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = json!(cgroup_path(&id));
        c["linux"]["resources"]["memory"]["swappiness"] = json!(10);
    });
    let out = rt.lucid(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "swappiness on v2 ran");
    assert!(err.contains("linux.resources.memory.swappiness"), "{err}");
    assert_nothing_left(&rt, &id, bundle.path());
}

fn stats(rt: &Runtime, id: &str) -> Value {
    serde_json::from_str(&rt.ok(&["events", "--stats", id])).expect("events --stats is JSON")
}

#[test]
fn a_memory_limit_oom_kills_and_events_reports_it() {
    let rt = Runtime::new();
    let id = unique_id("oom");
    // tail keeps a line that never ends: it grows until the limit.
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", "sleep 1; tail /dev/zero; exit 3"]);
    // memory+swap equal to memory: no swap to escape to.
    set_resources(
        &mut bundle,
        json!({ "memory": { "limit": 33554432, "swap": 33554432 } }),
    );
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    let (mut events, mut out) = spawn_lucid(&rt, &["events", "--interval", "10s", &id]);
    rt.ok(&["start", &id]);
    // events exits by itself once the container stops.
    wait_until(30, "lucid events to exit with the container", || {
        events.try_wait().unwrap().is_some()
    });
    assert!(events.wait().unwrap().success());
    let text = lucid_tests::read_file(&mut out);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each event is one JSON line"))
        .collect();
    assert!(
        lines.contains(&json!({ "type": "oom", "id": id })),
        "no OOM event in {text:?}"
    );
    let memory = dir("memory", &id);
    let kills = if pure_v2() {
        assert_eq!(read(&memory, "memory.max"), "33554432");
        keyed(&read(&memory, "memory.events"), "oom_kill ")
    } else {
        keyed(&read(&memory, "memory.oom_control"), "oom_kill ")
    };
    assert!(kills >= 1, "no OOM kill counted");
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn a_pids_limit_stops_a_fork_bomb() {
    let rt = Runtime::new();
    let id = unique_id("pids");
    let mut bundle = Bundle::new(
        &rt,
        &id,
        // The bomb runs in a child shell, which gives up when fork fails;
        // init then execs (no fork needed) and stays to be counted.
        &[
            "sh",
            "-c",
            "sh -c 'for i in $(seq 1 40); do sleep 30 & done' 2>/dev/null; exec sleep 30",
        ],
    );
    set_resources(&mut bundle, json!({ "pids": { "limit": 8 } }));
    rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    let pids = dir("pids", &id);
    assert_eq!(read(&pids, "pids.max"), "8");
    wait_until(10, "the fork bomb to hit the limit", || {
        keyed(&read(&pids, "pids.events"), "max ") > 0
    });
    let current: u64 = read(&pids, "pids.current").parse().unwrap();
    assert!(current <= 8, "{current} processes under a limit of 8");
    assert_eq!(stats(&rt, &id)["data"]["pids"]["limit"], 8);
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

/// The container's CPU time so far, in ns (`events --stats`, either hierarchy).
fn cpu_used_ns(rt: &Runtime, id: &str) -> u64 {
    stats(rt, id)["data"]["cpu"]["usage"]["total"]
        .as_u64()
        .expect("cpu.usage.total")
}

#[test]
fn a_cpu_quota_caps_a_busy_loop() {
    let rt = Runtime::new();
    let id = unique_id("quota");
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", "while :; do :; done"]);
    // 10 ms of CPU every 100 ms: a tenth of one CPU.
    set_resources(
        &mut bundle,
        json!({ "cpu": { "quota": 10000, "period": 100000 } }),
    );
    rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    if pure_v2() {
        assert_eq!(read(&dir("cpu", &id), "cpu.max"), "10000 100000");
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_used_ns(&rt, &id);
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_used_ns(&rt, &id) - before;
    let wall = started.elapsed().as_nanos() as u64;
    // Uncapped, the loop would use all of one CPU; capped, a tenth (with
    // room for a period's slack at each end).
    assert!(
        used < wall / 4,
        "the loop used {used} ns of CPU in {wall} ns under a 10% quota"
    );
    let throttled = if pure_v2() {
        keyed(&read(&dir("cpu", &id), "cpu.stat"), "nr_throttled ")
    } else {
        stats(&rt, &id)["data"]["cpu"]["throttling"]["throttledPeriods"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(throttled > 0, "no throttled period counted");
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

/// A fresh directory on a real block device, and that device's whole disk
/// as `(major, minor)` (io limits name disks, not partitions).
fn block_backed_dir() -> (tempfile::TempDir, u64, u64) {
    let parent = std::env::var_os(BLOCK_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("lucid-io-")
        .tempdir_in(&parent)
        .unwrap_or_else(|e| panic!("making a directory in {}: {e}", parent.display()));
    let dev = std::fs::metadata(dir.path()).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    assert!(
        sys.exists(),
        "{} is not on a block device ({major}:{minor}): this test needs one; set {BLOCK_DIR_ENV} \
         to a directory on a disk",
        parent.display()
    );
    // A partition's parent directory in sysfs is its disk.
    let disk = if sys.join("partition").exists() {
        sys.canonicalize().unwrap().parent().unwrap().join("dev")
    } else {
        sys.join("dev")
    };
    let text = std::fs::read_to_string(&disk).unwrap();
    let (major, minor) = text.trim().split_once(':').unwrap();
    (dir, major.parse().unwrap(), minor.parse().unwrap())
}

#[test]
fn a_write_rate_limit_holds_direct_writes_to_it() {
    const MIB: u64 = 1 << 20;
    let (data, major, minor) = block_backed_dir();
    let rt = Runtime::new();
    let id = unique_id("iorate");
    // 8 MiB of direct writes (no page cache to absorb them) at 1 MiB/s: at
    // least 6 s once the first second's allowance is spent. Unthrottled they
    // take well under a second, also in an emulated guest. The container
    // times them itself and leaves the seconds beside the data.
    let mut bundle = Bundle::new(
        &rt,
        &id,
        &[
            "sh",
            "-c",
            "start=$(date +%s); dd if=/dev/zero of=/data/out bs=64k count=128 oflag=direct \
             2>/data/dd.err || exit 9; echo $(( $(date +%s) - start )) > /data/seconds",
        ],
    );
    set_resources(
        &mut bundle,
        json!({ "blockIO": { "throttleWriteBpsDevice": [
            { "major": major, "minor": minor, "rate": MIB }
        ] } }),
    );
    bundle.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind",
            "source": data.path().to_str().unwrap(), "options": ["rbind", "rw"]
        }));
    });
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    let (io, limit_file, expected) = if pure_v2() {
        (
            dir("io", &id),
            "io.max",
            format!("{major}:{minor} rbps=max wbps={MIB} riops=max wiops=max"),
        )
    } else {
        (
            dir("blkio", &id),
            "blkio.throttle.write_bps_device",
            format!("{major}:{minor} {MIB}"),
        )
    };
    assert_eq!(read(&io, limit_file), expected);
    rt.ok(&["start", &id]);
    wait_until(60, "the writes to finish", || rt.status(&id) == "stopped");
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
    let written = std::fs::metadata(data.path().join("out"))
        .unwrap_or_else(|e| {
            let err = std::fs::read_to_string(data.path().join("dd.err")).unwrap_or_default();
            panic!("no output file ({e}); dd said: {err}")
        })
        .len();
    assert_eq!(written, 8 * MIB);
    let seconds: u64 = read(data.path(), "seconds")
        .parse()
        .expect("the container wrote the seconds dd took");
    assert!(
        seconds >= 6,
        "8 MiB of direct writes took {seconds} s under a 1 MiB/s limit"
    );
}
