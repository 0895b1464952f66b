//! Exec and exit events from the ring buffer, read without an async runtime.
use std::{os::fd::AsRawFd as _, time::Duration};

use aya::maps::{MapData, RingBuf};
use lucid_ebpf_common::{event_kind, ProcessEvent};

use crate::{layout::Layout, Error, Programs};

/// A process event of a watched container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A successful exec.
    Exec {
        /// The watched cgroup the process counts for.
        cgroup_id: u64,
        /// Process id (host pid namespace).
        pid: u32,
        /// Parent process id (0 if unknown).
        ppid: u32,
        /// The new `comm`.
        comm: String,
        /// The path passed to exec.
        filename: String,
        /// Monotonic time (`CLOCK_MONOTONIC`) in ns.
        ktime_ns: u64,
    },
    /// A process exited.
    Exit {
        /// The watched cgroup the process counted for.
        cgroup_id: u64,
        /// Process id (host pid namespace).
        pid: u32,
        /// Exit code, when it exited normally.
        exit_code: Option<u8>,
        /// Terminating signal, when a signal killed it.
        signal: Option<u8>,
        /// `comm` at exit.
        comm: String,
        /// Monotonic time (`CLOCK_MONOTONIC`) in ns.
        ktime_ns: u64,
    },
}

impl Event {
    /// The watched cgroup the event belongs to.
    pub fn cgroup_id(&self) -> u64 {
        match self {
            Self::Exec { cgroup_id, .. } | Self::Exit { cgroup_id, .. } => *cgroup_id,
        }
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<ProcessEvent>() {
            return None;
        }
        // SAFETY: the length is checked; ProcessEvent is plain old data, read unaligned.
        let e: ProcessEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let text = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        match e.kind {
            event_kind::EXEC => Some(Self::Exec {
                cgroup_id: e.cgroup_id,
                pid: e.pid,
                ppid: e.ppid,
                comm: text(&e.comm),
                filename: text(&e.filename),
                ktime_ns: e.ktime_ns,
            }),
            event_kind::EXIT => {
                let signal = (e.exit_status & 0x7f) as u8;
                Some(Self::Exit {
                    cgroup_id: e.cgroup_id,
                    pid: e.pid,
                    exit_code: (signal == 0).then_some(((e.exit_status >> 8) & 0xff) as u8),
                    signal: (signal != 0).then_some(signal),
                    comm: text(&e.comm),
                    ktime_ns: e.ktime_ns,
                })
            }
            _ => None,
        }
    }
}

/// Reads the host-wide event ring buffer. One reader at a time: events are consumed.
///
/// The exporter can wrap [`EventReader::as_raw_fd`] in its own async poller.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    /// Events available now, without waiting.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(event) = Event::decode(&item) {
                out.push(event);
            }
        }
        out
    }

    /// Waits up to `timeout` for events, then returns those available (maybe none).
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<Event>, Error> {
        let events = self.drain();
        if !events.is_empty() {
            return Ok(events);
        }
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::pin("polling", std::path::Path::new("EVENTS"), e));
            }
        }
        Ok(self.drain())
    }

    /// The ring buffer's descriptor, readable when events are waiting.
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}

impl Programs {
    /// Opens the event ring buffer for reading.
    pub fn events(&self) -> Result<EventReader, Error> {
        let layout = Layout::new(self.pin_dir().to_owned());
        let path = layout.map("EVENTS");
        let data = MapData::from_pin(&path).map_err(Error::map("EVENTS"))?;
        let ring =
            RingBuf::try_from(aya::maps::Map::from_map_data(data).map_err(Error::map("EVENTS"))?)
                .map_err(Error::map("EVENTS"))?;
        Ok(EventReader { ring })
    }
}
