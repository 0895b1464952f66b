//! runc-compatible logging: `--log FILE` and `--log-format text|json`.
//!
//! containerd's shim and podman read the log file to report why the runtime
//! failed, so the line formats follow runc's (logrus) exactly:
//! text `time="…" level=error msg="…"`, json `{"level":"error","msg":"…","time":"…"}`.
//! Without `--log`, records go to stderr.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// logrus's text format.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

struct Logger {
    format: LogFormat,
    sink: Mutex<Sink>,
}

enum Sink {
    File(File),
    Stderr,
}

/// Installs the process-wide logger. `debug` lowers the level from warn to debug.
pub fn init(log: Option<&Path>, format: LogFormat, debug: bool) -> std::io::Result<()> {
    let (sink, to_file) = match log {
        Some(path) => (
            Sink::File(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o644)
                    // The file descriptor must not reach the container.
                    .custom_flags(libc::O_CLOEXEC)
                    .open(path)?,
            ),
            true,
        ),
        None => (Sink::Stderr, false),
    };
    LOGS_TO_FILE.store(to_file, std::sync::atomic::Ordering::Relaxed);
    let logger = Logger {
        format,
        sink: Mutex::new(sink),
    };
    log::set_max_level(if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Warn
    });
    // A second init (in tests) keeps the first logger; that is harmless.
    let _ = log::set_boxed_logger(Box::new(logger));
    Ok(())
}

/// Whether log records go to a file (so the final error must also be written there).
pub fn logs_to_file() -> bool {
    LOGS_TO_FILE.load(std::sync::atomic::Ordering::Relaxed)
}

static LOGS_TO_FILE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(
            self.format,
            record.level(),
            &record.args().to_string(),
            SystemTime::now(),
        );
        let mut sink = match self.sink.lock() {
            Ok(sink) => sink,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Logging must never fail the operation it describes.
        let _ = match &mut *sink {
            Sink::File(file) => file.write_all(line.as_bytes()),
            Sink::Stderr => std::io::stderr().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
}

fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

/// One log line, newline included, in the given format.
pub fn format_line(format: LogFormat, level: log::Level, msg: &str, at: SystemTime) -> String {
    let time = humantime::format_rfc3339_nanos(at).to_string();
    let level = level_name(level);
    match format {
        LogFormat::Json => {
            let value = serde_json::json!({ "level": level, "msg": msg, "time": time });
            format!("{value}\n")
        }
        LogFormat::Text => {
            let quoted = serde_json::Value::String(msg.to_owned()).to_string();
            format!("time=\"{time}\" level={level} msg={quoted}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn json_line_has_runc_fields() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let line = format_line(LogFormat::Json, log::Level::Error, "boom \"x\"", at);
        let value: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(value["level"], "error");
        assert_eq!(value["msg"], "boom \"x\"");
        assert_eq!(value["time"], "2023-11-14T22:13:20.000000000Z");
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn text_line_quotes_the_message() {
        let at = UNIX_EPOCH;
        let line = format_line(LogFormat::Text, log::Level::Warn, "a \"b\"", at);
        assert_eq!(
            line,
            "time=\"1970-01-01T00:00:00.000000000Z\" level=warning msg=\"a \\\"b\\\"\"\n"
        );
    }
}
