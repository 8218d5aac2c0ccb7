//! The web page, the OpenAPI description and Swagger UI over it.

use actix_web::HttpResponse;

/// The OpenAPI 3 description of these routes (a test checks that every path it lists is
/// routed).
pub const OPENAPI: &str = include_str!("../../static/openapi.json");

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
        .body(OPENAPI)
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
