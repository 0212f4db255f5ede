//! The report folder: `report.json`, `report.md` and the PNG plots, written
//! together so both reports name the plots beside them.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::EvalError;
use crate::plots::{self, Plot};
use crate::report::AbReport;

/// Writes `report.json`, `report.md` and the PNG plots of `report` into
/// `dir` (created if needed).
pub fn write_report(report: &AbReport, dir: &Path) -> Result<(), EvalError> {
    let io = |path: &Path, e: std::io::Error| EvalError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let plots = plots::render(report)?;
    for plot in &plots {
        let path = dir.join(plot.file);
        std::fs::write(&path, &plot.png).map_err(|e| io(&path, e))?;
    }
    let json = dir.join("report.json");
    let written = Written {
        report,
        plots: plots.iter().map(|p| p.file).collect(),
    };
    let text = serde_json::to_string_pretty(&written).map_err(|e| EvalError::Input(e.to_string()))?;
    std::fs::write(&json, text).map_err(|e| io(&json, e))?;
    let md = dir.join("report.md");
    std::fs::write(&md, report.markdown() + &plots_markdown(&plots)).map_err(|e| io(&md, e))
}

/// `report.json`: the report with the plot files written beside it.
#[derive(Serialize)]
struct Written<'a> {
    #[serde(flatten)]
    report: &'a AbReport,
    plots: Vec<&'static str>,
}

/// The plots section of `report.md`: one Markdown image per plot.
fn plots_markdown(plots: &[Plot]) -> String {
    let mut s = String::from("\n## plots\n");
    for p in plots {
        let _ = write!(s, "\n![{}]({})\n", p.title, p.file);
    }
    s
}
