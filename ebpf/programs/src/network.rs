//! Network bytes and packets per cgroup, both directions.
use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

use crate::maps::NET;

/// Counts a packet the cgroup's sockets receive; always lets it through.
///
/// `cgroup_skb/ingress` attached to a container's cgroup; its storage in `NET` is created by
/// the attach and freed by the detach. Needs Linux 4.20 (per-CPU cgroup storage).
#[cgroup_skb(ingress)]
pub fn net_ingress(ctx: SkBuffContext) -> i32 {
    count_packet(&ctx)
}

/// Counts a packet the cgroup's sockets send; always lets it through.
///
/// `cgroup_skb/egress`, as [`net_ingress`].
#[cgroup_skb(egress)]
pub fn net_egress(ctx: SkBuffContext) -> i32 {
    count_packet(&ctx)
}

#[inline(always)]
fn count_packet(ctx: &SkBuffContext) -> i32 {
    let counters = NET.get_ptr_mut();
    // SAFETY: bpf_get_local_storage never fails for a map the program uses; the storage is
    // this CPU's copy, so plain adds do not race.
    unsafe {
        (*counters).bytes += u64::from(ctx.len());
        (*counters).packets += 1;
    }
    // 1 lets the packet through.
    1
}
