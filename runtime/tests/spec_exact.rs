//! Speculative decoding with top-k 1 gives the plain loop's frames exactly, on
//! the tiny-a engine with drafts that disagree with it (early exit: many
//! rejections at every codebook; fp16: few), for several prompts, guidance
//! scales and draft lengths, including end of audio inside a round.

use heart_test_support::drafts as spec_support;

use heart_runtime::lm::{
    FrameOrigin, GenParams, Generation, HeartMula, LmError, Prompt, SamplerParams, Sampling, SeededNoise, SpecParams,
    SpecStats, StopReason, generate, generate_speculative,
};
use spec_support::{Draft, draft, prompt, target};

const GREEDY: SamplerParams = SamplerParams {
    temperature: 1.0,
    top_k: 1,
};

fn plain(lm: &mut HeartMula, p: &Prompt, params: &GenParams) -> Generation {
    let mut noise = SeededNoise::new(0);
    let mut picker = Sampling {
        params: GREEDY,
        noise: &mut noise,
    };
    generate(lm, p, params, &mut picker, &mut |_| {}).unwrap()
}

/// Runs speculation; returns the generation, stats and each final frame's origin.
fn speculate(
    t: &mut HeartMula,
    d: &mut HeartMula,
    p: &Prompt,
    params: &GenParams,
    k: usize,
    seed: u64,
) -> (Generation, SpecStats, Vec<(usize, bool, FrameOrigin)>) {
    let mut noise = SeededNoise::new(seed);
    let mut events = Vec::new();
    let spec = SpecParams {
        generation: *params,
        sampler: GREEDY,
        draft_frames: k,
    };
    let out = generate_speculative(t, d, p, &spec, &mut noise, &mut |e| {
        events.push((e.index, e.kept, e.origin));
    })
    .unwrap();
    (out.generation, out.stats, events)
}

#[test]
fn greedy_speculation_reproduces_plain_decoding() {
    let mut t = target();
    let mut totals = SpecStats::default();
    let mut corrected_at = [0usize; 8];
    for (draft_kind, ks) in [
        (Draft::EarlyExit, [1, 2, 3, 5]),
        (Draft::Fp16, [1, 3, 4, 6]),
        (Draft::Perturbed, [2, 3, 4, 6]),
    ] {
        let mut d = draft(draft_kind);
        for (case, cfg_scale) in [
            ("generate_greedy_cfg1", 1.0),
            ("generate_greedy_cfg1p5", 1.5),
            ("prompt_whitespace_cfg1p5", 1.5),
        ] {
            let p = prompt(case);
            let params = GenParams {
                cfg_scale,
                max_audio_length_ms: 1200,
            };
            let expected = plain(&mut t, &p, &params);
            for (seed, &k) in ks.iter().enumerate() {
                let (got, stats, events) = speculate(&mut t, &mut d, &p, &params, k, seed as u64);
                assert_eq!(got, expected, "{draft_kind:?} {case} K={k}");
                let ended = got.stop == StopReason::EndOfAudio;
                assert_eq!(
                    events.len(),
                    got.frames.len() + ended as usize,
                    "the end frame is reported too"
                );
                for (_, _, origin) in &events {
                    if let FrameOrigin::Corrected { codebook } = origin {
                        corrected_at[*codebook] += 1;
                    }
                }
                totals.accepted_frames += stats.accepted_frames;
                totals.rounds += stats.rounds;
                totals.target_walks += stats.target_walks;
                totals.draft_finishes += stats.draft_finishes;
                eprintln!(
                    "{draft_kind:?} {case} K={k}: {} frames ({:?})\n{stats}",
                    got.frames.len(),
                    got.stop
                );
            }
        }
    }
    // The runs above exercised every path: whole drafted frames kept,
    // rejections at code 0 and at later codebooks, and rejected frames finished
    // both by the target's walk and by the draft in a later round.
    assert!(totals.accepted_frames > 0, "no drafted frame was ever accepted");
    assert!(totals.target_walks > 0, "the target never finished a frame");
    assert!(totals.draft_finishes > 0, "the draft never finished a rejected frame");
    assert!(corrected_at[0] > 0, "no rejection at codebook 0: {corrected_at:?}");
    assert!(
        corrected_at[1..].iter().filter(|&&n| n > 0).count() >= 3,
        "too few later codebooks rejected: {corrected_at:?}"
    );
}

#[test]
fn end_of_audio_inside_a_round_stops_like_the_plain_loop() {
    let mut t = target();
    let p = prompt("generate_greedy_cfg1p5_eos");
    let params = GenParams {
        cfg_scale: 1.5,
        max_audio_length_ms: 960,
    };
    let expected = plain(&mut t, &p, &params);
    assert_eq!(expected.stop, StopReason::EndOfAudio);
    assert_eq!(expected.frames.len(), 8, "the fixture's case ends at call 8");
    let mut origins = Vec::new();
    for (draft_kind, k) in [
        (Draft::Same, 3),
        (Draft::Same, 4),
        (Draft::EarlyExit, 2),
        (Draft::EarlyExit, 5),
        (Draft::Fp16, 6),
    ] {
        let mut d = draft(draft_kind);
        let (got, stats, events) = speculate(&mut t, &mut d, &p, &params, k, 7);
        assert_eq!(got, expected, "{draft_kind:?} K={k}");
        let &(index, kept, origin) = events.last().unwrap();
        assert_eq!((index, kept), (8, false), "the end frame is reported, not kept");
        assert!(stats.rounds >= 2, "{draft_kind:?} K={k}: {stats:?}");
        origins.push(origin);
    }
    // With the target as its own draft, K = 3 drafts frames 6..8 in round 3 and
    // stops drafting at the end frame, which is then accepted as drafted.
    assert_eq!(origins[0], FrameOrigin::Drafted);
    assert!(
        origins.iter().any(|o| *o != FrameOrigin::Drafted),
        "some run ends on a corrected frame: {origins:?}"
    );
}

#[test]
fn length_limit_and_bad_parameters() {
    let mut t = target();
    let mut d = draft(Draft::Same);
    let p = prompt("generate_greedy_cfg1");
    for ms in [0, 80, 5 * 80 + 79] {
        let params = GenParams {
            cfg_scale: 1.0,
            max_audio_length_ms: ms,
        };
        let expected = plain(&mut t, &p, &params);
        let (got, stats, _) = speculate(&mut t, &mut d, &p, &params, 4, 0);
        assert_eq!(got, expected, "max {ms} ms");
        assert_eq!(got.frames.len() as u64, ms / 80 + 1);
        assert_eq!(stats.frames, got.frames.len());
        assert_eq!(stats.acceptance_rates().len(), 8);
    }
    let mut noise = SeededNoise::new(0);
    let spec = SpecParams {
        generation: GenParams {
            cfg_scale: 1.0,
            max_audio_length_ms: 800,
        },
        sampler: GREEDY,
        draft_frames: 0,
    };
    let err = generate_speculative(&mut t, &mut d, &p, &spec, &mut noise, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, LmError::Input(ref m) if m.contains("draft_frames")),
        "{err}"
    );
    let spec = SpecParams {
        sampler: SamplerParams { top_k: 0, ..GREEDY },
        draft_frames: 2,
        ..spec
    };
    let err = generate_speculative(&mut t, &mut d, &p, &spec, &mut noise, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("top_k"), "{err}");
}
