//! The tapped frame loop (`heart_runtime::lm::tapped`) on the tiny-a engine:
//! it reproduces `generate` exactly (codes and logits, sampled and with an end
//! of audio), replays forced codes, returns the taps it is asked for and names
//! the ones a graph lacks, and stops when its observer fails.

use heart::fixture::Fixture;
use heart::precision::Precision;
use heart_backend::SessionConfig;
use heart_runtime::lm::tapped::{ForcedCodes, GraphKind, TapObserver, TapStep, TappedFrame, TappedLm};
use heart_runtime::lm::{
    CodePicker, GenParams, HeartMula, LmError, Prompt, SamplerParams, Sampling, SeededNoise, StopReason, generate,
};

fn prompt() -> Prompt {
    let fixture = Fixture::open(&heart_test_support::fixture()).unwrap();
    let case = fixture.case("teacher_forced_cfg1").unwrap();
    heart_runtime::lm::Prompt::from_fixture(&fixture.load(case).unwrap()).unwrap()
}

fn tapped(precision: Precision) -> TappedLm {
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    let (cfg, gen_cfg) = heart_test_support::mula_configs();
    TappedLm::new(
        HeartMula::open(
            &rt,
            heart_test_support::lm_engine(precision),
            &cfg,
            &gen_cfg,
            &SessionConfig::default(),
        )
        .unwrap(),
    )
}

#[derive(Default)]
struct Frames {
    frames: Vec<TappedFrame>,
    steps: Vec<(GraphKind, usize, usize, usize, Vec<usize>)>,
}

impl TapObserver for Frames {
    fn step(&mut self, s: &TapStep<'_>) -> Result<(), LmError> {
        let sizes = s.values.iter().map(Vec::len).collect();
        self.steps.push((s.graph, s.frame, s.codebook, s.rows, sizes));
        Ok(())
    }
    fn frame(&mut self, f: &TappedFrame) -> Result<(), LmError> {
        self.frames.push(f.clone());
        Ok(())
    }
}

/// Sampled picks, except that frame `eos_frame` ends the audio.
struct EndAt<'a> {
    inner: Sampling<'a>,
    eos_frame: usize,
    eos: i64,
}

impl CodePicker for EndAt<'_> {
    fn pick(&mut self, frame: usize, codebook: usize, logits: &[f32]) -> Result<i64, LmError> {
        let code = self.inner.pick(frame, codebook, logits)?;
        Ok(if frame == self.eos_frame { self.eos } else { code })
    }
}

#[test]
fn tapped_run_matches_generate() {
    let params = SamplerParams {
        temperature: 0.9,
        top_k: 5,
    };
    for (precision, cfg_scale, eos_frame) in [(Precision::Fp32, 1.5, 6), (Precision::Fp16, 1.0, 99)] {
        let gp = GenParams {
            cfg_scale,
            max_audio_length_ms: 8 * 80,
        };
        let mut lm = heart_test_support::open_lm(precision);
        let eos = lm.dims().audio_eos_id;
        let mut want_logits = Vec::new();
        let mut noise = SeededNoise::new(3);
        let mut picker = EndAt {
            inner: Sampling {
                params,
                noise: &mut noise,
            },
            eos_frame,
            eos,
        };
        let want = generate(&mut lm, &prompt(), &gp, &mut picker, &mut |e| {
            want_logits.push(e.sampler_logits.to_vec())
        })
        .unwrap();

        let mut t = tapped(precision);
        let mut noise = SeededNoise::new(3);
        let mut picker = EndAt {
            inner: Sampling {
                params,
                noise: &mut noise,
            },
            eos_frame,
            eos,
        };
        let mut obs = Frames::default();
        let got = t.run(&prompt(), &gp, &mut picker, &mut obs).unwrap();
        assert_eq!(got, want, "{precision} cfg {cfg_scale}");
        let logits: Vec<Vec<Vec<f32>>> = obs.frames.iter().map(|f| f.logits.clone()).collect();
        assert_eq!(logits, want_logits, "{precision}: same logits, bit for bit");
        let expect_stop = if eos_frame < 9 {
            StopReason::EndOfAudio
        } else {
            StopReason::MaxLength
        };
        assert_eq!(got.stop, expect_stop);
        assert_eq!(obs.frames.last().unwrap().kept, eos_frame >= 9);

        // Forcing every frame, the dropped end frame included, with the same
        // parameters replays the run exactly (the cache grows the same way).
        let all: Vec<Vec<i64>> = obs.frames.iter().map(|f| f.codes.clone()).collect();
        let mut forced = Frames::default();
        let replay = t
            .run(&prompt(), &gp, &mut ForcedCodes { frames: &all }, &mut forced)
            .unwrap();
        assert_eq!(replay, got, "teacher forcing replays the codes");
        assert_eq!(forced.frames, obs.frames, "and the logits, bit for bit");
    }
}

#[test]
fn taps_are_returned_per_step_and_missing_ones_are_named() {
    let mut t = tapped(Precision::Fp32);
    let err = t
        .set_taps(GraphKind::Backbone, vec!["tap.layer_0".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("backbone.onnx") && err.contains("`tap.layer_0`"), "{err}");
    t.set_taps(GraphKind::Backbone, vec!["new_value_2".into()]).unwrap();
    t.set_taps(GraphKind::Decoder, vec!["new_key_1".into(), "logits".into()])
        .unwrap();
    let mut obs = Frames::default();
    let gp = GenParams {
        cfg_scale: 1.5,
        max_audio_length_ms: 80,
    };
    let mut noise = SeededNoise::new(1);
    let mut picker = Sampling {
        params: SamplerParams {
            temperature: 1.0,
            top_k: 3,
        },
        noise: &mut noise,
    };
    t.run(&prompt(), &gp, &mut picker, &mut obs).unwrap();
    let p = prompt().len();
    // frame 0: prefill (2 rows × p positions), then 7 decoder steps; frame 1 the same with 1 position.
    assert_eq!(obs.steps.len(), 2 * 8);
    assert_eq!(obs.steps[0], (GraphKind::Backbone, 0, 0, 2 * p, vec![2 * 2 * p * 16]));
    assert_eq!(
        obs.steps[1],
        (GraphKind::Decoder, 0, 1, 2 * 2, vec![2 * 2 * 12 * 2, 2 * 69])
    );
    assert_eq!(obs.steps[2], (GraphKind::Decoder, 0, 2, 2, vec![2 * 2 * 12, 2 * 69]));
    assert_eq!(obs.steps[8], (GraphKind::Backbone, 1, 0, 2, vec![2 * 2 * 16]));
}

/// Fails when it sees frame `at`.
struct FailAt {
    at: usize,
    seen: Vec<usize>,
}

impl TapObserver for FailAt {
    fn frame(&mut self, f: &TappedFrame) -> Result<(), LmError> {
        self.seen.push(f.index);
        if f.index == self.at {
            return Err(LmError::Input(format!("observer stops at frame {}", f.index)));
        }
        Ok(())
    }
}

#[test]
fn an_observer_error_stops_the_run() {
    let mut t = tapped(Precision::Fp32);
    let gp = GenParams {
        cfg_scale: 1.0,
        max_audio_length_ms: 6 * 80,
    };
    let mut obs = FailAt {
        at: 2,
        seen: Vec::new(),
    };
    let codes = vec![vec![1i64; t.dims().codebooks]; 7];
    let err = t
        .run(&prompt(), &gp, &mut ForcedCodes { frames: &codes }, &mut obs)
        .unwrap_err()
        .to_string();
    assert!(err.contains("observer stops at frame 2"), "{err}");
    assert_eq!(obs.seen, [0, 1, 2], "no frame is generated after the error");
}
