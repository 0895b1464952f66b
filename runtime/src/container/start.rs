//! `lucid start`: open the exec FIFO the init process waits on, which lets it
//! run the startContainer hooks and exec the container's process; then run
//! the poststart hooks.

use std::io::Read;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::info_span;

use super::rules::Op;
use crate::hooks::{self, HookKind, HookState};
use crate::process::{PhaseTiming, StartMessage};
use crate::procfs::now_ns;
use crate::state::{StateDir, Status};
use crate::telemetry::step;
use crate::{Error, Result};

/// Starts a created container.
pub fn start(root: &Path, id: &str) -> Result<()> {
    let (dir, mut state) = step(info_span!("state.read"), || -> Result<_> {
        let dir = StateDir::open(root, id)?;
        let state = dir.read()?;
        Ok((dir, state))
    })?;
    crate::failpoint::hit("start.state-read");
    let status = super::current_status(root, &state);
    Op::Start.check(id, status)?;
    let released = release(&dir, state.pid);
    // The init process's own steps (startContainer hooks, exec) become spans
    // whether or not they succeeded.
    let (phases, result) = match released {
        Ok(phases) => (phases, Ok(())),
        Err((phases, e)) => (phases, Err(e)),
    };
    crate::telemetry::record_phases(&phases);
    result?;
    crate::failpoint::hit("start.released");
    state.status = Status::Running;
    step(info_span!("state.write"), || dir.write(&state))?;
    let hook_state = HookState::of_container(&state, Status::Running);
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

type Released = std::result::Result<Vec<PhaseTiming>, (Vec<PhaseTiming>, Error)>;

/// Opens the FIFO for reading (which unblocks the init process's open for
/// writing), reads the init process's [`StartMessage`]s until the end of
/// file that its exec causes, removes the FIFO. Returns the init process's
/// phases: its startContainer hooks and `init.exec`. Fails if a hook or the
/// exec failed, or if the init process died instead.
fn release(dir: &StateDir, pid: i32) -> Released {
    let path = dir.exec_fifo();
    let no_phases = |e| (Vec::new(), e);
    let mut fifo = dir
        .open_exec_fifo()
        .map_err(|e| no_phases(Error::from(e)))?;
    // SAFETY: pidfd_open has no memory effects; a negative result is an error.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a new descriptor we own.
    let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) });
    let mut buf = Vec::new();
    let mut removed = false;
    let eof = loop {
        let mut fds = vec![PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        if let Some(pidfd) = &pidfd {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(no_phases(Error::os("waiting for the init process", e))),
        }
        let fifo_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let init_gone = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        if fifo_ready {
            let before = buf.len();
            let at_end = match fifo.read_to_end(&mut buf) {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                Err(e) => {
                    return Err(no_phases(Error::os(
                        format!("reading {}", path.display()),
                        e,
                    )))
                }
            };
            if !removed && !buf.is_empty() {
                // The container counts as running from the first message on.
                dir.remove_exec_fifo()
                    .map_err(|e| no_phases(Error::from(e)))?;
                removed = true;
            }
            if at_end && !buf.is_empty() {
                break now_ns();
            }
            if at_end && buf.len() == before && init_gone {
                break now_ns();
            }
            continue;
        }
        if init_gone {
            break now_ns();
        }
    };
    if buf.is_empty() {
        return Err(no_phases(Error::WrongStatus {
            id: dir.id().to_owned(),
            status: Status::Stopped,
            what: "the init process exited before it could be started".into(),
        }));
    }
    let messages = StartMessage::parse_all(&buf)
        .map_err(|e| no_phases(Error::Process(crate::process::ProcessError::Channel(e))))?;
    let mut phases = Vec::new();
    let mut failure = None;
    let mut exec_start = None;
    for message in messages {
        match message {
            StartMessage::Started {
                phases: hooks,
                exec_start_ns,
            } => {
                phases.extend(hooks);
                exec_start = Some(exec_start_ns);
            }
            StartMessage::HookFailed {
                phases: hooks,
                message,
            } => {
                phases.extend(hooks);
                failure = Some(Error::Hook(crate::hooks::HookError::InContainer(message)));
            }
            StartMessage::ExecFailed { message } => {
                failure = Some(Error::Process(crate::process::ProcessError::InitFailed {
                    phase: "init.exec".into(),
                    message,
                }));
            }
        }
    }
    if let Some(start_ns) = exec_start {
        phases.push(PhaseTiming {
            name: "init.exec".into(),
            start_ns,
            end_ns: eof,
            cpu_ns: None,
            attributes: Vec::new(),
            error: failure.as_ref().map(|e| e.to_string()),
        });
    }
    match failure {
        Some(e) => Err((phases, e)),
        None => Ok(phases),
    }
}
