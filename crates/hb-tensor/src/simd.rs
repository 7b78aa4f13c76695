//! Run-time dispatch of vectorised loops to the widest x86 vector unit
//! the CPU has ([`multiversion!`](crate::multiversion)); every crate of the
//! workspace uses it (hb-float re-exports it).

/// Defines a function compiled three times: for the baseline target, with
/// AVX2 + FMA enabled (8-wide vectors for the auto-vectorised loops) and
/// with AVX-512 F/BW/DQ/VL (16-wide), picking the widest the CPU has at run
/// time. The versions compute bit-identical results: Rust never contracts
/// `a * b + c` into an FMA on its own, and a loop only vectorises where the
/// code spells out independent lanes, so only the vector width differs.
///
/// The body must be safe code; the `unsafe` blocks are the calls of the
/// `#[target_feature]` copies, whose only requirement (the CPU supports the
/// features) is checked just before.
#[macro_export]
#[doc(hidden)]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn widest($($arg: $ty),*) $(-> $ret)? $body
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: `widest` only requires the features just
                    // detected on the running CPU.
                    return unsafe { widest($($arg),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                fn wide($($arg: $ty),*) $(-> $ret)? $body
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: `wide` only requires AVX2 and FMA, which the
                    // running CPU was just detected to support.
                    return unsafe { wide($($arg),*) };
                }
            }
            fn base($($arg: $ty),*) $(-> $ret)? $body
            base($($arg),*)
        }
    };
}

/// Adds the lanes of `acc` pairwise, halving the width each step (a fixed
/// tree, so the order is deterministic); `N` is a power of two.
#[inline(always)]
pub fn pairwise_sum<T: Copy + std::ops::AddAssign, const N: usize>(mut acc: [T; N]) -> T {
    let mut w = N / 2;
    while w > 0 {
        for i in 0..w {
            let v = acc[i + w];
            acc[i] += v;
        }
        w /= 2;
    }
    acc[0]
}
