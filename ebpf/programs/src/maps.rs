//! Every map of the object. User space finds them by these names (see `lucid-ebpf`'s `maps.rs`).
// The per-attachment cgroup storage (deprecated in favour of BPF_MAP_TYPE_CGRP_STORAGE, which is
// keyed by cgroup alone) is what gives each attachment of a program its own counters and rules.
#![allow(deprecated)]
use aya_ebpf::{
    macros::map,
    maps::{Array, CgroupStorage, HashMap, PerCpuCgroupStorage, RingBuf},
};
use lucid_ebpf_common::{
    feature, ContainerCounters, DeviceRules, FeatureState, Inflight, KernelOffsets, LatencyHist,
    LatencyKey, NetCounters, SyscallCount, WatchedCgroup, WatchedLevels, EVENTS_RING_BYTES,
    INFLIGHT_ENTRIES, LATENCY_ENTRIES, MAX_CONTAINERS, SYSCALL_SLOTS, WATCHED_TABLE_SIZE,
};

/// Watched v2 cgroup id -> its counter slot and options: an open-addressing table that user
/// space fills (see `lucid_ebpf_common::WatchedCgroup`).
#[map]
pub static WATCHED: Array<WatchedCgroup> = Array::with_max_entries(WATCHED_TABLE_SIZE, 0);

/// The distinct cgroup levels of the watched cgroups, deepest first (one entry).
#[map]
pub static LEVELS: Array<WatchedLevels> = Array::with_max_entries(1, 0);

/// One entry, nonzero while some watched container may have cgroups below its own: only then
/// do tasks whose own cgroup is not watched have their ancestors looked up.
#[map]
pub static NESTED: Array<u64> = Array::with_max_entries(1, 0);

/// Syscall counts, index `slot * SYSCALL_SLOTS + nr`.
#[map]
pub static SYSCALLS: Array<SyscallCount> =
    Array::with_max_entries(MAX_CONTAINERS * SYSCALL_SLOTS, 0);

/// Syscall latency histograms of containers that asked for them.
#[map]
pub static LATENCY: HashMap<LatencyKey, LatencyHist> =
    HashMap::with_max_entries(LATENCY_ENTRIES, 0);

/// Entry time of the syscall each thread of a latency-watched container is in, by thread id.
#[map]
pub static INFLIGHT: HashMap<u32, Inflight> = HashMap::with_max_entries(INFLIGHT_ENTRIES, 0);

/// Process counters per container, index = slot.
#[map]
pub static COUNTERS: Array<ContainerCounters> = Array::with_max_entries(MAX_CONTAINERS, 0);

/// Thread ids chosen by the OOM killer, until they exit.
#[map]
pub static OOM_VICTIMS: HashMap<u32, u64> = HashMap::with_max_entries(1024, 0);

/// Exec and exit events.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Health counters, indexed by `lucid_ebpf_common::stat`.
#[map]
pub static STATS: Array<u64> = Array::with_max_entries(lucid_ebpf_common::stat::COUNT, 0);

/// Network counters of the cgroup a `cgroup_skb` program is attached to, per direction.
#[map]
pub static NET: PerCpuCgroupStorage<NetCounters> = PerCpuCgroupStorage::new();

/// Device rules of the cgroup a `cgroup_device` program is attached to.
#[map]
pub static DEVICE_RULES: CgroupStorage<DeviceRules> = CgroupStorage::new();

/// What the load made of each feature (index `lucid_ebpf_common::feature`): written by the
/// loader, read by user space only.
#[map]
pub static FEATURES: Array<FeatureState> = Array::with_max_entries(feature::COUNT, 0);

/// Offsets into kernel structures, set by the loader from the running kernel's BTF.
#[unsafe(no_mangle)]
pub static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    task_real_parent: 0,
    task_tgid: 0,
    task_pid: 0,
    binprm_filename: 0,
    task_exit_code: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    cgroup_level: 0,
    cgroup_ancestors: 0,
    cgroup_root: 0,
    cgroup_root_hierarchy_id: 0,
    cgroup_ancestor_ids: 0,
    task_signal: 0,
    signal_live: 0,
};

/// Adds one to a health counter.
#[inline(always)]
pub fn count_stat(index: u32) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        atomic_add(counter, 1);
    }
}

/// Adds `value` to a counter in a map value shared between CPUs (BPF_ATOMIC | BPF_ADD).
#[inline(always)]
pub fn atomic_add(counter: *mut u64, value: u64) {
    use core::intrinsics::{atomic_xadd, AtomicOrdering};
    // SAFETY: callers pass a pointer from a successful map lookup, valid and 8-byte aligned
    // for the whole program run. The bpfel target has no AtomicU64, hence the intrinsic.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value) };
}

/// Reads the kernel offsets the loader set; the volatile read stops the compiler from
/// folding the zero initial value.
#[inline(always)]
pub fn kernel_offsets() -> KernelOffsets {
    // SAFETY: a plain read of a static the loader rewrote before loading.
    unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) }
}
