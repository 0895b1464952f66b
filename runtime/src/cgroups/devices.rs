//! Device access rules: the spec's `linux.resources.devices`, then runc's
//! default allow-list, in runc's order (the defaults last, so they win: the
//! last matching rule decides). As in runc, `linux.devices` only creates
//! nodes; access to them comes from `linux.resources.devices`, and a default
//! device the spec lists itself (same path) leaves the allow-list, so the
//! spec's rules decide for it.

use lucid_ebpf::{DeviceRule, DeviceType};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, Spec};

use super::CgroupError;

/// The rule in the v1 `devices.allow`/`devices.deny` syntax (`c 1:3 rwm`).
/// One rule type serves both enforcers: this file's v1 lines and the eBPF
/// filter (`lucid_ebpf::DeviceRule`), which a v2 cgroup needs.
pub fn v1_line(rule: &DeviceRule) -> String {
    let kind = match rule.kind {
        DeviceType::All => return "a".to_owned(),
        DeviceType::Char => 'c',
        DeviceType::Block => 'b',
    };
    let num = |n: Option<u32>| n.map_or("*".to_owned(), |n| n.to_string());
    let access = if rule.access.is_empty() {
        "rwm"
    } else {
        &rule.access
    };
    format!("{kind} {}:{} {access}", num(rule.major), num(rule.minor))
}

fn from_cgroup_rule(rule: &LinuxDeviceCgroup) -> Result<DeviceRule, CgroupError> {
    let kind = match rule.typ() {
        None | Some(LinuxDeviceType::A) => DeviceType::All,
        Some(LinuxDeviceType::B) => DeviceType::Block,
        Some(_) => DeviceType::Char,
    };
    // OCI's -1 (any negative) is a wildcard; a number past 32 bits is no device.
    let number = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map(|n| {
                u32::try_from(n).map_err(|_| {
                    CgroupError::Invalid(format!(
                        "config.json: linux.resources.devices: device number {n} is out of range"
                    ))
                })
            })
            .transpose()
    };
    Ok(DeviceRule {
        allow: rule.allow(),
        kind,
        major: number(rule.major())?,
        minor: number(rule.minor())?,
        access: rule.access().clone().unwrap_or_else(|| "rwm".to_owned()),
    })
}

fn allow(kind: DeviceType, major: Option<u32>, minor: Option<u32>, access: &str) -> DeviceRule {
    DeviceRule {
        allow: true,
        kind,
        major,
        minor,
        access: access.to_owned(),
    }
}

/// runc's default allowed devices (`specconv.AllowedDevices`), with the
/// path each one has in the container, if any.
pub fn default_rules() -> Vec<(Option<&'static str>, DeviceRule)> {
    vec![
        (None, allow(DeviceType::Char, None, None, "m")),
        (None, allow(DeviceType::Block, None, None, "m")),
        (
            Some("/dev/null"),
            allow(DeviceType::Char, Some(1), Some(3), "rwm"),
        ),
        (
            Some("/dev/random"),
            allow(DeviceType::Char, Some(1), Some(8), "rwm"),
        ),
        (
            Some("/dev/full"),
            allow(DeviceType::Char, Some(1), Some(7), "rwm"),
        ),
        (
            Some("/dev/tty"),
            allow(DeviceType::Char, Some(5), Some(0), "rwm"),
        ),
        (
            Some("/dev/zero"),
            allow(DeviceType::Char, Some(1), Some(5), "rwm"),
        ),
        (
            Some("/dev/urandom"),
            allow(DeviceType::Char, Some(1), Some(9), "rwm"),
        ),
        (None, allow(DeviceType::Char, Some(136), None, "rwm")),
        (None, allow(DeviceType::Char, Some(5), Some(2), "rwm")),
        (None, allow(DeviceType::Char, Some(10), Some(200), "rwm")),
    ]
}

/// Every rule for the container, in the order they apply.
pub fn rules(spec: &Spec) -> Result<Vec<DeviceRule>, CgroupError> {
    let linux = spec.linux().as_ref();
    let mut rules: Vec<DeviceRule> = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().as_ref())
        .map(|d| d.iter().map(from_cgroup_rule).collect::<Result<_, _>>())
        .transpose()?
        .unwrap_or_default();
    let spec_paths: Vec<&std::path::Path> = linux
        .iter()
        .flat_map(|l| l.devices().iter().flatten())
        .map(|d| d.path().as_path())
        .collect();
    rules.extend(
        default_rules()
            .into_iter()
            .filter(|(path, _)| {
                !path.is_some_and(|p| spec_paths.contains(&std::path::Path::new(p)))
            })
            .map(|(_, rule)| rule),
    );
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_rules_come_first_and_defaults_last() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {
                "resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
                "devices": [ { "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229 } ]
            }
        }))
        .unwrap();
        let rules = rules(&spec).unwrap();
        assert_eq!(v1_line(&rules[0]), "a");
        assert!(!rules[0].allow);
        // As runc: listing a device creates it but does not allow it.
        assert!(!rules.iter().any(|r| v1_line(r) == "c 10:229 rwm"));
        assert_eq!(v1_line(&rules[1]), "c *:* m");
        assert_eq!(v1_line(rules.last().unwrap()), "c 10:200 rwm");
        assert!(rules.iter().any(|r| v1_line(r) == "c 136:* rwm"));
    }

    #[test]
    fn wildcards_and_numbers_out_of_range() {
        let spec = |major: i64| -> Spec {
            serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2",
                "linux": { "resources": { "devices": [
                    { "allow": true, "type": "c", "major": major, "minor": -1, "access": "rw" }
                ] } }
            }))
            .unwrap()
        };
        let rules = rules(&spec(-1)).unwrap();
        assert_eq!(v1_line(&rules[0]), "c *:* rw");
        let err = super::rules(&spec(1 << 40)).unwrap_err().to_string();
        assert!(
            err.contains("device number 1099511627776 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn a_default_device_the_spec_lists_leaves_the_allow_list() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {
                "resources": { "devices": [
                    { "allow": false, "access": "rwm" },
                    { "allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm" }
                ] },
                "devices": [ { "path": "/dev/null", "type": "c", "major": 1, "minor": 3 } ]
            }
        }))
        .unwrap();
        let rules = rules(&spec).unwrap();
        let last_for_null = rules
            .iter()
            .rev()
            .find(|r| r.kind == DeviceType::Char && r.major == Some(1) && r.minor == Some(3))
            .unwrap();
        assert!(!last_for_null.allow);
    }
}
