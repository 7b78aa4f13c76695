//! What quantization does with each op type: which inputs carry data to be
//! quantized, which input is a weight and along which axis its channels lie.

use hb_ir::Node;

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
}
