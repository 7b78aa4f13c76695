//! Building a [`Program`]: tensors (values and constants) and ops.

use crate::{LowerError, Result};
use hb_bpu::fixed_point::Requant;
use hb_bpu::program::{consts, pb, Program};
use hb_float::kernels::horizon::MASK_LIMIT;
use hb_tensor::{DType, Tensor};

/// A per-tensor (or per-channel) quantization of a program tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Q {
    /// Storage type (I8, I16, I32).
    pub dtype: DType,
    /// Scales (one = per tensor).
    pub scales: Vec<f32>,
    /// High-precision (i32) per-channel scales.
    pub hp: Vec<f64>,
    /// Channel axis.
    pub axis: i32,
    /// Masked values are `qmin`.
    pub keep_masks: bool,
    /// Magnitude from which a negative float is a mask under `keep_masks`
    /// (the calibration node's `mask_limit`).
    pub mask_limit: f32,
    /// Smallest integer (the type's, or `−z` for an asymmetric uint8
    /// calibration stored as i16, §1).
    pub lo: i64,
    /// Largest integer.
    pub hi: i64,
}

impl Q {
    /// A per-tensor feature quantization.
    pub fn feature(dtype: DType, scale: f32, keep_masks: bool) -> Q {
        let (lo, hi) = hb_bpu::program::prepared::int_range(dtype).unwrap_or((-128, 127));
        Q {
            dtype,
            scales: vec![scale],
            hp: Vec::new(),
            axis: 0,
            keep_masks,
            mask_limit: MASK_LIMIT,
            lo,
            hi,
        }
    }

    /// A weight / high-precision quantization (full type range).
    pub fn wide(dtype: DType, scales: Vec<f32>, hp: Vec<f64>, axis: i32) -> Q {
        let (lo, hi) = hb_bpu::program::prepared::int_range(dtype).unwrap_or((-128, 127));
        Q {
            dtype,
            scales,
            hp,
            axis,
            keep_masks: false,
            mask_limit: MASK_LIMIT,
            lo,
            hi,
        }
    }

    /// The range is narrower than the storage type's (asymmetric).
    pub fn narrow(&self) -> bool {
        hb_bpu::program::prepared::int_range(self.dtype).is_some_and(|r| r != (self.lo, self.hi))
    }

    /// The per-tensor scale (panics never: per-channel returns the first).
    pub fn s(&self) -> f32 {
        self.scales.first().copied().unwrap_or(1.0)
    }

    /// Same storage, same scale bits, same mask convention.
    pub fn same(&self, o: &Q) -> bool {
        self.dtype == o.dtype
            && self.hp.is_empty()
            && o.hp.is_empty()
            && self.scales.len() == 1
            && o.scales.len() == 1
            && self.scales[0].to_bits() == o.scales[0].to_bits()
            && self.keep_masks == o.keep_masks
            && self.mask_limit.to_bits() == o.mask_limit.to_bits()
            && self.lo == o.lo
            && self.hi == o.hi
    }

    /// qtype text.
    pub fn qtype(&self) -> &'static str {
        match self.dtype {
            DType::I8 => "int8",
            DType::I16 if self.narrow() => "uint8",
            DType::I16 => "int16",
            _ => "int32",
        }
    }

    fn to_pb(&self) -> pb::QuantInfo {
        pb::QuantInfo {
            kind: pb::QuantType::QuantScale as i32,
            scales: self.scales.clone(),
            hp_scales: self.hp.clone(),
            axis: self.axis,
            qtype: self.qtype().into(),
            keep_masks: self.keep_masks,
        }
    }
}

/// The program under construction.
#[derive(Default)]
pub struct Builder {
    /// The program.
    pub p: Program,
    names: std::collections::HashSet<String>,
}

/// A stored requantisation.
pub fn rq(r: Requant) -> pb::Requant {
    pb::Requant {
        multiplier: r.multiplier(),
        shift: r.shift(),
    }
}

/// A requantisation from a ratio, with a message naming the ratio.
pub fn ratio(r: f64) -> Result<Requant> {
    Requant::from_ratio(r).map_err(|e| LowerError::Model(e.to_string()))
}

impl Builder {
    /// A fresh builder.
    pub fn new() -> Builder {
        Builder {
            p: Program {
                version: hb_bpu::program::FORMAT_VERSION,
                kind: pb::ProgramKind::Bc as i32,
                ..Default::default()
            },
            names: Default::default(),
        }
    }

    fn unique(&mut self, base: &str) -> String {
        if self.names.insert(base.to_string()) {
            return base.to_string();
        }
        let mut k = 2;
        loop {
            let n = format!("{base}:{k}");
            if self.names.insert(n.clone()) {
                return n;
            }
            k += 1;
        }
    }

    /// Adds a runtime value.
    pub fn value(&mut self, name: &str, dtype: DType, shape: &[usize], q: Option<&Q>) -> usize {
        let name = self.unique(name);
        self.p.tensors.push(pb::TensorInfo {
            name,
            dtype: dtype.onnx_code(),
            shape: shape.iter().map(|&d| d as u64).collect(),
            quant: q.map(Q::to_pb),
            is_const: false,
            data: Default::default(),
        });
        self.p.tensors.len() - 1
    }

    /// Adds a constant.
    pub fn constant(&mut self, name: &str, t: &Tensor, q: Option<&Q>) -> Result<usize> {
        let data = consts::to_bytes(t)?;
        let name = self.unique(name);
        self.p.tensors.push(pb::TensorInfo {
            name,
            dtype: t.dtype().onnx_code(),
            shape: t.shape().iter().map(|&d| d as u64).collect(),
            quant: q.map(Q::to_pb),
            is_const: true,
            data: data.into(),
        });
        Ok(self.p.tensors.len() - 1)
    }

    /// Adds an op.
    #[allow(clippy::too_many_arguments)]
    pub fn op(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: &[Option<usize>],
        outputs: &[usize],
        cpu: bool,
        qtype: &str,
        kind: pb::op::Kind,
    ) {
        self.p.ops.push(pb::Op {
            name: name.to_string(),
            op_type: op_type.to_string(),
            inputs: inputs.iter().map(|i| i.map_or(-1, |v| v as i32)).collect(),
            outputs: outputs.iter().map(|&o| o as u32).collect(),
            placement: if cpu {
                pb::Placement::Cpu as i32
            } else {
                pb::Placement::Bpu as i32
            },
            qtype: qtype.to_string(),
            kind: Some(kind),
            post: Vec::new(),
            fused_from: Vec::new(),
        });
    }

    /// The shape of tensor `id`.
    pub fn shape(&self, id: usize) -> Vec<usize> {
        self.p.tensors[id]
            .shape
            .iter()
            .map(|&d| d as usize)
            .collect()
    }
}
