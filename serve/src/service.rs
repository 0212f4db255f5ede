//! The service: the engine opened once, the job table behind one lock, and
//! the one worker thread that runs songs on it.
//!
//! One worker because the GPU (or the CPU's cores) is one resource: two songs
//! at once would only split it, and the pipeline's sessions are not shared.
//! The worker is a plain thread (generation is blocking and lasts minutes, so
//! it must not occupy the async runtime); it sleeps on a condition variable
//! until a song is queued or shutdown begins. Progress and audio go into the
//! job table as they are made, and readers are woken through each job's
//! watch channel.

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use heart::config::GenConfig;
use heart::prompt::TextTokenizer;
use heart_runtime::lm::frame_loop::StopReason;
use heart_runtime::settings::SettingsArgs;
use heart_runtime::song::{Pipeline, Progress, Song, SongError, SongRequest};
use heart_runtime::wav::WavFormat;
use heart_runtime::wav_stream::{WavStream, header, set_sizes};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ServeError;
use crate::events::{Event, Outcome};
use crate::jobs::{JobId, JobState, Refused, SongSpec, Store, StoreLimits};
use crate::request::{Rules, SongBody};

/// What `GET /v1/health` says about the engine.
#[derive(Debug, Clone, Serialize)]
pub struct EngineInfo {
    /// The engine folder's name (its last path component; the service shows
    /// clients no paths).
    pub name: String,
    /// SHA-256 of its `manifest.toml`, which lists every file's hash.
    pub manifest_sha256: String,
    /// heart version that built it.
    pub heart_version: String,
    /// LM precision.
    pub precision: String,
    /// Codec precision.
    pub codec_precision: Option<String>,
    /// The backend asked for (`auto`, `cpu`, ...).
    pub backend: String,
    /// Backbone positions: prompt plus frames.
    pub context: usize,
    /// Longest song the context allows with an empty prompt, in seconds.
    pub max_duration_s: f64,
    /// Audio sample rate.
    pub sample_rate: u32,
    /// Audio channels.
    pub channels: u16,
    /// Whether `speculate` may be used.
    pub has_draft: bool,
}

/// How the service is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Queue and store bounds.
    pub limits: StoreLimits,
    /// Presets offered to clients by name (`speed`, `quality`).
    pub presets: Vec<(String, SettingsArgs)>,
    /// The backend label shown by the health endpoint.
    pub backend: String,
}

/// State shared by the HTTP handlers and the worker.
pub struct Shared {
    store: Mutex<Store>,
    wake: Condvar,
    /// The engine, as clients see it.
    pub engine: EngineInfo,
    /// The presets offered.
    pub presets: Vec<(String, SettingsArgs)>,
    /// Queue and store bounds.
    pub limits: StoreLimits,
    tokenizer: TextTokenizer,
    gen_config: GenConfig,
    codebooks: usize,
    /// Bytes of the streamed WAV header (hound's layout for 16-bit PCM).
    wav_header_len: usize,
}

impl Shared {
    /// The job table, locked. A panic while it was held (a bug) does not
    /// make the table unreadable: every mutation leaves it consistent.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Validates `body` and queues it: the id and position, or why not.
    pub fn submit(&self, body: SongBody) -> Result<(JobId, usize, SongSpec), Submit> {
        let rules = Rules {
            tokenizer: &self.tokenizer,
            gen_config: self.gen_config,
            codebooks: self.codebooks,
            context: self.engine.context,
            has_draft: self.engine.has_draft,
            presets: &self.presets,
        };
        let spec = body.validate(&rules).map_err(Submit::Invalid)?;
        let id = format!("{:016x}", rand::random::<u64>());
        let position = self.store().submit(id.clone(), spec.clone()).map_err(Submit::Refused)?;
        self.wake.notify_all();
        Ok((id, position, spec))
    }

    /// Seconds of audio in a streamed WAV of `bytes` (16-bit samples).
    pub fn seconds_in(&self, bytes: usize) -> f64 {
        let frame = 2 * usize::from(self.engine.channels);
        bytes.saturating_sub(self.wav_header_len) as f64 / (frame as f64 * f64::from(self.engine.sample_rate))
    }

    /// Cancels `id` (see [`Store::cancel`]).
    pub fn cancel(&self, id: &str) -> Option<JobState> {
        self.store().cancel(id)
    }

    /// Begins shutdown: no new songs, the waiting ones cancelled, the running
    /// one stopped within a frame.
    pub fn close(&self) {
        self.store().close();
        self.wake.notify_all();
    }
}

/// Why `POST /v1/songs` did not queue a song.
#[derive(Debug)]
pub enum Submit {
    /// Bad request: the message.
    Invalid(String),
    /// Queue full or shutting down.
    Refused(Refused),
}

/// The running service: shared state and the worker thread.
pub struct Service {
    shared: Arc<Shared>,
    worker: JoinHandle<()>,
}

impl Service {
    /// Starts the worker on `pipeline` (opened once by the caller, with its
    /// draft when the folder has one).
    pub fn start(pipeline: Pipeline, options: Options) -> Result<Self, ServeError> {
        let manifest = pipeline.manifest();
        let dir = pipeline.dir();
        let tokenizer = pipeline.tokenizer().clone();
        let manifest_path = dir.join(heart::manifest::MANIFEST_FILE);
        let manifest_bytes = std::fs::read(&manifest_path).map_err(|e| ServeError::Io {
            what: format!("reading {}", manifest_path.display()),
            source: e,
        })?;
        let context = manifest.model.backbone.max_seq_len;
        let wav_header_len = header(pipeline.channels(), pipeline.sample_rate(), WavFormat::Pcm16)
            .map_err(|e| ServeError::Engine(e.to_string()))?
            .len();
        let engine = EngineInfo {
            name: dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            manifest_sha256: format!("{:x}", Sha256::digest(&manifest_bytes)),
            heart_version: manifest.heart_version.clone(),
            precision: manifest.precision.to_string(),
            codec_precision: manifest.codec_precision.map(|p| p.to_string()),
            backend: options.backend.clone(),
            context,
            max_duration_s: heart::geometry::seconds_of_frames(context),
            sample_rate: pipeline.sample_rate(),
            channels: pipeline.channels(),
            has_draft: pipeline.has_draft(),
        };
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(options.limits)),
            limits: options.limits,
            wake: Condvar::new(),
            gen_config: manifest.gen_config,
            codebooks: manifest.model.audio_num_codebooks,
            engine,
            presets: options.presets,
            tokenizer,
            wav_header_len,
        });
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("heart-serve worker".into())
            .spawn(move || work(&worker_shared, pipeline))
            .map_err(|e| ServeError::Io {
                what: "starting the worker thread".into(),
                source: e,
            })?;
        Ok(Self { shared, worker })
    }

    /// The state the HTTP handlers use.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Closes the service ([`Shared::close`]) and waits for the worker to end.
    pub fn stop(self) -> Result<(), ServeError> {
        self.shared.close();
        self.worker.join().map_err(|_| ServeError::WorkerPanicked)
    }
}

/// The worker: runs queued songs one at a time until shutdown.
fn work(shared: &Shared, mut pipeline: Pipeline) {
    loop {
        let next = {
            let mut store = shared.store();
            loop {
                if store.is_closed() {
                    return;
                }
                if let Some(next) = store.start_next() {
                    break next;
                }
                store = shared.wake.wait(store).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let (id, spec, cancel) = next;
        let request = SongRequest {
            tags: spec.tags,
            lyrics: spec.lyrics,
            settings: spec.settings,
            seed: spec.seed,
        };
        let start = Instant::now();
        // A panic in the pipeline (a bug) fails this song, not the service.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_song(shared, &mut pipeline, &id, &request, &cancel)
        }))
        .unwrap_or_else(|_| Err(SongError::Request("internal error: generation panicked".into())));
        let mut store = shared.store();
        match result {
            Ok(song) => {
                let outcome = finish_wav(shared, &mut store, &id, &song, start.elapsed().as_secs_f64());
                store.end(&id, JobState::Done, Event::Done(outcome));
            }
            Err(SongError::Cancelled) => store.end(&id, JobState::Cancelled, Event::Cancelled),
            Err(e) => {
                tracing::warn!(song = %id, "song failed: {e}");
                store.end(&id, JobState::Failed, Event::Failed { error: e.to_string() });
            }
        }
    }
}

/// Generates one song, streaming its WAV into the job table.
fn run_song(
    shared: &Shared,
    pipeline: &mut Pipeline,
    id: &str,
    request: &SongRequest,
    cancel: &AtomicBool,
) -> Result<Song, SongError> {
    let out = JobAudio { shared, id };
    let mut wav = WavStream::new(out, pipeline.channels(), pipeline.sample_rate(), WavFormat::Pcm16)
        .map_err(|e| SongError::Output(std::io::Error::other(e)))?;
    let mut total = None;
    let mut progress = |p: Progress| {
        let mut store = shared.store();
        let event = match p {
            Progress::Frame { frames, max_frames } => Event::Frames { frames, max_frames },
            Progress::CodecStart { windows, .. } => {
                total = Some(windows);
                return;
            }
            Progress::Window { done } => Event::Windows {
                done,
                total,
                audio_seconds: shared.seconds_in(store.get(id).map_or(0, |j| j.audio.len())),
            },
        };
        store.record(id, event);
    };
    pipeline.generate_cancellable(
        request,
        &mut progress,
        &mut |chunk| wav.write_chunk(chunk).map_err(std::io::Error::other),
        cancel,
    )
}

/// Writes the true RIFF and `data` sizes into the job's streamed WAV (which
/// makes it the file `heart-run --out FILE` writes) and sums the song up.
fn finish_wav(shared: &Shared, store: &mut Store, id: &str, song: &Song, total_s: f64) -> Outcome {
    let mut wav_bytes = 0;
    if let Some(audio) = store.audio_mut(id) {
        wav_bytes = audio.len();
        set_sizes(audio, shared.wav_header_len);
    }
    let audio_seconds = song.audio.seconds();
    Outcome {
        frames: song.frames,
        stop: match song.stop {
            StopReason::EndOfAudio => "end_of_audio",
            StopReason::MaxLength => "max_length",
        },
        audio_seconds,
        sample_rate: song.audio.sample_rate,
        channels: song.audio.channels,
        wav_bytes,
        prompt_s: song.times.prompt.as_secs_f64(),
        lm_s: song.times.lm.as_secs_f64(),
        codec_s: song.times.codec.as_secs_f64(),
        ttfa_s: song.times.first_audio.as_secs_f64(),
        total_s,
        lm_frames_per_s: song.frames as f64 / song.times.lm.as_secs_f64().max(1e-9),
        real_time_factor: total_s / audio_seconds.max(1e-9),
    }
}

/// The writer under a song's [`WavStream`]: appends to the job's bytes.
struct JobAudio<'a> {
    shared: &'a Shared,
    id: &'a str,
}

impl Write for JobAudio<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.store().append_audio(self.id, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
