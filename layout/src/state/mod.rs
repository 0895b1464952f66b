//! Container state on disk: one directory per container under the root
//! (`/run/lucid/<id>/`), holding `state.json` (written atomically) and the
//! exec FIFO, and locked with `flock` against concurrent commands on the same ID.
//!
//! Nothing under the root is reached through a symbolic link, and only
//! regular files are read, each within a bound ([`files`]).

pub mod files;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use files::{EntryError, MAX_FILE_BYTES};

/// The state file's name inside a container's directory.
pub const STATE_FILE: &str = "state.json";
/// The exec FIFO the init process blocks on until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";

/// What can go wrong with a container's state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The ID cannot name a container.
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId {
        /// The rejected ID.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// No container with this ID under the root.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// `create` with an ID that is taken.
    #[error("container {0} already exists")]
    Exists(String),
    /// Reading, writing or locking failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        cause: std::io::Error,
    },
    /// An entry lucid never makes: a symbolic link, a FIFO, a device, a file
    /// too large. Nothing is followed or read through it.
    #[error("{}: {cause}; lucid made no such entry: remove it", path.display())]
    Foreign {
        /// The entry.
        path: PathBuf,
        /// What it is.
        cause: EntryError,
    },
    /// The state would be larger than lucid reads back.
    #[error("{}: the container's state would be {size} bytes, more than the {MAX_FILE_BYTES} lucid reads back: make config.json smaller (annotations, seccomp rules)", path.display())]
    TooLarge {
        /// The state file.
        path: PathBuf,
        /// Its size.
        size: usize,
    },
    /// `state.json` is not what lucid wrote.
    #[error("{path}: corrupt state file: {message}: `lucid delete --force` removes the container")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |cause| StateError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

fn errno_err(path: &Path) -> impl FnOnce(nix::errno::Errno) -> StateError + '_ {
    move |errno| StateError::Io {
        path: path.to_path_buf(),
        cause: errno.into(),
    }
}

/// A failure to open or read `path` (for `id`): missing is
/// [`StateError::NotFound`], something lucid never makes is
/// [`StateError::Foreign`].
fn entry_err(path: PathBuf, id: &str, cause: EntryError) -> StateError {
    match cause {
        EntryError::Missing => StateError::NotFound(id.to_owned()),
        EntryError::Io(cause) => StateError::Io { path, cause },
        cause => StateError::Foreign { path, cause },
    }
}

/// The statuses of the OCI runtime spec, plus runc's `paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is running.
    Creating,
    /// The init process waits on the exec FIFO.
    Created,
    /// The user's process runs.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// The process has exited (or creation failed).
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// Where the container's cgroups are, so that later commands find them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CgroupPaths {
    /// The path relative to each hierarchy's root (`/lucid/<id>` by default).
    pub path: PathBuf,
    /// Full paths of the directories lucid made (v1 controllers and the v2 one).
    pub dirs: Vec<PathBuf>,
    /// The v2 cgroup (on v2 and hybrid hosts), which eBPF finds by id.
    pub unified: Option<PathBuf>,
    /// The inode number of the v2 cgroup directory: its cgroup id.
    pub unified_id: Option<u64>,
}

/// Everything lucid keeps about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    /// The OCI version of the bundle's configuration.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// The container ID.
    pub id: String,
    /// The init process's pid in the runtime's pid namespace (0 before it exists).
    pub pid: i32,
    /// The status last written; `container::status` refreshes it.
    pub status: Status,
    /// The bundle directory, absolute.
    pub bundle: PathBuf,
    /// The root filesystem, absolute.
    pub rootfs: PathBuf,
    /// When `create` began, RFC 3339.
    pub created: String,
    /// The bundle's annotations.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// The init process's start time (field 22 of /proc/PID/stat), to tell it
    /// from a later process that reuses the pid.
    #[serde(default)]
    pub init_start_time: u64,
    /// The container's cgroups.
    #[serde(default)]
    pub cgroup: CgroupPaths,
    /// The container's registration with the eBPF programs (absent when it
    /// runs unwatched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebpf: Option<Registration>,
    /// Whether the container has a pid namespace of its own (killing init then
    /// kills every process in it).
    #[serde(default)]
    pub own_pid_namespace: bool,
    /// `--no-new-keyring` at create: `exec`'d processes keep the caller's
    /// session keyring too.
    #[serde(default)]
    pub no_new_keyring: bool,
    /// The set-up phases the init process measured (`namespaces.join`,
    /// `rootfs.mount`, …), in order.
    #[serde(default)]
    pub phases: Vec<PhaseTiming>,
    /// The container's trace, which every command on it joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<ContainerTrace>,
    /// The configuration the container was created from.
    pub config: oci_spec::runtime::Spec,
}

/// A phase of set-up measured inside the init process (CLOCK_REALTIME), sent
/// to the runtime, which turns it into a span.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTiming {
    /// The phase's span name (`rootfs.mount`, `process.setup`, …).
    pub name: String,
    /// Start, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_ns: u64,
    /// On-CPU time of the process during the phase, in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns: Option<u64>,
    /// What the phase worked on, as span attributes (`hook.path` for a hook).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<(String, String)>,
    /// Why the phase failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A container's trace, saved in its state by `create` so that every later
/// command on the container joins it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerTrace {
    /// The trace id, 32 lowercase hex digits.
    #[serde(default)]
    pub trace_id: String,
    /// The id of the container's root span (`container`), 16 hex digits,
    /// which every command's span has as its parent.
    #[serde(default)]
    pub span_id: String,
    /// The root span's parent: the caller's span from `TRACEPARENT`, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_span_id: String,
    /// Whether the trace is sampled (W3C flag 01).
    #[serde(default)]
    pub sampled: bool,
    /// The caller's `TRACESTATE`, passed on unchanged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tracestate: String,
    /// When the container's life began (the start of `create`), nanoseconds
    /// since the Unix epoch: the root span's start.
    #[serde(default)]
    pub start_ns: u64,
}

/// A container's registration with the eBPF programs, kept in its state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    /// The pin root the programs are pinned under.
    pub pin_root: PathBuf,
    /// The container's v2 cgroup id.
    pub cgroup_id: u64,
    /// Whether syscall latency is recorded.
    pub syscall_latency: bool,
    /// Whether the device filter is attached.
    pub devices: bool,
}

/// The state as `lucid state` and `lucid list --format json` print it: the
/// OCI runtime spec's fields with runc's names and order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OciState {
    /// The OCI version of the configuration.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// The container ID.
    pub id: String,
    /// The init pid, 0 once stopped.
    pub pid: i32,
    /// The status now.
    pub status: Status,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The root filesystem.
    pub rootfs: PathBuf,
    /// When the container was created.
    pub created: String,
    /// The user owning the container ("" for `state`, as runc prints it).
    pub owner: String,
    /// The bundle's annotations.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

impl ContainerState {
    /// The OCI view of this state with `status` as given.
    pub fn oci(&self, status: Status, owner: &str) -> OciState {
        OciState {
            oci_version: self.oci_version.clone(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: owner.to_owned(),
            annotations: self.annotations.clone(),
        }
    }
}

/// The longest container ID: the longest file name (`NAME_MAX`), since the ID
/// names the state directory, the cgroup and the spool directory.
pub const MAX_ID_BYTES: usize = 255;

/// Checks a container ID by runc's rules (`libcontainer`'s `validateID`): one
/// or more letters, digits and `_ + - .`, and not `.` or `..`, so that it is
/// always one path component. `...` and `.adv` are IDs.
///
/// runc checks no length, but its `create` then fails making the state
/// directory of an ID longer than a file name may be; lucid refuses such an
/// ID here, so every ID this accepts can be created.
pub fn validate_id(id: &str) -> Result<(), StateError> {
    let bad = |reason| {
        Err(StateError::InvalidId {
            id: id.to_owned(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("it is empty");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
    {
        return bad("only letters, digits and _ + - . are allowed");
    }
    if id == "." || id == ".." {
        return bad("it is a relative path");
    }
    if id.len() > MAX_ID_BYTES {
        return bad("it is longer than 255 bytes, the longest file name");
    }
    Ok(())
}

/// How many times `create` makes its directory again when a concurrent
/// `delete --force` removed it before it was locked.
const CREATE_ATTEMPTS: usize = 100;

/// A container's state directory, locked for as long as this value lives.
/// Every file in it is reached through the locked descriptor, never by path.
#[derive(Debug)]
pub struct StateDir {
    id: String,
    path: PathBuf,
    lock: Flock<File>,
}

impl StateDir {
    /// Makes the directory for a new container and locks it. Fails if the ID
    /// is taken.
    pub fn create(root: &Path, id: &str) -> Result<Self, StateError> {
        validate_id(id)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(io_err(root))?;
        let path = root.join(id);
        let root_fd = files::open_root(root).map_err(io_err(root))?;
        // A `delete --force` of the same ID may take the new directory between
        // the mkdir and the lock for one whose `create` was killed before its
        // first state file (it has none yet either) and remove it. That delete
        // came first; this create then makes the directory again.
        for _ in 0..CREATE_ATTEMPTS {
            // mkdirat makes the last component and never follows a link there.
            match nix::sys::stat::mkdirat(root_fd.as_fd(), id, Mode::from_bits_truncate(0o711)) {
                Ok(()) => {}
                Err(nix::errno::Errno::EEXIST) => return Err(StateError::Exists(id.to_owned())),
                Err(errno) => return Err(errno_err(&path)(errno)),
            }
            let lock = match lock_dir(root_fd.as_fd(), &path, id) {
                Err(StateError::NotFound(_)) => continue,
                other => other?,
            };
            if still_named(&lock, &path)? {
                return Ok(StateDir {
                    id: id.to_owned(),
                    path,
                    lock,
                });
            }
        }
        Err(StateError::Io {
            path,
            cause: std::io::Error::other(format!(
                "the new directory was removed by concurrent commands {CREATE_ATTEMPTS} times"
            )),
        })
    }

    /// Opens and locks an existing container's directory, waiting for any
    /// other command on the same container to finish. An entry that is not
    /// a directory lucid made (a symbolic link, a file) fails at once.
    pub fn open(root: &Path, id: &str) -> Result<Self, StateError> {
        validate_id(id)?;
        let path = root.join(id);
        let root_fd = match files::open_root(root) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_owned()))
            }
            Err(cause) => return Err(StateError::Io { path, cause }),
        };
        loop {
            let lock = lock_dir(root_fd.as_fd(), &path, id)?;
            // While we waited, the holder may have removed the directory
            // (`delete`) and a `create` may have made a new one under the
            // same name: the lock we hold is then on a directory nobody uses.
            // The next round opens what the name holds now; a link there
            // fails that open, so this never spins.
            if still_named(&lock, &path)? {
                return Ok(StateDir {
                    id: id.to_owned(),
                    path,
                    lock,
                });
            }
        }
    }

    /// The container ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.lock.as_fd()
    }

    /// The raw descriptor holding the lock, which a forked child must close.
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.lock.as_raw_fd()
    }

    /// Reads `state.json`.
    pub fn read(&self) -> Result<ContainerState, StateError> {
        read_state_in(self.fd(), &self.path, &self.id)
    }

    /// Replaces `state.json` atomically (write a temporary file, rename).
    pub fn write(&self, state: &ContainerState) -> Result<(), StateError> {
        const TMP: &str = ".state.json.tmp";
        let tmp = self.path.join(TMP);
        let text = serde_json::to_vec(state).map_err(|e| StateError::Corrupt {
            path: tmp.clone(),
            message: e.to_string(),
        })?;
        let dest = self.path.join(STATE_FILE);
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(StateError::TooLarge {
                path: dest,
                size: text.len(),
            });
        }
        let fd = nix::fcntl::openat(
            self.fd(),
            TMP,
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_TRUNC
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(errno_err(&tmp))?;
        let mut file = File::from(fd);
        file.write_all(&text).map_err(io_err(&tmp))?;
        drop(file);
        nix::fcntl::renameat(self.fd(), TMP, self.fd(), STATE_FILE).map_err(errno_err(&dest))
    }

    /// The exec FIFO's path.
    pub fn exec_fifo(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    /// Makes the exec FIFO (mode `0o622`, owned by `owner`) and returns an
    /// `O_PATH` descriptor of it for the init process to reopen.
    pub fn make_exec_fifo(&self, owner: (u32, u32)) -> Result<OwnedFd, StateError> {
        let path = self.exec_fifo();
        let mode = Mode::from_bits_truncate(0o622);
        nix::unistd::mkfifoat(self.fd(), EXEC_FIFO, mode).map_err(errno_err(&path))?;
        // The init process opens it for writing after switching to the
        // container's user: make it writable by anyone (mkfifo applied the
        // umask) and owned by the container's root. mkfifoat just made the
        // name in a directory only root may write.
        nix::sys::stat::fchmodat(
            self.fd(),
            EXEC_FIFO,
            mode,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(errno_err(&path))?;
        nix::unistd::fchownat(
            self.fd(),
            EXEC_FIFO,
            Some(owner.0.into()),
            Some(owner.1.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(errno_err(&path))?;
        let fd = nix::fcntl::openat(
            self.fd(),
            EXEC_FIFO,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_err(&path))?;
        Ok(fd)
    }

    /// Opens the exec FIFO for reading without blocking (`start`).
    pub fn open_exec_fifo(&self) -> Result<File, StateError> {
        let path = self.exec_fifo();
        let fd = nix::fcntl::openat(
            self.fd(),
            EXEC_FIFO,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_err(&path))?;
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(errno_err(&path))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return Err(StateError::Foreign {
                path,
                cause: EntryError::NotRegular(files::kind(st.st_mode)),
            });
        }
        Ok(File::from(fd))
    }

    /// Removes the exec FIFO.
    pub fn remove_exec_fifo(&self) -> Result<(), StateError> {
        nix::unistd::unlinkat(
            self.fd(),
            EXEC_FIFO,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(errno_err(&self.exec_fifo()))
    }

    /// Whether the exec FIFO is still there (the container was not started).
    pub fn has_exec_fifo(&self) -> bool {
        files::stat(self.fd(), Path::new(EXEC_FIFO)).is_ok()
    }

    /// Removes the directory and everything in it; the lock goes with it.
    pub fn remove(self) -> Result<(), StateError> {
        // remove_dir_all follows no link, neither the directory's name nor
        // anything inside it.
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(cause) => Err(StateError::Io {
                path: self.path.clone(),
                cause,
            }),
        }
    }
}

fn lock_dir(root: BorrowedFd<'_>, path: &Path, id: &str) -> Result<Flock<File>, StateError> {
    let dir =
        files::open_dir(root, Path::new(id)).map_err(|e| entry_err(path.to_path_buf(), id, e))?;
    Flock::lock(File::from(dir), FlockArg::LockExclusive).map_err(|(_, errno)| StateError::Io {
        path: path.to_path_buf(),
        cause: errno.into(),
    })
}

/// Whether the locked directory is still the one `path` names: not removed,
/// not replaced by a new directory of the same name.
fn still_named(lock: &Flock<File>, path: &Path) -> Result<bool, StateError> {
    use std::os::unix::fs::MetadataExt;
    let held = lock.metadata().map_err(io_err(path))?;
    if held.nlink() == 0 {
        return Ok(false);
    }
    match std::fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(cause) => Err(StateError::Io {
            path: path.to_path_buf(),
            cause,
        }),
    }
}

/// Whether some command holds the lock of this container's directory now.
pub fn is_locked(root: &Path, id: &str) -> bool {
    let Ok(root_fd) = files::open_root(root) else {
        return false;
    };
    let Ok(dir) = files::open_dir(root_fd.as_fd(), Path::new(id)) else {
        return false;
    };
    match Flock::lock(File::from(dir), FlockArg::LockSharedNonblock) {
        Ok(_held) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Whether container `id` still has its exec FIFO (it was not started).
pub fn has_exec_fifo(root: &Path, id: &str) -> bool {
    files::open_root(root)
        .is_ok_and(|fd| files::stat(fd.as_fd(), &Path::new(id).join(EXEC_FIFO)).is_ok())
}

/// Reads container `id`'s state under `root` without locking (a reader sees
/// either the old or the new file, never a mix, because writes rename into
/// place). A missing directory or file is [`StateError::NotFound`].
pub fn read_state(root: &Path, id: &str) -> Result<ContainerState, StateError> {
    validate_id(id)?;
    let dir = root.join(id);
    let root_fd = match files::open_root(root) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateError::NotFound(id.to_owned()))
        }
        Err(cause) => return Err(StateError::Io { path: dir, cause }),
    };
    // The directory first, so that a link there is named as the entry at fault.
    let dir_fd = files::open_dir(root_fd.as_fd(), Path::new(id))
        .map_err(|e| entry_err(dir.clone(), id, e))?;
    read_state_in(dir_fd.as_fd(), &dir, id)
}

/// Reads the `state.json` of container `id` in the open directory `dir`
/// (whose path is `dir_path`, for messages), within [`MAX_FILE_BYTES`]. A
/// state naming another ID than its directory's is corrupt.
pub fn read_state_in(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    id: &str,
) -> Result<ContainerState, StateError> {
    let path = dir_path.join(STATE_FILE);
    let text = files::read(dir, Path::new(STATE_FILE), MAX_FILE_BYTES)
        .map_err(|e| entry_err(path.clone(), id, e))?;
    let state = parse_state(&text).map_err(|message| StateError::Corrupt {
        path: path.clone(),
        message,
    })?;
    if state.id != id {
        return Err(StateError::Corrupt {
            path,
            message: format!(
                "it names container {:?}, not {id:?} (the directory's name)",
                truncated(&state.id, 64)
            ),
        });
    }
    Ok(state)
}

/// At most `max` bytes of `text` (on a character boundary), with `…` when cut.
fn truncated(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Parses the contents of a `state.json`; the error is the parser's message.
pub fn parse_state(text: &[u8]) -> Result<ContainerState, String> {
    serde_json::from_slice(text).map_err(|e| e.to_string())
}

/// The IDs of every container under `root`, sorted: the directories (not
/// links to one) whose names are IDs.
pub fn list_ids(root: &Path) -> Result<Vec<String>, StateError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(cause) => {
            return Err(StateError::Io {
                path: root.to_path_buf(),
                cause,
            })
        }
    };
    // The entry's own type, never what a link points to.
    let mut ids: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|id| validate_id(id).is_ok())
        .collect();
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_are_not_one_path_component_are_refused() {
        for id in ["", ".", "..", "a/b", "../x", "a b", "x\0"] {
            assert!(validate_id(id).is_err(), "{id:?} accepted");
        }
        for id in ["a", "A-b_c.d+e", "0123456789abcdef"] {
            validate_id(id).unwrap();
        }
    }

    #[test]
    fn create_refuses_a_taken_id() {
        let root = tempfile::tempdir().unwrap();
        let first = StateDir::create(root.path(), "c1").unwrap();
        let err = StateDir::create(root.path(), "c1").unwrap_err();
        assert!(matches!(err, StateError::Exists(_)), "{err}");
        first.remove().unwrap();
        assert!(!root.path().join("c1").exists());
    }

    #[test]
    fn lock_is_visible_to_other_openers() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::create(root.path(), "c2").unwrap();
        assert!(is_locked(root.path(), "c2"));
        drop(dir);
        assert!(!is_locked(root.path(), "c2"));
    }

    #[test]
    fn a_waiter_never_keeps_the_lock_of_a_replaced_directory() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let first = StateDir::create(root.path(), "c4").unwrap();
        let waiter_root = root.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let dir = StateDir::open(&waiter_root, "c4").unwrap();
            dir.lock.metadata().unwrap().ino()
        });
        // Let the waiter block on the first directory's lock.
        std::thread::sleep(std::time::Duration::from_millis(200));
        std::fs::remove_dir_all(first.path()).unwrap();
        let second = StateDir::create(root.path(), "c4").unwrap();
        let new_ino = std::fs::metadata(second.path()).unwrap().ino();
        drop(first);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiter.is_finished(), "the waiter took a removed directory");
        drop(second);
        assert_eq!(waiter.join().unwrap(), new_ino);
    }

    #[test]
    fn a_waiter_on_a_removed_directory_finds_no_container() {
        let root = tempfile::tempdir().unwrap();
        let first = StateDir::create(root.path(), "c5").unwrap();
        let waiter_root = root.path().to_path_buf();
        let waiter = std::thread::spawn(move || StateDir::open(&waiter_root, "c5").map(|_| ()));
        std::thread::sleep(std::time::Duration::from_millis(200));
        first.remove().unwrap();
        let err = waiter.join().unwrap().unwrap_err();
        assert!(matches!(err, StateError::NotFound(_)), "{err}");
    }

    #[test]
    fn create_survives_a_forced_delete_of_its_empty_directory() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let root = tempfile::tempdir().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let removed = Arc::new(AtomicUsize::new(0));
        // As `delete --force` does with a directory that has no state file
        // (a `create` killed before its first write): lock it, remove it.
        let deleter = {
            let (root, done, removed) = (root.path().to_path_buf(), done.clone(), removed.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if let Ok(dir) = StateDir::open(&root, "c6") {
                        if !dir.path().join(STATE_FILE).exists() {
                            dir.remove().unwrap();
                            removed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        let mut rounds = 0;
        while removed.load(Ordering::Relaxed) < 20 && rounds < 100_000 {
            rounds += 1;
            let dir = StateDir::create(root.path(), "c6").unwrap();
            std::fs::write(dir.path().join(STATE_FILE), "{}").unwrap();
            dir.remove().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        deleter.join().unwrap();
        assert!(
            removed.load(Ordering::Relaxed) > 0,
            "the deleter never took a new directory in {rounds} creates"
        );
    }

    #[test]
    fn corrupt_state_file_says_how_to_recover() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::create(root.path(), "c3").unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        let err = dir.read().unwrap_err().to_string();
        assert!(err.contains("delete --force"), "{err}");
    }

    #[test]
    fn list_ids_skips_stray_entries() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("b")).unwrap();
        std::fs::create_dir(root.path().join("a")).unwrap();
        std::fs::write(root.path().join("file"), "").unwrap();
        assert_eq!(list_ids(root.path()).unwrap(), vec!["a", "b"]);
    }
}
