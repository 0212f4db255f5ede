//! Frame-loop edge cases on the tiny-a engine, driven by scripted pickers:
//! end of audio (ignored on frame 0, dropped later), length limit, batch choice
//! per guidance scale, context limit, and cache rollback / growth consistency.

use heart::fixture::Fixture;
use heart::precision::Precision;
use heart_runtime::lm::{
    CodePicker, GenParams, HeartMula, KvCache, LmError, Prompt, SamplerParams, Sampling, SeededNoise, StackCache,
    StopReason, generate,
};

/// Returns `eos` for every codebook of the listed frames, else `frame + codebook`.
struct Script {
    eos_frames: Vec<usize>,
    eos: i64,
}

impl CodePicker for Script {
    fn pick(&mut self, frame: usize, codebook: usize, _logits: &[f32]) -> Result<i64, LmError> {
        Ok(if self.eos_frames.contains(&frame) {
            self.eos
        } else {
            (frame + codebook) as i64 % 60
        })
    }
}

fn prompt() -> Prompt {
    let fixture = Fixture::open(&heart_test_support::fixture()).unwrap();
    let case = fixture.case("teacher_forced_cfg1").unwrap();
    heart_runtime::lm::Prompt::from_fixture(&fixture.load(case).unwrap()).unwrap()
}

/// What one scripted run did.
struct Outcome {
    /// Batch rows seen at each call.
    batches: Vec<usize>,
    /// Why it stopped, or the error.
    stop: Result<StopReason, LmError>,
    /// `generate_frame` calls.
    calls: usize,
    /// Frames kept.
    kept: usize,
}

fn run(lm: &mut HeartMula, cfg_scale: f32, ms: u64, eos_frames: Vec<usize>) -> Outcome {
    let eos = lm.dims().audio_eos_id;
    let mut batches = Vec::new();
    let params = GenParams {
        cfg_scale,
        max_audio_length_ms: ms,
    };
    let result = generate(lm, &prompt(), &params, &mut Script { eos_frames, eos }, &mut |e| {
        batches.push(e.codes.len());
        assert_eq!(e.kept, !(e.index > 0 && e.codes[0][0] == eos));
    });
    Outcome {
        calls: batches.len(),
        batches,
        kept: result.as_ref().map_or(0, |g| g.frames.len()),
        stop: result.map(|g| g.stop),
    }
}

#[test]
fn end_of_audio_is_ignored_on_frame_0_and_drops_later_frames() {
    let mut lm = heart_test_support::open_lm(Precision::Fp32);
    let o = run(&mut lm, 1.0, 800, vec![0, 3]);
    assert_eq!(o.stop.unwrap(), StopReason::EndOfAudio);
    assert_eq!((o.calls, o.kept), (4, 3), "frames 0..2 kept, the end frame dropped");
}

#[test]
fn length_limit_allows_max_ms_over_80_frames_after_the_first() {
    let mut lm = heart_test_support::open_lm(Precision::Fp32);
    let o = run(&mut lm, 1.0, 3 * 80 + 79, vec![]);
    assert_eq!((o.stop.unwrap(), o.calls, o.kept), (StopReason::MaxLength, 4, 4));
    let o = run(&mut lm, 1.0, 0, vec![]);
    assert_eq!((o.stop.unwrap(), o.calls, o.kept), (StopReason::MaxLength, 1, 1));
}

#[test]
fn guidance_scale_selects_the_batch() {
    let mut lm = heart_test_support::open_lm(Precision::Fp32);
    assert_eq!(run(&mut lm, 1.0, 160, vec![]).batches, vec![1; 3]);
    assert_eq!(run(&mut lm, 1.5, 160, vec![]).batches, vec![2; 3]);
    assert_eq!(
        run(&mut lm, 0.5, 160, vec![]).batches,
        vec![1; 3],
        "cfg < 1: row 0 only, see frame_loop docs"
    );
}

#[test]
fn context_limit_and_bad_inputs_are_errors() {
    let mut lm = heart_test_support::open_lm(Precision::Fp32);
    let max = lm.dims().max_seq_len as u64;
    let err = run(&mut lm, 1.0, max * 80, vec![]).stop.unwrap_err();
    assert!(matches!(err, LmError::CacheFull { .. }), "{err}");
    let bad = Prompt::from_text(&[1, 2, 100_000], 1);
    let params = GenParams {
        cfg_scale: 1.0,
        max_audio_length_ms: 80,
    };
    let err = generate(
        &mut lm,
        &bad,
        &params,
        &mut Script {
            eos_frames: vec![],
            eos: 0,
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("text id 100000"), "{err}");
    let mut noise = SeededNoise::new(1);
    let mut picker = Sampling {
        params: SamplerParams {
            temperature: 1.0,
            top_k: 5,
        },
        noise: &mut noise,
    };
    let g = generate(&mut lm, &prompt(), &params, &mut picker, &mut |_| {}).unwrap();
    // Random tiny weights: the second frame may be an end of audio.
    assert!(g.frames.len() == 2 || g.stop == StopReason::EndOfAudio, "{g:?}");
    assert!(
        g.frames
            .iter()
            .flatten()
            .all(|&c| (0..lm.dims().audio_vocab as i64).contains(&c))
    );
}

#[test]
fn truncating_the_cache_and_refeeding_reproduces_the_step() {
    let mut lm = heart_test_support::open_lm(Precision::Fp32);
    let p = prompt();
    let mut st = lm.new_state(1, p.len() + 4).unwrap();
    lm.prefill(&mut st, &p).unwrap();
    let a = vec![vec![1, 2, 3, 4, 5, 6, 7, 8]];
    let b = vec![vec![9, 10, 11, 12, 13, 14, 15, 16]];
    lm.feed_frame(&mut st, &a).unwrap();
    let first = lm.feed_frame(&mut st, &b).unwrap();
    // Roll back b, feed a different frame, roll back again, feed b again.
    st.backbone.truncate(p.len() + 1);
    let other = lm.feed_frame(&mut st, &a).unwrap();
    assert_ne!(other.c0_logits, first.c0_logits);
    st.backbone.truncate(p.len() + 1);
    let again = lm.feed_frame(&mut st, &b).unwrap();
    assert_eq!(st.backbone.len(), p.len() + 2);
    let err = first
        .c0_logits
        .iter()
        .zip(&again.c0_logits)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-6, "{err}");
}

#[test]
fn growing_the_cache_matches_a_cache_allocated_at_full_size() {
    let mut lm = heart_test_support::open_lm(Precision::Fp32);
    let p = prompt();
    let frames = 300 - p.len();
    let mut grown = lm.new_state(1, p.len() + frames).unwrap();
    let mut full = lm.new_state(1, p.len() + frames).unwrap();
    let b = full.backbone.host_mut().unwrap().clone();
    full.backbone = StackCache::Host(KvCache::new(b.shape(), b.dtype(), b.max_capacity(), b.max_capacity()).unwrap());
    let (mut x, mut y) = (lm.prefill(&mut grown, &p).unwrap(), lm.prefill(&mut full, &p).unwrap());
    for i in 0..frames {
        let f = vec![(0..8).map(|k| ((i * 7 + k * 3) % 64) as i64).collect()];
        x = lm.feed_frame(&mut grown, &f).unwrap();
        y = lm.feed_frame(&mut full, &f).unwrap();
    }
    assert_eq!(
        grown.backbone.host_mut().unwrap().capacity(),
        300,
        "grew in steps, capped at the maximum"
    );
    let err = x
        .c0_logits
        .iter()
        .zip(&y.c0_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-4, "{err}");
}
