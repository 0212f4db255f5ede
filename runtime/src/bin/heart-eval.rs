//! `heart-eval`: quality evaluation of engine folders. See `heart-eval --help`
//! and [`heart_runtime::eval::cli`].

fn main() -> std::process::ExitCode {
    heart_runtime::eval::cli::main(std::env::args_os())
}
