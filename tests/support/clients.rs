//! What the podman and containerd tests share: image tarballs made from
//! busybox-static, the `lucid` the clients call, and the clean-up of what a
//! client may leave behind (mounts under its directories, a cgroup subtree
//! with processes in it).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{lucid_bin, make_rootfs};

/// The names of the spans `lucid trace` shows for container `id` under the
/// state root `root`; fails the test if it fails.
pub fn trace_span_names(root: &Path, id: &str) -> Vec<String> {
    let trace = Command::new(lucid_bin())
        .arg("--root")
        .arg(root)
        .args(["trace", "--format", "json", id])
        .output()
        .expect("running lucid trace");
    assert!(trace.status.success(), "{trace:?}");
    let json: serde_json::Value = serde_json::from_slice(&trace.stdout).expect("trace JSON");
    json["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect()
}

/// Fails the test unless `binary` is installed (by `cargo xtask setup`).
pub fn require_installed(binary: &str, package: &str) {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: install Debian's {package} (cargo xtask setup does)"
    );
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("running a set-up command");
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tarball of a busybox root filesystem (`podman import` takes it), in `dir`.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("busybox-rootfs");
    make_rootfs(&rootfs);
    let tar = dir.join("busybox.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    std::fs::remove_dir_all(&rootfs).expect("removing the staging rootfs");
    tar
}

fn sha256(file: &Path) -> String {
    run(Command::new("sha256sum").arg(file))
        .split_whitespace()
        .next()
        .expect("sha256sum prints the digest")
        .to_owned()
}

/// Writes `bytes` as a blob of the layout in `layout`; returns its digest and size.
fn blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let tmp = layout.join("blob.tmp");
    std::fs::write(&tmp, bytes).expect("writing a blob");
    let digest = sha256(&tmp);
    std::fs::rename(&tmp, layout.join("blobs/sha256").join(&digest)).expect("placing a blob");
    (format!("sha256:{digest}"), bytes.len())
}

/// An OCI image layout holding one image, `reference` (its
/// `org.opencontainers.image.ref.name`), whose single layer is the busybox
/// root filesystem and whose command is `sh`; tarred for `ctr image import`.
pub fn oci_layout_tar(dir: &Path, reference: &str) -> PathBuf {
    let layer_tar = busybox_tar(dir);
    let layout = dir.join("oci-layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("making the layout");
    let layer = std::fs::read(&layer_tar).expect("reading the layer");
    let (layer_digest, layer_size) = blob(&layout, &layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": ["PATH=/bin"], "Cmd": ["sh"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    let (config_digest, config_size) = blob(&layout, &serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest, "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest, "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = blob(&layout, &serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": { "org.opencontainers.image.ref.name": reference },
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .expect("writing index.json");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("writing oci-layout");
    let tar = dir.join("oci-layout.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    std::fs::remove_dir_all(&layout).expect("removing the staging layout");
    std::fs::remove_file(&layer_tar).expect("removing the layer tarball");
    tar
}

/// An executable in `dir` that runs `lucid --root ROOT` with
/// `LUCID_EBPF_PIN_ROOT` set to `pin_root`. podman gives conmon (and so the
/// runtime) none of its own environment, and podman 4.3 drops
/// `--runtime-flag` from the clean-up command conmon runs when a container
/// exits; the tests need both a state root and pins of their own.
pub fn lucid_with_roots(dir: &Path, root: &Path, pin_root: &Path) -> PathBuf {
    let script = dir.join("lucid");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh
LUCID_EBPF_PIN_ROOT='{}' exec '{}' --root '{}' \"$@\"\n",
            pin_root.display(),
            lucid_bin().display(),
            root.display()
        ),
    )
    .expect("writing the runtime script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("making the runtime script executable");
    script
}

/// Detaches every mount at or under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let dir = dir.to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == dir || p.starts_with(&format!("{dir}/")))
        .map(str::to_owned)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let c = std::ffi::CString::new(point.as_str()).expect("a path without NUL");
        // SAFETY: umount2 reads the NUL-terminated path only.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!("unmounting {point}: {}", std::io::Error::last_os_error());
        }
    }
}

/// The mounts at or under `dir` (for assertions that nothing is left).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == dir || p.starts_with(&format!("{dir}/")))
        .map(str::to_owned)
        .collect()
}

/// The directories of cgroup `path` (like `/lucid-test/podman-1`) in every
/// hierarchy that has it.
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(path.trim_start_matches('/')))
        .filter(|d| d.is_dir())
        .collect()
}

/// Kills every process in cgroup `path`'s subtree and removes the subtree
/// from every hierarchy, deepest first.
pub fn remove_cgroup_tree(path: &str) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), out);
            }
        }
        out.push(dir.to_path_buf());
    }
    let mut dirs = Vec::new();
    for top in cgroup_dirs(path) {
        walk(&top, &mut dirs);
    }
    for attempt in 0..50 {
        let mut left = false;
        for dir in &dirs {
            if !dir.exists() {
                continue;
            }
            for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|p| p.trim().parse::<i32>().ok())
            {
                // SAFETY: kill has no memory effects; the pid is in the test's cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            // A frozen cgroup's processes cannot die.
            let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
            let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
            if std::fs::remove_dir(dir).is_err() {
                left = true;
            }
        }
        if !left {
            return;
        }
        if attempt == 49 {
            eprintln!("cgroup {path} could not be removed everywhere");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
