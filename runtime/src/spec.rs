//! Reading, checking and generating `config.json`.
//!
//! `load` is the `spec.load` step and `validate` the `spec.validate` step of
//! the lifecycle. Every error names the file and the field, so an operator can
//! fix the bundle without reading the runtime's code.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// The bundle's configuration file name.
pub const CONFIG_FILE: &str = "config.json";

/// What is wrong with a bundle's configuration.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// There is no `config.json` in the bundle.
    #[error("{path}: no such file: run `lucid spec` in the bundle to make one")]
    NotFound {
        /// The path looked at.
        path: PathBuf,
    },
    /// The file exists but cannot be read.
    #[error("{path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        cause: std::io::Error,
    },
    /// The file is not valid JSON or does not match the OCI runtime spec.
    #[error("{path}: {field}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where in the document (`.` for the top).
        field: String,
        /// The parser's message.
        message: String,
    },
    /// A field holds a value the runtime refuses.
    #[error("config.json: {field}: {reason}")]
    Invalid {
        /// The field, as a JSON path (`linux.namespaces[2].path`).
        field: String,
        /// Why, and what to do where there is something to do.
        reason: String,
    },
    /// `lucid spec` would overwrite an existing file.
    #[error("{0}: file exists: remove it first")]
    Exists(PathBuf),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads and parses `config.json` from `bundle` (the `spec.load` step).
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join(CONFIG_FILE);
    let text = std::fs::read(&path).map_err(|cause| {
        if cause.kind() == std::io::ErrorKind::NotFound {
            SpecError::NotFound { path: path.clone() }
        } else {
            SpecError::Read {
                path: path.clone(),
                cause,
            }
        }
    })?;
    parse(&text).map_err(|(field, message)| SpecError::Parse {
        path,
        field,
        message,
    })
}

/// Parses a configuration document, naming the field where parsing stopped.
pub fn parse(text: &[u8]) -> Result<Spec, (String, String)> {
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let field = err.path().to_string();
        (field, err.into_inner().to_string())
    })
}

/// The parts of a checked configuration the lifecycle needs beyond the spec.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The root filesystem, absolute.
    pub rootfs: PathBuf,
}

/// Checks a configuration against what the runtime supports (the
/// `spec.validate` step). Nothing on the host is changed.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<Validated, SpecError> {
    let version = spec.version();
    if !version.starts_with("1.") {
        return Err(invalid(
            "ociVersion",
            format!("version {version:?} is not supported (want 1.x)"),
        ));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "missing: the bundle needs a root filesystem"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    match std::fs::metadata(&rootfs) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(invalid(
                "root.path",
                format!("{} is not a directory", rootfs.display()),
            ))
        }
        Err(_) => {
            return Err(invalid(
                "root.path",
                format!("rootfs {} does not exist", rootfs.display()),
            ))
        }
    }
    validate_process(spec)?;
    validate_linux(spec)?;
    validate_mounts(spec)?;
    validate_hooks(spec)?;
    reject_unsupported(spec)?;
    Ok(Validated { rootfs })
}

fn validate_process(spec: &Spec) -> Result<(), SpecError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process", "missing: nothing to run"))?;
    check_process(process, "process")
}

/// Checks a process's own fields (`exec` checks its process with this too);
/// `prefix` is the process's JSON path in messages.
pub fn check_process(process: &oci_spec::runtime::Process, prefix: &str) -> Result<(), SpecError> {
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => {
            return Err(invalid(
                format!("{prefix}.args"),
                "must name a program to run",
            ))
        }
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(
            format!("{prefix}.cwd"),
            format!("{} is not an absolute path", process.cwd().display()),
        ));
    }
    for (i, var) in process.env().iter().flatten().enumerate() {
        if !var.contains('=') || var.starts_with('=') {
            return Err(invalid(
                format!("{prefix}.env[{i}]"),
                format!("{var:?} is not NAME=value"),
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, rlimit) in process.rlimits().iter().flatten().enumerate() {
        if !seen.insert(rlimit.typ().to_string()) {
            return Err(invalid(
                format!("{prefix}.rlimits[{i}]"),
                format!("{} is set twice", rlimit.typ()),
            ));
        }
        if rlimit.soft() > rlimit.hard() {
            return Err(invalid(
                format!("{prefix}.rlimits[{i}]"),
                format!(
                    "soft limit {} is above hard limit {}",
                    rlimit.soft(),
                    rlimit.hard()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether the spec asks for a namespace of this type (new or joined).
pub fn has_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    namespace(spec, typ).is_some()
}

/// The spec's entry for a namespace type, if any.
pub fn namespace(
    spec: &Spec,
    typ: LinuxNamespaceType,
) -> Option<&oci_spec::runtime::LinuxNamespace> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|ns| ns.typ() == typ)
}

/// Whether the container gets a namespace of its own (not the host's, not joined).
pub fn has_new_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    namespace(spec, typ).is_some_and(|ns| ns.path().is_none())
}

fn validate_linux(spec: &Spec) -> Result<(), SpecError> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    let mut seen = HashSet::new();
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        if !seen.insert(ns.typ()) {
            return Err(invalid(
                format!("linux.namespaces[{i}]"),
                format!("namespace {} is listed twice", ns.typ()),
            ));
        }
        if let Some(path) = ns.path() {
            if !path.exists() {
                return Err(invalid(
                    format!("linux.namespaces[{i}].path"),
                    format!("{} does not exist", path.display()),
                ));
            }
        }
    }
    let user_ns = has_namespace(spec, LinuxNamespaceType::User);
    let new_user_ns = has_new_namespace(spec, LinuxNamespaceType::User);
    let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if new_user_ns && !has_maps {
        return Err(invalid(
            "linux.uidMappings",
            "a new user namespace needs uidMappings and gidMappings",
        ));
    }
    if has_maps && !user_ns {
        return Err(invalid(
            "linux.uidMappings",
            "id mappings need a user namespace in linux.namespaces",
        ));
    }
    if has_maps && !new_user_ns {
        return Err(invalid(
            "linux.uidMappings",
            "id mappings cannot be applied to a joined user namespace",
        ));
    }
    // As runc: a joined uts namespace may be given a name too (pods share one).
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty())
        && !has_namespace(spec, LinuxNamespaceType::Uts)
    {
        return Err(invalid(
            "hostname",
            "setting the hostname needs a uts namespace",
        ));
    }
    if spec.domainname().as_ref().is_some_and(|h| !h.is_empty())
        && !has_namespace(spec, LinuxNamespaceType::Uts)
    {
        return Err(invalid(
            "domainname",
            "setting the domain name needs a uts namespace",
        ));
    }
    if linux.time_offsets().is_some() && !has_new_namespace(spec, LinuxNamespaceType::Time) {
        return Err(invalid(
            "linux.timeOffsets",
            "time offsets need a new time namespace",
        ));
    }
    for (name, _) in linux.time_offsets().iter().flatten() {
        if name != "monotonic" && name != "boottime" {
            return Err(invalid(
                format!("linux.timeOffsets.{name}"),
                "only monotonic and boottime clocks can be offset",
            ));
        }
    }
    for key in linux.sysctl().iter().flat_map(|m| m.keys()) {
        validate_sysctl(spec, key)?;
    }
    for (i, dev) in linux.devices().iter().flatten().enumerate() {
        if !dev.path().starts_with("/dev/") {
            return Err(invalid(
                format!("linux.devices[{i}].path"),
                format!("{} is not under /dev", dev.path().display()),
            ));
        }
    }
    if let Some(prop) = linux.rootfs_propagation() {
        if crate::rootfs::propagation_flag(prop).is_none() {
            return Err(invalid(
                "linux.rootfsPropagation",
                format!("unknown propagation {prop:?} (want shared, slave, private or unbindable, optionally r-prefixed)"),
            ));
        }
    }
    Ok(())
}

/// runc's rule: a sysctl may only be set where the container has its own
/// kernel namespace for it, so it cannot change the host.
fn validate_sysctl(spec: &Spec, key: &str) -> Result<(), SpecError> {
    let field = format!("linux.sysctl.{key}");
    const IPC_SYSCTLS: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let needs = if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
        LinuxNamespaceType::Ipc
    } else if key.starts_with("net.") {
        LinuxNamespaceType::Network
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        LinuxNamespaceType::Uts
    } else {
        return Err(invalid(
            field,
            "not in a namespace of the container: it would change the host",
        ));
    };
    if !has_new_namespace(spec, needs) {
        return Err(invalid(
            field,
            format!("needs a new {needs} namespace, or it would change the host"),
        ));
    }
    Ok(())
}

fn validate_mounts(spec: &Spec) -> Result<(), SpecError> {
    for (i, mount) in spec.mounts().iter().flatten().enumerate() {
        let field = format!("mounts[{i}]");
        if mount.destination().as_os_str().is_empty() {
            return Err(invalid(format!("{field}.destination"), "is empty"));
        }
        if mount.uid_mappings().is_some() || mount.gid_mappings().is_some() {
            return Err(invalid(
                format!("{field}.uidMappings"),
                "id-mapped mounts are not supported by lucid",
            ));
        }
        crate::rootfs::MountPlan::from_spec(mount)
            .map_err(|reason| invalid(format!("{field}.options"), reason))?;
    }
    Ok(())
}

#[allow(deprecated)] // prestart is deprecated in the spec but still run
fn validate_hooks(spec: &Spec) -> Result<(), SpecError> {
    let Some(hooks) = spec.hooks() else {
        return Ok(());
    };
    let lists = [
        ("prestart", hooks.prestart()),
        ("createRuntime", hooks.create_runtime()),
        ("createContainer", hooks.create_container()),
        ("startContainer", hooks.start_container()),
        ("poststart", hooks.poststart()),
        ("poststop", hooks.poststop()),
    ];
    for (name, list) in lists {
        for (i, hook) in list.iter().flatten().enumerate() {
            if !hook.path().is_absolute() {
                return Err(invalid(
                    format!("hooks.{name}[{i}].path"),
                    format!("{} is not an absolute path", hook.path().display()),
                ));
            }
            if hook.timeout().is_some_and(|t| t <= 0) {
                return Err(invalid(
                    format!("hooks.{name}[{i}].timeout"),
                    "must be a positive number of seconds",
                ));
            }
        }
    }
    Ok(())
}

/// Fields the spec defines that this version of lucid cannot honour. Each is
/// refused with its name rather than silently ignored.
fn reject_unsupported(spec: &Spec) -> Result<(), SpecError> {
    match UNSUPPORTED_FIELDS.iter().find(|(_, set)| set(spec)) {
        Some((field, _)) => Err(invalid(
            *field,
            "is not supported by this version of lucid: remove it from the bundle",
        )),
        None => Ok(()),
    }
}

/// Whether a spec sets one field.
type FieldSet = fn(&Spec) -> bool;

/// The spec fields lucid refuses, each with its test (`lucid features`
/// reports these as not enabled).
pub const UNSUPPORTED_FIELDS: &[(&str, FieldSet)] = &[
    ("process.ioPriority", |s| {
        s.process()
            .as_ref()
            .is_some_and(|p| p.io_priority().is_some())
    }),
    ("process.scheduler", |s| {
        s.process()
            .as_ref()
            .is_some_and(|p| p.scheduler().is_some())
    }),
    ("process.execCPUAffinity", |s| {
        s.process()
            .as_ref()
            .is_some_and(|p| p.exec_cpu_affinity().is_some())
    }),
    ("linux.intelRdt", |s| {
        s.linux().as_ref().is_some_and(|l| l.intel_rdt().is_some())
    }),
    ("linux.personality", |s| {
        s.linux()
            .as_ref()
            .is_some_and(|l| l.personality().is_some())
    }),
    ("linux.memoryPolicy", |s| {
        s.linux()
            .as_ref()
            .is_some_and(|l| l.memory_policy().is_some())
    }),
    ("linux.netDevices", |s| {
        s.linux()
            .as_ref()
            .is_some_and(|l| l.net_devices().is_some())
    }),
];

/// Whether lucid implements a spec field (false for [`UNSUPPORTED_FIELDS`]).
pub fn field_supported(field: &str) -> bool {
    !UNSUPPORTED_FIELDS.iter().any(|(f, _)| *f == field)
}

/// runc's default `config.json`, with `hostname` "lucid".
const TEMPLATE: &str = include_str!("spec_template.json");

/// The configuration `lucid spec` writes: runc's default, or its rootless
/// variant for the calling user.
pub fn template(rootless: bool) -> serde_json::Value {
    // The template is a constant of this crate and is tested to parse.
    let mut config: serde_json::Value =
        serde_json::from_str(TEMPLATE).expect("spec_template.json is valid JSON");
    if rootless {
        make_rootless(
            &mut config,
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
    }
    config
}

/// runc's `spec --rootless` changes: a user namespace mapping the caller to
/// root, no network namespace, no cgroup device rules, /sys bound from the host.
fn make_rootless(config: &mut serde_json::Value, uid: u32, gid: u32) {
    use serde_json::json;
    let linux = &mut config["linux"];
    if let Some(linux) = linux.as_object_mut() {
        linux.remove("resources");
    }
    linux["uidMappings"] = json!([{ "containerID": 0, "hostID": uid, "size": 1 }]);
    linux["gidMappings"] = json!([{ "containerID": 0, "hostID": gid, "size": 1 }]);
    if let Some(namespaces) = linux["namespaces"].as_array_mut() {
        namespaces.retain(|ns| ns["type"] != "network");
        namespaces.push(json!({ "type": "user" }));
    }
    if let Some(mounts) = config["mounts"].as_array_mut() {
        for mount in mounts.iter_mut() {
            match mount["destination"].as_str() {
                Some("/sys") => {
                    mount["type"] = json!("none");
                    mount["source"] = json!("/sys");
                    mount["options"] = json!(["rbind", "nosuid", "noexec", "nodev", "ro"]);
                }
                // An unprivileged user cannot give files to ids it does not map.
                _ => {
                    if let Some(options) = mount["options"].as_array_mut() {
                        options.retain(|o| {
                            !o.as_str()
                                .is_some_and(|o| o.starts_with("uid=") || o.starts_with("gid="))
                        });
                    }
                }
            }
        }
    }
}

/// Writes the default configuration into `bundle/config.json` (`lucid spec`).
pub fn write_template(bundle: &Path, rootless: bool) -> Result<PathBuf, SpecError> {
    let path = bundle.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&template(rootless)).expect("a JSON value serializes");
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(SpecError::Exists(path))
        }
        Err(cause) => return Err(SpecError::Read { path, cause }),
    };
    use std::io::Write;
    file.write_all(text.as_bytes())
        .and_then(|_| file.write_all(b"\n"))
        .map_err(|cause| SpecError::Read {
            path: path.clone(),
            cause,
        })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &serde_json::Value) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), config.to_string()).unwrap();
        dir
    }

    fn runnable_template() -> serde_json::Value {
        let mut config = template(false);
        config["process"]["terminal"] = serde_json::json!(false);
        config
    }

    #[test]
    fn template_parses_and_validates() {
        let dir = bundle_with(&runnable_template());
        let spec = load(dir.path()).unwrap();
        let checked = validate(&spec, dir.path()).unwrap();
        assert_eq!(checked.rootfs, dir.path().join("rootfs"));
    }

    #[test]
    fn rootless_template_has_user_namespace_and_no_network() {
        let config = template(true);
        let types: Vec<_> = config["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ns| ns["type"].as_str().unwrap().to_owned())
            .collect();
        assert!(types.contains(&"user".to_owned()));
        assert!(!types.contains(&"network".to_owned()));
        assert!(config["linux"].get("resources").is_none());
        assert_eq!(config["linux"]["uidMappings"][0]["size"], 1);
        let options: Vec<&str> = config["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["options"].as_array().into_iter().flatten())
            .filter_map(|o| o.as_str())
            .collect();
        assert!(!options
            .iter()
            .any(|o| o.starts_with("gid=") || o.starts_with("uid=")));
    }

    #[test]
    fn unknown_namespace_type_names_the_field() {
        let mut config = runnable_template();
        config["linux"]["namespaces"][1]["type"] = serde_json::json!("bogus");
        let dir = bundle_with(&config);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("linux.namespaces[1].type"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn malformed_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "{ not json").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }

    #[test]
    fn missing_config_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("lucid spec"), "{err}");
    }

    #[test]
    fn missing_rootfs_is_named() {
        let dir = bundle_with(&runnable_template());
        std::fs::remove_dir(dir.path().join("rootfs")).unwrap();
        let spec = load(dir.path()).unwrap();
        let err = validate(&spec, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("root.path") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn host_sysctl_is_refused() {
        let mut config = runnable_template();
        config["linux"]["sysctl"] = serde_json::json!({ "vm.swappiness": "10" });
        let dir = bundle_with(&config);
        let spec = load(dir.path()).unwrap();
        let err = validate(&spec, dir.path()).unwrap_err().to_string();
        assert!(err.contains("linux.sysctl.vm.swappiness"), "{err}");
    }

    #[test]
    fn net_sysctl_needs_network_namespace() {
        let mut config = runnable_template();
        config["linux"]["sysctl"] = serde_json::json!({ "net.ipv4.ip_forward": "1" });
        config["linux"]["namespaces"] = serde_json::json!([{ "type": "mount" }, { "type": "uts" }]);
        let dir = bundle_with(&config);
        let spec = load(dir.path()).unwrap();
        let err = validate(&spec, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("network namespace") || err.contains("net namespace"),
            "{err}"
        );
    }

    #[test]
    fn the_default_template_with_its_terminal_validates() {
        let dir = bundle_with(&template(false));
        let spec = load(dir.path()).unwrap();
        validate(&spec, dir.path()).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().terminal(), Some(true));
    }

    #[test]
    fn unknown_capability_and_seccomp_action_name_their_field() {
        let mut config = runnable_template();
        config["process"]["capabilities"]["bounding"][1] = serde_json::json!("CAP_NOT_A_THING");
        let dir = bundle_with(&config);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("process.capabilities.bounding"), "{err}");
        let mut config = runnable_template();
        config["linux"]["seccomp"] = serde_json::json!({ "defaultAction": "SCMP_ACT_EXPLODE" });
        let dir = bundle_with(&config);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("linux.seccomp.defaultAction"), "{err}");
    }

    #[test]
    fn new_user_namespace_needs_mappings() {
        let mut config = runnable_template();
        config["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({ "type": "user" }));
        let dir = bundle_with(&config);
        let spec = load(dir.path()).unwrap();
        let err = validate(&spec, dir.path()).unwrap_err().to_string();
        assert!(err.contains("uidMappings"), "{err}");
    }

    #[test]
    fn write_template_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        write_template(dir.path(), false).unwrap();
        let err = write_template(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("exists"), "{err}");
    }
}
