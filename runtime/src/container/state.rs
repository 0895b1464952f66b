//! `lucid state`: the OCI state of one container, with runc's field names.

use std::path::Path;

use crate::state::{read_state, validate_id, OciState};
use crate::Result;

/// The container's state as `lucid state` prints it.
pub fn state(root: &Path, id: &str) -> Result<OciState> {
    validate_id(id)?;
    let state = read_state(root, id)?;
    let status = super::current_status(root, &state);
    // runc prints an empty owner here (and the user's name in `list`).
    Ok(state.oci(status, ""))
}
