//! Shared helpers of the LM graph tests: running the backbone and decoder
//! graphs of an export on ONNX Runtime CPU with seeded inputs and an empty
//! cache, and comparing their outputs.

use std::path::Path;

use heart::config::{FlavorParams, MulaConfig};
use heart::engine::{self, io};
use rand_distr::{Distribution, Normal};

use crate::ort_graphs::{Opts, rng, session};

/// New positions of a step call.
pub const ROWS: usize = 3;
/// Rows of a whole-frame decoder call (`logits_all` non-empty): 7 heads + 1.
pub const FRAME_ROWS: usize = 8;
/// Cache capacity of every call.
pub const CAPACITY: usize = 2;

pub fn f32_view(dims: Vec<usize>, v: &[f32]) -> ort::session::SessionInputValue<'_> {
    ort::value::TensorRef::from_array_view((dims, v)).unwrap().into()
}

/// Runs a stack graph (batch 1, `rows` new positions, an empty cache of
/// capacity `CAPACITY` in the graph's cache dtype, f32 or f16, `codebook` for
/// the decoder) and returns the named outputs.
pub fn run_stack(
    path: &Path,
    p: &FlavorParams,
    width: usize,
    (rows, codebook): (usize, i64),
    outputs: &[&str],
) -> Vec<Vec<f32>> {
    let mut s = session(path, Opts::Default);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mut r = rng(5);
    let embeds: Vec<f32> = (0..rows * width).map(|_| normal.sample(&mut r)).collect();
    let bias: Vec<f32> = (0..rows)
        .flat_map(|row| {
            (0..CAPACITY + rows).map(move |c| {
                if c >= CAPACITY && c - CAPACITY <= row {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    let (kv, hd) = (p.num_kv_heads, p.head_dim());
    let half = s
        .inputs()
        .iter()
        .find(|i| i.name() == io::past_key(0))
        .is_some_and(|i| format!("{:?}", i.dtype()).contains("Float16"));
    let cache = vec![0f32; kv * hd * CAPACITY];
    let cache16 = vec![half::f16::ZERO; kv * hd * CAPACITY];
    let cache_view = |dims: Vec<usize>| -> ort::session::SessionInputValue<'_> {
        if half {
            ort::value::TensorRef::from_array_view((dims, cache16.as_slice()))
                .unwrap()
                .into()
        } else {
            f32_view(dims, &cache)
        }
    };
    let positions: Vec<i64> = (0..rows as i64).collect();
    let codebook = [codebook];
    let mut feeds: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![
        (io::EMBEDS.into(), f32_view(vec![1, rows, width], &embeds)),
        (io::ATTN_BIAS.into(), f32_view(vec![rows, CAPACITY + rows], &bias)),
        (
            io::POSITIONS.into(),
            ort::value::TensorRef::from_array_view(([rows], positions.as_slice()))
                .unwrap()
                .into(),
        ),
    ];
    if s.inputs().iter().any(|i| i.name() == io::CODEBOOK) {
        let cb = ort::value::TensorRef::from_array_view((Vec::<usize>::new(), &codebook[..])).unwrap();
        feeds.push((io::CODEBOOK.into(), cb.into()));
    }
    for i in 0..p.num_layers {
        feeds.push((io::past_key(i), cache_view(vec![1, kv, hd, CAPACITY])));
        feeds.push((io::past_value(i), cache_view(vec![1, kv, CAPACITY, hd])));
    }
    let out = s.run(feeds).unwrap();
    outputs
        .iter()
        .map(|n| out[*n].try_extract_tensor::<f32>().unwrap().1.to_vec())
        .collect()
}

/// Names of the compared [`outputs`].
pub const OUTPUTS: [&str; 4] = ["hidden_all", "c0_logits_all", "decoder logits", "decoder logits_all"];

/// The outputs compared: backbone hidden states and codebook-0 logits at every
/// position, the decoder's codebook-1 logits, and its whole-frame logits.
pub fn outputs(dir: &Path, cfg: &MulaConfig) -> Vec<Vec<f32>> {
    let (backbone, decoder) = (dir.join(engine::BACKBONE_GRAPH), dir.join(engine::DECODER_GRAPH));
    let width = cfg.backbone.embed_dim;
    let mut out = run_stack(
        &backbone,
        &cfg.backbone,
        width,
        (ROWS, 1),
        &[io::HIDDEN_ALL, io::C0_LOGITS_ALL],
    );
    out.extend(run_stack(&decoder, &cfg.decoder, width, (ROWS, 1), &[io::LOGITS]));
    let frame = run_stack(&decoder, &cfg.decoder, width, (FRAME_ROWS, 1), &[io::LOGITS_ALL]);
    assert_eq!(
        frame[0].len(),
        (FRAME_ROWS - 1) * cfg.audio_vocab_size,
        "a whole-frame call"
    );
    out.extend(frame);
    out
}

/// Largest |a − b| relative to the largest |b|.
pub fn relative_max_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, &v| m.max(f64::from(v.abs())));
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((f64::from(x) - f64::from(y)).abs()));
    diff / scale
}
