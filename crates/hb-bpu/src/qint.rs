//! The integer storage types of the machine.

use std::fmt::Debug;

/// An integer storage type (`i8`, `i16`, `i32`): its range and saturating
/// conversions from the wide intermediate types.
pub trait QInt: Copy + Default + Debug + Ord + Send + Sync + 'static {
    /// Smallest value.
    const MIN: i64;
    /// Largest value.
    const MAX: i64;
    /// Type name for messages.
    const NAME: &'static str;
    /// Widens to i64 (exact).
    fn to_i64(self) -> i64;
    /// Narrows an i64, saturating to `[MIN, MAX]`.
    fn sat_i64(v: i64) -> Self;
    /// Narrows an i128, saturating to `[MIN, MAX]`.
    fn sat_i128(v: i128) -> Self {
        Self::sat_i64(v.clamp(
            i128::from(<Self as QInt>::MIN),
            i128::from(<Self as QInt>::MAX),
        ) as i64)
    }
}

macro_rules! qint {
    ($t:ty) => {
        impl QInt for $t {
            const MIN: i64 = <$t>::MIN as i64;
            const MAX: i64 = <$t>::MAX as i64;
            const NAME: &'static str = stringify!($t);
            #[inline]
            fn to_i64(self) -> i64 {
                i64::from(self)
            }
            #[inline]
            fn sat_i64(v: i64) -> Self {
                v.clamp(<Self as QInt>::MIN, <Self as QInt>::MAX) as $t
            }
        }
    };
}
qint!(i8);
qint!(i16);
qint!(i32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturation() {
        assert_eq!(i8::sat_i64(300), 127);
        assert_eq!(i8::sat_i64(-300), -128);
        assert_eq!(i16::sat_i128(i128::MAX), i16::MAX);
        assert_eq!(i32::sat_i128(-(1i128 << 100)), i32::MIN);
        assert_eq!(i32::sat_i64(5), 5);
    }
}
