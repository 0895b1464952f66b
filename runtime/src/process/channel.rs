//! The typed sync channel between the runtime and the processes it spawns:
//! a `SOCK_SEQPACKET` socket pair carrying one JSON message per packet.
//!
//! Messages are small and few (a handful per container start), so JSON costs
//! nothing measurable and keeps them readable in `strace`. A message may carry
//! one descriptor (`SCM_RIGHTS`): the seccomp notify fd goes to the runtime
//! this way. After its seccomp filter is loaded the container's process sends
//! only messages it serialized into memory it set aside beforehand
//! ([`Channel::send_bytes`]), so it allocates nothing there.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

/// The largest message either side sends (phase timings included).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A phase of set-up measured inside the init process (CLOCK_REALTIME), sent
/// to the runtime, which turns it into a span.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTiming {
    /// The phase's span name (`rootfs.mount`, `process.setup`, …).
    pub name: String,
    /// Start, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_ns: u64,
    /// On-CPU time of the process during the phase, in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns: Option<u64>,
    /// What the phase worked on, as span attributes (`hook.path` for a hook).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<(String, String)>,
    /// Why the phase failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Messages from the init (or intermediate) process to the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitMessage {
    /// The intermediate process made the new user namespace: write its id maps.
    UserNamespaceReady,
    /// The intermediate process forked the init process (pid in the runtime's
    /// pid namespace).
    InitPid {
        /// The init process's pid.
        pid: i32,
    },
    /// Mounts are done; run the prestart and createRuntime hooks now.
    RunCreateRuntimeHooks,
    /// The seccomp filter is loaded; its notify fd comes with this message,
    /// for the runtime to hand to the profile's listener.
    SeccompNotify,
    /// Set-up is complete; the init process now blocks on the exec FIFO.
    Ready {
        /// The set-up phases, in order.
        phases: Vec<PhaseTiming>,
    },
    /// Set-up failed; the process exits after sending this.
    Failed {
        /// The phase that failed.
        phase: String,
        /// What went wrong.
        message: String,
        /// The phases measured until then, the failed one last.
        #[serde(default)]
        phases: Vec<PhaseTiming>,
    },
}

/// What the init process writes on the exec FIFO once `start` opened it,
/// one JSON message per line. The init process keeps its end of the FIFO
/// open, close-on-exec, through `execve`: the end of file that `start` then
/// reads marks the moment the container's program replaced the init process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartMessage {
    /// The startContainer hooks ran; exec follows.
    Started {
        /// The startContainer hooks, one phase each.
        phases: Vec<PhaseTiming>,
        /// When the init process began its last steps before exec (ns since the epoch).
        exec_start_ns: u64,
    },
    /// A startContainer hook failed; the init process exits.
    HookFailed {
        /// The hooks run, the failed one last.
        phases: Vec<PhaseTiming>,
        /// The hook's error.
        message: String,
    },
    /// `execve` failed; the init process exits.
    ExecFailed {
        /// What went wrong.
        message: String,
    },
}

impl StartMessage {
    /// The message as one line.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Every message in what was read from the FIFO.
    pub fn parse_all(bytes: &[u8]) -> Result<Vec<StartMessage>, ChannelError> {
        bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).map_err(ChannelError::from))
            .collect()
    }
}

/// Messages from the runtime to the init (or intermediate) process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuntimeMessage {
    /// Cgroups joined and id maps written: go on with set-up.
    Proceed,
    /// The prestart and createRuntime hooks have run.
    HooksDone {
        /// The init process's pid in the runtime's pid namespace, which the
        /// hooks inside the container report in their state.
        pid: i32,
    },
}

/// Errors on the sync channel. The cause is part of the message (not a
/// `source`), so a report that walks the chain names it once.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The socket failed.
    #[error("sync channel: {0}")]
    Io(nix::Error),
    /// A message could not be encoded or decoded.
    #[error("sync channel: bad message: {0}")]
    Codec(serde_json::Error),
}

impl From<nix::Error> for ChannelError {
    fn from(e: nix::Error) -> Self {
        ChannelError::Io(e)
    }
}

impl From<serde_json::Error> for ChannelError {
    fn from(e: serde_json::Error) -> Self {
        ChannelError::Codec(e)
    }
}

/// One end of the sync channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair (runtime end, child end), both close-on-exec.
    pub fn pair() -> Result<(Channel, Channel), ChannelError> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// The raw descriptor (so a forked child can close the end it does not use).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends one message.
    pub fn send<T: Serialize>(&self, message: &T) -> Result<(), ChannelError> {
        let bytes = serde_json::to_vec(message)?;
        let iov = [IoSlice::new(&bytes)];
        sendmsg::<()>(self.fd.as_raw_fd(), &iov, &[], MsgFlags::MSG_NOSIGNAL, None)?;
        Ok(())
    }

    /// Sends a message serialized beforehand, with a descriptor when given.
    /// Allocates nothing.
    pub fn send_bytes(&self, bytes: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
        if let Some(fd) = fd {
            return crate::terminal::send_fd(self.fd.as_raw_fd(), bytes, fd);
        }
        loop {
            // SAFETY: bytes is a live buffer for the call.
            let ret = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if ret >= 0 {
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Receives one message; `None` when the other side has closed its end
    /// (it exited). A descriptor sent with it is closed.
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> Result<Option<T>, ChannelError> {
        Ok(self.recv_with_fd()?.map(|(message, _)| message))
    }

    /// Receives one message and the descriptor sent with it, if any.
    pub fn recv_with_fd<T: for<'de> Deserialize<'de>>(
        &self,
    ) -> Result<Option<(T, Option<OwnedFd>)>, ChannelError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let (len, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fd = None;
                    for cmsg in msg.cmsgs()? {
                        if let ControlMessageOwned::ScmRights(fds) = cmsg {
                            for raw in fds {
                                // SAFETY: SCM_RIGHTS descriptors are new and ours.
                                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    break (msg.bytes, fd);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if len == 0 {
            return Ok(None);
        }
        Ok(Some((decode(&buf[..len])?, fd)))
    }
}

/// Decodes one message as received on the channel (one packet's bytes).
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ChannelError> {
    Ok(serde_json::from_slice(bytes)?)
}

impl AsFd for Channel {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let (a, b) = Channel::pair().unwrap();
        let ready = InitMessage::Ready {
            phases: vec![PhaseTiming {
                name: "rootfs.mount".into(),
                start_ns: 1,
                end_ns: 2,
                cpu_ns: Some(1),
                attributes: vec![("hook.path".into(), "/bin/true".into())],
                error: None,
            }],
        };
        b.send(&ready).unwrap();
        a.send(&RuntimeMessage::Proceed).unwrap();
        assert_eq!(a.recv::<InitMessage>().unwrap(), Some(ready));
        assert_eq!(
            b.recv::<RuntimeMessage>().unwrap(),
            Some(RuntimeMessage::Proceed)
        );
        drop(b);
        assert_eq!(a.recv::<InitMessage>().unwrap(), None);
    }

    #[test]
    fn a_prepared_message_carries_a_descriptor() {
        let (a, b) = Channel::pair().unwrap();
        let bytes = serde_json::to_vec(&InitMessage::SeccompNotify).unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        b.send_bytes(&bytes, Some(file.as_raw_fd())).unwrap();
        let (message, fd) = a.recv_with_fd::<InitMessage>().unwrap().unwrap();
        assert_eq!(message, InitMessage::SeccompNotify);
        assert!(fd.is_some());
        b.send_bytes(b"\"RunCreateRuntimeHooks\"", None).unwrap();
        let (message, fd) = a.recv_with_fd::<InitMessage>().unwrap().unwrap();
        assert_eq!(message, InitMessage::RunCreateRuntimeHooks);
        assert!(fd.is_none());
    }

    #[test]
    fn start_messages_are_read_line_by_line() {
        let started = StartMessage::Started {
            phases: Vec::new(),
            exec_start_ns: 7,
        };
        let failed = StartMessage::ExecFailed {
            message: "exec /x: EACCES".into(),
        };
        let mut bytes = started.to_line();
        bytes.extend(failed.to_line());
        assert_eq!(
            StartMessage::parse_all(&bytes).unwrap(),
            vec![started, failed]
        );
    }
}
