//! The fixture's `mula_generate` cases as generation inputs: prompt,
//! guidance and sampling parameters, the noise they were recorded with, and
//! the frames and frame calls they expect.

use heart_runtime::lm::{GenParams, NoiseSource, Prompt, RecordedNoise, SamplerParams, SeededNoise};

use crate::fixture_set;

/// One `mula_generate` case, loaded.
pub struct GenerateCase {
    /// The case's name.
    pub name: String,
    /// Its prompt.
    pub prompt: Prompt,
    /// Guidance scale and length limit.
    pub params: GenParams,
    /// Temperature and top-k.
    pub sampler: SamplerParams,
    /// The expected frames, codebook-major (`[n_codebooks, frames]` flat).
    pub frames: Vec<i64>,
    /// Frame calls the generation makes (the end-of-audio frame included).
    pub calls: usize,
    recorded: Option<Vec<f32>>,
}

impl GenerateCase {
    /// A fresh noise source: the recorded `sampler_q` draws, or seed 0 for
    /// the greedy cases that recorded none (top-1 ignores the noise).
    pub fn noise(&self) -> Box<dyn NoiseSource> {
        match &self.recorded {
            Some(q) => Box::new(RecordedNoise::new(q.clone())),
            None => Box::new(SeededNoise::new(0)),
        }
    }
}

/// Every `mula_generate` case of the committed fixture (four).
pub fn generate_cases() -> Vec<GenerateCase> {
    let fixture = fixture_set();
    fixture
        .cases()
        .iter()
        .filter(|c| c.kind == "mula_generate")
        .map(|case| {
            let t = fixture.load(case).expect("fixture case tensors");
            GenerateCase {
                name: case.name.clone(),
                prompt: Prompt::from_fixture(&t).expect("fixture prompt"),
                params: GenParams {
                    cfg_scale: case.info_f64("cfg_scale").unwrap() as f32,
                    max_audio_length_ms: case.info_usize("max_audio_length_ms").unwrap() as u64,
                },
                sampler: SamplerParams {
                    temperature: case.info_f64("temperature").unwrap() as f32,
                    top_k: case.info_usize("topk").unwrap(),
                },
                frames: t.i64("frames").expect("fixture frames").0,
                calls: case.info_usize("n_generate_frame_calls").unwrap(),
                recorded: t.f32("sampler_q").ok().map(|(q, _)| q),
            }
        })
        .collect()
}
