//! `GET /health`, `/ready` and `/metrics`: no lock is taken, nothing waits for a scan.

use actix_web::HttpResponse;
use serde_json::json;

use super::Data;

#[utoipa::path(get, path = "/health", tag = "health", security(()), responses((status = 200, description = "`{status: ok}`", body = Object)))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/ready", tag = "health", security(()), responses((status = 200, description = "`{ready, images, model}`", body = Object)))]
pub async fn ready(state: Data) -> HttpResponse {
    let engine = &state.engine;
    HttpResponse::Ok().json(json!({
        "ready": true,
        "images": engine.gallery().len(),
        "model": engine.encoder().map(|e| e.identity().clone()),
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "health", security(()), responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(state: Data) -> HttpResponse {
    let metrics = state.engine.metrics();
    metrics
        .gallery_images
        .set(state.engine.gallery().len() as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
}
