//! `--otlp-endpoint`: every trace the runner shows also goes on to a real
//! collector, Tempo or Jaeger, over OTLP/HTTP (protobuf), with the log
//! records the hops wrote in it. The hops keep sending to the runner; it
//! re-sends what it received, unchanged.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::receiver::{ReceivedLog, ReceivedSpan};

/// What goes on, per OTLP signal.
enum Batch {
    Spans(Vec<ReceivedSpan>),
    Logs(Vec<ReceivedLog>),
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Batch::Spans(spans) => spans.len(),
            Batch::Logs(logs) => logs.len(),
        }
    }
}

/// Per signal: the path OTLP/HTTP appends, what it sends, and how many were
/// lost since forwarding last worked.
struct Signal {
    path: &'static str,
    items: &'static str,
    lost: usize,
}

impl Signal {
    fn new(path: &'static str, items: &'static str) -> Self {
        Self {
            path,
            items,
            lost: 0,
        }
    }
}

pub struct Forwarder {
    batches: mpsc::UnboundedSender<Batch>,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// `endpoint` is a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT: `/v1/traces`
    /// and `/v1/logs` are appended.
    pub fn start(endpoint: &str) -> anyhow::Result<Self> {
        let base = endpoint.trim_end_matches('/').to_string();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()?;
        let (batches, mut queue) = mpsc::unbounded_channel::<Batch>();
        let task = tokio::spawn(async move {
            let mut spans = Signal::new("/v1/traces", "spans");
            let mut logs = Signal::new("/v1/logs", "log records");
            while let Some(batch) = queue.recv().await {
                let signal = match &batch {
                    Batch::Spans(_) => &mut spans,
                    Batch::Logs(_) => &mut logs,
                };
                let url = format!("{base}{}", signal.path);
                let count = batch.len();
                match post(&client, &url, body(batch)).await {
                    Ok(()) if signal.lost > 0 => {
                        eprintln!(
                            "lab: forwarding to {url} works again ({} {} were lost)",
                            signal.lost, signal.items
                        );
                        signal.lost = 0;
                    }
                    Ok(()) => {}
                    Err(error) => {
                        if signal.lost == 0 {
                            eprintln!(
                                "lab: cannot forward {} to {url}: {error} (further failures are counted)",
                                signal.items
                            );
                        }
                        signal.lost += count;
                    }
                }
            }
            for signal in [spans, logs].iter().filter(|s| s.lost > 0) {
                eprintln!(
                    "lab: {} {} could not be forwarded to {base}{}",
                    signal.lost, signal.items, signal.path
                );
            }
        });
        Ok(Self { batches, task })
    }

    pub fn send(&self, spans: Vec<ReceivedSpan>) {
        let _ = self.batches.send(Batch::Spans(spans));
    }

    pub fn send_logs(&self, logs: Vec<ReceivedLog>) {
        if !logs.is_empty() {
            let _ = self.batches.send(Batch::Logs(logs));
        }
    }

    /// Sends what is queued, waiting at most `timeout`.
    pub async fn finish(self, timeout: Duration) {
        drop(self.batches);
        let _ = tokio::time::timeout(timeout, self.task).await;
    }
}

fn body(batch: Batch) -> Vec<u8> {
    match batch {
        Batch::Spans(spans) => trace_request(spans).encode_to_vec(),
        Batch::Logs(logs) => logs_request(logs).encode_to_vec(),
    }
}

/// Sends one export request; the error names its cause (connection refused,
/// a timeout, the status it answered), not only reqwest's summary.
async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<(), String> {
    let answer = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .map_err(|error| with_causes(&error.without_url()))?;
    match answer.status() {
        status if status.is_success() => Ok(()),
        status => Err(format!("it answered {status}")),
    }
}

/// An error and each of its sources, `outer: inner: …`, skipping a source
/// whose text its parent already ends with.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// One export request: the spans grouped by the resource and scope they
/// came with.
fn trace_request(spans: Vec<ReceivedSpan>) -> ExportTraceServiceRequest {
    let groups = grouped(spans.into_iter().map(|s| (s.resource, s.scope, s.span)));
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(resource, scopes)| ResourceSpans {
                resource: Some(resource),
                scope_spans: scopes
                    .into_iter()
                    .map(|(scope, spans)| ScopeSpans {
                        scope,
                        spans,
                        ..ScopeSpans::default()
                    })
                    .collect(),
                ..ResourceSpans::default()
            })
            .collect(),
    }
}

/// The same for log records.
fn logs_request(logs: Vec<ReceivedLog>) -> ExportLogsServiceRequest {
    let groups = grouped(logs.into_iter().map(|l| (l.resource, l.scope, l.record)));
    ExportLogsServiceRequest {
        resource_logs: groups
            .into_iter()
            .map(|(resource, scopes)| ResourceLogs {
                resource: Some(resource),
                scope_logs: scopes
                    .into_iter()
                    .map(|(scope, log_records)| ScopeLogs {
                        scope,
                        log_records,
                        ..ScopeLogs::default()
                    })
                    .collect(),
                ..ResourceLogs::default()
            })
            .collect(),
    }
}

type Scoped<T> = Vec<(Option<InstrumentationScope>, Vec<T>)>;

/// Items grouped by resource, then by scope, in the order they came.
fn grouped<T>(
    items: impl IntoIterator<Item = (Vec<KeyValue>, Option<InstrumentationScope>, T)>,
) -> Vec<(Resource, Scoped<T>)> {
    let mut groups: Vec<(Resource, Scoped<T>)> = Vec::new();
    for (attributes, scope, item) in items {
        let resource = Resource {
            attributes,
            ..Resource::default()
        };
        let index = match groups.iter().position(|(r, _)| *r == resource) {
            Some(index) => index,
            None => {
                groups.push((resource, Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[index].1;
        match scopes.iter_mut().find(|(s, _)| *s == scope) {
            Some((_, items)) => items.push(item),
            None => scopes.push((scope, vec![item])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_named_as_such() {
        // A port nothing listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let error = post(
            &client,
            &format!("http://127.0.0.1:{port}/v1/traces"),
            Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(
            error.starts_with("error sending request") && error.contains("refused"),
            "{error}"
        );
    }
}
