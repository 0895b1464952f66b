//! `lucid start`: open the exec FIFO the init process waits on, which lets it
//! exec the container's process; then run the poststart hooks.

use std::io::Read;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::hooks::{self, HookKind, HookState};
use crate::process::init::{START_FAILED, START_OK};
use crate::state::{StateDir, Status};
use crate::{Error, Result};

/// Starts a created container.
pub fn start(root: &Path, id: &str) -> Result<()> {
    let dir = StateDir::open(root, id)?;
    let mut state = dir.read()?;
    let status = super::current_status(root, &state);
    if status != Status::Created {
        let what = match status {
            Status::Running | Status::Paused => {
                "cannot start an already running container".to_owned()
            }
            Status::Stopped => {
                "cannot start a container that has stopped: delete it and create it again"
                    .to_owned()
            }
            _ => format!("cannot start a container that is {status}"),
        };
        return Err(Error::WrongStatus {
            id: id.to_owned(),
            status,
            what,
        });
    }
    release(&dir, state.pid)?;
    state.status = Status::Running;
    dir.write(&state)?;
    let hook_state = HookState {
        oci_version: &state.oci_version,
        id,
        status: Status::Running,
        pid: Some(state.pid),
        bundle: &state.bundle,
        annotations: &state.annotations,
    };
    // The runtime spec: a failing poststart hook is logged, the container runs on.
    if let Err(e) = hooks::run_all(
        HookKind::Poststart,
        &HookKind::Poststart.hooks(&state.config),
        &hook_state,
    ) {
        log::warn!("{e}");
    }
    Ok(())
}

/// Opens the FIFO for reading (which unblocks the init process's open for
/// writing), reads its byte, removes the FIFO. Fails if the init process dies
/// instead.
fn release(dir: &StateDir, pid: i32) -> Result<()> {
    let path = dir.exec_fifo();
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| Error::os(format!("opening {}", path.display()), e))?;
    // SAFETY: pidfd_open has no memory effects; a negative result is an error.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a new descriptor we own.
    let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) });
    loop {
        let mut fds = vec![PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        if let Some(pidfd) = &pidfd {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::os("waiting for the init process", e)),
        }
        let fifo_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let init_gone = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        if fifo_ready {
            let mut buf = Vec::new();
            match fifo.read_to_end(&mut buf) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::os(format!("reading {}", path.display()), e)),
            }
            if buf.is_empty() {
                if init_gone {
                    break;
                }
                continue;
            }
            std::fs::remove_file(&path)
                .map_err(|e| Error::os(format!("removing {}", path.display()), e))?;
            if buf == START_OK {
                return Ok(());
            }
            let text = String::from_utf8_lossy(&buf);
            let message = text.strip_prefix(START_FAILED).unwrap_or(&text);
            return Err(Error::Hook(crate::hooks::HookError::InContainer(
                message.to_owned(),
            )));
        }
        if init_gone {
            break;
        }
    }
    Err(Error::WrongStatus {
        id: dir.id().to_owned(),
        status: Status::Stopped,
        what: "the init process exited before it could be started".into(),
    })
}
