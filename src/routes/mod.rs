//! The HTTP surface: the chain at `/`, probes beside it.

mod chain;
mod health;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt as _, Route, get};

use crate::state::AppState;
use crate::telemetry::server_span;

pub fn router(state: Arc<AppState>) -> impl Endpoint {
    let baggage = state.baggage.clone();
    let metrics = state.metrics.clone();
    Route::new()
        .at(
            "/",
            get(chain::chain)
                .post(chain::chain)
                .around(move |next, request| {
                    let (baggage, metrics) = (baggage.clone(), metrics.clone());
                    async move { server_span(next, request, "/", &baggage, &metrics).await }
                }),
        )
        // Probes stay untraced: they would bury the chain's traces.
        .at("/healthz", get(health::healthz))
        .at("/readyz", get(health::readyz))
        .data(state)
}
