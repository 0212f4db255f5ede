//! The NVIDIA driver and GPU as this machine has them, probed without
//! panicking on any driver (or none).
//!
//! The driver library is opened with our own `dlopen` and every entry point
//! is resolved before the first call; a missing library, a missing symbol or a
//! driver older than CUDA 13 (what ONNX Runtime 1.31.1's CUDA/TensorRT
//! providers and the NvTensorRTRTX plugin are built against) is a [`Probe`]
//! value with its reason. cudarc is not used here: its `is_culib_present()`
//! resolves every CUDA 13 symbol with `expect` and panics on an older driver.
//!
//! Also reads the versions of the TensorRT libraries (`getInferLib*Version`,
//! the same entry points in classic TensorRT and TensorRT-RTX), build number
//! included: serialized engines load only in the identical build.

use std::ffi::{c_char, c_int, c_uint};
use std::path::Path;

use crate::device::{GpuInfo, MIN_CUDA_DRIVER, Probe};

/// The CUDA driver library's soname.
pub const DRIVER_LIBRARY: &str = "libcuda.so.1";

/// The TensorRT library ONNX Runtime 1.31.1's TensorRT provider links against.
pub const NVINFER: &str = "libnvinfer.so.10";

const CUDA_SUCCESS: c_int = 0;
const CUDA_ERROR_NO_DEVICE: c_int = 100;
const ATTRIBUTE_CC_MAJOR: c_int = 75;
const ATTRIBUTE_CC_MINOR: c_int = 76;

type GetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type Init = unsafe extern "C" fn(c_uint) -> c_int;
type DeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type DeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
type DeviceGetAttribute = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;
type DeviceTotalMem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;

/// Probes device `ordinal` through the system's driver library.
pub fn probe(ordinal: i32) -> Probe {
    probe_library(Path::new(DRIVER_LIBRARY), ordinal)
}

/// Probes device `ordinal` through the driver library `library` (a soname
/// searched on the loader path, or a file). Never panics.
pub fn probe_library(library: &Path, ordinal: i32) -> Probe {
    // SAFETY: loading the NVIDIA driver library runs only its initialisers,
    // which the driver's contract allows in any process.
    let lib = match unsafe { libloading::Library::new(library.as_os_str()) } {
        Ok(lib) => lib,
        Err(e) => return Probe::NoDriver(loader_message(&e)),
    };
    match query(&lib, ordinal) {
        Ok(Some(mut info)) => {
            info.tensorrt_version = tensorrt_version(Path::new(NVINFER));
            Probe::Found(info)
        }
        Ok(None) => Probe::NoDevice,
        Err(p) => p,
    }
}

/// Resolves `name` in `lib` as a function of type `T`.
fn symbol<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T, Probe> {
    // SAFETY: every `T` used here is the documented C signature of `name`
    // in the CUDA driver API (cuda.h).
    unsafe { lib.get::<T>(name) }
        .map(|s| *s)
        .map_err(|_| Probe::MissingSymbol(name.to_string()))
}

fn check(call: &str, code: c_int) -> Result<(), Probe> {
    match code {
        CUDA_SUCCESS => Ok(()),
        CUDA_ERROR_NO_DEVICE => Err(Probe::NoDevice),
        code => Err(Probe::DriverError(format!("{call} returned CUDA error {code}"))),
    }
}

fn query(lib: &libloading::Library, ordinal: i32) -> Result<Option<GpuInfo>, Probe> {
    let get_version: GetVersion = symbol(lib, "cuDriverGetVersion")?;
    let mut cuda = 0;
    // SAFETY: writes one int through a valid pointer; needs no cuInit.
    check("cuDriverGetVersion", unsafe { get_version(&mut cuda) })?;
    if cuda < MIN_CUDA_DRIVER {
        return Err(Probe::DriverTooOld { cuda });
    }
    let init: Init = symbol(lib, "cuInit")?;
    let get_count: GetVersion = symbol(lib, "cuDeviceGetCount")?;
    let device_get: DeviceGet = symbol(lib, "cuDeviceGet")?;
    let get_name: DeviceGetName = symbol(lib, "cuDeviceGetName")?;
    let get_attribute: DeviceGetAttribute = symbol(lib, "cuDeviceGetAttribute")?;
    let total_mem: DeviceTotalMem = symbol(lib, "cuDeviceTotalMem_v2")?;
    // SAFETY (all calls below): each writes through valid pointers to locals
    // of the C types cuda.h declares; `dev` comes from `cuDeviceGet`.
    check("cuInit", unsafe { init(0) })?;
    let mut count = 0;
    check("cuDeviceGetCount", unsafe { get_count(&mut count) })?;
    if ordinal < 0 || ordinal >= count {
        return Ok(None);
    }
    let mut dev = 0;
    check("cuDeviceGet", unsafe { device_get(&mut dev, ordinal) })?;
    let mut name = [0 as c_char; 256];
    check("cuDeviceGetName", unsafe {
        get_name(name.as_mut_ptr(), name.len() as c_int, dev)
    })?;
    let (mut major, mut minor) = (0, 0);
    check("cuDeviceGetAttribute", unsafe {
        get_attribute(&mut major, ATTRIBUTE_CC_MAJOR, dev)
    })?;
    check("cuDeviceGetAttribute", unsafe {
        get_attribute(&mut minor, ATTRIBUTE_CC_MINOR, dev)
    })?;
    let mut total_memory = 0usize;
    check("cuDeviceTotalMem_v2", unsafe { total_mem(&mut total_memory, dev) })?;
    // SAFETY: the driver wrote a NUL-terminated name into the buffer (the
    // last byte is forced to NUL in case it did not).
    name[name.len() - 1] = 0;
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok(Some(GpuInfo {
        ordinal,
        name,
        compute_capability: (major, minor),
        cuda_driver_version: cuda,
        total_memory,
        tensorrt_version: None,
    }))
}

/// The loader's message for `e`, one line (e.g. `libcuda.so.1: cannot open
/// shared object file: No such file or directory`).
pub(crate) fn loader_message(e: &libloading::Error) -> String {
    let text = match e {
        libloading::Error::DlOpen { source } => source.to_string(),
        other => other.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `major.minor.patch.build` of the TensorRT (or TensorRT-RTX) library
/// `library`, from its `getInferLib{Major,Minor,Patch,Build}Version`; `None`
/// when it does not load or lacks those entry points.
pub fn tensorrt_version(library: &Path) -> Option<String> {
    type Version = unsafe extern "C" fn() -> c_int;
    // SAFETY: loads NVIDIA's TensorRT library (what the provider loads
    // anyway) and calls its documented argument-less `int32_t
    // getInferLib*Version()` entry points.
    unsafe {
        let lib = libloading::Library::new(library.as_os_str()).ok()?;
        let part = |name: &[u8]| -> Option<c_int> {
            let f: libloading::Symbol<'_, Version> = lib.get(name).ok()?;
            Some(f())
        };
        Some(format!(
            "{}.{}.{}.{}",
            part(b"getInferLibMajorVersion\0")?,
            part(b"getInferLibMinorVersion\0")?,
            part(b"getInferLibPatchVersion\0")?,
            part(b"getInferLibBuildVersion\0")?
        ))
    }
}
