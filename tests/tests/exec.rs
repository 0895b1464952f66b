//! `lucid exec` into running busybox containers: namespaces, cgroups,
//! exit codes, signals, terminals, detached runs, the container's settings
//! and their overrides, preserved descriptors, and the bad input. Needs root.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lucid_tests::{assert_nothing_left, cgroup_path, unique_id, Bundle, Runtime};
use serde_json::json;

/// A running container (`sleep 60`), deleted by the runtime's drop.
fn running(
    rt: &Runtime,
    prefix: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> (String, Bundle) {
    let id = unique_id(prefix);
    let mut bundle = Bundle::new(rt, &id, &["sleep", "60"]);
    bundle.edit(edit);
    rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    (id, bundle)
}

fn init_pid(rt: &Runtime, id: &str) -> i64 {
    rt.state(id)["pid"]
        .as_i64()
        .expect("a running container has a pid")
}

/// Every pid in the container's cgroups, in any hierarchy.
fn container_pids(id: &str) -> BTreeSet<i32> {
    let rel = cgroup_path(id);
    let mut pids = BTreeSet::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let procs = entry
            .path()
            .join(rel.trim_start_matches('/'))
            .join("cgroup.procs");
        if let Ok(text) = std::fs::read_to_string(procs) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn exec_runs_in_the_containers_namespaces_mounts_and_cgroups() {
    let rt = Runtime::new();
    let (id, bundle) = running(&rt, "exec-ns", |c| c["hostname"] = json!("exec-host"));
    let pid = init_pid(&rt, &id);
    let out = rt.lucid(&[
        "exec",
        &id,
        "sh",
        "-c",
        "hostname; cat /proc/1/cmdline; echo; for n in mnt uts ipc net pid; do readlink /proc/self/ns/$n; done; cat /proc/self/cgroup",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("exec-host"));
    // PID 1 of the namespace it sees is the container's sleep.
    assert_eq!(lines.next(), Some("sleep\u{0}60\u{0}"));
    for ns in ["mnt", "uts", "ipc", "net", "pid"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(
            lines.next(),
            Some(theirs.to_str().unwrap()),
            "{ns} namespace differs from the container's: {text}"
        );
    }
    let init_cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let exec_cgroups: Vec<&str> = lines.collect();
    assert_eq!(exec_cgroups, init_cgroups.lines().collect::<Vec<_>>());
    // Nothing of the exec stays in the container.
    assert_eq!(container_pids(&id), BTreeSet::from([pid as i32]));
    drop(bundle);
}

#[test]
fn exec_returns_the_exit_code_and_128_plus_a_killing_signal() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, "exec-code", |_| {});
    let out = rt.lucid(&["exec", &id, "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let out = rt.lucid(&["exec", &id, "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(128 + 9), "{}", stderr(&out));
}

#[test]
fn exec_forwards_signals_to_the_process() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, "exec-sig", |_| {});
    let mut child = rt
        .command()
        .args([
            "exec",
            &id,
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // SAFETY: kill(2) to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(42));
}

#[test]
fn exec_flags_change_user_cwd_env_groups_and_capabilities() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, "exec-flags", |_| {});
    let out = rt.lucid(&[
        "exec",
        "--user",
        "1000:1000",
        "--additional-gids",
        "5",
        "--cwd",
        "/tmp",
        "--env",
        "GREETING=hi",
        &id,
        "sh",
        "-c",
        "id; pwd; echo $GREETING",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("uid=1000") && text.contains("gid=1000"),
        "{text}"
    );
    assert!(text.contains("groups=5") || text.contains(",5"), "{text}");
    assert!(text.contains("/tmp\n") && text.contains("hi\n"), "{text}");
    let caps = |args: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[&id, "grep", "CapEff", "/proc/self/status"]);
        let out = rt.lucid(&all);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        u64::from_str_radix(text.trim().trim_start_matches("CapEff:").trim(), 16).unwrap()
    };
    let net_raw = 1u64 << 13;
    assert_eq!(
        caps(&[]) & net_raw,
        0,
        "the container's capabilities lack NET_RAW"
    );
    assert_ne!(caps(&["--cap", "CAP_NET_RAW"]) & net_raw, 0);
}

#[test]
fn exec_gets_the_containers_seccomp_filter() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, "exec-seccomp", |c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EXDEV }]
        });
    });
    let out = rt.lucid(&[
        "exec",
        &id,
        "sh",
        "-c",
        "mkdir /tmp/d 2>&1; grep Seccomp: /proc/self/status",
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("Invalid cross-device link"),
        "{text}{}",
        stderr(&out)
    );
    assert!(text.contains("Seccomp:\t2"), "{text}");
}

#[test]
fn exec_runs_a_process_file() {
    let rt = Runtime::new();
    let (id, bundle) = running(&rt, "exec-file", |_| {});
    let file = bundle.path().join("process.json");
    std::fs::write(
        &file,
        json!({
            "user": { "uid": 2000, "gid": 2000 },
            "args": ["sh", "-c", "id -u; echo $FROM_FILE; pwd"],
            "env": ["PATH=/bin", "FROM_FILE=yes"],
            "cwd": "/proc"
        })
        .to_string(),
    )
    .unwrap();
    let out = rt.lucid(&["exec", "--process", file.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2000\nyes\n/proc\n");
}

#[test]
fn exec_detach_writes_the_pid_file_of_a_process_in_the_container() {
    let rt = Runtime::new();
    let (id, bundle) = running(&rt, "exec-detach", |_| {});
    let init = init_pid(&rt, &id);
    let pid_file = bundle.path().join("exec.pid");
    rt.ok(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "30",
    ]);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ns = |p: i64, n: &str| std::fs::read_link(format!("/proc/{p}/ns/{n}")).unwrap();
    assert_eq!(ns(pid as i64, "pid"), ns(init, "pid"));
    assert_eq!(ns(pid as i64, "mnt"), ns(init, "mnt"));
    assert!(container_pids(&id).contains(&pid));
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, "sleep\u{0}30\u{0}");
    // Deleting the container takes the exec'd process with it.
    rt.ok(&["delete", "--force", &id]);
    let deadline = lucid_tests::deadline(10);
    while std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "exec'd process {pid} outlived its container"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn exec_tty_relays_a_pty_in_the_foreground() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, "exec-tty", |_| {});
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave: OwnedFd = pty.slave;
    let ws = libc::winsize {
        ws_row: 33,
        ws_col: 77,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives for the call.
    assert_eq!(
        unsafe { libc::ioctl(pty.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        0
    );
    let before = nix::sys::termios::tcgetattr(&slave).unwrap();
    let out = rt
        .command()
        .args(["exec", "--tty", &id, "sh", "-c", "tty; stty size; exit 4"])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()))
        .status()
        .unwrap();
    assert_eq!(out.code(), Some(4));
    let mut text = String::new();
    while !text.contains("33 77") {
        let mut pfd = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&pty.master),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(10_000u16)).unwrap();
        assert!(ready > 0, "no size from the exec'd process: {text}");
        let mut buf = [0u8; 4096];
        let n = nix::unistd::read(&pty.master, &mut buf).unwrap();
        assert!(n > 0, "{text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(text.contains("/dev/pts/"), "{text}");
    let after = nix::sys::termios::tcgetattr(&slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags);
}

#[test]
fn exec_tty_detached_hands_the_pty_to_the_console_socket() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, "exec-console", |_| {});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let receiver = std::thread::spawn(move || {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::FromRawFd;
        let (conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let mut fd = None;
        for cmsg in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: descriptors received with SCM_RIGHTS are ours.
                fd = fds.first().map(|raw| unsafe { OwnedFd::from_raw_fd(*raw) });
            }
        }
        fd.expect("the pty master")
    });
    rt.ok(&[
        "exec",
        "--tty",
        "--detach",
        "--console-socket",
        path.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "read line; echo got:$line",
    ]);
    let master = receiver.join().unwrap();
    nix::unistd::write(&master, b"ping\n").unwrap();
    let mut seen = String::new();
    let deadline = lucid_tests::deadline(10);
    while !seen.contains("got:ping") {
        assert!(Instant::now() < deadline, "{seen}");
        let mut buf = [0u8; 256];
        match nix::unistd::read(&master, &mut buf) {
            Ok(n) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => break,
        }
    }
    assert!(seen.contains("got:ping"), "{seen}");
}

#[test]
fn exec_preserves_descriptors_it_is_asked_to() {
    let rt = Runtime::new();
    let (id, bundle) = running(&rt, "exec-fds", |_| {});
    let out_path = bundle.path().join("fd3.txt");
    let file = std::fs::File::create(&out_path).unwrap();
    let raw = file.as_raw_fd();
    let mut command = rt.command();
    command.args([
        "exec",
        "--preserve-fds",
        "1",
        &id,
        "sh",
        "-c",
        "echo through-fd-3 >&3",
    ]);
    // SAFETY: dup2 and fcntl in the child before exec, on valid descriptors.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec set.
            let ret = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if ret < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&out_path).unwrap(),
        "through-fd-3\n"
    );
}

#[test]
fn socket_activation_descriptors_reach_the_container_as_listen_fds() {
    let rt = Runtime::new();
    let id = unique_id("listenfds");
    let bundle = Bundle::new(
        &rt,
        &id,
        &[
            "sh",
            "-c",
            "echo fds=$LISTEN_FDS pid=$LISTEN_PID; echo activated >&3",
        ],
    );
    let out_path = bundle.path().join("activated.txt");
    // The shell's pid stays lucid's across exec, as LISTEN_PID requires.
    let script = format!(
        "exec 3>{out}; LISTEN_PID=$$ LISTEN_FDS=1 exec {lucid} --root {root} run --bundle {bundle} {id}",
        out = out_path.display(),
        lucid = lucid_tests::lucid_bin().display(),
        root = rt.root().display(),
        bundle = bundle.arg(),
    );
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "fds=1 pid=1\n");
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), "activated\n");
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn exec_into_an_unknown_container_fails_clearly() {
    let rt = Runtime::new();
    let out = rt.lucid(&["exec", "no-such-container", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("container no-such-container does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exec_into_a_stopped_container_fails_and_starts_nothing() {
    let rt = Runtime::new();
    let id = unique_id("exec-stopped");
    let bundle = Bundle::new(&rt, &id, &["true"]);
    rt.ok(&["run", "--keep", "--bundle", bundle.arg(), &id]);
    assert_eq!(rt.status(&id), "stopped");
    let out = rt.lucid(&["exec", &id, "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("stopped"), "{}", stderr(&out));
    assert!(container_pids(&id).is_empty());
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn malformed_process_file_fails_before_anything_runs() {
    let rt = Runtime::new();
    let (id, bundle) = running(&rt, "exec-badfile", |_| {});
    let pid = init_pid(&rt, &id) as i32;
    let file = bundle.path().join("process.json");
    std::fs::write(
        &file,
        r#"{ "args": ["sh"], "cwd": "/", "user": { "uid": "root" } }"#,
    )
    .unwrap();
    let out = rt.lucid(&["exec", "--process", file.to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("user.uid"), "{}", stderr(&out));
    std::fs::write(&file, "{ not json").unwrap();
    let out = rt.lucid(&["exec", "--process", file.to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("process.json"), "{}", stderr(&out));
    std::fs::write(
        &file,
        r#"{ "args": [], "cwd": "/", "user": { "uid": 0, "gid": 0 } }"#,
    )
    .unwrap();
    let out = rt.lucid(&["exec", "--process", file.to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("args"), "{}", stderr(&out));
    assert_eq!(container_pids(&id), BTreeSet::from([pid]));
}

#[test]
fn exec_of_a_missing_program_leaves_no_process_behind() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, "exec-missing", |_| {});
    let pid = init_pid(&rt, &id) as i32;
    let out = rt.lucid(&["exec", &id, "no-such-program"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("executable file not found"),
        "{}",
        stderr(&out)
    );
    let out = rt.lucid(&["exec", "--tty", "--detach", &id, "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--console-socket"),
        "{}",
        stderr(&out)
    );
    assert_eq!(container_pids(&id), BTreeSet::from([pid]));
}

#[test]
fn exec_lsm_flags_are_refused_without_the_lsm() {
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.starts_with('Y'));
    assert!(
        !apparmor && !std::path::Path::new("/sys/fs/selinux/enforce").exists(),
        "this test proves the refusal on a host without AppArmor and SELinux"
    );
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, "exec-lsm", |_| {});
    let pid = init_pid(&rt, &id) as i32;
    let out = rt.lucid(&["exec", "--apparmor", "lucid-test", &id, "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("AppArmor is not enabled"),
        "{}",
        stderr(&out)
    );
    let out = rt.lucid(&[
        "exec",
        "--process-label",
        "system_u:system_r:container_t:s0",
        &id,
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("SELinux is not enabled"),
        "{}",
        stderr(&out)
    );
    assert_eq!(container_pids(&id), BTreeSet::from([pid]));
}

#[test]
fn exec_no_new_privs_sets_the_flag_the_container_left_off() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, "exec-nnp", |c| {
        c["process"]["noNewPrivileges"] = json!(false)
    });
    let probe = |flags: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[&id, "grep", "NoNewPrivs", "/proc/self/status"]);
        rt.ok(&args)
    };
    assert_eq!(probe(&[]).trim(), "NoNewPrivs:\t0");
    assert_eq!(probe(&["--no-new-privs"]).trim(), "NoNewPrivs:\t1");
}

#[test]
fn exec_pidfd_socket_receives_a_pidfd_of_the_process() {
    let rt = Runtime::new();
    let (id, bundle) = running(&rt, "exec-pidfd", |_| {});
    let path = bundle.path().join("pidfd.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let receiver = std::thread::spawn(move || {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::FromRawFd;
        let (conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let mut fd = None;
        for cmsg in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: descriptors received with SCM_RIGHTS are ours.
                fd = fds.first().map(|raw| unsafe { OwnedFd::from_raw_fd(*raw) });
            }
        }
        let len = msg.bytes;
        (buf[..len].to_vec(), fd.expect("a pidfd"))
    });
    let pid_file = bundle.path().join("exec.pid");
    rt.ok(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "--pidfd-socket",
        path.to_str().unwrap(),
        &id,
        "sleep",
        "30",
    ]);
    let (payload, pidfd) = receiver.join().unwrap();
    assert_eq!(payload, b"setns");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let fdinfo =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).unwrap();
    assert!(
        fdinfo.lines().any(|l| l == format!("Pid:\t{}", pid.trim())),
        "{fdinfo}"
    );
}
