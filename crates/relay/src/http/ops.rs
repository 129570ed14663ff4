//! Operations endpoints: health, metrics, the status page.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
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

pub(crate) async fn status_page(State(app): State<AppState>) -> Html<String> {
    let g = app.gauges();
    let retention_days = app.config.retention.as_secs_f64() / 86_400.0;
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let peers = app.federation.peers.snapshot();
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content='width=device-width,initial-scale=1'>\
         <title>cairn relay</title>\
         <style>body{{font:16px system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em}}\
         code{{word-break:break-all}}td{{padding:.2em 1em .2em 0}}</style></head><body>\
         <h1>cairn relay</h1>\
         <p>This relay stores end-to-end encrypted blobs for cairn clients. It cannot read them.</p>\
         <table>\
         <tr><td>Identity</td><td><code id=key>{key}</code></td></tr>\
         <tr><td>Software</td><td>{software}</td></tr>\
         <tr><td>Stored</td><td id=stored>{blobs} blobs, {used:.2} GiB of {cap:.2} GiB</td></tr>\
         <tr><td>Retention</td><td>{retention_days:.1} days after last access</td></tr>\
         <tr><td>Max blob size</td><td>{max:.2} GiB</td></tr>\
         <tr><td>Peers</td><td id=peers>{peers} ({reachable} reachable), {forwards} blobs handed to peers</td></tr>\
         </table>\
         <p><a href='/.well-known/cairn-relay'>Signed info document</a> · <a href='/metrics'>Metrics</a></p>\
         </body></html>",
        key = app.key.verifying_key(),
        software = crate::SOFTWARE,
        blobs = g.blobs,
        used = gib(g.bytes),
        cap = gib(g.capacity),
        max = gib(app.config.max_blob_size),
        peers = peers.len(),
        reachable = peers
            .iter()
            .filter(|p| p.info.is_some() && p.last_error.is_none())
            .count(),
        forwards = app.store.forward_count().await.unwrap_or(0),
    ))
}
