//! Which watched container the current task belongs to.
use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use lucid_ebpf_common::{Watch, MAX_WATCHED_LEVELS};

use crate::maps::{LEVELS, WATCHED};

/// The watched container of the current task: its cgroup id and [`Watch`] entry.
///
/// Looks up the task's ancestor cgroup at each level that holds a watched cgroup, deepest
/// first, so tasks in cgroups a container creates under its own still count for it. Costs one
/// array read when nothing is watched, plus one helper call and one hash lookup per level in use.
/// Needs Linux 6.1 (`bpf_get_current_ancestor_cgroup_id` in tracing programs).
#[inline(always)]
pub fn current_container() -> Option<(u64, Watch)> {
    let levels = LEVELS.get(0)?;
    let len = levels.len as usize;
    for i in 0..MAX_WATCHED_LEVELS {
        if i >= len {
            break;
        }
        let level = levels.levels[i];
        // SAFETY: a helper call without pointers; it returns 0 when the task's cgroup is
        // shallower than `level`.
        let cgroup_id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if cgroup_id == 0 {
            continue;
        }
        // SAFETY: the value is copied out at once, before any map update could free it.
        if let Some(watch) = unsafe { WATCHED.get(&cgroup_id) } {
            return Some((cgroup_id, *watch));
        }
    }
    None
}
