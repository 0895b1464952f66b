//! What the programs need to know about a v2 cgroup: its id and its level.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// `statfs` magic of a cgroup v2 file system.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Errors about a cgroup path.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The path could not be inspected.
    #[error("cannot inspect cgroup {path}: {source}")]
    Io {
        /// The cgroup directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The path is not a directory of a cgroup v2 hierarchy.
    #[error(
        "{0} is not a cgroup v2 directory; pass the container's cgroup under the unified hierarchy"
    )]
    NotCgroup2(PathBuf),
}

/// A v2 cgroup as the eBPF programs see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// The cgroup directory.
    pub path: PathBuf,
    /// The cgroup id (`bpf_get_current_cgroup_id`), which is the directory's inode number.
    pub id: u64,
    /// Depth below the hierarchy's root (the root is level 0).
    pub level: u32,
}

impl Cgroup {
    /// Reads the id and level of the v2 cgroup at `path`.
    ///
    /// The level counts the directories up to the mount point of the hierarchy, so the process
    /// must see the host's cgroup namespace (as a runtime on the host does).
    pub fn from_path(path: &Path) -> Result<Self, CgroupError> {
        let io = |source| CgroupError::Io {
            path: path.to_owned(),
            source,
        };
        if !is_cgroup2(path).map_err(io)? {
            return Err(CgroupError::NotCgroup2(path.to_owned()));
        }
        let meta = std::fs::metadata(path).map_err(io)?;
        let mut level = 0;
        let mut dir = path.canonicalize().map_err(io)?;
        while let Some(parent) = dir.parent() {
            let parent_meta = std::fs::metadata(parent).map_err(io)?;
            if parent_meta.dev() != meta.dev() || !is_cgroup2(parent).map_err(io)? {
                break;
            }
            level += 1;
            dir = parent.to_owned();
        }
        Ok(Self {
            path: path.to_owned(),
            id: meta.ino(),
            level,
        })
    }
}

/// How many live cgroups there are below the v2 cgroup at `path` (`nr_descendants` in its
/// `cgroup.stat`).
pub(crate) fn descendants(path: &Path) -> Result<u64, std::io::Error> {
    let stat = std::fs::read_to_string(path.join("cgroup.stat"))?;
    stat.lines()
        .find_map(|line| line.strip_prefix("nr_descendants "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("cgroup.stat has no nr_descendants line"))
}

fn is_cgroup2(path: &Path) -> Result<bool, std::io::Error> {
    Ok(crate::sys::statfs_magic(path)? == CGROUP2_SUPER_MAGIC)
}
