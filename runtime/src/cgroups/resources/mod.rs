//! `linux.resources` written into the container's cgroups (the `cgroup.apply`
//! step, and `lucid update`), on v1 and v2, with runc 1.1's v1→v2 conversions:
//! one file per controller behind [`Controller`], applied in runc's order
//! ([`CONTROLLERS`]), every refusal naming its field.
//!
//! The files are written through cgroups-rs's controllers, each built straight
//! on the container's directory (`MemController::new(dir, v2)`). Its hierarchy
//! layer (`Cgroup`, `hierarchies::auto`) is not used: it hard-codes
//! /sys/fs/cgroup as the v2 root, treats a hybrid host as v1 only, and ignores
//! errors when it enables controllers; `hierarchy.rs` does that part.
//!
//! Done here by hand, where cgroups-rs lacks a file or does not do what runc
//! does: the v1→v2 conversions (the crate writes v1 values into v2 files, and
//! maps swappiness to `memory.swap.max`), `cpu.idle`, the CPU burst,
//! `memory.use_hierarchy`, the kernel memory limit (the crate drops an
//! EOPNOTSUPP with only a log line), block I/O weights (the crate knows neither
//! `blkio.bfq.weight` on v1 nor the `io.weight` fallback on v2), a zero
//! throttle rate (`max` on v2), `unified`, and `checkBeforeUpdate`.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::CgroupError;

mod blkio;
mod cpu;
mod hugetlb;
mod memory;
mod network;
mod pids;
mod rdma;
mod unified;

pub use blkio::blkio_weight_to_io_weight;
pub use cpu::cpu_shares_to_weight;
pub use memory::memory_swap_to_v2;

/// Where each controller's files are for one container: its directory in each
/// v1 hierarchy, and its v2 directory.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `(controllers of the hierarchy, e.g. "cpu,cpuacct", container's dir)` per v1 hierarchy.
    pub v1: Vec<(String, PathBuf)>,
    /// The container's v2 cgroup, where controllers are enabled (pure v2 hosts).
    pub v2: Option<PathBuf>,
}

impl Target {
    /// The directory holding `controller`'s files and whether it is v2; an
    /// error naming `field` when the host has no such controller.
    pub fn dir(&self, controller: &str, field: &str) -> Result<(PathBuf, bool), CgroupError> {
        if let Some((_, dir)) = self
            .v1
            .iter()
            .find(|(options, _)| options.split(',').any(|c| c == controller))
        {
            return Ok((dir.clone(), false));
        }
        if let Some(dir) = &self.v2 {
            let enabled =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            if enabled.split_whitespace().any(|c| c == controller) {
                return Ok((dir.clone(), true));
            }
        }
        Err(CgroupError::Unsupported(format!(
            "{field}: this host has no {controller} cgroup controller (not mounted on v1, not enabled on v2): remove the field"
        )))
    }

    fn is_v2_only(&self) -> bool {
        self.v1.is_empty() && self.v2.is_some()
    }
}

/// How `apply` is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// At create: the cgroup is new.
    Create,
    /// `lucid update`: `checkBeforeUpdate` applies.
    Update,
}

/// One controller's part of `linux.resources`: writes the fields it owns, or
/// refuses by name what the host cannot enforce.
trait Controller {
    /// Writes this controller's fields of `r` (nothing when none is set).
    fn apply(&self, target: &Target, r: &LinuxResources, mode: Mode) -> Result<(), CgroupError>;
}

/// The controllers in runc's order of writing, `unified` last so it overrides.
const CONTROLLERS: &[&dyn Controller] = &[
    &memory::Memory,
    &cpu::Cpu,
    &pids::Pids,
    &blkio::BlockIo,
    &hugetlb::HugeTlb,
    &network::Network,
    &rdma::Rdma,
    &unified::Unified,
];

/// Writes every resource set in `r` (devices excepted: `devices.rs` and the
/// eBPF filter do those), in runc's order, `unified` last so it overrides.
pub fn apply(target: &Target, r: &LinuxResources, mode: Mode) -> Result<(), CgroupError> {
    CONTROLLERS
        .iter()
        .try_for_each(|controller| controller.apply(target, r, mode))
}

fn v2_lacks(field: &str, what: &str) -> CgroupError {
    CgroupError::Unsupported(format!(
        "{field}: cgroup v2 has no {what}: remove the field on this host"
    ))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Writes `value` into an existing cgroup file (cgroupfs cannot create files:
/// a missing one means the kernel or the controller lacks it).
pub fn write_file(
    field: &str,
    dir: &Path,
    file: &str,
    value: impl Display,
) -> Result<(), CgroupError> {
    let path = dir.join(file);
    let value = value.to_string();
    // O_TRUNC as a shell's `>` does: cgroupfs ignores it, and a tree laid
    // out in a temporary directory needs it.
    let result = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    result.map_err(|cause| CgroupError::Write {
        field: field.to_owned(),
        path,
        value,
        cause,
    })
}

/// Runs a cgroups-rs write, turning its error into one naming `field`. The
/// file is checked first because cgroups-rs opens with `O_CREAT`, which
/// cgroupfs refuses with a misleading EACCES when the file does not exist.
fn via_crate(
    field: &str,
    dir: &Path,
    file: &str,
    value: impl Display,
    op: impl FnOnce() -> cgroups_rs::error::Result<()>,
) -> Result<(), CgroupError> {
    let path = dir.join(file);
    let value = value.to_string();
    let error = |cause| CgroupError::Write {
        field: field.to_owned(),
        path: path.clone(),
        value: value.clone(),
        cause,
    };
    if !path.exists() {
        return Err(error(std::io::Error::from(std::io::ErrorKind::NotFound)));
    }
    op().map_err(|e| {
        let source = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(|io| io.raw_os_error())
            .map(std::io::Error::from_raw_os_error)
            .unwrap_or_else(|| std::io::Error::other(e.to_string()));
        error(source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_to_weight_as_runc_does() {
        assert_eq!(cpu_shares_to_weight(0), 0);
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 39);
        assert_eq!(cpu_shares_to_weight(262144), 10000);
    }

    #[test]
    fn blkio_weight_converts_to_io_weight_as_runc_does() {
        assert_eq!(blkio_weight_to_io_weight(0), 0);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10000);
    }

    /// A temporary directory laid out like a v2 cgroup with every controller:
    /// the files exist, as cgroupfs makes them, with the kernel's defaults.
    fn v2_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            (
                "cgroup.controllers",
                "cpuset cpu io memory hugetlb pids rdma misc",
            ),
            ("cpu.weight", "100"),
            ("cpu.max", "max 100000"),
            ("cpu.max.burst", "0"),
            ("cpu.idle", "0"),
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
            ("memory.max", "max"),
            ("memory.low", "0"),
            ("memory.swap.max", "max"),
            ("memory.current", "4096"),
            ("pids.max", "max"),
            ("io.weight", "default 100"),
            ("io.max", ""),
            ("hugetlb.2MB.max", "max"),
            ("rdma.max", ""),
            ("memory.high", "max"),
        ];
        for (file, content) in files {
            std::fs::write(dir.path().join(file), content).unwrap();
        }
        dir
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap()
    }

    fn v2_target(dir: &Path) -> Target {
        Target {
            v1: Vec::new(),
            v2: Some(dir.to_path_buf()),
        }
    }

    #[test]
    fn v2_writes_use_runc_conversions_and_files() {
        let tree = v2_tree();
        let dir = tree.path();
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": { "limit": 104857600, "swap": 209715200, "reservation": 52428800 },
            "cpu": { "shares": 1024, "quota": 50000, "period": 200000, "cpus": "0-1", "mems": "0", "idle": 1, "burst": 1000 },
            "pids": { "limit": 64 },
            "blockIO": { "weight": 500,
                         "throttleReadBpsDevice": [ { "major": 8, "minor": 0, "rate": 1048576 } ],
                         "throttleWriteIOPSDevice": [ { "major": 8, "minor": 0, "rate": 0 } ] },
            "hugepageLimits": [ { "pageSize": "2MB", "limit": 4194304 } ],
            "rdma": { "mlx4_0": { "hcaHandles": 2, "hcaObjects": 2000 } },
            "unified": { "memory.high": "90000000" }
        }))
        .unwrap();
        apply(&v2_target(dir), &r, Mode::Create).unwrap();
        assert_eq!(read(dir, "memory.max"), "104857600");
        // memory+swap 200 MiB over memory 100 MiB: 100 MiB of swap.
        assert_eq!(read(dir, "memory.swap.max"), "104857600");
        assert_eq!(read(dir, "memory.low"), "52428800");
        assert_eq!(read(dir, "cpu.weight"), "39");
        assert_eq!(read(dir, "cpu.max"), "50000 200000");
        assert_eq!(read(dir, "cpu.max.burst"), "1000");
        assert_eq!(read(dir, "cpu.idle"), "1");
        assert_eq!(read(dir, "cpuset.cpus"), "0-1");
        assert_eq!(read(dir, "cpuset.mems"), "0");
        assert_eq!(read(dir, "pids.max"), "64");
        assert_eq!(read(dir, "io.weight"), "4950");
        // Each io.max write is one line; the file keeps the last.
        assert_eq!(read(dir, "io.max"), "8:0 wiops=max");
        assert_eq!(read(dir, "hugetlb.2MB.max"), "4194304");
        assert_eq!(read(dir, "rdma.max"), "mlx4_0 hca_handle=2 hca_object=2000");
        assert_eq!(read(dir, "memory.high"), "90000000");
    }

    #[test]
    fn v2_unlimited_values_are_max() {
        let tree = v2_tree();
        let dir = tree.path();
        std::fs::write(dir.join("cpu.max"), "20000 100000").unwrap();
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": { "limit": -1 }, "cpu": { "quota": -1 }, "pids": { "limit": -1 }
        }))
        .unwrap();
        apply(&v2_target(dir), &r, Mode::Create).unwrap();
        assert_eq!(read(dir, "memory.max"), "max");
        assert_eq!(read(dir, "memory.swap.max"), "max");
        assert_eq!(read(dir, "cpu.max"), "max 100000");
        assert_eq!(read(dir, "pids.max"), "max");
    }

    #[test]
    fn v2_refuses_what_it_has_no_file_for_by_name() {
        let tree = v2_tree();
        let target = v2_target(tree.path());
        for (resources, field) in [
            (
                serde_json::json!({ "memory": { "swappiness": 10 } }),
                "linux.resources.memory.swappiness",
            ),
            (
                serde_json::json!({ "memory": { "disableOOMKiller": true } }),
                "linux.resources.memory.disableOOMKiller",
            ),
            (
                serde_json::json!({ "cpu": { "realtimeRuntime": 1000 } }),
                "linux.resources.cpu.realtimeRuntime",
            ),
            (
                serde_json::json!({ "network": { "classID": 1 } }),
                "linux.resources.network",
            ),
            (
                serde_json::json!({ "blockIO": { "leafWeight": 100 } }),
                "linux.resources.blockIO.leafWeight",
            ),
            (
                serde_json::json!({ "memory": { "limit": 100, "swap": 50 } }),
                "linux.resources.memory.swap",
            ),
            (
                serde_json::json!({ "unified": { "../etc/passwd": "x" } }),
                "linux.resources.unified",
            ),
            (
                serde_json::json!({ "unified": { "memory.nosuch": "1" } }),
                "linux.resources.unified",
            ),
        ] {
            let r: LinuxResources = serde_json::from_value(resources).unwrap();
            let err = apply(&target, &r, Mode::Create).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn check_before_update_refuses_a_limit_below_usage() {
        let tree = v2_tree();
        let target = v2_target(tree.path());
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": { "limit": 1024, "checkBeforeUpdate": true }
        }))
        .unwrap();
        let err = apply(&target, &r, Mode::Update).unwrap_err().to_string();
        assert!(err.contains("checkBeforeUpdate"), "{err}");
        apply(&target, &r, Mode::Create).unwrap();
        assert_eq!(read(tree.path(), "memory.max"), "1024");
    }

    #[test]
    fn memory_swap_converts_to_swap_only() {
        assert_eq!(memory_swap_to_v2(0, -1), Ok(-1));
        assert_eq!(memory_swap_to_v2(-1, 100), Ok(-1));
        assert_eq!(memory_swap_to_v2(0, 100), Ok(0));
        assert_eq!(memory_swap_to_v2(300, 100), Ok(200));
        assert_eq!(memory_swap_to_v2(100, 100), Ok(0));
        assert!(memory_swap_to_v2(50, 100).is_err());
        assert!(memory_swap_to_v2(50, 0).is_err());
    }
}
