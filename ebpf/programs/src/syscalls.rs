//! Syscall counts, errors and latency per container.
//!
//! Two hooks do the same work; the loader takes the first the kernel accepts:
//! - fexit/fentry on the x86_64 dispatcher `x64_sys_call(regs, nr)` (Linux 6.9, and the
//!   stable kernels it was backported to with the BHI fix, such as Debian's 6.1 and 6.12; not
//!   traceable from 6.16 on): tasks pay a BPF trampoline on each syscall only, and stay on the
//!   fast syscall path;
//! - the `raw_syscalls` BTF tracepoints (Linux 5.5+): any probe on them moves every task of the
//!   host to the slow syscall-entry path, a fixed cost even outside containers. Hosts that
//!   refuse fentry/fexit (some hardened or sandboxed kernels answer EPERM) get this one.
//!
//! Each program also comes in the two flavours of `container.rs` (`_compat`: Linux 5.5+).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
    macros::{btf_tracepoint, fentry, fexit},
    programs::{BtfTracePointContext, FEntryContext, FExitContext},
};
use lucid_ebpf_common::{
    stat, Inflight, LatencyHist, LatencyKey, Watch, LATENCY_BUCKETS, MAX_CONTAINERS, SYSCALL_SLOTS,
    WATCH_LATENCY,
};

use crate::{
    container::{current_container, BTF, COMPAT},
    maps::{atomic_add, count_stat, INFLIGHT, LATENCY, SYSCALLS},
};

/// Counts a returning syscall of a watched container, and records its latency if asked.
///
/// fexit on `x64_sys_call`; needs the dispatcher function (Linux 6.9, or a stable kernel with
/// the BHI backport) with BTF, and Linux 6.1 for this flavour.
#[fexit(function = "x64_sys_call")]
pub fn syscall_exit(ctx: FExitContext) -> i32 {
    match try_syscall_exit::<BTF>(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// [`syscall_exit`] in the compat flavour (Linux 5.5+ helpers).
#[fexit(function = "x64_sys_call")]
pub fn syscall_exit_compat(ctx: FExitContext) -> i32 {
    match try_syscall_exit::<COMPAT>(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

#[inline(always)]
fn try_syscall_exit<const FLAVOUR: bool>(ctx: &FExitContext) -> Result<(), ()> {
    let (_, watch) = current_container::<FLAVOUR>().ok_or(())?;
    let nr: u32 = ctx.arg(1);
    let ret: i64 = ctx.arg(2);
    count_syscall(watch, nr, ret)?;
    if watch.flags & WATCH_LATENCY != 0 {
        record_latency(watch, nr);
    }
    Ok(())
}

#[inline(always)]
fn count_syscall(watch: Watch, nr: u32, ret: i64) -> Result<(), ()> {
    if nr >= SYSCALL_SLOTS {
        count_stat(stat::UNKNOWN_SYSCALL);
        return Err(());
    }
    if watch.slot >= MAX_CONTAINERS {
        count_stat(stat::BAD_SLOT);
        return Err(());
    }
    let entry = SYSCALLS
        .get_ptr_mut(watch.slot * SYSCALL_SLOTS + nr)
        .ok_or(())?;
    // SAFETY: `entry` comes from a successful array lookup; `count` and `errors` are u64
    // fields of a #[repr(C)] struct, 8-byte aligned.
    unsafe {
        atomic_add(&raw mut (*entry).count, 1);
        if (-4095..0).contains(&ret) {
            atomic_add(&raw mut (*entry).errors, 1);
        }
    }
    Ok(())
}

#[inline(always)]
fn record_latency(watch: Watch, nr: u32) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(inflight) = INFLIGHT.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: `inflight` comes from a successful lookup; this thread is the only writer of
    // its own entry, so plain reads and writes do not race.
    let (start, slot, entry_nr) =
        unsafe { ((*inflight).start_ns, (*inflight).slot, (*inflight).nr) };
    if start == 0 || slot != watch.slot || entry_nr != nr {
        return;
    }
    // SAFETY: as above.
    unsafe { (*inflight).start_ns = 0 };
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let bucket = log2(now.saturating_sub(start));
    if bucket >= LATENCY_BUCKETS {
        return;
    }
    // The mask keeps the index provably in range for verifiers (Linux 6.1) that lose the
    // bound of the check above across the branches LLVM makes of `log2`; the volatile read
    // stops LLVM from dropping the mask as redundant.
    // SAFETY: a read of a local.
    let bucket = unsafe { core::ptr::read_volatile(&bucket) } & (LATENCY_BUCKETS - 1);
    let key = LatencyKey { slot, nr };
    if let Some(hist) = LATENCY.get_ptr_mut(&key) {
        // SAFETY: `hist` comes from a successful lookup; the index is masked to the array.
        unsafe { atomic_add(&raw mut (*hist).buckets[bucket], 1) };
        return;
    }
    let mut hist = LatencyHist::default();
    hist.buckets[bucket] = 1;
    // BPF_NOEXIST: if another CPU inserted it meanwhile this sample is lost, which is rare and
    // cheaper than a retry loop.
    if LATENCY.insert(&key, &hist, 1).is_err() {
        count_stat(stat::LATENCY_FULL);
    }
}

/// Floor of log2, 0 for 0 and 1, capped at 63.
#[inline(always)]
fn log2(mut v: u64) -> usize {
    let mut r = 0;
    for shift in [32u32, 16, 8, 4, 2, 1] {
        if v >= 1 << shift {
            v >>= shift;
            r += shift as usize;
        }
    }
    r
}

/// Notes when a syscall of a latency-watched container starts.
///
/// fentry on `x64_sys_call`; attached only while some container asked for latency, since every
/// syscall of the host pays for it. Needs the dispatcher function with BTF (see
/// [`syscall_exit`]), and Linux 6.1 for this flavour.
#[fentry(function = "x64_sys_call")]
pub fn syscall_enter(ctx: FEntryContext) -> i32 {
    match start_latency::<BTF>(ctx.arg(1)) {
        Ok(()) | Err(()) => 0,
    }
}

/// [`syscall_enter`] in the compat flavour (Linux 5.5+ helpers).
#[fentry(function = "x64_sys_call")]
pub fn syscall_enter_compat(ctx: FEntryContext) -> i32 {
    match start_latency::<COMPAT>(ctx.arg(1)) {
        Ok(()) | Err(()) => 0,
    }
}

#[inline(always)]
fn start_latency<const FLAVOUR: bool>(nr: u32) -> Result<(), ()> {
    let (_, watch) = current_container::<FLAVOUR>().ok_or(())?;
    if watch.flags & WATCH_LATENCY == 0 {
        return Ok(());
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: a helper call without arguments.
    let start_ns = unsafe { bpf_ktime_get_ns() };
    let value = Inflight {
        start_ns,
        slot: watch.slot,
        nr,
    };
    if let Some(inflight) = INFLIGHT.get_ptr_mut(&tid) {
        // SAFETY: `inflight` comes from a successful lookup; only this thread writes it.
        unsafe { *inflight = value };
        return Ok(());
    }
    // The entry lives until the thread exits (see process.rs), so steady state is lookups only.
    if INFLIGHT.insert(&tid, &value, 0).is_err() {
        count_stat(stat::INFLIGHT_FULL);
    }
    Ok(())
}

/// [`syscall_exit`] on `tp_btf/sys_exit(regs, ret)`, for hosts without fexit. Needs Linux 5.5,
/// and 6.1 for this flavour.
#[btf_tracepoint(function = "sys_exit")]
pub fn syscall_exit_tp(ctx: BtfTracePointContext) -> i32 {
    match try_syscall_exit_tp::<BTF>(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// [`syscall_exit_tp`] in the compat flavour (Linux 5.5+).
#[btf_tracepoint(function = "sys_exit")]
pub fn syscall_exit_tp_compat(ctx: BtfTracePointContext) -> i32 {
    match try_syscall_exit_tp::<COMPAT>(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// [`syscall_enter`] on `tp_btf/sys_enter(regs, id)`, for hosts without fentry. Needs Linux
/// 5.5, and 6.1 for this flavour.
#[btf_tracepoint(function = "sys_enter")]
pub fn syscall_enter_tp(ctx: BtfTracePointContext) -> i32 {
    let nr: i64 = ctx.arg(1);
    match start_latency::<BTF>(nr as u32) {
        Ok(()) | Err(()) => 0,
    }
}

/// [`syscall_enter_tp`] in the compat flavour (Linux 5.5+).
#[btf_tracepoint(function = "sys_enter")]
pub fn syscall_enter_tp_compat(ctx: BtfTracePointContext) -> i32 {
    let nr: i64 = ctx.arg(1);
    match start_latency::<COMPAT>(nr as u32) {
        Ok(()) | Err(()) => 0,
    }
}

/// Byte offset of `orig_ax` in x86_64 `struct pt_regs` (part of the user ABI).
const PT_REGS_ORIG_AX: usize = 15 * 8;

#[inline(always)]
fn try_syscall_exit_tp<const FLAVOUR: bool>(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let (_, watch) = current_container::<FLAVOUR>().ok_or(())?;
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: `regs` is the tracepoint's BTF-typed pt_regs argument; the verifier checks this
    // direct load against pt_regs's layout (orig_ax is user ABI), no helper call needed.
    let nr: u64 = unsafe { *(regs.add(PT_REGS_ORIG_AX).cast::<u64>()) };
    count_syscall(watch, nr as u32, ret)?;
    if watch.flags & WATCH_LATENCY != 0 {
        record_latency(watch, nr as u32);
    }
    Ok(())
}
