//! Types and limits shared by lucid's eBPF programs and the user-space loader.
//!
//! Every type here is `#[repr(C)]` and laid out without implicit padding, so both sides
//! read the same bytes. With the `user` feature the types implement `aya::Pod`.
#![no_std]

/// Version of the map and program layout; pins live under `<pin root>/v<LAYOUT_VERSION>/`.
///
/// Bump it whenever a map's key, value, size or meaning changes.
pub const LAYOUT_VERSION: u32 = 3;

/// How many containers can be watched at once (slots in the counter arrays).
pub const MAX_CONTAINERS: u32 = 256;

/// Syscall numbers counted per container; x86_64 numbers are below 512.
pub const SYSCALL_SLOTS: u32 = 512;

/// Deepest cgroup level (the root is level 0) a watched cgroup may sit at.
pub const MAX_CGROUP_LEVEL: u32 = 31;

/// Buckets of the log2 latency histogram: bucket `i` counts latencies in `[2^i, 2^(i+1))` ns.
pub const LATENCY_BUCKETS: usize = 32;

/// Entries of the per-container latency histogram map (container × syscall pairs).
pub const LATENCY_ENTRIES: u32 = 16 * 1024;

/// Syscalls in flight whose start time is kept for the latency histogram.
pub const INFLIGHT_ENTRIES: u32 = 16 * 1024;

/// Device rules per container in the `cgroup_device` filter.
pub const MAX_DEVICE_RULES: usize = 64;

/// Bytes of the exec/exit event ring buffer.
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;

/// Bytes kept of an exec'd file name, including the terminating NUL.
pub const FILENAME_LEN: usize = 256;

/// Bytes of a task's `comm`, including the terminating NUL.
pub const COMM_LEN: usize = 16;

/// Entries of the `WATCHED` table, a power of two (2^[`WATCHED_TABLE_BITS`]).
pub const WATCHED_TABLE_SIZE: u32 = 1 << WATCHED_TABLE_BITS;

/// log2 of [`WATCHED_TABLE_SIZE`].
pub const WATCHED_TABLE_BITS: u32 = 12;

/// Entries a lookup in the `WATCHED` table probes, from the cgroup id's home entry on.
pub const WATCHED_PROBES: u32 = 8;

/// [`WatchedCgroup::cgroup_id`] of an entry whose container was unregistered: lookups probe on
/// past it, registrations reuse it. (0 marks a never-used entry, where lookups stop.)
pub const WATCHED_TOMBSTONE: u64 = u64::MAX;

/// The entry of the `WATCHED` table where the lookup of `cgroup_id` starts (Fibonacci hashing:
/// cgroup ids are mostly consecutive inode numbers, this spreads them).
#[inline(always)]
pub const fn watched_home(cgroup_id: u64) -> u32 {
    (cgroup_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - WATCHED_TABLE_BITS)) as u32
}

/// An entry of the `WATCHED` table: an open-addressing hash table in an array map, so that the
/// programs look a cgroup up with plain loads (an array lookup is inlined by the verifier; a
/// hash map lookup is a function call and a hash, measured 30-50 ns more per syscall).
///
/// Only user space writes it, under the version directory's lock. A cgroup id sits at most
/// [`WATCHED_PROBES`] - 1 entries after its [`watched_home`] (wrapping around), with no
/// never-used entry (`cgroup_id == 0`) in between.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchedCgroup {
    /// The v2 cgroup id; 0: never used; [`WATCHED_TOMBSTONE`]: free again.
    pub cgroup_id: u64,
    /// The container's slot and options.
    pub watch: Watch,
}

/// Which counter slot a watched cgroup uses, and its options.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    /// Index of the container's row in the counter arrays, below [`MAX_CONTAINERS`].
    pub slot: u32,
    /// `WATCH_*` bits.
    pub flags: u32,
    /// Level of the cgroup in the v2 hierarchy (the root is 0).
    pub level: u32,
    /// Zero.
    pub reserved: u32,
}

/// [`Watch::flags`] bit: record a syscall latency histogram for this container.
pub const WATCH_LATENCY: u32 = 1;

/// Counts of one syscall number in one container (`SYSCALLS` array, index `slot * SYSCALL_SLOTS + nr`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallCount {
    /// Calls that returned.
    pub count: u64,
    /// Calls that returned an error (`-4095..=-1`).
    pub errors: u64,
}

/// Key of the `LATENCY` hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LatencyKey {
    /// Counter slot of the container.
    pub slot: u32,
    /// Syscall number.
    pub nr: u32,
}

/// Value of the `LATENCY` hash map: a log2 histogram of syscall durations in nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyHist {
    /// `buckets[i]` counts calls that took `[2^i, 2^(i+1))` ns (bucket 0 also holds 0 ns).
    pub buckets: [u64; LATENCY_BUCKETS],
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self {
            buckets: [0; LATENCY_BUCKETS],
        }
    }
}

/// Start of a syscall in flight (`INFLIGHT` map, keyed by thread id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflight {
    /// `bpf_ktime_get_ns()` at entry.
    pub start_ns: u64,
    /// Counter slot of the container the thread was in at entry.
    pub slot: u32,
    /// Syscall number.
    pub nr: u32,
}

/// Per-container network and process counters (`CONTAINER_COUNTERS` array, index = slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerCounters {
    /// Successful execs.
    pub execs: u64,
    /// Processes (thread-group leaders) that exited.
    pub exits: u64,
    /// Tasks the OOM killer chose as victims.
    pub oom_kills: u64,
    /// Cgroups created below the container's since it was registered (nonzero also when it
    /// had some at registration): tasks there are found by their ancestors, see `NESTED`.
    pub nested_cgroups: u64,
}

/// Network counters of one cgroup in one direction (`NET` per-CPU cgroup storage).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Bytes (`skb->len`: the IP packet, headers included).
    pub bytes: u64,
    /// Packets.
    pub packets: u64,
}

/// Most distinct cgroup levels the watched cgroups may spread over.
pub const MAX_WATCHED_LEVELS: usize = 8;

/// The cgroup levels that hold a watched cgroup (`LEVELS` array, one entry).
///
/// A task belongs to the watched cgroup found at the deepest of these levels among its
/// ancestors, so processes in cgroups nested under a container's cgroup count for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchedLevels {
    /// Levels in use in `levels`.
    pub len: u32,
    /// Levels, deepest first (the root cgroup is level 0).
    pub levels: [u32; MAX_WATCHED_LEVELS],
}

/// Indexes into the global `STATS` array of health counters.
pub mod stat {
    /// Exec/exit events dropped because the ring buffer was full.
    pub const EVENTS_DROPPED: u32 = 0;
    /// Latency samples lost because the `INFLIGHT` map was full.
    pub const INFLIGHT_FULL: u32 = 1;
    /// Latency samples lost because the `LATENCY` map was full.
    pub const LATENCY_FULL: u32 = 2;
    /// Syscalls of watched containers whose number did not fit [`super::SYSCALL_SLOTS`].
    pub const UNKNOWN_SYSCALL: u32 = 3;
    /// Watched cgroups whose slot was out of range (a corrupt `WATCHED` entry).
    pub const BAD_SLOT: u32 = 4;
    /// OOM victims that could not be remembered until they exit.
    pub const OOM_VICTIMS_FULL: u32 = 5;
    /// Number of entries in `STATS`.
    pub const COUNT: u32 = 8;
}

/// Kind of a [`ProcessEvent`].
pub mod event_kind {
    /// A successful exec.
    pub const EXEC: u32 = 1;
    /// A process (thread-group leader) exited.
    pub const EXIT: u32 = 2;
}

/// An exec or exit event, as written to the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    /// [`event_kind`] value.
    pub kind: u32,
    /// Process id (thread-group id) in the initial pid namespace.
    pub pid: u32,
    /// Parent's process id (exec events; 0 when it could not be read).
    pub ppid: u32,
    /// Wait status (`task->exit_code`): exit code in bits 8-15, terminating signal in 0-6.
    pub exit_status: u32,
    /// v2 cgroup id of the watched container the process belongs to.
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` when the event happened.
    pub ktime_ns: u64,
    /// The task's `comm`, NUL-terminated.
    pub comm: [u8; COMM_LEN],
    /// The exec'd path as given to exec (exec events), NUL-terminated.
    pub filename: [u8; FILENAME_LEN],
}

/// Device type of a [`DeviceRule`] (the kernel's `BPF_DEVCG_DEV_*` values, plus "all").
pub mod device_type {
    /// Block device.
    pub const BLOCK: u32 = 1;
    /// Character device.
    pub const CHAR: u32 = 2;
    /// Any device type (`a` in OCI and runc).
    pub const ALL: u32 = 3;
}

/// Access bits of a [`DeviceRule`] (the kernel's `BPF_DEVCG_ACC_*` values).
pub mod device_access {
    /// `m`: mknod.
    pub const MKNOD: u32 = 1;
    /// `r`: read.
    pub const READ: u32 = 2;
    /// `w`: write.
    pub const WRITE: u32 = 4;
}

/// Major or minor number that matches any device (`-1` or absent in OCI).
pub const DEVICE_WILDCARD: u32 = u32::MAX;

/// One device rule, as the `cgroup_device` program reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceRule {
    /// [`device_type`] value; 0 marks an unused rule.
    pub kind: u32,
    /// Major number or [`DEVICE_WILDCARD`].
    pub major: u32,
    /// Minor number or [`DEVICE_WILDCARD`].
    pub minor: u32,
    /// [`device_access`] bits.
    pub access: u32,
    /// 1 to allow, 0 to deny.
    pub allow: u32,
}

/// Value of the `DEVICE_RULES` cgroup storage: a cgroup's rules, the last match wins.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRules {
    /// Accesses denied so far (written by the program).
    pub denied: u64,
    /// Rules in use, at most [`MAX_DEVICE_RULES`].
    pub len: u32,
    /// 1 to allow devices no rule matches, 0 to deny them (runc's default).
    pub default_allow: u32,
    /// The rules; entries from `len` on are ignored.
    pub rules: [DeviceRule; MAX_DEVICE_RULES],
}

impl Default for DeviceRules {
    fn default() -> Self {
        Self {
            denied: 0,
            len: 0,
            default_allow: 0,
            rules: [DeviceRule::default(); MAX_DEVICE_RULES],
        }
    }
}

/// Byte offsets into kernel structures, read from the running kernel's BTF at load time.
///
/// The programs read these through `bpf_probe_read_kernel`; an offset of 0 means "unknown",
/// and the field it leads to is reported as 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct task_struct`, member `real_parent`.
    pub task_real_parent: u32,
    /// `struct task_struct`, member `tgid`.
    pub task_tgid: u32,
    /// `struct task_struct`, member `pid`.
    pub task_pid: u32,
    /// `struct linux_binprm`, member `filename`.
    pub binprm_filename: u32,
    /// `struct task_struct`, member `exit_code`.
    pub task_exit_code: u32,
    /// `struct task_struct`, member `cgroups`.
    pub task_cgroups: u32,
    /// `struct css_set`, member `dfl_cgrp`.
    pub css_set_dfl_cgrp: u32,
    /// `struct cgroup`, member `kn`.
    pub cgroup_kn: u32,
    /// `struct kernfs_node`, member `id`.
    pub kernfs_node_id: u32,
    /// `struct cgroup`, member `level`.
    pub cgroup_level: u32,
    /// `struct cgroup`, member `ancestors`.
    pub cgroup_ancestors: u32,
    /// `struct cgroup`, member `root`.
    pub cgroup_root: u32,
    /// `struct cgroup_root`, member `hierarchy_id`.
    pub cgroup_root_hierarchy_id: u32,
    /// `struct cgroup`, member `ancestor_ids` (the ancestors' ids, before Linux 5.19
    /// replaced it with `ancestors`).
    pub cgroup_ancestor_ids: u32,
    /// `struct task_struct`, member `signal`.
    pub task_signal: u32,
    /// `struct signal_struct`, member `live` (an `atomic_t`: the counter is its first member).
    pub signal_live: u32,
}

/// The eBPF features, each loaded on its own so that one a kernel cannot run never takes the
/// others down; indexes into the `FEATURES` array.
pub mod feature {
    /// The cgroup v2 device filter (`cgroup_device`).
    pub const DEVICES: u32 = 0;
    /// Network bytes and packets (`cgroup_skb` ingress and egress).
    pub const NETWORK: u32 = 1;
    /// Syscall counts and errors per container.
    pub const SYSCALLS: u32 = 2;
    /// The syscall latency histogram (a second syscall hook, on entry).
    pub const SYSCALL_LATENCY: u32 = 3;
    /// Exec events and counts.
    pub const EXEC: u32 = 4;
    /// Exit events and counts.
    pub const EXIT: u32 = 5;
    /// OOM kills per container (needs [`EXIT`]).
    pub const OOM: u32 = 6;
    /// Cgroups made below a container's own, counted for it.
    pub const NESTED: u32 = 7;
    /// Number of features.
    pub const COUNT: u32 = 8;
    /// Their names, by index, as `lucid features` and the exporter show them.
    pub const NAMES: [&str; COUNT as usize] = [
        "devices",
        "network",
        "syscalls",
        "syscall_latency",
        "exec",
        "exit",
        "oom",
        "nested",
    ];
}

/// [`FeatureState::state`] values.
pub mod feature_state {
    /// Not loaded (the entry was never written).
    pub const UNKNOWN: u32 = 0;
    /// Loaded: the kernel took one of the feature's programs.
    pub const LOADED: u32 = 1;
    /// The kernel took none of the feature's programs; the reason says why.
    pub const UNSUPPORTED: u32 = 2;
}

/// Bytes of [`FeatureState::program`], including the terminating NUL.
pub const FEATURE_PROGRAM_LEN: usize = 32;

/// Bytes of [`FeatureState::reason`], including the terminating NUL.
pub const FEATURE_REASON_LEN: usize = 472;

/// What the load made of one feature (`FEATURES` array, index [`feature`]), written once by
/// the process that loaded the programs, read by every other.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureState {
    /// [`feature_state`] value.
    pub state: u32,
    /// Zero.
    pub reserved: u32,
    /// The program the kernel took (the first of the feature's variants it accepted),
    /// NUL-terminated; empty unless loaded.
    pub program: [u8; FEATURE_PROGRAM_LEN],
    /// Why the kernel took none of them (the first line of each refusal), NUL-terminated.
    pub reason: [u8; FEATURE_REASON_LEN],
}

impl Default for FeatureState {
    fn default() -> Self {
        Self {
            state: feature_state::UNKNOWN,
            reserved: 0,
            program: [0; FEATURE_PROGRAM_LEN],
            reason: [0; FEATURE_REASON_LEN],
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `#[repr(C)]`, made only of integers and arrays of them, with no
    // implicit padding, so every byte pattern is a valid value.
    unsafe impl aya::Pod for super::Watch {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SyscallCount {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LatencyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LatencyHist {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Inflight {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ContainerCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcessEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DeviceRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DeviceRules {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WatchedLevels {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WatchedCgroup {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FeatureState {}
}
