//! `linux.seccomp`: compiled by libseccomp in the runtime, before anything
//! is cloned, into a BPF program that the container's process loads with a
//! single `seccomp(2)` call as its last set-up step (`seccomp.load`).
//!
//! Compiling early makes a bad profile a `create` error with nothing spawned,
//! and leaves the process nothing to do after the filter is active but the
//! calls it cannot avoid. The profile is read as runc reads it: `SCMP_ACT_KILL`
//! kills the thread, ERRNO and TRACE default to `EPERM`, a rule whose action is
//! the default action is dropped, an unknown syscall name is skipped with a
//! debug line (the kernel may simply be older than the profile), and several
//! conditions on the same argument become one rule each.

use std::io::{Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;
const SECCOMP_FILTER_FLAG_LOG: u32 = 1 << 1;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 1 << 2;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = 1 << 3;
const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: u32 = 1 << 5;

/// The kernel's limit on the length of one filter (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// What is wrong with a seccomp profile, or with sending its notify fd.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile cannot be honoured as written.
    #[error("config.json: {field}: {reason}")]
    Invalid {
        /// The field, as a JSON path.
        field: String,
        /// Why, and what to do.
        reason: String,
    },
    /// libseccomp refused a step of building the filter.
    #[error("building the seccomp filter: {what}: {cause}")]
    Library {
        /// The step.
        what: String,
        /// libseccomp's error.
        cause: libseccomp::error::SeccompError,
    },
    /// Reading the compiled program back failed.
    #[error("exporting the seccomp filter: {0}")]
    Export(std::io::Error),
    /// The notify listener could not be reached or did not take the fd.
    #[error("seccomp listener {path}: {cause}: start the listener before the container")]
    Listener {
        /// The listener's socket.
        path: PathBuf,
        /// The failure.
        cause: std::io::Error,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SeccompError {
    SeccompError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn library(
    what: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    move |cause| SeccompError::Library {
        what: what.into(),
        cause,
    }
}

/// A compiled filter, ready to load.
#[derive(Debug, Clone)]
pub struct Program {
    filter: Vec<libc::sock_filter>,
    flags: u32,
    listener: Option<PathBuf>,
    metadata: Option<String>,
}

/// libseccomp's action for a spec action, with runc's defaults.
fn action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    field: &str,
) -> Result<ScmpAction, SeccompError> {
    let errno = |default: i32| -> Result<i32, SeccompError> {
        match errno_ret {
            None => Ok(default),
            Some(e) if e <= u16::MAX as u32 => Ok(e as i32),
            Some(e) => Err(invalid(
                field,
                format!("errno {e} does not fit the 16 bits seccomp returns"),
            )),
        }
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno(libc::EPERM)?),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno(libc::EPERM)? as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

fn arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn operator(op: LinuxSeccompOperator, value: u64) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // The spec's `value` is the mask and `valueTwo` the datum.
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value),
    }
}

fn flag_bits(flags: &[LinuxSeccompFilterFlag]) -> u32 {
    flags
        .iter()
        .map(|flag| match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            }
        })
        .fold(0, |acc, bit| acc | bit)
}

/// Every action [`action`] turns into libseccomp's (what `lucid features` claims).
pub const ACTIONS: [LinuxSeccompAction; 9] = [
    LinuxSeccompAction::ScmpActAllow,
    LinuxSeccompAction::ScmpActErrno,
    LinuxSeccompAction::ScmpActKill,
    LinuxSeccompAction::ScmpActKillProcess,
    LinuxSeccompAction::ScmpActKillThread,
    LinuxSeccompAction::ScmpActLog,
    LinuxSeccompAction::ScmpActNotify,
    LinuxSeccompAction::ScmpActTrace,
    LinuxSeccompAction::ScmpActTrap,
];

/// Every operator [`operator`] handles.
pub const OPERATORS: [LinuxSeccompOperator; 7] = [
    LinuxSeccompOperator::ScmpCmpEq,
    LinuxSeccompOperator::ScmpCmpGe,
    LinuxSeccompOperator::ScmpCmpGt,
    LinuxSeccompOperator::ScmpCmpLe,
    LinuxSeccompOperator::ScmpCmpLt,
    LinuxSeccompOperator::ScmpCmpMaskedEq,
    LinuxSeccompOperator::ScmpCmpNe,
];

/// Every architecture [`arch`] maps; [`supported_arches`] keeps those the
/// installed libseccomp can add to a filter for this host.
pub const ARCHES: [Arch; 23] = [
    Arch::ScmpArchX86,
    Arch::ScmpArchX86_64,
    Arch::ScmpArchX32,
    Arch::ScmpArchArm,
    Arch::ScmpArchAarch64,
    Arch::ScmpArchMips,
    Arch::ScmpArchMips64,
    Arch::ScmpArchMips64n32,
    Arch::ScmpArchMipsel,
    Arch::ScmpArchMipsel64,
    Arch::ScmpArchMipsel64n32,
    Arch::ScmpArchPpc,
    Arch::ScmpArchPpc64,
    Arch::ScmpArchPpc64le,
    Arch::ScmpArchS390,
    Arch::ScmpArchS390x,
    Arch::ScmpArchParisc,
    Arch::ScmpArchParisc64,
    Arch::ScmpArchRiscv64,
    Arch::ScmpArchLoongarch64,
    Arch::ScmpArchM68k,
    Arch::ScmpArchSh,
    Arch::ScmpArchSheb,
];

/// Every filter flag [`flag_bits`] maps.
pub const FLAGS: [LinuxSeccompFilterFlag; 4] = [
    LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
    LinuxSeccompFilterFlag::SeccompFilterFlagLog,
    LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
    LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
];

/// The architectures of [`ARCHES`] the installed libseccomp can add to a
/// filter beside this host's own (not those of the other byte order).
pub fn supported_arches() -> Vec<Arch> {
    ARCHES
        .into_iter()
        .filter(|a| {
            ScmpFilterContext::new(ScmpAction::Allow)
                .and_then(|mut ctx| ctx.add_arch(arch(*a)).map(|_| ()))
                .is_ok()
        })
        .collect()
}

/// The flags of [`FLAGS`] this kernel accepts, probed as runc and libseccomp
/// do: `seccomp(SECCOMP_SET_MODE_FILTER, flag, NULL)` fails with `EFAULT`
/// (the missing program) for a known flag and `EINVAL` for an unknown one, and
/// installs nothing either way.
pub fn supported_flags() -> Vec<LinuxSeccompFilterFlag> {
    FLAGS
        .into_iter()
        .filter(|flag| {
            let mut bits = flag_bits(&[*flag]);
            // The kernel takes this one only beside a listener.
            if bits == SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV {
                bits |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
            }
            // SAFETY: a NULL program is never read: the call fails before
            // installing anything (EFAULT), or on the flags (EINVAL).
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    SECCOMP_SET_MODE_FILTER,
                    bits as libc::c_ulong,
                    std::ptr::null::<libc::sock_fprog>(),
                )
            };
            ret == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
        })
        .collect()
}

/// Syscalls the process itself makes after loading the filter and before
/// the listener has the notify fd: notifying one of them would hang it.
const NOT_NOTIFIABLE: &[&str] = &["sendmsg"];

impl Program {
    /// Compiles a profile.
    pub fn compile(profile: &LinuxSeccomp) -> Result<Program, SeccompError> {
        let default = action(
            profile.default_action(),
            profile.default_errno_ret(),
            "linux.seccomp.defaultErrnoRet",
        )?;
        if default == ScmpAction::Notify {
            return Err(invalid(
                "linux.seccomp.defaultAction",
                "SCMP_ACT_NOTIFY cannot be the default action (the process could not even hand over its notify fd)",
            ));
        }
        let mut ctx = ScmpFilterContext::new(default).map_err(library("creating the filter"))?;
        // The process sets no_new_privs itself when the spec asks for it.
        ctx.set_ctl_nnp(false)
            .map_err(library("leaving no_new_privs to the spec"))?;
        for (i, a) in profile.architectures().iter().flatten().enumerate() {
            let a = arch(*a);
            let present = ctx
                .is_arch_present(a)
                .map_err(library(format!("linux.seccomp.architectures[{i}]")))?;
            if !present {
                ctx.add_arch(a)
                    .map_err(library(format!("adding architecture {a:?}")))?;
            }
        }
        let syscalls = profile.syscalls().clone().unwrap_or_default();
        if syscalls.len() > 32 {
            // A binary tree of syscalls for long profiles, as runc asks; an
            // older libseccomp without it builds a linear filter.
            if let Err(e) = ctx.set_ctl_optimize(2) {
                log::debug!("seccomp binary-tree optimization not available: {e}");
            }
        }
        let mut notify = false;
        for (i, rule) in syscalls.iter().enumerate() {
            let field = format!("linux.seccomp.syscalls[{i}]");
            let act = action(
                rule.action(),
                rule.errno_ret(),
                &format!("{field}.errnoRet"),
            )?;
            if act == ScmpAction::Notify {
                notify = true;
                if let Some(name) = rule
                    .names()
                    .iter()
                    .find(|n| NOT_NOTIFIABLE.contains(&n.as_str()))
                {
                    return Err(invalid(
                        format!("{field}.names"),
                        format!("SCMP_ACT_NOTIFY cannot be used for {name}: the container's process needs it to hand over the notify fd"),
                    ));
                }
            }
            if act == default {
                continue;
            }
            let args = rule.args().clone().unwrap_or_default();
            let mut conditions = Vec::with_capacity(args.len());
            let mut per_index = [0usize; 6];
            for (j, arg) in args.iter().enumerate() {
                let index = arg.index();
                if index >= per_index.len() {
                    return Err(invalid(
                        format!("{field}.args[{j}].index"),
                        format!("{index} is not a syscall argument (0 to 5)"),
                    ));
                }
                per_index[index] += 1;
                conditions.push(ScmpArgCompare::new(
                    index as u32,
                    operator(arg.op(), arg.value()),
                    if arg.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                        arg.value_two().unwrap_or(0)
                    } else {
                        arg.value()
                    },
                ));
            }
            for (j, name) in rule.names().iter().enumerate() {
                if name.is_empty() {
                    return Err(invalid(format!("{field}.names[{j}]"), "is empty"));
                }
                let Ok(syscall) = ScmpSyscall::from_name(name) else {
                    log::debug!("unknown seccomp syscall {name:?} ignored");
                    continue;
                };
                let what = || format!("adding the rule for {name} ({field})");
                if conditions.is_empty() {
                    ctx.add_rule(act, syscall).map_err(library(what()))?;
                } else if per_index.iter().any(|n| *n > 1) {
                    // Several conditions on one argument: any of them matches.
                    for condition in &conditions {
                        ctx.add_rule_conditional(act, syscall, std::slice::from_ref(condition))
                            .map_err(library(what()))?;
                    }
                } else {
                    ctx.add_rule_conditional(act, syscall, &conditions)
                        .map_err(library(what()))?;
                }
            }
        }
        let listener = profile.listener_path().clone();
        if notify && listener.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
            return Err(invalid(
                "linux.seccomp.listenerPath",
                "SCMP_ACT_NOTIFY needs a listener: set listenerPath to the socket of a seccomp agent",
            ));
        }
        let mut flags = flag_bits(profile.flags().as_deref().unwrap_or_default());
        if notify {
            // The kernel refuses TSYNC together with a listener; the process is
            // single-threaded, so TSYNC has nothing to synchronize anyway.
            flags = (flags & !SECCOMP_FILTER_FLAG_TSYNC) | SECCOMP_FILTER_FLAG_NEW_LISTENER;
        }
        let filter = export(&ctx)?;
        if filter.len() > MAX_INSTRUCTIONS {
            return Err(invalid(
                "linux.seccomp",
                format!(
                    "the profile compiles to {} BPF instructions, more than the kernel's {MAX_INSTRUCTIONS}",
                    filter.len()
                ),
            ));
        }
        Ok(Program {
            filter,
            flags,
            listener: if notify { listener } else { None },
            metadata: profile.listener_metadata().clone(),
        })
    }

    /// The listener to send the notify fd to, when the profile notifies.
    pub fn listener(&self) -> Option<&Path> {
        self.listener.as_deref()
    }

    /// The number of BPF instructions.
    pub fn len(&self) -> usize {
        self.filter.len()
    }

    /// Whether the program is empty (it never is once compiled).
    pub fn is_empty(&self) -> bool {
        self.filter.is_empty()
    }

    /// Loads the filter into the calling thread; returns the notify fd when
    /// the profile notifies. Allocates nothing, so it can be the last step
    /// before exec.
    pub fn load(&self) -> Result<Option<OwnedFd>, nix::errno::Errno> {
        let program = libc::sock_fprog {
            // compile() checked the length against BPF_MAXINSNS.
            len: self.filter.len() as u16,
            filter: self.filter.as_ptr().cast_mut(),
        };
        // SAFETY: `program` points at `filter`, which lives as long as self;
        // the kernel copies the program before returning.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                self.flags as libc::c_ulong,
                &program as *const libc::sock_fprog,
            )
        };
        if ret < 0 {
            return Err(nix::errno::Errno::last());
        }
        if self.flags & SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
            // SAFETY: with NEW_LISTENER the kernel returns a new descriptor
            // this process owns.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as i32) }));
        }
        Ok(None)
    }

    /// Hands the notify fd to the listener as runc does: one message on a
    /// new connection, holding the container process state as JSON and the
    /// fd as SCM_RIGHTS.
    pub fn send_to_listener(
        &self,
        notify_fd: &OwnedFd,
        pid: i32,
        state: &crate::hooks::HookState,
    ) -> Result<(), SeccompError> {
        let Some(path) = &self.listener else {
            return Ok(());
        };
        let error = |cause| SeccompError::Listener {
            path: path.clone(),
            cause,
        };
        let mut message = serde_json::json!({
            "ociVersion": state.oci_version,
            "fds": ["seccompFd"],
            "pid": pid,
            "state": state,
        });
        if let Some(metadata) = self.metadata.as_deref().filter(|m| !m.is_empty()) {
            message["metadata"] = serde_json::Value::String(metadata.to_owned());
        }
        let stream = UnixStream::connect(path).map_err(error)?;
        let bytes = serde_json::to_vec(&message).map_err(|e| error(e.into()))?;
        crate::terminal::send_fd(stream.as_raw_fd(), &bytes, notify_fd.as_raw_fd()).map_err(error)
    }
}

/// Reads the compiled program back from libseccomp (through a memfd, since
/// libseccomp 2.5 exports only to a descriptor).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    // SAFETY: memfd_create reads a NUL-terminated name; a negative result is an error.
    let raw = unsafe { libc::memfd_create(c"lucid-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(SeccompError::Export(std::io::Error::last_os_error()));
    }
    // SAFETY: a non-negative result is a new descriptor we own.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    ctx.export_bpf(&file).map_err(library("exporting BPF"))?;
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(SeccompError::Export)?;
    let size = std::mem::size_of::<libc::sock_filter>();
    if bytes.len() % size != 0 {
        return Err(SeccompError::Export(std::io::Error::other(format!(
            "{} bytes is not a whole number of BPF instructions",
            bytes.len()
        ))));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|chunk| libc::sock_filter {
            code: u16::from_ne_bytes([chunk[0], chunk[1]]),
            jt: chunk[2],
            jf: chunk[3],
            k: u32::from_ne_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(value: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn profile_compiles_with_args_flags_and_arches() {
        let program = Program::compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
            "syscalls": [
                { "names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["personality"], "action": "SCMP_ACT_ALLOW",
                  "args": [{ "index": 0, "value": 8, "op": "SCMP_CMP_EQ" }] },
                { "names": ["clone"], "action": "SCMP_ACT_ALLOW",
                  "args": [{ "index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }] }
            ]
        })))
        .unwrap();
        assert!(program.len() > 4);
        assert_eq!(
            program.flags,
            SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW
        );
        assert!(program.listener().is_none());
    }

    #[test]
    fn unknown_syscall_names_are_skipped() {
        let with = Program::compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["getcwd", "no_such_syscall_here"], "action": "SCMP_ACT_ERRNO" }]
        })))
        .unwrap();
        let without = Program::compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["getcwd"], "action": "SCMP_ACT_ERRNO" }]
        })))
        .unwrap();
        assert_eq!(with.len(), without.len());
    }

    #[test]
    fn rules_with_the_default_action_are_dropped() {
        let redundant = Program::compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["getcwd"], "action": "SCMP_ACT_ALLOW" }]
        })))
        .unwrap();
        let empty = Program::compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW"
        })))
        .unwrap();
        assert_eq!(redundant.len(), empty.len());
    }

    #[test]
    fn notify_needs_a_listener_and_sets_new_listener() {
        let rule = serde_json::json!([{ "names": ["getcwd"], "action": "SCMP_ACT_NOTIFY" }]);
        let err = Program::compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW", "syscalls": rule
        })))
        .unwrap_err()
        .to_string();
        assert!(err.contains("listenerPath"), "{err}");
        let program = Program::compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW", "syscalls": rule,
            "listenerPath": "/run/agent.sock",
            "flags": ["SECCOMP_FILTER_FLAG_TSYNC"]
        })))
        .unwrap();
        assert_eq!(program.flags, SECCOMP_FILTER_FLAG_NEW_LISTENER);
        assert_eq!(program.listener(), Some(Path::new("/run/agent.sock")));
    }

    #[test]
    fn notify_cannot_cover_what_the_handover_needs() {
        let err = Program::compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/agent.sock",
            "syscalls": [{ "names": ["sendmsg"], "action": "SCMP_ACT_NOTIFY" }]
        })))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("syscalls[0].names") && err.contains("sendmsg"),
            "{err}"
        );
        let err = Program::compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/agent.sock"
        })))
        .unwrap_err()
        .to_string();
        assert!(err.contains("defaultAction"), "{err}");
    }

    #[test]
    fn bad_argument_index_is_named() {
        let err = Program::compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
                           "args": [{ "index": 6, "value": 1, "op": "SCMP_CMP_EQ" }] }]
        })))
        .unwrap_err()
        .to_string();
        assert!(err.contains("syscalls[0].args[0].index"), "{err}");
    }
}
