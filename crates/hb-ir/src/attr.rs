//! Node attributes and typed access with defaults.

use crate::graph::{Graph, Node};
use crate::{IrError, Result};
use hb_tensor::Tensor;

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// A float.
    Float(f32),
    /// An integer.
    Int(i64),
    /// A string (bytes decoded as UTF-8, lossily).
    String(String),
    /// A tensor.
    Tensor(Tensor),
    /// A subgraph (If/Loop/Scan bodies).
    Graph(Box<Graph>),
    /// Floats.
    Floats(Vec<f32>),
    /// Integers.
    Ints(Vec<i64>),
    /// Strings.
    Strings(Vec<String>),
    /// Tensors.
    Tensors(Vec<Tensor>),
    /// Subgraphs.
    Graphs(Vec<Graph>),
    /// A kind hbkit keeps only by name (sparse tensors, type protos).
    Other(String),
}

impl Node {
    fn attr_err(&self, msg: String) -> IrError {
        IrError::Attribute {
            node: self.name.clone(),
            op: self.op_type.clone(),
            msg,
        }
    }

    /// The attribute `name`, if set.
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.get(name)
    }

    /// Integer attribute (absent → `None`, wrong type → error).
    pub fn get_int(&self, name: &str) -> Result<Option<i64>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(other) => Err(self.attr_err(format!(
                "attribute '{name}' should be an int, got {other:?}"
            ))),
        }
    }

    /// Integer attribute with a default.
    pub fn int_or(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.get_int(name)?.unwrap_or(default))
    }

    /// Required integer attribute.
    pub fn int_req(&self, name: &str) -> Result<i64> {
        self.get_int(name)?
            .ok_or_else(|| self.attr_err(format!("missing required attribute '{name}'")))
    }

    /// Float attribute with a default (ints are accepted too).
    pub fn float_or(&self, name: &str, default: f32) -> Result<f32> {
        match self.attrs.get(name) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f32),
            Some(other) => Err(self.attr_err(format!(
                "attribute '{name}' should be a float, got {other:?}"
            ))),
        }
    }

    /// Optional float attribute.
    pub fn get_float(&self, name: &str) -> Result<Option<f32>> {
        if self.attrs.contains_key(name) {
            self.float_or(name, 0.0).map(Some)
        } else {
            Ok(None)
        }
    }

    /// String attribute with a default.
    pub fn string_or(&self, name: &str, default: &str) -> Result<String> {
        match self.attrs.get(name) {
            None => Ok(default.to_string()),
            Some(Attr::String(v)) => Ok(v.clone()),
            Some(other) => Err(self.attr_err(format!(
                "attribute '{name}' should be a string, got {other:?}"
            ))),
        }
    }

    /// Integer-list attribute (absent → `None`).
    pub fn get_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(Attr::Int(v)) => Ok(Some(vec![*v])),
            Some(other) => {
                Err(self.attr_err(format!("attribute '{name}' should be ints, got {other:?}")))
            }
        }
    }

    /// Float-list attribute (absent → `None`).
    pub fn get_floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v.clone())),
            Some(Attr::Float(v)) => Ok(Some(vec![*v])),
            Some(other) => Err(self.attr_err(format!(
                "attribute '{name}' should be floats, got {other:?}"
            ))),
        }
    }

    /// String-list attribute (absent → `None`).
    pub fn get_strings(&self, name: &str) -> Result<Option<Vec<String>>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Strings(v)) => Ok(Some(v.clone())),
            Some(other) => Err(self.attr_err(format!(
                "attribute '{name}' should be strings, got {other:?}"
            ))),
        }
    }

    /// Tensor attribute (absent → `None`).
    pub fn get_tensor(&self, name: &str) -> Result<Option<&Tensor>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Tensor(t)) => Ok(Some(t)),
            Some(other) => Err(self.attr_err(format!(
                "attribute '{name}' should be a tensor, got {other:?}"
            ))),
        }
    }

    /// Sets (or replaces) an attribute.
    pub fn set_attr(&mut self, name: &str, value: Attr) {
        self.attrs.insert(name.to_string(), value);
    }
}
