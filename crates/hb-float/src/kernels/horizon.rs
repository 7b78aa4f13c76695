//! The calibrated model's custom ops (domain `horizon`, see
//! `docs/calibrated-model.md`):
//!
//! - `HzCalibration`: fake quantization (int8 / int16, symmetric or
//!   asymmetric, per tensor or per channel), float16 rounding, or identity.
//! - `HzPreprocess`: `y = (x − mean[c]) · scale[c]` on an image input.
//! - `HzBiasCorrection`: `y = b + offsets` on a bias (switch ON), the
//!   calibration's bias correction; identity when OFF, so the float
//!   reference stays the model with every switch OFF.
//!
//! The math is public ([`FakeQuant`], [`QParams`], [`fake_quant_slice`],
//! [`Preprocess`]) so that calibration, search and the QDQ exporter all use
//! this one implementation. Rounding is half to even, as ONNX
//! `QuantizeLinear`, and every step is the one `QuantizeLinear` →
//! `DequantizeLinear` performs, so a QDQ export reproduces it bit for bit.

use crate::error::OpResult;
use crate::kernels::util::{input, norm_axis};
use crate::registry::{OpCtx, Registry};
use crate::{invalid, unsupported};
use hb_ir::{Attr, Node};
use hb_tensor::{DType, Tensor};
use ndarray::ArrayD;
use rayon::prelude::*;

/// The `horizon` domain name.
pub const DOMAIN: &str = "horizon";

/// Slices at least this long are fake-quantized in parallel.
const PAR_MIN: usize = 1 << 16;
/// Chunk length of the parallel path.
const PAR_CHUNK: usize = 1 << 14;

/// The `qtype` of an `HzCalibration` node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FqType {
    /// 8-bit integer (int8 symmetric, uint8 asymmetric).
    Int8,
    /// 16-bit integer (int16 symmetric, uint16 asymmetric).
    Int16,
    /// IEEE half float: `y = f32(f16(x))`.
    Float16,
    /// Float32: identity.
    Float32,
}

impl FqType {
    /// Parses `int8`, `int16`, `float16`, `float32` (case-insensitive).
    pub fn parse(s: &str) -> Option<FqType> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "int8" => FqType::Int8,
            "int16" => FqType::Int16,
            "float16" => FqType::Float16,
            "float32" | "float" => FqType::Float32,
            _ => return None,
        })
    }

    /// The attribute spelling.
    pub fn name(self) -> &'static str {
        match self {
            FqType::Int8 => "int8",
            FqType::Int16 => "int16",
            FqType::Float16 => "float16",
            FqType::Float32 => "float32",
        }
    }

    /// True for the integer types.
    pub fn is_int(self) -> bool {
        matches!(self, FqType::Int8 | FqType::Int16)
    }
}

/// Quantization parameters of one channel (or of the whole tensor).
///
/// `lo` / `hi` bound `q − z`, the quantized value relative to the zero
/// point: the fake-quantized value is `clamp(round(x / scale), lo, hi) ·
/// scale`, which equals `(clamp(round(x / s) + z, qmin, qmax) − z) · s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    /// The scale `s` (finite, > 0).
    pub scale: f32,
    /// The zero point `z` (0 when symmetric).
    pub zero_point: i32,
    /// Lowest `q − z`: `qmin − z`.
    pub lo: f32,
    /// Highest `q − z`: `qmax − z`.
    pub hi: f32,
}

impl QParams {
    /// The grid data values use under `keep_masks`: `lo` raised to `−hi`,
    /// since the integer program keeps the lowest code for the mask
    /// sentinel (hb-bpu `QuantParams::quantize`): int8 data stops at −127.
    pub fn masked_data(&self) -> QParams {
        QParams {
            lo: self.lo.max(-self.hi),
            ..*self
        }
    }
}

/// The fake quantizer an `HzCalibration` node describes.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuant {
    /// Quantization type.
    pub qtype: FqType,
    /// `[T]` / `[T_0 …]` (symmetric) or `[min, max]` / `[min_0, max_0, …]`
    /// (asymmetric).
    pub thresholds: Vec<f32>,
    /// Channel axis of per-channel thresholds (may be negative).
    pub axis: i64,
    /// Thresholds are `[min, max]` pairs (uint8 / uint16 with zero point).
    pub asymmetric: bool,
    /// `tensor_type = weight`: symmetric weights never use `qmin = −qmax − 1`.
    pub is_weight: bool,
    /// `switch = ON`.
    pub enabled: bool,
    /// `keep_masks = 1`: values at or below `-mask_limit` (attention-mask
    /// sentinels such as `-inf` or the lowest f32) pass unchanged.
    pub keep_masks: bool,
    /// `mask_limit` (default [`MASK_LIMIT`]): the magnitude from which a
    /// negative value is a mask under `keep_masks`. Lower for tensors that
    /// only reach a Softmax (additive masks of `-1e4`, docs/quantization.md).
    pub mask_limit: f32,
    /// `ec = 1` (error compensation, int8 only; docs/integer-semantics.md
    /// §8): the int8 grid refined 256× over the same range, i.e. the value
    /// `256·hi + lo` of two int8 terms. Scale `s/256`, bounds and zero point
    /// ×256 (symmetric weights `[−32512, 32512]`, features `[−32768,
    /// 32512]`), stored as int16 / uint16.
    pub ec: bool,
}

/// Magnitude from which a value counts as a mask sentinel, not data.
pub const MASK_LIMIT: f32 = 1e8;

/// True for a negative mask sentinel (`x ≤ -MASK_LIMIT`, including `-inf`).
#[inline]
pub fn is_negative_mask(x: f32) -> bool {
    x <= -MASK_LIMIT
}

/// The `mask_limit` attribute of an `HzCalibration` node: a finite positive
/// magnitude, else [`MASK_LIMIT`].
fn mask_limit_attr(node: &Node) -> OpResult<f32> {
    let v = node.float_or("mask_limit", MASK_LIMIT)?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(invalid!("mask_limit must be finite and positive, got {v}"))
    }
}

impl FakeQuant {
    /// A symmetric per-tensor feature quantizer of `qtype` with `thresholds`,
    /// switch ON, channel axis 1, no masks, no `ec` (the defaults a node
    /// without further attributes reads as).
    pub fn feature(qtype: FqType, thresholds: &[f32]) -> FakeQuant {
        FakeQuant {
            qtype,
            thresholds: thresholds.to_vec(),
            axis: 1,
            asymmetric: false,
            is_weight: false,
            enabled: true,
            keep_masks: false,
            mask_limit: MASK_LIMIT,
            ec: false,
        }
    }

    /// Reads an `HzCalibration` node's attributes. Defaults: `qtype = int8`,
    /// `tensor_type = feature`, `axis = 1`, `switch = ON`, `asymmetric = 0`.
    pub fn from_node(node: &Node) -> OpResult<FakeQuant> {
        let qt = node.string_or("qtype", "int8")?;
        let qtype = FqType::parse(&qt).ok_or_else(|| invalid!("unknown qtype '{qt}'"))?;
        let tensor_type = node.string_or("tensor_type", "feature")?;
        let is_weight = match tensor_type.to_ascii_lowercase().as_str() {
            "feature" => false,
            "weight" => true,
            other => return Err(invalid!("unknown tensor_type '{other}'")),
        };
        let switch = node.string_or("switch", "ON")?;
        let enabled = match switch.to_ascii_uppercase().as_str() {
            "ON" => true,
            "OFF" => false,
            other => return Err(invalid!("switch must be ON or OFF, got '{other}'")),
        };
        Ok(FakeQuant {
            qtype,
            thresholds: node.get_floats("thresholds")?.unwrap_or_default(),
            axis: node.int_or("axis", 1)?,
            asymmetric: node.int_or("asymmetric", 0)? != 0,
            is_weight,
            enabled,
            keep_masks: node.int_or("keep_masks", 0)? != 0,
            mask_limit: mask_limit_attr(node)?,
            ec: node.int_or("ec", 0)? != 0,
        })
    }

    /// Writes this quantizer's attributes (`thresholds`, `qtype`,
    /// `tensor_type`, `axis`, `switch`, `asymmetric`) into `node`; other
    /// attributes (`constant`, `method`) are left as they are.
    pub fn write_attrs(&self, node: &mut Node) {
        node.set_attr("thresholds", Attr::Floats(self.thresholds.clone()));
        node.set_attr("qtype", Attr::String(self.qtype.name().into()));
        let tt = if self.is_weight { "weight" } else { "feature" };
        node.set_attr("tensor_type", Attr::String(tt.into()));
        node.set_attr("axis", Attr::Int(self.axis));
        let sw = if self.enabled { "ON" } else { "OFF" };
        node.set_attr("switch", Attr::String(sw.into()));
        node.set_attr("asymmetric", Attr::Int(i64::from(self.asymmetric)));
        if self.keep_masks {
            node.set_attr("keep_masks", Attr::Int(1));
        }
        if self.mask_limit != MASK_LIMIT {
            node.set_attr("mask_limit", Attr::Float(self.mask_limit));
        }
        if self.ec {
            node.set_attr("ec", Attr::Int(1));
        }
    }

    /// An `HzCalibration` node (domain `horizon`) with these attributes.
    pub fn to_node(&self, name: &str, input: &str, output: &str) -> Node {
        let mut n = Node::new(name, "HzCalibration", &[input], &[output]);
        n.domain = DOMAIN.into();
        self.write_attrs(&mut n);
        n
    }

    /// True when the node does not change its input (`switch = OFF` or
    /// `qtype = float32`).
    pub fn is_identity(&self) -> bool {
        !self.enabled || self.qtype == FqType::Float32
    }

    /// Number of channels the thresholds describe (1 = per tensor).
    pub fn num_channels(&self) -> usize {
        if self.asymmetric {
            (self.thresholds.len() / 2).max(1)
        } else {
            self.thresholds.len().max(1)
        }
    }

    /// True when the thresholds are per channel.
    pub fn is_per_channel(&self) -> bool {
        self.num_channels() > 1
    }

    /// True when error compensation applies: `ec = 1` on an int8 node (an
    /// `ec` flag on other qtypes has no effect).
    pub fn is_ec(&self) -> bool {
        self.ec && self.qtype == FqType::Int8
    }

    /// The largest value of the qtype's grid that the thresholds map to:
    /// 127 / 32767 symmetric, 255 / 65535 asymmetric; `None` for floats.
    fn grid_qmax(&self) -> Option<i32> {
        match (self.qtype, self.asymmetric) {
            (FqType::Int8, false) => Some(127),
            (FqType::Int16, false) => Some(32767),
            (FqType::Int8, true) => Some(255),
            (FqType::Int16, true) => Some(65535),
            _ => None,
        }
    }

    /// The largest quantized value of the storage type (`qmax`): 127 /
    /// 32767 symmetric, 255 / 65535 asymmetric (ec: 32767 / 65535, the
    /// int16 / uint16 that holds `256·hi + lo`); `None` for float types.
    pub fn qmax(&self) -> Option<i32> {
        match (self.is_ec(), self.asymmetric) {
            (true, false) => Some(32767),
            (true, true) => Some(65535),
            _ => self.grid_qmax(),
        }
    }

    /// The integer type `QuantizeLinear` stores into: int8 / int16
    /// (symmetric), uint8 / uint16 (asymmetric), int16 / uint16 for ec;
    /// `None` for float types.
    pub fn storage_dtype(&self) -> Option<DType> {
        match (self.qtype, self.asymmetric, self.is_ec()) {
            (FqType::Int8, false, false) => Some(DType::I8),
            (FqType::Int16, false, _) | (FqType::Int8, false, true) => Some(DType::I16),
            (FqType::Int8, true, false) => Some(DType::U8),
            (FqType::Int16, true, _) | (FqType::Int8, true, true) => Some(DType::U16),
            _ => None,
        }
    }

    /// Scale, zero point and range of every channel (one entry per tensor
    /// when per tensor). Fails for float types and for thresholds that are
    /// missing, malformed, not finite or give a zero scale.
    pub fn params(&self) -> OpResult<Vec<QParams>> {
        let p = self.grid_params()?;
        if !self.is_ec() {
            return Ok(p);
        }
        // ec: the same range on a 256× finer grid (exact: powers of two).
        Ok(p.into_iter()
            .map(|p| QParams {
                scale: p.scale / 256.0,
                zero_point: p.zero_point * 256,
                lo: p.lo * 256.0,
                hi: p.hi * 256.0,
            })
            .collect())
    }

    /// [`Self::params`] on the qtype's own grid (before the ec refinement).
    fn grid_params(&self) -> OpResult<Vec<QParams>> {
        let qmax = self
            .grid_qmax()
            .ok_or_else(|| invalid!("qtype {} has no integer parameters", self.qtype.name()))?;
        let th = &self.thresholds;
        if th.is_empty() {
            return Err(invalid!("HzCalibration: thresholds are missing"));
        }
        let qmax_f = qmax as f32;
        if self.asymmetric {
            if !th.chunks_exact(2).remainder().is_empty() {
                return Err(invalid!(
                    "asymmetric thresholds must be [min, max] pairs, got {} values",
                    th.len()
                ));
            }
            th.chunks_exact(2)
                .map(|mm| {
                    let (lo, hi) = (mm[0].min(0.0), mm[1].max(0.0));
                    let s = (hi - lo) / qmax_f;
                    if !(mm[0].is_finite() && mm[1].is_finite() && s.is_finite() && s > 0.0) {
                        return Err(invalid!(
                            "asymmetric thresholds [{}, {}] give no valid scale",
                            mm[0],
                            mm[1]
                        ));
                    }
                    let z = (-lo / s).round_ties_even().clamp(0.0, qmax_f);
                    Ok(QParams {
                        scale: s,
                        zero_point: z as i32,
                        lo: -z,
                        hi: qmax_f - z,
                    })
                })
                .collect()
        } else {
            let lo = if self.is_weight {
                -qmax_f
            } else {
                -qmax_f - 1.0
            };
            th.iter()
                .map(|&t| {
                    let s = t / qmax_f;
                    if !(t.is_finite() && s.is_finite() && s > 0.0) {
                        return Err(invalid!("threshold {t} is not finite and positive"));
                    }
                    Ok(QParams {
                        scale: s,
                        zero_point: 0,
                        lo,
                        hi: qmax_f,
                    })
                })
                .collect()
        }
    }

    /// Fake-quantizes a contiguous f32 slice in place with per-tensor
    /// thresholds. Fails for per-channel thresholds (use [`Self::apply`] or
    /// [`Self::apply_array`]) and for invalid thresholds.
    pub fn apply_slice_per_tensor(&self, xs: &mut [f32]) -> OpResult<()> {
        if self.is_identity() {
            return Ok(());
        }
        if self.keep_masks && self.qtype == FqType::Float16 {
            for x in xs.iter_mut() {
                if *x > -self.mask_limit {
                    *x = half::f16::from_f32(*x).to_f32();
                }
            }
            return Ok(());
        }
        match self.qtype {
            FqType::Float16 => {
                round_f16_slice(xs);
                Ok(())
            }
            _ => {
                if self.is_per_channel() {
                    return Err(invalid!(
                        "apply_slice_per_tensor on per-channel thresholds ({} channels)",
                        self.num_channels()
                    ));
                }
                let p = self.params()?;
                if self.keep_masks {
                    fake_quant_slice_masked(xs, &p[0], self.mask_limit);
                } else {
                    fake_quant_slice(xs, &p[0]);
                }
                Ok(())
            }
        }
    }

    /// Fake-quantizes an f32 array in place (per tensor or per channel
    /// along [`Self::axis`]).
    pub fn apply_array(&self, x: &mut ArrayD<f32>) -> OpResult<()> {
        if self.is_identity() {
            return Ok(());
        }
        if !x.is_standard_layout() {
            *x = x.as_standard_layout().into_owned();
        }
        let shape = x.shape().to_vec();
        let xs = x
            .as_slice_mut()
            .ok_or_else(|| invalid!("array is not contiguous"))?;
        if self.qtype == FqType::Float16 {
            if self.keep_masks {
                for x in xs.iter_mut() {
                    if *x > -self.mask_limit {
                        *x = half::f16::from_f32(*x).to_f32();
                    }
                }
            } else {
                round_f16_slice(xs);
            }
            return Ok(());
        }
        let p = self.params()?;
        let keep = self.keep_masks;
        if p.len() == 1 {
            if keep {
                fake_quant_slice_masked(xs, &p[0], self.mask_limit);
            } else {
                fake_quant_slice(xs, &p[0]);
            }
            return Ok(());
        }
        let ax = norm_axis(self.axis, shape.len())?;
        if shape.get(ax) != Some(&p.len()) {
            return Err(invalid!(
                "{} per-channel thresholds do not match axis {ax} of shape {shape:?}",
                p.len()
            ));
        }
        let inner: usize = shape[ax + 1..].iter().product();
        if inner == 0 {
            return Ok(());
        }
        // Blocks start at channel 0, so row k of a block is channel k % C.
        let per_outer = p.len() * inner;
        let go = |block: &mut [f32]| {
            for (k, row) in block.chunks_mut(inner).enumerate() {
                if keep {
                    fake_quant_serial_masked(row, &p[k % p.len()], self.mask_limit);
                } else {
                    fake_quant_serial(row, &p[k % p.len()]);
                }
            }
        };
        if xs.len() >= PAR_MIN && crate::threads::kernel_threads() > 1 {
            let chunk = per_outer * (PAR_CHUNK / per_outer).max(1);
            xs.par_chunks_mut(chunk).for_each(go);
        } else {
            go(xs);
        }
        Ok(())
    }

    /// Applies the node to a float tensor. The result has the input's
    /// element type (non-f32 inputs are computed in f32 and cast back).
    pub fn apply(&self, x: &Tensor) -> OpResult<Tensor> {
        let dt = x.dtype();
        if !dt.is_float() {
            return Err(unsupported!("HzCalibration of {dt}"));
        }
        if self.is_identity() {
            return Ok(x.clone());
        }
        let mut a = x.to_f32()?;
        self.apply_array(&mut a)?;
        let y = Tensor::F32(a);
        Ok(if dt == DType::F32 { y } else { y.cast(dt)? })
    }
}

/// `1.5 · 2^23`: adding and subtracting it rounds an f32 of magnitude below
/// 2^22 to an integer, half to even (the default rounding mode).
const ROUND_MAGIC: f32 = 12_582_912.0;

crate::multiversion! {
/// The serial fake-quant loop: `clamp(round_half_even(x / s), lo, hi) · s`,
/// NaN → `q = 0` (i.e. `−z`), as our `QuantizeLinear` kernel.
fn fake_quant_serial(xs: &mut [f32], p: &QParams) {
    let (s, lo, hi) = (p.scale, p.lo, p.hi);
    let nan_v = -(p.zero_point as f32);
    for x in xs.iter_mut() {
        let v = *x / s;
        let v = if v.is_nan() { nan_v } else { v };
        // Clamping before rounding is exact: lo and hi are integers.
        let v = if v < lo { lo } else { v };
        let v = if v > hi { hi } else { v };
        *x = ((v + ROUND_MAGIC) - ROUND_MAGIC) * s;
    }
}
}

crate::multiversion! {
/// [`fake_quant_serial`] leaving negative mask values (`x ≤ -limit`)
/// unchanged (`keep_masks = 1`), in one pass; data on the
/// [`QParams::masked_data`] grid.
fn fake_quant_serial_masked(xs: &mut [f32], p: &QParams, limit: f32) {
    let p = p.masked_data();
    let (s, lo, hi) = (p.scale, p.lo, p.hi);
    let nan_v = -(p.zero_point as f32);
    for x in xs.iter_mut() {
        let x0 = *x;
        let v = x0 / s;
        let v = if v.is_nan() { nan_v } else { v };
        let v = if v < lo { lo } else { v };
        let v = if v > hi { hi } else { v };
        let q = ((v + ROUND_MAGIC) - ROUND_MAGIC) * s;
        *x = if x0 <= -limit { x0 } else { q };
    }
}
}

/// [`fake_quant_slice`] leaving negative mask values (`x ≤ -limit`)
/// unchanged.
pub fn fake_quant_slice_masked(xs: &mut [f32], p: &QParams, limit: f32) {
    if xs.len() >= PAR_MIN && crate::threads::kernel_threads() > 1 {
        xs.par_chunks_mut(PAR_CHUNK)
            .for_each(|c| fake_quant_serial_masked(c, p, limit));
    } else {
        fake_quant_serial_masked(xs, p, limit);
    }
}

/// Fake-quantizes `xs` in place with one channel's parameters (parallel for
/// long slices). This is the hot path of calibration and search.
pub fn fake_quant_slice(xs: &mut [f32], p: &QParams) {
    if xs.len() >= PAR_MIN && crate::threads::kernel_threads() > 1 {
        xs.par_chunks_mut(PAR_CHUNK)
            .for_each(|c| fake_quant_serial(c, p));
    } else {
        fake_quant_serial(xs, p);
    }
}

/// Rounds every value to float16 and back (`f32(f16(x))`, nearest even,
/// overflow to ±inf), in place.
pub fn round_f16_slice(xs: &mut [f32]) {
    let go = |c: &mut [f32]| {
        for x in c.iter_mut() {
            *x = half::f16::from_f32(*x).to_f32();
        }
    };
    if xs.len() >= PAR_MIN && crate::threads::kernel_threads() > 1 {
        xs.par_chunks_mut(PAR_CHUNK).for_each(go);
    } else {
        go(xs);
    }
}

/// The input preprocessing an `HzPreprocess` node describes:
/// `y = (x − mean[c]) · scale[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Per-channel means (or one value).
    pub mean: Vec<f32>,
    /// Per-channel scales (or one value).
    pub scale: Vec<f32>,
    /// Channel axis (1 for NCHW, 3 for NHWC; may be negative).
    pub axis: i64,
}

impl Preprocess {
    /// Reads an `HzPreprocess` node. Missing `mean` means 0 and missing
    /// `scale` means 1; `axis` defaults to 1.
    pub fn from_node(node: &Node) -> OpResult<Preprocess> {
        let mean = node.get_floats("mean")?.unwrap_or_else(|| vec![0.0]);
        let scale = node.get_floats("scale")?.unwrap_or_else(|| vec![1.0]);
        if mean.is_empty() || scale.is_empty() {
            return Err(invalid!("HzPreprocess: empty mean or scale"));
        }
        Ok(Preprocess {
            mean,
            scale,
            axis: node.int_or("axis", 1)?,
        })
    }

    /// Writes `mean`, `scale` and `axis` into `node`.
    pub fn write_attrs(&self, node: &mut Node) {
        node.set_attr("mean", Attr::Floats(self.mean.clone()));
        node.set_attr("scale", Attr::Floats(self.scale.clone()));
        node.set_attr("axis", Attr::Int(self.axis));
    }

    /// An `HzPreprocess` node (domain `horizon`) with these attributes.
    pub fn to_node(&self, name: &str, input: &str, output: &str) -> Node {
        let mut n = Node::new(name, "HzPreprocess", &[input], &[output]);
        n.domain = DOMAIN.into();
        self.write_attrs(&mut n);
        n
    }

    /// Applies the preprocessing: any numeric input, f32 output.
    pub fn apply(&self, x: &Tensor) -> OpResult<Tensor> {
        if x.dtype() == DType::String {
            return Err(unsupported!("HzPreprocess of strings"));
        }
        let mut a = x.to_f32()?;
        if !a.is_standard_layout() {
            a = a.as_standard_layout().into_owned();
        }
        let shape = a.shape().to_vec();
        let channels = self.mean.len().max(self.scale.len());
        let (c, inner) = if channels == 1 {
            (1, a.len().max(1))
        } else {
            let ax = norm_axis(self.axis, shape.len())?;
            (shape[ax], shape[ax + 1..].iter().product::<usize>())
        };
        for (name, v) in [("mean", &self.mean), ("scale", &self.scale)] {
            if v.len() != 1 && v.len() != c {
                return Err(invalid!(
                    "HzPreprocess: {} {name} values for {c} channels of {shape:?}",
                    v.len()
                ));
            }
        }
        let pick = |v: &[f32], k: usize| if v.len() == 1 { v[0] } else { v[k] };
        if let Some(xs) = a.as_slice_mut() {
            if inner > 0 {
                for (k, row) in xs.chunks_mut(inner).enumerate() {
                    let (m, s) = (pick(&self.mean, k % c), pick(&self.scale, k % c));
                    for x in row.iter_mut() {
                        *x = (*x - m) * s;
                    }
                }
            }
        }
        Ok(Tensor::F32(a))
    }
}

/// The bias correction an `HzBiasCorrection` node describes: `y = b +
/// offsets` along the bias's last axis (a one-element bias is broadcast to
/// the offsets' length), when `switch = ON`.
#[derive(Debug, Clone, PartialEq)]
pub struct BiasCorrection {
    /// Per output channel (the last axis of the bias).
    pub offsets: Vec<f32>,
    /// `switch = ON`.
    pub enabled: bool,
}

impl BiasCorrection {
    /// Reads an `HzBiasCorrection` node (`offsets`, `switch` default ON).
    pub fn from_node(node: &Node) -> OpResult<BiasCorrection> {
        let switch = node.string_or("switch", "ON")?;
        let enabled = match switch.to_ascii_uppercase().as_str() {
            "ON" => true,
            "OFF" => false,
            other => return Err(invalid!("switch must be ON or OFF, got '{other}'")),
        };
        let offsets = node
            .get_floats("offsets")?
            .ok_or_else(|| invalid!("HzBiasCorrection: offsets are missing"))?;
        Ok(BiasCorrection { offsets, enabled })
    }

    /// An `HzBiasCorrection` node (domain `horizon`) with these attributes.
    pub fn to_node(&self, name: &str, input: &str, output: &str) -> Node {
        let mut n = Node::new(name, "HzBiasCorrection", &[input], &[output]);
        n.domain = DOMAIN.into();
        n.set_attr("offsets", Attr::Floats(self.offsets.clone()));
        let sw = if self.enabled { "ON" } else { "OFF" };
        n.set_attr("switch", Attr::String(sw.into()));
        n
    }

    /// Applies the correction to a float bias.
    pub fn apply(&self, b: &Tensor) -> OpResult<Tensor> {
        let dt = b.dtype();
        if !dt.is_float() {
            return Err(unsupported!("HzBiasCorrection of {dt}"));
        }
        if !self.enabled {
            return Ok(b.clone());
        }
        let a = b.to_f32()?;
        let c = self.offsets.len();
        let y = if a.len() == 1 && c != 1 {
            let v = a.iter().next().copied().unwrap_or(0.0);
            let vals: Vec<f32> = self.offsets.iter().map(|o| v + o).collect();
            ArrayD::from_shape_vec(vec![c], vals).map_err(|e| invalid!("{e}"))?
        } else {
            if a.shape().last() != Some(&c) {
                return Err(invalid!(
                    "HzBiasCorrection: {c} offsets for a bias of shape {:?}",
                    a.shape()
                ));
            }
            let mut a = a.as_standard_layout().into_owned();
            if let Some(xs) = a.as_slice_mut() {
                for row in xs.chunks_mut(c) {
                    for (x, o) in row.iter_mut().zip(&self.offsets) {
                        *x += o;
                    }
                }
            }
            a
        };
        let y = Tensor::F32(y);
        Ok(if dt == DType::F32 { y } else { y.cast(dt)? })
    }
}

fn hz_bias_correction(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let b = BiasCorrection::from_node(ctx.node)?;
    Ok(vec![b.apply(input(inputs, 0)?)?])
}

fn hz_calibration(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let fq = FakeQuant::from_node(ctx.node)?;
    Ok(vec![fq.apply(input(inputs, 0)?)?])
}

/// [`hz_calibration`] quantizing a float32 input 0 in its own buffer.
fn hz_calibration_in_place(
    ctx: &OpCtx,
    x: Tensor,
    _inputs: &[Option<&Tensor>],
) -> OpResult<std::result::Result<Vec<Tensor>, Tensor>> {
    let Tensor::F32(mut a) = x else {
        return Ok(Err(x));
    };
    FakeQuant::from_node(ctx.node)?.apply_array(&mut a)?;
    Ok(Ok(vec![Tensor::F32(a)]))
}

fn hz_preprocess(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let p = Preprocess::from_node(ctx.node)?;
    Ok(vec![p.apply(input(inputs, 0)?)?])
}

/// Registers `horizon::HzCalibration`, `horizon::HzPreprocess` and
/// `horizon::HzBiasCorrection`.
pub fn register(r: &mut Registry) {
    r.register_in(DOMAIN, "HzCalibration", hz_calibration);
    r.register_in_place(DOMAIN, "HzCalibration", hz_calibration_in_place);
    r.register_in(DOMAIN, "HzPreprocess", hz_preprocess);
    r.register_in(DOMAIN, "HzBiasCorrection", hz_bias_correction);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{data, node, run, t};
    use proptest::prelude::*;

    fn fq(qtype: FqType, th: &[f32]) -> FakeQuant {
        FakeQuant::feature(qtype, th)
    }

    /// The spec's formula, written plainly (f64 for the integer part).
    fn reference(x: f32, s: f32, z: f64, qmin: f64, qmax: f64) -> f32 {
        let v = (x / s).round_ties_even();
        let q = if v.is_nan() {
            0.0
        } else {
            (f64::from(v) + z).clamp(qmin, qmax)
        };
        ((q - z) as f32) * s
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn specials() -> Vec<f32> {
        vec![
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-30,
        ]
    }

    #[test]
    fn per_tensor_int8_rounds_half_even_and_saturates() {
        let q = fq(FqType::Int8, &[127.0]); // s = 1
        let mut xs = vec![0.5, 1.5, 2.5, -0.5, -1.5, 126.6, 200.0, -127.6, -300.0];
        q.apply_slice_per_tensor(&mut xs).unwrap();
        assert_eq!(
            xs,
            vec![0.0, 2.0, 2.0, -0.0, -2.0, 127.0, 127.0, -128.0, -128.0]
        );
        let q = fq(FqType::Int8, &[2.0]);
        let s = 2.0f32 / 127.0;
        let mut xs: Vec<f32> = (-300..300).map(|k| k as f32 * 0.01).collect();
        let want: Vec<f32> = xs
            .iter()
            .map(|&x| reference(x, s, 0.0, -128.0, 127.0))
            .collect();
        q.apply_slice_per_tensor(&mut xs).unwrap();
        assert_eq!(bits(&xs), bits(&want));
    }

    #[test]
    fn kept_masks_leave_the_lowest_code_to_the_sentinel() {
        // As the integer Quantize: data stops at −127·s, masks stay as they are.
        let mut q = fq(FqType::Int8, &[127.0]); // s = 1
        q.keep_masks = true;
        let mut xs = vec![-127.6, -130.0, 5.2, -1e9, f32::NEG_INFINITY, 200.0];
        q.apply_slice_per_tensor(&mut xs).unwrap();
        assert_eq!(
            xs,
            vec![-127.0, -127.0, 5.0, -1e9, f32::NEG_INFINITY, 127.0]
        );
    }

    #[test]
    fn nan_and_infinities() {
        let q = fq(FqType::Int8, &[1.27]);
        let s = 1.27f32 / 127.0;
        let mut xs = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        q.apply_slice_per_tensor(&mut xs).unwrap();
        assert_eq!(xs, vec![0.0, 127.0 * s, -128.0 * s]);
        let mut w = q.clone();
        w.is_weight = true;
        let mut xs = vec![f32::NAN, f32::NEG_INFINITY];
        w.apply_slice_per_tensor(&mut xs).unwrap();
        assert_eq!(xs, vec![0.0, -127.0 * s]);
        // Asymmetric NaN: q = 0, i.e. y = -z·s (as QuantizeLinear's NaN → 0).
        let a = FakeQuant {
            asymmetric: true,
            thresholds: vec![-1.0, 3.0],
            ..q.clone()
        };
        let p = a.params().unwrap()[0];
        let mut xs = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        a.apply_slice_per_tensor(&mut xs).unwrap();
        let z = p.zero_point as f32;
        assert_eq!(xs, vec![-z * p.scale, (255.0 - z) * p.scale, -z * p.scale]);
    }

    #[test]
    fn weights_never_use_minus_128() {
        let mut w = fq(FqType::Int8, &[1.0]);
        w.is_weight = true;
        let s = 1.0f32 / 127.0;
        let mut xs = vec![-1.0, -1.003, -5.0, 1.003, 5.0];
        w.apply_slice_per_tensor(&mut xs).unwrap();
        assert_eq!(
            xs,
            vec![-127.0 * s, -127.0 * s, -127.0 * s, 127.0 * s, 127.0 * s]
        );
        let mut w16 = fq(FqType::Int16, &[1.0]);
        w16.is_weight = true;
        let mut xs = vec![-5.0];
        w16.apply_slice_per_tensor(&mut xs).unwrap();
        assert_eq!(xs, vec![-32767.0 * (1.0f32 / 32767.0)]);
    }

    #[test]
    fn int16_per_tensor() {
        let q = fq(FqType::Int16, &[3.0]);
        let s = 3.0f32 / 32767.0;
        let mut xs: Vec<f32> = crate::kernels::testutil::rand_vals(1000, 7)
            .into_iter()
            .map(|v| v * 4.0)
            .chain(specials())
            .collect();
        let want: Vec<f32> = xs
            .iter()
            .map(|&x| reference(x, s, 0.0, -32768.0, 32767.0))
            .collect();
        q.apply_slice_per_tensor(&mut xs).unwrap();
        assert_eq!(bits(&xs), bits(&want));
    }

    #[test]
    fn per_channel_along_axis() {
        let mut q = fq(FqType::Int8, &[127.0, 12.7, 1.27]);
        let x = t(
            &[2, 3, 2],
            vec![
                1.26, 1.26, 1.26, 1.26, 1.26, 1.26, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0,
            ],
        );
        let y = q.apply(&x).unwrap();
        let s = [1.0f32, 0.1, 0.01];
        let want: Vec<f32> = data(&x)
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                reference(
                    v,
                    127.0f32.min([127.0, 12.7, 1.27][(i / 2) % 3]) / 127.0,
                    0.0,
                    -128.0,
                    127.0,
                )
            })
            .collect();
        assert_eq!(bits(&data(&y)), bits(&want));
        assert_eq!(data(&y)[0], 1.0 * s[0]);
        // Axis 0 (weights) and a mismatched channel count.
        q.axis = 0;
        assert!(q.apply(&x).is_err());
        q.thresholds = vec![1.0, 2.0];
        q.is_weight = true;
        let y = q.apply(&x).unwrap();
        assert_eq!(
            data(&y)[0],
            reference(1.26, 1.0 / 127.0, 0.0, -127.0, 127.0)
        );
        assert_eq!(data(&y)[6], reference(3.0, 2.0 / 127.0, 0.0, -127.0, 127.0));
        assert!(q.apply_slice_per_tensor(&mut [1.0]).is_err());
    }

    #[test]
    fn asymmetric_widens_range_to_zero() {
        let mut a = fq(FqType::Int8, &[0.5, 2.55]);
        a.asymmetric = true;
        let p = a.params().unwrap()[0];
        assert_eq!((p.scale, p.zero_point), (2.55f32 / 255.0, 0));
        let mut xs = vec![-1.0, 0.0, 1.0, 3.0];
        a.apply_slice_per_tensor(&mut xs).unwrap();
        assert_eq!(xs[0], 0.0);
        assert_eq!(xs[3], 255.0 * p.scale);
        a.thresholds = vec![-1.0, 3.0];
        let p = a.params().unwrap()[0];
        let s = 4.0f32 / 255.0;
        assert_eq!(p.scale, s);
        assert_eq!(p.zero_point, 64); // round(63.75)
        let mut xs: Vec<f32> = (-50..50)
            .map(|k| k as f32 * 0.1)
            .chain(specials())
            .collect();
        let want: Vec<f32> = xs
            .iter()
            .map(|&x| reference(x, s, 64.0, 0.0, 255.0))
            .collect();
        a.apply_slice_per_tensor(&mut xs).unwrap();
        assert_eq!(bits(&xs), bits(&want));
        // uint16
        a.qtype = FqType::Int16;
        assert_eq!(a.params().unwrap()[0].scale, 4.0f32 / 65535.0);
        assert_eq!(a.storage_dtype(), Some(DType::U16));
        a.thresholds = vec![-1.0];
        assert!(a.params().is_err());
    }

    #[test]
    fn float16_rounding_and_overflow() {
        let q = fq(FqType::Float16, &[]);
        let mut xs = vec![
            1.000_488_3,
            1.001_464_8,
            65520.0,
            65519.0,
            -1e9,
            f32::NAN,
            1e-8,
        ];
        q.apply_slice_per_tensor(&mut xs).unwrap();
        assert_eq!(xs[0], 1.0);
        assert_eq!(xs[1], 1.001_953_1);
        assert_eq!(xs[2], f32::INFINITY);
        assert_eq!(xs[3], 65504.0);
        assert_eq!(xs[4], f32::NEG_INFINITY);
        assert!(xs[5].is_nan());
        assert_eq!(xs[6], half::f16::from_f32(1e-8).to_f32());
    }

    #[test]
    fn off_and_float32_are_identity() {
        let mut q = fq(FqType::Int8, &[f32::NAN]);
        q.enabled = false;
        let x = t(&[3], vec![0.123, f32::NAN, -7.0]);
        assert_eq!(bits(&data(&q.apply(&x).unwrap())), bits(&data(&x)));
        let q = fq(FqType::Float32, &[]);
        assert_eq!(bits(&data(&q.apply(&x).unwrap())), bits(&data(&x)));
    }

    #[test]
    fn invalid_thresholds_and_attributes() {
        for th in [
            vec![],
            vec![0.0],
            vec![-1.0],
            vec![f32::INFINITY],
            vec![f32::NAN],
        ] {
            assert!(fq(FqType::Int8, &th).params().is_err(), "{th:?}");
        }
        let n = node(
            "HzCalibration",
            vec![("qtype", Attr::String("int4".into()))],
        );
        assert!(FakeQuant::from_node(&n).is_err());
        let n = node(
            "HzCalibration",
            vec![("switch", Attr::String("maybe".into()))],
        );
        assert!(FakeQuant::from_node(&n).is_err());
        let x = Tensor::from_vec(&[1], vec![3i32]).unwrap();
        assert!(fq(FqType::Int8, &[1.0]).apply(&x).is_err());
    }

    #[test]
    fn node_round_trip_and_kernel() {
        let mut q = fq(FqType::Int16, &[1.0, 2.0]);
        q.is_weight = true;
        q.axis = 0;
        let n = q.to_node("w_HzCalibration", "w", "w_calibrated");
        assert_eq!(n.domain, "horizon");
        assert_eq!(FakeQuant::from_node(&n).unwrap(), q);
        let x = t(&[2, 2], vec![0.5, -3.0, 0.5, -3.0]);
        let y = run(hz_calibration, &n, 1, &[Some(&x)]).unwrap();
        assert_eq!(data(&y[0]), data(&q.apply(&x).unwrap()));
        // f16 input: computed in f32, cast back.
        let xh = x.cast(DType::F16).unwrap();
        let yh = run(hz_calibration, &n, 1, &[Some(&xh)]).unwrap();
        assert_eq!(yh[0].dtype(), DType::F16);
        assert!(Registry::standard().supports("horizon", "HzCalibration"));
        assert!(Registry::standard().supports("horizon", "HzPreprocess"));
    }

    #[test]
    fn bias_correction_adds_offsets_when_on() {
        let bc = BiasCorrection {
            offsets: vec![0.5, -1.0],
            enabled: true,
        };
        let n = bc.to_node("b_HzBiasCorrection", "b", "b_corrected");
        assert_eq!(BiasCorrection::from_node(&n).unwrap(), bc);
        let y = run(hz_bias_correction, &n, 1, &[Some(&t(&[2], vec![1.0, 2.0]))]).unwrap();
        assert_eq!(data(&y[0]), vec![1.5, 1.0]);
        // [1, 1, 2] bias (torch's Add constant): along the last axis.
        let y = bc.apply(&t(&[1, 1, 2], vec![1.0, 2.0])).unwrap();
        assert_eq!(
            (y.shape().to_vec(), data(&y)),
            (vec![1, 1, 2], vec![1.5, 1.0])
        );
        // A scalar bias is broadcast to one value per channel.
        let y = bc.apply(&t(&[1], vec![3.0])).unwrap();
        assert_eq!(data(&y), vec![3.5, 2.0]);
        let off = BiasCorrection {
            enabled: false,
            ..bc.clone()
        };
        assert_eq!(
            data(&off.apply(&t(&[2], vec![1.0, 2.0])).unwrap()),
            vec![1.0, 2.0]
        );
        assert!(bc.apply(&t(&[3], vec![1.0, 2.0, 3.0])).is_err());
        assert!(Registry::standard().supports("horizon", "HzBiasCorrection"));
    }

    #[test]
    fn large_tensors_take_the_parallel_path() {
        let q = fq(FqType::Int8, &[1.0, 0.5]);
        let n = 2 * PAR_MIN + 6;
        let x = t(&[1, 2, n / 2], crate::kernels::testutil::rand_vals(n, 3));
        let y = q.apply(&x).unwrap();
        let want: Vec<f32> = data(&x)
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let th = if i < n / 2 { 1.0f32 } else { 0.5 };
                reference(v, th / 127.0, 0.0, -128.0, 127.0)
            })
            .collect();
        assert_eq!(bits(&data(&y)), bits(&want));
    }

    #[test]
    fn preprocess_per_channel_and_scalar() {
        let p = Preprocess {
            mean: vec![1.0, 2.0],
            scale: vec![0.5],
            axis: 1,
        };
        let x = Tensor::from_vec(&[1, 2, 2], vec![3u8, 5, 3, 5]).unwrap();
        let y = run(hz_preprocess, &p.to_node("pp", "x", "y"), 1, &[Some(&x)]).unwrap();
        assert_eq!(data(&y[0]), vec![1.0, 2.0, 0.5, 1.5]);
        let nhwc = Preprocess {
            mean: vec![1.0, 2.0],
            scale: vec![1.0, 10.0],
            axis: -1,
        };
        let x = t(&[1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(data(&nhwc.apply(&x).unwrap()), vec![0.0, 0.0, 2.0, 20.0]);
        let bad = Preprocess {
            mean: vec![1.0, 2.0, 3.0],
            ..p
        };
        assert!(bad.apply(&x).is_err());
    }

    /// Runs our QuantizeLinear → DequantizeLinear kernels with the scale and
    /// zero point [`FakeQuant::params`] gives (what the QDQ export writes).
    /// ec as docs/integer-semantics.md §8 writes it, plainly: `W =
    /// clamp(rne(w / (s/256)), lo, hi)` and its int8 split.
    fn ec_reference(x: f32, s: f32, lo: f64, hi: f64) -> (f32, i32) {
        let fine = s / 256.0;
        let v = f64::from((x / fine).round_ties_even());
        let q = if v.is_nan() { 0.0 } else { v.clamp(lo, hi) };
        ((q as f32) * fine, q as i32)
    }

    #[test]
    fn ec_weights_are_the_int8_grid_refined_256_times() {
        let t = 0.8f32;
        let s = t / 127.0;
        let mut w = fq(FqType::Int8, &[t]);
        w.is_weight = true;
        w.ec = true;
        let p = w.params().unwrap()[0];
        assert_eq!((p.scale, p.lo, p.hi), (s / 256.0, -32512.0, 32512.0));
        assert_eq!(w.storage_dtype(), Some(DType::I16));
        let xs: Vec<f32> = (-1990..=1990).map(|k| k as f32 * 0.000_401).collect();
        let mut got = xs.clone();
        w.apply_slice_per_tensor(&mut got).unwrap();
        let mut plain = xs.clone();
        fq(FqType::Int8, &[t])
            .apply_slice_per_tensor(&mut plain)
            .unwrap();
        let (mut err_ec, mut err_int8) = (0f32, 0f32);
        for ((&x, &y), &y8) in xs.iter().zip(&got).zip(&plain) {
            let (want, q) = ec_reference(x, s, -32512.0, 32512.0);
            assert_eq!(y.to_bits(), want.to_bits(), "x = {x}");
            // The two int8 terms of the integer machine: W = 256·hi + lo.
            let hi = (q + 128) >> 8;
            let lo = q - 256 * hi;
            assert!((-127..=127).contains(&hi) && (-128..=127).contains(&lo));
            assert_eq!(256 * hi + lo, q);
            err_ec = err_ec.max((x - y).abs());
            err_int8 = err_int8.max((x - y8).abs());
        }
        assert!(err_ec <= s / 512.0 * 1.001, "{err_ec}");
        assert!(err_ec * 100.0 < err_int8, "ec {err_ec} vs int8 {err_int8}");
        // Saturation: the same range as int8 weights, ±127·s.
        let mut big = vec![5.0, -5.0];
        w.apply_slice_per_tensor(&mut big).unwrap();
        assert_eq!(big, vec![127.0 * s, -127.0 * s]);
    }

    #[test]
    fn ec_features_keep_the_int8_range_and_per_channel_scales() {
        let mut f = fq(FqType::Int8, &[1.27, 2.54]);
        f.ec = true;
        let p = f.params().unwrap();
        assert_eq!((p[0].lo, p[0].hi), (-32768.0, 32512.0));
        assert_eq!(p[1].scale, 2.54 / 127.0 / 256.0);
        // [1, 2, 2]: channel 0 = [0.0123, 9], channel 1 = [-9, 0.0123]
        let x = t(&[1, 2, 2], vec![0.0123, 9.0, -9.0, 0.0123]);
        let y = data(&f.apply(&x).unwrap());
        let (s0, s1) = (1.27f32 / 127.0, 2.54f32 / 127.0);
        assert_eq!(y[0], ec_reference(0.0123, s0, -32768.0, 32512.0).0);
        assert_eq!(y[1], 127.0 * s0);
        assert_eq!(y[2], -128.0 * s1);
        assert_eq!(y[3], ec_reference(0.0123, s1, -32768.0, 32512.0).0);
        // Asymmetric: zero point and bounds ×256, uint16 storage.
        let a = FakeQuant {
            asymmetric: true,
            thresholds: vec![-1.0, 3.0],
            ..f.clone()
        };
        let (p8, pe) = (
            FakeQuant {
                ec: false,
                ..a.clone()
            }
            .params()
            .unwrap()[0],
            a.params().unwrap()[0],
        );
        assert_eq!(pe.zero_point, 256 * p8.zero_point);
        assert_eq!((pe.lo, pe.hi), (256.0 * p8.lo, 256.0 * p8.hi));
        assert_eq!(a.storage_dtype(), Some(DType::U16));
        // ec on int16 has no effect.
        let mut q16 = fq(FqType::Int16, &[1.0]);
        q16.ec = true;
        assert!(!q16.is_ec());
        assert_eq!(
            q16.params().unwrap(),
            fq(FqType::Int16, &[1.0]).params().unwrap()
        );
    }

    #[test]
    fn ec_attribute_round_trips() {
        let mut f = fq(FqType::Int8, &[1.0]);
        f.ec = true;
        let n = f.to_node("c", "x", "y");
        assert_eq!(n.int_or("ec", 0).unwrap(), 1);
        assert_eq!(FakeQuant::from_node(&n).unwrap(), f);
        let plain = fq(FqType::Int8, &[1.0]).to_node("c", "x", "y");
        assert!(!FakeQuant::from_node(&plain).unwrap().ec);
    }

    fn qdq_reference(fq: &FakeQuant, x: &Tensor) -> Tensor {
        let reg = Registry::standard();
        let p = fq.params().unwrap();
        let dt = fq.storage_dtype().unwrap();
        let (scale, zp) = if p.len() == 1 {
            (
                Tensor::scalar(p[0].scale),
                Tensor::scalar(p[0].zero_point).cast(dt).unwrap(),
            )
        } else {
            (
                t(&[p.len()], p.iter().map(|q| q.scale).collect()),
                Tensor::from_vec(&[p.len()], p.iter().map(|q| q.zero_point).collect())
                    .unwrap()
                    .cast(dt)
                    .unwrap(),
            )
        };
        let mut n = Node::new("q", "QuantizeLinear", &[], &["y"]);
        n.set_attr("axis", Attr::Int(fq.axis));
        let ql = reg.get("", "QuantizeLinear").unwrap();
        let dq = reg.get("", "DequantizeLinear").unwrap();
        let q = run(ql, &n, 21, &[Some(x), Some(&scale), Some(&zp)]).unwrap();
        run(dq, &n, 21, &[Some(&q[0]), Some(&scale), Some(&zp)])
            .unwrap()
            .remove(0)
    }

    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -4.0f32..4.0,
            1 => prop::sample::select(specials()),
            1 => (-300i32..300).prop_map(|k| k as f32 * 0.5 / 127.0),
        ]
    }

    fn thresholds(asym: bool, channels: usize) -> impl Strategy<Value = Vec<f32>> {
        let one = if asym {
            (-3.0f32..3.0, 0.01f32..3.0)
                .prop_map(|(a, w)| vec![a, a + w])
                .boxed()
        } else {
            (0.001f32..5.0).prop_map(|t| vec![t]).boxed()
        };
        prop::collection::vec(one, channels).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn matches_quantize_dequantize_kernels(
            int16 in any::<bool>(),
            asym in any::<bool>(),
            per_channel in any::<bool>(),
            (th, xs) in (1usize..4).prop_flat_map(|c| (
                thresholds(false, c), prop::collection::vec(value(), 2 * c * 3)
            )),
            th_asym in thresholds(true, 3),
        ) {
            let c = th.len();
            let thresholds = match (asym, per_channel) {
                (false, true) => th,
                (false, false) => th[..1].to_vec(),
                (true, true) => th_asym[..2 * c].to_vec(),
                (true, false) => th_asym[..2].to_vec(),
            };
            let q = FakeQuant {
                qtype: if int16 { FqType::Int16 } else { FqType::Int8 },
                thresholds,
                axis: 1,
                asymmetric: asym,
                is_weight: false,
                enabled: true,
                keep_masks: false,
                mask_limit: MASK_LIMIT,
                ec: false,
            };
            let x = t(&[2, c, 3], xs);
            let got = q.apply(&x).unwrap();
            let want = qdq_reference(&q, &x);
            prop_assert_eq!(bits(&data(&got)), bits(&data(&want)));
        }
    }
}
