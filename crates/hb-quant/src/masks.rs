//! Additive attention masks of moderate size.
//!
//! Exporters build attention masks as `scores + (1 − m) · c` with `c` one of
//! `-inf`, the lowest f32, `-1e9` (caught everywhere by the global
//! [`MASK_LIMIT`]) — or a moderate `-1e4` / `-65504` / `-1e5` (paddle's and
//! older transformers code's convention). Moderate values are far inside the
//! global limit, so without this module they would set the threshold of the
//! mask and of the Softmax input (≈ 1e4) and every attention score would
//! quantize to 0.
//!
//! A tensor whose values only ever reach a `Softmax` through additions and
//! data movement (a *Softmax-bound* tensor) can treat every value at or
//! below [`SOFTMAX_MASK_LIMIT`] as a mask: after the Softmax subtracts the
//! row maximum, such a value contributes `exp(x − max) = 0` exactly in f32
//! whenever the row holds any value above `−SOFTMAX_MASK_LIMIT + 104`, so
//! passing it unchanged (and marking it `qmin` in the integer program) loses
//! nothing, and leaving it out of the statistics keeps the scores' scale.

pub use hb_float::kernels::horizon::MASK_LIMIT;
use hb_ir::Graph;
use std::collections::{HashMap, HashSet};

/// Magnitude from which a negative value of a Softmax-bound tensor is a mask.
pub const SOFTMAX_MASK_LIMIT: f32 = 1e3;

/// Ops that move or select data without changing values: a value at or
/// below the mask limit in their data inputs arrives unchanged in the output.
fn data_inputs(op: &str, n_inputs: usize) -> Vec<usize> {
    match op {
        "Identity" | "Reshape" | "Transpose" | "Unsqueeze" | "Squeeze" | "Expand" | "Flatten"
        | "Slice" | "Tile" | "Gather" | "Cast" => vec![0],
        "Concat" => (0..n_inputs).collect(),
        "Where" => vec![1, 2],
        // x ≤ −L plus a score keeps the sum far below the scores; an
        // additive mask may sit on either side.
        "Add" => vec![0, 1],
        "Sub" => vec![0],
        _ => Vec::new(),
    }
}

/// The tensors of `graph` that only reach Softmax inputs (directly, or
/// through the ops of `data_inputs`), and are read by nothing else. Model
/// outputs are never Softmax-bound.
pub fn softmax_bound_tensors(graph: &Graph) -> HashSet<String> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            producer.insert(o.as_str(), i);
        }
    }
    // Candidates: everything reachable backwards from a Softmax input
    // through data inputs.
    let mut candidates: HashSet<String> = HashSet::new();
    let mut work: Vec<String> = graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "Softmax" && n.domain.is_empty())
        .filter_map(|n| n.inputs.first().cloned())
        .collect();
    while let Some(t) = work.pop() {
        if t.is_empty() || !candidates.insert(t.clone()) {
            continue;
        }
        if let Some(&p) = producer.get(t.as_str()) {
            let n = &graph.nodes[p];
            for k in data_inputs(&n.op_type, n.inputs.len()) {
                if let Some(i) = n.inputs.get(k) {
                    work.push(i.clone());
                }
            }
        }
    }
    let outputs: HashSet<&str> = graph.outputs.iter().map(|o| o.name.as_str()).collect();
    let mut readers: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for (k, x) in n.inputs.iter().enumerate() {
            readers.entry(x.as_str()).or_default().push((i, k));
        }
    }
    // Greatest fixpoint: drop a candidate while any reader of it is not a
    // Softmax (input 0) or a data input of an op whose output is bound.
    loop {
        let keep = |t: &str, set: &HashSet<String>| -> bool {
            let Some(rs) = readers.get(t).filter(|_| !outputs.contains(t)) else {
                return false;
            };
            rs.iter().all(|&(i, k)| {
                let n = &graph.nodes[i];
                if n.op_type == "Softmax" && n.domain.is_empty() {
                    k == 0
                } else {
                    n.domain.is_empty()
                        && data_inputs(&n.op_type, n.inputs.len()).contains(&k)
                        && n.outputs.iter().all(|o| o.is_empty() || set.contains(o))
                }
            })
        };
        let drop: Vec<String> = candidates
            .iter()
            .filter(|t| !keep(t, &candidates))
            .cloned()
            .collect();
        if drop.is_empty() {
            return candidates;
        }
        for t in drop {
            candidates.remove(&t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_ir::{Node, ValueInfo};
    use hb_tensor::DType;

    fn graph(nodes: Vec<Node>, outputs: &[&str]) -> Graph {
        Graph {
            nodes,
            outputs: outputs
                .iter()
                .map(|o| ValueInfo::tensor(o, DType::F32, &[1]))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn mask_chain_into_softmax_is_bound() {
        // mask = (m - 1) * 1e4 (Sub, Mul: not passed through), added to the
        // scores of two layers, each followed by a Softmax.
        let g = graph(
            vec![
                Node::new("sub", "Sub", &["m", "one"], &["m1"]),
                Node::new("mul", "Mul", &["m1", "big"], &["mask"]),
                Node::new("r", "Reshape", &["mask", "shape"], &["mask4"]),
                Node::new("mm", "MatMul", &["q", "k"], &["scores"]),
                Node::new("add", "Add", &["scores", "mask4"], &["masked"]),
                Node::new("sm", "Softmax", &["masked"], &["p"]),
                Node::new("add2", "Add", &["scores2", "mask4"], &["masked2"]),
                Node::new("id", "Identity", &["masked2"], &["masked2b"]),
                Node::new("sm2", "Softmax", &["masked2b"], &["p2"]),
            ],
            &["p", "p2"],
        );
        let b = softmax_bound_tensors(&g);
        for t in [
            "masked", "masked2", "masked2b", "mask4", "mask", "scores", "scores2",
        ] {
            assert!(b.contains(t), "{t} should be bound: {b:?}");
        }
        // Mul is not a data-movement op: its inputs are not bound.
        assert!(!b.contains("m1"));
        assert!(!b.contains("p"));
    }

    #[test]
    fn a_second_reader_unbinds() {
        // The mask is also read by a MatMul: its values matter there.
        let g = graph(
            vec![
                Node::new("add", "Add", &["scores", "mask"], &["masked"]),
                Node::new("sm", "Softmax", &["masked"], &["p"]),
                Node::new("mm", "MatMul", &["mask", "w"], &["y"]),
            ],
            &["p", "y"],
        );
        let b = softmax_bound_tensors(&g);
        assert!(b.contains("masked") && b.contains("scores"));
        assert!(!b.contains("mask"), "{b:?}");
        // A model output is never bound, even if a Softmax reads it.
        let g = graph(
            vec![
                Node::new("add", "Add", &["scores", "mask"], &["masked"]),
                Node::new("sm", "Softmax", &["masked"], &["p"]),
            ],
            &["p", "masked"],
        );
        let b = softmax_bound_tensors(&g);
        assert!(!b.contains("masked") && !b.contains("mask"), "{b:?}");
    }
}
