//! The machine kernels run for real on small inputs. They live in their own
//! test binary: they allocate and spin threads, which would disturb tests of
//! process-wide figures (resident memory) running beside them.

use heart_bench::{StreamConfig, peak, stream};

#[test]
fn stream_on_small_arrays_gives_positive_finite_bandwidths() {
    let r = stream::measure(StreamConfig {
        total_bytes: 3 << 20,
        threads: 2,
        repeats: 2,
    })
    .unwrap();
    for gb_s in [r.read_gb_s, r.copy_gb_s, r.triad_gb_s] {
        assert!(gb_s.is_finite() && gb_s > 0.0, "{r:?}");
    }
    assert_eq!((r.array_bytes, r.threads, r.repeats), (1 << 20, 2, 2));
}

#[test]
fn peak_on_a_short_run_gives_a_positive_finite_figure() {
    let p = peak::measure(2, 1000, 2).unwrap();
    assert!(p.gflop_s.is_finite() && p.gflop_s > 0.0, "{p:?}");
    assert_eq!(p.threads, 2);
    assert!(
        ["avx512f", "avx2+fma", "baseline"].contains(&p.isa.as_str()),
        "{}",
        p.isa
    );
}
