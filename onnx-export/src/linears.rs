//! How the LM graphs emit their linear layers: dense at the graph's
//! [`Numerics`], or quantized by a [`QuantPlan`] through [`QuantEmitter`], and
//! optionally *probed* (their inputs exposed as extra graph outputs for the
//! calibration run).
//!
//! # Groups
//! Every linear layer belongs to one [`LinearGroup`]; a build profile lists the
//! groups it quantizes. The others stay dense at the compute dtype. Embeddings
//! (summed by the runtime from `lm_tables.safetensors`, f32) and norms (f32
//! vectors) are not linear layers and are never quantized.
//!
//! # Blockwise integers
//! [`QuantFormat::Int`] (int4 / int8 in 32-element blocks) makes each
//! quantized linear one node that multiplies the f32 activations by the packed
//! weight: `com.microsoft.MatMulNBits`, or heart's `ai.heart.MatMulInt4x16`
//! for int4 ([`crate::quant::nbits`]); the graph's compute dtype must be f32.
//! Every group can be quantized this way, the heads included: each
//! `audio_head` slice becomes a [`HeadWeight::NBits`] that the decoder applies
//! with one node.
//!
//! # Activations
//! With [`QuantPlan::activations`], the input of every quantized linear is
//! fake-quantized (quantize → dequantize) before its `MatMul`, with a static
//! scale from the calibrated amax of that input: NVFP4 global scale
//! `amax / (6 · 448)` (block scales come from the data at run time) or FP8
//! per-tensor scale `amax / 448`. Linears that read the same value (q/k/v,
//! w1/w3) share one quantizer when their amax agree, so the graph quantizes each
//! input once.
//!
//! # Probes
//! A calibration variant is exported with [`LmOptions::probes`]: the input of
//! every linear of those groups becomes an f32 graph output
//! `probe.<linear>` (named after the first linear that reads it; linears
//! sharing an input share the probe). [`ProbeSite`] lists them so the
//! calibration run knows which linears each output stands for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use heart::checkpoint::TensorRef;
use heart::engine;
pub use heart::profile::{LinearGroup, Lowering};

pub use crate::quant::QuantFormat;
use heart::quant::blockwise::quantize_blockwise;
use heart::quant::fp8::fp8_scale;
use heart::quant::nvfp4::nvfp4_global_scale;

use crate::dense::{Numerics, cast_if};
use crate::error::{ExportError, Result};
use crate::external::WrittenFile;
use crate::graph::{DType, Dim, GraphBuilder, Layout, Value};
use crate::quant::{Accuracy, ActQuant, NBitsWeight, QuantEmitter, QuantizedWeight, WeightScheme, no_dense_weight};

/// Which runtime a graph is exported for. Both forms compute the same
/// numbers within the precision's tolerance; they differ in the operators used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum GraphForm {
    /// ONNX Runtime CPU: the decoder picks its head with side-by-side `If`s
    /// (so ONNX Runtime prepacks each head once), int weights are
    /// `com.microsoft.MatMulNBits`, NVFP4 is the portable lowering unless the
    /// build profile asks for the TensorRT one.
    #[default]
    Cpu,
    /// NVIDIA's ONNX parser (TensorRT, TensorRT-RTX): static ranks (the
    /// decoder `Gather`s its head from the stacked heads by codebook index,
    /// see `lm::gather_head`), no ONNX Runtime contrib operators, and
    /// quantization in the TensorRT lowering whatever the profile says
    /// (FLOAT4E2M1 weights, `trt::TRT_FP4DynamicQuantize`, FP8
    /// `QuantizeLinear`/`DequantizeLinear` pairs), so FP4 stays FP4 in the engine.
    TensorRt,
}

impl GraphForm {
    /// The spelling in manifests and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::TensorRt => "tensorrt",
        }
    }
}

impl fmt::Display for GraphForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Activation quantization of a plan: the format and the calibrated amax of
/// each quantized linear's input, keyed by linear name
/// (`backbone.layers.0.attn.q_proj`).
#[derive(Debug, Clone, PartialEq)]
pub struct Activations {
    /// Format the activations are fake-quantized to.
    pub format: QuantFormat,
    /// Calibrated input amax per linear.
    pub amax: BTreeMap<String, f32>,
}

/// Which linear layers are quantized, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantPlan {
    /// Weight format of the quantized groups.
    pub weights: QuantFormat,
    /// Lowering of weights and activations.
    pub lowering: Lowering,
    /// The groups quantized; the others stay dense.
    pub groups: BTreeSet<LinearGroup>,
    /// Activation quantization (W4A4, W8A8), or `None` for weight-only.
    pub activations: Option<Activations>,
}

impl QuantPlan {
    /// The [`WeightScheme`] of this plan's weights.
    pub fn scheme(&self) -> WeightScheme {
        match (self.weights, self.lowering) {
            (QuantFormat::Nvfp4, Lowering::Portable | Lowering::Reference) => WeightScheme::Nvfp4Portable,
            (QuantFormat::Nvfp4, Lowering::TensorRt) => WeightScheme::Nvfp4TensorRt,
            (QuantFormat::Fp8, Lowering::Portable | Lowering::Reference) => WeightScheme::Fp8Portable,
            (QuantFormat::Fp8, Lowering::TensorRt) => WeightScheme::Fp8TensorRt,
            // A contrib operator either way (ONNX Runtime's CPU and CUDA providers run it).
            (QuantFormat::Int(nb), _) => WeightScheme::MatMulNBits(nb),
        }
    }
}

/// Everything that decides how the LM graphs are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct LmOptions {
    /// Dtypes of dense weights, activations and the KV cache.
    pub numerics: Numerics,
    /// Quantized linear layers, if any.
    pub quant: Option<QuantPlan>,
    /// Groups whose linear inputs are exposed as `probe.*` outputs (calibration).
    pub probes: BTreeSet<LinearGroup>,
    /// Expose each layer's last-position residual stream as `tap.layer_{i}`.
    pub layer_taps: bool,
    /// The runtime the graphs are for (set it with [`LmOptions::in_form`]).
    pub form: GraphForm,
}

impl LmOptions {
    /// These options for graphs of `form`. For [`GraphForm::TensorRt`] the
    /// quantization switches to the TensorRT lowering, and int4/int8 weights
    /// (CPU operators: ONNX Runtime's contrib `MatMulNBits` or heart's
    /// `MatMulInt4x16`, which NVIDIA's parser does not know) are an error.
    pub fn in_form(mut self, form: GraphForm) -> Result<Self> {
        if form == GraphForm::TensorRt
            && let Some(plan) = self.quant.as_mut()
        {
            if let QuantFormat::Int(nb) = plan.weights {
                return Err(ExportError::Unsupported {
                    what: format!(
                        "{}-bit integer weights in the TensorRT form (they run as CPU operators, ONNX \
                         Runtime's MatMulNBits or heart's MatMulInt4x16, which TensorRT's ONNX parser \
                         does not know; build fp16, fp8 or fp4)",
                        nb.bits.bits()
                    ),
                });
            }
            plan.lowering = Lowering::TensorRt;
        }
        self.form = form;
        Ok(self)
    }
}

/// A `probe.*` output of a calibration graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSite {
    /// Graph output name.
    pub output: String,
    /// Size of the last axis (the linears' input features).
    pub features: usize,
    /// The linears reading this value (checkpoint names without `.weight`).
    pub linears: Vec<String>,
}

/// One `audio_head` slice as the decoder applies it.
#[derive(Debug, Clone)]
pub enum HeadWeight {
    /// A dense `[in, out]` weight (compute dtype, or dequantized by the graph) for `MatMul`.
    Dense(Value),
    /// A blockwise weight for `MatMulNBits`.
    NBits(NBitsWeight),
    /// The simulation of a `MatMulNBits` head at accuracy level 4: a dense f32
    /// weight whose input is int8-quantized per block first
    /// ([`crate::quant::reference::int8_block_activation`]).
    Int8Activations {
        /// The reference-dequantized `[in, out]` weight.
        weight: Value,
        /// Input features.
        features: usize,
        /// Scope name of the activation quantizer.
        name: String,
    },
}

impl HeadWeight {
    /// `x · head` for `x` `[..., in]`.
    pub fn apply(&self, g: &mut GraphBuilder, x: &Value) -> Value {
        match self {
            Self::Dense(w) => g.matmul(x, w),
            Self::NBits(w) => w.apply(g, x),
            Self::Int8Activations { weight, features, name } => {
                let q = crate::quant::reference::int8_block_activation(g, x, *features, name);
                g.matmul(&q, weight)
            }
        }
    }
}

/// Emits the linear layers of one graph; see the module doc. Finish the graph
/// with [`Linears::finish`].
pub struct Linears<'p> {
    opts: &'p LmOptions,
    quant: QuantEmitter,
    probes: Vec<(ProbeSite, Value, usize)>,
    probe_of: HashMap<String, usize>,
    quantized_inputs: HashMap<(String, u32), Value>,
    weights: HashMap<String, HeadWeight>,
    copies: HashMap<String, usize>,
    activation_uses: HashMap<String, usize>,
}

impl<'p> Linears<'p> {
    /// An emitter for one graph exported with `opts`.
    pub fn new(opts: &'p LmOptions) -> Self {
        Self {
            opts,
            quant: QuantEmitter::new(),
            probes: Vec::new(),
            probe_of: HashMap::new(),
            quantized_inputs: HashMap::new(),
            weights: HashMap::new(),
            copies: HashMap::new(),
            activation_uses: HashMap::new(),
        }
    }

    /// Storage and compute dtypes of the graph.
    pub fn numerics(&self) -> Numerics {
        self.opts.numerics
    }

    /// Whether the graph exposes each layer's output (`tap.layer_{i}`).
    pub fn layer_taps(&self) -> bool {
        self.opts.layer_taps
    }

    /// `x · Wᵀ` for the checkpoint Linear weight `t` (`[out, in]`) of `group`,
    /// on compute-dtype `x` of rank `rank` (3 in the stacks, 2 for heads).
    /// The weight is stored once per graph: a graph that runs a stack several
    /// times (the frame graph's decoder steps) shares it between the products,
    /// except where [`Self::copy_per_product`] says TensorRT cannot.
    pub fn linear(
        &mut self,
        g: &mut GraphBuilder,
        x: &Value,
        t: &TensorRef<'_>,
        group: LinearGroup,
        rank: usize,
    ) -> Result<Value> {
        let &[out, inp] = t.shape else {
            return Err(ExportError::Shape {
                tensor: t.name.to_string(),
                expected: "a 2-D Linear weight [out, in]".into(),
                got: format!("shape {:?}", t.shape),
            });
        };
        let name = t.name.trim_end_matches(".weight");
        let x = self.input(g, x, name, inp, group, rank)?;
        let w = match self.weights.get(t.name) {
            Some(_) if self.copy_per_product(group) => {
                let copies = self.copies.entry(t.name.to_string()).or_insert(1);
                *copies += 1;
                let copy = format!("{name}.copy_{copies}.weight");
                self.weight(g, t, &copy, group, (out, inp))?
            }
            Some(w) => w.clone(),
            None => {
                let w = self.weight(g, t, t.name, group, (out, inp))?;
                self.weights.insert(t.name.to_string(), w.clone());
                w
            }
        };
        Ok(match &w {
            HeadWeight::Dense(w) => g.with_scope(name, |g| g.matmul(&x, w)),
            other => other.apply(g, &x),
        })
    }

    /// Whether every product of a `group` weight stores its own copy: a
    /// weight-only NVFP4 weight in the TensorRT lowering. TensorRT-RTX 1.7.1
    /// builds a W4A16 GEMM only when its FP4 initializers feed no other GEMM;
    /// shared between the frame graph's unrolled decoder steps they stop the
    /// build with an internal Myelin error (`vector::_M_range_check`, with
    /// separate dequantization nodes too; measured on the tiny-a frame graph).
    /// The copies cost engine bytes, not bandwidth: each step reads its own
    /// once, as it would read the shared one. W4A4 and FP8 weights share.
    fn copy_per_product(&self, group: LinearGroup) -> bool {
        self.plan_for(group)
            .is_some_and(|p| p.scheme() == WeightScheme::Nvfp4TensorRt && p.activations.is_none())
    }

    /// Emits the weight of Linear `t` (`[out, in]`) of `group` under the
    /// initializer name `name`: dense, dequantized by the graph, or blockwise
    /// for `MatMulNBits`.
    fn weight(
        &mut self,
        g: &mut GraphBuilder,
        t: &TensorRef<'_>,
        name: &str,
        group: LinearGroup,
        (out, inp): (usize, usize),
    ) -> Result<HeadWeight> {
        let Some(plan) = self.plan_for(group) else {
            let nm = self.opts.numerics;
            return Ok(HeadWeight::Dense(g.weight(t, nm.weights, Layout::Transposed)?));
        };
        let values = t.to_f32()?;
        if plan.lowering == Lowering::Reference {
            let scope = name.trim_end_matches(".weight").to_string();
            return self.reference_weight(g, plan, (name, scope), &values, (out, inp));
        }
        let scheme = plan.scheme();
        if let WeightScheme::MatMulNBits(nb) = scheme {
            let w = quantize_blockwise(&values, out, inp, nb.bits).map_err(|e| ExportError::from(e.in_tensor(name)))?;
            let dtype = self.opts.numerics.compute;
            return Ok(HeadWeight::NBits(NBitsWeight::emit(g, name, &w, nb, dtype)?));
        }
        Ok(HeadWeight::Dense(self.quantized_weight(
            g,
            name,
            &values,
            (out, inp),
            scheme,
        )?))
    }

    /// Prepares the input `x` (`[..., features]`, compute dtype, rank `rank`) of
    /// linear `name` of `group`: records a probe when asked, and fake-quantizes
    /// it when the plan quantizes activations of `group`.
    pub fn input(
        &mut self,
        g: &mut GraphBuilder,
        x: &Value,
        name: &str,
        features: usize,
        group: LinearGroup,
        rank: usize,
    ) -> Result<Value> {
        if self.opts.probes.contains(&group) {
            self.probe(x, name, features, rank);
        }
        let Some(acts) = self.plan_for(group).and_then(|p| p.activations.as_ref()) else {
            return Ok(x.clone());
        };
        let lowering = self.opts.quant.as_ref().map_or(Lowering::Portable, |p| p.lowering);
        let amax = *acts.amax.get(name).ok_or_else(|| ExportError::Unsupported {
            what: format!(
                "activation quantization of `{name}` needs its calibrated input amax, \
                 and the calibration statistics have none"
            ),
        })?;
        let key = (x.name().to_string(), amax.to_bits());
        if let Some(q) = self.quantized_inputs.get(&key) {
            return Ok(q.clone());
        }
        let dtype = self.opts.numerics.compute;
        // A graph that runs a stack several times quantizes a linear's input
        // once per run: the later quantizers' constants get their own names.
        let uses = self.activation_uses.entry(name.to_string()).or_default();
        let act_name = match *uses {
            0 => format!("{name}.input"),
            n => format!("{name}.input.{n}"),
        };
        *uses += 1;
        let q = match (acts.format, lowering) {
            (QuantFormat::Nvfp4, lowering) => {
                let scheme = match lowering {
                    Lowering::Portable | Lowering::Reference => WeightScheme::Nvfp4Portable,
                    Lowering::TensorRt => WeightScheme::Nvfp4TensorRt,
                };
                let act = ActQuant {
                    name: &act_name,
                    features,
                    global: nvfp4_global_scale(amax),
                };
                self.quant.activation(g, x, act, scheme, dtype)?
            }
            (QuantFormat::Fp8, Lowering::Portable | Lowering::Reference) => {
                self.quant
                    .fp8_activation_portable(g, x, &act_name, fp8_scale(amax), dtype)?
            }
            (QuantFormat::Fp8, Lowering::TensorRt) => {
                self.quant
                    .fp8_activation_tensorrt(g, x, &act_name, fp8_scale(amax), dtype)?
            }
            (QuantFormat::Int(_), _) => {
                return Err(ExportError::Unsupported {
                    what: format!(
                        "static int activation quantization of `{name}` (MatMulNBits quantizes its \
                         activations itself, per its accuracy level)"
                    ),
                });
            }
        };
        self.quantized_inputs.insert(key, q.clone());
        Ok(q)
    }

    /// Head `i` of the stacked `audio_head` `[heads, in, out]`: an `[in, out]`
    /// compute-dtype weight, quantized when [`LinearGroup::AudioHead`] is (a
    /// `MatMulNBits` weight for int formats).
    pub fn audio_head(&mut self, g: &mut GraphBuilder, t: &TensorRef<'_>, i: usize) -> Result<HeadWeight> {
        let name = format!("{}.{i}", t.name);
        let Some(plan) = self.plan_for(LinearGroup::AudioHead) else {
            let w = g.weight_named(&name, t, self.opts.numerics.weights, Layout::Index(i))?;
            return Ok(HeadWeight::Dense(w));
        };
        let &[heads, inp, out] = t.shape else {
            return Err(ExportError::Shape {
                tensor: t.name.to_string(),
                expected: "a stacked head [heads, in, out]".into(),
                got: format!("shape {:?}", t.shape),
            });
        };
        if i >= heads {
            return Err(ExportError::Shape {
                tensor: t.name.to_string(),
                expected: format!("head {i}"),
                got: format!("{heads} heads"),
            });
        }
        let mut in_out = vec![0f32; inp * out];
        t.read_f32_into(i * inp * out, &mut in_out)?;
        let out_in: Vec<f32> = (0..out)
            .flat_map(|o| in_out.iter().skip(o).step_by(out).copied().collect::<Vec<_>>())
            .collect();
        if plan.lowering == Lowering::Reference {
            return self.reference_weight(g, plan, (&name, name.clone()), &out_in, (out, inp));
        }
        let scheme = plan.scheme();
        if let WeightScheme::MatMulNBits(nb) = scheme {
            let w = quantize_blockwise(&out_in, out, inp, nb.bits)
                .map_err(|e| ExportError::from(e.in_tensor(name.as_str())))?;
            let dtype = self.opts.numerics.compute;
            return Ok(HeadWeight::NBits(NBitsWeight::emit(g, &name, &w, nb, dtype)?));
        }
        Ok(HeadWeight::Dense(self.quantized_weight(
            g,
            &name,
            &out_in,
            (out, inp),
            scheme,
        )?))
    }

    /// Every head of the stacked `audio_head` `t` (`[heads, in, out]`) as one
    /// `[heads, in, out]` value for a `Gather` by head index: the checkpoint
    /// tensor itself at the weight dtype, or (when [`LinearGroup::AudioHead`]
    /// is quantized) the dequantized heads of [`Self::audio_head`]
    /// concatenated. Int formats have no dense weight and are an error.
    pub fn audio_heads_stacked(&mut self, g: &mut GraphBuilder, t: &TensorRef<'_>) -> Result<Value> {
        if self.plan_for(LinearGroup::AudioHead).is_none() {
            return g.weight(t, self.opts.numerics.weights, Layout::AsIs);
        }
        let heads = t.shape.first().copied().unwrap_or(0);
        let mut stacked = Vec::with_capacity(heads);
        for i in 0..heads {
            match self.audio_head(g, t, i)? {
                HeadWeight::Dense(w) => stacked.push(g.unsqueeze(&w, &[0])),
                HeadWeight::NBits(_) | HeadWeight::Int8Activations { .. } => return Err(no_dense_weight(t.name)),
            }
        }
        Ok(g.concat(&stacked.iter().collect::<Vec<_>>(), 0))
    }

    /// Adds the probe outputs, writes the graph and returns the files and probes.
    pub fn finish(self, mut g: GraphBuilder) -> Result<(Vec<WrittenFile>, Vec<ProbeSite>)> {
        let mut sites = Vec::with_capacity(self.probes.len());
        for (site, value, rank) in self.probes {
            let v = cast_if(&mut g, &value, self.opts.numerics.compute, DType::F32);
            let mut dims = vec![Dim::from("batch")];
            if rank == 3 {
                dims.push("seq".into());
            }
            dims.push(site.features.into());
            g.output(&v, &site.output, DType::F32, &dims);
            sites.push(site);
        }
        Ok((self.quant.finish(g)?, sites))
    }

    /// The simulation of `plan`'s format for a `[out, in]` weight stored as
    /// `tensor`: reference-dequantized dense values, behind `MatMulNBits`
    /// level 4's int8 activation blocks (quantizer scoped `scope`) when the
    /// plan has them.
    fn reference_weight(
        &self,
        g: &mut GraphBuilder,
        plan: &QuantPlan,
        (tensor, scope): (&str, String),
        values: &[f32],
        (out, inp): (usize, usize),
    ) -> Result<HeadWeight> {
        let weight = crate::quant::reference::dense_weight(
            g,
            plan.weights,
            tensor,
            values,
            (out, inp),
            self.opts.numerics.compute,
        )?;
        Ok(match plan.weights {
            QuantFormat::Int(nb) if nb.accuracy == Accuracy::Int8 => HeadWeight::Int8Activations {
                weight,
                features: inp,
                name: scope,
            },
            _ => HeadWeight::Dense(weight),
        })
    }

    fn plan_for(&self, group: LinearGroup) -> Option<&'p QuantPlan> {
        self.opts.quant.as_ref().filter(|p| p.groups.contains(&group))
    }

    fn probe(&mut self, x: &Value, linear: &str, features: usize, rank: usize) {
        match self.probe_of.get(x.name()) {
            Some(&i) => self.probes[i].0.linears.push(linear.to_string()),
            None => {
                self.probe_of.insert(x.name().to_string(), self.probes.len());
                let site = ProbeSite {
                    output: engine::io::probe(linear),
                    features,
                    linears: vec![linear.to_string()],
                };
                self.probes.push((site, x.clone(), rank));
            }
        }
    }

    /// Quantizes a row-major `[out, in]` weight and emits it as a dequantized
    /// `[in, out]` compute-dtype value.
    fn quantized_weight(
        &mut self,
        g: &mut GraphBuilder,
        name: &str,
        values: &[f32],
        (out, inp): (usize, usize),
        scheme: WeightScheme,
    ) -> Result<Value> {
        let dtype = self.opts.numerics.compute;
        match scheme.quantize(name, values, out, inp)? {
            QuantizedWeight::Nvfp4(w) if scheme == WeightScheme::Nvfp4TensorRt => {
                self.quant.nvfp4_tensorrt(g, name, &w, dtype)
            }
            QuantizedWeight::Nvfp4(w) => self.quant.nvfp4_portable(g, name, &w, dtype),
            QuantizedWeight::Fp8(w) if scheme == WeightScheme::Fp8TensorRt => {
                self.quant.fp8_tensorrt(g, name, &w, dtype)
            }
            QuantizedWeight::Fp8(w) => self.quant.fp8_portable(g, name, &w, dtype),
            QuantizedWeight::Blockwise(_) => Err(no_dense_weight(name)),
        }
    }
}
