//! heart's int4 operator (`ai.heart.MatMulInt4x16`) through the sessions
//! `OrtRuntime` opens: the first sessions of a process, opened on eight
//! threads at once, all succeed, and each computes `x · dequant(W)ᵀ` as
//! `heart::quant::int4x16` defines it, bit for bit, for 1 to 5 rows.
//! (ONNX Runtime's first registration of a custom domain is not thread-safe;
//! `int4_op::creating_session` serializes it. The race is rare: CI hit it
//! once under load, this test did not in 60 runs without the guard.)

use std::sync::{Arc, Barrier};

use heart::quant::blockwise::{IntBits, quantize_blockwise};
use heart::quant::int4x16::{Int4x16, LANES, matmul_groups, quantize_rows};
use heart_backend::SessionConfig;
use onnx_export::quant::NBits;
use onnx_export::quant::nbits::matmul_nbits;
use onnx_export::{DType, Dim, GraphBuilder};
use ort::value::Tensor;

const N: usize = 40;
const K: usize = 96;

fn weights() -> Vec<f32> {
    (0..N * K)
        .map(|i| ((i * 7919 % 997) as f32 / 997.0 - 0.5) * 0.3)
        .collect()
}

#[test]
fn first_sessions_open_concurrently_and_compute_the_defined_product() {
    let rt = heart_backend::init(None).expect("ONNX Runtime: run scripts/setup-ort.sh first");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("int4.onnx");
    let q = quantize_blockwise(&weights(), N, K, IntBits::Int4).unwrap();
    let mut g = GraphBuilder::create(&path, "int4").unwrap();
    let x = g.input("x", DType::F32, &[Dim::from("rows"), K.into()]);
    let y = matmul_nbits(&mut g, &x, "w.weight", &q, NBits::new(IntBits::Int4), DType::F32).unwrap();
    g.output(&y, "y", DType::F32, &[Dim::from("rows"), N.into()]);
    g.finish().unwrap();

    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (rt, path, barrier) = (rt.clone(), path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                rt.open_session(&path, &SessionConfig::default())
            })
        })
        .collect();
    let sessions: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().unwrap().expect("every first session opens"))
        .collect();

    let packed = Int4x16::from_blockwise(&q).unwrap();
    let groups = N.div_ceil(LANES);
    for (mut s, rows) in sessions.into_iter().zip([1, 2, 5, 2, 1, 3, 4, 2]) {
        let xs: Vec<f32> = (0..rows * K).map(|i| ((i * 31 % 101) as f32 - 50.0) / 25.0).collect();
        let out = s
            .run(ort::inputs!["x" => Tensor::from_array(([rows, K], xs.clone())).unwrap()])
            .unwrap();
        let (shape, got) = out["y"].try_extract_tensor::<f32>().unwrap();
        assert_eq!(shape.to_vec(), vec![rows as i64, N as i64]);
        let mut want = vec![0f32; rows * groups * LANES];
        matmul_groups(packed.view(), &quantize_rows(&xs, rows, K), 0..groups, &mut want);
        for r in 0..rows {
            assert_eq!(
                got[r * N..(r + 1) * N],
                want[r * groups * LANES..][..N],
                "row {r} of {rows}"
            );
        }
    }
}
