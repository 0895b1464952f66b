//! Binary protection (CVE-2019-5736): the container can never reach a
//! writable `lucid` binary through `/proc/self/exe`.
//!
//! lucid clones the init process (and an `exec`'d process) from the runtime
//! process, so until it execs the container's program it runs the runtime's
//! image; a container program that is a script starting `#!/proc/self/exe`
//! would make the kernel run that image inside the container, where
//! `/proc/self/exe` (or `/proc/<pid>/exe`) then names the host binary. So the
//! commands that start processes in a container (`create`, `run`, `exec`)
//! first re-exec `lucid` from a copy the container cannot write:
//!
//! - `overlay` (the default, as root): a private overlayfs made with
//!   `fsopen`/`fsmount`, never attached to any mount namespace, whose lower
//!   layers are the binary's directory and an empty directory, with no upper
//!   layer. Such an overlay is read-only in its superblock: no remount or
//!   mount attribute can make it writable, and the page cache is the
//!   binary's own (nothing is copied).
//! - `memfd` (the fallback, for a caller who may not mount): a sealed copy in
//!   a memfd (`F_SEAL_SEAL|SHRINK|GROW|WRITE`). It costs the binary's size in
//!   memory per concurrent command (runc#3973), charged to the caller's
//!   cgroup, never the container's: the copy is made before any clone.
//! - `bind` (measured, not chosen): a detached read-only bind mount of the
//!   binary (`open_tree` + `mount_setattr`); a mount attribute can be
//!   cleared again by anyone allowed to call `mount_setattr` on it.
//! - `none`: no protection, for benchmarks only (it logs a warning).
//!
//! The choice and its cost are in docs/security.md. `LUCID_EXE_PROTECTION`
//! forces one method (unset: `overlay`, then `memfd` where mounting is not
//! allowed). After the re-exec the image is checked: a sealed memfd, a file
//! on a read-only overlayfs (or, for `bind`, on a read-only mount); anything
//! else fails the command. An image that is already a sealed memfd or on a
//! read-only overlayfs is not re-executed.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// The variable forcing a method: `overlay`, `memfd`, `bind` or `none`.
pub const PROTECTION_ENV: &str = "LUCID_EXE_PROTECTION";
/// Set by lucid for its re-exec'd image, so that a check that fails there
/// is an error, never a second re-exec.
const SEALED_ENV: &str = "_LUCID_EXE_SEALED";
/// The empty directory under the state root that serves as the overlay's
/// second lower layer (overlayfs needs two without an upper one). `@` keeps
/// it apart from container IDs.
pub const LOWER_DIR: &str = "@exe-lower";

const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
/// The seals a protected memfd copy carries, and `sealed_by` looks for.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
const FSOPEN_CLOEXEC: u32 = 1;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;
const FSMOUNT_CLOEXEC: u32 = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const OPEN_TREE_CLONE: u32 = 1;
const AT_RECURSIVE: u32 = 0x8000;

/// How the running image is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A read-only overlayfs of the binary's directory.
    Overlay,
    /// A sealed memfd copy.
    Memfd,
    /// A detached read-only bind mount of the binary.
    Bind,
    /// No protection (benchmarks only).
    None,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Overlay => "overlay",
            Method::Memfd => "memfd",
            Method::Bind => "bind",
            Method::None => "none",
        }
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ExeError {
    /// `LUCID_EXE_PROTECTION` has an unknown value.
    #[error("{PROTECTION_ENV}={0:?}: use overlay, memfd, bind or none (benchmarks only)")]
    BadEnv(String),
    /// A step of making the protected image failed.
    #[error("protecting the lucid binary ({method}): {step}: {cause}")]
    Step {
        /// The method.
        method: &'static str,
        /// What was being done.
        step: String,
        /// The failure.
        cause: std::io::Error,
    },
    /// The re-exec'd image is not protected after all.
    #[error("protecting the lucid binary: the re-executed image is not sealed ({0}); refusing to start a container with a writable binary")]
    NotSealed(String),
}

fn step_err(method: Method, step: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExeError {
    let step = step.into();
    move |cause| ExeError::Step {
        method: method.name(),
        step,
        cause,
    }
}

fn forced() -> Result<Option<Method>, ExeError> {
    match std::env::var(PROTECTION_ENV) {
        Err(_) => Ok(None),
        Ok(v) => match v.as_str() {
            "" => Ok(None),
            "overlay" => Ok(Some(Method::Overlay)),
            "memfd" => Ok(Some(Method::Memfd)),
            "bind" => Ok(Some(Method::Bind)),
            "none" => Ok(Some(Method::None)),
            _ => Err(ExeError::BadEnv(v)),
        },
    }
}

/// Makes sure this process runs a protected image of lucid, re-executing it
/// from one if not (this call then does not return). `state_root` holds the
/// overlay's empty lower layer. Call it first thing, single-threaded.
pub fn ensure_protected(state_root: &Path) -> Result<(), ExeError> {
    let forced = forced()?;
    if forced == Some(Method::None) {
        log::warn!(
            "{PROTECTION_ENV}=none: the lucid binary is not protected from the container (CVE-2019-5736); for benchmarks only"
        );
        return Ok(());
    }
    let sealed = sealed_by();
    if std::env::var_os(SEALED_ENV).is_some() {
        // The process is still single-threaded (called first in main).
        std::env::remove_var(SEALED_ENV);
        return match sealed {
            Ok(method) => {
                log::debug!("running from a protected image ({})", method.name());
                Ok(())
            }
            Err(why) => Err(ExeError::NotSealed(why)),
        };
    }
    if let Ok(method @ (Method::Overlay | Method::Memfd)) = sealed {
        // Already protected (lucid itself started this one, e.g. a hook).
        log::debug!("running from a protected image ({})", method.name());
        return Ok(());
    }
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(step_err(Method::Overlay, "reading /proc/self/exe"))?;
    let (method, fd) = match forced {
        Some(method) => (method, open_protected(method, &exe, state_root)?),
        None => match open_protected(Method::Overlay, &exe, state_root) {
            Ok(fd) => (Method::Overlay, fd),
            Err(e) => {
                log::debug!("{e}: falling back to a sealed memfd copy");
                (
                    Method::Memfd,
                    open_protected(Method::Memfd, &exe, state_root)?,
                )
            }
        },
    };
    Err(reexec(method, &fd))
}

fn open_protected(method: Method, exe: &Path, state_root: &Path) -> Result<OwnedFd, ExeError> {
    match method {
        Method::Overlay => overlay(exe, state_root),
        Method::Memfd => memfd(),
        Method::Bind => bind(),
        Method::None => unreachable!("none opens nothing"),
    }
}

/// Whether the running image is protected, and how; or why not. `Bind`
/// stands for any read-only mount that is not an overlay.
pub fn sealed_by() -> Result<Method, String> {
    let exe = std::fs::File::open("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    // SAFETY: F_GET_SEALS on an open descriptor has no memory effects.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & SEALS == SEALS {
        return Ok(Method::Memfd);
    }
    // SAFETY: an all-zero statfs is valid for fstatfs to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes into our buffer.
    if unsafe { libc::fstatfs(exe.as_raw_fd(), &mut st) } != 0 {
        return Err(format!("statfs: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: an all-zero statvfs is valid for fstatvfs to fill.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatvfs writes into our buffer.
    if unsafe { libc::fstatvfs(exe.as_raw_fd(), &mut vfs) } != 0 {
        return Err(format!("statvfs: {}", std::io::Error::last_os_error()));
    }
    let read_only = vfs.f_flag & libc::ST_RDONLY != 0;
    if st.f_type == OVERLAYFS_SUPER_MAGIC && read_only {
        return Ok(Method::Overlay);
    }
    if read_only {
        // A read-only mount other than an overlay: the `bind` method's
        // detached mount (or a binary installed on a read-only filesystem).
        return Ok(Method::Bind);
    }
    Err(if seals >= 0 {
        format!("a memfd with seals {seals:#x}")
    } else {
        "a writable file".to_owned()
    })
}

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn cstring(bytes: &[u8]) -> CString {
    CString::new(bytes).unwrap_or_default()
}

fn owned(ret: libc::c_long) -> Result<OwnedFd, std::io::Error> {
    if ret < 0 {
        return Err(last_err());
    }
    // SAFETY: a non-negative result is a new descriptor this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// overlayfs escapes `\` and `:` in a lower directory's path.
fn escape_lower(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        if b == b'\\' || b == b':' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

fn fsconfig_string(fs: &OwnedFd, key: &str, value: &[u8]) -> Result<(), std::io::Error> {
    let key = cstring(key.as_bytes());
    let value = cstring(value);
    // SAFETY: fsconfig reads two NUL-terminated strings.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    if ret < 0 {
        return Err(last_err());
    }
    Ok(())
}

fn overlay(exe: &Path, state_root: &Path) -> Result<OwnedFd, ExeError> {
    let m = Method::Overlay;
    let (dir, name) = match (exe.parent(), exe.file_name()) {
        (Some(dir), Some(name)) => (dir, name),
        _ => {
            return Err(step_err(m, format!("splitting {}", exe.display()))(
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ))
        }
    };
    let lower = state_root.join(LOWER_DIR);
    // The state root gets the mode `StateDir::create` gives it.
    for (dir, mode) in [(state_root, 0o711), (lower.as_path(), 0o700)] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .map_err(step_err(m, format!("making {}", dir.display())))?;
    }
    // SAFETY: fsopen reads a NUL-terminated name.
    let fs = owned(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })
        .map_err(step_err(m, "fsopen overlay"))?;
    // The binary's directory on top, so nothing in the empty one can mask it.
    let mut lowers = escape_lower(dir);
    lowers.push(b':');
    lowers.extend(escape_lower(&lower));
    fsconfig_string(&fs, "lowerdir", &lowers).map_err(step_err(
        m,
        format!("lowerdir={}", String::from_utf8_lossy(&lowers)),
    ))?;
    // xino only makes the kernel log a line per mount where the layers sit
    // on different filesystems; lucid does not need overlay inode numbers.
    let _ = fsconfig_string(&fs, "xino", b"off");
    // SAFETY: FSCONFIG_CMD_CREATE takes no pointers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            0usize,
            0usize,
            0,
        )
    };
    if ret < 0 {
        return Err(step_err(m, "creating the overlay")(last_err()));
    }
    // SAFETY: fsmount takes integers.
    let mnt = owned(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    })
    .map_err(step_err(m, "fsmount"))?;
    let name = cstring(name.as_bytes());
    // SAFETY: openat reads a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            mnt.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    owned(fd as libc::c_long).map_err(step_err(m, "opening the binary in the overlay"))
}

fn memfd() -> Result<OwnedFd, ExeError> {
    let m = Method::Memfd;
    let source =
        std::fs::File::open("/proc/self/exe").map_err(step_err(m, "opening /proc/self/exe"))?;
    let size = source
        .metadata()
        .map_err(step_err(m, "inspecting /proc/self/exe"))?
        .len();
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3) says outright that the copy is to be executed,
    // where vm.memfd_noexec would otherwise refuse it.
    // SAFETY: memfd_create reads a NUL-terminated name.
    let fd = match owned(unsafe {
        libc::memfd_create(c"lucid".as_ptr(), flags | libc::MFD_EXEC) as libc::c_long
    }) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // SAFETY: as above.
            owned(unsafe { libc::memfd_create(c"lucid".as_ptr(), flags) as libc::c_long })
        }
        other => other,
    }
    .map_err(step_err(m, "memfd_create"))?;
    let mut left = size;
    while left > 0 {
        // SAFETY: sendfile between two open descriptors, no offset pointer.
        let n = unsafe {
            libc::sendfile(
                fd.as_raw_fd(),
                source.as_raw_fd(),
                std::ptr::null_mut(),
                left as usize,
            )
        };
        match n {
            n if n > 0 => left -= n as u64,
            0 => break,
            _ if last_err().raw_os_error() == Some(libc::EINTR) => {}
            _ => return Err(step_err(m, "copying the binary")(last_err())),
        }
    }
    // SAFETY: F_ADD_SEALS takes an integer.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(step_err(m, "sealing the copy")(last_err()));
    }
    Ok(fd)
}

fn bind() -> Result<OwnedFd, ExeError> {
    let m = Method::Bind;
    // SAFETY: open_tree reads a NUL-terminated path.
    let tree = owned(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/proc/self/exe".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32,
        )
    })
    .map_err(step_err(m, "open_tree /proc/self/exe"))?;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` of the size passed and an empty path.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as u32 | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(step_err(m, "mount_setattr read-only")(last_err()));
    }
    Ok(tree)
}

/// Executes the protected image with this process's arguments and
/// environment; returns only on failure.
fn reexec(method: Method, fd: &OwnedFd) -> ExeError {
    let args: Vec<CString> = std::env::args_os().map(|a| cstring(a.as_bytes())).collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv: OsString = k;
            kv.push("=");
            kv.push(v);
            cstring(&kv.into_vec())
        })
        .collect();
    env.push(cstring(
        format!("{SEALED_ENV}={}", method.name()).as_bytes(),
    ));
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: execveat reads the NUL-terminated arrays built above.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    step_err(method, "executing the protected image")(last_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_dirs_are_escaped() {
        assert_eq!(escape_lower(Path::new("/a:b\\c")), b"/a\\:b\\\\c".to_vec());
    }
}
