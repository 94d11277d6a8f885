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
                    let _ = write!(
                        out,
                        r##"<text x="{:.1}" y="{:.1}" fill="#666">not enough data</text>"##,
                        LABEL_W,
                        cy + 4.0
                    );
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
            },
            ArmInput {
                variant: "<b> & co".into(),
                is_control: false,
                assigned: 100,
                observed: mk(&t),
                covariate: None,
                periods: vec![],
                ratio: None,
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
}
