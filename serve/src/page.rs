//! The web page at `/`: plain HTML, CSS and JavaScript embedded in the
//! binary (no build step: the page is one form, a progress view and a list,
//! which the browser's own elements and `EventSource` cover).
//!
//! It submits to `POST /v1/songs`, follows `/v1/songs/{id}/events`, points
//! its audio player at the streamed WAV once the first window's audio
//! exists, and lists `GET /v1/songs`.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

/// `GET /`.
pub async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
}

/// `GET /app.js`.
pub async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT)
}

/// `GET /style.css`.
pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}
