//! BatchNormalization folded into the preceding Conv, ConvTranspose or Gemm.
//!
//! For per-channel `s = gamma / sqrt(var + eps)`: `W'[c] = W[c] · s[c]` along
//! the layer's output-channel axis and `b' = (b − mean) · s + beta`.

use crate::attr::Attr;
use crate::graph::Graph;
use crate::{IrError, Result};
use hb_tensor::Tensor;
use ndarray::{ArrayD, Axis};
use std::sync::Arc;

/// Folds every foldable BatchNormalization; returns how many were folded.
pub fn fold_batch_norm(g: &mut Graph) -> Result<usize> {
    let mut folded = 0;
    let mut k = 0;
    while k < g.nodes.len() {
        if try_fold(g, k)? {
            folded += 1;
        } else {
            k += 1;
        }
    }
    Ok(folded)
}

fn f32_init(g: &Graph, name: Option<&str>) -> Option<ArrayD<f32>> {
    g.initializer(name?)?.as_f32().ok().cloned()
}

/// Tries to fold BN node `k` into its producer; on success removes the BN node.
fn try_fold(g: &mut Graph, k: usize) -> Result<bool> {
    let bn = g.nodes[k].clone();
    if bn.op_type != "BatchNormalization" || !bn.domain.is_empty() {
        return Ok(false);
    }
    if bn.outputs.iter().skip(1).any(|o| !o.is_empty()) || bn.int_or("training_mode", 0)? != 0 {
        return Ok(false);
    }
    let Some(x) = bn.input(0) else {
        return Ok(false);
    };
    let Some(p) = g.producer(x) else {
        return Ok(false);
    };
    if g.consumers(x).len() != 1 || g.is_output(x) {
        return Ok(false);
    }
    let params: Option<Vec<ArrayD<f32>>> = (1..5).map(|i| f32_init(g, bn.input(i))).collect();
    let Some(params) = params else {
        return Ok(false);
    };
    let eps = bn.float_or("epsilon", 1e-5)?;
    let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let c = gamma.len();
    if [beta.len(), mean.len(), var.len()].iter().any(|&l| l != c) {
        return Ok(false);
    }
    let flat = |a: &ArrayD<f32>| a.iter().copied().collect::<Vec<f32>>();
    let (gamma, beta, mean, var) = (flat(gamma), flat(beta), flat(mean), flat(var));
    let scale: Vec<f32> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
    let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();

    let prod = g.nodes[p].clone();
    let Some(w) = f32_init(g, prod.input(1)) else {
        return Ok(false);
    };
    let old_bias = match prod.input(2) {
        Some(b) => match f32_init(g, Some(b)) {
            Some(b) => Some(b),
            None => return Ok(false),
        },
        None => None,
    };
    let (new_w, bias_len) = match prod.op_type.as_str() {
        "Conv" if w.ndim() >= 3 && w.shape()[0] == c => (scale_axis(&w, 0, &scale, 1), c),
        "ConvTranspose" if w.ndim() >= 3 => {
            let group = prod.int_or("group", 1)?.max(1) as usize;
            if w.shape()[1] * group != c {
                return Ok(false);
            }
            (scale_axis(&w, 1, &scale, group), c)
        }
        "Gemm" if w.ndim() == 2 => {
            if prod.float_or("alpha", 1.0)? != 1.0 {
                return Ok(false);
            }
            let axis = if prod.int_or("transB", 0)? != 0 { 0 } else { 1 };
            if w.shape()[axis] != c {
                return Ok(false);
            }
            (scale_axis(&w, axis, &scale, 1), c)
        }
        _ => return Ok(false),
    };
    let beta_gemm = if prod.op_type == "Gemm" {
        prod.float_or("beta", 1.0)?
    } else {
        1.0
    };
    let mut bias = vec![0f32; bias_len];
    if let Some(b) = &old_bias {
        let vals: Vec<f32> = b.iter().copied().collect();
        if vals.len() != c && vals.len() != 1 {
            return Ok(false);
        }
        for (i, v) in bias.iter_mut().enumerate() {
            *v = vals[if vals.len() == 1 { 0 } else { i }] * beta_gemm;
        }
    }
    for i in 0..c {
        bias[i] = bias[i] * scale[i] + shift[i];
    }
    let w_name = g.fresh_name(&format!("{}_bnfold_w", prod.name));
    let b_name = g.fresh_name(&format!("{}_bnfold_b", prod.name));
    let err = |e: hb_tensor::TensorError| IrError::Graph(e.to_string());
    g.initializers
        .insert(w_name.clone(), Arc::new(Tensor::F32(new_w)));
    g.initializers.insert(
        b_name.clone(),
        Arc::new(Tensor::from_vec(&[c], bias).map_err(err)?),
    );
    let bn_out = bn.outputs[0].clone();
    let node = &mut g.nodes[p];
    node.inputs.resize(3, String::new());
    node.inputs[1] = w_name;
    node.inputs[2] = b_name;
    if node.op_type == "Gemm" {
        node.attrs.insert("beta".into(), Attr::Float(1.0));
    }
    for o in &mut node.outputs {
        if o == x {
            *o = bn_out.clone();
        }
    }
    g.nodes.remove(k);
    Ok(true)
}

/// Multiplies `w` along `axis` by `scale`; with `group > 1` the scaled axis
/// holds one group's channels and channel `gi·len + j` uses `scale[gi·len + j]`
/// for rows of group `gi` (ConvTranspose weight `[Cin, Cout/g, ...]`).
fn scale_axis(w: &ArrayD<f32>, axis: usize, scale: &[f32], group: usize) -> ArrayD<f32> {
    let mut out = w.clone();
    let per_group_rows = w.shape()[0] / group.max(1);
    let axis_len = w.shape()[axis];
    if group > 1 {
        for (row, mut sub) in out.axis_iter_mut(Axis(0)).enumerate() {
            let gi = row / per_group_rows.max(1);
            for (j, mut lane) in sub.axis_iter_mut(Axis(0)).enumerate() {
                lane.mapv_inplace(|v| v * scale[gi * axis_len + j]);
            }
        }
    } else {
        for (j, mut lane) in out.axis_iter_mut(Axis(axis)).enumerate() {
            lane.mapv_inplace(|v| v * scale[j]);
        }
    }
    out
}
