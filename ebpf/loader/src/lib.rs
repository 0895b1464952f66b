//! lucid's eBPF side, from user space: load and pin the programs once, register containers'
//! cgroups, read what the programs counted.
//!
//! The API is synchronous and starts no thread, so the short-lived `lucid` binary can use it on
//! its create and delete paths. The usual flow:
//!
//! ```no_run
//! use lucid_ebpf::{Programs, RegisterOptions, DEFAULT_PIN_ROOT};
//! # fn main() -> Result<(), lucid_ebpf::Error> {
//! // `lucid create`: cheap when the programs are already pinned (by the exporter or an
//! // earlier container); loads and pins them otherwise.
//! let mut bpf = match Programs::open_or_load(DEFAULT_PIN_ROOT.as_ref()) {
//!     Ok(bpf) => bpf,
//!     Err(e) if e.is_unavailable() => {
//!         eprintln!("lucid: running without eBPF: {e}");
//!         return Ok(());
//!     }
//!     Err(e) => return Err(e),
//! };
//! let cgroup = "/sys/fs/cgroup/unified/lucid/abc".as_ref();
//! let registered = bpf.register(cgroup, &RegisterOptions::default())?;
//! // `lucid syscalls abc`
//! for row in bpf.syscalls(registered.cgroup_id)? {
//!     println!("{:>8} {:>8} {}", row.count, row.errors, row.name);
//! }
//! // `lucid delete`, after the cgroup is removed
//! bpf.unregister(registered.cgroup_id)?;
//! # Ok(()) }
//! ```
//!
//! Each feature (device filter, network, syscalls, exec, exit, OOM, nested cgroups) loads on
//! its own, with the programs its kernel accepts; [`Programs::features`] says which are on
//! and why the others are off (ebpf/README.md has the table per kernel). With no bpf(2) or
//! BPF file system at all, [`Error::is_unavailable`] is true.

// The syscall programs hook the x86_64 dispatcher (`x64_sys_call`) and read x86_64 syscall
// numbers, which `syscall_names` names; another architecture needs its own
// hook and table, so it does not build rather than count wrongly.
#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "lucid-ebpf supports x86_64 only: its syscall programs hook x64_sys_call and read x86_64 syscall numbers"
);

mod cgroup;
pub mod devices;
mod error;
mod events;
pub mod kernel_btf;
mod layout;
mod load;
mod programs;
mod read;
pub mod settings;
mod sys;
pub mod syscall_names;
mod watched;

pub use cgroup::{Cgroup, CgroupError};
pub use devices::{DeviceError, DeviceRule, DeviceType};
pub use error::{Error, Unavailable};
pub use events::{Event, EventReader};
pub use layout::{remove_pin_root, DEFAULT_PIN_ROOT};
pub use lucid_ebpf_common::feature;
pub use lucid_ebpf_common::LAYOUT_VERSION;
pub use programs::{
    Availability, FeatureStatus, Opened, Programs, RegisterOptions, Registered, SweepReport,
    SyscallHook,
};
pub use read::{ContainerStats, Health, LatencyHistogram, MapEntries, SyscallRow};
pub use settings::Settings;
pub use sys::KernelLink;

/// The BPF links of this host attached to the `raw_syscalls` tracepoints (`sys_enter`,
/// `sys_exit`), lucid's and anyone else's: while there is one, every syscall of every task on
/// the host takes the kernel's slow syscall path.
pub fn syscall_tracepoint_links() -> Result<Vec<KernelLink>, Error> {
    let links = sys::kernel_links().map_err(|e| {
        Error::pin(
            "listing BPF links of",
            std::path::Path::new("the kernel"),
            e,
        )
    })?;
    Ok(links
        .into_iter()
        .filter(|l| l.tracepoint == "sys_enter" || l.tracepoint == "sys_exit")
        .collect())
}

/// The compiled eBPF object, built by `build.rs` from `ebpf/programs`.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lucid-probes"));
