//! The routes, one file per resource. Handlers parse, call the engine and answer; the
//! engine does the work. Auth runs as middleware before any body byte is read; every
//! response is counted by route and status.

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::guard::{self, GuardContext};
use actix_web::ResponseError;
use actix_web::{web, HttpRequest, HttpResponseBuilder};

use crate::{ApiError, AppState, ServerConfig};

mod docs;
mod health;
mod images;
mod index;
mod rerank;
mod search;

pub use docs::OPENAPI;

type Data = web::Data<AppState>;

/// Registers every route (the JSON, query and path extractors answer JSON errors). The
/// app also needs [`auth`] and [`count`] as middleware, as [`crate::bind`] sets them.
pub fn configure(cfg: &mut web::ServiceConfig, config: &ServerConfig) {
    let limit = config.max_body_bytes;
    let json = web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |err, _| {
            let e = match &err {
                actix_web::error::JsonPayloadError::Overflow { .. }
                | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => {
                    ApiError::TooLarge(format!("request body over {limit} bytes"))
                }
                _ => ApiError::BadRequest(format!("invalid JSON body: {err}")),
            };
            e.into()
        });
    let query = web::QueryConfig::default().error_handler(|err, _| {
        ApiError::BadRequest(format!("invalid query string: {err}")).into()
    });
    let path = web::PathConfig::default()
        .error_handler(|err, _| ApiError::NotFound(format!("invalid path: {err}")).into());
    let multipart = || guard::fn_guard(is_multipart);
    cfg.app_data(json)
        .app_data(query)
        .app_data(path)
        .route("/health", web::get().to(health::health))
        .route("/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(health::metrics))
        .route(
            "/v1/search",
            web::post().guard(multipart()).to(search::search_form),
        )
        .route("/v1/search", web::post().to(search::search))
        .route("/v1/embed", web::post().to(rerank::embed))
        .route("/v1/rerankers", web::get().to(rerank::rerankers))
        .route("/v1/rerank", web::post().to(rerank::rerank))
        .route(
            "/v1/images",
            web::post().guard(multipart()).to(images::add_form),
        )
        .route("/v1/images", web::post().to(images::add))
        .route("/v1/images", web::get().to(images::list))
        .route("/v1/images/{id}", web::get().to(images::get))
        .route("/v1/images/{id}", web::delete().to(images::delete))
        .route(
            "/v1/images/{id}/thumbnail",
            web::get().to(images::thumbnail),
        )
        .route("/v1/index", web::post().to(index::start))
        .route("/v1/index/{id}", web::get().to(index::status))
        .route("/", web::get().to(docs::page))
        .route("/docs/openapi.json", web::get().to(docs::openapi))
        .route("/docs", web::get().to(docs::swagger_page))
        .route("/docs/", web::get().to(docs::swagger_page))
        .route(
            "/docs/swagger-ui-bundle.js",
            web::get().to(docs::swagger_js),
        )
        .route("/docs/swagger-ui.css", web::get().to(docs::swagger_css));
}

/// Counts every response by route pattern and status, for /metrics.
pub fn count<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let started = Instant::now();
    let state = req.app_data::<Data>().cloned();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let fut = srv.call(req);
    async move {
        let res = fut.await;
        let status = match &res {
            Ok(r) => r.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        if let Some(state) = state {
            let seconds = started.elapsed().as_secs_f64();
            state
                .engine
                .metrics()
                .request(&route, status.as_u16(), seconds);
        }
        res
    }
}

/// Routes open without the API key: probes, metrics, the page and the API description.
fn is_public(path: &str) -> bool {
    matches!(path, "/" | "/health" | "/ready" | "/metrics") || path.starts_with("/docs")
}

/// Bearer-token auth as middleware: an unauthenticated request is answered 401 before its
/// body is read or parsed, and before it takes an in-flight permit.
pub fn auth<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let allowed = is_public(req.path())
        || req
            .app_data::<Data>()
            .is_some_and(|state| key_matches(req.request(), &state.config));
    let outcome = if allowed { Ok(srv.call(req)) } else { Err(req) };
    async move {
        match outcome {
            Ok(fut) => fut.await.map(ServiceResponse::map_into_left_body),
            Err(req) => {
                let refused = ApiError::Unauthorized.error_response();
                Ok(req.into_response(refused).map_into_right_body())
            }
        }
    }
}

fn key_matches(req: &HttpRequest, config: &ServerConfig) -> bool {
    let Some(key) = &config.api_key else {
        return true;
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison: the key must not leak through timing.
    given.is_some_and(|g| {
        g.len() == key.len()
            && g.bytes()
                .zip(key.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

/// A multipart/form-data request with a boundary of at least 4 characters. actix-multipart
/// 0.7.2 panics on some bodies with a shorter one (found by the `request_json` fuzz target);
/// such a request falls through to the JSON route, which refuses it with 400.
fn is_multipart(ctx: &GuardContext<'_>) -> bool {
    ctx.head()
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim_start().to_ascii_lowercase();
            let boundary = v
                .split(';')
                .filter_map(|p| p.trim().strip_prefix("boundary="))
                .next()
                .map_or(0, |b| b.trim_matches('"').len());
            v.starts_with("multipart/form-data") && boundary >= 4
        })
}

/// Most parts a form may have: every route's form has a handful of distinct fields.
const MAX_FORM_PARTS: usize = 16;

/// Longest pause while a form arrives. actix-multipart 0.7 waits forever for a closing
/// boundary that a complete body lacks (actix-web issue 3202); no progress for this long
/// ends the request with 400 instead of holding its connection.
const FORM_IDLE: std::time::Duration = std::time::Duration::from_secs(3);

/// The next item of a form stream, or a 400 when none comes within [`FORM_IDLE`].
async fn next_within<S: futures_util::Stream + Unpin>(
    stream: &mut S,
) -> Result<Option<S::Item>, ApiError> {
    use futures_util::StreamExt;
    actix_web::rt::time::timeout(FORM_IDLE, stream.next())
        .await
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "the multipart body stalled for {} s (no closing boundary?)",
                FORM_IDLE.as_secs()
            ))
        })
}

/// The fields of a multipart/form-data body as `(name, bytes)`, the whole body bounded by
/// the configured limit. A field given twice is refused (one image per upload: several
/// `image` parts are never silently reduced to one), and so is a form of more than
/// [`MAX_FORM_PARTS`] parts.
async fn form_fields(
    mut payload: actix_multipart::Multipart,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let bad = |e: actix_multipart::MultipartError| {
        ApiError::BadRequest(format!("invalid multipart body: {e}"))
    };
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    let mut total = 0usize;
    while let Some(field) = next_within(&mut payload).await? {
        let mut field = field.map_err(bad)?;
        if fields.len() == MAX_FORM_PARTS {
            return Err(ApiError::BadRequest(format!(
                "the form has more than {MAX_FORM_PARTS} parts"
            )));
        }
        let name = field.name().unwrap_or_default().to_owned();
        if fields.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::BadRequest(format!(
                "form field `{}` is given more than once (one image per request: send one \
                 request per image, or index a directory with POST /v1/index)",
                shown(&name)
            )));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = next_within(&mut field).await? {
            let chunk = chunk.map_err(bad)?;
            total += chunk.len();
            if total > limit {
                return Err(ApiError::TooLarge(format!(
                    "request body over {limit} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        fields.push((name, bytes));
    }
    Ok(fields)
}

/// A client-given name as it may appear in an error (at most 64 characters).
fn shown(name: &str) -> String {
    name.chars().take(64).collect()
}

fn form_text(name: &str, bytes: Vec<u8>) -> Result<String, ApiError> {
    String::from_utf8(bytes)
        .map_err(|_| ApiError::BadRequest(format!("field `{}` is not UTF-8", shown(name))))
}

/// A response builder carrying a `Server-Timing` header with the stage times.
fn timed(
    mut builder: HttpResponseBuilder,
    timings: &std::collections::BTreeMap<String, f64>,
) -> HttpResponseBuilder {
    let header: Vec<String> = timings
        .iter()
        .map(|(k, v)| format!("{};dur={v:.3}", k.trim_end_matches("_ms")))
        .collect();
    builder.insert_header(("Server-Timing", header.join(", ")));
    builder
}

/// Runs one engine operation for a request: takes its in-flight permit (429 when none is
/// left) and bounds it by the request timeout.
async fn run<T, F, Fut>(state: &AppState, op: F) -> Result<T, ApiError>
where
    F: FnOnce(std::sync::Arc<setr_engine::Engine>, setr_engine::Work) -> Fut,
    Fut: std::future::Future<Output = setr_engine::Result<T>>,
{
    let work = state.engine.begin()?;
    let engine = state.engine.clone();
    Ok(work.clone().within(op(engine, work)).await?)
}
