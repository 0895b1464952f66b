//! `lucid features` is what clients read to learn what lucid implements; these
//! tests parse it and exercise every feature it claims, as root, with real
//! containers: each hook point, namespace, mount option, capability, seccomp
//! action, operator, architecture and flag is used by a container here, and
//! what it claims not to implement is refused by name. The few that need
//! more than a container (a seccomp notify listener, a pure v2 host) are
//! exercised by the test files named where they are checked.

use std::collections::BTreeSet;

use lucid_tests::{assert_nothing_left, run_output, unique_id, Bundle, Runtime};
use serde_json::{json, Value};

fn features(rt: &Runtime) -> Value {
    serde_json::from_str(&rt.ok(&["features"])).expect("lucid features prints JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// Fails unless `file` (a test source in this crate) uses `what`.
fn used_in(file: &str, what: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("a test source");
    assert!(
        text.contains(what),
        "{what} is claimed by lucid features but {file} does not exercise it"
    );
}

/// Creates the bundle's container, expecting it to be refused with every
/// part of `expected` in the message, and nothing left behind.
fn refused(rt: &Runtime, bundle: &Bundle, id: &str, expected: &[&str]) {
    let out = rt.lucid(&["create", "--bundle", bundle.arg(), id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{id} was created");
    for part in expected {
        assert!(err.contains(part), "no {part:?} in {err}");
    }
    assert_nothing_left(rt, id, bundle.path());
}

#[test]
fn the_document_has_runc_schema_and_versions() {
    let rt = Runtime::new();
    let f = features(&rt);
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert!(f["ociVersionMax"].as_str().unwrap().starts_with("1."));
    for key in ["hooks", "mountOptions"] {
        assert!(!strings(&f[key]).is_empty(), "{key}");
    }
    let linux = &f["linux"];
    for key in [
        "namespaces",
        "capabilities",
        "cgroup",
        "seccomp",
        "apparmor",
        "selinux",
        "intelRdt",
        "mountExtensions",
    ] {
        assert!(!linux[key].is_null(), "linux.{key} missing");
    }
    let seccomp = &linux["seccomp"];
    for key in [
        "actions",
        "operators",
        "archs",
        "knownFlags",
        "supportedFlags",
    ] {
        assert!(!strings(&seccomp[key]).is_empty(), "seccomp.{key}");
    }
    let known: BTreeSet<String> = strings(&seccomp["knownFlags"]).into_iter().collect();
    for flag in strings(&seccomp["supportedFlags"]) {
        assert!(known.contains(&flag), "{flag} supported but not known");
    }
    assert!(f["annotations"]["io.github.seccomp.libseccomp.version"]
        .as_str()
        .is_some_and(|v| v.starts_with("2.")));
}

#[test]
fn annotations_say_which_ebpf_features_work_here_and_the_syscall_hook() {
    let rt = Runtime::new();
    let annotations = features(&rt)["annotations"].clone();
    let text = |key: &str| {
        annotations[key]
            .as_str()
            .unwrap_or_else(|| panic!("no annotation {key}: {annotations}"))
            .to_owned()
    };
    // Every kernel lucid is tested on (this host and the guests of `cargo xtask vm`) takes a
    // program for every feature.
    for name in lucid_ebpf::feature::NAMES {
        let value = text(&format!("lucid.ebpf.{name}"));
        assert!(value.starts_with("on: "), "{name}: {value}");
    }
    let program = text("lucid.ebpf.syscalls");
    let hook = text("lucid.ebpf.syscalls.hook");
    let expected = if program.starts_with("on: syscall_exit_tp") {
        "tracepoint"
    } else {
        "fexit"
    };
    assert_eq!(hook, expected, "{program}");
}

#[test]
fn every_claimed_hook_point_runs() {
    let rt = Runtime::new();
    let kinds = strings(&features(&rt)["hooks"]);
    let id = unique_id("fhooks");
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("log");
    let mut bundle = Bundle::new(&rt, &id, &["true"]);
    let source = logdir.path().to_str().unwrap().to_owned();
    bundle.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/hooklog", "type": "bind", "source": source, "options": ["bind", "rw"]
        }));
        let mut hooks = serde_json::Map::new();
        for kind in &kinds {
            // startContainer runs after pivot_root: the log is the container's mount.
            let file = if kind == "startContainer" {
                "/hooklog/log".to_owned()
            } else {
                log.display().to_string()
            };
            hooks.insert(
                kind.clone(),
                json!([{ "path": "/bin/sh", "args": ["sh", "-c", format!("echo {kind} >> {file}")] }]),
            );
        }
        c["hooks"] = Value::Object(hooks);
    });
    run_output(&rt, &bundle, &id);
    let ran: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ran, kinds, "every claimed hook ran once, in order");
    assert_nothing_left(&rt, &id, bundle.path());
}

/// The `/proc/PID/ns` name of a spec namespace type.
fn ns_file(typ: &str) -> &str {
    match typ {
        "network" => "net",
        "mount" => "mnt",
        other => other,
    }
}

#[test]
fn every_claimed_namespace_is_made_new() {
    let rt = Runtime::new();
    let types = strings(&features(&rt)["linux"]["namespaces"]);
    let id = unique_id("fns");
    let script: String = types
        .iter()
        .map(|t| format!("echo {t} $(readlink /proc/self/ns/{}); ", ns_file(t)))
        .collect();
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", &script]);
    bundle.edit(|c| {
        c["linux"]["namespaces"] = types.iter().map(|t| json!({ "type": t })).collect();
        if types.iter().any(|t| t == "user") {
            c["linux"]["uidMappings"] =
                json!([{ "containerID": 0, "hostID": 200000, "size": 65536 }]);
            c["linux"]["gidMappings"] =
                json!([{ "containerID": 0, "hostID": 200000, "size": 65536 }]);
        }
    });
    let out = run_output(&rt, &bundle, &id);
    for typ in &types {
        let host = std::fs::read_link(format!("/proc/self/ns/{}", ns_file(typ)))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(typ))
            .unwrap_or_else(|| panic!("no {typ} in {out}"));
        let inside = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(inside.starts_with(ns_file(typ)), "{line}");
        assert_ne!(inside, host, "the {typ} namespace is the host's");
    }
    assert_nothing_left(&rt, &id, bundle.path());
}

/// What mountinfo shows for a flag option, where it shows one.
fn visible(option: &str) -> Option<(&'static str, bool)> {
    Some(match option {
        "ro" => ("ro", true),
        "rw" => ("rw", true),
        "nosuid" => ("nosuid", true),
        "suid" => ("nosuid", false),
        "nodev" => ("nodev", true),
        "dev" => ("nodev", false),
        "noexec" => ("noexec", true),
        "exec" => ("noexec", false),
        "noatime" => ("noatime", true),
        "atime" => ("noatime", false),
        "nodiratime" => ("nodiratime", true),
        "diratime" => ("nodiratime", false),
        "relatime" => ("relatime", true),
        // Without relatime or noatime the kernel makes a mount relatime
        // anyway, so only strictatime shows (as neither).
        "strictatime" => ("relatime", false),
        _ => return None,
    })
}

/// The flag an option clears, set first so that clearing shows.
fn opposite(option: &str) -> Option<&'static str> {
    Some(match option {
        "rw" => "ro",
        "suid" => "nosuid",
        "dev" => "nodev",
        "exec" => "noexec",
        "atime" => "noatime",
        "diratime" => "nodiratime",
        _ => return None,
    })
}

/// What mountinfo's optional fields show for a propagation option.
fn propagation(option: &str) -> Option<&'static str> {
    Some(match option {
        "shared" | "rshared" => "shared:",
        // A bind of the host's private /tmp has no peer group to be a slave
        // of: it ends with none (and no `shared:`), as with runc.
        "slave" | "rslave" => "",
        "unbindable" | "runbindable" => "unbindable",
        "private" | "rprivate" => "",
        _ => return None,
    })
}

#[test]
fn every_claimed_mount_option_is_taken_and_does_what_it_says() {
    let rt = Runtime::new();
    let options = strings(&features(&rt)["mountOptions"]);
    let id = unique_id("fmounts");
    let source = tempfile::tempdir().unwrap();
    let mut bundle = Bundle::new(&rt, &id, &["cat", "/proc/self/mountinfo"]);
    bundle.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        for (i, option) in options.iter().enumerate() {
            let destination = format!("/opt/m{i}");
            let mount = if option == "bind" || option == "rbind" || option == "remount" {
                // A remount changes a mount that exists: the bind made just before.
                let mut opts = vec!["bind".to_owned(), option.clone()];
                if option == "remount" {
                    opts.push("ro".into());
                }
                json!({ "destination": destination, "type": "bind",
                        "source": source.path(), "options": opts })
            } else if propagation(option).is_some() {
                json!({ "destination": destination, "type": "bind",
                        "source": source.path(), "options": ["rbind", option] })
            } else {
                let mut opts: Vec<&str> = opposite(option).into_iter().collect();
                opts.push(option);
                json!({ "destination": destination, "type": "tmpfs", "source": "tmpfs",
                        "options": opts })
            };
            mounts.push(mount);
        }
    });
    let out = run_output(&rt, &bundle, &id);
    for (i, option) in options.iter().enumerate() {
        let point = format!("/opt/m{i}");
        let line = out
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(point.as_str()))
            .unwrap_or_else(|| panic!("{option}: no mount at {point} in\n{out}"));
        let fields: Vec<&str> = line.split(' ').collect();
        let flags: Vec<&str> = fields[5].split(',').collect();
        if let Some((flag, present)) = visible(option) {
            assert_eq!(flags.contains(&flag), present, "{option}: {line}");
        }
        if option == "remount" {
            assert!(flags.contains(&"ro"), "remount,ro: {line}");
        }
        if let Some(tag) = propagation(option) {
            let dash = fields.iter().position(|f| *f == "-").unwrap();
            let optional = fields[6..dash].join(" ");
            if tag.is_empty() {
                assert!(optional.is_empty(), "{option}: {line}");
            } else {
                assert!(optional.contains(tag), "{option}: {line}");
            }
        }
    }
    assert_nothing_left(&rt, &id, bundle.path());
}

/// The capability bits the test (and so lucid) holds in its bounding set.
fn held_capabilities() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn every_claimed_capability_can_be_given_to_the_process() {
    let rt = Runtime::new();
    let caps = strings(&features(&rt)["linux"]["capabilities"]);
    // The list is in the kernel's numbering, so a name's place is its bit.
    for (name, bit) in [
        ("CAP_CHOWN", 0),
        ("CAP_SYS_ADMIN", 21),
        ("CAP_SYS_RESOURCE", 24),
        ("CAP_BPF", 39),
    ] {
        assert_eq!(caps.iter().position(|c| c == name), Some(bit), "{name}");
    }
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse::<usize>()
        .unwrap();
    assert!(
        caps.len() > last,
        "fewer claimed capabilities than the kernel has"
    );
    // This machine withholds some (CAP_SYS_RESOURCE): lucid can give only
    // what it holds, and gives every one of those.
    let held = held_capabilities();
    let given: Vec<&String> = caps
        .iter()
        .enumerate()
        .filter(|(bit, _)| *bit <= last && held & (1 << bit) != 0)
        .map(|(_, name)| name)
        .collect();
    let id = unique_id("fcaps");
    let mut bundle = Bundle::new(&rt, &id, &["grep", "^Cap", "/proc/self/status"]);
    bundle.edit(|c| {
        for set in [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ] {
            c["process"]["capabilities"][set] = json!(given);
        }
    });
    let out = run_output(&rt, &bundle, &id);
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = out.lines().find(|l| l.starts_with(set)).unwrap();
        let mask = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_eq!(mask, held, "{line}");
    }
    assert_nothing_left(&rt, &id, bundle.path());
}

/// Runs `sh -c SCRIPT` under a profile allowing everything but `kill` with
/// signal 0 (argument 1), whose rule has `action` and `op`/`value`; returns
/// the exit status and output.
fn under_kill_rule(rt: &Runtime, action: &str, arg: Value, script: &str) -> (i32, String) {
    let id = unique_id("fseccomp");
    let mut bundle = Bundle::new(rt, &id, &["sh", "-c", script]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["kill"], "action": action, "errnoRet": 1, "args": [arg] }]
        });
    });
    let out = rt.lucid(&["run", "--bundle", bundle.arg(), &id]);
    assert_nothing_left(rt, &id, bundle.path());
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const SIGNAL_ZERO: &str = "kill -0 $$ 2>/dev/null; echo zero=$?; kill -CONT $$; echo cont=$?";

#[test]
fn every_claimed_seccomp_action_does_what_it_says() {
    let rt = Runtime::new();
    let actions = strings(&features(&rt)["linux"]["seccomp"]["actions"]);
    let zero = json!({ "index": 1, "value": 0, "op": "SCMP_CMP_EQ" });
    for action in &actions {
        let expectation = match action.as_str() {
            // The default action of every profile here: everything runs.
            "SCMP_ACT_ALLOW" => (0, "zero=0\ncont=0\n"),
            "SCMP_ACT_ERRNO" => (0, "zero=1\ncont=0\n"),
            // No tracer: the call fails with ENOSYS, the process goes on.
            "SCMP_ACT_TRACE" => (0, "zero=1\ncont=0\n"),
            "SCMP_ACT_LOG" => (0, "zero=0\ncont=0\n"),
            // The shell dies of SIGSYS at the call.
            "SCMP_ACT_KILL"
            | "SCMP_ACT_KILL_THREAD"
            | "SCMP_ACT_KILL_PROCESS"
            | "SCMP_ACT_TRAP" => (128 + libc::SIGSYS, ""),
            "SCMP_ACT_NOTIFY" => {
                // Needs a listener on a socket: security.rs runs one.
                used_in("security.rs", "\"SCMP_ACT_NOTIFY\"");
                continue;
            }
            other => panic!("lucid claims {other}, which this test does not know"),
        };
        let rule_action = if action == "SCMP_ACT_ALLOW" {
            "SCMP_ACT_ERRNO"
        } else {
            action.as_str()
        };
        // ALLOW is the default action; its rule is an ERRNO on a signal never sent.
        let arg = if action == "SCMP_ACT_ALLOW" {
            json!({ "index": 1, "value": 63, "op": "SCMP_CMP_EQ" })
        } else {
            zero.clone()
        };
        let got = under_kill_rule(&rt, rule_action, arg, SIGNAL_ZERO);
        assert_eq!(
            (got.0, got.1.as_str()),
            expectation,
            "{action}: exit status and output"
        );
    }
}

#[test]
fn every_claimed_seccomp_operator_matches_what_it_says() {
    let rt = Runtime::new();
    let operators = strings(&features(&rt)["linux"]["seccomp"]["operators"]);
    for op in &operators {
        // Each rule matches signal 0 and not SIGCONT (18).
        let arg = match op.as_str() {
            "SCMP_CMP_EQ" => json!({ "index": 1, "value": 0, "op": op }),
            "SCMP_CMP_NE" => json!({ "index": 1, "value": 18, "op": op }),
            "SCMP_CMP_LT" => json!({ "index": 1, "value": 1, "op": op }),
            "SCMP_CMP_LE" => json!({ "index": 1, "value": 0, "op": op }),
            "SCMP_CMP_GT" => json!({ "index": 1, "value": 18, "op": "SCMP_CMP_GT" }),
            "SCMP_CMP_GE" => json!({ "index": 1, "value": 19, "op": op }),
            "SCMP_CMP_MASKED_EQ" => json!({ "index": 1, "value": 16, "valueTwo": 0, "op": op }),
            other => panic!("lucid claims {other}, which this test does not know"),
        };
        let (code, out) = under_kill_rule(&rt, "SCMP_ACT_ERRNO", arg, SIGNAL_ZERO);
        let expected = if op == "SCMP_CMP_GT" || op == "SCMP_CMP_GE" {
            // Greater than SIGCONT: neither 0 nor 18 matches.
            "zero=0\ncont=0\n"
        } else {
            "zero=1\ncont=0\n"
        };
        assert_eq!((code, out.as_str()), (0, expected), "{op}");
    }
    // GT and GE matched nothing above; here they match SIGCONT and not 0.
    for (op, value) in [("SCMP_CMP_GT", 17), ("SCMP_CMP_GE", 18)] {
        let arg = json!({ "index": 1, "value": value, "op": op });
        let (code, out) = under_kill_rule(&rt, "SCMP_ACT_ERRNO", arg, SIGNAL_ZERO);
        assert_eq!(
            (code, out.as_str()),
            (0, "zero=0\ncont=1\n"),
            "{op} {value}"
        );
    }
}

#[test]
fn every_claimed_architecture_and_supported_flag_loads() {
    let rt = Runtime::new();
    let seccomp = features(&rt)["linux"]["seccomp"].clone();
    let archs = strings(&seccomp["archs"]);
    let id = unique_id("farchs");
    for flag in strings(&seccomp["supportedFlags"]) {
        // The kernel takes this flag only beside a notify listener, which
        // security.rs runs with it.
        if flag == "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" {
            used_in("security.rs", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV");
            continue;
        }
        let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", SIGNAL_ZERO]);
        bundle.edit(|c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": archs,
                "flags": [flag],
                "syscalls": [{ "names": ["kill"], "action": "SCMP_ACT_ERRNO",
                               "args": [{ "index": 1, "value": 0, "op": "SCMP_CMP_EQ" }] }]
            });
        });
        assert_eq!(
            run_output(&rt, &bundle, &id),
            "zero=1\ncont=0\n",
            "{flag} with {archs:?}"
        );
        assert_nothing_left(&rt, &id, bundle.path());
    }
}

#[test]
fn lsms_and_cgroup_drivers_claimed_are_implemented_and_the_rest_refused_by_name() {
    let rt = Runtime::new();
    let f = features(&rt);
    let linux = &f["linux"];
    // AppArmor and SELinux are implemented; this host has neither, so the
    // implementation's answer here is the refusal naming the host.
    assert_eq!(linux["apparmor"]["enabled"], true);
    assert_eq!(linux["selinux"]["enabled"], true);
    used_in("security.rs", "AppArmor is not enabled");
    used_in("security.rs", "SELinux is not enabled");
    // cgroup v1 (this host's controllers) and v2 (a pure v2 view) have their files.
    assert_eq!(linux["cgroup"]["v1"], true);
    assert_eq!(linux["cgroup"]["v2"], true);
    used_in("cgroups.rs", "memory.limit_in_bytes");
    used_in("cgroups_v2.rs", "V2View");
    assert_eq!(linux["cgroup"]["rdma"], true);
    used_in("cgroups.rs", "rdma");
    // systemd is claimed absent: the flag is refused.
    assert_eq!(linux["cgroup"]["systemd"], false);
    let out = rt.lucid(&["--systemd-cgroup", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("systemd"));
    // What is claimed not enabled is refused by field, with nothing left.
    let unsupported = [
        (
            "intelRdt",
            linux["intelRdt"]["enabled"].clone(),
            "linux.intelRdt",
            json!({ "closID": "lucid" }),
        ),
        (
            "netDevices",
            linux["netDevices"]["enabled"].clone(),
            "linux.netDevices",
            json!({ "eth9": {} }),
        ),
    ];
    for (key, enabled, field, value) in unsupported {
        assert_eq!(enabled, false, "{key}");
        let id = unique_id("frefused");
        let mut bundle = Bundle::new(&rt, &id, &["true"]);
        let name = field.trim_start_matches("linux.").to_owned();
        bundle.edit(|c| c["linux"][name] = value);
        refused(
            &rt,
            &bundle,
            &id,
            &[field, "not supported by this version of lucid"],
        );
    }
    assert_eq!(linux["mountExtensions"]["idmap"]["enabled"], false);
    let id = unique_id("fidmap");
    let source = tempfile::tempdir().unwrap();
    let mut bundle = Bundle::new(&rt, &id, &["true"]);
    bundle.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/idmapped", "type": "bind", "source": source.path(),
            "options": ["bind", "idmap"]
        }));
    });
    refused(
        &rt,
        &bundle,
        &id,
        &["idmap", "not supported by this version of lucid"],
    );
}
