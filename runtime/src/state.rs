//! Container state on disk: one directory per container under the root
//! (`/run/lucid/<id>/`), holding `state.json` (written atomically) and the
//! exec FIFO, and locked with `flock` against concurrent commands on the same ID.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

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
    pub ebpf: Option<crate::ebpf::Registration>,
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
    pub phases: Vec<crate::process::PhaseTiming>,
    /// The container's trace, which every command on it joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::telemetry::ContainerTrace>,
    /// The configuration the container was created from.
    pub config: oci_spec::runtime::Spec,
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

/// Checks a container ID the way runc does: letters, digits and `_+-.`, not
/// `.` or `..`, so it is always a single path component.
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
    if id == "." || id == ".." {
        return bad("it is a relative path");
    }
    if id.len() > 1024 {
        return bad("it is longer than 1024 bytes");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
    {
        return bad("only letters, digits and _ + - . are allowed");
    }
    Ok(())
}

/// How many times `create` makes its directory again when a concurrent
/// `delete --force` removed it before it was locked.
const CREATE_ATTEMPTS: usize = 100;

/// A container's state directory, locked for as long as this value lives.
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
        // A `delete --force` of the same ID may take the new directory between
        // the mkdir and the lock for one whose `create` was killed before its
        // first state file (it has none yet either) and remove it. That delete
        // came first; this create then makes the directory again.
        for _ in 0..CREATE_ATTEMPTS {
            match std::fs::DirBuilder::new().mode(0o711).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(StateError::Exists(id.to_owned()))
                }
                Err(cause) => return Err(StateError::Io { path, cause }),
            }
            let lock = match lock_dir(&path) {
                Err(StateError::Io { cause, .. })
                    if cause.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue
                }
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
    /// other command on the same container to finish.
    pub fn open(root: &Path, id: &str) -> Result<Self, StateError> {
        validate_id(id)?;
        let path = root.join(id);
        loop {
            let lock = match lock_dir(&path) {
                Err(StateError::Io { cause, .. })
                    if cause.kind() == std::io::ErrorKind::NotFound =>
                {
                    return Err(StateError::NotFound(id.to_owned()))
                }
                other => other?,
            };
            // While we waited, the holder may have removed the directory
            // (`delete`) and a `create` may have made a new one under the
            // same name: the lock we hold is then on a directory nobody uses.
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

    /// The raw descriptor holding the lock, which a forked child must close.
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.lock.as_raw_fd()
    }

    /// Reads `state.json`.
    pub fn read(&self) -> Result<ContainerState, StateError> {
        read_state(&self.path, &self.id)
    }

    /// Replaces `state.json` atomically (write a temporary file, rename).
    pub fn write(&self, state: &ContainerState) -> Result<(), StateError> {
        let tmp = self.path.join(".state.json.tmp");
        let text = serde_json::to_vec(state).map_err(|e| StateError::Corrupt {
            path: tmp.clone(),
            message: e.to_string(),
        })?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.write_all(&text).map_err(io_err(&tmp))?;
        drop(file);
        let dest = self.path.join(STATE_FILE);
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))
    }

    /// The exec FIFO's path.
    pub fn exec_fifo(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    /// Removes the directory and everything in it; the lock goes with it.
    pub fn remove(self) -> Result<(), StateError> {
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

fn lock_dir(path: &Path) -> Result<Flock<File>, StateError> {
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err(path))?;
    Flock::lock(dir, FlockArg::LockExclusive).map_err(|(_, errno)| StateError::Io {
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
    let Ok(dir) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root.join(id))
    else {
        return false;
    };
    match Flock::lock(dir, FlockArg::LockSharedNonblock) {
        Ok(_held) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Reads a container's state without locking (a reader sees either the old or
/// the new file, never a mix, because writes rename into place).
pub fn read_state(dir: &Path, id: &str) -> Result<ContainerState, StateError> {
    let path = dir.join(STATE_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateError::NotFound(id.to_owned()))
        }
        Err(cause) => return Err(StateError::Io { path, cause }),
    };
    parse_state(&text).map_err(|message| StateError::Corrupt { path, message })
}

/// Parses the contents of a `state.json`; the error is the parser's message.
pub fn parse_state(text: &[u8]) -> Result<ContainerState, String> {
    serde_json::from_slice(text).map_err(|e| e.to_string())
}

/// The IDs of every container under `root`, sorted.
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
