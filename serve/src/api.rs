//! The HTTP API (JSON; errors are `{"error": message}`):
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the web page ([`crate::page`]) |
//! | `GET /v1/health` | engine identity, backend, queue length |
//! | `GET /v1/presets` | the presets offered, resolved to every setting |
//! | `POST /v1/songs` | `202 {id, position, seed, settings}`; `400` bad body or settings, `413` body too large, `429` queue full, `503` shutting down |
//! | `GET /v1/songs` | the last songs, newest first |
//! | `GET /v1/songs/{id}` | state, settings, seed, progress, timings and TTFA |
//! | `GET /v1/songs/{id}/events` | server-sent events ([`crate::events`]) |
//! | `GET /v1/songs/{id}/audio` | the WAV: streamed while it is made (header sizes `0xFFFFFFFF`, as `heart-run --out -`), the file's bytes once done; `409` for a failed or cancelled song |
//! | `DELETE /v1/songs/{id}` | cancels: `200` with the state after it, `202` while a running song stops |
//!
//! Unknown ids are `404`. Streams poll nothing: they wait on the song's watch
//! channel and end when the song does (an audio stream of a song that fails
//! or is cancelled is cut off with an error, so no client keeps a partial
//! file thinking it whole).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use futures_util::stream;
use serde_json::{Value, json};

use crate::events::Event;
use crate::jobs::{Job, JobState, Refused};
use crate::page;
use crate::request::SongBody;
use crate::service::{Shared, Submit};

/// Largest request body accepted (tags + lyrics limits plus JSON overhead).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Songs `GET /v1/songs` lists at most.
pub const LIST_LIMIT: usize = 50;

/// The service's routes over `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/v1/health", get(health))
        .route("/v1/presets", get(presets))
        .route("/v1/songs", get(list).post(create))
        .route("/v1/songs/{id}", get(show).delete(cancel))
        .route("/v1/songs/{id}/events", get(events))
        .route("/v1/songs/{id}/audio", get(audio))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// An error response: a status and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("no song {id:?} (unknown, or evicted from the store)"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type Api<T> = Result<T, ApiError>;

async fn health(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let store = shared.store();
    Json(json!({
        "status": if store.is_closed() { "shutting_down" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "engine": shared.engine,
        "queue": {
            "queued": store.queued(),
            "running": store.running().is_some(),
            "max_queued": shared.limits.max_queued,
        },
    }))
}

async fn presets(State(shared): State<Arc<Shared>>) -> Api<Json<Value>> {
    let mut out = serde_json::Map::new();
    for (name, preset) in &shared.presets {
        let settings = heart_runtime::settings::SettingsArgs::default()
            .resolve(preset)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        out.insert(name.clone(), json!(settings));
    }
    Ok(Json(Value::Object(out)))
}

async fn create(State(shared): State<Arc<Shared>>, body: Result<Json<SongBody>, JsonRejection>) -> Api<Response> {
    let Json(body) = body.map_err(|r| {
        let status = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, r.body_text())
    })?;
    // Tokenizing for the context check takes milliseconds; off the reactor anyway.
    let submitted = tokio::task::spawn_blocking(move || shared.submit(body))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match submitted {
        Ok((id, position, spec)) => Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/v1/songs/{id}"))],
            Json(json!({ "id": id, "position": position, "seed": spec.seed, "settings": spec.settings })),
        )
            .into_response()),
        Err(Submit::Invalid(message)) => Err(ApiError::new(StatusCode::BAD_REQUEST, message)),
        Err(Submit::Refused(Refused::QueueFull)) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "the queue is full: try again when a song has finished",
        )),
        Err(Submit::Refused(Refused::Closed)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is shutting down",
        )),
    }
}

/// A song as `GET /v1/songs/{id}` shows it.
fn view(job: &Job, position: Option<usize>) -> Value {
    let mut frames = json!(null);
    let mut windows = json!(null);
    let mut error = json!(null);
    for e in &job.events {
        match e {
            Event::Frames { frames: f, max_frames } => frames = json!({ "done": f, "max": max_frames }),
            Event::Windows {
                done,
                total,
                audio_seconds,
            } => {
                windows = json!({ "done": done, "total": total, "audio_seconds": audio_seconds });
            }
            Event::Failed { error: message } => error = json!(message),
            _ => {}
        }
    }
    json!({
        "id": job.id,
        "state": job.state,
        "position": position,
        "created_unix": job.created_unix,
        "tags": job.spec.tags,
        "lyrics": job.spec.lyrics,
        "preset": job.spec.preset,
        "seed": job.spec.seed,
        "settings": job.spec.settings,
        "frames": frames,
        "windows": windows,
        "result": job.outcome(),
        "error": error,
        "audio_url": format!("/v1/songs/{}/audio", job.id),
    })
}

async fn show(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Api<Json<Value>> {
    let store = shared.store();
    let job = store.get(&id).ok_or_else(|| ApiError::not_found(&id))?;
    Ok(Json(view(job, store.position(&id))))
}

async fn list(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let store = shared.store();
    let songs: Vec<Value> = store
        .recent(LIST_LIMIT)
        .into_iter()
        .map(|job| view(job, store.position(&job.id)))
        .collect();
    Json(json!({ "songs": songs }))
}

async fn cancel(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Api<Response> {
    let state = shared.cancel(&id).ok_or_else(|| ApiError::not_found(&id))?;
    let status = if state == JobState::Running {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "id": id, "state": state }))).into_response())
}

async fn events(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Api<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let changed = shared
        .store()
        .get(&id)
        .ok_or_else(|| ApiError::not_found(&id))?
        .subscribe();
    let events = stream::unfold(
        (shared, id, changed, 0usize, false),
        |(shared, id, mut changed, next, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let event = shared.store().get(&id)?.events.get(next).cloned();
                match event {
                    Some(event) => {
                        let data = serde_json::to_string(&event).unwrap_or_default();
                        let sse = SseEvent::default().event(event.name()).data(data);
                        let end = event.is_final();
                        return Some((Ok(sse), (shared, id, changed, next + 1, end)));
                    }
                    None => changed.changed().await.ok()?,
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

async fn audio(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Api<Response> {
    let (state, changed, whole) = {
        let store = shared.store();
        let job = store.get(&id).ok_or_else(|| ApiError::not_found(&id))?;
        let whole = (job.state == JobState::Done).then(|| job.audio.clone());
        (job.state, job.subscribe(), whole)
    };
    match state {
        JobState::Failed | JobState::Cancelled => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "song {id} was {}: it has no audio",
                    if state == JobState::Failed {
                        "failed"
                    } else {
                        "cancelled"
                    }
                ),
            ));
        }
        JobState::Done | JobState::Queued | JobState::Running => {}
    }
    let disposition = format!("inline; filename=\"heart-{id}.wav\"");
    if let Some(bytes) = whole {
        return Ok((
            [
                (header::CONTENT_TYPE, "audio/wav".to_string()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            bytes,
        )
            .into_response());
    }
    let body = stream::unfold(
        (shared, id, changed, 0usize),
        |(shared, id, mut changed, sent)| async move {
            if sent == usize::MAX {
                return None;
            }
            loop {
                let current = shared
                    .store()
                    .get(&id)
                    .map(|job| (job.audio.get(sent..).map(<[u8]>::to_vec).unwrap_or_default(), job.state));
                let Some((bytes, state)) = current else {
                    // Evicted before this reader had all of it: cut, not end.
                    let cut = std::io::Error::other(format!("song {id} left the store"));
                    return Some((Err(cut), (shared, id, changed, usize::MAX)));
                };
                if !bytes.is_empty() {
                    let n = bytes.len();
                    return Some((Ok(bytes), (shared, id, changed, sent + n)));
                }
                match state {
                    JobState::Done => return None,
                    JobState::Failed | JobState::Cancelled => {
                        let cut = std::io::Error::other(format!("song {id} ended without its audio"));
                        return Some((Err(cut), (shared, id, changed, usize::MAX)));
                    }
                    // An error means the song was evicted: the next look cuts the stream.
                    JobState::Queued | JobState::Running => {
                        let _ = changed.changed().await;
                    }
                }
            }
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "audio/wav".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
