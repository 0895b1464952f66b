//! `clone3(2)` with `CLONE_INTO_CGROUP` and `CLONE_PIDFD`, falling back to
//! `clone(2)` where the kernel lacks them.
//!
//! Placing the child in its cgroup at birth avoids writing `cgroup.procs`,
//! which waits for an RCU grace period: the largest single cost of a start.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::unistd::Pid;

/// The kernel's `struct clone_args` (include/uapi/linux/sched.h), version 2.
#[repr(C)]
#[derive(Debug, Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Which side of the clone this process is on.
#[derive(Debug)]
pub enum Cloned {
    /// The new process.
    Child,
    /// The caller, with the child's pid and (where the kernel gives one) a pidfd.
    Parent {
        /// The child's pid in the caller's pid namespace.
        pid: Pid,
        /// A pidfd for the child.
        pidfd: Option<OwnedFd>,
        /// Whether the child was born in the requested cgroup.
        in_cgroup: bool,
    },
}

/// Clones the calling process like `fork`, into new namespaces (`flags`, the
/// `CLONE_NEW*` bits, and `CLONE_PARENT` for a sibling rather than a child)
/// and, where possible, straight into the v2 cgroup `cgroup`.
///
/// # Safety
/// The caller must be single-threaded: the child is a copy of this process
/// with only the calling thread, so any lock held by another thread would stay
/// held forever in the child.
pub unsafe fn clone_process(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> Result<Cloned, Errno> {
    let mut pidfd: libc::c_int = -1;
    // With CLONE_PARENT the child inherits the caller's exit signal, and
    // clone3 refuses one of its own.
    let exit_signal = if flags & libc::CLONE_PARENT as u64 != 0 {
        0
    } else {
        libc::SIGCHLD as u64
    };
    let mut args = CloneArgs {
        flags: flags | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    loop {
        // SAFETY: args is a valid clone_args of the size passed; with stack 0
        // the child runs on a copy of the caller's stack, like fork.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if ret == 0 {
            return Ok(Cloned::Child);
        }
        if ret > 0 {
            // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor that
            // this process owns.
            let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
            return Ok(Cloned::Parent {
                pid: Pid::from_raw(ret as i32),
                pidfd,
                in_cgroup: args.flags & CLONE_INTO_CGROUP != 0,
            });
        }
        match Errno::last() {
            // No clone3, or a kernel that does not know CLONE_INTO_CGROUP: the
            // caller writes cgroup.procs instead.
            Errno::ENOSYS | Errno::E2BIG => return unsafe { clone_legacy(flags) },
            // The cgroup cannot take processes this way (a v1-only host, a
            // cgroup with a domain problem): retry without it.
            Errno::EINVAL | Errno::EOPNOTSUPP | Errno::EBUSY
                if args.flags & CLONE_INTO_CGROUP != 0 =>
            {
                args.flags &= !CLONE_INTO_CGROUP;
                args.cgroup = 0;
            }
            Errno::EINTR => {}
            errno => return Err(errno),
        }
    }
}

/// `clone(2)` with a null stack: fork semantics plus namespace flags.
unsafe fn clone_legacy(flags: u64) -> Result<Cloned, Errno> {
    // SAFETY: a null stack makes clone behave as fork; the caller guarantees
    // this process is single-threaded.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        0 => Ok(Cloned::Child),
        pid if pid > 0 => Ok(Cloned::Parent {
            pid: Pid::from_raw(pid as i32),
            pidfd: None,
            in_cgroup: false,
        }),
        _ => Err(Errno::last()),
    }
}
