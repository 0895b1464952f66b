//! Sending one `ExportTraceServiceRequest` to the OTLP endpoint, over
//! OTLP/HTTP (hyper, protobuf or JSON body) or OTLP/gRPC (tonic), and reading
//! the answer as the OTLP specification defines it: which failures may be
//! retried, after how long (`Retry-After`, gRPC `RetryInfo`), and which
//! refuse the request's content.

use std::error::Error as _;
use std::time::Duration;

use http::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::Code;

use super::target::{Protocol, Target};
use super::tls::{client_config, handshake_failure, TlsError};

/// The gRPC method OTLP/gRPC trace export calls.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The most of an answer's body read (an OTLP answer is a few bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest wait a `Retry-After` or `RetryInfo` is followed for, so that a
/// broken value cannot stop shipping for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Why an export failed, as `lucid_forward_failures_total{reason}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No connection: refused, unreachable, name lookup failed.
    Unreachable,
    /// The TLS handshake failed: an untrusted or wrong certificate, or a
    /// peer that does not speak TLS.
    Tls,
    /// No answer within the timeout.
    Timeout,
    /// The endpoint asked to slow down (HTTP 429, gRPC `RESOURCE_EXHAUSTED` with `RetryInfo`).
    Throttled,
    /// A failure the specification calls retryable (HTTP 502, 503, 504; gRPC
    /// `UNAVAILABLE`, `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`,
    /// `OUT_OF_RANGE`, `DATA_LOSS`), or a connection lost mid-request.
    Unavailable,
    /// The endpoint refused every request: wrong path, credentials, or a
    /// server error the specification calls not retryable.
    Refused,
    /// The endpoint refused this request's content (HTTP 400, gRPC `INVALID_ARGUMENT`).
    Rejected,
    /// The request was too large (HTTP 413, gRPC `RESOURCE_EXHAUSTED` without `RetryInfo`).
    TooLarge,
    /// The answer is not HTTP or not gRPC: not an OTLP endpoint.
    NotOtlp,
}

/// Every reason, in the order the metric lists them.
pub const REASONS: &[Reason] = &[
    Reason::Unreachable,
    Reason::Tls,
    Reason::Timeout,
    Reason::Throttled,
    Reason::Unavailable,
    Reason::Refused,
    Reason::Rejected,
    Reason::TooLarge,
    Reason::NotOtlp,
];

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send the same batches again after a backoff (or the delay the endpoint asked for).
    Retry,
    /// The endpoint is misconfigured: try again after the longest backoff.
    Wait,
    /// The batches themselves were refused: send them alone, or give up on a lone one.
    Split,
}

impl Reason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unreachable => "unreachable",
            Reason::Tls => "tls",
            Reason::Timeout => "timeout",
            Reason::Throttled => "throttled",
            Reason::Unavailable => "unavailable",
            Reason::Refused => "refused",
            Reason::Rejected => "rejected",
            Reason::TooLarge => "too_large",
            Reason::NotOtlp => "not_otlp",
        }
    }

    /// What the forwarder does next.
    pub fn next(self) -> Next {
        match self {
            Reason::Unreachable | Reason::Timeout | Reason::Throttled | Reason::Unavailable => {
                Next::Retry
            }
            Reason::Refused | Reason::NotOtlp | Reason::Tls => Next::Wait,
            Reason::Rejected | Reason::TooLarge => Next::Split,
        }
    }
}

/// A failed export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why.
    pub reason: Reason,
    /// How long the endpoint asked to wait, if it said.
    pub retry_after: Option<Duration>,
    /// What happened, for the log.
    pub message: String,
}

impl Failure {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            retry_after: None,
            message: message.into(),
        }
    }
}

/// The endpoint took the request: how many of its spans it refused anyway
/// (an OTLP partial success).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Spans the endpoint refused.
    pub rejected_spans: u64,
    /// Its message about them.
    pub message: String,
}

type HttpClient = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;
/// gRPC goes over the same hyper client and rustls connector as OTLP/HTTP
/// (HTTP/2 only), not tonic's own transport: whether tonic's transport does
/// TLS depends on features that any crate built beside the exporter can turn
/// on, and with them it refuses an `https://` endpoint whose TLS it did not
/// set up itself.
type GrpcClient =
    hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, tonic::body::Body>;

enum Transport {
    Http(Box<HttpClient>),
    Grpc(Box<tonic::client::Grpc<GrpcClient>>),
}

/// A client for one OTLP endpoint; connections are kept and reused.
pub struct Client {
    target: Target,
    transport: Transport,
}

impl Client {
    /// A client for `target`, with TLS for an `https://` endpoint. Connects
    /// lazily; must be made inside the tokio runtime.
    pub fn new(target: Target) -> Result<Self, TlsError> {
        let tls = client_config(target.tls.as_ref())?;
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(target.timeout));
        tcp.set_nodelay(true);
        // The TLS connector also takes plain http:// (h2c for gRPC).
        tcp.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let transport = match target.protocol {
            Protocol::Grpc => {
                let connector = connector.enable_http2().wrap_connector(tcp);
                let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                    .http2_only(true)
                    .pool_idle_timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(1)
                    .build(connector);
                Transport::Grpc(Box::new(tonic::client::Grpc::with_origin(
                    client,
                    target.url.clone(),
                )))
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let connector = connector.enable_http1().wrap_connector(tcp);
                let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(1)
                    .build(connector);
                Transport::Http(Box::new(client))
            }
        };
        Ok(Client { target, transport })
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> String {
        self.target.url.to_string()
    }

    /// Sends `request`, within the target's timeout.
    pub async fn export(&self, request: ExportTraceServiceRequest) -> Result<Accepted, Failure> {
        let sent = match &self.transport {
            Transport::Http(client) => {
                tokio::time::timeout(self.target.timeout, self.http(client, request)).await
            }
            Transport::Grpc(grpc) => {
                tokio::time::timeout(self.target.timeout, self.grpc((**grpc).clone(), request))
                    .await
            }
        };
        match sent {
            Ok(result) => result,
            Err(_) => Err(Failure::new(
                Reason::Timeout,
                format!(
                    "no answer within {} ms (OTEL_EXPORTER_OTLP_TIMEOUT)",
                    self.target.timeout.as_millis()
                ),
            )),
        }
    }

    async fn http(
        &self,
        client: &HttpClient,
        request: ExportTraceServiceRequest,
    ) -> Result<Accepted, Failure> {
        let (content_type, body) = match self.target.protocol {
            Protocol::HttpJson => (
                "application/json",
                serde_json::to_vec(&request).map_err(|e| {
                    Failure::new(Reason::Rejected, format!("encoding the request: {e}"))
                })?,
            ),
            _ => ("application/x-protobuf", request.encode_to_vec()),
        };
        let mut builder = Request::post(self.target.url.clone()).header(CONTENT_TYPE, content_type);
        for (name, value) in &self.target.headers {
            builder = builder.header(name, value);
        }
        let http_request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::new(Reason::Refused, format!("building the request: {e}")))?;
        let response = client
            .request(http_request)
            .await
            .map_err(|e| http_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        http_outcome(status, &headers, &answer)
    }

    async fn grpc(
        &self,
        mut grpc: tonic::client::Grpc<GrpcClient>,
        request: ExportTraceServiceRequest,
    ) -> Result<Accepted, Failure> {
        grpc.ready().await.map_err(|e| {
            let reason = if handshake_failure(&e) {
                Reason::Tls
            } else if connect_failure(&e) {
                Reason::Unreachable
            } else {
                Reason::Unavailable
            };
            Failure::new(reason, error_chain(&e))
        })?;
        let mut headers = HeaderMap::new();
        for (name, value) in &self.target.headers {
            headers.append(name, value.clone());
        }
        let request = tonic::Request::from_parts(
            tonic::metadata::MetadataMap::from_headers(headers),
            tonic::Extensions::default(),
            request,
        );
        let codec =
            tonic_prost::ProstCodec::<ExportTraceServiceRequest, ExportTraceServiceResponse>::default();
        match grpc
            .unary(
                request,
                http::uri::PathAndQuery::from_static(GRPC_EXPORT),
                codec,
            )
            .await
        {
            Ok(response) => Ok(accepted(response.into_inner())),
            Err(status) => Err(grpc_failure(&status)),
        }
    }
}

fn accepted(response: ExportTraceServiceResponse) -> Accepted {
    match response.partial_success {
        Some(p) => Accepted {
            rejected_spans: p.rejected_spans.max(0) as u64,
            message: p.error_message,
        },
        None => Accepted::default(),
    }
}

/// The answer to an OTLP/HTTP request.
fn http_outcome(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Accepted, Failure> {
    if status.is_success() {
        // The body is an ExportTraceServiceResponse, often empty; one that
        // does not decode still means the spans were taken.
        let json = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        if json {
            return Ok(json_partial_success(body));
        }
        return Ok(ExportTraceServiceResponse::decode(body)
            .map(accepted)
            .unwrap_or_default());
    }
    let reason = match status.as_u16() {
        429 => Reason::Throttled,
        502..=504 => Reason::Unavailable,
        400 => Reason::Rejected,
        413 => Reason::TooLarge,
        _ => Reason::Refused,
    };
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    Err(Failure {
        reason,
        retry_after: headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after),
        message: format!("HTTP {status}: {}", text.trim()),
    })
}

/// The partial success in an OTLP-JSON answer. Read by hand: protobuf's
/// JSON mapping writes `rejectedSpans` (an int64) as a string, which the
/// generated types' serde does not read.
fn json_partial_success(body: &[u8]) -> Accepted {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Accepted::default();
    };
    let partial = &value["partialSuccess"];
    let rejected = &partial["rejectedSpans"];
    Accepted {
        rejected_spans: rejected
            .as_u64()
            .or_else(|| rejected.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0),
        message: partial["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// `Retry-After`: a number of seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

fn http_error(e: &hyper_util::client::legacy::Error) -> Failure {
    let message = error_chain(e);
    if handshake_failure(e) {
        return Failure::new(Reason::Tls, message);
    }
    if e.is_connect() {
        return Failure::new(Reason::Unreachable, message);
    }
    // A server that does not speak HTTP/1.1 (a gRPC port, a TLS port).
    let not_http = causes(e).any(|s| {
        s.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_parse() || h.is_parse_status())
    });
    let reason = if not_http {
        Reason::NotOtlp
    } else {
        Reason::Unavailable
    };
    Failure::new(reason, message)
}

/// The failure a gRPC status means.
fn grpc_failure(status: &tonic::Status) -> Failure {
    use tonic_types::StatusExt;
    let retry_info = status
        .get_details_retry_info()
        .map(|info| info.retry_delay.unwrap_or_default());
    let reason = match status.code() {
        _ if handshake_failure(status) => Reason::Tls,
        // The transport's errors arrive as a status with the error as its source.
        _ if connect_failure(status) => Reason::Unreachable,
        Code::Unavailable
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => Reason::Unavailable,
        Code::ResourceExhausted if retry_info.is_some() => Reason::Throttled,
        Code::ResourceExhausted => Reason::TooLarge,
        Code::InvalidArgument => Reason::Rejected,
        // A status the server did not send (the answer was not gRPC).
        Code::Internal | Code::Unknown if status.source().is_some() => Reason::NotOtlp,
        _ => Reason::Refused,
    };
    Failure {
        reason,
        retry_after: retry_info,
        message: format!(
            "gRPC {:?}: {}{}",
            status.code(),
            status.message(),
            status
                .source()
                .map(|s| format!(" ({})", error_chain(s)))
                .unwrap_or_default()
        ),
    }
}

/// An error and its causes. An `io::Error` wrapping another error leads to
/// that error (its own `source` skips it).
pub(super) fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), cause)
}

fn cause<'a>(
    e: &&'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    let e: &'a (dyn std::error::Error + 'static) = *e;
    match e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        Some(inner) => Some(inner),
        None => e.source(),
    }
}

/// Whether an error comes from failing to connect (refused, unreachable, name lookup).
fn connect_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    causes(e).any(|s| {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
            ) {
                return true;
            }
        }
        if s.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(|e| e.is_connect())
        {
            return true;
        }
        // hyper-util's connector: "tcp connect error", "dns error".
        let text = s.to_string();
        text.starts_with("tcp connect error") || text.starts_with("dns error")
    })
}

/// An error and its causes, one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    for s in causes(e) {
        let text = s.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn http_statuses_map_to_the_specifications_retry_rules() {
        let reason = |code: u16| {
            http_outcome(StatusCode::from_u16(code).unwrap(), &HeaderMap::new(), b"")
                .unwrap_err()
                .reason
        };
        assert_eq!(reason(429), Reason::Throttled);
        for code in [502, 503, 504] {
            assert_eq!(reason(code), Reason::Unavailable);
            assert_eq!(reason(code).next(), Next::Retry);
        }
        assert_eq!(reason(400).next(), Next::Split);
        assert_eq!(reason(413), Reason::TooLarge);
        for code in [401, 403, 404, 405, 415, 500] {
            assert_eq!(reason(code), Reason::Refused, "{code}");
            assert_eq!(reason(code).next(), Next::Wait);
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date() {
        let failure = http_outcome(
            StatusCode::SERVICE_UNAVAILABLE,
            &headers(&[("retry-after", "7")]),
            b"busy",
        )
        .unwrap_err();
        assert_eq!(failure.retry_after, Some(Duration::from_secs(7)));
        assert!(failure.message.contains("503") && failure.message.contains("busy"));
        let later =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn a_partial_success_reports_the_rejected_spans() {
        let body = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        let ok = http_outcome(
            StatusCode::OK,
            &headers(&[("content-type", "application/x-protobuf")]),
            &body,
        )
        .unwrap();
        assert_eq!(ok.rejected_spans, 3);
        assert_eq!(ok.message, "too old");
        let json = http_outcome(
            StatusCode::OK,
            &headers(&[("content-type", "application/json")]),
            br#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"m"}}"#,
        )
        .unwrap();
        assert_eq!(json.rejected_spans, 2);
        assert_eq!(json.message, "m");
        assert_eq!(
            http_outcome(StatusCode::OK, &HeaderMap::new(), b"").unwrap(),
            Accepted::default()
        );
    }

    #[test]
    fn grpc_codes_map_to_the_specifications_retry_rules() {
        let reason = |code| grpc_failure(&tonic::Status::new(code, "x")).reason;
        assert_eq!(reason(Code::Unavailable), Reason::Unavailable);
        assert_eq!(reason(Code::Aborted), Reason::Unavailable);
        assert_eq!(reason(Code::ResourceExhausted), Reason::TooLarge);
        assert_eq!(reason(Code::InvalidArgument), Reason::Rejected);
        assert_eq!(reason(Code::Unimplemented), Reason::Refused);
        assert_eq!(reason(Code::Unauthenticated), Reason::Refused);
        use tonic_types::{ErrorDetails, StatusExt};
        let throttled = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        );
        let failure = grpc_failure(&throttled);
        assert_eq!(failure.reason, Reason::Throttled);
        assert_eq!(failure.retry_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_tls_error_is_found_inside_nested_io_errors() {
        // As hyper-rustls hands on tokio-rustls's error.
        let inner = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::General("bad certificate".into()),
        );
        let outer = std::io::Error::other(inner);
        assert!(super::super::tls::handshake_failure(&outer));
        assert!(error_chain(&outer).contains("bad certificate"));
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!super::super::tls::handshake_failure(&plain));
        assert!(connect_failure(&plain));
    }

    /// A server answering every connection with an HTTP/1.1 404.
    fn http1_server() -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = stream.read(&mut [0u8; 4096]);
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        port
    }

    #[tokio::test]
    async fn grpc_to_an_http1_server_is_not_otlp() {
        let port = http1_server();
        let client = Client::new(Target {
            url: format!("http://127.0.0.1:{port}/").parse().unwrap(),
            protocol: Protocol::Grpc,
            headers: Vec::new(),
            timeout: Duration::from_secs(5),
            tls: None,
        })
        .unwrap();
        let failure = client
            .export(ExportTraceServiceRequest::default())
            .await
            .unwrap_err();
        assert_eq!(failure.reason, Reason::NotOtlp, "{failure:?}");
    }

    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_over_http_and_grpc() {
        for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
            let port = closed_port();
            let path = if protocol == Protocol::Grpc {
                "/"
            } else {
                "/v1/traces"
            };
            let client = Client::new(Target {
                url: format!("http://127.0.0.1:{port}{path}").parse().unwrap(),
                protocol,
                headers: Vec::new(),
                timeout: Duration::from_secs(5),
                tls: None,
            })
            .unwrap();
            let failure = client
                .export(ExportTraceServiceRequest::default())
                .await
                .unwrap_err();
            assert_eq!(
                failure.reason,
                Reason::Unreachable,
                "{protocol:?}: {failure:?}"
            );
        }
    }
}
