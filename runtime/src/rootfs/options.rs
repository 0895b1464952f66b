//! Mount options as the OCI spec (and runc) spell them, turned into mount(2)
//! flags, propagation changes and filesystem data.

use nix::mount::MsFlags;
use oci_spec::runtime::Mount;

/// What one spec mount needs from mount(2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// Flags for the first mount call.
    pub flags: MsFlags,
    /// Comma-separated filesystem-specific options (`mode=755,size=65536k`).
    pub data: String,
    /// Propagation changes applied after mounting (`rslave`, `private`, …).
    pub propagation: Vec<MsFlags>,
    /// A bind mount (`bind` or `rbind` option, or type `bind`).
    pub bind: bool,
}

/// Options that set a flag.
const SETS: &[(&str, MsFlags)] = &[
    ("bind", MsFlags::MS_BIND),
    ("dirsync", MsFlags::MS_DIRSYNC),
    ("iversion", MsFlags::MS_I_VERSION),
    ("lazytime", MsFlags::MS_LAZYTIME),
    ("mand", MsFlags::MS_MANDLOCK),
    ("noatime", MsFlags::MS_NOATIME),
    ("nodev", MsFlags::MS_NODEV),
    ("nodiratime", MsFlags::MS_NODIRATIME),
    ("noexec", MsFlags::MS_NOEXEC),
    ("nosuid", MsFlags::MS_NOSUID),
    ("rbind", MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", MsFlags::MS_RELATIME),
    ("remount", MsFlags::MS_REMOUNT),
    ("ro", MsFlags::MS_RDONLY),
    ("silent", MsFlags::MS_SILENT),
    ("strictatime", MsFlags::MS_STRICTATIME),
    ("sync", MsFlags::MS_SYNCHRONOUS),
];

/// Options that clear a flag.
const CLEARS: &[(&str, MsFlags)] = &[
    ("async", MsFlags::MS_SYNCHRONOUS),
    ("atime", MsFlags::MS_NOATIME),
    ("defaults", MsFlags::empty()),
    ("dev", MsFlags::MS_NODEV),
    ("diratime", MsFlags::MS_NODIRATIME),
    ("exec", MsFlags::MS_NOEXEC),
    ("loud", MsFlags::MS_SILENT),
    ("noiversion", MsFlags::MS_I_VERSION),
    ("nolazytime", MsFlags::MS_LAZYTIME),
    ("nomand", MsFlags::MS_MANDLOCK),
    ("norelatime", MsFlags::MS_RELATIME),
    ("nostrictatime", MsFlags::MS_STRICTATIME),
    ("rw", MsFlags::MS_RDONLY),
    ("suid", MsFlags::MS_NOSUID),
];

/// Options that the spec or runc define and lucid does not implement.
pub const UNSUPPORTED: &[&str] = &[
    "idmap",
    "ridmap",
    "tmpcopyup",
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnodiratime",
    "rdiratime",
    "rrelatime",
    "rnorelatime",
    "rnoatime",
    "ratime",
    "rstrictatime",
    "rnostrictatime",
    "rnosymfollow",
    "rsymfollow",
    "nosymfollow",
    "symfollow",
];

/// Propagation options.
const PROPAGATIONS: &[(&str, MsFlags)] = &[
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

/// The propagation flag of a propagation name (`rslave`, `private`, …).
pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    PROPAGATIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, flag)| *flag)
}

/// Every option lucid recognizes (flags set or cleared, propagation), sorted;
/// anything else but [`UNSUPPORTED`] is passed to the filesystem as data.
pub fn known() -> Vec<&'static str> {
    let mut names: Vec<&str> = SETS
        .iter()
        .chain(CLEARS)
        .chain(PROPAGATIONS)
        .map(|(name, _)| *name)
        .collect();
    names.sort_unstable();
    names
}

impl MountPlan {
    /// Parses a spec mount's type and options. The error names the option.
    pub fn from_spec(mount: &Mount) -> Result<Self, String> {
        let mut plan = MountPlan {
            flags: MsFlags::empty(),
            data: String::new(),
            propagation: Vec::new(),
            bind: mount.typ().as_deref() == Some("bind"),
        };
        let mut data = Vec::new();
        for option in mount.options().iter().flatten() {
            let option = option.as_str();
            if let Some((_, flag)) = SETS.iter().find(|(name, _)| *name == option) {
                plan.flags |= *flag;
            } else if let Some((_, flag)) = CLEARS.iter().find(|(name, _)| *name == option) {
                plan.flags &= !*flag;
            } else if let Some(flag) = propagation_flag(option) {
                plan.propagation.push(flag);
            } else if UNSUPPORTED.contains(&option) {
                return Err(format!(
                    "mount option {option:?} is not supported by this version of lucid"
                ));
            } else {
                data.push(option);
            }
        }
        if plan.flags.contains(MsFlags::MS_BIND) {
            plan.bind = true;
        }
        if plan.bind {
            plan.flags |= MsFlags::MS_BIND;
        }
        plan.data = data.join(",");
        Ok(plan)
    }

    /// The flags a bind mount needs in its second, remounting call (bind
    /// ignores everything but MS_REC on the first).
    pub fn remount_flags(&self) -> MsFlags {
        self.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(typ: &str, options: &[&str]) -> Mount {
        serde_json::from_value(serde_json::json!({
            "destination": "/x", "type": typ, "source": "s", "options": options
        }))
        .unwrap()
    }

    #[test]
    fn flags_data_and_propagation_are_separated() {
        let plan = MountPlan::from_spec(&mount(
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k", "rslave"],
        ))
        .unwrap();
        assert_eq!(plan.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(plan.data, "mode=755,size=65536k");
        assert_eq!(plan.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert!(!plan.bind);
    }

    #[test]
    fn rbind_is_a_recursive_bind_and_later_options_win() {
        let plan = MountPlan::from_spec(&mount("none", &["rbind", "ro", "rw", "nosuid"])).unwrap();
        assert!(plan.bind);
        assert!(plan.flags.contains(MsFlags::MS_REC));
        assert!(!plan.flags.contains(MsFlags::MS_RDONLY));
        assert_eq!(plan.remount_flags(), MsFlags::MS_NOSUID);
    }

    #[test]
    fn bind_type_without_option_is_a_bind() {
        let plan = MountPlan::from_spec(&mount("bind", &[])).unwrap();
        assert!(plan.bind);
        assert!(plan.flags.contains(MsFlags::MS_BIND));
    }

    #[test]
    fn unsupported_options_are_named() {
        let err = MountPlan::from_spec(&mount("bind", &["idmap"])).unwrap_err();
        assert!(err.contains("idmap"), "{err}");
    }
}
