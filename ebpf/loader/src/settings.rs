//! The host's eBPF settings, shared by the runtime and the exporter: `/etc/lucid/lucid.conf`
//! (or the file `$LUCID_CONFIG` names), lines of `key = value`, `#` comments.
//!
//! ```text
//! # Count every container's syscalls: on (the default) or off. Off detaches the syscall hook,
//! # for hosts where the tracepoint's cost on every task (see ebpf/README.md) is too high.
//! ebpf.syscalls = off
//! # Which hook counts them: auto (fexit where the kernel allows it, else the raw_syscalls
//! # tracepoints), fexit or tracepoint. Read when the programs are loaded.
//! ebpf.syscall-hook = auto
//! ```
//!
//! `ebpf.syscalls` is read whenever a container is registered or unregistered (so a change
//! takes effect at the next create or delete) and whenever features are listed;
//! `ebpf.syscall-hook` when the programs are loaded (the first container after boot, or the
//! exporter's start).
use std::path::{Path, PathBuf};

/// The environment variable naming another settings file.
pub const CONFIG_ENV: &str = "LUCID_CONFIG";
/// The settings file when `$LUCID_CONFIG` is not set.
pub const DEFAULT_CONFIG: &str = "/etc/lucid/lucid.conf";

/// Which hook counts syscalls, as the settings ask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HookChoice {
    /// fexit where the kernel allows it, else the tracepoints.
    #[default]
    Auto,
    /// fexit only: syscall counting is off where the kernel refuses it.
    Fexit,
    /// The `raw_syscalls` tracepoints only.
    Tracepoint,
}

/// The settings; [`Settings::default`] when there is no file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Whether containers' syscalls are counted (`ebpf.syscalls`).
    pub syscalls: bool,
    /// The hook to count them with (`ebpf.syscall-hook`).
    pub syscall_hook: HookChoice,
    /// The file they came from, if there was one.
    pub source: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            syscalls: true,
            syscall_hook: HookChoice::Auto,
            source: None,
        }
    }
}

/// A settings file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file exists but cannot be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not `key = value` with a known key and value.
    #[error("{}:{line}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong, and what would be right.
        message: String,
    },
}

/// The settings file this process uses: `$LUCID_CONFIG`, else [`DEFAULT_CONFIG`].
pub fn config_path() -> PathBuf {
    std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

impl Settings {
    /// Reads [`config_path`]; a missing file gives the defaults.
    pub fn load() -> Result<Self, SettingsError> {
        Self::read(&config_path())
    }

    /// Reads `path`; a missing file gives the defaults.
    pub fn read(path: &Path) -> Result<Self, SettingsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(SettingsError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses the text of the file at `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        let mut settings = Self {
            source: Some(path.to_owned()),
            ..Self::default()
        };
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |message: String| SettingsError::Line {
                path: path.to_owned(),
                line: n + 1,
                message,
            };
            let (key, value) = line
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| bad(format!("{line:?} is not `key = value`")))?;
            match key {
                "ebpf.syscalls" => {
                    settings.syscalls = match value {
                        "on" => true,
                        "off" => false,
                        other => {
                            return Err(bad(format!("ebpf.syscalls is {other:?}: write on or off")))
                        }
                    }
                }
                "ebpf.syscall-hook" => {
                    settings.syscall_hook = match value {
                        "auto" => HookChoice::Auto,
                        "fexit" => HookChoice::Fexit,
                        "tracepoint" => HookChoice::Tracepoint,
                        other => {
                            return Err(bad(format!(
                                "ebpf.syscall-hook is {other:?}: write auto, fexit or tracepoint"
                            )))
                        }
                    }
                }
                other => {
                    return Err(bad(format!(
                        "unknown setting {other:?}; lucid knows ebpf.syscalls and ebpf.syscall-hook"
                    )))
                }
            }
        }
        Ok(settings)
    }

    /// Where these settings came from, for messages.
    pub fn describe_source(&self) -> String {
        match &self.source {
            Some(path) => path.display().to_string(),
            None => format!("{DEFAULT_CONFIG} (absent: defaults)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, SettingsError> {
        Settings::parse(text, Path::new("/etc/lucid/lucid.conf"))
    }

    #[test]
    fn a_missing_file_gives_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::read(&dir.path().join("lucid.conf")).unwrap();
        assert!(settings.syscalls);
        assert_eq!(settings.syscall_hook, HookChoice::Auto);
        assert_eq!(settings.source, None);
    }

    #[test]
    fn keys_values_and_comments_are_read() {
        let s = parse("# host settings\n\nebpf.syscalls = off  # too costly here\nebpf.syscall-hook=tracepoint\n")
            .unwrap();
        assert!(!s.syscalls);
        assert_eq!(s.syscall_hook, HookChoice::Tracepoint);
    }

    #[test]
    fn an_unknown_key_or_value_names_the_line_and_the_choices() {
        let e = parse("ebpf.syscalls = on\nebpf.sycalls = off\n").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("/etc/lucid/lucid.conf:2: "), "{text}");
        assert!(text.contains("ebpf.syscall-hook"), "{text}");
        let e = parse("ebpf.syscalls = no\n").unwrap_err().to_string();
        assert!(e.contains(":1: ") && e.contains("on or off"), "{e}");
        let e = parse("ebpf.syscalls\n").unwrap_err().to_string();
        assert!(e.contains("key = value"), "{e}");
    }
}
