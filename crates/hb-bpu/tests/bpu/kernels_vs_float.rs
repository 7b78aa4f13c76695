//! Each integer kernel, dequantized, against the float computation on the
//! dequantized inputs, within the bound docs/integer-semantics.md states.

use hb_bpu::lut::{Lut, LutFn};
use hb_bpu::reference::activation::{div, lut, DivPlan};
use hb_bpu::reference::conv::{conv, ConvParams};
use hb_bpu::reference::eltwise::{add, add_rescale, mul, sub_rescale};
use hb_bpu::reference::layernorm::{layer_norm, LayerNormPlan};
use hb_bpu::reference::matmul::matmul;
use hb_bpu::reference::pool::{average_pool, PoolParams};
use hb_bpu::reference::resize::{
    grid_sample, resize, CoordMode, GridMode, GridPadding, GridSampleParams, NearestMode,
    ResizeMode, ResizeParams,
};
use hb_bpu::reference::softmax::{softmax, SoftmaxPlan};
use hb_bpu::{QInt, QTensor, Requant, TensorRef};
use proptest::prelude::*;

/// Half an LSB of rounding plus the 31-bit multiplier's relative error
/// (≤ 2^-31 of at most 2^15 LSB) and float noise.
const HALF: f64 = 0.5 + 1e-4;

/// `|q − clamp(want / s_y)| ≤ bound` for every element.
fn check<O: QInt>(
    got: &QTensor<O>,
    want: &[f64],
    s_y: f64,
    bound: f64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.data.len(), want.len());
    for (i, (&q, &w)) in got.data.iter().zip(want).enumerate() {
        let t = (w / s_y).clamp(O::MIN as f64, O::MAX as f64);
        let e = (q.to_i64() as f64 - t).abs();
        prop_assert!(
            e <= bound,
            "element {}: got {:?}, want {} (err {} LSB)",
            i,
            q,
            t,
            e
        );
    }
    Ok(())
}

fn deq<T: QInt>(q: &[T], s: f64) -> Vec<f64> {
    q.iter().map(|v| v.to_i64() as f64 * s).collect()
}

fn scale() -> impl Strategy<Value = f32> {
    (0.001f32..0.1).prop_map(|s| s)
}

prop_compose! {
    fn conv_case()(c in 1usize..4, m in 1usize..4, h in 1usize..6, w in 1usize..6,
                   k in 1usize..4, stride in 1usize..3, pad in 0usize..2, dil in 1usize..3,
                   depthwise in any::<bool>())
        (x in prop::collection::vec(any::<i8>(), c * h * w),
         wt in prop::collection::vec(-127i8..=127, if depthwise { c } else { m * c } * k * k),
         bias in prop::collection::vec(-5000i64..5000, if depthwise { c } else { m }),
         sx in scale(), sw in prop::collection::vec(scale(), if depthwise { c } else { m }),
         sy in 0.05f32..2.0,
         c in Just(c), m in Just(m), h in Just(h), w in Just(w), k in Just(k),
         stride in Just(stride), pad in Just(pad), dil in Just(dil), depthwise in Just(depthwise))
        -> (Vec<i8>, Vec<i8>, Vec<i64>, f32, Vec<f32>, f32, [usize; 8], bool) {
        (x, wt, bias, sx, sw, sy, [c, m, h, w, k, stride, pad, dil], depthwise)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn conv_within_half_lsb(case in conv_case()) {
        let (x, wt, bias, sx, sw, sy, [c, m, h, w, k, stride, pad, dil], dw) = case;
        let (m, g) = if dw { (c, c) } else { (m, 1) };
        let cg = c / g;
        let span = dil * (k - 1) + 1;
        prop_assume!(h + 2 * pad >= span && w + 2 * pad >= span);
        let mut p = ConvParams::new(2);
        p.strides = vec![stride; 2];
        p.dilations = vec![dil; 2];
        p.pads = vec![pad; 4];
        p.group = g;
        let sy = sy * sx * 127.0 * (cg * k * k) as f32 / 16.0;
        let rq: Vec<Requant> = sw.iter()
            .map(|&s| Requant::from_ratio(f64::from(sx) * f64::from(s) / f64::from(sy)).unwrap())
            .collect();
        let xs = [1, c, h, w];
        let ws = [m, cg, k, k];
        let y: QTensor<i8> = conv(
            TensorRef::new(&x, &xs).unwrap(), TensorRef::new(&wt, &ws).unwrap(),
            Some(&bias), &rq, &p).unwrap();
        // Float reference on the dequantized values.
        let (oh, ow) = (y.shape[2], y.shape[3]);
        let mut want = Vec::new();
        for mo in 0..m {
            let ga = mo / (m / g);
            let sacc = f64::from(sx) * f64::from(sw[mo]);
            for i in 0..oh {
                for j in 0..ow {
                    let mut s = bias[mo] as f64 * sacc;
                    for ci in 0..cg {
                        for a in 0..k {
                            for b in 0..k {
                                let yy = (i * stride + a * dil) as i64 - pad as i64;
                                let xx = (j * stride + b * dil) as i64 - pad as i64;
                                if yy < 0 || xx < 0 || yy >= h as i64 || xx >= w as i64 { continue; }
                                let xv = f64::from(x[((ga * cg + ci) * h + yy as usize) * w + xx as usize]) * f64::from(sx);
                                let wv = f64::from(wt[((mo * cg + ci) * k + a) * k + b]) * f64::from(sw[mo]);
                                s += xv * wv;
                            }
                        }
                    }
                    want.push(s);
                }
            }
        }
        check(&y, &want, f64::from(sy), HALF)?;
    }

    #[test]
    fn matmul_within_half_lsb(
        (mm, kk, nn) in (1usize..5, 1usize..8, 1usize..5),
        seed in prop::collection::vec(any::<i16>(), 80),
        wseed in prop::collection::vec(-127i8..=127, 40),
        sa in scale(), sb in prop::collection::vec(scale(), 4), sy in 0.05f32..2.0,
    ) {
        let a: Vec<i16> = seed[..mm * kk].to_vec();
        let b: Vec<i8> = wseed[..kk * nn].to_vec();
        let sy = sy * sa * 32767.0 * 127.0 * sb[0] * kk as f32 / 8.0;
        let rq: Vec<Requant> = (0..nn)
            .map(|j| Requant::from_ratio(f64::from(sa) * f64::from(sb[j % 4]) / f64::from(sy)).unwrap())
            .collect();
        let y: QTensor<i16> = matmul(
            TensorRef::new(&a, &[mm, kk]).unwrap(), TensorRef::new(&b, &[kk, nn]).unwrap(),
            None, &rq).unwrap();
        let mut want = Vec::new();
        for i in 0..mm {
            for j in 0..nn {
                let s: f64 = (0..kk).map(|t| f64::from(a[i * kk + t]) * f64::from(sa)
                    * f64::from(b[t * nn + j]) * f64::from(sb[j % 4])).sum();
                want.push(s);
            }
        }
        check(&y, &want, f64::from(sy), HALF)?;
    }

    #[test]
    fn add_sub_mul_within_half_lsb(
        a in prop::collection::vec(any::<i8>(), 12), b in prop::collection::vec(any::<i16>(), 4),
        sa in scale(), sb in 0.000_01f32..0.001, sy in scale(),
    ) {
        let ta = TensorRef::new(&a, &[3, 4]).unwrap();
        let tb = TensorRef::new(&b, &[4]).unwrap();
        let (da, db) = (deq(&a, f64::from(sa)), deq(&b, f64::from(sb)));
        let y: QTensor<i8> = add(ta, tb, &add_rescale(sa, sb, sy).unwrap()).unwrap();
        let want: Vec<f64> = (0..12).map(|i| da[i] + db[i % 4]).collect();
        check(&y, &want, f64::from(sy), HALF)?;
        let y: QTensor<i8> = add(ta, tb, &sub_rescale(sa, sb, sy).unwrap()).unwrap();
        let want: Vec<f64> = (0..12).map(|i| da[i] - db[i % 4]).collect();
        check(&y, &want, f64::from(sy), HALF)?;
        let sm = sy * 0.01;
        let rq = Requant::from_ratio(f64::from(sa) * f64::from(sb) / f64::from(sm)).unwrap();
        let y: QTensor<i8> = mul(ta, tb, &rq).unwrap();
        let want: Vec<f64> = (0..12).map(|i| da[i] * db[i % 4]).collect();
        check(&y, &want, f64::from(sm), HALF)?;
    }

    #[test]
    fn lut_ops_int8_within_half_lsb(t in 0.5f32..10.0, op in 0usize..13) {
        let f = [LutFn::Sigmoid, LutFn::Tanh, LutFn::Exp, LutFn::Erf, LutFn::Gelu,
                 LutFn::HardSigmoid { alpha: 0.2, beta: 0.5 }, LutFn::HardSwish,
                 LutFn::Sin, LutFn::Cos, LutFn::Sqrt, LutFn::Pow { exponent: 3.0 },
                 LutFn::Pow { exponent: 1.5 }, LutFn::Pow { exponent: -0.5 }][op];
        let sx = t / 127.0;
        let sy = (0..=255).map(|q| f.eval(f64::from(q - 128) * f64::from(sx)).abs())
            .filter(|v| v.is_finite()).fold(1e-3, f64::max) as f32 / 127.0;
        let table = Lut::for_fn::<i8, i8>(f, sx, sy).unwrap();
        let x: Vec<i8> = (-128..=127).collect();
        let y: QTensor<i8> = lut(TensorRef::new(&x, &[256]).unwrap(), &table);
        let want: Vec<f64> = x.iter().map(|&q| {
            let v = f.eval(f64::from(q) * f64::from(sx));
            if v.is_nan() { 0.0 } else { v }
        }).collect();
        check(&y, &want, f64::from(sy), 0.5 + 1e-9)?;
    }

    #[test]
    fn lut_ops_int16_within_three_quarter_lsb(t in 0.5f32..10.0, op in 0usize..7) {
        let f = [LutFn::Sigmoid, LutFn::Tanh, LutFn::Gelu, LutFn::HardSwish,
                 LutFn::Sin, LutFn::Reciprocal, LutFn::Pow { exponent: 3.0 }][op];
        let sx = t / 32767.0;
        let sy = if f == LutFn::Reciprocal { 100.0 / 32767.0 }
            else { (f.eval(f64::from(t)).abs().max(f.eval(-f64::from(t)).abs()).max(1e-3) / 32767.0) as f32 };
        let table = Lut::for_fn::<i16, i16>(f, sx, sy).unwrap();
        let x: Vec<i16> = (-32768..=32767).step_by(13).collect();
        let y: QTensor<i16> = lut(TensorRef::new(&x, &[x.len()]).unwrap(), &table);
        let want: Vec<f64> = x.iter().map(|&q| f.eval(f64::from(q) * f64::from(sx))).collect();
        check(&y, &want, f64::from(sy), 0.75 + 1e-9)?;
    }

    #[test]
    fn div_int8_within_half_lsb(a in prop::collection::vec(any::<i8>(), 16),
                               b in prop::collection::vec(1i8..=127, 16),
                               neg in any::<bool>(), sa in scale(), sb in scale()) {
        let b: Vec<i8> = b.iter().map(|&v| if neg { -v } else { v }).collect();
        let sy = sa / sb / 127.0 * 64.0;
        let plan = DivPlan::new::<i8>(sa, sb, sy).unwrap();
        let y: QTensor<i8> = div(TensorRef::new(&a, &[16]).unwrap(),
                                 TensorRef::new(&b, &[16]).unwrap(), &plan).unwrap();
        let want: Vec<f64> = (0..16).map(|i| f64::from(a[i]) * f64::from(sa)
            / (f64::from(b[i]) * f64::from(sb))).collect();
        // The reciprocal's own rounding adds < 1e-4 LSB.
        check(&y, &want, f64::from(sy), 0.5 + 1e-4)?;
    }

    #[test]
    fn softmax_within_one_lsb(x in prop::collection::vec(any::<i8>(), 1..40), t in 1.0f32..20.0,
                              int16 in any::<bool>()) {
        let n = x.len();
        let sx = t / 127.0;
        let m = x.iter().map(|&v| f64::from(v) * f64::from(sx)).fold(f64::MIN, f64::max);
        let e: Vec<f64> = x.iter().map(|&v| (f64::from(v) * f64::from(sx) - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let want: Vec<f64> = e.iter().map(|v| v / s).collect();
        if int16 {
            let x16: Vec<i16> = x.iter().map(|&v| i16::from(v) * 256).collect();
            let sx16 = sx / 256.0;
            let plan = SoftmaxPlan::new::<i16>(sx16, 1.0 / 32767.0).unwrap();
            let y: QTensor<i16> = softmax(TensorRef::new(&x16, &[n]).unwrap(), 0, &plan, false).unwrap();
            check(&y, &want, 1.0 / 32767.0, 1.0)?;
        } else {
            let plan = SoftmaxPlan::new::<i8>(sx, 1.0 / 127.0).unwrap();
            let y: QTensor<i8> = softmax(TensorRef::new(&x, &[1, n]).unwrap(), 1, &plan, false).unwrap();
            check(&y, &want, 1.0 / 127.0, 1.0)?;
        }
    }

    #[test]
    fn layer_norm_within_two_lsb(x in prop::collection::vec(any::<i16>(), 2..64),
                                 gamma in prop::collection::vec(0.1f32..2.0, 64),
                                 beta in prop::collection::vec(-1.0f32..1.0, 64),
                                 sx in scale(), eps in 0.0f32..0.01) {
        let n = x.len();
        let (g, b) = (&gamma[..n], &beta[..n]);
        let sy = 8.0 / 127.0;
        let plan = LayerNormPlan::new(sx, sy, g, Some(b), eps).unwrap();
        let y: QTensor<i8> = layer_norm(TensorRef::new(&x, &[1, n]).unwrap(), 1, &plan).unwrap();
        let d = deq(&x, f64::from(sx));
        let mean = d.iter().sum::<f64>() / n as f64;
        let var = d.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + f64::from(eps)).sqrt();
        let want: Vec<f64> = (0..n).map(|i| (d[i] - mean) * inv * f64::from(g[i]) + f64::from(b[i])).collect();
        check(&y, &want, f64::from(sy), 2.0)?;
    }

    #[test]
    fn average_pool_within_half_lsb(x in prop::collection::vec(any::<i8>(), 25), k in 1usize..4,
                                   stride in 1usize..3, pad in 0usize..2, include in any::<bool>(),
                                   sx in scale(), ratio in 0.5f32..2.0) {
        prop_assume!(pad < k);
        let mut p = PoolParams::new(&[k, k]);
        p.strides = vec![stride; 2];
        p.pads = vec![pad; 4];
        p.count_include_pad = include;
        let sy = sx * ratio;
        let y: QTensor<i8> = average_pool(TensorRef::new(&x, &[1, 1, 5, 5]).unwrap(), &p, sx, sy).unwrap();
        let (oh, ow) = (y.shape[2], y.shape[3]);
        let mut want = Vec::new();
        for i in 0..oh {
            for j in 0..ow {
                let (mut s, mut cnt, mut cnt_pad) = (0.0, 0, 0);
                for a in 0..k {
                    for b in 0..k {
                        let yy = (i * stride + a) as i64 - pad as i64;
                        let xx = (j * stride + b) as i64 - pad as i64;
                        if yy < 5 + pad as i64 && xx < 5 + pad as i64 { cnt_pad += 1; }
                        if yy < 0 || xx < 0 || yy >= 5 || xx >= 5 { continue; }
                        s += f64::from(x[yy as usize * 5 + xx as usize]) * f64::from(sx);
                        cnt += 1;
                    }
                }
                want.push(s / f64::from(if include { cnt_pad } else { cnt }));
            }
        }
        check(&y, &want, f64::from(sy), HALF)?;
    }

    #[test]
    fn bilinear_resize_within_0_51_lsb(x in prop::collection::vec(any::<i8>(), 12),
                                      oh in 1usize..9, ow in 1usize..9, ac in any::<bool>(),
                                      sx in scale()) {
        let (h, w) = (3usize, 4usize);
        let coord = if ac { CoordMode::AlignCorners } else { CoordMode::HalfPixel };
        let scales = vec![1.0, 1.0, oh as f64 / h as f64, ow as f64 / w as f64];
        let p = ResizeParams { mode: ResizeMode::Linear, coord, nearest: NearestMode::RoundPreferFloor,
                               out_shape: vec![1, 1, oh, ow], scales: scales.clone() };
        let y: QTensor<i8> = resize(TensorRef::new(&x, &[1, 1, h, w]).unwrap(), &p, sx, sx).unwrap();
        let src = |o: usize, inl: usize, outl: usize, s: f64| -> (usize, usize, f64) {
            let c = hb_bpu::reference::resize::source_coord(o, inl, outl, s, coord)
                .clamp(0.0, (inl - 1) as f64);
            let i0 = c.floor() as usize;
            (i0, (i0 + 1).min(inl - 1), c - i0 as f64)
        };
        let mut want = Vec::new();
        for i in 0..oh {
            let (y0, y1, fy) = src(i, h, oh, scales[2]);
            for j in 0..ow {
                let (x0, x1, fx) = src(j, w, ow, scales[3]);
                let v = |a: usize, b: usize| f64::from(x[a * w + b]) * f64::from(sx);
                want.push((1.0 - fy) * ((1.0 - fx) * v(y0, x0) + fx * v(y0, x1))
                    + fy * ((1.0 - fx) * v(y1, x0) + fx * v(y1, x1)));
            }
        }
        // Q16 weights: ≤ 2^-17 · 255 per axis.
        check(&y, &want, f64::from(sx), 0.51)?;
    }

    #[test]
    fn grid_sample_within_0_51_lsb(x in prop::collection::vec(any::<i8>(), 20),
                                  grid in prop::collection::vec(any::<i8>(), 12),
                                  ac in any::<bool>(), sx in scale()) {
        let (h, w) = (4usize, 5usize);
        let sg = 1.1f32 / 127.0;
        let p = GridSampleParams { mode: GridMode::Bilinear, padding: GridPadding::Zeros, align_corners: ac };
        let y: QTensor<i8> = grid_sample(TensorRef::new(&x, &[1, 1, h, w]).unwrap(),
            TensorRef::new(&grid, &[1, 2, 3, 2]).unwrap(), sx, sg, sx, p).unwrap();
        let pix = |g: f64, len: usize| if ac { (g + 1.0) / 2.0 * (len as f64 - 1.0) }
            else { ((g + 1.0) * len as f64 - 1.0) / 2.0 };
        let v = |a: i64, b: i64| if a < 0 || b < 0 || a >= h as i64 || b >= w as i64 { 0.0 }
            else { f64::from(x[a as usize * w + b as usize]) * f64::from(sx) };
        let want: Vec<f64> = (0..6).map(|k| {
            let px = pix(f64::from(grid[2 * k]) * f64::from(sg), w);
            let py = pix(f64::from(grid[2 * k + 1]) * f64::from(sg), h);
            let (x0, y0) = (px.floor(), py.floor());
            let (fx, fy) = (px - x0, py - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            (1.0 - fy) * ((1.0 - fx) * v(y0, x0) + fx * v(y0, x0 + 1))
                + fy * ((1.0 - fx) * v(y0 + 1, x0) + fx * v(y0 + 1, x0 + 1))
        }).collect();
        check(&y, &want, f64::from(sx), 0.51)?;
    }
}
