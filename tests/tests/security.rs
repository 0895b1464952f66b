//! Capabilities, seccomp (with a real notify listener), AppArmor and SELinux
//! labels, the session keyring, and the bad input around them, through the
//! `lucid` binary with busybox containers. Needs root.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use lucid_tests::{assert_nothing_left, run_output, unique_id, Bundle, Runtime};
use serde_json::{json, Value};

/// Capability numbers of the capabilities these tests use.
fn cap_bit(name: &str) -> u64 {
    let n = match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_KILL" => 5,
        "CAP_SETGID" => 6,
        "CAP_SETUID" => 7,
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_RAW" => 13,
        other => panic!("the test does not know {other}"),
    };
    1 << n
}

fn mask(names: &[&str]) -> u64 {
    names.iter().map(|n| cap_bit(n)).fold(0, |a, b| a | b)
}

/// The `Cap*:` lines of /proc/self/status as numbers.
fn cap_lines(output: &str) -> std::collections::HashMap<String, u64> {
    output
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(":\t")?;
            name.starts_with("Cap")
                .then(|| (name.to_owned(), u64::from_str_radix(value.trim(), 16).ok()))
                .and_then(|(n, v)| Some((n, v?)))
        })
        .collect()
}

#[test]
fn root_process_gets_exactly_the_capability_sets_of_the_spec() {
    let rt = Runtime::new();
    let id = unique_id("caps-root");
    let mut bundle = Bundle::new(&rt, &id, &["grep", "Cap", "/proc/self/status"]);
    let all = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SETUID",
        "CAP_SETGID",
    ];
    bundle.edit(|c| {
        c["process"]["capabilities"] = json!({
            "bounding": all, "effective": all, "permitted": all,
            "inheritable": ["CAP_KILL"], "ambient": []
        });
    });
    let caps = cap_lines(&run_output(&rt, &bundle, &id));
    assert_eq!(caps["CapBnd"], mask(&all), "{caps:x?}");
    assert_eq!(caps["CapPrm"], mask(&all), "{caps:x?}");
    assert_eq!(caps["CapEff"], mask(&all), "{caps:x?}");
    assert_eq!(caps["CapInh"], mask(&["CAP_KILL"]), "{caps:x?}");
    assert_eq!(caps["CapAmb"], 0, "{caps:x?}");
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn unprivileged_user_keeps_only_its_ambient_capabilities() {
    let rt = Runtime::new();
    let id = unique_id("caps-user");
    let mut bundle = Bundle::new(&rt, &id, &["grep", "Cap", "/proc/self/status"]);
    let bounding = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let held = ["CAP_KILL", "CAP_NET_BIND_SERVICE"];
    bundle.edit(|c| {
        c["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        c["process"]["capabilities"] = json!({
            "bounding": bounding, "effective": held, "permitted": held,
            "inheritable": held, "ambient": ["CAP_NET_BIND_SERVICE"]
        });
    });
    let caps = cap_lines(&run_output(&rt, &bundle, &id));
    // Across exec a non-root process keeps what is ambient, nothing more.
    let ambient = mask(&["CAP_NET_BIND_SERVICE"]);
    assert_eq!(caps["CapBnd"], mask(&bounding), "{caps:x?}");
    assert_eq!(caps["CapInh"], mask(&held), "{caps:x?}");
    assert_eq!(caps["CapPrm"], ambient, "{caps:x?}");
    assert_eq!(caps["CapEff"], ambient, "{caps:x?}");
    assert_eq!(caps["CapAmb"], ambient, "{caps:x?}");
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn a_dropped_net_raw_cannot_open_a_raw_socket() {
    let rt = Runtime::new();
    // arping opens an AF_PACKET socket, which needs CAP_NET_RAW.
    let probe = ["sh", "-c", "arping -c 1 -I lo 127.0.0.1 2>&1; true"];
    let id = unique_id("noraw");
    let bundle = Bundle::new(&rt, &id, &probe);
    let without = run_output(&rt, &bundle, &id);
    assert!(
        without.contains("socket: Operation not permitted"),
        "without CAP_NET_RAW: {without}"
    );
    let id2 = unique_id("raw");
    let mut bundle2 = Bundle::new(&rt, &id2, &probe);
    bundle2.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_NET_RAW"));
        }
    });
    let with = run_output(&rt, &bundle2, &id2);
    assert!(
        !with.contains("Operation not permitted") && with.contains("lo"),
        "with CAP_NET_RAW: {with}"
    );
}

#[test]
fn errno_rule_fails_the_call_with_its_errno() {
    let rt = Runtime::new();
    let id = unique_id("sc-errno");
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", "mkdir /tmp/d 2>&1; echo rc=$?"]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [{
                "names": ["mkdir", "mkdirat", "this_syscall_does_not_exist"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": libc::EXDEV
            }]
        });
    });
    let out = run_output(&rt, &bundle, &id);
    assert!(out.contains("Invalid cross-device link"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn argument_condition_matches_only_its_argument() {
    let rt = Runtime::new();
    let id = unique_id("sc-arg");
    // kill(pid, SIGUSR1) is refused, kill(pid, 0) is not.
    let mut bundle = Bundle::new(
        &rt,
        &id,
        &[
            "sh",
            "-c",
            "kill -0 $$; echo zero=$?; kill -USR1 $$ 2>&1; echo usr1=$?",
        ],
    );
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{
                "names": ["kill"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": libc::EACCES,
                "args": [{ "index": 1, "value": libc::SIGUSR1, "op": "SCMP_CMP_EQ" }]
            }]
        });
    });
    let out = run_output(&rt, &bundle, &id);
    assert!(out.contains("zero=0"), "{out}");
    assert!(
        out.contains("Permission denied") && out.contains("usr1=1"),
        "{out}"
    );
}

#[test]
fn default_errno_ret_answers_every_syscall_not_allowed() {
    let rt = Runtime::new();
    let id = unique_id("sc-default");
    // Allow every syscall this architecture has but mkdir and mkdirat.
    let allowed: Vec<String> = (0..1024)
        .filter_map(|n| libseccomp::ScmpSyscall::from(n).get_name().ok())
        .filter(|name| name != "mkdir" && name != "mkdirat")
        .collect();
    assert!(
        allowed.len() > 300,
        "libseccomp knows {} syscalls",
        allowed.len()
    );
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", "mkdir /tmp/d 2>&1; echo rc=$?"]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": libc::ENOSYS,
            "syscalls": [{ "names": allowed, "action": "SCMP_ACT_ALLOW" }]
        });
    });
    let out = run_output(&rt, &bundle, &id);
    assert!(out.contains("Function not implemented"), "{out}");
}

#[test]
fn filter_without_no_new_privileges_loads_and_leaves_no_capability_behind() {
    let rt = Runtime::new();
    let id = unique_id("sc-nnp");
    let mut bundle = Bundle::new(
        &rt,
        &id,
        &[
            "sh",
            "-c",
            "grep -E 'CapEff|Seccomp:|NoNewPrivs' /proc/self/status; mkdir /tmp/d 2>&1; true",
        ],
    );
    bundle.edit(|c| {
        c["process"]["noNewPrivileges"] = json!(false);
        c["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        c["process"]["capabilities"] = json!({ "bounding": ["CAP_KILL"] });
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EXDEV }]
        });
    });
    let out = run_output(&rt, &bundle, &id);
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    // CAP_SYS_ADMIN, kept only to load the filter, is gone.
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("Invalid cross-device link"), "{out}");
}

/// A seccomp agent: accepts one connection on `path`, takes the notify fd
/// and the state, and answers every notified call with `answer`.
fn listener(path: &Path, answer: i64) -> std::thread::JoinHandle<(Value, Vec<String>)> {
    let socket = UnixListener::bind(path).expect("binding the listener socket");
    std::thread::spawn(move || serve(&socket, answer))
}

/// Serves one connection: the state, then the notified calls until the
/// filtered processes are gone.
fn serve(socket: &UnixListener, answer: i64) -> (Value, Vec<String>) {
    let (conn, _) = socket.accept().expect("the runtime connects");
    let (state, fd) = recv_with_fd(&conn);
    let state: Value = serde_json::from_slice(&state).expect("the state is JSON");
    let mut calls = Vec::new();
    loop {
        let mut pfd = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(10_000u16)) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => break,
        }
        if pfd[0]
            .revents()
            .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP))
        {
            break;
        }
        let Ok(req) = libseccomp::ScmpNotifReq::receive(fd.as_raw_fd()) else {
            break;
        };
        calls.push(req.data.syscall.get_name().unwrap_or_default());
        let resp = libseccomp::ScmpNotifResp::new_val(
            req.id,
            answer,
            libseccomp::ScmpNotifRespFlags::empty(),
        );
        let _ = resp.respond(fd.as_raw_fd());
        // Once answered, an exec'd process's filter has done its part.
        if state["state"]["status"] == "running" {
            break;
        }
    }
    (state, calls)
}

fn recv_with_fd(conn: &std::os::unix::net::UnixStream) -> (Vec<u8>, OwnedFd) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; 65536];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .expect("receiving the notify fd");
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
        fd.expect("a descriptor came with the state"),
    )
}

#[test]
fn notify_listener_gets_the_fd_and_answers_the_call() {
    let rt = Runtime::new();
    let id = unique_id("sc-notify");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let agent = listener(&socket, 4242);
    // The shell learns $PPID from getppid(), which the agent answers.
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", "echo ppid=$PPID"]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": socket,
            "listenerMetadata": "test-metadata",
            // A notified call waits killably once the agent has received it.
            "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_NOTIFY" }]
        });
    });
    let out = run_output(&rt, &bundle, &id);
    let (state, calls) = agent.join().expect("the agent thread ends");
    assert!(out.contains("ppid=4242"), "{out}");
    assert!(calls.iter().any(|c| c == "getppid"), "{calls:?}");
    assert_eq!(state["fds"], json!(["seccompFd"]), "{state}");
    assert_eq!(state["metadata"], "test-metadata", "{state}");
    assert_eq!(state["state"]["id"], id.as_str(), "{state}");
    assert_eq!(state["state"]["status"], "creating", "{state}");
    assert!(state["pid"].as_i64().unwrap() > 0, "{state}");
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn missing_notify_listener_fails_create_and_leaves_nothing() {
    let rt = Runtime::new();
    let id = unique_id("sc-nolistener");
    let mut bundle = Bundle::new(&rt, &id, &["true"]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/nonexistent/agent.sock",
            "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_NOTIFY" }]
        });
    });
    let out = rt.lucid(&["create", "--bundle", bundle.arg(), &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/nonexistent/agent.sock"), "{err}");
    assert_nothing_left(&rt, &id, bundle.path());
}

/// `lucid create` with the edited bundle must fail, naming `expected`, and
/// leave nothing.
fn refused(edit: impl FnOnce(&mut Value), expected: &[&str]) {
    let rt = Runtime::new();
    let id = unique_id("refused");
    let mut bundle = Bundle::new(&rt, &id, &["true"]);
    bundle.edit(edit);
    let out = rt.lucid(&["create", "--bundle", bundle.arg(), &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for text in expected {
        assert!(err.contains(text), "expected {text:?} in: {err}");
    }
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn unknown_seccomp_action_is_refused_by_field() {
    refused(
        |c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["getcwd"], "action": "SCMP_ACT_EXPLODE" }]
            })
        },
        &["linux.seccomp.syscalls[0].action", "SCMP_ACT_EXPLODE"],
    );
}

#[test]
fn unknown_seccomp_architecture_is_refused_by_field() {
    refused(
        |c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_PDP11"]
            })
        },
        &["linux.seccomp.architectures[1]", "SCMP_ARCH_PDP11"],
    );
}

#[test]
fn notify_without_listener_path_is_refused() {
    refused(
        |c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_NOTIFY" }]
            })
        },
        &["linux.seccomp.listenerPath"],
    );
}

#[test]
fn unknown_capability_is_refused_by_field() {
    refused(
        |c| {
            c["process"]["capabilities"]["effective"]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_TIME_TRAVEL"))
        },
        &["process.capabilities.effective", "CAP_TIME_TRAVEL"],
    );
}

/// The LSM tests assume what this host is: neither AppArmor nor SELinux.
fn require_no_lsm() {
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.starts_with('Y'));
    assert!(
        !apparmor,
        "this test proves the refusal on a host without AppArmor, but AppArmor is enabled here"
    );
    assert!(
        !Path::new("/sys/fs/selinux/enforce").exists(),
        "this test proves the refusal on a host without SELinux, but selinuxfs is mounted here"
    );
}

#[test]
fn apparmor_profile_without_apparmor_is_refused() {
    require_no_lsm();
    refused(
        |c| c["process"]["apparmorProfile"] = json!("lucid-test-profile"),
        &["process.apparmorProfile", "AppArmor is not enabled"],
    );
}

#[test]
fn selinux_labels_without_selinux_are_refused() {
    require_no_lsm();
    refused(
        |c| c["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0"),
        &["process.selinuxLabel", "SELinux is not enabled"],
    );
    refused(
        |c| c["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0"),
        &["linux.mountLabel", "SELinux is not enabled"],
    );
}

#[test]
fn session_keyring_is_new_unless_asked_not_to() {
    let rt = Runtime::new();
    let id = unique_id("keyring");
    // Exits 0 whatever grep finds, so a failed run is told from an absent keyring.
    let probe = ["sh", "-c", "grep keyring /proc/keys; echo probed"];
    let mut bundle = Bundle::new(&rt, &id, &probe);
    // /proc/keys is masked by the default spec.
    bundle.edit(|c| {
        c["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .retain(|p| p != "/proc/keys")
    });
    let out = run_output(&rt, &bundle, &id);
    // runc's name: `_ses.<id>` (a name starting with a dot is refused).
    assert!(
        out.lines().any(|l| l.contains(&format!(" _ses.{id}: "))),
        "no session keyring named after the container: {out}"
    );
    let id2 = unique_id("nokeyring");
    let mut bundle2 = Bundle::new(&rt, &id2, &probe);
    bundle2.edit(|c| {
        c["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .retain(|p| p != "/proc/keys")
    });
    let out = rt.lucid(&["run", "--no-new-keyring", "--bundle", bundle2.arg(), &id2]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("probed"),
        "run --no-new-keyring failed ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(&id2), "{text}");
}

#[test]
fn pidfd_socket_receives_a_pidfd_of_the_init_process() {
    let rt = Runtime::new();
    let id = unique_id("pidfd");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pidfd.sock");
    let socket = UnixListener::bind(&path).unwrap();
    let receiver = std::thread::spawn(move || {
        let (conn, _) = socket.accept().unwrap();
        recv_with_fd(&conn)
    });
    let bundle = Bundle::new(&rt, &id, &["sleep", "30"]);
    rt.ok(&[
        "create",
        "--pidfd-socket",
        path.to_str().unwrap(),
        "--bundle",
        bundle.arg(),
        &id,
    ]);
    let (payload, pidfd) = receiver.join().unwrap();
    assert_eq!(payload, b"standard");
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let mut fdinfo = String::new();
    std::fs::File::open(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
        .unwrap()
        .read_to_string(&mut fdinfo)
        .unwrap();
    assert!(
        fdinfo.lines().any(|l| l == format!("Pid:\t{pid}")),
        "the pidfd is not the init's: {fdinfo}"
    );
    // Killing through the pidfd reaches the container.
    // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    assert_eq!(ret, 0);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn exec_hands_its_own_notify_fd_to_the_listener() {
    let rt = Runtime::new();
    let id = unique_id("sc-notify-exec");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let socket = std::sync::Arc::new(UnixListener::bind(&path).unwrap());
    let for_init = socket.clone();
    let init_agent = std::thread::spawn(move || serve(&for_init, 1));
    let mut bundle = Bundle::new(&rt, &id, &["sleep", "60"]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": path,
            "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_NOTIFY" }]
        });
    });
    rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    let exec_agent = std::thread::spawn(move || serve(&socket, 4343));
    let out = rt.ok(&["exec", &id, "sh", "-c", "echo ppid=$PPID"]);
    let (state, calls) = exec_agent.join().unwrap();
    assert!(out.contains("ppid=4343"), "{out}");
    assert!(calls.iter().any(|c| c == "getppid"), "{calls:?}");
    assert_eq!(state["state"]["status"], "running", "{state}");
    assert_eq!(state["state"]["id"], id.as_str(), "{state}");
    rt.ok(&["delete", "--force", &id]);
    let (init_state, _) = init_agent.join().unwrap();
    assert_eq!(init_state["state"]["status"], "creating", "{init_state}");
    assert_nothing_left(&rt, &id, bundle.path());
}
