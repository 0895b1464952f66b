//! Makes exactly N `getppid` calls and N `open` calls that fail (ENOENT),
//! through raw syscalls so libc adds or merges nothing, then exits 0. Run
//! inside a container by the eBPF tests, which expect exactly these counts.

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: syscall-loop N");
    let path = c"/lucid-no-such-file";
    for _ in 0..n {
        // SAFETY: getppid has no arguments and no memory effects.
        unsafe { libc::syscall(libc::SYS_getppid) };
        // SAFETY: a NUL-terminated path and flags; the call fails with ENOENT.
        let fd = unsafe { libc::syscall(libc::SYS_open, path.as_ptr(), libc::O_RDONLY) };
        assert!(fd < 0, "{} exists", path.to_string_lossy());
    }
}
