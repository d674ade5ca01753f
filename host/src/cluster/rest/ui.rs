//! The web UI: static files compiled into the binary (no build step, nothing fetched at run
//! time), a page that reads the REST endpoint every second and draws the job graph itself.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("web/index.html");
const APP: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/style.css");

pub(super) async fn index() -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

pub(super) async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], APP).into_response(),
        "style.css" => ([(CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response(),
        _ => super::error(StatusCode::NOT_FOUND, format!("no file {file}")).into_response(),
    }
}
