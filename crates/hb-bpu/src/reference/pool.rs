//! Pooling and reductions (docs/integer-semantics.md §13): integer max, or
//! an exact i64 window sum requantised by `s_x / (cnt · s_y)`.

use crate::error::Result;
use crate::fixed_point::Requant;
use crate::qint::QInt;
use crate::reference::common::for_each_index;
use crate::shape_err;
use crate::tensor::{numel, strides, QTensor, TensorRef};
use std::collections::HashMap;

/// Pooling attributes with explicit pads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolParams {
    /// Window size per spatial dim.
    pub kernel: Vec<usize>,
    /// Stride per spatial dim.
    pub strides: Vec<usize>,
    /// `[begin…, end…]`.
    pub pads: Vec<usize>,
    /// Dilation per spatial dim (MaxPool).
    pub dilations: Vec<usize>,
    /// `ceil_mode`.
    pub ceil_mode: bool,
    /// `count_include_pad` (AveragePool).
    pub count_include_pad: bool,
}

impl PoolParams {
    /// A `kernel`-sized window, stride 1, no pads.
    pub fn new(kernel: &[usize]) -> PoolParams {
        let r = kernel.len();
        PoolParams {
            kernel: kernel.to_vec(),
            strides: vec![1; r],
            pads: vec![0; 2 * r],
            dilations: vec![1; r],
            ceil_mode: false,
            count_include_pad: false,
        }
    }
}

/// One window: real input offsets (relative to the channel) and the
/// divisor for averaging.
struct Window {
    offsets: Vec<usize>,
    count: usize,
}

/// The windows of every output position of one channel, and the output
/// spatial shape.
fn windows(spatial: &[usize], p: &PoolParams) -> Result<(Vec<usize>, Vec<Window>)> {
    let r = spatial.len();
    if p.kernel.len() != r
        || p.strides.len() != r
        || p.pads.len() != 2 * r
        || p.dilations.len() != r
    {
        return Err(shape_err!("pool attributes do not match {r} spatial dims"));
    }
    if p.kernel.contains(&0) || p.strides.contains(&0) || p.dilations.contains(&0) {
        return Err(shape_err!("pool kernel, strides and dilations must be ≥ 1"));
    }
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let span = p.dilations[i] * (p.kernel[i] - 1) + 1;
        let padded = spatial[i] + p.pads[i] + p.pads[r + i];
        if padded < span {
            return Err(shape_err!(
                "pool window {span} exceeds padded input {padded}"
            ));
        }
        let num = padded - span;
        let mut o = if p.ceil_mode {
            num.div_ceil(p.strides[i]) + 1
        } else {
            num / p.strides[i] + 1
        };
        // A ceil-mode window must start inside the input or the begin pad.
        if p.ceil_mode && (o - 1) * p.strides[i] >= spatial[i] + p.pads[i] {
            o -= 1;
        }
        out.push(o);
    }
    let st = strides(spatial);
    let mut wins = Vec::with_capacity(numel(&out)?);
    for_each_index(&out, |o| {
        let mut offsets = Vec::new();
        let mut padded_count = 1usize;
        for i in 0..r {
            let start = (o[i] * p.strides[i]) as i64 - p.pads[i] as i64;
            let hi = (spatial[i] + p.pads[r + i]) as i64;
            let n = (0..p.kernel[i])
                .filter(|&k| start + ((k * p.dilations[i]) as i64) < hi)
                .count();
            padded_count *= n;
        }
        for_each_index(&p.kernel, |k| {
            let mut off = 0usize;
            for i in 0..r {
                let pos = (o[i] * p.strides[i] + k[i] * p.dilations[i]) as i64 - p.pads[i] as i64;
                if pos < 0 || pos >= spatial[i] as i64 {
                    return;
                }
                off += pos as usize * st[i];
            }
            offsets.push(off);
        });
        let count = if p.count_include_pad {
            padded_count
        } else {
            offsets.len()
        };
        wins.push(Window { offsets, count });
    });
    Ok((out, wins))
}

fn nc(x: &[usize]) -> Result<(usize, usize, &[usize])> {
    if x.len() < 3 {
        return Err(shape_err!("pool input {x:?} needs [N, C, spatial…]"));
    }
    Ok((x[0], x[1], &x[2..]))
}

/// MaxPool: the integer maximum of the real positions of each window
/// (padding ignored), then `R(s_x/s_y)`.
pub fn max_pool<I: QInt, O: QInt>(
    x: TensorRef<'_, I>,
    p: &PoolParams,
    r: &Requant,
) -> Result<QTensor<O>> {
    let (n, c, sp) = nc(x.shape())?;
    let (out_sp, wins) = windows(sp, p)?;
    let plane = numel(sp)?;
    let mut out = Vec::with_capacity(n * c * wins.len());
    for ch in x.data().chunks(plane.max(1)).take(n * c) {
        for w in &wins {
            let m = w
                .offsets
                .iter()
                .map(|&o| ch[o].to_i64())
                .max()
                .unwrap_or(I::MIN);
            out.push(r.apply::<O>(m));
        }
    }
    let mut shape = vec![n, c];
    shape.extend(out_sp);
    QTensor::new(shape, out)
}

/// Requantisations `R(s_x / (cnt · s_y))`, one per distinct divisor.
struct AvgRequant {
    s_x: f64,
    s_y: f64,
    cache: HashMap<usize, Requant>,
}

impl AvgRequant {
    fn new(s_x: f32, s_y: f32) -> Self {
        AvgRequant {
            s_x: f64::from(s_x),
            s_y: f64::from(s_y),
            cache: HashMap::new(),
        }
    }

    fn get(&mut self, cnt: usize) -> Result<Requant> {
        if let Some(r) = self.cache.get(&cnt) {
            return Ok(*r);
        }
        let r = if cnt == 0 {
            Requant::from_ratio(0.0)?
        } else {
            Requant::from_ratio(self.s_x / (cnt as f64 * self.s_y))?
        };
        self.cache.insert(cnt, r);
        Ok(r)
    }
}

/// AveragePool: `sat(R(s_x / (cnt·s_y))(Σ q))` per window.
pub fn average_pool<I: QInt, O: QInt>(
    x: TensorRef<'_, I>,
    p: &PoolParams,
    s_x: f32,
    s_y: f32,
) -> Result<QTensor<O>> {
    let (n, c, sp) = nc(x.shape())?;
    let (out_sp, wins) = windows(sp, p)?;
    let mut rq = AvgRequant::new(s_x, s_y);
    let plane = numel(sp)?;
    let mut out = Vec::with_capacity(n * c * wins.len());
    for ch in x.data().chunks(plane.max(1)).take(n * c) {
        for w in &wins {
            let s: i64 = w.offsets.iter().map(|&o| ch[o].to_i64()).sum();
            out.push(rq.get(w.count)?.apply::<O>(s));
        }
    }
    let mut shape = vec![n, c];
    shape.extend(out_sp);
    QTensor::new(shape, out)
}

/// GlobalAveragePool: the mean of every `[N, C]` plane, keeping rank.
pub fn global_average_pool<I: QInt, O: QInt>(
    x: TensorRef<'_, I>,
    s_x: f32,
    s_y: f32,
) -> Result<QTensor<O>> {
    let axes: Vec<usize> = (2..x.rank()).collect();
    nc(x.shape())?;
    reduce_mean(x, &axes, true, s_x, s_y)
}

/// GlobalMaxPool: the maximum of every `[N, C]` plane, keeping rank.
pub fn global_max_pool<I: QInt, O: QInt>(x: TensorRef<'_, I>, r: &Requant) -> Result<QTensor<O>> {
    let axes: Vec<usize> = (2..x.rank()).collect();
    nc(x.shape())?;
    reduce_max(x, &axes, true, r)
}

/// Groups the elements by their position outside `axes`: returns the
/// output shape and, per output element, the input flat indices.
fn reduce_groups(
    shape: &[usize],
    axes: &[usize],
    keepdims: bool,
) -> Result<(Vec<usize>, Vec<Vec<usize>>)> {
    if let Some(&a) = axes.iter().find(|&&a| a >= shape.len()) {
        return Err(shape_err!("reduce axis {a} out of range for {shape:?}"));
    }
    let reduced = |d: usize| axes.is_empty() || axes.contains(&d);
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(d, &s)| if reduced(d) { 1 } else { s })
        .collect();
    let ks = strides(&kept);
    let mut groups = vec![Vec::new(); numel(&kept)?];
    let mut flat = 0usize;
    for_each_index(shape, |pos| {
        let g: usize = pos
            .iter()
            .enumerate()
            .map(|(d, &p)| if reduced(d) { 0 } else { p * ks[d] })
            .sum();
        groups[g].push(flat);
        flat += 1;
    });
    let out = if keepdims {
        kept
    } else {
        shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !reduced(*d))
            .map(|(_, &s)| s)
            .collect()
    };
    Ok((out, groups))
}

/// ReduceMean over `axes` (empty = all): `sat(R(s_x/(cnt·s_y))(Σ q))`.
pub fn reduce_mean<I: QInt, O: QInt>(
    x: TensorRef<'_, I>,
    axes: &[usize],
    keepdims: bool,
    s_x: f32,
    s_y: f32,
) -> Result<QTensor<O>> {
    let (shape, groups) = reduce_groups(x.shape(), axes, keepdims)?;
    let mut rq = AvgRequant::new(s_x, s_y);
    let data = groups
        .iter()
        .map(|g| {
            let s: i64 = g.iter().map(|&i| x.data()[i].to_i64()).sum();
            Ok(rq.get(g.len())?.apply::<O>(s))
        })
        .collect::<Result<Vec<O>>>()?;
    QTensor::new(shape, data)
}

/// ReduceMax over `axes` (empty = all), then `R(s_x/s_y)`.
pub fn reduce_max<I: QInt, O: QInt>(
    x: TensorRef<'_, I>,
    axes: &[usize],
    keepdims: bool,
    r: &Requant,
) -> Result<QTensor<O>> {
    let (shape, groups) = reduce_groups(x.shape(), axes, keepdims)?;
    if groups.iter().any(Vec::is_empty) {
        return Err(shape_err!(
            "ReduceMax over an empty axis of {:?}",
            x.shape()
        ));
    }
    let data = groups
        .iter()
        .map(|g| {
            let m = g
                .iter()
                .map(|&i| x.data()[i].to_i64())
                .max()
                .unwrap_or(I::MIN);
            r.apply::<O>(m)
        })
        .collect();
    QTensor::new(shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: [i8; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];

    #[test]
    fn max_and_avg_by_hand() {
        let x = TensorRef::new(&X, &[1, 1, 3, 3]).unwrap();
        let mut p = PoolParams::new(&[2, 2]);
        let y: QTensor<i8> = max_pool(x, &p, &Requant::IDENTITY).unwrap();
        assert_eq!((y.shape, y.data), (vec![1, 1, 2, 2], vec![5, 6, 8, 9]));
        let y: QTensor<i8> = average_pool(x, &p, 1.0, 1.0).unwrap();
        assert_eq!(y.data, vec![3, 4, 6, 7]); // 3, 4, 6, 7 exactly
                                              // Pad 1 at the end, stride 2: border windows average fewer values
                                              // (exclude pad) or divide by 4 (include pad).
        p.pads = vec![0, 0, 1, 1];
        p.strides = vec![2, 2];
        let y: QTensor<i8> = average_pool(x, &p, 1.0, 1.0).unwrap();
        assert_eq!(y.data, vec![3, 5, 8, 9]); // 12/4, 9/2=4.5→5, 15/2=7.5→8, 9
        p.count_include_pad = true;
        let y: QTensor<i8> = average_pool(x, &p, 1.0, 1.0).unwrap();
        assert_eq!(y.data, vec![3, 2, 4, 2]); // 12/4, 9/4=2.25, 15/4=3.75, 9/4
                                              // Ceil mode, stride 2, no pad: 3 → 2 windows, the last one partial.
        let mut p = PoolParams::new(&[2, 2]);
        p.strides = vec![2, 2];
        p.ceil_mode = true;
        let y: QTensor<i8> = max_pool(x, &p, &Requant::IDENTITY).unwrap();
        assert_eq!(y.data, vec![5, 6, 8, 9]);
        assert!(max_pool::<i8, i8>(x, &PoolParams::new(&[4, 4]), &Requant::IDENTITY).is_err());
        assert!(max_pool::<i8, i8>(x, &PoolParams::new(&[2]), &Requant::IDENTITY).is_err());
    }

    #[test]
    fn global_and_reduce() {
        let x = TensorRef::new(&X, &[1, 1, 3, 3]).unwrap();
        let y: QTensor<i8> = global_average_pool(x, 1.0, 1.0).unwrap();
        assert_eq!((y.shape, y.data), (vec![1, 1, 1, 1], vec![5]));
        let y: QTensor<i8> = global_max_pool(x, &Requant::IDENTITY).unwrap();
        assert_eq!(y.data, vec![9]);
        let x2 = TensorRef::new(&X[..6], &[2, 3]).unwrap();
        let y: QTensor<i8> = reduce_mean(x2, &[1], false, 1.0, 0.5).unwrap();
        assert_eq!((y.shape, y.data), (vec![2], vec![4, 10]));
        let y: QTensor<i8> = reduce_max(x2, &[0], true, &Requant::IDENTITY).unwrap();
        assert_eq!((y.shape, y.data), (vec![1, 3], vec![4, 5, 6]));
        let y: QTensor<i8> = reduce_max(x2, &[], false, &Requant::IDENTITY).unwrap();
        assert_eq!((y.shape, y.data), (vec![], vec![6]));
        assert!(reduce_mean::<i8, i8>(x2, &[2], false, 1.0, 1.0).is_err());
    }
}
