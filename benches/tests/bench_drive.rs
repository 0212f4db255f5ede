//! The benchmark drivers over fake steppers: call order and counts, rows and
//! their floors, error context. No assertion depends on how long anything took.

use std::time::Duration;

use heart::config::{CodecConfig, MulaConfig};
use heart::cost::lm::memory_floor_ms;
use heart::geometry::WINDOW_LATENTS;
use heart::precision::Precision;
use heart_bench::{
    CodecFloor, CodecPlan, CodecStepper, FrameStepper, LmFloor, LmPlan, LmRoofline, Repeats, bench_codec, bench_lm,
};

/// Every fake call takes a little time, so rates stay finite.
fn work() {
    std::thread::sleep(Duration::from_micros(200));
}

#[derive(Debug, thiserror::Error)]
#[error("fake failure after {0} calls")]
struct FakeError(usize);

/// Records every call; fails the `fail_at`-th backbone step when set; has a
/// frame graph when `frame_graph` is set.
#[derive(Default)]
struct FakeLm {
    calls: Vec<String>,
    backbone_steps: usize,
    fail_at: Option<usize>,
    frame_graph: bool,
}

impl FrameStepper for FakeLm {
    type Error = FakeError;

    fn prefill(&mut self, tokens: usize) -> Result<(), FakeError> {
        self.calls.push(format!("prefill {tokens}"));
        work();
        Ok(())
    }

    fn reset(&mut self, position: usize) -> Result<(), FakeError> {
        self.calls.push(format!("reset {position}"));
        Ok(())
    }

    fn backbone_step(&mut self) -> Result<(), FakeError> {
        self.backbone_steps += 1;
        if self.fail_at == Some(self.backbone_steps) {
            return Err(FakeError(self.backbone_steps));
        }
        self.calls.push("backbone".into());
        work();
        Ok(())
    }

    fn decoder_frame(&mut self) -> Result<(), FakeError> {
        self.calls.push("decoder".into());
        work();
        Ok(())
    }

    fn calls_per_frame(&self) -> (usize, Option<usize>) {
        (8, self.frame_graph.then_some(1))
    }

    fn whole_frame(&mut self) -> Result<(), FakeError> {
        self.calls.push("whole".into());
        work();
        Ok(())
    }
}

#[test]
fn lm_driver_calls_in_plan_order_and_names_every_row() {
    let mut lm = FakeLm::default();
    let plan = LmPlan {
        positions: vec![0, 5],
        repeats: Repeats::new(1, 3),
        prefill_tokens: Some(16),
    };
    let rows = bench_lm(&mut lm, &plan, None).unwrap();

    let frames = ["backbone", "decoder"].repeat(4);
    let mut expected: Vec<String> = vec!["prefill 16".into(); 4];
    for p in [0, 5] {
        expected.push(format!("reset {p}"));
        expected.extend(frames.iter().map(|s| s.to_string()));
    }
    assert_eq!(lm.calls, expected);

    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "prefill 16 tokens",
            "prefill tokens/s",
            "lm backbone step @ pos 0",
            "lm decoder frame @ pos 0",
            "lm frame @ pos 0",
            "lm frames/s @ pos 0",
            "lm real-time factor @ pos 0",
            "lm calls per frame @ pos 0",
            "lm backbone step @ pos 5",
            "lm decoder frame @ pos 5",
            "lm frame @ pos 5",
            "lm frames/s @ pos 5",
            "lm real-time factor @ pos 5",
            "lm calls per frame @ pos 5",
        ]
    );
    assert!(
        rows.iter()
            .filter(|r| r.unit != "calls")
            .all(|r| r.stats.n == 3 && r.floor.is_none())
    );
    assert_eq!(rows[7].stats.median, 8.0);
    let (frame, fps, rtf) = (&rows[4].stats, &rows[5].stats, &rows[6].stats);
    assert!((fps.median - 1e3 / frame.median).abs() <= 1e-9 * fps.median);
    assert!((rtf.median - 80.0 / frame.median).abs() <= 1e-9 * rtf.median);
    assert_eq!(rows[1].stats.median, 16e3 / rows[0].stats.median);
}

#[test]
fn lm_floors_come_from_the_roofline_at_each_position() {
    let floor = LmFloor {
        roofline: LmRoofline::new(&MulaConfig::heartmula_oss_3b(), Precision::Fp32, 2),
        bandwidth_gb_s: 273.0,
    };
    let plan = LmPlan {
        positions: vec![0, 2048],
        repeats: Repeats::new(0, 1),
        prefill_tokens: None,
    };
    let rows = bench_lm(&mut FakeLm::default(), &plan, Some(&floor)).unwrap();
    for (i, p) in [0, 2048].into_iter().enumerate() {
        let bytes = floor.roofline.frame_bytes(p);
        let [backbone, decoder, frame, fps, _, _] = &rows[6 * i..6 * i + 6] else {
            panic!("6 rows per position")
        };
        assert_eq!(backbone.floor, Some(memory_floor_ms(bytes.backbone(), 273.0)));
        assert_eq!(decoder.floor, Some(memory_floor_ms(bytes.decoder(), 273.0)));
        assert_eq!(frame.floor, Some(memory_floor_ms(bytes.total(), 273.0)));
        let pct = frame.percent_of_floor.unwrap();
        assert!((pct - frame.floor.unwrap() / frame.stats.median * 100.0).abs() <= 1e-9 * pct);
        assert!(fps.floor.is_none());
    }
    // 21.07 GB of weights at 273 GB/s, plus 0.94 GB of KV cache at position 2048.
    let (f0, f2k) = (rows[2].floor.unwrap(), rows[8].floor.unwrap());
    assert!((77.16..77.20).contains(&f0), "{f0}");
    assert!((f2k - f0 - 939_524_096.0 / 273e6).abs() < 1e-9, "{f2k}");
}

#[test]
fn a_frame_graph_is_measured_after_the_per_step_frames_at_the_same_position() {
    let floor = LmFloor {
        roofline: LmRoofline::new(&MulaConfig::heartmula_oss_3b(), Precision::Fp32, 2),
        bandwidth_gb_s: 273.0,
    };
    let plan = LmPlan {
        positions: vec![7],
        repeats: Repeats::new(1, 2),
        prefill_tokens: None,
    };
    let mut lm = FakeLm {
        frame_graph: true,
        ..FakeLm::default()
    };
    let rows = bench_lm(&mut lm, &plan, Some(&floor)).unwrap();
    let mut expected = vec!["reset 7".to_string()];
    expected.extend(["backbone", "decoder"].repeat(3).iter().map(|s| s.to_string()));
    expected.push("reset 7".into());
    expected.extend(["whole"; 3].iter().map(|s| s.to_string()));
    assert_eq!(lm.calls, expected);
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names[6..],
        [
            "lm frame graph @ pos 7",
            "lm frame graph frames/s @ pos 7",
            "lm frame graph calls per frame @ pos 7",
            "lm frame graph speed-up @ pos 7",
        ]
    );
    let (per_step, whole) = (&rows[2], &rows[6]);
    assert_eq!(whole.stats.n, 2);
    assert_eq!(whole.floor, per_step.floor, "the same bytes per frame on both paths");
    assert_eq!((rows[5].stats.median, rows[8].stats.median), (8.0, 1.0));
    assert_eq!(rows[9].stats.median, per_step.stats.median / whole.stats.median);
}

#[test]
fn lm_errors_name_the_stage_and_position() {
    let mut lm = FakeLm {
        fail_at: Some(6),
        ..FakeLm::default()
    };
    let plan = LmPlan {
        positions: vec![0, 1024],
        repeats: Repeats::new(1, 4),
        prefill_tokens: None,
    };
    let err = bench_lm(&mut lm, &plan, None).unwrap_err().to_string();
    assert_eq!(err, "backbone step @ pos 1024: fake failure after 6 calls");
    let plan = LmPlan {
        repeats: Repeats::new(1, 0),
        ..LmPlan::default()
    };
    let err = bench_lm(&mut FakeLm::default(), &plan, None).unwrap_err().to_string();
    assert!(err.contains("at least one timed repeat"), "{err}");
}

#[derive(Default)]
struct FakeCodec {
    steps: usize,
    decodes: usize,
}

impl CodecStepper for FakeCodec {
    type Error = FakeError;

    fn estimator_step(&mut self) -> Result<(), FakeError> {
        self.steps += 1;
        work();
        Ok(())
    }

    fn decode_window(&mut self) -> Result<(), FakeError> {
        self.decodes += 1;
        work();
        Ok(())
    }
}

#[test]
fn codec_driver_rows_floors_and_audio_scaling() {
    let cfg = CodecConfig::heartcodec_oss();
    let plan = CodecPlan::new(&cfg, Repeats::new(2, 3), 10);
    assert_eq!((plan.window_latent_frames, plan.hop_latent_frames), (744, 640));
    let floor = CodecFloor {
        config: cfg,
        precision: Precision::Fp32,
        bandwidth_gb_s: 20.0,
        peak_gflop_s: 100.0,
    };
    let mut codec = FakeCodec::default();
    let rows = bench_codec(&mut codec, &plan, Some(&floor)).unwrap();
    assert_eq!((codec.steps, codec.decodes), (5, 5));

    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "codec estimator step",
            "codec decode window",
            "codec decode per audio second",
            "codec real-time factor"
        ]
    );
    let (step_floor, decode_floor) = floor.floors_ms(WINDOW_LATENTS);
    // Compute-bound at 100 GFLOP/s: 4.416 TFLOP per step, 3.431 TFLOP per window.
    assert!((step_floor - 44_160.327_352_32).abs() < 1e-6, "{step_floor}");
    assert!((decode_floor - 34_312.775_270_4).abs() < 1e-6, "{decode_floor}");
    assert_eq!((rows[0].floor, rows[1].floor), (Some(step_floor), Some(decode_floor)));
    // A window is 744 / 25 = 29.76 s of audio.
    let per_s = &rows[2];
    assert!((per_s.stats.median - rows[1].stats.median / 29.76).abs() <= 1e-9 * per_s.stats.median);
    assert!((per_s.floor.unwrap() - decode_floor / 29.76).abs() < 1e-9);
    // Steady state: 25.6 s of new audio per 10 steps + one decode.
    let window_ms = 10.0 * rows[0].stats.median + rows[1].stats.median;
    assert!((rows[3].stats.median - 25_600.0 / window_ms).abs() <= 1e-9 * rows[3].stats.median);
}

#[test]
fn codec_driver_refuses_an_empty_plan() {
    let plan = CodecPlan {
        flow_steps: 0,
        ..CodecPlan::new(&CodecConfig::heartcodec_oss(), Repeats::new(0, 1), 10)
    };
    let err = bench_codec(&mut FakeCodec::default(), &plan, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("codec plan needs steps"), "{err}");
}
