//! What this machine has: a GPU as the CUDA driver reports it ([`GpuInfo`]),
//! or why none is used ([`Probe`]).

use heart::manifest::Target;

/// The oldest CUDA version the driver must support, as `cuDriverGetVersion`
/// encodes it (`1000·major + 10·minor`): 13.0.
pub const MIN_CUDA_DRIVER: i32 = 13000;

/// A GPU as the CUDA driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// CUDA device ordinal.
    pub ordinal: i32,
    /// `cuDeviceGetName`.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// `cuDriverGetVersion`: the newest CUDA version the driver supports,
    /// encoded as `1000 * major + 10 * minor` (13000 = 13.0).
    pub cuda_driver_version: i32,
    /// Device memory in bytes.
    pub total_memory: usize,
    /// Version of the TensorRT library found here (`libnvinfer.so.10`), if any.
    pub tensorrt_version: Option<String>,
}

impl GpuInfo {
    /// `major.minor`, as recorded in manifests.
    pub fn compute_capability_string(&self) -> String {
        format!("{}.{}", self.compute_capability.0, self.compute_capability.1)
    }

    /// `major.minor` of [`GpuInfo::cuda_driver_version`].
    pub fn cuda_driver_version_string(&self) -> String {
        cuda_version_string(self.cuda_driver_version)
    }

    /// The manifest target of engines built on this GPU.
    pub fn target(&self) -> Target {
        Target::TensorRt {
            gpu_name: self.name.clone(),
            compute_capability: self.compute_capability_string(),
            tensorrt_version: self.tensorrt_version.clone(),
            cuda_driver_version: self.cuda_driver_version_string(),
        }
    }
}

/// What probing for a GPU found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// This build has no `gpu` feature.
    NoGpuSupport,
    /// The CUDA driver library (`libcuda.so.1`) could not be loaded: the loader's message.
    NoDriver(String),
    /// The driver supports only an older CUDA (`cuDriverGetVersion`, e.g. 12020).
    DriverTooOld {
        /// `1000·major + 10·minor`.
        cuda: i32,
    },
    /// The driver library lacks an entry point heart calls.
    MissingSymbol(String),
    /// The driver loaded but reports no device at the asked ordinal.
    NoDevice,
    /// A driver call failed.
    DriverError(String),
    /// A usable GPU.
    Found(GpuInfo),
}

impl Probe {
    /// Why no GPU is used (empty for [`Probe::Found`]).
    pub fn reason(&self) -> String {
        match self {
            Self::NoGpuSupport => {
                "this build has no GPU support (rebuild with `cargo build --release --features gpu`)".into()
            }
            Self::NoDriver(message) => format!("this machine has no NVIDIA driver ({message})"),
            Self::DriverTooOld { cuda } => format!(
                "the NVIDIA driver supports CUDA {} but heart's GPU paths need CUDA {} (driver 580 or newer); \
                 update the NVIDIA driver",
                cuda_version_string(*cuda),
                cuda_version_string(MIN_CUDA_DRIVER)
            ),
            Self::MissingSymbol(name) => {
                format!(
                    "the NVIDIA driver library lacks {name} (driver too old or not NVIDIA's); update the NVIDIA driver"
                )
            }
            Self::NoDevice => "the NVIDIA driver reports no GPU".into(),
            Self::DriverError(e) => format!("the CUDA driver failed: {e}"),
            Self::Found(_) => String::new(),
        }
    }
}

/// `major.minor` of a CUDA version as `cuDriverGetVersion` encodes it
/// (`1000·major + 10·minor`).
pub fn cuda_version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}
