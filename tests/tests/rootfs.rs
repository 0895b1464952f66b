//! The root filesystem: every mount kind, masked and read-only paths,
//! devices, hostname, sysctl, read-only root and --no-pivot. Needs root.

use lucid_tests::{assert_nothing_left, run_output, unique_id, Bundle, Runtime};
use serde_json::json;

/// Runs `script` in a container whose config `edit` adjusted; returns stdout.
fn run_script(script: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let rt = Runtime::new();
    let id = unique_id("rootfs");
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", script]);
    bundle.edit(edit);
    let out = run_output(&rt, &bundle, &id);
    assert_nothing_left(&rt, &id, bundle.path());
    out
}

fn mount_line(out: &str, target: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(&format!("{target} ")))
        .unwrap_or_else(|| panic!("no mount on {target} in {out}"))
        .to_owned()
}

#[test]
fn each_mount_kind_is_mounted_with_its_options() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("file"), "from the host").unwrap();
    std::fs::create_dir(host.path().join("sub")).unwrap();
    let script = "awk '{ print $2, $3, $4 }' /proc/self/mounts; \
         cat /rofile; echo; ls /rbind; \
         echo x > /rofile 2>/dev/null && echo rofile-writable; \
         echo y > /bind/new && echo bind-writable; \
         stat -c 'scratch-mode %a' /scratch; \
         ls /sys/fs/cgroup";
    let source = host.path().to_str().unwrap().to_owned();
    let out = run_script(script, |c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(json!({ "destination": "/bind", "type": "bind", "source": source, "options": ["bind", "rw"] }));
        mounts.push(json!({ "destination": "/rbind", "type": "none", "source": source, "options": ["rbind", "nosuid"] }));
        mounts.push(json!({ "destination": "/rofile", "type": "bind", "source": format!("{source}/file"), "options": ["bind", "ro"] }));
        mounts.push(json!({ "destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nodev", "mode=1777", "size=1m"] }));
    });
    assert!(mount_line(&out, "/proc").contains("proc"), "{out}");
    let sys = mount_line(&out, "/sys");
    assert!(sys.contains("sysfs") && sys.contains("ro,"), "{sys}");
    assert!(mount_line(&out, "/dev").contains("tmpfs"), "{out}");
    let pts = mount_line(&out, "/dev/pts");
    assert!(
        pts.contains("devpts") && pts.contains("ptmxmode=666"),
        "{pts}"
    );
    assert!(mount_line(&out, "/dev/shm").contains("tmpfs"), "{out}");
    assert!(mount_line(&out, "/dev/mqueue").contains("mqueue"), "{out}");
    assert!(
        mount_line(&out, "/sys/fs/cgroup").contains("tmpfs ro"),
        "{out}"
    );
    assert!(mount_line(&out, "/bind").contains("rw"), "{out}");
    assert!(mount_line(&out, "/rbind").contains("nosuid"), "{out}");
    assert!(mount_line(&out, "/rofile").contains("ro,"), "{out}");
    let scratch = mount_line(&out, "/scratch");
    assert!(
        scratch.contains("tmpfs") && scratch.contains("size=1024k") && scratch.contains("nodev"),
        "{scratch}"
    );
    assert!(out.contains("from the host"), "{out}");
    assert!(out.contains("sub"), "rbind content missing: {out}");
    assert!(!out.contains("rofile-writable"), "{out}");
    assert!(out.contains("bind-writable"), "{out}");
    assert_eq!(
        std::fs::read_to_string(host.path().join("new")).unwrap(),
        "y\n"
    );
    assert!(out.contains("scratch-mode 1777"), "{out}");
    // The cgroup mount shows a directory per v1 hierarchy of the host.
    for controller in ["memory", "pids", "devices"] {
        if std::path::Path::new("/sys/fs/cgroup")
            .join(controller)
            .exists()
        {
            assert!(
                out.lines().any(|l| l == controller),
                "no {controller} under /sys/fs/cgroup: {out}"
            );
        }
    }
}

#[test]
fn cgroup_mount_shows_the_container_cgroup() {
    let out = run_script("cat /sys/fs/cgroup/pids/cgroup.procs", |_| {});
    // Bound from the container's own cgroup: its only process is pid 1 of the
    // container (the shell exec'd into cat).
    assert_eq!(out.trim(), "1", "{out}");
}

#[test]
fn masked_paths_are_hidden_and_readonly_paths_are_read_only() {
    let out = run_script(
        "echo version=$(wc -c < /proc/version); echo acpi=$(ls /proc/acpi | wc -l); \
         echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo sys-writable; \
         echo 1 > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable; echo done",
        |c| {
            c["linux"]["maskedPaths"] =
                json!(["/proc/version", "/proc/acpi", "/proc/does-not-exist"]);
            c["linux"]["readonlyPaths"] = json!(["/proc/sys", "/proc/sysrq-trigger"]);
        },
    );
    assert!(out.contains("version=0"), "{out}");
    assert!(out.contains("acpi=0"), "{out}");
    assert!(!out.contains("sys-writable"), "{out}");
    assert!(!out.contains("sysrq-writable"), "{out}");
    assert!(out.contains("done"), "{out}");
}

#[test]
fn readonly_root_refuses_writes() {
    let out = run_script("touch /newfile 2>/dev/null && echo wrote; echo done", |c| {
        c["root"]["readonly"] = json!(true);
    });
    assert_eq!(out.trim(), "done");
    let out = run_script("touch /newfile && echo wrote", |c| {
        c["root"]["readonly"] = json!(false);
    });
    assert_eq!(out.trim(), "wrote");
}

#[test]
fn devices_and_dev_symlinks_exist() {
    let out = run_script(
        "for d in null zero full random urandom tty fuse; do stat -c \"$d %F %t:%T %a %u:%g\" /dev/$d; done; \
         for l in fd stdin ptmx; do readlink /dev/$l; done",
        |c| {
            c["linux"]["devices"] = json!([{
                "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                "fileMode": 0o640, "uid": 7, "gid": 8
            }]);
        },
    );
    for expected in [
        "null character special file 1:3 666 0:0",
        "zero character special file 1:5 666 0:0",
        "full character special file 1:7 666 0:0",
        "random character special file 1:8 666 0:0",
        "urandom character special file 1:9 666 0:0",
        "tty character special file 5:0 666 0:0",
        "fuse character special file a:e5 640 7:8",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in {out}");
    }
    assert!(
        out.contains("/proc/self/fd\n/proc/self/fd/0\npts/ptmx"),
        "{out}"
    );
}

#[test]
fn hostname_and_domainname_are_set() {
    let out = run_script("hostname; cat /proc/sys/kernel/domainname", |c| {
        c["hostname"] = json!("box-one");
        c["domainname"] = json!("example.test");
    });
    assert_eq!(out, "box-one\nexample.test\n");
}

#[test]
fn sysctls_are_written_in_the_container_namespace() {
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let out = run_script(
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni",
        |c| {
            c["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "1", "kernel.shmmni": "1234" });
        },
    );
    assert_eq!(out, "1\n1234\n");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host
    );
}

#[test]
fn no_pivot_runs_the_container_in_its_rootfs() {
    let rt = Runtime::new();
    let id = unique_id("nopivot");
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", "cat /marker; ls /"]);
    std::fs::write(bundle.rootfs().join("marker"), "inside").unwrap();
    bundle.edit(|_| {});
    let out = rt.lucid(&["run", "--no-pivot", "--bundle", bundle.arg(), &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("inside"), "{text}");
    assert!(text.contains("bin"), "{text}");
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn symlinked_mount_target_stays_inside_the_rootfs() {
    let rt = Runtime::new();
    let id = unique_id("symlink");
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", "ls /real"]);
    let outside = tempfile::tempdir().unwrap();
    // A rootfs symlink pointing at a host path; the mount must land inside the rootfs.
    std::os::unix::fs::symlink(outside.path(), bundle.rootfs().join("link")).unwrap();
    std::fs::create_dir_all(
        bundle
            .rootfs()
            .join(outside.path().strip_prefix("/").unwrap()),
    )
    .unwrap();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("payload"), "").unwrap();
    let src = source.path().to_str().unwrap().to_owned();
    bundle.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/link", "type": "bind", "source": src, "options": ["bind"]
        }));
        c["process"]["args"] = json!(["sh", "-c", format!("ls {}", outside.path().display())]);
    });
    let out = run_output(&rt, &bundle, &id);
    assert!(out.contains("payload"), "{out}");
    // The host directory the symlink names was not touched.
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_nothing_left(&rt, &id, bundle.path());
}
