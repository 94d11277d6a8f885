//! Deterministic assignment of users to variants.
//!
//! point = (xxh3_64(salt || 0x00 || user_id) * 10000) >> 64, a number in [0, 10000) with no
//! modulo bias. Variants, in creation order, own consecutive ranges whose width is their
//! traffic allocation in basis points (allocation * 100). A point past the last range is not
//! enrolled.

use xxhash_rust::xxh3::Xxh3;

/// Number of buckets: allocations are percentages with two decimals.
pub const BUCKETS: u32 = 10_000;

/// The bucket of a user in an experiment, in [0, BUCKETS).
pub fn point(salt: &str, user_id: &str) -> u32 {
    let mut h = Xxh3::new();
    h.update(salt.as_bytes());
    h.update(&[0u8]);
    h.update(user_id.as_bytes());
    ((h.digest() as u128 * BUCKETS as u128) >> 64) as u32
}

/// Converts a percentage such as 33.33 into basis points, if it has at most two decimals
/// and lies in [0, 100].
pub fn basis_points(allocation: f64) -> Option<u32> {
    if !allocation.is_finite() || !(0.0..=100.0).contains(&allocation) {
        return None;
    }
    let scaled = allocation * 100.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return None;
    }
    Some(rounded as u32)
}

/// Index of the variant whose range holds `point`, given each variant's width in basis points
/// in creation order; None when the point falls in the unenrolled remainder.
pub fn variant_for_point(widths: &[u32], point: u32) -> Option<usize> {
    let mut end = 0u32;
    for (i, w) in widths.iter().enumerate() {
        end += w;
        if point < end {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // The guide's test vectors (docs/guide.md; the full set, from Python's xxhash, is in tests/fixtures).
    #[test]
    fn test_vectors() {
        assert_eq!(point("", ""), 7667);
        assert_eq!(point("salt", "user-1"), 756);
        assert_eq!(point("3f2a9c7e-0d1b-4a5f-9e3c-2b7d8f6a1c40", "user-1"), 6195);
    }

    #[test]
    fn point_is_uniform_enough() {
        let mut counts = [0u32; 10];
        for i in 0..100_000 {
            counts[(point("salt", &format!("user-{i}")) / 1000) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn salt_and_user_are_separated() {
        // Without the 0x00 separator these two would collide.
        assert_ne!(point("ab", "c"), point("a", "bc"));
    }

    #[test]
    fn basis_points_accepts_two_decimals() {
        assert_eq!(basis_points(50.0), Some(5000));
        assert_eq!(basis_points(33.33), Some(3333));
        assert_eq!(basis_points(0.0), Some(0));
        assert_eq!(basis_points(100.0), Some(10000));
        assert_eq!(basis_points(33.333), None);
        assert_eq!(basis_points(-1.0), None);
        assert_eq!(basis_points(100.01), None);
        assert_eq!(basis_points(f64::NAN), None);
    }

    #[test]
    fn ranges_are_consecutive() {
        let widths = [7000, 3000];
        assert_eq!(variant_for_point(&widths, 0), Some(0));
        assert_eq!(variant_for_point(&widths, 6999), Some(0));
        assert_eq!(variant_for_point(&widths, 7000), Some(1));
        assert_eq!(variant_for_point(&widths, 9999), Some(1));
        let partial = [1000, 1000];
        assert_eq!(variant_for_point(&partial, 2000), None);
        assert_eq!(variant_for_point(&[0, 5000], 0), Some(1));
    }
}
