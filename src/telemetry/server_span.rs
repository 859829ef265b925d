//! The SERVER span of each incoming request: continues the caller's trace,
//! carries the HTTP semantic-convention attributes, turns ERROR on 5xx and
//! answers with a `traceresponse` header ([`contract::TRACE_RESPONSE_HEADER`]).

use std::sync::Arc;
use std::time::Instant;

use opentelemetry::baggage::{Baggage, BaggageExt as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_http::HeaderExtractor;
use poem::http::header::{HOST, USER_AGENT};
use poem::http::uri::Authority;
use poem::{Endpoint, IntoResponse, Request, Response};
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::metrics::{HttpMetrics, status_error_type};
use crate::contract;

/// Why a handler answered 5xx: becomes the server span's `error.type` and
/// status message.
#[derive(Debug, Clone)]
pub struct FailureReason {
    pub kind: &'static str,
    pub message: String,
}

/// Wraps `next` (mounted at `route`) in a SERVER span, and records its
/// duration in `metrics`. `baggage` is added to the baggage the request came
/// with; every entry of the result becomes an attribute of the span and
/// travels on with the calls to the next hops.
pub async fn server_span<E: Endpoint>(
    next: Arc<E>,
    request: Request,
    route: &'static str,
    baggage: &[(String, String)],
    metrics: &HttpMetrics,
) -> poem::Result<Response> {
    let started = Instant::now();
    let mut parent = global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    if !baggage.is_empty() {
        let mut merged = Baggage::new();
        for (key, (value, metadata)) in parent.baggage() {
            merged.insert_with_metadata(key.clone(), value.clone(), metadata.clone());
        }
        for (key, value) in baggage {
            merged.insert(key.clone(), value.clone());
        }
        parent = parent.with_baggage(merged);
    }
    let method = request.method().as_str().to_owned();
    let (server_address, server_port) = server_address(&request);
    let peer = request.remote_addr().as_socket_addr().copied();
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method.as_str(),
        http.route = route,
        url.path = request.uri().path(),
        url.scheme = "http",
        server.address = server_address.as_str(),
        server.port = server_port.map(i64::from),
        client.address = peer.map(|a| a.ip().to_string()),
        // The other end of the connection: across machines, the caller's
        // host (client.address would name the original client behind a proxy).
        network.peer.address = peer.map(|a| a.ip().to_string()),
        network.peer.port = peer.map(|a| i64::from(a.port())),
        user_agent.original = request.header(USER_AGENT),
        network.protocol.version = http_version(&request),
        http.response.status_code = Empty,
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    // Fails only for a span no subscriber records; it then has no context to
    // continue anyway. It must come first: the OpenTelemetry span is built on
    // the first use of its context.
    for (key, (value, _)) in parent.baggage() {
        span.set_attribute(key.clone(), value.to_string());
    }
    let _ = span.set_parent(parent);
    let span_context = span.context().span().span_context().clone();

    let mut response = match next.call(request).instrument(span.clone()).await {
        Ok(response) => response.into_response(),
        Err(error) => error.into_response(),
    };

    let status = response.status();
    // Signed: tracing-opentelemetry records unsigned values as text, and
    // TraceQL compares this one as a number.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        let reason = response.extensions().get::<FailureReason>();
        span.record("otel.status_code", "ERROR");
        span.record("error.type", reason.map_or(status.as_str(), |r| r.kind));
        if let Some(reason) = reason {
            span.record("otel.status_description", reason.message.as_str());
        }
    }
    let mut attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.route", route),
        KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
        KeyValue::new("server.address", server_address),
        KeyValue::new("url.scheme", "http"),
    ];
    if let Some(port) = server_port {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    if status.is_server_error() {
        let reason = response.extensions().get::<FailureReason>();
        let error_type = reason.map(|r| r.kind.to_string());
        if let Some(error_type) = error_type.or_else(|| status_error_type(status.as_u16())) {
            attributes.push(KeyValue::new("error.type", error_type));
        }
    }
    metrics.server_request(started.elapsed(), &attributes);
    if let Some(value) = contract::trace_response(&span_context) {
        response
            .headers_mut()
            .insert(contract::TRACE_RESPONSE_HEADER, value);
    }
    Ok(response)
}

/// `server.address`/`server.port` as the client addressed them (Host header),
/// else the socket the request came in on.
fn server_address(request: &Request) -> (String, Option<u16>) {
    let local = request.local_addr().as_socket_addr().copied();
    match request
        .header(HOST)
        .and_then(|host| host.parse::<Authority>().ok())
    {
        Some(authority) => (
            authority.host().to_string(),
            authority.port_u16().or(Some(80)),
        ),
        None => (
            local.map(|a| a.ip().to_string()).unwrap_or_default(),
            local.map(|a| a.port()),
        ),
    }
}

fn http_version(request: &Request) -> &'static str {
    match request.version() {
        poem::http::Version::HTTP_09 => "0.9",
        poem::http::Version::HTTP_10 => "1.0",
        poem::http::Version::HTTP_2 => "2",
        poem::http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}
