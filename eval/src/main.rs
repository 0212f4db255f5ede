//! `heart-eval`: quality evaluation of engine folders. See `heart-eval --help`
//! and [`heart_eval::cli`].

fn main() -> std::process::ExitCode {
    heart_eval::cli::main(std::env::args_os())
}
