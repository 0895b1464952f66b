//! OCI lifecycle hooks: each runs with the container's state on stdin, its
//! own args and env, and an optional timeout after which it is killed.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;
use serde::Serialize;

use crate::state::Status;

/// The hook points of the OCI runtime spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// Deprecated; runs with createRuntime, in the runtime's namespaces.
    Prestart,
    /// After the environment is made, before pivot_root; runtime namespaces.
    CreateRuntime,
    /// Same moment, inside the container's namespaces.
    CreateContainer,
    /// At start, inside the container, before the user's process.
    StartContainer,
    /// After the user's process started; runtime namespaces.
    Poststart,
    /// After the container is deleted; runtime namespaces.
    Poststop,
}

impl HookKind {
    /// Every hook point, in the order of a container's life.
    pub const ALL: [HookKind; 6] = [
        HookKind::Prestart,
        HookKind::CreateRuntime,
        HookKind::CreateContainer,
        HookKind::StartContainer,
        HookKind::Poststart,
        HookKind::Poststop,
    ];

    /// The spec's name for the hook point (also the span suffix).
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }

    /// The span of one hook of this kind (`hook.createRuntime`, …).
    pub fn span_name(self) -> &'static str {
        match self {
            HookKind::Prestart => "hook.prestart",
            HookKind::CreateRuntime => "hook.createRuntime",
            HookKind::CreateContainer => "hook.createContainer",
            HookKind::StartContainer => "hook.startContainer",
            HookKind::Poststart => "hook.poststart",
            HookKind::Poststop => "hook.poststop",
        }
    }

    /// The hooks of this kind in a spec.
    #[allow(deprecated)] // prestart is deprecated but still part of the spec
    pub fn hooks(self, spec: &oci_spec::runtime::Spec) -> Vec<Hook> {
        let Some(hooks) = spec.hooks() else {
            return Vec::new();
        };
        let list = match self {
            HookKind::Prestart => hooks.prestart(),
            HookKind::CreateRuntime => hooks.create_runtime(),
            HookKind::CreateContainer => hooks.create_container(),
            HookKind::StartContainer => hooks.start_container(),
            HookKind::Poststart => hooks.poststart(),
            HookKind::Poststop => hooks.poststop(),
        };
        list.clone().unwrap_or_default()
    }
}

/// A hook that failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// It could not be started.
    #[error("{kind} hook {path}: {cause}")]
    Spawn {
        /// The hook point.
        kind: &'static str,
        /// The hook's program.
        path: String,
        /// The failure.
        cause: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("{kind} hook {path} failed ({status}){output}")]
    Failed {
        /// The hook point.
        kind: &'static str,
        /// The hook's program.
        path: String,
        /// How it ended.
        status: String,
        /// What it wrote, if anything (`: …`).
        output: String,
    },
    /// A hook run inside the container failed (its message, as reported by the init process).
    #[error("{0}")]
    InContainer(String),
    /// It ran past its timeout and was killed.
    #[error("{kind} hook {path} timed out after {seconds}s and was killed")]
    TimedOut {
        /// The hook point.
        kind: &'static str,
        /// The hook's program.
        path: String,
        /// The timeout.
        seconds: i64,
    },
}

/// The state a hook reads on stdin (the OCI runtime spec's state).
#[derive(Debug, Clone, Serialize)]
pub struct HookState<'a> {
    /// The OCI version.
    #[serde(rename = "ociVersion")]
    pub oci_version: &'a str,
    /// The container ID.
    pub id: &'a str,
    /// The status at this hook point.
    pub status: Status,
    /// The init pid (absent for poststop once it is gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The bundle.
    pub bundle: &'a std::path::Path,
    /// The annotations.
    #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
    pub annotations: &'a std::collections::HashMap<String, String>,
}

impl<'a> HookState<'a> {
    /// The state of a container that has one on disk, at `status`: the init
    /// pid unless it is `stopped`.
    pub fn of_container(state: &'a crate::state::ContainerState, status: Status) -> Self {
        HookState {
            oci_version: &state.oci_version,
            id: &state.id,
            status,
            pid: (status != Status::Stopped).then_some(state.pid),
            bundle: &state.bundle,
            annotations: &state.annotations,
        }
    }

    /// The state of a container still being made from `spec` (the pid once
    /// its init process exists).
    pub fn of_spec(
        spec: &'a oci_spec::runtime::Spec,
        id: &'a str,
        bundle: &'a std::path::Path,
        status: Status,
        pid: Option<i32>,
    ) -> Self {
        static NONE: std::sync::LazyLock<std::collections::HashMap<String, String>> =
            std::sync::LazyLock::new(Default::default);
        HookState {
            oci_version: spec.version(),
            id,
            status,
            pid,
            bundle,
            annotations: spec.annotations().as_ref().unwrap_or(&NONE),
        }
    }
}

/// Runs every hook of `kind`, in order, each in a span of its own (runtime
/// side only: the init process measures its hooks as phases); stops at the
/// first failure.
pub fn run_all(kind: HookKind, hooks: &[Hook], state: &HookState) -> Result<(), HookError> {
    if hooks.is_empty() {
        return Ok(());
    }
    let stdin = serde_json::to_vec(state).expect("the hook state serializes");
    for hook in hooks {
        let span = tracing::info_span!(
            "hook",
            otel.name = kind.span_name(),
            hook.path = %hook.path().display()
        );
        crate::telemetry::step(span, || run(kind, hook, &stdin))?;
    }
    Ok(())
}

/// Runs one hook with `stdin` as its standard input.
pub fn run(kind: HookKind, hook: &Hook, stdin: &[u8]) -> Result<(), HookError> {
    let path = hook.path().display().to_string();
    let kind_name = kind.name();
    let spawn_err = |cause| HookError::Spawn {
        kind: kind_name,
        path: path.clone(),
        cause,
    };
    let mut command = Command::new(hook.path());
    let args = hook.args().clone().unwrap_or_default();
    if let Some((arg0, rest)) = args.split_first() {
        command.arg0(arg0).args(rest);
    }
    command.env_clear();
    for var in hook.env().iter().flatten() {
        if let Some((key, value)) = var.split_once('=') {
            command.env(key, value);
        }
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only calls async-signal-safe functions (signal(2)).
    unsafe {
        command.pre_exec(|| {
            // A hook runs with default dispositions even under a `run` that
            // blocks or ignores signals.
            let empty = nix::sys::signal::SigSet::empty();
            let _ = empty.thread_set_mask();
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(spawn_err)?;
    if let Some(mut input) = child.stdin.take() {
        // A hook that does not read its stdin is not a failure.
        let _ = input.write_all(stdin);
    }
    let deadline = hook
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.max(1) as u64));
    if let Some(deadline) = deadline {
        if !wait_for_exit(child.id() as i32, deadline) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::TimedOut {
                kind: kind_name,
                path,
                seconds: hook.timeout().unwrap_or_default(),
            });
        }
    }
    let output = child.wait_with_output().map_err(spawn_err)?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !stdout.is_empty() {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(&stdout);
    }
    Err(HookError::Failed {
        kind: kind_name,
        path,
        status: output.status.to_string(),
        output: if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        },
    })
}

/// Waits for the hook (a child not yet reaped) to exit until `deadline`.
fn wait_for_exit(pid: i32, deadline: Instant) -> bool {
    crate::procfs::wait_for_exit(pid, deadline, || crate::procfs::has_exited(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn hook_reads_state_on_stdin_and_gets_its_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}; echo \"$GREETING\" >> {}", out.display(), out.display())],
            "env": ["GREETING=hello"]
        }));
        run(HookKind::Poststop, &h, b"{\"id\":\"x\"}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"x\"}hello\n"
        );
    }

    #[test]
    fn failing_hook_reports_its_output() {
        let h = hook(serde_json::json!({
            "path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 4"]
        }));
        let err = run(HookKind::CreateRuntime, &h, b"{}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("createRuntime") && err.contains("nope") && err.contains('4'),
            "{err}"
        );
    }

    #[test]
    fn hook_past_its_timeout_is_killed() {
        let h = hook(serde_json::json!({
            "path": "/bin/sh", "args": ["sh", "-c", "sleep 30"], "timeout": 1
        }));
        let started = Instant::now();
        let err = run(HookKind::Prestart, &h, b"{}").unwrap_err();
        assert!(matches!(err, HookError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
