//! Bandit experiments simulated end to end with the library's own pieces (Thompson weights per
//! period, period-stratified analysis, the winner rule) where the truth is known: the best
//! variant must win in the large majority of runs, and the confidence intervals must cover
//! the true difference at their nominal rate even when the outcome drifts over time while the
//! weights move (where the pooled comparison does not).

use ab_core::analysis::{analyze_metric, ArmInput, MetricInput, Settings};
use ab_core::bandit::{chance_best, posteriors, weights};
use ab_core::bucketing::BUCKETS;
use ab_core::definition::{Direction, MetricDef, MetricType};
use ab_core::stats::proportion::proportion_test;
use ab_core::stats::Moments;
use ab_core::winner::decide;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

struct Run {
    /// [variant][period]: (users assigned, moments of their values).
    periods: Vec<Vec<(u64, Moments)>>,
}

/// One bandit experiment: `users` per period, outcome of variant v in period p drawn by
/// `draw(rng, v, p)`, weights recomputed after every period from the posteriors.
fn simulate(
    seed: u64,
    kind: MetricType,
    arms: usize,
    periods: usize,
    users: usize,
    min_share: f64,
    draw: impl Fn(&mut Rng, usize, usize) -> f64,
) -> Run {
    let mut rng = Rng(seed);
    let mut bp: Vec<u32> = vec![BUCKETS / arms as u32; arms];
    bp[0] += BUCKETS - bp.iter().sum::<u32>();
    let mut data: Vec<Vec<(u64, Moments)>> = vec![vec![]; arms];
    for p in 0..periods {
        data.iter_mut().for_each(|d| d.push((0, Moments::default())));
        for _ in 0..users {
            let point = (rng.uniform() * BUCKETS as f64) as u32;
            let mut acc = 0;
            let v = bp.iter().position(|&w| {
                acc += w;
                point < acc
            });
            let v = v.unwrap_or(arms - 1);
            let x = draw(&mut rng, v, p);
            let cell = &mut data[v][p];
            cell.0 += 1;
            cell.1.add(x);
        }
        let moments: Vec<Vec<Moments>> = data.iter().map(|d| d.iter().map(|c| c.1).collect()).collect();
        if let Some(post) = posteriors(kind, &moments) {
            bp = weights(&chance_best(&post, Direction::Higher), min_share, BUCKETS);
        }
    }
    Run { periods: data }
}

fn analyze(run: &Run, kind: MetricType) -> ab_core::analysis::MetricResult {
    let def = MetricDef { kind, ..Default::default() };
    let arms = run
        .periods
        .iter()
        .enumerate()
        .map(|(v, d)| ArmInput {
            variant: format!("v{v}"),
            is_control: v == 0,
            assigned: d.iter().map(|c| c.0).sum(),
            observed: d.iter().fold(Moments::default(), |acc, c| acc.merge(&c.1)),
            covariate: None,
            periods: d.clone(),
            ratio: None,
            quantile: None,
        })
        .collect();
    analyze_metric(&Settings::fixed(0.05, 100), &MetricInput { cap: None, name: "m".into(), def, arms })
}

fn bernoulli(rng: &mut Rng, p: f64) -> f64 {
    if rng.uniform() < p {
        1.0
    } else {
        0.0
    }
}

#[test]
fn the_best_variant_wins_and_gets_the_traffic() {
    let rates = [0.10, 0.10, 0.14];
    let runs = 200;
    let (mut wins, mut wrong, mut best_share) = (0, 0, 0.0);
    for seed in 0..runs {
        let run = simulate(seed, MetricType::Binary, 3, 10, 1000, 5.0, |rng, v, _| bernoulli(rng, rates[v]));
        let m = analyze(&run, MetricType::Binary);
        match decide(&m, 100, 0.05, None, &[]).winner.as_deref() {
            Some("v2") => wins += 1,
            Some(_) => wrong += 1,
            None => {}
        }
        let users: Vec<u64> = run.periods.iter().map(|d| d.iter().map(|c| c.0).sum()).collect();
        best_share += users[2] as f64 / users.iter().sum::<u64>() as f64 / runs as f64;
    }
    let rate = wins as f64 / runs as f64;
    eprintln!("best variant won {wins} of {runs} runs, another won {wrong}; it got {best_share:.3} of the users");
    assert!(rate >= 0.8, "best variant won only {wins} of {runs} runs");
    assert!(wrong <= 2, "a worse variant was declared the winner {wrong} times");
    assert!(best_share > 0.6, "the best variant got only {best_share:.3} of the users");
}

/// The outcome rises period after period while the better treatment gets more and more of the
/// traffic: the treatment's users come mostly from late (high) periods, the control's from
/// early ones.
fn coverage(
    kind: MetricType,
    runs: u64,
    draw: impl Fn(&mut Rng, usize, usize) -> f64 + Copy,
    effect: f64,
    confounded: bool,
) -> f64 {
    let (mut covered, mut pooled_covered) = (0, 0);
    for seed in 0..runs {
        let run = simulate(1000 + seed, kind, 2, 6, 600, 5.0, draw);
        let m = analyze(&run, kind);
        let c = m.arms[1].comparison.expect("a comparison");
        assert_eq!(c.test, "stratified");
        if c.ci_lower <= effect && effect <= c.ci_upper {
            covered += 1;
        }
        // The pooled comparison, ignoring the periods.
        let total = |v: usize| run.periods[v].iter().fold(Moments::default(), |acc, c| acc.merge(&c.1));
        let (a, b) = (total(0), total(1));
        let (lo, hi) = match kind {
            MetricType::Binary => {
                let r = proportion_test((a.mean * a.n).round(), a.n, (b.mean * b.n).round(), b.n, 0.05).unwrap();
                (r.ci_lower, r.ci_upper)
            }
            MetricType::Continuous | MetricType::Ratio | MetricType::Quantile => {
                let se = (a.variance().unwrap() / a.n + b.variance().unwrap() / b.n).sqrt();
                (b.mean - a.mean - 1.96 * se, b.mean - a.mean + 1.96 * se)
            }
        };
        if lo <= effect && effect <= hi {
            pooled_covered += 1;
        }
    }
    let (rate, pooled) = (covered as f64 / runs as f64, pooled_covered as f64 / runs as f64);
    eprintln!("{kind:?}: 95% intervals covered the truth in {rate:.3} of {runs} runs (pooled: {pooled:.3})");
    // Binomial sd of the coverage over `runs` runs is about 0.007 at 1000 runs.
    let tol = 3.5 * (0.95f64 * 0.05 / runs as f64).sqrt();
    assert!((rate - 0.95).abs() <= tol, "coverage {rate} is not 0.95 +- {tol:.3}");
    if confounded {
        assert!(pooled < 0.5, "the pooled comparison covered {pooled}: the simulation does not confound");
    }
    rate
}

#[test]
fn intervals_cover_the_truth_under_drift_binary() {
    let base = [0.05, 0.10, 0.20, 0.30, 0.40, 0.50];
    coverage(
        MetricType::Binary,
        1000,
        move |rng, v, p| bernoulli(rng, base[p] + if v == 1 { 0.05 } else { 0.0 }),
        0.05,
        true,
    );
}

#[test]
fn intervals_cover_the_truth_without_drift() {
    coverage(MetricType::Binary, 1000, |rng, v, _| bernoulli(rng, 0.2 + if v == 1 { 0.05 } else { 0.0 }), 0.05, false);
}

/// No difference, a strong drift: how often a 95% interval excludes 0 (a false positive).
#[test]
fn false_positives_stay_at_alpha_under_drift() {
    let base = [0.05, 0.10, 0.20, 0.30, 0.40, 0.50];
    let rate = coverage(MetricType::Binary, 1000, move |rng, _, p| bernoulli(rng, base[p]), 0.0, true);
    assert!(1.0 - rate <= 0.05, "false positive rate {}", 1.0 - rate);
}

#[test]
fn intervals_cover_the_truth_under_drift_continuous() {
    coverage(
        MetricType::Continuous,
        1000,
        |rng, v, p| 2.0 * p as f64 + if v == 1 { 0.3 } else { 0.0 } + 1.5 * rng.normal(),
        0.3,
        true,
    );
}
