//! The HTTP side: `/metrics`, `/healthz`, on hyper's HTTP/1 server.
//!
//! A scrape storm stays cheap and bounded: concurrent `/metrics` requests
//! share one collection (a request waiting while another scrape runs takes
//! that scrape's result when it finished after the request arrived), at most
//! [`MAX_CONNECTIONS`] connections are served at once (the rest wait in the
//! kernel's listen queue), and a connection that sends no request within
//! [`HEADER_TIMEOUT`] is closed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};

use crate::scrape::{Exporter, SelfMetrics};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send a request's headers (also the idle keep-alive limit).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The collector behind the HTTP server, with the last result shared by concurrent scrapes.
pub struct Metrics {
    exporter: Arc<Exporter>,
    last: Mutex<Option<(Instant, Bytes)>>,
}

impl Metrics {
    /// Serves `exporter`'s metrics.
    pub fn new(exporter: Arc<Exporter>) -> Arc<Self> {
        Arc::new(Metrics {
            exporter,
            last: Mutex::new(None),
        })
    }

    /// The exporter's own metrics.
    pub fn self_metrics(&self) -> Arc<SelfMetrics> {
        self.exporter.self_metrics()
    }

    /// The exposition text: a fresh scrape, or one that finished after this call began.
    pub async fn body(&self) -> Bytes {
        let arrived = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((finished, body)) = last.as_ref() {
            if *finished >= arrived {
                return body.clone();
            }
        }
        let exporter = self.exporter.clone();
        let text = match tokio::task::spawn_blocking(move || exporter.scrape()).await {
            Ok(text) => text,
            Err(e) => {
                log::error!("scrape failed: {e}");
                String::new()
            }
        };
        let body = Bytes::from(text);
        *last = Some((Instant::now(), body.clone()));
        body
    }
}

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn route(metrics: Arc<Metrics>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"only GET and HEAD\n"),
        );
    }
    match req.uri().path() {
        "/metrics" => response(StatusCode::OK, TEXT_FORMAT, metrics.body().await),
        "/healthz" => response(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        "/" => response(
            StatusCode::OK,
            "text/html",
            Bytes::from_static(
                b"<html><body><h1>lucid-exporter</h1><a href=\"/metrics\">/metrics</a> <a href=\"/healthz\">/healthz</a></body></html>\n",
            ),
        ),
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found: try /metrics\n"),
        ),
    }
}

/// Serves HTTP on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        // Wait for a free slot before accepting: extra clients queue in the kernel.
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: count, back off briefly, go on.
                    log::warn!("accepting a connection: {e}");
                    metrics.self_metrics().error("http", 1);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn({
                let metrics = metrics.clone();
                move |req| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(route(metrics, req).await) }
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                log::debug!("http connection: {e}");
                if !e.is_incomplete_message() && !e.is_timeout() {
                    metrics.self_metrics().error("http", 1);
                }
            }
        });
    }
}
