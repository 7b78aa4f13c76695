//! Helpers shared by the tools' integration tests.

use hb_ir::{Graph, Model};

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
