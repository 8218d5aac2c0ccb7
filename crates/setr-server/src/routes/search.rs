//! `POST /v1/search`, as JSON or as multipart/form-data.

use actix_multipart::Multipart;
use actix_web::{web, HttpResponse};
use serde_json::json;
use setr_engine::types::{ImageInput, SearchRequest, SearchResponse};

use super::{form_fields, form_text, run, shown, timed, Data};
use crate::{ApiError, ErrorBody};

#[utoipa::path(post, path = "/v1/search", tag = "search",
    description = "Composed search. Also accepts multipart/form-data: a file field `image` (or `image_id`), `text`, `strategy`, `k`, and `rerank` (`true`, or the JSON object).",
    request_body = SearchRequest,
    responses((status = 200, description = "Results, best first", body = SearchResponse), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Over a size limit", body = ErrorBody), (status = 415, description = "Not an image setr decodes", body = ErrorBody), (status = 422, description = "Unusable request", body = ErrorBody), (status = 429, description = "Too many requests in flight", body = ErrorBody), (status = 503, description = "Past the request timeout, or not configured", body = ErrorBody)))]
pub async fn search(state: Data, body: web::Json<SearchRequest>) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    let response = run(&state, |engine, work| async move {
        engine.search(&work, req).await
    })
    .await?;
    Ok(timed(HttpResponse::Ok(), &response.timings).json(response))
}

/// The form: a file field `image` (or `image_id`), `text`, `strategy`, `k`, and `rerank`
/// (`true`, or the JSON object of the JSON route).
pub async fn search_form(state: Data, payload: Multipart) -> Result<HttpResponse, ApiError> {
    let fields = form_fields(payload, state.config.max_body_bytes).await?;
    let req = parse_form(fields)?;
    let response = run(&state, |engine, work| async move {
        engine.search(&work, req).await
    })
    .await?;
    Ok(timed(HttpResponse::Ok(), &response.timings).json(response))
}

fn parse_form(fields: Vec<(String, Vec<u8>)>) -> Result<SearchRequest, ApiError> {
    let mut body = serde_json::Map::new();
    let mut upload = None;
    for (name, bytes) in fields {
        let value = match name.as_str() {
            "image" => {
                upload = Some(bytes);
                continue;
            }
            "image_id" => {
                let text = form_text(&name, bytes)?;
                let id: u64 = text.trim().parse().map_err(|_| {
                    ApiError::Validation(format!("image_id `{}` is not an id", shown(&text)))
                })?;
                json!({ "id": id })
            }
            "text" | "strategy" => json!(form_text(&name, bytes)?),
            "k" => {
                let text = form_text(&name, bytes)?;
                json!(text.trim().parse::<usize>().map_err(|_| {
                    ApiError::Validation(format!("k `{}` is not a number", shown(&text)))
                })?)
            }
            "rerank" => match form_text(&name, bytes)?.trim() {
                "true" | "on" | "1" => json!({ "enabled": true }),
                "false" | "off" | "0" | "" => json!({ "enabled": false }),
                other => serde_json::from_str(other)
                    .map_err(|e| ApiError::BadRequest(format!("rerank is not JSON: {e}")))?,
            },
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown form field `{}` (image, image_id, text, strategy, k, rerank)",
                    shown(other)
                )))
            }
        };
        let key = if name == "image_id" {
            "image".into()
        } else {
            name
        };
        body.insert(key, value);
    }
    let mut req: SearchRequest = serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::BadRequest(format!("invalid search form: {e}")))?;
    if let Some(bytes) = upload {
        if req.image.is_some() {
            return Err(ApiError::BadRequest(
                "give one of the `image` file and `image_id`".into(),
            ));
        }
        req.image = Some(ImageInput::bytes(bytes));
    }
    Ok(req)
}
