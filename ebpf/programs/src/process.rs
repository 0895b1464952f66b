//! Exec and exit events, exec/exit/OOM counters of watched containers.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes, generated::bpf_ktime_get_ns,
    },
    macros::{btf_tracepoint, fentry},
    programs::{BtfTracePointContext, FEntryContext},
};
use lucid_ebpf_common::{event_kind, stat, ProcessEvent, Watch, MAX_CONTAINERS};

use crate::{
    container::{current_container, read, BTF, COMPAT},
    maps::{atomic_add, count_stat, kernel_offsets, COUNTERS, EVENTS, INFLIGHT, OOM_VICTIMS},
};

/// Sends an exec event and counts the exec, for tasks of watched containers.
///
/// `tp_btf/sched_process_exec(p, old_pid, bprm)`; needs Linux 5.5 with BTF, 6.1 for this
/// flavour.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn process_exec(ctx: BtfTracePointContext) -> i32 {
    match try_process_exec::<BTF>(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// [`process_exec`] in the compat flavour (Linux 5.5+).
#[btf_tracepoint(function = "sched_process_exec")]
pub fn process_exec_compat(ctx: BtfTracePointContext) -> i32 {
    match try_process_exec::<COMPAT>(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

#[inline(always)]
fn try_process_exec<const FLAVOUR: bool>(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let (cgroup_id, watch) = current_container::<FLAVOUR>().ok_or(())?;
    count(watch, |c| &raw mut c.execs);
    let task: *const u8 = ctx.arg(0);
    let bprm: *const u8 = ctx.arg(2);
    let offsets = kernel_offsets();
    let ppid = if offsets.task_real_parent != 0 && offsets.task_tgid != 0 {
        // SAFETY: probe reads of kernel memory at offsets the loader took from this kernel's
        // BTF; a bad address makes the helper fail, not fault.
        unsafe {
            bpf_probe_read_kernel(
                task.add(offsets.task_real_parent as usize)
                    .cast::<*const u8>(),
            )
            .and_then(|parent| {
                bpf_probe_read_kernel(parent.add(offsets.task_tgid as usize).cast::<u32>())
            })
            .unwrap_or(0)
        }
    } else {
        0
    };
    let Some(mut entry) = EVENTS.reserve::<ProcessEvent>(0) else {
        count_stat(stat::EVENTS_DROPPED);
        return Err(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to reserved ring-buffer memory the size of a ProcessEvent, owned
    // by this program until submit or discard.
    unsafe {
        (*event).kind = event_kind::EXEC;
        (*event).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*event).ppid = ppid;
        (*event).exit_status = 0;
        (*event).cgroup_id = cgroup_id;
        (*event).ktime_ns = bpf_ktime_get_ns();
        (*event).comm = bpf_get_current_comm().unwrap_or_default();
        (*event).filename[0] = 0;
        if offsets.binprm_filename != 0 {
            if let Ok(filename) = bpf_probe_read_kernel(
                bprm.add(offsets.binprm_filename as usize)
                    .cast::<*const u8>(),
            ) {
                let _ = bpf_probe_read_kernel_str_bytes(filename, &mut (*event).filename);
            }
        }
    }
    entry.submit(0);
    Ok(())
}

/// Sends an exit event with the wait status, counts exits and OOM kills, and forgets the
/// exiting thread's in-flight syscall.
///
/// Run by every exiting thread in its own context after `do_exit` stored the wait status in
/// `p->exit_code`. Three hooks, the loader keeps the first the kernel accepts:
/// - `tp_btf/sched_process_exit(p, group_dead)`: the tracepoint got `group_dead` in Linux
///   6.16 (not in Debian's 6.12); this flavour needs 6.1;
/// - fentry on `taskstats_exit(tsk, group_dead)` ([`process_exit_fentry`]), called just
///   before the tracepoint on older kernels; needs BPF trampolines (Linux 5.5+);
/// - `tp_btf/sched_process_exit(p)` ([`process_exit_leader`]) where trampolines are refused:
///   the group is dead when its leader exits with `signal->live` at zero, which misses a
///   process whose leader thread ended before its last thread.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit(ctx: BtfTracePointContext) -> i32 {
    let group_dead: u64 = ctx.arg(1);
    match try_process_exit::<BTF>(ctx.arg(0), group_dead & 0xff != 0) {
        Ok(()) | Err(()) => 0,
    }
}

/// [`process_exit`] on fentry `taskstats_exit(tsk, group_dead)`; `tsk` is the current task.
#[fentry(function = "taskstats_exit")]
pub fn process_exit_fentry(ctx: FEntryContext) -> i32 {
    let group_dead: u64 = ctx.arg(1);
    match try_process_exit::<BTF>(ctx.arg(0), group_dead as u32 != 0) {
        Ok(()) | Err(()) => 0,
    }
}

/// [`process_exit_fentry`] in the compat flavour (Linux 5.5+).
#[fentry(function = "taskstats_exit")]
pub fn process_exit_fentry_compat(ctx: FEntryContext) -> i32 {
    let group_dead: u64 = ctx.arg(1);
    match try_process_exit::<COMPAT>(ctx.arg(0), group_dead as u32 != 0) {
        Ok(()) | Err(()) => 0,
    }
}

/// [`process_exit`] on the one-argument tracepoint, for kernels that refuse trampolines: the
/// leader's exit with no live thread left stands for the group's.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit_leader(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    match try_process_exit::<COMPAT>(task, leader_of_dead_group(task)) {
        Ok(()) | Err(()) => 0,
    }
}

/// Whether `task` is its thread group's leader and no thread of the group is live.
#[inline(always)]
fn leader_of_dead_group(task: *const u8) -> bool {
    let o = kernel_offsets();
    if o.task_pid == 0 || o.task_tgid == 0 || o.task_signal == 0 || o.signal_live == 0 {
        return false;
    }
    let (Some(pid), Some(tgid)) = (
        read::<u32>(task, o.task_pid as usize),
        read::<u32>(task, o.task_tgid as usize),
    ) else {
        return false;
    };
    if pid != tgid {
        return false;
    }
    let Some(signal) = read::<*const u8>(task, o.task_signal as usize) else {
        return false;
    };
    read::<i32>(signal, o.signal_live as usize) == Some(0)
}

#[inline(always)]
fn try_process_exit<const FLAVOUR: bool>(task: *const u8, group_dead: bool) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    // Removing is a no-op for tasks never chosen; it must run for every task so no victim's
    // entry outlives it, watched or not.
    let oom_victim = OOM_VICTIMS.remove(&tid).is_ok();
    let (cgroup_id, watch) = current_container::<FLAVOUR>().ok_or(())?;
    let _ = INFLIGHT.remove(&tid);
    if oom_victim {
        count(watch, |c| &raw mut c.oom_kills);
    }
    if !group_dead {
        return Ok(());
    }
    count(watch, |c| &raw mut c.exits);
    let offsets = kernel_offsets();
    let exit_status = if offsets.task_exit_code != 0 {
        // SAFETY: a probe read at an offset from this kernel's BTF; failures are not faults.
        unsafe { bpf_probe_read_kernel(task.add(offsets.task_exit_code as usize).cast::<u32>()) }
            .unwrap_or(0)
    } else {
        0
    };
    let Some(mut entry) = EVENTS.reserve::<ProcessEvent>(0) else {
        count_stat(stat::EVENTS_DROPPED);
        return Err(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to reserved ring-buffer memory the size of a ProcessEvent, owned
    // by this program until submit.
    unsafe {
        (*event).kind = event_kind::EXIT;
        (*event).pid = tgid;
        (*event).ppid = 0;
        (*event).exit_status = exit_status;
        (*event).cgroup_id = cgroup_id;
        (*event).ktime_ns = bpf_ktime_get_ns();
        (*event).comm = bpf_get_current_comm().unwrap_or_default();
        (*event).filename[0] = 0;
    }
    entry.submit(0);
    Ok(())
}

/// Remembers a task the OOM killer chose, so its exit counts as an OOM kill of its container.
///
/// `tp_btf/mark_victim(tsk, uid)`: it runs in the context of the task that ran out of memory,
/// which may be outside the victim's container, so the victim is counted when it exits.
/// Needs Linux 5.5 with BTF.
#[btf_tracepoint(function = "mark_victim")]
pub fn oom_mark_victim(ctx: BtfTracePointContext) -> i32 {
    match try_oom_mark_victim(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_oom_mark_victim(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let offsets = kernel_offsets();
    if offsets.task_pid == 0 {
        return Err(());
    }
    let task: *const u8 = ctx.arg(0);
    // SAFETY: a probe read at an offset from this kernel's BTF; failures are reported, not faults.
    let pid: u32 =
        unsafe { bpf_probe_read_kernel(task.add(offsets.task_pid as usize).cast::<u32>()) }
            .map_err(|_| ())?;
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if OOM_VICTIMS.insert(&pid, &now, 0).is_err() {
        count_stat(stat::OOM_VICTIMS_FULL);
    }
    Ok(())
}

#[inline(always)]
fn count(watch: Watch, field: impl FnOnce(&mut lucid_ebpf_common::ContainerCounters) -> *mut u64) {
    if watch.slot >= MAX_CONTAINERS {
        count_stat(stat::BAD_SLOT);
        return;
    }
    if let Some(counters) = COUNTERS.get_ptr_mut(watch.slot) {
        // SAFETY: `counters` comes from a successful array lookup, valid for this run.
        atomic_add(field(unsafe { &mut *counters }), 1);
    }
}
