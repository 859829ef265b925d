//! `GET /` and `POST /`: wait, call the next hop(s), render this hop's part
//! around theirs, and answer with the whole chain below this hop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use minijinja::{Value, context};
use opentelemetry::trace::TraceContextExt as _;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{Request, Response, handler};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::contract::{self, CallReport, Format, HOPS_HEADER, HopReport, PART_HEADER, millis};
use crate::downstream::{CallOutcome, FailureKind};
use crate::state::AppState;
use crate::telemetry::FailureReason;
use crate::templates::{self, PAGE, PART};

/// Why this hop does not answer 200.
#[derive(Debug, Clone)]
struct Failure {
    status: StatusCode,
    kind: &'static str,
    message: String,
    /// The call whose failure this is, by index; `None` for this hop's own.
    call: Option<usize>,
}

/// Everything this request did, before it is rendered.
struct Visit {
    trace_id: String,
    span_id: String,
    delay: Duration,
    duration: Duration,
    calls: Vec<CallOutcome>,
    failure: Option<Failure>,
}

impl Visit {
    fn status(&self) -> StatusCode {
        self.failure.as_ref().map_or(StatusCode::OK, |f| f.status)
    }
}

#[handler]
pub async fn chain(request: &Request, Data(state): Data<&Arc<AppState>>) -> Response {
    let started = Instant::now();
    // A request from outside the chain carries no hop count: it gets the whole page.
    let hops_passed = contract::hops_passed(request.header(HOPS_HEADER));
    let is_entry = hops_passed.is_none();
    let hops_passed = hops_passed.unwrap_or(0);
    let format = Format::from_headers(request.headers());
    let (trace_id, span_id) = current_ids();

    let mut visit = Visit {
        trace_id,
        span_id,
        delay: Duration::ZERO,
        duration: Duration::ZERO,
        calls: Vec::new(),
        failure: None,
    };
    if hops_passed >= state.max_hops {
        visit.failure = Some(Failure {
            status: StatusCode::LOOP_DETECTED,
            kind: "too_many_hops",
            message: format!(
                "refused: this request already passed {hops_passed} hops (MAX_HOPS={}); is the chain a loop?",
                state.max_hops
            ),
            call: None,
        });
    } else {
        visit.delay = state.work.run().await;
        visit.calls = state.downstream.call_all(hops_passed + 1, format).await;
        visit.failure = downstream_failure(&visit.calls).or_else(|| injected_failure(state));
    }
    visit.duration = started.elapsed();
    let duration_ms = millis(visit.duration);
    match &visit.failure {
        Some(failure) => tracing::warn!(
            status = failure.status.as_u16(),
            error.type = failure.kind,
            reason = %failure.message,
            duration_ms,
            "request failed"
        ),
        None => tracing::info!(status = 200, duration_ms, "request handled"),
    }

    let body = match format {
        Format::Json => serde_json::to_string(&report(state, &visit)).map_err(|e| e.to_string()),
        Format::Html => {
            let name = if is_entry { PAGE } else { PART };
            let context = context! { hop => hop_view(state, &visit) };
            state
                .templates
                .render(name, context)
                .map_err(|e| templates::describe(&e))
        }
    };
    match body {
        Ok(body) => answer(
            state,
            visit.status(),
            format.content_type(),
            body,
            visit.failure,
        ),
        Err(error) => {
            tracing::error!(%error, "cannot render the answer");
            let failure = Failure {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "template_error",
                message: format!("cannot render this hop's part: {error}"),
                call: None,
            };
            let text = format!("{}: {}\n", state.service, failure.message);
            answer(
                state,
                failure.status,
                "text/plain; charset=utf-8",
                text,
                Some(failure),
            )
        }
    }
}

fn answer(
    state: &AppState,
    status: StatusCode,
    content_type: &str,
    body: String,
    failure: Option<Failure>,
) -> Response {
    let mut response = Response::builder()
        .status(status)
        .content_type(content_type)
        .header(PART_HEADER, state.part_header.clone())
        .body(body);
    if let Some(failure) = failure {
        response.extensions_mut().insert(FailureReason {
            kind: failure.kind,
            message: failure.message,
        });
    }
    response
}

/// The server span's ids, for the page and the JSON answer.
fn current_ids() -> (String, String) {
    let context = tracing::Span::current().context();
    let span = context.span();
    let ids = span.span_context();
    if ids.is_valid() {
        (ids.trace_id().to_string(), ids.span_id().to_string())
    } else {
        (String::new(), String::new())
    }
}

/// A timed-out call makes this hop 504, any other failed call 502.
fn downstream_failure(calls: &[CallOutcome]) -> Option<Failure> {
    let failures = || {
        calls
            .iter()
            .enumerate()
            .filter_map(|(index, call)| Some((index, call.failure.as_ref()?)))
    };
    let first = failures().next()?;
    let timed_out = failures().find(|(_, f)| f.kind == FailureKind::Timeout);
    Some(match timed_out {
        Some((index, failure)) => Failure {
            status: StatusCode::GATEWAY_TIMEOUT,
            kind: "downstream_timeout",
            message: failure.message.clone(),
            call: Some(index),
        },
        None => Failure {
            status: StatusCode::BAD_GATEWAY,
            kind: "downstream_failed",
            message: first.1.message.clone(),
            call: Some(first.0),
        },
    })
}

fn injected_failure(state: &AppState) -> Option<Failure> {
    // fastrand::f64() is in [0, 1): a rate of 1.0 always fails, 0.0 never.
    let fails = state.error_rate > 0.0 && fastrand::f64() < state.error_rate;
    if fails {
        state.metrics.injected_failure("/");
    }
    fails.then(|| Failure {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "injected_failure",
        message: format!("injected failure (ERROR_RATE={})", state.error_rate),
        call: None,
    })
}

fn report(state: &AppState, visit: &Visit) -> HopReport {
    HopReport {
        service: state.service.clone(),
        title: state.title.clone(),
        description: state.description.clone(),
        response_time_ms: state.work.response_time_ms,
        response_time_jitter_ms: state.work.jitter_ms,
        delay_ms: visit.delay.as_millis() as u64,
        duration_ms: millis(visit.duration),
        status: visit.status().as_u16(),
        error: visit.failure.as_ref().map(|f| f.message.clone()),
        trace_id: visit.trace_id.clone(),
        span_id: visit.span_id.clone(),
        downstream: visit
            .calls
            .iter()
            .map(|call| CallReport {
                url: call.url.to_string(),
                status: call.status.map(|s| s.as_u16()),
                error: call.failure.as_ref().map(|f| f.message.clone()),
                duration_ms: millis(call.duration),
                hop: call.answer.report().cloned().map(Box::new),
            })
            .collect(),
    }
}

/// What part.html and page.html see as `hop`.
fn hop_view(state: &AppState, visit: &Visit) -> Value {
    let trace_link = state
        .trace_link
        .as_ref()
        .filter(|_| !visit.trace_id.is_empty())
        .map(|link| link.replace("{trace_id}", &visit.trace_id));
    let status = visit.status();
    // A failed call shown as a box of its own says why there; the hop says
    // it only when the call's answer is the next hop's part.
    let error = visit
        .failure
        .as_ref()
        .filter(|failure| {
            failure
                .call
                .and_then(|index| visit.calls.get(index))
                .is_none_or(|call| call.answer.part().is_some())
        })
        .map(|failure| failure.message.clone());
    context! {
        service => &state.service,
        title => &state.title,
        description => &state.description,
        status => status.as_u16(),
        reason => status.canonical_reason(),
        ok => status.is_success(),
        error,
        response_time_ms => state.work.response_time_ms,
        jitter_ms => state.work.jitter_ms,
        delay_ms => visit.delay.as_millis() as u64,
        duration_ms => format!("{:.1}", millis(visit.duration)),
        trace_id => &visit.trace_id,
        span_id => &visit.span_id,
        trace_link,
        calls => visit.calls.iter().map(call_view).collect::<Vec<_>>(),
    }
}

fn call_view(call: &CallOutcome) -> Value {
    // Trusted as HTML: see contract::Answer for what that means and why.
    let part = call
        .answer
        .part()
        .map(|html| Value::from_safe_string(html.to_string()));
    context! {
        url => call.url.as_str(),
        method => call.method.as_str(),
        status => call.status.map(|s| s.as_u16()),
        error => call.failure.as_ref().map(|f| f.message.clone()),
        duration_ms => format!("{:.1}", millis(call.duration)),
        part,
        text => call.answer.foreign_text(),
    }
}
