//! Device access rules: the spec's `linux.resources.devices`, then runc's
//! default allow-list, in runc's order (the defaults last, so they win: the
//! last matching rule decides). As in runc, `linux.devices` only creates
//! nodes; access to them comes from `linux.resources.devices`, and a default
//! device the spec lists itself (same path) leaves the allow-list, so the
//! spec's rules decide for it.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, Spec};

/// One device rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// `a` (all), `c` or `b`.
    pub kind: char,
    /// The major number, `None` for any.
    pub major: Option<i64>,
    /// The minor number, `None` for any.
    pub minor: Option<i64>,
    /// Some of `r`, `w`, `m`.
    pub access: String,
}

impl DeviceRule {
    /// The rule in the v1 `devices.allow`/`devices.deny` syntax (`c 1:3 rwm`).
    pub fn v1_line(&self) -> String {
        if self.kind == 'a' {
            return "a".to_owned();
        }
        let num = |n: Option<i64>| n.map_or("*".to_owned(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            self.kind,
            num(self.major),
            num(self.minor),
            self.access
        )
    }
}

fn from_cgroup_rule(rule: &LinuxDeviceCgroup) -> DeviceRule {
    let kind = match rule.typ() {
        None | Some(LinuxDeviceType::A) => 'a',
        Some(LinuxDeviceType::B) => 'b',
        Some(_) => 'c',
    };
    DeviceRule {
        allow: rule.allow(),
        kind,
        major: rule.major().filter(|m| *m >= 0),
        minor: rule.minor().filter(|m| *m >= 0),
        access: rule.access().clone().unwrap_or_else(|| "rwm".to_owned()),
    }
}

fn allow(kind: char, major: Option<i64>, minor: Option<i64>, access: &str) -> DeviceRule {
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
        (None, allow('c', None, None, "m")),
        (None, allow('b', None, None, "m")),
        (Some("/dev/null"), allow('c', Some(1), Some(3), "rwm")),
        (Some("/dev/random"), allow('c', Some(1), Some(8), "rwm")),
        (Some("/dev/full"), allow('c', Some(1), Some(7), "rwm")),
        (Some("/dev/tty"), allow('c', Some(5), Some(0), "rwm")),
        (Some("/dev/zero"), allow('c', Some(1), Some(5), "rwm")),
        (Some("/dev/urandom"), allow('c', Some(1), Some(9), "rwm")),
        (None, allow('c', Some(136), None, "rwm")),
        (None, allow('c', Some(5), Some(2), "rwm")),
        (None, allow('c', Some(10), Some(200), "rwm")),
    ]
}

/// Every rule for the container, in the order they apply.
pub fn rules(spec: &Spec) -> Vec<DeviceRule> {
    let linux = spec.linux().as_ref();
    let mut rules: Vec<DeviceRule> = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().as_ref())
        .map(|d| d.iter().map(from_cgroup_rule).collect())
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
    rules
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
        let rules = rules(&spec);
        assert_eq!(rules[0].v1_line(), "a");
        assert!(!rules[0].allow);
        // As runc: listing a device creates it but does not allow it.
        assert!(!rules.iter().any(|r| r.v1_line() == "c 10:229 rwm"));
        assert_eq!(rules[1].v1_line(), "c *:* m");
        assert_eq!(rules.last().unwrap().v1_line(), "c 10:200 rwm");
        assert!(rules.iter().any(|r| r.v1_line() == "c 136:* rwm"));
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
        let rules = rules(&spec);
        let last_for_null = rules
            .iter()
            .rev()
            .find(|r| r.kind == 'c' && r.major == Some(1) && r.minor == Some(3))
            .unwrap();
        assert!(!last_for_null.allow);
    }
}
