//! A real OTLP/gRPC receiver for the tests: tonic's `TraceService` server on a
//! loopback port, on a current-thread tokio runtime in a thread of its own,
//! stopped (and joined) when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::otlp::{flatten, Received};

#[derive(Clone, Default)]
struct Collect {
    spans: Arc<Mutex<Vec<Received>>>,
    metadata: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Collect {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = flatten(request.get_ref());
        self.spans
            .lock()
            .expect("the receiver's lock")
            .extend(spans);
        let metadata: Vec<String> = request
            .metadata()
            .iter()
            .filter_map(|entry| match entry {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some(format!("{}: {}", k, v.to_str().ok()?))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        self.metadata
            .lock()
            .expect("the receiver's lock")
            .push(metadata.join("\n"));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The receiver.
pub struct GrpcReceiver {
    addr: SocketAddr,
    spans: Collect,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GrpcReceiver {
    /// Starts a receiver on a free loopback port.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        Self::start_on(listener)
    }

    /// Starts a receiver on `listener` (from `ReservedPort::listen`).
    pub fn start_on(listener: std::net::TcpListener) -> Self {
        Self::start_with(listener, None)
    }

    /// Starts an OTLP/gRPC receiver over TLS with this certificate and key
    /// (PEM) on a free loopback port (`https://127.0.0.1:PORT`).
    pub fn start_tls(identity: (String, String)) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(identity.0, identity.1));
        Self::start_with(listener, Some(tls))
    }

    fn start_with(
        listener: std::net::TcpListener,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Self {
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("a bound address");
        let spans = Collect::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = spans.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let mut server = tonic::transport::Server::builder();
                if let Some(tls) = tls {
                    server = server.tls_config(tls).expect("a TLS configuration");
                }
                server
                    .add_service(TraceServiceServer::new(service))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serving OTLP/gRPC");
            });
        });
        GrpcReceiver {
            addr,
            spans,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:PORT`, for a receiver started with [`GrpcReceiver::start_tls`].
    pub fn tls_endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans
            .spans
            .lock()
            .expect("the receiver's lock")
            .clone()
    }

    /// The ASCII metadata of each request, one `key: value` a line.
    pub fn metadata(&self) -> Vec<String> {
        self.spans
            .metadata
            .lock()
            .expect("the receiver's lock")
            .clone()
    }
}

impl Drop for GrpcReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
