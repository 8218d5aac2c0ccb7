//! `POST /v1/index` (index a server-side directory under the configured roots, in the
//! background) and `GET /v1/index/{id}` (its progress).

use std::sync::{Arc, Mutex};

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use setr_engine::{IndexJob, IndexReport, JobState};

use super::Data;
use crate::{ApiError, ErrorBody};

/// A directory to index.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexBody {
    /// A directory under one of the configured index roots (relative: to the first root).
    path: String,
}

/// Starts the job (one at a time: 409 while one runs); answers 202 with where to poll.
#[utoipa::path(post, path = "/v1/index", tag = "index", request_body = IndexBody,
    responses((status = 202, description = "`{job, status}`; poll `status`", body = Object), (status = 403, description = "Outside the index roots, or indexing is off", body = ErrorBody), (status = 404, description = "No such directory", body = ErrorBody), (status = 409, description = "A job is running", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Over a size limit", body = ErrorBody), (status = 415, description = "Not an image setr decodes", body = ErrorBody), (status = 422, description = "Unusable request", body = ErrorBody), (status = 429, description = "Too many requests in flight", body = ErrorBody), (status = 503, description = "Past the request timeout, or not configured", body = ErrorBody)))]
pub async fn start(state: Data, body: web::Json<IndexBody>) -> Result<HttpResponse, ApiError> {
    let dir = crate::roots::resolve_in_roots(
        std::path::Path::new(&body.path),
        &state.config.index_roots,
    )?;
    let engine = state.engine.clone();
    if engine.encoder().is_none() {
        return Err(ApiError::Unavailable("no model is configured".into()));
    }
    let job = {
        let mut jobs = state.jobs.lock().map_err(|_| poisoned())?;
        let running = jobs
            .values()
            .find(|j| j.report.lock().is_ok_and(|r| r.state == JobState::Running));
        if let Some(running) = running {
            return Err(ApiError::Conflict(format!(
                "index job {} is still running; poll /v1/index/{}",
                running.id, running.id
            )));
        }
        let id = jobs.len() as u64 + 1;
        let job = Arc::new(IndexJob {
            id,
            report: Mutex::new(IndexReport {
                dir: dir.clone(),
                ..IndexReport::default()
            }),
        });
        jobs.insert(id, job.clone());
        job
    };
    let id = job.id;
    std::thread::Builder::new()
        .name(format!("setr-index-{id}"))
        .spawn(move || engine.index_directory(&job, &dir))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/index/{id}")))
        .json(json!({ "job": id, "status": format!("/v1/index/{id}") })))
}

#[utoipa::path(get, path = "/v1/index/{id}", tag = "index", params(("id" = u64, Path, description = "Job id")),
    responses((status = 200, description = "`{job, report}`", body = IndexStatus), (status = 404, description = "No such job", body = ErrorBody)))]
pub async fn status(state: Data, job: web::Path<u64>) -> Result<HttpResponse, ApiError> {
    let job = state
        .jobs
        .lock()
        .map_err(|_| poisoned())?
        .get(&job)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no index job {job}")))?;
    let report = job.report.lock().map_err(|_| poisoned())?.clone();
    Ok(HttpResponse::Ok().json(IndexStatus {
        job: job.id,
        report,
    }))
}

/// A job's progress.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct IndexStatus {
    /// The job's id.
    job: u64,
    /// Where it stands.
    report: IndexReport,
}

fn poisoned() -> ApiError {
    ApiError::Internal("a job lock was poisoned".into())
}
