//! Device rules for the `cgroup_device` filter, with runc's semantics.
use lucid_ebpf_common as common;

/// Errors in device rules.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// An access string had a letter other than `r`, `w`, `m`.
    #[error("invalid device access {0:?}: use letters from \"rwm\"")]
    BadAccess(String),
    /// More rules than the filter holds.
    #[error("{count} device rules, more than the {max} the filter holds; merge rules")]
    TooMany {
        /// Rules given.
        count: usize,
        /// [`common::MAX_DEVICE_RULES`].
        max: usize,
    },
}

/// Device type a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceType {
    /// `c`: character devices.
    Char,
    /// `b`: block devices.
    Block,
    /// `a`: every device.
    All,
}

/// One device rule as OCI's `linux.resources.devices` states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    /// `true` to allow, `false` to deny.
    pub allow: bool,
    /// Device type.
    pub kind: DeviceType,
    /// Major number; `None` (or OCI's -1) matches any.
    pub major: Option<u32>,
    /// Minor number; `None` (or OCI's -1) matches any.
    pub minor: Option<u32>,
    /// Any of `r`, `w`, `m`; empty means all three, as in OCI.
    pub access: String,
}

impl DeviceRule {
    /// An allow rule for a character device, access `rwm`.
    pub fn allow_char(major: Option<u32>, minor: Option<u32>) -> Self {
        Self {
            allow: true,
            kind: DeviceType::Char,
            major,
            minor,
            access: "rwm".to_owned(),
        }
    }

    fn to_raw(&self) -> Result<common::DeviceRule, DeviceError> {
        let mut access = 0;
        for c in self.access.chars() {
            access |= match c {
                'r' => common::device_access::READ,
                'w' => common::device_access::WRITE,
                'm' => common::device_access::MKNOD,
                _ => return Err(DeviceError::BadAccess(self.access.clone())),
            };
        }
        if access == 0 {
            access = common::device_access::READ
                | common::device_access::WRITE
                | common::device_access::MKNOD;
        }
        Ok(common::DeviceRule {
            kind: match self.kind {
                DeviceType::Char => common::device_type::CHAR,
                DeviceType::Block => common::device_type::BLOCK,
                DeviceType::All => common::device_type::ALL,
            },
            major: self.major.unwrap_or(common::DEVICE_WILDCARD),
            minor: self.minor.unwrap_or(common::DEVICE_WILDCARD),
            access,
            allow: u32::from(self.allow),
        })
    }
}

/// The devices runc allows every container, appended after the spec's rules
/// (runc's `specconv.AllowedDevices`, without the deprecated `/dev/console` entry).
pub fn runc_default_rules() -> Vec<DeviceRule> {
    let mknod = |kind| DeviceRule {
        allow: true,
        kind,
        major: None,
        minor: None,
        access: "m".to_owned(),
    };
    vec![
        mknod(DeviceType::Char),
        mknod(DeviceType::Block),
        DeviceRule::allow_char(Some(1), Some(3)), // /dev/null
        DeviceRule::allow_char(Some(1), Some(8)), // /dev/random
        DeviceRule::allow_char(Some(1), Some(7)), // /dev/full
        DeviceRule::allow_char(Some(5), Some(0)), // /dev/tty
        DeviceRule::allow_char(Some(1), Some(5)), // /dev/zero
        DeviceRule::allow_char(Some(1), Some(9)), // /dev/urandom
        DeviceRule::allow_char(Some(136), None),  // /dev/pts/*
        DeviceRule::allow_char(Some(5), Some(2)), // /dev/ptmx
        DeviceRule::allow_char(Some(10), Some(200)), // /dev/net/tun
    ]
}

/// The rules runc would apply for a spec's `linux.resources.devices`: default deny, the spec's
/// rules in order, then [`runc_default_rules`]; the last matching rule wins.
///
/// As in runc, the default devices come last, so a spec cannot deny them.
pub fn runc_rules(spec_rules: &[DeviceRule]) -> Vec<DeviceRule> {
    let mut rules = spec_rules.to_vec();
    rules.extend(runc_default_rules());
    rules
}

/// Builds the filter's table from `rules` (applied in order, last match wins) over a default
/// of deny. A leading "allow all" or "deny all" rule sets the default and frees its slot.
pub fn compile(rules: &[DeviceRule]) -> Result<common::DeviceRules, DeviceError> {
    let mut table = common::DeviceRules::default();
    let mut raw = Vec::with_capacity(rules.len());
    for rule in rules {
        let r = rule.to_raw()?;
        let matches_all = r.kind == common::device_type::ALL
            && r.major == common::DEVICE_WILDCARD
            && r.minor == common::DEVICE_WILDCARD
            && r.access
                == common::device_access::READ
                    | common::device_access::WRITE
                    | common::device_access::MKNOD;
        if matches_all {
            // Everything before a rule matching every access is dead.
            raw.clear();
            table.default_allow = r.allow;
        } else {
            raw.push(r);
        }
    }
    if raw.len() > common::MAX_DEVICE_RULES {
        return Err(DeviceError::TooMany {
            count: raw.len(),
            max: common::MAX_DEVICE_RULES,
        });
    }
    table.len = raw.len() as u32;
    table.rules[..raw.len()].copy_from_slice(&raw);
    Ok(table)
}

/// What the filter decides for an access, computed in user space exactly as the program does.
///
/// `access` holds [`common::device_access`] bits; used by tests and to explain a denial.
pub fn decide(table: &common::DeviceRules, kind: u32, major: u32, minor: u32, access: u32) -> bool {
    let mut allow = table.default_allow;
    for rule in table.rules.iter().take(table.len as usize) {
        let type_matches = rule.kind == common::device_type::ALL || rule.kind == kind;
        let major_matches = rule.major == common::DEVICE_WILDCARD || rule.major == major;
        let minor_matches = rule.minor == common::DEVICE_WILDCARD || rule.minor == minor;
        if type_matches && major_matches && minor_matches && access & rule.access == access {
            allow = rule.allow;
        }
    }
    allow != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{device_access::*, device_type::*};

    fn deny_all() -> DeviceRule {
        DeviceRule {
            allow: false,
            kind: DeviceType::All,
            major: None,
            minor: None,
            access: "rwm".to_owned(),
        }
    }

    #[test]
    fn runc_rules_allow_defaults_and_deny_the_rest() {
        let table = compile(&runc_rules(&[deny_all()])).unwrap();
        assert_eq!(table.default_allow, 0);
        assert!(decide(&table, CHAR, 1, 3, READ | WRITE));
        assert!(decide(&table, CHAR, 136, 7, READ));
        assert!(decide(&table, BLOCK, 8, 0, MKNOD));
        assert!(!decide(&table, BLOCK, 8, 0, READ));
        assert!(!decide(&table, CHAR, 4, 1, WRITE));
    }

    #[test]
    fn last_matching_rule_wins() {
        let mut deny_null = DeviceRule::allow_char(Some(1), Some(3));
        deny_null.allow = false;
        let allow_all = DeviceRule {
            allow: true,
            ..deny_all()
        };
        let table = compile(&[allow_all, deny_null.clone()]).unwrap();
        assert!(!decide(&table, CHAR, 1, 3, READ));
        assert!(decide(&table, CHAR, 1, 5, READ));
        // runc appends its defaults, so a spec cannot deny /dev/null.
        let table = compile(&runc_rules(&[deny_null])).unwrap();
        assert!(decide(&table, CHAR, 1, 3, READ));
    }

    #[test]
    fn a_rule_applies_only_when_it_grants_every_access_asked() {
        let read_only = DeviceRule {
            access: "r".to_owned(),
            ..DeviceRule::allow_char(Some(1), Some(3))
        };
        let table = compile(&[read_only]).unwrap();
        assert!(decide(&table, CHAR, 1, 3, READ));
        assert!(!decide(&table, CHAR, 1, 3, READ | WRITE));
    }

    #[test]
    fn empty_access_means_rwm_and_bad_letters_are_errors() {
        let rule = DeviceRule {
            access: String::new(),
            ..DeviceRule::allow_char(Some(1), Some(3))
        };
        assert!(decide(
            &compile(&[rule]).unwrap(),
            CHAR,
            1,
            3,
            READ | WRITE | MKNOD
        ));
        let bad = DeviceRule {
            access: "rx".to_owned(),
            ..DeviceRule::allow_char(None, None)
        };
        assert!(matches!(compile(&[bad]), Err(DeviceError::BadAccess(_))));
    }

    #[test]
    fn too_many_rules_is_an_error() {
        let rules = vec![DeviceRule::allow_char(Some(1), Some(3)); common::MAX_DEVICE_RULES + 1];
        assert!(matches!(compile(&rules), Err(DeviceError::TooMany { .. })));
    }
}
