//! A build profile ([`heart::profile::BuildProfile`], schema and validation in
//! the core crate) turned into the exporter's options.

use std::ops::Deref;

use heart::precision::Precision;
use heart::profile::{BuildProfile, Format, Int4Kernel, ProfileError};
use heart::quant::blockwise::IntBits;
use onnx_export::lm::{GraphForm, LmOptions, QuantFormat, QuantPlan, numerics};
use onnx_export::quant::{Accuracy, NBits};

/// A resolved build profile and the export options it stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The validated profile.
    pub build: BuildProfile,
    /// Export options, without activation amax values (calibration fills them).
    pub options: LmOptions,
    /// The activation format, when activations are quantized.
    pub activations: Option<QuantFormat>,
}

impl Deref for Profile {
    type Target = BuildProfile;

    fn deref(&self) -> &BuildProfile {
        &self.build
    }
}

impl Profile {
    /// Resolves `--profile` / `--precision` ([`BuildProfile::resolve`]).
    pub fn resolve(profile: Option<&str>, precision: Option<Precision>) -> Result<Self, ProfileError> {
        BuildProfile::resolve(profile, precision).map(Self::from_build)
    }

    /// A compiled-in profile.
    pub fn built_in(name: &str) -> Result<Self, ProfileError> {
        BuildProfile::built_in(name).map(Self::from_build)
    }

    /// The export options of a validated profile.
    pub fn from_build(build: BuildProfile) -> Self {
        let accuracy = build
            .accuracy_level
            .and_then(Accuracy::from_level)
            .unwrap_or(Accuracy::Int8);
        let kernel = build.int4_kernel.unwrap_or(Int4Kernel::Onnxruntime);
        let options = LmOptions {
            numerics: numerics(build.compute),
            quant: build
                .weights
                .and_then(|w| quant_format(w, accuracy, kernel))
                .map(|weights| QuantPlan {
                    weights,
                    lowering: build.lowering,
                    groups: build.groups.clone(),
                    activations: None,
                }),
            probes: Default::default(),
            layer_taps: false,
            form: GraphForm::Cpu,
        };
        let activations = build.activations.and_then(|a| quant_format(a, accuracy, kernel));
        Self {
            build,
            options,
            activations,
        }
    }
}

/// The exporter's format of a profile format (`None` for `none`).
fn quant_format(format: Format, accuracy: Accuracy, int4_kernel: Int4Kernel) -> Option<QuantFormat> {
    let int = |bits| {
        QuantFormat::Int(NBits {
            bits,
            accuracy,
            int4_kernel,
        })
    };
    match format {
        Format::None => None,
        Format::Nvfp4 => Some(QuantFormat::Nvfp4),
        Format::Fp8 => Some(QuantFormat::Fp8),
        Format::Int8 => Some(int(IntBits::Int8)),
        Format::Int4 => Some(int(IntBits::Int4)),
    }
}

#[cfg(test)]
mod tests {
    use heart::profile::{BUILT_IN, LinearGroup};

    use super::*;

    #[test]
    fn profiles_become_the_export_options_they_describe() {
        for (name, _) in BUILT_IN {
            let p = Profile::built_in(name).unwrap();
            assert_eq!(p.options.numerics, numerics(p.compute), "{name}");
            assert_eq!(p.options.quant.is_some(), p.weights.is_some(), "{name}");
        }
        let fp4 = Profile::built_in("fp4").unwrap();
        let plan = fp4.options.quant.as_ref().unwrap();
        assert_eq!(plan.weights, QuantFormat::Nvfp4);
        assert!(plan.groups.contains(&LinearGroup::BackboneMlp) && !plan.groups.contains(&LinearGroup::Codebook0Head));
        assert_eq!(fp4.options.numerics, numerics(Precision::Fp16));
        assert_eq!(
            Profile::built_in("fp4-w4a4").unwrap().activations,
            Some(QuantFormat::Nvfp4)
        );
        for (name, bits) in [("int8", IntBits::Int8), ("int4", IntBits::Int4)] {
            let p = Profile::built_in(name).unwrap();
            assert_eq!(p.options.quant.unwrap().weights, QuantFormat::Int(NBits::new(bits)));
            assert_eq!(NBits::new(bits).accuracy, Accuracy::Int8, "level 4 by default");
            assert_eq!(
                NBits::new(bits).runs_heart_kernel(),
                bits == IntBits::Int4,
                "heart's int4 kernel by default"
            );
        }
        let text = "[lm]\nprecision = \"int4\"\ncompute = \"fp32\"\nweights = \"int4\"\nquantize = [\"projection\"]\naccuracy_level = 0\n";
        let p = Profile::from_build(BuildProfile::parse("t", "t.toml", text).unwrap());
        let want = QuantFormat::Int(NBits {
            bits: IntBits::Int4,
            accuracy: Accuracy::Float,
            int4_kernel: Int4Kernel::Onnxruntime,
        });
        assert_eq!(p.options.quant.unwrap().weights, want);
    }
}
