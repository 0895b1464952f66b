//! `lucid-exporter`: parse the flags, start the HTTP server, stop on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

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
    /// OTLP/HTTP endpoint to forward the runtime's spooled spans to.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
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
    if flags.otlp_endpoint.is_some() {
        anyhow::bail!(
            "--otlp-endpoint: span forwarding is not available in this build; \
             leave the flag out (the runtime keeps its spans in its spool)"
        );
    }
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
    runtime.block_on(async move {
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
        let metrics = server::Metrics::new(exporter);
        server::serve(listener, metrics, shutdown_signal()).await;
        log::info!("stopped");
        Ok(())
    })
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
