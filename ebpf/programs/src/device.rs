//! The cgroup v2 device controller: allow or deny device access by the cgroup's rules.
use aya_ebpf::{macros::cgroup_device, programs::DeviceContext};
use lucid_ebpf_common::{DeviceRules, DEVICE_WILDCARD, MAX_DEVICE_RULES};

use crate::maps::{atomic_add, DEVICE_RULES};

/// Allows or denies a device access with the rules user space wrote into the cgroup's
/// `DEVICE_RULES` storage: the last matching rule wins, else `default_allow` (0: deny, as runc).
///
/// `cgroup/dev` attached to a container's cgroup; needs Linux 4.20 (cgroup storage).
#[cgroup_device]
pub fn device_filter(ctx: DeviceContext) -> i32 {
    match try_device_filter(&ctx) {
        Ok(allow) => allow,
        Err(()) => 0,
    }
}

fn try_device_filter(ctx: &DeviceContext) -> Result<i32, ()> {
    let rules: *mut DeviceRules = DEVICE_RULES.get_ptr_mut();
    // SAFETY: `ctx.device` is the kernel's bpf_cgroup_dev_ctx for this call.
    let (access_type, major, minor) = unsafe {
        (
            (*ctx.device).access_type,
            (*ctx.device).major,
            (*ctx.device).minor,
        )
    };
    // access_type: device type in the low 16 bits, BPF_DEVCG_ACC_* in the high 16.
    let dev_type = access_type & 0xffff;
    let access = access_type >> 16;
    // SAFETY: bpf_get_local_storage never fails for a map the program uses; the storage lives
    // as long as the attachment.
    let (len, mut allow) = unsafe { ((*rules).len as usize, (*rules).default_allow) };
    for i in 0..MAX_DEVICE_RULES {
        if i >= len {
            break;
        }
        // SAFETY: `i` is below MAX_DEVICE_RULES, the array's length.
        let rule = unsafe { (*rules).rules[i] };
        let type_matches =
            rule.kind == lucid_ebpf_common::device_type::ALL || rule.kind == dev_type;
        let major_matches = rule.major == DEVICE_WILDCARD || rule.major == major;
        let minor_matches = rule.minor == DEVICE_WILDCARD || rule.minor == minor;
        // A rule applies when it names every access asked for.
        let access_matches = access & rule.access == access;
        if type_matches && major_matches && minor_matches && access_matches {
            allow = rule.allow;
        }
    }
    if allow == 0 {
        // SAFETY: as above; `denied` is an aligned u64 field.
        unsafe { atomic_add(&raw mut (*rules).denied, 1) };
        return Ok(0);
    }
    Ok(1)
}
