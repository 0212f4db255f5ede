//! The job table: every song the service knows, the queue of waiting ones,
//! the one that runs, and the bounded store of finished ones.
//!
//! Pure bookkeeping under the service's lock (no I/O, no threads), so every
//! rule is unit-tested here: queue bound, positions, cancellation of queued
//! and running songs, eviction of the oldest finished songs by count and by
//! bytes. Each job keeps its whole event history (a late SSE subscriber
//! replays it) and its WAV bytes as streamed so far; a [`watch`] channel per
//! job wakes the readers of both.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use heart_runtime::settings::Settings;
use serde::Serialize;
use tokio::sync::watch;

use crate::events::{Event, Outcome};

/// A song's id: 16 lower-case hex digits drawn at random (not guessable from
/// another client's id).
pub type JobId = String;

/// Where a song is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for the worker.
    Queued,
    /// Being generated.
    Running,
    /// Finished: the WAV is complete.
    Done,
    /// Stopped by an error (the `failed` event has the message).
    Failed,
    /// Cancelled by a client or by shutdown; its audio was dropped.
    Cancelled,
}

impl JobState {
    /// Whether the song will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

/// What a client asked for, after validation.
#[derive(Debug, Clone, Serialize)]
pub struct SongSpec {
    /// Tags text.
    pub tags: String,
    /// Lyrics text.
    pub lyrics: String,
    /// The preset the settings started from, if any.
    pub preset: Option<String>,
    /// Resolved, validated settings.
    pub settings: Settings,
    /// The seed (drawn by the service when the client gave none).
    pub seed: u64,
}

/// Bounds of the table.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Songs waiting at most (the running one not counted); one more is refused.
    pub max_queued: usize,
    /// Finished songs kept at most.
    pub max_finished: usize,
    /// WAV bytes of finished songs kept at most (the newest song is kept even
    /// when it alone is larger, so its client can still fetch it).
    pub max_finished_bytes: usize,
}

/// One song.
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// The request.
    pub spec: SongSpec,
    /// Its state.
    pub state: JobState,
    /// Seconds since the Unix epoch when it was submitted.
    pub created_unix: u64,
    /// When it was submitted (queue wait).
    pub submitted: Instant,
    /// Every event so far, in order.
    pub events: Vec<Event>,
    /// The WAV as streamed so far (header with unknown sizes, then samples);
    /// when [`JobState::Done`], the complete file with its true sizes.
    pub audio: Vec<u8>,
    /// Set to stop the song within a frame.
    pub cancel: Arc<AtomicBool>,
    changed: watch::Sender<()>,
}

impl Job {
    /// A receiver that wakes whenever the job gets an event or audio; it
    /// errors once the job is evicted.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// The final outcome, once there is one.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.events.iter().rev().find_map(|e| match e {
            Event::Done(o) => Some(o),
            _ => None,
        })
    }

    fn push(&mut self, event: Event) {
        self.events.push(event);
        self.changed.send_replace(());
    }
}

/// Why a song was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds [`StoreLimits::max_queued`] songs.
    QueueFull,
    /// The service is shutting down.
    Closed,
}

/// The table of songs.
pub struct Store {
    limits: StoreLimits,
    jobs: HashMap<JobId, Job>,
    queue: VecDeque<JobId>,
    running: Option<JobId>,
    finished: VecDeque<JobId>,
    closed: bool,
}

impl Store {
    /// An empty table.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            jobs: HashMap::new(),
            queue: VecDeque::new(),
            running: None,
            finished: VecDeque::new(),
            closed: false,
        }
    }

    /// The job `id`, if it is still known.
    pub fn get(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    /// Songs waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The running song's id.
    pub fn running(&self) -> Option<&JobId> {
        self.running.as_ref()
    }

    /// 1-based place of `id` among the waiting songs.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.queue.iter().position(|q| q == id).map(|i| i + 1)
    }

    /// Whether shutdown began.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The most recent songs, newest first, at most `n`.
    pub fn recent(&self, n: usize) -> Vec<&Job> {
        let mut all: Vec<&Job> = self.jobs.values().collect();
        all.sort_by_key(|j| std::cmp::Reverse(j.submitted));
        all.truncate(n);
        all
    }

    /// Queues `spec` under `id`; returns its position.
    pub fn submit(&mut self, id: JobId, spec: SongSpec) -> Result<usize, Refused> {
        if self.closed {
            return Err(Refused::Closed);
        }
        if self.queue.len() >= self.limits.max_queued {
            return Err(Refused::QueueFull);
        }
        let position = self.queue.len() + 1;
        let (changed, _) = watch::channel(());
        let created_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut job = Job {
            id: id.clone(),
            spec,
            state: JobState::Queued,
            created_unix,
            submitted: Instant::now(),
            events: Vec::new(),
            audio: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
            changed,
        };
        job.push(Event::Queued { position });
        self.jobs.insert(id.clone(), job);
        self.queue.push_back(id);
        Ok(position)
    }

    /// Takes the next waiting song for the worker (marking it running) and
    /// tells the songs behind it their new places.
    pub fn start_next(&mut self) -> Option<(JobId, SongSpec, Arc<AtomicBool>)> {
        let id = self.queue.pop_front()?;
        let job = self.jobs.get_mut(&id)?;
        job.state = JobState::Running;
        job.push(Event::Started {
            waited_s: job.submitted.elapsed().as_secs_f64(),
        });
        let taken = (id.clone(), job.spec.clone(), Arc::clone(&job.cancel));
        self.running = Some(id);
        self.renumber();
        Some(taken)
    }

    fn renumber(&mut self) {
        for (i, id) in self.queue.iter().enumerate() {
            if let Some(job) = self.jobs.get_mut(id) {
                job.push(Event::Queued { position: i + 1 });
            }
        }
    }

    /// Records a progress event of the running song.
    pub fn record(&mut self, id: &str, event: Event) {
        if let Some(job) = self.jobs.get_mut(id) {
            job.push(event);
        }
    }

    /// Appends WAV bytes of the running song.
    pub fn append_audio(&mut self, id: &str, bytes: &[u8]) {
        if let Some(job) = self.jobs.get_mut(id) {
            job.audio.extend_from_slice(bytes);
            job.changed.send_replace(());
        }
    }

    /// The WAV bytes of `id`, to finish its header.
    pub fn audio_mut(&mut self, id: &str) -> Option<&mut Vec<u8>> {
        self.jobs.get_mut(id).map(|j| &mut j.audio)
    }

    /// Cancels `id`: a waiting song leaves the queue at once, a running one
    /// is flagged (the worker ends it within a frame); a finished one is left
    /// as it is. Returns its state afterwards, `None` for an unknown id.
    pub fn cancel(&mut self, id: &str) -> Option<JobState> {
        let state = self.jobs.get(id)?.state;
        match state {
            JobState::Queued => {
                self.queue.retain(|q| q != id);
                self.end(id, JobState::Cancelled, Event::Cancelled);
                self.renumber();
            }
            JobState::Running => self.jobs.get(id)?.cancel.store(true, Ordering::Relaxed),
            JobState::Done | JobState::Failed | JobState::Cancelled => {}
        }
        self.jobs.get(id).map(|j| j.state)
    }

    /// Ends the running song `id` with `state` and its final `event`; a
    /// song that did not finish loses its audio (no partial WAV is served).
    pub fn end(&mut self, id: &str, state: JobState, event: Event) {
        if self.running.as_deref() == Some(id) {
            self.running = None;
        }
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        job.state = state;
        if state != JobState::Done {
            job.audio = Vec::new();
        }
        job.push(event);
        self.finished.push_back(id.to_string());
        self.evict();
    }

    /// Drops the oldest finished songs beyond the count and byte limits,
    /// never the newest one.
    fn evict(&mut self) {
        let bytes = |s: &Self| -> usize {
            s.finished
                .iter()
                .filter_map(|id| s.jobs.get(id))
                .map(|j| j.audio.len())
                .sum()
        };
        while self.finished.len() > 1
            && (self.finished.len() > self.limits.max_finished || bytes(self) > self.limits.max_finished_bytes)
        {
            if let Some(old) = self.finished.pop_front() {
                self.jobs.remove(&old);
            }
        }
    }

    /// Begins shutdown: refuses new songs, cancels the waiting ones and
    /// flags the running one.
    pub fn close(&mut self) {
        self.closed = true;
        for id in std::mem::take(&mut self.queue) {
            self.end(&id, JobState::Cancelled, Event::Cancelled);
        }
        if let Some(job) = self.running.as_ref().and_then(|id| self.jobs.get(id)) {
            job.cancel.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heart_runtime::settings::SettingsArgs;

    fn spec(seed: u64) -> SongSpec {
        SongSpec {
            tags: "piano".into(),
            lyrics: String::new(),
            preset: None,
            settings: SettingsArgs::default().resolve(&SettingsArgs::default()).unwrap(),
            seed,
        }
    }

    fn store(max_queued: usize, max_finished: usize, max_finished_bytes: usize) -> Store {
        Store::new(StoreLimits {
            max_queued,
            max_finished,
            max_finished_bytes,
        })
    }

    fn outcome(wav_bytes: usize) -> crate::events::Outcome {
        crate::events::Outcome {
            frames: 1,
            stop: "end_of_audio",
            audio_seconds: 0.08,
            sample_rate: 48_000,
            channels: 2,
            wav_bytes,
            prompt_s: 0.0,
            lm_s: 0.0,
            codec_s: 0.0,
            ttfa_s: 0.0,
            total_s: 0.0,
            lm_frames_per_s: 0.0,
            real_time_factor: 0.0,
        }
    }

    fn kinds(job: &Job) -> Vec<String> {
        job.events.iter().map(|e| e.name().to_string()).collect()
    }

    #[test]
    fn the_queue_is_bounded_and_positions_follow_it() {
        let mut s = store(2, 10, 1 << 20);
        assert_eq!(s.submit("a".into(), spec(1)), Ok(1));
        assert_eq!(s.submit("b".into(), spec(2)), Ok(2));
        assert_eq!(s.submit("c".into(), spec(3)), Err(Refused::QueueFull));
        let (id, taken, _) = s.start_next().unwrap();
        assert_eq!((id.as_str(), taken.seed), ("a", 1));
        assert_eq!(s.position("b"), Some(1));
        assert_eq!(s.get("b").unwrap().events.last(), Some(&Event::Queued { position: 1 }));
        assert_eq!(s.submit("c".into(), spec(3)), Ok(2), "a started, so c fits");
        assert_eq!(s.running().map(String::as_str), Some("a"));
    }

    #[test]
    fn cancelling_a_queued_song_removes_it_and_a_running_one_is_flagged() {
        let mut s = store(4, 10, 1 << 20);
        for id in ["a", "b", "c"] {
            s.submit(id.into(), spec(0)).unwrap();
        }
        let (_, _, flag) = s.start_next().unwrap();
        assert_eq!(s.cancel("b"), Some(JobState::Cancelled));
        assert_eq!(s.position("c"), Some(1));
        assert_eq!(kinds(s.get("b").unwrap()), ["queued", "queued", "cancelled"]);
        assert_eq!(s.cancel("a"), Some(JobState::Running));
        assert!(flag.load(Ordering::Relaxed));
        assert_eq!(s.cancel("zzz"), None);
        s.append_audio("a", &[1, 2, 3]);
        s.end("a", JobState::Cancelled, Event::Cancelled);
        assert!(s.get("a").unwrap().audio.is_empty(), "no partial audio is kept");
        assert_eq!(s.cancel("a"), Some(JobState::Cancelled));
    }

    #[test]
    fn the_oldest_finished_songs_are_evicted_by_count_and_bytes() {
        let mut s = store(8, 2, 10);
        let run = |s: &mut Store, id: &str, bytes: usize| {
            s.submit(id.into(), spec(0)).unwrap();
            s.start_next().unwrap();
            s.append_audio(id, &vec![0; bytes]);
            s.end(id, JobState::Done, Event::Done(outcome(bytes)));
        };
        run(&mut s, "a", 1);
        run(&mut s, "b", 1);
        run(&mut s, "c", 1);
        assert!(
            s.get("a").is_none() && s.get("b").is_some() && s.get("c").is_some(),
            "count"
        );
        run(&mut s, "d", 10);
        assert!(
            s.get("b").is_none() && s.get("c").is_none() && s.get("d").is_some(),
            "bytes"
        );
        run(&mut s, "e", 50);
        assert!(s.get("d").is_none());
        assert_eq!(
            s.get("e").unwrap().audio.len(),
            50,
            "the newest song is kept even when too large"
        );
    }

    #[test]
    fn closing_cancels_the_queue_and_flags_the_running_song() {
        let mut s = store(4, 10, 1 << 20);
        s.submit("a".into(), spec(0)).unwrap();
        s.submit("b".into(), spec(0)).unwrap();
        let (_, _, flag) = s.start_next().unwrap();
        s.close();
        assert!(flag.load(Ordering::Relaxed));
        assert_eq!(s.get("b").unwrap().state, JobState::Cancelled);
        assert_eq!(s.submit("c".into(), spec(0)), Err(Refused::Closed));
        assert!(s.start_next().is_none());
    }
}
