//! heart-run through the frame graph against the same engine folder without
//! it (the per-step graphs, as engines built before `frame.onnx` existed):
//! the same seed gives the same WAV bytes, greedy and sampled, with and
//! without guidance.

use std::path::Path;

use heart::engine::{FRAME_GRAPH, GRAPH_DATA_SUFFIX};
use heart::manifest::{EngineKind, Manifest, Verify};
use heart_test_support::{run, synth_tiny_engines};

/// A copy of engine folder `from` at `to` without the frame graph (files and
/// manifest entries).
fn without_frame_graph(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let stem = FRAME_GRAPH.strip_suffix(".onnx").unwrap();
    let frame_data = format!("{stem}{GRAPH_DATA_SUFFIX}");
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.file_type().unwrap().is_file() && name != FRAME_GRAPH && name != frame_data {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
    let mut manifest = Manifest::load(from, Verify::Quick).unwrap();
    let before = manifest.files.len();
    manifest.files.retain(|f| f.path != FRAME_GRAPH && f.path != frame_data);
    assert_eq!(
        before - manifest.files.len(),
        2,
        "the manifest listed the frame graph and its data"
    );
    manifest.write(to).unwrap();
}

#[test]
fn the_frame_graph_makes_the_per_step_songs_byte_for_byte() {
    let root = tempfile::tempdir().unwrap();
    let engines = synth_tiny_engines(root.path());
    let manifest = Manifest::load(&engines, Verify::Full).unwrap();
    assert_eq!(
        manifest.file(EngineKind::Frame).map(|f| f.path.as_str()),
        Some(FRAME_GRAPH),
        "heart-build lists the frame graph"
    );
    let per_step = root.path().join("per_step");
    without_frame_graph(&engines, &per_step);
    let lyrics = root.path().join("lyrics.txt");
    std::fs::write(&lyrics, "[verse]\nla la la\n[chorus]\noh oh\n").unwrap();
    let song = |folder: &Path, name: &str, extra: &[&str]| -> (Vec<u8>, u64) {
        let out = root.path().join(name);
        let mut args = vec![
            "--engines",
            folder.to_str().unwrap(),
            "--tags",
            "Piano, Happy",
            "--lyrics-file",
            lyrics.to_str().unwrap(),
            "--duration",
            "4",
            "--seed",
            "7",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = run("heart-run", &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
        (std::fs::read(&out).unwrap(), summary["frames"].as_u64().unwrap())
    };
    let runs: [&[&str]; 3] = [
        &["--topk", "50"],
        &["--topk", "1", "--cfg-scale", "1.0"],
        &["--topk", "8", "--temperature", "0.8", "--cfg-scale", "3.0"],
    ];
    for (i, extra) in runs.into_iter().enumerate() {
        let (framed, frames) = song(&engines, &format!("frame_{i}.wav"), extra);
        let (stepped, stepped_frames) = song(&per_step, &format!("step_{i}.wav"), extra);
        assert_eq!(frames, stepped_frames, "{extra:?}: frames");
        assert!(frames >= 4, "{extra:?}: a song of several frames, got {frames}");
        assert!(framed == stepped, "{extra:?}: the WAVs differ ({frames} frames)");
    }
}
