//! `linux.resources.cpu`: the cpu controller (shares, quota and period, burst, idle,
//! real-time) and cpuset (cpus, mems), with runc's v2 conversions.

use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuset::CpuSetController;
use oci_spec::runtime::{LinuxCpu, LinuxResources};

use super::{read_u64, v2_lacks, via_crate, write_file, Controller, Mode, Target};
use crate::cgroups::CgroupError;

/// Cpu controller's part of `linux.resources`.
pub(super) struct Cpu;

impl Controller for Cpu {
    fn apply(&self, target: &Target, r: &LinuxResources, _mode: Mode) -> Result<(), CgroupError> {
        match r.cpu() {
            Some(cpu) => apply_cpu(target, cpu),
            None => Ok(()),
        }
    }
}

/// runc's `ConvertCPUSharesToCgroupV2Value` (1.1): shares 2..262144 onto weight 1..10000.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262142
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
