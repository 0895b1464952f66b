//! `lucid update`: change a running container's resources, as runc does:
//! the new values are merged into the container's configuration, the merged
//! resources (devices excepted) are written again, and the configuration in
//! the state is updated for later commands.

use std::path::Path;

use oci_spec::runtime::LinuxResources;

use super::rules::Op;
use crate::cgroups::Cgroup;
use crate::state::StateDir;
use crate::{Error, Result};

/// Applies `changes` to the container.
pub fn update(root: &Path, id: &str, changes: &serde_json::Value) -> Result<()> {
    let dir = StateDir::open(root, id)?;
    let mut state = dir.read()?;
    let status = super::current_status(root, &state);
    Op::Update.check(id, status)?;
    let current = state
        .config
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let mut merged = serde_json::to_value(&current)
        .map_err(|e| Error::Unsupported(format!("encoding the current resources: {e}")))?;
    merge(&mut merged, changes);
    let merged: LinuxResources = serde_json::from_value(merged)
        .map_err(|e| Error::Unsupported(format!("the updated resources are not valid: {e}")))?;
    let mut to_apply = merged.clone();
    to_apply.set_devices(None);
    // checkBeforeUpdate applies to this update only, as asked.
    if let (Some(mut memory), Some(check)) = (
        *to_apply.memory(),
        changes
            .pointer("/memory/checkBeforeUpdate")
            .and_then(serde_json::Value::as_bool),
    ) {
        memory.set_check_before_update(Some(check));
        to_apply.set_memory(Some(memory));
    }
    Cgroup::from_paths(&state.cgroup).update(&to_apply)?;
    let mut linux = state.config.linux().clone().unwrap_or_default();
    linux.set_resources(Some(merged));
    state.config.set_linux(Some(linux));
    dir.write(&state)?;
    Ok(())
}

/// Overlays `changes` on `base`: objects merge key by key, anything else
/// replaces (runc's update takes each value given and keeps the rest).
pub fn merge(base: &mut serde_json::Value, changes: &serde_json::Value) {
    match (base, changes) {
        (serde_json::Value::Object(b), serde_json::Value::Object(c)) => {
            for (key, value) in c {
                match b.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        b.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (b, c) => *b = c.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_what_the_update_does_not_name() {
        let mut base =
            serde_json::json!({ "memory": { "limit": 100, "swap": 200 }, "pids": { "limit": 5 } });
        merge(
            &mut base,
            &serde_json::json!({ "memory": { "limit": 150 } }),
        );
        assert_eq!(
            base,
            serde_json::json!({ "memory": { "limit": 150, "swap": 200 }, "pids": { "limit": 5 } })
        );
    }
}
