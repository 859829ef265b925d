//! OTEL_LOGS_EXPORTER=console and OTEL_METRICS_EXPORTER=console: a readable
//! line per log record or metric point on stderr.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::logs::AnyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

fn write_lines(lines: &[String]) {
    let mut stderr = std::io::stderr().lock();
    for line in lines {
        // A closed stderr is no reason to fail anything.
        let _ = writeln!(stderr, "{line}");
    }
}

/// A log body or attribute as plain text.
fn any_text(value: &AnyValue) -> String {
    match value {
        AnyValue::String(text) => text.to_string(),
        AnyValue::Int(number) => number.to_string(),
        AnyValue::Double(number) => number.to_string(),
        AnyValue::Boolean(flag) => flag.to_string(),
        other => format!("{other:?}"),
    }
}

#[derive(Debug, Default)]
pub struct ConsoleLogExporter {
    service_name: String,
}

impl LogExporter for ConsoleLogExporter {
    /// `log <service> <severity> "<body>" trace=… span=… key=value…`
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let mut lines = Vec::new();
        for (record, _) in batch.iter() {
            let mut line = format!(
                "log {} {} {:?}",
                self.service_name,
                record.severity_text().unwrap_or("-"),
                record.body().map(any_text).unwrap_or_default(),
            );
            if let Some(context) = record.trace_context() {
                let _ = write!(line, " trace={} span={}", context.trace_id, context.span_id);
            }
            for (key, value) in record.attributes_iter() {
                let _ = write!(line, " {key}={}", any_text(value));
            }
            lines.push(line);
        }
        write_lines(&lines);
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.service_name = resource
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .map(|value| value.to_string())
            .unwrap_or_default();
    }
}

#[derive(Debug)]
pub struct ConsoleMetricExporter;

fn attributes_text<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> String {
    attributes
        .map(|kv| format!(" {}={}", kv.key, kv.value))
        .collect()
}

impl PushMetricExporter for ConsoleMetricExporter {
    /// `metric <name> histogram count=… sum=… key=value…` or
    /// `metric <name> sum value=… key=value…`
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let mut lines = Vec::new();
        for scope in metrics.scope_metrics() {
            for metric in scope.metrics() {
                let name = metric.name();
                match metric.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(histogram)) => {
                        for point in histogram.data_points() {
                            lines.push(format!(
                                "metric {name} histogram count={} sum={}{}",
                                point.count(),
                                point.sum(),
                                attributes_text(point.attributes())
                            ));
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                        for point in sum.data_points() {
                            lines.push(format!(
                                "metric {name} sum value={}{}",
                                point.value(),
                                attributes_text(point.attributes())
                            ));
                        }
                    }
                    _ => lines.push(format!("metric {name}")),
                }
            }
        }
        write_lines(&lines);
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}
