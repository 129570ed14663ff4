//! Operations endpoints: health and metrics.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

pub(crate) async fn health(State(app): State<AppState>) -> Response {
    if app.draining.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        axum::Json(json!({"status": "ok"})).into_response()
    }
}

pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    let mut text = app.metrics.render(&app.gauges());
    let forwards = app.store.forward_count().await.unwrap_or(0);
    app.federation.render_metrics(&mut text, forwards);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
