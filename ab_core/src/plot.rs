//! A forest plot of each treatment's effect on each metric, with its confidence interval
//! against zero, as standalone SVG that a browser renders as is.

use std::fmt::Write;

use crate::analysis::MetricResult;
use crate::definition::Direction;

const WIDTH: f64 = 900.0;
const LABEL_W: f64 = 190.0;
const PLOT_W: f64 = 420.0;
const ROW_H: f64 = 26.0;
const HEADER_H: f64 = 34.0;
const AXIS_H: f64 = 18.0;

/// XML text from stored user data: markup escaped, and characters XML 1.0 forbids (most
/// control characters) or that hide text shown as `\u{...}`.
fn esc(s: &str) -> String {
    crate::names::printable(s).replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn num(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() >= 1000.0 || x.abs() < 0.001 {
        format!("{x:.2e}")
    } else {
        format!("{x:.3}").trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The SVG document. Green marks a significant improvement, red a significant harm, grey no
/// significant difference (the metric's direction decides which is which).
pub fn forest_plot(title: &str, metrics: &[MetricResult]) -> String {
    let rows: usize = metrics.iter().map(|m| m.arms.iter().filter(|a| !a.is_control).count()).sum();
    let height = 50.0 + metrics.len() as f64 * (HEADER_H + AXIS_H) + rows as f64 * ROW_H + 10.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = write!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(out, r#"<text x="16" y="28" font-size="16" font-weight="bold">{}</text>"#, esc(title));
    let mut y = 50.0;
    for m in metrics {
        let treated: Vec<_> = m.arms.iter().filter(|a| !a.is_control).collect();
        let _ = write!(
            out,
            r##"<text x="16" y="{}" font-weight="bold">{} <tspan font-weight="normal" fill="#666">({} is better; difference from the control)</tspan></text>"##,
            y + 20.0,
            esc(&m.name),
            m.def.direction.as_str()
        );
        y += HEADER_H;
        // One scale per metric, always showing zero.
        let (mut lo, mut hi) = (0.0f64, 0.0f64);
        for a in &treated {
            if let Some(c) = a.comparison {
                for v in [c.ci_lower, c.ci_upper, c.diff] {
                    if v.is_finite() {
                        lo = lo.min(v);
                        hi = hi.max(v);
                    }
                }
            }
        }
        if hi - lo <= 0.0 {
            lo -= 1.0;
            hi += 1.0;
        }
        let pad = (hi - lo) * 0.08;
        let (lo, hi) = (lo - pad, hi + pad);
        let x = |v: f64| LABEL_W + (v.clamp(lo, hi) - lo) / (hi - lo) * PLOT_W;
        let top = y;
        let bottom = y + treated.len() as f64 * ROW_H;
        let _ = write!(
            out,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#999" stroke-dasharray="4 3"/>"##,
            x(0.0),
            top - 4.0,
            bottom
        );
        for a in &treated {
            let cy = y + ROW_H / 2.0;
            let _ = write!(out, r#"<text x="16" y="{:.1}">{}</text>"#, cy + 4.0, esc(&a.variant));
            match a.comparison {
                Some(c) => {
                    let good = match m.def.direction {
                        Direction::Higher => c.diff > 0.0,
                        Direction::Lower => c.diff < 0.0,
                    };
                    let color = if !c.significant {
                        "#777"
                    } else if good {
                        "#1a7f37"
                    } else {
                        "#cf222e"
                    };
                    let _ = write!(
                        out,
                        r##"<line x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="{color}" stroke-width="2"/>"##,
                        x(c.ci_lower),
                        x(c.ci_upper)
                    );
                    let _ = write!(out, r#"<circle cx="{:.1}" cy="{cy:.1}" r="5" fill="{color}"/>"#, x(c.diff));
                    let _ = write!(
                        out,
                        r##"<text x="{:.1}" y="{:.1}" fill="#333">{} [{}, {}], p {}</text>"##,
                        LABEL_W + PLOT_W + 10.0,
                        cy + 4.0,
                        num(c.diff),
                        num(c.ci_lower),
                        num(c.ci_upper),
                        crate::winner::p_is(c.p_adjusted)
                    );
                }
                None => {
                    // A quantile of a cluster-randomized experiment is not compared at all.
                    let why =
                        if a.recommendation.starts_with("not compared") { "not compared" } else { "not enough data" };
                    let _ = write!(out, r##"<text x="{:.1}" y="{:.1}" fill="#666">{why}</text>"##, LABEL_W, cy + 4.0);
                }
            }
            y += ROW_H;
        }
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" fill="#666" font-size="11" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" fill="#666" font-size="11" text-anchor="middle">{}</text>"##,
            LABEL_W,
            bottom + 14.0,
            num(lo),
            LABEL_W + PLOT_W,
            bottom + 14.0,
            num(hi)
        );
        y += AXIS_H;
    }
    out.push_str("</svg>\n");
    out
}

/// Line colours of the treatments of a timeline, in order (then repeated).
const SERIES: [&str; 6] = ["#0969da", "#bf3989", "#9a6700", "#1a7f37", "#8250df", "#cf222e"];

/// An SVG line chart of each treatment's difference from the control on `metric`, day by
/// day (`days[i]` is day i's label and `results[i]` its analysis), with the CI as a band
/// around the line and zero dashed: where the estimate moved and when it settled.
pub fn timeline_plot(title: &str, metric: &str, days: &[String], results: &[MetricResult]) -> String {
    const LEFT: f64 = 90.0;
    const TOP: f64 = 60.0;
    const PLOT_H: f64 = 280.0;
    let plot_w = WIDTH - LEFT - 40.0;
    let treated: Vec<(usize, &str)> = results
        .last()
        .map(|m| {
            m.arms.iter().enumerate().filter(|(_, a)| !a.is_control).map(|(i, a)| (i, a.variant.as_str())).collect()
        })
        .unwrap_or_default();
    let h = TOP + PLOT_H + 40.0 + treated.len() as f64 * 18.0;
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for m in results {
        for c in m.arms.iter().filter_map(|a| a.comparison) {
            for v in [c.ci_lower, c.ci_upper, c.diff] {
                if v.is_finite() {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
        }
    }
    if hi - lo <= 0.0 {
        lo -= 1.0;
        hi += 1.0;
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    let n = days.len().max(1);
    let x = |i: usize| LEFT + if n == 1 { plot_w / 2.0 } else { i as f64 / (n - 1) as f64 * plot_w };
    let y = |v: f64| TOP + (hi - v.clamp(lo, hi)) / (hi - lo) * PLOT_H;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = write!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(out, r#"<text x="16" y="28" font-size="16" font-weight="bold">{}</text>"#, esc(title));
    let direction = results.last().map(|m| m.def.direction.as_str()).unwrap_or("higher");
    let _ = write!(
        out,
        r##"<text x="16" y="48">{} <tspan fill="#666">({direction} is better; cumulative difference from the control, per day)</tspan></text>"##,
        esc(metric)
    );
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#999" stroke-dasharray="4 3"/><text x="{2:.1}" y="{3:.1}" fill="#666" font-size="11" text-anchor="end">0</text>"##,
        y(0.0),
        LEFT + plot_w,
        LEFT - 6.0,
        y(0.0) + 4.0
    );
    for (k, (arm, variant)) in treated.iter().enumerate() {
        let color = SERIES[k % SERIES.len()];
        // Runs of consecutive days with a comparison: a day without one breaks the line.
        let mut runs: Vec<Vec<(usize, f64, f64, f64)>> = vec![vec![]];
        for (i, m) in results.iter().enumerate() {
            match m.arms.get(*arm).and_then(|a| a.comparison).filter(|c| c.diff.is_finite()) {
                Some(c) => runs.last_mut().unwrap().push((i, c.diff, c.ci_lower, c.ci_upper)),
                None if !runs.last().unwrap().is_empty() => runs.push(vec![]),
                None => {}
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let upper = run.iter().map(|p| format!("{:.1},{:.1}", x(p.0), y(p.3)));
            let lower = run.iter().rev().map(|p| format!("{:.1},{:.1}", x(p.0), y(p.2)));
            let band: Vec<String> = upper.chain(lower).collect();
            let _ = write!(
                out,
                r#"<polygon points="{}" fill="{color}" fill-opacity="0.15" stroke="none"/>"#,
                band.join(" ")
            );
            let line: Vec<String> = run.iter().map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1))).collect();
            let _ =
                write!(out, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#, line.join(" "));
            if run.len() == 1 {
                let _ =
                    write!(out, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#, x(run[0].0), y(run[0].1));
            }
        }
        let ly = TOP + PLOT_H + 42.0 + k as f64 * 18.0;
        let last = results.last().and_then(|m| m.arms.get(*arm)).and_then(|a| a.comparison);
        let label = match last {
            Some(c) => format!(
                "{} [{}, {}], p {} on the last day",
                num(c.diff),
                num(c.ci_lower),
                num(c.ci_upper),
                crate::winner::p_is(c.p_adjusted)
            ),
            None => "not enough data".into(),
        };
        let _ = write!(
            out,
            r##"<rect x="{LEFT}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{} <tspan fill="#333">{label}</tspan></text>"##,
            ly - 10.0,
            LEFT + 18.0,
            ly,
            esc(variant)
        );
    }
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="{:.1}" fill="#666" font-size="11" text-anchor="end">{}</text><text x="{:.1}" y="{:.1}" fill="#666" font-size="11" text-anchor="end">{}</text>"##,
        LEFT - 6.0,
        TOP + 4.0,
        num(hi),
        LEFT - 6.0,
        TOP + PLOT_H + 4.0,
        num(lo)
    );
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            out,
            r##"<text x="{LEFT}" y="{:.1}" fill="#666" font-size="11">{}</text><text x="{:.1}" y="{:.1}" fill="#666" font-size="11" text-anchor="end">{}</text>"##,
            TOP + PLOT_H + 18.0,
            esc(first),
            LEFT + plot_w,
            TOP + PLOT_H + 18.0,
            esc(last)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{analyze_metric, ArmInput, MetricInput, Settings};
    use crate::definition::MetricDef;
    use crate::stats::Moments;

    #[test]
    fn draws_every_treatment_and_escapes_names() {
        let mk = |vals: &[f64]| {
            let mut m = Moments::default();
            vals.iter().for_each(|&x| m.add(x));
            m
        };
        let c: Vec<f64> = (0..100).map(|i| (i % 3) as f64).collect();
        let t: Vec<f64> = (0..100).map(|i| (i % 3) as f64 + 0.5).collect();
        let arms = vec![
            ArmInput {
                variant: "control".into(),
                is_control: true,
                assigned: 100,
                observed: mk(&c),
                covariate: None,
                periods: vec![],
                ratio: None,
                quantile: None,
            },
            ArmInput {
                variant: "<b> & co".into(),
                is_control: false,
                assigned: 100,
                observed: mk(&t),
                covariate: None,
                periods: vec![],
                ratio: None,
                quantile: None,
            },
        ];
        let m = analyze_metric(
            &Settings::fixed(0.05, 10),
            &MetricInput { cap: None, name: "score".into(), def: MetricDef::default(), arms },
        );
        let svg = forest_plot("A \"test\"", &[m]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("&lt;b&gt; &amp; co"));
        assert!(svg.contains("A &quot;test&quot;"));
        assert!(svg.contains("#1a7f37"), "a significant improvement is green");
        assert_eq!(svg.matches("<circle").count(), 1);
        // XML 1.0 forbids most control characters, even escaped: they are shown as text.
        let m = analyze_metric(
            &Settings::fixed(0.05, 10),
            &MetricInput { cap: None, name: "a\u{1}b\u{FFFE}".into(), def: MetricDef::default(), arms: vec![] },
        );
        let svg = forest_plot("t\u{8}", &[m]);
        assert!(svg.contains("a\\u{0001}b\\u{FFFE}") && svg.contains("t\\u{0008}"));
        assert!(!svg.chars().any(|c| (c.is_control() && c != '\n') || c == '\u{FFFE}'));
    }

    #[test]
    fn timeline_draws_a_line_and_band_per_treatment() {
        use crate::timeline::{timeline, Arm, Cell, Enrolled};
        let mk = |vals: &[f64]| {
            let mut m = Moments::default();
            vals.iter().for_each(|&x| m.add(x));
            m
        };
        let arms = vec![
            Arm { variant: "control".into(), is_control: true },
            Arm { variant: "b & <c>".into(), is_control: false },
            Arm { variant: "d".into(), is_control: false },
        ];
        // Day 0: too little data for d; days 1-2: every treatment compared.
        let cells = vec![
            Cell { day: 0, arm: 0, period: 0, moments: mk(&[1.0, 2.0, 3.0]) },
            Cell { day: 0, arm: 1, period: 0, moments: mk(&[2.0, 3.0, 4.0]) },
            Cell { day: 1, arm: 2, period: 0, moments: mk(&[1.0, 2.5, 2.0]) },
            Cell { day: 2, arm: 1, period: 0, moments: mk(&[2.0, 3.0, 4.0, 5.0]) },
        ];
        let enrolled = [3u64, 4, 3].iter().enumerate().map(|(arm, &users)| Enrolled { day: 0, arm, period: 0, users });
        let def = MetricDef::default();
        let days =
            timeline(&Settings::fixed(0.05, 2), "m", &def, None, &arms, 0, 3, &cells, &enrolled.collect::<Vec<_>>());
        let labels: Vec<String> = ["2026-01-05", "2026-01-06", "2026-01-07"].map(String::from).to_vec();
        let svg = timeline_plot("exp", "m", &labels, &days);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<polygon").count(), 2);
        assert!(svg.contains("b &amp; &lt;c&gt;") && svg.contains("2026-01-05") && svg.contains("2026-01-07"));
        assert!(svg.contains("on the last day"));
        // No data at all: an empty chart, not a panic.
        let svg = timeline_plot("exp", "m", &[], &[]);
        assert!(svg.ends_with("</svg>\n"));
    }
}
