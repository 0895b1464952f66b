//! `linux.resources.pids`: `pids.max` on v1 and v2.

use cgroups_rs::pid::PidController;
use cgroups_rs::MaxValue;
use oci_spec::runtime::LinuxResources;

use super::{via_crate, Controller, Mode, Target};
use crate::cgroups::CgroupError;

/// The pids controller's part of `linux.resources`.
pub(super) struct Pids;

impl Controller for Pids {
    fn apply(&self, target: &Target, r: &LinuxResources, _mode: Mode) -> Result<(), CgroupError> {
        let Some(pids) = r.pids() else {
            return Ok(());
        };
        let field = "linux.resources.pids.limit";
        let (dir, v2) = target.dir("pids", field)?;
        let limit = pids.limit();
        if limit == 0 {
            return Ok(());
        }
        let value = if limit > 0 {
            MaxValue::Value(limit)
        } else {
            MaxValue::Max
        };
        let c = PidController::new(dir.clone(), v2);
        via_crate(field, &dir, "pids.max", limit, || c.set_pid_max(value))
    }
}
