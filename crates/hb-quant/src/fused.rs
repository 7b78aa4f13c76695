//! Activations fused into the op that produces their input (Conv + Relu,
//! Gemm + Clip, Add + Relu, ...).
//!
//! The integer machine computes such a pair as one op whose result is
//! requantized once, at the activation's output scale. TensorRT fuses
//! Conv + ReLU the same way, and ONNX Runtime's QDQ quantizer, with its
//! default asymmetric activations, removes the Relu / Clip and quantizes
//! the producer's output with the activation output's range (with
//! symmetric ones it keeps two quantizers). The calibrated model keeps a
//! calibration node on the activation's input; giving it the thresholds of
//! the activation's output makes the pair exactly one quantization: a
//! value on the output's grid
//! passes Relu / Clip and the output's quantizer unchanged, and a value
//! below the grid's range is clipped where the activation would clip it
//! anyway. Without it the input is rounded on a grid of its own first,
//! which is coarser whenever the input's threshold is the larger one (its
//! negative side, or a KL / percentile choice over the |x| histogram that
//! counts the values the activation discards), and each value is rounded
//! twice.

use crate::calib::candidate::Thresholds;
use crate::ops::MOVES_VALUES;
use crate::plan::{CalibPoint, TensorKind};
use hb_ir::Graph;

/// Activations that clamp their input and whose output may share its
/// quantizer: Relu and Clip (any bounds). LeakyRelu / PRelu do not qualify:
/// their negative outputs are the inputs scaled down, so the input needs a
/// wider range than the output.
const CLAMPS: &[&str] = &["Relu", "Clip"];

/// One activation whose input point takes the thresholds of its output's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPoint {
    /// Index of the point on the activation's input.
    pub input: usize,
    /// Index of the point that quantizes the activation's output.
    pub output: usize,
    /// The activation's op type (for the method label).
    pub op: String,
    /// True when the output point is on the activation's own output (per
    /// channel thresholds only share then: a reshape moves the channels).
    pub direct: bool,
}

/// The activation input points of `points` that share their output's
/// thresholds: a feature point read only by one Relu or Clip (input 0) and
/// by nothing else, not a model input, whose activation output reaches a
/// feature point of the same qtype through single-reader, single-output
/// value-moving ops (Reshape, Transpose, Flatten, Slice, Gather, ...) (no model output, no other reader on the way).
/// Ordered so that applying them in turn also serves chains (Relu → Relu).
pub fn shared_points(graph: &Graph, points: &[CalibPoint]) -> Vec<SharedPoint> {
    let mut found = Vec::new();
    for (i, p) in points.iter().enumerate() {
        if p.is_weight() || p.model_output || graph.inputs.iter().any(|v| v.name == p.tensor) {
            continue;
        }
        let [(node, 0)] = p.consumers[..] else {
            continue;
        };
        let act = &graph.nodes[node];
        if !CLAMPS.contains(&act.op_type.as_str()) || !act.domain.is_empty() {
            continue;
        }
        // Every reader of the tensor must be this activation (a reader of
        // another qtype has a point of its own, a float reader none).
        if graph.consumers(&p.tensor) != [node] || graph.is_output(&p.tensor) {
            continue;
        }
        let Some(mut value) = act.outputs.first().cloned() else {
            continue;
        };
        let mut direct = true;
        let output = loop {
            let at = points.iter().position(|q| {
                q.tensor == value && q.qtype == p.qtype && matches!(q.kind, TensorKind::Feature)
            });
            let readers = graph.consumers(&value);
            if let Some(o) = at {
                // The point must be the only quantizer of the value.
                let others = points
                    .iter()
                    .enumerate()
                    .any(|(k, q)| k != o && q.tensor == value);
                let uncovered = readers
                    .iter()
                    .any(|r| !points[o].consumers.iter().any(|(n, _)| n == r));
                break (!others && !uncovered && !graph.is_output(&value)).then_some(o);
            }
            let [next] = readers[..] else {
                break None;
            };
            let n = &graph.nodes[next];
            if graph.is_output(&value)
                || !MOVES_VALUES.contains(&n.op_type.as_str())
                || n.inputs.first() != Some(&value)
                || n.outputs.len() != 1
            {
                break None;
            }
            value = n.outputs[0].clone();
            direct = false;
        };
        if let Some(output) = output {
            found.push(SharedPoint {
                input: i,
                output,
                op: act.op_type.clone(),
                direct,
            });
        }
    }
    // Later activations first: an output point that is itself an input of
    // a later pair has its final thresholds before they are copied.
    found.sort_by_key(|s| std::cmp::Reverse(s.input));
    found
}

/// Copies each shared point's output thresholds onto its input point;
/// returns the input points that took them.
pub fn apply(shared: &[SharedPoint], thresholds: &mut [Thresholds]) -> Vec<usize> {
    let mut applied = Vec::new();
    for s in shared {
        let out = &thresholds[s.output];
        let per_channel = out.values.len() > if out.asymmetric { 2 } else { 1 };
        if per_channel && !s.direct {
            continue;
        }
        let mut t = out.clone();
        t.method = format!("{} (shared with the {} output)", out.method, s.op);
        thresholds[s.input] = t;
        applied.push(s.input);
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QType;
    use hb_ir::{Node, ValueInfo};

    fn feature(tensor: &str, consumers: &[(usize, usize)]) -> CalibPoint {
        CalibPoint {
            tensor: tensor.into(),
            qtype: QType::Int8,
            ec: false,
            kind: TensorKind::Feature,
            consumers: consumers.to_vec(),
            model_output: false,
        }
    }

    fn th(v: f32, method: &str) -> Thresholds {
        Thresholds {
            values: vec![v],
            axis: 0,
            asymmetric: false,
            method: method.into(),
            keep_masks: false,
            mask_limit: f32::INFINITY,
        }
    }

    fn graph(nodes: Vec<Node>) -> Graph {
        Graph {
            nodes,
            outputs: vec![ValueInfo::tensor("out", hb_tensor::DType::F32, &[])],
            ..Graph::default()
        }
    }

    #[test]
    fn conv_relu_and_flattened_relu_share_the_output_thresholds() {
        let g = graph(vec![
            Node::new("c", "Conv", &["x", "w"], &["y"]),
            Node::new("r", "Relu", &["y"], &["a"]),
            Node::new("c2", "Conv", &["a", "w2"], &["y2"]),
            Node::new("r2", "Clip", &["y2", "lo", "hi"], &["a2"]),
            Node::new("f", "Flatten", &["a2"], &["fa"]),
            Node::new("m", "Gemm", &["fa", "w3"], &["out"]),
        ]);
        let points = vec![
            feature("x", &[(0, 0)]),
            feature("y", &[(1, 0)]),
            feature("a", &[(2, 0)]),
            feature("y2", &[(3, 0)]),
            feature("fa", &[(5, 0)]),
        ];
        let shared = shared_points(&g, &points);
        assert_eq!(
            shared,
            vec![
                SharedPoint {
                    input: 3,
                    output: 4,
                    op: "Clip".into(),
                    direct: false
                },
                SharedPoint {
                    input: 1,
                    output: 2,
                    op: "Relu".into(),
                    direct: true
                },
            ]
        );
        let mut t = vec![
            th(1.0, "max"),
            th(4.2, "kl:1024"),
            th(3.5, "kl:1024"),
            th(9.0, "max"),
            th(6.0, "max"),
        ];
        assert_eq!(apply(&shared, &mut t), [3, 1]);
        assert_eq!(t[1].values, [3.5]);
        assert_eq!(t[1].method, "kl:1024 (shared with the Relu output)");
        assert_eq!(t[3].values, [6.0]);
        assert_eq!((t[0].values[0], t[2].values[0]), (1.0, 3.5));
    }

    #[test]
    fn other_readers_leaky_relu_and_int16_outputs_keep_their_own() {
        let g = graph(vec![
            // y is also read by the Add (a residual): no sharing.
            Node::new("r", "Relu", &["y"], &["a"]),
            Node::new("s", "Add", &["a", "y"], &["b"]),
            // LeakyRelu needs the negative range.
            Node::new("l", "LeakyRelu", &["b"], &["c"]),
            Node::new("m", "Mul", &["c", "c"], &["d"]),
            // The Relu output is read at int16.
            Node::new("r2", "Relu", &["d"], &["e"]),
            Node::new("n", "Neg", &["e"], &["out"]),
        ]);
        let mut e = feature("e", &[(5, 0)]);
        e.qtype = QType::Int16;
        let points = vec![
            feature("y", &[(0, 0), (1, 1)]),
            feature("a", &[(1, 0)]),
            feature("b", &[(2, 0)]),
            feature("c", &[(3, 0), (3, 1)]),
            feature("d", &[(4, 0)]),
            e,
        ];
        assert!(shared_points(&g, &points).is_empty());
    }

    #[test]
    fn per_channel_thresholds_share_only_without_a_reshape_between() {
        let mut out = th(0.0, "max");
        out.values = vec![1.0, 2.0];
        out.axis = 1;
        let mut t = vec![th(5.0, "max"), out];
        let via_reshape = SharedPoint {
            input: 0,
            output: 1,
            op: "Relu".into(),
            direct: false,
        };
        assert!(apply(std::slice::from_ref(&via_reshape), &mut t).is_empty());
        assert_eq!(t[0].values, [5.0]);
        apply(
            &[SharedPoint {
                direct: true,
                ..via_reshape
            }],
            &mut t,
        );
        assert_eq!((t[0].values.clone(), t[0].axis), (vec![1.0, 2.0], 1));
    }
}
