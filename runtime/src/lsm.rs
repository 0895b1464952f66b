//! Linux security modules: the AppArmor profile and the SELinux process,
//! key and mount labels a container asks for.
//!
//! Each is applied only where its LSM is enabled on the host. Where a spec
//! asks for one and the LSM is not enabled, lucid refuses the container before
//! anything is made, naming the field: runc fails the same configurations
//! (an AppArmor profile at init, with `write /proc/self/attr/exec: invalid
//! argument`; an SELinux process label at validation; a mount label at the
//! first mount), only later and less clearly.

use std::path::Path;

use oci_spec::runtime::{Process, Spec};

/// `statfs` magic of selinuxfs.
const SELINUX_MAGIC: i64 = 0xf97c_ff8c;

/// What can go wrong with security labels.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    /// The spec asks for an LSM the host does not run.
    #[error("{origin}: {field}: {lsm} is not enabled on this host: remove the field, or run on a host with {lsm}")]
    NotEnabled {
        /// The document (`config.json`, `--process FILE`) or command (`exec`).
        origin: String,
        /// The field, as a JSON path.
        field: String,
        /// `AppArmor` or `SELinux`.
        lsm: &'static str,
    },
    /// Writing a label failed.
    #[error("setting the {what} to {label:?} through {path}: {cause}")]
    Write {
        /// `AppArmor profile`, `SELinux exec label`, …
        what: &'static str,
        /// The label.
        label: String,
        /// The attribute file.
        path: String,
        /// The failure.
        cause: std::io::Error,
    },
}

/// Whether AppArmor is enabled on the host (runc's test: securityfs shows
/// it and the module parameter says `Y`).
pub fn apparmor_enabled() -> bool {
    Path::new("/sys/kernel/security/apparmor").exists()
        && std::fs::read("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|v| v.first() == Some(&b'Y'))
}

/// Whether SELinux is enabled on the host (go-selinux's test: selinuxfs is
/// mounted and this process has a label other than `kernel`).
pub fn selinux_enabled() -> bool {
    let Ok(fs) = nix::sys::statfs::statfs("/sys/fs/selinux") else {
        return false;
    };
    if fs.filesystem_type().0 != SELINUX_MAGIC {
        return false;
    }
    std::fs::read_to_string("/proc/self/attr/current").is_ok_and(|label| {
        let label = label.trim_end_matches(['\0', '\n']);
        !label.is_empty() && label != "kernel"
    })
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Checks that the LSMs a process asks for are enabled; `origin` names the
/// document or command, `prefix` the process's JSON path in it (empty for a
/// process file).
pub fn check_process(process: &Process, origin: &str, prefix: &str) -> Result<(), LsmError> {
    let field = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        }
    };
    if given(process.apparmor_profile()).is_some() && !apparmor_enabled() {
        return Err(LsmError::NotEnabled {
            origin: origin.to_owned(),
            field: field("apparmorProfile"),
            lsm: "AppArmor",
        });
    }
    if given(process.selinux_label()).is_some() && !selinux_enabled() {
        return Err(LsmError::NotEnabled {
            origin: origin.to_owned(),
            field: field("selinuxLabel"),
            lsm: "SELinux",
        });
    }
    Ok(())
}

/// Checks every label of a container's configuration.
pub fn check_spec(spec: &Spec) -> Result<(), LsmError> {
    if let Some(process) = spec.process() {
        check_process(process, "config.json", "process")?;
    }
    let mount_label = spec.linux().as_ref().and_then(|l| given(l.mount_label()));
    if mount_label.is_some() && !selinux_enabled() {
        return Err(LsmError::NotEnabled {
            origin: "config.json".into(),
            field: "linux.mountLabel".into(),
            lsm: "SELinux",
        });
    }
    Ok(())
}

/// Writes `value` to the calling thread's LSM attribute `attr`, preferring
/// the per-LSM directory (`attr/apparmor/exec`) where `lsm_dir` names one.
fn write_attr(
    lsm_dir: Option<&str>,
    attr: &str,
    value: &str,
    what: &'static str,
    label: &str,
) -> Result<(), LsmError> {
    let specific = lsm_dir.map(|dir| format!("/proc/thread-self/attr/{dir}/{attr}"));
    let path = match specific {
        Some(p) if Path::new(&p).exists() => p,
        _ => format!("/proc/thread-self/attr/{attr}"),
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()))
        .map_err(|cause| LsmError::Write {
            what,
            label: label.to_owned(),
            path,
            cause,
        })
}

/// Sets the labels the process gets at its next exec: the AppArmor profile
/// and the SELinux process label. Validation made sure the LSMs are enabled.
pub fn apply_exec_labels(process: &Process) -> Result<(), LsmError> {
    if let Some(profile) = given(process.apparmor_profile()) {
        write_attr(
            Some("apparmor"),
            "exec",
            &format!("exec {profile}"),
            "AppArmor profile",
            profile,
        )?;
    }
    if let Some(label) = given(process.selinux_label()) {
        write_attr(None, "exec", label, "SELinux exec label", label)?;
    }
    Ok(())
}

/// Labels the keys this thread creates next (the session keyring) with the
/// process's SELinux label, as runc does.
pub fn apply_key_label(process: &Process) -> Result<(), LsmError> {
    match given(process.selinux_label()) {
        Some(label) => write_attr(None, "keycreate", label, "SELinux key label", label),
        None => Ok(()),
    }
}

/// The mount data with the SELinux mount label added as runc adds it
/// (`context="…"`), for the filesystem types runc labels this way.
pub fn with_mount_label(data: &str, fstype: &str, spec: &Spec) -> String {
    let label = spec.linux().as_ref().and_then(|l| given(l.mount_label()));
    match label {
        Some(label) if !matches!(fstype, "proc" | "sysfs" | "mqueue" | "cgroup" | "cgroup2") => {
            if data.is_empty() {
                format!("context={label:?}")
            } else {
                format!("{data},context={label:?}")
            }
        }
        _ => data.to_owned(),
    }
}

/// runc labels an mqueue mount through its extended attribute instead.
pub fn label_mqueue(path: &Path, spec: &Spec) -> Result<(), LsmError> {
    let Some(label) = spec.linux().as_ref().and_then(|l| given(l.mount_label())) else {
        return Ok(());
    };
    let error = |cause| LsmError::Write {
        what: "SELinux mount label",
        label: label.to_owned(),
        path: path.display().to_string(),
        cause,
    };
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| error(std::io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: both strings are NUL-terminated and the value slice is live for
    // the call.
    let ret = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c"security.selinux".as_ptr(),
            label.as_ptr().cast(),
            label.len(),
            0,
        )
    };
    if ret != 0 {
        return Err(error(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: serde_json::Value) -> Spec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn mount_label_is_added_as_runc_formats_it() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": { "mountLabel": "system_u:object_r:container_file_t:s0" }
        }));
        assert_eq!(
            with_mount_label("mode=755", "tmpfs", &s),
            "mode=755,context=\"system_u:object_r:container_file_t:s0\""
        );
        assert_eq!(
            with_mount_label("", "devpts", &s),
            "context=\"system_u:object_r:container_file_t:s0\""
        );
        assert_eq!(with_mount_label("", "proc", &s), "");
        let unlabelled = spec(serde_json::json!({ "ociVersion": "1.0.2" }));
        assert_eq!(
            with_mount_label("mode=755", "tmpfs", &unlabelled),
            "mode=755"
        );
    }
}
