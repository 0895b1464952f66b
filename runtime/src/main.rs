//! The `lucid` binary: parse the command line, set up logging, run the
//! command, report an error once.

use clap::Parser;

fn main() {
    let cli = lucid::cli::Cli::parse();
    if let Err(e) = lucid::logging::init(cli.log.as_deref(), cli.log_format.into(), cli.debug) {
        eprintln!("lucid: opening log file: {e}");
        std::process::exit(1);
    }
    match lucid::cli::run(cli) {
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
