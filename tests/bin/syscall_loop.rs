//! A helper run inside containers by the eBPF tests.
//!
//! `syscall-loop N`: exactly N `getppid` calls and N `open` calls that fail
//! (ENOENT), through raw syscalls so libc adds or merges nothing.
//! `syscall-loop tcp BYTES`: sends BYTES over a loopback TCP connection to
//! itself (both ends in the container) and prints how many arrived.

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
        drop(client);
        let mut got = Vec::new();
        server.read_to_end(&mut got).expect("receiving");
        println!("{}", got.len());
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
