//! Static bounds of tensor values that the engine's own ops guarantee: an
//! op whose last step is a clamp to `[lo, hi]` writes nothing outside it,
//! and data movement keeps its input's bound. Kernels that must prove an
//! accumulator cannot overflow (the activation MatMul's i32 sums) use
//! these instead of scanning their operands on every run: a uint8 tensor
//! stored as int16 is bounded by 255, not by 32 767.

use crate::program::prepared::{Kernel, Post, PreparedOp};

/// Ops that only move or select their first input's values.
const MOVES: [&str; 8] = [
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Identity",
    "Slice",
    "Expand",
];

/// Per tensor id: the largest `|value|` it can hold, when an op bounds it.
pub(super) fn value_bounds(ops: &[PreparedOp], tensors: usize) -> Vec<Option<i64>> {
    let mut bound: Vec<Option<i64>> = vec![None; tensors];
    for op in ops {
        let &[out] = op.outputs.as_slice() else {
            continue;
        };
        let clamp = match op.post.last() {
            Some(Post::Rescale { clamp, .. }) => *clamp,
            Some(_) => None,
            None => match &op.kernel {
                Kernel::Rescale { clamp, .. } | Kernel::Conv { clamp, .. } => *clamp,
                _ => None,
            },
        };
        let moved = || {
            let input = op.inputs.first().copied().flatten()?;
            (op.post.is_empty() && MOVES.contains(&op.op_type.as_str()))
                .then(|| bound.get(input).copied().flatten())
                .flatten()
        };
        let b = clamp
            .map(|(lo, hi)| {
                lo.unsigned_abs()
                    .max(hi.unsigned_abs())
                    .min(i64::MAX as u64) as i64
            })
            .or_else(moved);
        if let Some(slot) = bound.get_mut(out) {
            *slot = b;
        }
    }
    bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_point::Requant;

    fn op(
        op_type: &str,
        kernel: Kernel,
        post: Vec<Post>,
        input: usize,
        output: usize,
    ) -> PreparedOp {
        PreparedOp {
            index: 0,
            name: op_type.into(),
            op_type: op_type.into(),
            inputs: vec![Some(input)],
            outputs: vec![output],
            kernel,
            post,
            on_cpu: false,
        }
    }

    #[test]
    fn clamps_bound_and_moves_keep_the_bound() {
        let r = Requant::from_ratio(0.5).unwrap();
        let rescale = |clamp| Kernel::Rescale {
            requant: vec![r],
            axis: 0,
            clamp,
        };
        let clamp_post = |lo, hi| Post::Rescale {
            requant: vec![r],
            axis: 0,
            clamp: Some((lo, hi)),
        };
        let ops = [
            // A Relu-like clamp to [0, 255].
            op("Rescale", rescale(Some((0, 255))), vec![], 0, 1),
            op("Reshape", Kernel::Reshape, vec![], 1, 2),
            // A post whose last step clamps to [−300, 40].
            op("Lut", rescale(None), vec![clamp_post(-300, 40)], 2, 3),
            // Unclamped arithmetic: unknown.
            op("Rescale", rescale(None), vec![], 3, 4),
            op("Transpose", Kernel::Transpose(vec![0]), vec![], 4, 5),
            // A move with a post of its own is not a pure move.
            op("Reshape", Kernel::Reshape, vec![clamp_post(0, 0)], 1, 6),
        ];
        let b = value_bounds(&ops, 8);
        assert_eq!(
            b,
            [
                None,
                Some(255),
                Some(255),
                Some(300),
                None,
                None,
                Some(0),
                None
            ]
        );
    }
}
