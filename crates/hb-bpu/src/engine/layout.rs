//! Which tensors the engine stores channels-last.
//!
//! The packed conv reads its input through a channels-last padded copy and
//! writes its output with one channel per column of the GEMM tile, so a
//! conv → conv chain in NCHW pays a transposing copy on the way in and a
//! strided store on the way out. A 4-D tensor is kept channels-last
//! (`[N, H, W, C]` in memory, the logical shape unchanged) when its
//! producer and every reader run a channels-last path:
//!
//! - a packed Conv not run by the depthwise kernel (input 0 and output; a
//!   fused Add's other operand must share the output's layout);
//! - a MaxPool on the 2-D fast path (input and output together);
//! - a GlobalAveragePool (input only: its `[N, C, 1, 1]` output is laid
//!   out the same either way).
//!
//! Program inputs and outputs stay NCHW, and so does every tensor another
//! op reads; the engine shows NCHW copies to dump callbacks. The values
//! are the same integers in another order, so results are unchanged.

use super::Packed;
use crate::program::prepared::{Kernel, Post, PreparedOp};
use crate::program::Program;
use hb_tensor::DType;

/// How an op can take part in a channels-last chain.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Packed conv: free input layout, output may be channels-last.
    Conv,
    /// MaxPool fast path: input and output share a layout.
    MaxPool,
    /// GlobalAveragePool: any input layout; its `[N, C, 1, 1]` output is
    /// the same bytes in both, and stays NCHW.
    GlobalPool,
    /// Anything else: NCHW only.
    None,
}

fn role(op: &PreparedOp, packed: Option<&Packed>, narrow: Option<&Packed>) -> Role {
    if op.on_cpu || op.outputs.len() != 1 {
        return Role::None;
    }
    let cl_conv = |p: Option<&Packed>| match p {
        Some(Packed::Conv(pw)) => pw.conv_takes_channels_last(),
        _ => false,
    };
    match &op.kernel {
        Kernel::Conv { .. } if cl_conv(packed) && (narrow.is_none() || cl_conv(narrow)) => {
            Role::Conv
        }
        Kernel::MaxPool { params, .. }
            if packed.is_none() && super::fastops::max_pool_2d_fits(params) =>
        {
            Role::MaxPool
        }
        Kernel::GlobalAvgPool { .. } => Role::GlobalPool,
        _ => Role::None,
    }
}

/// Per tensor id: stored channels-last.
pub(super) fn channels_last(
    program: &Program,
    ops: &[PreparedOp],
    packed: &[Option<Packed>],
    narrow: &[Option<Packed>],
    infos: &[(DType, Vec<usize>)],
) -> Vec<bool> {
    let roles: Vec<Role> = ops
        .iter()
        .enumerate()
        .map(|(k, op)| role(op, packed[k].as_ref(), narrow[k].as_ref()))
        .collect();
    let mut cl = vec![false; infos.len()];
    for (op, &r) in ops.iter().zip(&roles) {
        let y = op.outputs[0];
        let int = matches!(infos[y].0, DType::I8 | DType::I16 | DType::I32);
        if matches!(r, Role::Conv | Role::MaxPool) && int && infos[y].1.len() == 4 {
            cl[y] = true;
        }
    }
    for &o in program.outputs.iter().chain(&program.inputs) {
        if let Some(v) = cl.get_mut(o as usize) {
            *v = false;
        }
    }
    // Drop tensors a reader cannot take channels-last, and pairs that must
    // share a layout but do not, until nothing changes.
    loop {
        let mut changed = false;
        let mut drop = |cl: &mut Vec<bool>, t: usize| {
            if cl[t] {
                cl[t] = false;
                changed = true;
            }
        };
        for (op, &r) in ops.iter().zip(&roles) {
            let y = op.outputs.first().copied();
            let add_others: Vec<usize> = op
                .post
                .iter()
                .filter_map(|p| match p {
                    Post::Add { other, .. } => Some(*other),
                    _ => None,
                })
                .collect();
            for (pos, t) in op.inputs.iter().enumerate() {
                let Some(t) = *t else { continue };
                if !cl[t] {
                    continue;
                }
                let y = y.unwrap_or(t);
                let ok = match r {
                    Role::Conv if pos == 0 => !add_others.contains(&t) || cl[y],
                    Role::Conv => add_others.contains(&t) && cl[y],
                    Role::MaxPool => pos == 0 && cl[y],
                    Role::GlobalPool => pos == 0,
                    Role::None => false,
                };
                if !ok {
                    drop(&mut cl, t);
                }
            }
            // The output's partners: a fused Add's operand, MaxPool's input.
            if let Some(y) = y {
                let partners: Vec<usize> = match r {
                    Role::Conv => add_others.clone(),
                    Role::MaxPool => op.inputs.first().copied().flatten().into_iter().collect(),
                    Role::GlobalPool | Role::None => Vec::new(),
                };
                if cl[y] && partners.iter().any(|&t| !cl[t]) {
                    drop(&mut cl, y);
                }
            }
        }
        if !changed {
            return cl;
        }
    }
}
