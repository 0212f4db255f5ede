//! `heart-run doctor`: prints [`heart_backend::doctor::Report`] as a table or JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use heart_backend::doctor::{DoctorArgs as Where, Report, diagnose};

/// Flags of `heart-run doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also check whether this engine folder runs here (its target, TensorRT-RTX
    /// release, GPU architecture and precision against this machine).
    #[arg(long, value_name = "DIR")]
    engines: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Examines the machine and prints the report.
pub fn run(args: &DoctorArgs, ort_lib: Option<&std::path::Path>, rtx_plugin: Option<&std::path::Path>) -> Result<()> {
    let report = diagnose(Where {
        ort_lib,
        rtx_plugin,
        engines: args.engines.as_deref(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn or_none<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The report as aligned `key  value` lines, grouped, gaps last.
fn table(r: &Report) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
    row(
        "cpu",
        format!(
            "{} ({}), {} cores",
            or_none(r.cpu.model.as_deref()),
            r.cpu.arch,
            r.cpu.cores
        ),
    );
    row("cpu features", r.cpu.features.join(" "));
    row(
        "onnx runtime",
        match (&r.onnx_runtime.path, &r.onnx_runtime.error) {
            (Some(p), _) => format!("{} ({})", or_none(r.onnx_runtime.version.as_deref()), p.display()),
            (None, e) => format!("not loaded: {}", or_none(e.as_deref())),
        },
    );
    row("nvidia driver", r.driver.status.clone());
    row(
        "gpu",
        match &r.gpu {
            Some(g) => format!(
                "{} (compute capability {}, {:.1} GiB{})",
                g.name,
                g.compute_capability,
                g.memory_bytes as f64 / (1u64 << 30) as f64,
                if g.tensorrt_rtx_supported {
                    ""
                } else {
                    ", not supported by TensorRT-RTX"
                }
            ),
            None => "none".into(),
        },
    );
    let rtx = &r.tensorrt_rtx;
    row(
        "tensorrt-rtx plugin",
        match &rtx.plugin {
            Some(p) => format!(
                "{} (TensorRT-RTX {})",
                p.display(),
                or_none(rtx.tensorrt_rtx_version.as_deref())
            ),
            None => "not found".into(),
        },
    );
    row("tensorrt-rtx loads", format!("{}: {}", yes(rtx.loads), rtx.status));
    row(
        "classic providers",
        format!(
            "gpu feature {}, CUDA provider {}, TensorRT provider {}, libnvinfer {}",
            yes(r.classic.gpu_feature),
            yes(r.classic.cuda_provider),
            yes(r.classic.tensorrt_provider),
            or_none(r.classic.tensorrt_version.as_deref())
        ),
    );
    if let Some(e) = &r.engines {
        row(
            "engines",
            format!(
                "{}: target {}, precision {}{}",
                e.dir.display(),
                or_none(e.target.as_deref()),
                or_none(e.precision.as_deref()),
                match (&e.tensorrt_rtx_version, &e.gpu_arch) {
                    (Some(v), Some(a)) => format!(", TensorRT-RTX {v} for {a}"),
                    _ => String::new(),
                }
            ),
        );
        row(
            "engines run here",
            match (&e.backend, &e.problem) {
                (Some(b), None) => format!("yes, on {b}"),
                (Some(b), Some(p)) => format!("on {b} only: {p}"),
                (None, p) => format!("no: {}", or_none(p.as_deref())),
            },
        );
    }
    row(
        "backend (auto)",
        format!("{} ({})", r.backend.backend, r.backend.reason),
    );
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in &rows {
        out.push_str(&format!("{k:width$}  {v}\n"));
    }
    if r.gaps.is_empty() {
        out.push_str("\nno gaps\n");
    } else {
        out.push_str(&format!("\n{} gap(s):\n", r.gaps.len()));
        for g in &r.gaps {
            out.push_str(&format!("- [{}] {}\n  fix: {}\n", g.topic, g.problem, g.fix));
        }
    }
    out
}
