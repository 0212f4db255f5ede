//! PNG plots of an A/B report: pure functions from the report's numbers to
//! PNG bytes, written beside `report.md` by [`AbReport::write`].
//!
//! - [`PER_LAYER_ERROR`]: mean and worst relative error of every layer's
//!   residual stream, backbone then decoder, on a log axis (engines with taps).
//! - [`CODEBOOK_AGREEMENT`]: teacher-forced top-1 agreement per codebook, bars,
//!   with the gate's limit when it sets one.
//! - [`GREEDY_AGREEMENT`]: free-running greedy, the fraction of prompts whose
//!   frame *i* is identical in both engines.
//!
//! Drawing uses plotters' bitmap backend into an RGB buffer, encoded by the
//! `png` crate. Text goes through plotters' `ab_glyph` feature with DejaVu
//! Sans embedded from the `dejavu` crate (its licence ships in that crate),
//! so no system font, fontconfig or freetype is needed on the machine.

use std::error::Error;
use std::sync::OnceLock;

use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{AbReport, CodebookStats, LayerErrors};

/// File name of the per-layer relative error plot.
pub const PER_LAYER_ERROR: &str = "per_layer_error.png";
/// File name of the per-codebook top-1 agreement plot.
pub const CODEBOOK_AGREEMENT: &str = "codebook_agreement.png";
/// File name of the greedy agreement-by-frame plot.
pub const GREEDY_AGREEMENT: &str = "greedy_agreement.png";
/// Width and height of every plot, pixels.
pub const SIZE: (u32, u32) = (960, 540);

/// The font family every text of the plots is drawn with.
const FONT: &str = "sans-serif";
const BACKBONE: RGBColor = RGBColor(31, 119, 180);
const DECODER: RGBColor = RGBColor(255, 127, 14);
const FAILING: RGBColor = RGBColor(214, 39, 40);
const GRID: RGBColor = RGBColor(225, 225, 225);

/// A plot could not be drawn or encoded.
#[derive(Debug, thiserror::Error)]
#[error("plot {file}: {reason}")]
pub struct PlotError {
    /// The plot's file name.
    pub file: &'static str,
    /// What failed.
    pub reason: String,
}

/// One rendered plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// File name inside the report folder.
    pub file: &'static str,
    /// What it shows (the Markdown image's alt text).
    pub title: &'static str,
    /// The PNG file's bytes.
    pub png: Vec<u8>,
}

/// Every plot the report has data for: the per-layer plot only when both
/// engines had layer taps, the greedy plot only when frames were compared.
pub fn render(report: &AbReport) -> Result<Vec<Plot>, PlotError> {
    let versus = format!("{} vs {}", report.b_profile, report.a_profile);
    let mut plots = Vec::new();
    if let Some(layers) = report
        .layers
        .as_ref()
        .filter(|l| !l.backbone.is_empty() || !l.decoder.is_empty())
    {
        plots.push(Plot {
            file: PER_LAYER_ERROR,
            title: "per-layer relative error of the hidden states",
            png: layer_error_png(layers, &versus)?,
        });
    }
    let gate = report.gate.as_deref().zip(
        report
            .checks
            .iter()
            .find(|c| c.key == "min_top1_agreement")
            .map(|c| c.limit),
    );
    plots.push(Plot {
        file: CODEBOOK_AGREEMENT,
        title: "per-codebook top-1 agreement (teacher-forced)",
        png: codebook_agreement_png(&report.codebooks, gate, &versus)?,
    });
    if !report.greedy.per_frame.is_empty() {
        plots.push(Plot {
            file: GREEDY_AGREEMENT,
            title: "free-running greedy agreement by frame",
            png: greedy_agreement_png(&report.greedy.per_frame, &versus)?,
        });
    }
    Ok(plots)
}

/// Per-layer relative error: mean (solid, dots) and worst frame (thin) of each
/// layer, backbone layers `b0…` then decoder layers `d0…`, log y axis with a
/// free decade on top for the legend. Exact zeros are drawn one decade below
/// the smallest non-zero error.
pub fn layer_error_png(layers: &LayerErrors, versus: &str) -> Result<Vec<u8>, PlotError> {
    let nb = layers.backbone.len();
    let all: Vec<_> = layers.backbone.iter().chain(&layers.decoder).collect();
    let (floor, top) = log_range(all.iter().flat_map(|s| [s.mean, s.max]));
    let shown = |v: f64| v.max(floor);
    let series = |from: usize, n: usize, pick: fn(&super::metrics::Summary) -> f64| {
        (from..from + n)
            .map(|i| (i as f64, shown(pick(all[i]))))
            .collect::<Vec<_>>()
    };
    let has_zero = all.iter().any(|s| s.mean <= 0.0);
    let desc = if has_zero {
        format!("layer (b = backbone, d = decoder); exact zeros drawn at {floor:.0e}")
    } else {
        "layer (b = backbone, d = decoder)".to_string()
    };
    let caption = format!("Per-layer hidden-state relative error, {versus}");
    draw(PER_LAYER_ERROR, |root| {
        let mut chart = chart_builder(root, &caption, 80)
            // A little below the floor, so that the floor's decade is labelled.
            .build_cartesian_2d(-0.5..all.len() as f64 - 0.5, (floor * 0.9..top).log_scale())?;
        let label = |x: &f64| layer_label(*x, nb, all.len());
        styled(&mut chart.configure_mesh())
            .x_labels(all.len().min(32))
            .x_label_formatter(&label)
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .x_desc(desc)
            .y_desc("relative error ‖h_B − h_A‖ / ‖h_A‖")
            .draw()?;
        let stacks = [
            ("backbone", BACKBONE, 0, nb),
            ("decoder", DECODER, nb, layers.decoder.len()),
        ];
        for (name, color, from, n) in stacks.into_iter().filter(|s| s.3 > 0) {
            let mean = series(from, n, |s| s.mean);
            let worst = series(from, n, |s| s.max);
            chart
                .draw_series(LineSeries::new(mean.clone(), color.stroke_width(2)))?
                .label(format!("{name}: mean over frames"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(mean.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            chart
                .draw_series(LineSeries::new(worst, color.mix(0.45).stroke_width(1)))?
                .label(format!("{name}: worst frame"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.mix(0.45)));
        }
        if nb > 0 && nb < all.len() {
            let x = nb as f64 - 0.5;
            chart.draw_series(std::iter::once(PathElement::new(
                [(x, floor), (x, top)],
                BLACK.mix(0.4),
            )))?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

/// Teacher-forced top-1 agreement of each codebook as bars with their value;
/// with a gate's limit (`(gate name, limit)`), the limit as a line and the
/// bars below it in red.
pub fn codebook_agreement_png(
    codebooks: &[CodebookStats],
    gate: Option<(&str, f64)>,
    versus: &str,
) -> Result<Vec<u8>, PlotError> {
    let n = codebooks.len() as i32;
    let limit = gate.map(|(_, l)| l);
    let caption = format!("Per-codebook top-1 agreement (teacher-forced), {versus}");
    draw(CODEBOOK_AGREEMENT, |root| {
        let mut chart = chart_builder(root, &caption, 64)
            // Integer ranges are inclusive: segments 0..=n-1.
            .build_cartesian_2d((0..(n - 1).max(0)).into_segmented(), 0.0..1.2)?;
        let label = |x: &SegmentValue<i32>| match x {
            SegmentValue::CenterOf(k) => k.to_string(),
            _ => String::new(),
        };
        styled(&mut chart.configure_mesh())
            .disable_x_mesh()
            .x_labels(codebooks.len().max(1))
            .x_label_formatter(&label)
            .y_labels(12)
            .y_label_formatter(&unit_label)
            .x_desc("codebook (0 = backbone head, 1… = decoder heads)")
            .y_desc("fraction of frames with the same argmax")
            .draw()?;
        // The limit first, so the bars and their values are drawn over it.
        if let Some((name, l)) = gate {
            let line = [(SegmentValue::Exact(0), l), (SegmentValue::Last, l)];
            chart
                .draw_series(std::iter::once(PathElement::new(line, FAILING.stroke_width(2))))?
                .label(format!("gate {name}: worst codebook at least {l}"))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], FAILING.stroke_width(2)));
            legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
        let color = |v: f64| {
            if limit.is_some_and(|l| v < l) {
                FAILING
            } else {
                BACKBONE
            }
        };
        chart.draw_series(codebooks.iter().map(|c| {
            let k = c.codebook as i32;
            let v = c.top1_agreement;
            let mut bar = Rectangle::new(
                [(SegmentValue::Exact(k), 0.0), (SegmentValue::Exact(k + 1), v)],
                color(v).filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        }))?;
        let value_style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(codebooks.iter().map(|c| {
            let at = (SegmentValue::CenterOf(c.codebook as i32), c.top1_agreement + 0.01);
            Text::new(format!("{:.3}", c.top1_agreement), at, value_style.clone())
        }))?;
        Ok(())
    })
}

/// Free-running greedy runs: the fraction of prompts whose frame `i` is the
/// same in both engines, by frame.
pub fn greedy_agreement_png(per_frame: &[f64], versus: &str) -> Result<Vec<u8>, PlotError> {
    let points: Vec<(f64, f64)> = per_frame.iter().enumerate().map(|(i, &v)| (i as f64, v)).collect();
    let caption = format!("Free-running greedy: identical frames, {versus}");
    let last = per_frame.len().saturating_sub(1).max(1) as f64;
    draw(GREEDY_AGREEMENT, |root| {
        let mut chart = chart_builder(root, &caption, 64).build_cartesian_2d(-0.5..last + 0.5, -0.05..1.1)?;
        styled(&mut chart.configure_mesh())
            .x_labels(per_frame.len().clamp(2, 20))
            .x_label_formatter(&|x| whole(*x).map_or_else(String::new, |i| i.to_string()))
            .y_label_formatter(&unit_label)
            .x_desc("frame")
            .y_desc("fraction of prompts with identical frame")
            .draw()?;
        chart.draw_series(LineSeries::new(points.clone(), BACKBONE.stroke_width(2)))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, BACKBONE.filled())))?;
        Ok(())
    })
}

/// Draws with `paint` on a white canvas of [`SIZE`] and encodes it as PNG.
fn draw<F>(file: &'static str, paint: F) -> Result<Vec<u8>, PlotError>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), Box<dyn Error>>,
{
    let failed = |reason: String| PlotError { file, reason };
    register_font().map_err(failed)?;
    let (w, h) = SIZE;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        let painted = root
            .fill(&WHITE)
            .map_err(Box::<dyn Error>::from)
            .and_then(|()| paint(&root))
            .and_then(|()| root.present().map_err(Box::<dyn Error>::from));
        painted.map_err(|e| failed(e.to_string()))?;
    }
    encode_png(&rgb, SIZE).map_err(|e| failed(format!("PNG encoding: {e}")))
}

/// 8-bit RGB pixels as a PNG file.
fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

/// Registers DejaVu Sans as [`FONT`] once per process (every text is in its
/// normal style, the fallback for any other).
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the embedded DejaVu Sans font does not parse".to_string())
        })
        .clone()
}

/// A chart on `root` with the plots' caption, margins and label areas.
fn chart_builder<'a, 'b, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    caption: &str,
    y_label_area: u32,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(caption, (FONT, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(y_label_area);
    builder
}

/// The plots' grid and label styles on a mesh.
fn styled<'m, 'a, 'b, X: Ranged, Y: Ranged, DB: DrawingBackend>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB> {
    mesh.light_line_style(WHITE)
        .bold_line_style(GRID)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
}

/// A legend box in the given corner.
fn legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>, at: SeriesLabelPosition) -> Result<(), Box<dyn Error>>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(at)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.5))
        .draw()?;
    Ok(())
}

/// A log axis range spanning whole decades around the positive `values`:
/// from one decade below the smallest (where zeros are drawn) to one decade
/// above the decade at or above the largest (room for the legend);
/// `1e-12..1e-10` when none is positive.
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let positive: Vec<f64> = values.filter(|v| *v > 0.0 && v.is_finite()).collect();
    let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = positive.iter().copied().fold(0.0, f64::max);
    if positive.is_empty() {
        return (1e-12, 1e-10);
    }
    let floor = 10f64.powf(lo.log10().floor() - 1.0);
    let top = 10f64.powf(hi.log10().ceil() + 1.0).max(floor * 100.0);
    (floor, top)
}

/// A fraction's axis label; none above 1.
fn unit_label(y: &f64) -> String {
    if *y <= 1.0 + 1e-9 {
        format!("{y:.1}")
    } else {
        String::new()
    }
}

/// `x` when it is a whole number (axis positions of layers and frames).
fn whole(x: f64) -> Option<usize> {
    (x >= 0.0 && (x - x.round()).abs() < 1e-6).then(|| x.round() as usize)
}

/// `b{i}` for backbone layer positions, `d{i}` for decoder ones.
fn layer_label(x: f64, backbone: usize, total: usize) -> String {
    match whole(x) {
        Some(i) if i < backbone => format!("b{i}"),
        Some(i) if i < total => format!("d{}", i - backbone),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::metrics::Summary;
    use super::super::report::GreedyStats;
    use super::*;

    fn summary(mean: f64) -> Summary {
        Summary {
            count: 4,
            mean,
            min: mean / 2.0,
            max: mean * 2.0,
        }
    }

    /// A report shaped like the full model's: 28 backbone and 3 decoder
    /// layers (the first backbone layer exact), 8 codebooks, 32 greedy frames.
    fn full_shaped(layer_taps: bool) -> AbReport {
        AbReport {
            a: "engines/fp16".into(),
            b: "engines/fp4".into(),
            a_profile: "fp16".into(),
            b_profile: "fp4".into(),
            same_checkpoint: true,
            prompts_sha256: String::new(),
            prompts: 4,
            skipped: vec![],
            frames: 128,
            codebooks: (0..8)
                .map(|k| CodebookStats {
                    codebook: k,
                    cosine: summary(0.99),
                    kl: summary(0.01),
                    top1_agreement: 1.0 - 0.04 * k as f64,
                })
                .collect(),
            hidden_rel_error: summary(0.05),
            layers: layer_taps.then(|| LayerErrors {
                backbone: (0..28)
                    .map(|l| summary(if l == 0 { 0.0 } else { 1e-3 * 1.15f64.powi(l) }))
                    .collect(),
                decoder: (0..3).map(|l| summary(0.02 + 0.01 * f64::from(l))).collect(),
            }),
            greedy: GreedyStats {
                agreement: 0.5,
                identical_prompts: 1,
                first_divergence: summary(10.0),
                per_frame: (0..32).map(|i| if i < 10 { 1.0 } else { 0.25 }).collect(),
            },
            audio_snr_db: None,
            audio_identical: 0,
            budget: None,
            relative_to_fp8: None,
            audio_log_mel_db: None,
            audio_mr_stft: None,
            gate: None,
            checks: vec![],
            pass: true,
        }
    }

    /// Width and height from the PNG signature and IHDR chunk.
    fn png_size(png: &[u8]) -> (u32, u32) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
        (be(16), be(20))
    }

    #[test]
    fn render_draws_every_plot_the_report_has_data_for() {
        let plots = render(&full_shaped(true)).unwrap();
        let files: Vec<_> = plots.iter().map(|p| p.file).collect();
        assert_eq!(files, [PER_LAYER_ERROR, CODEBOOK_AGREEMENT, GREEDY_AGREEMENT]);
        for p in &plots {
            assert_eq!(png_size(&p.png), SIZE, "{}", p.file);
        }
        let mut untapped = full_shaped(false);
        untapped.greedy.per_frame.clear();
        let files: Vec<_> = render(&untapped).unwrap().iter().map(|p| p.file).collect();
        assert_eq!(files, [CODEBOOK_AGREEMENT], "no layer taps, no greedy frames");
    }

    #[test]
    fn log_range_spans_whole_decades_below_the_smallest_error() {
        let (floor, top) = log_range([0.0, 3e-4, 0.02].into_iter());
        assert!(
            (floor - 1e-5).abs() < 1e-18 && (top - 1.0).abs() < 1e-15,
            "{floor} {top}"
        );
        assert_eq!(log_range([0.0, 0.0].into_iter()), (1e-12, 1e-10));
        let (floor, top) = log_range([0.5].into_iter());
        assert!(
            (floor - 0.01).abs() < 1e-15 && (top - 10.0).abs() < 1e-14,
            "{floor} {top}"
        );
    }

    #[test]
    fn layer_labels_name_the_stack() {
        let labels: Vec<_> = [0.0, 2.0, 3.0, 4.0, 5.0, 2.5].map(|x| layer_label(x, 3, 5)).into();
        assert_eq!(labels, ["b0", "b2", "d0", "d1", "", ""]);
    }
}
