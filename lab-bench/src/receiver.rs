//! An in-process OTLP trace receiver (gRPC or HTTP/protobuf) that keeps
//! every span it gets, and can be stopped, restarted or made to hang to
//! play a collector in trouble.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    /// The value of OTEL_EXPORTER_OTLP_PROTOCOL.
    pub fn env_value(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// One received span with the service that sent it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub resource: Vec<KeyValue>,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn name(&self) -> &str {
        &self.span.name
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// Empty for a root span.
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    pub fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }

    pub fn is_error(&self) -> bool {
        self.span.status.as_ref().is_some_and(|s| s.code == 2)
    }

    pub fn status_message(&self) -> &str {
        self.span.status.as_ref().map_or("", |s| s.message.as_str())
    }

    pub fn start_ns(&self) -> u64 {
        self.span.start_time_unix_nano
    }

    pub fn end_ns(&self) -> u64 {
        self.span.end_time_unix_nano
    }

    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_ns().saturating_sub(self.start_ns()))
    }

    /// A span attribute, rendered as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        find(&self.span.attributes, key)
    }

    /// A resource attribute, rendered as text.
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        find(&self.resource, key)
    }
}

fn find(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(text)
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct Shared {
    spans: Mutex<Vec<ReceivedSpan>>,
    arrived: Notify,
    hang: AtomicBool,
    exports: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<ReceivedSpan>> {
        // A panicking test thread must not hide what was received.
        self.spans.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn accept(&self, request: ExportTraceServiceRequest) {
        self.exports.fetch_add(1, Ordering::Relaxed);
        if self.hang.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        let mut received = Vec::new();
        for resource_spans in request.resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            let service = find(&resource, "service.name").unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        resource: resource.clone(),
                        span,
                    });
                }
            }
        }
        self.lock().extend(received);
        self.arrived.notify_waiters();
    }
}

struct GrpcSink(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.accept(request.into_inner()).await;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The receiver. Its server runs on a runtime of its own, so that
/// [`OtlpReceiver::stop`] drops every connection, as a crashed collector would.
pub struct OtlpReceiver {
    protocol: Protocol,
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl OtlpReceiver {
    /// Starts on a free port of 127.0.0.1.
    pub fn start(protocol: Protocol) -> anyhow::Result<Self> {
        Self::start_at(protocol, "127.0.0.1:0".parse()?)
    }

    /// Starts on `addr`, e.g. where an instance already expects its collector.
    pub fn start_at(protocol: Protocol, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = StdTcpListener::bind(addr)
            .with_context(|| format!("binding the receiver on {addr}"))?;
        let addr = listener.local_addr()?;
        let receiver = Self {
            protocol,
            addr,
            shared: Arc::default(),
            runtime: Mutex::new(None),
        };
        receiver.serve(listener)?;
        Ok(receiver)
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The base URL for OTEL_EXPORTER_OTLP_ENDPOINT.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The variables that point an instance at this receiver.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), self.endpoint()),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL".into(),
                self.protocol.env_value().into(),
            ),
        ]
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.lock().clone()
    }

    pub fn span_count(&self) -> usize {
        self.shared.lock().len()
    }

    /// Export requests seen, answered or not.
    pub fn export_requests(&self) -> u64 {
        self.shared.exports.load(Ordering::Relaxed)
    }

    pub fn clear(&self) {
        self.shared.lock().clear();
    }

    /// Waits until `done` holds for the spans received so far; gives back the
    /// spans either way, with `Err` when `timeout` passed first.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>, Vec<ReceivedSpan>> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            {
                let spans = self.shared.lock();
                if done(&spans) {
                    return Ok(spans.clone());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.spans());
            }
            let _ = tokio::time::timeout(left, arrived).await;
        }
    }

    /// Answer exports (false) or take them and never answer (true).
    pub fn set_hang(&self, hang: bool) {
        self.shared.hang.store(hang, Ordering::Relaxed);
    }

    /// Closes the port and every open connection.
    pub fn stop(&self) {
        if let Some(runtime) = self.runtime_slot().take() {
            runtime.shutdown_background();
        }
    }

    /// Listens again on the same port.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.stop();
        let listener = StdTcpListener::bind(self.addr)
            .with_context(|| format!("binding the receiver again on {}", self.addr))?;
        self.serve(listener)
    }

    fn runtime_slot(&self) -> MutexGuard<'_, Option<tokio::runtime::Runtime>> {
        self.runtime.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self, listener: StdTcpListener) -> anyhow::Result<()> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-receiver")
            .enable_all()
            .build()?;
        let shared = self.shared.clone();
        let protocol = self.protocol;
        runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => return eprintln!("receiver: {error}"),
            };
            let served = match protocol {
                Protocol::Grpc => tonic::transport::Server::builder()
                    .serve_with_incoming(
                        TraceServiceServer::new(GrpcSink(shared)),
                        tonic::transport::server::TcpIncoming::from(listener),
                    )
                    .await
                    .map_err(anyhow::Error::from),
                Protocol::HttpProtobuf => serve_http(listener, shared).await,
            };
            if let Err(error) = served {
                eprintln!("receiver: {error:#}");
            }
        });
        *self.runtime_slot() = Some(runtime);
        Ok(())
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve_http(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> anyhow::Result<()> {
    use poem::listener::TcpAcceptor;
    use poem::{EndpointExt as _, Route, post};

    #[poem::handler]
    async fn traces(
        body: poem::Body,
        poem::web::Data(shared): poem::web::Data<&Arc<Shared>>,
    ) -> poem::Result<poem::Response> {
        let bytes = body.into_bytes().await?;
        let request = ExportTraceServiceRequest::decode(bytes).map_err(|e| {
            poem::Error::from_string(e.to_string(), poem::http::StatusCode::BAD_REQUEST)
        })?;
        shared.accept(request).await;
        Ok(poem::Response::builder()
            .content_type("application/x-protobuf")
            .body(ExportTraceServiceResponse::default().encode_to_vec()))
    }

    let app = Route::new().at("/v1/traces", post(traces)).data(shared);
    poem::Server::new_with_acceptor(TcpAcceptor::from_tokio(listener)?)
        .run(app)
        .await
        .map_err(anyhow::Error::from)
}
