//! Calls to the next hop(s): the traced HTTP client, fan-out in sequence or
//! in parallel, and what a failure means for this hop's answer.

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use http::Extensions;
use reqwest::header::{ACCEPT, HeaderValue, USER_AGENT};
use reqwest::{Method, Request, Response, StatusCode};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Extension, Middleware, Next};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{
    RetryTransientMiddleware, Retryable, RetryableStrategy, default_on_request_failure,
    default_on_request_success,
};
use reqwest_tracing::{
    DisableOtelPropagation, ReqwestOtelSpanBackend, TracingMiddleware, default_on_request_end,
    default_span_name, reqwest_otel_span,
};
use url::Url;

use crate::configuration::{CallMethod, CallMode, Propagation, Settings};
use crate::contract::{Answer, Format, HOPS_HEADER, PART_HEADER, USER_AGENT as CALLER};
use crate::telemetry::HttpMetrics;

/// A next hop's answer beyond this is cut off: a misconfigured URL must not
/// make this hop buffer a whole website.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Waits between attempts, growing from the first to the last: short, so a
/// retried call stays readable in one waterfall.
const RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(10);
const RETRY_BACKOFF_LAST: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Refused, unreachable, broken answer or non-2xx status: 502.
    BadGateway,
    /// No answer within EXTERNAL_CALL_TIMEOUT: 504.
    Timeout,
}

#[derive(Debug, Clone)]
pub struct CallFailure {
    pub kind: FailureKind,
    /// Names the URL and the reason.
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub url: Url,
    pub method: Method,
    pub status: Option<StatusCode>,
    pub duration: Duration,
    pub failure: Option<CallFailure>,
    pub answer: Answer,
}

pub struct Downstream {
    client: ClientWithMiddleware,
    urls: Vec<Url>,
    mode: CallMode,
    method: Method,
    timeout: Duration,
}

impl Downstream {
    pub fn new(settings: &Settings, metrics: &HttpMetrics) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.call_timeout())
            // The next hop is configured, never a proxy's business.
            .no_proxy()
            .build()?;
        let mut client = ClientBuilder::new(client);
        if settings.propagation == Propagation::None {
            // The CLIENT span is still made, but nothing of it goes on the wire.
            client = client.with_init(Extension(DisableOtelPropagation));
        }
        if settings.external_call_retries > 0 {
            let policy = ExponentialBackoff::builder()
                .retry_bounds(RETRY_BACKOFF_FIRST, RETRY_BACKOFF_LAST)
                .build_with_max_retries(settings.external_call_retries);
            client = client.with(RetryTransientMiddleware::new_with_policy_and_strategy(
                policy,
                WorthRetrying,
            ));
        }
        // Inside the retries, so that every attempt is a CLIENT span (and a
        // client request in the metrics) of its own.
        let client = client
            .with(CountAttempts)
            .with(metrics.client_middleware())
            .with(TracingMiddleware::<ClientSpan>::new())
            .build();
        Ok(Self {
            client,
            urls: settings.external_call_url.0.clone(),
            mode: settings.external_call_mode,
            method: match settings.external_call_method {
                CallMethod::Get => Method::GET,
                CallMethod::Post => Method::POST,
            },
            timeout: settings.call_timeout(),
        })
    }

    /// Calls every next hop; `hops` is how many hops the request will have
    /// passed when it arrives there.
    pub async fn call_all(&self, hops: u32, format: Format) -> Vec<CallOutcome> {
        match self.mode {
            CallMode::Parallel => {
                join_all(self.urls.iter().map(|url| self.call(url, hops, format))).await
            }
            CallMode::Sequential => {
                let mut outcomes = Vec::with_capacity(self.urls.len());
                for url in &self.urls {
                    outcomes.push(self.call(url, hops, format).await);
                }
                outcomes
            }
        }
    }

    async fn call(&self, url: &Url, hops: u32, format: Format) -> CallOutcome {
        let started = Instant::now();
        let mut outcome = CallOutcome {
            url: url.clone(),
            method: self.method.clone(),
            status: None,
            duration: Duration::ZERO,
            failure: None,
            answer: Answer::Nothing,
        };
        let sent = self
            .client
            .request(self.method.clone(), url.clone())
            .header(HOPS_HEADER, hops)
            // On the request itself, not as the client's default: the CLIENT
            // span reads it before reqwest would add a default.
            .header(USER_AGENT, HeaderValue::from_static(CALLER))
            .header(ACCEPT, HeaderValue::from_static(format.content_type()))
            .send()
            .await;
        let result = match sent {
            Ok(response) => {
                let status = response.status();
                outcome.status = Some(status);
                let from_chain = response.headers().contains_key(PART_HEADER);
                read_answer(response)
                    .await
                    .map(|body| (status, from_chain, body))
                    .map_err(|error| self.failure(url, &error))
            }
            Err(error) => Err(self.failure(url, root_cause(&error))),
        };
        outcome.duration = started.elapsed();
        match result {
            Ok((status, from_chain, body)) => {
                outcome.answer = Answer::read(format, from_chain, body);
                if !status.is_success() {
                    outcome.failure = Some(CallFailure {
                        kind: FailureKind::BadGateway,
                        message: format!("{} {url} answered {status}", self.method),
                    });
                } else if matches!(outcome.answer, Answer::Foreign(_)) && format == Format::Json {
                    outcome.failure = Some(CallFailure {
                        kind: FailureKind::BadGateway,
                        message: format!("{} {url} did not answer with a hop report", self.method),
                    });
                }
            }
            Err(failure) => outcome.failure = Some(failure),
        }
        if let Some(failure) = &outcome.failure {
            tracing::warn!(
                url = %url,
                status = outcome.status.map(|s| s.as_u16()),
                timed_out = failure.kind == FailureKind::Timeout,
                reason = %failure.message,
                "call failed"
            );
        }
        outcome
    }

    fn failure(&self, url: &Url, error: &(dyn StdError + 'static)) -> CallFailure {
        if is_timeout(error) {
            CallFailure {
                kind: FailureKind::Timeout,
                message: format!(
                    "{} {url} timed out after {} ms",
                    self.method,
                    self.timeout.as_millis()
                ),
            }
        } else {
            CallFailure {
                kind: FailureKind::BadGateway,
                message: format!("{} {url} failed: {}", self.method, describe(error)),
            }
        }
    }
}

/// The error itself: the middleware's error type hides it behind its causes.
fn root_cause(error: &reqwest_middleware::Error) -> &(dyn StdError + 'static) {
    match error {
        reqwest_middleware::Error::Reqwest(error) => error,
        reqwest_middleware::Error::Middleware(error) => error.as_ref(),
    }
}

/// The error and its causes, in order; a middleware error counts as the
/// error it wraps (its own `source` skips that one).
fn chain<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut errors = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        match error.downcast_ref::<reqwest_middleware::Error>() {
            Some(wrapper) => current = Some(root_cause(wrapper)),
            None => {
                errors.push(error);
                current = error.source();
            }
        }
    }
    errors
}

/// Which failed calls are worth another attempt: reqwest-retry's choice
/// (no answer, a timeout, 5xx, 408, 429), except a 508: a request refused
/// as a loop is refused again.
struct WorthRetrying;

impl RetryableStrategy for WorthRetrying {
    fn handle(&self, result: &reqwest_middleware::Result<Response>) -> Option<Retryable> {
        match result {
            Ok(response) if response.status() == StatusCode::LOOP_DETECTED => {
                Some(Retryable::Fatal)
            }
            Ok(response) => default_on_request_success(response),
            Err(error) => default_on_request_failure(error),
        }
    }
}

/// Which attempt of a call this is: 0 for the first.
#[derive(Debug, Clone, Copy)]
struct Attempt(u32);

/// Numbers the attempts the retry middleware makes of one call.
struct CountAttempts;

#[async_trait::async_trait]
impl Middleware for CountAttempts {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let attempt = extensions.get::<Attempt>().map_or(0, |a| a.0 + 1);
        extensions.insert(Attempt(attempt));
        next.run(request, extensions).await
    }
}

/// The CLIENT span of one attempt: reqwest-tracing's attributes, the URL,
/// and `http.request.resend_count` on a retry.
struct ClientSpan;

impl ReqwestOtelSpanBackend for ClientSpan {
    fn on_request_start(request: &Request, extensions: &mut Extensions) -> tracing::Span {
        let name = default_span_name(request, extensions);
        let url = request.url().as_str();
        let span = reqwest_otel_span!(
            name = name,
            request,
            url.full = url,
            http.request.resend_count = tracing::field::Empty
        );
        if let Some(Attempt(resends)) = extensions.get::<Attempt>().filter(|a| a.0 > 0) {
            span.record("http.request.resend_count", i64::from(*resends));
        }
        span
    }

    fn on_request_end(
        span: &tracing::Span,
        outcome: &reqwest_middleware::Result<Response>,
        _: &mut Extensions,
    ) {
        default_on_request_end(span, outcome);
    }
}

/// Reads the body, refusing more than [`MAX_ANSWER_BYTES`].
async fn read_answer(mut response: reqwest::Response) -> Result<String, AnswerError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(AnswerError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[derive(Debug, thiserror::Error)]
enum AnswerError {
    #[error("reading the answer: {0}")]
    Read(#[from] reqwest::Error),
    #[error("the answer is larger than {} MiB", MAX_ANSWER_BYTES >> 20)]
    TooLarge,
}

fn is_timeout(error: &(dyn StdError + 'static)) -> bool {
    chain(error).into_iter().any(|error| {
        error
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
    })
}

/// The error and its causes, without repeating the URL reqwest puts in front.
fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for error in chain(error) {
        let text = match error.downcast_ref::<reqwest::Error>() {
            Some(reqwest_error) if reqwest_error.url().is_some() => {
                error_without_url(reqwest_error)
            }
            _ => error.to_string(),
        };
        if !parts.iter().any(|seen| seen.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn error_without_url(error: &reqwest::Error) -> String {
    let text = error.to_string();
    match error.url() {
        Some(url) => text.replace(&format!(" for url ({url})"), ""),
        None => text,
    }
}
