//! The routes. Each handler: authorise, take an in-flight permit (429 when none is left),
//! decode on the blocking pool, encode through the batcher, touch the store on the
//! blocking pool, answer JSON with per-stage timings.

use std::future::Future;
use std::time::{Duration, Instant};

use actix_multipart::Multipart;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::guard::{self, GuardContext};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use setr_core::{ComposedQuery, ImageId, Strategy};
use setr_index::NewImage;
use setr_models::{DecodeLimits, RgbImage};

use crate::{ApiError, AppState, ServerConfig};

type Data = web::Data<AppState>;
/// Candidate ids and their stored files.
type CandidatePaths = Vec<(ImageId, Option<String>)>;

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
    cfg.app_data(json)
        .app_data(query)
        .app_data(path)
        .route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics))
        .route(
            "/v1/search",
            web::post()
                .guard(guard::fn_guard(is_multipart))
                .to(search_multipart),
        )
        .route("/v1/search", web::post().to(search))
        .route("/v1/embed", web::post().to(embed))
        .route("/v1/rerankers", web::get().to(rerankers))
        .route("/v1/rerank", web::post().to(rerank))
        .route(
            "/v1/images",
            web::post()
                .guard(guard::fn_guard(is_multipart))
                .to(add_image_multipart),
        )
        .route("/v1/images", web::post().to(add_image))
        .route("/v1/index", web::post().to(index_dir))
        .route("/v1/index/{id}", web::get().to(index_status))
        .route("/v1/images", web::get().to(list_images))
        .route("/v1/images/{id}", web::get().to(get_image))
        .route("/v1/images/{id}", web::delete().to(delete_image))
        .route("/v1/images/{id}/thumbnail", web::get().to(thumbnail))
        .route("/", web::get().to(page))
        .route("/docs/openapi.json", web::get().to(openapi))
        .route("/docs", web::get().to(swagger_page))
        .route("/docs/", web::get().to(swagger_page))
        .route("/docs/swagger-ui-bundle.js", web::get().to(swagger_js))
        .route("/docs/swagger-ui.css", web::get().to(swagger_css));
}

/// Counts every response by route pattern and status, for /metrics.
pub fn guard<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let started = Instant::now();
    let fut = srv.call(req);
    async move {
        let res = fut.await?;
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        if let Some(state) = res.request().app_data::<Data>() {
            state.metrics.request(
                &route,
                res.status().as_u16(),
                started.elapsed().as_secs_f64(),
            );
        }
        Ok(res)
    }
}

fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let Some(key) = &state.config.api_key else {
        return Ok(());
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison: the key must not leak through timing.
    match given {
        Some(g)
            if g.len() == key.len()
                && g.bytes()
                    .zip(key.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0 =>
        {
            Ok(())
        }
        _ => Err(ApiError::Unauthorized),
    }
}

fn permit(state: &AppState) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    state
        .in_flight
        .try_acquire()
        .map_err(|_| ApiError::Overloaded(state.config.max_in_flight))
}

/// Runs a handler's work under the configured request timeout (0 = none). Work already
/// handed to a blocking thread finishes there; the client gets 503 `timeout` at once.
async fn with_timeout<T>(
    state: &AppState,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let limit = state.config.request_timeout_ms;
    if limit == 0 {
        return work.await;
    }
    actix_web::rt::time::timeout(Duration::from_millis(limit), work)
        .await
        .map_err(|_| ApiError::Timeout(limit))?
}

fn is_multipart(ctx: &GuardContext<'_>) -> bool {
    ctx.head()
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

/// The fields of a multipart/form-data body as `(name, bytes)`, the whole body bounded by
/// the configured limit.
async fn form_fields(
    mut payload: Multipart,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    use futures_util::StreamExt;
    let bad = |e: actix_multipart::MultipartError| {
        ApiError::BadRequest(format!("invalid multipart body: {e}"))
    };
    let mut fields = Vec::new();
    let mut total = 0usize;
    while let Some(field) = payload.next().await {
        let mut field = field.map_err(bad)?;
        let name = field.name().unwrap_or_default().to_owned();
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
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

fn form_text(name: &str, bytes: Vec<u8>) -> Result<String, ApiError> {
    String::from_utf8(bytes)
        .map_err(|_| ApiError::BadRequest(format!("field `{name}` is not UTF-8")))
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn internal<E: std::fmt::Display>(e: E) -> ApiError {
    ApiError::Internal(e.to_string())
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn ready(state: Data) -> Result<HttpResponse, ApiError> {
    let images = state.store.lock().map_err(internal)?.len();
    Ok(HttpResponse::Ok().json(json!({
        "ready": true,
        "images": images,
        "model": state.encoder.as_ref().map(|e| e.encoder().identity().clone()),
    })))
}

async fn metrics(state: Data) -> Result<HttpResponse, ApiError> {
    let mut out = String::new();
    state.metrics.render(&mut out);
    let in_flight = state
        .config
        .max_in_flight
        .saturating_sub(state.in_flight.available_permits());
    out.push_str(&format!("# HELP setr_in_flight Requests being processed.\n# TYPE setr_in_flight gauge\nsetr_in_flight {in_flight}\n"));
    let images = state.store.lock().map_err(internal)?.len();
    out.push_str(&format!("# HELP setr_gallery_images Images in the gallery.\n# TYPE setr_gallery_images gauge\nsetr_gallery_images {images}\n"));
    out.push_str("# HELP setr_reranker_loaded Second-stage rerankers available, by name.\n# TYPE setr_reranker_loaded gauge\n");
    for r in &state.rerankers {
        out.push_str(&format!(
            "setr_reranker_loaded{{name=\"{}\"}} 1\n",
            r.name()
        ));
    }
    out.push_str(&format!(
        "# HELP setr_plugins_refused Plugins refused at start.\n# TYPE setr_plugins_refused gauge\nsetr_plugins_refused {}\n",
        state.refused.len()
    ));
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out))
}

/// An image in a request: a stored id or base64 bytes (JSON), or a file field of a
/// multipart form. URLs are refused (no fetching).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ImageInput {
    id: Option<u64>,
    base64: Option<String>,
    url: Option<String>,
    /// The bytes of a multipart file field (never from JSON).
    #[serde(skip)]
    upload: Option<Vec<u8>>,
}

/// A validated [`ImageInput`].
enum ImageRef {
    /// A stored image.
    Stored(u64),
    /// Encoded image bytes (base64 already decoded).
    Bytes(Vec<u8>),
}

impl ImageInput {
    fn uploaded(bytes: Vec<u8>) -> ImageInput {
        ImageInput {
            upload: Some(bytes),
            ..ImageInput::default()
        }
    }

    /// Exactly one of id, base64 or an upload; URLs are refused (setr fetches nothing).
    fn resolve(self) -> Result<ImageRef, ApiError> {
        if self.url.is_some() {
            return Err(ApiError::Validation(
                "image.url: fetching images by URL is disabled".into(),
            ));
        }
        match (self.id, self.base64, self.upload) {
            (Some(id), None, None) => Ok(ImageRef::Stored(id)),
            (None, Some(b64), None) => Ok(ImageRef::Bytes(base64_bytes(&b64)?)),
            (None, None, Some(bytes)) => Ok(ImageRef::Bytes(bytes)),
            _ => Err(ApiError::BadRequest(
                "an image needs exactly one of id or base64".into(),
            )),
        }
    }
}

fn base64_bytes(b64: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| ApiError::BadRequest(format!("image.base64 is not base64: {e}")))
}

/// Decodes image bytes on the blocking pool (pixel limit checked on the header first);
/// returns the image and the bytes.
async fn decode(state: &Data, bytes: Vec<u8>) -> Result<(RgbImage, Vec<u8>), ApiError> {
    let limits = DecodeLimits {
        max_pixels: state.config.max_pixels,
        ..DecodeLimits::default()
    };
    let (image, bytes) =
        web::block(move || setr_models::decode_image(&bytes, &limits).map(|i| (i, bytes)))
            .await
            .map_err(internal)??;
    Ok((image, bytes))
}

fn encoder(state: &Data) -> Result<&crate::EncoderHandle, ApiError> {
    state.encoder.as_ref().ok_or_else(|| {
        ApiError::Unavailable("no model is configured: only stored ids can be searched".into())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    image: Option<ImageInput>,
    text: Option<String>,
    strategy: Option<String>,
    #[serde(default = "default_k")]
    k: usize,
    rerank: Option<RerankRequest>,
}

/// `rerank` of a search: the top `k` coarse candidates go through `rerankers` in order.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RerankRequest {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_rerank_k")]
    k: usize,
    /// Names, in order (default: every configured reranker, in configuration order).
    rerankers: Option<Vec<String>>,
    /// `w * rerank + (1 - w) * normalised previous score`; none = the rerank score alone.
    weight: Option<f32>,
}

fn yes() -> bool {
    true
}

fn default_rerank_k() -> usize {
    50
}

/// TEI/Cohere-style rerank: a query and documents (stored ids or base64 images) ->
/// `[{index, score}]`, best first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RerankBody {
    query: RerankQueryBody,
    documents: Vec<ImageInput>,
    reranker: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RerankQueryBody {
    text: String,
    image: Option<ImageInput>,
}

async fn image_input(state: &Data, input: ImageInput) -> Result<RgbImage, ApiError> {
    match input.resolve()? {
        ImageRef::Stored(id) => {
            let path = state
                .store
                .lock()
                .map_err(internal)?
                .get(ImageId(id))?
                .source_path
                .ok_or_else(|| ApiError::NotFound(format!("image {id} has no stored file")))?;
            let limits = DecodeLimits {
                max_pixels: state.config.max_pixels,
                ..DecodeLimits::default()
            };
            Ok(
                web::block(move || setr_models::decode_file(std::path::Path::new(&path), &limits))
                    .await
                    .map_err(internal)??,
            )
        }
        ImageRef::Bytes(bytes) => Ok(decode(state, bytes).await?.0),
    }
}

fn view(i: &RgbImage) -> setr_core::RgbView<'_> {
    setr_core::RgbView {
        width: i.width(),
        height: i.height(),
        pixels: i.as_raw(),
    }
}

async fn rerank(
    req: HttpRequest,
    state: Data,
    body: web::Json<RerankBody>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let _permit = permit(&state)?;
    with_timeout(&state, run_rerank(state.clone(), body.into_inner())).await
}

async fn run_rerank(state: Data, body: RerankBody) -> Result<HttpResponse, ApiError> {
    if body.documents.is_empty() || body.documents.len() > 1000 {
        return Err(ApiError::Validation("documents: between 1 and 1000".into()));
    }
    let index = match &body.reranker {
        Some(name) => state
            .rerankers
            .iter()
            .position(|r| r.name() == name.as_str())
            .ok_or_else(|| {
                ApiError::Validation(format!("unknown reranker `{name}` (see /v1/rerankers)"))
            })?,
        None if state.rerankers.is_empty() => {
            return Err(ApiError::Unavailable("no reranker is configured".into()))
        }
        None => 0,
    };
    let reference = match body.query.image {
        Some(input) => Some(image_input(&state, input).await?),
        None => None,
    };
    let mut documents = Vec::with_capacity(body.documents.len());
    for d in body.documents {
        documents.push(image_input(&state, d).await?);
    }
    let st = state.clone();
    let t = Instant::now();
    let scores = web::block(move || {
        let null = serde_json::Value::Null;
        let candidates: Vec<setr_core::RerankCandidate> = documents
            .iter()
            .enumerate()
            .map(|(i, d)| setr_core::RerankCandidate {
                id: ImageId(i as u64),
                image: Some(view(d)),
                embedding: None,
                coarse_score: 0.0,
                metadata: &null,
            })
            .collect();
        let query = setr_core::RerankQuery {
            text: &body.query.text,
            reference: reference.as_ref().map(view),
            reference_embedding: None,
        };
        st.rerankers[index].score(&query, &candidates)
    })
    .await
    .map_err(internal)?
    .map_err(|e| ApiError::Validation(e.to_string()))?;
    let mut out: Vec<serde_json::Value> = Vec::with_capacity(scores.len());
    for (i, s) in scores.iter().enumerate() {
        match s {
            Ok(score) => out.push(json!({ "index": i, "score": score })),
            Err(why) => out.push(json!({ "index": i, "score": null, "error": why })),
        }
    }
    out.sort_by(|a, b| {
        let key = |v: &serde_json::Value| v["score"].as_f64().unwrap_or(f64::NEG_INFINITY);
        key(b).total_cmp(&key(a))
    });
    Ok(HttpResponse::Ok()
        .insert_header(("Server-Timing", format!("rerank;dur={:.3}", ms(t))))
        .json(out))
}

async fn rerankers(req: HttpRequest, state: Data) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let names: Vec<_> = state
        .rerankers
        .iter()
        .map(|r| json!({ "name": r.name() }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "rerankers": names, "refused": state.refused })))
}

fn default_k() -> usize {
    10
}

async fn search(
    req: HttpRequest,
    state: Data,
    body: web::Json<SearchRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let _permit = permit(&state)?;
    with_timeout(&state, run_search(state.clone(), body.into_inner())).await
}

/// `POST /v1/search` as multipart/form-data: a file field `image` (or `image_id`), `text`,
/// `strategy`, `k`, and `rerank` (`true`, or the JSON object of the JSON route).
async fn search_multipart(
    req: HttpRequest,
    state: Data,
    payload: Multipart,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let _permit = permit(&state)?;
    with_timeout(&state, async {
        let mut body = serde_json::Map::new();
        let mut upload = None;
        for (name, bytes) in form_fields(payload, state.config.max_body_bytes).await? {
            let value = match name.as_str() {
                "image" => {
                    upload = Some(bytes);
                    continue;
                }
                "image_id" => {
                    let text = form_text(&name, bytes)?;
                    let id: u64 = text.trim().parse().map_err(|_| {
                        ApiError::Validation(format!("image_id `{text}` is not an id"))
                    })?;
                    body.insert("image".into(), json!({ "id": id }));
                    continue;
                }
                "text" | "strategy" => json!(form_text(&name, bytes)?),
                "k" => {
                    let text = form_text(&name, bytes)?;
                    json!(text.trim().parse::<usize>().map_err(|_| {
                        ApiError::Validation(format!("k `{text}` is not a number"))
                    })?)
                }
                "rerank" => {
                    let text = form_text(&name, bytes)?;
                    match text.trim() {
                        "true" | "on" | "1" => json!({ "enabled": true }),
                        "false" | "off" | "0" | "" => json!({ "enabled": false }),
                        other => serde_json::from_str(other).map_err(|e| {
                            ApiError::BadRequest(format!("rerank is not JSON: {e}"))
                        })?,
                    }
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown form field `{other}` (image, image_id, text, strategy, k, rerank)"
                    )))
                }
            };
            body.insert(name, value);
        }
        let mut body: SearchRequest = serde_json::from_value(serde_json::Value::Object(body))
            .map_err(|e| ApiError::BadRequest(format!("invalid search form: {e}")))?;
        if let Some(bytes) = upload {
            if body.image.is_some() {
                return Err(ApiError::BadRequest(
                    "give one of the `image` file and `image_id`".into(),
                ));
            }
            body.image = Some(ImageInput::uploaded(bytes));
        }
        run_search(state.clone(), body).await
    })
    .await
}

async fn run_search(state: Data, body: SearchRequest) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let mut timings = serde_json::Map::new();
    let mut query = ComposedQuery {
        image: None,
        text: None,
    };
    // The reference as an image, for the rerankers: uploaded bytes, or a stored id's file.
    let mut reference_image: Option<RgbImage> = None;
    let mut reference_id: Option<u64> = None;
    if let Some(image) = body.image {
        match image.resolve()? {
            ImageRef::Stored(id) => {
                let embedding = state
                    .store
                    .lock()
                    .map_err(internal)?
                    .embedding(ImageId(id))?;
                query.image = Some(embedding);
                reference_id = Some(id);
            }
            ImageRef::Bytes(bytes) => {
                let t = Instant::now();
                let (decoded, _) = decode(&state, bytes).await?;
                timings.insert("decode_ms".into(), json!(ms(t)));
                let t = Instant::now();
                reference_image = Some(decoded.clone());
                query.image = Some(encoder(&state)?.image(decoded).await?);
                timings.insert("encode_image_ms".into(), json!(ms(t)));
            }
        }
    }
    if let Some(text) = &body.text {
        if text.trim().is_empty() {
            return Err(ApiError::Validation("text is empty".into()));
        }
        let t = Instant::now();
        query.text = Some(encoder(&state)?.text(text.clone()).await?);
        timings.insert("encode_text_ms".into(), json!(ms(t)));
    }
    let strategy: Strategy = match &body.strategy {
        Some(s) => s
            .parse()
            .map_err(|e: setr_core::CoreError| ApiError::Validation(e.to_string()))?,
        None => match (&query.image, &query.text) {
            (Some(_), Some(_)) => Strategy::default(),
            (Some(_), None) => Strategy::Image,
            (None, Some(_)) => Strategy::Text,
            (None, None) => {
                return Err(ApiError::Validation(
                    "a search needs an image, a text or both".into(),
                ))
            }
        },
    };
    if body.k == 0 || body.k > 10_000 {
        return Err(ApiError::Validation(format!(
            "k = {} must be between 1 and 10000",
            body.k
        )));
    }
    let rerank = body.rerank.filter(|r| r.enabled);
    if let Some(r) = &rerank {
        if r.k == 0 || r.k > 1000 {
            return Err(ApiError::Validation(format!(
                "rerank.k = {} must be between 1 and 1000",
                r.k
            )));
        }
        if let Some(w) = r.weight {
            if !(0.0..=1.0).contains(&w) {
                return Err(ApiError::Validation(format!(
                    "rerank.weight = {w} must be in [0, 1]"
                )));
            }
        }
        let names = r.rerankers.clone().unwrap_or_default();
        if state.rerankers.is_empty() {
            return Err(ApiError::Unavailable("no reranker is configured".into()));
        }
        if let Some(unknown) = names
            .iter()
            .find(|n| !state.rerankers.iter().any(|r| r.name() == n.as_str()))
        {
            return Err(ApiError::Validation(format!(
                "unknown reranker `{unknown}` (see /v1/rerankers)"
            )));
        }
    }
    let t = Instant::now();
    let st = state.clone();
    let k = body.k;
    let coarse_k = rerank.as_ref().map_or(k, |r| r.k.max(k));
    let (hits, paths) = web::block(
        move || -> Result<(Vec<setr_core::Hit>, CandidatePaths), ApiError> {
            let store = st.store.lock().map_err(internal)?;
            if store.is_empty() {
                return Ok((Vec::new(), Vec::new()));
            }
            let hits: Vec<setr_core::Hit> = store
                .search(&[query], strategy, coarse_k.min(store.len()))?
                .into_iter()
                .flatten()
                .collect();
            let paths = hits
                .iter()
                .map(|h| (h.id, store.get(h.id).ok().and_then(|r| r.source_path)))
                .collect();
            Ok((hits, paths))
        },
    )
    .await
    .map_err(internal)??;
    timings.insert("search_ms".into(), json!(ms(t)));
    let mut reranker_errors = Vec::new();
    // Per result id, each reranker's score (shown beside the fused score).
    let mut per_reranker = std::collections::HashMap::new();
    let ranked: Vec<setr_core::Ranked> = match rerank {
        Some(r) => {
            let t = Instant::now();
            let st = state.clone();
            let text = body.text.clone().unwrap_or_default();
            let limits = DecodeLimits {
                max_pixels: state.config.max_pixels,
                ..DecodeLimits::default()
            };
            let reference_path = match reference_id {
                Some(id) => {
                    state
                        .store
                        .lock()
                        .map_err(internal)?
                        .get(ImageId(id))?
                        .source_path
                }
                None => None,
            };
            let (chained, stage_timings) = web::block(move || {
                let images = crate::pipeline::load_images(&paths, &limits);
                let reference = reference_image.or_else(|| {
                    reference_path.and_then(|p| {
                        setr_models::decode_file(std::path::Path::new(&p), &limits).ok()
                    })
                });
                let names = r.rerankers.unwrap_or_default();
                let chain: Vec<&dyn setr_core::Reranker> = if names.is_empty() {
                    st.rerankers.iter().map(|r| r.as_ref()).collect()
                } else {
                    names
                        .iter()
                        .filter_map(|n| {
                            st.rerankers
                                .iter()
                                .find(|r| r.name() == n.as_str())
                                .map(|r| r.as_ref())
                        })
                        .collect()
                };
                let fusion = r
                    .weight
                    .map_or(setr_core::Fusion::RerankOnly, setr_core::Fusion::Weighted);
                let mut stage_timings = serde_json::Map::new();
                let chained = crate::pipeline::rerank(
                    &chain,
                    fusion,
                    &hits,
                    &images,
                    reference.as_ref(),
                    &text,
                    &mut stage_timings,
                );
                (chained, stage_timings)
            })
            .await
            .map_err(internal)?;
            timings.extend(stage_timings);
            timings.insert("rerank_total_ms".into(), json!(ms(t)));
            reranker_errors = chained.errors;
            per_reranker = chained.scores;
            chained.ranked
        }
        None => setr_core::Ranked::coarse_only(&hits, None),
    };
    let results: Vec<serde_json::Value> = {
        let store = state.store.lock().map_err(internal)?;
        ranked
            .into_iter()
            .take(k)
            .map(|r| {
                let record = store.get(r.id).ok();
                let scores = per_reranker.remove(&r.id.0);
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                v["source_path"] = json!(record.as_ref().and_then(|x| x.source_path.clone()));
                v["metadata"] = json!(record.map(|x| x.metadata));
                if let Some(scores) = scores {
                    v["rerank_scores"] = serde_json::Value::Object(scores);
                }
                v
            })
            .collect()
    };

    timings.insert("total_ms".into(), json!(ms(started)));
    for (stage, v) in &timings {
        if let Some(v) = v.as_f64() {
            state.metrics.stage(stage.trim_end_matches("_ms"), v / 1e3);
        }
    }
    let server_timing: Vec<String> = timings
        .iter()
        .map(|(k, v)| {
            format!(
                "{};dur={:.3}",
                k.trim_end_matches("_ms"),
                v.as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header(("Server-Timing", server_timing.join(", ")))
        .json(json!({ "strategy": strategy, "results": results, "reranker_errors": reranker_errors, "timings": timings })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedRequest {
    text: Option<String>,
    image: Option<ImageInput>,
}

async fn embed(
    req: HttpRequest,
    state: Data,
    body: web::Json<EmbedRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let _permit = permit(&state)?;
    with_timeout(&state, run_embed(state.clone(), body.into_inner())).await
}

async fn run_embed(state: Data, body: EmbedRequest) -> Result<HttpResponse, ApiError> {
    let encoder = encoder(&state)?;
    let embedding = match (body.text, body.image) {
        (Some(text), None) => encoder.text(text).await?,
        // A stored image's embedding is the one the store holds; bytes are encoded.
        (None, Some(image)) => match image.resolve()? {
            ImageRef::Stored(id) => state
                .store
                .lock()
                .map_err(internal)?
                .embedding(ImageId(id))?,
            ImageRef::Bytes(bytes) => {
                let (image, _) = decode(&state, bytes).await?;
                encoder.image(image).await?
            }
        },
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of text or image".into(),
            ))
        }
    };
    Ok(HttpResponse::Ok()
        .json(json!({ "embedding": embedding, "model": encoder.encoder().identity() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    base64: String,
    #[serde(default)]
    metadata: serde_json::Value,
}

async fn add_image(
    req: HttpRequest,
    state: Data,
    body: web::Json<AddRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let _permit = permit(&state)?;
    let body = body.into_inner();
    with_timeout(&state, async {
        let bytes = base64_bytes(&body.base64)?;
        run_add(state.clone(), bytes, body.metadata).await
    })
    .await
}

/// `POST /v1/images` as multipart/form-data: a file field `image` and optional `metadata`
/// (a JSON object as text).
async fn add_image_multipart(
    req: HttpRequest,
    state: Data,
    payload: Multipart,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let _permit = permit(&state)?;
    with_timeout(&state, async {
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
                        "unknown form field `{other}` (image, metadata)"
                    )))
                }
            }
        }
        let bytes = image
            .ok_or_else(|| ApiError::BadRequest("the form has no `image` file field".into()))?;
        run_add(state.clone(), bytes, metadata).await
    })
    .await
}

async fn run_add(
    state: Data,
    bytes: Vec<u8>,
    metadata: serde_json::Value,
) -> Result<HttpResponse, ApiError> {
    use sha2_lite::hex_sha256;
    if !(metadata.is_null() || metadata.is_object()) {
        return Err(ApiError::Validation(
            "metadata must be a JSON object".into(),
        ));
    }
    let (image, bytes) = decode(&state, bytes).await?;
    let (width, height) = image.dimensions();
    let embedding = encoder(&state)?.image(image).await?;
    let st = state.clone();
    let (id, duplicate) = web::block(move || -> Result<(ImageId, bool), ApiError> {
        let mut store = st.store.lock().map_err(internal)?;
        let hash = hex_sha256(&bytes);
        // The bytes are kept beside the store so results can show and rerank them.
        let dir = store.dir().join("uploads");
        std::fs::create_dir_all(&dir).map_err(internal)?;
        let path = dir.join(&hash);
        if !path.exists() {
            std::fs::write(&path, &bytes).map_err(internal)?;
        }
        let outcome = store.add(NewImage {
            embedding,
            source_path: Some(path.display().to_string()),
            width: Some(width),
            height: Some(height),
            content_hash: Some(format!("sha256:{hash}")),
            metadata,
        })?;
        Ok((
            outcome.id(),
            matches!(outcome, setr_index::AddOutcome::Duplicate(_)),
        ))
    })
    .await
    .map_err(internal)??;
    let status = if duplicate {
        actix_web::http::StatusCode::OK
    } else {
        actix_web::http::StatusCode::CREATED
    };
    Ok(HttpResponse::build(status).json(json!({ "id": id, "duplicate": duplicate })))
}

async fn get_image(
    req: HttpRequest,
    state: Data,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let record = state.store.lock().map_err(internal)?.get(ImageId(*id))?;
    Ok(HttpResponse::Ok().json(record))
}

async fn delete_image(
    req: HttpRequest,
    state: Data,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let _permit = permit(&state)?;
    let st = state.clone();
    let id = *id;
    web::block(move || -> Result<(), ApiError> {
        Ok(st.store.lock().map_err(internal)?.delete(ImageId(id))?)
    })
    .await
    .map_err(internal)??;
    Ok(HttpResponse::NoContent().finish())
}

/// The OpenAPI 3 description of these routes (hand-written; a test checks that every
/// path it lists is routed).
pub const OPENAPI: &str = include_str!("../static/openapi.json");

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

/// Swagger UI over [`OPENAPI`]: swagger-ui-dist 5.35.0 from npm (Apache-2.0), vendored in
/// static/swagger/ with its LICENSE and NOTICE; no build step, nothing fetched at run time.
const SWAGGER_PAGE: &str = include_str!("../static/swagger/index.html");
const SWAGGER_JS: &[u8] = include_bytes!("../static/swagger/swagger-ui-bundle.js");
const SWAGGER_CSS: &[u8] = include_bytes!("../static/swagger/swagger-ui.css");
/// The page asks for the assets with `?v=<version>`, so a year-long cache ends with the
/// next vendored version.
const CACHE_FOREVER: (&str, &str) = ("Cache-Control", "public, max-age=31536000, immutable");

async fn swagger_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(SWAGGER_PAGE)
}

async fn swagger_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(CACHE_FOREVER)
        .body(SWAGGER_JS)
}

async fn swagger_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(CACHE_FOREVER)
        .body(SWAGGER_CSS)
}

/// The web page (plain HTML and JS, compiled into the binary: no build step).
async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("../static/index.html"))
}

/// A PNG thumbnail (longest side 160 px) of a stored image's file.
async fn thumbnail(
    req: HttpRequest,
    state: Data,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let record = state.store.lock().map_err(internal)?.get(ImageId(*id))?;
    let path = record
        .source_path
        .ok_or_else(|| ApiError::NotFound(format!("image {} has no stored file", *id)))?;
    let limits = DecodeLimits {
        max_pixels: state.config.max_pixels,
        ..DecodeLimits::default()
    };
    let png = web::block(move || -> Result<Vec<u8>, ApiError> {
        let image = setr_models::decode_file(std::path::Path::new(&path), &limits)
            .map_err(|e| ApiError::NotFound(format!("the stored file is unreadable: {e}")))?;
        let thumb = image::DynamicImage::ImageRgb8(image).thumbnail(160, 160);
        let mut out = std::io::Cursor::new(Vec::new());
        thumb
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(internal)?;
        Ok(out.into_inner())
    })
    .await
    .map_err(internal)??;
    Ok(HttpResponse::Ok().content_type("image/png").body(png))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

async fn list_images(
    req: HttpRequest,
    state: Data,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    if page.limit > 1000 {
        return Err(ApiError::Validation("limit is at most 1000".into()));
    }
    let store = state.store.lock().map_err(internal)?;
    let images = store.list(page.offset, page.limit)?;
    Ok(HttpResponse::Ok().json(json!({ "images": images, "total": store.len() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexRequest {
    /// A directory under one of the configured index roots (relative: to the first root).
    path: String,
}

/// Starts indexing a server-side directory (only under `index_roots`; symlinks are never
/// followed) on a background thread; answers 202 with the job to poll.
async fn index_dir(
    req: HttpRequest,
    state: Data,
    body: web::Json<IndexRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let dir = crate::indexing::resolve_in_roots(
        std::path::Path::new(&body.path),
        &state.config.index_roots,
    )?;
    let encoder = encoder(&state)?.shared();
    let job = {
        let mut jobs = state.jobs.lock().map_err(internal)?;
        if let Some(running) = jobs.values().find(|j| {
            j.report
                .lock()
                .map(|r| r.state == "running")
                .unwrap_or(false)
        }) {
            return Err(ApiError::Conflict(format!(
                "index job {} is still running; poll /v1/index/{}",
                running.id, running.id
            )));
        }
        let id = jobs.len() as u64 + 1;
        let job = std::sync::Arc::new(crate::IndexJob {
            id,
            report: std::sync::Mutex::new(crate::IndexReport {
                state: "running".into(),
                dir: dir.clone(),
                ..Default::default()
            }),
        });
        jobs.insert(id, job.clone());
        job
    };
    let id = job.id;
    let st = state.clone();
    let limits = DecodeLimits {
        max_pixels: state.config.max_pixels,
        ..DecodeLimits::default()
    };
    std::thread::Builder::new()
        .name(format!("setr-index-{id}"))
        .spawn(move || {
            crate::index_directory(
                &job,
                &dir,
                &st.store,
                &encoder,
                st.config.max_batch.max(1) * 4,
                &limits,
            )
        })
        .map_err(internal)?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/index/{id}")))
        .json(json!({ "job": id, "status": format!("/v1/index/{id}") })))
}

async fn index_status(
    req: HttpRequest,
    state: Data,
    job: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let job = state
        .jobs
        .lock()
        .map_err(internal)?
        .get(&job)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no index job {job}")))?;
    let report = job.report.lock().map_err(internal)?.clone();
    Ok(HttpResponse::Ok().json(json!({ "job": job.id, "report": report })))
}

/// SHA-256 hex of bytes (the store's content hash).
mod sha2_lite {
    pub fn hex_sha256(bytes: &[u8]) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
