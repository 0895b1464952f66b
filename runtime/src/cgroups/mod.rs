//! The container's cgroups on v1, hybrid and v2 hosts.
//!
//! `create` makes the container's cgroup in every hierarchy (the
//! `cgroup.create` step) and applies its device rules (`cgroup.apply`); the
//! init process is born in the v2 cgroup with `CLONE_INTO_CGROUP` and joins
//! the v1 ones through `cgroup.procs`. On hybrid hosts the container gets a v2
//! cgroup of its own too, so eBPF can find it by cgroup id.

pub mod devices;
/// The host's hierarchies: `lucid-layout`'s, shared with the exporter.
pub use lucid_layout::hierarchy;
pub mod resources;
pub mod stats;

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
    /// A resource value that cannot be right on any host.
    #[error("{0}")]
    Invalid(String),
    /// Writing a resource into a cgroup file failed: the kernel rejected the
    /// value, or the file does not exist on this host.
    #[error("{field}: writing {value:?} to {}: {}", path.display(), explain_write(cause))]
    Write {
        /// The resource, as a JSON path (`linux.resources.memory.limit`).
        field: String,
        /// The cgroup file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The failure.
        cause: std::io::Error,
    },
    /// Freezing or thawing did not finish.
    #[error("{0}")]
    Freezer(String),
}

fn explain_write(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "no such file: this host's kernel or cgroup setup lacks it".into(),
        Some(libc::EINVAL) => format!("the kernel rejected the value ({e})"),
        Some(libc::EBUSY) => format!("the cgroup is in a state that refuses it ({e})"),
        _ => e.to_string(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |cause| CgroupError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// The environment variable that forces the `cgroup.procs` placement.
///
/// For benchmarks only: `LUCID_CGROUP_PLACEMENT=procs` makes `create` clone
/// the init process without `CLONE_INTO_CGROUP` and move it with a write to
/// `cgroup.procs`, the fallback for kernels without it, so both can be
/// measured on one host. Any other value is an error at run time.
pub const PLACEMENT_ENV: &str = "LUCID_CGROUP_PLACEMENT";

/// Whether [`PLACEMENT_ENV`] asks for the `cgroup.procs` placement.
pub fn placement_forced_to_procs() -> bool {
    std::env::var(PLACEMENT_ENV).is_ok_and(|v| v == "procs")
}

/// Checks [`PLACEMENT_ENV`]: unset, `clone3` or `procs`.
pub fn check_placement_env() -> Result<(), CgroupError> {
    match std::env::var(PLACEMENT_ENV) {
        Err(_) => Ok(()),
        Ok(v) if v == "procs" || v == "clone3" => Ok(()),
        Ok(v) => Err(CgroupError::Invalid(format!(
            "{PLACEMENT_ENV}={v:?}: use \"clone3\" (the default, CLONE_INTO_CGROUP) or \"procs\" (benchmarks only)"
        ))),
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

    /// Makes the cgroup directories (the `cgroup.create` step), then writes
    /// the v1 device rules and every other resource (`cgroup.apply`). On
    /// failure, what was made is removed again.
    ///
    /// On hosts without a v1 devices controller the device rules are left to
    /// the eBPF `cgroup_device` filter ([`Cgroup::device_filter_needed`]).
    pub fn create(&mut self, spec: &Spec) -> Result<(), CgroupError> {
        let result = self.create_dirs().and_then(|()| {
            crate::telemetry::step(tracing::info_span!("cgroup.apply"), || {
                self.apply_devices(spec)?;
                self.apply_resources(spec)
            })
        });
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
        let pure_v2 = self.layout() == Some(Layout::V2);
        for (h, dir) in self.hierarchies.iter().zip(&self.paths.dirs) {
            if h.has_controller("cpuset") {
                create_cpuset_dirs(&h.mountpoint, dir)?;
            } else if h.v2 && pure_v2 {
                create_v2_dirs(&h.mountpoint, dir)?;
            } else {
                std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            }
        }
        Ok(())
    }

    /// Whether the device rules need the eBPF filter: no v1 devices
    /// controller, so the v2 cgroup's `cgroup_device` program is the only
    /// way to enforce them.
    pub fn device_filter_needed(&self) -> bool {
        !self.hierarchies.iter().any(|h| h.has_controller("devices"))
            && self.paths.unified.is_some()
    }

    fn apply_devices(&self, spec: &Spec) -> Result<(), CgroupError> {
        let v1 = self
            .hierarchies
            .iter()
            .zip(&self.paths.dirs)
            .find(|(h, _)| h.has_controller("devices"));
        let Some((_, dir)) = v1 else {
            return Ok(());
        };
        for rule in devices::rules(spec)? {
            let file = if rule.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            resources::write_file(
                "linux.resources.devices",
                dir,
                file,
                devices::v1_line(&rule),
            )?;
        }
        Ok(())
    }

    fn apply_resources(&self, spec: &Spec) -> Result<(), CgroupError> {
        let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
            return Ok(());
        };
        resources::apply(&self.target(), r, resources::Mode::Create)
    }

    /// Applies `resources` to the running container (`lucid update`); the
    /// device rules are not touched.
    pub fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        resources::apply(&self.target(), resources, resources::Mode::Update)
    }

    /// Each recorded directory with the hierarchy it lies in.
    fn entries(&self) -> Vec<(&Hierarchy, &PathBuf)> {
        self.paths
            .dirs
            .iter()
            .filter_map(|dir| {
                self.hierarchies
                    .iter()
                    .filter(|h| dir.starts_with(&h.mountpoint))
                    .max_by_key(|h| h.mountpoint.as_os_str().len())
                    .map(|h| (h, dir))
            })
            .collect()
    }

    /// Where each controller's files are.
    pub fn target(&self) -> resources::Target {
        let entries = self.entries();
        let v1 = entries
            .iter()
            .filter(|(h, _)| !h.v2)
            .map(|(h, dir)| (h.options.clone(), (*dir).clone()))
            .collect();
        let v2 = entries
            .iter()
            .find(|(h, _)| h.v2)
            .map(|(_, dir)| (*dir).clone());
        resources::Target { v1, v2 }
    }

    /// The container's resource statistics, as runc's `events --stats` prints them.
    pub fn stats(&self) -> stats::Stats {
        stats::collect(&self.target())
    }

    /// How many times the OOM killer killed a process of the container
    /// (`oom_kill` of memory.oom_control on v1, memory.events on v2).
    pub fn oom_kills(&self) -> Option<u64> {
        let (dir, v2) = self.target().dir("memory", "").ok()?;
        let file = if v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        stats::keyed(&text).get("oom_kill").copied()
    }

    /// The memory cgroup directory and whether it is v2.
    pub fn memory_dir(&self) -> Option<(PathBuf, bool)> {
        self.target().dir("memory", "").ok()
    }

    /// The freezer: the v1 freezer controller where the host has one,
    /// otherwise the v2 cgroup's `cgroup.freeze`.
    fn freezer(&self) -> Option<cgroups_rs::freezer::FreezerController> {
        let entries = self.entries();
        let (dir, v2) = entries
            .iter()
            .find(|(h, _)| h.has_controller("freezer"))
            .map(|(_, dir)| ((*dir).clone(), false))
            .or_else(|| self.paths.unified.clone().map(|d| (d, true)))?;
        Some(cgroups_rs::freezer::FreezerController::new(dir, v2))
    }

    /// Whether the container's processes are frozen (`pause`).
    pub fn is_frozen(&self) -> bool {
        use cgroups_rs::freezer::FreezerState;
        self.freezer()
            .and_then(|f| f.state().ok())
            .is_some_and(|s| matches!(s, FreezerState::Frozen))
    }

    /// Freezes every process of the container and waits until the kernel
    /// reports them frozen; on timeout, thaws them again.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        use cgroups_rs::freezer::FreezerState;
        use cgroups_rs::Controller;
        let freezer = self.freezer().ok_or_else(|| {
            CgroupError::Unsupported(
                "this host has neither a v1 freezer controller nor a cgroup v2 hierarchy: cannot pause".into(),
            )
        })?;
        let path = freezer.path().to_path_buf();
        freezer
            .freeze()
            .map_err(|e| CgroupError::Freezer(format!("freezing {}: {e}", path.display())))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let frozen = if freezer.v2() {
                // cgroup.freeze says what was asked; cgroup.events says when it is done.
                std::fs::read_to_string(path.join("cgroup.events"))
                    .map(|t| stats::keyed(&t).get("frozen") == Some(&1))
                    .unwrap_or(false)
            } else {
                matches!(freezer.state(), Ok(FreezerState::Frozen))
            };
            if frozen {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = freezer.thaw();
                return Err(CgroupError::Freezer(format!(
                    "the processes in {} did not freeze within 5 s; thawed them again",
                    path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Thaws the container's processes.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        use cgroups_rs::Controller;
        let Some(freezer) = self.freezer() else {
            return Ok(());
        };
        freezer
            .thaw()
            .map_err(|e| CgroupError::Freezer(format!("thawing {}: {e}", freezer.path().display())))
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

/// Makes `dir` and its missing parents in a pure v2 hierarchy, enabling in
/// each ancestor's `cgroup.subtree_control` every controller it has, as runc
/// does, so the container's cgroup gets them all. A controller an ancestor
/// cannot delegate (processes in a non-root cgroup, a threaded subtree) stays
/// off; a resource that needs it then fails naming its field.
fn create_v2_dirs(mountpoint: &Path, dir: &Path) -> Result<(), CgroupError> {
    let rel = dir.strip_prefix(mountpoint).unwrap_or(dir);
    let mut current = mountpoint.to_path_buf();
    for component in rel.components() {
        let controllers =
            std::fs::read_to_string(current.join("cgroup.controllers")).unwrap_or_default();
        let subtree = current.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&subtree).unwrap_or_default();
        for c in controllers.split_whitespace() {
            if !enabled.split_whitespace().any(|e| e == c) {
                if let Err(e) = std::fs::write(&subtree, format!("+{c}")) {
                    log::debug!("enabling {c} in {}: {e}", subtree.display());
                }
            }
        }
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
    }
    Ok(())
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
}
