//! Probing the CUDA driver through cudarc and reading the TensorRT library
//! version (feature `gpu`).
//!
//! Compiled and linted on CPU-only machines; executed only where a GPU is
//! present (see `docs/gpu.md` for what was and was not run).

use cudarc::driver::{result, sys};

use crate::device::{GpuInfo, Probe, decode_tensorrt_version};

/// The TensorRT library ONNX Runtime 1.31.1's provider links against.
const NVINFER: &str = "libnvinfer.so.10";

/// Looks for device `ordinal`. `libcuda` is only dlopen'ed to test for it
/// before any driver call (cudarc panics on a missing library otherwise), and
/// the queries run under `catch_unwind` in case the library lacks a symbol.
pub(crate) fn probe(ordinal: i32) -> Probe {
    // SAFETY: only tries to dlopen the driver library; nothing is called in it.
    if !unsafe { sys::is_culib_present() } {
        return Probe::NoDriver;
    }
    match std::panic::catch_unwind(|| query(ordinal)) {
        Ok(Ok(Some(info))) => Probe::Found(info),
        Ok(Ok(None)) => Probe::NoDevice,
        Ok(Err(e)) if e.0 == sys::CUresult::CUDA_ERROR_NO_DEVICE => Probe::NoDevice,
        Ok(Err(e)) => Probe::DriverError(e.to_string()),
        Err(_) => Probe::DriverError("the CUDA driver library is missing an entry point heart needs".into()),
    }
}

fn query(ordinal: i32) -> Result<Option<GpuInfo>, result::DriverError> {
    result::init()?;
    if ordinal < 0 || ordinal >= result::device::get_count()? {
        return Ok(None);
    }
    let dev = result::device::get(ordinal)?;
    let attribute = |a| {
        // SAFETY: `dev` came from `cuDeviceGet` above.
        unsafe { result::device::get_attribute(dev, a) }
    };
    let major = attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    // SAFETY: as above.
    let total_memory = unsafe { result::device::total_mem(dev)? };
    let mut driver = 0;
    // SAFETY: writes one int through a valid pointer.
    unsafe { sys::cuDriverGetVersion(&mut driver).result()? };
    Ok(Some(GpuInfo {
        ordinal,
        name: result::device::get_name(dev)?,
        compute_capability: (major, minor),
        cuda_driver_version: driver,
        total_memory,
        tensorrt_version: tensorrt_version(),
    }))
}

/// `getInferLibVersion()` of the TensorRT library the provider would load.
fn tensorrt_version() -> Option<String> {
    // SAFETY: loads NVIDIA's TensorRT library (the one ONNX Runtime's provider
    // loads anyway) and calls its documented `extern "C" int32_t
    // getInferLibVersion()`, which takes no arguments.
    unsafe {
        let lib = libloading::Library::new(NVINFER).ok()?;
        let version: libloading::Symbol<'_, unsafe extern "C" fn() -> i32> = lib.get(b"getInferLibVersion\0").ok()?;
        Some(decode_tensorrt_version(version()))
    }
}
