//! config.json as `lucid create` reads it: parse (with the JSON path of an
//! error), every check create makes before it touches the host, the seccomp
//! profile compiled, the device rules, and the state file round trip the
//! accepted configuration goes through.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let spec = match lucid::spec::parse(data) {
        Ok(spec) => spec,
        Err((field, message)) => {
            assert!(!message.is_empty(), "an error at {field} says nothing");
            return;
        }
    };
    let bundle = lucid_fuzz::scratch();
    match lucid::container::create::check_spec(&spec, bundle) {
        Ok(_) => {}
        Err(e) => {
            // The message main prints.
            assert!(!e.to_string().is_empty());
            return;
        }
    }
    if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        if let Err(e) = lucid::seccomp::Program::compile(profile) {
            assert!(!e.to_string().is_empty());
            return;
        }
    }
    let _ = lucid::cgroups::devices::rules(&spec);
    // An accepted configuration is saved in state.json and read back by
    // every later command.
    let saved = serde_json::to_vec(&spec).expect("an accepted configuration serializes");
    let read: oci_spec::runtime::Spec = serde_json::from_slice(&saved)
        .expect("an accepted configuration reads back from the state file");
    assert_eq!(
        read, spec,
        "the configuration changed through the state file"
    );
});
