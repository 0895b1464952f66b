//! The kernel's own account of how long a process lived: taskstats (generic
//! netlink) reports, when a process exits, its elapsed time from fork to the
//! start of its exit in microseconds (`ac_etime`). Tests use it as the wall
//! time of a command, free of the test's own cost of spawning and reaping it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const NETLINK_GENERIC: i32 = 16;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const TASKSTATS_CMD_GET: u8 = 1;
const TASKSTATS_CMD_ATTR_REGISTER_CPUMASK: u16 = 3;
const TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK: u16 = 4;
const TASKSTATS_TYPE_PID: u16 = 1;
const TASKSTATS_TYPE_STATS: u16 = 3;
const TASKSTATS_TYPE_AGGR_PID: u16 = 4;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
/// Offsets in `struct taskstats` (stable: the structure only grows).
const AC_PID: usize = 128;
const AC_ETIME: usize = 144;

/// Listens for process exits on every CPU while it lives.
pub struct ExitWatch {
    fd: OwnedFd,
    family: u16,
    cpus: String,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align(out.len()), 0);
    out
}

/// Walks netlink attributes: (type, payload).
fn attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((kind, &data[4..len]));
        data = &data[align(len).min(data.len())..];
    }
    out
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

impl ExitWatch {
    /// Registers for exit reports of every CPU. Needs root.
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_GENERIC,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt reads one c_int; a busy machine reports many exits.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        let mut watch = ExitWatch {
            fd,
            family: GENL_ID_CTRL,
            cpus: String::new(),
        };
        watch.send(
            GENL_ID_CTRL,
            CTRL_CMD_GETFAMILY,
            &attr(CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0"),
        )?;
        let deadline = crate::deadline(2);
        let family = loop {
            let message = watch.recv(deadline)?;
            if let Some(id) = attrs(&message)
                .into_iter()
                .find(|(k, _)| *k == CTRL_ATTR_FAMILY_ID)
                .and_then(|(_, v)| v.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])))
            {
                break id;
            }
        };
        watch.family = family;
        // SAFETY: sysconf has no memory effects.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1);
        watch.cpus = format!("0-{}\0", cpus - 1);
        let mask = watch.cpus.clone();
        watch.send(
            family,
            TASKSTATS_CMD_GET,
            &attr(TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, mask.as_bytes()),
        )?;
        Ok(watch)
    }

    fn send(&self, family: u16, cmd: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut message = Vec::new();
        message.extend_from_slice(&((16 + 4 + payload.len()) as u32).to_ne_bytes());
        message.extend_from_slice(&family.to_ne_bytes());
        message.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        message.extend_from_slice(&1u32.to_ne_bytes());
        message.extend_from_slice(&0u32.to_ne_bytes());
        message.extend_from_slice(&[cmd, 1, 0, 0]);
        message.extend_from_slice(payload);
        // SAFETY: sending a buffer we own to the kernel (address zeroed: the kernel).
        let sent = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The attributes of the next generic netlink message (after its headers).
    fn recv(&self, deadline: Instant) -> std::io::Result<Vec<u8>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd we own.
        let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis().max(1) as i32) };
        if ready <= 0 {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let mut buf = vec![0u8; 1 << 16];
        // SAFETY: receiving into a buffer we own.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if kind == NLMSG_ERROR {
            let code = i32::from_ne_bytes(buf[16..20].try_into().unwrap_or_default());
            if code != 0 {
                return Err(std::io::Error::from_raw_os_error(-code));
            }
            return Ok(Vec::new());
        }
        Ok(buf.get(20..).unwrap_or_default().to_vec())
    }

    /// The elapsed time, fork to exit, of process `pid`, which exits (or
    /// exited after this watch began) within `timeout`.
    pub fn elapsed(&self, pid: u32, timeout: Duration) -> std::io::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            let message = self.recv(deadline)?;
            for (kind, nested) in attrs(&message) {
                if kind != TASKSTATS_TYPE_AGGR_PID {
                    continue;
                }
                let inner = attrs(nested);
                let this = inner
                    .iter()
                    .find(|(k, _)| *k == TASKSTATS_TYPE_PID)
                    .and_then(|(_, v)| u32_at(v, 0));
                let stats = inner
                    .iter()
                    .find(|(k, _)| *k == TASKSTATS_TYPE_STATS)
                    .map(|(_, v)| *v);
                if let (Some(this), Some(stats)) = (this, stats) {
                    if this == pid && u32_at(stats, AC_PID) == Some(pid) {
                        let micros = u64_at(stats, AC_ETIME).unwrap_or_default();
                        return Ok(Duration::from_micros(micros));
                    }
                }
            }
        }
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        let mask = self.cpus.clone();
        let _ = self.send(
            self.family,
            TASKSTATS_CMD_GET,
            &attr(TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK, mask.as_bytes()),
        );
    }
}
