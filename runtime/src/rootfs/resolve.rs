//! Path resolution that cannot leave the container's root: every lookup goes
//! through `openat2(RESOLVE_IN_ROOT)`, so a symlink in the rootfs (even one
//! swapped in while we work) resolves inside it, never to the host.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// What to make when the path does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Nothing: a missing path is an error.
    Nothing,
    /// Directories all the way.
    Dir,
    /// Directories, then an empty regular file as the last component.
    File,
}

/// The components of `path` below the root (`.`, `..` and the root dropped;
/// `..` is resolved by the kernel against the root, never above it).
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect()
}

fn open_how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Opens the existing file `path` inside `root` with `flags` (close-on-exec
/// is added), for reading or writing rather than as an `O_PATH` handle.
pub fn open_file_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    flags: OFlag,
) -> Result<OwnedFd, Errno> {
    openat2(root, &relative(path), open_how(flags))
}

/// Opens `path` inside `root` as an `O_PATH` descriptor, making what is
/// missing when asked.
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path, create: Create) -> Result<OwnedFd, Errno> {
    let rel = relative(path);
    if rel.as_os_str().is_empty() {
        return openat2(root, ".", open_how(OFlag::O_PATH | OFlag::O_DIRECTORY));
    }
    match openat2(root, &rel, open_how(OFlag::O_PATH)) {
        Err(Errno::ENOENT) if create != Create::Nothing => {}
        other => return other,
    }
    // Walk down, making each missing component inside its (resolved) parent.
    let components: Vec<&OsStr> = rel.iter().collect();
    let mut parent = openat2(root, ".", open_how(OFlag::O_PATH | OFlag::O_DIRECTORY))?;
    for (i, name) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let prefix: PathBuf = components[..=i].iter().collect();
        match openat2(root, &prefix, open_how(OFlag::O_PATH)) {
            Ok(fd) => {
                parent = fd;
                continue;
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        if name.as_bytes() == b".." {
            return Err(Errno::ENOENT);
        }
        if last && create == Create::File {
            let fd = nix::fcntl::openat(
                parent.as_fd(),
                *name,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_CLOEXEC
                    | OFlag::O_NOFOLLOW,
                Mode::from_bits_truncate(0o755),
            );
            match fd {
                Ok(_) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
        } else {
            match nix::sys::stat::mkdirat(parent.as_fd(), *name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        // Re-resolve from the root: what was made may be a symlink target now.
        parent = openat2(root, &prefix, open_how(OFlag::O_PATH))?;
    }
    Ok(parent)
}

/// The `/proc/self/fd/N` path of a descriptor, which mount(2) follows to the
/// very object the descriptor names.
pub fn proc_fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens the parent directory of `path` inside `root` (making it if asked)
/// and returns it with the last component's name.
pub fn open_parent_in_root<'p>(
    root: BorrowedFd<'_>,
    path: &'p Path,
    create: Create,
) -> Result<(OwnedFd, &'p OsStr), Errno> {
    let name = path.file_name().ok_or(Errno::EINVAL)?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let parent_create = if create == Create::Nothing {
        Create::Nothing
    } else {
        Create::Dir
    };
    let dir = open_in_root(root, parent, parent_create)?;
    // O_PATH descriptors serve as dirfd for *at calls; reopen as a real
    // directory for mknodat/symlinkat, which need search permission only.
    let dir = openat2(
        dir.as_fd(),
        ".",
        OpenHow::new().flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC),
    )?;
    Ok((dir, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root_fd(dir: &Path) -> OwnedFd {
        nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    fn real_path(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(proc_fd_path(fd)).unwrap()
    }

    #[test]
    fn symlink_to_host_path_stays_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // An absolute symlink that would reach the host's /etc.
        symlink("/etc", root.join("escape")).unwrap();
        let fd = open_in_root(
            root_fd(&root).as_fd(),
            Path::new("/escape"),
            Create::Nothing,
        )
        .unwrap();
        assert_eq!(real_path(&fd), root.join("etc"));
    }

    #[test]
    fn dotdot_cannot_climb_above_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let fd = open_in_root(
            root_fd(&root).as_fd(),
            Path::new("/../../.."),
            Create::Nothing,
        )
        .unwrap();
        assert_eq!(real_path(&fd), root);
    }

    #[test]
    fn missing_components_are_made_through_symlinks_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("real")).unwrap();
        symlink("/real", root.join("link")).unwrap();
        let fd = open_in_root(root_fd(&root).as_fd(), Path::new("/link/a/b"), Create::Dir).unwrap();
        assert_eq!(real_path(&fd), root.join("real/a/b"));
        let fd = open_in_root(root_fd(&root).as_fd(), Path::new("/link/f"), Create::File).unwrap();
        assert!(root.join("real/f").is_file());
        assert_eq!(real_path(&fd), root.join("real/f"));
    }

    #[test]
    fn missing_path_without_create_is_enoent() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_in_root(
            root_fd(dir.path()).as_fd(),
            Path::new("/nope"),
            Create::Nothing,
        )
        .unwrap_err();
        assert_eq!(err, Errno::ENOENT);
    }
}
