//! Songs as a stream, on engines built from a synthesized tiny checkpoint: the
//! audio a pipelined generation streams is the audio of decoding the finished
//! codes the way a non-streaming song is decoded (bit for bit), the first audio
//! comes out while the LM is still writing once a window's codes exist, and
//! `heart-run --out -` writes the bytes of `--out FILE` but for the two WAV
//! sizes.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use heart::manifest::Verify;
use heart_runtime::codec::{AudioChunk, DetokenizeParams, FlowParams, SeededNoise};
use heart_runtime::engine::EngineFolder;
use heart_runtime::settings::{Settings, SettingsArgs};
use heart_runtime::song::{CODEC_SEED_SALT, Pipeline, Progress, SongError, SongRequest};
use heart_test_support::{bench_json, row_names, run_ok};

/// Engines (LM + codec) built from `heart-build synth --size tiny`, once per process.
fn engines() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let engines = heart_test_support::synth_tiny_engines(root.path());
        (root, engines)
    })
    .1
}

const TAGS: &str = "piano,happy";
const LYRICS: &str = "[verse]\nla la";

fn settings(duration: f32) -> Settings {
    let args = SettingsArgs {
        duration: Some(duration),
        topk: Some(5),
        flow_steps: Some(3),
        ..Default::default()
    };
    args.resolve(&SettingsArgs::default()).unwrap()
}

/// What the callbacks saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Frame(usize),
    Chunk(AudioChunk),
}

#[test]
fn streamed_audio_equals_the_decoded_song_and_starts_before_the_lm_ends() {
    let rt = heart_backend::init(None).expect("ONNX Runtime: run scripts/setup-ort.sh first");
    let mut pipeline = Pipeline::open(&rt, engines(), Verify::Quick).unwrap();
    let mut codec = EngineFolder::open(&rt, engines(), Verify::Quick)
        .unwrap()
        .codec()
        .unwrap();
    // Frames (if no end of audio comes first): 26 (one short window, all at
    // the end), 372 (exactly one window), 373 (window 0 while the LM runs, the
    // looped window 1 at the end), 424 (the length at which upstream's padding
    // test skips the tail), 451 (two windows).
    let mut early_runs = 0;
    for (duration, seed) in [(2.0, 1), (29.68, 2), (29.76, 3), (33.84, 4), (36.0, 5)] {
        let request = SongRequest {
            tags: TAGS.into(),
            lyrics: LYRICS.into(),
            settings: settings(duration),
            seed,
        };
        let log = RefCell::new(Vec::new());
        let song = pipeline
            .generate_streaming(
                &request,
                &mut |p| {
                    if let Progress::Frame { frames, .. } = p {
                        log.borrow_mut().push(Event::Frame(frames));
                    }
                },
                &mut |chunk| {
                    log.borrow_mut().push(Event::Chunk(chunk.clone()));
                    Ok(())
                },
            )
            .unwrap();
        let log = log.into_inner();

        // The non-streaming decode of the same codes and seed.
        let detok = DetokenizeParams {
            flow: FlowParams {
                num_steps: request.settings.flow_steps,
                guidance: request.settings.codec_guidance,
            },
            ..Default::default()
        };
        let whole = codec
            .detokenize(song.codes.view(), detok, &mut SeededNoise::new(seed ^ CODEC_SEED_SALT))
            .unwrap();
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&song.audio.samples), bits(&whole.samples), "{duration} s");

        let chunks: Vec<&AudioChunk> = log
            .iter()
            .filter_map(|e| match e {
                Event::Chunk(c) => Some(c),
                Event::Frame(_) => None,
            })
            .collect();
        let mut next = 0;
        let mut channels = vec![Vec::new(); 2];
        for c in &chunks {
            assert_eq!(c.offset, next, "{duration} s: chunks tile the song");
            assert!(!c.is_empty());
            for (ch, out) in channels.iter_mut().enumerate() {
                out.extend_from_slice(&c.samples[ch * c.len()..(ch + 1) * c.len()]);
            }
            next += c.len();
        }
        assert_eq!(next, whole.frames(), "{duration} s");
        assert_eq!(bits(&channels.concat()), bits(&whole.samples), "{duration} s");

        let first_chunk = log.iter().position(|e| matches!(e, Event::Chunk(_))).unwrap();
        let last_frame = log.iter().rposition(|e| matches!(e, Event::Frame(_))).unwrap();
        assert_eq!(log[last_frame], Event::Frame(song.frames));
        if song.frames > 372 {
            assert!(
                first_chunk < last_frame,
                "{duration} s, {} frames: the first audio came after the LM's last frame",
                song.frames
            );
            assert_eq!(
                log[first_chunk - 1],
                Event::Frame(372),
                "window 0 right after its codes"
            );
            assert!(song.times.first_audio < song.times.prompt + song.times.lm + song.times.codec);
            early_runs += 1;
        } else {
            assert!(first_chunk > last_frame, "{duration} s: no window fits before the end");
        }
    }
    assert!(early_runs >= 2, "the LM ended early too often to test streaming");
}

/// The pipeline and a song whose LM writes 451 frames (window 0 decoded
/// while it runs, the last window after it).
fn pipeline_and_36_s_song() -> (Pipeline, SongRequest) {
    let rt = heart_backend::init(None).expect("ONNX Runtime: run scripts/setup-ort.sh first");
    let pipeline = Pipeline::open(&rt, engines(), Verify::Quick).unwrap();
    let request = SongRequest {
        tags: TAGS.into(),
        lyrics: LYRICS.into(),
        settings: settings(36.0),
        seed: 5,
    };
    (pipeline, request)
}

#[test]
fn a_sink_that_fails_stops_the_song() {
    let (mut pipeline, request) = pipeline_and_36_s_song();
    let mut frames = 0;
    let err = pipeline
        .generate_streaming(
            &request,
            &mut |p| {
                if let Progress::Frame { frames: f, .. } = p {
                    frames = f;
                }
            },
            &mut |_| Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "reader gone")),
        )
        .unwrap_err();
    assert!(matches!(err, SongError::Output(_)), "{err}");
    assert!(err.to_string().contains("reader gone"), "{err}");
    assert_eq!(frames, 372, "the LM stops at the frame whose window failed to go out");
}

#[test]
fn a_cancelled_song_stops_at_the_next_frame_or_window() {
    let (mut pipeline, request) = pipeline_and_36_s_song();
    // While the LM runs: the flag set at frame 10 stops it before frame 11.
    let cancel = AtomicBool::new(false);
    let mut frames = 0;
    let mut chunks = 0;
    let err = pipeline
        .generate_cancellable(
            &request,
            &mut |p| {
                if let Progress::Frame { frames: f, .. } = p {
                    frames = f;
                    if f == 10 {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            },
            &mut |_| {
                chunks += 1;
                Ok(())
            },
            &cancel,
        )
        .unwrap_err();
    assert!(matches!(err, SongError::Cancelled), "{err}");
    assert_eq!((frames, chunks), (10, 0));

    // After the LM: the flag set when the codec's tail starts stops it after
    // that window, and the song's last audio never reaches the sink.
    let cancel = AtomicBool::new(false);
    let (mut windows, mut tail) = (Vec::new(), None);
    let sunk = std::cell::Cell::new(0);
    let err = pipeline
        .generate_cancellable(
            &request,
            &mut |p| match p {
                Progress::CodecStart { windows: w, done } => {
                    tail = Some((w, done, sunk.get()));
                    cancel.store(true, Ordering::Relaxed);
                }
                Progress::Window { done } => windows.push(done),
                Progress::Frame { .. } => {}
            },
            &mut |c| {
                sunk.set(sunk.get() + c.len());
                Ok(())
            },
            &cancel,
        )
        .unwrap_err();
    assert!(matches!(err, SongError::Cancelled), "{err}");
    let (total, early, sunk_before) = tail.expect("the LM finished");
    assert!(total > early && early >= 1, "{total} windows, {early} early");
    assert_eq!(windows.last(), Some(&(early + 1)), "one tail window, then the stop");
    assert!(sunk_before > 0, "window 0 went out while the LM ran");
    assert_eq!(sunk.get(), sunk_before, "no audio after the stop");
}

#[test]
fn heart_run_streams_the_file_bytes_to_stdout() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("song.wav");
    let e = engines().to_str().unwrap();
    let args = |out: &str| {
        vec![
            "--engines",
            e,
            "--tags",
            TAGS,
            "--lyrics",
            LYRICS,
            "--duration",
            "31",
            "--topk",
            "5",
            "--flow-steps",
            "3",
            "--seed",
            "7",
            "--json",
            "--out",
            out,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let to_file = args(file.to_str().unwrap());
    let o = run_ok("heart-run", &to_file.iter().map(String::as_str).collect::<Vec<_>>());
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON on stdout");
    let to_stdout = args("-");
    let s = run_ok("heart-run", &to_stdout.iter().map(String::as_str).collect::<Vec<_>>());
    // stderr: log lines (e.g. the CPU warning), then the summary.
    let stderr = String::from_utf8(s.stderr).unwrap();
    let json = stderr.find("\n{").map_or(stderr.as_str(), |i| &stderr[i + 1..]);
    let streamed_summary: serde_json::Value =
        serde_json::from_str(json).expect("--json with --out - prints JSON on stderr");

    let written = std::fs::read(&file).unwrap();
    let streamed = s.stdout;
    assert_eq!(streamed.len(), written.len());
    let head = 44; // hound's PCM16 stereo header
    assert_eq!(&written[head - 8..head - 4], b"data");
    assert_eq!(&streamed[4..8], &[0xFF; 4], "RIFF size: unknown");
    assert_eq!(&streamed[head - 4..head], &[0xFF; 4], "data size: unknown");
    assert_eq!(&streamed[..4], &written[..4]);
    assert_eq!(&streamed[8..head - 4], &written[8..head - 4]);
    assert_eq!(&streamed[head..], &written[head..], "same samples");

    for summary in [&summary, &streamed_summary] {
        let ttfa = summary["ttfa_s"].as_f64().expect("ttfa_s");
        let total = summary["total_s"].as_f64().unwrap();
        assert!(ttfa > 0.0 && ttfa <= total, "ttfa {ttfa} total {total}");
        assert!(summary["times_s"]["first_audio"].as_f64().unwrap() <= ttfa);
    }
    assert_eq!(summary["frames"], streamed_summary["frames"]);
}

#[test]
fn heart_run_bench_times_a_whole_song() {
    let record = bench_json(&[
        "--engines",
        engines().to_str().unwrap(),
        "--no-lm",
        "--no-codec",
        "--song-seconds",
        "31",
        "--flow-steps",
        "3",
    ]);
    let names = row_names(&record);
    let row = |name: &str| {
        let i = names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("{name} missing from {names:?}"));
        record["rows"][i]["median"].as_f64().unwrap()
    };
    let (ttfa, total) = (row("song 31 s: time to first audio"), row("song 31 s: total"));
    assert!(ttfa > 0.0 && ttfa <= total, "ttfa {ttfa}, total {total}");
    let audio = row("song 31 s: audio");
    assert!(audio > 0.0 && audio <= 31.04 + 1e-9, "{audio}");
    assert!(names.contains(&"peak resident memory"));
}
