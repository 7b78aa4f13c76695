//! Conv and ConvTranspose (docs/integer-semantics.md §4, §5, §8): exact
//! integer accumulation in i64, optional bias at the accumulator scale, then
//! per-output-channel requantisation (to i8/i16, or to i32 for
//! high-precision outputs).

use crate::error::Result;
use crate::fixed_point::Requant;
use crate::qint::QInt;
use crate::reference::common::{check_bias, for_each_index, requant_channels};
use crate::shape_err;
use crate::tensor::{numel, strides, QTensor, TensorRef};

/// Conv attributes with explicit pads (the lowering resolves `auto_pad`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvParams {
    /// Stride per spatial dim.
    pub strides: Vec<usize>,
    /// Dilation per spatial dim.
    pub dilations: Vec<usize>,
    /// `[begin_0, …, begin_{r−1}, end_0, …, end_{r−1}]`.
    pub pads: Vec<usize>,
    /// Number of groups (`C` for depthwise).
    pub group: usize,
    /// ConvTranspose only: extra size at the end of each spatial dim.
    pub output_padding: Vec<usize>,
}

impl ConvParams {
    /// Defaults for `r` spatial dims: strides and dilations 1, no pads,
    /// one group.
    pub fn new(r: usize) -> ConvParams {
        ConvParams {
            strides: vec![1; r],
            dilations: vec![1; r],
            pads: vec![0; 2 * r],
            group: 1,
            output_padding: vec![0; r],
        }
    }

    fn check(&self, r: usize) -> Result<()> {
        if self.strides.len() != r
            || self.dilations.len() != r
            || self.pads.len() != 2 * r
            || self.output_padding.len() != r
        {
            return Err(shape_err!(
                "conv attributes do not match {r} spatial dims: {self:?}"
            ));
        }
        if self.strides.contains(&0) || self.dilations.contains(&0) || self.group == 0 {
            return Err(shape_err!("conv strides, dilations and group must be ≥ 1"));
        }
        Ok(())
    }
}

/// Checked shapes of a convolution.
struct Dims {
    n: usize,
    c: usize,
    m: usize,
    spatial_in: Vec<usize>,
    kernel: Vec<usize>,
}

fn dims(x: &[usize], w: &[usize], transpose: bool, p: &ConvParams) -> Result<Dims> {
    if x.len() < 3 || w.len() != x.len() {
        return Err(shape_err!("conv input {x:?} and weight {w:?} ranks"));
    }
    let r = x.len() - 2;
    p.check(r)?;
    let (n, c) = (x[0], x[1]);
    let g = p.group;
    let (m, cg) = if transpose {
        (w[1] * g, w[0])
    } else {
        (w[0], w[1] * g)
    };
    if cg != c || c % g != 0 || m % g != 0 {
        return Err(shape_err!(
            "conv input {x:?}, weight {w:?} and group {g} do not fit"
        ));
    }
    Ok(Dims {
        n,
        c,
        m,
        spatial_in: x[2..].to_vec(),
        kernel: w[2..].to_vec(),
    })
}

/// Conv accumulators `acc[n, m, o…] = bias[m] + Σ x · w` (exact, i64),
/// shape `[N, M, O…]`. `x`: `[N, C, S…]`, `w`: `[M, C/group, K…]`.
pub fn conv_acc<X: QInt, W: QInt>(
    x: TensorRef<'_, X>,
    w: TensorRef<'_, W>,
    bias: Option<&[i64]>,
    p: &ConvParams,
) -> Result<QTensor<i64>> {
    let d = dims(x.shape(), w.shape(), false, p)?;
    check_bias(bias, d.m)?;
    let r = d.kernel.len();
    let mut out_sp = Vec::with_capacity(r);
    for i in 0..r {
        let span = p.dilations[i] * (d.kernel[i].max(1) - 1) + 1;
        let padded = d.spatial_in[i] + p.pads[i] + p.pads[r + i];
        if d.kernel[i] == 0 || padded < span {
            return Err(shape_err!(
                "conv window {span} does not fit padded input {padded}"
            ));
        }
        out_sp.push((padded - span) / p.strides[i] + 1);
    }
    let mut out_shape = vec![d.n, d.m];
    out_shape.extend(&out_sp);
    let xs = strides(x.shape());
    let ws = strides(w.shape());
    let (cg, mg) = (d.c / p.group, d.m / p.group);
    let mut out = Vec::with_capacity(numel(&out_shape)?);
    let (xd, wd) = (x.data(), w.data());
    for b in 0..d.n {
        for m in 0..d.m {
            let g = m / mg;
            let b0 = bias.map_or(0, |bs| bs[m]);
            for_each_index(&out_sp, |o| {
                let mut acc = b0;
                for ci in 0..cg {
                    let c = g * cg + ci;
                    for_each_index(&d.kernel, |k| {
                        let mut xi = b * xs[0] + c * xs[1];
                        for i in 0..r {
                            let pos = (o[i] * p.strides[i] + k[i] * p.dilations[i]) as i64
                                - p.pads[i] as i64;
                            if pos < 0 || pos >= d.spatial_in[i] as i64 {
                                return;
                            }
                            xi += pos as usize * xs[2 + i];
                        }
                        let wi = m * ws[0]
                            + ci * ws[1]
                            + k.iter().zip(&ws[2..]).map(|(a, s)| a * s).sum::<usize>();
                        acc += xd[xi].to_i64() * wd[wi].to_i64();
                    });
                }
                out.push(acc);
            });
        }
    }
    QTensor::new(out_shape, out)
}

/// Conv: [`conv_acc`] then per-output-channel requantisation
/// (`requant`: 1 or `M` entries) saturated to `O`.
pub fn conv<X: QInt, W: QInt, O: QInt>(
    x: TensorRef<'_, X>,
    w: TensorRef<'_, W>,
    bias: Option<&[i64]>,
    requant: &[Requant],
    p: &ConvParams,
) -> Result<QTensor<O>> {
    requant_channels(&conv_acc(x, w, bias, p)?, 1, requant)
}

/// ConvTranspose accumulators, shape `[N, M, O…]` with
/// `O = s·(I − 1) + output_padding + d·(K − 1) + 1 − pad_begin − pad_end`.
/// `x`: `[N, C, S…]`, `w`: `[C, M/group, K…]`.
pub fn conv_transpose_acc<X: QInt, W: QInt>(
    x: TensorRef<'_, X>,
    w: TensorRef<'_, W>,
    bias: Option<&[i64]>,
    p: &ConvParams,
) -> Result<QTensor<i64>> {
    let d = dims(x.shape(), w.shape(), true, p)?;
    check_bias(bias, d.m)?;
    let r = d.kernel.len();
    let mut out_sp = Vec::with_capacity(r);
    for i in 0..r {
        let full = p.strides[i] * d.spatial_in[i].saturating_sub(1)
            + p.output_padding[i]
            + p.dilations[i] * d.kernel[i].saturating_sub(1)
            + 1;
        let pads = p.pads[i] + p.pads[r + i];
        if d.spatial_in[i] == 0 || d.kernel[i] == 0 || full <= pads {
            return Err(shape_err!("conv_transpose output size is not positive"));
        }
        out_sp.push(full - pads);
    }
    let mut out_shape = vec![d.n, d.m];
    out_shape.extend(&out_sp);
    let os = strides(&out_shape);
    let xs = strides(x.shape());
    let ws = strides(w.shape());
    let (cg, mg) = (d.c / p.group, d.m / p.group);
    let mut out = vec![0i64; numel(&out_shape)?];
    if let Some(bs) = bias {
        for (i, v) in out.iter_mut().enumerate() {
            *v = bs[(i / os[1]) % d.m];
        }
    }
    let (xd, wd) = (x.data(), w.data());
    for b in 0..d.n {
        for c in 0..d.c {
            let g = c / cg;
            for_each_index(&d.spatial_in, |ip| {
                let xv = xd[b * xs[0]
                    + c * xs[1]
                    + ip.iter().zip(&xs[2..]).map(|(a, s)| a * s).sum::<usize>()]
                .to_i64();
                for mi in 0..mg {
                    let m = g * mg + mi;
                    for_each_index(&d.kernel, |k| {
                        let mut oi = b * os[0] + m * os[1];
                        for i in 0..r {
                            let pos = (ip[i] * p.strides[i] + k[i] * p.dilations[i]) as i64
                                - p.pads[i] as i64;
                            if pos < 0 || pos >= out_sp[i] as i64 {
                                return;
                            }
                            oi += pos as usize * os[2 + i];
                        }
                        let wi = c * ws[0]
                            + mi * ws[1]
                            + k.iter().zip(&ws[2..]).map(|(a, s)| a * s).sum::<usize>();
                        out[oi] += xv * wd[wi].to_i64();
                    });
                }
            });
        }
    }
    QTensor::new(out_shape, out)
}

/// ConvTranspose: [`conv_transpose_acc`] then per-output-channel
/// requantisation.
pub fn conv_transpose<X: QInt, W: QInt, O: QInt>(
    x: TensorRef<'_, X>,
    w: TensorRef<'_, W>,
    bias: Option<&[i64]>,
    requant: &[Requant],
    p: &ConvParams,
) -> Result<QTensor<O>> {
    requant_channels(&conv_transpose_acc(x, w, bias, p)?, 1, requant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<T>(d: &'static [T], s: &'static [usize]) -> TensorRef<'static, T> {
        TensorRef::new(d, s).unwrap()
    }

    #[test]
    fn conv_by_hand() {
        // 1x1x3x3 input, 1x1x2x2 kernel of ones, pad 1 on top/left, stride 2.
        let x = t(&[1i8, 2, 3, 4, 5, 6, 7, 8, 9], &[1, 1, 3, 3]);
        let w = t(&[1i8, 1, 1, 1], &[1, 1, 2, 2]);
        let mut p = ConvParams::new(2);
        p.pads = vec![1, 1, 0, 0];
        p.strides = vec![2, 2];
        let a = conv_acc(x, w, Some(&[10]), &p).unwrap();
        assert_eq!(a.shape, vec![1, 1, 2, 2]);
        assert_eq!(a.data, vec![11, 10 + 2 + 3, 10 + 4 + 7, 10 + 5 + 6 + 8 + 9]);
        // Requantise by 1/2 (half up) and saturate to i8.
        let rq = [Requant::from_ratio(0.5).unwrap()];
        let y: QTensor<i8> = conv(x, w, Some(&[10]), &rq, &p).unwrap();
        assert_eq!(y.data, vec![6, 8, 11, 19]);
        // Dilation 2 on the unpadded input: corners.
        let mut p = ConvParams::new(2);
        p.dilations = vec![2, 2];
        assert_eq!(conv_acc(x, w, None, &p).unwrap().data, vec![1 + 3 + 7 + 9]);
    }

    #[test]
    fn depthwise_and_groups() {
        // 2 channels, depthwise 1x1 weights [2, -3].
        let x = t(&[1i16, 2, 3, 4], &[1, 2, 1, 2]);
        let w = t(&[2i8, -3], &[2, 1, 1, 1]);
        let mut p = ConvParams::new(2);
        p.group = 2;
        let a = conv_acc(x, w, None, &p).unwrap();
        assert_eq!(a.data, vec![2, 4, -9, -12]);
        p.group = 3;
        assert!(conv_acc(x, w, None, &p).is_err());
        assert!(conv_acc(x, w, Some(&[1]), &ConvParams::new(2)).is_err());
        let mut p = ConvParams::new(2);
        p.strides = vec![0, 1];
        assert!(conv_acc(x, t(&[1i8, 1], &[1, 2, 1, 1]), None, &p).is_err());
        // Kernel larger than the input.
        assert!(conv_acc(x, t(&[1i8; 6], &[1, 2, 1, 3]), None, &ConvParams::new(2)).is_err());
    }

    #[test]
    fn conv_transpose_by_hand() {
        // 1-D: x = [1, 2], w = [1, 10], stride 2 → [1, 10, 2, 20].
        let x = t(&[1i8, 2], &[1, 1, 2]);
        let w = t(&[1i8, 10], &[1, 1, 2]);
        let mut p = ConvParams::new(1);
        p.strides = vec![2];
        let a = conv_transpose_acc(x, w, Some(&[5]), &p).unwrap();
        assert_eq!(a.data, vec![6, 15, 7, 25]);
        // Stride 1 overlaps: [1, 12, 20]; pads trim both ends.
        let mut p = ConvParams::new(1);
        p.pads = vec![1, 1];
        assert_eq!(conv_transpose_acc(x, w, None, &p).unwrap().data, vec![12]);
        p.output_padding = vec![1];
        assert_eq!(
            conv_transpose_acc(x, w, None, &p).unwrap().data,
            vec![12, 20]
        );
        p.pads = vec![2, 2];
        p.output_padding = vec![0];
        assert!(conv_transpose_acc(x, w, None, &p).is_err());
    }
}
