//! Helpers shared by the tools' integration tests.

use hb_ir::{Graph, Model};
use hb_tensor::Tensor;

/// Wraps a graph into a model (IR 8, default-domain opset 13).
pub fn model_of(graph: Graph) -> Model {
    let mut m = Model {
        ir_version: 8,
        graph,
        producer_name: "test".into(),
        ..Default::default()
    };
    m.opsets.insert(String::new(), 13);
    m
}

/// Deterministic values in [-scale, scale) (xorshift from `seed`).
pub fn vals(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// An f32 tensor of `shape` filled by [`vals`].
pub fn f32t(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    Tensor::from_f32(shape, vals(shape.iter().product(), seed, scale)).unwrap()
}
