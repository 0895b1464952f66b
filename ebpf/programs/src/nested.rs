//! Cgroups created below a watched container's own.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use lucid_ebpf_common::{MAX_CONTAINERS, MAX_WATCHED_LEVELS};

use crate::{
    container::{ancestor_id, lookup, read},
    maps::{atomic_add, kernel_offsets, COUNTERS, LEVELS, NESTED},
};

/// Counts a v2 cgroup created below a watched container's cgroup against that container
/// (`nested_cgroups`) and raises `NESTED`, so that the syscall and process programs look up
/// the ancestors of tasks whose own cgroup is not watched.
///
/// `tp_btf/cgroup_mkdir(cgrp, path)`, after the cgroup is in place; runs once per cgroup made
/// anywhere on the host, a rare event. Needs Linux 5.5 with BTF.
#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: BtfTracePointContext) -> i32 {
    match try_cgroup_mkdir(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_cgroup_mkdir(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let levels = LEVELS.get(0).ok_or(())?;
    if levels.len == 0 {
        return Ok(());
    }
    let cgroup: *const u8 = ctx.arg(0);
    let o = kernel_offsets();
    let found = if o.cgroup_root == 0
        || o.cgroup_root_hierarchy_id == 0
        || o.cgroup_level == 0
        || (o.cgroup_ancestors == 0 && o.cgroup_ancestor_ids == 0)
    {
        // Without the offsets nothing tells where the cgroup is: assume below a container.
        None
    } else {
        // The v2 hierarchy is hierarchy 0; v1 cgroup ids are another numbering.
        let root: *const u8 = read(cgroup, o.cgroup_root as usize).ok_or(())?;
        let hierarchy: i32 = read(root, o.cgroup_root_hierarchy_id as usize).ok_or(())?;
        if hierarchy != 0 {
            return Ok(());
        }
        let level: i32 = read(cgroup, o.cgroup_level as usize).ok_or(())?;
        let mut found = Err(());
        for i in 0..MAX_WATCHED_LEVELS {
            if i >= levels.len as usize {
                break;
            }
            let watched_level = levels.levels[i];
            if watched_level as i32 >= level {
                continue;
            }
            let id = ancestor_id(cgroup, watched_level, &o).ok_or(())?;
            if let Some(watch) = lookup(id) {
                found = Ok(watch.slot);
                break;
            }
        }
        Some(found?)
    };
    if let Some(slot) = found {
        if slot < MAX_CONTAINERS {
            if let Some(counters) = COUNTERS.get_ptr_mut(slot) {
                // SAFETY: `counters` comes from a successful array lookup; the field is an
                // aligned u64.
                atomic_add(unsafe { &raw mut (*counters).nested_cgroups }, 1);
            }
        }
    }
    // After the container's count: user space clears NESTED only when no container's count
    // is nonzero, and reads the counts again after clearing.
    if let Some(nested) = NESTED.get_ptr_mut(0) {
        // SAFETY: from a successful array lookup; an aligned u64.
        unsafe { core::ptr::write_volatile(nested, 1) };
    }
    Ok(())
}
