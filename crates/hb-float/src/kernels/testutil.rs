//! Test helpers for kernel unit tests: nodes with attributes, running a
//! kernel on f32 tensors, deterministic pseudo-random data.

use crate::error::OpResult;
use crate::registry::{KernelFn, OpCtx};
use hb_ir::{Attr, Graph, Model, Node};
use hb_tensor::Tensor;

/// A node of `op` with the given attributes.
pub fn node(op: &str, attrs: Vec<(&str, Attr)>) -> Node {
    let mut n = Node::new("t", op, &[], &["y"]);
    for (k, v) in attrs {
        n.set_attr(k, v);
    }
    n
}

/// Runs `f` on `node` at `opset` with the given inputs.
pub fn run(
    f: KernelFn,
    node: &Node,
    opset: i64,
    inputs: &[Option<&Tensor>],
) -> OpResult<Vec<Tensor>> {
    f(&OpCtx { node, opset }, inputs)
}

/// An f32 tensor.
pub fn t(shape: &[usize], data: Vec<f32>) -> Tensor {
    Tensor::from_f32(shape, data).expect("test data fills its shape")
}

/// `n` deterministic values in [-1, 1).
pub fn rand_vals(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Asserts two f32 slices match within `tol`.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w}"
        );
    }
}

/// The f32 data of a tensor.
pub fn data(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("f32 output").iter().copied().collect()
}

/// An ints attribute.
pub fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

/// A test model of `graph` (IR version 8) importing the standard domain
/// at `opset`.
pub fn model_of(graph: Graph, opset: i64) -> Model {
    let mut m = Model {
        ir_version: 8,
        graph,
        ..Default::default()
    };
    m.opsets.insert(String::new(), opset);
    m
}
