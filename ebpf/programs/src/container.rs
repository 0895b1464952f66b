//! Which watched container the current task belongs to.
//!
//! This runs on every syscall of every task on the host while a container is watched, so the
//! common answers take no function call: the task's own cgroup id comes from plain loads
//! through `current->cgroups->dfl_cgrp->kn->id`, and the `WATCHED` table is an array the
//! verifier inlines. Only while some watched container has cgroups below its own (`NESTED`)
//! do tasks whose own cgroup is not watched have their ancestors looked up.
//!
//! Two ways to find the task's cgroups, chosen per program by a const parameter (each program
//! exists in both flavours and the loader keeps the first the kernel accepts):
//! - [`BTF`]: `bpf_get_current_task_btf` and loads the verifier checks against the kernel's
//!   types, ancestors by `bpf_get_current_ancestor_cgroup_id`; Linux 6.1+ (5.11 for the task
//!   helper, 6.1 for the ancestor helper in tracing programs);
//! - [`COMPAT`]: `bpf_get_current_cgroup_id`, and the ancestors read with
//!   `bpf_probe_read_kernel` from `current->cgroups->dfl_cgrp` (`ancestors[]` or, before
//!   Linux 5.19, `ancestor_ids[]`); Linux 5.5+. About 14 ns more per syscall.
use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_task,
        bpf_get_current_task_btf,
    },
};
use lucid_ebpf_common::{
    watched_home, KernelOffsets, Watch, MAX_WATCHED_LEVELS, WATCHED_PROBES, WATCHED_TABLE_SIZE,
};

use crate::maps::{kernel_offsets, KERNEL_OFFSETS, LEVELS, NESTED, WATCHED};

/// The flavour that reads the task's cgroup through BTF-typed pointers (Linux 6.1+).
pub const BTF: bool = true;
/// The flavour that uses only helpers older kernels have (Linux 5.5+).
pub const COMPAT: bool = false;

/// The watched container of the current task: its cgroup id and [`Watch`] entry.
///
/// A task counts for the container whose cgroup is its own or, for tasks in cgroups a container
/// created below its own, the deepest watched ancestor.
#[inline(always)]
pub fn current_container<const FLAVOUR: bool>() -> Option<(u64, Watch)> {
    let own = if FLAVOUR == BTF {
        current_cgroup_id()
    } else {
        // SAFETY: a helper call without arguments.
        unsafe { bpf_get_current_cgroup_id() }
    };
    if let Some(watch) = lookup(own) {
        return Some((own, watch));
    }
    if NESTED.get(0).copied().unwrap_or(0) == 0 {
        return None;
    }
    if FLAVOUR == BTF {
        nested_container()
    } else {
        nested_container_compat()
    }
}

/// The deepest watched ancestor of the current task's cgroup, looked up at each level that
/// holds a watched cgroup. Needs Linux 6.1 (`bpf_get_current_ancestor_cgroup_id` in tracing
/// programs).
#[inline(always)]
fn nested_container() -> Option<(u64, Watch)> {
    let levels = LEVELS.get(0)?;
    let len = levels.len as usize;
    for i in 0..MAX_WATCHED_LEVELS {
        if i >= len {
            break;
        }
        // SAFETY: a helper call without pointers; it returns 0 when the task's cgroup is
        // shallower than the level.
        let cgroup_id = unsafe { bpf_get_current_ancestor_cgroup_id(levels.levels[i] as i32) };
        if let Some(watch) = lookup(cgroup_id) {
            return Some((cgroup_id, watch));
        }
    }
    None
}

/// [`nested_container`] with probe reads from `current->cgroups->dfl_cgrp` (Linux 5.5+).
#[inline(always)]
fn nested_container_compat() -> Option<(u64, Watch)> {
    let o = kernel_offsets();
    if o.task_cgroups == 0 || o.css_set_dfl_cgrp == 0 || o.cgroup_level == 0 {
        return None;
    }
    // SAFETY: a helper call without arguments; the pointer is only probe-read.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let cset: *const u8 = read(task, o.task_cgroups as usize)?;
    let cgroup: *const u8 = read(cset, o.css_set_dfl_cgrp as usize)?;
    let own_level: i32 = read(cgroup, o.cgroup_level as usize)?;
    let levels = LEVELS.get(0)?;
    let len = levels.len as usize;
    for i in 0..MAX_WATCHED_LEVELS {
        if i >= len {
            break;
        }
        let level = levels.levels[i];
        if level as i32 > own_level {
            continue;
        }
        let cgroup_id = ancestor_id(cgroup, level, &o)?;
        if let Some(watch) = lookup(cgroup_id) {
            return Some((cgroup_id, watch));
        }
    }
    None
}

/// The id of the ancestor at `level` of the v2 cgroup `cgroup` (probe reads; the caller checks
/// that `level` is not deeper than the cgroup's own).
#[inline(always)]
pub fn ancestor_id(cgroup: *const u8, level: u32, o: &KernelOffsets) -> Option<u64> {
    if o.cgroup_ancestors != 0 && o.cgroup_kn != 0 && o.kernfs_node_id != 0 {
        // cgroup->ancestors[level]->kn->id
        let ancestor: *const u8 = read(cgroup, o.cgroup_ancestors as usize + 8 * level as usize)?;
        let kn: *const u8 = read(ancestor, o.cgroup_kn as usize)?;
        return read(kn, o.kernfs_node_id as usize);
    }
    if o.cgroup_ancestor_ids != 0 {
        // cgroup->ancestor_ids[level], before Linux 5.19
        return read(cgroup, o.cgroup_ancestor_ids as usize + 8 * level as usize);
    }
    None
}

/// `bpf_probe_read_kernel` of a `T` at `base + offset`.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: usize) -> Option<T> {
    // SAFETY: a probe read: a bad address makes the helper fail, not fault.
    unsafe { bpf_probe_read_kernel(base.add(offset).cast::<T>()) }.ok()
}

/// The v2 cgroup id of the current task.
///
/// Reads it through the task's BTF-typed pointers at offsets the loader took from the kernel's
/// BTF (constants to the verifier, which checks each load against the kernel's types); falls
/// back to the helper, a function call, when an offset is unknown.
#[inline(always)]
fn current_cgroup_id() -> u64 {
    // Field by field: reading the whole struct costs a load per field on every syscall.
    // SAFETY: volatile reads of a static the loader rewrote before loading (volatile so the
    // compiler does not fold the zero initial values).
    let (task_cgroups, css_set_dfl_cgrp, cgroup_kn, kernfs_node_id) = unsafe {
        (
            core::ptr::read_volatile(&raw const KERNEL_OFFSETS.task_cgroups),
            core::ptr::read_volatile(&raw const KERNEL_OFFSETS.css_set_dfl_cgrp),
            core::ptr::read_volatile(&raw const KERNEL_OFFSETS.cgroup_kn),
            core::ptr::read_volatile(&raw const KERNEL_OFFSETS.kernfs_node_id),
        )
    };
    if task_cgroups == 0 || css_set_dfl_cgrp == 0 || cgroup_kn == 0 || kernfs_node_id == 0 {
        // SAFETY: a helper call without arguments.
        return unsafe { bpf_get_current_cgroup_id() };
    }
    // SAFETY: `current` is a trusted task_struct pointer; each load is at the offset of the
    // member named in the comment, which the verifier checks against the kernel's BTF (and
    // turns into a fault-safe load), so a wrong offset fails the load, not the kernel.
    unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        // task->cgroups (struct css_set *, RCU-protected: tracing programs hold the RCU lock)
        let cset = *task.add(task_cgroups as usize).cast::<*const u8>();
        // css_set->dfl_cgrp (struct cgroup *)
        let cgroup = *cset.add(css_set_dfl_cgrp as usize).cast::<*const u8>();
        // cgroup->kn (struct kernfs_node *)
        let kn = *cgroup.add(cgroup_kn as usize).cast::<*const u8>();
        // kn->id: the cgroup id
        *kn.add(kernfs_node_id as usize).cast::<u64>()
    }
}

/// The [`Watch`] of watched cgroup `cgroup_id` in the `WATCHED` table.
#[inline(always)]
pub fn lookup(cgroup_id: u64) -> Option<Watch> {
    if cgroup_id == 0 {
        return None;
    }
    let mut index = watched_home(cgroup_id);
    for _ in 0..WATCHED_PROBES {
        let entry = WATCHED.get(index)?;
        if entry.cgroup_id == cgroup_id {
            return Some(entry.watch);
        }
        if entry.cgroup_id == 0 {
            return None;
        }
        index = (index + 1) & (WATCHED_TABLE_SIZE - 1);
    }
    None
}
