//! The memory plan of a program: every runtime tensor (not a constant, not
//! a model input) gets a slot; tensors whose lifetimes do not overlap share
//! a slot of the same element type. An op's output never shares a slot with
//! any of its inputs (their lifetimes overlap at the op).

use super::{dtype_of, numel, pb, shape_of, Program};
use crate::program::consts::stored_size;
use hb_tensor::DType;

fn shareable(dt: DType) -> bool {
    matches!(dt, DType::I8 | DType::I16 | DType::I32 | DType::F32)
}

/// Plans slots for `p` (greedy by op order, best fit).
pub fn plan(p: &Program) -> pb::MemoryPlan {
    let n = p.tensors.len();
    let nops = p.ops.len();
    let mut last = vec![None::<usize>; n];
    for (i, op) in p.ops.iter().enumerate() {
        for &x in &op.inputs {
            if x >= 0 {
                last[x as usize] = Some(i);
            }
        }
        for post in &op.post {
            if let Some(pb::post_op::Kind::Add(a)) = &post.kind {
                last[a.other as usize] = Some(i);
            }
        }
    }
    for &o in &p.outputs {
        last[o as usize] = Some(nops);
    }
    let mut is_input = vec![false; n];
    for &i in &p.inputs {
        is_input[i as usize] = true;
    }
    let mut slots: Vec<pb::MemorySlot> = Vec::new();
    let mut busy_until: Vec<usize> = Vec::new();
    let mut tensor_slot = vec![-1i32; n];
    let mut unplanned = 0u64;
    for (i, op) in p.ops.iter().enumerate() {
        for &o in &op.outputs {
            let t = &p.tensors[o as usize];
            if t.is_const || is_input[o as usize] || tensor_slot[o as usize] >= 0 {
                continue;
            }
            let Ok(dt) = dtype_of(t) else { continue };
            let elems = numel(&shape_of(t)) as u64;
            unplanned += elems * stored_size(dt) as u64;
            let end = last[o as usize].unwrap_or(i);
            let free = |k: usize| busy_until[k] < i && slots[k].dtype == t.dtype;
            let pick = if shareable(dt) {
                let fitting = (0..slots.len())
                    .filter(|&k| free(k) && slots[k].elems >= elems)
                    .min_by_key(|&k| slots[k].elems);
                fitting.or_else(|| {
                    (0..slots.len())
                        .filter(|&k| free(k))
                        .max_by_key(|&k| slots[k].elems)
                })
            } else {
                None
            };
            let k = match pick {
                Some(k) => {
                    slots[k].elems = slots[k].elems.max(elems);
                    k
                }
                None => {
                    slots.push(pb::MemorySlot {
                        dtype: t.dtype,
                        elems,
                    });
                    busy_until.push(0);
                    slots.len() - 1
                }
            };
            busy_until[k] = end.max(i);
            tensor_slot[o as usize] = k as i32;
        }
    }
    let total = slots
        .iter()
        .map(|s| s.elems * DType::from_onnx_code(s.dtype).map_or(1, stored_size) as u64)
        .sum();
    pb::MemoryPlan {
        slots,
        tensor_slot,
        total_bytes: total,
        unplanned_bytes: unplanned,
    }
}

/// Bytes of constants (weights, tables' sources).
pub fn constant_bytes(p: &Program) -> u64 {
    p.tensors
        .iter()
        .filter(|t| t.is_const)
        .map(|t| t.data.len() as u64)
        .sum()
}
