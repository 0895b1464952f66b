//! Resource statistics of a container's cgroups, in the shape and with the
//! JSON field names of runc 1.1's `events --stats` (`types.Stats`).
//!
//! Read by hand rather than through cgroups-rs: runc's format keeps
//! `memory.stat` as a raw map and reports per-CPU user/kernel time, which the
//! crate's structs do not carry, and the crate's v2 readers panic on a missing
//! file (`memswap_v2`) or turn read errors into zeros.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::resources::Target;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// runc's `Stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// CPU time and throttling.
    pub cpu: Cpu,
    /// The cpuset.
    pub cpuset: CpuSet,
    /// Memory use.
    pub memory: Memory,
    /// Process count.
    pub pids: Pids,
    /// Block I/O.
    pub blkio: Blkio,
    /// Huge pages, by page size (`2MB`).
    pub hugetlb: BTreeMap<String, Hugetlb>,
    /// Intel RDT (not supported: always empty, as runc prints it without RDT).
    pub intel_rdt: IntelRdt,
    /// Network interfaces (runc prints `null` here).
    pub network_interfaces: Option<Vec<serde_json::Value>>,
}

/// runc's `IntelRdt`, empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IntelRdt {}

/// runc's `Cpu`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cpu {
    /// Time used.
    pub usage: CpuUsage,
    /// CFS throttling.
    pub throttling: Throttling,
}

/// runc's `CpuUsage` (nanoseconds).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CpuUsage {
    /// Total CPU time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total: u64,
    /// Per CPU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    /// Per CPU, in the kernel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    /// Per CPU, in user space.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    /// In the kernel.
    pub kernel: u64,
    /// In user space.
    pub user: u64,
}

/// runc's `Throttling`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Throttling {
    /// Enforcement periods.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods: u64,
    /// Periods in which the group was throttled.
    #[serde(default, rename = "throttledPeriods", skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Time throttled, ns.
    #[serde(default, rename = "throttledTime", skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

/// runc's `CPUSet`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CpuSet {
    /// CPUs allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    /// cpuset.cpu_exclusive.
    pub cpu_exclusive: u64,
    /// Memory nodes allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    /// cpuset.mem_hardwall.
    pub mem_hardwall: u64,
    /// cpuset.mem_exclusive.
    pub mem_exclusive: u64,
    /// cpuset.memory_migrate.
    pub memory_migrate: u64,
    /// cpuset.memory_spread_page.
    pub memory_spread_page: u64,
    /// cpuset.memory_spread_slab.
    pub memory_spread_slab: u64,
    /// cpuset.memory_pressure.
    pub memory_pressure: u64,
    /// cpuset.sched_load_balance.
    pub sched_load_balance: u64,
    /// cpuset.sched_relax_domain_level.
    pub sched_relax_domain_level: i64,
}

/// runc's `MemoryEntry`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemoryEntry {
    /// The limit (`u64::MAX`-ish when unlimited, as the kernel reports it).
    pub limit: u64,
    /// Usage now.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Highest usage.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
}

/// runc's `Memory`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Memory {
    /// Page cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache: u64,
    /// Memory.
    pub usage: MemoryEntry,
    /// Memory plus swap (as v1 counts it; on v2 swap plus memory).
    pub swap: MemoryEntry,
    /// Kernel memory (v1).
    pub kernel: MemoryEntry,
    /// Kernel TCP buffers (v1).
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// memory.stat as it is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

/// runc's `Pids`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pids {
    /// Processes now.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub current: u64,
    /// The limit (0 when unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
}

/// runc's `BlkioEntry`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlkioEntry {
    /// Device major.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub major: u64,
    /// Device minor.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minor: u64,
    /// `Read`, `Write`, …
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    /// The count.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value: u64,
}

/// runc's `Blkio`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Blkio {
    /// Bytes moved.
    #[serde(
        default,
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// Operations done.
    #[serde(
        default,
        rename = "ioServicedRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// runc's `Hugetlb`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hugetlb {
    /// Bytes in use.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Highest use.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    /// Allocations refused by the limit.
    pub failcnt: u64,
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

fn read_u64(dir: &Path, file: &str) -> u64 {
    read(dir, file)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// "max" as u64::MAX, a number as itself.
fn read_limit(dir: &Path, file: &str) -> u64 {
    match read(dir, file) {
        Some(s) if s.trim() == "max" => u64::MAX,
        Some(s) => s.trim().parse().unwrap_or(0),
        None => 0,
    }
}

/// A flat keyed file (`key value` per line).
pub fn keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?))
        })
        .collect()
}

/// A cpuset list (`0-3,8`) as numbers.
pub fn parse_list(text: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<u16>().ok()),
        }
    }
    out
}

/// Page sizes the host has, in runc's names (`2MB`, `1GB`).
pub fn hugepage_sizes() -> Vec<String> {
    let mut sizes: Vec<(u64, String)> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some((kb, size_name(kb * 1024)))
        })
        .collect();
    sizes.sort();
    sizes.into_iter().map(|(_, name)| name).collect()
}

fn size_name(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024 && value.is_multiple_of(1024) && unit < UNITS.len() - 1 {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", UNITS[unit])
}

/// USER_HZ: the unit of cpuacct.stat.
const CLOCK_TICKS: u64 = 100;

/// Reads the statistics from whichever hierarchies hold each controller.
pub fn collect(target: &Target) -> Stats {
    let mut stats = Stats::default();
    if let Ok((dir, v2)) = target.dir("cpu", "") {
        if v2 {
            let s = keyed(&read(&dir, "cpu.stat").unwrap_or_default());
            let get = |k: &str| s.get(k).copied().unwrap_or(0);
            stats.cpu.usage.total = get("usage_usec") * 1000;
            stats.cpu.usage.user = get("user_usec") * 1000;
            stats.cpu.usage.kernel = get("system_usec") * 1000;
            stats.cpu.throttling.periods = get("nr_periods");
            stats.cpu.throttling.throttled_periods = get("nr_throttled");
            stats.cpu.throttling.throttled_time = get("throttled_usec") * 1000;
        } else {
            let s = keyed(&read(&dir, "cpu.stat").unwrap_or_default());
            let get = |k: &str| s.get(k).copied().unwrap_or(0);
            stats.cpu.throttling.periods = get("nr_periods");
            stats.cpu.throttling.throttled_periods = get("nr_throttled");
            stats.cpu.throttling.throttled_time = get("throttled_time");
        }
    }
    if let Ok((dir, false)) = target.dir("cpuacct", "") {
        stats.cpu.usage.total = read_u64(&dir, "cpuacct.usage");
        stats.cpu.usage.percpu = read(&dir, "cpuacct.usage_percpu")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        // "cpu user system" then one line per CPU.
        for line in read(&dir, "cpuacct.usage_all")
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let fields: Vec<u64> = line
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            if let [_, user, system] = fields[..] {
                stats.cpu.usage.percpu_user.push(user);
                stats.cpu.usage.percpu_kernel.push(system);
            }
        }
        let s = keyed(&read(&dir, "cpuacct.stat").unwrap_or_default());
        let ns = 1_000_000_000 / CLOCK_TICKS;
        stats.cpu.usage.user = s.get("user").copied().unwrap_or(0) * ns;
        stats.cpu.usage.kernel = s.get("system").copied().unwrap_or(0) * ns;
    }
    if let Ok((dir, v2)) = target.dir("cpuset", "") {
        let (cpus, mems) = if v2 {
            ("cpuset.cpus.effective", "cpuset.mems.effective")
        } else {
            ("cpuset.cpus", "cpuset.mems")
        };
        stats.cpuset.cpus = parse_list(&read(&dir, cpus).unwrap_or_default());
        stats.cpuset.mems = parse_list(&read(&dir, mems).unwrap_or_default());
        if !v2 {
            let c = &mut stats.cpuset;
            c.cpu_exclusive = read_u64(&dir, "cpuset.cpu_exclusive");
            c.mem_hardwall = read_u64(&dir, "cpuset.mem_hardwall");
            c.mem_exclusive = read_u64(&dir, "cpuset.mem_exclusive");
            c.memory_migrate = read_u64(&dir, "cpuset.memory_migrate");
            c.memory_spread_page = read_u64(&dir, "cpuset.memory_spread_page");
            c.memory_spread_slab = read_u64(&dir, "cpuset.memory_spread_slab");
            c.memory_pressure = read_u64(&dir, "cpuset.memory_pressure");
            c.sched_load_balance = read_u64(&dir, "cpuset.sched_load_balance");
            c.sched_relax_domain_level = read(&dir, "cpuset.sched_relax_domain_level")
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    if let Ok((dir, v2)) = target.dir("memory", "") {
        stats.memory = memory(&dir, v2);
    }
    if let Ok((dir, _)) = target.dir("pids", "") {
        stats.pids.current = read_u64(&dir, "pids.current");
        stats.pids.limit = match read_limit(&dir, "pids.max") {
            u64::MAX => 0,
            n => n,
        };
    }
    if let Ok((dir, false)) = target.dir("blkio", "") {
        stats.blkio.io_service_bytes_recursive =
            blkio_v1(&read(&dir, "blkio.throttle.io_service_bytes_recursive").unwrap_or_default());
        stats.blkio.io_serviced_recursive =
            blkio_v1(&read(&dir, "blkio.throttle.io_serviced_recursive").unwrap_or_default());
    } else if let Ok((dir, true)) = target.dir("io", "") {
        let (bytes, ios) = io_stat_v2(&read(&dir, "io.stat").unwrap_or_default());
        stats.blkio.io_service_bytes_recursive = bytes;
        stats.blkio.io_serviced_recursive = ios;
    }
    if let Ok((dir, v2)) = target.dir("hugetlb", "") {
        for size in hugepage_sizes() {
            let entry = if v2 {
                Hugetlb {
                    usage: read_u64(&dir, &format!("hugetlb.{size}.current")),
                    max: 0,
                    failcnt: keyed(
                        &read(&dir, &format!("hugetlb.{size}.events")).unwrap_or_default(),
                    )
                    .get("max")
                    .copied()
                    .unwrap_or(0),
                }
            } else {
                Hugetlb {
                    usage: read_u64(&dir, &format!("hugetlb.{size}.usage_in_bytes")),
                    max: read_u64(&dir, &format!("hugetlb.{size}.max_usage_in_bytes")),
                    failcnt: read_u64(&dir, &format!("hugetlb.{size}.failcnt")),
                }
            };
            stats.hugetlb.insert(size, entry);
        }
    }
    stats
}

fn memory(dir: &Path, v2: bool) -> Memory {
    let raw = keyed(&read(dir, "memory.stat").unwrap_or_default());
    if v2 {
        let events = keyed(&read(dir, "memory.events").unwrap_or_default());
        let usage = MemoryEntry {
            limit: read_limit(dir, "memory.max"),
            usage: read_u64(dir, "memory.current"),
            max: read_u64(dir, "memory.peak"),
            failcnt: events.get("max").copied().unwrap_or(0),
        };
        // runc reports swap as memory plus swap, as v1 does.
        let swap_limit = read_limit(dir, "memory.swap.max");
        let swap = MemoryEntry {
            limit: if swap_limit == u64::MAX {
                u64::MAX
            } else {
                swap_limit.saturating_add(usage.limit)
            },
            usage: read_u64(dir, "memory.swap.current") + usage.usage,
            max: 0,
            failcnt: keyed(&read(dir, "memory.swap.events").unwrap_or_default())
                .get("fail")
                .copied()
                .unwrap_or(0),
        };
        return Memory {
            cache: raw.get("file").copied().unwrap_or(0),
            usage,
            swap,
            kernel: MemoryEntry::default(),
            kernel_tcp: MemoryEntry::default(),
            raw,
        };
    }
    let entry = |prefix: &str| MemoryEntry {
        limit: read_u64(dir, &format!("{prefix}.limit_in_bytes")),
        usage: read_u64(dir, &format!("{prefix}.usage_in_bytes")),
        max: read_u64(dir, &format!("{prefix}.max_usage_in_bytes")),
        failcnt: read_u64(dir, &format!("{prefix}.failcnt")),
    };
    Memory {
        cache: raw.get("cache").copied().unwrap_or(0),
        usage: entry("memory"),
        swap: entry("memory.memsw"),
        kernel: entry("memory.kmem"),
        kernel_tcp: entry("memory.kmem.tcp"),
        raw,
    }
}

/// `8:0 Read 4096` lines (the `Total` line has no device and is skipped).
fn blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (major, minor) = parts.next()?.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: parts.next()?.to_owned(),
                value: parts.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// io.stat (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 …`) as runc maps it.
fn io_stat_v2(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some((major, minor)) = parts.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        for kv in parts {
            let Some((key, value)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse() else { continue };
            let (list, op) = match key {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_owned(),
                value,
            });
        }
    }
    (bytes, ios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuset_lists_expand_ranges() {
        assert_eq!(parse_list("0-2,5\n"), vec![0, 1, 2, 5]);
        assert_eq!(parse_list(""), Vec::<u16>::new());
    }

    #[test]
    fn hugepage_sizes_use_runc_names() {
        assert_eq!(size_name(2048 * 1024), "2MB");
        assert_eq!(size_name(1048576 * 1024), "1GB");
        assert_eq!(size_name(64 * 1024), "64KB");
    }

    #[test]
    fn io_stat_maps_to_runc_entries() {
        let (bytes, ios) = io_stat_v2("8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(bytes.len(), 2);
        assert_eq!(bytes[1].op, "Write");
        assert_eq!(bytes[1].value, 20);
        assert_eq!(ios[0].value, 1);
    }

    #[test]
    fn stats_json_uses_runc_field_names() {
        let mut stats = Stats::default();
        stats.cpu.throttling.throttled_periods = 3;
        stats.memory.kernel_tcp.limit = 1;
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["cpu"]["throttling"]["throttledPeriods"], 3);
        assert_eq!(json["memory"]["kernelTCP"]["limit"], 1);
        assert!(json["network_interfaces"].is_null());
        assert!(json["intel_rdt"].is_object());
        assert!(json["cpuset"].get("sched_load_balance").is_some());
    }
}
