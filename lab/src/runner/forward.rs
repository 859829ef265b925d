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
                match post(&client, &url, spans).await {
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

/// Sends one export request; the error names its cause (connection refused,
/// a timeout, the status it answered), not only reqwest's summary.
async fn post(client: &reqwest::Client, url: &str, spans: Vec<ReceivedSpan>) -> Result<(), String> {
    let answer = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(request(spans).encode_to_vec())
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
