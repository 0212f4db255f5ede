//! The benchmark record: where it ran, what engine, what was measured; printed
//! as an aligned Markdown table (like `llama-bench`) or as JSON.
//!
//! A [`Row`] is one figure with its statistics over the repeats, optionally
//! with a roofline floor in the same unit and the achieved fraction of it
//! (`floor / median · 100`; 100 % = running at the floor). Rates such as
//! frames/s and the real-time factor are rows derived from a time row with
//! [`Row::rate`].

use std::fmt::Write as _;

use heart::manifest::{FileEntry, Manifest, sha256_bytes};
use heart::precision::Precision;
use serde::{Deserialize, Serialize};

use super::BenchError;
use super::machine::MachineInfo;
use super::peak::PeakFlops;
use super::speculative::SpecBench;
use super::stats::Row;
use super::stream::StreamResult;

/// Identity of the engine folder under test, from its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineIdentity {
    /// Version of heart that built the engines.
    pub heart_version: String,
    /// LM weight precision.
    pub precision: Precision,
    /// Codec weight precision, when the folder has a codec.
    pub codec_precision: Option<Precision>,
    /// Backbone flavor name.
    pub backbone_flavor: String,
    /// Decoder flavor name.
    pub decoder_flavor: String,
    /// Number of files in the folder.
    pub files: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// [`files_hash`] of the folder: equal hashes mean identical engines.
    pub files_hash: String,
}

impl EngineIdentity {
    /// The identity of the engine folder `manifest` describes.
    pub fn from_manifest(manifest: &Manifest) -> Self {
        Self {
            heart_version: manifest.heart_version.clone(),
            precision: manifest.precision,
            codec_precision: manifest.codec_precision,
            backbone_flavor: manifest.model.backbone_flavor.clone(),
            decoder_flavor: manifest.model.decoder_flavor.clone(),
            files: manifest.files.len(),
            bytes: manifest.files.iter().map(|f| f.size).sum(),
            files_hash: files_hash(&manifest.files),
        }
    }
}

/// Short hash of an engine folder's contents: the first 16 hex digits of the
/// SHA-256 of `"<path> <sha256>\n"` lines, sorted by path (order-independent).
pub fn files_hash(files: &[FileEntry]) -> String {
    let mut lines: Vec<String> = files.iter().map(|f| format!("{} {}\n", f.path, f.sha256)).collect();
    lines.sort();
    sha256_bytes(lines.concat().as_bytes())[..16].to_string()
}

/// Everything one benchmark run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRecord {
    /// Version of heart that ran the benchmark.
    pub heart_version: String,
    /// The machine.
    pub machine: MachineInfo,
    /// The engine folder, when one was benchmarked.
    pub engine: Option<EngineIdentity>,
    /// Measured memory bandwidth.
    pub bandwidth: Option<StreamResult>,
    /// Measured peak f32 FLOP/s.
    pub peak: Option<PeakFlops>,
    /// The figures, in measurement order.
    pub rows: Vec<Row>,
    /// Speculative decoding against plain decoding, when measured.
    #[serde(default)]
    pub speculation: Option<SpecBench>,
}

impl BenchRecord {
    /// An empty record for `machine`.
    pub fn new(machine: MachineInfo) -> Self {
        Self {
            heart_version: env!("CARGO_PKG_VERSION").to_string(),
            machine,
            engine: None,
            bandwidth: None,
            peak: None,
            rows: Vec::new(),
            speculation: None,
        }
    }

    /// Pretty-printed JSON (non-finite numbers become `null`).
    pub fn to_json(&self) -> Result<String, BenchError> {
        serde_json::to_string_pretty(self).map_err(|e| BenchError::Report(e.to_string()))
    }

    /// Header lines (machine, engine, bandwidth, peak) and, when there are rows,
    /// a blank line and their aligned table.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "machine:   {}", self.machine.summary());
        if let Some(e) = &self.engine {
            let codec = e.codec_precision.map_or_else(String::new, |p| format!(", codec {p}"));
            let _ = writeln!(
                out,
                "engine:    {} {} + {}{codec}, {} files, {:.2} GB, files {}",
                e.precision,
                e.backbone_flavor,
                e.decoder_flavor,
                e.files,
                e.bytes as f64 / 1e9,
                e.files_hash
            );
        }
        if let Some(b) = &self.bandwidth {
            let _ = writeln!(
                out,
                "bandwidth: read {:.1} GB/s, copy {:.1} GB/s, triad {:.1} GB/s (3 x {:.0} MiB, {} threads, best of {})",
                b.read_gb_s,
                b.copy_gb_s,
                b.triad_gb_s,
                b.array_bytes as f64 / (1u64 << 20) as f64,
                b.threads,
                b.repeats
            );
        }
        if let Some(p) = &self.peak {
            let _ = writeln!(
                out,
                "peak:      {:.1} GFLOP/s f32 ({}, {} threads)",
                p.gflop_s, p.isa, p.threads
            );
        }
        if !self.rows.is_empty() {
            out.push('\n');
            out.push_str(&render_rows(&self.rows));
        }
        if let Some(spec) = &self.speculation {
            out.push('\n');
            for r in &spec.runs {
                let rates: Vec<String> = r
                    .acceptance_per_codebook
                    .iter()
                    .map(|x| {
                        if x.is_finite() {
                            format!("{:.0}%", x * 100.0)
                        } else {
                            "-".into()
                        }
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "speculate K={}: acceptance per codebook {}; {} frames in {:.2} s (draft {:.2} s, target {:.2} \
                     s); plain {} frames in {:.2} s",
                    r.draft_frames,
                    rates.join(" "),
                    r.run.frames,
                    r.run.seconds,
                    r.draft_seconds,
                    r.target_seconds,
                    spec.plain.frames,
                    spec.plain.seconds
                );
            }
        }
        out
    }
}

/// The rows as a Markdown table (see [`render_markdown`]).
pub fn render_rows(rows: &[Row]) -> String {
    let headers = [
        "figure",
        "unit",
        "median",
        "min",
        "max",
        "p10",
        "p90",
        "n",
        "floor (% of floor)",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let s = &r.stats;
            let floor = match (r.floor, r.percent_of_floor) {
                (Some(f), Some(p)) => format!("{} ({p:.1} %)", format_value(f)),
                _ => "-".to_string(),
            };
            vec![
                r.name.clone(),
                r.unit.clone(),
                format_value(s.median),
                format_value(s.min),
                format_value(s.max),
                format_value(s.p10),
                format_value(s.p90),
                s.n.to_string(),
                floor,
            ]
        })
        .collect();
    render_markdown(&headers, &cells, 2)
}

/// A Markdown table with aligned columns: the first `text_columns` columns
/// left-aligned, the others (numbers) right-aligned. Rows shorter than the
/// header are padded with empty cells.
pub fn render_markdown(headers: &[&str], rows: &[Vec<String>], text_columns: usize) -> String {
    // At least 3 wide, so every rule has the dashes Markdown needs.
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count().max(3)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let c = cells.next().unwrap_or("");
                if i < text_columns {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&mut headers.iter().copied());
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            if i < text_columns {
                "-".repeat(w)
            } else {
                format!("{}:", "-".repeat(w - 1))
            }
        })
        .collect();
    let _ = writeln!(out, "| {} |", rule.join(" | "));
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// Four significant figures or so, without exponents for everyday magnitudes.
pub fn format_value(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        x.to_string()
    } else if a >= 100.0 || a == 0.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a >= 0.001 {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use heart::manifest::EngineKind;

    fn machine() -> MachineInfo {
        MachineInfo {
            cpu_model: Some("AMD EPYC".into()),
            logical_cores: 2,
            total_memory_bytes: Some(24 << 30),
            os: "linux".into(),
            os_release: Some("6.1".into()),
            arch: "x86_64".into(),
            load_average: None,
        }
    }

    fn record() -> BenchRecord {
        let frame = Row::millis(
            "lm frame @ pos 0",
            "ms/frame",
            Stats::from_samples(&[0.5, 0.4, 0.6]).unwrap(),
        )
        .with_floor(100.0);
        let fps = frame.rate("lm frames/s @ pos 0", "frames/s", 1e3);
        let mut r = BenchRecord::new(machine());
        r.rows = vec![frame, fps];
        r
    }

    #[test]
    fn renders_an_aligned_table() {
        let expected = "\
| figure              | unit     | median |   min |   max |   p10 |   p90 |   n | floor (% of floor) |
| ------------------- | -------- | -----: | ----: | ----: | ----: | ----: | --: | -----------------: |
| lm frame @ pos 0    | ms/frame |  500.0 | 400.0 | 600.0 | 420.0 | 580.0 |   3 |     100.0 (20.0 %) |
| lm frames/s @ pos 0 | frames/s |   2.00 |  1.67 |  2.50 |  1.72 |  2.38 |   3 |                  - |
";
        assert_eq!(render_rows(&record().rows), expected);
        let table = record().render_table();
        assert!(
            table.starts_with("machine:   AMD EPYC, 2 cores, 24.0 GiB, linux 6.1 x86_64\n\n| figure"),
            "{table}"
        );
    }

    #[test]
    fn json_has_the_documented_shape() {
        let json: serde_json::Value = serde_json::from_str(&record().to_json().unwrap()).unwrap();
        assert_eq!(json["machine"]["cpu_model"], "AMD EPYC");
        assert_eq!(json["machine"]["logical_cores"], 2);
        assert!(json["engine"].is_null() && json["bandwidth"].is_null());
        let row = &json["rows"][0];
        assert_eq!(row["name"], "lm frame @ pos 0");
        assert_eq!(row["unit"], "ms/frame");
        assert_eq!(row["n"], 3);
        assert_eq!(
            (row["median"].as_f64(), row["min"].as_f64()),
            (Some(500.0), Some(400.0))
        );
        assert_eq!(
            (row["floor"].as_f64(), row["percent_of_floor"].as_f64()),
            (Some(100.0), Some(20.0))
        );
        assert!(json["rows"][1]["floor"].is_null());
        // Reads back (floats to within JSON's shortest-round-trip printing).
        let back: BenchRecord = serde_json::from_value(json).unwrap();
        assert_eq!((&back.machine, back.rows.len()), (&machine(), 2));
        for (b, r) in back.rows.iter().zip(&record().rows) {
            assert_eq!((&b.name, &b.unit, b.stats.n), (&r.name, &r.unit, r.stats.n));
            assert!((b.stats.p10 - r.stats.p10).abs() <= 1e-12 * r.stats.p10, "{b:?}");
        }
    }

    #[test]
    fn files_hash_is_order_independent_and_content_sensitive() {
        let entry = |path: &str, sha: &str| FileEntry {
            path: path.into(),
            kind: EngineKind::Backbone,
            precision: None,
            size: 1,
            sha256: sha.into(),
        };
        let (a, b) = (entry("backbone.onnx", "aa"), entry("decoder.onnx", "bb"));
        let h = files_hash(&[a.clone(), b.clone()]);
        // sha256(b"backbone.onnx aa\ndecoder.onnx bb\n")[:16], computed with Python's hashlib.
        assert_eq!(h, "580981b0bd24dbc3");
        assert_eq!(files_hash(&[b.clone(), a.clone()]), h);
        assert_ne!(files_hash(&[a, entry("decoder.onnx", "bc")]), h);
    }

    #[test]
    fn markdown_pads_short_rows_and_aligns_numbers_right() {
        let table = render_markdown(&["name", "x"], &[vec!["a".into(), "1.5".into()], vec!["bb".into()]], 1);
        assert_eq!(
            table,
            "| name |   x |\n| ---- | --: |\n| a    | 1.5 |\n| bb   |     |\n"
        );
    }

    #[test]
    fn formats_values_by_magnitude() {
        let cases = [
            (1234.56, "1234.6"),
            (12.345, "12.35"),
            (0.01234, "0.0123"),
            (0.0, "0.0"),
            (2.5e-5, "2.500e-5"),
        ];
        for (x, s) in cases {
            assert_eq!(format_value(x), s);
        }
    }
}
