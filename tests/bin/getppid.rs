//! Runs inside a test container: makes exactly N `getppid` system calls, then
//! waits to be killed, so the exporter test knows the count eBPF must show.

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: lucid-test-getppid N");
    for _ in 0..n {
        // SAFETY: getppid has no preconditions and touches no memory.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
