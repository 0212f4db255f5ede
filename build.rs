//! Build script of the `heart` core crate: detects optional native SDKs.
//!
//! Without feature `tensorrt-native` (the default) it does nothing: no probing,
//! no compiler, no network. With it, TensorRT 10 must be installed and named by
//! `TENSORRT_ROOT` (`include/NvInfer.h`, `lib/libnvinfer.so`,
//! `lib/libnvonnxparser.so`), and the CUDA
//! headers by `CUDA_ROOT` (default `/usr/local/cuda`); the thin C ABI shim
//! `native/trt_shim.cpp` is compiled with `cc` and `native/trt_shim.h` bound
//! with `bindgen` (which needs libclang). A missing SDK stops the build with a
//! message naming the variable.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tensorrt-native")]
    tensorrt::build();
}

#[cfg(feature = "tensorrt-native")]
mod tensorrt {
    use std::path::{Path, PathBuf};

    /// Stops the build with `message` (shown by cargo under the build script's stderr).
    fn stop(message: &str) -> ! {
        eprintln!("error: {message}");
        std::process::exit(1);
    }

    /// `$var` if set, else `default`; it must contain `header`.
    fn sdk(var: &str, default: Option<&str>, header: &str, what: &str) -> PathBuf {
        println!("cargo:rerun-if-env-changed={var}");
        let root = match (std::env::var_os(var), default) {
            (Some(v), _) => PathBuf::from(v),
            (None, Some(d)) => PathBuf::from(d),
            (None, None) => stop(&format!(
                "feature `tensorrt-native` needs {what}: set {var} to its install prefix (the folder with \
                 include/{header}); {var} is not set. The default build and `--features gpu` do not need it."
            )),
        };
        if !root.join("include").join(header).is_file() {
            stop(&format!(
                "feature `tensorrt-native` needs {what}: {var}={} has no include/{header}",
                root.display()
            ));
        }
        root
    }

    pub fn build() {
        let trt = sdk("TENSORRT_ROOT", None, "NvInfer.h", "TensorRT 10");
        let cuda = sdk(
            "CUDA_ROOT",
            Some("/usr/local/cuda"),
            "cuda_runtime_api.h",
            "the CUDA headers",
        );
        let shim = Path::new("native");
        for file in ["trt_shim.cpp", "trt_shim.h"] {
            println!("cargo:rerun-if-changed=native/{file}");
        }
        cc::Build::new()
            .cpp(true)
            .std("c++17")
            .file(shim.join("trt_shim.cpp"))
            .include(shim)
            .include(trt.join("include"))
            .include(cuda.join("include"))
            .warnings(true)
            .compile("heart_trt_shim");
        println!("cargo:rustc-link-search=native={}", trt.join("lib").display());
        println!("cargo:rustc-link-lib=dylib=nvinfer");
        println!("cargo:rustc-link-lib=dylib=nvonnxparser");
        let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_else(|| stop("OUT_DIR is not set")));
        let bindings = bindgen::Builder::default()
            .header(shim.join("trt_shim.h").to_string_lossy())
            .allowlist_function("heart_trt_.*")
            .allowlist_type("HeartTrt.*")
            .generate()
            .unwrap_or_else(|e| {
                stop(&format!(
                    "bindgen on native/trt_shim.h failed (is libclang installed?): {e}"
                ))
            });
        bindings
            .write_to_file(out.join("trt_shim.rs"))
            .unwrap_or_else(|e| stop(&format!("writing the TensorRT bindings: {e}")));
    }
}
