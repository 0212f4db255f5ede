//! The service's page in headless Chromium (Debian's `chromium`, which
//! `scripts/test.sh` installs; the test fails without it), driven over the
//! DevTools protocol on a loopback websocket: the page loads, a song is
//! submitted from its form, the player starts while the song is still being
//! made and gets audio, the page ends in the done state with the song listed,
//! and a screenshot is written to `target/tmp/serve-browser/page.png`.
//!
//! Chromium plays no audio below 3,000 Hz (its media limits), and the tiny
//! synthesized codec makes 300 Hz, so this test swaps in a tiny codec that
//! upsamples 120× (3,000 Hz) before building its engines.

mod serve_common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use heart::config::CodecConfig;
use heart::manifest::Verify;
use heart_runtime::song::Pipeline;
use heart_serve::{Options, Service};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

/// Longest the page may take for one step.
const STEP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_makes_a_song_that_plays_while_it_is_made() {
    let chromium = find_chromium();
    let root = tempfile::tempdir().unwrap();
    let engines = playable_engines(root.path());

    let rt = heart_backend::init(None).expect("ONNX Runtime: run scripts/setup-ort.sh first");
    let pipeline = Pipeline::open(&rt, &engines, Verify::Quick).unwrap();
    assert_eq!(pipeline.sample_rate(), 3000);
    let service = Service::start(
        pipeline,
        Options {
            limits: serve_common::limits(),
            presets: serve_common::presets(),
            backend: "cpu".into(),
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(heart_serve::serve(listener, service, async move {
        let _ = stopped.await;
    }));

    let browser = Browser::launch(&chromium, root.path()).await;
    let mut cdp = Cdp::connect(&browser.ws_url).await;
    let target = cdp
        .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
        .await;
    let session = cdp
        .call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )
        .await["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let page = Some(session.as_str());
    cdp.call(
        page,
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1280, "height": 1080, "deviceScaleFactor": 1, "mobile": false }),
    )
    .await;
    cdp.call(page, "Page.navigate", json!({ "url": format!("{base}/") }))
        .await;
    cdp.wait_for(page, "document.body && document.body.dataset.ready === 'true'")
        .await;
    let engine = cdp.eval(page, "document.getElementById('engine').textContent").await;
    assert!(engine.as_str().unwrap().contains("fp32"), "{engine}");
    let presets = cdp
        .eval(page, "document.querySelectorAll('#presets button').length")
        .await;
    assert_eq!(presets, 2);

    // Fill the form as a user would (the advanced settings differ from the
    // quality preset, so they are sent), note when the player gets a source,
    // and submit.
    cdp.eval(
        page,
        r#"(() => {
            const set = (id, v) => { const e = document.getElementById(id); e.value = v; };
            set('tags', 'piano,happy'); set('lyrics', '[verse]\nla la'); set('duration', '36'); set('seed', '5');
            document.getElementById('advanced').open = true;
            set('topk', '5'); set('flow_steps', '3');
            const player = document.getElementById('player');
            window.srcSetWhile = null;
            player.addEventListener('loadstart', () => {
                if (window.srcSetWhile === null) window.srcSetWhile = document.body.dataset.song;
            });
            document.getElementById('submit').click();
            return true;
        })()"#,
    )
    .await;
    cdp.wait_for(page, "document.body.dataset.song === 'done'").await;
    cdp.wait_for(page, "document.getElementById('player').readyState >= 2")
        .await;
    cdp.wait_for(page, "document.getElementById('player').currentTime > 0")
        .await;
    // The recent-songs list is fetched again when the song ends.
    cdp.wait_for(
        page,
        "(() => { const r = document.querySelector('#songs tr'); return !!r && r.cells.length > 4 && r.cells[4].textContent === 'done'; })()",
    )
    .await;
    let state = cdp
        .eval(
            page,
            r#"(() => {
                const $ = (id) => document.getElementById(id);
                const row = document.querySelector('#songs tr');
                return {
                    status: $('status').textContent,
                    progress: $('progress').getAttribute('aria-valuenow'),
                    download: $('download').hidden ? null : $('download').getAttribute('href'),
                    error: $('player').error && $('player').error.message,
                    src: $('player').currentSrc,
                    srcSetWhile: window.srcSetWhile,
                    cancelDisabled: $('cancel').disabled,
                    stats: $('stats').hidden ? null : $('stats').textContent,
                    row: row ? Array.from(row.cells).map((c) => c.textContent) : null,
                    formError: $('form-error').hidden ? null : $('form-error').textContent,
                };
            })()"#,
        )
        .await;
    let png = cdp
        .call(page, "Page.captureScreenshot", json!({ "format": "png" }))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(png["data"].as_str().unwrap())
        .unwrap();
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-browser/page.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    std::fs::write(&shot, &png).unwrap();
    eprintln!("screenshot: {}", shot.display());
    let _ = cdp.call(None, "Browser.close", json!({})).await;
    browser.end().await;

    assert_eq!(state["formError"], Value::Null, "{state}");
    assert!(state["status"].as_str().unwrap().starts_with("Done: 36.1 s"), "{state}");
    assert_eq!(state["progress"], "100", "{state}");
    assert_eq!(state["error"], Value::Null, "the player decoded the WAV: {state}");
    assert_eq!(
        state["srcSetWhile"], "running",
        "the player got its source while the song was being made: {state}"
    );
    assert_eq!(state["cancelDisabled"], true, "{state}");
    assert!(state["stats"].as_str().unwrap().contains("first audio"), "{state}");
    let row: Vec<&str> = state["row"]
        .as_array()
        .expect("a listed song")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!((row[1], row[3], row[4]), ("piano,happy", "5", "done"), "{row:?}");
    assert!(row[2].contains("top-k 5") && row[2].contains("3 steps"), "{row:?}");
    let download = state["download"].as_str().unwrap();
    assert!(state["src"].as_str().unwrap().ends_with(download), "{state}");

    // The page's song is the API's: its WAV is a complete 3,000 Hz file.
    let id = download.trim_start_matches("/v1/songs/").trim_end_matches("/audio");
    let wav = reqwest::get(format!("{base}/v1/songs/{id}/audio"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 3000);
    assert_eq!(
        u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize,
        wav.len() - 8
    );
    assert!(png.len() > 10_000 && png.starts_with(b"\x89PNG"), "{} bytes", png.len());

    let _ = stop.send(());
    tokio::time::timeout(STEP, server).await.unwrap().unwrap().unwrap();
}

/// `chromium` on PATH, or the test fails with how to get it.
fn find_chromium() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
        .expect("chromium is not installed: scripts/test.sh installs it (apt-get install chromium)")
}

/// Tiny engines whose codec makes 3,000 Hz: the synthesized tiny checkpoint
/// with its codec replaced by one that upsamples 5·4·3 (× 2 samples per
/// step) instead of 3·2, seeded weights of the layout the checkpoint reader
/// expects.
fn playable_engines(root: &Path) -> PathBuf {
    let ckpt = root.join("ckpt");
    heart_test_support::build(&["synth", "--size", "tiny", "--out", ckpt.to_str().unwrap()]);
    let codec_dir = ckpt.join("HeartCodec-oss");
    let config_path = codec_dir.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["upsample_factors"] = json!([5, 4, 3]);
    config["upsample_kernel_sizes"] = json!([10, 8, 6]);
    config["downsample_factors"] = json!([3, 4, 5]);
    config["downsample_kernel_sizes"] = json!([6, 8, 10]);
    config["sample_rate"] = json!(3000);
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let cfg: CodecConfig = serde_json::from_value(config).unwrap();
    let specs = heart::tensors::codec_tensor_specs(&cfg);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = specs
        .iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            let fan_in = s.shape.iter().skip(1).product::<usize>().max(1) as f32;
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    if s.name.ends_with("norm.weight") || s.name.ends_with("original0") {
                        1.0
                    } else if s.name.ends_with(".bias") {
                        0.0
                    } else {
                        // xorshift64*: uniform in [-1, 1) / sqrt(fan_in).
                        state ^= state >> 12;
                        state ^= state << 25;
                        state ^= state >> 27;
                        let u = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
                        (2.0 * u - 1.0) / fan_in.sqrt()
                    }
                })
                .collect();
            (s.name.clone(), s.shape.clone(), bytemuck_f32(&values))
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &codec_dir.join("model.safetensors")).unwrap();
    let engines = root.join("engines");
    heart_test_support::build(&[
        "-q",
        "--mula",
        ckpt.join("HeartMuLa-oss-3B").to_str().unwrap(),
        "--codec",
        codec_dir.to_str().unwrap(),
        "--out",
        engines.to_str().unwrap(),
    ]);
    engines
}

fn bytemuck_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A headless Chromium in its own process group, killed with the group when
/// dropped.
struct Browser {
    child: tokio::process::Child,
    ws_url: String,
}

impl Browser {
    async fn launch(chromium: &Path, root: &Path) -> Self {
        let profile = root.join("chromium-profile");
        let mut child = tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--mute-audio",
                "--autoplay-policy=no-user-gesture-required",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let ws_url = tokio::time::timeout(STEP, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    return url.trim().to_string();
                }
            }
            panic!("chromium exited before its DevTools endpoint was up");
        })
        .await
        .expect("chromium's DevTools endpoint in time");
        assert!(ws_url.starts_with("ws://127.0.0.1:"), "{ws_url}");
        // Drain the rest of its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, ws_url }
    }

    /// Waits for the browser to exit after `Browser.close`, killing its
    /// process group if it does not.
    async fn end(mut self) {
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.kill_group();
        }
    }

    fn kill_group(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// A minimal DevTools-protocol client: commands by id, events ignored.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next: u64,
}

impl Cdp {
    async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("DevTools websocket");
        Self { ws, next: 0 }
    }

    /// Sends `method` (to the page `session`, or the browser) and returns its result.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        let reply = tokio::time::timeout(STEP, async {
            while let Some(m) = self.ws.next().await {
                let Ok(Message::Text(text)) = m else { continue };
                let v: Value = serde_json::from_str(text.as_str()).unwrap();
                if v["id"] == id {
                    return v;
                }
            }
            panic!("DevTools connection closed during {method}");
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no reply in time"));
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    async fn eval(&mut self, session: Option<&str>, expr: &str) -> Value {
        let r = self
            .call(
                session,
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `expr` every 100 ms until it is true, failing after [`STEP`].
    async fn wait_for(&mut self, session: Option<&str>, expr: &str) {
        let start = Instant::now();
        while self.eval(session, expr).await != Value::Bool(true) {
            assert!(start.elapsed() < STEP, "the page never got to: {expr}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
