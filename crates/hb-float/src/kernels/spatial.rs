//! Window geometry shared by Conv, ConvTranspose and the pooling ops:
//! kernel, strides, dilations, pads and `auto_pad`, normalized to three
//! spatial dims (1-D and 2-D ops get leading dims of size 1).

use crate::error::OpResult;
use crate::registry::OpCtx;
use crate::{invalid, unsupported};

/// Number of spatial dims every geometry is normalized to.
pub const SD: usize = 3;

/// Window attributes of one node, for `rank` spatial dims (1 to 3).
#[derive(Debug, Clone)]
pub struct WindowAttrs {
    /// Kernel extent per spatial dim.
    pub kernel: Vec<usize>,
    /// Strides per spatial dim.
    pub strides: Vec<usize>,
    /// Dilations per spatial dim.
    pub dilations: Vec<usize>,
    /// Explicit pads: begins then ends.
    pub pads: Vec<usize>,
    /// `auto_pad` value.
    pub auto_pad: String,
}

fn positive(name: &str, v: Option<Vec<i64>>, rank: usize) -> OpResult<Vec<usize>> {
    match v {
        None => Ok(vec![1; rank]),
        Some(v) if v.len() == rank && v.iter().all(|&x| x >= 1) => {
            Ok(v.iter().map(|&x| x as usize).collect())
        }
        Some(v) => Err(invalid!(
            "attribute {name} {v:?} must hold {rank} positive values"
        )),
    }
}

impl WindowAttrs {
    /// Reads kernel_shape (or `kernel` when given from weights), strides,
    /// dilations, pads and auto_pad for `rank` spatial dims.
    pub fn read(ctx: &OpCtx, rank: usize, kernel: Option<Vec<usize>>) -> OpResult<Self> {
        let n = ctx.node;
        if rank == 0 || rank > SD {
            return Err(unsupported!(
                "{rank} spatial dims (1 to {SD} are supported)"
            ));
        }
        let kernel = match (n.get_ints("kernel_shape")?, kernel) {
            (Some(k), _) => positive("kernel_shape", Some(k), rank)?,
            (None, Some(k)) => k,
            (None, None) => return Err(invalid!("attribute kernel_shape is required")),
        };
        if kernel.len() != rank {
            return Err(invalid!(
                "kernel has {} dims, input has {rank} spatial dims",
                kernel.len()
            ));
        }
        let strides = positive("strides", n.get_ints("strides")?, rank)?;
        let dilations = positive("dilations", n.get_ints("dilations")?, rank)?;
        let pads = match n.get_ints("pads")? {
            None => vec![0; 2 * rank],
            Some(p) if p.len() == 2 * rank && p.iter().all(|&x| x >= 0) => {
                p.iter().map(|&x| x as usize).collect()
            }
            Some(p) => {
                return Err(invalid!(
                    "attribute pads {p:?} must hold {} non-negative values",
                    2 * rank
                ))
            }
        };
        let auto_pad = n.string_or("auto_pad", "NOTSET")?;
        if !matches!(
            auto_pad.as_str(),
            "NOTSET" | "SAME_UPPER" | "SAME_LOWER" | "VALID"
        ) {
            return Err(invalid!("unknown auto_pad '{auto_pad}'"));
        }
        Ok(WindowAttrs {
            kernel,
            strides,
            dilations,
            pads,
            auto_pad,
        })
    }

    /// Effective kernel extent along dim `d`: `(k - 1) * dilation + 1`.
    pub fn extent(&self, d: usize) -> usize {
        (self.kernel[d] - 1) * self.dilations[d] + 1
    }

    /// Output sizes, begin pads and end pads of a forward window op (Conv,
    /// pools) over the spatial `input` sizes.
    pub fn forward(&self, input: &[usize], ceil_mode: bool) -> OpResult<Padded> {
        let r = input.len();
        let mut out = Vec::with_capacity(r);
        let mut begin = Vec::with_capacity(r);
        let mut end = Vec::with_capacity(r);
        for (d, &i) in input.iter().enumerate() {
            let (s, e) = (self.strides[d], self.extent(d));
            match self.auto_pad.as_str() {
                "SAME_UPPER" | "SAME_LOWER" => {
                    let o = i.div_ceil(s);
                    let total = ((o.max(1) - 1) * s + e).saturating_sub(i);
                    let b = if self.auto_pad == "SAME_UPPER" {
                        total / 2
                    } else {
                        total - total / 2
                    };
                    out.push(o);
                    begin.push(b);
                    end.push(total - b);
                }
                _ => {
                    let (pb, pe) = if self.auto_pad == "VALID" {
                        (0, 0)
                    } else {
                        (self.pads[d], self.pads[d + r])
                    };
                    let padded = i + pb + pe;
                    if padded < e {
                        return Err(invalid!(
                            "window extent {e} exceeds padded input size {padded} along spatial dim {d}"
                        ));
                    }
                    let mut o = if ceil_mode {
                        (padded - e).div_ceil(s) + 1
                    } else {
                        (padded - e) / s + 1
                    };
                    // The last window must start inside the input or the begin pad.
                    if ceil_mode && (o - 1) * s >= i + pb {
                        o -= 1;
                    }
                    out.push(o);
                    begin.push(pb);
                    end.push(pe);
                }
            }
        }
        Ok((out, begin, end))
    }
}

/// Output sizes, begin pads and end pads.
pub type Padded = (Vec<usize>, Vec<usize>, Vec<usize>);

/// Pads `v` at the front with `fill` to [`SD`] entries.
pub fn to3(v: &[usize], fill: usize) -> [usize; SD] {
    let mut o = [fill; SD];
    let off = SD - v.len().min(SD);
    for (k, x) in v.iter().take(SD).enumerate() {
        o[off + k] = *x;
    }
    o
}

/// A forward window geometry normalized to three spatial dims.
#[derive(Debug, Clone, Copy)]
pub struct Geom {
    /// Input sizes.
    pub input: [usize; SD],
    /// Output sizes.
    pub out: [usize; SD],
    /// Kernel sizes.
    pub kernel: [usize; SD],
    /// Strides.
    pub strides: [usize; SD],
    /// Dilations.
    pub dilations: [usize; SD],
    /// Begin pads.
    pub pad: [usize; SD],
    /// End pads.
    pub pad_end: [usize; SD],
}

impl Geom {
    /// Builds the geometry of a forward window op from attributes and input sizes.
    pub fn new(a: &WindowAttrs, input: &[usize], ceil_mode: bool) -> OpResult<(Geom, Vec<usize>)> {
        let (out, begin, end) = a.forward(input, ceil_mode)?;
        let g = Geom {
            input: to3(input, 1),
            out: to3(&out, 1),
            kernel: to3(&a.kernel, 1),
            strides: to3(&a.strides, 1),
            dilations: to3(&a.dilations, 1),
            pad: to3(&begin, 0),
            pad_end: to3(&end, 0),
        };
        Ok((g, out))
    }

    /// Elements of one input plane.
    pub fn in_len(&self) -> usize {
        self.input.iter().product()
    }

    /// Elements of one output plane.
    pub fn out_len(&self) -> usize {
        self.out.iter().product()
    }

    /// Kernel positions.
    pub fn k_len(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Input coordinate along dim `d` of output position `o` and kernel offset `k`
    /// (None when it falls into padding).
    #[inline]
    pub fn coord(&self, d: usize, o: usize, k: usize) -> Option<usize> {
        let x = (o * self.strides[d] + k * self.dilations[d]) as isize - self.pad[d] as isize;
        if x >= 0 && (x as usize) < self.input[d] {
            Some(x as usize)
        } else {
            None
        }
    }

    /// The output positions `lo..hi` along dim `d` whose input coordinate
    /// for kernel offset `k` lies inside the input.
    #[inline]
    pub fn valid_range(&self, d: usize, k: usize) -> (usize, usize) {
        let (s, p, i) = (self.strides[d], self.pad[d], self.input[d]);
        let kd = k * self.dilations[d];
        let lo = p.saturating_sub(kd).div_ceil(s);
        let hi = if i + p <= kd {
            0
        } else {
            (i + p - kd).div_ceil(s).min(self.out[d])
        };
        (lo.min(hi), hi)
    }
}
