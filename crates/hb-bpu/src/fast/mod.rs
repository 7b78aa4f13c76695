//! The optimised integer kernels of the runtime (Conv, MatMul, Gemm), bit
//! for bit equal to the [`crate::reference`] kernels
//! (docs/integer-semantics.md §4, §5).
//!
//! - [`PackedWeights`] is made once per weighted node: the constant weights
//!   in the layout the micro-kernel of the chosen [`Isa`] reads, the bias,
//!   the per-channel [`crate::Requant`] folded into an epilogue table, the
//!   column sums of the unsigned-activation trick of `VPDPBUSD`, and the
//!   K-blocking that keeps every i32 partial sum exact.
//! - [`conv_into`], [`matmul_into`] and [`gemm_into`] run a packed node on
//!   a caller-provided output slice and [`Scratch`] (no allocation after the
//!   first call of a given size); [`conv`], [`matmul`] and [`gemm`] are
//!   allocating conveniences.
//! - Three instruction-set paths: portable scalar code, AVX2 (`vpmaddwd` on
//!   sign-extended i16, exact) and AVX-512 VNNI (`vpdpbusd` for int8,
//!   `vpdpwssd` for int16). [`Isa::detect`] picks the best one the CPU has;
//!   [`PackOptions::isa`] forces one (tests run every path).
//! - Work is split over the ambient rayon pool when it is large enough
//!   ([`ExecOptions::min_parallel_macs`]); run inside
//!   `ThreadPool::install` to choose the thread count.
//!
//! Exactness: the products are summed in i32 in K-blocks small enough that
//! no block sum can leave the i32 range for any activation of the declared
//! type (wrapping arithmetic inside a block is then exact modulo 2^32, which
//! is what makes the `+128` trick and `vpmaddwd`'s one overflowing pair
//! harmless); blocks are widened to i64 when there is more than one. int16
//! activations run as two GEMMs on `x >> 8` and `x & 255` combined in i64
//! as `256 · hi + lo`, so a block holds ≥ 256 K-steps even for full-range
//! int16 weights. Convs with one input channel per group (depthwise) use a
//! direct kernel (i32 sums when `max|x| · Σ|w| < 2^31`, else i64). The
//! epilogue adds the bias in i64 and requantises in i64 when a static bound
//! proves `|acc · M| + 2^(n−1) < 2^63`, otherwise in i128 exactly as
//! [`crate::Requant::apply_wide`].

mod depthwise;
mod driver;
mod kernels;
mod ops;
mod pack;

pub use ops::{
    conv, conv_into, conv_into_layout, conv_out_shape, gemm, gemm_into, matmul, matmul_into,
    matmul_out_shape, ConvLayout,
};
pub use pack::PackedWeights;

use crate::qint::QInt;

/// An instruction-set path of the fast kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust (i32 sums in K-blocks, no intrinsics).
    Scalar,
    /// x86-64 AVX2: `vpmaddwd` on sign-extended i16 operands.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/DQ + VNNI: `vpdpbusd` (int8 × int8 with the
    /// unsigned-activation trick) and `vpdpwssd` (int16).
    Avx512Vnni,
}

impl Isa {
    /// Every path, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni];

    /// Whether this CPU can run the path (checked at run time).
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest path this CPU has.
    pub fn detect() -> Isa {
        *Isa::ALL
            .iter()
            .rev()
            .find(|i| i.is_available())
            .unwrap_or(&Isa::Scalar)
    }

    /// The paths this CPU has, slowest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// A short name (`scalar`, `avx2`, `avx512-vnni`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512-vnni",
        }
    }
}

/// The integer type of a fast-kernel operand (activations or weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntKind {
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i16` storage whose values are known to lie in `[−256, 256]` (the
    /// asymmetric-uint8 features of docs/integer-semantics.md §1): one
    /// int16 GEMM instead of the `x >> 8` / `x & 255` pair, single
    /// K-blocks. The `*_into` calls check the range and refuse other data.
    I16Narrow,
}

impl IntKind {
    /// Largest magnitude of a value of this type (128 or 32768).
    pub fn max_abs(self) -> i64 {
        match self {
            IntKind::I8 => 128,
            IntKind::I16 => 32768,
            IntKind::I16Narrow => 256,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i8 {}
    impl Sealed for i16 {}
    impl Sealed for i32 {}
}

/// An operand type the fast kernels take (`i8`, `i16`).
pub trait FastIn: QInt + sealed::Sealed {
    /// The matching [`IntKind`].
    const KIND: IntKind;
    /// Widens to i16 (exact).
    fn to_i16(self) -> i16;
    /// The smallest and largest of the values and 0.
    fn value_range(x: &[Self]) -> (i64, i64);
}

impl FastIn for i8 {
    const KIND: IntKind = IntKind::I8;
    #[inline]
    fn to_i16(self) -> i16 {
        i16::from(self)
    }
    fn value_range(x: &[i8]) -> (i64, i64) {
        let (lo, hi) = x.iter().fold((0i8, 0i8), |(a, b), &v| (a.min(v), b.max(v)));
        (i64::from(lo), i64::from(hi))
    }
}

impl FastIn for i16 {
    const KIND: IntKind = IntKind::I16;
    #[inline]
    fn to_i16(self) -> i16 {
        self
    }
    fn value_range(x: &[i16]) -> (i64, i64) {
        let (lo, hi) = i16_range(x);
        (i64::from(lo), i64::from(hi))
    }
}

/// Smallest and largest value of `x` (`(0, 0)` when empty); AVX2 copy
/// chosen at run time.
pub fn i16_range(x: &[i16]) -> (i16, i16) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected at run time.
        return unsafe { i16_range_avx2(x) };
    }
    i16_range_body(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn i16_range_avx2(x: &[i16]) -> (i16, i16) {
    i16_range_body(x)
}

#[inline(always)]
fn i16_range_body(x: &[i16]) -> (i16, i16) {
    let (mut lo, mut hi) = (0i16, 0i16);
    for &v in x {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo, hi)
}

/// An output type the fast kernels write (`i8`, `i16`, `i32`).
pub trait FastOut: QInt + sealed::Sealed {
    /// Narrows a value already known to be in range.
    fn from_i32_in_range(v: i32) -> Self;
}

impl FastOut for i8 {
    #[inline]
    fn from_i32_in_range(v: i32) -> Self {
        v as i8
    }
}

impl FastOut for i16 {
    #[inline]
    fn from_i32_in_range(v: i32) -> Self {
        v as i16
    }
}

impl FastOut for i32 {
    #[inline]
    fn from_i32_in_range(v: i32) -> Self {
        v
    }
}

/// How a [`PackedWeights`] is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackOptions {
    /// The instruction-set path (`None`: [`Isa::detect`]). Forcing a path
    /// the CPU lacks is an [`crate::BpuError::Unsupported`] error.
    pub isa: Option<Isa>,
    /// A fused Relu / Clip: the output is `clamp(sat(y), lo, hi)` with
    /// integer bounds at the output scale (§4, §7). The bounds must meet the
    /// output type's range.
    pub clamp: Option<(i64, i64)>,
}

/// How a fast kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOptions {
    /// Products with fewer multiply-accumulates than this run on the calling
    /// thread; larger ones are split over the current rayon pool (when it
    /// has more than one thread).
    pub min_parallel_macs: u64,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            min_parallel_macs: 1 << 20,
        }
    }
}

/// Reusable working memory of the fast kernels (packed activations, the
/// padded input of a convolution, index tables). Keep one per thread of
/// inference and pass it to every call: after the largest call it no
/// longer allocates.
#[derive(Debug, Default)]
pub struct Scratch {
    pub(crate) a_u8: Vec<u8>,
    pub(crate) a_i16: Vec<i16>,
    pub(crate) pad_u8: Vec<u8>,
    pub(crate) pad_i16: Vec<i16>,
    pub(crate) idx_a: Vec<usize>,
    pub(crate) idx_b: Vec<usize>,
    pub(crate) taps: Vec<usize>,
    pub(crate) jobs: Vec<driver::Job>,
    pub(crate) plane: Vec<i32>,
    pub(crate) corr: Vec<i32>,
    /// Implicit-GEMM tables of recent conv geometries (a model's convs
    /// repeat a few geometries; rebuilding them per call cost ~4 % of a
    /// small CNN's run).
    pub(crate) implicit: Vec<ops::ImplicitTables>,
}

impl Scratch {
    /// An empty scratch (allocates on first use).
    pub fn new() -> Scratch {
        Scratch::default()
    }
}

/// A piece of portable code to run in a copy compiled for an ISA (see
/// [`on_isa`]); implement `run` with `#[inline(always)]` and have it call
/// `#[inline(always)]` functions, so the whole body is compiled inside the
/// copy.
pub(crate) trait IsaTask {
    /// The result.
    type Out;
    /// Does the work.
    fn run(self) -> Self::Out;
}

/// Runs `t` from a copy compiled for `isa`'s vector extension (AVX-512 or
/// AVX2; the crate itself targets baseline x86-64), so the portable loops
/// it inlines vectorise with it. The same code, so the same results.
/// `isa` must be available on this CPU (packed weights guarantee it).
pub(crate) fn on_isa<T: IsaTask>(isa: Isa, t: T) -> T::Out {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
        unsafe fn wide<T: IsaTask>(t: T) -> T::Out {
            t.run()
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<T: IsaTask>(t: T) -> T::Out {
            t.run()
        }
        match isa {
            // SAFETY: `isa` was checked available when the weights were
            // packed.
            Isa::Avx512Vnni => return unsafe { wide(t) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { avx2(t) },
            Isa::Scalar => {}
        }
    }
    t.run()
}

/// Resizes `v` to `n` elements without shrinking its capacity.
pub(crate) fn ensure<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}
