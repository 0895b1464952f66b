//! The container's process: args, env, cwd, user and groups, rlimits,
//! capabilities, noNewPrivileges, OOM score, umask, preserved descriptors and
//! the session keyring. Needs root.

use lucid_tests::{assert_nothing_left, run_output, unique_id, Bundle, Runtime};
use serde_json::json;

fn run_script(script: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let rt = Runtime::new();
    let id = unique_id("proc");
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", script]);
    bundle.edit(edit);
    let out = run_output(&rt, &bundle, &id);
    assert_nothing_left(&rt, &id, bundle.path());
    out
}

fn status_field(out: &str, field: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {out}"))
        .trim()
        .to_owned()
}

#[test]
fn env_cwd_and_args_reach_the_process() {
    let out = run_script("pwd; echo \"$GREETING\" \"$HOME\" \"$0\"", |c| {
        c["process"]["env"] = json!(["PATH=/bin", "GREETING=hello world"]);
        c["process"]["cwd"] = json!("/tmp");
    });
    assert_eq!(out, "/tmp\nhello world /root sh\n");
}

#[test]
fn user_groups_and_home_are_applied() {
    let out = run_script(
        "grep -E '^(Uid|Gid|Groups):' /proc/self/status; echo home=$HOME; umask",
        |c| {
            c["process"]["user"] =
                json!({ "uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 0o027 });
        },
    );
    assert_eq!(status_field(&out, "Uid"), "1000\t1000\t1000\t1000");
    assert_eq!(status_field(&out, "Gid"), "1000\t1000\t1000\t1000");
    assert_eq!(status_field(&out, "Groups"), "10 20");
    assert!(out.contains("home=/home/user"), "{out}");
    assert!(out.trim_end().ends_with("0027"), "{out}");
}

#[test]
fn rlimits_are_set() {
    let out = run_script("ulimit -Sn; ulimit -Hn; ulimit -Ss", |c| {
        c["process"]["rlimits"] = json!([
            { "type": "RLIMIT_NOFILE", "soft": 512, "hard": 1000 },
            { "type": "RLIMIT_STACK", "soft": 4194304, "hard": 8388608 }
        ]);
    });
    assert_eq!(out, "512\n1000\n4096\n");
}

/// The bit of each capability in a /proc/PID/status mask.
fn mask(caps: &[u32]) -> String {
    format!("{:016x}", caps.iter().fold(0u64, |m, c| m | 1 << c))
}

#[test]
fn capability_sets_match_the_spec() {
    const KILL: u32 = 5;
    const NET_BIND_SERVICE: u32 = 10;
    const NET_RAW: u32 = 13;
    const AUDIT_WRITE: u32 = 29;
    let out = run_script(
        "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status",
        |c| {
            c["process"]["capabilities"] = json!({
                "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_AUDIT_WRITE"],
                "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"],
                "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "inheritable": ["CAP_KILL"],
                "ambient": ["CAP_KILL"]
            });
        },
    );
    assert_eq!(
        status_field(&out, "CapBnd"),
        mask(&[KILL, NET_BIND_SERVICE, NET_RAW, AUDIT_WRITE])
    );
    // Root's exec recomputes effective and permitted from the bounding set;
    // the runtime's sets are what a non-root user keeps (tested below).
    assert_eq!(status_field(&out, "CapInh"), mask(&[KILL]));
    assert_eq!(status_field(&out, "CapAmb"), mask(&[KILL]));
}

#[test]
fn non_root_user_keeps_exactly_the_ambient_capabilities() {
    const KILL: u32 = 5;
    const NET_BIND_SERVICE: u32 = 10;
    let out = run_script("grep -E '^Cap(Prm|Eff|Amb):' /proc/self/status", |c| {
        c["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        c["process"]["capabilities"] = json!({
            "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"]
        });
    });
    assert_eq!(status_field(&out, "CapAmb"), mask(&[NET_BIND_SERVICE]));
    assert_eq!(status_field(&out, "CapPrm"), mask(&[NET_BIND_SERVICE]));
    assert_eq!(status_field(&out, "CapEff"), mask(&[NET_BIND_SERVICE]));
    let _ = KILL;
}

#[test]
fn no_new_privileges_and_oom_score_adj_are_set() {
    let out = run_script(
        "grep NoNewPrivs /proc/self/status; cat /proc/self/oom_score_adj",
        |c| {
            c["process"]["noNewPrivileges"] = json!(true);
            c["process"]["oomScoreAdj"] = json!(500);
        },
    );
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
    assert!(out.trim_end().ends_with("500"), "{out}");
    let out = run_script("grep NoNewPrivs /proc/self/status", |c| {
        c["process"]["noNewPrivileges"] = json!(false);
    });
    assert_eq!(status_field(&out, "NoNewPrivs"), "0");
}

#[test]
fn preserved_descriptors_reach_the_process_and_others_do_not() {
    use std::os::unix::process::CommandExt;
    let rt = Runtime::new();
    let id = unique_id("fds");
    let bundle = Bundle::new(&rt, &id, &[
            "sh",
            "-c",
            // `[` is a shell builtin: it opens no descriptor of its own.
            "cat <&3; [ -e /proc/self/fd/3 ] && echo fd3-open; [ -e /proc/self/fd/4 ] && echo fd4-open; true",
        ]);
    let payload = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(payload.path(), "preserved\n").unwrap();
    let file = std::fs::File::open(payload.path()).unwrap();
    let extra = std::fs::File::open(payload.path()).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
    let extra_raw = std::os::fd::AsRawFd::as_raw_fd(&extra);
    let mut command = rt.command();
    command.args(["run", "--preserve-fds", "1", "--bundle", bundle.arg(), &id]);
    // SAFETY: dup2 is async-signal-safe; fds 3 and 4 become the payload and a
    // descriptor that must not be passed on.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 || libc::dup2(extra_raw, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("preserved\n"), "{text}");
    assert!(text.contains("fd3-open"), "{text}");
    assert!(
        !text.contains("fd4-open"),
        "descriptor 4 leaked into the container: {text}"
    );
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn new_session_keyring_unless_asked_not_to() {
    let rt = Runtime::new();
    let id = unique_id("keyring");
    let mut bundle = Bundle::new(&rt, &id, &["cat", "/proc/self/keys"]);
    bundle.edit(|c| {
        // /proc/keys is masked by default; the process's own keys are not.
        c["process"]["args"] = json!(["sh", "-c", "cat /proc/keys"]);
        c["linux"]["maskedPaths"] = json!([]);
    });
    let out = run_output(&rt, &bundle, &id);
    assert!(
        out.contains(&id),
        "no keyring named after the container: {out}"
    );
    let other = unique_id("nokeyring");
    let mut plain = Bundle::new(&rt, &other, &["sh", "-c", "cat /proc/keys"]);
    plain.edit(|c| c["linux"]["maskedPaths"] = json!([]));
    let out = rt.lucid(&["run", "--no-new-keyring", "--bundle", plain.arg(), &other]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&other));
    assert_nothing_left(&rt, &id, bundle.path());
    assert_nothing_left(&rt, &other, plain.path());
}
