//! lucid's eBPF programs, one object (`lucid`) built for `bpfel-unknown-none`.
//!
//! One file per program type. Every program runs on Linux 6.2 or newer
//! (cgroup storage shared between programs, `bpf_get_current_ancestor_cgroup_id` in tracing
//! programs, fentry/fexit with BTF, ring buffers); the minimum of each is on its doc comment.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic adds on map values: the bpfel target has no AtomicU64.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod container;
#[cfg(target_arch = "bpf")]
mod device;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod nested;
#[cfg(target_arch = "bpf")]
mod network;
#[cfg(target_arch = "bpf")]
mod process;
#[cfg(target_arch = "bpf")]
mod syscalls;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; there is no unwinding in BPF.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
