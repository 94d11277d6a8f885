//! Dimension breakdowns: the analysis of one metric within each segment of users sharing a
//! value of an attribute stored at enrollment. Each segment is a full analysis of its users;
//! the p-values are then adjusted across every segment and treatment of the metric together
//! (the experiment's correction), because reading many segments multiplies the chances that
//! one of them looks significant by chance.

use crate::analysis::{analyze_clustered, ArmInput, Clustering, MetricInput, MetricResult, Settings};
use crate::definition::{Correction, MetricDef};
use crate::stats::multiple::{benjamini_hochberg, holm};

pub struct Segment {
    /// The attribute's value; None for the users who did not give it.
    pub value: Option<String>,
    pub arms: Vec<ArmInput>,
    /// In a cluster-randomized experiment: the segment's clusters (those of its users).
    pub clustering: Option<Clustering>,
}

pub struct SegmentResult {
    pub value: Option<String>,
    pub result: MetricResult,
    /// Per arm: the comparison's p-value adjusted across every segment and treatment.
    pub p_adjusted: Vec<Option<f64>>,
}

/// The segments' analyses and the number of comparisons the adjustment covers.
pub fn breakdown(
    settings: &Settings,
    name: &str,
    def: &MetricDef,
    cap: Option<f64>,
    segments: Vec<Segment>,
) -> (Vec<SegmentResult>, usize) {
    let results: Vec<(Option<String>, MetricResult)> = segments
        .into_iter()
        .map(|s| {
            let input = MetricInput { name: name.into(), def: def.clone(), cap, arms: s.arms };
            (s.value, analyze_clustered(settings, &input, s.clustering.as_ref()))
        })
        .collect();
    let ps: Vec<f64> =
        results.iter().flat_map(|(_, r)| r.arms.iter().filter_map(|a| a.comparison.map(|c| c.p_value))).collect();
    let adjusted = match settings.correction {
        Correction::Holm => holm(&ps),
        Correction::Bh => benjamini_hochberg(&ps),
    };
    let mut next = adjusted.into_iter();
    let out = results
        .into_iter()
        .map(|(value, result)| {
            let p_adjusted = result.arms.iter().map(|a| a.comparison.and_then(|_| next.next())).collect();
            SegmentResult { value, result, p_adjusted }
        })
        .collect();
    (out, ps.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::analyze_metric;
    use crate::stats::Moments;

    fn arm(variant: &str, is_control: bool, xs: &[f64]) -> ArmInput {
        let mut observed = Moments::default();
        xs.iter().for_each(|&x| observed.add(x));
        ArmInput {
            variant: variant.into(),
            is_control,
            assigned: xs.len() as u64,
            observed,
            covariate: None,
            periods: vec![],
            ratio: None,
            quantile: None,
        }
    }

    /// Each segment is the analysis of its own users; the adjustment spans every segment.
    #[test]
    fn segments_are_analysed_apart_and_adjusted_together() {
        let settings = Settings::fixed(0.05, 2);
        let def = MetricDef::default();
        let seg = |value: Option<&str>, shift: f64| Segment {
            value: value.map(String::from),
            arms: vec![
                arm("a", true, &[1.0, 2.0, 3.0, 2.5, 1.5]),
                arm("b", false, &[1.0 + shift, 2.0 + shift, 3.0 + shift, 2.2 + shift, 1.4 + shift]),
            ],
            clustering: None,
        };
        let segments = vec![seg(Some("fha"), 1.5), seg(Some("va"), 0.1), seg(None, 0.3)];
        let alone: Vec<MetricResult> = segments
            .iter()
            .map(|s| {
                analyze_metric(
                    &settings,
                    &MetricInput { name: "m".into(), def: def.clone(), cap: None, arms: s.arms.clone() },
                )
            })
            .collect();
        let (out, comparisons) = breakdown(&settings, "m", &def, None, segments);
        assert_eq!(comparisons, 3);
        let raw: Vec<f64> = alone.iter().map(|r| r.arms[1].comparison.unwrap().p_value).collect();
        let holm = holm(&raw);
        for (i, s) in out.iter().enumerate() {
            assert_eq!(s.result, alone[i]);
            assert_eq!(s.p_adjusted, vec![None, Some(holm[i])]);
        }
        assert_eq!(out[2].value, None);
    }
}
