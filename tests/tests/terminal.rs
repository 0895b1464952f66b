//! Terminals: a pty handed to a `--console-socket` receiver, a foreground
//! `run` relaying its pty through the caller's terminal (a pty this test
//! makes), and the bad input around console sockets. Needs root.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::Stdio;
use std::time::Instant;

use lucid_tests::{assert_nothing_left, unique_id, Bundle, Runtime};
use nix::sys::termios::{tcgetattr, LocalFlags};
use serde_json::json;

/// Reads from `fd` until `needle` shows up (or the other side closes);
/// fails the test after 10 s.
fn read_until(fd: &OwnedFd, needle: &str, seen: &mut String) {
    read_while(fd, seen, needle, |seen| !seen.contains(needle));
}

/// Reads from `fd` into `seen` while `more` says so; fails the test after
/// 10 s or when the other side closes.
fn read_while(fd: &OwnedFd, seen: &mut String, needle: &str, more: impl Fn(&str) -> bool) {
    let deadline = lucid_tests::deadline(10);
    while more(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "never saw {needle:?}; got {seen:?}");
        let mut pfd = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(millis)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(fd.as_fd(), &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => {
                panic!("the terminal closed before {needle:?}; got {seen:?}")
            }
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn write(fd: &OwnedFd, text: &str) {
    nix::unistd::write(fd, text.as_bytes()).expect("writing to the pty");
}

/// Receives one descriptor on a new connection to `listener`.
fn receive_fd(listener: UnixListener) -> std::thread::JoinHandle<(Vec<u8>, OwnedFd)> {
    std::thread::spawn(move || {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::FromRawFd;
        let (conn, _) = listener.accept().expect("lucid connects");
        let mut buf = vec![0u8; 4096];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .expect("receiving the pty master");
        let mut fd = None;
        for cmsg in msg.cmsgs().expect("control messages") {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: descriptors received with SCM_RIGHTS are ours.
                fd = fds.first().map(|raw| unsafe { OwnedFd::from_raw_fd(*raw) });
            }
        }
        let len = msg.bytes;
        (
            buf[..len].to_vec(),
            fd.expect("a descriptor came with the message"),
        )
    })
}

#[test]
fn console_socket_receiver_gets_a_working_pty() {
    let rt = Runtime::new();
    let id = unique_id("console");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.sock");
    let receiver = receive_fd(UnixListener::bind(&path).unwrap());
    let mut bundle = Bundle::new(
        &rt,
        &id,
        &[
            "sh",
            "-c",
            "tty; stty size; ls -l /dev/console; read line; echo got:$line; exit 7",
        ],
    );
    bundle.edit(|c| {
        c["process"]["terminal"] = json!(true);
        c["process"]["consoleSize"] = json!({ "height": 30, "width": 100 });
    });
    rt.ok(&[
        "create",
        "--console-socket",
        path.to_str().unwrap(),
        "--bundle",
        bundle.arg(),
        &id,
    ]);
    let (payload, master) = receiver.join().expect("the receiver ends");
    assert_eq!(payload, b"/dev/ptmx");
    rt.ok(&["start", &id]);
    let mut seen = String::new();
    read_until(&master, "/dev/pts/0", &mut seen);
    read_until(&master, "30 100", &mut seen);
    // /dev/console is the pty (major 136, the first Unix98 pty).
    read_until(&master, "136,", &mut seen);
    write(&master, "hello\n");
    read_until(&master, "got:hello", &mut seen);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn foreground_run_relays_the_terminal_and_restores_its_mode() {
    let rt = Runtime::new();
    let id = unique_id("fgtty");
    let mut bundle = Bundle::new(
        &rt,
        &id,
        &[
            "sh",
            "-c",
            "tty; stty size; while read line; do [ \"$line\" = q ] && exit 3; echo \"size-$line=$(stty size)\"; done",
        ],
    );
    bundle.edit(|c| c["process"]["terminal"] = json!(true));
    // The caller's terminal: a pty of the test's own.
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let (master, slave) = (pty.master, pty.slave);
    let size = |rows, cols| {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize that lives for the call.
        assert_eq!(
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
            0
        );
    };
    size(40, 120);
    let before = tcgetattr(&slave).unwrap();
    assert!(before.local_flags.contains(LocalFlags::ICANON));
    let mut child = rt
        .command()
        .args(["run", "--bundle", bundle.arg(), &id])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()))
        .spawn()
        .expect("starting lucid run");
    let mut seen = String::new();
    read_until(&master, "/dev/pts/0", &mut seen);
    // The caller's size reached the container's pty.
    read_until(&master, "40 120", &mut seen);
    // While the container runs, the caller's terminal is raw.
    let during = tcgetattr(&slave).unwrap();
    assert!(!during.local_flags.contains(LocalFlags::ICANON));
    // A resize of the caller's terminal follows on SIGWINCH.
    size(50, 132);
    // The container answers each line `N` with `size-N=ROWS COLS`; retry
    // until the resize has been relayed.
    for round in 0.. {
        assert!(round < 100, "the pty never got 50x132: {seen}");
        // SAFETY: kill(2) to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGWINCH) };
        write(&master, &format!("{round}\n"));
        let marker = format!("size-{round}=");
        read_while(&master, &mut seen, &marker, |seen| {
            seen.find(&marker)
                .is_none_or(|at| !seen[at..].contains('\n'))
        });
        let at = seen.find(&marker).expect("read_while found it");
        let line = seen[at + marker.len()..].lines().next().unwrap_or_default();
        if line.trim() == "50 132" {
            break;
        }
    }
    write(&master, "q\n");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{seen}");
    let after = tcgetattr(&slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags);
    assert_eq!(after.input_flags, before.input_flags);
    assert_eq!(after.output_flags, before.output_flags);
    assert_nothing_left(&rt, &id, bundle.path());
}

/// `lucid ARGS` must fail naming `expected` and leave nothing of `id`.
fn refused(rt: &Runtime, bundle: &Bundle, id: &str, args: &[&str], expected: &[&str]) {
    let out = rt.lucid(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for text in expected {
        assert!(err.contains(text), "expected {text:?} in: {err}");
    }
    assert_nothing_left(rt, id, bundle.path());
}

#[test]
fn console_socket_that_does_not_exist_is_refused() {
    let rt = Runtime::new();
    let id = unique_id("nosock");
    let mut bundle = Bundle::new(&rt, &id, &["true"]);
    bundle.edit(|c| c["process"]["terminal"] = json!(true));
    let missing = "/nonexistent/console.sock";
    refused(
        &rt,
        &bundle,
        &id,
        &[
            "create",
            "--console-socket",
            missing,
            "--bundle",
            bundle.arg(),
            &id,
        ],
        &["--console-socket", missing, "no such socket"],
    );
}

#[test]
fn console_socket_that_is_not_a_socket_is_refused() {
    let rt = Runtime::new();
    let id = unique_id("notsock");
    let mut bundle = Bundle::new(&rt, &id, &["true"]);
    bundle.edit(|c| c["process"]["terminal"] = json!(true));
    let file = bundle.path().join("config.json");
    refused(
        &rt,
        &bundle,
        &id,
        &[
            "create",
            "--console-socket",
            file.to_str().unwrap(),
            "--bundle",
            bundle.arg(),
            &id,
        ],
        &["not a unix socket"],
    );
}

#[test]
fn terminal_and_console_socket_must_come_together() {
    let rt = Runtime::new();
    let id = unique_id("ttyrules");
    let mut bundle = Bundle::new(&rt, &id, &["true"]);
    bundle.edit(|c| c["process"]["terminal"] = json!(true));
    refused(
        &rt,
        &bundle,
        &id,
        &["create", "--bundle", bundle.arg(), &id],
        &["process.terminal", "--console-socket"],
    );
    bundle.edit(|c| c["process"]["terminal"] = json!(false));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    refused(
        &rt,
        &bundle,
        &id,
        &[
            "create",
            "--console-socket",
            path.to_str().unwrap(),
            "--bundle",
            bundle.arg(),
            &id,
        ],
        &["--console-socket", "process.terminal"],
    );
}
