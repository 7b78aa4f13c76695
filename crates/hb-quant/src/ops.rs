//! What quantization does with each op type: which inputs carry data to be
//! quantized, which input is a weight and along which axis its channels lie.

use hb_ir::{Graph, Node};
use std::collections::HashSet;

/// Ops that only move, select or reinterpret data. They run on quantized
/// values unchanged (a per-tensor scale passes through them), so their
/// inputs get no calibration node of their own: the tensor is quantized
/// where a computing op reads it.
pub const PASSIVE: &[&str] = &[
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "GatherElements",
    "GatherND",
    "Expand",
    "Tile",
    "Identity",
    "Dropout",
    "DepthToSpace",
    "SpaceToDepth",
    "Pad",
    "Where",
    "Shape",
    "Size",
    "Cast",
    "CastLike",
    "ConstantOfShape",
    "Range",
    "NonZero",
    "ArgMax",
    "ArgMin",
    "TopK",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "IsNaN",
    "IsInf",
    "Trilu",
    "ScatterND",
    "ScatterElements",
    "Unique",
    "OneHot",
    "EyeLike",
    "QuantizeLinear",
    "DequantizeLinear",
    "HzCalibration",
    "HzPreprocess",
];

/// Ops that are nothing but matrix products with weights (their output can
/// stay in 32-bit precision when it ends the model).
pub const WEIGHTED: &[&str] = &["Conv", "ConvTranspose", "MatMul", "Gemm"];

/// Ops the integer machine has no kernel for: whole recurrent layers. They
/// run on the CPU in float unless a config places them (as if listed in
/// `run_on_cpu`), so their inputs get no calibration node: a float island
/// reads the host values of its inputs, and a Quantize → Dequantize pair
/// in front of it would only lose precision.
pub const CPU_BY_DEFAULT: &[&str] = &["RNN", "GRU", "LSTM"];

/// True when the op runs on the CPU unless a config says otherwise (see
/// [`CPU_BY_DEFAULT`]).
pub fn cpu_by_default(node: &Node) -> bool {
    let custom = !(node.domain.is_empty() || node.domain == "ai.onnx");
    !custom && CPU_BY_DEFAULT.contains(&node.op_type.as_str())
}

/// True when the op gets calibration nodes on its inputs.
pub fn is_quantized_op(node: &Node) -> bool {
    let custom = !(node.domain.is_empty() || node.domain == "ai.onnx");
    !custom && !PASSIVE.contains(&node.op_type.as_str())
}

/// The input positions that carry data to quantize (others are parameters
/// such as shapes, scales, epsilon or biases).
pub fn data_inputs(node: &Node) -> Vec<usize> {
    let n = node.inputs.len();
    let first = |k: usize| (0..n.min(k)).collect::<Vec<_>>();
    match node.op_type.as_str() {
        "Conv" | "ConvTranspose" | "Gemm" => first(2),
        "MatMul" | "GridSample" => first(2),
        "Resize"
        | "Upsample"
        | "Clip"
        | "LayerNormalization"
        | "GroupNormalization"
        | "InstanceNormalization"
        | "BatchNormalization"
        | "RMSNormalization"
        | "LpNormalization"
        | "ReduceMean"
        | "ReduceSum"
        | "ReduceMax"
        | "ReduceMin"
        | "ReduceProd"
        | "ReduceL1"
        | "ReduceL2"
        | "ReduceLogSumExp"
        | "ReduceSumSquare"
        | "CumSum"
        | "Softmax"
        | "LogSoftmax"
        | "LRN" => first(1),
        "Attention" => first(3),
        _ => (0..n).collect(),
    }
}

/// True when error compensation (`ec`) applies to input `input` of `node`:
/// Conv / ConvTranspose / MatMul / Gemm input1 (the weight) and Resize /
/// GridSample input0 (REFERENCE.md §6, docs/integer-semantics.md §8).
pub fn ec_allowed(node: &Node, input: usize) -> bool {
    match node.op_type.as_str() {
        "Conv" | "ConvTranspose" | "MatMul" | "Gemm" => input == 1,
        "Resize" | "GridSample" => input == 0,
        _ => false,
    }
}

/// True when input `input` of `node` is a divisor (`Div` input1,
/// `Reciprocal` input0): clipping it would scale up the quotient, so its
/// threshold is never clipped below the observed max.
pub fn is_divisor(node: &Node, input: usize) -> bool {
    matches!(
        (node.op_type.as_str(), input),
        ("Div", 1) | ("Reciprocal", 0)
    )
}

/// Tensors whose clipping would bias a divisor: the divisors themselves
/// (see [`is_divisor`]) and, walking back from them, the tensors they are
/// a statistic of — `Sqrt`, the `Reduce*` means and sums, `Add`/`Mul` with
/// a constant, and the squared input of `Pow`/`Mul(x, x)`. This is the
/// variance chain of a LayerNorm or RMSNorm decomposed by an exporter
/// (`ReduceMean(Pow(x - mean, 2)) + eps → Sqrt → Div`): clipping the
/// squares shrinks the variance and scales up every normalised value, so
/// these tensors keep their max threshold (docs/quantization.md).
pub fn divisor_statistics(graph: &Graph) -> HashSet<String> {
    let is_const = |v: &str| {
        graph.initializer(v).is_some()
            || graph
                .producer(v)
                .is_some_and(|p| graph.nodes[p].op_type == "Constant")
    };
    let mut found = HashSet::new();
    let mut todo: Vec<String> = Vec::new();
    for node in &graph.nodes {
        for (k, input) in node.inputs.iter().enumerate() {
            if !input.is_empty() && is_divisor(node, k) && !is_const(input) {
                todo.push(input.clone());
            }
        }
    }
    while let Some(value) = todo.pop() {
        if !found.insert(value.clone()) {
            continue;
        }
        let Some(p) = graph.producer(&value) else {
            continue;
        };
        let node = &graph.nodes[p];
        let data: Vec<&String> = node
            .inputs
            .iter()
            .filter(|i| !i.is_empty() && !is_const(i))
            .collect();
        match node.op_type.as_str() {
            // The value is a statistic of its (single) data input: walk on.
            "Sqrt" | "ReduceMean" | "ReduceSum" | "ReduceSumSquare" | "ReduceL2" | "Abs"
                if !data.is_empty() =>
            {
                todo.push(data[0].clone());
            }
            "Add" | "Mul" | "Max" | "Clip" if data.len() == 1 => todo.push(data[0].clone()),
            // Squares: their input is kept at max too, but not walked past
            // (it is the centred data, also the numerator).
            "Pow" if data.len() == 1 => {
                found.insert(data[0].clone());
            }
            "Mul" if data.len() == 2 && data[0] == data[1] => {
                found.insert(data[0].clone());
            }
            _ => {}
        }
    }
    found
}

/// Ops whose output lies in a fixed, narrow interval (Sigmoid and
/// HardSigmoid in [0, 1], Softmax in [0, 1], Tanh and Erf in [-1, 1]).
const BOUNDED: &[&str] = &["Sigmoid", "HardSigmoid", "Softmax", "Tanh", "Erf"];

/// Ops that only move or select values: a bounded tensor stays bounded,
/// and a quantizer valid for the input is valid for the output.
pub(crate) const MOVES_VALUES: &[&str] = &[
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Slice",
    "Split",
    "Gather",
    "Expand",
    "Identity",
];

/// Outputs of bounded ops ([`BOUNDED`]), followed through reshapes, slices
/// and splits. A histogram method must not clip them: their values pile up
/// at the ends of the interval (a gate's sigmoid near 0 and 1, an
/// attention peak near 1), and KL, which lumps the clipped mass into its
/// last bin, readily picks a threshold of half the range — every open gate
/// then passes half its value. They keep their max threshold
/// (docs/quantization.md).
pub fn bounded_outputs(graph: &Graph) -> HashSet<String> {
    let mut found = HashSet::new();
    for node in &graph.nodes {
        let op = node.op_type.as_str();
        let follows =
            MOVES_VALUES.contains(&op) && node.inputs.first().is_some_and(|i| found.contains(i));
        if BOUNDED.contains(&op) || follows {
            found.extend(node.outputs.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    found
}

/// Where a weight input's output channels lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightSlot {
    /// Input position of the weight.
    pub input: usize,
    /// Output-channel axis of the weight tensor (per-channel thresholds).
    pub axis: usize,
}

/// The weight input of a weighted op, given the weight's rank.
pub fn weight_slot(node: &Node, rank: usize) -> Option<WeightSlot> {
    let axis = match node.op_type.as_str() {
        "Conv" => 0,
        "ConvTranspose" => 1,
        "Gemm" => {
            if node.int_or("transB", 0).unwrap_or(0) != 0 {
                0
            } else {
                1
            }
        }
        "MatMul" => rank.saturating_sub(1),
        _ => return None,
    };
    Some(WeightSlot {
        input: 1,
        axis: axis.min(rank.saturating_sub(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_weight_axis_follows_trans_b() {
        let mut n = Node::new("g", "Gemm", &["a", "b", "c"], &["y"]);
        assert_eq!(weight_slot(&n, 2).map(|w| w.axis), Some(1));
        n.set_attr("transB", hb_ir::Attr::Int(1));
        assert_eq!(weight_slot(&n, 2).map(|w| w.axis), Some(0));
        assert_eq!(data_inputs(&n), vec![0, 1]);
    }

    #[test]
    fn ec_only_on_weights_and_resampled_inputs() {
        let conv = Node::new("c", "Conv", &["x", "w", "b"], &["y"]);
        assert!(ec_allowed(&conv, 1) && !ec_allowed(&conv, 0));
        let rs = Node::new("r", "Resize", &["x", "", "s"], &["y"]);
        assert!(ec_allowed(&rs, 0) && !ec_allowed(&rs, 2));
        assert!(!ec_allowed(&Node::new("a", "Add", &["x", "z"], &["y"]), 1));
    }

    #[test]
    fn passive_ops_are_not_quantized() {
        assert!(!is_quantized_op(&Node::new(
            "r",
            "Reshape",
            &["a", "s"],
            &["y"]
        )));
        assert!(is_quantized_op(&Node::new("s", "Softmax", &["a"], &["y"])));
    }

    #[test]
    fn bounded_outputs_follow_reshapes_and_splits_only() {
        let g = Graph {
            nodes: vec![
                Node::new("s", "Sigmoid", &["x"], &["g"]),
                Node::new("r", "Reshape", &["g", "shape"], &["gr"]),
                Node::new("p", "Split", &["gr"], &["g0", "g1"]),
                Node::new("m", "Mul", &["g0", "x"], &["y"]),
                Node::new("t", "Tanh", &["y"], &["h"]),
                Node::new("c", "Concat", &["h", "x"], &["cat"]),
            ],
            ..Graph::default()
        };
        let mut got: Vec<String> = bounded_outputs(&g).into_iter().collect();
        got.sort();
        assert_eq!(got, ["g", "g0", "g1", "gr", "h"]);
    }

    #[test]
    fn decomposed_layer_norm_variance_chain_is_a_divisor_statistic() {
        let mut g = Graph::default();
        for c in ["two", "eps"] {
            g.initializers.insert(
                c.into(),
                std::sync::Arc::new(hb_tensor::Tensor::scalar(2f32)),
            );
        }
        g.nodes = vec![
            Node::new("m", "ReduceMean", &["x"], &["mean"]),
            Node::new("s", "Sub", &["x", "mean"], &["d"]),
            Node::new("p", "Pow", &["d", "two"], &["sq"]),
            Node::new("v", "ReduceMean", &["sq"], &["var"]),
            Node::new("a", "Add", &["var", "eps"], &["ve"]),
            Node::new("r", "Sqrt", &["ve"], &["std"]),
            Node::new("q", "Div", &["d", "std"], &["y"]),
            Node::new("o", "Add", &["y", "x"], &["z"]),
        ];
        let mut got: Vec<String> = divisor_statistics(&g).into_iter().collect();
        got.sort();
        assert_eq!(got, ["d", "sq", "std", "var", "ve"]);
    }
}
