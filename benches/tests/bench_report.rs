//! Engine identity from a real manifest, and the header lines of a full record.

use heart::config::{MulaConfig, RawMulaConfig};
use heart::manifest::{EngineKind, Manifest, describe_file, sha256_bytes};
use heart::precision::Precision;
use heart_bench::peak::PeakFlops;
use heart_bench::report::files_hash;
use heart_bench::{BenchRecord, EngineIdentity, MachineInfo, StreamResult};

fn manifest(dir: &std::path::Path) -> Manifest {
    std::fs::write(dir.join("backbone.onnx"), b"backbone graph").unwrap();
    std::fs::write(dir.join("decoder.onnx"), b"decoder").unwrap();
    let raw: RawMulaConfig = serde_json::from_value(serde_json::json!({
        "backbone_flavor": "llama-3B", "decoder_flavor": "llama-300M", "text_vocab_size": 128256,
        "audio_vocab_size": 8197, "audio_num_codebooks": 8, "muq_dim": 512
    }))
    .unwrap();
    Manifest {
        codec_precision: Some(Precision::Fp32),
        ..heart_test_support::manifest(
            MulaConfig::resolve(raw).unwrap(),
            heart_test_support::gen_config_3b(),
            Precision::Fp16,
            vec![
                describe_file(dir, "decoder.onnx", EngineKind::Decoder, Some(Precision::Fp16)).unwrap(),
                describe_file(dir, "backbone.onnx", EngineKind::Backbone, Some(Precision::Fp16)).unwrap(),
            ],
        )
    }
}

#[test]
fn identity_comes_from_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path());
    let id = EngineIdentity::from_manifest(&m);
    assert_eq!(
        (id.precision, id.codec_precision),
        (Precision::Fp16, Some(Precision::Fp32))
    );
    assert_eq!(
        (id.backbone_flavor.as_str(), id.decoder_flavor.as_str()),
        ("llama-3B", "llama-300M")
    );
    assert_eq!((id.files, id.bytes), (2, 14 + 7));
    // Sorted by path, each line "<path> <sha256>".
    let canonical = format!(
        "backbone.onnx {}\ndecoder.onnx {}\n",
        sha256_bytes(b"backbone graph"),
        sha256_bytes(b"decoder")
    );
    assert_eq!(id.files_hash, sha256_bytes(canonical.as_bytes())[..16]);
    assert_eq!(id.files_hash, files_hash(&m.files));
}

#[test]
fn full_record_renders_its_header_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut record = BenchRecord::new(MachineInfo {
        cpu_model: Some("Test CPU".into()),
        logical_cores: 2,
        total_memory_bytes: None,
        os: "linux".into(),
        os_release: None,
        arch: "x86_64".into(),
        load_average: None,
    });
    record.engine = Some(EngineIdentity::from_manifest(&manifest(dir.path())));
    record.bandwidth = Some(StreamResult {
        read_gb_s: 20.3,
        copy_gb_s: 15.0,
        triad_gb_s: 16.5,
        array_bytes: 178_956_970,
        threads: 2,
        repeats: 5,
    });
    record.peak = Some(PeakFlops {
        gflop_s: 250.0,
        isa: "avx512f".into(),
        threads: 2,
    });
    let table = record.render_table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "machine:   Test CPU, 2 cores, unknown memory, linux x86_64");
    let hash = &record.engine.as_ref().unwrap().files_hash;
    assert_eq!(
        lines[1],
        format!("engine:    fp16 llama-3B + llama-300M, codec fp32, 2 files, 0.00 GB, files {hash}")
    );
    assert_eq!(
        lines[2],
        "bandwidth: read 20.3 GB/s, copy 15.0 GB/s, triad 16.5 GB/s (3 x 171 MiB, 2 threads, best of 5)"
    );
    assert_eq!(lines[3], "peak:      250.0 GFLOP/s f32 (avx512f, 2 threads)");
    // No rows: no table.
    assert_eq!(lines.len(), 4);

    let json: serde_json::Value = serde_json::from_str(&record.to_json().unwrap()).unwrap();
    assert_eq!(json["engine"]["precision"], "fp16");
    assert_eq!(json["engine"]["files_hash"], hash.as_str());
    assert_eq!(json["bandwidth"]["read_gb_s"], 20.3);
    assert_eq!(json["peak"]["isa"], "avx512f");
}
