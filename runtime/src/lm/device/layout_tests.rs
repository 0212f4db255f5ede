//! The device loop's geometry against the host cache, and its schedule's
//! ordering rules.

use half::f16;

use super::*;
use crate::lm::KvCache;

fn shape() -> CacheShape {
    CacheShape {
        layers: 2,
        batch: 2,
        kv_heads: 3,
        head_dim: 4,
    }
}

/// Appends `steps` (rows per step) of deterministic keys/values to a host
/// cache and, through the [`Copy2d`] plans, to byte buffers of the device
/// layout; both must hold the same bytes.
fn appends_match_the_host_cache<T: crate::lm::kv_cache::CacheElem + bytemuck::Pod>(
    dtype: CacheDtype,
    make: fn(f32) -> T,
    steps: &[usize],
) {
    let capacity: usize = steps.iter().sum::<usize>() + 3;
    let layout = DeviceKvLayout {
        shape: shape(),
        dtype,
        capacity,
    };
    let mut host = KvCache::new(shape(), dtype, capacity, capacity).unwrap();
    let mut dev_k = vec![0u8; layout.layer_bytes()];
    let mut dev_v = vec![0u8; layout.layer_bytes()];
    let per_row = shape().batch * shape().kv_heads * shape().head_dim;
    let mut tag = 0.0f32;
    for &s in steps {
        let keys: Vec<T> = (0..per_row * s)
            .map(|i| {
                tag += 1.0;
                make(tag + i as f32 * 0.5)
            })
            .collect();
        let values: Vec<T> = keys.iter().rev().copied().collect();
        let len = host.len();
        layout
            .key_append(len, s)
            .unwrap()
            .apply(&mut dev_k, bytemuck::cast_slice(&keys));
        layout
            .value_append(len, s)
            .unwrap()
            .apply(&mut dev_v, bytemuck::cast_slice(&values));
        host.write(0, &keys, &values, s).unwrap();
        host.advance(s);
    }
    let (k, v) = host.layer(0);
    let bytes = |b: &crate::lm::kv_cache::Buf| -> Vec<u8> {
        match b {
            crate::lm::kv_cache::Buf::F32(x) => bytemuck::cast_slice(x).to_vec(),
            crate::lm::kv_cache::Buf::F16(x) => bytemuck::cast_slice(x).to_vec(),
        }
    };
    assert_eq!(host.key_dims(), layout.key_dims());
    assert_eq!(host.value_dims(), layout.value_dims());
    assert_eq!(bytes(k), dev_k, "keys");
    assert_eq!(bytes(v), dev_v, "values");
}

#[test]
fn device_appends_lay_out_keys_and_values_like_the_host_cache() {
    // A prefill of 5 rows, single frames, a speculative block of 3.
    appends_match_the_host_cache::<f32>(CacheDtype::F32, |x| x, &[5, 1, 1, 3, 1]);
    appends_match_the_host_cache::<f16>(CacheDtype::F16, f16::from_f32, &[2, 1, 1, 1]);
}

#[test]
fn appends_past_the_capacity_are_refused_and_sizes_add_up() {
    let layout = DeviceKvLayout {
        shape: shape(),
        dtype: CacheDtype::F16,
        capacity: 8,
    };
    assert!(layout.key_append(7, 1).is_some());
    assert_eq!(layout.key_append(7, 2), None);
    assert_eq!(layout.value_append(8, 1), None);
    assert_eq!(layout.key_append(0, 0), None);
    assert_eq!(layout.layer_bytes(), 2 * 3 * 4 * 8 * 2);
    assert_eq!(layout.total_bytes(), 2 * 2 * layout.layer_bytes());
    assert_eq!(layout.new_dims(2), ([2, 3, 4, 2], [2, 3, 2, 4]));
}

#[test]
fn the_fixed_capacity_mask_matches_the_host_cache_mask() {
    let capacity = 6;
    let mut host = KvCache::new(shape(), CacheDtype::F32, capacity, capacity).unwrap();
    let zeros = vec![0.0f32; 2 * 3 * 4 * 3];
    host.write(0, &zeros, &zeros, 3).unwrap();
    host.advance(3);
    for s in [1, 2] {
        assert_eq!(attn_bias(capacity, host.len(), s), host.attn_bias(s), "s = {s}");
    }
    // Row 1 of a 2-row step sees the 3 cached positions and both new rows.
    let b = attn_bias(capacity, 3, 2);
    let row1 = &b[capacity + 2..];
    assert_eq!(row1.iter().filter(|x| **x == 0.0).count(), 5);
}

#[test]
fn each_frame_runs_appends_and_reads_in_stream_order_sampling_outside_graphs() {
    let codebooks = 8;
    let ops = frame_schedule(codebooks, 2);
    assert_eq!(ops.len(), codebooks * 5);
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Run { graph, rows, .. } => {
                assert_eq!(ops[i - 1], Op::Upload { graph, rows }, "inputs uploaded first");
                assert_eq!(ops[i + 1], Op::Append { graph, rows }, "append right after its run");
            }
            Op::Sample { codebook } => {
                assert!(!op.captured());
                assert_eq!(ops[i - 1], Op::ReadLogits { codebook });
            }
            _ => assert!(!op.captured()),
        }
    }
    let sampled: Vec<usize> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Sample { codebook } => Some(*codebook),
            _ => None,
        })
        .collect();
    assert_eq!(sampled, (0..codebooks).collect::<Vec<_>>());
    // One captured graph per (graph, shape): the backbone step, the decoder's
    // 2-row first step and its 1-row steps.
    let mut ids: Vec<(Graph, usize, Option<u32>)> = ops
        .iter()
        .filter_map(|o| match *o {
            Op::Run {
                graph,
                rows,
                annotation,
            } => Some((graph, rows, annotation)),
            _ => None,
        })
        .collect();
    ids.sort_by_key(|x| x.2);
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let unique: std::collections::BTreeSet<u32> = ids.iter().filter_map(|x| x.2).collect();
    assert_eq!(unique.len(), 3);
    // 8 codebooks × 2 rows × 8197 logits × 4 bytes cross per frame.
    assert_eq!(host_bytes_per_frame(8, 2, 8197), 524_608);
}

#[test]
fn only_gpu_backends_take_the_device_loop() {
    assert_eq!(LoopKind::for_backend(&Backend::Cpu), LoopKind::Host);
    assert_eq!(LoopKind::for_backend(&Backend::Cuda { device: 0 }), LoopKind::Device);
    assert_eq!(
        LoopKind::for_backend(&Backend::TensorRtRtx {
            device: 0,
            cache_dir: "/c".into()
        }),
        LoopKind::Device
    );
}
