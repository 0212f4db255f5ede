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
fn only_gpu_backends_in_a_gpu_build_take_the_device_loop() {
    let rtx = Backend::TensorRtRtx {
        device: 0,
        cache_dir: "/c".into(),
    };
    let trt = Backend::TensorRt {
        device: 0,
        cache_dir: "/c".into(),
    };
    for gpu_build in [false, true] {
        assert_eq!(LoopKind::select(&Backend::Cpu, gpu_build), LoopKind::Host);
    }
    for backend in [Backend::Cuda { device: 0 }, trt, rtx] {
        assert_eq!(LoopKind::select(&backend, true), LoopKind::Device, "{backend:?}");
        assert_eq!(LoopKind::select(&backend, false), LoopKind::Host, "{backend:?}");
        assert_eq!(
            LoopKind::for_backend(&backend) == LoopKind::Device,
            cfg!(feature = "gpu")
        );
    }
}

#[test]
fn cuda_graph_ids_are_distinct_per_shape_and_allocation_and_fit_an_i32() {
    let mut seen = std::collections::BTreeMap::new();
    for epoch in [0, 1, 7] {
        for graph in [Graph::Backbone, Graph::Decoder, Graph::Frame, Graph::Scorer] {
            for batch in [1, 2, 16] {
                for rows in [1, 2, 8, 1023] {
                    let id = annotation(graph, batch, rows, epoch).expect("in range");
                    assert!(id >= 1 && id <= i32::MAX as u32);
                    assert_eq!(annotation(graph, batch, rows, epoch), Some(id), "stable");
                    let before = seen.insert(id, (graph, batch, rows, epoch));
                    assert!(
                        before.is_none(),
                        "{id} reused: {before:?} and {:?}",
                        (graph, batch, rows, epoch)
                    );
                }
            }
        }
    }
    assert_eq!(
        annotation(Graph::Backbone, 2, 1024, 0),
        None,
        "a long prompt runs uncaptured"
    );
    assert_eq!(annotation(Graph::Decoder, 64, 1, 0), None);
    assert_eq!(annotation(Graph::Backbone, 1, 1, u32::MAX), None, "past i32");
}

#[test]
fn step_plans_bind_caches_shared_and_everything_else_per_shape() {
    use heart::engine::{frame_io, io};
    let layers = 2;
    let plan = step_plan(Graph::Backbone, layers, 1, &[io::HIDDEN, io::C0_LOGITS], Some(5));
    let names: Vec<&str> = plan.bindings.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "embeds",
            "positions",
            "attn_bias",
            "past_key_0",
            "past_value_0",
            "past_key_1",
            "past_value_1",
            "new_key_0",
            "new_value_0",
            "new_key_1",
            "new_value_1",
            "hidden",
            "c0_logits"
        ]
    );
    for b in &plan.bindings {
        let expected_input = !b.name.starts_with("new_") && b.name != "hidden" && b.name != "c0_logits";
        assert_eq!(b.input, expected_input, "{}", b.name);
        assert_eq!(b.buffer.is_cache(), b.name.starts_with("past_"), "{}", b.name);
    }
    assert_eq!(plan.bindings[3].buffer, Buffer::Key(0));
    assert_eq!(plan.bindings[6].buffer, Buffer::Value(1));
    // The frame graph binds the backbone's cache buffers and its noise.
    let frame = step_plan(Graph::Frame, layers, 1, &[frame_io::CODES], None);
    for b in plan.bindings.iter().filter(|b| b.buffer.is_cache()) {
        assert!(frame.bindings.contains(b), "{b:?}");
    }
    let frame_inputs: Vec<&str> = frame
        .bindings
        .iter()
        .filter(|b| b.input && !b.buffer.is_cache())
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(
        frame_inputs,
        [
            "embeds",
            "positions",
            "attn_bias",
            "noise",
            "temperature",
            "top_k",
            "cfg_scale"
        ]
    );
    let decoder = step_plan(Graph::Decoder, 1, 2, &[io::LOGITS], Some(9));
    assert!(decoder.bindings.iter().any(|b| b.buffer == Buffer::Input(io::CODEBOOK)));
}

#[test]
fn step_buffers_have_the_graph_contracts_sizes() {
    use heart::engine::{frame_io, io};
    let g = StepGeometry {
        kv: DeviceKvLayout {
            shape: shape(),
            dtype: CacheDtype::F16,
            capacity: 10,
        },
        embed_dim: 6,
        vocab: 11,
        codebooks: 8,
    };
    let spec = |b, rows| g.spec(b, rows).unwrap();
    assert_eq!(spec(Buffer::Key(1), 3), (Elem::F16, vec![2, 3, 4, 10]));
    assert_eq!(spec(Buffer::Value(0), 3), (Elem::F16, vec![2, 3, 10, 4]));
    assert_eq!(spec(Buffer::NewKey(0), 3), (Elem::F16, vec![2, 3, 4, 3]));
    assert_eq!(spec(Buffer::NewValue(0), 3), (Elem::F16, vec![2, 3, 3, 4]));
    assert_eq!(spec(Buffer::Input(io::EMBEDS), 3), (Elem::F32, vec![2, 3, 6]));
    assert_eq!(spec(Buffer::Input(io::ATTN_BIAS), 3), (Elem::F32, vec![3, 13]));
    assert_eq!(spec(Buffer::Input(io::CODEBOOK), 1), (Elem::I64, vec![]));
    assert_eq!(spec(Buffer::Input(frame_io::NOISE), 1), (Elem::F32, vec![8, 11]));
    assert_eq!(spec(Buffer::Input(frame_io::TOP_K), 1), (Elem::I64, vec![1]));
    assert_eq!(spec(Buffer::Output(io::C0_LOGITS_ALL), 4), (Elem::F32, vec![2, 4, 11]));
    assert_eq!(spec(Buffer::Output(io::LOGITS_ALL), 8), (Elem::F32, vec![2, 7, 11]));
    assert_eq!(spec(Buffer::Output(frame_io::CODES), 1), (Elem::I64, vec![8]));
    assert_eq!(
        g.bytes(Buffer::Output(frame_io::CODES), 1),
        Some(64),
        "only 8 codes cross per frame"
    );
    assert_eq!(g.spec(Buffer::Output("probe.x"), 1), None, "taps stay on the host loop");
    // Every append fits the buffers it copies between; one past does not.
    let new_key = g.bytes(Buffer::NewKey(0), 3).unwrap();
    let cache = g.bytes(Buffer::Key(0), 3).unwrap();
    assert!(g.kv.key_append(7, 3).unwrap().fits(cache, new_key));
    assert!(!g.kv.key_append(7, 3).unwrap().fits(cache - 1, new_key));
    assert!(!g.kv.key_append(7, 3).unwrap().fits(cache, new_key - 1));
}

#[test]
fn cursors_roll_back_by_moving_the_length() {
    let layout = DeviceKvLayout {
        shape: shape(),
        dtype: CacheDtype::F32,
        capacity: 8,
    };
    let mut c = Cursor {
        layout,
        len: 0,
        epoch: 3,
    };
    assert_eq!(c.next(5), Ok(0));
    c.len = 5;
    assert_eq!(c.next(3), Ok(5));
    assert_eq!(c.next(4), Err(9), "past the capacity");
    assert_eq!(c.next(0), Err(5), "an empty step");
    c.truncate(7);
    assert_eq!(c.len, 5, "truncating past the end keeps the length");
    c.truncate(2);
    assert_eq!((c.len, c.layout, c.epoch), (2, layout, 3));
}

#[test]
fn a_frame_through_the_frame_graph_is_one_captured_run_and_a_code_read() {
    let ops = frame_graph_schedule(2);
    assert_eq!(ops.iter().filter(|o| o.captured()).count(), 1);
    assert_eq!(ops.last(), Some(&Op::ReadCodes));
    assert!(
        !ops.iter()
            .any(|o| matches!(o, Op::ReadLogits { .. } | Op::Sample { .. }))
    );
    assert!(matches!(
        ops[1],
        Op::Run {
            graph: Graph::Frame,
            rows: 1,
            annotation: Some(_)
        }
    ));
}
