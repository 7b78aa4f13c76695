//! IR → ONNX protobuf, and atomic model saving.

use crate::attr::Attr;
use crate::graph::{Dim, Graph, Model, Node, ValueInfo};
use crate::{IrError, Result};
use bytes::Bytes;
use hb_onnx_proto as pb;
use hb_tensor::{with_tensor, Tensor};
use prost::Message;
use std::path::Path;

/// Serializes `model` to `path` atomically (temp file + rename).
pub fn save_model(model: &Model, path: &Path) -> Result<()> {
    let bytes = model_to_proto(model).encode_to_vec();
    let tmp = hb_tensor::io::temp_path(path);
    let io = |e| IrError::Io {
        path: path.display().to_string(),
        source: e,
    };
    std::fs::write(&tmp, &bytes).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    hb_tensor::io::replace_file(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
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
            .map(|(n, t)| tensor_to_proto(n, t))
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
