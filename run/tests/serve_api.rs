//! The song service over a real loopback socket on tiny engines: a song's
//! events in order, its WAV streamed while it is made and, once done, the
//! bytes `heart-run` writes for the same seed; the status codes of bad
//! requests, unknown ids and a full queue; cancellation of queued and running
//! songs; concurrent clients; eviction from the store; and `heart-run serve`
//! stopping on Ctrl-C.

mod serve_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use heart_serve::StoreLimits;
use heart_test_support::{bin, run_ok};
use serde_json::{Value, json};
use serve_common::{DEADLINE, LYRICS, TAGS, TestServer, create, engines, events, get_json, limits, names, song};

/// Bytes of the 16-bit stereo WAV header.
const HEAD: usize = 44;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_song_streams_in_order_and_equals_heart_run_byte_for_byte() {
    let server = TestServer::start(limits()).await;
    let client = reqwest::Client::new();
    // 36 s: window 0 is decoded while the LM writes frames 373..451.
    let created = create(&client, &server, &song(36.0, 5)).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["seed"], 5);
    assert_eq!(created["settings"]["flow_steps"], 3);

    // Audio asked for at once streams as it is made.
    let streamed = tokio::spawn({
        let url = server.url(&format!("/v1/songs/{id}/audio"));
        let client = client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "audio/wav");
            assert!(r.headers().get("content-length").is_none(), "streamed, not sized");
            r.bytes().await.unwrap().to_vec()
        }
    });
    let log = events(&client, &server, &id).await;
    assert_eq!(
        names(&log),
        ["queued", "started", "frames", "windows", "frames", "windows", "done"],
        "{:?}",
        names(&log)
    );
    let frames: Vec<u64> = log
        .iter()
        .filter(|(n, _)| n == "frames")
        .map(|(_, d)| d["frames"].as_u64().unwrap())
        .collect();
    assert_eq!(
        frames,
        (1..=frames.len() as u64).collect::<Vec<_>>(),
        "every frame, in order"
    );
    let (_, first_window) = log.iter().find(|(n, _)| n == "windows").unwrap();
    assert_eq!(first_window["total"], Value::Null, "window 0 came while the LM ran");
    assert!(first_window["audio_seconds"].as_f64().unwrap() > 0.0, "{first_window}");
    let (_, done) = log.last().unwrap();

    let streamed = tokio::time::timeout(DEADLINE, streamed).await.unwrap().unwrap();
    let whole = client
        .get(server.url(&format!("/v1/songs/{id}/audio")))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    let whole = whole.bytes().await.unwrap().to_vec();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("song.wav");
    run_ok(
        "heart-run",
        &[
            "--engines",
            engines().to_str().unwrap(),
            "--tags",
            TAGS,
            "--lyrics",
            LYRICS,
            "--duration",
            "36",
            "--seed",
            "5",
            "--topk",
            "5",
            "--flow-steps",
            "3",
            "--quiet",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    let written = std::fs::read(&file).unwrap();
    assert!(written.len() > HEAD + 1000, "{} bytes", written.len());
    assert_eq!(whole, written, "the finished song is heart-run's file, byte for byte");
    assert_eq!(done["wav_bytes"].as_u64().unwrap() as usize, written.len());
    assert_eq!(streamed.len(), written.len());
    assert_eq!(&streamed[4..8], &[0xFF; 4], "streamed RIFF size: unknown");
    assert_eq!(&streamed[HEAD - 4..HEAD], &[0xFF; 4], "streamed data size: unknown");
    assert_eq!(&streamed[..4], &written[..4]);
    assert_eq!(&streamed[8..HEAD - 4], &written[8..HEAD - 4]);
    assert_eq!(&streamed[HEAD..], &written[HEAD..], "same samples");

    let record: Value = get_json(&client, &server.url(&format!("/v1/songs/{id}"))).await;
    assert_eq!(record["state"], "done");
    assert_eq!(record["seed"], 5);
    assert_eq!(record["tags"], TAGS);
    assert_eq!(record["settings"]["topk"], 5);
    let result = &record["result"];
    let (ttfa, total) = (result["ttfa_s"].as_f64().unwrap(), result["total_s"].as_f64().unwrap());
    assert!(ttfa > 0.0 && ttfa < total, "ttfa {ttfa}, total {total}");
    assert_eq!(result["frames"].as_u64(), Some(*frames.last().unwrap()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_cli_messages_and_unknown_ids_404() {
    let server = TestServer::start(limits()).await;
    let client = reqwest::Client::new();
    let post = |body: String| {
        let client = client.clone();
        let url = server.url("/v1/songs");
        async move {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            (status, text)
        }
    };
    let error = |text: &str| -> String {
        serde_json::from_str::<Value>(text).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let with = |key: &str, value: Value| {
        let mut body = song(2.0, 1);
        body[key] = value;
        body.to_string()
    };

    let (status, text) = post(with("temperature", json!(0.0))).await;
    assert_eq!(
        (status, error(&text).as_str()),
        (400, "--temperature 0: expected a positive number")
    );
    let (status, text) = post(with("codec_guidance", json!(0.5))).await;
    assert_eq!(
        (status, error(&text).as_str()),
        (400, "--codec-guidance 0.5: expected a number >= 1.0")
    );
    let (status, text) = post(with("duration", json!(60.0))).await;
    assert_eq!(status, 400);
    assert!(
        error(&text).contains("but the model's context is 512: at most"),
        "{text}"
    );
    let (status, text) = post(with("speculate", json!(2))).await;
    assert_eq!(status, 400);
    assert!(error(&text).contains("no speculative draft"), "{text}");
    let (status, text) = post(with("preset", json!("../../etc/passwd"))).await;
    assert_eq!(status, 400);
    assert!(
        error(&text).contains("unknown; this service offers speed, quality"),
        "{text}"
    );
    let (status, text) = post(with("out", json!("/tmp/x.wav"))).await;
    assert_eq!(status, 400, "no client paths: unknown keys are refused");
    assert!(error(&text).contains("unknown field `out`"), "{text}");
    let (status, text) = post(with("tags", json!("x".repeat(1025)))).await;
    assert_eq!(status, 400);
    assert!(error(&text).contains("at most 1024"), "{text}");
    let (status, _) = post(with("lyrics", json!("la ".repeat(30_000)))).await;
    assert_eq!(status, 413, "body over 64 KiB");
    let (status, text) = post("{\"tags\": ".into()).await;
    assert_eq!(status, 400, "{text}");
    let (status, text) = post(json!({"lyrics": "x"}).to_string()).await;
    assert_eq!(status, 400);
    assert!(error(&text).contains("missing field `tags`"), "{text}");

    for path in ["", "/events", "/audio"] {
        let r = client
            .get(server.url(&format!("/v1/songs/0123456789abcdef{path}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "GET {path}");
    }
    let r = client
        .delete(server.url("/v1/songs/0123456789abcdef"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let health: Value = get_json(&client, &server.url("/v1/health")).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["engine"]["context"], 512);
    assert_eq!(health["engine"]["has_draft"], false);
    assert_eq!(health["queue"]["queued"], 0, "no bad request was queued");
    assert_eq!(health["engine"]["manifest_sha256"].as_str().unwrap().len(), 64);
    let presets: Value = get_json(&client, &server.url("/v1/presets")).await;
    assert_eq!(presets["speed"]["flow_steps"], 4);
    assert_eq!(presets["quality"]["flow_steps"], 10);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_429_and_cancelled_songs_stop_and_keep_no_audio() {
    let server = TestServer::start(StoreLimits {
        max_queued: 1,
        ..limits()
    })
    .await;
    let client = reqwest::Client::new();
    // The longest song the tiny context allows: seconds of work on the LM.
    let running = create(&client, &server, &song(38.0, 1)).await;
    let running = running["id"].as_str().unwrap().to_string();
    // The queue holds one song: wait until the worker has taken the first.
    let started = tokio::time::timeout(DEADLINE, async {
        while get_json(&client, &server.url(&format!("/v1/songs/{running}"))).await["state"] == "queued" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    started.await.expect("the worker takes the first song");
    let queued = create(&client, &server, &song(2.0, 2)).await;
    let queued_id = queued["id"].as_str().unwrap().to_string();
    let mut refused = 0;
    for seed in 3..5 {
        let r = client
            .post(server.url("/v1/songs"))
            .json(&song(2.0, seed))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            let body: Value = r.json().await.unwrap();
            assert!(body["error"].as_str().unwrap().contains("queue is full"), "{body}");
            refused += 1;
        } else {
            assert_eq!(r.status(), 202);
        }
    }
    assert!(refused >= 1, "a second waiting song must be refused");

    // A waiting song leaves the queue at once.
    let r = client
        .delete(server.url(&format!("/v1/songs/{queued_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "cancelled");
    let log = events(&client, &server, &queued_id).await;
    assert_eq!(log.first().unwrap().0, "queued");
    assert_eq!(log.last().unwrap().0, "cancelled");
    assert!(!log.iter().any(|(n, _)| n == "started"));

    // The running one stops within a frame of the request.
    let mut body = client
        .get(server.url(&format!("/v1/songs/{running}/events")))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: frames") {
        let chunk = tokio::time::timeout(DEADLINE, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let r = client
        .delete(server.url(&format!("/v1/songs/{running}")))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(status == 202 || status == 200, "{status}");
    let log = events(&client, &server, &running).await;
    assert_eq!(log.last().unwrap().0, "cancelled", "{:?}", names(&log));
    let last_frame = log
        .iter()
        .rev()
        .find(|(n, _)| n == "frames")
        .map(|(_, d)| d["frames"].as_u64().unwrap())
        .unwrap();
    assert!(last_frame < 475, "stopped early, at frame {last_frame}");
    let r = client
        .get(server.url(&format!("/v1/songs/{running}/audio")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a cancelled song has no audio");

    // The queue has room again and the worker goes on with the next song.
    let next = create(&client, &server, &song(2.0, 9)).await;
    let log = events(&client, &server, next["id"].as_str().unwrap()).await;
    assert_eq!(log.last().unwrap().0, "done", "{:?}", names(&log));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_each_get_their_own_song() {
    let server = TestServer::start(limits()).await;
    let client = reqwest::Client::new();
    let seeds = [11u64, 12, 11, 13];
    let mut tasks = Vec::new();
    for seed in seeds {
        let client = client.clone();
        let base = server.base.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{base}/v1/songs"))
                .json(&song(3.0, seed))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
            // Read the audio stream to its end: the song is done then.
            let audio = client.get(format!("{base}/v1/songs/{id}/audio")).send().await.unwrap();
            assert_eq!(audio.status(), 200);
            (id, audio.bytes().await.unwrap().to_vec())
        }));
    }
    let mut songs = Vec::new();
    for t in tasks {
        songs.push(tokio::time::timeout(DEADLINE, t).await.unwrap().unwrap());
    }
    let ids: std::collections::BTreeSet<&str> = songs.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 4, "four distinct songs");
    for (_, wav) in &songs {
        assert!(wav.len() > HEAD && &wav[..4] == b"RIFF" && &wav[8..12] == b"WAVE");
    }
    let samples = |i: usize| &songs[i].1[HEAD..];
    assert_eq!(samples(0), samples(2), "same seed and settings, same audio");
    assert_ne!(samples(0), samples(1));
    assert_ne!(samples(0), samples(3));
    let list: Value = get_json(&client, &server.url("/v1/songs")).await;
    let listed = list["songs"].as_array().unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|s| s["state"] == "done"), "{list}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_finished_song_is_evicted_from_a_full_store() {
    let server = TestServer::start(StoreLimits {
        max_finished: 1,
        ..limits()
    })
    .await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for seed in [21, 22] {
        let created = create(&client, &server, &song(2.0, seed)).await;
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(events(&client, &server, &id).await.last().unwrap().0, "done");
        ids.push(id);
    }
    let first = client
        .get(server.url(&format!("/v1/songs/{}/audio", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 404, "evicted");
    let second = client
        .get(server.url(&format!("/v1/songs/{}/audio", ids[1])))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    let wav = second.bytes().await.unwrap();
    assert_eq!(
        u32::from_le_bytes(wav[40..44].try_into().unwrap()) as usize,
        wav.len() - HEAD
    );
    let list = get_json(&client, &server.url("/v1/songs")).await;
    assert_eq!(list["songs"].as_array().unwrap().len(), 1, "{list}");
    server.stop().await;
}

#[test]
fn heart_run_serve_refuses_an_unknown_cuda_graphs_setting() {
    let out = Command::new(bin("heart-run"))
        .args(["serve", "--engines", "unused", "--cuda-graphs", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cuda-graphs") && err.contains("[possible values: on, off]"),
        "{err}"
    );
}

#[test]
fn heart_run_serve_stops_on_ctrl_c_cancelling_the_running_song() {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("heart-run"))
        .args([
            "serve",
            "--engines",
            engines().to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
            "--cuda-graphs",
            "off",
        ])
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut kill = KillOnDrop(Some(child.id()));
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "heart-run serve ended before listening"
        );
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log = rt.block_on(async {
        let client = reqwest::Client::new();
        let base = format!("http://{addr}");
        let r = client
            .post(format!("{base}/v1/songs"))
            .json(&song(38.0, 1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        let mut body = client
            .get(format!("{base}/v1/songs/{id}/events"))
            .send()
            .await
            .unwrap()
            .bytes_stream();
        let mut seen = String::new();
        let read = async {
            while let Some(chunk) = body.next().await {
                seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
                if seen.contains("event: frames") && !seen.contains("interrupt sent") {
                    let status = Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
                    assert!(status.success());
                    seen.push_str("interrupt sent");
                }
            }
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .expect("the events end in time");
        seen
    });
    assert!(log.contains("event: cancelled"), "{log}");
    assert!(!log.contains("event: done"), "{log}");
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "heart-run serve did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    kill.0 = None;
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{status}: {rest}");
    assert!(rest.contains("heart-run serve: stopped"), "{rest}");
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0, "no file was written");
}

/// Kills the process `pid` if the test ends before it exited.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}
