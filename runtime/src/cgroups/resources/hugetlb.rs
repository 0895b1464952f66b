//! `linux.resources.hugepageLimits`: `hugetlb.<size>.limit_in_bytes` on v1,
//! `hugetlb.<size>.max` on v2.

use cgroups_rs::hugetlb::HugeTlbController;
use oci_spec::runtime::LinuxResources;

use super::{via_crate, Controller, Mode, Target};
use crate::cgroups::CgroupError;

/// The hugetlb controller's part of `linux.resources`.
pub(super) struct HugeTlb;

impl Controller for HugeTlb {
    fn apply(&self, target: &Target, r: &LinuxResources, _mode: Mode) -> Result<(), CgroupError> {
        for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
            let field = format!("linux.resources.hugepageLimits[{i}]");
            let (dir, v2) = target.dir("hugetlb", &field)?;
            let limit = u64::try_from(h.limit()).map_err(|_| {
                CgroupError::Invalid(format!("{field}.limit: {} is negative", h.limit()))
            })?;
            let file = if v2 {
                format!("hugetlb.{}.max", h.page_size())
            } else {
                format!("hugetlb.{}.limit_in_bytes", h.page_size())
            };
            let c = HugeTlbController::new(dir.clone(), v2);
            via_crate(&field, &dir, &file, limit, || {
                c.set_limit_in_bytes(h.page_size(), limit)
            })?;
        }
        Ok(())
    }
}
