//! ONNX Runtime is found through the project-local `.ort/` folder and initialises.

#[test]
fn onnx_runtime_library_loads() {
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    assert!(
        rt.library.ends_with(heart_backend::library::library_file_name())
            || std::env::var_os("ORT_DYLIB_PATH").is_some()
    );
}

#[test]
fn missing_explicit_library_is_a_clear_error() {
    // Only the candidate list is checked here: the process-wide init is shared.
    let c = heart_backend::library::candidates(Some(std::path::Path::new("/nonexistent/libonnxruntime.so")));
    assert_eq!(c.len(), 1);
}
