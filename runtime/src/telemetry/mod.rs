//! Telemetry: every lifecycle step is an OpenTelemetry span, and one
//! container is one trace across the separate `create`, `start`, `kill` and
//! `delete` commands. This module owns everything OpenTelemetry; the rest of
//! the code opens `tracing` spans and calls [`step`].
//!
//! - [`init`] sets up the SDK from the standard `OTEL_*` variables (or
//!   nothing, when they turn telemetry off).
//! - [`begin_command`] opens the command's span (`create`, `start`, …),
//!   starting at the moment the process started, as a child of the
//!   container's root span; [`finish`] ends it and flushes.
//! - Finished spans are kept in memory and written at the end of the command:
//!   to the spool under the state root (`docs/spool.md`), and, with
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` set, straight to the collector within a
//!   bounded time. The runtime never waits on the network beyond that bound.
//! - Nothing here starts a thread: export happens on the command's own thread
//!   once the container's processes are cloned.

mod collect;
pub mod context;
mod export;
mod grpc;
mod http;
/// The span spool: `lucid-layout`'s, shared with the exporter.
pub use lucid_layout::spool;
pub mod waterfall;

use std::cell::RefCell;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, ContextGuard, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{
    Config, IdGenerator, RandomIdGenerator, SamplingDecision, SdkTracer, SdkTracerProvider,
    SpanData, SpanEvents, SpanLinks,
};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use context::{parse_traceparent, ContainerTrace, TraceIds, TraceparentError};
pub use export::Protocol;

use crate::state::PhaseTiming;

/// The annotation that hands `TRACEPARENT` to the container's process when
/// set to `"true"`.
pub const INJECT_ANNOTATION: &str = "lucid.otel/inject-traceparent";
/// The attribute holding a step's on-CPU time in nanoseconds (of the lucid
/// process for runtime steps, of the init process for in-init steps).
pub const CPU_ATTRIBUTE: &str = "lucid.cpu_ns";
/// How long a direct OTLP export may take when `OTEL_EXPORTER_OTLP_TIMEOUT`
/// does not say.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(500);
/// The name of the container's root span.
pub const ROOT_SPAN: &str = "container";
const SCOPE: &str = "lucid";

/// Where finished spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// Only to the spool (the default).
    Spool,
    /// To an OTLP endpoint within `timeout`, and to the spool marked as shipped.
    Otlp {
        /// The wire protocol.
        protocol: export::Protocol,
        /// The bound on the whole export.
        timeout: Duration,
    },
}

/// Telemetry settings read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Whether spans are recorded at all.
    pub enabled: bool,
    /// Where they go.
    pub export: Export,
    /// Problems with the variables, to warn about once.
    pub problems: Vec<String>,
}

impl Settings {
    /// Reads `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`, the OTLP endpoint,
    /// protocol and timeout variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let exporters = var("OTEL_TRACES_EXPORTER").unwrap_or_else(|| "otlp".into());
        let exporters: Vec<String> = exporters
            .split(',')
            .map(|e| e.trim().to_ascii_lowercase())
            .collect();
        let none = exporters.iter().all(|e| e == "none");
        if !none && !exporters.iter().any(|e| e == "otlp") {
            problems.push(format!(
                "OTEL_TRACES_EXPORTER={}: lucid exports otlp or none; spans go to the spool",
                exporters.join(",")
            ));
        }
        if disabled || none {
            return Settings {
                enabled: false,
                export: Export::Spool,
                problems,
            };
        }
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let export = match endpoint {
            None => Export::Spool,
            Some(_) => {
                let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
                let protocol = match protocol.as_deref() {
                    None | Some("http/protobuf") => export::Protocol::HttpProtobuf,
                    Some("http/json") => export::Protocol::HttpJson,
                    Some("grpc") => export::Protocol::Grpc,
                    Some(other) => {
                        problems.push(format!(
                            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not one of grpc, http/protobuf, http/json: using http/protobuf"
                        ));
                        export::Protocol::HttpProtobuf
                    }
                };
                let timeout = var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
                    .or_else(|| var("OTEL_EXPORTER_OTLP_TIMEOUT"))
                    .and_then(|v| match v.parse::<u64>() {
                        Ok(ms) => Some(Duration::from_millis(ms)),
                        Err(_) => {
                            problems.push(format!(
                                "OTEL_EXPORTER_OTLP_TIMEOUT={v} is not a number of milliseconds: using {}ms",
                                DEFAULT_EXPORT_TIMEOUT.as_millis()
                            ));
                            None
                        }
                    })
                    .unwrap_or(DEFAULT_EXPORT_TIMEOUT);
                Export::Otlp { protocol, timeout }
            }
        };
        Settings {
            enabled: true,
            export,
            problems,
        }
    }
}

/// The SDK, once set up.
struct Active {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    collected: collect::Collected,
    resource: Resource,
    root: PathBuf,
    export: Export,
    process_start: SystemTime,
    sampler: Box<dyn opentelemetry_sdk::trace::ShouldSample>,
}

/// The command in progress.
struct Command {
    container: String,
    /// The command span's context (attached as the current context).
    cx: Context,
    _guard: ContextGuard,
    trace: ContainerTrace,
    /// This command began the container's trace (`create`, `run`).
    began_trace: bool,
    /// The container's life ended in this command (it was destroyed): its
    /// root span ends with the command's, with the init pid it had.
    ended: Option<(ContainerTrace, i32)>,
    /// The command found no container (no state directory): it records
    /// nothing, or its lone trace would hide the last container of that ID
    /// from `lucid trace` (containerd's shim runs `delete --force` after
    /// `delete`, podman's clean-up may delete twice).
    no_container: bool,
}

static ACTIVE: OnceLock<Active> = OnceLock::new();
static WARNED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static COMMAND: RefCell<Option<Command>> = const { RefCell::new(None) };
}

/// Logs a telemetry problem: the first as a warning, later ones at debug
/// level, so that one broken setting does not flood the log.
fn warn_once(message: impl Display) {
    if WARNED.swap(true, Ordering::Relaxed) {
        log::debug!("telemetry: {message}");
    } else {
        log::warn!("telemetry: {message}");
    }
}

/// Sets up telemetry for this process from the environment; `root` is the
/// state root (the spool lives under it). Never fails: a problem is logged
/// once and telemetry carries on or stays off. [`begin_command`] calls it,
/// so commands that open no span (`list`, `state`) pay nothing.
pub fn init(root: &Path) {
    if ACTIVE.get().is_some() {
        return;
    }
    let process_start = process_start_time();
    let settings = Settings::from_vars(|name| std::env::var(name).ok());
    for problem in &settings.problems {
        warn_once(problem);
    }
    if !settings.enabled {
        return;
    }
    // The SDK's detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
    // without either naming the service, it is `lucid`.
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let mut builder = Resource::builder().with_attributes([
        KeyValue::new("container.runtime.name", "lucid"),
        KeyValue::new("container.runtime.version", env!("CARGO_PKG_VERSION")),
    ]);
    if !named {
        builder = builder.with_service_name("lucid");
    }
    let resource = builder.build();
    let collected = collect::Collected::default();
    let config = Config::default();
    let sampler = config.sampler;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(collected.processor())
        .with_resource(resource.clone())
        .with_sampler(sampler.box_clone())
        .build();
    let scope = InstrumentationScope::builder(SCOPE)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let tracer = provider.tracer_with_scope(scope);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer.clone())
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false);
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry().with(layer);
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        // Only a second init in one process (tests) gets here.
        return;
    }
    let _ = ACTIVE.set(Active {
        provider,
        tracer,
        collected,
        resource,
        root: root.to_path_buf(),
        export: settings.export,
        process_start,
        sampler,
    });
}

/// Whether spans are being recorded.
pub fn enabled() -> bool {
    ACTIVE.get().is_some()
}

/// How a command finds the container's trace.
#[derive(Debug, Clone, Copy)]
pub enum Join {
    /// Begin it (`create`, `run`): join the caller's `TRACEPARENT`, or start
    /// a new trace.
    New,
    /// Join the trace saved in the container's state.
    Saved,
}

/// Opens the span of command `name` on `container` (setting telemetry up
/// first), starting when the process started, and makes it the parent of
/// every span opened after. `root` is the state root.
pub fn begin_command(root: &Path, name: &'static str, container: &str, join: Join) {
    init(root);
    let Some(active) = ACTIVE.get() else {
        return;
    };
    let start_ns = time_ns(active.process_start);
    let mut no_container = false;
    let (trace, began_trace) = match join {
        Join::New => (new_trace(active, start_ns), true),
        Join::Saved => match saved_trace(root, container) {
            Some(trace) => (trace, false),
            // No readable trace: this command's spans stand alone.
            None => {
                no_container =
                    !std::fs::symlink_metadata(root.join(container)).is_ok_and(|m| m.is_dir());
                (new_trace_without_caller(active, start_ns), false)
            }
        },
    };
    let root_cx = trace
        .root_context()
        .unwrap_or_else(|_| SpanContext::empty_context());
    let parent = Context::new().with_remote_span_context(root_cx);
    let span = active
        .tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(active.process_start)
        .with_attributes([
            KeyValue::new("container.id", container.to_owned()),
            KeyValue::new("process.pid", i64::from(std::process::id())),
        ])
        .start_with_context(&active.tracer, &parent);
    let cx = parent.with_span(span);
    // The time before this command's first step: exec, loading, parsing the
    // command line, setting telemetry up.
    let mut start = active
        .tracer
        .span_builder("lucid.start")
        .with_start_time(active.process_start)
        .start_with_context(&active.tracer, &cx);
    {
        use opentelemetry::trace::Span as _;
        start.end();
    }
    let guard = cx.clone().attach();
    COMMAND.with(|c| {
        *c.borrow_mut() = Some(Command {
            container: container.to_owned(),
            cx,
            _guard: guard,
            trace,
            began_trace,
            ended: None,
            no_container,
        })
    });
}

/// The container's trace as this command knows it, for `create` to save in
/// the state.
pub fn container_trace() -> Option<ContainerTrace> {
    COMMAND.with(|c| c.borrow().as_ref().map(|c| c.trace.clone()))
}

/// The `TRACEPARENT` value the container's process gets when the spec asks
/// for it with [`INJECT_ANNOTATION`].
pub fn traceparent_for(annotations: &std::collections::HashMap<String, String>) -> Option<String> {
    if annotations.get(INJECT_ANNOTATION).map(String::as_str) != Some("true") {
        return None;
    }
    container_trace()?.traceparent()
}

fn new_trace(active: &Active, start_ns: u64) -> ContainerTrace {
    let caller = match std::env::var("TRACEPARENT") {
        Ok(value) if !value.trim().is_empty() => match parse_traceparent(&value) {
            Ok(cx) => Some(cx),
            Err(e) => {
                warn_once(format!("{e}: starting a new trace"));
                None
            }
        },
        _ => None,
    };
    match caller {
        Some(cx) => {
            let tracestate = std::env::var("TRACESTATE").unwrap_or_default();
            let tracestate = match tracestate.parse::<TraceState>() {
                Ok(_) => tracestate,
                Err(_) => {
                    warn_once(format!("malformed TRACESTATE {tracestate:?}: dropped"));
                    String::new()
                }
            };
            ContainerTrace {
                trace_id: cx.trace_id().to_string(),
                span_id: RandomIdGenerator::default().new_span_id().to_string(),
                parent_span_id: cx.span_id().to_string(),
                sampled: decide(active, cx.trace_id(), Some(&cx)),
                tracestate,
                start_ns,
            }
        }
        None => new_trace_without_caller(active, start_ns),
    }
}

fn new_trace_without_caller(active: &Active, start_ns: u64) -> ContainerTrace {
    let ids = RandomIdGenerator::default();
    let trace_id = ids.new_trace_id();
    ContainerTrace {
        trace_id: trace_id.to_string(),
        span_id: ids.new_span_id().to_string(),
        parent_span_id: String::new(),
        sampled: decide(active, trace_id, None),
        tracestate: String::new(),
        start_ns,
    }
}

/// Asks the configured sampler (`OTEL_TRACES_SAMPLER`) about the root span.
fn decide(active: &Active, trace_id: TraceId, caller: Option<&SpanContext>) -> bool {
    let parent = caller.map(|cx| Context::new().with_remote_span_context(cx.clone()));
    let result = active.sampler.should_sample(
        parent.as_ref(),
        trace_id,
        ROOT_SPAN,
        &SpanKind::Internal,
        &[],
        &[],
    );
    result.decision == SamplingDecision::RecordAndSample
}

/// Reads only the trace from a container's state; warns once when the state
/// holds one that cannot be used.
fn saved_trace(root: &Path, container: &str) -> Option<ContainerTrace> {
    #[derive(serde::Deserialize)]
    struct TraceOnly {
        #[serde(default)]
        trace: Option<ContainerTrace>,
    }
    if crate::state::validate_id(container).is_err() {
        return None;
    }
    let path = root.join(container).join(crate::state::STATE_FILE);
    // As the state's own readers read it: no link followed, bounded.
    let root_fd = crate::state::files::open_root(root).ok()?;
    let text = crate::state::files::read(
        std::os::fd::AsFd::as_fd(&root_fd),
        &Path::new(container).join(crate::state::STATE_FILE),
        crate::state::files::MAX_FILE_BYTES,
    )
    .ok()?;
    let trace = match serde_json::from_slice::<TraceOnly>(&text) {
        Ok(state) => state.trace?,
        Err(e) => {
            warn_once(format!(
                "{}: cannot read the container's trace ({e}): this command's spans start a new trace",
                path.display()
            ));
            return None;
        }
    };
    match trace.ids() {
        Ok(_) => Some(trace),
        Err(e) => {
            warn_once(format!(
                "{}: {e}: this command's spans start a new trace",
                path.display()
            ));
            None
        }
    }
}

/// The waterfall of container `id`'s trace, read from the spool under
/// `root`: the trace named in its state while it exists, else the most
/// recent one spooled for that ID.
pub fn load_waterfall(root: &Path, id: &str) -> Result<waterfall::Waterfall, spool::SpoolError> {
    let preferred = saved_trace(root, id).map(|t| format!("{}-{}", t.trace_id, t.span_id));
    let spool = spool::Spool::new(root);
    let dir = spool.find(id, preferred.as_deref())?;
    let trace = spool.read(&dir)?;
    Ok(waterfall::build(id, &trace.batches))
}

/// Runs `f` inside `span`; an error ends the span with error status and the
/// error's message. Records the step's on-CPU time.
pub fn step<T, E: Display>(span: tracing::Span, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let recording = !span.is_disabled();
    let _entered = span.enter();
    let cpu = if recording { cpu_time_ns() } else { 0 };
    let result = f();
    if recording {
        span.set_attribute(
            CPU_ATTRIBUTE,
            cpu_time_ns().saturating_sub(cpu).min(i64::MAX as u64) as i64,
        );
        if let Err(e) = &result {
            span.set_status(Status::error(e.to_string()));
        }
    }
    result
}

/// Sets an attribute on the current span (`process.pid` once it is known, …).
pub fn annotate(key: &'static str, value: impl Into<opentelemetry::Value>) {
    if !enabled() {
        return;
    }
    let span = tracing::Span::current();
    if span.is_none() {
        // Directly in the command's span, which is not a `tracing` span.
        Context::current()
            .span()
            .set_attribute(KeyValue::new(key, value));
    } else {
        span.set_attribute(key, value);
    }
}

/// The context new spans hang off: the current `tracing` span's, or the
/// command's span when no `tracing` span is open.
fn current_context() -> Context {
    let span = tracing::Span::current();
    if span.is_none() {
        Context::current()
    } else {
        span.context()
    }
}

/// Emits phases measured elsewhere (inside the init process) as children of
/// the current span, with their own start and end times.
pub fn record_phases(phases: &[PhaseTiming]) {
    let Some(active) = ACTIVE.get() else {
        return;
    };
    let parent = current_context();
    for phase in phases {
        let mut attributes = vec![KeyValue::new("lucid.in_init", true)];
        if let Some(cpu) = phase.cpu_ns {
            attributes.push(KeyValue::new(
                CPU_ATTRIBUTE,
                cpu.min(i64::MAX as u64) as i64,
            ));
        }
        for (key, value) in &phase.attributes {
            attributes.push(KeyValue::new(key.clone(), value.clone()));
        }
        let mut span = active
            .tracer
            .span_builder(phase.name.clone())
            .with_start_time(ns_time(phase.start_ns))
            .with_attributes(attributes)
            .start_with_context(&active.tracer, &parent);
        use opentelemetry::trace::Span as _;
        if let Some(error) = &phase.error {
            span.set_status(Status::error(error.clone()));
        }
        span.end_with_timestamp(ns_time(phase.end_ns.max(phase.start_ns)));
    }
}

/// Marks the end of the container's life (it was destroyed): its root span,
/// from the start of `create`, ends with the current command.
pub fn end_container(trace: Option<&ContainerTrace>, pid: i32) {
    let Some(trace) = trace else {
        return;
    };
    COMMAND.with(|c| {
        if let Some(command) = c.borrow_mut().as_mut() {
            command.ended = Some((trace.clone(), pid));
        }
    });
}

fn emit_root(
    active: &Active,
    trace: &ContainerTrace,
    container: &str,
    pid: i32,
    error: Option<&str>,
) {
    let Ok((trace_id, span_id)) = trace.ids() else {
        return;
    };
    if !trace.sampled {
        return;
    }
    let parent_span_id = SpanId::from_hex(&trace.parent_span_id).unwrap_or(SpanId::INVALID);
    let mut attributes = vec![KeyValue::new("container.id", container.to_owned())];
    if pid > 0 {
        attributes.push(KeyValue::new("process.pid", i64::from(pid)));
    }
    let data = SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            trace.tracestate.parse().unwrap_or(TraceState::NONE),
        ),
        parent_span_id,
        parent_span_is_remote: parent_span_id != SpanId::INVALID,
        span_kind: SpanKind::Internal,
        name: ROOT_SPAN.into(),
        start_time: ns_time(trace.start_ns),
        end_time: SystemTime::now(),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match error {
            Some(message) => Status::error(message.to_owned()),
            None => Status::Ok,
        },
        instrumentation_scope: InstrumentationScope::builder(SCOPE)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    };
    active.collected.push(data);
}

/// Writes out the spans finished so far (spool, and OTLP when configured),
/// without ending the command; the flush is a span itself (written with the
/// next flush). `run` calls it once the container started.
pub fn flush() {
    let Some(active) = ACTIVE.get() else {
        return;
    };
    let _span = tracing::info_span!("telemetry.flush").entered();
    COMMAND.with(|c| {
        if let Some(command) = c.borrow().as_ref() {
            let batch = export::Batch::encode(active, active.collected.take());
            let pending = export::prepare(active, command);
            export::flush(active, batch, pending);
        }
    });
}

/// Ends the command's span (with error status and the message when the
/// command failed) and flushes. When a command that began the container's
/// trace fails, the container's life is over too: its root span ends.
pub fn finish(error: Option<&str>) {
    let Some(active) = ACTIVE.get() else {
        return;
    };
    let Some(command) = COMMAND.with(|c| c.borrow_mut().take()) else {
        return;
    };
    if command.no_container && command.ended.is_none() {
        drop(active.collected.take());
        let _ = active.provider.shutdown_with_timeout(Duration::ZERO);
        return;
    }
    // Encode what has finished while the command's span still runs, so the
    // span accounts for it; only its own end and the root span are left.
    let mut batch = export::Batch::encode(active, active.collected.take());
    let pending = export::prepare(active, &command);
    let span = command.cx.span();
    if let Some(message) = error {
        span.set_status(Status::error(message.to_owned()));
    }
    span.end();
    match &command.ended {
        Some((trace, pid)) => emit_root(active, trace, &command.container, *pid, None),
        // A command that began the container's trace and failed leaves no container.
        None if command.began_trace && error.is_some() => {
            emit_root(active, &command.trace, &command.container, 0, error)
        }
        None => {}
    }
    batch.append(export::Batch::encode(active, active.collected.take()));
    export::flush(active, batch, pending);
    // Nothing is exported at drop: every span was flushed above.
    let _ = active.provider.shutdown_with_timeout(Duration::ZERO);
}

/// When this process started: now, less its on-CPU time and its run-queue
/// time since fork, so that the command's span covers exec and loading too.
/// The on-CPU time comes from the CPU-time clock, which is exact now
/// (`/proc/self/schedstat`'s own figure lags by up to a scheduler tick); the
/// run-queue time from `schedstat`, which is complete while the process
/// runs. A process that slept before `main` (it does not) would be placed
/// too late, never too early.
fn process_start_time() -> SystemTime {
    // Read in this order (wait, CPU, clock): a preemption between the reads
    // then places the start later, never earlier.
    let waiting = std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let on_cpu = crate::procfs::cpu_time_ns(libc::CLOCK_THREAD_CPUTIME_ID);
    let now = SystemTime::now();
    now.checked_sub(Duration::from_nanos(on_cpu + waiting))
        .unwrap_or(now)
}

/// This process's on-CPU time (all threads; it has one).
fn cpu_time_ns() -> u64 {
    crate::procfs::cpu_time_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn ns_time(ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
}

fn time_ns(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        Settings::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn spans_are_spooled_by_default() {
        let s = settings(&[]);
        assert!(s.enabled && s.problems.is_empty());
        assert_eq!(s.export, Export::Spool);
    }

    #[test]
    fn sdk_disabled_and_exporter_none_turn_telemetry_off() {
        assert!(!settings(&[("OTEL_SDK_DISABLED", "true")]).enabled);
        assert!(!settings(&[("OTEL_SDK_DISABLED", "TRUE")]).enabled);
        assert!(settings(&[("OTEL_SDK_DISABLED", "false")]).enabled);
        assert!(!settings(&[("OTEL_TRACES_EXPORTER", "none")]).enabled);
    }

    #[test]
    fn an_endpoint_exports_directly_with_the_protocol_and_a_bound() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]);
        assert_eq!(
            s.export,
            Export::Otlp {
                protocol: export::Protocol::HttpProtobuf,
                timeout: DEFAULT_EXPORT_TIMEOUT
            }
        );
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://h:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
        ]);
        assert_eq!(
            s.export,
            Export::Otlp {
                protocol: export::Protocol::Grpc,
                timeout: Duration::from_millis(250)
            }
        );
    }

    #[test]
    fn unknown_values_are_reported_not_ignored() {
        let s = settings(&[("OTEL_TRACES_EXPORTER", "zipkin")]);
        assert!(s.enabled && s.problems[0].contains("zipkin"), "{s:?}");
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
        ]);
        assert!(s.problems[0].contains("carrier-pigeon"), "{s:?}");
    }

    #[test]
    fn process_start_is_before_now() {
        let start = process_start_time();
        assert!(start <= SystemTime::now());
    }
}
