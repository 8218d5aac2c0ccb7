//! Request bodies of the HTTP API, JSON and multipart, through the real routes.
//!
//! The request types of `setr-server` are private; the fuzzer goes through its public
//! app instead: `setr_server::configure` with the `auth` and `count` middleware, in
//! process (actix's test service, no socket), as `setr_server::bind` assembles it. The
//! engine has the tiny CLIP fixture (`tests/fixtures/models/clip-a`), a store of a few
//! images with files on disk, and a fake reranker, so that search, embed, add and rerank
//! do their real work. Two apps: one open, one with an API key.
//!
//! The input's first byte picks the route, the content type and the app (bits 0-2: the
//! route, 3: a multipart boundary taken from the body's first line, 6: the key sent, 7:
//! the keyed app); the rest is the body, sent as is. Every answer must be a success or an error with a JSON
//! `{"error", "type"}` body. A 500, a 503 other than `unavailable`/`timeout`, a non-JSON
//! error, a panic or an allocation over the fuzzer's limit is a bug; so is anything but a
//! 401 for a request to the keyed app without the key, whatever its body. The body is also
//! parsed alone, as a `serde_json::Value` and as each of `setr_engine::types`' request
//! types (deep nesting, huge numbers).
#![no_main]

mod scratch;

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_service::boxed::{self, BoxService};
use actix_service::ServiceExt;
use actix_web::dev::ServiceResponse;
use actix_web::{test, web, App};
use libfuzzer_sys::fuzz_target;
use setr_core::{CandidateScore, RerankCandidate, RerankError, RerankQuery, Reranker};
use setr_engine::{types, EncoderConfig, Engine, Rerankers};
use setr_index::{NewImage, Store, StoreConfig};
use setr_server::{AppState, ServerConfig};

const KEY: &str = "fuzz-key";
const BOUNDARY: &str = "XyZfuzzBoundary";

/// Routes the fuzzer posts to: (path, multipart?).
const ROUTES: [(&str, bool); 7] = [
    ("/v1/search", false),
    ("/v1/images", false),
    ("/v1/embed", false),
    ("/v1/rerank", false),
    ("/v1/index", false),
    ("/v1/search", true),
    ("/v1/images", true),
];

type AppService = BoxService<actix_http::Request, ServiceResponse, actix_web::Error>;

/// A reranker that looks at the pixels (mean red) and fails on request.
struct FakeReranker;

impl Reranker for FakeReranker {
    fn name(&self) -> &str {
        "fuzz"
    }

    fn score(
        &self,
        query: &RerankQuery<'_>,
        candidates: &[RerankCandidate<'_>],
    ) -> Result<Vec<CandidateScore>, RerankError> {
        if query.text.contains("fail") {
            return Err(RerankError {
                reranker: "fuzz".into(),
                kind: setr_core::RerankErrorKind::Failed,
                message: "asked to fail".into(),
            });
        }
        Ok(candidates
            .iter()
            .map(|c| match &c.image {
                Some(v) if !v.pixels.is_empty() => {
                    let red: u64 = v.pixels.iter().step_by(3).map(|p| u64::from(*p)).sum();
                    Ok(red as f32 / (v.pixels.len() / 3) as f32)
                }
                _ => Err("no image".into()),
            })
            .collect())
    }
}

fn scratch() -> PathBuf {
    scratch::dir("setr-fuzz-http").to_path_buf()
}

fn fixture_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/clip-a")
}

/// A small PNG with some colour, on disk (stored images are read back for reranking).
fn write_png(path: &Path, seed: u8) {
    let img = image::RgbImage::from_fn(6 + u32::from(seed), 5, |x, y| {
        image::Rgb([seed.wrapping_mul(40), (x * 30) as u8, (y * 40) as u8])
    });
    img.save_with_format(path, image::ImageFormat::Png)
        .expect("write png");
}

fn app(name: &str, api_key: Option<&str>, runner: &actix_web::rt::SystemRunner) -> AppService {
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let mut encoder = EncoderConfig::new(fixture_model().to_str().expect("utf-8 path"));
    encoder.offline = true;
    let encoder = encoder.load().expect("CLIP fixture");
    let mut store_config = StoreConfig::new(encoder.dim());
    store_config.model = Some(encoder.identity().clone());
    let mut store = Store::create(dir.join("store"), store_config).expect("create store");
    let dim = encoder.dim();
    let images = (0..6u8)
        .map(|i| {
            let path = dir.join(format!("{i}.png"));
            write_png(&path, i);
            NewImage {
                embedding: (0..dim)
                    .map(|d| ((usize::from(i) * 7 + d) % 5) as f32 + 0.5)
                    .collect(),
                source_path: Some(path.to_string_lossy().into_owned()),
                width: Some(6 + u32::from(i)),
                height: Some(5),
                content_hash: Some(format!("fuzz-{i}")),
                metadata: serde_json::json!({ "i": i }),
            }
        })
        .collect();
    store.add_batch(images).expect("add");
    let config = ServerConfig {
        api_key: api_key.map(str::to_owned),
        max_in_flight: 4,
        request_timeout_ms: 10_000,
        ..ServerConfig::default()
    };
    let rerankers = Rerankers {
        list: vec![Arc::new(FakeReranker) as Arc<dyn Reranker>],
        refused: Vec::new(),
    };
    let engine = Engine::new(
        store,
        Some(Arc::new(encoder)),
        rerankers,
        config.engine_options(),
    )
    .expect("engine");
    let state = web::Data::new(AppState::new(engine, config.clone()));
    runner.block_on(async move {
        let app = test::init_service(
            App::new()
                .app_data(state)
                .configure(|cfg| setr_server::configure(cfg, &config))
                .wrap_fn(setr_server::auth)
                .wrap_fn(setr_server::count),
        )
        .await;
        boxed_app(app)
    })
}

/// The app behind one type, whatever body type its middleware answers with.
fn boxed_app<S, B>(app: S) -> AppService
where
    S: actix_service::Service<
            actix_http::Request,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
        > + 'static,
    S::Future: 'static,
    B: actix_web::body::MessageBody + 'static,
{
    boxed::service(app.map(ServiceResponse::map_into_boxed_body))
}

struct Apps {
    runner: actix_web::rt::SystemRunner,
    open: AppService,
    keyed: AppService,
}

thread_local! {
    // Never dropped: at exit, actix's own thread-locals are already gone.
    static APPS: ManuallyDrop<Apps> = {
        let runner = actix_web::rt::System::new();
        let open = app("open", None, &runner);
        let keyed = app("keyed", Some(KEY), &runner);
        ManuallyDrop::new(Apps { runner, open, keyed })
    };
}

/// LeakSanitizer's built-in suppressions: actix-router leaks each route's capture names on
/// purpose when an app is built (once, in `init`); nothing per request is suppressed.
#[no_mangle]
pub extern "C" fn __lsan_default_suppressions() -> *const std::ffi::c_char {
    c"leak:actix_router::resource::ResourceDef\n".as_ptr()
}

/// Quiet: no suppression summary after every leak check.
#[no_mangle]
pub extern "C" fn __lsan_default_options() -> *const std::ffi::c_char {
    c"print_suppressions=0".as_ptr()
}

fn check_error_body(status: u16, body: &[u8], what: &str) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{what}: status {status} with a non-JSON body ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    let (Some(error), Some(kind)) = (
        v.get("error").and_then(|e| e.as_str()),
        v.get("type").and_then(|t| t.as_str()),
    ) else {
        panic!("{what}: status {status} without error/type: {v}");
    };
    assert!(!error.is_empty(), "{what}: empty error message");
    match status {
        503 => assert!(
            matches!(kind, "unavailable" | "timeout"),
            "{what}: 503 {kind}: {error}"
        ),
        s if s >= 500 => panic!("{what}: {s} {kind}: {error}"),
        _ => {}
    }
}

fuzz_target!(
    // Built before the first input: actix leaks a few route names on purpose at start.
    init: APPS.with(|_| ()),
    |data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    // The body alone, as a JSON value and as each public request type of the engine (the
    // server's JSON bodies; `POST /v1/images`'s own body type is private to its route).
    let _ = serde_json::from_slice::<serde_json::Value>(body);
    let _ = serde_json::from_slice::<types::SearchRequest>(body);
    let _ = serde_json::from_slice::<types::EmbedRequest>(body);
    let _ = serde_json::from_slice::<types::RerankRequest>(body);

    let (path, multipart) = ROUTES[usize::from(selector & 0x7) % ROUTES.len()];
    let keyed = selector & 0x80 != 0;
    let authorised = selector & 0x40 != 0;
    // Bit 3 on a multipart route: the body's first line is the boundary (any printable
    // token: short ones reach other parser paths), the rest the body.
    let mut body = body;
    let mut boundary = BOUNDARY.to_owned();
    if multipart && selector & 0x08 != 0 {
        let end = body.iter().position(|b| *b == b'\n').unwrap_or(body.len());
        boundary = body[..end]
            .iter()
            .filter(|b| b.is_ascii_graphic() && !b"\";,\\".contains(b))
            .take(70)
            .map(|b| char::from(*b))
            .collect();
        body = body.get(end + 1..).unwrap_or_default();
    }
    let content_type = if multipart {
        format!("multipart/form-data; boundary={boundary}")
    } else {
        "application/json".to_owned()
    };
    let mut req = test::TestRequest::post()
        .uri(path)
        .insert_header(("content-type", content_type))
        .set_payload(body.to_vec());
    if keyed && authorised {
        req = req.insert_header(("authorization", format!("Bearer {KEY}")));
    }
    let what = format!("POST {path} (multipart: {multipart}, keyed: {keyed})");
    let (status, body) = APPS.with(|apps| {
        let app = if keyed { &apps.keyed } else { &apps.open };
        apps.runner.block_on(async {
            // An error out of the service is what actix turns into the response.
            match test::try_call_service(app, req.to_request()).await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    (status, test::read_body(res).await.to_vec())
                }
                Err(e) => {
                    let res = e.error_response();
                    let status = res.status().as_u16();
                    let body = actix_web::body::to_bytes(res.into_body())
                        .await
                        .map(|b| b.to_vec())
                        .unwrap_or_default();
                    (status, body)
                }
            }
        })
    });
    if keyed && !authorised {
        assert_eq!(status, 401, "{what}: unauthenticated request not refused");
    }
    if status >= 400 {
        check_error_body(status, &body, &what);
    } else {
        assert!((200..300).contains(&status), "{what}: status {status}");
    }
});
