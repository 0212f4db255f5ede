//! What ONNX Runtime's CPU kernels make of the bytes a HeartMuLa frame reads,
//! next to this machine's STREAM read bandwidth, so a frame's "% of floor"
//! can be told apart from the ceiling of the operators it is built from.
//!
//! ```text
//! cargo bench -p heart-bench --bench ort_kernels
//! cargo bench -p heart-bench --bench ort_kernels -- --k 3072 --layers 40 --positions 1024,3072
//! ```
//!
//! - **Linear layers**: a chain of `--layers` distinct `[K, K]` weights
//!   applied to 2 rows (the CFG batch), as
//!   `MatMulNBits` int4 (block 32, accuracy level 4: the int profiles' linears)
//!   and as f32 `MatMul`, on one thread and on all: GB/s of weight bytes. A
//!   kernel that is bandwidth-bound reads at the STREAM figure on all threads;
//!   one whose one-thread figure is half its all-thread figure is
//!   compute-bound. At the defaults the f32 chain (1.5 GB) is beyond any
//!   last-level cache; the int4 one (236 MB) may sit in a large one, which can
//!   only flatter its figure.
//! - **Attention against the KV cache**: `q·Kᵀ` and `P·V` of the 3B backbone
//!   (28 layers, batch 2, 8 KV heads × 3 queries, head width 128) at each of
//!   `--positions`, with the cache in f32 (as CPU engines hold it), in f16
//!   cast to f32 in the graph, and in f16 products: ms per frame.
//!
//! `cargo bench` passes `--bench`; without it (as under `cargo test
//! --all-targets`) the program makes a quick smoke run on tiny shapes.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use half::f16;
use heart::profile::Int4Kernel;
use heart::quant::blockwise::{IntBits, quantize_blockwise};
use heart_bench::{BenchError, Repeats, StreamConfig, stream, time_repeats};
use onnx_export::quant::nbits::matmul_nbits;
use onnx_export::quant::{Accuracy, NBits};
use onnx_export::{DType, Dim, GraphBuilder, Value};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use rand::{Rng, SeedableRng};

/// Rows of every product: the two CFG rows.
const ROWS: usize = 2;
/// The 3B backbone's attention shape: layers, KV heads, queries per KV head, head width.
const ATTENTION: (usize, usize, usize, usize) = (28, 8, 3, 128);

#[derive(Parser)]
struct Args {
    /// Width of the square weights of the linear chain.
    #[arg(long, default_value_t = 3072)]
    k: usize,
    /// Distinct weights in the chain.
    #[arg(long, default_value_t = 40)]
    layers: usize,
    /// Cache positions of the attention products.
    #[arg(long, value_delimiter = ',', default_values_t = [1024, 3072])]
    positions: Vec<usize>,
    /// Timed runs of each graph (best kept), after one warm-up.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Passed by `cargo bench`; without it only a quick smoke run is made.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        (args.k, args.layers, args.positions, args.repeats) = (64, 2, vec![16], 1);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = heart_backend::init(None).context("ONNX Runtime (run scripts/setup-ort.sh)")?;
    let dir = tempfile::tempdir()?;
    let bw = stream::measure(StreamConfig {
        total_bytes: if args.bench { 512 << 20 } else { 3 << 20 },
        threads,
        repeats: 5,
    })?;
    println!("STREAM read {:.1} GB/s ({threads} threads)", bw.read_gb_s);
    println!(
        "\n| linear chain ({} × [{k}, {k}], {ROWS} rows) | threads | ms | weight GB/s | of STREAM read |",
        args.layers,
        k = args.k
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, form) in [
        ("MatMulNBits int4, level 4", Chain::NBits),
        ("MatMulInt4x16 (heart)", Chain::Int4x16),
        ("MatMul f32", Chain::F32),
    ] {
        let (path, bytes) = linear_chain(dir.path(), args.k, args.layers, form)?;
        let feeds = [(
            "x".to_string(),
            f32_tensor(&[ROWS, args.k], &vec![0.5f32; ROWS * args.k])?,
        )];
        for t in [1, threads] {
            let mut s = open(&rt, &path, t)?;
            let secs = fastest(args.repeats, name, || run(&mut s, &feeds))?;
            let gb_s = bytes as f64 / secs / 1e9;
            println!(
                "| {name} | {t} | {:.2} | {gb_s:.1} | {:.0} % |",
                secs * 1e3,
                100.0 * gb_s / bw.read_gb_s
            );
        }
    }
    let (layers, kv, g, hd) = ATTENTION;
    let layers = if args.bench { layers } else { 2 };
    println!("\n| attention, {layers} layers, batch {ROWS} | positions | cache MB | ms | cache GB/s |");
    println!("|---|---:|---:|---:|---:|");
    for &c in &args.positions {
        for form in [CacheForm::F32, CacheForm::F16Cast, CacheForm::F16Products] {
            let path = attention(dir.path(), layers, c, form)?;
            let mut s = open(&rt, &path, threads)?;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            let q: Vec<f32> = (0..ROWS * kv * g * hd).map(|_| rng.random()).collect();
            let p: Vec<f32> = (0..ROWS * kv * g * c).map(|_| rng.random()).collect();
            let cache: Vec<f32> = (0..ROWS * kv * hd * c).map(|_| rng.random::<f32>() - 0.5).collect();
            let cache16: Vec<f16> = cache.iter().map(|&v| f16::from_f32(v)).collect();
            let width = if form == CacheForm::F32 { 4 } else { 2 };
            let mut feeds = vec![
                ("q".to_string(), f32_tensor(&[ROWS, kv, g, hd], &q)?),
                ("p".to_string(), f32_tensor(&[ROWS, kv, g, c], &p)?),
            ];
            for i in 0..layers {
                let (kd, vd) = ([ROWS, kv, hd, c], [ROWS, kv, c, hd]);
                let (k, v) = if form == CacheForm::F32 {
                    (f32_tensor(&kd, &cache)?, f32_tensor(&vd, &cache)?)
                } else {
                    (f16_tensor(&kd, &cache16)?, f16_tensor(&vd, &cache16)?)
                };
                feeds.push((format!("k{i}"), k));
                feeds.push((format!("v{i}"), v));
            }
            let secs = fastest(args.repeats, form.name(), || run(&mut s, &feeds))?;
            let mb = (2 * layers * cache.len() * width) as f64 / 1e6;
            println!(
                "| {} | {c} | {mb:.0} | {:.1} | {:.1} |",
                form.name(),
                secs * 1e3,
                mb / 1e3 / secs
            );
        }
    }
    if !args.bench {
        println!("\n(smoke run on tiny shapes: run `cargo bench --bench ort_kernels` for figures)");
    }
    Ok(())
}

/// How the attention graph holds the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheForm {
    F32,
    F16Cast,
    F16Products,
}

impl CacheForm {
    fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32 cache",
            Self::F16Cast => "f16 cache, cast to f32",
            Self::F16Products => "f16 cache, f16 products",
        }
    }
}

/// How the linear chain's weights are stored and multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chain {
    NBits,
    Int4x16,
    F32,
}

/// The chain `x → x·W0ᵀ → …` of `layers` random `[k, k]` weights; returns the
/// graph and its weight bytes (packed nibbles, scales and zero points for int4).
fn linear_chain(dir: &Path, k: usize, layers: usize, form: Chain) -> Result<(std::path::PathBuf, usize)> {
    let path = dir.join(format!("chain_{form:?}.onnx"));
    let mut g = GraphBuilder::create(&path, "chain")?;
    let mut x = g.input("x", DType::F32, &[ROWS.into(), k.into()]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    // Uniform weights of variance 1 / k keep the activations' scale from layer
    // to layer; smaller ones shrink it ≈ 3.5× per layer into f32 subnormals
    // after ≈ 70 layers, whose slow arithmetic then dominates every form.
    let scale = (12.0 / k as f32).sqrt();
    let mut bytes = 0;
    for i in 0..layers {
        let w: Vec<f32> = (0..k * k).map(|_| (rng.random::<f32>() - 0.5) * scale).collect();
        x = match form {
            Chain::NBits => {
                let q = quantize_blockwise(&w, k, k, IntBits::Int4)?;
                bytes += q.packed().len() + 4 * q.scales().len() + q.packed_zero_points().len();
                let nb = NBits {
                    bits: IntBits::Int4,
                    accuracy: Accuracy::Int8,
                    int4_kernel: Int4Kernel::Onnxruntime,
                };
                matmul_nbits(&mut g, &x, &format!("w{i}"), &q, nb, DType::F32)?
            }
            Chain::Int4x16 => {
                let q = quantize_blockwise(&w, k, k, IntBits::Int4)?;
                let p = heart::quant::int4x16::Int4x16::from_blockwise(&q)?;
                bytes += p.packed().len() + 4 * p.scales().len() + p.zero_points().len();
                matmul_nbits(&mut g, &x, &format!("w{i}"), &q, NBits::new(IntBits::Int4), DType::F32)?
            }
            Chain::F32 => {
                bytes += 4 * w.len();
                let t = g.init_f32(&format!("w{i}"), DType::F32, &[k, k], &w)?;
                g.matmul(&x, &t)
            }
        };
    }
    g.output(&x, "y", DType::F32, &[ROWS.into(), k.into()]);
    g.finish()?;
    Ok((path, bytes))
}

/// `s_i = q·K_i`, `o_i = P·V_i` for `layers` caches of `c` positions in `form`.
fn attention(dir: &Path, layers: usize, c: usize, form: CacheForm) -> Result<std::path::PathBuf> {
    let (_, kv, g_, hd) = ATTENTION;
    let path = dir.join(format!("attention_{c}_{form:?}.onnx"));
    let mut g = GraphBuilder::create(&path, "attention")?;
    let dims = |d: [usize; 4]| d.map(Dim::from);
    let q = g.input("q", DType::F32, &dims([ROWS, kv, g_, hd]));
    let p = g.input("p", DType::F32, &dims([ROWS, kv, g_, c]));
    let cache = if form == CacheForm::F32 { DType::F32 } else { DType::F16 };
    let (q, p) = match form {
        CacheForm::F16Products => (g.cast(&q, DType::F16), g.cast(&p, DType::F16)),
        _ => (q, p),
    };
    for i in 0..layers {
        let k = g.input(&format!("k{i}"), cache, &dims([ROWS, kv, hd, c]));
        let v = g.input(&format!("v{i}"), cache, &dims([ROWS, kv, c, hd]));
        let (k, v): (Value, Value) = match form {
            CacheForm::F16Cast => (g.cast(&k, DType::F32), g.cast(&v, DType::F32)),
            _ => (k, v),
        };
        let (mut s, mut o) = (g.matmul(&q, &k), g.matmul(&p, &v));
        if form == CacheForm::F16Products {
            (s, o) = (g.cast(&s, DType::F32), g.cast(&o, DType::F32));
        }
        g.output(&s, &format!("s{i}"), DType::F32, &dims([ROWS, kv, g_, c]));
        g.output(&o, &format!("o{i}"), DType::F32, &dims([ROWS, kv, g_, hd]));
    }
    g.finish()?;
    Ok(path)
}

fn open(rt: &heart_backend::OrtRuntime, path: &Path, threads: usize) -> Result<Session> {
    let mut builder = Session::builder(&rt.env)?
        .with_operators(heart_backend::int4_op::domain()?)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_intra_threads(threads)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(heart_backend::int4_op::creating_session(|| {
        builder.commit_from_file(path)
    })?)
}

fn f32_tensor(dims: &[usize], data: &[f32]) -> Result<DynValue> {
    Ok(Tensor::from_array((dims.to_vec(), data.to_vec()))?.into_dyn())
}

fn f16_tensor(dims: &[usize], data: &[f16]) -> Result<DynValue> {
    Ok(Tensor::from_array((dims.to_vec(), data.to_vec()))?.into_dyn())
}

/// Runs `s` on `feeds` (built once, outside the timing); every output must
/// be finite.
fn run(s: &mut Session, feeds: &[(String, DynValue)]) -> Result<()> {
    let inputs: Vec<(&str, SessionInputValue<'_>)> = feeds.iter().map(|(n, v)| (n.as_str(), v.into())).collect();
    let out = s.run(inputs)?;
    for (name, v) in out.iter() {
        let (_, data) = v.try_extract_tensor::<f32>()?;
        ensure!(data.iter().all(|x| x.is_finite()), "output {name} is not finite");
    }
    Ok(())
}

/// The fastest of `repeats` timed calls of `f` (after one warm-up), seconds.
fn fastest(repeats: usize, what: &str, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let stats = time_repeats(Repeats::new(1, repeats), || {
        f().map_err(|e| BenchError::engine(what, e))
    })?;
    Ok(stats.min)
}
