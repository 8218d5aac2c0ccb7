//! The web page, the OpenAPI description and Swagger UI over it.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{health, images, index, rerank, search};

/// The API description, generated from the request and response types (their doc comments
/// are the descriptions) and the routes' annotations, so it cannot drift from the code.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "setr",
        description = "Composed image retrieval: a reference image and a modification text find the target in a gallery. Errors are `{error, type}`."
    ),
    paths(
        search::search,
        images::add,
        images::list,
        images::get,
        images::delete,
        images::thumbnail,
        rerank::rerank,
        rerank::rerankers,
        rerank::embed,
        index::start,
        index::status,
        health::health,
        health::ready,
        health::metrics,
    ),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Bearer-token auth (`--api-key`); probes, metrics, the page and the docs are open.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The OpenAPI 3 description of these routes, as JSON (a test checks that every path it
/// lists is routed).
pub static OPENAPI: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default());

/// Swagger UI over [`OPENAPI`]: swagger-ui-dist 5.35.0 from npm (Apache-2.0), vendored in
/// static/swagger/ with its LICENSE and NOTICE; no build step, nothing fetched at run time.
const SWAGGER_PAGE: &str = include_str!("../../static/swagger/index.html");
const SWAGGER_JS: &[u8] = include_bytes!("../../static/swagger/swagger-ui-bundle.js");
const SWAGGER_CSS: &[u8] = include_bytes!("../../static/swagger/swagger-ui.css");
/// The page asks for the assets with `?v=<version>`, so a year-long cache ends with the
/// next vendored version.
const CACHE_FOREVER: (&str, &str) = ("Cache-Control", "public, max-age=31536000, immutable");

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI.as_str())
}

pub async fn swagger_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(SWAGGER_PAGE)
}

pub async fn swagger_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(CACHE_FOREVER)
        .body(SWAGGER_JS)
}

pub async fn swagger_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(CACHE_FOREVER)
        .body(SWAGGER_CSS)
}

/// The web page (plain HTML and JS, compiled into the binary: no build step).
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("../../static/index.html"))
}
