//! IR → ONNX protobuf, and atomic model saving.

use crate::attr::Attr;
use crate::graph::{Dim, Graph, Model, Node, ValueInfo};
use crate::{IrError, Result};
use bytes::Bytes;
use hb_onnx_proto as pb;
use hb_tensor::write_sink::WriteSink;
use hb_tensor::TensorError;
use hb_tensor::{with_tensor, Tensor};
use prost::Message;
use std::path::Path;
use std::sync::Arc;

/// Serializes `model` to `path` atomically (temp file + rename). The
/// encoding streams into the file (no buffer the size of the model) and
/// the initializers' data is shared with the model, not copied.
pub fn save_model(model: &Model, path: &Path) -> Result<()> {
    let proto = model_to_proto(model);
    let io = |source| IrError::Io {
        path: path.display().to_string(),
        source,
    };
    hb_tensor::io::write_atomic(path, |w| {
        let mut sink = WriteSink::new(w);
        proto.encode(&mut sink).map_err(|e| TensorError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        sink.finish().map_err(|source| TensorError::Io {
            path: path.display().to_string(),
            source,
        })
    })
    .map_err(|e| match e {
        TensorError::Io { source, .. } => io(source),
        other => io(std::io::Error::other(other.to_string())),
    })
}

/// Converts a model to its protobuf form.
pub fn model_to_proto(m: &Model) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: Some(m.ir_version),
        opset_import: m
            .opsets
            .iter()
            .map(|(d, v)| pb::OperatorSetIdProto {
                domain: Some(d.clone()),
                version: Some(*v),
            })
            .collect(),
        producer_name: Some(m.producer_name.clone()),
        producer_version: Some(m.producer_version.clone()),
        domain: Some(m.domain.clone()),
        model_version: Some(m.model_version),
        doc_string: Some(m.doc_string.clone()),
        graph: Some(graph_to_proto(&m.graph)),
        metadata_props: m
            .metadata
            .iter()
            .map(|(k, v)| pb::StringStringEntryProto {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect(),
        ..Default::default()
    }
}

/// Converts a graph to its protobuf form.
pub fn graph_to_proto(g: &Graph) -> pb::GraphProto {
    pb::GraphProto {
        name: Some(g.name.clone()),
        node: g.nodes.iter().map(node_to_proto).collect(),
        initializer: g
            .initializers
            .iter()
            .map(|(n, t)| initializer_to_proto(n, t))
            .collect(),
        input: g.inputs.iter().map(value_info_to_proto).collect(),
        output: g.outputs.iter().map(value_info_to_proto).collect(),
        value_info: {
            let mut v: Vec<_> = g.value_info.values().collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v.into_iter().map(value_info_to_proto).collect()
        },
        ..Default::default()
    }
}

fn node_to_proto(n: &Node) -> pb::NodeProto {
    pb::NodeProto {
        name: Some(n.name.clone()),
        op_type: Some(n.op_type.clone()),
        domain: Some(n.domain.clone()),
        input: n.inputs.clone(),
        output: n.outputs.clone(),
        attribute: n
            .attrs
            .iter()
            .filter_map(|(k, a)| attr_to_proto(k, a))
            .collect(),
        ..Default::default()
    }
}

fn attr_to_proto(name: &str, a: &Attr) -> Option<pb::AttributeProto> {
    use pb::attribute_proto::AttributeType as T;
    let mut p = pb::AttributeProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let ty = match a {
        Attr::Float(v) => {
            p.f = Some(*v);
            T::Float
        }
        Attr::Int(v) => {
            p.i = Some(*v);
            T::Int
        }
        Attr::String(s) => {
            p.s = Some(Bytes::from(s.clone().into_bytes()));
            T::String
        }
        Attr::Tensor(t) => {
            p.t = Some(tensor_to_proto("", t));
            T::Tensor
        }
        Attr::Graph(g) => {
            p.g = Some(graph_to_proto(g));
            T::Graph
        }
        Attr::Floats(v) => {
            p.floats = v.clone();
            T::Floats
        }
        Attr::Ints(v) => {
            p.ints = v.clone();
            T::Ints
        }
        Attr::Strings(v) => {
            p.strings = v
                .iter()
                .map(|s| Bytes::from(s.clone().into_bytes()))
                .collect();
            T::Strings
        }
        Attr::Tensors(v) => {
            p.tensors = v.iter().map(|t| tensor_to_proto("", t)).collect();
            T::Tensors
        }
        Attr::Graphs(v) => {
            p.graphs = v.iter().map(graph_to_proto).collect();
            T::Graphs
        }
        Attr::Other(_) => return None,
    };
    p.r#type = Some(ty as i32);
    Some(p)
}

/// Converts a tensor to a `TensorProto` (little-endian `raw_data`; strings in `string_data`).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> pb::TensorProto {
    let mut p = pb::TensorProto {
        name: Some(name.to_string()),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(t.dtype().onnx_code()),
        ..Default::default()
    };
    if let Tensor::Str(a) = t {
        p.string_data = a
            .iter()
            .map(|s| Bytes::from(s.clone().into_bytes()))
            .collect();
        return p;
    }
    let raw = with_tensor!(t, a => le_bytes(a));
    p.raw_data = Some(Bytes::from(raw));
    p
}

/// An initializer's protobuf form. Its raw data shares the tensor's
/// memory when the host is little-endian and the tensor is contiguous
/// numbers (the layout ONNX's `raw_data` has); otherwise it is copied as
/// by [`tensor_to_proto`].
fn initializer_to_proto(name: &str, t: &Arc<Tensor>) -> pb::TensorProto {
    match SharedData::new(t) {
        Some(data) => pb::TensorProto {
            name: Some(name.to_string()),
            dims: t.shape().iter().map(|&d| d as i64).collect(),
            data_type: Some(t.dtype().onnx_code()),
            raw_data: Some(Bytes::from_owner(data)),
            ..Default::default()
        },
        None => tensor_to_proto(name, t),
    }
}

/// A tensor whose elements are viewed as their little-endian bytes.
struct SharedData(Arc<Tensor>);

impl SharedData {
    /// `Some` when [`element_bytes`] can view `t`.
    fn new(t: &Arc<Tensor>) -> Option<Self> {
        element_bytes(t).map(|_| SharedData(t.clone()))
    }
}

impl AsRef<[u8]> for SharedData {
    fn as_ref(&self) -> &[u8] {
        // `new` checked that the view exists; an empty slice is unreachable.
        element_bytes(&self.0).unwrap_or_default()
    }
}

/// The elements of a contiguous numeric tensor as bytes, on a
/// little-endian host (`None` for bool and string tensors, non-contiguous
/// layouts and big-endian hosts).
fn element_bytes(t: &Tensor) -> Option<&[u8]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    match t {
        Tensor::F32(a) => numeric_bytes(a.as_slice()?),
        Tensor::F64(a) => numeric_bytes(a.as_slice()?),
        Tensor::F16(a) => numeric_bytes(a.as_slice()?),
        Tensor::BF16(a) => numeric_bytes(a.as_slice()?),
        Tensor::I8(a) => numeric_bytes(a.as_slice()?),
        Tensor::I16(a) => numeric_bytes(a.as_slice()?),
        Tensor::I32(a) => numeric_bytes(a.as_slice()?),
        Tensor::I64(a) => numeric_bytes(a.as_slice()?),
        Tensor::U8(a) => numeric_bytes(a.as_slice()?),
        Tensor::U16(a) => numeric_bytes(a.as_slice()?),
        Tensor::U32(a) => numeric_bytes(a.as_slice()?),
        Tensor::U64(a) => numeric_bytes(a.as_slice()?),
        Tensor::Bool(_) | Tensor::Str(_) => None,
    }
}

/// Numbers whose in-memory bytes are their ONNX `raw_data` bytes on a
/// little-endian host: no padding, every byte initialised.
trait Numeric: LeBytes {}
impl Numeric for f32 {}
impl Numeric for f64 {}
impl Numeric for half::f16 {}
impl Numeric for half::bf16 {}
impl Numeric for i8 {}
impl Numeric for i16 {}
impl Numeric for i32 {}
impl Numeric for i64 {}
impl Numeric for u8 {}
impl Numeric for u16 {}
impl Numeric for u32 {}
impl Numeric for u64 {}

fn numeric_bytes<T: Numeric>(s: &[T]) -> Option<&[u8]> {
    // SAFETY: `Numeric` types are plain numbers (no padding, no invalid
    // bit patterns when read as bytes); the byte slice covers exactly
    // `s`'s memory and borrows it for the same lifetime.
    Some(unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) })
}

/// Little-endian bytes of any array (bool and string handled by the caller).
fn le_bytes<T: LeBytes>(a: &ndarray::ArrayD<T>) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() * std::mem::size_of::<T>());
    for v in a.iter() {
        v.put(&mut out);
    }
    out
}

trait LeBytes {
    fn put(&self, out: &mut Vec<u8>);
}
macro_rules! le_impl {
    ($($t:ty),*) => {$(impl LeBytes for $t { fn put(&self, out: &mut Vec<u8>) { out.extend_from_slice(&self.to_le_bytes()); } })*};
}
le_impl!(
    f32,
    f64,
    i8,
    i16,
    i32,
    i64,
    u8,
    u16,
    u32,
    u64,
    half::f16,
    half::bf16
);
impl LeBytes for bool {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
}
impl LeBytes for String {
    fn put(&self, _out: &mut Vec<u8>) {}
}

fn value_info_to_proto(v: &ValueInfo) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value as DV, Dimension};
    let shape = v.shape.as_ref().map(|dims| pb::TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: match d {
                    Dim::Fixed(n) => Some(DV::DimValue(*n as i64)),
                    Dim::Param(s) => Some(DV::DimParam(s.clone())),
                    Dim::Unknown => None,
                },
                ..Default::default()
            })
            .collect(),
    });
    let elem = if v.elem_type == 0 {
        None
    } else {
        Some(v.elem_type)
    };
    pb::ValueInfoProto {
        name: Some(v.name.clone()),
        r#type: if v.non_tensor {
            None
        } else {
            Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: elem,
                    shape,
                })),
                ..Default::default()
            })
        },
        ..Default::default()
    }
}
