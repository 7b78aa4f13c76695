//! Einsum: two-operand contractions that map to a batched matrix product
//! (e.g. `bhid,bhjd->bhij`) run through the f32 GEMM after a permute; every
//! other form (transposes, reductions, traces, diagonals, outer products,
//! more operands, broadcast ellipsis) runs as a general strided loop.

use crate::error::OpResult;
use crate::invalid;
use crate::kernels::floatio::f32_of;
use crate::kernels::gemm::{for_each_chunk, sgemm, Mat};
use crate::kernels::util::one;
use crate::registry::{OpCtx, Registry};
use hb_tensor::{DType, Tensor};
use ndarray::{ArrayD, IxDyn};

/// Registers Einsum.
pub fn register(r: &mut Registry) {
    r.register("Einsum", einsum);
}

/// A parsed equation: labels per operand and of the output (ellipsis dims
/// become labels of their own).
#[derive(Debug, Clone, PartialEq)]
pub struct Equation {
    /// Labels of each operand, one per dim.
    pub inputs: Vec<Vec<char>>,
    /// Labels of the output.
    pub output: Vec<char>,
}

/// Labels standing for ellipsis dims (never valid equation letters).
const ELLIPSIS: [char; 8] = ['0', '1', '2', '3', '4', '5', '6', '7'];

/// Splits a term into labels, expanding `...` to `rank - letters` dims.
fn expand_term(term: &str, rank: Option<usize>, ell: &mut Option<usize>) -> OpResult<Vec<char>> {
    let letters: Vec<char> = term.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    if term.chars().any(|c| !c.is_ascii_alphabetic() && c != '.') {
        return Err(invalid!("Einsum term '{term}' has invalid characters"));
    }
    let Some(pos) = term.find("...") else {
        return Ok(letters);
    };
    let n = match rank {
        Some(r) => r.checked_sub(letters.len()).ok_or_else(|| {
            invalid!("Einsum term '{term}' has more labels than its operand's {r} dims")
        })?,
        None => ell.unwrap_or(0),
    };
    if rank.is_some() {
        *ell = Some(ell.unwrap_or(0).max(n));
    }
    if n > ELLIPSIS.len() {
        return Err(invalid!("Einsum ellipsis covers too many dims ({n})"));
    }
    let before = term[..pos]
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .count();
    let mut out = letters;
    // Ellipsis dims are right-aligned across operands (numpy broadcasting).
    let total = rank.map_or(n, |_| n);
    let labels = ELLIPSIS[ELLIPSIS.len() - total..].iter().copied();
    out.splice(before..before, labels);
    Ok(out)
}

impl Equation {
    /// Parses `equation` for operands of the given ranks.
    pub fn parse(equation: &str, ranks: &[usize]) -> OpResult<Self> {
        let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, rhs) = match eq.split_once("->") {
            Some((l, r)) => (l, Some(r)),
            None => (eq.as_str(), None),
        };
        let terms: Vec<&str> = lhs.split(',').collect();
        if terms.len() != ranks.len() {
            return Err(invalid!(
                "Einsum equation '{equation}' names {} operands, {} given",
                terms.len(),
                ranks.len()
            ));
        }
        let mut ell = None;
        let inputs = terms
            .iter()
            .zip(ranks)
            .map(|(t, &r)| expand_term(t, Some(r), &mut ell))
            .collect::<OpResult<Vec<_>>>()?;
        for (t, &r) in inputs.iter().zip(ranks) {
            if t.len() != r {
                return Err(invalid!(
                    "Einsum equation '{equation}' does not match operand rank {r}"
                ));
            }
        }
        let output = match rhs {
            Some(r) => expand_term(r, None, &mut ell)?,
            None => implicit_output(&inputs, ell.unwrap_or(0)),
        };
        Ok(Equation { inputs, output })
    }
}

/// Implicit output: ellipsis dims, then letters seen exactly once, sorted.
fn implicit_output(inputs: &[Vec<char>], ell: usize) -> Vec<char> {
    let mut out: Vec<char> = ELLIPSIS[ELLIPSIS.len() - ell..].to_vec();
    let mut letters: Vec<char> = inputs
        .iter()
        .flatten()
        .copied()
        .filter(|c| c.is_ascii_alphabetic())
        .collect();
    letters.sort_unstable();
    let once: Vec<char> = letters
        .iter()
        .copied()
        .filter(|c| letters.iter().filter(|d| *d == c).count() == 1)
        .collect();
    out.extend(once);
    out
}

/// Size of every label (broadcasting size-1 ellipsis dims).
fn label_sizes(eq: &Equation, shapes: &[&[usize]]) -> OpResult<Vec<(char, usize)>> {
    let mut sizes: Vec<(char, usize)> = Vec::new();
    for (labels, shape) in eq.inputs.iter().zip(shapes) {
        for (&l, &d) in labels.iter().zip(shape.iter()) {
            match sizes.iter_mut().find(|(c, _)| *c == l) {
                None => sizes.push((l, d)),
                Some((_, s)) if *s == d || d == 1 => {}
                Some((_, s)) if *s == 1 => *s = d,
                Some((_, s)) => {
                    return Err(invalid!("Einsum label '{l}' has sizes {s} and {d}"));
                }
            }
        }
    }
    for l in &eq.output {
        if !sizes.iter().any(|(c, _)| c == l) {
            return Err(invalid!("Einsum output label '{l}' is not in any input"));
        }
    }
    Ok(sizes)
}

fn einsum(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let equation = ctx.node.string_or("equation", "")?;
    let ts: Vec<&Tensor> = inputs
        .iter()
        .map(|t| t.ok_or_else(|| invalid!("Einsum inputs cannot be omitted")))
        .collect::<OpResult<_>>()?;
    if ts.is_empty() {
        return Err(invalid!("Einsum needs at least one input"));
    }
    let dtype = ts[0].dtype();
    if ts.iter().any(|t| t.dtype() != dtype) {
        return Err(invalid!("Einsum inputs must share one element type"));
    }
    let shapes: Vec<&[usize]> = ts.iter().map(|t| t.shape()).collect();
    let ranks: Vec<usize> = shapes.iter().map(|s| s.len()).collect();
    let eq = Equation::parse(&equation, &ranks)?;
    let sizes = label_sizes(&eq, &shapes)?;
    let is_float = matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16);
    if is_float && ts.len() == 2 {
        if let Some(plan) = GemmPlan::new(&eq, &shapes) {
            let (a, b) = (f32_of(ts[0])?, f32_of(ts[1])?);
            let y = plan.run(&a, &b)?;
            return one(Tensor::F32(y).cast(dtype)?);
        }
    }
    let data: Vec<Vec<f64>> = ts
        .iter()
        .map(|t| t.to_f64_vec())
        .collect::<Result<_, _>>()?;
    let (shape, out) = general(&eq, &shapes, &sizes, &data)?;
    let y = ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| invalid!("{e}"))?;
    one(Tensor::F64(y).cast(dtype)?)
}

/// The general strided loop over every label combination.
fn general(
    eq: &Equation,
    shapes: &[&[usize]],
    sizes: &[(char, usize)],
    data: &[Vec<f64>],
) -> OpResult<(Vec<usize>, Vec<f64>)> {
    // Loop order: output labels, then the summed ones.
    let mut order: Vec<(char, usize)> = eq
        .output
        .iter()
        .map(|l| (*l, sizes.iter().find(|(c, _)| c == l).map_or(1, |s| s.1)))
        .collect();
    order.extend(sizes.iter().filter(|(c, _)| !eq.output.contains(c)));
    // strides[op][loop dim]; repeated labels add up (diagonals).
    let strides: Vec<Vec<usize>> = eq
        .inputs
        .iter()
        .zip(shapes)
        .map(|(labels, shape)| {
            let row = row_strides(shape);
            order
                .iter()
                .map(|(l, _)| {
                    labels
                        .iter()
                        .zip(shape.iter().zip(&row))
                        .filter(|(c, (d, _))| *c == l && **d != 1)
                        .map(|(_, (_, s))| *s)
                        .sum()
                })
                .collect()
        })
        .collect();
    let out_shape: Vec<usize> = order[..eq.output.len()].iter().map(|o| o.1).collect();
    let out_len: usize = out_shape.iter().product();
    let inner: usize = order[eq.output.len()..].iter().map(|o| o.1).product();
    let total = out_len
        .checked_mul(inner)
        .filter(|&t| t <= 1 << 31)
        .ok_or_else(|| invalid!("Einsum iteration space is too large for the general loop"))?;
    let mut out = vec![0f64; out_len];
    let mut idx = vec![0usize; order.len()];
    let mut offs = vec![0usize; data.len()];
    for step in 0..total {
        let mut prod = 1.0;
        for (d, &o) in data.iter().zip(&offs) {
            prod *= d.get(o).copied().unwrap_or(0.0);
        }
        if let Some(v) = out.get_mut(step / inner.max(1)) {
            *v += prod;
        }
        advance(&mut idx, &order, &strides, &mut offs);
    }
    Ok((out_shape, out))
}

/// Row-major strides of a shape.
fn row_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Odometer step over the loop dims, keeping operand offsets in sync.
fn advance(idx: &mut [usize], order: &[(char, usize)], strides: &[Vec<usize>], offs: &mut [usize]) {
    for d in (0..idx.len()).rev() {
        idx[d] += 1;
        for (o, s) in offs.iter_mut().zip(strides) {
            *o += s[d];
        }
        if idx[d] < order[d].1 {
            return;
        }
        for (o, s) in offs.iter_mut().zip(strides) {
            *o -= s[d] * idx[d];
        }
        idx[d] = 0;
    }
}

/// A two-operand contraction as `[batch, M, K] · [batch, K, N]`.
struct GemmPlan {
    perm_a: Vec<usize>,
    perm_b: Vec<usize>,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    /// Shape of the `[batch..., M..., N...]` result.
    res_shape: Vec<usize>,
    /// Permutation from the result to the output order.
    perm_out: Vec<usize>,
}

impl GemmPlan {
    fn new(eq: &Equation, shapes: &[&[usize]]) -> Option<Self> {
        let (la, lb, lo) = (&eq.inputs[0], &eq.inputs[1], &eq.output);
        let distinct = |v: &[char]| v.iter().enumerate().all(|(i, c)| !v[..i].contains(c));
        if !distinct(la) || !distinct(lb) || !distinct(lo) {
            return None;
        }
        let size_a = |l: char| la.iter().position(|&c| c == l).map(|p| shapes[0][p]);
        let size_b = |l: char| lb.iter().position(|&c| c == l).map(|p| shapes[1][p]);
        let mut batch = Vec::new();
        let mut ms = Vec::new();
        let mut ks = Vec::new();
        for &l in la {
            match (lb.contains(&l), lo.contains(&l)) {
                (true, true) => batch.push(l),
                (false, true) => ms.push(l),
                (true, false) => ks.push(l),
                (false, false) => return None,
            }
        }
        let ns: Vec<char> = lb.iter().copied().filter(|l| !la.contains(l)).collect();
        if ns.iter().any(|l| !lo.contains(l))
            || batch.iter().chain(&ks).any(|&l| size_a(l) != size_b(l))
        {
            return None;
        }
        let pos = |v: &[char], l: &char| v.iter().position(|c| c == l).unwrap_or(0);
        let perm_a: Vec<usize> = batch
            .iter()
            .chain(&ms)
            .chain(&ks)
            .map(|l| pos(la, l))
            .collect();
        let perm_b: Vec<usize> = batch
            .iter()
            .chain(&ks)
            .chain(&ns)
            .map(|l| pos(lb, l))
            .collect();
        let res: Vec<char> = batch.iter().chain(&ms).chain(&ns).copied().collect();
        let prod = |v: &[char], f: &dyn Fn(char) -> Option<usize>| -> usize {
            v.iter().map(|&l| f(l).unwrap_or(1)).product()
        };
        let res_shape = res
            .iter()
            .map(|&l| size_a(l).or(size_b(l)).unwrap_or(1))
            .collect();
        Some(GemmPlan {
            batch: prod(&batch, &size_a),
            m: prod(&ms, &size_a),
            k: prod(&ks, &size_a),
            n: prod(&ns, &size_b),
            perm_out: lo.iter().map(|l| pos(&res, l)).collect(),
            perm_a,
            perm_b,
            res_shape,
        })
    }

    fn run(&self, a: &ArrayD<f32>, b: &ArrayD<f32>) -> OpResult<ArrayD<f32>> {
        let pa: Vec<f32> = a
            .view()
            .permuted_axes(IxDyn(&self.perm_a))
            .iter()
            .copied()
            .collect();
        let pb: Vec<f32> = b
            .view()
            .permuted_axes(IxDyn(&self.perm_b))
            .iter()
            .copied()
            .collect();
        let (m, k, n) = (self.m, self.k, self.n);
        let mut out = vec![0f32; self.batch * m * n];
        for_each_chunk(&mut out, m * n, m * k * n, |i, c| {
            let am = Mat::row_major(pa.get(i * m * k..).unwrap_or(&[]), m, k);
            let bm = Mat::row_major(pb.get(i * k * n..).unwrap_or(&[]), k, n);
            sgemm(1.0, am, bm, 0.0, c)
        })?;
        let res =
            ArrayD::from_shape_vec(IxDyn(&self.res_shape), out).map_err(|e| invalid!("{e}"))?;
        Ok(res
            .permuted_axes(IxDyn(&self.perm_out))
            .as_standard_layout()
            .into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, data, node, rand_vals, run, t};
    use hb_ir::Attr;

    fn eq(e: &str) -> hb_ir::Node {
        node("Einsum", vec![("equation", Attr::String(e.into()))])
    }

    #[test]
    fn attention_scores_form_matches_naive() {
        let (q, k) = (rand_vals(2 * 3 * 4 * 5, 1), rand_vals(2 * 3 * 6 * 5, 2));
        let y = run(
            einsum,
            &eq("bhid,bhjd->bhij"),
            12,
            &[
                Some(&t(&[2, 3, 4, 5], q.clone())),
                Some(&t(&[2, 3, 6, 5], k.clone())),
            ],
        )
        .unwrap();
        assert_eq!(y[0].shape(), &[2, 3, 4, 6]);
        let mut want = Vec::new();
        for bh in 0..6 {
            for i in 0..4 {
                for j in 0..6 {
                    want.push(
                        (0..5)
                            .map(|d| q[(bh * 4 + i) * 5 + d] * k[(bh * 6 + j) * 5 + d])
                            .sum(),
                    );
                }
            }
        }
        assert_close(&data(&y[0]), &want, 1e-5);
    }

    #[test]
    fn transpose_trace_reduction_implicit() {
        let a = t(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            data(&run(einsum, &eq("ij->ji"), 12, &[Some(&a)]).unwrap()[0]),
            vec![1.0, 3.0, 2.0, 4.0]
        );
        assert_eq!(
            data(&run(einsum, &eq("ii"), 12, &[Some(&a)]).unwrap()[0]),
            vec![5.0]
        );
        assert_eq!(
            data(&run(einsum, &eq("ij->i"), 12, &[Some(&a)]).unwrap()[0]),
            vec![3.0, 7.0]
        );
        assert_eq!(
            data(&run(einsum, &eq("...j->..."), 12, &[Some(&a)]).unwrap()[0]),
            vec![3.0, 7.0]
        );
        assert!(run(einsum, &eq("ijk->i"), 12, &[Some(&a)]).is_err());
        assert!(run(einsum, &eq("ij->q"), 12, &[Some(&a)]).is_err());
    }
}
