//! Pad: constant / reflect / edge / wrap modes, negative pads crop.

use super::remap::{axis_of, check_numel, remap_tensor, MAX_ELEMENTS};
use super::util::{attr_err, input, ints_input, one, opt_input};
use crate::error::OpResult;
use crate::invalid;
use crate::registry::{OpCtx, Registry};
use hb_tensor::Tensor;

/// Registers Pad.
pub fn register(r: &mut Registry) {
    r.register("Pad", pad);
    r.register("CenterCropPad", center_crop_pad);
}

/// How positions outside the input are filled.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// Mirror without repeating the edge.
    Reflect,
    /// Repeat the edge element.
    Edge,
    /// Wrap around.
    Wrap,
}

impl PadMode {
    fn parse(s: &str) -> OpResult<Self> {
        Ok(match s {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            other => return Err(invalid!("unknown pad mode '{other}'")),
        })
    }
}

/// Source index along one axis for every output position (`None` = fill).
pub fn pad_map(n: usize, begin: i64, end: i64, mode: PadMode) -> OpResult<Vec<Option<usize>>> {
    let len = (n as i64)
        .checked_add(begin)
        .and_then(|v| v.checked_add(end))
        .filter(|&v| v <= MAX_ELEMENTS as i64)
        .ok_or_else(|| invalid!("pads {begin},{end} are too large"))?;
    if len < 0 {
        return Err(invalid!(
            "pads {begin},{end} crop more than the dimension {n}"
        ));
    }
    if n == 0 && len > 0 && mode != PadMode::Constant {
        return Err(invalid!("cannot {mode:?}-pad an empty dimension"));
    }
    let ni = n as i64;
    (0..len)
        .map(|o| {
            let j = o - begin;
            Ok(match mode {
                PadMode::Constant => (0..ni).contains(&j).then_some(j as usize),
                PadMode::Edge => Some(j.clamp(0, ni - 1) as usize),
                PadMode::Wrap => Some(j.rem_euclid(ni) as usize),
                PadMode::Reflect => Some(reflect(j, ni) as usize),
            })
        })
        .collect()
}

/// Mirrors `j` into `[0, n)` without repeating the edges.
fn reflect(j: i64, n: i64) -> i64 {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = j.rem_euclid(period);
    if m >= n {
        period - m
    } else {
        m
    }
}

/// Per-axis `(begin, end)` pads from the ONNX pads list and optional axes.
fn axis_pads(rank: usize, pads: &[i64], axes: Option<Vec<i64>>) -> OpResult<Vec<(i64, i64)>> {
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&x| axis_of(x, rank))
            .collect::<OpResult<_>>()?,
        None => (0..rank).collect(),
    };
    let k = axes.len();
    if pads.len() != 2 * k {
        return Err(invalid!("pads {pads:?} do not fit {k} axes"));
    }
    let mut out = vec![(0, 0); rank];
    for (i, &a) in axes.iter().enumerate() {
        out[a] = (pads[i], pads[i + k]);
    }
    Ok(out)
}

fn pad(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let mode = PadMode::parse(&ctx.node.string_or("mode", "constant").map_err(attr_err)?)?;
    let (pads, fill, axes) = if ctx.opset >= 11 {
        let pads = ints_input(inputs, 1)?.ok_or_else(|| invalid!("Pad needs pads"))?;
        let fill = match opt_input(inputs, 2) {
            Some(t) if !t.is_empty() => t.clone(),
            _ => Tensor::zeros(x.dtype(), &[1]),
        };
        (pads, fill, ints_input(inputs, 3)?)
    } else {
        let pads = ctx.node.get_ints("pads").map_err(attr_err)?;
        let v = ctx.node.float_or("value", 0.0).map_err(attr_err)?;
        let pads = pads.ok_or_else(|| invalid!("Pad needs pads"))?;
        (pads, Tensor::scalar(v).cast(x.dtype())?, None)
    };
    let per_axis = axis_pads(x.rank(), &pads, axes)?;
    let maps = x
        .shape()
        .iter()
        .zip(&per_axis)
        .map(|(&n, &(b, e))| pad_map(n, b, e, mode))
        .collect::<OpResult<Vec<_>>>()?;
    check_numel(&maps.iter().map(Vec::len).collect::<Vec<_>>())?;
    one(remap_tensor(x, &maps, &fill)?)
}

/// Center crop and/or zero pad to `shape` on `axes` (all axes by default).
fn center_crop_pad(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let target = ints_input(inputs, 1)?.ok_or_else(|| invalid!("CenterCropPad needs a shape"))?;
    let r = x.rank();
    let axes: Vec<usize> = match ctx.node.get_ints("axes").map_err(attr_err)? {
        Some(a) => a.iter().map(|&v| axis_of(v, r)).collect::<OpResult<_>>()?,
        None => (0..r).collect(),
    };
    if axes.len() != target.len() {
        return Err(invalid!("shape {target:?} does not fit axes {axes:?}"));
    }
    let mut pads = vec![(0i64, 0i64); r];
    for (&a, &s) in axes.iter().zip(&target) {
        let d = x.shape()[a] as i64;
        if s < 0 {
            return Err(invalid!("negative target size {s}"));
        }
        // Crop takes floor((d - s) / 2) from the start; pad adds
        // floor((s - d) / 2) before.
        let begin = if s < d { -((d - s) / 2) } else { (s - d) / 2 };
        pads[a] = (begin, s - d - begin);
    }
    let maps = x
        .shape()
        .iter()
        .zip(&pads)
        .map(|(&n, &(b, e))| pad_map(n, b, e, PadMode::Constant))
        .collect::<OpResult<Vec<_>>>()?;
    check_numel(&maps.iter().map(Vec::len).collect::<Vec<_>>())?;
    one(remap_tensor(x, &maps, &Tensor::zeros(x.dtype(), &[1]))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_map() {
        // [a b c] reflect-padded by 2 on both sides: c b | a b c | b a
        let m = pad_map(3, 2, 2, PadMode::Reflect).unwrap();
        let v: Vec<usize> = m.into_iter().flatten().collect();
        assert_eq!(v, vec![2, 1, 0, 1, 2, 1, 0]);
    }

    #[test]
    fn negative_pads_crop_and_errors() {
        let m = pad_map(4, -1, 1, PadMode::Constant).unwrap();
        assert_eq!(m, vec![Some(1), Some(2), Some(3), None]);
        assert!(pad_map(2, -2, -1, PadMode::Constant).is_err());
        assert!(pad_map(0, 1, 0, PadMode::Edge).is_err());
        assert!(axis_pads(2, &[1, 1, 1], None).is_err());
    }
}

#[cfg(test)]
mod opset_tests {
    use crate::registry::{OpCtx, Registry};
    use hb_ir::{Attr, Node};
    use hb_tensor::Tensor;

    fn run(op: &str, opset: i64, attrs: &[(&str, Attr)], inputs: &[&Tensor]) -> Vec<Tensor> {
        let mut n = Node::new("n", op, &["a", "b"], &["y", "z"]);
        for (k, v) in attrs {
            n.set_attr(k, v.clone());
        }
        let ctx = OpCtx { node: &n, opset };
        let ins: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
        Registry::standard().get("", op).unwrap()(&ctx, &ins).unwrap()
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_f32().unwrap().iter().copied().collect()
    }

    #[test]
    fn legacy_attribute_forms() {
        let x = Tensor::from_f32(&[1, 4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        // Pad-2: pads and value attributes.
        let y = run(
            "Pad",
            2,
            &[
                ("pads", Attr::Ints(vec![0, 1, 0, 2])),
                ("value", Attr::Float(9.0)),
            ],
            &[&x],
        );
        assert_eq!(f32s(&y[0]), vec![9.0, 1.0, 2.0, 3.0, 4.0, 9.0, 9.0]);
        // Slice-1: attributes, INT_MAX end.
        let y = run(
            "Slice",
            9,
            &[
                ("starts", Attr::Ints(vec![1])),
                ("ends", Attr::Ints(vec![i64::MAX])),
                ("axes", Attr::Ints(vec![1])),
            ],
            &[&x],
        );
        assert_eq!(f32s(&y[0]), vec![2.0, 3.0, 4.0]);
        // Split-11: split attribute.
        let y = run(
            "Split",
            11,
            &[("axis", Attr::Int(1)), ("split", Attr::Ints(vec![1, 3]))],
            &[&x],
        );
        assert_eq!(f32s(&y[1]), vec![2.0, 3.0, 4.0]);
        // Squeeze-11 / Unsqueeze-11: axes attribute.
        let y = run("Squeeze", 11, &[("axes", Attr::Ints(vec![0]))], &[&x]);
        assert_eq!(y[0].shape(), &[4]);
        let y = run("Unsqueeze", 11, &[("axes", Attr::Ints(vec![-1]))], &[&x]);
        assert_eq!(y[0].shape(), &[1, 4, 1]);
        // Upsample-7: scales attribute, nearest (floor, asymmetric).
        let y = run(
            "Upsample",
            7,
            &[("scales", Attr::Floats(vec![1.0, 2.0]))],
            &[&x],
        );
        assert_eq!(f32s(&y[0]), vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]);
        // Upsample-9 linear: scales input, asymmetric.
        let s = Tensor::from_f32(&[2], vec![1.0, 2.0]).unwrap();
        let y = run(
            "Upsample",
            9,
            &[("mode", Attr::String("linear".into()))],
            &[&x, &s],
        );
        assert_eq!(f32s(&y[0]), vec![1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.0]);
        // Resize-10: scales as input 1.
        let y = run("Resize", 10, &[], &[&x, &s]);
        assert_eq!(y[0].shape(), &[1, 8]);
    }
}
