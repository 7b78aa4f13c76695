//! Detection ops: NonMaxSuppression and RoiAlign, as torchvision's and
//! paddle's detectors export them. Both run in f32 (RoiAlign's output takes
//! its input's float type) and follow onnxruntime's CPU kernels, which the
//! ONNX node cases were generated against.

use super::util::{input, one, opt_input};
use crate::error::OpResult;
use crate::invalid;
use crate::registry::{OpCtx, Registry};
use hb_tensor::{DType, Tensor};

/// Registers the detection ops.
pub fn register(r: &mut Registry) {
    r.register("NonMaxSuppression", non_max_suppression);
    r.register("RoiAlign", roi_align);
}

/// One scalar of an optional input, or `default` when absent or empty.
fn scalar_or<T>(
    t: Option<&Tensor>,
    default: T,
    get: impl Fn(&Tensor) -> OpResult<Vec<T>>,
) -> OpResult<T>
where
    T: Copy,
{
    match t {
        None => Ok(default),
        Some(t) => Ok(get(t)?.first().copied().unwrap_or(default)),
    }
}

/// A box as `(y1, x1, y2, x2)` with `y1 ≤ y2`, `x1 ≤ x2`.
type Corners = (f32, f32, f32, f32);

fn corners(b: &[f32], center_point: bool) -> Corners {
    if center_point {
        let (xc, yc, w, h) = (b[0], b[1], b[2], b[3]);
        (yc - h / 2.0, xc - w / 2.0, yc + h / 2.0, xc + w / 2.0)
    } else {
        (
            b[0].min(b[2]),
            b[1].min(b[3]),
            b[0].max(b[2]),
            b[1].max(b[3]),
        )
    }
}

/// `IoU(a, b) > threshold`, with empty boxes and empty intersections never
/// suppressing (onnxruntime's `SuppressByIOU`).
fn suppresses(a: Corners, b: Corners, threshold: f32) -> bool {
    let ih = a.2.min(b.2) - a.0.max(b.0);
    let iw = a.3.min(b.3) - a.1.max(b.1);
    if ih <= 0.0 || iw <= 0.0 {
        return false;
    }
    let inter = ih * iw;
    let area_a = (a.2 - a.0) * (a.3 - a.1);
    let area_b = (b.2 - b.0) * (b.3 - b.1);
    let union = area_a + area_b - inter;
    if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > threshold
}

/// NonMaxSuppression (opset 10/11): per batch and class, boxes above
/// `score_threshold` in descending score order (ties: lower index first),
/// each kept unless it overlaps a kept one by more than `iou_threshold`, at
/// most `max_output_boxes_per_class` of them. Output `[n, 3]` int64 rows
/// `(batch, class, box)`.
fn non_max_suppression(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let boxes = input(inputs, 0)?;
    let scores = input(inputs, 1)?;
    let (bs, ss) = (boxes.shape(), scores.shape());
    if bs.len() != 3 || bs[2] != 4 {
        return Err(invalid!(
            "NonMaxSuppression: boxes must be [batches, boxes, 4], got {bs:?}"
        ));
    }
    if ss.len() != 3 || ss[0] != bs[0] || ss[2] != bs[1] {
        return Err(invalid!(
            "NonMaxSuppression: scores {ss:?} do not match boxes {bs:?} ([batches, classes, boxes])"
        ));
    }
    let max_out = scalar_or(opt_input(inputs, 2), 0i64, |t| Ok(t.to_i64_vec()?))?.max(0) as usize;
    let f32s = |t: &Tensor| -> OpResult<Vec<f32>> {
        Ok(t.to_f64_vec()?.iter().map(|&v| v as f32).collect())
    };
    let iou = scalar_or(opt_input(inputs, 3), 0f32, f32s)?;
    let score_th = match opt_input(inputs, 4) {
        Some(t) if !t.is_empty() => Some(f32s(t)?[0]),
        _ => None,
    };
    let center = ctx.node.int_or("center_point_box", 0)? != 0;
    let (nb, nc, n) = (ss[0], ss[1], ss[2]);
    let bx = f32s(boxes)?;
    let sc = f32s(scores)?;
    let mut out: Vec<i64> = Vec::new();
    for b in 0..nb {
        let cs: Vec<Corners> = (0..n)
            .map(|i| corners(&bx[(b * n + i) * 4..(b * n + i) * 4 + 4], center))
            .collect();
        for c in 0..nc {
            if max_out == 0 {
                break;
            }
            let row = &sc[(b * nc + c) * n..(b * nc + c + 1) * n];
            let mut order: Vec<usize> = (0..n)
                .filter(|&i| score_th.is_none_or(|t| row[i] > t))
                .collect();
            order.sort_by(|&i, &j| row[j].total_cmp(&row[i]).then(i.cmp(&j)));
            let mut kept: Vec<usize> = Vec::new();
            for i in order {
                if kept.len() >= max_out {
                    break;
                }
                if kept.iter().all(|&k| !suppresses(cs[k], cs[i], iou)) {
                    kept.push(i);
                }
            }
            for k in kept {
                out.extend([b as i64, c as i64, k as i64]);
            }
        }
    }
    let rows = out.len() / 3;
    one(Tensor::from_vec(&[rows, 3], out)?)
}

/// The two grid lines around coordinate `v` of an axis of `n` cells, with
/// `v` clamped to `[0, n − 1]` (at the last line both neighbours are it).
fn grid_cell(v: f32, n: usize) -> (f32, usize, usize) {
    let v = v.max(0.0);
    let low = v as usize;
    if low >= n - 1 {
        ((n - 1) as f32, n - 1, n - 1)
    } else {
        (v, low, low + 1)
    }
}

/// Bilinear sampling position and weights of one point (onnxruntime's
/// `pre_calc_for_bilinear_interpolate`): four flat indices, four weights.
fn bilinear(y: f32, x: f32, h: usize, w: usize) -> ([usize; 4], [f32; 4]) {
    if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 {
        return ([0; 4], [0.0; 4]);
    }
    let (y, y_low, y_high) = grid_cell(y, h);
    let (x, x_low, x_high) = grid_cell(x, w);
    let (ly, lx) = (y - y_low as f32, x - x_low as f32);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    (
        [
            y_low * w + x_low,
            y_low * w + x_high,
            y_high * w + x_low,
            y_high * w + x_high,
        ],
        [hy * hx, hy * lx, ly * hx, ly * lx],
    )
}

/// RoiAlign (opset 10/16): `X [N, C, H, W]`, `rois [R, 4]` as
/// `(x1, y1, x2, y2)`, `batch_indices [R]` → `[R, C, oh, ow]`, each bin the
/// average (or the maximum of the weighted corners) of a grid of bilinear
/// samples. `coordinate_transformation_mode` `half_pixel` (opset 16's
/// default) shifts by −0.5; `output_half_pixel` (opset 10's behaviour)
/// does not and makes every RoI at least 1×1.
fn roi_align(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let rois = input(inputs, 1)?;
    let idx = input(inputs, 2)?.to_i64_vec()?;
    let xs = x.shape();
    if xs.len() != 4 {
        return Err(invalid!("RoiAlign: X must be [N, C, H, W], got {xs:?}"));
    }
    let (nb, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    if rois.rank() != 2 || rois.shape()[1] != 4 || rois.shape()[0] != idx.len() {
        return Err(invalid!(
            "RoiAlign: rois {:?} must be [R, 4] with R = batch_indices' length {}",
            rois.shape(),
            idx.len()
        ));
    }
    if h == 0 || w == 0 {
        return Err(invalid!("RoiAlign: empty feature map {xs:?}"));
    }
    let node = ctx.node;
    let mode = node.string_or("mode", "avg")?;
    let max_mode = match mode.as_str() {
        "avg" => false,
        "max" => true,
        m => return Err(invalid!("RoiAlign: unknown mode '{m}'")),
    };
    let oh = usize::try_from(node.int_or("output_height", 1)?)
        .unwrap_or(1)
        .max(1);
    let ow = usize::try_from(node.int_or("output_width", 1)?)
        .unwrap_or(1)
        .max(1);
    let ratio = node.int_or("sampling_ratio", 0)?;
    let scale = node.float_or("spatial_scale", 1.0)?;
    let default_mode = if ctx.opset >= 16 {
        "half_pixel"
    } else {
        "output_half_pixel"
    };
    let half_pixel = match node
        .string_or("coordinate_transformation_mode", default_mode)?
        .as_str()
    {
        "half_pixel" => true,
        "output_half_pixel" => false,
        m => {
            return Err(invalid!(
                "RoiAlign: unknown coordinate_transformation_mode '{m}'"
            ))
        }
    };
    let data: Vec<f32> = x.to_f64_vec()?.iter().map(|&v| v as f32).collect();
    let r: Vec<f32> = rois.to_f64_vec()?.iter().map(|&v| v as f32).collect();
    let mut out = vec![0f32; idx.len() * c * oh * ow];
    let offset = if half_pixel { 0.5 } else { 0.0 };
    for (n, &bi) in idx.iter().enumerate() {
        let b = usize::try_from(bi)
            .ok()
            .filter(|&b| b < nb)
            .ok_or_else(|| invalid!("RoiAlign: batch index {bi} out of range for {nb} images"))?;
        let roi = &r[n * 4..n * 4 + 4];
        let (sw, sh) = (roi[0] * scale - offset, roi[1] * scale - offset);
        let (ew, eh) = (roi[2] * scale - offset, roi[3] * scale - offset);
        let (mut rw, mut rh) = (ew - sw, eh - sh);
        if !half_pixel {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (bin_h, bin_w) = (rh / oh as f32, rw / ow as f32);
        let grid_h = if ratio > 0 {
            ratio as usize
        } else {
            (rh / oh as f32).ceil().max(0.0) as usize
        };
        let grid_w = if ratio > 0 {
            ratio as usize
        } else {
            (rw / ow as f32).ceil().max(0.0) as usize
        };
        let count = (grid_h * grid_w).max(1) as f32;
        // Sampling points of every bin, shared by the channels.
        let mut pts: Vec<([usize; 4], [f32; 4])> = Vec::with_capacity(oh * ow * grid_h * grid_w);
        for ph in 0..oh {
            for pw in 0..ow {
                for iy in 0..grid_h {
                    let yy = sh + ph as f32 * bin_h + (iy as f32 + 0.5) * bin_h / grid_h as f32;
                    for ix in 0..grid_w {
                        let xx = sw + pw as f32 * bin_w + (ix as f32 + 0.5) * bin_w / grid_w as f32;
                        pts.push(bilinear(yy, xx, h, w));
                    }
                }
            }
        }
        let per_bin = grid_h * grid_w;
        for ch in 0..c {
            let plane = &data[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
            for bin in 0..oh * ow {
                let samples = &pts[bin * per_bin..(bin + 1) * per_bin];
                let v = if max_mode {
                    let mut best: Option<f32> = None;
                    for (p, wt) in samples {
                        let m = (0..4)
                            .map(|k| wt[k] * plane[p[k]])
                            .fold(f32::NEG_INFINITY, f32::max);
                        best = Some(best.map_or(m, |b| b.max(m)));
                    }
                    best.unwrap_or(0.0)
                } else {
                    let s: f32 = samples
                        .iter()
                        .map(|(p, wt)| (0..4).map(|k| wt[k] * plane[p[k]]).sum::<f32>())
                        .sum();
                    s / count
                };
                out[(n * c + ch) * oh * ow + bin] = v;
            }
        }
    }
    let y = Tensor::from_f32(&[idx.len(), c, oh, ow], out)?;
    one(if x.dtype() == DType::F32 {
        y
    } else {
        y.cast(x.dtype())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_ir::Node;

    fn run(op: &str, node: Node, opset: i64, ins: &[Option<&Tensor>]) -> Vec<Tensor> {
        let f = Registry::standard().get("", op).unwrap();
        f(&OpCtx { node: &node, opset }, ins).unwrap()
    }

    #[test]
    fn nms_suppresses_overlaps_and_keeps_the_order() {
        // Two overlapping boxes (IoU 0.81) and a far one, two classes.
        let boxes = Tensor::from_f32(
            &[1, 3, 4],
            vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.1, 1.0, 1.1, 5.0, 5.0, 6.0, 6.0],
        )
        .unwrap();
        let scores = Tensor::from_f32(&[1, 2, 3], vec![0.9, 0.95, 0.3, 0.1, 0.2, 0.05]).unwrap();
        let max = Tensor::from_vec(&[1], vec![2i64]).unwrap();
        let iou = Tensor::from_f32(&[1], vec![0.5]).unwrap();
        let th = Tensor::from_f32(&[1], vec![0.15]).unwrap();
        let n = Node::new("n", "NonMaxSuppression", &[], &["y"]);
        let y = run(
            "NonMaxSuppression",
            n,
            11,
            &[
                Some(&boxes),
                Some(&scores),
                Some(&max),
                Some(&iou),
                Some(&th),
            ],
        );
        // Class 0: box 1 (0.95) suppresses box 0, box 2 kept; class 1: only
        // box 1 passes the score threshold.
        assert_eq!(y[0].shape(), &[3, 3]);
        assert_eq!(y[0].to_i64_vec().unwrap(), vec![0, 0, 1, 0, 0, 2, 0, 1, 1]);
    }

    #[test]
    fn roi_align_of_a_constant_map_is_the_constant() {
        let x = Tensor::from_f32(&[1, 2, 4, 4], vec![3.0; 32]).unwrap();
        let rois = Tensor::from_f32(&[1, 4], vec![0.5, 0.5, 2.5, 3.0]).unwrap();
        let bi = Tensor::from_vec(&[1], vec![0i64]).unwrap();
        let mut n = Node::new("n", "RoiAlign", &[], &["y"]);
        n.set_attr("output_height", hb_ir::Attr::Int(2));
        n.set_attr("output_width", hb_ir::Attr::Int(3));
        let y = run("RoiAlign", n, 16, &[Some(&x), Some(&rois), Some(&bi)]);
        assert_eq!(y[0].shape(), &[1, 2, 2, 3]);
        for v in y[0].to_f64_vec().unwrap() {
            assert!((v - 3.0).abs() < 1e-6, "{v}");
        }
    }
}
