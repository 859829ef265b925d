//! Probes: `/healthz` (the process answers) and `/readyz` (it can serve `/`).

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{IntoResponse, Response, handler};

use crate::state::AppState;

#[handler]
pub fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when every template still loads and compiles.
#[handler]
pub fn readyz(Data(state): Data<&Arc<AppState>>) -> Response {
    match state.templates.check() {
        Ok(()) => "ready\n".into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {error}\n"),
        )
            .into_response(),
    }
}
