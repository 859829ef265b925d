//! `--otlp-endpoint`: every trace the runner shows also goes on to a real
//! collector, Tempo or Jaeger, over OTLP/HTTP (protobuf). The hops keep
//! sending to the runner; it re-sends what it received, unchanged.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::receiver::ReceivedSpan;

pub struct Forwarder {
    traces: mpsc::UnboundedSender<Vec<ReceivedSpan>>,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// `endpoint` is a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT:
    /// `/v1/traces` is appended.
    pub fn start(endpoint: &str) -> anyhow::Result<Self> {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()?;
        let (traces, mut queue) = mpsc::unbounded_channel::<Vec<ReceivedSpan>>();
        let task = tokio::spawn(async move {
            let mut lost_spans = 0usize;
            while let Some(spans) = queue.recv().await {
                let count = spans.len();
                let sent = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(request(spans).encode_to_vec())
                    .send()
                    .await
                    .map_err(|e| e.without_url().to_string())
                    .and_then(|answer| match answer.status() {
                        status if status.is_success() => Ok(()),
                        status => Err(format!("it answered {status}")),
                    });
                match sent {
                    Ok(()) if lost_spans > 0 => {
                        eprintln!(
                            "lab: forwarding to {url} works again ({lost_spans} spans were lost)"
                        );
                        lost_spans = 0;
                    }
                    Ok(()) => {}
                    Err(error) => {
                        if lost_spans == 0 {
                            eprintln!(
                                "lab: cannot forward spans to {url}: {error} (further failures are counted)"
                            );
                        }
                        lost_spans += count;
                    }
                }
            }
            if lost_spans > 0 {
                eprintln!("lab: {lost_spans} spans could not be forwarded to {url}");
            }
        });
        Ok(Self { traces, task })
    }

    pub fn send(&self, spans: Vec<ReceivedSpan>) {
        let _ = self.traces.send(spans);
    }

    /// Sends what is queued, waiting at most `timeout`.
    pub async fn finish(self, timeout: Duration) {
        drop(self.traces);
        let _ = tokio::time::timeout(timeout, self.task).await;
    }
}

/// One export request: the spans grouped by the resource and scope they
/// came with.
fn request(spans: Vec<ReceivedSpan>) -> ExportTraceServiceRequest {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    for received in spans {
        let resource = Some(Resource {
            attributes: received.resource,
            ..Resource::default()
        });
        let index = match resource_spans.iter().position(|r| r.resource == resource) {
            Some(index) => index,
            None => {
                resource_spans.push(ResourceSpans {
                    resource,
                    ..ResourceSpans::default()
                });
                resource_spans.len() - 1
            }
        };
        let scopes = &mut resource_spans[index].scope_spans;
        match scopes.iter_mut().find(|s| s.scope == received.scope) {
            Some(scope) => scope.spans.push(received.span),
            None => scopes.push(ScopeSpans {
                scope: received.scope,
                spans: vec![received.span],
                ..ScopeSpans::default()
            }),
        }
    }
    ExportTraceServiceRequest { resource_spans }
}
