//! `heart-serve`: the song service behind `heart-run serve`.
//!
//! One engine folder, opened once by the caller into a
//! [`heart_runtime::song::Pipeline`], serves songs over HTTP: a bounded queue
//! and one worker thread ([`service`]), the job table with its bounded store
//! of finished songs ([`jobs`]), request validation with `heart-run`'s rules
//! ([`request`]), the JSON, server-sent-events and streamed-WAV API
//! ([`api`], events in [`events`]) and the web page ([`page`]).
//!
//! Dependencies point one way: this crate uses `heart` and `heart-runtime`,
//! and `heart-run` uses it; the inference library stays free of async and
//! HTTP code.

pub mod api;
pub mod events;
pub mod jobs;
pub mod page;
pub mod request;
pub mod service;

use std::future::Future;
use std::sync::Arc;

pub use jobs::StoreLimits;
pub use service::{Options, Service};

/// Errors of the service itself (request errors are HTTP responses, see [`api`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The engine folder lacks something the service needs.
    #[error("engine folder: {0}")]
    Engine(String),
    /// A socket or thread operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The worker thread panicked (a bug); its song was lost.
    #[error("the worker thread panicked")]
    WorkerPanicked,
}

/// Serves `service` on `listener` until `shutdown` completes, then shuts
/// down gracefully: new songs are refused, waiting ones cancelled, the
/// running one stopped within a frame (its audio dropped: nothing partial is
/// served or written), open event and audio streams end with their songs, and
/// the worker is joined before this returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let shared = service.shared();
    let closing = Arc::clone(&shared);
    axum::serve(listener, api::router(shared))
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.close();
        })
        .await
        .map_err(|source| ServeError::Io {
            what: "serving HTTP".into(),
            source,
        })?;
    tokio::task::spawn_blocking(move || service.stop())
        .await
        .map_err(|_| ServeError::WorkerPanicked)?
}
