//! `heart-run serve`: opens the engine folder once and hands it to
//! [`heart_serve`] on a tokio runtime until Ctrl-C (or SIGTERM).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use heart::manifest::Verify;
use heart_backend::{BackendChoice, CudaGraphs};
use heart_runtime::settings::SettingsArgs;
use heart_runtime::song::Pipeline;
use heart_serve::{Options, Service, StoreLimits};

/// Presets the service offers by name (`configs/NAME.toml`).
const PRESETS: [&str; 2] = ["speed", "quality"];

/// Flags of `heart-run serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Engine folder written by heart-build (opened once, for every song).
    #[arg(long, value_name = "DIR")]
    engines: PathBuf,
    /// Address to listen on; the default takes connections from this machine
    /// only (give 0.0.0.0:8080 to serve the network).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Songs that may wait behind the running one; one more is refused (429).
    #[arg(long, value_name = "N", default_value_t = 8)]
    max_queue: usize,
    /// Finished songs kept in memory for download (oldest dropped first).
    #[arg(long, value_name = "N", default_value_t = 20)]
    keep_songs: usize,
    /// Megabytes of finished WAVs kept in memory (a 4-minute song is 46 MB).
    #[arg(long, value_name = "MB", default_value_t = 1024)]
    keep_mb: usize,
    /// Where to run, as for heart-run (auto, cpu, cuda, tensorrt, tensorrt-rtx).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// CUDA-graph capture in a GPU backend's LM loop, as for heart-run.
    #[arg(long, value_enum, default_value_t = CudaGraphs::On)]
    cuda_graphs: CudaGraphs,
    /// Check the SHA-256 of every engine file at start, not only the small ones.
    #[arg(long)]
    verify: bool,
}

/// Serves songs until interrupted.
pub fn run(args: &ServeArgs, ort_lib: Option<&Path>, rtx_plugin: Option<PathBuf>, configs: &Path) -> Result<()> {
    let mut presets = Vec::new();
    for name in PRESETS {
        presets.push((name.to_string(), SettingsArgs::load_preset(name, configs)?));
    }
    let verify = if args.verify { Verify::Full } else { Verify::Quick };
    let rt = heart_backend::init(ort_lib)?
        .with_backend(args.backend)
        .with_cuda_graphs(args.cuda_graphs)
        .with_rtx_plugin(rtx_plugin);
    let pipeline = Pipeline::open_with_draft_if_any(&rt, &args.engines, verify)?;
    let service = Service::start(
        pipeline,
        Options {
            limits: StoreLimits {
                max_queued: args.max_queue,
                max_finished: args.keep_songs,
                max_finished_bytes: args.keep_mb.saturating_mul(1 << 20),
            },
            presets,
            backend: args
                .backend
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string()),
        },
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("--addr {}: cannot listen there", args.addr))?;
        let addr = listener.local_addr().context("the listening address")?;
        eprintln!(
            "heart-run serve: listening on http://{addr}/ with {}; Ctrl-C stops",
            args.engines.display()
        );
        heart_serve::serve(listener, service, stop_signal()).await?;
        eprintln!("heart-run serve: stopped");
        Ok(())
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
