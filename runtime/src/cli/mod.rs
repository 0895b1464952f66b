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
    /// Directory for the state of containers [default: /run/lucid, or
    /// $XDG_RUNTIME_DIR/lucid for an unprivileged user].
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
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

/// Flags of `exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// A process.json (the OCI process) to run instead of the command and
    /// the flags that change the container's process.
    #[arg(short, long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Give the process a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Return once the process runs.
    #[arg(short, long)]
    pub detach: bool,
    /// File to write the process's pid to.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Working directory of the process.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Add an environment variable (repeatable).
    #[arg(short, long, value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Run as this user: uid[:gid], numeric.
    #[arg(short, long, value_name = "UID[:GID]", value_parser = parse_user)]
    pub user: Option<(u32, Option<u32>)>,
    /// Add a supplementary group (repeatable).
    #[arg(short = 'g', long = "additional-gids", value_name = "GID")]
    pub additional_gids: Vec<u32>,
    /// Add a capability to every capability set (repeatable).
    #[arg(short, long, value_name = "CAP")]
    pub cap: Vec<String>,
    /// Set no_new_privileges for the process.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// AppArmor profile for the process.
    #[arg(long, value_name = "PROFILE")]
    pub apparmor: Option<String>,
    /// SELinux label for the process.
    #[arg(long = "process-label", value_name = "LABEL")]
    pub process_label: Option<String>,
    /// Unix socket to send the pty master to (with --tty and --detach).
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Unix socket to send a pidfd of the process to.
    #[arg(long = "pidfd-socket", value_name = "PATH")]
    pub pidfd_socket: Option<PathBuf>,
    /// Pass this many descriptors (from 3 up) to the process.
    #[arg(long = "preserve-fds", default_value_t = 0, value_name = "N")]
    pub preserve_fds: u32,
    /// The container ID.
    pub id: String,
    /// The command and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required_unless_present = "process"
    )]
    pub command: Vec<String>,
}

fn parse_user(text: &str) -> Result<(u32, Option<u32>), String> {
    let (uid, gid) = match text.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (text, None),
    };
    let number = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("{s:?} is not a numeric id (uid[:gid])"))
    };
    Ok((number(uid)?, gid.map(number).transpose()?))
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
    /// Run a process inside a running container.
    Exec(ExecArgs),
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
    /// Print what this runtime implements, as runc's `features` JSON.
    Features,
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

/// The state root: `--root`, else `$XDG_RUNTIME_DIR/lucid` for a user who is
/// not root (runc's rule, which also counts root of a user namespace that is
/// not the host's, unless `$USER` is root), else `/run/lucid`.
fn state_root(given: Option<PathBuf>) -> PathBuf {
    if let Some(root) = given {
        return root;
    }
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty());
    let unprivileged = !nix::unistd::geteuid().is_root()
        || (in_user_namespace() && std::env::var("USER").map_or(true, |u| u != "root"));
    match xdg {
        Some(dir) if unprivileged => PathBuf::from(dir).join("lucid"),
        _ => PathBuf::from("/run/lucid"),
    }
}

fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|map| map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

/// How many descriptors this process was socket-activated with: LISTEN_FDS,
/// when LISTEN_PID names this process (systemd's protocol, as runc reads it).
fn listen_fds() -> anyhow::Result<i32> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    match (pid, fds) {
        (Some(pid), Some(fds)) if pid.trim() == std::process::id().to_string() => fds
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
            .with_context(|| format!("LISTEN_FDS={fds:?} is not a number of descriptors")),
        _ => Ok(0),
    }
}

fn create_options(args: &CreateArgs) -> anyhow::Result<container::create::CreateOptions> {
    Ok(container::create::CreateOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        pid_file: args.pid_file.clone(),
        no_pivot: args.no_pivot,
        no_new_keyring: args.no_new_keyring,
        preserve_fds: i32::try_from(args.preserve_fds).context("--preserve-fds is too large")?,
        listen_fds: listen_fds()?,
        console_socket: args.console_socket.clone(),
        pidfd_socket: args.pidfd_socket.clone(),
    })
}

fn exec_options(args: ExecArgs) -> anyhow::Result<container::exec::ExecOptions> {
    use container::exec::{ExecProcess, ProcessFlags};
    let process = match args.process {
        Some(file) => {
            let changed: Vec<&str> = [
                ("a command", !args.command.is_empty()),
                ("--cwd", args.cwd.is_some()),
                ("--env", !args.env.is_empty()),
                ("--user", args.user.is_some()),
                ("--additional-gids", !args.additional_gids.is_empty()),
                ("--cap", !args.cap.is_empty()),
                ("--no-new-privs", args.no_new_privs),
                ("--apparmor", args.apparmor.is_some()),
                ("--process-label", args.process_label.is_some()),
            ]
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect();
            if !changed.is_empty() {
                bail!(
                    "--process {}: the process file says everything about the process: set {} in it instead",
                    file.display(),
                    changed.join(", ")
                );
            }
            // runc takes the terminal from the file; podman passes --tty
            // beside it, which the file must then agree with.
            ExecProcess::File {
                path: file,
                tty: args.tty,
            }
        }
        None => ExecProcess::Flags(ProcessFlags {
            args: args.command,
            cwd: args.cwd,
            env: args.env,
            tty: args.tty,
            user: args.user,
            additional_gids: args.additional_gids,
            caps: args.cap,
            no_new_privs: args.no_new_privs,
            apparmor: args.apparmor,
            process_label: args.process_label,
        }),
    };
    Ok(container::exec::ExecOptions {
        id: args.id,
        process,
        detach: args.detach,
        pid_file: args.pid_file,
        console_socket: args.console_socket,
        pidfd_socket: args.pidfd_socket,
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
    let root = state_root(cli.root);
    crate::failpoint::check_env().map_err(anyhow::Error::msg)?;
    // Commands that start a process in a container first re-exec lucid from
    // an image the container cannot write (CVE-2019-5736; see `exe`).
    if matches!(
        cli.command,
        Command::Create(_) | Command::Run { .. } | Command::Exec(_)
    ) {
        crate::exe::ensure_protected(&root)?;
    }
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
        Command::Exec(args) => {
            let id = args.id.clone();
            let options = exec_options(args)?;
            return container::exec::exec(&root, &options)
                .with_context(|| format!("executing in container {id}"));
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
        Command::Features => {
            print(&format!(
                "{}\n",
                serde_json::to_string_pretty(&crate::features::features())?
            ))?;
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
        assert_eq!(cli.root, Some(PathBuf::from("/r")));
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
    fn exec_takes_runc_flags_and_the_command_after_the_id() {
        let cli = Cli::try_parse_from([
            "lucid",
            "exec",
            "--tty",
            "--user",
            "1000:100",
            "--cap",
            "CAP_NET_RAW",
            "--env",
            "A=b",
            "-g",
            "5",
            "c1",
            "sh",
            "-c",
            "echo -n hi",
        ])
        .unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(args.command, ["sh", "-c", "echo -n hi"]);
        assert_eq!(args.user, Some((1000, Some(100))));
        assert_eq!(args.additional_gids, [5]);
        assert!(Cli::try_parse_from(["lucid", "exec", "c1"]).is_err());
        assert!(Cli::try_parse_from(["lucid", "exec", "--user", "root", "c1", "id"]).is_err());
    }

    #[test]
    fn exec_process_file_excludes_the_flags_it_replaces() {
        let cli = Cli::try_parse_from(["lucid", "exec", "--process", "p.json", "--cwd", "/", "c1"])
            .unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        let err = exec_options(args).unwrap_err().to_string();
        assert!(err.contains("--cwd"), "{err}");
    }

    #[test]
    fn exec_process_file_takes_tty_beside_it_as_podman_passes_it() {
        let cli =
            Cli::try_parse_from(["lucid", "exec", "--process", "p.json", "--tty", "c1"]).unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        let options = exec_options(args).unwrap();
        assert!(matches!(
            options.process,
            container::exec::ExecProcess::File { tty: true, .. }
        ));
    }

    #[test]
    fn systemd_cgroup_is_refused_clearly() {
        let cli = Cli::try_parse_from(["lucid", "--systemd-cgroup", "list"]).unwrap();
        let err = run(cli).unwrap_err().to_string();
        assert!(err.contains("systemd"), "{err}");
    }
}
