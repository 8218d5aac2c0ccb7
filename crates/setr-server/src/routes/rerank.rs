//! `POST /v1/rerank` (TEI/Cohere-style), `GET /v1/rerankers`, `POST /v1/embed`.

use actix_web::{web, HttpResponse};
use serde_json::json;
use setr_engine::types::{EmbedRequest, EmbedResponse, RerankRequest, RerankScore};

use super::{run, Data};
use crate::{ApiError, ErrorBody};

#[utoipa::path(post, path = "/v1/rerank", tag = "rerank", request_body = RerankRequest,
    responses((status = 200, description = "`[{index, score}]`, best first", body = Vec<RerankScore>), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Over a size limit", body = ErrorBody), (status = 415, description = "Not an image setr decodes", body = ErrorBody), (status = 422, description = "Unusable request", body = ErrorBody), (status = 429, description = "Too many requests in flight", body = ErrorBody), (status = 503, description = "Past the request timeout, or not configured", body = ErrorBody)))]
pub async fn rerank(state: Data, body: web::Json<RerankRequest>) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    let started = std::time::Instant::now();
    let scores = run(&state, |engine, work| async move {
        engine.rerank(&work, req).await
    })
    .await?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(HttpResponse::Ok()
        .insert_header(("Server-Timing", format!("rerank;dur={ms:.3}")))
        .json(scores))
}

#[utoipa::path(get, path = "/v1/rerankers", tag = "rerank",
    responses((status = 200, description = "`{rerankers: [{name}], refused: [{path, why}]}`", body = Object)))]
pub async fn rerankers(state: Data) -> HttpResponse {
    let names: Vec<_> = state
        .engine
        .rerankers()
        .iter()
        .map(|r| json!({ "name": r.name() }))
        .collect();
    HttpResponse::Ok().json(json!({ "rerankers": names, "refused": state.engine.refused() }))
}

#[utoipa::path(post, path = "/v1/embed", tag = "embed", request_body = EmbedRequest,
    responses((status = 200, description = "The embedding", body = EmbedResponse), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Over a size limit", body = ErrorBody), (status = 415, description = "Not an image setr decodes", body = ErrorBody), (status = 422, description = "Unusable request", body = ErrorBody), (status = 429, description = "Too many requests in flight", body = ErrorBody), (status = 503, description = "Past the request timeout, or not configured", body = ErrorBody)))]
pub async fn embed(state: Data, body: web::Json<EmbedRequest>) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    let out = run(&state, |engine, work| async move {
        engine.embed(&work, req).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(out))
}
