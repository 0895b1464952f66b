//! What the container's process runs once its seccomp filter is loaded, up to
//! `execve`: the invariant of this module is that **nothing here allocates**.
//!
//! The filter may forbid the calls an allocator makes (`brk`, `mmap`), and a
//! failure here must still reach the runtime or `start`. So every message
//! sent from here was serialized into a [`MessageBuffer`] set aside before the
//! filter (a message that does not fit is a clear failure, never a larger
//! buffer), failures are formatted on the stack ([`StackText`]) and reported
//! by [`fatal`], and the exec FIFO's path and the execve arrays were built
//! before. The system calls made here: `sendmsg`/`sendto` and `close`,
//! `clock_gettime`, `capset`, `prctl`, `open`/`write` of the exec FIFO,
//! `close_range`, `rt_sigaction`, `rt_sigprocmask`, `execve` and `_exit`.
//! The startContainer hooks, which run between `start` and exec under the
//! filter as with runc, are the one exception (they run in `init.rs`).

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, SigSet, Signal};
use serde::Serialize;

use super::channel::ChildEnd;

/// Ends the process at once.
pub(super) fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running the runtime's atexit
    // handlers or flushing its buffers, which belong to the parent.
    unsafe { libc::_exit(code) }
}

/// The errno of an I/O error (0 when it has none).
pub(super) fn errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

/// Memory for one message, set aside before the seccomp filter: messages are
/// serialized into it without ever growing it.
pub(super) struct MessageBuffer {
    buf: Box<[u8]>,
    len: usize,
}

/// A message larger than its [`MessageBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooLarge {
    /// The message's size.
    pub needed: usize,
    /// The buffer's.
    pub capacity: usize,
}

/// Counts the bytes of a serialization without keeping them.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0 += data.len();
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes into the buffer's free space; a write past its end fails without
/// allocating (no error payload).
struct Fill<'a> {
    buf: &'a mut [u8],
    len: &'a mut usize,
}

impl std::io::Write for Fill<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let end = *self.len + data.len();
        if end > self.buf.len() {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.buf[*self.len..end].copy_from_slice(data);
        *self.len = end;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MessageBuffer {
    /// A buffer of `capacity` bytes (this allocates: call it before the filter).
    pub fn new(capacity: usize) -> Self {
        MessageBuffer {
            buf: vec![0; capacity].into_boxed_slice(),
            len: 0,
        }
    }

    /// Serializes `message` as JSON, then `suffix`, in place of what the
    /// buffer held. It is measured first, so a message that does not fit is
    /// refused before a byte is written and without the encoder making an
    /// error (which would allocate).
    pub fn encode<T: Serialize>(&mut self, message: &T, suffix: &[u8]) -> Result<&[u8], TooLarge> {
        let mut count = Count(0);
        let measured = serde_json::to_writer(&mut count, message).is_ok();
        let needed = count.0 + suffix.len();
        let capacity = self.buf.len();
        if !measured || needed > capacity {
            return Err(TooLarge { needed, capacity });
        }
        self.len = 0;
        let mut fill = Fill {
            buf: &mut self.buf,
            len: &mut self.len,
        };
        // Measured above: it fits, and the same value serializes the same way.
        if serde_json::to_writer(&mut fill, message).is_err() {
            return Err(TooLarge { needed, capacity });
        }
        let end = self.len + suffix.len();
        self.buf[self.len..end].copy_from_slice(suffix);
        self.len = end;
        Ok(&self.buf[..self.len])
    }
}

/// Serializes `message` into `buffer` and sends it on the sync channel; a
/// failure ends the process through [`fatal`] with the phase `phase`.
pub(super) fn send<T: Serialize>(
    channel: &ChildEnd,
    buffer: &mut MessageBuffer,
    message: &T,
    phase: &'static str,
) {
    let bytes = match buffer.encode(message, b"") {
        Ok(bytes) => bytes,
        Err(too_large) => fatal_too_large(channel, phase, too_large, None),
    };
    if let Err(e) = channel.send_bytes(bytes, None) {
        fatal(channel, phase, "telling the runtime", errno(&e), None, None);
    }
}

/// Reports a message that did not fit the memory set aside for it.
pub(super) fn fatal_too_large(
    channel: &ChildEnd,
    phase: &'static str,
    too_large: TooLarge,
    fifo: Option<RawFd>,
) -> ! {
    let mut what = StackText::new();
    let _ = write!(
        what,
        "encoding a message of {} bytes, more than the {} set aside before the seccomp filter",
        too_large.needed, too_large.capacity
    );
    let what = std::str::from_utf8(what.bytes()).unwrap_or("encoding a message");
    fatal(channel, phase, what, Errno::EMSGSIZE, None, fifo)
}

/// Text formatted on the stack, for failures after the seccomp filter.
pub(super) struct StackText {
    buf: [u8; 512],
    len: usize,
}

impl StackText {
    pub fn new() -> Self {
        StackText {
            buf: [0; 512],
            len: 0,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Appends bytes, dropping what would break a JSON string and what does
    /// not fit.
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b != b'"' && b != b'\\' && b >= 0x20 {
                self.push_raw(&[b]);
            }
        }
    }

    /// Appends bytes as they are, as far as they fit.
    fn push_raw(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

pub(super) fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: bytes is a live buffer; fd may be closed, then write fails.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Reports a failure after the seccomp filter without allocating, then exits
/// with 127: once `start` has released the process (`fifo`), as `ExecFailed`
/// on the exec FIFO for `start` and on the container's stderr; before, as
/// `Failed` on the sync channel while the runtime listens (`create` before
/// `Ready`, `exec`), or on stderr when it no longer does.
pub(super) fn fatal(
    channel: &ChildEnd,
    phase: &'static str,
    what: &str,
    err: Errno,
    subject: Option<&[u8]>,
    fifo: Option<RawFd>,
) -> ! {
    let mut message = StackText::new();
    message.push(what.as_bytes());
    if let Some(subject) = subject {
        message.push(b" ");
        message.push(subject);
    }
    let _ = write!(message, ": {}", err.desc());
    let mut json = StackText::new();
    let told = match fifo {
        Some(fifo) => {
            json.push_raw(b"{\"ExecFailed\":{\"message\":\"");
            json.push(message.bytes());
            json.push_raw(b"\"}}\n");
            write_all(fifo, json.bytes());
            false
        }
        None => {
            json.push_raw(b"{\"Failed\":{\"phase\":\"");
            json.push_raw(phase.as_bytes());
            json.push_raw(b"\",\"message\":\"");
            json.push(message.bytes());
            json.push_raw(b"\"}}");
            channel.send_bytes(json.bytes(), None).is_ok()
        }
    };
    if !told {
        write_all(2, b"lucid: ");
        write_all(2, message.bytes());
        write_all(2, b"\n");
    }
    exit(127)
}

/// Blocks until `start` opens the exec FIFO; returns it for the answer.
/// The FIFO is reopened through /proc (now the container's own procfs)
/// because it lives outside the new root.
pub(super) fn wait_for_start(path: &CString) -> OwnedFd {
    loop {
        // SAFETY: path is NUL-terminated; a negative result is an error.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: a new descriptor we own.
            return unsafe { OwnedFd::from_raw_fd(fd) };
        }
        let err = Errno::last();
        if err != Errno::EINTR {
            // Nobody listens on the channel any more: this goes to stderr.
            let mut message = StackText::new();
            let _ = write!(
                message,
                "lucid: opening the exec FIFO through /proc/self/fd (the container needs /proc): {}",
                err.desc()
            );
            write_all(2, message.bytes());
            write_all(2, b"\n");
            exit(127);
        }
    }
}

/// Last steps before exec: only the process's own descriptors stay open,
/// signals return to their defaults, the caller's mask comes back.
/// Allocates nothing (but on kernels before 5.11, which lack close_range).
pub(super) fn prepare_exec(preserve_fds: i32, sigmask: &SigSet) {
    let preserve = preserve_fds.max(0) as u32;
    for fd in 3..3 + preserve {
        // Preserved descriptors reach the process whatever their flag.
        // SAFETY: F_SETFD on a possibly-closed descriptor at worst fails with EBADF.
        unsafe { libc::fcntl(fd as RawFd, libc::F_SETFD, 0) };
    }
    let first = 3 + preserve;
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOEXEC only marks descriptors; none is freed.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if ret != 0 {
        mark_cloexec_from(first as RawFd);
    }
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: restoring the default disposition installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    }
    // SAFETY: sigprocmask with a valid set has no other memory effects.
    unsafe {
        libc::sigprocmask(
            libc::SIG_SETMASK,
            sigmask.as_ref() as *const libc::sigset_t,
            std::ptr::null_mut(),
        )
    };
}

/// close_range fallback for kernels before 5.11.
fn mark_cloexec_from(first: RawFd) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a possibly-closed descriptor at worst fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::process::channel::{InitMessage, StartMessage};

    /// Runs `f` (which exits) in a forked child and waits for it.
    fn in_child(f: impl FnOnce()) -> i32 {
        // SAFETY: the child only runs `f`, which writes and _exits.
        match unsafe { libc::fork() } {
            0 => {
                f();
                exit(0)
            }
            pid => {
                let mut status = 0;
                // SAFETY: waitpid on our own child with a valid status pointer.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                libc::WEXITSTATUS(status)
            }
        }
    }

    #[test]
    fn failures_after_the_filter_are_messages_the_runtime_and_start_read() {
        let (ours, theirs) = crate::process::channel::pair().unwrap();
        let code = in_child(|| {
            fatal(
                &theirs,
                "init.exec",
                "exec",
                Errno::ENOEXEC,
                Some(b"/bin/\"x\""),
                None,
            )
        });
        assert_eq!(code, 127);
        let Some((InitMessage::Failed { phase, message, .. }, _)) = ours.recv().unwrap() else {
            panic!("no Failed message")
        };
        assert_eq!(phase, "init.exec");
        assert_eq!(message, "exec /bin/x: Exec format error");
        let (read, write) = nix::unistd::pipe().unwrap();
        let code = in_child(|| {
            let fifo = Some(write.as_raw_fd());
            fatal(&theirs, "init.exec", "exec", Errno::ENOENT, None, fifo)
        });
        assert_eq!(code, 127);
        drop(write);
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(read), &mut text).unwrap();
        let messages = StartMessage::parse_all(&text).unwrap();
        assert!(
            matches!(&messages[..], [StartMessage::ExecFailed { message }] if message.contains("No such file")),
            "{messages:?}"
        );
    }

    #[test]
    fn stack_text_keeps_json_strings_intact() {
        let mut text = StackText::new();
        text.push(b"exec \"/bin/x\\y\"\n: ok");
        assert_eq!(text.bytes(), b"exec /bin/xy: ok");
        let mut long = StackText::new();
        long.push(&[b'a'; 600]);
        assert_eq!(long.bytes().len(), 512);
    }

    #[test]
    fn a_message_is_encoded_in_place_and_one_too_large_is_refused() {
        let mut buffer = MessageBuffer::new(32);
        let bytes = buffer.encode(&("exec", 7), b"\n").unwrap().to_vec();
        assert_eq!(bytes, b"[\"exec\",7]\n");
        let long = "x".repeat(40);
        assert_eq!(
            buffer.encode(&long, b""),
            Err(TooLarge {
                needed: 42,
                capacity: 32
            })
        );
        // What fits still does after a refusal.
        assert_eq!(buffer.encode(&1, b"").unwrap(), b"1");
    }

    #[test]
    fn a_message_too_large_for_its_buffer_is_a_failed_message_not_a_crash() {
        let (ours, theirs) = crate::process::channel::pair().unwrap();
        let code = in_child(|| {
            let mut buffer = MessageBuffer::new(8);
            send(&theirs, &mut buffer, &"more than eight bytes", "init.ready");
        });
        assert_eq!(code, 127);
        let Some((InitMessage::Failed { phase, message, .. }, _)) = ours.recv().unwrap() else {
            panic!("no Failed message")
        };
        assert_eq!(phase, "init.ready");
        assert!(
            message.contains("23 bytes, more than the 8 set aside"),
            "{message}"
        );
    }
}
