//! Helpers shared by the reference kernels: multi-index iteration and
//! per-channel requantisation of accumulators.

use crate::error::Result;
use crate::fixed_point::Requant;
use crate::qint::QInt;
use crate::shape_err;
use crate::tensor::{split_at_axis, QTensor};

/// Calls `f` with every multi-index of `shape`, row-major.
pub fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut pos = vec![0usize; shape.len()];
    loop {
        f(&pos);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            pos[d] += 1;
            if pos[d] < shape[d] {
                break;
            }
            pos[d] = 0;
        }
    }
}

/// Picks channel `c`'s requantisation from a list of 1 (per tensor) or
/// `channels` entries.
pub fn pick(requant: &[Requant], channels: usize) -> Result<impl Fn(usize) -> Requant + '_> {
    if requant.len() != 1 && requant.len() != channels {
        return Err(shape_err!(
            "{} requantisations for {channels} channels (need 1 or {channels})",
            requant.len()
        ));
    }
    Ok(move |c: usize| requant[if requant.len() == 1 { 0 } else { c }])
}

/// Requantises i64 accumulators channel by channel along `axis` (§4).
pub fn requant_channels<O: QInt>(
    acc: &QTensor<i64>,
    axis: usize,
    requant: &[Requant],
) -> Result<QTensor<O>> {
    let (outer, c, inner) = split_at_axis(&acc.shape, axis)?;
    let r = pick(requant, c)?;
    let mut out = Vec::with_capacity(acc.data.len());
    for o in 0..outer {
        for k in 0..c {
            let rq = r(k);
            let base = (o * c + k) * inner;
            out.extend(
                acc.data[base..base + inner]
                    .iter()
                    .map(|&a| rq.apply::<O>(a)),
            );
        }
    }
    QTensor::new(acc.shape.clone(), out)
}

/// Checks an optional per-channel bias against `channels`.
pub fn check_bias(bias: Option<&[i64]>, channels: usize) -> Result<()> {
    match bias {
        Some(b) if b.len() != channels => Err(shape_err!(
            "bias has {} values for {channels} output channels",
            b.len()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_row_major() {
        let mut seen = Vec::new();
        for_each_index(&[2, 2], |p| seen.push(p.to_vec()));
        assert_eq!(seen, vec![vec![0, 0], vec![0, 1], vec![1, 0], vec![1, 1]]);
        let mut n = 0;
        for_each_index(&[], |_| n += 1);
        assert_eq!(n, 1);
        for_each_index(&[3, 0], |_| n += 1);
        assert_eq!(n, 1);
    }
}
