//! A helper run inside containers by the eBPF tests.
//!
//! `syscall-loop N`: exactly N `getppid` calls and N `open` calls that fail
//! (ENOENT), through raw syscalls so libc adds or merges nothing.
//! `syscall-loop tcp BYTES`: sends BYTES over a loopback TCP connection to
//! itself (both ends in the container) and prints how many arrived and how
//! many payload bytes the sender put on the wire, retransmissions included
//! (`tcpi_bytes_sent`: a loaded machine can stall past the retransmission
//! timeout even on loopback, and the resent segment is real traffic).

use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("tcp") {
        let bytes: usize = args[2].parse().expect("usage: syscall-loop tcp BYTES");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding on loopback");
        let mut client = std::net::TcpStream::connect(listener.local_addr().expect("an address"))
            .expect("connecting");
        let (mut server, _) = listener.accept().expect("accepting");
        client.write_all(&vec![7u8; bytes]).expect("sending");
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("closing the sending side");
        let mut got = Vec::new();
        server.read_to_end(&mut got).expect("receiving");
        println!("{} {}", got.len(), bytes_sent(&client));
        return;
    }
    let n: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: syscall-loop N | syscall-loop tcp BYTES");
    let path = c"/lucid-no-such-file";
    for _ in 0..n {
        // SAFETY: getppid has no arguments and no memory effects.
        unsafe { libc::syscall(libc::SYS_getppid) };
        // SAFETY: a NUL-terminated path and flags; the call fails with ENOENT.
        let fd = unsafe { libc::syscall(libc::SYS_open, path.as_ptr(), libc::O_RDONLY) };
        assert!(fd < 0, "{} exists", path.to_string_lossy());
    }
}

/// The kernel's `tcpi_bytes_sent` of a socket (RFC 4898's
/// tcpEStatsPerfHCDataOctetsOut: payload bytes sent, retransmissions
/// included), at its offset in `struct tcp_info` (Linux 4.19 and later),
/// which the libc crate's shorter struct does not reach.
fn bytes_sent(socket: &std::net::TcpStream) -> u64 {
    use std::os::fd::AsRawFd;
    const OFFSET: usize = 200;
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: the buffer and its length are valid for the kernel to fill.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    assert!(
        len as usize >= OFFSET + 8,
        "this kernel's tcp_info has no tcpi_bytes_sent"
    );
    u64::from_ne_bytes(info[OFFSET..OFFSET + 8].try_into().unwrap())
}
