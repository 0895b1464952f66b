//! The container's cgroups on v1, hybrid and v2 hosts.
//!
//! `create` makes the container's cgroup in every hierarchy (the
//! `cgroup.create` step) and applies its device rules (`cgroup.apply`); the
//! init process is born in the v2 cgroup with `CLONE_INTO_CGROUP` and joins
//! the v1 ones through `cgroup.procs`. On hybrid hosts the container gets a v2
//! cgroup of its own too, so eBPF can find it by cgroup id.

pub mod devices;
pub mod hierarchy;

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxResources, Spec};

pub use hierarchy::{Hierarchy, Layout};

use crate::rootfs::CgroupMountSource;
use crate::state::CgroupPaths;

/// What can go wrong with cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup hierarchy is mounted.
    #[error("no cgroup hierarchy is mounted under /sys/fs/cgroup")]
    NoHierarchy,
    /// `linux.cgroupsPath` would leave the cgroup root.
    #[error("config.json: linux.cgroupsPath: {0:?} leaves the cgroup root")]
    Escapes(PathBuf),
    /// A file operation failed.
    #[error("cgroup {path}: {cause}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        cause: std::io::Error,
    },
    /// The host cannot enforce what the spec asks.
    #[error("{0}")]
    Unsupported(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |cause| CgroupError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Resource fields refused until lucid enforces them: the name of the first
/// one set, as a JSON path.
pub fn check_supported(resources: Option<&LinuxResources>) -> Result<(), String> {
    let Some(r) = resources else {
        return Ok(());
    };
    let set: [(&str, bool); 8] = [
        ("linux.resources.memory", r.memory().is_some()),
        ("linux.resources.cpu", r.cpu().is_some()),
        ("linux.resources.pids", r.pids().is_some()),
        ("linux.resources.blockIO", r.block_io().is_some()),
        (
            "linux.resources.hugepageLimits",
            r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
        ),
        ("linux.resources.network", r.network().is_some()),
        (
            "linux.resources.rdma",
            r.rdma().as_ref().is_some_and(|m| !m.is_empty()),
        ),
        (
            "linux.resources.unified",
            r.unified().as_ref().is_some_and(|m| !m.is_empty()),
        ),
    ];
    match set.iter().find(|(_, present)| *present) {
        Some((field, _)) => Err((*field).to_owned()),
        None => Ok(()),
    }
}

/// The container's cgroup path relative to each hierarchy's root, as runc
/// reads `linux.cgroupsPath`: absolute as given, relative under the runtime's
/// own cgroup, `/lucid/<id>` when absent.
pub fn relative_path(spec: &Spec, id: &str) -> Result<PathBuf, CgroupError> {
    let given = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .filter(|p| !p.as_os_str().is_empty());
    let path = match given {
        None => PathBuf::from("/lucid").join(id),
        Some(p) if p.is_absolute() => p,
        Some(p) => {
            // A "slice:prefix:name" path is the systemd driver's syntax.
            if p.to_string_lossy().matches(':').count() == 2 {
                return Err(CgroupError::Unsupported(format!(
                    "config.json: linux.cgroupsPath: {} is a systemd cgroup path; lucid has no systemd cgroup driver",
                    p.display()
                )));
            }
            PathBuf::from("/").join(p)
        }
    };
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(CgroupError::Escapes(path));
    }
    Ok(path)
}

/// The container's cgroups on this host.
#[derive(Debug, Clone)]
pub struct Cgroup {
    hierarchies: Vec<Hierarchy>,
    paths: CgroupPaths,
    relative_to_own: bool,
}

impl Cgroup {
    /// The cgroups of a container, whether or not they exist yet.
    pub fn new(spec: &Spec, id: &str) -> Result<Self, CgroupError> {
        let hierarchies = hierarchy::detect().map_err(io_err(Path::new("/proc/self/mountinfo")))?;
        if hierarchies.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        let rel = relative_path(spec, id)?;
        let relative_to_own = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .is_some_and(|p| !p.as_os_str().is_empty() && !p.is_absolute());
        let mut cgroup = Cgroup {
            hierarchies,
            paths: CgroupPaths {
                path: rel,
                ..Default::default()
            },
            relative_to_own,
        };
        cgroup.paths.dirs = cgroup
            .hierarchies
            .iter()
            .map(|h| cgroup.dir_in(h))
            .collect();
        cgroup.paths.unified = cgroup
            .hierarchies
            .iter()
            .find(|h| h.v2)
            .map(|h| cgroup.dir_in(h));
        Ok(cgroup)
    }

    /// The cgroups recorded in a container's state.
    pub fn from_paths(paths: &CgroupPaths) -> Self {
        Cgroup {
            hierarchies: hierarchy::detect().unwrap_or_default(),
            paths: paths.clone(),
            relative_to_own: false,
        }
    }

    fn dir_in(&self, h: &Hierarchy) -> PathBuf {
        let base = if self.relative_to_own {
            hierarchy::own_path_in(h)
        } else {
            PathBuf::from("/")
        };
        let rel = base.join(
            self.paths
                .path
                .strip_prefix("/")
                .unwrap_or(&self.paths.path),
        );
        h.mountpoint.join(rel.strip_prefix("/").unwrap_or(&rel))
    }

    /// What the state records.
    pub fn paths(&self) -> &CgroupPaths {
        &self.paths
    }

    /// The host's layout.
    pub fn layout(&self) -> Option<Layout> {
        hierarchy::layout(&self.hierarchies)
    }

    /// Makes the cgroup directories and applies the device rules (the
    /// `cgroup.create` and `cgroup.apply` steps). On failure, what was made
    /// is removed again.
    pub fn create(&mut self, spec: &Spec) -> Result<(), CgroupError> {
        let result = self.create_dirs().and_then(|()| self.apply_devices(spec));
        if let Err(e) = result {
            let _ = self.remove();
            return Err(e);
        }
        if let Some(unified) = &self.paths.unified {
            use std::os::unix::fs::MetadataExt;
            self.paths.unified_id = std::fs::metadata(unified).ok().map(|m| m.ino());
        }
        Ok(())
    }

    fn create_dirs(&self) -> Result<(), CgroupError> {
        for (h, dir) in self.hierarchies.iter().zip(&self.paths.dirs) {
            if h.has_controller("cpuset") {
                create_cpuset_dirs(&h.mountpoint, dir)?;
            } else {
                std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            }
        }
        Ok(())
    }

    fn apply_devices(&self, spec: &Spec) -> Result<(), CgroupError> {
        let rules = devices::rules(spec);
        let has_spec_rules = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().as_ref())
            .is_some_and(|d| !d.is_empty());
        let v1 = self
            .hierarchies
            .iter()
            .zip(&self.paths.dirs)
            .find(|(h, _)| h.has_controller("devices"));
        match v1 {
            Some((_, dir)) => {
                for rule in &rules {
                    let file = dir.join(if rule.allow {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    });
                    std::fs::write(&file, rule.v1_line()).map_err(io_err(&file))?;
                }
                Ok(())
            }
            None if has_spec_rules => Err(CgroupError::Unsupported(
                "config.json: linux.resources.devices: this host has no v1 devices controller and \
                 this version of lucid has no cgroup v2 device filter: remove the device rules"
                    .into(),
            )),
            None => Ok(()),
        }
    }

    /// A descriptor of the v2 cgroup, for `CLONE_INTO_CGROUP`.
    pub fn unified_fd(&self) -> Option<OwnedFd> {
        let dir = self.paths.unified.as_ref()?;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .ok()
            .map(OwnedFd::from)
    }

    /// Moves `pid` into every cgroup (skipping the v2 one when the process
    /// was born there).
    pub fn place(&self, pid: i32, born_in_unified: bool) -> Result<(), CgroupError> {
        for (h, dir) in self.hierarchies.iter().zip(&self.paths.dirs) {
            if h.v2 && born_in_unified {
                continue;
            }
            let file = dir.join("cgroup.procs");
            std::fs::write(&file, pid.to_string()).map_err(io_err(&file))?;
        }
        Ok(())
    }

    /// The pids of every process in the container's cgroup (and below).
    pub fn pids(&self) -> Vec<i32> {
        let dir = self
            .paths
            .unified
            .clone()
            .or_else(|| self.paths.dirs.first().cloned());
        let mut pids = Vec::new();
        if let Some(dir) = dir {
            collect_pids(&dir, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Sends `signal` to every process in the container's cgroups.
    pub fn signal_all(&self, signal: i32) -> Result<(), CgroupError> {
        for pid in self.pids() {
            // SAFETY: kill(2) with a pid and signal number has no memory effects.
            let ret = unsafe { libc::kill(pid, signal) };
            if ret != 0 && nix::errno::Errno::last() != nix::errno::Errno::ESRCH {
                return Err(CgroupError::Io {
                    path: PathBuf::from(format!("pid {pid}")),
                    cause: std::io::Error::last_os_error(),
                });
            }
        }
        Ok(())
    }

    /// The mount sources for a `cgroup` mount inside the container.
    pub fn mount_sources(&self) -> Vec<CgroupMountSource> {
        let layout = self.layout();
        self.hierarchies
            .iter()
            .zip(&self.paths.dirs)
            .map(|(h, dir)| CgroupMountSource {
                name: if layout == Some(Layout::V2) {
                    String::new()
                } else {
                    h.name()
                },
                fstype: if h.v2 { "cgroup2" } else { "cgroup" },
                options: h.options.clone(),
                host_dir: dir.clone(),
            })
            .collect()
    }

    /// Removes the container's cgroup directories (and any the container made
    /// inside them), waiting briefly for exiting processes to leave.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in &self.paths.dirs {
            loop {
                match remove_tree(dir) {
                    Ok(()) => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => {
                        return Err(CgroupError::Io {
                            path: dir.clone(),
                            cause: e,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}

/// Makes `dir` and its missing parents in the v1 cpuset hierarchy, copying
/// the parent's cpus and mems into each: a new cpuset cgroup starts empty and
/// refuses processes until they are set.
fn create_cpuset_dirs(mountpoint: &Path, dir: &Path) -> Result<(), CgroupError> {
    let rel = dir.strip_prefix(mountpoint).unwrap_or(dir);
    let mut current = mountpoint.to_path_buf();
    for component in rel.components() {
        let parent = current.clone();
        current.push(component);
        match std::fs::create_dir(&current) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(CgroupError::Io {
                    path: current,
                    cause: e,
                })
            }
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let mine = current.join(file);
            let value = std::fs::read_to_string(&mine).map_err(io_err(&mine))?;
            if value.trim().is_empty() {
                let theirs = parent.join(file);
                let parent_value = std::fs::read_to_string(&theirs).map_err(io_err(&theirs))?;
                std::fs::write(&mine, parent_value.trim()).map_err(io_err(&mine))?;
            }
        }
    }
    Ok(())
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&entry.path(), out);
            }
        }
    }
}

/// Removes a cgroup and the cgroups below it, deepest first. cgroupfs only
/// allows rmdir, and a cgroup with children refuses it.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cgroups_path: Option<&str>) -> Spec {
        let mut linux = serde_json::json!({});
        if let Some(p) = cgroups_path {
            linux["cgroupsPath"] = serde_json::json!(p);
        }
        serde_json::from_value(serde_json::json!({ "ociVersion": "1.0.2", "linux": linux }))
            .unwrap()
    }

    #[test]
    fn cgroups_path_defaults_to_lucid_and_id() {
        assert_eq!(
            relative_path(&spec(None), "c1").unwrap(),
            PathBuf::from("/lucid/c1")
        );
        assert_eq!(
            relative_path(&spec(Some("/a/b")), "c1").unwrap(),
            PathBuf::from("/a/b")
        );
        assert_eq!(
            relative_path(&spec(Some("a/b")), "c1").unwrap(),
            PathBuf::from("/a/b")
        );
    }

    #[test]
    fn cgroups_path_may_not_escape() {
        let err = relative_path(&spec(Some("/a/../../etc")), "c1").unwrap_err();
        assert!(matches!(err, CgroupError::Escapes(_)), "{err}");
    }

    #[test]
    fn systemd_paths_are_refused_by_name() {
        let err = relative_path(&spec(Some("system.slice:lucid:c1")), "c1").unwrap_err();
        assert!(err.to_string().contains("systemd"), "{err}");
    }

    #[test]
    fn unenforced_resources_are_named() {
        let r: LinuxResources =
            serde_json::from_value(serde_json::json!({ "pids": { "limit": 10 } })).unwrap();
        assert_eq!(
            check_supported(Some(&r)).unwrap_err(),
            "linux.resources.pids"
        );
        let devices_only: LinuxResources =
            serde_json::from_value(serde_json::json!({ "devices": [] })).unwrap();
        check_supported(Some(&devices_only)).unwrap();
    }
}
