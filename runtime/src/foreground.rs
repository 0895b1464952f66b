//! A foreground `run` or `exec`: relay signals to the container's process,
//! relay its pty to the caller's terminal when it has one, wait for it and
//! return its exit code (128+N when signal N killed it).
//!
//! Every forwarded signal and SIGCHLD is blocked *before* the process is
//! cloned ([`Signals::block`]) and read from a signalfd afterwards, so none
//! is lost; one `poll` serves the signals and the pty, and the runtime stays
//! single-threaded.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::terminal::RawTerminal;
use crate::{Error, Result};

/// The signals a foreground command waits for, blocked.
pub struct Signals {
    waited: SigSet,
    previous: SigSet,
}

impl Signals {
    /// Blocks SIGCHLD and every forwarded signal; call it before the
    /// container's process exists.
    pub fn block() -> Result<Signals> {
        let mut waited = SigSet::empty();
        waited.add(Signal::SIGCHLD);
        for signal in crate::signals::forwarded() {
            waited.add(signal);
        }
        let mut previous = SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            SigmaskHow::SIG_BLOCK,
            Some(&waited),
            Some(&mut previous),
        )
        .map_err(|e| Error::os("blocking signals", e))?;
        Ok(Signals { waited, previous })
    }

    /// The mask before blocking, which the container's process gets at exec.
    pub fn previous(&self) -> SigSet {
        self.previous
    }
}

/// Makes this process the reaper of orphans below it, so a process forked
/// inside the container's pid namespace by an intermediate still reports to us.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// The exit code a shell would report.
fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Reaps every child that has exited; returns `pid`'s exit code if it was one.
fn reap(pid: Pid) -> Result<Option<i32>> {
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return Ok(code),
            Ok(status) if status.pid() == Some(pid) => {
                if let Some(c) = exit_code(status) {
                    code = Some(c);
                }
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::os("waiting for the container's process", e)),
        }
    }
}

/// Copies what is readable from `from` to `to`; `false` once `from` has no
/// more to give (end of file, or EIO from a pty whose slave is closed).
fn pump(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 8192];
    match nix::unistd::read(from, &mut buf) {
        Ok(0) => false,
        Ok(n) => {
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                match nix::unistd::write(to, rest) {
                    Ok(written) => rest = &rest[written..],
                    Err(nix::errno::Errno::EINTR) => {}
                    // A reader that went away: keep draining, drop the output.
                    Err(_) => break,
                }
            }
            true
        }
        Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => true,
        Err(_) => false,
    }
}

/// A container's pty, relayed to the caller's terminal.
pub struct Relay {
    master: OwnedFd,
    terminal: Option<RawTerminal>,
}

impl Relay {
    /// Prepares the relay of `master`: the caller's terminal, if it has one,
    /// goes into raw mode now (before the container's process runs, so none
    /// of its output meets the caller's line discipline) until the relay ends.
    pub fn new(master: OwnedFd) -> Result<Relay> {
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| Error::os("making the pty non-blocking", e))?;
        let terminal = RawTerminal::enter()?;
        Ok(Relay { master, terminal })
    }
}

/// Waits for `pid`, forwarding every signal but SIGCHLD (and SIGWINCH when
/// relaying a pty, which resizes the pty instead). With `relay`, stdin flows
/// to the pty and the pty to stdout; the caller's terminal mode is restored
/// before returning.
pub fn wait(pid: Pid, signals: &Signals, relay: Option<Relay>) -> Result<i32> {
    let sigfd = SignalFd::with_flags(
        &signals.waited,
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(|e| Error::os("opening a signalfd", e))?;
    let (pty, terminal) = match relay {
        Some(Relay { master, terminal }) => (Some(master), terminal),
        None => (None, None),
    };
    // SAFETY: the stdio descriptors stay open for the life of the process.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    // SAFETY: as above.
    let stdout = unsafe { BorrowedFd::borrow_raw(1) };
    let mut relay_in = pty.is_some();
    let mut relay_out = pty.is_some();
    let mut code = None;
    loop {
        if let Some(code) = code {
            if let Some(master) = &pty {
                // The process is gone: take what it left in the pty, then stop.
                while relay_out && pump(master.as_fd(), stdout) {
                    let mut probe = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
                    if !matches!(poll(&mut probe, PollTimeout::ZERO), Ok(n) if n > 0) {
                        break;
                    }
                }
            }
            drop(terminal);
            return Ok(code);
        }
        let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
        let master_slot = match (&pty, relay_out) {
            (Some(master), true) => {
                fds.push(PollFd::new(master.as_fd(), PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let stdin_slot = if relay_in {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
            Some(fds.len() - 1)
        } else {
            None
        };
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::os("waiting for the container", e)),
        }
        let ready = |slot: Option<usize>| {
            slot.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (signal_ready, master_ready, stdin_ready) =
            (ready(Some(0)), ready(master_slot), ready(stdin_slot));
        drop(fds);
        if master_ready {
            if let Some(master) = &pty {
                relay_out = pump(master.as_fd(), stdout);
            }
        }
        if stdin_ready {
            if let Some(master) = &pty {
                relay_in = pump(stdin, master.as_fd());
            }
        }
        if !signal_ready {
            continue;
        }
        while let Ok(Some(info)) = sigfd.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo == libc::SIGCHLD {
                if let Some(c) = reap(pid)? {
                    code = Some(c);
                }
            } else if signo == libc::SIGWINCH && pty.is_some() {
                if let (Some(master), Some(size)) =
                    (&pty, terminal.as_ref().and_then(RawTerminal::size))
                {
                    let _ = crate::terminal::set_size(master.as_fd(), size);
                }
            } else {
                // SAFETY: kill(2) has no memory effects; the process may just
                // have exited, and ESRCH is not an error.
                unsafe { libc::kill(pid.as_raw(), signo) };
            }
        }
        // A SIGCHLD may have been merged with one already read.
        if code.is_none() {
            code = reap(pid)?;
        }
    }
}
