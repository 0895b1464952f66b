//! `lucid features`: what this runtime implements, in the runtime-spec's
//! features document (runc's `features` JSON), which clients such as
//! containerd read to decide what they may ask for.
//!
//! Every list comes from the table the implementing code uses (mount options,
//! hook points, namespaces, seccomp actions, operators and flags, the fields
//! the spec check refuses), and two are probed on the host where the spec asks
//! for what works here: the seccomp architectures the installed libseccomp can
//! build for, and the filter flags the kernel accepts. As the spec says,
//! `apparmor`, `selinux` and `cgroup` say what lucid implements, not what this
//! host has: a profile or a controller the host lacks is refused at `create`.

use serde_json::{json, Value};

use crate::hooks::HookKind;
use crate::namespaces::JOIN_ORDER;
use crate::rootfs::options;
use crate::seccomp;
use crate::spec;

/// The oldest runtime-spec version lucid runs (`spec::validate` takes any 1.x).
const OCI_VERSION_MIN: &str = "1.0.0";

fn names<T: serde::Serialize>(items: impl IntoIterator<Item = T>) -> Vec<Value> {
    items
        .into_iter()
        .map(|item| serde_json::to_value(item).unwrap_or(Value::Null))
        .filter(|v| !v.is_null())
        .collect()
}

/// Capability names as the spec writes them, those lucid can parse and set.
fn capabilities() -> Vec<String> {
    let mut all: Vec<caps::Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all.into_iter()
        .map(|c| c.to_string())
        .filter(|name| {
            serde_json::from_value::<oci_spec::runtime::Capability>(Value::String(name.clone()))
                .is_ok()
        })
        .collect()
}

/// The annotations: libseccomp's version, lucid's, and what eBPF does on
/// this host (`lucid.ebpf.<feature>`: `on: <program>`, `off: <why>`;
/// `lucid.ebpf.syscalls.hook`: `fexit`, `tracepoint` or `none`).
fn annotations(libseccomp: String) -> Value {
    let mut map = serde_json::Map::new();
    map.insert(
        "io.github.seccomp.libseccomp.version".into(),
        libseccomp.into(),
    );
    map.insert("lucid.version".into(), env!("CARGO_PKG_VERSION").into());
    match crate::ebpf::host_features() {
        Ok((features, hook)) => {
            for f in features {
                let value = match f.why_off() {
                    None => match &f.availability {
                        lucid_ebpf::Availability::On { program } => format!("on: {program}"),
                        _ => "on".to_owned(),
                    },
                    Some(why) => format!("off: {why}"),
                };
                map.insert(format!("lucid.ebpf.{}", f.name), value.into());
            }
            let hook = match hook {
                Some(lucid_ebpf::SyscallHook::Fexit) => "fexit",
                Some(lucid_ebpf::SyscallHook::Tracepoint) => "tracepoint",
                None => "none",
            };
            map.insert("lucid.ebpf.syscalls.hook".into(), hook.into());
        }
        Err(e) => {
            map.insert("lucid.ebpf".into(), format!("unavailable: {e}").into());
        }
    }
    Value::Object(map)
}

/// The features document.
pub fn features() -> Value {
    let mount_options = options::known();
    let idmap = !options::UNSUPPORTED.contains(&"idmap");
    let version = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    json!({
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": oci_spec::runtime::VERSION,
        "hooks": HookKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "mountOptions": mount_options,
        "linux": {
            "namespaces": names(JOIN_ORDER),
            "capabilities": capabilities(),
            "cgroup": {
                "v1": true,
                "v2": true,
                // `--systemd-cgroup` is refused: lucid writes cgroupfs itself.
                "systemd": false,
                "systemdUser": false,
                "rdma": true,
            },
            "seccomp": {
                "enabled": true,
                "actions": names(seccomp::ACTIONS),
                "operators": names(seccomp::OPERATORS),
                "archs": names(seccomp::supported_arches()),
                "knownFlags": names(seccomp::FLAGS),
                "supportedFlags": names(seccomp::supported_flags()),
            },
            "apparmor": { "enabled": true },
            "selinux": { "enabled": true },
            "intelRdt": { "enabled": spec::field_supported("linux.intelRdt") },
            "mountExtensions": { "idmap": { "enabled": idmap } },
            "netDevices": { "enabled": spec::field_supported("linux.netDevices") },
        },
        "annotations": annotations(version),
        // lucid takes no configuration from annotations.
        "potentiallyUnsafeConfigAnnotations": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_parses_as_the_spec_features_type() {
        let doc = features();
        let parsed: oci_spec::runtime::Features =
            serde_json::from_value(doc.clone()).expect("the spec's schema");
        assert_eq!(parsed.oci_version_min(), "1.0.0");
        let linux = parsed.linux().as_ref().unwrap();
        assert_eq!(linux.namespaces().as_ref().unwrap().len(), 8);
        assert_eq!(doc["hooks"].as_array().unwrap().len(), 6);
    }

    #[test]
    fn every_claimed_mount_option_parses_and_refused_ones_are_not_claimed() {
        for name in options::known() {
            let mount: oci_spec::runtime::Mount = serde_json::from_value(json!({
                "destination": "/x", "type": "tmpfs", "source": "tmpfs", "options": [name]
            }))
            .unwrap();
            options::MountPlan::from_spec(&mount).unwrap();
        }
        for name in options::UNSUPPORTED {
            assert!(!options::known().contains(name), "{name}");
        }
    }

    #[test]
    fn every_claimed_capability_is_known_to_the_kernel_table() {
        let caps = capabilities();
        assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert!(caps.iter().all(|c| c.starts_with("CAP_")));
    }

    #[test]
    fn unsupported_fields_are_reported_disabled() {
        let doc = features();
        assert_eq!(doc["linux"]["intelRdt"]["enabled"], false);
        assert_eq!(doc["linux"]["netDevices"]["enabled"], false);
        assert_eq!(doc["linux"]["mountExtensions"]["idmap"]["enabled"], false);
    }
}
