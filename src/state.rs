//! What every request handler shares, built once from the settings.

use std::sync::Arc;

use anyhow::Context as _;
use http::HeaderValue;

use crate::configuration::Settings;
use crate::contract;
use crate::delay::SimulatedWork;
use crate::downstream::Downstream;
use crate::telemetry::HttpMetrics;
use crate::templates::Templates;

pub struct AppState {
    pub service: String,
    pub title: String,
    /// DESCRIPTION: a sentence the page shows under the title.
    pub description: Option<String>,
    pub work: SimulatedWork,
    pub downstream: Downstream,
    pub templates: Templates,
    pub error_rate: f64,
    pub max_hops: u32,
    pub trace_link: Option<String>,
    /// BAGGAGE: entries this hop adds to the baggage it passes on.
    pub baggage: Arc<[(String, String)]>,
    /// Marks answers as parts of the chain; the value names this hop.
    pub part_header: HeaderValue,
    pub metrics: HttpMetrics,
}

impl AppState {
    pub fn new(settings: &Settings, templates: Templates) -> anyhow::Result<Self> {
        let metrics = HttpMetrics::default();
        Ok(Self {
            service: settings.service_name.clone(),
            title: settings.title().to_string(),
            description: settings.description.clone(),
            work: SimulatedWork {
                response_time_ms: settings.response_time,
                jitter_ms: settings.response_time_jitter,
            },
            downstream: Downstream::new(settings, &metrics)
                .context("cannot build the HTTP client")?,
            templates,
            error_rate: settings.error_rate,
            max_hops: settings.max_hops,
            trace_link: settings.trace_link.clone(),
            baggage: settings.baggage.0.clone().into(),
            part_header: contract::part_header(&settings.service_name),
            metrics,
        })
    }
}
