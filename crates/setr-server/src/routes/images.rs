//! The gallery: `POST /v1/images` (JSON base64 or multipart), `GET /v1/images`,
//! `GET/DELETE /v1/images/{id}`, `GET /v1/images/{id}/thumbnail`.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use base64::Engine as _;
use serde::Deserialize;
use setr_engine::types::{AddRequest, AddResponse, StoredImage};

use super::{form_fields, run, shown, Data};
use crate::{ApiError, ErrorBody};

/// An upload as JSON.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    /// The encoded image, base64.
    base64: String,
    /// A JSON object stored with the image.
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
}

/// A page of the gallery.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ImageList {
    images: Vec<StoredImage>,
    /// Images in the gallery.
    total: usize,
}

#[utoipa::path(post, path = "/v1/images", tag = "images",
    description = "Adds an image. Also accepts multipart/form-data: one file field `image` and optional `metadata` (a JSON object); a second `image` part is refused.",
    request_body = AddBody,
    responses((status = 201, description = "Stored", body = AddResponse), (status = 200, description = "The same bytes were already stored", body = AddResponse), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Over a size limit", body = ErrorBody), (status = 415, description = "Not an image setr decodes", body = ErrorBody), (status = 422, description = "Unusable request", body = ErrorBody), (status = 429, description = "Too many requests in flight", body = ErrorBody), (status = 503, description = "Past the request timeout, or not configured", body = ErrorBody)))]
pub async fn add(state: Data, body: web::Json<AddBody>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.base64.trim())
        .map_err(|e| ApiError::BadRequest(format!("base64 is not base64: {e}")))?;
    added(&state, bytes, body.metadata).await
}

/// The form: a file field `image` and optional `metadata` (a JSON object as text). One
/// image per request: a second `image` part is refused, never dropped.
pub async fn add_form(state: Data, payload: Multipart) -> Result<HttpResponse, ApiError> {
    let mut image = None;
    let mut metadata = serde_json::Value::Null;
    for (name, bytes) in form_fields(payload, state.config.max_body_bytes).await? {
        match name.as_str() {
            "image" => image = Some(bytes),
            "metadata" => {
                metadata = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::BadRequest(format!("metadata is not JSON: {e}")))?
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown form field `{}` (image, metadata)",
                    shown(other)
                )))
            }
        }
    }
    let bytes =
        image.ok_or_else(|| ApiError::BadRequest("the form has no `image` file field".into()))?;
    added(&state, bytes, metadata).await
}

async fn added(
    state: &Data,
    bytes: Vec<u8>,
    metadata: serde_json::Value,
) -> Result<HttpResponse, ApiError> {
    let req = AddRequest { bytes, metadata };
    let out: AddResponse = run(
        state,
        |engine, work| async move { engine.add(&work, req).await },
    )
    .await?;
    let status = if out.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(HttpResponse::build(status).json(out))
}

/// Which page of the gallery.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Images skipped (id order).
    #[serde(default)]
    offset: usize,
    /// Images returned (at most 1000).
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

#[utoipa::path(get, path = "/v1/images", tag = "images", params(Page),
    responses((status = 200, description = "`{images, total}`", body = ImageList), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Over a size limit", body = ErrorBody), (status = 415, description = "Not an image setr decodes", body = ErrorBody), (status = 422, description = "Unusable request", body = ErrorBody), (status = 429, description = "Too many requests in flight", body = ErrorBody), (status = 503, description = "Past the request timeout, or not configured", body = ErrorBody)))]
pub async fn list(state: Data, page: web::Query<Page>) -> Result<HttpResponse, ApiError> {
    let Page { offset, limit } = page.into_inner();
    let (images, total) = run(&state, |engine, work| async move {
        engine.list(&work, offset, limit).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(ImageList { images, total }))
}

#[utoipa::path(get, path = "/v1/images/{id}", tag = "images", params(("id" = u64, Path, description = "Image id")),
    responses((status = 200, description = "The record", body = StoredImage), (status = 404, description = "No such image", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Over a size limit", body = ErrorBody), (status = 415, description = "Not an image setr decodes", body = ErrorBody), (status = 422, description = "Unusable request", body = ErrorBody), (status = 429, description = "Too many requests in flight", body = ErrorBody), (status = 503, description = "Past the request timeout, or not configured", body = ErrorBody)))]
pub async fn get(state: Data, id: web::Path<u64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let record = run(&state, |engine, work| async move {
        engine.image(&work, id).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(record))
}

#[utoipa::path(delete, path = "/v1/images/{id}", tag = "images", params(("id" = u64, Path, description = "Image id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such image", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Over a size limit", body = ErrorBody), (status = 415, description = "Not an image setr decodes", body = ErrorBody), (status = 422, description = "Unusable request", body = ErrorBody), (status = 429, description = "Too many requests in flight", body = ErrorBody), (status = 503, description = "Past the request timeout, or not configured", body = ErrorBody)))]
pub async fn delete(state: Data, id: web::Path<u64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    run(&state, |engine, work| async move {
        engine.delete(&work, id).await
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A PNG thumbnail (longest side 160 px) of a stored image's file.
#[utoipa::path(get, path = "/v1/images/{id}/thumbnail", tag = "images", params(("id" = u64, Path, description = "Image id")),
    responses((status = 200, description = "PNG", content_type = "image/png"), (status = 404, description = "No such image or file", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Over a size limit", body = ErrorBody), (status = 415, description = "Not an image setr decodes", body = ErrorBody), (status = 422, description = "Unusable request", body = ErrorBody), (status = 429, description = "Too many requests in flight", body = ErrorBody), (status = 503, description = "Past the request timeout, or not configured", body = ErrorBody)))]
pub async fn thumbnail(state: Data, id: web::Path<u64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let png = run(&state, |engine, work| async move {
        engine.thumbnail(&work, id).await
    })
    .await?;
    Ok(HttpResponse::Ok().content_type("image/png").body(png))
}
