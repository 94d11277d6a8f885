//! Layers: experiments that must not share users.
//!
//! A layer has its own salt, and every user a layer point
//! `point(layer_salt, user_id)` in [0, 10000), computed exactly as an experiment's bucket.
//! The points below the layer's holdout (in basis points) are the holdout: no experiment of
//! the layer enrolls them. Each experiment of the layer owns a range [start, end) of the
//! remaining points, disjoint from the ranges of the layer's other draft or running
//! experiments; a user whose layer point falls in the range may be enrolled, and then gets a
//! variant from the experiment's own bucket, as without layers. Since the two hashes use
//! different salts, a user's variant does not depend on where in the range the user falls.
//! A stopped experiment gives its range back; users there may be enrolled by a later
//! experiment of the layer.

use crate::bucketing::BUCKETS;

/// The free ranges of [low, BUCKETS), in order, given the ranges already taken (in any order;
/// they may lie anywhere).
fn gaps(taken: &[(u32, u32)], low: u32) -> Vec<(u32, u32)> {
    let mut taken: Vec<(u32, u32)> = taken.iter().copied().filter(|&(s, e)| e > low && s < e).collect();
    taken.sort_unstable();
    let mut free = Vec::new();
    let mut start = low;
    for (s, e) in taken.into_iter().chain(std::iter::once((BUCKETS, BUCKETS))) {
        if s > start {
            free.push((start, s));
        }
        start = start.max(e);
    }
    free
}

/// The first start of a free range `width` wide within [low, BUCKETS).
pub fn first_fit(taken: &[(u32, u32)], low: u32, width: u32) -> Option<u32> {
    gaps(taken, low).into_iter().find(|&(s, e)| e - s >= width).map(|(s, _)| s)
}

/// Free basis points of [low, BUCKETS), and the widest free range.
pub fn free_space(taken: &[(u32, u32)], low: u32) -> (u32, u32) {
    gaps(taken, low).into_iter().fold((0, 0), |(free, widest), (s, e)| (free + e - s, widest.max(e - s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucketing::point;

    #[test]
    fn first_fit_fills_gaps_in_order() {
        assert_eq!(first_fit(&[], 0, 2500), Some(0));
        assert_eq!(first_fit(&[], 500, 9500), Some(500));
        assert_eq!(first_fit(&[], 500, 9501), None);
        assert_eq!(first_fit(&[(500, 3000)], 500, 2500), Some(3000));
        // A gap left by a stopped experiment is reused when wide enough.
        assert_eq!(first_fit(&[(3000, 5000), (500, 1000)], 500, 2000), Some(1000));
        assert_eq!(first_fit(&[(3000, 5000), (500, 1000)], 500, 2001), Some(5000));
        assert_eq!(first_fit(&[(0, 10000)], 0, 1), None);
        assert_eq!(first_fit(&[(0, 9999)], 0, 1), Some(9999));
    }

    #[test]
    fn free_space_counts_gaps() {
        assert_eq!(free_space(&[], 1000), (9000, 9000));
        assert_eq!(free_space(&[(1000, 2000), (5000, 6000)], 1000), (7000, 4000));
        assert_eq!(free_space(&[(0, 10000)], 0), (0, 0));
    }

    /// Forty experiments fill a layer with a 4% holdout: every user lands in at most one, the
    /// holdout in none, and each gets its share.
    #[test]
    fn many_experiments_share_a_layer_without_overlap() {
        let holdout = 400;
        let mut taken: Vec<(u32, u32)> = Vec::new();
        for _ in 0..40 {
            let s = first_fit(&taken, holdout, 240).unwrap();
            taken.push((s, s + 240));
        }
        assert_eq!(first_fit(&taken, holdout, 1), None);
        let users = 200_000;
        let mut per_experiment = vec![0u32; taken.len()];
        let mut held_out = 0;
        for i in 0..users {
            let p = point("layer-salt", &format!("user-{i}"));
            let inside: Vec<usize> = (0..taken.len()).filter(|&k| taken[k].0 <= p && p < taken[k].1).collect();
            if p < holdout {
                assert!(inside.is_empty());
                held_out += 1;
            } else {
                assert_eq!(inside.len(), 1, "user-{i} at {p}");
                per_experiment[inside[0]] += 1;
            }
        }
        let expected = users as f64 * 0.024;
        for n in per_experiment {
            assert!((n as f64 - expected).abs() < 5.0 * expected.sqrt(), "{n} vs {expected}");
        }
        let expected = users as f64 * 0.04;
        assert!((held_out as f64 - expected).abs() < 5.0 * expected.sqrt());
    }
}
