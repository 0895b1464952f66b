//! `lucid events`: the container's resource statistics and OOM kills as
//! runc's JSON events (`{"type":"stats","id":…,"data":{…}}`,
//! `{"type":"oom","id":…}`), one per line; `--stats` prints one and exits.
//!
//! OOM kills are noticed as they happen: on v1 through an eventfd registered
//! on `memory.oom_control` (by hand: cgroups-rs's notifier starts a thread,
//! and the runtime starts none), on v2 through inotify on `memory.events`.
//! Either way the `oom_kill` counter decides, so an OOM kill is reported
//! once, also one that a wake-up merged with another.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::Serialize;

use super::rules::Op;
use crate::cgroups::stats::Stats;
use crate::cgroups::Cgroup;
use crate::state::{read_state, validate_id, ContainerState, Status};
use crate::{Error, Result};

/// One event as runc prints it.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    /// `stats` or `oom`.
    #[serde(rename = "type")]
    pub typ: &'static str,
    /// The container ID.
    pub id: &'a str,
    /// The statistics (stats events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Stats>,
}

fn running_state(root: &Path, id: &str) -> Result<ContainerState> {
    validate_id(id)?;
    let state = read_state(root, id)?;
    let status = super::current_status(root, &state);
    Op::Events.check(id, status)?;
    Ok(state)
}

/// The `stats` event of a container now.
pub fn stats(root: &Path, id: &str) -> Result<String> {
    let state = running_state(root, id)?;
    let event = Event {
        typ: "stats",
        id,
        data: Some(Cgroup::from_paths(&state.cgroup).stats()),
    };
    serde_json::to_string(&event).map_err(|e| Error::Unsupported(format!("encoding stats: {e}")))
}

/// A descriptor that becomes readable when the container's memory cgroup
/// reports an OOM.
fn oom_notifier(cgroup: &Cgroup) -> Option<OwnedFd> {
    let (dir, v2) = cgroup.memory_dir()?;
    if v2 {
        let inotify = nix::sys::inotify::Inotify::init(
            nix::sys::inotify::InitFlags::IN_CLOEXEC | nix::sys::inotify::InitFlags::IN_NONBLOCK,
        )
        .ok()?;
        inotify
            .add_watch(
                &dir.join("memory.events"),
                nix::sys::inotify::AddWatchFlags::IN_MODIFY,
            )
            .ok()?;
        return Some(OwnedFd::from(inotify));
    }
    let control = std::fs::File::open(dir.join("memory.oom_control")).ok()?;
    // SAFETY: eventfd has no memory effects; a negative result is an error.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return None;
    }
    // SAFETY: a non-negative result is a new descriptor this process owns.
    let efd = unsafe { OwnedFd::from_raw_fd(raw) };
    let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
    std::fs::write(dir.join("cgroup.event_control"), line).ok()?;
    // The registration holds its own reference to memory.oom_control.
    Some(efd)
}

fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 4096];
    // SAFETY: reads into a buffer of the length passed; the fd is non-blocking.
    while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Prints events until the container stops: stats every `interval`, OOM
/// kills as they happen.
pub fn watch(root: &Path, id: &str, interval: Duration, out: &mut dyn Write) -> Result<()> {
    let state = running_state(root, id)?;
    let cgroup = Cgroup::from_paths(&state.cgroup);
    let notifier = oom_notifier(&cgroup);
    if notifier.is_none() {
        log::debug!("no OOM notification for {id}: OOM kills are noticed at each stats interval");
    }
    let mut ooms = cgroup.oom_kills().unwrap_or(0);
    let mut next_stats = Instant::now() + interval;
    let emit = |out: &mut dyn Write, event: &Event| -> Result<bool> {
        let line = serde_json::to_string(event)
            .map_err(|e| Error::Unsupported(format!("encoding an event: {e}")))?;
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => Ok(true),
            // The reader went away (`lucid events | head -1`).
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(Error::os("writing an event", e)),
        }
    };
    loop {
        // Wake at least twice a second to notice that the container stopped.
        let wait = next_stats
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(500));
        let millis = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        if let Some(fd) = &notifier {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(millis)) {
                Ok(n) if n > 0 => drain(fd),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::os("waiting for OOM notifications", e)),
            }
        } else {
            std::thread::sleep(wait);
        }
        let now_ooms = cgroup.oom_kills().unwrap_or(ooms);
        if now_ooms > ooms {
            ooms = now_ooms;
            let event = Event {
                typ: "oom",
                id,
                data: None,
            };
            if !emit(out, &event)? {
                return Ok(());
            }
        }
        if super::current_status(root, &read_state(root, id)?) == Status::Stopped {
            return Ok(());
        }
        if Instant::now() >= next_stats {
            next_stats += interval;
            let event = Event {
                typ: "stats",
                id,
                data: Some(cgroup.stats()),
            };
            if !emit(out, &event)? {
                return Ok(());
            }
        }
    }
}
