//! `lucid list`: every container under the root.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::state::{list_ids, read_state, OciState};
use crate::Result;

/// The state of every container, sorted by ID. Containers whose state cannot
/// be read are skipped with a warning.
pub fn list(root: &Path) -> Result<Vec<OciState>> {
    let mut out = Vec::new();
    for id in list_ids(root)? {
        let dir = root.join(&id);
        match read_state(root, &id) {
            Ok(state) => {
                let status = super::current_status(root, &state);
                let owner = std::fs::symlink_metadata(&dir)
                    .map(|m| user_name(m.uid()))
                    .unwrap_or_default();
                out.push(state.oci(status, &owner));
            }
            // A container whose create is still writing its first state.
            Err(crate::state::StateError::NotFound(_)) => {}
            Err(e) => log::warn!("{e}"),
        }
    }
    Ok(out)
}

/// The user's name from /etc/passwd, or the number.
fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id: u32 = fields.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_owned())
        })
        .unwrap_or_else(|| uid.to_string())
}

/// Formats states as runc's table (Go's tabwriter: min width 12, padding 3).
pub fn table(states: &[OciState]) -> String {
    let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
    let rows: Vec<[String; 6]> = std::iter::once(header)
        .chain(states.iter().map(|s| {
            [
                s.id.clone(),
                s.pid.to_string(),
                s.status.to_string(),
                s.bundle.display().to_string(),
                s.created.clone(),
                s.owner.clone(),
            ]
        }))
        .collect();
    let mut widths = [0usize; 6];
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max((cell.chars().count() + 3).max(12));
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}", width = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Status;

    #[test]
    fn table_matches_runc_layout() {
        let s = OciState {
            oci_version: "1.0.2-dev".into(),
            id: "t1".into(),
            pid: 6203,
            status: Status::Created,
            bundle: "/tmp/rs".into(),
            rootfs: "/tmp/rs/rootfs".into(),
            created: "2026-11-28T19:24:52.721650951Z".into(),
            owner: "root".into(),
            annotations: Default::default(),
        };
        // Captured from runc 1.1.5 `list` on the same state.
        let expected = "ID          PID         STATUS      BUNDLE      CREATED                          OWNER\n\
                        t1          6203        created     /tmp/rs     2026-11-28T19:24:52.721650951Z   root\n";
        assert_eq!(table(&[s]), expected);
    }
}
