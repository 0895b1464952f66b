//! Signal names and numbers as `kill` accepts them, and the set a foreground
//! `run` forwards to the container.

use nix::sys::signal::Signal;

/// Parses `KILL`, `SIGKILL`, `kill` or `9`. Real-time signals are accepted by
/// number (`34`…`64`) and as `RTMIN+N`.
pub fn parse(text: &str) -> Result<i32, String> {
    let trimmed = text.trim();
    if let Ok(number) = trimmed.parse::<i32>() {
        if (1..=libc::SIGRTMAX()).contains(&number) {
            return Ok(number);
        }
        return Err(format!("invalid signal number {number}"));
    }
    let upper = trimmed.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(offset) = name.strip_prefix("RTMIN+") {
        if let Ok(n) = offset.parse::<i32>() {
            let sig = libc::SIGRTMIN() + n;
            if sig <= libc::SIGRTMAX() {
                return Ok(sig);
            }
        }
    }
    if name == "RTMIN" {
        return Ok(libc::SIGRTMIN());
    }
    if name == "RTMAX" {
        return Ok(libc::SIGRTMAX());
    }
    let full = format!("SIG{name}");
    full.parse::<Signal>()
        .map(|s| s as i32)
        .map_err(|_| format!("unknown signal {text:?}"))
}

/// The signals a foreground `run` relays to the container's init process:
/// every catchable signal but SIGCHLD (which tells `run` the container exited).
pub fn forwarded() -> impl Iterator<Item = Signal> {
    Signal::iterator().filter(|s| {
        !matches!(
            s,
            Signal::SIGCHLD
                | Signal::SIGKILL
                | Signal::SIGSTOP
                | Signal::SIGSEGV
                | Signal::SIGBUS
                | Signal::SIGILL
                | Signal::SIGFPE
                | Signal::SIGTRAP
                | Signal::SIGSYS
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse_alike() {
        assert_eq!(parse("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse("SIGKILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse("kill").unwrap(), libc::SIGKILL);
        assert_eq!(parse("9").unwrap(), libc::SIGKILL);
        assert_eq!(parse("usr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse("RTMIN+2").unwrap(), libc::SIGRTMIN() + 2);
        assert_eq!(parse("64").unwrap(), 64);
    }

    #[test]
    fn unknown_signals_are_refused() {
        assert!(parse("NOPE").is_err());
        assert!(parse("0").is_err());
        assert!(parse("65").is_err());
        assert!(parse("-1").is_err());
    }

    #[test]
    fn sigchld_is_not_forwarded() {
        assert!(forwarded().all(|s| s != Signal::SIGCHLD));
        assert!(forwarded().any(|s| s == Signal::SIGTERM));
    }
}
