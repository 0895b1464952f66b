//! `state.json` as every command after `create` (and the exporter) reads it:
//! parsed, its status derived, printed as the OCI state, written back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lucid::state::{self, Status};

fuzz_target!(|data: &[u8]| {
    let parsed = match state::parse_state(data) {
        Ok(parsed) => parsed,
        Err(message) => {
            assert!(!message.is_empty());
            return;
        }
    };
    let root = lucid_fuzz::scratch();
    let status = if state::validate_id(&parsed.id).is_ok() {
        lucid::container::current_status(root, &parsed)
    } else {
        Status::Stopped
    };
    let oci = parsed.oci(status, "");
    serde_json::to_vec(&oci).expect("the OCI state serializes");
    // What a command writes back must read back the same. The configuration
    // holds sets (capabilities), written in no fixed order: compared as a
    // Spec, the rest as JSON.
    let written = serde_json::to_vec(&parsed).expect("a parsed state serializes");
    let again = state::parse_state(&written).expect("a written state reads back");
    assert_eq!(again.config, parsed.config, "the configuration changed");
    let without_config = |s: &state::ContainerState| {
        let mut value = serde_json::to_value(s).expect("a parsed state serializes");
        value.as_object_mut().map(|o| o.remove("config"));
        value
    };
    assert_eq!(
        without_config(&again),
        without_config(&parsed),
        "the state changed through a write and a read"
    );
});
