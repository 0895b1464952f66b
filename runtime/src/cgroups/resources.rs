//! `linux.resources` written into the container's cgroups (the `cgroup.apply`
//! step, and `lucid update`), on v1 and v2, with runc 1.1's v1→v2 conversions.
//!
//! The files are written through cgroups-rs's controllers, each built straight
//! on the container's directory (`MemController::new(dir, v2)`). Its hierarchy
//! layer (`Cgroup`, `hierarchies::auto`) is not used: it hard-codes
//! /sys/fs/cgroup as the v2 root, treats a hybrid host as v1 only, and ignores
//! errors when it enables controllers; `hierarchy.rs` does that part.
//!
//! Done here by hand, where cgroups-rs lacks a file or does not do what runc
//! does: the v1→v2 conversions (the crate writes v1 values into v2 files, and
//! maps swappiness to `memory.swap.max`), `cpu.idle`, the CPU burst,
//! `memory.use_hierarchy`, the kernel memory limit (the crate drops an
//! EOPNOTSUPP with only a log line), block I/O weights (the crate knows neither
//! `blkio.bfq.weight` on v1 nor the `io.weight` fallback on v2), a zero
//! throttle rate (`max` on v2), `unified`, and `checkBeforeUpdate`.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

use cgroups_rs::blkio::BlkIoController;
use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuset::CpuSetController;
use cgroups_rs::hugetlb::HugeTlbController;
use cgroups_rs::memory::MemController;
use cgroups_rs::net_cls::NetClsController;
use cgroups_rs::net_prio::NetPrioController;
use cgroups_rs::pid::PidController;
use cgroups_rs::rdma::RdmaController;
use cgroups_rs::MaxValue;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources, LinuxThrottleDevice};

use super::CgroupError;

/// Where each controller's files are for one container: its directory in each
/// v1 hierarchy, and its v2 directory.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `(controllers of the hierarchy, e.g. "cpu,cpuacct", container's dir)` per v1 hierarchy.
    pub v1: Vec<(String, PathBuf)>,
    /// The container's v2 cgroup, where controllers are enabled (pure v2 hosts).
    pub v2: Option<PathBuf>,
}

impl Target {
    /// The directory holding `controller`'s files and whether it is v2; an
    /// error naming `field` when the host has no such controller.
    pub fn dir(&self, controller: &str, field: &str) -> Result<(PathBuf, bool), CgroupError> {
        if let Some((_, dir)) = self
            .v1
            .iter()
            .find(|(options, _)| options.split(',').any(|c| c == controller))
        {
            return Ok((dir.clone(), false));
        }
        if let Some(dir) = &self.v2 {
            let enabled =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            if enabled.split_whitespace().any(|c| c == controller) {
                return Ok((dir.clone(), true));
            }
        }
        Err(CgroupError::Unsupported(format!(
            "{field}: this host has no {controller} cgroup controller (not mounted on v1, not enabled on v2): remove the field"
        )))
    }

    fn is_v2_only(&self) -> bool {
        self.v1.is_empty() && self.v2.is_some()
    }
}

/// How `apply` is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// At create: the cgroup is new.
    Create,
    /// `lucid update`: `checkBeforeUpdate` applies.
    Update,
}

/// Writes every resource set in `r` (devices excepted: `devices.rs` and the
/// eBPF filter do those), in runc's order, `unified` last so it overrides.
pub fn apply(target: &Target, r: &LinuxResources, mode: Mode) -> Result<(), CgroupError> {
    if let Some(memory) = r.memory() {
        apply_memory(target, memory, mode)?;
    }
    if let Some(cpu) = r.cpu() {
        apply_cpu(target, cpu)?;
    }
    if let Some(pids) = r.pids() {
        let field = "linux.resources.pids.limit";
        let (dir, v2) = target.dir("pids", field)?;
        let limit = pids.limit();
        if limit != 0 {
            let value = if limit > 0 {
                MaxValue::Value(limit)
            } else {
                MaxValue::Max
            };
            let c = PidController::new(dir.clone(), v2);
            via_crate(field, &dir, "pids.max", limit, || c.set_pid_max(value))?;
        }
    }
    if let Some(blkio) = r.block_io() {
        apply_block_io(target, blkio)?;
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        let field = format!("linux.resources.hugepageLimits[{i}]");
        let (dir, v2) = target.dir("hugetlb", &field)?;
        let limit = u64::try_from(h.limit()).map_err(|_| {
            CgroupError::Invalid(format!("{field}.limit: {} is negative", h.limit()))
        })?;
        let file = if v2 {
            format!("hugetlb.{}.max", h.page_size())
        } else {
            format!("hugetlb.{}.limit_in_bytes", h.page_size())
        };
        let c = HugeTlbController::new(dir.clone(), v2);
        via_crate(&field, &dir, &file, limit, || {
            c.set_limit_in_bytes(h.page_size(), limit)
        })?;
    }
    if let Some(network) = r.network() {
        if target.is_v2_only() {
            return Err(CgroupError::Unsupported(
                "linux.resources.network: cgroup v2 has no net_cls or net_prio controller: remove the field".into(),
            ));
        }
        if let Some(class_id) = network.class_id() {
            let field = "linux.resources.network.classID";
            let (dir, _) = target.dir("net_cls", field)?;
            let c = NetClsController::new(dir.clone());
            via_crate(field, &dir, "net_cls.classid", class_id, || {
                c.set_class(u64::from(class_id))
            })?;
        }
        for (i, p) in network.priorities().iter().flatten().enumerate() {
            let field = format!("linux.resources.network.priorities[{i}]");
            let (dir, _) = target.dir("net_prio", &field)?;
            let c = NetPrioController::new(dir.clone());
            via_crate(
                &field,
                &dir,
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
                || c.set_if_prio(p.name(), u64::from(p.priority())),
            )?;
        }
    }
    for (device, limits) in r.rdma().iter().flatten() {
        let field = format!("linux.resources.rdma[{device:?}]");
        let (dir, _) = target.dir("rdma", &field)?;
        let mut line = device.clone();
        if let Some(handles) = limits.hca_handles() {
            line += &format!(" hca_handle={handles}");
        }
        if let Some(objects) = limits.hca_objects() {
            line += &format!(" hca_object={objects}");
        }
        let c = RdmaController::new(dir.clone());
        via_crate(&field, &dir, "rdma.max", &line, || c.set_max(&line))?;
    }
    if let Some(unified) = r.unified().as_ref().filter(|u| !u.is_empty()) {
        apply_unified(target, unified)?;
    }
    Ok(())
}

/// runc's `ConvertCPUSharesToCgroupV2Value` (1.1): shares 2..262144 onto weight 1..10000.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262142
}

/// runc's `ConvertBlkIOToIOWeightValue`: blkio weight 10..1000 onto io.weight 1..10000.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + (u64::from(weight).saturating_sub(10) * 9999) / 990
}

/// runc's `ConvertMemorySwapToCgroupV2Value`: v1's memory+swap limit as v2's
/// swap-only limit (-1 is max, 0 unset).
pub fn memory_swap_to_v2(swap: i64, memory: i64) -> Result<i64, String> {
    if memory == -1 && swap == 0 {
        return Ok(-1);
    }
    if swap == -1 || swap == 0 {
        return Ok(swap);
    }
    if memory == 0 || memory == -1 {
        return Err("a swap limit needs a memory limit".into());
    }
    if memory < 0 {
        return Err(format!("invalid memory limit {memory}"));
    }
    if swap < memory {
        return Err(format!(
            "memory+swap limit {swap} is below the memory limit {memory}"
        ));
    }
    Ok(swap - memory)
}

fn apply_memory(target: &Target, m: &LinuxMemory, mode: Mode) -> Result<(), CgroupError> {
    let (dir, v2) = target.dir("memory", "linux.resources.memory")?;
    let c = MemController::new(dir.clone(), v2);
    let limit = m.limit().unwrap_or(0);
    let mut swap = m.swap().unwrap_or(0);
    if mode == Mode::Update && m.check_before_update() == Some(true) && limit > 0 {
        let usage_file = if v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        let usage = read_u64(&dir.join(usage_file)).unwrap_or(0);
        if usage > limit as u64 {
            return Err(CgroupError::Invalid(format!(
                "linux.resources.memory.limit: {limit} is below the current usage {usage} and checkBeforeUpdate is set"
            )));
        }
    }
    if v2 {
        if m.swappiness().is_some() {
            return Err(v2_lacks(
                "linux.resources.memory.swappiness",
                "per-cgroup swappiness",
            ));
        }
        if m.disable_oom_killer() == Some(true) {
            return Err(v2_lacks(
                "linux.resources.memory.disableOOMKiller",
                "a way to disable the OOM killer",
            ));
        }
        if m.use_hierarchy() == Some(false) {
            return Err(v2_lacks(
                "linux.resources.memory.useHierarchy",
                "non-hierarchical accounting",
            ));
        }
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            return Err(v2_lacks(
                "linux.resources.memory.kernel",
                "separate kernel memory limits (kernel memory counts against memory.max)",
            ));
        }
        let swap_v2 = memory_swap_to_v2(swap, limit)
            .map_err(|e| CgroupError::Invalid(format!("linux.resources.memory.swap: {e}")))?;
        // runc: equal memory and memory+swap limits mean no swap at all.
        if swap_v2 != 0 || (swap > 0 && swap == limit) {
            via_crate(
                "linux.resources.memory.swap",
                &dir,
                "memory.swap.max",
                swap_v2,
                || c.set_memswap_limit(swap_v2),
            )?;
        }
        if limit != 0 {
            via_crate(
                "linux.resources.memory.limit",
                &dir,
                "memory.max",
                limit,
                || c.set_limit(limit),
            )?;
        }
        if let Some(reservation) = m.reservation().filter(|r| *r != 0) {
            via_crate(
                "linux.resources.memory.reservation",
                &dir,
                "memory.low",
                reservation,
                || c.set_soft_limit(reservation),
            )?;
        }
        return Ok(());
    }
    // v1, as runc's setMemoryAndSwap: unlimited memory without a swap limit
    // means unlimited swap too, and the order of the two writes follows the
    // kernel's rule that memory ≤ memory+swap at every step.
    let has_memsw = dir.join("memory.memsw.limit_in_bytes").exists();
    if limit == -1 && swap == 0 && has_memsw {
        swap = -1;
    }
    let write_limit = |value: i64| {
        via_crate(
            "linux.resources.memory.limit",
            &dir,
            "memory.limit_in_bytes",
            value,
            || c.set_limit(value),
        )
    };
    let write_swap = |value: i64| {
        via_crate(
            "linux.resources.memory.swap",
            &dir,
            "memory.memsw.limit_in_bytes",
            value,
            || c.set_memswap_limit(value),
        )
    };
    let current = read_u64(&dir.join("memory.limit_in_bytes")).unwrap_or(0);
    if limit != 0 && swap != 0 && (swap == -1 || current < swap as u64) {
        write_swap(swap)?;
        write_limit(limit)?;
    } else {
        if limit != 0 {
            write_limit(limit)?;
        }
        if swap != 0 {
            write_swap(swap)?;
        }
    }
    if let Some(reservation) = m.reservation().filter(|r| *r != 0) {
        via_crate(
            "linux.resources.memory.reservation",
            &dir,
            "memory.soft_limit_in_bytes",
            reservation,
            || c.set_soft_limit(reservation),
        )?;
    }
    if let Some(kernel) = m.kernel().filter(|k| *k != 0) {
        write_file(
            "linux.resources.memory.kernel",
            &dir,
            "memory.kmem.limit_in_bytes",
            kernel,
        )?;
    }
    if let Some(tcp) = m.kernel_tcp().filter(|k| *k != 0) {
        via_crate(
            "linux.resources.memory.kernelTCP",
            &dir,
            "memory.kmem.tcp.limit_in_bytes",
            tcp,
            || c.set_tcp_limit(tcp),
        )?;
    }
    if let Some(swappiness) = m.swappiness() {
        if swappiness > 100 {
            return Err(CgroupError::Invalid(format!(
                "linux.resources.memory.swappiness: {swappiness} is outside 0-100"
            )));
        }
        via_crate(
            "linux.resources.memory.swappiness",
            &dir,
            "memory.swappiness",
            swappiness,
            || c.set_swappiness(swappiness),
        )?;
    }
    if m.disable_oom_killer() == Some(true) {
        via_crate(
            "linux.resources.memory.disableOOMKiller",
            &dir,
            "memory.oom_control",
            1,
            || c.disable_oom_killer(),
        )?;
    }
    if let Some(use_hierarchy) = m.use_hierarchy() {
        write_file(
            "linux.resources.memory.useHierarchy",
            &dir,
            "memory.use_hierarchy",
            u8::from(use_hierarchy),
        )?;
    }
    Ok(())
}

fn apply_cpu(target: &Target, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    let any_cpu = cpu.shares().is_some()
        || cpu.quota().is_some()
        || cpu.period().is_some()
        || cpu.realtime_runtime().is_some()
        || cpu.realtime_period().is_some()
        || cpu.idle().is_some()
        || cpu.burst().is_some();
    if any_cpu {
        let (dir, v2) = target.dir("cpu", "linux.resources.cpu")?;
        let c = CpuController::new(dir.clone(), v2);
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            let field = "linux.resources.cpu.shares";
            if v2 {
                let weight = cpu_shares_to_weight(shares);
                via_crate(field, &dir, "cpu.weight", weight, || c.set_shares(weight))?;
            } else {
                via_crate(field, &dir, "cpu.shares", shares, || c.set_shares(shares))?;
                // The kernel clamps shares to 2..262144: say so, as runc does.
                let got = read_u64(&dir.join("cpu.shares")).unwrap_or(shares);
                if got != shares {
                    return Err(CgroupError::Invalid(format!(
                        "{field}: {shares} is outside what the kernel allows (it set {got})"
                    )));
                }
            }
        }
        let quota = cpu.quota().unwrap_or(0);
        let period = cpu.period().unwrap_or(0);
        if quota != 0 || period != 0 {
            let field = "linux.resources.cpu.quota";
            if v2 {
                let line = format!(
                    "{} {}",
                    if quota > 0 {
                        quota.to_string()
                    } else {
                        "max".into()
                    },
                    if period != 0 {
                        period.to_string()
                    } else {
                        "(current)".into()
                    }
                );
                via_crate(field, &dir, "cpu.max", line, || {
                    c.set_cfs_quota_and_period(Some(quota), (period != 0).then_some(period))
                })?;
            } else {
                if period != 0 {
                    via_crate(
                        "linux.resources.cpu.period",
                        &dir,
                        "cpu.cfs_period_us",
                        period,
                        || c.set_cfs_period(period),
                    )?;
                }
                if quota != 0 {
                    via_crate(field, &dir, "cpu.cfs_quota_us", quota, || {
                        c.set_cfs_quota(quota)
                    })?;
                }
            }
        }
        if let Some(burst) = cpu.burst() {
            let file = if v2 {
                "cpu.max.burst"
            } else {
                "cpu.cfs_burst_us"
            };
            write_file("linux.resources.cpu.burst", &dir, file, burst)?;
        }
        let rt_period = cpu.realtime_period().unwrap_or(0);
        let rt_runtime = cpu.realtime_runtime().unwrap_or(0);
        if rt_period != 0 || rt_runtime != 0 {
            if v2 {
                return Err(v2_lacks(
                    "linux.resources.cpu.realtimeRuntime",
                    "realtime CPU limits",
                ));
            }
            if rt_period != 0 {
                via_crate(
                    "linux.resources.cpu.realtimePeriod",
                    &dir,
                    "cpu.rt_period_us",
                    rt_period,
                    || c.set_rt_period_us(rt_period),
                )?;
            }
            if rt_runtime != 0 {
                via_crate(
                    "linux.resources.cpu.realtimeRuntime",
                    &dir,
                    "cpu.rt_runtime_us",
                    rt_runtime,
                    || c.set_rt_runtime(rt_runtime),
                )?;
            }
        }
        if let Some(idle) = cpu.idle() {
            write_file("linux.resources.cpu.idle", &dir, "cpu.idle", idle)?;
        }
    }
    let cpus = cpu.cpus().as_deref().filter(|s| !s.is_empty());
    let mems = cpu.mems().as_deref().filter(|s| !s.is_empty());
    if cpus.is_some() || mems.is_some() {
        let (dir, v2) = target.dir("cpuset", "linux.resources.cpu.cpus")?;
        let c = CpuSetController::new(dir.clone(), v2);
        if let Some(cpus) = cpus {
            via_crate(
                "linux.resources.cpu.cpus",
                &dir,
                "cpuset.cpus",
                cpus,
                || c.set_cpus(cpus),
            )?;
        }
        if let Some(mems) = mems {
            via_crate(
                "linux.resources.cpu.mems",
                &dir,
                "cpuset.mems",
                mems,
                || c.set_mems(mems),
            )?;
        }
    }
    Ok(())
}

fn device_number(field: &str, n: i64) -> Result<u64, CgroupError> {
    u64::try_from(n)
        .map_err(|_| CgroupError::Invalid(format!("{field}: device number {n} is negative")))
}

fn apply_block_io(target: &Target, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let v2_probe = target.dir("blkio", "linux.resources.blockIO").ok();
    let (dir, v2) = match v2_probe {
        Some(found) => found,
        None => target.dir("io", "linux.resources.blockIO")?,
    };
    let c = BlkIoController::new(dir.clone(), v2);
    if v2 {
        if b.leaf_weight().is_some() {
            return Err(v2_lacks(
                "linux.resources.blockIO.leafWeight",
                "leaf weights",
            ));
        }
        let bfq = dir.join("io.bfq.weight").exists();
        if let Some(weight) = b.weight().filter(|w| *w != 0) {
            let field = "linux.resources.blockIO.weight";
            if bfq {
                write_file(field, &dir, "io.bfq.weight", weight)?;
            } else {
                write_file(field, &dir, "io.weight", blkio_weight_to_io_weight(weight))?;
            }
        }
        for (i, wd) in b.weight_device().iter().flatten().enumerate() {
            let field = format!("linux.resources.blockIO.weightDevice[{i}]");
            if !bfq {
                return Err(CgroupError::Unsupported(format!(
                    "{field}: per-device weights on cgroup v2 need the BFQ I/O scheduler (io.bfq.weight), which this host lacks: remove the field"
                )));
            }
            if wd.leaf_weight().is_some() {
                return Err(v2_lacks(&format!("{field}.leafWeight"), "leaf weights"));
            }
            if let Some(weight) = wd.weight() {
                let line = format!(
                    "{}:{} {weight}",
                    device_number(&field, wd.major())?,
                    device_number(&field, wd.minor())?
                );
                write_file(&field, &dir, "io.bfq.weight", line)?;
            }
        }
    } else {
        // Kernels without CFQ name the weights after BFQ (runc's detectWeightFilenames).
        let (weight_file, weight_device_file) = if dir.join("blkio.weight").exists() {
            ("blkio.weight", "blkio.weight_device")
        } else {
            ("blkio.bfq.weight", "blkio.bfq.weight_device")
        };
        if let Some(weight) = b.weight().filter(|w| *w != 0) {
            write_file("linux.resources.blockIO.weight", &dir, weight_file, weight)?;
        }
        if let Some(leaf) = b.leaf_weight().filter(|w| *w != 0) {
            let field = "linux.resources.blockIO.leafWeight";
            via_crate(field, &dir, "blkio.leaf_weight", leaf, || {
                c.set_leaf_weight(u64::from(leaf))
            })?;
        }
        for (i, wd) in b.weight_device().iter().flatten().enumerate() {
            let field = format!("linux.resources.blockIO.weightDevice[{i}]");
            let (major, minor) = (
                device_number(&field, wd.major())?,
                device_number(&field, wd.minor())?,
            );
            if let Some(weight) = wd.weight().filter(|w| *w != 0) {
                write_file(
                    &field,
                    &dir,
                    weight_device_file,
                    format!("{major}:{minor} {weight}"),
                )?;
            }
            if let Some(leaf) = wd.leaf_weight().filter(|w| *w != 0) {
                via_crate(
                    &field,
                    &dir,
                    "blkio.leaf_weight_device",
                    format!("{major}:{minor} {leaf}"),
                    || c.set_leaf_weight_for_device(major, minor, u64::from(leaf)),
                )?;
            }
        }
    }
    type Setter = fn(&BlkIoController, u64, u64, u64) -> cgroups_rs::error::Result<()>;
    type Throttle<'a> = (
        &'a str,
        &'a Option<Vec<LinuxThrottleDevice>>,
        &'a str,
        &'a str,
        Setter,
    );
    let throttles: [Throttle; 4] = [
        (
            "throttleReadBpsDevice",
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
            "rbps",
            BlkIoController::throttle_read_bps_for_device,
        ),
        (
            "throttleWriteBpsDevice",
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
            "wbps",
            BlkIoController::throttle_write_bps_for_device,
        ),
        (
            "throttleReadIOPSDevice",
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
            "riops",
            BlkIoController::throttle_read_iops_for_device,
        ),
        (
            "throttleWriteIOPSDevice",
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
            "wiops",
            BlkIoController::throttle_write_iops_for_device,
        ),
    ];
    for (name, devices, v1_file, v2_key, setter) in throttles {
        for (i, td) in devices.iter().flatten().enumerate() {
            let field = format!("linux.resources.blockIO.{name}[{i}]");
            let major = device_number(&field, td.major())?;
            let minor = device_number(&field, td.minor())?;
            let rate = td.rate();
            if v2 && rate == 0 {
                // runc: a zero rate lifts the limit.
                write_file(
                    &field,
                    &dir,
                    "io.max",
                    format!("{major}:{minor} {v2_key}=max"),
                )?;
            } else if v2 {
                via_crate(
                    &field,
                    &dir,
                    "io.max",
                    format!("{major}:{minor} {v2_key}={rate}"),
                    || setter(&c, major, minor, rate),
                )?;
            } else {
                via_crate(
                    &field,
                    &dir,
                    v1_file,
                    format!("{major}:{minor} {rate}"),
                    || setter(&c, major, minor, rate),
                )?;
            }
        }
    }
    Ok(())
}

fn apply_unified(
    target: &Target,
    unified: &std::collections::HashMap<String, String>,
) -> Result<(), CgroupError> {
    let Some(dir) = target.v2.as_ref().filter(|_| target.is_v2_only()) else {
        return Err(CgroupError::Unsupported(
            "linux.resources.unified: this host's controllers are on cgroup v1; unified applies to cgroup v2 hosts only: remove it"
                .into(),
        ));
    };
    let mut keys: Vec<&String> = unified.keys().collect();
    keys.sort();
    for key in keys {
        let field = format!("linux.resources.unified[{key:?}]");
        if key.is_empty() || key.contains('/') || key.starts_with('.') {
            return Err(CgroupError::Invalid(format!(
                "{field}: not a cgroup file name"
            )));
        }
        write_file(&field, dir, key, &unified[key])?;
    }
    Ok(())
}

fn v2_lacks(field: &str, what: &str) -> CgroupError {
    CgroupError::Unsupported(format!(
        "{field}: cgroup v2 has no {what}: remove the field on this host"
    ))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Writes `value` into an existing cgroup file (cgroupfs cannot create files:
/// a missing one means the kernel or the controller lacks it).
pub fn write_file(
    field: &str,
    dir: &Path,
    file: &str,
    value: impl Display,
) -> Result<(), CgroupError> {
    let path = dir.join(file);
    let value = value.to_string();
    // O_TRUNC as a shell's `>` does: cgroupfs ignores it, and a tree laid
    // out in a temporary directory needs it.
    let result = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    result.map_err(|cause| CgroupError::Write {
        field: field.to_owned(),
        path,
        value,
        cause,
    })
}

/// Runs a cgroups-rs write, turning its error into one naming `field`. The
/// file is checked first because cgroups-rs opens with `O_CREAT`, which
/// cgroupfs refuses with a misleading EACCES when the file does not exist.
fn via_crate(
    field: &str,
    dir: &Path,
    file: &str,
    value: impl Display,
    op: impl FnOnce() -> cgroups_rs::error::Result<()>,
) -> Result<(), CgroupError> {
    let path = dir.join(file);
    let value = value.to_string();
    let error = |cause| CgroupError::Write {
        field: field.to_owned(),
        path: path.clone(),
        value: value.clone(),
        cause,
    };
    if !path.exists() {
        return Err(error(std::io::Error::from(std::io::ErrorKind::NotFound)));
    }
    op().map_err(|e| {
        let source = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(|io| io.raw_os_error())
            .map(std::io::Error::from_raw_os_error)
            .unwrap_or_else(|| std::io::Error::other(e.to_string()));
        error(source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_to_weight_as_runc_does() {
        assert_eq!(cpu_shares_to_weight(0), 0);
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 39);
        assert_eq!(cpu_shares_to_weight(262144), 10000);
    }

    #[test]
    fn blkio_weight_converts_to_io_weight_as_runc_does() {
        assert_eq!(blkio_weight_to_io_weight(0), 0);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10000);
    }

    /// A temporary directory laid out like a v2 cgroup with every controller:
    /// the files exist, as cgroupfs makes them, with the kernel's defaults.
    fn v2_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            (
                "cgroup.controllers",
                "cpuset cpu io memory hugetlb pids rdma misc",
            ),
            ("cpu.weight", "100"),
            ("cpu.max", "max 100000"),
            ("cpu.max.burst", "0"),
            ("cpu.idle", "0"),
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
            ("memory.max", "max"),
            ("memory.low", "0"),
            ("memory.swap.max", "max"),
            ("memory.current", "4096"),
            ("pids.max", "max"),
            ("io.weight", "default 100"),
            ("io.max", ""),
            ("hugetlb.2MB.max", "max"),
            ("rdma.max", ""),
            ("memory.high", "max"),
        ];
        for (file, content) in files {
            std::fs::write(dir.path().join(file), content).unwrap();
        }
        dir
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap()
    }

    fn v2_target(dir: &Path) -> Target {
        Target {
            v1: Vec::new(),
            v2: Some(dir.to_path_buf()),
        }
    }

    #[test]
    fn v2_writes_use_runc_conversions_and_files() {
        let tree = v2_tree();
        let dir = tree.path();
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": { "limit": 104857600, "swap": 209715200, "reservation": 52428800 },
            "cpu": { "shares": 1024, "quota": 50000, "period": 200000, "cpus": "0-1", "mems": "0", "idle": 1, "burst": 1000 },
            "pids": { "limit": 64 },
            "blockIO": { "weight": 500,
                         "throttleReadBpsDevice": [ { "major": 8, "minor": 0, "rate": 1048576 } ],
                         "throttleWriteIOPSDevice": [ { "major": 8, "minor": 0, "rate": 0 } ] },
            "hugepageLimits": [ { "pageSize": "2MB", "limit": 4194304 } ],
            "rdma": { "mlx4_0": { "hcaHandles": 2, "hcaObjects": 2000 } },
            "unified": { "memory.high": "90000000" }
        }))
        .unwrap();
        apply(&v2_target(dir), &r, Mode::Create).unwrap();
        assert_eq!(read(dir, "memory.max"), "104857600");
        // memory+swap 200 MiB over memory 100 MiB: 100 MiB of swap.
        assert_eq!(read(dir, "memory.swap.max"), "104857600");
        assert_eq!(read(dir, "memory.low"), "52428800");
        assert_eq!(read(dir, "cpu.weight"), "39");
        assert_eq!(read(dir, "cpu.max"), "50000 200000");
        assert_eq!(read(dir, "cpu.max.burst"), "1000");
        assert_eq!(read(dir, "cpu.idle"), "1");
        assert_eq!(read(dir, "cpuset.cpus"), "0-1");
        assert_eq!(read(dir, "cpuset.mems"), "0");
        assert_eq!(read(dir, "pids.max"), "64");
        assert_eq!(read(dir, "io.weight"), "4950");
        // Each io.max write is one line; the file keeps the last.
        assert_eq!(read(dir, "io.max"), "8:0 wiops=max");
        assert_eq!(read(dir, "hugetlb.2MB.max"), "4194304");
        assert_eq!(read(dir, "rdma.max"), "mlx4_0 hca_handle=2 hca_object=2000");
        assert_eq!(read(dir, "memory.high"), "90000000");
    }

    #[test]
    fn v2_unlimited_values_are_max() {
        let tree = v2_tree();
        let dir = tree.path();
        std::fs::write(dir.join("cpu.max"), "20000 100000").unwrap();
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": { "limit": -1 }, "cpu": { "quota": -1 }, "pids": { "limit": -1 }
        }))
        .unwrap();
        apply(&v2_target(dir), &r, Mode::Create).unwrap();
        assert_eq!(read(dir, "memory.max"), "max");
        assert_eq!(read(dir, "memory.swap.max"), "max");
        assert_eq!(read(dir, "cpu.max"), "max 100000");
        assert_eq!(read(dir, "pids.max"), "max");
    }

    #[test]
    fn v2_refuses_what_it_has_no_file_for_by_name() {
        let tree = v2_tree();
        let target = v2_target(tree.path());
        for (resources, field) in [
            (
                serde_json::json!({ "memory": { "swappiness": 10 } }),
                "linux.resources.memory.swappiness",
            ),
            (
                serde_json::json!({ "memory": { "disableOOMKiller": true } }),
                "linux.resources.memory.disableOOMKiller",
            ),
            (
                serde_json::json!({ "cpu": { "realtimeRuntime": 1000 } }),
                "linux.resources.cpu.realtimeRuntime",
            ),
            (
                serde_json::json!({ "network": { "classID": 1 } }),
                "linux.resources.network",
            ),
            (
                serde_json::json!({ "blockIO": { "leafWeight": 100 } }),
                "linux.resources.blockIO.leafWeight",
            ),
            (
                serde_json::json!({ "memory": { "limit": 100, "swap": 50 } }),
                "linux.resources.memory.swap",
            ),
            (
                serde_json::json!({ "unified": { "../etc/passwd": "x" } }),
                "linux.resources.unified",
            ),
            (
                serde_json::json!({ "unified": { "memory.nosuch": "1" } }),
                "linux.resources.unified",
            ),
        ] {
            let r: LinuxResources = serde_json::from_value(resources).unwrap();
            let err = apply(&target, &r, Mode::Create).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn check_before_update_refuses_a_limit_below_usage() {
        let tree = v2_tree();
        let target = v2_target(tree.path());
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": { "limit": 1024, "checkBeforeUpdate": true }
        }))
        .unwrap();
        let err = apply(&target, &r, Mode::Update).unwrap_err().to_string();
        assert!(err.contains("checkBeforeUpdate"), "{err}");
        apply(&target, &r, Mode::Create).unwrap();
        assert_eq!(read(tree.path(), "memory.max"), "1024");
    }

    #[test]
    fn memory_swap_converts_to_swap_only() {
        assert_eq!(memory_swap_to_v2(0, -1), Ok(-1));
        assert_eq!(memory_swap_to_v2(-1, 100), Ok(-1));
        assert_eq!(memory_swap_to_v2(0, 100), Ok(0));
        assert_eq!(memory_swap_to_v2(300, 100), Ok(200));
        assert_eq!(memory_swap_to_v2(100, 100), Ok(0));
        assert!(memory_swap_to_v2(50, 100).is_err());
        assert!(memory_swap_to_v2(50, 0).is_err());
    }
}
