//! The host's cgroup hierarchies, read from /proc/self/mountinfo: pure v2,
//! pure v1, or hybrid (v1 controllers plus a v2 hierarchy, usually at
//! /sys/fs/cgroup/unified).

use std::path::{Path, PathBuf};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Whether it is the v2 (unified) hierarchy.
    pub v2: bool,
    /// For v1, the controllers or name it carries (`memory`, `cpu,cpuacct`,
    /// `name=systemd`): the options to mount it again with.
    pub options: String,
}

impl Hierarchy {
    /// The name it has under the cgroup root (`memory`, `unified`, …).
    pub fn name(&self) -> String {
        self.mountpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Whether this v1 hierarchy carries the controller `controller`.
    pub fn has_controller(&self, controller: &str) -> bool {
        !self.v2 && self.options.split(',').any(|o| o == controller)
    }
}

/// How the host's cgroups are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Only v1 hierarchies.
    V1,
    /// v1 controllers plus a v2 hierarchy without controllers.
    Hybrid,
    /// One v2 hierarchy holding every controller.
    V2,
}

/// Superblock options that are not controllers.
const NOT_CONTROLLERS: &[&str] = &[
    "rw",
    "ro",
    "clone_children",
    "noprefix",
    "xattr",
    "cpuset_v2_mode",
];

/// Parses mountinfo text into the cgroup hierarchies mounted at their root.
pub fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        // Only mounts of a hierarchy's root (not binds of a sub-cgroup).
        if left[3] != "/" {
            continue;
        }
        let mountpoint = unescape_mountinfo_path(left[4]);
        match right[0] {
            "cgroup2" => out.push(Hierarchy {
                mountpoint,
                v2: true,
                options: String::new(),
            }),
            "cgroup" => {
                let options: Vec<&str> = right[2]
                    .split(',')
                    .filter(|o| !NOT_CONTROLLERS.contains(o) && !o.starts_with("release_agent="))
                    .collect();
                out.push(Hierarchy {
                    mountpoint,
                    v2: false,
                    options: options.join(","),
                });
            }
            _ => {}
        }
    }
    // A hierarchy mounted twice is used at its first mount point.
    let mut seen = std::collections::HashSet::new();
    out.retain(|h| seen.insert((h.v2, h.options.clone())));
    out
}

/// The layout of a set of hierarchies.
pub fn layout(hierarchies: &[Hierarchy]) -> Option<Layout> {
    let v1 = hierarchies.iter().any(|h| !h.v2);
    let v2 = hierarchies.iter().any(|h| h.v2);
    match (v1, v2) {
        (true, true) => Some(Layout::Hybrid),
        (true, false) => Some(Layout::V1),
        (false, true) => Some(Layout::V2),
        (false, false) => None,
    }
}

/// The host's hierarchies, as this process sees them.
pub fn detect() -> std::io::Result<Vec<Hierarchy>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// This process's own cgroup in each hierarchy, from /proc/self/cgroup
/// (`0::/path` for v2, `N:controllers:/path` for v1).
pub fn own_cgroups() -> std::io::Result<Vec<(String, PathBuf)>> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?.to_owned();
            let path = PathBuf::from(parts.next()?);
            Some((controllers, path))
        })
        .collect())
}

/// The calling process's cgroup in `hierarchy` (for relative cgroupsPath).
pub fn own_path_in(hierarchy: &Hierarchy) -> PathBuf {
    let own = own_cgroups().unwrap_or_default();
    let found = own.iter().find(|(controllers, _)| {
        if hierarchy.v2 {
            controllers.is_empty()
        } else {
            *controllers == hierarchy.options
        }
    });
    found
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| Path::new("/").to_path_buf())
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub fn unescape_mountinfo_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo_path("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape_mountinfo_path("/plain"), PathBuf::from("/plain"));
    }

    const HYBRID: &str = "\
25 1 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
29 25 0:26 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
30 1 0:26 /sub /mnt/bound rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_mountinfo_gives_v1_and_v2() {
        let h = parse_mountinfo(HYBRID);
        assert_eq!(h.len(), 4);
        assert_eq!(h[0].options, "cpu");
        assert_eq!(h[1].options, "cpu,cpuacct");
        assert_eq!(h[1].name(), "cpu,cpuacct");
        assert_eq!(h[2].options, "name=systemd");
        assert!(h[3].v2);
        assert_eq!(h[3].mountpoint, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(layout(&h), Some(Layout::Hybrid));
        assert!(h[1].has_controller("cpuacct"));
    }

    #[test]
    fn pure_v2_mountinfo() {
        let h = parse_mountinfo("30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        assert_eq!(layout(&h), Some(Layout::V2));
    }
}
