//! `lucid-exporter`: parse the flags, start the HTTP server, stop on SIGTERM or SIGINT.
//!
//! Stopping never waits on a scrape: one stuck in the kernel (a hung file
//! system under a path a state file names) is abandoned, and ends with the
//! process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use lucid_exporter::forward::{self, target::Target, ForwardSettings, Forwarder};
use lucid_exporter::{server, Exporter, ScrapeSettings};

/// Prometheus metrics for every lucid container on this host.
#[derive(Debug, Parser)]
#[command(name = "lucid-exporter", version)]
struct Flags {
    /// Address to serve /metrics and /healthz on.
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// The runtime's state root (lucid --root).
    #[arg(long, default_value = "/run/lucid", value_name = "DIR")]
    root: PathBuf,
    /// Where lucid's eBPF programs are pinned (loaded and pinned there if missing).
    #[arg(long, default_value = lucid_ebpf::DEFAULT_PIN_ROOT, value_name = "DIR")]
    bpf_pin_root: PathBuf,
    /// The exporter's own state: which containers the lifecycle histograms counted.
    #[arg(long, default_value = "/run/lucid-exporter", value_name = "DIR")]
    state_dir: PathBuf,
    /// Syscall series per container before the rest are summed into syscall="other".
    #[arg(long, default_value_t = 32, value_name = "N")]
    syscall_top_n: usize,
    /// OTLP endpoint to ship the runtime's spooled spans to (a base URL, as
    /// OTEL_EXPORTER_OTLP_ENDPOINT); OTEL_EXPORTER_OTLP_* set the rest.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Spooled bytes merged into one export request at most [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    otlp_batch_bytes: Option<u64>,
    /// Longest wait between export attempts [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    otlp_max_backoff: Option<Duration>,
    /// How often the span spool is walked for new batches [default: 2s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    spool_poll_interval: Option<Duration>,
    /// Log level: error, warn, info or debug.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    log_level: log::LevelFilter,
}

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "lucid-exporter: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    log::set_logger(&StderrLogger).context("installing the logger")?;
    log::set_max_level(flags.log_level);
    let forwarding = forward_settings(&flags)?;
    raise_open_file_limit();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let settings = ScrapeSettings {
        root: flags.root.clone(),
        bpf_pin_root: flags.bpf_pin_root.clone(),
        state_dir: Some(flags.state_dir.clone()),
        syscall_top_n: flags.syscall_top_n,
        threads,
    };
    let exporter = Arc::new(Exporter::new(&settings).context("starting the exporter")?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(flags.listen)
            .await
            .with_context(|| {
                format!(
                    "listening on {}: choose another with --listen",
                    flags.listen
                )
            })?;
        log::info!(
            "serving http://{}/metrics for containers under {}",
            listener.local_addr().unwrap_or(flags.listen),
            flags.root.display()
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let forwarder = match forwarding {
            Some(settings) => {
                let timeout = settings.target.timeout;
                let forwarder = Forwarder::new(settings, exporter.self_metrics())
                    .context("starting span forwarding")?;
                log::info!(
                    "shipping spooled spans under {}/@spool to {}",
                    flags.root.display(),
                    forwarder.endpoint()
                );
                Some((tokio::spawn(forwarder.run(stopped)), timeout))
            }
            None => None,
        };
        let metrics = server::Metrics::new(exporter);
        server::serve(listener, metrics, shutdown_signal()).await;
        let _ = stop.send(true);
        if let Some((task, timeout)) = forwarder {
            // A request in flight finishes and its batches are marked shipped,
            // so that a restart does not send them again.
            if tokio::time::timeout(timeout + Duration::from_secs(5), task)
                .await
                .is_err()
            {
                log::warn!("span forwarding did not stop in time");
            }
        }
        Ok(())
    });
    // Dropping the runtime would wait for every blocking task, a scrape in
    // flight among them, however long it takes.
    runtime.shutdown_timeout(SCRAPE_GRACE);
    log::info!("stopped");
    served
}

/// How long a scrape in flight at SIGTERM may take to finish before the
/// exporter exits without it.
const SCRAPE_GRACE: Duration = Duration::from_millis(200);

/// Forwarding settings from the flags and the `OTEL_EXPORTER_OTLP_*`
/// variables; `None` when no endpoint is set. The tuning flags without an
/// endpoint are refused rather than ignored.
fn forward_settings(flags: &Flags) -> anyhow::Result<Option<ForwardSettings>> {
    let target = Target::from_settings(flags.otlp_endpoint.as_deref(), |name| {
        std::env::var(name).ok()
    })?;
    let Some(target) = target else {
        for (given, flag) in [
            (flags.otlp_batch_bytes.is_some(), "--otlp-batch-bytes"),
            (flags.otlp_max_backoff.is_some(), "--otlp-max-backoff"),
            (flags.spool_poll_interval.is_some(), "--spool-poll-interval"),
        ] {
            if given {
                anyhow::bail!(
                    "{flag} only applies to span forwarding: add --otlp-endpoint \
                     (or set OTEL_EXPORTER_OTLP_ENDPOINT), or leave it out"
                );
            }
        }
        return Ok(None);
    };
    let positive = |d: Option<Duration>, default: Duration, flag: &str| match d {
        Some(d) if d.is_zero() => Err(anyhow::anyhow!("{flag} must be longer than 0")),
        Some(d) => Ok(d),
        None => Ok(default),
    };
    Ok(Some(ForwardSettings {
        target,
        root: flags.root.clone(),
        batch_bytes: match flags.otlp_batch_bytes {
            Some(0) => anyhow::bail!("--otlp-batch-bytes must be at least 1"),
            Some(n) => n,
            None => forward::DEFAULT_BATCH_BYTES,
        },
        poll_interval: positive(
            flags.spool_poll_interval,
            forward::DEFAULT_POLL_INTERVAL,
            "--spool-poll-interval",
        )?,
        max_backoff: positive(
            flags.otlp_max_backoff,
            forward::DEFAULT_MAX_BACKOFF,
            "--otlp-max-backoff",
        )?,
    }))
}

/// Cgroup files stay open between scrapes (about 9 per container): lift the soft
/// descriptor limit to the hard one. Needs no privilege; past the limit, files are
/// opened and closed at each scrape instead.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                log::warn!(
                    "raising the open file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::warn!("cannot watch SIGTERM/SIGINT; stop the exporter with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
