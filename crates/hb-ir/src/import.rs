//! ONNX protobuf → IR.
//!
//! The model file is memory-mapped and decoded with `bytes::Bytes` fields, so
//! `raw_data` payloads are views into the map; each tensor is copied exactly
//! once, into its ndarray. External data files are mapped the same way.

use crate::attr::Attr;
use crate::graph::{Dim, Graph, Model, Node, ValueInfo};
use crate::{topo, IrError, Result};
use bytes::Bytes;
use half::{bf16, f16};
use hb_onnx_proto as pb;
use hb_tensor::{DType, Tensor};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Loads an ONNX model file (external data is resolved next to it).
pub fn load_model(path: &Path) -> Result<Model> {
    let io = |e| IrError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let bytes = if len == 0 {
        Bytes::new()
    } else {
        // SAFETY: the map is read-only and private to this process; a file
        // truncated underneath us is the same hazard every mmap reader accepts.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Bytes::from_owner(map)
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_model_from_bytes(bytes, &path.display().to_string(), &base)
}

/// Decodes a model from bytes; `name` is used in messages, `base_dir` for external data.
pub fn load_model_from_bytes(bytes: Bytes, name: &str, base_dir: &Path) -> Result<Model> {
    let decode_err = |msg: String| IrError::Decode {
        path: name.to_string(),
        msg,
    };
    if bytes.is_empty() {
        return Err(decode_err("the file is empty".into()));
    }
    let proto = pb::ModelProto::decode(bytes)
        .map_err(|e| decode_err(format!("protobuf decode failed: {e}")))?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| decode_err("it has no graph".into()))?;
    if proto.ir_version.unwrap_or(0) <= 0 || proto.opset_import.is_empty() && graph.node.is_empty()
    {
        return Err(decode_err("missing ir_version/opset_import".into()));
    }
    let ctx = Ctx {
        file: name.to_string(),
        base_dir: base_dir.to_path_buf(),
    };
    let mut opsets = BTreeMap::new();
    for o in &proto.opset_import {
        let d = o.domain.clone().unwrap_or_default();
        let d = if d == "ai.onnx" { String::new() } else { d };
        opsets.insert(d, o.version.unwrap_or(1));
    }
    let mut graph = ctx.graph(graph)?;
    topo::sort(&mut graph)?;
    Ok(Model {
        ir_version: proto.ir_version.unwrap_or(0),
        opsets,
        producer_name: proto.producer_name.clone().unwrap_or_default(),
        producer_version: proto.producer_version.clone().unwrap_or_default(),
        domain: proto.domain.clone().unwrap_or_default(),
        model_version: proto.model_version.unwrap_or(0),
        doc_string: proto.doc_string.clone().unwrap_or_default(),
        metadata: proto
            .metadata_props
            .iter()
            .map(|p| {
                (
                    p.key.clone().unwrap_or_default(),
                    p.value.clone().unwrap_or_default(),
                )
            })
            .collect(),
        graph,
    })
}

struct Ctx {
    file: String,
    base_dir: PathBuf,
}

impl Ctx {
    fn graph(&self, g: &pb::GraphProto) -> Result<Graph> {
        let mut initializers = BTreeMap::new();
        for t in &g.initializer {
            let name = t.name.clone().unwrap_or_default();
            initializers.insert(name, Arc::new(self.tensor(t)?));
        }
        for st in &g.sparse_initializer {
            let (name, t) = self.sparse(st)?;
            initializers.insert(name, Arc::new(t));
        }
        let inputs = g
            .input
            .iter()
            .filter(|v| !initializers.contains_key(v.name.as_deref().unwrap_or("")))
            .map(value_info)
            .collect();
        let outputs = g.output.iter().map(value_info).collect();
        let value_info = g
            .value_info
            .iter()
            .map(|v| (v.name.clone().unwrap_or_default(), value_info(v)))
            .collect();
        let mut used_names = HashSet::new();
        let mut nodes = Vec::with_capacity(g.node.len());
        for (k, n) in g.node.iter().enumerate() {
            let node = self.node(n, k, &mut used_names)?;
            nodes.push(node);
        }
        Ok(Graph {
            name: g.name.clone().unwrap_or_default(),
            nodes,
            inputs,
            outputs,
            initializers,
            value_info,
        })
    }

    fn node(&self, n: &pb::NodeProto, k: usize, used: &mut HashSet<String>) -> Result<Node> {
        let op_type = n.op_type.clone().unwrap_or_default();
        let mut name = n.name.clone().unwrap_or_default();
        if name.is_empty() || used.contains(&name) {
            let base = if name.is_empty() {
                format!("{op_type}_{k}")
            } else {
                format!("{name}_{k}")
            };
            name = base;
            while used.contains(&name) {
                name.push('_');
            }
        }
        used.insert(name.clone());
        let mut attrs = BTreeMap::new();
        for a in &n.attribute {
            let aname = a.name.clone().unwrap_or_default();
            let v = self.attr(a).map_err(|msg| IrError::Attribute {
                node: name.clone(),
                op: op_type.clone(),
                msg: format!("attribute '{aname}': {msg}"),
            })?;
            attrs.insert(aname, v);
        }
        let domain = n.domain.clone().unwrap_or_default();
        Ok(Node {
            name,
            op_type,
            domain: if domain == "ai.onnx" {
                String::new()
            } else {
                domain
            },
            inputs: n.input.clone(),
            outputs: n.output.clone(),
            attrs,
        })
    }

    fn attr(&self, a: &pb::AttributeProto) -> std::result::Result<Attr, String> {
        use pb::attribute_proto::AttributeType as T;
        let ty = a
            .r#type
            .and_then(|t| T::try_from(t).ok())
            .unwrap_or(T::Undefined);
        let s = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        let t = |t: &pb::TensorProto| self.tensor(t).map_err(|e| e.to_string());
        Ok(match ty {
            T::Float => Attr::Float(a.f.unwrap_or(0.0)),
            T::Int => Attr::Int(a.i.unwrap_or(0)),
            T::String => Attr::String(a.s.as_ref().map(s).unwrap_or_default()),
            T::Tensor => Attr::Tensor(t(a
                .t
                .as_ref()
                .ok_or("tensor attribute without a tensor")?)?),
            T::Graph => Attr::Graph(Box::new(
                self.graph(a.g.as_ref().ok_or("graph attribute without a graph")?)
                    .map_err(|e| e.to_string())?,
            )),
            T::Floats => Attr::Floats(a.floats.clone()),
            T::Ints => Attr::Ints(a.ints.clone()),
            T::Strings => Attr::Strings(a.strings.iter().map(s).collect()),
            T::Tensors => Attr::Tensors(
                a.tensors
                    .iter()
                    .map(t)
                    .collect::<std::result::Result<_, _>>()?,
            ),
            T::Graphs => Attr::Graphs(
                a.graphs
                    .iter()
                    .map(|g| self.graph(g).map_err(|e| e.to_string()))
                    .collect::<std::result::Result<_, _>>()?,
            ),
            T::SparseTensor => {
                let st = a
                    .sparse_tensor
                    .as_ref()
                    .ok_or("sparse attribute without a tensor")?;
                Attr::Tensor(self.sparse(st).map_err(|e| e.to_string())?.1)
            }
            T::Undefined => infer_untyped(a),
            other => Attr::Other(format!("{other:?}")),
        })
    }

    fn sparse(&self, st: &pb::SparseTensorProto) -> Result<(String, Tensor)> {
        let values = st
            .values
            .as_ref()
            .ok_or_else(|| self.terr("sparse", "sparse tensor without values"))?;
        let name = values.name.clone().unwrap_or_default();
        let vals = self.tensor(values)?;
        let dims: Vec<usize> = st.dims.iter().map(|&d| d.max(0) as usize).collect();
        let idx = match &st.indices {
            Some(i) => self
                .tensor(i)?
                .to_i64_vec()
                .map_err(|e| self.terr(&name, &e.to_string()))?,
            None => Vec::new(),
        };
        let n: usize = dims.iter().product();
        let dense_vals = vals
            .to_f64_vec()
            .map_err(|e| self.terr(&name, &e.to_string()))?;
        let mut dense = vec![0f64; n];
        let nnz = dense_vals.len();
        let rank = dims.len();
        for (k, v) in dense_vals.iter().enumerate() {
            let flat = if idx.len() == nnz {
                idx[k] as usize
            } else {
                let coords = &idx[k * rank..(k + 1) * rank];
                coords
                    .iter()
                    .zip(&dims)
                    .fold(0usize, |acc, (&c, &d)| acc * d + c as usize)
            };
            if flat < n {
                dense[flat] = *v;
            }
        }
        let t = Tensor::from_vec(&dims, dense).map_err(|e| self.terr(&name, &e.to_string()))?;
        let t = t
            .cast(vals.dtype())
            .map_err(|e| self.terr(&name, &e.to_string()))?;
        Ok((name, t))
    }

    fn terr(&self, name: &str, msg: &str) -> IrError {
        IrError::Tensor {
            context: format!("{}: tensor '{name}'", self.file),
            msg: msg.to_string(),
        }
    }

    fn tensor(&self, t: &pb::TensorProto) -> Result<Tensor> {
        let name = t.name.clone().unwrap_or_default();
        let code = t.data_type.unwrap_or(0);
        let dtype = DType::from_onnx_code(code).ok_or_else(|| {
            self.terr(
                &name,
                &format!(
                    "element type {} is not supported",
                    DType::onnx_code_name(code)
                ),
            )
        })?;
        if t.dims.iter().any(|&d| d < 0) {
            return Err(self.terr(&name, "negative dimension"));
        }
        let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let n: usize = shape.iter().product();
        let external = t.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
        let raw: Option<Bytes> = if external {
            Some(self.external(t, &name)?)
        } else {
            t.raw_data.clone().filter(|r| !r.is_empty() || n == 0)
        };
        let res = match raw {
            Some(raw) if dtype != DType::String => from_raw(&raw, dtype, &shape),
            _ => from_typed_fields(t, dtype, &shape),
        };
        res.map_err(|msg| self.terr(&name, &msg))
    }

    fn external(&self, t: &pb::TensorProto, name: &str) -> Result<Bytes> {
        let mut location = None;
        let mut offset = 0usize;
        let mut length = None;
        for kv in &t.external_data {
            let v = kv.value.clone().unwrap_or_default();
            match kv.key.as_deref().unwrap_or("") {
                "location" => location = Some(v),
                "offset" => {
                    offset = v
                        .parse()
                        .map_err(|_| self.terr(name, "bad external offset"))?
                }
                "length" => {
                    length = Some(
                        v.parse::<usize>()
                            .map_err(|_| self.terr(name, "bad external length"))?,
                    )
                }
                _ => {}
            }
        }
        let loc = location.ok_or_else(|| self.terr(name, "external data without a location"))?;
        let rel = Path::new(&loc);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(self.terr(name, &format!("external data location '{loc}' must be a relative path inside the model folder")));
        }
        let path = self.base_dir.join(rel);
        let file = std::fs::File::open(&path).map_err(|e| {
            self.terr(
                name,
                &format!(
                    "external data file '{}' cannot be opened: {e}",
                    path.display()
                ),
            )
        })?;
        // SAFETY: read-only private map, see `load_model`.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| {
            self.terr(
                name,
                &format!("external data file '{}': {e}", path.display()),
            )
        })?;
        let bytes = Bytes::from_owner(map);
        let end = match length {
            Some(l) => offset + l,
            None => bytes.len(),
        };
        if offset > end || end > bytes.len() {
            return Err(self.terr(
                name,
                &format!(
                    "external data range {offset}..{end} is outside '{}' ({} bytes)",
                    path.display(),
                    bytes.len()
                ),
            ));
        }
        Ok(bytes.slice(offset..end))
    }
}

fn infer_untyped(a: &pb::AttributeProto) -> Attr {
    if !a.ints.is_empty() {
        Attr::Ints(a.ints.clone())
    } else if !a.floats.is_empty() {
        Attr::Floats(a.floats.clone())
    } else if let Some(i) = a.i {
        Attr::Int(i)
    } else if let Some(f) = a.f {
        Attr::Float(f)
    } else if let Some(s) = &a.s {
        Attr::String(String::from_utf8_lossy(s).into_owned())
    } else {
        Attr::Other("undefined".into())
    }
}

/// Converts an ONNX `TensorProto` without external data (e.g. a `.pb` test file).
pub fn tensor_from_proto(t: &pb::TensorProto) -> Result<Tensor> {
    let ctx = Ctx {
        file: "<tensor>".into(),
        base_dir: PathBuf::new(),
    };
    ctx.tensor(t)
}

fn from_raw(raw: &[u8], dtype: DType, shape: &[usize]) -> std::result::Result<Tensor, String> {
    let n: usize = shape.iter().product();
    let want = n * dtype.size_of();
    if raw.len() != want {
        return Err(format!(
            "raw data has {} bytes, expected {want} for {dtype}{shape:?}",
            raw.len()
        ));
    }
    macro_rules! le {
        ($t:ty, $w:expr) => {
            Tensor::from_vec(
                shape,
                raw.chunks_exact($w)
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                    .collect::<Vec<$t>>(),
            )
        };
    }
    let t = match dtype {
        DType::F32 => le!(f32, 4),
        DType::F64 => le!(f64, 8),
        DType::F16 => le!(f16, 2),
        DType::BF16 => le!(bf16, 2),
        DType::I8 => le!(i8, 1),
        DType::I16 => le!(i16, 2),
        DType::I32 => le!(i32, 4),
        DType::I64 => le!(i64, 8),
        DType::U8 => le!(u8, 1),
        DType::U16 => le!(u16, 2),
        DType::U32 => le!(u32, 4),
        DType::U64 => le!(u64, 8),
        DType::Bool => Tensor::from_vec(shape, raw.iter().map(|&b| b != 0).collect()),
        DType::String => return Err("string tensors cannot use raw_data".into()),
    };
    t.map_err(|e| e.to_string())
}

fn from_typed_fields(
    t: &pb::TensorProto,
    dtype: DType,
    shape: &[usize],
) -> std::result::Result<Tensor, String> {
    let n: usize = shape.iter().product();
    let check = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(format!(
                "has {len} values, expected {n} for {dtype}{shape:?}"
            ))
        }
    };
    let i32s = &t.int32_data;
    let res = match dtype {
        DType::F32 => check(t.float_data.len())
            .and_then(|_| Tensor::from_vec(shape, t.float_data.clone()).map_err(|e| e.to_string())),
        DType::F64 => check(t.double_data.len()).and_then(|_| {
            Tensor::from_vec(shape, t.double_data.clone()).map_err(|e| e.to_string())
        }),
        DType::I64 => check(t.int64_data.len())
            .and_then(|_| Tensor::from_vec(shape, t.int64_data.clone()).map_err(|e| e.to_string())),
        DType::U64 => check(t.uint64_data.len()).and_then(|_| {
            Tensor::from_vec(shape, t.uint64_data.clone()).map_err(|e| e.to_string())
        }),
        DType::U32 => check(t.uint64_data.len()).and_then(|_| {
            Tensor::from_vec(shape, t.uint64_data.iter().map(|&v| v as u32).collect())
                .map_err(|e| e.to_string())
        }),
        DType::String => check(t.string_data.len()).and_then(|_| {
            Tensor::from_vec(
                shape,
                t.string_data
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect(),
            )
            .map_err(|e| e.to_string())
        }),
        _ => check(i32s.len()).and_then(|_| {
            macro_rules! narrow {
                ($f:expr) => {
                    Tensor::from_vec(shape, i32s.iter().map($f).collect::<Vec<_>>())
                        .map_err(|e| e.to_string())
                };
            }
            match dtype {
                DType::I32 => narrow!(|&v| v),
                DType::I16 => narrow!(|&v| v as i16),
                DType::I8 => narrow!(|&v| v as i8),
                DType::U16 => narrow!(|&v| v as u16),
                DType::U8 => narrow!(|&v| v as u8),
                DType::Bool => narrow!(|&v| v != 0),
                DType::F16 => narrow!(|&v| f16::from_bits(v as u16)),
                DType::BF16 => narrow!(|&v| bf16::from_bits(v as u16)),
                _ => Err(format!("unsupported element type {dtype}")),
            }
        }),
    };
    res
}

fn value_info(v: &pb::ValueInfoProto) -> ValueInfo {
    use pb::type_proto::Value;
    let name = v.name.clone().unwrap_or_default();
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Value::TensorType(tt)) => ValueInfo {
            name,
            elem_type: tt.elem_type.unwrap_or(0),
            shape: tt.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if *n >= 0 => {
                            Dim::Fixed(*n as usize)
                        }
                        Some(pb::tensor_shape_proto::dimension::Value::DimParam(p))
                            if !p.is_empty() =>
                        {
                            Dim::Param(p.clone())
                        }
                        _ => Dim::Unknown,
                    })
                    .collect()
            }),
            non_tensor: false,
        },
        None => ValueInfo {
            name,
            elem_type: 0,
            shape: None,
            non_tensor: false,
        },
        Some(_) => ValueInfo {
            name,
            elem_type: 0,
            shape: None,
            non_tensor: true,
        },
    }
}

/// Value names used in the graph mapped to how often nodes read them.
pub fn use_counts(g: &Graph) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in &g.nodes {
        for i in n.inputs.iter().filter(|i| !i.is_empty()) {
            *m.entry(i.clone()).or_insert(0) += 1;
        }
    }
    for o in &g.outputs {
        *m.entry(o.name.clone()).or_insert(0) += 1;
    }
    m
}
