//! `lucid exec --process FILE`: the process.json parsed and completed from
//! the container's process, checked, then what the exec'd process computes
//! from it before execve (capability sets, environment, argv/envp).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lucid::container::exec;
use lucid::process::setup;

fuzz_target!(|data: &[u8]| {
    let container = lucid_fuzz::template_process();
    let process = match exec::process_from_json(container, data, Path::new("process.json")) {
        Ok(process) => process,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    if let Err(e) = exec::check_process(&process, "--process process.json", "") {
        assert!(!e.to_string().is_empty());
        return;
    }
    let _ = setup::CapabilitySets::from_process(&process);
    let _ = setup::environment(&process);
    if let Err(e) = setup::ExecArgs::new(&process) {
        assert!(!e.is_empty());
    }
});
