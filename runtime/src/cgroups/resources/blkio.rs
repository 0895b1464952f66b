//! `linux.resources.blockIO`: v1's blkio (CFQ or BFQ weight files, throttles) and v2's io
//! (`io.bfq.weight` or `io.weight` with runc's conversion, `io.max`).

use cgroups_rs::blkio::BlkIoController;
use oci_spec::runtime::{LinuxBlockIo, LinuxResources, LinuxThrottleDevice};

use super::{v2_lacks, via_crate, write_file, Controller, Mode, Target};
use crate::cgroups::CgroupError;

/// BlockIo controller's part of `linux.resources`.
pub(super) struct BlockIo;

impl Controller for BlockIo {
    fn apply(&self, target: &Target, r: &LinuxResources, _mode: Mode) -> Result<(), CgroupError> {
        match r.block_io() {
            Some(b) => apply_block_io(target, b),
            None => Ok(()),
        }
    }
}

/// runc's `ConvertBlkIOToIOWeightValue`: blkio weight 10..1000 onto io.weight 1..10000.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + (u64::from(weight).saturating_sub(10) * 9999) / 990
}

fn device_number(field: &str, n: i64) -> Result<u64, CgroupError> {
    u64::try_from(n)
        .map_err(|_| CgroupError::Invalid(format!("{field}: device number {n} is negative")))
}

fn apply_block_io(target: &Target, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let v2_probe = target.dir("blkio", "linux.resources.blockIO").ok();
    let (dir, v2) = match v2_probe {
        Some(found) => found,
        None => target.dir("io", "linux.resources.blockIO")?,
    };
    let c = BlkIoController::new(dir.clone(), v2);
    if v2 {
        if b.leaf_weight().is_some() {
            return Err(v2_lacks(
                "linux.resources.blockIO.leafWeight",
                "leaf weights",
            ));
        }
        let bfq = dir.join("io.bfq.weight").exists();
        if let Some(weight) = b.weight().filter(|w| *w != 0) {
            let field = "linux.resources.blockIO.weight";
            if bfq {
                write_file(field, &dir, "io.bfq.weight", weight)?;
            } else {
                write_file(field, &dir, "io.weight", blkio_weight_to_io_weight(weight))?;
            }
        }
        for (i, wd) in b.weight_device().iter().flatten().enumerate() {
            let field = format!("linux.resources.blockIO.weightDevice[{i}]");
            if !bfq {
                return Err(CgroupError::Unsupported(format!(
                    "{field}: per-device weights on cgroup v2 need the BFQ I/O scheduler (io.bfq.weight), which this host lacks: remove the field"
                )));
            }
            if wd.leaf_weight().is_some() {
                return Err(v2_lacks(&format!("{field}.leafWeight"), "leaf weights"));
            }
            if let Some(weight) = wd.weight() {
                let line = format!(
                    "{}:{} {weight}",
                    device_number(&field, wd.major())?,
                    device_number(&field, wd.minor())?
                );
                write_file(&field, &dir, "io.bfq.weight", line)?;
            }
        }
    } else {
        // Kernels without CFQ name the weights after BFQ (runc's detectWeightFilenames).
        let (weight_file, weight_device_file) = if dir.join("blkio.weight").exists() {
            ("blkio.weight", "blkio.weight_device")
        } else {
            ("blkio.bfq.weight", "blkio.bfq.weight_device")
        };
        if let Some(weight) = b.weight().filter(|w| *w != 0) {
            write_file("linux.resources.blockIO.weight", &dir, weight_file, weight)?;
        }
        if let Some(leaf) = b.leaf_weight().filter(|w| *w != 0) {
            let field = "linux.resources.blockIO.leafWeight";
            via_crate(field, &dir, "blkio.leaf_weight", leaf, || {
                c.set_leaf_weight(u64::from(leaf))
            })?;
        }
        for (i, wd) in b.weight_device().iter().flatten().enumerate() {
            let field = format!("linux.resources.blockIO.weightDevice[{i}]");
            let (major, minor) = (
                device_number(&field, wd.major())?,
                device_number(&field, wd.minor())?,
            );
            if let Some(weight) = wd.weight().filter(|w| *w != 0) {
                write_file(
                    &field,
                    &dir,
                    weight_device_file,
                    format!("{major}:{minor} {weight}"),
                )?;
            }
            if let Some(leaf) = wd.leaf_weight().filter(|w| *w != 0) {
                via_crate(
                    &field,
                    &dir,
                    "blkio.leaf_weight_device",
                    format!("{major}:{minor} {leaf}"),
                    || c.set_leaf_weight_for_device(major, minor, u64::from(leaf)),
                )?;
            }
        }
    }
    type Setter = fn(&BlkIoController, u64, u64, u64) -> cgroups_rs::error::Result<()>;
    type Throttle<'a> = (
        &'a str,
        &'a Option<Vec<LinuxThrottleDevice>>,
        &'a str,
        &'a str,
        Setter,
    );
    let throttles: [Throttle; 4] = [
        (
            "throttleReadBpsDevice",
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
            "rbps",
            BlkIoController::throttle_read_bps_for_device,
        ),
        (
            "throttleWriteBpsDevice",
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
            "wbps",
            BlkIoController::throttle_write_bps_for_device,
        ),
        (
            "throttleReadIOPSDevice",
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
            "riops",
            BlkIoController::throttle_read_iops_for_device,
        ),
        (
            "throttleWriteIOPSDevice",
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
            "wiops",
            BlkIoController::throttle_write_iops_for_device,
        ),
    ];
    for (name, devices, v1_file, v2_key, setter) in throttles {
        for (i, td) in devices.iter().flatten().enumerate() {
            let field = format!("linux.resources.blockIO.{name}[{i}]");
            let major = device_number(&field, td.major())?;
            let minor = device_number(&field, td.minor())?;
            let rate = td.rate();
            if v2 && rate == 0 {
                // runc: a zero rate lifts the limit.
                write_file(
                    &field,
                    &dir,
                    "io.max",
                    format!("{major}:{minor} {v2_key}=max"),
                )?;
            } else if v2 {
                via_crate(
                    &field,
                    &dir,
                    "io.max",
                    format!("{major}:{minor} {v2_key}={rate}"),
                    || setter(&c, major, minor, rate),
                )?;
            } else {
                via_crate(
                    &field,
                    &dir,
                    v1_file,
                    format!("{major}:{minor} {rate}"),
                    || setter(&c, major, minor, rate),
                )?;
            }
        }
    }
    Ok(())
}
