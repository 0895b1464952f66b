//! The `process.setup` step inside the init process: rlimits, OOM score,
//! session keyring, user and groups, capabilities, working directory,
//! `noNewPrivileges` and umask, in the order that keeps each possible
//! (capabilities survive the user switch through PR_SET_KEEPCAPS).

use std::collections::HashSet;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};

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

/// Joins a new session keyring named after the container, so containers do
/// not share the host's keys (runc's default; `--no-new-keyring` skips it).
pub fn join_session_keyring(id: &str) -> Result<(), String> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = CString::new(id).map_err(|_| "container id holds a NUL byte".to_owned())?;
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

/// The capability sets the spec asks for, as the caps crate names them.
#[derive(Debug, Default, Clone)]
pub struct CapabilitySets {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    inheritable: CapsHashSet,
    permitted: CapsHashSet,
    ambient: CapsHashSet,
}

fn convert(
    set: &Option<oci_spec::runtime::Capabilities>,
    field: &str,
) -> Result<CapsHashSet, String> {
    let mut out = HashSet::new();
    for cap in set.iter().flatten() {
        let name = format!("CAP_{cap}");
        let parsed = Capability::from_str(&name)
            .map_err(|_| format!("process.capabilities.{field}: unknown capability {name}"))?;
        out.insert(parsed);
    }
    Ok(out)
}

impl CapabilitySets {
    /// Reads the spec's capabilities.
    pub fn from_spec(caps: &LinuxCapabilities) -> Result<Self, String> {
        Ok(CapabilitySets {
            bounding: convert(caps.bounding(), "bounding")?,
            effective: convert(caps.effective(), "effective")?,
            inheritable: convert(caps.inheritable(), "inheritable")?,
            permitted: convert(caps.permitted(), "permitted")?,
            ambient: convert(caps.ambient(), "ambient")?,
        })
    }

    /// Drops from the bounding set every capability not listed (needs
    /// CAP_SETPCAP, so before the user switch).
    fn apply_bounding(&self) -> Result<(), String> {
        let supported = caps::runtime::thread_all_supported();
        for cap in supported {
            if !self.bounding.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
            }
        }
        Ok(())
    }

    /// Sets the effective, permitted and inheritable sets, then raises the
    /// ambient ones (which must be permitted and inheritable).
    fn apply_sets(&self) -> Result<(), String> {
        let supported = caps::runtime::thread_all_supported();
        let only =
            |set: &CapsHashSet| -> CapsHashSet { set.intersection(&supported).copied().collect() };
        // Each capset call checks the new sets against the current ones:
        // inheritable first (while permitted is still wide), then effective
        // (it must stay within permitted), permitted last.
        caps::set(None, CapSet::Inheritable, &only(&self.inheritable))
            .map_err(|e| format!("setting inheritable capabilities: {e}"))?;
        caps::set(None, CapSet::Effective, &only(&self.effective))
            .map_err(|e| format!("setting effective capabilities: {e}"))?;
        caps::set(None, CapSet::Permitted, &only(&self.permitted))
            .map_err(|e| format!("setting permitted capabilities: {e}"))?;
        caps::clear(None, CapSet::Ambient)
            .map_err(|e| format!("clearing ambient capabilities: {e}"))?;
        for cap in only(&self.ambient) {
            // runc ignores ambient capabilities the kernel refuses (those not
            // both permitted and inheritable).
            let _ = caps::raise(None, CapSet::Ambient, cap);
        }
        Ok(())
    }
}

/// Switches to the spec's user, groups and capabilities and enters its
/// working directory.
pub fn apply_identity(process: &Process) -> Result<(), String> {
    let caps = process
        .capabilities()
        .as_ref()
        .map(CapabilitySets::from_spec)
        .transpose()?;
    if let Some(caps) = &caps {
        caps.apply_bounding()?;
        // SAFETY: prctl with integer arguments has no memory effects.
        if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "keeping capabilities: {}",
                std::io::Error::last_os_error()
            ));
        }
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
    if caps.is_some() {
        // SAFETY: prctl with integer arguments has no memory effects.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    }
    let cwd = process.cwd();
    std::env::set_current_dir(cwd).map_err(|e| format!("process.cwd {}: {e}", cwd.display()))?;
    if let Some(caps) = &caps {
        caps.apply_sets()?;
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
}

/// Strings as C strings for execve; a NUL byte inside one is an error.
pub fn c_strings(items: &[String], what: &str) -> Result<Vec<CString>, String> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| format!("{what}: {s:?} holds a NUL byte")))
        .collect()
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
    fn unknown_capability_is_named() {
        let caps: LinuxCapabilities = serde_json::from_value(serde_json::json!({
            "bounding": ["CAP_KILL", "CAP_NET_RAW"]
        }))
        .unwrap();
        let sets = CapabilitySets::from_spec(&caps).unwrap();
        assert!(sets.bounding.contains(&Capability::CAP_KILL));
        assert!(sets.bounding.contains(&Capability::CAP_NET_RAW));
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
}
