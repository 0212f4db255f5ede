//! The scoring steps speculative decoding is built on, checked directly on the
//! tiny-a engine at batch 2 (CFG): several positions in one backbone call equal
//! one-position steps, a truncated cache forgets rejected positions, and
//! whole-frame decoder scoring equals the per-codebook walk.

use heart_test_support::drafts as spec_support;

use heart_runtime::lm::{BackboneOut, HeartMula, LmState, Prompt};
use spec_support::{prompt, target};

/// Tolerance between calls of different shapes (same weights, same math,
/// other summation order): the logits are O(10); observed differences are
/// at most 6.2e-6.
const TOL: f32 = 1e-4;

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn frame(seed: i64) -> Vec<i64> {
    (0..8).map(|k| (seed * 13 + k * 7) % 64).collect()
}

/// Prompt prefilled at batch 2 with room for `extra` frames.
fn prefilled(lm: &mut HeartMula, p: &Prompt, extra: usize) -> (LmState, BackboneOut) {
    let mut st = lm.new_state(2, p.len() + extra).unwrap();
    let out = lm.prefill(&mut st, p).unwrap();
    (st, out)
}

/// One-position steps: the outputs after feeding each of `frames` in turn.
fn stepwise(lm: &mut HeartMula, st: &mut LmState, frames: &[Vec<i64>]) -> Vec<BackboneOut> {
    frames
        .iter()
        .map(|f| lm.feed_frame(st, &[f.clone(), f.clone()]).unwrap())
        .collect()
}

#[test]
fn several_positions_in_one_call_equal_one_position_steps_and_roll_back() {
    let mut lm = target();
    let p = prompt("teacher_forced_cfg1p5");
    let frames: Vec<Vec<i64>> = (1..=4).map(frame).collect();
    let (mut plain, _) = prefilled(&mut lm, &p, 8);
    let expected = stepwise(&mut lm, &mut plain, &frames);

    let (mut st, _) = prefilled(&mut lm, &p, 8);
    let all = lm.score_positions(&mut st, &frames).unwrap();
    assert_eq!((all.batch, all.positions, st.backbone.len()), (2, 4, p.len() + 4));
    for (i, e) in expected.iter().enumerate() {
        let got = all.at(i);
        assert!(max_diff(&got.hidden, &e.hidden) < TOL, "hidden at {i}");
        assert!(max_diff(&got.c0_logits, &e.c0_logits) < TOL, "c0 logits at {i}");
    }
    // Roll everything back and feed the same frames again, last outputs only.
    st.backbone.truncate(p.len());
    let last = lm.feed_frames(&mut st, &frames).unwrap();
    assert!(max_diff(&last.c0_logits, &expected[3].c0_logits) < TOL);

    // Reject frames 2 and 3: keep frame 1, score two other frames on top. The
    // stale positions must not leak into the new ones.
    st.backbone.truncate(p.len() + 1);
    let others = vec![frame(9), frame(10)];
    let rescored = lm.score_positions(&mut st, &others).unwrap();
    let (mut plain, _) = prefilled(&mut lm, &p, 8);
    let mut path = vec![frames[0].clone()];
    path.extend(others.iter().cloned());
    let expected = stepwise(&mut lm, &mut plain, &path);
    for i in 0..2 {
        let d = max_diff(&rescored.at(i).c0_logits, &expected[i + 1].c0_logits);
        assert!(d < TOL, "after rollback, position {i}: {d}");
    }
    let stale = max_diff(&rescored.at(0).c0_logits, &all.at(1).c0_logits);
    assert!(stale > 1e-2, "the rescored position saw other inputs ({stale})");
}

#[test]
fn whole_frame_decoder_scoring_equals_the_per_codebook_walk() {
    let mut lm = target();
    let p = prompt("teacher_forced_cfg1p5");
    let frames: Vec<Vec<i64>> = (1..=3).map(frame).collect();
    let (mut st, first) = prefilled(&mut lm, &p, 4);
    let mut outs = vec![first];
    outs.extend(stepwise(&mut lm, &mut st, &frames[..2]));
    let hidden: Vec<Vec<f32>> = outs.iter().map(|o| o.hidden.clone()).collect();
    let scored = lm.score_frames(&hidden, &frames, 2).unwrap();
    let v = lm.dims().audio_vocab;
    assert_eq!(scored.logits.len(), 3 * 2 * 7 * v);

    for (f, codes) in frames.iter().enumerate() {
        let mut walked = Vec::new();
        lm.decode_frame(&mut st, &hidden[f], &[codes[0]; 2], &mut |k, logits| {
            walked.push(logits.to_vec());
            Ok(vec![codes[k]; 2])
        })
        .unwrap();
        for (k, w) in walked.iter().enumerate() {
            let d = max_diff(&scored.logits_of(f, k + 1), w);
            assert!(d < TOL, "frame {f} codebook {}: {d}", k + 1);
        }
    }
    let err = lm.score_frames(&hidden[..2], &frames, 2).unwrap_err();
    assert!(err.to_string().contains("frames to score"), "{err}");
}
