//! The `process.setup` step inside the init process: rlimits, OOM score,
//! session keyring, user and groups, capabilities, working directory,
//! `noNewPrivileges` and umask, in the order that keeps each possible
//! (capabilities survive the user switch through PR_SET_KEEPCAPS).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::Capability;
use oci_spec::runtime::{PosixRlimitType, Process};

/// The rlimit resource number of a spec rlimit type.
fn resource(typ: PosixRlimitType) -> Option<libc::__rlimit_resource_t> {
    Some(match typ {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// Applies `process.rlimits`.
pub fn apply_rlimits(process: &Process) -> Result<(), String> {
    for rlimit in process.rlimits().iter().flatten() {
        let res = resource(rlimit.typ())
            .ok_or_else(|| format!("process.rlimits: {} is not known on Linux", rlimit.typ()))?;
        let value = libc::rlimit {
            rlim_cur: rlimit.soft(),
            rlim_max: rlimit.hard(),
        };
        // SAFETY: value is a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(res, &value) } != 0 {
            let err = std::io::Error::last_os_error();
            let hint = if err.raw_os_error() == Some(libc::EPERM) {
                ": raising a hard limit needs CAP_SYS_RESOURCE"
            } else {
                ""
            };
            return Err(format!(
                "setting {} to soft {} hard {}: {err}{hint}",
                rlimit.typ(),
                rlimit.soft(),
                rlimit.hard()
            ));
        }
    }
    Ok(())
}

/// Writes `process.oomScoreAdj`.
pub fn apply_oom_score_adj(process: &Process) -> Result<(), String> {
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EACCES) {
                ": lowering it needs CAP_SYS_RESOURCE"
            } else {
                ""
            };
            format!("setting oom_score_adj to {adj}: {e}{hint}")
        })?;
    }
    Ok(())
}

/// Joins a new session keyring named after the container, `_ses.<id>` as
/// runc names it, so containers do not share the host's keys (runc's
/// default; `--no-new-keyring` skips it). The prefix matters: the kernel
/// refuses a keyring name that starts with a dot (EPERM), and `.adv` is an ID.
pub fn join_session_keyring(id: &str) -> Result<(), String> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = CString::new(format!("_ses.{id}"))
        .map_err(|_| "container id holds a NUL byte".to_owned())?;
    // SAFETY: keyctl with JOIN_SESSION_KEYRING reads a NUL-terminated name.
    let ret =
        unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if ret < 0 {
        let err = std::io::Error::last_os_error();
        // Keyrings may be unavailable (ENOSYS) or refused in a user namespace
        // (EACCES); runc carries on in both cases.
        if matches!(err.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EACCES)) {
            return Ok(());
        }
        return Err(format!("joining a new session keyring: {err}"));
    }
    Ok(())
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The bit of `CAP_SYS_ADMIN`, which loading a seccomp filter needs when
/// `noNewPrivileges` is off.
const SYS_ADMIN: u64 = 1 << 21;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's effective, permitted and inheritable sets.
fn capget() -> std::io::Result<(u64, u64, u64)> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are the v3 layout capget expects, live for the call.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| (hi as u64) << 32 | lo as u64;
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

/// Sets the calling thread's effective, permitted and inheritable sets in one
/// call. Allocates nothing.
fn capset(effective: u64, permitted: u64, inheritable: u64) -> std::io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and data are the v3 layout capset expects, live for the call.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The names of the capabilities in a mask, for messages.
fn names(mask: u64) -> String {
    let mut out: Vec<String> = caps::all()
        .into_iter()
        .filter(|c| c.index() < 64 && mask & (1 << c.index()) != 0)
        .map(|c| c.to_string())
        .collect();
    out.sort();
    out.join(", ")
}

/// The capability sets a process gets, as bit masks of the capabilities this
/// kernel knows. A process without `capabilities` gets none, as with runc.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CapabilitySets {
    bounding: u64,
    effective: u64,
    inheritable: u64,
    permitted: u64,
    ambient: u64,
}

/// The mask of the capabilities in a spec set that this kernel knows (names
/// were checked when the spec was parsed).
fn mask(set: &Option<oci_spec::runtime::Capabilities>, supported: u64) -> u64 {
    set.iter()
        .flatten()
        .filter_map(|cap| Capability::from_str(&format!("CAP_{cap}")).ok())
        .map(|cap| 1u64 << cap.index())
        .fold(0, |acc, bit| acc | bit)
        & supported
}

impl CapabilitySets {
    /// The sets a process asks for.
    pub fn from_process(process: &Process) -> Self {
        let supported = caps::runtime::thread_all_supported()
            .into_iter()
            .filter(|c| c.index() < 64)
            .fold(0u64, |acc, c| acc | 1 << c.index());
        let Some(caps) = process.capabilities() else {
            return CapabilitySets::default();
        };
        CapabilitySets {
            bounding: mask(caps.bounding(), supported),
            effective: mask(caps.effective(), supported),
            inheritable: mask(caps.inheritable(), supported),
            permitted: mask(caps.permitted(), supported),
            ambient: mask(caps.ambient(), supported),
        }
    }

    /// What must stay effective past [`apply_identity`] so that a seccomp
    /// filter can be loaded without `noNewPrivileges` (CAP_SYS_ADMIN); 0 when
    /// nothing must.
    pub fn kept_for_seccomp(&self, seccomp: bool, no_new_privileges: bool) -> u64 {
        if seccomp && !no_new_privileges {
            SYS_ADMIN & !self.effective
        } else {
            0
        }
    }

    /// Drops from the bounding set every capability not listed (needs
    /// CAP_SETPCAP, so before the user switch).
    fn drop_bounding(&self) -> Result<(), String> {
        for cap in caps::runtime::thread_all_supported() {
            if cap.index() < 64 && self.bounding & (1 << cap.index()) == 0 {
                // SAFETY: prctl with integer arguments has no memory effects.
                let ret = unsafe {
                    libc::prctl(libc::PR_CAPBSET_DROP, cap.index() as libc::c_ulong, 0, 0, 0)
                };
                if ret != 0 {
                    return Err(format!(
                        "dropping {cap} from the bounding set: {}",
                        std::io::Error::last_os_error()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sets the effective, permitted and inheritable sets (plus `keep` in the
    /// first two), then raises the ambient ones.
    fn apply(&self, keep: u64) -> Result<(), String> {
        if let Err(e) = capset(
            self.effective | keep,
            self.permitted | keep,
            self.inheritable,
        ) {
            let held = capget()
                .map(|(_, permitted, _)| permitted)
                .unwrap_or(u64::MAX);
            let missing = (self.permitted | self.effective) & !held;
            let why = if missing != 0 {
                format!(": lucid itself does not hold {}", names(missing))
            } else {
                String::new()
            };
            return Err(format!("setting capabilities: {e}{why}"));
        }
        // SAFETY: prctl with integer arguments has no memory effects.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        for bit in 0..64u64 {
            if self.ambient & (1 << bit) != 0 {
                // runc ignores ambient capabilities the kernel refuses (those
                // not both permitted and inheritable).
                // SAFETY: as above.
                unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        bit as libc::c_ulong,
                        0,
                        0,
                    )
                };
            }
        }
        Ok(())
    }

    /// Drops what [`CapabilitySets::kept_for_seccomp`] kept: the final sets.
    /// Allocates nothing, so it can follow the seccomp filter.
    pub fn finish(&self) -> std::io::Result<()> {
        capset(self.effective, self.permitted, self.inheritable)
    }
}

/// Switches to the process's user and groups, applies its capabilities
/// (keeping `keep` effective besides) and enters its working directory.
pub fn apply_identity(process: &Process, caps: &CapabilitySets, keep: u64) -> Result<(), String> {
    caps.drop_bounding()?;
    // SAFETY: prctl with integer arguments has no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "keeping capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    let user = process.user();
    let gids: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    if setgroups_allowed() {
        // SAFETY: the pointer and length describe a live slice of gids.
        if unsafe { libc::setgroups(gids.len(), gids.as_ptr()) } != 0 {
            return Err(format!(
                "setting additional groups {gids:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
    } else if !gids.is_empty() {
        return Err(
            "process.user.additionalGids: setgroups is denied in this user namespace".into(),
        );
    }
    let (uid, gid) = (user.uid(), user.gid());
    // SAFETY: setresgid/setresuid take plain integers.
    if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
        return Err(format!(
            "setting gid {gid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(format!(
            "setting uid {uid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: prctl with integer arguments has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    enter_cwd(process.cwd())?;
    caps.apply(keep)
}

/// Enters `process.cwd` inside the process's root, and checks that it is
/// (CVE-2024-21626): the path is resolved with `RESOLVE_IN_ROOT` (`..` stops
/// at the root) and without magic links, so a `/proc/self/fd/N` naming a
/// descriptor of the runtime's is refused; then `getcwd` must name a path
/// under the root (the kernel reports a cwd outside it as unreachable).
pub fn enter_cwd(cwd: &Path) -> Result<(), String> {
    use std::os::fd::AsFd;
    let fail = |what: &str| format!("process.cwd {}: {what}", cwd.display());
    let root = nix::fcntl::open(
        "/",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail(&format!("opening the root: {e}")))?;
    let dir = crate::rootfs::open_in_root(root.as_fd(), cwd, crate::rootfs::Create::Nothing)
        .map_err(|e| match e {
            nix::errno::Errno::ELOOP => fail(
                "it resolves through a /proc magic link (or a symlink loop), which could lead out of the container: refused",
            ),
            e => fail(&e.to_string()),
        })?;
    nix::unistd::fchdir(&dir).map_err(|e| fail(&e.to_string()))?;
    let mut buf = [0u8; libc::PATH_MAX as usize];
    // SAFETY: getcwd writes at most buf.len() bytes into our buffer.
    let ret = unsafe { libc::getcwd(buf.as_mut_ptr().cast(), buf.len()) };
    if ret.is_null() || buf[0] != b'/' {
        return Err(fail(&format!(
            "the working directory is outside the container's root ({}): refused",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Hands a pty the process got as its stdio to the process's user, so it can
/// reopen its own terminal (runc does this for the stdio it made). A pty
/// whose owner is not mapped in a user namespace is left as it is.
pub fn give_terminal_to_user(process: &Process) -> Result<(), String> {
    let uid = process.user().uid();
    // SAFETY: an all-zero stat is valid for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into our buffer.
    if unsafe { libc::fstat(0, &mut st) } != 0 || st.st_uid == uid {
        return Ok(());
    }
    // SAFETY: fchown on our own stdin has no memory effects.
    if unsafe { libc::fchown(0, uid, st.st_gid) } != 0 {
        let err = std::io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::EPERM)) {
            return Err(format!("handing the terminal to uid {uid}: {err}"));
        }
    }
    Ok(())
}

fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() != "deny")
}

/// Sets `noNewPrivileges` and the umask (0022 unless the spec gives one).
pub fn apply_final(process: &Process) -> Result<(), String> {
    if process.no_new_privileges() == Some(true) {
        // SAFETY: prctl with integer arguments has no memory effects.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "setting no_new_privs: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let umask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    Ok(())
}

/// The environment the process gets: the spec's, plus `HOME` from the
/// container's /etc/passwd (or `/`) when the spec sets none, as runc does.
pub fn environment(process: &Process) -> Vec<String> {
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|v| v.starts_with("HOME=")) {
        let home = home_of(process.user().uid()).unwrap_or_else(|| "/".to_owned());
        env.push(format!("HOME={home}"));
    }
    env
}

fn home_of(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[2].parse::<u32>().ok()? == uid).then(|| fields[5].to_owned())
    })
}

/// Finds the program to run the way exec does: a name with a slash as is,
/// anything else along `PATH` from the process's environment.
pub fn find_executable(arg0: &str, env: &[String]) -> Result<PathBuf, String> {
    let executable =
        |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file();
    if arg0.contains('/') {
        let path = PathBuf::from(arg0);
        no_magic_links(&path).map_err(|why| format!("exec: {arg0:?}: {why}"))?;
        if executable(&path) {
            return Ok(path);
        }
        let why = if path.exists() {
            "permission denied"
        } else {
            "no such file or directory"
        };
        return Err(format!("exec: {arg0:?}: {why}"));
    }
    let path_var = env
        .iter()
        .find_map(|v| v.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path_var
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(arg0))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| format!("exec: {arg0:?}: executable file not found in $PATH"))
        .and_then(|found| {
            no_magic_links(&found)
                .map(|()| found.clone())
                .map_err(|why| format!("exec: {}: {why}", found.display()))
        })
}

/// Refuses a program path that resolves through a `/proc` magic link: until
/// exec the process still holds runtime descriptors, and
/// `/proc/self/fd/N/..` could lead from one of them to the host
/// (CVE-2024-21626). A missing path is left to the caller's own error.
fn no_magic_links(path: &Path) -> Result<(), String> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(nix::fcntl::AT_FDCWD, path, how) {
        Ok(_) | Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::EACCES) => Ok(()),
        Err(nix::errno::Errno::ELOOP) => Err(
            "it resolves through a /proc magic link (or a symlink loop), which could lead out of the container: refused"
                .to_owned(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

/// Strings as C strings for execve; a NUL byte inside one is an error.
pub fn c_strings(items: &[String], what: &str) -> Result<Vec<CString>, String> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| format!("{what}: {s:?} holds a NUL byte")))
        .collect()
}

/// The program, arguments and environment of the process, with the pointer
/// arrays execve takes built beforehand: exec itself allocates nothing.
pub struct ExecArgs {
    program: CString,
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecArgs {
    /// Finds the program (in the process's root, along its `PATH`) and
    /// prepares its argv and envp.
    pub fn new(process: &Process) -> Result<ExecArgs, String> {
        let args = process.args().clone().unwrap_or_default();
        let arg0 = args.first().ok_or("process.args is empty")?;
        let env = environment(process);
        let program = find_executable(arg0, &env)?;
        let program = CString::new(program.into_os_string().into_encoded_bytes())
            .map_err(|_| format!("process.args[0]: {arg0:?} holds a NUL byte"))?;
        let argv_strings = c_strings(&args, "process.args")?;
        let envp_strings = c_strings(&env, "process.env")?;
        let pointers = |strings: &[CString]| -> Vec<*const libc::c_char> {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let argv = pointers(&argv_strings);
        let envp = pointers(&envp_strings);
        // The CStrings' heap buffers do not move when the Vecs holding them do.
        let mut strings = argv_strings;
        strings.extend(envp_strings);
        Ok(ExecArgs {
            program,
            _strings: strings,
            argv,
            envp,
        })
    }

    /// The program's path.
    pub fn program(&self) -> &std::ffi::CStr {
        &self.program
    }

    /// Replaces this process with the program; returns only on failure.
    pub fn exec(&self) -> nix::errno::Errno {
        // SAFETY: program, argv and envp are NUL-terminated strings and
        // null-terminated pointer arrays that live in self.
        unsafe {
            libc::execve(
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            )
        };
        nix::errno::Errno::last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_is_found_along_path() {
        let env = vec!["PATH=/nonexistent:/bin".to_owned()];
        assert_eq!(
            find_executable("sh", &env).unwrap(),
            PathBuf::from("/bin/sh")
        );
        let err = find_executable("no-such-program-here", &env).unwrap_err();
        assert!(err.contains("not found in $PATH"), "{err}");
        assert!(find_executable("/no/such/file", &env)
            .unwrap_err()
            .contains("no such file"));
    }

    #[test]
    fn capability_names_become_their_bits() {
        let process: Process = serde_json::from_value(serde_json::json!({
            "user": { "uid": 0, "gid": 0 }, "cwd": "/",
            "capabilities": { "bounding": ["CAP_KILL", "CAP_NET_RAW"], "ambient": ["CAP_KILL"] }
        }))
        .unwrap();
        let sets = CapabilitySets::from_process(&process);
        assert_eq!(sets.bounding, 1 << 5 | 1 << 13);
        assert_eq!(sets.ambient, 1 << 5);
        assert_eq!(sets.effective, 0);
        assert_eq!(names(sets.bounding), "CAP_KILL, CAP_NET_RAW");
    }

    #[test]
    fn no_capabilities_field_means_none_as_with_runc() {
        let process: Process = serde_json::from_value(serde_json::json!({
            "user": { "uid": 0, "gid": 0 }, "cwd": "/"
        }))
        .unwrap();
        assert_eq!(
            CapabilitySets::from_process(&process),
            CapabilitySets::default()
        );
    }

    #[test]
    fn sys_admin_is_kept_only_for_a_filter_without_no_new_privileges() {
        let sets = CapabilitySets::default();
        assert_eq!(sets.kept_for_seccomp(true, false), SYS_ADMIN);
        assert_eq!(sets.kept_for_seccomp(true, true), 0);
        assert_eq!(sets.kept_for_seccomp(false, false), 0);
        let admin = CapabilitySets {
            effective: SYS_ADMIN,
            ..Default::default()
        };
        assert_eq!(admin.kept_for_seccomp(true, false), 0);
    }

    #[test]
    fn home_defaults_when_env_lacks_it() {
        let process: Process = serde_json::from_value(serde_json::json!({
            "user": { "uid": 4242, "gid": 0 }, "cwd": "/", "env": ["A=b"]
        }))
        .unwrap();
        let env = environment(&process);
        assert!(env.contains(&"A=b".to_owned()));
        assert!(env.iter().any(|v| v.starts_with("HOME=")));
    }

    #[test]
    fn programs_through_proc_magic_links_are_refused() {
        // /proc/self/cwd is a magic link, as /proc/self/fd/N is.
        let err = find_executable("/proc/self/cwd/x", &[]).unwrap_err();
        assert!(err.contains("magic link"), "{err}");
        let env = vec!["PATH=/proc/self/root/bin".to_owned()];
        let err = find_executable("sh", &env).unwrap_err();
        assert!(err.contains("magic link"), "{err}");
        find_executable("sh", &["PATH=/bin".to_owned()]).unwrap();
    }
}
