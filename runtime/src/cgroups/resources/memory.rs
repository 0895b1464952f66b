//! `linux.resources.memory`: v1's `memory.*` files, v2's `memory.max`, `memory.low` and
//! `memory.swap.max` with runc's conversions, and `checkBeforeUpdate`.

use cgroups_rs::memory::MemController;
use oci_spec::runtime::{LinuxMemory, LinuxResources};

use super::{read_u64, v2_lacks, via_crate, write_file, Controller, Mode, Target};
use crate::cgroups::CgroupError;

/// Memory controller's part of `linux.resources`.
pub(super) struct Memory;

impl Controller for Memory {
    fn apply(&self, target: &Target, r: &LinuxResources, mode: Mode) -> Result<(), CgroupError> {
        match r.memory() {
            Some(m) => apply_memory(target, m, mode),
            None => Ok(()),
        }
    }
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
