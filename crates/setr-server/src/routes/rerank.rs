//! `POST /v1/rerank` (TEI/Cohere-style), `GET /v1/rerankers`, `POST /v1/embed`.

use actix_web::{web, HttpResponse};
use serde_json::json;
use setr_engine::types::{EmbedRequest, RerankRequest};

use super::{run, Data};
use crate::ApiError;

pub async fn rerank(state: Data, body: web::Json<RerankRequest>) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    let started = std::time::Instant::now();
    let scores = run(&state, |engine, work| async move { engine.rerank(&work, req).await }).await?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(HttpResponse::Ok()
        .insert_header(("Server-Timing", format!("rerank;dur={ms:.3}")))
        .json(scores))
}

pub async fn rerankers(state: Data) -> HttpResponse {
    let names: Vec<_> = state
        .engine
        .rerankers()
        .iter()
        .map(|r| json!({ "name": r.name() }))
        .collect();
    HttpResponse::Ok().json(json!({ "rerankers": names, "refused": state.engine.refused() }))
}

pub async fn embed(state: Data, body: web::Json<EmbedRequest>) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    let out = run(&state, |engine, work| async move { engine.embed(&work, req).await }).await?;
    Ok(HttpResponse::Ok().json(out))
}
