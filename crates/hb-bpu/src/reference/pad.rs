//! Pad (docs/integer-semantics.md §6): constant, edge and reflect; the
//! output keeps the input scale (the constant is quantized at it).

use crate::error::Result;
use crate::qint::QInt;
use crate::reference::common::for_each_index;
use crate::shape_err;
use crate::tensor::{numel, strides, QTensor, TensorRef};

/// Pad `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    /// Fill with a constant.
    Constant,
    /// Repeat the edge value.
    Edge,
    /// Mirror without repeating the edge.
    Reflect,
}

/// Pads `x` by `pads = [begin…, end…]` (non-negative; negative pads are
/// lowered to Slice). `value` is the constant, already quantized.
pub fn pad<T: QInt>(
    x: TensorRef<'_, T>,
    pads: &[usize],
    mode: PadMode,
    value: T,
) -> Result<QTensor<T>> {
    let s = x.shape();
    let r = s.len();
    if pads.len() != 2 * r {
        return Err(shape_err!("{} pads for rank {r}", pads.len()));
    }
    let out: Vec<usize> = (0..r).map(|d| s[d] + pads[d] + pads[r + d]).collect();
    for d in 0..r {
        let grows = pads[d] + pads[r + d] > 0;
        match mode {
            PadMode::Edge if grows && s[d] == 0 => {
                return Err(shape_err!("edge pad of an empty axis {d}"))
            }
            PadMode::Reflect if grows && (s[d] < 2 || pads[d] >= s[d] || pads[r + d] >= s[d]) => {
                return Err(shape_err!("reflect pad {pads:?} too large for {s:?}"))
            }
            _ => {}
        }
    }
    let st = strides(s);
    let mut data = Vec::with_capacity(numel(&out)?);
    for_each_index(&out, |o| {
        let mut idx = 0usize;
        for d in 0..r {
            let p = o[d] as i64 - pads[d] as i64;
            let n = s[d] as i64;
            let src = if (0..n).contains(&p) {
                p
            } else {
                match mode {
                    PadMode::Constant => {
                        data.push(value);
                        return;
                    }
                    PadMode::Edge => p.clamp(0, n - 1),
                    PadMode::Reflect => {
                        if p < 0 {
                            -p
                        } else {
                            2 * (n - 1) - p
                        }
                    }
                }
            };
            idx += src as usize * st[d];
        }
        data.push(x.data()[idx]);
    });
    QTensor::new(out, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_modes() {
        let x = [1i8, 2, 3];
        let t = TensorRef::new(&x, &[3]).unwrap();
        let y = pad(t, &[2, 1], PadMode::Constant, -5).unwrap();
        assert_eq!(y.data, vec![-5, -5, 1, 2, 3, -5]);
        let y = pad(t, &[2, 1], PadMode::Edge, 0).unwrap();
        assert_eq!(y.data, vec![1, 1, 1, 2, 3, 3]);
        let y = pad(t, &[2, 2], PadMode::Reflect, 0).unwrap();
        assert_eq!(y.data, vec![3, 2, 1, 2, 3, 2, 1]);
        assert!(pad(t, &[3, 0], PadMode::Reflect, 0).is_err());
        assert!(pad(t, &[1], PadMode::Constant, 0).is_err());
        let x2 = [1i16, 2, 3, 4];
        let y = pad(
            TensorRef::new(&x2, &[2, 2]).unwrap(),
            &[0, 1, 1, 0],
            PadMode::Constant,
            0,
        )
        .unwrap();
        assert_eq!(
            (y.shape, y.data),
            (vec![3, 3], vec![0, 1, 2, 0, 3, 4, 0, 0, 0])
        );
    }
}
