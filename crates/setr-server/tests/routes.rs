//! The routes in process (actix's test service, no socket), one scenario per test, over a
//! temporary store and the tiny CLIP fixture written by transformers. What only a real
//! process can show (restart, kill -9, 429 bursts, the browser) is in crates/setr/tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::{test, web, App};
use serde_json::{json, Value};
use setr_engine::{EncoderConfig, Engine, Rerankers};
use setr_index::{Store, StoreConfig};
use setr_server::{AppState, ServerConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn state(dir: &Path, config: ServerConfig) -> web::Data<AppState> {
    let mut encoder = EncoderConfig::new(fixtures().join("models/clip-a").to_str().unwrap());
    encoder.offline = true;
    let encoder = encoder.load().unwrap();
    let mut store_config = StoreConfig::new(encoder.dim());
    store_config.model = Some(encoder.identity().clone());
    let store = Store::create(dir.join("store"), store_config).unwrap();
    let engine = Engine::new(
        store,
        Some(Arc::new(encoder)),
        Rerankers::default(),
        config.engine_options(),
    )
    .unwrap();
    web::Data::new(AppState::new(engine, config))
}

macro_rules! app {
    ($state:expr) => {{
        let state = $state;
        let config = state.config.clone();
        test::init_service(
            App::new()
                .app_data(state)
                .configure(|cfg| setr_server::configure(cfg, &config))
                .wrap_fn(setr_server::auth)
                .wrap_fn(setr_server::count),
        )
        .await
    }};
}

fn b64(path: &str) -> String {
    use base64::Engine as _;
    let bytes = std::fs::read(fixtures().join("images").join(path)).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn call<S, B>(app: &S, req: test::TestRequest) -> (u16, Value)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status().as_u16();
    let body = test::read_body(res).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[actix_web::test]
async fn an_unauthenticated_body_is_refused_before_it_is_parsed() {
    let tmp = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        api_key: Some("k".into()),
        ..ServerConfig::default()
    };
    let app = app!(state(tmp.path(), config));
    // Not JSON at all: parsed first, this would be a 400.
    let req = test::TestRequest::post()
        .uri("/v1/search")
        .insert_header(("content-type", "application/json"))
        .set_payload("{{{ not json");
    let (status, body) = call(&app, req).await;
    assert_eq!((status, body["type"].as_str()), (401, Some("unauthorized")));
    let req = test::TestRequest::get().uri("/health");
    assert_eq!(call(&app, req).await.0, 200, "probes stay open");
}

#[actix_web::test]
async fn a_text_over_the_limit_is_413_before_tokenising() {
    let tmp = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        max_text_bytes: 100,
        ..ServerConfig::default()
    };
    let app = app!(state(tmp.path(), config));
    let req = test::TestRequest::post()
        .uri("/v1/search")
        .set_json(json!({ "text": "x".repeat(101) }));
    let (status, body) = call(&app, req).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    let req = test::TestRequest::post()
        .uri("/v1/embed")
        .set_json(json!({ "text": "x".repeat(101) }));
    assert_eq!(call(&app, req).await.0, 413);
}

#[actix_web::test]
async fn two_image_parts_are_refused_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let state = state(tmp.path(), ServerConfig::default());
    let engine = state.engine.clone();
    let app = app!(state);
    let png = std::fs::read(fixtures().join("images/grey.png")).unwrap();
    let boundary = "XyZ";
    let mut body = Vec::new();
    for name in ["a.png", "b.png"] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&png);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let req = test::TestRequest::post()
        .uri("/v1/images")
        .insert_header((
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        ))
        .set_payload(body);
    let (status, body) = call(&app, req).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    assert_eq!(engine.gallery().len(), 0);
}

#[actix_web::test]
async fn results_name_files_without_the_servers_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app!(state(tmp.path(), ServerConfig::default()));
    let req = test::TestRequest::post()
        .uri("/v1/images")
        .set_json(json!({ "base64": b64("landscape.png") }));
    let (status, added) = call(&app, req).await;
    assert_eq!(status, 201, "{added}");
    let req = test::TestRequest::post()
        .uri("/v1/search")
        .set_json(json!({ "image": { "id": added["id"] }, "k": 1 }));
    let (status, found) = call(&app, req).await;
    assert_eq!(status, 200, "{found}");
    let top = &found["results"][0];
    assert!(top.get("source_path").is_none(), "{top}");
    assert!(
        top["file_name"].as_str().is_some_and(|n| !n.contains('/')),
        "{top}"
    );
    assert_eq!(
        top["thumbnail_url"],
        json!(format!("/v1/images/{}/thumbnail", added["id"]))
    );
    let req = test::TestRequest::get().uri("/v1/images");
    let (_, listed) = call(&app, req).await;
    assert!(listed["images"][0].get("source_path").is_none(), "{listed}");
}

#[actix_web::test]
async fn k_outside_its_range_is_422() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app!(state(tmp.path(), ServerConfig::default()));
    for k in [0, 10_001] {
        let req = test::TestRequest::post()
            .uri("/v1/search")
            .set_json(json!({ "text": "a red circle", "k": k }));
        let (status, body) = call(&app, req).await;
        assert_eq!(
            (status, body["type"].as_str()),
            (422, Some("validation")),
            "k={k}"
        );
    }
}

#[actix_web::test]
async fn a_reranker_that_needs_a_reference_is_refused_before_any_document_is_decoded() {
    let tmp = tempfile::tempdir().unwrap();
    let mut encoder = EncoderConfig::new(fixtures().join("models/clip-a").to_str().unwrap());
    encoder.offline = true;
    let encoder = encoder.load().unwrap();
    let mut store_config = StoreConfig::new(encoder.dim());
    store_config.model = Some(encoder.identity().clone());
    let store = Store::create(tmp.path().join("store"), store_config).unwrap();
    let rerankers = setr_engine::RerankerConfig {
        model: Some(fixtures().join("models/qwen3vl-a").display().to_string()),
        ..Default::default()
    }
    .load()
    .unwrap();
    let config = ServerConfig::default();
    let engine = Engine::new(
        store,
        Some(Arc::new(encoder)),
        rerankers,
        config.engine_options(),
    );
    let app = app!(web::Data::new(AppState::new(engine.unwrap(), config)));
    // Documents that are not images: decoding them first would answer 415.
    let req = test::TestRequest::post().uri("/v1/rerank").set_json(json!({
        "query": { "text": "make it red" },
        "documents": [{ "base64": "aGVsbG8=" }, { "base64": "aGVsbG8=" }],
    }));
    let (status, body) = call(&app, req).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (422, Some("validation")),
        "{body}"
    );
}

#[actix_web::test]
async fn a_multipart_body_with_a_one_letter_boundary_is_400_not_a_panic() {
    // actix-multipart 0.7.2 panics on this body (found by fuzz/request_json).
    let tmp = tempfile::tempdir().unwrap();
    let app = app!(state(tmp.path(), ServerConfig::default()));
    for uri in ["/v1/search", "/v1/images"] {
        let req = test::TestRequest::post()
            .uri(uri)
            .insert_header(("content-type", "multipart/form-data; boundary=a"))
            .set_payload("\n");
        let (status, body) = call(&app, req).await;
        assert_eq!(
            (status, body["type"].as_str()),
            (400, Some("bad_request")),
            "{uri}: {body}"
        );
    }
}
