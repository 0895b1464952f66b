//! Linux namespaces: which ones a container gets new, which it joins by path,
//! and how the init process enters them.
//!
//! New namespaces come from the clone flags (or `unshare` in the intermediate
//! process); joined ones from `setns` on a descriptor opened before any mount
//! namespace changes, so the paths resolve on the host.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// `CLONE_NEWTIME`, which nix does not name (it shares a bit with CSIGNAL in
/// the legacy `clone` flags; only `clone3` and `unshare` take it).
pub const CLONE_NEWTIME: u64 = 0x80;

/// The clone flag of a namespace type.
pub fn clone_flag(typ: LinuxNamespaceType) -> u64 {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS.bits() as u64,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP.bits() as u64,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS.bits() as u64,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC.bits() as u64,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER.bits() as u64,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID.bits() as u64,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET.bits() as u64,
        LinuxNamespaceType::Time => CLONE_NEWTIME,
    }
}

/// The order namespaces are joined in: the user namespace first, since it
/// decides what the process may do in the others. It holds every type lucid
/// makes or joins.
pub const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Mount,
];

/// How the container's namespaces are to be made.
#[derive(Debug, Clone, Default)]
pub struct NamespacePlan {
    /// Types the container gets new.
    pub new: Vec<LinuxNamespaceType>,
    /// Types it joins, with their paths, in join order.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
    /// Whether time offsets must be written before the time namespace has a
    /// process (which needs `unshare` in a process that forks afterwards).
    pub time_offsets: bool,
}

impl NamespacePlan {
    /// Reads the plan from the spec.
    pub fn from_spec(spec: &Spec) -> Self {
        let mut plan = NamespacePlan::default();
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .cloned()
            .unwrap_or_default();
        for typ in JOIN_ORDER {
            if let Some(ns) = namespaces.iter().find(|ns| ns.typ() == typ) {
                match ns.path() {
                    Some(path) => plan.join.push((typ, path.clone())),
                    None => plan.new.push(typ),
                }
            }
        }
        plan.time_offsets = spec
            .linux()
            .as_ref()
            .is_some_and(|l| l.time_offsets().as_ref().is_some_and(|o| !o.is_empty()));
        plan
    }

    /// Whether the container gets a new namespace of this type.
    pub fn is_new(&self, typ: LinuxNamespaceType) -> bool {
        self.new.contains(&typ)
    }

    /// Whether the container joins a namespace of this type.
    pub fn joins(&self, typ: LinuxNamespaceType) -> bool {
        self.join.iter().any(|(t, _)| *t == typ)
    }

    /// Whether the spec involves a user namespace at all.
    pub fn has_user(&self) -> bool {
        self.is_new(LinuxNamespaceType::User) || self.joins(LinuxNamespaceType::User)
    }

    /// Whether the init process must be forked by an intermediate process
    /// rather than cloned directly by the runtime.
    ///
    /// A user namespace must exist (and own the others) before the other
    /// namespaces are made, joining a pid namespace only affects children, and
    /// time offsets can only be set before a process enters the namespace: in
    /// each case one process prepares and a second is born inside.
    pub fn needs_intermediate(&self) -> bool {
        self.has_user() || self.joins(LinuxNamespaceType::Pid) || self.time_offsets
    }

    /// The clone flags of the new namespaces the direct path creates at clone
    /// time. The cgroup namespace is left out: it is unshared once the process
    /// sits in all its cgroups, so that its root is the container's cgroup.
    pub fn direct_clone_flags(&self) -> u64 {
        self.new
            .iter()
            .filter(|t| **t != LinuxNamespaceType::Cgroup)
            .map(|t| clone_flag(*t))
            .fold(0, |acc, f| acc | f)
    }
}

/// The namespace's name under /proc/PID/ns.
pub fn proc_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// A plan that joins every namespace `spec` gives a container, through its
/// process `pid` (how `exec` enters a running container). A namespace the
/// caller is already in is left out: the kernel refuses to re-enter one's own
/// user namespace.
pub fn plan_joining(spec: &Spec, pid: i32) -> NamespacePlan {
    use std::os::unix::fs::MetadataExt;
    let same = |a: &PathBuf, b: &PathBuf| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    let listed = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let mut plan = NamespacePlan::default();
    for typ in JOIN_ORDER {
        if !listed.iter().any(|ns| ns.typ() == typ) {
            continue;
        }
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{}", proc_name(typ)));
        let ours = PathBuf::from(format!("/proc/self/ns/{}", proc_name(typ)));
        if !same(&theirs, &ours) {
            plan.join.push((typ, theirs));
        }
    }
    plan
}

/// Descriptors of the namespaces to join, opened while the paths still
/// resolve in the runtime's mount namespace.
#[derive(Debug)]
pub struct OpenedJoins(Vec<(LinuxNamespaceType, PathBuf, OwnedFd)>);

/// Opens every namespace the plan joins.
pub fn open_joins(plan: &NamespacePlan) -> std::io::Result<OpenedJoins> {
    let mut opened = Vec::with_capacity(plan.join.len());
    for (typ, path) in &plan.join {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags_cloexec()
            .open(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        opened.push((*typ, path.clone(), OwnedFd::from(file)));
    }
    Ok(OpenedJoins(opened))
}

trait CloexecOpen {
    fn custom_flags_cloexec(&mut self) -> &mut Self;
}

impl CloexecOpen for std::fs::OpenOptions {
    fn custom_flags_cloexec(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_CLOEXEC)
    }
}

impl OpenedJoins {
    /// Joins the namespaces of the given types (all of them if `only` is
    /// `None`), in the plan's order.
    pub fn enter(&self, only: Option<&[LinuxNamespaceType]>) -> Result<(), String> {
        for (typ, path, fd) in &self.0 {
            if only.is_some_and(|types| !types.contains(typ)) {
                continue;
            }
            nix::sched::setns(fd, CloneFlags::from_bits_retain(clone_flag(*typ) as i32))
                .map_err(|e| format!("joining {typ} namespace {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// Unshares the given namespace types.
pub fn unshare(types: &[LinuxNamespaceType]) -> Result<(), String> {
    let flags = types.iter().map(|t| clone_flag(*t)).fold(0, |a, f| a | f);
    if flags == 0 {
        return Ok(());
    }
    nix::sched::unshare(CloneFlags::from_bits_retain(flags as i32)).map_err(|e| {
        let names: Vec<String> = types.iter().map(|t| t.to_string()).collect();
        format!("creating {} namespaces: {e}", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(namespaces: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": { "namespaces": namespaces }
        }))
        .unwrap()
    }

    #[test]
    fn plain_namespaces_take_the_direct_path() {
        let spec = spec_with(serde_json::json!([
            { "type": "pid" }, { "type": "mount" }, { "type": "network", "path": "/proc/1/ns/net" },
            { "type": "cgroup" }
        ]));
        let plan = NamespacePlan::from_spec(&spec);
        assert!(!plan.needs_intermediate());
        let flags = plan.direct_clone_flags();
        assert_ne!(flags & CloneFlags::CLONE_NEWPID.bits() as u64, 0);
        assert_ne!(flags & CloneFlags::CLONE_NEWNS.bits() as u64, 0);
        assert_eq!(flags & CloneFlags::CLONE_NEWNET.bits() as u64, 0);
        assert_eq!(flags & CloneFlags::CLONE_NEWCGROUP.bits() as u64, 0);
        assert!(plan.joins(LinuxNamespaceType::Network));
    }

    #[test]
    fn user_pid_join_and_time_offsets_need_an_intermediate() {
        let user = spec_with(serde_json::json!([{ "type": "user" }]));
        assert!(NamespacePlan::from_spec(&user).needs_intermediate());
        let pid_join = spec_with(serde_json::json!([{ "type": "pid", "path": "/proc/1/ns/pid" }]));
        assert!(NamespacePlan::from_spec(&pid_join).needs_intermediate());
    }

    #[test]
    fn joining_a_running_container_skips_namespaces_we_share() {
        let spec = spec_with(serde_json::json!([
            { "type": "mount" }, { "type": "user" }, { "type": "pid" }
        ]));
        let pid = std::process::id() as i32;
        // Our own process shares every namespace with us.
        let plan = plan_joining(&spec, pid);
        assert!(plan.join.is_empty() && plan.new.is_empty());
    }

    #[test]
    fn user_namespace_is_joined_first() {
        let spec = spec_with(serde_json::json!([
            { "type": "mount", "path": "/a" }, { "type": "user", "path": "/b" }
        ]));
        let plan = NamespacePlan::from_spec(&spec);
        assert_eq!(plan.join[0].0, LinuxNamespaceType::User);
        assert_eq!(plan.join[1].0, LinuxNamespaceType::Mount);
    }
}
