//! `OTEL_TRACES_EXPORTER=console`: one readable line per finished span on
//! stderr, for running the chain without a collector.

use std::fmt::Write as _;
use std::io::Write as _;

use opentelemetry::trace::Status;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

#[derive(Debug, Default)]
pub struct ConsoleExporter {
    service_name: String,
}

impl ConsoleExporter {
    /// `span <service> <kind> "<name>" <duration> trace=… span=… parent=… [status] key=value…`
    pub fn format(&self, span: &SpanData) -> String {
        let duration = span
            .end_time
            .duration_since(span.start_time)
            .unwrap_or_default();
        let mut line = format!(
            "span {} {:?} {:?} {:.3}ms trace={} span={} parent={}",
            self.service_name,
            span.span_kind,
            span.name,
            duration.as_secs_f64() * 1000.0,
            span.span_context.trace_id(),
            span.span_context.span_id(),
            span.parent_span_id,
        );
        match &span.status {
            Status::Unset => {}
            Status::Ok => line.push_str(" status=ok"),
            Status::Error { description } => {
                let _ = write!(line, " status=error({description:?})");
            }
        }
        for attribute in &span.attributes {
            let _ = write!(line, " {}={}", attribute.key, attribute.value);
        }
        line
    }
}

impl SpanExporter for ConsoleExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut stderr = std::io::stderr().lock();
        for span in &batch {
            // A closed stderr is no reason to fail the request path.
            let _ = writeln!(stderr, "{}", self.format(span));
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.service_name = resource
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .map(|value| value.to_string())
            .unwrap_or_default();
    }
}
