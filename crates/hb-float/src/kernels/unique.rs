//! Unique: distinct elements (or slices along an axis), sorted or in
//! order of first occurrence, with first indices, inverse indices and counts.

use super::gather::take_along;
use super::remap::{axis_of, std_data};
use super::util::{attr_err, input};
use crate::error::OpResult;
use crate::invalid;
use crate::registry::{OpCtx, Registry};
use hb_tensor::tensor::Element;
use hb_tensor::{with_tensor, Tensor};
use ndarray::{ArrayD, IxDyn};
use std::cmp::Ordering;

/// Registers Unique.
pub fn register(r: &mut Registry) {
    r.register("Unique", unique);
}

/// Groups of equal slices: `(first index, members)` in output order.
struct Groups {
    firsts: Vec<usize>,
    inverse: Vec<usize>,
    counts: Vec<usize>,
}

/// Lexicographic order of two slices (incomparable values count as equal).
fn cmp_slices<T: PartialOrd>(a: &[T], b: &[T]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.partial_cmp(y) {
            Some(Ordering::Equal) | None => {}
            Some(o) => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// Groups the slices, ordered by value (`sorted`) or by first occurrence.
fn group<T: PartialOrd>(slices: &[Vec<T>], sorted: bool) -> Groups {
    let n = slices.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| cmp_slices(&slices[i], &slices[j]));
    // Runs of equal slices; the stable sort puts the first occurrence first.
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for &i in &order {
        match runs.last_mut() {
            Some(run) if cmp_slices(&slices[run[0]], &slices[i]) == Ordering::Equal => run.push(i),
            _ => runs.push(vec![i]),
        }
    }
    if !sorted {
        runs.sort_by_key(|r| r[0]);
    }
    let mut inverse = vec![0usize; n];
    for (g, run) in runs.iter().enumerate() {
        for &i in run {
            inverse[i] = g;
        }
    }
    Groups {
        firsts: runs.iter().map(|r| r[0]).collect(),
        counts: runs.iter().map(Vec::len).collect(),
        inverse,
    }
}

/// The slices of `a` along `axis`, each flattened.
fn slices_along<T: Clone>(a: &ArrayD<T>, axis: usize) -> Vec<Vec<T>> {
    let n = a.shape()[axis];
    (0..n).map(|j| take_along(a, axis, &[j])).collect()
}

fn unique_as<T: Element + PartialOrd>(
    a: &ArrayD<T>,
    axis: Option<usize>,
    sorted: bool,
) -> OpResult<Vec<Tensor>> {
    let (src, axis) = match axis {
        Some(ax) => (a.clone(), ax),
        None => {
            let flat = std_data(a).into_owned();
            let len = flat.len();
            let arr = ArrayD::from_shape_vec(IxDyn(&[len]), flat).map_err(|e| invalid!("{e}"))?;
            (arr, 0)
        }
    };
    let g = group(&slices_along(&src, axis), sorted);
    let mut yshape = src.shape().to_vec();
    yshape[axis] = g.firsts.len();
    let y = ArrayD::from_shape_vec(IxDyn(&yshape), take_along(&src, axis, &g.firsts))
        .map_err(|e| invalid!("{e}"))?;
    let ints = |v: &[usize]| -> OpResult<Tensor> {
        let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
        Ok(Tensor::from_vec(&[v.len()], v)?)
    };
    Ok(vec![
        T::wrap(y),
        ints(&g.firsts)?,
        ints(&g.inverse)?,
        ints(&g.counts)?,
    ])
}

fn unique(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let sorted = ctx.node.int_or("sorted", 1).map_err(attr_err)? != 0;
    let axis = match ctx.node.get_int("axis").map_err(attr_err)? {
        Some(a) => Some(axis_of(a, x.rank())?),
        None => None,
    };
    with_tensor!(x, a => unique_as(a, axis, sorted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_sorted_and_unsorted() {
        let s: Vec<Vec<i32>> = [2, 1, 1, 3, 0].iter().map(|&v| vec![v]).collect();
        let g = group(&s, true);
        assert_eq!(g.firsts, vec![4, 1, 0, 3]);
        assert_eq!(g.inverse, vec![2, 1, 1, 3, 0]);
        assert_eq!(g.counts, vec![1, 2, 1, 1]);
        let g = group(&s, false);
        assert_eq!(g.firsts, vec![0, 1, 3, 4]);
    }
}
