//! The command line, runc-compatible: parsed once here into plain settings
//! that the lifecycle operations take. Nothing below this module sees clap.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use crate::container;

mod update;
use crate::logging::LogFormat;
use crate::telemetry::{self, Join};
pub use update::{parse_size, UpdateArgs};

/// lucid: an OCI container runtime that shows its work.
#[derive(Debug, Parser)]
#[command(name = "lucid", version, about, max_term_width = 100)]
pub struct Cli {
    /// Directory for the state of containers.
    #[arg(long, global = true, default_value = "/run/lucid", value_name = "DIR")]
    pub root: PathBuf,
    /// Write log lines to this file instead of stderr.
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Format of log lines.
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    pub log_format: LogFormatArg,
    /// Log debug lines too.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Manage cgroups through systemd (not supported: lucid writes cgroupfs).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// `time="…" level=… msg="…"`.
    Text,
    /// One JSON object per line.
    Json,
}

/// `list --format` values.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    /// runc's table.
    Table,
    /// A JSON array of states.
    Json,
}

/// `trace --format` values.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TraceFormat {
    /// A waterfall for the terminal.
    Text,
    /// The spans as JSON, for scripts.
    Json,
}

/// `ps --format` and `syscalls --format` values.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TableFormat {
    /// A table for people.
    Table,
    /// JSON.
    Json,
}

/// Flags shared by `create` and `run`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The bundle directory (holding config.json).
    #[arg(short, long, default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
    /// Unix socket to send the pty master to (terminal containers).
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Unix socket to send a pidfd of the init process to.
    #[arg(long = "pidfd-socket", value_name = "PATH")]
    pub pidfd_socket: Option<PathBuf>,
    /// File to write the init process's pid to.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root (for ramdisk roots).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not give the container a new session keyring.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass this many descriptors (from 3 up) to the container's process.
    #[arg(long = "preserve-fds", default_value_t = 0, value_name = "N")]
    pub preserve_fds: u32,
    /// The container ID.
    pub id: String,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container, stopped before its process runs.
    Create(CreateArgs),
    /// Start the process of a created container.
    Start {
        /// The container ID.
        id: String,
    },
    /// Create and start a container; in the foreground, wait for it and exit with its code.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the container started.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container after it exits (delete it later).
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state as JSON.
    State {
        /// The container ID.
        id: String,
    },
    /// Send a signal to a container's init process (SIGTERM by default).
    Kill {
        /// Send it to every process of the container.
        #[arg(short, long)]
        all: bool,
        /// The container ID.
        id: String,
        /// A signal name (KILL, SIGKILL) or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container and everything it holds.
    Delete {
        /// Kill and delete a container that still runs.
        #[arg(short, long)]
        force: bool,
        /// The container ID.
        id: String,
    },
    /// List containers.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        format: ListFormat,
        /// Print only the IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Draw a container's start-up waterfall from the span spool (also after it is gone).
    Trace {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        format: TraceFormat,
        /// Also write the waterfall as an SVG picture to this file.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// The container ID.
        id: String,
    },
    /// Suspend every process of a container.
    Pause {
        /// The container ID.
        id: String,
    },
    /// Resume the processes of a paused container.
    Resume {
        /// The container ID.
        id: String,
    },
    /// Change a running container's resource limits.
    Update(Box<UpdateArgs>),
    /// List the processes of a container.
    Ps {
        /// Output format: `ps` output, or a JSON list of pids.
        #[arg(short, long, value_enum, default_value = "table")]
        format: TableFormat,
        /// The container ID.
        id: String,
        /// Arguments for ps (default `-ef`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Print a container's resource statistics and OOM kills as JSON events.
    Events {
        /// Print the statistics once and exit.
        #[arg(long)]
        stats: bool,
        /// How often to print statistics.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// The container ID.
        id: String,
    },
    /// Print the syscalls a container made (counted by eBPF), like strace -c.
    Syscalls {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        format: TableFormat,
        /// The container ID.
        id: String,
    },
    /// Write a default config.json for a bundle.
    Spec {
        /// The bundle directory to write it in.
        #[arg(short, long, default_value = ".", value_name = "DIR")]
        bundle: PathBuf,
        /// Make a configuration for a container run by an unprivileged user.
        #[arg(long)]
        rootless: bool,
    },
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

fn create_options(args: &CreateArgs) -> anyhow::Result<container::create::CreateOptions> {
    if args.console_socket.is_some() {
        bail!("--console-socket: terminals are not supported by this version of lucid");
    }
    if args.pidfd_socket.is_some() {
        bail!("--pidfd-socket is not supported by this version of lucid");
    }
    Ok(container::create::CreateOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        pid_file: args.pid_file.clone(),
        no_pivot: args.no_pivot,
        no_new_keyring: args.no_new_keyring,
        preserve_fds: i32::try_from(args.preserve_fds).context("--preserve-fds is too large")?,
    })
}

/// Prints to stdout; a closed pipe (`lucid list | head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// The terminal's width: `$COLUMNS`, the tty's size, or 120.
fn terminal_width() -> usize {
    if let Some(columns) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return columns;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the local.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        120
    }
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: lucid has no systemd cgroup driver; configure the caller to use cgroupfs");
    }
    let root = cli.root;
    match cli.command {
        Command::Create(args) => {
            telemetry::begin_command(&root, "create", &args.id, Join::New);
            let options = create_options(&args)?;
            let mask = nix::sys::signal::SigSet::thread_get_mask()
                .unwrap_or_else(|_| nix::sys::signal::SigSet::empty());
            container::create::create(&root, &options, mask)
                .with_context(|| format!("creating container {}", args.id))?;
        }
        Command::Start { id } => {
            telemetry::begin_command(&root, "start", &id, Join::Saved);
            container::start::start(&root, &id)
                .with_context(|| format!("starting container {id}"))?;
        }
        Command::Run {
            create,
            detach,
            keep,
        } => {
            telemetry::begin_command(&root, "run", &create.id, Join::New);
            let options = container::run::RunOptions {
                create: create_options(&create)?,
                detach,
                keep,
            };
            return container::run::run(&root, &options)
                .with_context(|| format!("running container {}", create.id));
        }
        Command::State { id } => {
            let state = container::state::state(&root, &id)?;
            print(&format!("{}\n", serde_json::to_string_pretty(&state)?))?;
        }
        Command::Kill { all, id, signal } => {
            telemetry::begin_command(&root, "kill", &id, Join::Saved);
            let number = crate::signals::parse(&signal).map_err(anyhow::Error::msg)?;
            container::kill::kill(&root, &id, number, all)
                .with_context(|| format!("sending {signal} to container {id}"))?;
        }
        Command::Delete { force, id } => {
            telemetry::begin_command(&root, "delete", &id, Join::Saved);
            container::delete::delete(&root, &id, force)
                .with_context(|| format!("deleting container {id}"))?;
        }
        Command::List { format, quiet } => {
            let states = container::list::list(&root)?;
            let text = if quiet {
                states.iter().map(|s| format!("{}\n", s.id)).collect()
            } else if format == ListFormat::Json {
                format!("{}\n", serde_json::to_string(&states)?)
            } else {
                container::list::table(&states)
            };
            print(&text)?;
        }
        Command::Trace { format, svg, id } => {
            crate::state::validate_id(&id)?;
            let waterfall = telemetry::load_waterfall(&root, &id)
                .with_context(|| format!("reading the trace of container {id}"))?;
            if let Some(path) = svg {
                std::fs::write(&path, telemetry::waterfall::svg(&waterfall))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            let text = match format {
                TraceFormat::Text => telemetry::waterfall::text(&waterfall, terminal_width()),
                TraceFormat::Json => format!("{}\n", serde_json::to_string_pretty(&waterfall)?),
            };
            print(&text)?;
        }
        Command::Pause { id } => {
            telemetry::begin_command(&root, "pause", &id, Join::Saved);
            container::pause::pause(&root, &id)
                .with_context(|| format!("pausing container {id}"))?;
        }
        Command::Resume { id } => {
            telemetry::begin_command(&root, "resume", &id, Join::Saved);
            container::pause::resume(&root, &id)
                .with_context(|| format!("resuming container {id}"))?;
        }
        Command::Update(args) => {
            telemetry::begin_command(&root, "update", &args.id, Join::Saved);
            let changes = update::changes(&args)?;
            container::update::update(&root, &args.id, &changes)
                .with_context(|| format!("updating container {}", args.id))?;
        }
        Command::Ps {
            format,
            id,
            ps_args,
        } => {
            let pids = container::ps::pids(&root, &id)?;
            let text = match format {
                TableFormat::Json => format!("{}\n", serde_json::to_string(&pids)?),
                TableFormat::Table => container::ps::table(&pids, &ps_args)?,
            };
            print(&text)?;
        }
        Command::Events {
            stats,
            interval,
            id,
        } => {
            if stats {
                print(&format!("{}\n", container::events::stats(&root, &id)?))?;
            } else {
                if interval.is_zero() {
                    bail!("--interval must be longer than zero");
                }
                container::events::watch(&root, &id, interval, &mut std::io::stdout().lock())?;
            }
        }
        Command::Syscalls { format, id } => {
            let rows = container::syscalls::syscalls(&root, &id)?;
            let text = match format {
                TableFormat::Table => crate::ebpf::table(&rows),
                TableFormat::Json => {
                    let rows: Vec<crate::ebpf::SyscallJson> = rows.iter().map(Into::into).collect();
                    format!("{}\n", serde_json::to_string(&rows)?)
                }
            };
            print(&text)?;
        }
        Command::Spec { bundle, rootless } => {
            crate::spec::write_template(&bundle, rootless)?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_flags_work_before_and_after_the_command() {
        let cli = Cli::try_parse_from(["lucid", "--root", "/r", "kill", "c1", "KILL"]).unwrap();
        assert_eq!(cli.root, PathBuf::from("/r"));
        let cli = Cli::try_parse_from(["lucid", "delete", "--force", "c1", "--log-format", "json"])
            .unwrap();
        assert!(matches!(cli.log_format, LogFormatArg::Json));
        assert!(matches!(cli.command, Command::Delete { force: true, .. }));
    }

    #[test]
    fn create_takes_runc_flags() {
        let cli = Cli::try_parse_from([
            "lucid",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "--no-pivot",
            "--no-new-keyring",
            "--preserve-fds",
            "2",
            "c1",
        ])
        .unwrap();
        let Command::Create(args) = cli.command else {
            panic!("not create")
        };
        let options = create_options(&args).unwrap();
        assert_eq!(options.preserve_fds, 2);
        assert!(options.no_pivot && options.no_new_keyring);
    }

    #[test]
    fn systemd_cgroup_is_refused_clearly() {
        let cli = Cli::try_parse_from(["lucid", "--systemd-cgroup", "list"]).unwrap();
        let err = run(cli).unwrap_err().to_string();
        assert!(err.contains("systemd"), "{err}");
    }
}
