//! Every fast kernel against its reference kernel, bit for bit, on random
//! edge shapes and extreme values, for every instruction-set path this CPU
//! has and at 1 and 2 threads.

use hb_bpu::fast::{
    self, ExecOptions, FastIn, FastOut, IntKind, Isa, PackOptions, PackedWeights, Scratch,
};
use hb_bpu::reference::conv::{conv, ConvParams};
use hb_bpu::reference::matmul::{gemm, matmul, GemmParams};
use hb_bpu::{QInt, QTensor, Requant, TensorRef};
use proptest::prelude::*;
use std::sync::OnceLock;

thread_local! {
    /// A scratch shared by the cases of a property test (see its use).
    static SHARED_SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::new());
}

/// Pools of 1 and 2 threads; the fast kernels split work over the pool
/// they run in.
fn pools() -> &'static [rayon::ThreadPool; 2] {
    static P: OnceLock<[rayon::ThreadPool; 2]> = OnceLock::new();
    P.get_or_init(|| {
        let mk = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        [mk(1), mk(2)]
    })
}

/// Parallel split even for tiny products.
const EXEC: ExecOptions = ExecOptions {
    min_parallel_macs: 0,
};

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
}

/// `n` values of `T`: mode 0 random, 1 all min, 2 all max, 3 random
/// extremes, 4 small.
fn values<T: QInt>(rng: &mut Rng, n: usize, mode: u8) -> Vec<T> {
    (0..n)
        .map(|_| {
            T::sat_i64(match mode {
                0 => rng.range(T::MIN, T::MAX),
                1 => T::MIN,
                2 => T::MAX,
                3 => {
                    if rng.next() & 1 == 0 {
                        T::MIN
                    } else {
                        T::MAX
                    }
                }
                _ => rng.range(-3, 3),
            })
        })
        .collect()
}

/// With `narrow`, values clamped to `[−256, 256]` (asymmetric-uint8
/// features stored as int16).
fn narrowed<T: QInt>(v: Vec<T>, narrow: bool) -> Vec<T> {
    if !narrow {
        return v;
    }
    v.into_iter()
        .map(|q| T::sat_i64(q.to_i64().clamp(-256, 256)))
        .collect()
}

/// Requantisations: mode 0 realistic ratios, 1 huge multipliers with
/// shifts 0..40, 2 random multipliers with shifts 0..80 (the i128 and
/// always-zero epilogue cases).
fn requants(rng: &mut Rng, n: usize, mode: u8) -> Vec<Requant> {
    (0..n)
        .map(|_| match mode {
            0 => {
                let r = (rng.range(1, 1 << 20) as f64) * 2f64.powi(-(rng.range(10, 40) as i32));
                let s = if rng.next() & 3 == 0 { -r } else { r };
                Requant::from_ratio(s).unwrap()
            }
            1 => {
                let m = if rng.next() & 1 == 0 {
                    i32::MAX
                } else {
                    -i32::MAX
                };
                Requant::new(m, rng.range(0, 40) as u32).unwrap()
            }
            _ => Requant::new(
                rng.range(-(i32::MAX as i64), i32::MAX as i64) as i32,
                rng.range(0, 80) as u32,
            )
            .unwrap(),
        })
        .collect()
}

/// Biases: mode 0 none, 1 small, 2 i32 extremes, 3 huge (±2^40).
fn biases(rng: &mut Rng, n: usize, mode: u8) -> Option<Vec<i64>> {
    match mode {
        0 => None,
        1 => Some((0..n).map(|_| rng.range(-5000, 5000)).collect()),
        2 => Some(
            (0..n)
                .map(|_| {
                    if rng.next() & 1 == 0 {
                        i64::from(i32::MIN)
                    } else {
                        i64::from(i32::MAX)
                    }
                })
                .collect(),
        ),
        _ => Some((0..n).map(|_| rng.range(-(1 << 40), 1 << 40)).collect()),
    }
}

/// A fused clamp inside `O`'s range: mode 0 none, 1 Relu, 2 random.
fn clamp_for<O: QInt>(rng: &mut Rng, mode: u8) -> Option<(i64, i64)> {
    match mode {
        0 => None,
        1 => Some((0, O::MAX)),
        _ => {
            let a = rng.range(O::MIN, O::MAX);
            let b = rng.range(O::MIN, O::MAX);
            Some((a.min(b), a.max(b)))
        }
    }
}

fn apply_clamp<O: QInt>(t: &QTensor<O>, c: Option<(i64, i64)>) -> Vec<O> {
    t.data
        .iter()
        .map(|&v| match c {
            Some((lo, hi)) => O::sat_i64(v.to_i64().clamp(lo, hi)),
            None => v,
        })
        .collect()
}

/// Runs `f(isa)` on every available path, at 1 and 2 threads, and checks
/// the result equals `want`.
fn every_path<O: QInt>(
    want: &[O],
    mut f: impl FnMut(Isa) -> hb_bpu::Result<Vec<O>>,
    what: &str,
) -> Result<(), TestCaseError> {
    for isa in Isa::available() {
        let got = f(isa).map_err(|e| TestCaseError::fail(format!("{what} {isa:?}: {e}")))?;
        prop_assert!(
            got == want,
            "{} on {:?} differs:\n got {:?}\nwant {:?}",
            what,
            isa,
            got,
            want
        );
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct ConvCase {
    rank: usize,
    n: usize,
    g: usize,
    cg: usize,
    mg: usize,
    kernel: [usize; 3],
    spatial: [usize; 3],
    stride: [usize; 3],
    dil: [usize; 3],
    pads: [usize; 6],
    seed: u64,
    modes: [u8; 5],
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        1usize..=3,
        1usize..=2,
        prop_oneof![Just(0usize), Just(1), Just(2), Just(3)],
        prop_oneof![1usize..=5, Just(8usize), Just(16)],
        prop_oneof![1usize..=3, 30usize..=36],
        [1usize..=3, 1usize..=3, 1usize..=3],
        [1usize..=8, 1usize..=8, 1usize..=4],
        [1usize..=3, 1usize..=3, 1usize..=2],
        [1usize..=2, 1usize..=2, 1usize..=2],
        [
            0usize..=2,
            0usize..=2,
            0usize..=1,
            0usize..=2,
            0usize..=2,
            0usize..=1,
        ],
        any::<u64>(),
        [0u8..5, 0u8..5, 0u8..3, 0u8..4, 0u8..3],
    )
        .prop_map(
            |(rank, n, gsel, cg, mg, kernel, spatial, stride, dil, pads, seed, modes)| {
                // gsel 0: one group; 1, 2: groups; 3: depthwise (C groups,
                // one channel each, channel multiplier 1 or 2).
                let (g, cg, mg) = match gsel {
                    0 => (1, cg, mg),
                    1 => (2, cg, mg.min(5)),
                    2 => (3, cg, mg.min(3)),
                    _ => (cg + 2, 1, 1 + (mg % 2)),
                };
                ConvCase {
                    rank,
                    n,
                    g,
                    cg,
                    mg,
                    kernel,
                    spatial,
                    stride,
                    dil,
                    pads,
                    seed,
                    modes,
                }
            },
        )
}

fn check_conv<X: FastIn, W: FastIn, O: FastOut>(c: &ConvCase) -> Result<(), TestCaseError> {
    check_conv_kind::<X, W, O>(c, false)
}

/// [`check_conv`]; with `narrow`, int16 activations limited to
/// `[−256, 256]` and weights packed as [`IntKind::I16Narrow`].
fn check_conv_kind<X: FastIn, W: FastIn, O: FastOut>(
    c: &ConvCase,
    narrow: bool,
) -> Result<(), TestCaseError> {
    let kind = if narrow { IntKind::I16Narrow } else { X::KIND };
    let r = c.rank;
    let mut p = ConvParams::new(r);
    let mut xs = vec![c.n, c.g * c.cg];
    let mut ws = vec![c.g * c.mg, c.cg];
    for i in 0..r {
        let k = if r == 3 {
            c.kernel[i].min(2)
        } else {
            c.kernel[i]
        };
        let span = c.dil[i] * (k - 1) + 1;
        let pb = c.pads[i].min(span - 1);
        let pe = c.pads[3 + i].min(span - 1);
        p.strides[i] = c.stride[i];
        p.dilations[i] = c.dil[i];
        p.pads[i] = pb;
        p.pads[r + i] = pe;
        // At least one window fits.
        xs.push(c.spatial[i].max(span.saturating_sub(pb + pe)).max(1));
        ws.push(k);
    }
    p.group = c.g;
    let m = c.g * c.mg;
    let mut rng = Rng(c.seed);
    let mut x: Vec<X> = narrowed(values(&mut rng, xs.iter().product(), c.modes[0]), narrow);
    if narrow && !c.seed.is_multiple_of(3) {
        // Asymmetric-uint8 features: `q − z` in `[−z, 255 − z]`.
        let z = (c.seed >> 8) as i64 % 256;
        for v in x.iter_mut() {
            *v = X::sat_i64(v.to_i64().clamp(-z, 255 - z));
        }
    }
    let x_span = x.iter().fold((0i64, 0i64), |(a, b), v| {
        (a.min(v.to_i64()), b.max(v.to_i64()))
    });
    let w: Vec<W> = values(&mut rng, ws.iter().product(), c.modes[1]);
    let rq = requants(
        &mut rng,
        if c.seed.is_multiple_of(5) { 1 } else { m },
        c.modes[2],
    );
    let bias = biases(&mut rng, m, c.modes[3]);
    let clamp = clamp_for::<O>(&mut rng, c.modes[4]);
    let xt = TensorRef::new(&x, &xs).unwrap();
    let wt = TensorRef::new(&w, &ws).unwrap();
    let want: QTensor<O> = conv(xt, wt, bias.as_deref(), &rq, &p).unwrap();
    let mut want_data = apply_clamp(&want, clamp);
    // Half the cases fold a second requantisation (per tensor or per
    // channel, then a clamp) into the epilogue: it must equal requantising
    // the conv's output.
    let then = c.seed.is_multiple_of(2).then(|| {
        let rq2 = requants(
            &mut rng,
            if c.seed.is_multiple_of(4) { 1 } else { m },
            c.modes[1] % 3,
        );
        let (lo2, hi2) = clamp_for::<O>(&mut rng, c.modes[3] % 3).unwrap_or((O::MIN, O::MAX));
        (rq2, lo2, hi2)
    });
    let then = then.filter(|(rq2, _, _)| rq2.iter().all(|r| r.shift() <= 62));
    if let Some((rq2, lo2, hi2)) = &then {
        let plane: usize = want.shape[2..].iter().product();
        for (i, v) in want_data.iter_mut().enumerate() {
            let r = rq2[if rq2.len() == 1 { 0 } else { (i / plane) % m }];
            *v = O::sat_i64(r.apply_fast::<O>(v.to_i64()).to_i64().clamp(*lo2, *hi2));
        }
    }
    every_path(
        &want_data,
        |isa| {
            let opts = PackOptions {
                isa: Some(isa),
                clamp,
            };
            let mut pw = PackedWeights::conv(wt, bias.as_deref(), &rq, &p, kind, &opts)?;
            if let Some((rq2, lo2, hi2)) = &then {
                assert!(pw.fold_requant(rq2, *lo2, *hi2));
            }
            if narrow && !pw.takes_narrow_range(x_span.0, x_span.1) {
                // A span the packing cannot offset into u8 is refused.
                let mut scratch = Scratch::new();
                assert!(fast::conv::<X, O>(&pw, xt, &mut scratch, &EXEC).is_err());
                return Ok(want_data.clone());
            }
            let mut out = Vec::new();
            for pool in pools() {
                let mut scratch = Scratch::new();
                let y: QTensor<O> = pool.install(|| fast::conv(&pw, xt, &mut scratch, &EXEC))?;
                assert_eq!(y.shape, want.shape);
                if !out.is_empty() && out != y.data {
                    return Err(hb_bpu::BpuError::Param("threads disagree".into()));
                }
                out = y.data;
            }
            // Channels-last operands: the same integers in the other order.
            if pw.conv_takes_channels_last() {
                let ys = fast::conv_out_shape(&pw, &xs)?;
                let x_cl = to_channels_last(&x, &xs);
                for (xl, yl) in [(true, false), (false, true), (true, true)] {
                    let xin = if xl { &x_cl } else { &x };
                    let mut y = vec![O::default(); ys.iter().product()];
                    let layout = fast::ConvLayout {
                        x_channels_last: xl,
                        y_channels_last: yl,
                    };
                    // One scratch for every case of the run: its cache of
                    // implicit-GEMM tables sees many geometries (hits,
                    // misses and evictions) and must never mix them up.
                    SHARED_SCRATCH.with(|s| {
                        fast::conv_into_layout(
                            &pw,
                            TensorRef::new(xin, &xs).unwrap(),
                            &mut y,
                            &mut s.borrow_mut(),
                            &EXEC,
                            layout,
                        )
                    })?;
                    let y = if yl { from_channels_last(&y, &ys) } else { y };
                    if y != out {
                        return Err(hb_bpu::BpuError::Param(format!("{layout:?} differs")));
                    }
                }
            }
            Ok(out)
        },
        &format!("conv {xs:?} * {ws:?} {p:?}"),
    )
}

/// `[N, C, S…]` row-major → `[N, S…, C]` row-major.
fn to_channels_last<T: Copy>(x: &[T], shape: &[usize]) -> Vec<T> {
    let (n, c) = (shape[0], shape[1]);
    let sp: usize = shape[2..].iter().product();
    let mut y = Vec::with_capacity(x.len());
    for b in 0..n {
        for i in 0..sp {
            for ch in 0..c {
                y.push(x[(b * c + ch) * sp + i]);
            }
        }
    }
    y
}

/// `[N, S…, C]` row-major → `[N, C, S…]` row-major.
fn from_channels_last<T: Copy>(y: &[T], shape: &[usize]) -> Vec<T> {
    let (n, c) = (shape[0], shape[1]);
    let sp: usize = shape[2..].iter().product();
    let mut x = Vec::with_capacity(y.len());
    for b in 0..n {
        for ch in 0..c {
            for i in 0..sp {
                x.push(y[(b * sp + i) * c + ch]);
            }
        }
    }
    x
}

#[derive(Debug, Clone)]
struct MmCase {
    batch_a: Vec<usize>,
    batch_b: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    one_d: u8,
    seed: u64,
    modes: [u8; 5],
}

fn mm_case() -> impl Strategy<Value = MmCase> {
    (
        prop_oneof![
            Just(vec![]),
            Just(vec![2]),
            Just(vec![2, 1]),
            Just(vec![1, 3])
        ],
        prop_oneof![Just(vec![]), Just(vec![2]), Just(vec![1]), Just(vec![2, 3])],
        prop_oneof![Just(1usize), 1usize..=20],
        prop_oneof![Just(1usize), 1usize..=70],
        prop_oneof![Just(1usize), 1usize..=70],
        0u8..8,
        any::<u64>(),
        [0u8..5, 0u8..5, 0u8..3, 0u8..4, 0u8..3],
    )
        .prop_map(|(batch_a, batch_b, m, k, n, one_d, seed, modes)| MmCase {
            batch_a,
            batch_b,
            m,
            k,
            n,
            one_d,
            seed,
            modes,
        })
}

fn check_matmul<X: FastIn, W: FastIn, O: FastOut>(c: &MmCase) -> Result<(), TestCaseError> {
    check_matmul_kind::<X, W, O>(c, false)
}

/// [`check_matmul`]; `narrow` as in [`check_conv_kind`].
fn check_matmul_kind<X: FastIn, W: FastIn, O: FastOut>(
    c: &MmCase,
    narrow: bool,
) -> Result<(), TestCaseError> {
    let kind = if narrow { IntKind::I16Narrow } else { X::KIND };
    // one_d 0: A is [K]; 1: B is [K]; else batched 2-D.
    let sa: Vec<usize> = if c.one_d == 0 {
        vec![c.k]
    } else {
        let mut s = c.batch_a.clone();
        s.extend([c.m, c.k]);
        s
    };
    let sb: Vec<usize> = if c.one_d == 1 {
        vec![c.k]
    } else {
        let mut s = c.batch_b.clone();
        s.extend([c.k, c.n]);
        s
    };
    let n = if c.one_d == 1 { 1 } else { c.n };
    let mut rng = Rng(c.seed);
    let a: Vec<X> = narrowed(values(&mut rng, sa.iter().product(), c.modes[0]), narrow);
    let b: Vec<W> = values(&mut rng, sb.iter().product(), c.modes[1]);
    let rq = requants(
        &mut rng,
        if c.seed.is_multiple_of(3) { 1 } else { n },
        c.modes[2],
    );
    let bias = biases(&mut rng, n, c.modes[3]);
    let clamp = clamp_for::<O>(&mut rng, c.modes[4]);
    let at = TensorRef::new(&a, &sa).unwrap();
    let bt = TensorRef::new(&b, &sb).unwrap();
    let want: QTensor<O> = match matmul(at, bt, bias.as_deref(), &rq) {
        Ok(w) => w,
        // Batch dims that do not broadcast: the fast kernel must refuse too.
        Err(_) => {
            for isa in Isa::available() {
                let opts = PackOptions {
                    isa: Some(isa),
                    clamp,
                };
                let pw = PackedWeights::matmul(bt, bias.as_deref(), &rq, kind, &opts).unwrap();
                let r: hb_bpu::Result<QTensor<O>> =
                    fast::matmul(&pw, at, &mut Scratch::new(), &EXEC);
                prop_assert!(r.is_err());
            }
            return Ok(());
        }
    };
    let want_data = apply_clamp(&want, clamp);
    every_path(
        &want_data,
        |isa| {
            let opts = PackOptions {
                isa: Some(isa),
                clamp,
            };
            let pw = PackedWeights::matmul(bt, bias.as_deref(), &rq, X::KIND, &opts)?;
            let mut out = Vec::new();
            for pool in pools() {
                let mut scratch = Scratch::new();
                let y: QTensor<O> = pool.install(|| fast::matmul(&pw, at, &mut scratch, &EXEC))?;
                assert_eq!(y.shape, want.shape);
                if !out.is_empty() && out != y.data {
                    return Err(hb_bpu::BpuError::Param("threads disagree".into()));
                }
                out = y.data;
            }
            Ok(out)
        },
        &format!("matmul {sa:?} x {sb:?}"),
    )
}

fn check_gemm<X: FastIn, W: FastIn, O: FastOut>(
    c: &MmCase,
    ta: bool,
    tb: bool,
    c_mode: u8,
) -> Result<(), TestCaseError> {
    let (m, k, n) = (c.m, c.k, c.n);
    let sa = if ta { vec![k, m] } else { vec![m, k] };
    let sb = if tb { vec![n, k] } else { vec![k, n] };
    let mut rng = Rng(c.seed);
    let a: Vec<X> = values(&mut rng, m * k, c.modes[0]);
    let b: Vec<W> = values(&mut rng, k * n, c.modes[1]);
    let rq = requants(
        &mut rng,
        if c.seed.is_multiple_of(3) { 1 } else { n },
        c.modes[2],
    );
    let cs: Vec<usize> = match c_mode {
        0 => vec![],
        1 => vec![n],
        2 => vec![1, n],
        3 => vec![m, n],
        4 => vec![m, 1],
        _ => vec![1],
    };
    let cv: Vec<i64> = (0..cs.iter().product::<usize>())
        .map(|_| rng.range(-(1 << 33), 1 << 33))
        .collect();
    let ct = if c_mode == 0 {
        None
    } else {
        Some(TensorRef::new(&cv, &cs).unwrap())
    };
    let clamp = clamp_for::<O>(&mut rng, c.modes[4]);
    let gp = GemmParams {
        trans_a: ta,
        trans_b: tb,
    };
    let at = TensorRef::new(&a, &sa).unwrap();
    let bt = TensorRef::new(&b, &sb).unwrap();
    let want: QTensor<O> = gemm(at, bt, ct, &rq, gp).unwrap();
    let want_data = apply_clamp(&want, clamp);
    every_path(
        &want_data,
        |isa| {
            let opts = PackOptions {
                isa: Some(isa),
                clamp,
            };
            let pw = PackedWeights::gemm(bt, ct, &rq, gp, X::KIND, &opts)?;
            let mut out = Vec::new();
            for pool in pools() {
                let mut scratch = Scratch::new();
                let y: QTensor<O> = pool.install(|| fast::gemm(&pw, at, &mut scratch, &EXEC))?;
                assert_eq!(y.shape, want.shape);
                if !out.is_empty() && out != y.data {
                    return Err(hb_bpu::BpuError::Param("threads disagree".into()));
                }
                out = y.data;
            }
            Ok(out)
        },
        &format!("gemm {sa:?} x {sb:?} C {cs:?}"),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn conv_i8_i8(c in conv_case(), o in 0u8..3) {
        match o {
            0 => check_conv::<i8, i8, i8>(&c)?,
            1 => check_conv::<i8, i8, i16>(&c)?,
            _ => check_conv::<i8, i8, i32>(&c)?,
        }
    }

    #[test]
    fn conv_int16(c in conv_case(), t in 0u8..3) {
        match t {
            0 => check_conv::<i16, i16, i16>(&c)?,
            1 => check_conv::<i16, i8, i32>(&c)?,
            _ => check_conv::<i8, i16, i8>(&c)?,
        }
    }

    #[test]
    fn conv_int16_narrow(c in conv_case(), t in 0u8..3) {
        match t {
            0 => check_conv_kind::<i16, i8, i8>(&c, true)?,
            1 => check_conv_kind::<i16, i16, i16>(&c, true)?,
            _ => check_conv_kind::<i16, i8, i32>(&c, true)?,
        }
    }

    #[test]
    fn matmul_int16_narrow(c in mm_case(), t in 0u8..3) {
        match t {
            0 => check_matmul_kind::<i16, i8, i8>(&c, true)?,
            1 => check_matmul_kind::<i16, i16, i16>(&c, true)?,
            _ => check_matmul_kind::<i16, i8, i32>(&c, true)?,
        }
    }

    #[test]
    fn matmul_all_types(c in mm_case(), t in 0u8..5) {
        match t {
            0 => check_matmul::<i8, i8, i8>(&c)?,
            1 => check_matmul::<i8, i8, i32>(&c)?,
            2 => check_matmul::<i16, i16, i16>(&c)?,
            3 => check_matmul::<i16, i8, i32>(&c)?,
            _ => check_matmul::<i8, i16, i16>(&c)?,
        }
    }

    #[test]
    fn gemm_all_types(c in mm_case(), ta in any::<bool>(), tb in any::<bool>(),
                      cm in 0u8..6, t in 0u8..3) {
        match t {
            0 => check_gemm::<i8, i8, i8>(&c, ta, tb, cm)?,
            1 => check_gemm::<i16, i16, i32>(&c, ta, tb, cm)?,
            _ => check_gemm::<i8, i8, i32>(&c, ta, tb, cm)?,
        }
    }
}

/// Long K with int16 extremes: many K-blocks, and the i64 fallback when a
/// weight is −32768.
#[test]
fn int16_long_k_blocks_and_i64_fallback() {
    for (k, wmin) in [(1000usize, false), (301, true), (70_000, false)] {
        let (m, n) = (3usize, 5usize);
        let a = vec![i16::MIN; m * k];
        let mut b = vec![i16::MIN + 1; k * n];
        if wmin {
            b[7] = i16::MIN;
        }
        b[3] = i16::MAX;
        let rq = [Requant::IDENTITY];
        let (sa, sb) = ([m, k], [k, n]);
        let at = TensorRef::new(&a, &sa).unwrap();
        let bt = TensorRef::new(&b, &sb).unwrap();
        let want: QTensor<i32> = matmul(at, bt, None, &rq).unwrap();
        for isa in Isa::available() {
            let opts = PackOptions {
                isa: Some(isa),
                clamp: None,
            };
            let pw = PackedWeights::matmul(bt, None, &rq, IntKind::I16, &opts).unwrap();
            let got: QTensor<i32> =
                fast::matmul(&pw, at, &mut Scratch::new(), &ExecOptions::default()).unwrap();
            assert_eq!(got, want, "k {k} {isa:?}");
        }
    }
}

/// int8 × int8 with K beyond one i32 block (2^31 / (128 · 127) ≈ 132 000).
#[test]
fn int8_k_beyond_one_block() {
    let (m, k, n) = (2usize, 140_000usize, 3usize);
    let a = vec![-128i8; m * k];
    let b = vec![-128i8; k * n];
    let rq = [Requant::new(1 << 30, 40).unwrap()];
    let (sa, sb) = ([m, k], [k, n]);
    let at = TensorRef::new(&a, &sa).unwrap();
    let bt = TensorRef::new(&b, &sb).unwrap();
    let want: QTensor<i32> = matmul(at, bt, Some(&[5, -5, 0]), &rq).unwrap();
    for isa in Isa::available() {
        let opts = PackOptions {
            isa: Some(isa),
            clamp: None,
        };
        let pw = PackedWeights::matmul(bt, Some(&[5, -5, 0]), &rq, IntKind::I8, &opts).unwrap();
        let got: QTensor<i32> =
            fast::matmul(&pw, at, &mut Scratch::new(), &ExecOptions::default()).unwrap();
        assert_eq!(got, want, "{isa:?}");
    }
}

/// Bad shapes and parameters are errors, never panics.
#[test]
fn bad_inputs_are_errors() {
    let w = [1i8; 2 * 3 * 3 * 3];
    let wt = TensorRef::new(&w, &[2, 3, 3, 3]).unwrap();
    let p = ConvParams::new(2);
    let o = PackOptions::default();
    let rq = [Requant::IDENTITY];
    assert!(PackedWeights::conv(wt, Some(&[1]), &rq, &p, IntKind::I8, &o).is_err());
    assert!(PackedWeights::conv(wt, None, &[rq[0]; 3], &p, IntKind::I8, &o).is_err());
    assert!(PackedWeights::conv(wt, None, &rq, &ConvParams::new(1), IntKind::I8, &o).is_err());
    let mut p3 = ConvParams::new(2);
    p3.group = 4;
    assert!(PackedWeights::conv(wt, None, &rq, &p3, IntKind::I8, &o).is_err());
    let bad_clamp = PackOptions {
        isa: None,
        clamp: Some((5, 1)),
    };
    assert!(PackedWeights::conv(wt, None, &rq, &p, IntKind::I8, &bad_clamp).is_err());
    let pw = PackedWeights::conv(wt, None, &rq, &p, IntKind::I8, &o).unwrap();
    let mut s = Scratch::new();
    let e = ExecOptions::default();
    // Wrong channels, too small, wrong rank, wrong activation type, wrong
    // output buffer, wrong op.
    let x = [0i8; 2 * 5 * 5];
    let r: hb_bpu::Result<QTensor<i8>> =
        fast::conv(&pw, TensorRef::new(&x, &[1, 2, 5, 5]).unwrap(), &mut s, &e);
    assert!(r.is_err());
    let x = [0i8; 3 * 2 * 2];
    let r: hb_bpu::Result<QTensor<i8>> =
        fast::conv(&pw, TensorRef::new(&x, &[1, 3, 2, 2]).unwrap(), &mut s, &e);
    assert!(r.is_err());
    let r: hb_bpu::Result<QTensor<i8>> =
        fast::conv(&pw, TensorRef::new(&x, &[3, 2, 2]).unwrap(), &mut s, &e);
    assert!(r.is_err());
    let x16 = [0i16; 3 * 3 * 3];
    let r: hb_bpu::Result<QTensor<i8>> = fast::conv(
        &pw,
        TensorRef::new(&x16, &[1, 3, 3, 3]).unwrap(),
        &mut s,
        &e,
    );
    assert!(r.is_err());
    let x = [0i8; 3 * 3 * 3];
    let mut out = [0i8; 3];
    assert!(fast::conv_into(
        &pw,
        TensorRef::new(&x, &[1, 3, 3, 3]).unwrap(),
        &mut out,
        &mut s,
        &e
    )
    .is_err());
    let r: hb_bpu::Result<QTensor<i8>> =
        fast::matmul(&pw, TensorRef::new(&x, &[27]).unwrap(), &mut s, &e);
    assert!(r.is_err());
    // A clamp that misses the output type.
    let hi_clamp = PackOptions {
        isa: None,
        clamp: Some((1000, 2000)),
    };
    let pw = PackedWeights::conv(wt, None, &rq, &p, IntKind::I8, &hi_clamp).unwrap();
    let r: hb_bpu::Result<QTensor<i8>> =
        fast::conv(&pw, TensorRef::new(&x, &[1, 3, 3, 3]).unwrap(), &mut s, &e);
    assert!(r.is_err());
    // MatMul / Gemm shape errors.
    let b = [1i8; 6];
    let bt = TensorRef::new(&b, &[2, 3]).unwrap();
    assert!(PackedWeights::matmul(bt, Some(&[1, 2]), &rq, IntKind::I8, &o).is_err());
    let pw = PackedWeights::matmul(bt, None, &rq, IntKind::I8, &o).unwrap();
    let a = [1i8; 3];
    let r: hb_bpu::Result<QTensor<i8>> =
        fast::matmul(&pw, TensorRef::new(&a, &[1, 3]).unwrap(), &mut s, &e);
    assert!(r.is_err());
    let c = [1i64; 6];
    let ct = TensorRef::new(&c, &[3, 2]).unwrap();
    let gp = GemmParams::default();
    assert!(PackedWeights::gemm(bt, Some(ct), &rq, gp, IntKind::I8, &o).is_err());
    let c2 = TensorRef::new(&c[..6], &[2, 3]).unwrap();
    let pw = PackedWeights::gemm(bt, Some(c2), &rq, gp, IntKind::I8, &o).unwrap();
    let a = [1i8; 4];
    let r: hb_bpu::Result<QTensor<i8>> =
        fast::gemm(&pw, TensorRef::new(&a[..2], &[1, 2]).unwrap(), &mut s, &e);
    assert!(r.is_err(), "C rows must match M");
    let r: hb_bpu::Result<QTensor<i8>> =
        fast::gemm(&pw, TensorRef::new(&a, &[2, 2]).unwrap(), &mut s, &e);
    assert!(r.is_ok());
}

/// Narrow packing refuses activations outside `[−256, 256]`.
#[test]
fn narrow_packing_checks_the_range() {
    let b = vec![1i8; 4 * 2];
    let bt = TensorRef::new(&b, &[4, 2]).unwrap();
    let pw = PackedWeights::matmul(
        bt,
        None,
        &[Requant::IDENTITY],
        IntKind::I16Narrow,
        &PackOptions::default(),
    )
    .unwrap();
    let ok = [256i16, -256, 0, 1];
    let bad = [257i16, 0, 0, 0];
    let mut s = Scratch::new();
    let e = ExecOptions::default();
    let y: QTensor<i32> =
        fast::matmul(&pw, TensorRef::new(&ok, &[1, 4]).unwrap(), &mut s, &e).unwrap();
    assert_eq!(y.data, vec![1, 1]);
    assert!(
        fast::matmul::<i16, i32>(&pw, TensorRef::new(&bad, &[1, 4]).unwrap(), &mut s, &e).is_err()
    );
}
