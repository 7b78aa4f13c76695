//! Throughput of the fast integer kernels per instruction-set path, against
//! the machine's measured VNNI peak.
//!
//! `cargo run --release -p hb-bpu --example int_gemm_bench`

use hb_bpu::fast::{self, ExecOptions, IntKind, Isa, PackOptions, PackedWeights, Scratch};
use hb_bpu::reference::conv::ConvParams;
use hb_bpu::{Requant, TensorRef};
use std::time::Instant;

/// Median seconds per call of `f` (each sample ≥ 20 ms).
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    let mut reps = 0u32;
    while t0.elapsed().as_secs_f64() < 0.02 {
        f();
        reps += 1;
    }
    let mut samples: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / f64::from(reps)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn pseudo(n: usize, seed: u32, lo: i32, hi: i32) -> Vec<i32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            lo + (s % (hi - lo + 1) as u32) as i32
        })
        .collect()
}

/// Peak of a register-only `vpdpbusd` loop: 2 · 64 · 12 int8 ops per
/// iteration (12 independent zmm accumulators).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn vnni_peak_loop(iters: u64) -> i32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_epi32(0x0102_0304);
    let b = _mm512_set1_epi32(0x0101_0101);
    let mut acc = [_mm512_setzero_si512(); 12];
    let (a, b) = std::hint::black_box((a, b));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbusd_epi32(*v, a, b);
        }
    }
    let mut s = _mm512_setzero_si512();
    for v in acc {
        s = _mm512_add_epi32(s, v);
    }
    _mm512_reduce_add_epi32(s)
}

/// Peak of a register-only AVX2 `vpmaddwd` + `vpaddd` loop: 2 · 16 · 12 ops
/// per iteration.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2_peak_loop(iters: u64) -> i32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_epi32(0x0001_0002);
    let b = _mm256_set1_epi32(0x0003_0004);
    let mut acc = [_mm256_setzero_si256(); 12];
    let (a, b) = std::hint::black_box((a, b));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            // A fresh product per accumulator so it is not hoisted.
            *v = _mm256_add_epi32(*v, _mm256_madd_epi16(a, *v));
            *v = _mm256_add_epi32(*v, b);
        }
    }
    let mut s = _mm256_setzero_si256();
    for v in acc {
        s = _mm256_add_epi32(s, v);
    }
    _mm256_extract_epi32::<0>(s)
}

fn main() {
    // Optional filter: only cases whose label contains this string.
    let filter = std::env::args().nth(1).unwrap_or_default();
    let want = |label: &str| label.contains(filter.as_str());
    let exec = ExecOptions::default();
    let pools: Vec<rayon::ThreadPool> = [1usize, 2]
        .iter()
        .map(|&n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        })
        .collect();
    println!("paths on this CPU: {:?}", Isa::available());

    #[cfg(target_arch = "x86_64")]
    {
        let iters = 20_000_000u64;
        if Isa::Avx512Vnni.is_available() && want("peak") {
            // SAFETY: AVX-512 F/BW/VNNI checked just above.
            let s = time(|| {
                std::hint::black_box(unsafe { vnni_peak_loop(std::hint::black_box(iters / 100)) });
            });
            let ops = (iters / 100) as f64 * 12.0 * 64.0 * 2.0;
            println!("peak vpdpbusd zmm (1 thread): {:.1} GOP/s", ops / s / 1e9);
        }
        if Isa::Avx2.is_available() && want("peak") {
            // SAFETY: AVX2 checked just above.
            let s = time(|| {
                std::hint::black_box(unsafe { avx2_peak_loop(std::hint::black_box(iters / 100)) });
            });
            let ops = (iters / 100) as f64 * 12.0 * 16.0 * 2.0;
            println!(
                "peak vpmaddwd+vpaddd ymm (1 thread): {:.1} GOP/s",
                ops / s / 1e9
            );
        }
    }

    // int8 GEMM M=64, N=1024, K=576 (MatMul, constant B).
    for (kind, label) in [(IntKind::I8, "int8"), (IntKind::I16, "int16")] {
        let (m, k, n) = (64usize, 576usize, 1024usize);
        let a8: Vec<i8> = pseudo(m * k, 1, -128, 127)
            .iter()
            .map(|&v| v as i8)
            .collect();
        let b8: Vec<i8> = pseudo(k * n, 2, -127, 127)
            .iter()
            .map(|&v| v as i8)
            .collect();
        let a16: Vec<i16> = pseudo(m * k, 3, -32768, 32767)
            .iter()
            .map(|&v| v as i16)
            .collect();
        let b16: Vec<i16> = pseudo(k * n, 4, -32767, 32767)
            .iter()
            .map(|&v| v as i16)
            .collect();
        let rq: Vec<Requant> = (0..n)
            .map(|j| Requant::from_ratio(1e-4 * (1.0 + j as f64 / n as f64)).unwrap())
            .collect();
        let bias: Vec<i64> = pseudo(n, 5, -1000, 1000)
            .iter()
            .map(|&v| i64::from(v))
            .collect();
        let (sa, sb) = ([m, k], [k, n]);
        for isa in Isa::available() {
            if !want(&format!("{label} gemm {}", isa.name())) {
                continue;
            }
            let opts = PackOptions {
                isa: Some(isa),
                clamp: None,
            };
            let pw = match kind {
                IntKind::I8 => PackedWeights::matmul(
                    TensorRef::new(&b8, &sb).unwrap(),
                    Some(&bias),
                    &rq,
                    kind,
                    &opts,
                ),
                IntKind::I16 | IntKind::I16Narrow => PackedWeights::matmul(
                    TensorRef::new(&b16, &sb).unwrap(),
                    Some(&bias),
                    &rq,
                    kind,
                    &opts,
                ),
            }
            .unwrap();
            for (ti, pool) in pools.iter().enumerate() {
                let mut scratch = Scratch::new();
                let mut out8 = vec![0i8; m * n];
                let mut out16 = vec![0i16; m * n];
                let s = pool.install(|| {
                    time(|| match kind {
                        IntKind::I8 => fast::matmul_into(
                            &pw,
                            TensorRef::new(&a8, &sa).unwrap(),
                            &mut out8,
                            &mut scratch,
                            &exec,
                        )
                        .unwrap(),
                        IntKind::I16 | IntKind::I16Narrow => fast::matmul_into(
                            &pw,
                            TensorRef::new(&a16, &sa).unwrap(),
                            &mut out16,
                            &mut scratch,
                            &exec,
                        )
                        .unwrap(),
                    })
                });
                let ops = 2.0 * (m * n * k) as f64;
                println!(
                    "{label} gemm {m}x{k}x{n} {:<12} {} thr: {:8.1} us  {:6.1} GOP/s",
                    isa.name(),
                    ti + 1,
                    s * 1e6,
                    ops / s / 1e9
                );
            }
        }
    }

    // Small convs (int8): 16→16 3×3 on 16×16 (pad 1), 64→64 3×3 on 28×28,
    // depthwise 32 3×3 on 32×32, 1×1 64→128 on 28×28.
    let convs: [(&str, usize, usize, usize, usize, usize); 4] = [
        ("16->16 3x3 16x16", 16, 16, 3, 16, 1),
        ("64->64 3x3 28x28", 64, 64, 3, 28, 1),
        ("dw32 3x3 32x32", 32, 32, 3, 32, 32),
        ("64->128 1x1 28x28", 64, 128, 1, 28, 1),
    ];
    for (name, c, mo, kk, hw, g) in convs {
        let x: Vec<i8> = pseudo(c * hw * hw, 7, -128, 127)
            .iter()
            .map(|&v| v as i8)
            .collect();
        let w: Vec<i8> = pseudo(mo * (c / g) * kk * kk, 8, -127, 127)
            .iter()
            .map(|&v| v as i8)
            .collect();
        let rq: Vec<Requant> = (0..mo)
            .map(|j| Requant::from_ratio(2e-3 * (1.0 + j as f64 / mo as f64)).unwrap())
            .collect();
        let mut p = ConvParams::new(2);
        let pad = kk / 2;
        p.pads = vec![pad; 4];
        p.group = g;
        let (xs, ws) = ([1, c, hw, hw], [mo, c / g, kk, kk]);
        let macs = (mo * hw * hw * (c / g) * kk * kk) as f64;
        for isa in Isa::available() {
            if !want(&format!("int8 conv {name} {}", isa.name())) {
                continue;
            }
            let opts = PackOptions {
                isa: Some(isa),
                clamp: Some((0, 127)),
            };
            let pw = PackedWeights::conv(
                TensorRef::new(&w, &ws).unwrap(),
                None,
                &rq,
                &p,
                IntKind::I8,
                &opts,
            )
            .unwrap();
            for (ti, pool) in pools.iter().enumerate() {
                let mut scratch = Scratch::new();
                let mut out = vec![0i8; mo * hw * hw];
                let s = pool.install(|| {
                    time(|| {
                        fast::conv_into(
                            &pw,
                            TensorRef::new(&x, &xs).unwrap(),
                            &mut out,
                            &mut scratch,
                            &exec,
                        )
                        .unwrap()
                    })
                });
                println!(
                    "int8 conv {name:<18} {:<12} {} thr: {:8.1} us  {:6.1} GOP/s",
                    isa.name(),
                    ti + 1,
                    s * 1e6,
                    2.0 * macs / s / 1e9
                );
            }
        }
    }
}
