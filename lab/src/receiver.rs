//! An in-process OTLP receiver (gRPC or HTTP/protobuf) that keeps every
//! span, log record and metric point it gets, and can be stopped, restarted
//! or made to hang to play a collector in trouble.

mod signals;

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use tokio::sync::Notify;

pub use signals::{MetricKind, MetricPoint, ReceivedLog};

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
    pub scope: Option<InstrumentationScope>,
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

    /// A span attribute recorded as an integer (not as text).
    pub fn int_attr(&self, key: &str) -> Option<i64> {
        let value = self
            .span
            .attributes
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_ref()?;
        match value.value {
            Some(any_value::Value::IntValue(number)) => Some(number),
            _ => None,
        }
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
        .map(value_text)
}

/// An attribute's or a body's value as text.
pub fn value_text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// The spans of one export request, each with its service, resource and
/// scope, as [`OtlpReceiver`] keeps them (for replaying recorded traffic).
pub fn received_spans(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
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
                    scope: scope_spans.scope.clone(),
                    span,
                });
            }
        }
    }
    received
}

/// A trace id as a number; 0 when it is not 16 bytes.
pub fn trace_id_number(bytes: &[u8]) -> u128 {
    <[u8; 16]>::try_from(bytes).map_or(0, u128::from_be_bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a receiver keeps of each span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    /// Everything, for tests that look at attributes.
    #[default]
    Full,
    /// A [`SpanStub`] only: cheap enough not to steal the benchmark's CPU.
    Stubs,
    /// Nothing: each batch goes to the stream of [`OtlpReceiver::start_streaming`].
    Stream,
}

/// The least a benchmark needs to account for a span.
#[derive(Debug, Clone)]
pub struct SpanStub {
    pub trace_id: u128,
    pub service: Arc<str>,
    pub kind: SpanKind,
}

/// The log records of each export request, as [`OtlpReceiver::stream_logs`] gives them.
pub type LogBatches = tokio::sync::mpsc::UnboundedReceiver<Vec<ReceivedLog>>;

#[derive(Default)]
struct Shared {
    retention: Retention,
    stream: Option<tokio::sync::mpsc::UnboundedSender<Vec<ReceivedSpan>>>,
    spans: Mutex<Vec<ReceivedSpan>>,
    stubs: Mutex<Vec<SpanStub>>,
    /// Kept with [`Retention::Full`]; streamed when a log stream is taken.
    logs: Mutex<Vec<ReceivedLog>>,
    log_stream: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Vec<ReceivedLog>>>>,
    points: Mutex<Vec<MetricPoint>>,
    arrived: Notify,
    hang: AtomicBool,
    /// Export requests of traces, logs and metrics.
    exports: AtomicU64,
    log_exports: AtomicU64,
    metric_exports: AtomicU64,
}

/// Locks a list: a panicking test thread must not hide what was received.
fn locked<T>(list: &Mutex<T>) -> MutexGuard<'_, T> {
    list.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<ReceivedSpan>> {
        // A panicking test thread must not hide what was received.
        self.spans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the export request, and never returns when told to hang.
    async fn arrive(&self) {
        self.exports.fetch_add(1, Ordering::Relaxed);
        if self.hang.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    }

    /// Never returns when told to hang.
    async fn hang_if_told(&self) {
        if self.hang.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    }

    /// Log records are kept in full, streamed, or (stubs) only counted.
    async fn accept_logs(&self, request: Option<ExportLogsServiceRequest>) {
        self.log_exports.fetch_add(1, Ordering::Relaxed);
        self.hang_if_told().await;
        let Some(request) = request else { return };
        let logs = signals::logs_of(request);
        if let Some(stream) = locked(&self.log_stream).as_ref() {
            let _ = stream.send(logs);
            return;
        }
        if self.retention == Retention::Full {
            locked(&self.logs).extend(logs);
            self.arrived.notify_waiters();
        }
    }

    async fn accept_metrics(&self, request: Option<ExportMetricsServiceRequest>) {
        self.metric_exports.fetch_add(1, Ordering::Relaxed);
        self.hang_if_told().await;
        if let Some(request) = request.filter(|_| self.retention == Retention::Full) {
            locked(&self.points).extend(signals::points_of(request));
            self.arrived.notify_waiters();
        }
    }

    /// Whether this retention reads log and metric requests at all: a
    /// counting receiver only counts them, to stay cheap.
    fn reads_logs_and_metrics(&self) -> bool {
        self.retention != Retention::Stubs
    }

    async fn accept_stubs(&self, stubs: Vec<SpanStub>) {
        self.arrive().await;
        self.stubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(stubs);
        self.arrived.notify_waiters();
    }

    async fn accept(&self, request: ExportTraceServiceRequest) {
        self.arrive().await;
        let (mut received, mut stubs) = (Vec::new(), Vec::new());
        for resource_spans in request.resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            let service = find(&resource, "service.name").unwrap_or_default();
            let service_stub: Arc<str> = Arc::from(service.as_str());
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    if self.retention != Retention::Stream {
                        stubs.push(SpanStub {
                            trace_id: trace_id_number(&span.trace_id),
                            service: service_stub.clone(),
                            kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                        });
                    }
                    if matches!(self.retention, Retention::Full | Retention::Stream) {
                        received.push(ReceivedSpan {
                            service: service.clone(),
                            resource: resource.clone(),
                            scope: scope_spans.scope.clone(),
                            span,
                        });
                    }
                }
            }
        }
        if let Some(stream) = &self.stream {
            // The other end gone means its owner is stopping: nothing to keep.
            let _ = stream.send(received);
            return;
        }
        self.stubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(stubs);
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

#[tonic::async_trait]
impl LogsService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.accept_logs(Some(request.into_inner())).await;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.accept_metrics(Some(request.into_inner())).await;
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// The three collector services on one port, each by its path (tonic's own
/// router would bring in a web framework for this one match).
#[derive(Clone)]
struct GrpcRoutes {
    traces: TraceServiceServer<GrpcSink>,
    logs: LogsServiceServer<GrpcSink>,
    metrics: MetricsServiceServer<GrpcSink>,
}

impl GrpcRoutes {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            traces: TraceServiceServer::new(GrpcSink(shared.clone())),
            logs: LogsServiceServer::new(GrpcSink(shared.clone())),
            metrics: MetricsServiceServer::new(GrpcSink(shared)),
        }
    }
}

impl Clone for GrpcSink {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

type GrpcRequest = tonic::codegen::http::Request<tonic::body::Body>;
type GrpcResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl tonic::codegen::Service<GrpcRequest> for GrpcRoutes {
    type Response = GrpcResponse;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<GrpcResponse, std::convert::Infallible>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GrpcRequest) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with("/opentelemetry.proto.collector.logs.") {
            Box::pin(self.logs.call(request))
        } else if path.starts_with("/opentelemetry.proto.collector.metrics.") {
            Box::pin(self.metrics.call(request))
        } else {
            Box::pin(self.traces.call(request))
        }
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

    /// Starts on a free port, keeping only [`SpanStub`]s.
    pub fn start_counting(protocol: Protocol) -> anyhow::Result<Self> {
        Self::start_with(protocol, "127.0.0.1:0".parse()?, Retention::Stubs, None)
    }

    /// Starts on `addr`, e.g. where an instance already expects its collector.
    pub fn start_at(protocol: Protocol, addr: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with(protocol, addr, Retention::Full, None)
    }

    /// Starts on `addr`, keeping nothing: every export request's spans come
    /// out of the returned stream, one batch per request.
    pub fn start_streaming(
        protocol: Protocol,
        addr: SocketAddr,
    ) -> anyhow::Result<(
        Self,
        tokio::sync::mpsc::UnboundedReceiver<Vec<ReceivedSpan>>,
    )> {
        let (sender, batches) = tokio::sync::mpsc::unbounded_channel();
        let receiver = Self::start_with(protocol, addr, Retention::Stream, Some(sender))?;
        Ok((receiver, batches))
    }

    fn start_with(
        protocol: Protocol,
        addr: SocketAddr,
        retention: Retention,
        stream: Option<tokio::sync::mpsc::UnboundedSender<Vec<ReceivedSpan>>>,
    ) -> anyhow::Result<Self> {
        let listener = StdTcpListener::bind(addr)
            .with_context(|| format!("binding the receiver on {addr}"))?;
        let addr = listener.local_addr()?;
        let receiver = Self {
            protocol,
            addr,
            shared: Arc::new(Shared {
                retention,
                stream,
                ..Shared::default()
            }),
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

    /// Spans received, whatever the retention.
    pub fn span_count(&self) -> usize {
        self.stubs().len()
    }

    pub fn stubs(&self) -> Vec<SpanStub> {
        self.shared
            .stubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Export requests of spans seen, answered or not.
    pub fn export_requests(&self) -> u64 {
        self.shared.exports.load(Ordering::Relaxed)
    }

    /// Export requests of log records seen, answered or not.
    pub fn log_export_requests(&self) -> u64 {
        self.shared.log_exports.load(Ordering::Relaxed)
    }

    /// Export requests of metrics seen, answered or not.
    pub fn metric_export_requests(&self) -> u64 {
        self.shared.metric_exports.load(Ordering::Relaxed)
    }

    /// The log records received (kept with [`Retention::Full`] only).
    pub fn logs(&self) -> Vec<ReceivedLog> {
        locked(&self.shared.logs).clone()
    }

    /// The metric points received (kept with [`Retention::Full`] only), in
    /// the order they came: a cumulative metric's latest point is its last.
    pub fn metric_points(&self) -> Vec<MetricPoint> {
        locked(&self.shared.points).clone()
    }

    /// From now on, every export request's log records come out of the
    /// returned stream instead of being kept.
    pub fn stream_logs(&self) -> LogBatches {
        let (sender, batches) = tokio::sync::mpsc::unbounded_channel();
        *locked(&self.shared.log_stream) = Some(sender);
        batches
    }

    /// Waits until `done` holds for the log records received so far; gives
    /// them back either way, with `Err` when `timeout` passed first.
    pub async fn wait_for_logs(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedLog]) -> bool,
    ) -> Result<Vec<ReceivedLog>, Vec<ReceivedLog>> {
        self.wait_for(timeout, &self.shared.logs, done).await
    }

    /// Waits until `done` holds for the metric points received so far.
    pub async fn wait_for_metrics(
        &self,
        timeout: Duration,
        done: impl Fn(&[MetricPoint]) -> bool,
    ) -> Result<Vec<MetricPoint>, Vec<MetricPoint>> {
        self.wait_for(timeout, &self.shared.points, done).await
    }

    async fn wait_for<T: Clone>(
        &self,
        timeout: Duration,
        list: &Mutex<Vec<T>>,
        done: impl Fn(&[T]) -> bool,
    ) -> Result<Vec<T>, Vec<T>> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            {
                let items = locked(list);
                if done(&items) {
                    return Ok(items.clone());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(locked(list).clone());
            }
            let _ = tokio::time::timeout(left, arrived).await;
        }
    }

    pub fn clear(&self) {
        self.shared.lock().clear();
        locked(&self.shared.logs).clear();
        locked(&self.shared.points).clear();
        self.shared
            .stubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
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

    /// Listens again on the same port (once the old server let go of it).
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match StdTcpListener::bind(self.addr) {
                Ok(listener) => break listener,
                // The stopped runtime closes the port in the background.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("binding the receiver again on {}", self.addr));
                }
            }
        };
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
                        GrpcRoutes::new(shared),
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
        let bad_request = |e: prost::DecodeError| {
            poem::Error::from_string(e.to_string(), poem::http::StatusCode::BAD_REQUEST)
        };
        match shared.retention {
            Retention::Full | Retention::Stream => {
                let request = ExportTraceServiceRequest::decode(bytes).map_err(bad_request)?;
                shared.accept(request).await;
            }
            Retention::Stubs => {
                let request = slim::Request::decode(bytes).map_err(bad_request)?;
                shared.accept_stubs(request.stubs()).await;
            }
        }
        Ok(poem::Response::builder()
            .content_type("application/x-protobuf")
            .body(ExportTraceServiceResponse::default().encode_to_vec()))
    }

    fn bad_request(error: prost::DecodeError) -> poem::Error {
        poem::Error::from_string(error.to_string(), poem::http::StatusCode::BAD_REQUEST)
    }

    fn protobuf(body: Vec<u8>) -> poem::Response {
        poem::Response::builder()
            .content_type("application/x-protobuf")
            .body(body)
    }

    #[poem::handler]
    async fn logs(
        body: poem::Body,
        poem::web::Data(shared): poem::web::Data<&Arc<Shared>>,
    ) -> poem::Result<poem::Response> {
        let bytes = body.into_bytes().await?;
        let request = shared
            .reads_logs_and_metrics()
            .then(|| ExportLogsServiceRequest::decode(bytes))
            .transpose()
            .map_err(bad_request)?;
        shared.accept_logs(request).await;
        Ok(protobuf(
            ExportLogsServiceResponse::default().encode_to_vec(),
        ))
    }

    #[poem::handler]
    async fn metrics(
        body: poem::Body,
        poem::web::Data(shared): poem::web::Data<&Arc<Shared>>,
    ) -> poem::Result<poem::Response> {
        let bytes = body.into_bytes().await?;
        let request = shared
            .reads_logs_and_metrics()
            .then(|| ExportMetricsServiceRequest::decode(bytes))
            .transpose()
            .map_err(bad_request)?;
        shared.accept_metrics(request).await;
        Ok(protobuf(
            ExportMetricsServiceResponse::default().encode_to_vec(),
        ))
    }

    let app = Route::new()
        .at("/v1/traces", post(traces))
        .at("/v1/logs", post(logs))
        .at("/v1/metrics", post(metrics))
        .data(shared);
    poem::Server::new_with_acceptor(TcpAcceptor::from_tokio(listener)?)
        .run(app)
        .await
        .map_err(anyhow::Error::from)
}

/// Just the parts of the OTLP messages a [`SpanStub`] needs: prost skips
/// everything else without building it, so counting stays cheap (OTLP/HTTP).
mod slim {
    use std::sync::Arc;

    use super::{SpanKind, SpanStub, trace_id_number};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    /// The `string_value` case of the AnyValue oneof.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(string, optional, tag = "1")]
        pub string_value: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(int32, tag = "6")]
        pub kind: i32,
    }

    impl Request {
        pub fn stubs(self) -> Vec<SpanStub> {
            let mut stubs = Vec::new();
            for resource_spans in self.resource_spans {
                let service: Arc<str> = resource_spans
                    .resource
                    .into_iter()
                    .flat_map(|r| r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value?.string_value)
                    .unwrap_or_default()
                    .into();
                for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                    stubs.push(SpanStub {
                        trace_id: trace_id_number(&span.trace_id),
                        service: service.clone(),
                        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    });
                }
            }
            stubs
        }
    }
}
