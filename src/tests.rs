//! `#[pg_test]`s for the pgrx layer: they run inside a PostgreSQL backend started by
//! `cargo pgrx test`. The SQL surface is covered by tests/pg_regress, concurrency and
//! cross-session behaviour by tests/client.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use pgrx::JsonB;
    use serde_json::{json, Value};

    /// A started three-arm experiment (control, b, c) with the fixture's assignments and their
    /// enrollment times.
    fn three_arms_enrolled(name: &str, primary: &str, fixture: &Value) -> i64 {
        let id = create(json!({
            "name": name, "experiment_type": "prompt", "primary_metric": primary, "min_sample_size": 10,
            "metrics": fixture["metrics"],
            "variants": [{"name": "control", "is_control": true, "traffic_allocation": 34},
                         {"name": "b", "traffic_allocation": 33}, {"name": "c", "traffic_allocation": 33}]}));
        Spi::run_with_args("SELECT ab_start_experiment($1)", &[id.into()]).unwrap();
        Spi::run_with_args(
            "INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at) \
             SELECT $1, a ->> 'user_id', v.id, (a ->> 'assigned_at')::timestamptz FROM jsonb_array_elements($2) a \
             JOIN ab_variants v ON v.experiment_id = $1 AND v.name = a ->> 'variant'",
            &[id.into(), JsonB(fixture["assignments"].clone()).into()],
        )
        .unwrap();
        id
    }

    fn create(definition: Value) -> i64 {
        Spi::get_one_with_args::<i64>("SELECT ab_create_experiment($1)", &[JsonB(definition).into()]).unwrap().unwrap()
    }

    fn variant_of(experiment: &str, user: &str) -> Option<String> {
        Spi::get_one_with_args::<String>(
            "SELECT ab_get_variant($1, $2) ->> 'variant'",
            &[experiment.into(), user.into()],
        )
        .unwrap()
    }

    fn two_arms(name: &str) -> Value {
        json!({"name": name, "experiment_type": "feature", "primary_metric": "conversion_rate", "salt": "pg-test",
               "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50},
                            {"name": "b", "traffic_allocation": 50}]})
    }

    /// Assigns users exactly as a fixture says, bypassing the hash.
    fn assign_as_in(id: i64, fixture: &Value) {
        Spi::run_with_args(
            "INSERT INTO ab_assignments (experiment_id, user_id, variant_id) \
             SELECT $1, a ->> 'user_id', v.id FROM jsonb_array_elements($2) a \
             JOIN ab_variants v ON v.experiment_id = $1 AND v.name = a ->> 'variant'",
            &[id.into(), JsonB(fixture["assignments"].clone()).into()],
        )
        .unwrap();
    }

    #[track_caller]
    fn assert_close(actual: Option<f64>, expected: &Value, what: &str) {
        assert_close_to(actual, expected, what, 1e-9)
    }

    /// Within `rel` relative; STATS.md asks 1e-6, most columns agree to 1e-9.
    #[track_caller]
    fn assert_close_to(actual: Option<f64>, expected: &Value, what: &str, rel: f64) {
        match expected.as_f64() {
            None => assert_eq!(actual, None, "{what}"),
            Some(e) => {
                let a = actual.unwrap_or_else(|| panic!("{what}: NULL, expected {e}"));
                assert!((a - e).abs() <= rel * e.abs().max(1e-300), "{what}: got {a:e}, scipy {e:e}");
            }
        }
    }

    /// A fixture value as PostgreSQL prints it as text (None for null).
    fn json_text(v: &Value) -> Option<String> {
        match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// Every row of `SELECT ... FROM {from}` ($1 = id) equals the fixture's row with the same
    /// keys (pairs of an SQL expression and the fixture's field, compared as text): users
    /// exactly, `cols` to 1e-9 relative (p-values 1e-6); and every fixture row is seen.
    fn assert_rows_match(from: &str, id: i64, keys: &[(&str, &str)], expected: &[Value], cols: &[&str]) {
        let key_sql: Vec<String> = keys.iter().map(|(sql, _)| format!("({sql})::text")).collect();
        let sql = format!("SELECT {}, users, {} FROM {from}", key_sql.join(", "), cols.join(", "));
        Spi::connect(|client| {
            let mut seen = 0;
            for row in client.select(sql.as_str(), None, &[id.into()]).unwrap() {
                let got: Vec<Option<String>> = (1..=keys.len()).map(|i| row.get::<String>(i).unwrap()).collect();
                let what = format!("{got:?}");
                let e = expected
                    .iter()
                    .find(|e| keys.iter().zip(&got).all(|((_, field), g)| json_text(&e[*field]) == *g))
                    .unwrap_or_else(|| panic!("unexpected row {what}"));
                assert_eq!(row.get::<i64>(keys.len() + 1).unwrap(), e["users"].as_i64(), "{what}");
                for (k, col) in cols.iter().enumerate() {
                    let rel = if col.starts_with("p_value") { 1e-6 } else { 1e-9 };
                    assert_close_to(row.get(keys.len() + 2 + k).unwrap(), &e[*col], &format!("{what} {col}"), rel);
                }
                seen += 1;
            }
            assert_eq!(seen, expected.len());
        });
    }

    /// Every row of ab_analyze($1) matching `filter` equals the fixture's row of the same metric
    /// and variant.
    fn assert_analysis_matches(id: i64, filter: &str, expected: &[Value], cols: &[&str]) {
        let from = format!("ab_analyze($1) WHERE {filter}");
        assert_rows_match(&from, id, &[("metric_name", "metric"), ("variant", "variant")], expected, cols)
    }

    /// ab_analyze on raw results equals scipy's Welch test on per-user values
    /// (tests/fixtures/generate.py): three arms, mean and sum metrics, a zero control mean.
    #[pg_test]
    fn analysis_matches_scipy() {
        let fixture: Value = serde_json::from_str(include_str!("../tests/fixtures/analysis.json")).unwrap();
        let metrics: serde_json::Map<String, Value> = fixture["metrics"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), json!({"aggregation": v})))
            .collect();
        let id = create(json!({
            "name": "fixture", "experiment_type": "prompt", "primary_metric": "score", "min_sample_size": 50,
            "metrics": metrics,
            "variants": [{"name": "control", "is_control": true, "traffic_allocation": 40},
                         {"name": "short prompt", "traffic_allocation": 30},
                         {"name": "long prompt", "traffic_allocation": 30}]}));
        Spi::run_with_args("SELECT ab_start_experiment($1)", &[id.into()]).unwrap();
        assign_as_in(id, &fixture);
        let recorded = Spi::get_one_with_args::<i64>(
            "SELECT count(*) FILTER (WHERE ab_record_result($1, r ->> 'metric', (r ->> 'value')::float8, r ->> 'user_id')) \
             FROM jsonb_array_elements($2) r",
            &[id.into(), JsonB(fixture["results"].clone()).into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(recorded as usize, fixture["results"].as_array().unwrap().len());

        Spi::connect(|client| {
            let rows = client
                .select(
                    "SELECT metric_name, variant, is_control, users, mean, std_dev, diff, ci_lower, ci_upper, \
                     relative_lift, p_value, significant, effect_size FROM ab_analyze($1)",
                    None,
                    &[id.into()],
                )
                .unwrap();
            let mut seen = 0;
            for row in rows {
                let metric: String = row.get(1).unwrap().unwrap();
                let variant: String = row.get(2).unwrap().unwrap();
                let e = fixture["expected"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["metric"] == metric.as_str() && e["variant"] == variant.as_str())
                    .unwrap_or_else(|| panic!("unexpected row {metric}/{variant}"));
                let what = format!("{metric}/{variant}");
                assert_eq!(row.get::<bool>(3).unwrap(), e["is_control"].as_bool(), "{what}");
                assert_eq!(row.get::<i64>(4).unwrap(), e["users"].as_i64(), "{what}");
                assert_close(row.get(5).unwrap(), &e["mean"], &format!("{what} mean"));
                assert_close(row.get(6).unwrap(), &e["std_dev"], &format!("{what} std_dev"));
                for (i, col) in [
                    (7, "diff"),
                    (8, "ci_lower"),
                    (9, "ci_upper"),
                    (10, "relative_lift"),
                    (11, "p_value"),
                    (13, "effect_size"),
                ] {
                    assert_close(row.get(i).unwrap(), &e[col], &format!("{what} {col}"));
                }
                assert_eq!(row.get::<bool>(12).unwrap(), e["significant"].as_bool(), "{what} significant");
                seen += 1;
            }
            assert_eq!(seen, fixture["expected"].as_array().unwrap().len());
        });
    }

    /// Ratio metrics through ab_record_result and ab_analyze equal GrowthBook's gbstats
    /// (tests/fixtures/ratio.json): tokens per conversation and resolutions per conversation
    /// over three arms, users without conversations included as zeros.
    #[pg_test]
    fn ratio_metrics_match_gbstats() {
        let fixture: Value = serde_json::from_str(include_str!("../tests/fixtures/ratio.json")).unwrap();
        let id = create(json!({
            "name": "ratios", "experiment_type": "prompt", "primary_metric": "tokens_per_conversation",
            "metrics": fixture["metrics"],
            "variants": [{"name": "control", "is_control": true, "traffic_allocation": 40},
                         {"name": "short", "traffic_allocation": 38},
                         {"name": "long", "traffic_allocation": 22}]}));
        Spi::run_with_args("SELECT ab_start_experiment($1)", &[id.into()]).unwrap();
        assign_as_in(id, &fixture);
        let recorded = Spi::get_one_with_args::<i64>(
            "SELECT count(*) FILTER (WHERE ab_record_result($1, r ->> 'metric', (r ->> 'value')::float8, r ->> 'user_id')) \
             FROM jsonb_array_elements($2) r",
            &[id.into(), JsonB(fixture["results"].clone()).into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(recorded as usize, fixture["results"].as_array().unwrap().len());
        let expected = fixture["expected"].as_array().unwrap();
        let cols = ["mean", "std_dev", "diff", "ci_lower", "ci_upper", "relative_lift", "p_value", "effect_size"];
        assert_analysis_matches(id, "metric_type = 'ratio'", expected, &cols);
        let tests = Spi::get_one_with_args::<i64>(
            "SELECT count(*) FROM ab_analyze($1) WHERE metric_type = 'ratio' AND NOT is_control AND test = 'welch'",
            &[id.into()],
        );
        assert_eq!(tests.unwrap(), Some(4));
    }

    /// Capped metrics equal scipy (and gbstats for a ratio with a capped numerator) on the
    /// capped per-user values of tests/fixtures/capping.json: a 99th-percentile cap on a mean
    /// metric, an absolute cap on a sum metric.
    #[pg_test]
    fn capped_metrics_match_the_reference() {
        let fixture: Value = serde_json::from_str(include_str!("../tests/fixtures/capping.json")).unwrap();
        let id = create(json!({
            "name": "capped", "experiment_type": "model", "primary_metric": "response_time",
            "metrics": fixture["metrics"],
            "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50},
                         {"name": "fast", "traffic_allocation": 50}]}));
        Spi::run_with_args("SELECT ab_start_experiment($1)", &[id.into()]).unwrap();
        assign_as_in(id, &fixture);
        Spi::run_with_args(
            "SELECT ab_record_result($1, r ->> 'metric', (r ->> 'value')::float8, r ->> 'user_id') FROM jsonb_array_elements($2) r",
            &[id.into(), JsonB(fixture["results"].clone()).into()],
        )
        .unwrap();
        let expected = fixture["expected"].as_array().unwrap();
        let cols = ["mean", "std_dev", "diff", "ci_lower", "ci_upper", "p_value"];
        assert_analysis_matches(id, "metric_name <> 'conversations'", expected, &cols);
        // The summary states each cap, the percentile's as its value in this data.
        let summary = Spi::get_one::<String>("SELECT ab_summary('capped')").unwrap().unwrap();
        let cap = ab_core::summary::fmt_cap(expected[0]["cap"].as_f64().unwrap());
        assert!(summary.contains(&format!("per-user mean, capped at {cap} (the 99th percentile)")), "{summary}");
        assert!(summary.contains("per-user sum, capped at 5000,"), "{summary}");
    }

    /// ab_timeline equals tests/fixtures/timeline.json (pandas per-day cumulative per-user
    /// values, scipy, statsmodels, Holm): three arms, binary, mean and capped sum metrics,
    /// a day with no activity; its last day equals ab_analyze.
    #[pg_test]
    fn timeline_matches_the_reference() {
        let fixture: Value = serde_json::from_str(include_str!("../tests/fixtures/timeline.json")).unwrap();
        Spi::run("SET LOCAL TimeZone = 'UTC'").unwrap();
        let id = three_arms_enrolled("over time", "resolved", &fixture);
        Spi::run_with_args(
            "INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value, recorded_at) \
             SELECT $1, a.variant_id, r ->> 'user_id', r ->> 'metric', (r ->> 'value')::float8, (r ->> 'recorded_at')::timestamptz \
             FROM jsonb_array_elements($2) r JOIN ab_assignments a ON a.experiment_id = $1 AND a.user_id = r ->> 'user_id'",
            &[id.into(), JsonB(fixture["results"].clone()).into()],
        )
        .unwrap();
        Spi::run_with_args("SELECT ab_rebuild_user_metrics($1)", &[id.into()]).unwrap();
        let expected = fixture["expected"].as_array().unwrap();
        let cols = ["mean", "diff", "ci_lower", "ci_upper", "p_value", "p_value_adjusted"];
        let keys = [("to_char(day, 'YYYY-MM-DD')", "day"), ("metric_name", "metric"), ("variant", "variant")];
        assert_rows_match("ab_timeline($1)", id, &keys, expected, &cols);
        // The last day is the analysis of all the data (from the per-user state).
        let last = expected.last().unwrap()["day"].as_str().unwrap().to_string();
        let mismatches = Spi::get_one_with_args::<i64>(
            "SELECT count(*) FROM ab_analyze($1) a FULL JOIN (SELECT * FROM ab_timeline($1) WHERE day = $2::date) t \
               USING (metric_name, variant) \
             WHERE a.users IS DISTINCT FROM t.users OR a.test IS DISTINCT FROM t.test \
                OR a.significant IS DISTINCT FROM t.significant \
                OR abs(a.diff - t.diff) > 1e-9 * abs(a.diff) OR abs(a.ci_lower - t.ci_lower) > 1e-9 * abs(a.ci_lower) \
                OR abs(a.p_value - t.p_value) > 1e-9 * a.p_value OR (a.diff IS NULL) <> (t.diff IS NULL)",
            &[id.into(), last.as_str().into()],
        )
        .unwrap();
        assert_eq!(mismatches, Some(0));
    }

    /// Metrics read from an application table equal tests/fixtures/sources.json (pandas from
    /// the raw rows: enrollment, windows, filters, silent users; scipy, statsmodels, gbstats
    /// for the ratio, CUPED on the 30 days before enrollment).
    #[pg_test]
    fn source_metrics_match_the_reference() {
        let fixture: Value = serde_json::from_str(include_str!("../tests/fixtures/sources.json")).unwrap();
        Spi::run(
            "CREATE TABLE public.loan_applications (borrower_id text, applied_at timestamptz, status text, amount numeric)",
        )
        .unwrap();
        Spi::run_with_args(
            "INSERT INTO public.loan_applications SELECT l ->> 'borrower_id', (l ->> 'applied_at')::timestamptz, \
             l ->> 'status', (l ->> 'amount')::numeric FROM jsonb_array_elements($1) l",
            &[JsonB(fixture["loans"].clone()).into()],
        )
        .unwrap();
        let id = three_arms_enrolled("from the loans table", "funded_14d", &fixture);
        let cols = [
            "mean",
            "diff",
            "ci_lower",
            "ci_upper",
            "p_value",
            "p_value_adjusted",
            "cuped_diff",
            "cuped_p_value",
            "cuped_variance_reduction",
        ];
        assert_analysis_matches(id, "true", fixture["expected"].as_array().unwrap(), &cols);
    }

    /// ab_breakdown equals tests/fixtures/breakdown.json (scipy and statsmodels per segment,
    /// Holm across every segment and treatment): three arms, a binary and a mean metric, users
    /// without the attribute as a segment of their own.
    #[pg_test]
    fn breakdown_matches_the_reference() {
        let fixture: Value = serde_json::from_str(include_str!("../tests/fixtures/breakdown.json")).unwrap();
        let id = create(json!({
            "name": "by loan type", "experiment_type": "prompt", "primary_metric": "resolved", "min_sample_size": 10,
            "metrics": fixture["metrics"], "breakdowns": ["loan_type"],
            "variants": [{"name": "control", "is_control": true, "traffic_allocation": 34},
                         {"name": "b", "traffic_allocation": 33}, {"name": "c", "traffic_allocation": 33}]}));
        Spi::run_with_args("SELECT ab_start_experiment($1)", &[id.into()]).unwrap();
        Spi::run_with_args(
            "INSERT INTO ab_assignments (experiment_id, user_id, variant_id, attributes) \
             SELECT $1, a ->> 'user_id', v.id, CASE WHEN a ->> 'loan_type' IS NOT NULL \
                                                   THEN jsonb_build_object('loan_type', a ->> 'loan_type') END \
             FROM jsonb_array_elements($2) a JOIN ab_variants v ON v.experiment_id = $1 AND v.name = a ->> 'variant'",
            &[id.into(), JsonB(fixture["assignments"].clone()).into()],
        )
        .unwrap();
        Spi::run_with_args(
            "SELECT ab_record_result($1, r ->> 'metric', (r ->> 'value')::float8, r ->> 'user_id') FROM jsonb_array_elements($2) r",
            &[id.into(), JsonB(fixture["results"].clone()).into()],
        )
        .unwrap();
        let expected = fixture["expected"].as_array().unwrap();
        let cols = ["mean", "diff", "ci_lower", "ci_upper", "p_value", "p_value_adjusted"];
        // The adjusted significance and the number of comparisons are keys: compared as text.
        let keys = [
            ("value", "value"),
            ("metric_name", "metric"),
            ("variant", "variant"),
            ("significant", "significant"),
            ("CASE WHEN NOT is_control THEN comparisons END", "comparisons"),
        ];
        assert_rows_match("ab_breakdown($1, 'loan_type')", id, &keys, expected, &cols);
    }

    /// Quantile metrics through ab_record_result and ab_analyze equal gbstats'
    /// QuantileStatistic / QuantileClusteredStatistic and TwoSidedTTest on numpy's quantiles
    /// (tests/fixtures/quantile.json): a median of per-user values, the 90th and 99th
    /// percentiles of every recorded value.
    #[pg_test]
    fn quantile_metrics_match_gbstats() {
        let fixture: Value = serde_json::from_str(include_str!("../tests/fixtures/quantile.json")).unwrap();
        let id = create(json!({
            "name": "latency", "experiment_type": "model", "primary_metric": "p90", "min_sample_size": 50,
            "metrics": fixture["metrics"],
            "variants": [{"name": "control", "is_control": true, "traffic_allocation": 34},
                         {"name": "faster", "traffic_allocation": 33}, {"name": "slower", "traffic_allocation": 33}]}));
        Spi::run_with_args("SELECT ab_start_experiment($1)", &[id.into()]).unwrap();
        assign_as_in(id, &fixture);
        Spi::run_with_args(
            "SELECT ab_record_result($1, r ->> 'metric', (r ->> 'value')::float8, r ->> 'user_id') FROM jsonb_array_elements($2) r",
            &[id.into(), JsonB(fixture["results"].clone()).into()],
        )
        .unwrap();
        let expected = fixture["expected"].as_array().unwrap();
        let cols = ["mean", "diff", "ci_lower", "ci_upper", "p_value", "p_value_adjusted"];
        assert_analysis_matches(id, "metric_type = 'quantile'", expected, &cols);
        let summary = Spi::get_one::<String>("SELECT ab_summary('latency')").unwrap().unwrap();
        assert!(
            summary
                .contains("p90 (primary, the 90th percentile of response_time, every recorded value, lower is better)"),
            "{summary}"
        );
        assert!(
            summary.contains("p50_user (the 50th percentile of response_time, per-user values, lower is better)"),
            "{summary}"
        );
    }

    #[pg_test]
    fn full_flow_declares_a_winner() {
        let id = create(two_arms("flow"));
        assert_eq!(variant_of("flow", "u1"), None, "a draft assigns nobody");
        Spi::run("SELECT ab_start_experiment('flow')").unwrap();
        for g in 0..400 {
            let user = format!("u{g}");
            let variant = variant_of("flow", &user).unwrap();
            let converted = if variant == "a" { g % 10 < 3 } else { g % 10 < 6 };
            let ok = Spi::get_one_with_args::<bool>(
                "SELECT ab_record_result('flow', 'conversion_rate', $1, $2)",
                &[(converted as i32 as f64).into(), user.as_str().into()],
            )
            .unwrap();
            assert_eq!(ok, Some(true));
        }
        let out = Spi::get_one::<JsonB>("SELECT ab_stop_experiment('flow', true)").unwrap().unwrap().0;
        assert_eq!(out["winner"], "b", "{out}");
        assert_eq!(out["status"], "stopped");
        let winner =
            Spi::get_one_with_args::<String>("SELECT winner_variant FROM ab_experiments WHERE id = $1", &[id.into()]);
        assert_eq!(winner.unwrap().as_deref(), Some("b"));
        let summary = Spi::get_one::<String>("SELECT ab_summary('flow')").unwrap().unwrap();
        assert!(summary.contains("Declared winner: b"), "{summary}");
    }

    /// The backend cache follows lifecycle changes and hand-made edits at once.
    #[pg_test]
    fn cache_follows_changes() {
        create(two_arms("cached"));
        Spi::run("SELECT ab_start_experiment('cached')").unwrap();
        assert!(variant_of("cached", "u1").is_some());
        // Send all new traffic to b by hand: the statement trigger invalidates the cache.
        Spi::run("UPDATE ab_variants SET traffic_allocation = CASE name WHEN 'a' THEN 0 ELSE 100 END").unwrap();
        for g in 0..50 {
            assert_eq!(variant_of("cached", &format!("new{g}")).as_deref(), Some("b"));
        }
        Spi::run("SELECT ab_stop_experiment('cached')").unwrap();
        assert_eq!(variant_of("cached", "u1"), None);
        Spi::run("SELECT ab_delete_experiment('cached')").unwrap();
        create(two_arms("cached"));
        assert_eq!(variant_of("cached", "u1"), None, "the new experiment of the same name is a draft");
    }

    #[pg_test(error = "experiment \"missing\" does not exist")]
    fn unknown_experiment_is_an_error() {
        variant_of("missing", "u1");
    }

    #[pg_test(error = "traffic allocations sum to 120, must be at most 100")]
    fn over_allocation_is_an_error() {
        let mut d = two_arms("over");
        d["variants"][1]["traffic_allocation"] = json!(70);
        create(d);
    }

    /// The "done when" scenario of the statistics: three arms, a binary primary metric, a
    /// lower-is-better guardrail with a covariate, sequential mode. Every column agrees with
    /// the independent numpy/scipy/statsmodels analysis in tests/fixtures/generate.py.
    #[pg_test]
    fn full_analysis_matches_the_reference() {
        let fixture: Value = serde_json::from_str(include_str!("../tests/fixtures/analysis_full.json")).unwrap();
        let id = create(json!({
            "name": "full", "experiment_type": "model", "primary_metric": "resolved", "min_sample_size": 100,
            "sequential": true, "sequential_tuning": 3000,
            "metrics": {"resolved": {"type": "binary", "mde": 0.03},
                        "response_time": {"direction": "lower", "mde": 15}},
            "variants": [{"name": "control", "is_control": true, "traffic_allocation": 40},
                         {"name": "b", "traffic_allocation": 30},
                         {"name": "c", "traffic_allocation": 30}]}));
        Spi::run_with_args("SELECT ab_start_experiment($1)", &[id.into()]).unwrap();
        assign_as_in(id, &fixture);
        Spi::run_with_args(
            "SELECT ab_record_result($1, r ->> 'metric', (r ->> 'value')::float8, r ->> 'user_id') \
             FROM jsonb_array_elements($2) r",
            &[id.into(), JsonB(fixture["results"].clone()).into()],
        )
        .unwrap();
        Spi::run_with_args(
            "SELECT ab_record_covariate($1, c ->> 'metric', c ->> 'user_id', (c ->> 'value')::float8) \
             FROM jsonb_array_elements($2) c",
            &[id.into(), JsonB(fixture["covariates"].clone()).into()],
        )
        .unwrap();
        let rows = Spi::get_one_with_args::<JsonB>("SELECT jsonb_agg(to_jsonb(a)) FROM ab_analyze($1) a", &[id.into()])
            .unwrap()
            .unwrap()
            .0;
        let rows = rows.as_array().unwrap();
        let expected = fixture["expected"].as_array().unwrap();
        assert_eq!(rows.len(), expected.len());
        for e in expected {
            let r = rows
                .iter()
                .find(|r| r["metric_name"] == e["metric"] && r["variant"] == e["variant"])
                .unwrap_or_else(|| panic!("no row for {e}"));
            let what = format!("{}/{}", e["metric"], e["variant"]);
            assert_eq!(r["users"], e["users"], "{what}");
            for col in [
                "mean",
                "std_dev",
                "diff",
                "ci_lower",
                "ci_upper",
                "p_value",
                "p_value_adjusted",
                "relative_lift",
                "effect_size",
                "chance_to_beat_control",
                "expected_loss",
                "srm_p_value",
                "cuped_diff",
                "cuped_ci_lower",
                "cuped_ci_upper",
                "cuped_p_value",
                "cuped_variance_reduction",
            ] {
                if let Some(x) = e.get(col) {
                    // Expected loss is a difference of two nearly equal terms far in the tail.
                    let rel = if col == "expected_loss" { 1e-6 } else { 1e-9 };
                    assert_close_to(r[col].as_f64(), x, &format!("{what} {col}"), rel);
                } else if !(col == "srm_p_value" || col == "mean" || col == "std_dev") {
                    assert!(r[col].is_null(), "{what} {col} should be NULL, got {}", r[col]);
                }
            }
            for col in ["significant", "test", "users_needed"] {
                if let Some(x) = e.get(col) {
                    assert_eq!(&r[col], x, "{what} {col}");
                }
            }
        }
        // The binary primary metric decides, and "c" wins under the winner rule.
        let out =
            Spi::get_one_with_args::<JsonB>("SELECT ab_stop_experiment($1, true)", &[id.into()]).unwrap().unwrap().0;
        assert_eq!(out["winner"], "c", "{out}");
    }

    /// A panic caught inside the settings and snapshot helpers leaves neither the pinned
    /// search_path nor the pushed snapshot behind.
    #[pg_test]
    fn settings_and_snapshots_are_restored_when_a_panic_is_caught() {
        let path = || Spi::get_one::<String>("SHOW search_path").unwrap().unwrap();
        let before = path();
        let active = unsafe { pg_sys::GetActiveSnapshot() };
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::security::with_pinned_search_path(|| {
                crate::cache::with_fresh_snapshot(|| {
                    assert_eq!(path(), "pg_catalog, pg_temp");
                    assert_ne!(unsafe { pg_sys::GetActiveSnapshot() }, active);
                    panic!("caught by the test");
                })
            })
        }));
        assert!(caught.is_err());
        assert_eq!(path(), before);
        assert_eq!(unsafe { pg_sys::GetActiveSnapshot() }, active);
    }
}
