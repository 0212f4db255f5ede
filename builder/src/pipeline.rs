//! The engine build: resolve → validate → export graphs → hash → manifest →
//! atomic rename, with a readable summary at the end.

use std::path::Path;
use std::time::Instant;

use crate::error::{BuildError, Context, Result};
use heart::engine::kind_of_file;
use heart::layout::{CodecCheckpoint, MulaCheckpoint};
use heart::manifest::{self, FORMAT_VERSION, FileEntry, InputEntry, Manifest, Target};
use heart::precision::Precision;
use onnx_export::external::WrittenFile;

use crate::atomic::AtomicDir;
use crate::bytes_bar;
use crate::calibrate;
use crate::cli::{BuildArgs, BuildTarget};
use crate::draft;
use crate::profile::Profile;
use crate::simulate::Simulation;

/// Runs `heart-build` with `args`.
pub fn run(args: &BuildArgs, quiet: bool) -> Result<()> {
    let profile = check_precisions(args)?;
    build(args, &profile, None, quiet)
}

/// Builds `args` with the resolved `profile`; a `simulation` takes its
/// activation scales from the simulated engine instead of a calibration run.
pub fn build(args: &BuildArgs, profile: &Profile, simulation: Option<&Simulation>, quiet: bool) -> Result<()> {
    let precision = profile.precision;
    let gpu = crate::tensorrt::preflight(args.target)?;
    let trt_rtx = match args.target {
        BuildTarget::TensorrtRtx => Some(crate::trt_rtx::locate(args.trt_rtx.as_deref())?),
        BuildTarget::Onnx | BuildTarget::Tensorrt => None,
    };
    let form = args.target.form();
    let start = Instant::now();
    let mula = MulaCheckpoint::discover_and_open(
        &args.input.mula,
        args.input.tokenizer.as_deref(),
        args.input.gen_config.as_deref(),
    )
    .context("loading the HeartMuLa checkpoint")?;
    let codec = args
        .input
        .codec
        .as_deref()
        .map(CodecCheckpoint::discover_and_open)
        .transpose()
        .context("loading the HeartCodec checkpoint")?;
    let draft_plan = draft::plan(&args.draft(), precision, &mula.config)?;
    // Refuse what the graph form cannot express before any export work.
    profile
        .options
        .clone()
        .in_form(form)
        .with_context(|| format!("profile `{}` in the {form} graph form", profile.entry.name))?;
    if trt_rtx.is_some() {
        args.gpu_arch.check_precision(precision, "--precision")?;
        if let Some(plan) = &draft_plan {
            args.gpu_arch.check_precision(plan.precision, "--draft-precision")?;
        }
    }
    if let Some(plan) = &draft_plan {
        onnx_export::lm::LmOptions::for_precision(plan.precision)
            .in_form(form)
            .with_context(|| format!("the draft ({plan}) in the {form} graph form"))?;
    }
    let loaded = start.elapsed();

    let out = AtomicDir::new(&args.out, args.force)?;
    let dir = out.path();
    let stage = |what: &str| {
        if !quiet {
            eprintln!("{what}");
        }
    };
    if profile.calibration.is_some() {
        stage("calibrating activation scales on the fp32 model");
    }
    let bar = crate::count_bar(quiet || profile.calibration.is_none(), "calibrate");
    let lm = match simulation {
        Some(sim) => crate::simulate::prepare(sim, args.layer_taps, dir)?,
        None => calibrate::prepare(
            profile,
            args.calibration.as_deref(),
            args.layer_taps,
            &mula,
            dir,
            &|i, n| {
                bar.set_length(n as u64);
                bar.set_position(i as u64);
            },
        )?,
    };
    bar.finish_and_clear();
    let options = lm
        .options
        .in_form(form)
        .with_context(|| format!("profile `{}` for --target {}", profile.entry.name, form))?;
    stage(&format!(
        "exporting HeartMuLa graphs (profile {}, {form} form)",
        profile.entry.name
    ));
    let mut written = onnx_export::lm::export_lm_with(&mula.checkpoint, &mula.config, &options, dir)
        .context("exporting the HeartMuLa graphs")?
        .files;
    written.extend(
        onnx_export::frame::export_frame(
            &mula.checkpoint,
            &mula.config,
            &options,
            &dir.join(heart::engine::FRAME_GRAPH),
        )
        .context("exporting the frame graph")?,
    );
    written.extend(lm.stats_file);
    if let Some(plan) = &draft_plan {
        stage(&format!("exporting the speculative-decoding draft ({plan})"));
        written.extend(draft::export(&mula.checkpoint, &mula.config, plan, form, dir)?);
    }
    if let Some(codec) = &codec {
        stage(&format!("exporting HeartCodec graphs ({})", args.codec_precision));
        written.extend(
            onnx_export::codec::export_codec(&codec.checkpoint, &codec.config, args.codec_precision, dir)
                .context("exporting the HeartCodec graphs")?,
        );
    }
    let tokenizer_dst = dir.join(heart::engine::TOKENIZER);
    std::fs::copy(&mula.paths.tokenizer, &tokenizer_dst)
        .with_context(|| format!("copying {}", mula.paths.tokenizer.display()))?;
    written.push(WrittenFile {
        bytes: std::fs::metadata(&tokenizer_dst)
            .with_context(|| format!("reading {}", tokenizer_dst.display()))?
            .len(),
        path: tokenizer_dst,
    });
    let target = match &gpu {
        Some(gpu) => {
            let set = crate::tensorrt::EngineSet {
                model: &mula.config,
                codec: codec.as_ref().map(|c| &c.config),
                lm: precision,
                codec_precision: args.codec_precision,
            };
            let (target, engines) = crate::tensorrt::build(gpu, dir, &set, quiet)?;
            written.extend(engines);
            target
        }
        None => match &trt_rtx {
            Some(env) => {
                let draft_config = draft_plan.as_ref().map(|p| draft::config(&mula.config, p));
                let jobs = crate::trt_rtx::jobs(&mula.config, codec.as_ref().map(|c| &c.config), draft_config.as_ref());
                let (target, engines) = crate::trt_rtx::build(env, args.gpu_arch, dir, &jobs, quiet)?;
                written.extend(engines);
                target
            }
            None => Target::Onnx,
        },
    };
    let exported = start.elapsed() - loaded;

    stage("hashing build inputs and engine files");
    let mut input_files = vec![
        ("mula_config", mula.paths.config.clone()),
        ("tokenizer", mula.paths.tokenizer.clone()),
        ("gen_config", mula.paths.gen_config.clone()),
    ];
    input_files.extend(mula.checkpoint.files().map(|p| ("mula_weights", p.to_path_buf())));
    if let Some(c) = &codec {
        input_files.push(("codec_config", c.paths.config.clone()));
        input_files.extend(c.checkpoint.files().map(|p| ("codec_weights", p.to_path_buf())));
    }
    let total: u64 = input_files
        .iter()
        .filter_map(|(_, p)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum::<u64>()
        + written.iter().map(|w| w.bytes).sum::<u64>();
    let bar = bytes_bar(total, quiet, "hash");
    let inputs = input_files
        .iter()
        .map(|(role, path)| {
            let entry = hash_input(role, path)?;
            bar.inc(entry.size);
            Ok(entry)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut files = written
        .iter()
        .map(|w| {
            let entry = describe(dir, w, precision, args.codec_precision)?;
            bar.inc(entry.size);
            Ok(entry)
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(plan) = &draft_plan {
        draft::record_precision(&mut files, plan);
    }
    bar.finish_and_clear();

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        heart_version: env!("CARGO_PKG_VERSION").to_string(),
        target,
        precision,
        codec_precision: codec.as_ref().map(|_| args.codec_precision),
        model: mula.config.clone(),
        gen_config: mula.gen_config,
        codec: codec.as_ref().map(|c| c.config.clone()),
        build_profile: Some(profile.entry.clone()),
        calibration: lm.entry,
        inputs,
        files,
    };
    manifest.write(dir)?;
    let engine_bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    let n_files = manifest.files.len() + 1;
    let final_dir = out.commit()?;
    if !quiet {
        println!(
            "Built {} ({} LM{}) in {:.1} s: {} files, {:.1} MB",
            final_dir.display(),
            precision,
            codec
                .as_ref()
                .map(|_| format!(", {} codec", args.codec_precision))
                .unwrap_or_default(),
            start.elapsed().as_secs_f64(),
            n_files,
            engine_bytes as f64 / 1e6
        );
        println!(
            "  load + validate {:.1} s, export {:.1} s; peak memory {}",
            loaded.as_secs_f64(),
            exported.as_secs_f64(),
            heart_runtime::mem::peak_rss_bytes()
                .map(|b| format!("{:.0} MB", b as f64 / 1e6))
                .unwrap_or_else(|| "n/a".into())
        );
        if let Some(plan) = &draft_plan {
            println!("  speculative-decoding draft in draft/ ({plan})");
        }
        if codec.is_none() {
            println!("  no --codec given: this folder can generate codes but not audio");
        }
    }
    Ok(())
}

/// Resolves the build profile and checks the flags that depend on it.
fn check_precisions(args: &BuildArgs) -> Result<Profile> {
    let profile = Profile::resolve(args.profile.as_deref(), args.precision)?;
    if !matches!(
        args.codec_precision,
        Precision::Fp32 | Precision::Fp16 | Precision::Int8
    ) {
        return Err(BuildError::Request(format!(
            "--codec-precision {}: the codec is built at fp32, fp16 or int8 only",
            args.codec_precision
        )));
    }
    if args.codec_precision == Precision::Int8 && args.target != crate::cli::BuildTarget::Onnx {
        return Err(BuildError::Request(
            "--codec-precision int8 is a CPU precision (dynamic int8 MatMulInteger, which TensorRT does not \
             build): use fp16 or fp32 with --target tensorrt"
                .into(),
        ));
    }
    if args.calibration.is_some() && profile.calibration.is_none() {
        return Err(BuildError::Request(format!(
            "--calibration: profile `{}` quantizes no activations, so it is built without calibration",
            profile.entry.name
        )));
    }
    Ok(profile)
}

fn hash_input(role: &str, path: &Path) -> Result<InputEntry> {
    Ok(InputEntry {
        role: role.to_string(),
        path: path.display().to_string(),
        size: std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len(),
        sha256: manifest::sha256_file(path)?,
    })
}

fn describe(dir: &Path, file: &WrittenFile, lm: Precision, codec: Precision) -> Result<FileEntry> {
    let relative = file
        .path
        .strip_prefix(dir)
        .map_err(|_| BuildError::Unlisted(format!("{} was written outside the engine folder", file.path.display())))?
        .to_string_lossy()
        .into_owned();
    let kind =
        kind_of_file(&relative).ok_or_else(|| BuildError::Unlisted(format!("unknown engine file `{relative}`")))?;
    Ok(manifest::describe_file(
        dir,
        &relative,
        kind,
        kind.precision(lm, codec),
    )?)
}
