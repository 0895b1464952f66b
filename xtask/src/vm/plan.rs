//! What runs in a guest: a list of steps, chosen by the kind of guest and
//! the suite. A step is a shell line run in the guest under a timeout, an
//! integration test executable (built on the host, run with
//! `--test-threads=1` and name filters), or a reboot, after which the same
//! guest boots again and the steps after it run.
//!
//! Adding a step is one line in [`plan`]. Shell lines run as root in
//! `/tmp` with the guest's binaries first on `PATH` and these variables:
//! `LUCID_VM_TARGET` (the binaries, `target/<profile>` layout),
//! `LUCID_VM_WORKSPACE` (the workspace, read-only, at the host's path),
//! `LUCID_VM_RESULTS` (this guest's results directory, written back to the
//! host), `LUCID_VM_BLOCK_DEVICE` (a scratch virtio disk), `LUCID_VM_KERNEL`
//! and `LUCID_VM_GUEST`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// The kind of guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// busybox in an initramfs, no systemd: a bare pure-v2 host.
    Initramfs,
    /// Debian 12 with systemd, udev, D-Bus and podman: a production host.
    Systemd,
}

impl Guest {
    /// Every kind, in the order they run.
    pub const ALL: &'static [Guest] = &[Guest::Initramfs, Guest::Systemd];

    /// The name used with `--guest` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Guest::Initramfs => "initramfs",
            Guest::Systemd => "systemd",
        }
    }
}

/// Which steps: a focused subset for CI, or everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// A few tests of each file, to keep a TCG run short.
    Ci,
    /// Every test of each file.
    Full,
    /// The cost of the two syscall hooks (`ebpf/loader/examples/bench.rs --compare-hooks`,
    /// built with `--release`), and the features each kernel took.
    Bench,
}

/// What a step does.
#[derive(Clone, Debug)]
pub enum Action {
    /// A shell line.
    Shell(&'static str),
    /// An integration test of `tests/` (its `[[test]]` name), with name
    /// filters (none: every test in it).
    Test {
        test: &'static str,
        filters: &'static [&'static str],
    },
    /// Reboot the guest here; the steps after it run in the next boot.
    Reboot,
}

/// One step of a plan.
#[derive(Clone, Debug)]
pub struct Step {
    /// The name in the console and the summary.
    pub name: &'static str,
    /// What it does.
    pub action: Action,
    /// How long it may take in the guest (emulated: 10-40x the host's time).
    pub timeout_s: u32,
}

fn shell(name: &'static str, command: &'static str, timeout_s: u32) -> Step {
    Step {
        name,
        action: Action::Shell(command),
        timeout_s,
    }
}

fn test(
    name: &'static str,
    test: &'static str,
    filters: &'static [&'static str],
    timeout_s: u32,
) -> Step {
    Step {
        name,
        action: Action::Test { test, filters },
        timeout_s,
    }
}

fn reboot() -> Step {
    Step {
        name: "reboot",
        action: Action::Reboot,
        timeout_s: 0,
    }
}

/// Integration tests every kernel runs in the initramfs guest, with the `ci`
/// suite's filters (the `full` suite runs every test of each): the life
/// cycle, each limit enforced and every resource in its v2 file, the device
/// filter, eBPF counting (exact on every hook) and the features each kernel
/// took, the exporter (its feature and hook metrics), and the escapes.
const HOST_TESTS: &[(&str, &[&str], u32)] = &[
    (
        "lifecycle",
        &[
            "run_returns_the_container_exit_code",
            "create_start_state_list_delete",
        ],
        900,
    ),
    ("limits", &[], 1200),
    (
        "cgroups_v2",
        &["a_device_rule_denying_dev_null_fails_inside_the_container_only"],
        600,
    ),
    (
        "ebpf",
        &[
            "syscalls_counts_exactly",
            "exec_and_exit_events",
            "syscall_counting_switched_off",
            "without_bpf_lucid",
        ],
        900,
    ),
    (
        "features",
        &["annotations_say_which_ebpf_features_work_here"],
        600,
    ),
    (
        "exporter",
        &["incomplete_or_older_version_pins_do_not_stop_the_exporter"],
        900,
    ),
    (
        "escape",
        &[
            "the_container_cannot_write_lucid_through_the_init_process",
            "symlinked_mount_targets_stay_inside_the_rootfs",
        ],
        900,
    ),
];

/// The hooks benchmark; it exits 2, saying why, on a kernel that takes only one hook, which
/// is an answer here, not a failure.
const HOOKS_BENCH: &str =
    "cp \"$LUCID_VM_WORKSPACE/target/release/examples/bench\" /tmp/ebpf-bench \
    && /tmp/ebpf-bench --compare-hooks --rounds 11 --calls 200000; \
    rc=$?; [ $rc -eq 2 ] && exit 0; exit $rc";

/// The steps `guest` runs for `suite`.
pub fn plan(guest: Guest, suite: Suite) -> Vec<Step> {
    if suite == Suite::Bench {
        return vec![
            shell("lucid features", "lucid features", 120),
            shell("syscall hooks bench", HOOKS_BENCH, 1800),
        ];
    }
    let ci = suite == Suite::Ci;
    let mut steps = vec![
        shell("lucid --version", "lucid --version", 60),
        shell("lucid features", "lucid features", 120),
        shell(
            "busybox container with limits",
            "sh \"$LUCID_VM_RESULTS/container.sh\"",
            300,
        ),
    ];
    // The systemd guest is there for what needs systemd (the exporter's unit, podman on a
    // systemd host); in the ci suite the rest runs in the initramfs guest only.
    if guest == Guest::Initramfs || !ci {
        for &(name, filters, timeout_s) in HOST_TESTS {
            steps.push(test(
                name,
                name,
                if ci { filters } else { &[] },
                timeout_s * if ci { 1 } else { 3 },
            ));
        }
    }
    if guest == Guest::Systemd {
        if ci {
            steps.push(test("podman", "podman", &["run_rm_prints_the_output"], 900));
        } else {
            steps.push(test("podman", "podman", &[], 2400));
        }
        steps.push(shell(
            "install lucid-exporter.service",
            EXPORTER_INSTALL,
            120,
        ));
        steps.push(reboot());
        steps.push(shell("lucid-exporter up after reboot", EXPORTER_CHECK, 180));
    }
    steps
}

/// Installs the exporter as `deploy/`'s README says, enabled, not started:
/// the reboot after it shows whether it comes up by itself.
const EXPORTER_INSTALL: &str =
    "install -m 0755 \"$LUCID_VM_TARGET/lucid-exporter\" /usr/local/bin/lucid-exporter \
    && cp \"$LUCID_VM_WORKSPACE/deploy/lucid-exporter.service\" /etc/systemd/system/ \
    && systemctl daemon-reload && systemctl enable lucid-exporter";

/// After the reboot: the exporter is active and serves Prometheus's text format, with its
/// eBPF programs loaded and every feature's state.
const EXPORTER_CHECK: &str = "for i in $(seq 30); do \
      systemctl is-active -q lucid-exporter \
        && busybox wget -q -O - http://127.0.0.1:9464/metrics | grep -q '^lucid_exporter' && break; \
      sleep 2; \
    done; \
    systemctl --no-pager status lucid-exporter; \
    busybox wget -q -O /tmp/metrics http://127.0.0.1:9464/metrics \
      || { journalctl -b -u lucid-exporter --no-pager | tail -n 30; echo 'lucid-exporter is not serving /metrics after a reboot'; exit 1; }; \
    grep -E '^lucid_ebpf_(feature_enabled|syscall_hook_info)' /tmp/metrics; \
    grep -q '^# TYPE lucid_ebpf_up gauge$' /tmp/metrics && grep -q '^lucid_ebpf_up 1$' /tmp/metrics \
      || { echo 'the metrics lack lucid_ebpf_up 1 or its TYPE line'; exit 1; }";

/// The integration tests `steps` run.
pub fn tests(steps: &[Step]) -> Vec<&'static str> {
    let mut names = Vec::new();
    for step in steps {
        if let Action::Test { test, .. } = step.action {
            if !names.contains(&test) {
                names.push(test);
            }
        }
    }
    names
}

/// Quotes `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The guest's `plan.sh`: one `step` or `reboot_here` line per step
/// (`runner.sh` defines both). `executables` maps a test's name to its
/// executable on the host (copied to `$LUCID_VM_TARGET/deps/`).
pub fn render(steps: &[Step], executables: &BTreeMap<String, PathBuf>) -> Result<String> {
    let mut out =
        String::from("# Written by cargo xtask vm: one line per step, sourced by runner.sh.\n");
    for (i, step) in steps.iter().enumerate() {
        let command = match &step.action {
            Action::Reboot => {
                writeln!(out, "reboot_here {i}")?;
                continue;
            }
            Action::Shell(command) => (*command).to_owned(),
            Action::Test { test, filters } => {
                let exe = executables
                    .get(*test)
                    .with_context(|| format!("no executable was built for the test {test}"))?;
                let file = exe
                    .file_name()
                    .context("a test executable has a file name")?
                    .to_string_lossy();
                // cargo runs a test in its package's directory.
                let mut line = format!(
                    "cd \"$LUCID_VM_WORKSPACE/tests\" && exec \"$LUCID_VM_TARGET/deps/{file}\" --test-threads=1"
                );
                for filter in *filters {
                    line.push(' ');
                    line.push_str(&quote(filter));
                }
                line
            }
        };
        writeln!(
            out,
            "step {i} {} {} {}",
            quote(step.name),
            step.timeout_s,
            quote(&command)
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_names_only_known_tests_and_reboots_in_systemd_only() {
        for suite in [Suite::Ci, Suite::Full] {
            for guest in Guest::ALL {
                let steps = plan(*guest, suite);
                let reboots = steps
                    .iter()
                    .filter(|s| matches!(s.action, Action::Reboot))
                    .count();
                assert_eq!(reboots, usize::from(*guest == Guest::Systemd));
                for name in tests(&steps) {
                    assert!(
                        name == "podman" || HOST_TESTS.iter().any(|(t, _, _)| *t == name),
                        "{name}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_planned_test_is_a_test_target_of_the_tests_crate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tests");
        for guest in Guest::ALL {
            for name in tests(&plan(*guest, Suite::Full)) {
                assert!(
                    dir.join(format!("{name}.rs")).is_file(),
                    "tests/tests/ has no test {name}"
                );
            }
        }
    }

    #[test]
    fn render_quotes_commands_and_names_the_copied_executable() {
        let steps = vec![
            shell("it's", "echo 'a b'", 5),
            test("t", "lifecycle", &["x y"], 9),
            reboot(),
        ];
        let exes = BTreeMap::from([(
            "lifecycle".to_owned(),
            PathBuf::from("/w/target/debug/deps/lifecycle-abc"),
        )]);
        let text = render(&steps, &exes).unwrap();
        assert!(
            text.contains(r"step 0 'it'\''s' 5 'echo '\''a b'\'''"),
            "{text}"
        );
        assert!(
            text.contains("deps/lifecycle-abc\" --test-threads=1 '\\''x y'\\''"),
            "{text}"
        );
        assert!(text.contains("reboot_here 2"), "{text}");
    }
}
