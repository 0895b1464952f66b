//! `lucid ps`: the processes in a container's cgroups, as a JSON list of pids
//! or as `ps` output (default `-ef`) filtered to them.

use std::path::Path;

use super::rules::Op;
use crate::cgroups::Cgroup;
use crate::state::{read_state, validate_id};
use crate::{Error, Result};

/// The pids of every process of the container.
pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>> {
    validate_id(id)?;
    let state = read_state(root, id)?;
    let status = super::current_status(root, &state);
    Op::Ps.check(id, status)?;
    Ok(Cgroup::from_paths(&state.cgroup).pids())
}

/// Runs `ps ARGS` and keeps the header and the lines of `pids`, as runc does
/// (it finds the PID column in the header).
pub fn table(pids: &[i32], args: &[String]) -> Result<String> {
    let args: Vec<String> = if args.is_empty() {
        vec!["-ef".into()]
    } else {
        args.to_vec()
    };
    let output = std::process::Command::new("ps")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::os("running ps", e))?;
    if !output.status.success() {
        return Err(Error::Unsupported(format!(
            "ps {}: {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    filter(&String::from_utf8_lossy(&output.stdout), pids)
}

/// The header line and the lines whose PID column is in `pids`.
pub fn filter(ps_output: &str, pids: &[i32]) -> Result<String> {
    let mut lines = ps_output.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or_else(|| {
            Error::Unsupported("ps printed no PID column: add pid to its -o fields".into())
        })?;
    let mut out = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out += line;
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_keeps_the_header_and_the_container_pids() {
        let text = "UID PID PPID CMD\nroot 1 0 init\nroot 42 1 sh\nroot 43 42 sleep\n";
        assert_eq!(
            filter(text, &[42, 43]).unwrap(),
            "UID PID PPID CMD\nroot 42 1 sh\nroot 43 42 sleep\n"
        );
        assert!(filter("UID CMD\n", &[1]).is_err());
    }
}
