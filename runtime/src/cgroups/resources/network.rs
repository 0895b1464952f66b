//! `linux.resources.network`: v1's net_cls class id and net_prio priorities;
//! refused by name on v2, which has neither controller.

use cgroups_rs::net_cls::NetClsController;
use cgroups_rs::net_prio::NetPrioController;
use oci_spec::runtime::LinuxResources;

use super::{via_crate, Controller, Mode, Target};
use crate::cgroups::CgroupError;

/// The net_cls and net_prio controllers' part of `linux.resources`.
pub(super) struct Network;

impl Controller for Network {
    fn apply(&self, target: &Target, r: &LinuxResources, _mode: Mode) -> Result<(), CgroupError> {
        let Some(network) = r.network() else {
            return Ok(());
        };
        if target.is_v2_only() {
            return Err(CgroupError::Unsupported(
                "linux.resources.network: cgroup v2 has no net_cls or net_prio controller: remove the field".into(),
            ));
        }
        if let Some(class_id) = network.class_id() {
            let field = "linux.resources.network.classID";
            let (dir, _) = target.dir("net_cls", field)?;
            let c = NetClsController::new(dir.clone());
            via_crate(field, &dir, "net_cls.classid", class_id, || {
                c.set_class(u64::from(class_id))
            })?;
        }
        for (i, p) in network.priorities().iter().flatten().enumerate() {
            let field = format!("linux.resources.network.priorities[{i}]");
            let (dir, _) = target.dir("net_prio", &field)?;
            let c = NetPrioController::new(dir.clone());
            via_crate(
                &field,
                &dir,
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
                || c.set_if_prio(p.name(), u64::from(p.priority())),
            )?;
        }
        Ok(())
    }
}
