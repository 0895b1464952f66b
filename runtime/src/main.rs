//! The `lucid` binary: parse the command line, set up logging, run the
//! command, report an error once.

use clap::Parser;

fn main() {
    let cli = lucid::cli::Cli::parse();
    if let Err(e) = lucid::logging::init(cli.log.as_deref(), cli.log_format.into(), cli.debug) {
        eprintln!("lucid: opening log file: {e}");
        std::process::exit(1);
    }
    let result = lucid::cli::run(cli);
    // End the command's span and write the spans out (bounded), also on failure.
    lucid::telemetry::finish(result.as_ref().err().map(|e| format!("{e:#}")).as_deref());
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let message = format!("{e:#}");
            // containerd and podman read the reason from the log file.
            if lucid::logging::logs_to_file() {
                log::error!("{message}");
            }
            eprintln!("lucid: {message}");
            std::process::exit(1);
        }
    }
}
