use std::path::Path;
use std::time::Duration;

use lab::chain::Chain;
use lab::instance::InstanceConfig;
use lab::receiver::{OtlpReceiver, Protocol, ReceivedSpan};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

pub const SPAN_WAIT: Duration = Duration::from_secs(15);

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_microservice"))
}

pub fn templates_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/templates")
}

/// Templates from the checkout and spans to `receiver`, exported quickly.
pub fn common(receiver: &OtlpReceiver) -> InstanceConfig {
    InstanceConfig::new()
        .env("TEMPLATES_DIR", templates_dir())
        .envs(receiver.env())
}

pub fn hop(service: &str, response_time_ms: u64) -> InstanceConfig {
    InstanceConfig::new()
        .env("OTEL_SERVICE_NAME", service)
        .env("RESPONSE_TIME", response_time_ms.to_string())
}

pub const DELAYS: [u64; 3] = [30, 20, 10];

/// ms-1 → ms-2 → ms-3 with [`DELAYS`].
pub async fn three_hops(receiver: &OtlpReceiver) -> Chain {
    let hops: Vec<_> = DELAYS
        .iter()
        .enumerate()
        .map(|(i, delay)| hop(&format!("ms-{}", i + 1), *delay))
        .collect();
    Chain::start(binary(), &common(receiver), &hops)
        .await
        .expect("the chain starts")
}

pub fn grpc_receiver() -> OtlpReceiver {
    OtlpReceiver::start(Protocol::Grpc).expect("the receiver starts")
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// Trace id and span id from the `traceresponse` header.
    pub fn trace_response(&self) -> (String, String) {
        let value = self
            .headers
            .get("traceresponse")
            .expect("a traceresponse header")
            .to_str()
            .expect("ASCII");
        let parts: Vec<&str> = value.split('-').collect();
        assert_eq!(parts.len(), 4, "traceresponse {value}");
        assert_eq!(parts[0], "00");
        (parts[1].to_string(), parts[2].to_string())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("an answer");
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.expect("a body"),
    }
}

pub async fn get_json(url: &str) -> Answer {
    get(url, &[("accept", "application/json")]).await
}

/// Waits until `count` spans of `trace_id` arrived.
pub async fn trace_spans(
    receiver: &OtlpReceiver,
    trace_id: &str,
    count: usize,
) -> Vec<ReceivedSpan> {
    let of_trace = |spans: &[ReceivedSpan]| {
        spans
            .iter()
            .filter(|s| s.trace_id() == trace_id)
            .cloned()
            .collect::<Vec<_>>()
    };
    match receiver
        .wait_until(SPAN_WAIT, |spans| of_trace(spans).len() >= count)
        .await
    {
        Ok(spans) => of_trace(&spans),
        Err(spans) => panic!(
            "expected {count} spans of trace {trace_id}, got {}: {:#?}",
            of_trace(&spans).len(),
            summary(&of_trace(&spans))
        ),
    }
}

pub fn summary(spans: &[ReceivedSpan]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {:?} {:?} span={} parent={}",
                s.service,
                s.kind(),
                s.name(),
                s.span_id(),
                s.parent_id()
            )
        })
        .collect()
}

/// Spans of one trace, looked up by service, kind and name.
pub struct Tree {
    pub spans: Vec<ReceivedSpan>,
}

impl Tree {
    pub fn new(spans: Vec<ReceivedSpan>) -> Self {
        Self { spans }
    }

    pub fn all(&self, service: &str, name: &str) -> Vec<&ReceivedSpan> {
        self.spans
            .iter()
            .filter(|s| s.service == service && s.name() == name)
            .collect()
    }

    /// The one span of `service` called `name`.
    pub fn one(&self, service: &str, name: &str) -> &ReceivedSpan {
        let found = self.all(service, name);
        assert_eq!(
            found.len(),
            1,
            "{service} should have exactly one {name:?} span: {:#?}",
            summary(&self.spans)
        );
        found[0]
    }
}

/// A port nothing listens on, as an http URL.
pub fn dead_url() -> String {
    format!("http://{}/", lab::instance::unused_local_addr())
}

/// A copy of the templates that a test may edit or break.
pub fn tempdir_with_templates() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "microservice-templates-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["page.html", "part.html"] {
        std::fs::copy(Path::new(templates_dir()).join(name), dir.join(name)).unwrap();
    }
    dir
}
