//! Exact, order-independent window sums and means.
//!
//! A window's sum is the exact sum of its points' values (finite `f64`s),
//! rounded once to the nearest `f64` (ties to even); its mean is the exact
//! sum divided by the count, rounded once the same way. Both are functions
//! of the multiset of values only, so every arrival order of the same
//! points gives bit-identical aggregates, the threshold detector compares
//! exactly the `mean` the Parquet row stores, and the mean of a constant
//! window is that constant (`min <= mean <= max` always holds).
//!
//! Two exact accumulators:
//! - `Fixed`: the sum as an integer count of 2^-64 (128 bits, inline in
//!   every open window). A value goes here when it is a multiple of 2^-64
//!   below 2^61 in magnitude and the running total does not overflow:
//!   every value of ordinary telemetry (percentages, byte rates,
//!   counters below 2^61, fractions down to about 2.4e-4 with a full
//!   53-bit mantissa, and any shorter mantissa further down).
//! - [`WideSum`]: a fixed-size accumulator over the whole `f64` range
//!   (68 digits of 32 bits at a scale of 2^-1074, 552 bytes, on the heap),
//!   for the rare value that does not fit `Fixed` (tiny fractions,
//!   subnormals, magnitudes of 2^61 and more, totals beyond 2^63). The
//!   window keeps both; its exact sum is their sum.
//!
//! Adding integers is associative, so the split between the two never
//! changes the result.

use serde::{Deserialize, Serialize};

/// Bits after the binary point of [`Fixed`].
const FIXED_FRAC: i32 = 64;

/// Number of 32-bit digits of [`WideSum`]: 1074 bits below 2^0, 1024
/// above, 37 of count headroom, and a spare digit for the sign.
const DIGITS: usize = 68;

/// Adds to a [`WideSum`] between carry normalisations: each add moves a
/// digit by less than 2^32, so 2^30 of them stay far inside `i64`.
const NORMALISE_EVERY: u32 = 1 << 30;

/// Splits a finite `v` into `(m, e)` with `v = m · 2^e`, `|m| < 2^53`.
#[inline]
fn decompose(v: f64) -> (i64, i32) {
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = (bits & ((1u64 << 52) - 1)) as i64;
    let (m, e) = if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1i64 << 52), exp - 1075)
    };
    (if bits >> 63 == 1 { -m } else { m }, e)
}

/// `2^k` for `k` in `-1074..=1023`.
fn pow2(k: i32) -> f64 {
    debug_assert!((-1074..=1023).contains(&k));
    if k >= -1022 {
        f64::from_bits(((k + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (k + 1074))
    }
}

/// `m · 2^k`, exact when representable (`m <= 2^64`, `k >= -1074`);
/// overflows to infinity.
fn scale(m: f64, k: i32) -> f64 {
    if k > 1023 {
        m * pow2(1023) * pow2((k - 1023).min(1023))
    } else {
        m * pow2(k)
    }
}

/// A window sum in units of 2^-64, in two words (so an open window stays
/// 8-byte aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Fixed {
    lo: u64,
    hi: i64,
}

impl Fixed {
    /// Zero.
    pub(crate) const ZERO: Fixed = Fixed { lo: 0, hi: 0 };

    #[inline]
    fn get(self) -> i128 {
        (i128::from(self.hi) << 64) | i128::from(self.lo)
    }

    #[inline]
    fn set(x: i128) -> Fixed {
        Fixed {
            lo: x as u64,
            hi: (x >> 64) as i64,
        }
    }

    /// `v` in units of 2^-64, when it is a whole number of them below 2^125.
    #[inline]
    fn units(v: f64) -> Option<i128> {
        let (m, e) = decompose(v);
        if m == 0 {
            return Some(0);
        }
        let sh = e + FIXED_FRAC;
        if sh >= 0 {
            (sh <= 72).then(|| i128::from(m) << sh)
        } else {
            let s = -sh;
            (s < 64 && m.trailing_zeros() >= s as u32).then(|| i128::from(m >> s))
        }
    }

    /// Adds `v` when it fits exactly; `false` (and no change) otherwise.
    #[inline]
    pub(crate) fn add(&mut self, v: f64) -> bool {
        match Fixed::units(v).and_then(|u| self.get().checked_add(u)) {
            Some(s) => {
                *self = Fixed::set(s);
                true
            }
            None => false,
        }
    }

    /// The sum rounded to the nearest `f64`.
    pub(crate) fn sum(self) -> f64 {
        // i128 → f64 rounds to nearest (ties to even); the power-of-two
        // scaling is exact (|x| >= 1 unit is far above the subnormals).
        self.get() as f64 * pow2(-FIXED_FRAC)
    }

    /// The sum divided by `n` (>= 1), rounded to the nearest `f64`.
    pub(crate) fn mean(self, n: u64) -> f64 {
        let x = self.get();
        let a = x.unsigned_abs();
        if a == 0 || n == 0 {
            return 0.0;
        }
        // Fast path: the sum's significant bits fit an f64 mantissa, so one
        // IEEE division of exact operands is the correct rounding (the
        // power-of-two scaling after it is exact).
        let t = a.trailing_zeros();
        let y = a >> t;
        if y < 1 << 53 && n < 1 << 53 {
            let m = (y as u64 as f64 / n as f64) * pow2(t as i32 - FIXED_FRAC);
            return if x < 0 { -m } else { m };
        }
        // Shift the numerator up to 128 bits: the quotient then has at
        // least 128 - 64 significant bits, and OR-ing the remainder's
        // sticky bit into its lowest bit ("round to odd") makes the one
        // rounding of the u128 → f64 conversion the correct rounding of
        // the exact quotient.
        let s = a.leading_zeros();
        let num = a << s;
        let d = u128::from(n);
        let q = (num / d) | u128::from(!num.is_multiple_of(d));
        let m = q as f64 * pow2(-FIXED_FRAC - s as i32);
        if x < 0 {
            -m
        } else {
            m
        }
    }

    /// The exact value in 2^-64 units (checkpoints).
    pub(crate) fn to_i128(self) -> i128 {
        self.get()
    }

    /// From [`Fixed::to_i128`].
    pub(crate) fn from_i128(x: i128) -> Fixed {
        Fixed::set(x)
    }
}

/// An exact sum of any finite `f64`s: 32-bit digits (kept in `i64`s so
/// carries can wait) at a scale of 2^-1074. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WideSum {
    digits: [i64; DIGITS],
    pending: u32,
}

impl Default for WideSum {
    fn default() -> Self {
        WideSum {
            digits: [0; DIGITS],
            pending: 0,
        }
    }
}

impl WideSum {
    /// Adds `mag · 2^(pos - 1074)` (`mag < 2^53`), negated when `neg`.
    fn add_at(&mut self, mag: u64, pos: u32, neg: bool) {
        if mag == 0 {
            return;
        }
        if self.pending >= NORMALISE_EVERY {
            self.normalise();
        }
        self.pending += 1;
        let d = (pos / 32) as usize;
        let x = u128::from(mag) << (pos % 32);
        for k in 0..3 {
            let part = ((x >> (32 * k)) & 0xffff_ffff) as i64;
            if part != 0 {
                if neg {
                    self.digits[d + k] -= part;
                } else {
                    self.digits[d + k] += part;
                }
            }
        }
    }

    /// Adds one finite value exactly.
    pub fn add(&mut self, v: f64) {
        debug_assert!(v.is_finite());
        let (m, e) = decompose(v);
        self.add_at(m.unsigned_abs(), (e + 1074) as u32, m < 0);
    }

    /// Adds a [`Fixed`] sum exactly.
    pub(crate) fn add_fixed(&mut self, f: Fixed) {
        let x = f.get();
        let a = x.unsigned_abs();
        let base = (1074 - FIXED_FRAC) as u32;
        for k in 0..4 {
            let part = ((a >> (32 * k)) & 0xffff_ffff) as u64;
            self.add_at(part, base + 32 * k, x < 0);
        }
    }

    /// Propagates carries: every digit but the top one in `0..2^32`.
    fn normalise(&mut self) {
        for k in 0..DIGITS - 1 {
            let c = self.digits[k] >> 32;
            self.digits[k] -= c << 32;
            self.digits[k + 1] += c;
        }
        self.pending = 0;
    }

    /// The sum divided by `n` (>= 1), rounded once to the nearest `f64`
    /// (ties to even); infinite when it exceeds the `f64` range.
    pub fn quotient(&self, n: u64) -> f64 {
        let mut w = self.clone();
        w.normalise();
        let neg = w.digits[DIGITS - 1] < 0;
        if neg {
            for d in &mut w.digits {
                *d = -*d;
            }
            w.normalise();
        }
        // Magnitude as 32-bit digits with one more digit below (scale
        // 2^-1106), so the rounding bit of even a subnormal result is a
        // quotient bit, then long division by n.
        let mut q = [0u32; DIGITS + 1];
        let d = u128::from(n.max(1));
        let mut rem: u128 = 0;
        for k in (0..=DIGITS).rev() {
            let digit = if k == 0 { 0 } else { w.digits[k - 1] as u32 };
            let cur = (rem << 32) | u128::from(digit);
            q[k] = (cur / d) as u32;
            rem = cur % d;
        }
        let Some(top) = q.iter().rposition(|&x| x != 0) else {
            // Below 2^-1106 · n: rounds to zero.
            return 0.0;
        };
        let bits = 32 * top as u32 + (32 - q[top].leading_zeros());
        let bit = |i: u32| (q[(i / 32) as usize] >> (i % 32)) & 1 == 1;
        let any_below = |i: u32| {
            let (w, b) = ((i / 32) as usize, i % 32);
            q[..w].iter().any(|&x| x != 0) || (q[w] & ((1u32 << b) - 1)) != 0
        };
        // Lowest kept bit: 53 significant bits, but nothing below 2^-1074
        // (quotient bit 32).
        let lsb = bits.saturating_sub(53).max(32);
        let mut m: u64 = 0;
        for i in (lsb..bits).rev() {
            m = (m << 1) | u64::from(bit(i));
        }
        let round = bit(lsb - 1);
        let sticky = rem != 0 || any_below(lsb - 1);
        if round && (sticky || m & 1 == 1) {
            m += 1;
        }
        let v = scale(m as f64, lsb as i32 - 1106);
        if neg {
            -v
        } else {
            v
        }
    }

    /// Non-zero normalised digits as (index, digit), for checkpoints.
    pub(crate) fn to_sparse(&self) -> Vec<(u8, i64)> {
        let mut w = self.clone();
        w.normalise();
        w.digits
            .iter()
            .enumerate()
            .filter(|(_, d)| **d != 0)
            .map(|(i, d)| (i as u8, *d))
            .collect()
    }

    /// From [`WideSum::to_sparse`]; `None` for an index out of range or a
    /// digit outside `0..2^32` below the top.
    pub(crate) fn from_sparse(s: &[(u8, i64)]) -> Option<WideSum> {
        let mut w = WideSum::default();
        for &(i, d) in s {
            let i = usize::from(i);
            if i >= DIGITS || (i < DIGITS - 1 && !(0..1i64 << 32).contains(&d)) {
                return None;
            }
            w.digits[i] = d;
        }
        Some(w)
    }
}

/// The exact sum of an open window as checkpointed: the `Fixed` part in
/// 2^-64 units and the [`WideSum`] part as sparse digits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExactRepr {
    /// `Fixed` part, 2^-64 units, as a decimal string (JSON numbers do
    /// not carry 128 bits everywhere).
    pub fixed: String,
    /// [`WideSum`] part: (digit index, digit), empty when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wide: Vec<(u8, i64)>,
}

/// Sum and mean of `values`, exactly rounded, computed the slow way (for
/// tests and oracles): one [`WideSum`].
pub fn exact_sum_mean(values: &[f64]) -> (f64, f64) {
    let mut w = WideSum::default();
    for &v in values {
        w.add(v);
    }
    (w.quotient(1), w.quotient(values.len().max(1) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Exact rational check without this module: values as (integer
    /// numerator, power-of-two denominator) summed in i128 when they
    /// share a small enough scale.
    fn naive_exact(values: &[f64]) -> Option<i128> {
        let mut s: i128 = 0;
        for &v in values {
            let scaled = v * 2f64.powi(40);
            if scaled.fract() != 0.0 || scaled.abs() > 2f64.powi(100) {
                return None;
            }
            s = s.checked_add(scaled as i128)?;
        }
        Some(s)
    }

    #[test]
    fn fixed_and_wide_agree_with_exact_integers() {
        let vals = [0.5, 0.25, 3.0, -7.125, 1e6, 2.0f64.powi(-30)];
        let mut f = Fixed::ZERO;
        let mut w = WideSum::default();
        for &v in &vals {
            assert!(f.add(v));
            w.add(v);
        }
        let exact = naive_exact(&vals).unwrap() as f64 / 2f64.powi(40);
        assert_eq!(f.sum(), exact);
        assert_eq!(w.quotient(1), exact);
        assert_eq!(f.mean(6), exact / 6.0);
        assert_eq!(w.quotient(6), exact / 6.0);
    }

    #[test]
    fn sum_of_tenths_is_rounded_once() {
        // 0.1 + 0.2 + 0.3 in f64 is 0.6000000000000001 naively (left to
        // right) and 0.6 right to left, so the naive mean is
        // 0.20000000000000004 or 0.19999999999999998. The exact sum of the
        // three doubles rounds to 0.6, and their exact mean
        // (0.2000000000000000018...) to 0.2, not to 0.6 / 3.
        let (s, m) = exact_sum_mean(&[0.1, 0.2, 0.3]);
        assert_eq!(s, 0.6);
        assert_eq!(m, 0.2);
        assert_eq!(0.6 / 3.0, 0.19999999999999998);
        let mut f = Fixed::ZERO;
        for v in [0.3, 0.1, 0.2] {
            assert!(f.add(v));
        }
        assert_eq!((f.sum(), f.mean(3)), (s, m));
    }

    #[test]
    fn mean_of_a_constant_is_the_constant() {
        for v in [0.1, 1.0 / 3.0, 99.99, -5e-9, 1e300, 5e-324] {
            let mut f = Fixed::ZERO;
            let mut w = WideSum::default();
            for _ in 0..3 {
                if !f.add(v) {
                    w.add(v);
                }
            }
            w.add_fixed(f);
            assert_eq!(w.quotient(3), v, "{v}");
        }
    }

    #[test]
    fn cancellation_and_extremes() {
        let (s, _) = exact_sum_mean(&[1e308, 1e308, -1e308]);
        assert_eq!(s, 1e308, "no intermediate overflow");
        let (s, _) = exact_sum_mean(&[1e308, 1e308]);
        assert_eq!(s, f64::INFINITY);
        let (s, m) = exact_sum_mean(&[1e16, 1.0, -1e16]);
        assert_eq!((s, m), (1.0, 1.0 / 3.0));
        let (s, _) = exact_sum_mean(&[f64::MAX, -f64::MAX, 5e-324]);
        assert_eq!(s, 5e-324);
        let (s, m) = exact_sum_mean(&[5e-324, 0.0]);
        assert_eq!(
            (s, m),
            (5e-324, 0.0),
            "half of the least subnormal ties to even 0"
        );
        let (_, m) = exact_sum_mean(&[5e-324, 5e-324, 5e-324, 0.0]);
        assert_eq!(m, 5e-324, "3/4 of it rounds up");
        assert_eq!(exact_sum_mean(&[-0.5, -0.25]), (-0.75, -0.375));
    }

    #[test]
    fn fixed_refuses_what_it_cannot_hold() {
        let mut f = Fixed::ZERO;
        assert!(!f.add(1e-30), "below 2^-64");
        assert!(!f.add(2f64.powi(62)), "too large");
        assert!(f.add(2f64.powi(60)));
        assert!(f.add(2f64.powi(-64)));
        assert!(f.add(-0.0));
        let mut big = Fixed::set(i128::MAX - 5);
        assert!(!big.add(1.0), "overflow is refused, not wrapped");
        assert_eq!(big, Fixed::set(i128::MAX - 5));
    }

    #[test]
    fn mean_fast_and_slow_paths_agree() {
        // 2^60 + 1 units: 61 significant bits, the division path.
        let mut f = Fixed::ZERO;
        assert!(f.add(2f64.powi(-4)));
        assert!(f.add(2f64.powi(-64)));
        let (_, m) = exact_sum_mean(&[2f64.powi(-4), 2f64.powi(-64)]);
        assert_eq!(f.mean(2), m);
        // 0.75: two significant bits, the fast path.
        let f = Fixed::set(3 << 62);
        assert_eq!(f.mean(3), 0.25);
        assert_eq!(
            Fixed::set(-(3 << 62)).mean(7),
            exact_sum_mean(&[-0.75, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).1
        );
    }

    #[test]
    fn sparse_round_trip() {
        let mut w = WideSum::default();
        for v in [1e-300, -3.5, 1e300, 7.0] {
            w.add(v);
        }
        let back = WideSum::from_sparse(&w.to_sparse()).unwrap();
        assert_eq!(back.quotient(1), w.quotient(1));
        assert_eq!(back.quotient(7), w.quotient(7));
        assert!(WideSum::from_sparse(&[(200, 1)]).is_none());
        assert!(WideSum::from_sparse(&[(3, -1)]).is_none());
    }

    fn any_finite() -> impl Strategy<Value = f64> {
        prop_oneof![
            (-1000i64..1000).prop_map(|x| x as f64 / 10.0),
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            (-1e6f64..1e6),
            (-1e-6f64..1e-6),
        ]
    }

    proptest! {
        /// Every order (and every split between the two accumulators)
        /// gives the same bits; and the result is the correct rounding
        /// where an independent exact computation exists.
        #[test]
        fn order_and_split_independent(
            vals in proptest::collection::vec(any_finite(), 1..40),
            seed in any::<u64>(),
        ) {
            let (s0, m0) = exact_sum_mean(&vals);
            let mut shuffled = vals.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut f = Fixed::ZERO;
            let mut w = WideSum::default();
            for (i, &v) in shuffled.iter().enumerate() {
                // Push every third value to the wide part by force.
                if i % 3 == 0 || !f.add(v) {
                    w.add(v);
                }
            }
            w.add_fixed(f);
            let n = vals.len() as u64;
            prop_assert_eq!(w.quotient(1).to_bits(), s0.to_bits());
            prop_assert_eq!(w.quotient(n).to_bits(), m0.to_bits());
            if let Some(e) = naive_exact(&vals) {
                // e · 2^-40 and e · 2^-40 / n, each rounded once.
                let sum = e as f64 / 2f64.powi(40);
                prop_assert_eq!(s0, sum);
                let mut fx = Fixed::ZERO;
                let all_fixed = vals.iter().all(|&v| fx.add(v));
                if all_fixed {
                    prop_assert_eq!(fx.sum().to_bits(), s0.to_bits());
                    prop_assert_eq!(fx.mean(n).to_bits(), m0.to_bits());
                }
            }
            let (lo, hi) = vals.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            prop_assert!(m0 >= lo && m0 <= hi, "mean {} outside [{}, {}]", m0, lo, hi);
        }
    }
}
