//! Compiles the vendored `proto/onnx.proto` (from the `onnx` 1.23.2 wheel) into
//! prost types. `protox` is a pure-Rust protobuf compiler, so no `protoc` and no
//! network are needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
