//! One row per (metric, variant): every figure of an analysis's result, by name. Each SQL
//! function that returns or stores these rows is a projection of this struct (pgrx's table
//! functions return at most 32 columns: a function showing other figures projects others).

use super::MetricResult;

#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub metric_name: String,
    pub variant: String,
    pub is_control: bool,
    pub users: i64,
    pub mean: Option<f64>,
    pub std_dev: Option<f64>,
    pub diff: Option<f64>,
    pub ci_lower: Option<f64>,
    pub ci_upper: Option<f64>,
    pub relative_lift: Option<f64>,
    pub p_value: Option<f64>,
    pub significant: Option<bool>,
    pub effect_size: Option<f64>,
    pub metric_type: String,
    pub test: Option<String>,
    pub p_value_adjusted: Option<f64>,
    pub chance_to_beat_control: Option<f64>,
    pub expected_loss: Option<f64>,
    pub users_needed: Option<i64>,
    pub srm_p_value: Option<f64>,
    pub cuped_diff: Option<f64>,
    pub cuped_ci_lower: Option<f64>,
    pub cuped_ci_upper: Option<f64>,
    pub cuped_p_value: Option<f64>,
    pub cuped_variance_reduction: Option<f64>,
    pub relative_lift_ci_lower: Option<f64>,
    pub relative_lift_ci_upper: Option<f64>,
    pub relative_lift_p_value: Option<f64>,
    pub margin: Option<f64>,
    pub non_inferiority_p_value: Option<f64>,
    pub non_inferior: Option<bool>,
    /// Stored in ab_insights, not returned by ab_analyze.
    pub recommendation: String,
    pub confidence: Option<f64>,
    /// In neither yet: the cap the values were limited to, the variance of `diff` and of
    /// `relative_lift`, the adjusted non-inferiority p-value.
    pub cap: Option<f64>,
    pub variance: Option<f64>,
    pub relative_variance: Option<f64>,
    pub non_inferiority_p_value_adjusted: Option<f64>,
}

impl MetricResult {
    /// The result's rows, one per variant in the arms' order; `srm_p_value` is the
    /// experiment's sample ratio check.
    pub fn rows(&self, srm_p_value: Option<f64>) -> Vec<ResultRow> {
        self.arms
            .iter()
            .map(|a| {
                let c = a.comparison;
                let k = c.and_then(|c| c.cuped);
                let ni = c.and_then(|c| c.non_inferiority);
                let relative_ci = c.and_then(|c| c.relative_ci);
                ResultRow {
                    metric_name: self.name.clone(),
                    variant: a.variant.clone(),
                    is_control: a.is_control,
                    users: a.users as i64,
                    mean: a.mean,
                    std_dev: a.std_dev,
                    diff: c.map(|c| c.diff),
                    ci_lower: c.map(|c| c.ci_lower),
                    ci_upper: c.map(|c| c.ci_upper),
                    relative_lift: c.and_then(|c| c.relative_lift),
                    p_value: c.map(|c| c.p_value),
                    significant: c.map(|c| c.significant),
                    effect_size: c.and_then(|c| c.effect_size),
                    metric_type: self.def.kind.as_str().to_string(),
                    test: c.map(|c| c.test.to_string()),
                    p_value_adjusted: c.map(|c| c.p_adjusted),
                    chance_to_beat_control: c.map(|c| c.chance_to_beat_control),
                    expected_loss: c.map(|c| c.expected_loss),
                    users_needed: c.and_then(|c| c.users_needed).map(|n| n.min(i64::MAX as u64) as i64),
                    srm_p_value,
                    cuped_diff: k.map(|k| k.diff),
                    cuped_ci_lower: k.map(|k| k.ci_lower),
                    cuped_ci_upper: k.map(|k| k.ci_upper),
                    cuped_p_value: k.map(|k| k.p_value),
                    cuped_variance_reduction: k.map(|k| k.variance_reduction),
                    relative_lift_ci_lower: relative_ci.map(|r| r.0),
                    relative_lift_ci_upper: relative_ci.map(|r| r.1),
                    relative_lift_p_value: c.and_then(|c| c.relative_p_value),
                    margin: self.def.margin,
                    non_inferiority_p_value: ni.map(|n| n.p_value),
                    non_inferior: ni.map(|n| n.passed),
                    recommendation: a.recommendation.clone(),
                    confidence: a.confidence,
                    cap: self.cap,
                    variance: c.map(|c| c.variance),
                    relative_variance: c.and_then(|c| c.relative_variance),
                    non_inferiority_p_value_adjusted: ni.map(|n| n.p_adjusted),
                }
            })
            .collect()
    }
}
