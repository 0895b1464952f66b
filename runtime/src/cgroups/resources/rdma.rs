//! `linux.resources.rdma`: `rdma.max` lines per device.

use cgroups_rs::rdma::RdmaController;
use oci_spec::runtime::LinuxResources;

use super::{via_crate, Controller, Mode, Target};
use crate::cgroups::CgroupError;

/// The rdma controller's part of `linux.resources`.
pub(super) struct Rdma;

impl Controller for Rdma {
    fn apply(&self, target: &Target, r: &LinuxResources, _mode: Mode) -> Result<(), CgroupError> {
        for (device, limits) in r.rdma().iter().flatten() {
            let field = format!("linux.resources.rdma[{device:?}]");
            let (dir, _) = target.dir("rdma", &field)?;
            let mut line = device.clone();
            if let Some(handles) = limits.hca_handles() {
                line += &format!(" hca_handle={handles}");
            }
            if let Some(objects) = limits.hca_objects() {
                line += &format!(" hca_object={objects}");
            }
            let c = RdmaController::new(dir.clone());
            via_crate(&field, &dir, "rdma.max", &line, || c.set_max(&line))?;
        }
        Ok(())
    }
}
