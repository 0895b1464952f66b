//! Span forwarding: ships the runtime's span spool (`docs/spool.md`) to an
//! OTLP endpoint.
//!
//! One task walks the spool every poll interval ([`queue`]), merges the
//! oldest waiting batches into requests up to a size bound ([`batch`]), sends
//! them ([`otlp`]) and renames each shipped batch `X.json` → `X.json.sent`,
//! so that no batch is sent twice, across restarts too. A failure is retried
//! after an exponential backoff ([`backoff`]) or the delay the endpoint asked
//! for. The exporter never deletes or writes a batch: the runtime bounds the
//! spool and evicts its oldest traces, which the forwarder counts.

pub mod backoff;
pub mod batch;
pub mod otlp;
pub mod queue;
pub mod target;
pub mod tls;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::def;
use crate::scrape::SelfMetrics;
use backoff::Backoff;
use otlp::{Client, Failure, Next, Reason, MAX_RETRY_AFTER, REASONS};
use queue::{Queue, Waiting};
use target::Target;

/// The default bound on the spooled bytes merged into one request.
pub const DEFAULT_BATCH_BYTES: u64 = 1 << 20;
/// How often the spool is walked by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The longest wait between attempts by default.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How spans are forwarded.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// The endpoint.
    pub target: Target,
    /// The runtime's state root (the spool is `<root>/@spool`).
    pub root: PathBuf,
    /// Spooled bytes merged into one request at most (a larger batch goes alone).
    pub batch_bytes: u64,
    /// How often the spool is walked.
    pub poll_interval: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

/// Why forwarding cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The forwarder's metrics could not be registered (a programming error).
    #[error("registering the forwarding metrics: {0}")]
    Registry(#[from] prometheus::Error),
    /// The TLS settings cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Shipped batches could not be marked, so they would be sent again.
    #[error("{path} is not writable ({source}): forwarding renames each shipped batch in the spool; give lucid-exporter write access to the state root")]
    ReadOnly {
        /// The spool or the state root.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// The forwarder's metrics.
struct ForwardMetrics {
    spans: IntCounter,
    requests: IntCounter,
    rejected_spans: IntCounter,
    failures: HashMap<Reason, IntCounter>,
    evicted: IntCounter,
}

impl ForwardMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str| -> Result<IntCounter, prometheus::Error> {
            let d = def(name);
            let c = IntCounter::new(d.name, d.help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let d = def("lucid_forward_failures_total");
        let failures_vec = IntCounterVec::new(Opts::new(d.name, d.help), d.labels)?;
        registry.register(Box::new(failures_vec.clone()))?;
        let failures = REASONS
            .iter()
            .map(|r| (*r, failures_vec.with_label_values(&[r.as_str()])))
            .collect();
        Ok(ForwardMetrics {
            spans: counter("lucid_forward_spans_total")?,
            requests: counter("lucid_forward_requests_total")?,
            rejected_spans: counter("lucid_forward_rejected_spans_total")?,
            failures,
            evicted: counter("lucid_spool_evicted_batches_total")?,
        })
    }
}

/// The forwarding task's state.
pub struct Forwarder {
    client: Client,
    /// The state root the spool is under.
    root: PathBuf,
    queue: Arc<Mutex<Queue>>,
    batch_bytes: u64,
    poll_interval: Duration,
    metrics: ForwardMetrics,
    errors: Arc<SelfMetrics>,
    backoff: Backoff,
    /// No attempt before this.
    retry_at: Option<Instant>,
    /// The failure streak: its last reason and length.
    failing: Option<(Reason, u64)>,
    /// The spool could not be walked last time (logged once).
    walk_failing: bool,
    /// Evictions were reported since the last shipment.
    evictions_reported: bool,
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // The queue stays consistent between calls: a panic leaves nothing half-done.
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fails when the spool (or, before it exists, the state root) cannot be
/// written: shipped batches could not be marked and would be sent again.
fn check_writable(root: &Path, spool: &Path) -> Result<(), ForwardError> {
    use std::os::unix::ffi::OsStrExt;
    let path = if spool.exists() { spool } else { root };
    if !path.exists() {
        return Ok(());
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        ForwardError::ReadOnly {
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        }
    })?;
    // SAFETY: access only reads the NUL-terminated path it is given.
    if unsafe { libc::access(c_path.as_ptr(), libc::W_OK) } != 0 {
        return Err(ForwardError::ReadOnly {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

impl Forwarder {
    /// A forwarder for `settings`, its metrics registered beside the
    /// exporter's own. Must be made inside the tokio runtime.
    pub fn new(settings: ForwardSettings, errors: Arc<SelfMetrics>) -> Result<Self, ForwardError> {
        let queue = Queue::new(&settings.root);
        check_writable(&settings.root, queue.dir())?;
        let metrics = ForwardMetrics::new(errors.registry())?;
        Ok(Forwarder {
            client: Client::new(settings.target)?,
            root: settings.root,
            queue: Arc::new(Mutex::new(queue)),
            batch_bytes: settings.batch_bytes.max(1),
            poll_interval: settings.poll_interval,
            metrics,
            errors,
            backoff: Backoff::new(settings.max_backoff),
            retry_at: None,
            failing: None,
            walk_failing: false,
            evictions_reported: false,
        })
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> String {
        self.client.endpoint()
    }

    /// Ships the spool until `stop` turns true (or its sender goes). A request
    /// in flight then finishes, and its batches are marked, before this returns.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            self.walk().await;
            if self.retry_at.is_none_or(|at| Instant::now() >= at) {
                self.retry_at = None;
                self.ship(&stop).await;
            }
            let mut wake = Instant::now() + self.poll_interval;
            if let Some(at) = self.retry_at {
                wake = wake.min(at);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                changed = stop.changed() => if changed.is_err() { return },
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    async fn walk(&mut self) {
        let queue = self.queue.clone();
        match tokio::task::spawn_blocking(move || lock(&queue).walk()).await {
            Ok(Ok(evicted)) => {
                self.walk_failing = false;
                self.evicted(evicted);
            }
            Ok(Err(e)) => {
                self.errors.error("spool_read", 1);
                if self.walk_failing {
                    log::debug!("{e}");
                } else {
                    log::warn!("{e}: no spans are shipped until the spool can be read");
                    self.walk_failing = true;
                }
            }
            Err(e) => log::error!("walking the span spool: {e}"),
        }
    }

    fn evicted(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.metrics.evicted.inc_by(n);
        let message = format!(
            "{n} spooled span batches were evicted by lucid before they could be shipped \
             (the spool reached its bound, LUCID_SPOOL_MAX_BYTES)"
        );
        if self.evictions_reported {
            log::debug!("{message}");
        } else {
            log::warn!("{message}");
            self.evictions_reported = true;
        }
    }

    /// Sends the waiting batches, oldest first, until none is left, a
    /// failure asks to wait, or `stop` turns true.
    async fn ship(&mut self, stop: &watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let next = lock(&self.queue).next(self.batch_bytes);
            if next.is_empty() {
                return;
            }
            let root = self.root.clone();
            let read = match tokio::task::spawn_blocking(move || batch::read(&root, next)).await {
                Ok(read) => read,
                Err(e) => {
                    log::error!("reading spooled batches: {e}");
                    return;
                }
            };
            let batch::Loaded {
                merged,
                errors,
                vanished,
            } = read;
            let evicted = {
                let mut queue = lock(&self.queue);
                for (waiting, problem) in errors {
                    log::warn!("{problem}: it is not sent");
                    self.errors.error("spool_read", 1);
                    queue.give_up(&waiting);
                }
                queue.vanished(&vanished)
            };
            self.evicted(evicted);
            if merged.batches.is_empty() {
                continue;
            }
            let spans = merged.spans;
            let batches = merged.batches;
            match self.client.export(merged.request).await {
                Ok(accepted) => {
                    self.shipped(batches).await;
                    let rejected = accepted.rejected_spans.min(spans);
                    self.metrics.requests.inc();
                    self.metrics.spans.inc_by(spans - rejected);
                    if rejected > 0 {
                        self.metrics.rejected_spans.inc_by(rejected);
                        log::warn!(
                            "{} accepted a request but refused {rejected} of its {spans} spans: {}",
                            self.client.endpoint(),
                            accepted.message
                        );
                    }
                    if let Some((_, attempts)) = self.failing.take() {
                        log::info!(
                            "shipping spans to {} again, after {attempts} failed attempts",
                            self.client.endpoint()
                        );
                    }
                    self.backoff.reset();
                    self.evictions_reported = false;
                }
                Err(failure) => {
                    if self.failed(&failure, &batches, spans) {
                        return;
                    }
                }
            }
        }
    }

    /// Renames the batches of an accepted request.
    async fn shipped(&mut self, batches: Vec<Waiting>) {
        let queue = self.queue.clone();
        match tokio::task::spawn_blocking(move || lock(&queue).shipped(&batches)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.errors.error("spool_write", 1);
                log::error!(
                    "marking a shipped batch: {e}: it is not sent again by this process, \
                     but would be after a restart"
                );
            }
            Err(e) => log::error!("marking shipped batches: {e}"),
        }
    }

    /// Counts and logs a failed request and decides what comes next; true
    /// when shipping must wait.
    fn failed(&mut self, failure: &Failure, batches: &[Waiting], spans: u64) -> bool {
        if let Some(c) = self.metrics.failures.get(&failure.reason) {
            c.inc();
        }
        self.errors.error("otlp_export", 1);
        let endpoint = self.client.endpoint();
        match failure.reason.next() {
            Next::Retry | Next::Wait => {
                let backoff = match failure.reason.next() {
                    Next::Retry => self.backoff.next_wait(),
                    _ => self.backoff.max(),
                };
                // The delay asked for is a minimum: an endpoint answering
                // `Retry-After: 0` again and again still gets the backoff.
                let wait = match failure.retry_after {
                    Some(asked) => asked.min(MAX_RETRY_AFTER).max(backoff),
                    None => backoff,
                };
                self.retry_at = Some(Instant::now() + wait);
                let streak = match self.failing {
                    Some((reason, n)) if reason == failure.reason => n + 1,
                    _ => 1,
                };
                let message = format!(
                    "shipping spans to {endpoint}: {} ({}); next attempt in {:.1} s",
                    failure.message,
                    failure.reason.as_str(),
                    wait.as_secs_f64()
                );
                if streak == 1 {
                    log::warn!("{message}");
                } else {
                    log::debug!("{message} (attempt {streak})");
                }
                self.failing = Some((failure.reason, streak));
                true
            }
            Next::Split => {
                let mut queue = lock(&self.queue);
                if batches.len() > 1 {
                    log::warn!(
                        "{endpoint} refused a request of {} spooled batches: {}; sending them one by one",
                        batches.len(),
                        failure.message
                    );
                    queue.send_alone(batches);
                } else {
                    for batch in batches {
                        log::warn!(
                            "{endpoint} refused spooled batch {}: {}; it is not sent again",
                            batch.path.display(),
                            failure.message
                        );
                        queue.give_up(batch);
                    }
                    self.metrics.rejected_spans.inc_by(spans);
                }
                false
            }
        }
    }
}
