//! What the service tests share: tiny engines built once per test process,
//! a service on a loopback socket that the test stops (or its drop does),
//! song bodies, and a server-sent-events reader with a deadline.

#![allow(dead_code)] // each test file uses its own part of these helpers

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use heart::manifest::Verify;
use heart_runtime::settings::SettingsArgs;
use heart_runtime::song::Pipeline;
use heart_serve::{Options, ServeError, Service, StoreLimits};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest any one wait of these tests may take.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Engines (LM + codec) from `heart-build synth --size tiny`, once per process.
pub fn engines() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let engines = heart_test_support::synth_tiny_engines(root.path());
        (root, engines)
    })
    .1
}

/// The presets `heart-run serve` offers, from the repository's configs/.
pub fn presets() -> Vec<(String, SettingsArgs)> {
    let configs = heart_test_support::workspace_root().join("configs");
    ["speed", "quality"]
        .into_iter()
        .map(|n| (n.to_string(), SettingsArgs::load_preset(n, &configs).unwrap()))
        .collect()
}

/// A running service on 127.0.0.1 (an OS-chosen port).
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The address.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// Opens the tiny engines and serves them with `limits`.
    pub async fn start(limits: StoreLimits) -> Self {
        let rt = heart_backend::init(None).expect("ONNX Runtime: run scripts/setup-ort.sh first");
        let pipeline = Pipeline::open(&rt, engines(), Verify::Quick).unwrap();
        let service = Service::start(
            pipeline,
            Options {
                limits,
                presets: presets(),
                backend: "cpu".into(),
            },
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(heart_serve::serve(listener, service, async move {
            let _ = stopped.await;
        }));
        Self {
            base: format!("http://{addr}"),
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Shuts the service down and fails the test unless it stopped cleanly in time.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the service stops in time")
            .expect("the serve task ends")
            .expect("the service stops cleanly");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Limits roomy enough for every test but the queue test.
pub fn limits() -> StoreLimits {
    StoreLimits {
        max_queued: 8,
        max_finished: 20,
        max_finished_bytes: 64 << 20,
    }
}

/// The test songs' text.
pub const TAGS: &str = "piano,happy";
/// The test songs' lyrics.
pub const LYRICS: &str = "[verse]\nla la";

/// A request body: the test text, `duration` seconds, `seed`, small top-k and
/// three flow steps (as the streaming tests of heart-run).
pub fn song(duration: f32, seed: u64) -> Value {
    json!({
        "tags": TAGS,
        "lyrics": LYRICS,
        "duration": duration,
        "seed": seed,
        "topk": 5,
        "flow_steps": 3,
    })
}

/// Posts `body`, expects `202`, returns the created record.
pub async fn create(client: &reqwest::Client, server: &TestServer, body: &Value) -> Value {
    let r = client.post(server.url("/v1/songs")).json(body).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 202, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// `GET url` as JSON, whatever the status.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Every event of song `id` until the service ends the stream, as
/// `(name, data)`.
pub async fn events(client: &reqwest::Client, server: &TestServer, id: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let read = async {
        let r = client
            .get(server.url(&format!("/v1/songs/{id}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let mut body = r.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = body.next().await {
            buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str::<Value>(v).unwrap());
                    }
                }
                if let (Some(name), Some(data)) = (name, data) {
                    out.push((name, data));
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the event stream ends in time");
    out
}

/// The names of `events`, with runs of `frames` collapsed to one.
pub fn names(events: &[(String, Value)]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for (name, _) in events {
        if !(name == "frames" && out.last() == Some(&"frames")) {
            out.push(name);
        }
    }
    out
}
