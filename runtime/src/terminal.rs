//! Terminals: the pty a container's process gets when `process.terminal` is
//! set, handed to the caller over a unix socket as runc does (the
//! `--console-socket` protocol), and the caller's own terminal when a
//! foreground `run` or `exec` relays the pty.
//!
//! Descriptors cross sockets as `SCM_RIGHTS` with a short payload: the pty
//! master goes with `/dev/ptmx` (what runc sends), a pidfd with `standard` or
//! `setns`, the seccomp notify fd with the container process state.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::termios::{self, SetArg, Termios};

/// What can go wrong with a terminal or a descriptor-passing socket.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    /// The socket path does not exist.
    #[error("{flag} {path}: no such socket: start the receiver first and pass its socket's path")]
    NoSocket {
        /// The flag that named it.
        flag: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The path exists but is not a unix socket.
    #[error("{flag} {path}: not a unix socket")]
    NotSocket {
        /// The flag that named it.
        flag: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// Connecting failed (nobody listens, permission, …).
    #[error("{flag} {path}: connecting: {cause}")]
    Connect {
        /// The flag that named it.
        flag: &'static str,
        /// The path.
        path: PathBuf,
        /// The failure.
        cause: std::io::Error,
    },
    /// A terminal operation failed.
    #[error("{what}: {cause}")]
    Io {
        /// The step.
        what: &'static str,
        /// The failure.
        cause: std::io::Error,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> TerminalError {
    move |cause| TerminalError::Io { what, cause }
}

/// Connects to the unix socket `flag` names (`--console-socket`,
/// `--pidfd-socket`), saying clearly when it is missing or not a socket.
pub fn connect(flag: &'static str, path: &Path) -> Result<OwnedFd, TerminalError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TerminalError::NoSocket {
                flag,
                path: path.to_path_buf(),
            })
        }
        Err(cause) => {
            return Err(TerminalError::Connect {
                flag,
                path: path.to_path_buf(),
                cause,
            })
        }
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(TerminalError::NotSocket {
                flag,
                path: path.to_path_buf(),
            })
        }
        Ok(_) => {}
    }
    // std opens the socket close-on-exec.
    UnixStream::connect(path)
        .map(OwnedFd::from)
        .map_err(|cause| TerminalError::Connect {
            flag,
            path: path.to_path_buf(),
            cause,
        })
}

/// Sends `fd` over the unix socket `socket` with `payload` as the data, in
/// one `sendmsg`. Allocates nothing.
pub fn send_fd(socket: RawFd, payload: &[u8], fd: RawFd) -> std::io::Result<()> {
    // A control buffer for one descriptor, aligned for cmsghdr.
    #[repr(C)]
    struct Control {
        _align: [libc::cmsghdr; 0],
        bytes: [u8; 64],
    }
    let mut control = Control {
        _align: [],
        bytes: [0; 64],
    };
    let fd_len = std::mem::size_of::<RawFd>() as u32;
    // SAFETY: CMSG_SPACE and CMSG_LEN are pure arithmetic.
    let (space, len) = unsafe { (libc::CMSG_SPACE(fd_len), libc::CMSG_LEN(fd_len)) };
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes.as_mut_ptr().cast();
    msg.msg_controllen = space as usize;
    // SAFETY: the control buffer is large and aligned enough for one
    // cmsghdr with one descriptor (space <= 64), so CMSG_FIRSTHDR is non-null
    // and CMSG_DATA points inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = len as usize;
        std::ptr::copy_nonoverlapping(
            (&fd as *const RawFd).cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            fd_len as usize,
        );
    }
    loop {
        // SAFETY: msg describes live buffers for the duration of the call.
        let ret = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
        if ret >= 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives one message with one descriptor from `socket` (blocking);
/// returns the payload and the descriptor (close-on-exec).
pub fn recv_fd(socket: BorrowedFd<'_>) -> std::io::Result<(Vec<u8>, OwnedFd)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut payload = vec![0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    loop {
        let mut iov = [std::io::IoSliceMut::new(&mut payload)];
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let bytes = msg.bytes;
                let mut fd = None;
                for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(fds) = cmsg {
                        for raw in fds {
                            // SAFETY: SCM_RIGHTS descriptors are new and ours.
                            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                            fd.get_or_insert(owned);
                        }
                    }
                }
                let Some(fd) = fd else {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        if bytes == 0 {
                            "the other side closed the socket without sending a descriptor"
                        } else {
                            "a message arrived without a descriptor"
                        },
                    ));
                };
                payload.truncate(bytes);
                return Ok((payload, fd));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The size a pty is given: rows and columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// The spec's `consoleSize` for a window size.
pub fn console_box(size: WindowSize) -> oci_spec::runtime::Box {
    oci_spec::runtime::BoxBuilder::default()
        .height(u64::from(size.rows))
        .width(u64::from(size.cols))
        .build()
        .unwrap_or_default()
}

/// Sets a terminal's window size.
pub fn set_size(fd: BorrowedFd<'_>, size: WindowSize) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A terminal's window size.
pub fn get_size(fd: BorrowedFd<'_>) -> std::io::Result<WindowSize> {
    // SAFETY: an all-zero winsize is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into our buffer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(WindowSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// A new pty, opened from the `ptmx` at `ptmx` (a descriptor of the
/// container's `/dev/ptmx`, so the pty lives in the container's devpts).
pub struct Pty {
    /// The master side, which goes to the caller.
    pub master: OwnedFd,
    /// The slave side, which becomes the process's stdio.
    pub slave: OwnedFd,
}

/// Opens a pty from an opened `ptmx` master, unlocks it and opens its slave
/// through the master (TIOCGPTPEER), sized `size` where given.
pub fn open_pty(master: OwnedFd, size: Option<WindowSize>) -> Result<Pty, TerminalError> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int that lives for the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(io("unlocking the pty")(std::io::Error::last_os_error()));
    }
    if let Some(size) = size {
        set_size(master.as_fd(), size).map_err(io("sizing the pty (process.consoleSize)"))?;
    }
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor.
    let raw = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io("opening the pty's slave")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a non-negative result is a new descriptor we own.
    let slave = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(Pty { master, slave })
}

/// Makes `slave` the process's stdin, stdout and stderr and its controlling
/// terminal (the process must lead its session).
pub fn attach_stdio(slave: &OwnedFd) -> Result<(), TerminalError> {
    for target in 0..3 {
        // SAFETY: dup2 onto the stdio numbers replaces them; both are valid.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(io("making the pty the process's stdio")(
                std::io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: TIOCSCTTY with argument 0 has no memory effects.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(io("making the pty the controlling terminal")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The size of the caller's terminal: the first of stdin, stdout and stderr
/// that is one.
pub fn caller_size() -> Option<WindowSize> {
    (0..3).find_map(|fd| {
        // SAFETY: the stdio descriptors stay open for the life of the process.
        get_size(unsafe { BorrowedFd::borrow_raw(fd) })
            .ok()
            .filter(|size| size.rows > 0 && size.cols > 0)
    })
}

/// The caller's terminal, switched to raw mode while a foreground `run` or
/// `exec` relays the container's pty; restored when dropped.
pub struct RawTerminal {
    fd: OwnedFd,
    saved: Termios,
}

impl RawTerminal {
    /// Puts the first of stdin, stdout and stderr that is a terminal into
    /// raw mode; `None` when none is a terminal.
    pub fn enter() -> Result<Option<RawTerminal>, TerminalError> {
        for fd in 0..3 {
            // SAFETY: isatty has no memory effects.
            if unsafe { libc::isatty(fd) } != 1 {
                continue;
            }
            // SAFETY: fd is open (isatty succeeded); the duplicate is ours.
            let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if dup < 0 {
                return Err(io("duplicating the terminal")(
                    std::io::Error::last_os_error(),
                ));
            }
            // SAFETY: a new descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(dup) };
            let saved =
                termios::tcgetattr(&fd).map_err(|e| io("reading the terminal's mode")(e.into()))?;
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(&fd, SetArg::TCSANOW, &raw)
                .map_err(|e| io("setting the terminal to raw mode")(e.into()))?;
            return Ok(Some(RawTerminal { fd, saved }));
        }
        Ok(None)
    }

    /// The terminal's window size.
    pub fn size(&self) -> Option<WindowSize> {
        get_size(self.fd.as_fd()).ok()
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // TCSADRAIN: the container's last output reaches the screen in the
        // mode it was written for.
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_cross_a_socket_pair_with_their_payload() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        send_fd(a.as_raw_fd(), b"/dev/ptmx", file.as_raw_fd()).unwrap();
        let (payload, fd) = recv_fd(b.as_fd()).unwrap();
        assert_eq!(payload, b"/dev/ptmx");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text).unwrap();
        assert!(text.contains("Pid:"));
    }

    #[test]
    fn missing_and_non_socket_paths_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let missing = connect("--console-socket", &dir.path().join("none")).unwrap_err();
        assert!(
            matches!(missing, TerminalError::NoSocket { .. }),
            "{missing}"
        );
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let not = connect("--console-socket", &file).unwrap_err();
        assert!(matches!(not, TerminalError::NotSocket { .. }), "{not}");
    }

    #[test]
    fn a_pty_from_the_hosts_ptmx_has_the_asked_size() {
        let master: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_noctty()
            .open("/dev/ptmx")
            .unwrap()
            .into();
        let size = WindowSize {
            rows: 30,
            cols: 100,
        };
        let pty = open_pty(master, Some(size)).unwrap();
        assert_eq!(get_size(pty.slave.as_fd()).unwrap(), size);
    }

    trait NoCtty {
        fn custom_flags_noctty(&mut self) -> &mut Self;
    }

    impl NoCtty for std::fs::OpenOptions {
        fn custom_flags_noctty(&mut self) -> &mut Self {
            use std::os::unix::fs::OpenOptionsExt;
            self.custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        }
    }
}
