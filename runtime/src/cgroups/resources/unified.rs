//! `linux.resources.unified`: cgroup v2 files by name, written last so they override.

use oci_spec::runtime::LinuxResources;

use super::{write_file, Controller, Mode, Target};
use crate::cgroups::CgroupError;

/// Unified controller's part of `linux.resources`.
pub(super) struct Unified;

impl Controller for Unified {
    fn apply(&self, target: &Target, r: &LinuxResources, _mode: Mode) -> Result<(), CgroupError> {
        match r.unified().as_ref().filter(|u| !u.is_empty()) {
            Some(unified) => apply_unified(target, unified),
            None => Ok(()),
        }
    }
}

fn apply_unified(
    target: &Target,
    unified: &std::collections::HashMap<String, String>,
) -> Result<(), CgroupError> {
    let Some(dir) = target.v2.as_ref().filter(|_| target.is_v2_only()) else {
        return Err(CgroupError::Unsupported(
            "linux.resources.unified: this host's controllers are on cgroup v1; unified applies to cgroup v2 hosts only: remove it"
                .into(),
        ));
    };
    let mut keys: Vec<&String> = unified.keys().collect();
    keys.sort();
    for key in keys {
        let field = format!("linux.resources.unified[{key:?}]");
        if key.is_empty() || key.contains('/') || key.starts_with('.') {
            return Err(CgroupError::Invalid(format!(
                "{field}: not a cgroup file name"
            )));
        }
        write_file(&field, dir, key, &unified[key])?;
    }
    Ok(())
}
