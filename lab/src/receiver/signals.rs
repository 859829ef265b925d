//! The log records and metric points the receiver keeps, read out of the
//! OTLP export requests of those two signals.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;

use super::{find, hex, value_text};

/// One received log record with the service that sent it.
#[derive(Debug, Clone)]
pub struct ReceivedLog {
    pub service: String,
    pub resource: Vec<KeyValue>,
    pub scope: Option<InstrumentationScope>,
    pub record: LogRecord,
}

impl ReceivedLog {
    /// Empty when the record was written outside any span.
    pub fn trace_id(&self) -> String {
        hex(&self.record.trace_id)
    }

    /// Empty when the record was written outside any span.
    pub fn span_id(&self) -> String {
        hex(&self.record.span_id)
    }

    /// `INFO`, `WARN`, ...
    pub fn severity(&self) -> &str {
        &self.record.severity_text
    }

    /// The message, as text.
    pub fn body(&self) -> String {
        self.record
            .body
            .as_ref()
            .map(value_text)
            .unwrap_or_default()
    }

    /// When it was written: the record's time, else (the `tracing` bridge
    /// sets none) when the SDK saw it, at once.
    pub fn time_ns(&self) -> u64 {
        match self.record.time_unix_nano {
            0 => self.record.observed_time_unix_nano,
            time => time,
        }
    }

    /// A record attribute (an event field), rendered as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        find(&self.record.attributes, key)
    }

    pub fn attributes(&self) -> &[KeyValue] {
        &self.record.attributes
    }

    pub fn resource_attr(&self, key: &str) -> Option<String> {
        find(&self.resource, key)
    }
}

/// What kind of metric a point belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Histogram,
    /// A counter or up-down counter.
    Sum,
    Gauge,
    /// An exponential histogram or a summary: kept by name only.
    Other,
}

/// One data point of one metric, with the service that sent it.
#[derive(Debug, Clone)]
pub struct MetricPoint {
    pub service: String,
    pub resource: Vec<KeyValue>,
    pub name: String,
    pub unit: String,
    pub kind: MetricKind,
    pub attributes: Vec<KeyValue>,
    /// Values recorded (histograms); 0 for the others.
    pub count: u64,
    /// Their sum (histograms), or the value (sums and gauges).
    pub sum: f64,
    /// Histogram bucket bounds, upper, exclusive of +Inf.
    pub bounds: Vec<f64>,
}

impl MetricPoint {
    pub fn attr(&self, key: &str) -> Option<String> {
        find(&self.attributes, key)
    }

    pub fn resource_attr(&self, key: &str) -> Option<String> {
        find(&self.resource, key)
    }
}

pub fn logs_of(request: ExportLogsServiceRequest) -> Vec<ReceivedLog> {
    let mut logs = Vec::new();
    for resource_logs in request.resource_logs {
        let resource = resource_logs
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let service = find(&resource, "service.name").unwrap_or_default();
        for scope_logs in resource_logs.scope_logs {
            for record in scope_logs.log_records {
                logs.push(ReceivedLog {
                    service: service.clone(),
                    resource: resource.clone(),
                    scope: scope_logs.scope.clone(),
                    record,
                });
            }
        }
    }
    logs
}

pub fn points_of(request: ExportMetricsServiceRequest) -> Vec<MetricPoint> {
    let mut points = Vec::new();
    for resource_metrics in request.resource_metrics {
        let resource = resource_metrics
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let service = find(&resource, "service.name").unwrap_or_default();
        for metric in resource_metrics
            .scope_metrics
            .into_iter()
            .flat_map(|s| s.metrics)
        {
            let point = |kind, attributes, count, sum, bounds| MetricPoint {
                service: service.clone(),
                resource: resource.clone(),
                name: metric.name.clone(),
                unit: metric.unit.clone(),
                kind,
                attributes,
                count,
                sum,
                bounds,
            };
            let number = |value: Option<Value>| match value {
                Some(Value::AsDouble(number)) => number,
                Some(Value::AsInt(number)) => number as f64,
                None => 0.0,
            };
            match &metric.data {
                Some(Data::Histogram(histogram)) => {
                    for p in &histogram.data_points {
                        points.push(point(
                            MetricKind::Histogram,
                            p.attributes.clone(),
                            p.count,
                            p.sum.unwrap_or_default(),
                            p.explicit_bounds.clone(),
                        ));
                    }
                }
                Some(Data::Sum(sum)) => {
                    for p in &sum.data_points {
                        let value = number(p.value);
                        points.push(point(
                            MetricKind::Sum,
                            p.attributes.clone(),
                            0,
                            value,
                            Vec::new(),
                        ));
                    }
                }
                Some(Data::Gauge(gauge)) => {
                    for p in &gauge.data_points {
                        let value = number(p.value);
                        points.push(point(
                            MetricKind::Gauge,
                            p.attributes.clone(),
                            0,
                            value,
                            Vec::new(),
                        ));
                    }
                }
                _ => points.push(point(MetricKind::Other, Vec::new(), 0, 0.0, Vec::new())),
            }
        }
    }
    points
}
