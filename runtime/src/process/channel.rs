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

/// Part of the state's schema (`state.json` keeps the phases), defined there.
pub use crate::state::PhaseTiming;

/// The largest message either side sends (phase timings included).
pub const MAX_MESSAGE: usize = 64 * 1024;

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

/// The phases of the init process's side of the protocol, declared in the
/// order its messages come: a message of an earlier phase after a later one
/// (or one sent twice) is a broken protocol, which [`InitSequence`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InitPhase {
    /// `UserNamespaceReady` (intermediate process, new user namespace).
    UserNamespace,
    /// `InitPid` (intermediate process).
    Pid,
    /// `RunCreateRuntimeHooks`.
    CreateRuntimeHooks,
    /// `SeccompNotify`.
    Seccomp,
    /// `Ready`, the last.
    Ready,
}

impl InitMessage {
    /// The protocol phase of this message; `None` for `Failed`, which may
    /// come at any point.
    pub fn phase(&self) -> Option<InitPhase> {
        match self {
            InitMessage::UserNamespaceReady => Some(InitPhase::UserNamespace),
            InitMessage::InitPid { .. } => Some(InitPhase::Pid),
            InitMessage::RunCreateRuntimeHooks => Some(InitPhase::CreateRuntimeHooks),
            InitMessage::SeccompNotify => Some(InitPhase::Seccomp),
            InitMessage::Ready { .. } => Some(InitPhase::Ready),
            InitMessage::Failed { .. } => None,
        }
    }
}

/// The runtime's record of the phases the init process has gone through:
/// each message must come from a later phase than the one before it.
#[derive(Debug, Default)]
pub struct InitSequence {
    last: Option<InitPhase>,
}

impl InitSequence {
    /// Checks `message` against the order and records its phase.
    pub fn accept(&mut self, message: &InitMessage) -> Result<(), ChannelError> {
        let Some(phase) = message.phase() else {
            return Ok(());
        };
        if let Some(last) = self.last.filter(|last| *last >= phase) {
            return Err(ChannelError::OutOfOrder {
                got: phase,
                after: last,
            });
        }
        self.last = Some(phase);
        Ok(())
    }
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
    /// The init process sent a message out of the protocol's order.
    #[error("sync channel: the init process sent a {got:?} message after {after:?}")]
    OutOfOrder {
        /// The phase of the message received.
        got: InitPhase,
        /// The phase already reached.
        after: InitPhase,
    },
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

/// A connected pair of sync channel ends: the runtime's, which sends
/// [`RuntimeMessage`]s and receives [`InitMessage`]s, and the child's, the
/// other way round, both close-on-exec.
pub fn pair() -> Result<(RuntimeEnd, ChildEnd), ChannelError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((RuntimeEnd(Channel { fd: a }), ChildEnd(Channel { fd: b })))
}

/// The runtime's end: it can only send runtime messages and receive the
/// child's.
#[derive(Debug)]
pub struct RuntimeEnd(Channel);

impl RuntimeEnd {
    /// Sends one message to the child.
    pub fn send(&self, message: &RuntimeMessage) -> Result<(), ChannelError> {
        self.0.send(message)
    }

    /// Receives the child's next message and the descriptor sent with it;
    /// `None` when the child closed its end.
    pub fn recv(&self) -> Result<Option<(InitMessage, Option<OwnedFd>)>, ChannelError> {
        self.0.recv_with_fd()
    }

    /// The raw descriptor (so a forked child can close it).
    pub fn raw_fd(&self) -> RawFd {
        self.0.raw_fd()
    }
}

/// The child's end (intermediate, init or exec'd process): it can only send
/// init messages and receive the runtime's.
#[derive(Debug)]
pub struct ChildEnd(Channel);

impl ChildEnd {
    /// Sends one message to the runtime (allocates: not after seccomp).
    pub fn send(&self, message: &InitMessage) -> Result<(), ChannelError> {
        self.0.send(message)
    }

    /// Sends a message serialized beforehand, with a descriptor when given.
    /// Allocates nothing.
    pub fn send_bytes(&self, bytes: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
        self.0.send_bytes(bytes, fd)
    }

    /// Receives the runtime's next message; `None` when it closed its end.
    pub fn recv(&self) -> Result<Option<RuntimeMessage>, ChannelError> {
        self.0.recv()
    }

    /// The raw descriptor (so the runtime's side of a fork can close it).
    pub fn raw_fd(&self) -> RawFd {
        self.0.raw_fd()
    }
}

/// One end of the sync channel, untyped: [`RuntimeEnd`] and [`ChildEnd`]
/// wrap it.
#[derive(Debug)]
struct Channel {
    fd: OwnedFd,
}

impl Channel {
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

impl AsFd for RuntimeEnd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> PhaseTiming {
        PhaseTiming {
            name: "rootfs.mount".into(),
            start_ns: 1,
            end_ns: 2,
            cpu_ns: Some(1),
            attributes: vec![("hook.path".into(), "/bin/true".into())],
            error: None,
        }
    }

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let (runtime, child) = pair().unwrap();
        let ready = InitMessage::Ready {
            phases: vec![timing()],
        };
        child.send(&ready).unwrap();
        runtime.send(&RuntimeMessage::Proceed).unwrap();
        assert_eq!(runtime.recv().unwrap().map(|(m, _)| m), Some(ready));
        assert_eq!(child.recv().unwrap(), Some(RuntimeMessage::Proceed));
        drop(child);
        assert!(runtime.recv().unwrap().is_none());
    }

    #[test]
    fn a_prepared_message_carries_a_descriptor() {
        let (runtime, child) = pair().unwrap();
        let bytes = serde_json::to_vec(&InitMessage::SeccompNotify).unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        child.send_bytes(&bytes, Some(file.as_raw_fd())).unwrap();
        let (message, fd) = runtime.recv().unwrap().unwrap();
        assert_eq!(message, InitMessage::SeccompNotify);
        assert!(fd.is_some());
        child
            .send_bytes(b"\"RunCreateRuntimeHooks\"", None)
            .unwrap();
        let (message, fd) = runtime.recv().unwrap().unwrap();
        assert_eq!(message, InitMessage::RunCreateRuntimeHooks);
        assert!(fd.is_none());
    }

    /// Sends `messages` from the child's end and feeds what the runtime's end
    /// receives to a fresh sequence: the result of each `accept`.
    fn accepted(messages: &[InitMessage]) -> Vec<Result<(), String>> {
        let (runtime, child) = pair().unwrap();
        for m in messages {
            child.send(m).unwrap();
        }
        drop(child);
        let mut sequence = InitSequence::default();
        let mut out = Vec::new();
        while let Some((m, _)) = runtime.recv().unwrap() {
            out.push(sequence.accept(&m).map_err(|e| e.to_string()));
        }
        out
    }

    #[test]
    fn the_init_messages_in_protocol_order_are_accepted() {
        let all = [
            InitMessage::UserNamespaceReady,
            InitMessage::InitPid { pid: 7 },
            InitMessage::RunCreateRuntimeHooks,
            InitMessage::SeccompNotify,
            InitMessage::Ready { phases: vec![] },
        ];
        assert!(accepted(&all).iter().all(Result::is_ok));
        // Phases may be skipped (no user namespace, no hooks, no notify).
        let direct = [
            InitMessage::RunCreateRuntimeHooks,
            InitMessage::Ready { phases: vec![] },
        ];
        assert!(accepted(&direct).iter().all(Result::is_ok));
    }

    #[test]
    fn a_message_of_an_earlier_phase_or_a_repeated_one_is_refused() {
        let late = accepted(&[
            InitMessage::Ready { phases: vec![] },
            InitMessage::SeccompNotify,
        ]);
        assert_eq!(
            late[1],
            Err("sync channel: the init process sent a Seccomp message after Ready".into())
        );
        let twice = accepted(&[
            InitMessage::RunCreateRuntimeHooks,
            InitMessage::RunCreateRuntimeHooks,
        ]);
        assert!(twice[0].is_ok() && twice[1].is_err(), "{twice:?}");
    }

    #[test]
    fn failed_is_accepted_in_any_phase() {
        let failed = InitMessage::Failed {
            phase: "rootfs.mount".into(),
            message: "mount: EPERM".into(),
            phases: vec![timing()],
        };
        let results = accepted(&[
            InitMessage::SeccompNotify,
            failed.clone(),
            InitMessage::Ready { phases: vec![] },
        ]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(accepted(std::slice::from_ref(&failed))[0].is_ok());
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
