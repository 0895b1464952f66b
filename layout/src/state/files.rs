//! Entries under the state root, opened the one way lucid allows there: no
//! symbolic link is followed (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`), only regular files are read, no open can block,
//! and every read is bounded.
//!
//! The state root belongs to lucid (and root), but whoever can write there
//! must not be able to send lucid elsewhere (a container directory that is a
//! link to a copy of another container's state), make it wait forever (a
//! `state.json` that is a FIFO) or read without end (a link to `/dev/zero`).
//! The root itself is followed: the operator names it, and `/var/run` is a
//! link on many hosts. `lucid-exporter` reads the root through this module too.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// The most bytes lucid reads from one file under the state root (and
/// writes: a `state.json` that would be larger is refused at `create`).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Why an entry under the state root was not opened or read. The messages
/// complete a path: `/run/lucid/x: is a symbolic link, …`.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// Nothing has that name.
    #[error("does not exist")]
    Missing,
    /// The entry, or a directory on the way to it, is a symbolic link.
    #[error(
        "is a symbolic link (or leads through one), which lucid never follows under its state root"
    )]
    Symlink,
    /// A file was expected and this is something else.
    #[error("is a {0}, not a regular file")]
    NotRegular(&'static str),
    /// A directory was expected and this is something else.
    #[error("is not a directory")]
    NotDirectory,
    /// The file is larger than lucid reads.
    #[error("holds {size} bytes, more than the {limit} lucid reads")]
    TooLarge {
        /// Its size (at least this much).
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// Another failure of the system call.
    #[error("{0}")]
    Io(std::io::Error),
}

impl EntryError {
    /// Whether the entry is simply not there.
    pub fn is_missing(&self) -> bool {
        matches!(self, EntryError::Missing)
    }

    /// Whether the entry is there but is not what lucid makes (a link, a
    /// FIFO, a device, a file too large): an operator should remove it.
    pub fn is_foreign(&self) -> bool {
        matches!(
            self,
            EntryError::Symlink
                | EntryError::NotRegular(_)
                | EntryError::NotDirectory
                | EntryError::TooLarge { .. }
        )
    }
}

impl From<Errno> for EntryError {
    fn from(errno: Errno) -> Self {
        match errno {
            Errno::ENOENT => EntryError::Missing,
            // RESOLVE_NO_SYMLINKS met a link; O_NOFOLLOW found one last.
            Errno::ELOOP => EntryError::Symlink,
            Errno::ENOTDIR => EntryError::NotDirectory,
            other => EntryError::Io(other.into()),
        }
    }
}

/// What a file's mode says it is, for messages.
pub fn kind(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symbolic link",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        _ => "file of unknown type",
    }
}

fn is(st: &FileStat, what: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == what.bits()
}

/// `RESOLVE_NO_SYMLINKS` refuses a link anywhere, the last component
/// included (`ELOOP`), except with `O_PATH | O_NOFOLLOW`, which opens the link.
fn beneath(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
}

/// Opens the state root itself (following links: the operator names it) as
/// the starting point of every other open.
pub fn open_root(root: &Path) -> std::io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `rel` below `dir` for reading (and `flock`), with no
/// link followed on the way.
pub fn open_dir(dir: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, EntryError> {
    Ok(openat2(
        dir,
        rel,
        beneath(OFlag::O_RDONLY | OFlag::O_DIRECTORY),
    )?)
}

/// The status of the entry `rel` below `dir`, without following a link
/// anywhere on the way (a link itself is [`EntryError::Symlink`]).
pub fn stat(dir: BorrowedFd<'_>, rel: &Path) -> Result<FileStat, EntryError> {
    let fd = openat2(dir, rel, beneath(OFlag::O_PATH | OFlag::O_NOFOLLOW))?;
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(EntryError::from)?;
    if is(&st, SFlag::S_IFLNK) {
        return Err(EntryError::Symlink);
    }
    Ok(st)
}

/// Reads the regular file `rel` below `dir`, at most `limit` bytes: a link,
/// anything but a regular file, or a larger file is refused without reading
/// it. Nothing but a regular file is ever opened for reading.
pub fn read(dir: BorrowedFd<'_>, rel: &Path, limit: u64) -> Result<Vec<u8>, EntryError> {
    let (file, st) = open_regular(dir, rel, limit)?;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let mut text = Vec::with_capacity(size.min(limit) as usize);
    // One byte past the bound tells a file that grew since the fstat.
    file.take(limit + 1)
        .read_to_end(&mut text)
        .map_err(EntryError::Io)?;
    if text.len() as u64 > limit {
        return Err(EntryError::TooLarge {
            size: text.len() as u64,
            limit,
        });
    }
    Ok(text)
}

/// Opens the regular file `rel` below `dir` for reading, checked as [`read`]
/// checks it, with its status.
pub fn open_regular(
    dir: BorrowedFd<'_>,
    rel: &Path,
    limit: u64,
) -> Result<(File, FileStat), EntryError> {
    // Looked at through an O_PATH descriptor first, which opens nothing: a
    // device is never opened, so no driver's open runs.
    let st = stat(dir, rel)?;
    check_regular(&st, limit)?;
    // O_NONBLOCK: should a FIFO be swapped in meanwhile, the open returns at
    // once (and the check below refuses it).
    let fd = openat2(
        dir,
        rel,
        beneath(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY),
    )?;
    let opened = nix::sys::stat::fstat(fd.as_fd()).map_err(EntryError::from)?;
    check_regular(&opened, limit)?;
    Ok((File::from(fd), opened))
}

fn check_regular(st: &FileStat, limit: u64) -> Result<(), EntryError> {
    if !is(st, SFlag::S_IFREG) {
        return Err(EntryError::NotRegular(kind(st.st_mode)));
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > limit {
        return Err(EntryError::TooLarge { size, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        let fd = open_root(dir.path()).unwrap();
        (dir, fd)
    }

    #[test]
    fn a_regular_file_is_read_whole() {
        let (dir, fd) = root();
        std::fs::create_dir(dir.path().join("c")).unwrap();
        std::fs::write(dir.path().join("c/state.json"), b"{}").unwrap();
        assert_eq!(
            read(fd.as_fd(), Path::new("c/state.json"), 10).unwrap(),
            b"{}"
        );
    }

    #[test]
    fn links_are_never_followed_last_or_on_the_way() {
        let (dir, fd) = root();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("state.json"), b"{}").unwrap();
        symlink(elsewhere.path(), dir.path().join("dir-link")).unwrap();
        symlink(
            elsewhere.path().join("state.json"),
            dir.path().join("file-link"),
        )
        .unwrap();
        for rel in ["dir-link/state.json", "file-link"] {
            let err = read(fd.as_fd(), Path::new(rel), 10).unwrap_err();
            assert!(matches!(err, EntryError::Symlink), "{rel}: {err}");
        }
        let err = open_dir(fd.as_fd(), Path::new("dir-link")).unwrap_err();
        assert!(matches!(err, EntryError::Symlink), "{err}");
        let err = stat(fd.as_fd(), Path::new("file-link")).unwrap_err();
        assert!(matches!(err, EntryError::Symlink), "{err}");
    }

    #[test]
    fn nothing_above_the_directory_is_reached() {
        let (dir, _) = root();
        std::fs::create_dir(dir.path().join("c")).unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        let inner = open_root(&dir.path().join("c")).unwrap();
        assert!(read(inner.as_fd(), Path::new("../secret"), 10).is_err());
        assert!(read(inner.as_fd(), Path::new("/etc/hostname"), 10).is_err());
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let (dir, fd) = root();
        nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let err = read(fd.as_fd(), Path::new("fifo"), 10).unwrap_err();
        assert!(matches!(err, EntryError::NotRegular("FIFO")), "{err}");
    }

    #[test]
    fn a_file_over_the_bound_is_refused_unread() {
        let (dir, fd) = root();
        let file = File::create(dir.path().join("big")).unwrap();
        // Sparse: a read would take long, the refusal does not read.
        file.set_len(1 << 40).unwrap();
        let err = read(fd.as_fd(), Path::new("big"), 10).unwrap_err();
        assert!(
            matches!(err, EntryError::TooLarge { size, limit: 10 } if size == 1 << 40),
            "{err}"
        );
        let err = read(fd.as_fd(), Path::new("."), 10).unwrap_err();
        assert!(matches!(err, EntryError::NotRegular("directory")), "{err}");
    }
}
