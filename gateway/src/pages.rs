//! The results pages: server-rendered HTML, readable without JavaScript and on a phone, built
//! from what the SQL functions return. Every piece of stored text (experiment, variant and
//! metric names, configs) is user data and goes through `esc`.
//!
//! The pages only read: the pages run `ab_analyze` and `ab_summary` inside a transaction that
//! is rolled back (nothing they store persists), and no page has a form or a link to a write
//! endpoint (the login form only sends a token to `/login`). Browsers present an analyst's
//! token in a cookie that `/login` sets.

use serde_json::Value;
use std::fmt::Write;

/// Text made safe inside HTML elements and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Text that can reorder or hide what follows it (bidirectional overrides and
            // isolates, other format and control characters) is shown as its code point; line
            // breaks and tabs stay (the summary is preformatted text).
            '\n' | '\t' => out.push(c),
            c if c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}'
                    | '\u{061c}' | '\u{feff}') =>
            {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A number as shown: four decimals, or three significant digits in scientific notation when
/// that would show nothing (or too much); "—" for none.
pub fn num(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x == 0.0 => "0".into(),
        Some(x) if x.abs() < 1e-3 || x.abs() >= 1e9 => format!("{x:.3e}"),
        Some(x) => format!("{x:.4}"),
    }
}

/// A table cell with a number: the shown form, and the exact value in `data-value` (the
/// shortest text that reads back as the same float8).
fn num_cell(col: &str, v: Option<f64>) -> String {
    match v {
        None => format!("<td class=\"n\" data-col=\"{col}\"></td>"),
        Some(x) => format!("<td class=\"n\" data-col=\"{col}\" data-value=\"{x}\">{}</td>", num(v)),
    }
}

/// A share as a percentage with up to two decimals (allocations are given that way).
fn share(v: Option<f64>) -> String {
    v.map(|x| format!("{}%", (x * 100.0).round() / 100.0)).unwrap_or_else(|| "—".into())
}

/// A relative lift as a signed percentage, with its exact value in `data-value`.
fn lift_cell(v: Option<f64>) -> String {
    match v {
        None => "<td class=\"n\" data-col=\"relative_lift\"></td>".into(),
        Some(x) => format!("<td class=\"n\" data-col=\"relative_lift\" data-value=\"{x}\">{:+.1}%</td>", x * 100.0),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.0}%", x * 100.0)).unwrap_or_else(|| "—".into())
}

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1rem auto;max-width:72rem;padding:0 1rem;color:#222}\
table{border-collapse:collapse;width:100%}th,td{padding:.3rem .5rem;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.wrap{overflow-x:auto}\
.warn{background:#fdecea;border-left:4px solid #c0392b;padding:.5rem}.good{color:#1e7e34}.bad{color:#c0392b}\
.muted{color:#666;font-size:.9em}pre{white-space:pre-wrap;background:#f6f6f6;padding:.5rem}\
img{max-width:100%;height:auto}h1{font-size:1.5rem}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>{body}\
         <p class=\"muted\">ab_testing results, read-only. JSON: <a href=\"/api/v1/experiments/\">/api/v1/experiments/</a></p>\
         </body></html>\n",
        esc(title)
    )
}

const SRM_ALPHA: f64 = 0.001;

/// The first sentence of ab_summary's recommendation: `ship "name"` or `no winner yet`.
fn short_recommendation(rec: &str) -> &str {
    let end = if rec.starts_with("ship \"") { rec.find("\". ").map(|i| i + 1) } else { rec.find(". ") };
    end.map(|i| &rec[..i]).unwrap_or(rec)
}

/// `/`: every experiment, newest first. `rows` are objects with id, name, status, type,
/// primary_metric, users, winner, days_running, progress, srm_p, layer, recommendation.
pub fn list(rows: &[Value]) -> String {
    let mut body = String::from("<h1>Experiments</h1>");
    if rows.is_empty() {
        body.push_str("<p>No experiments yet.</p>");
        return page("Experiments", &body);
    }
    body.push_str(
        "<div class=\"wrap\"><table id=\"experiments\"><thead><tr><th>Experiment</th><th>Status</th><th>Layer</th>\
         <th>Users</th><th>Days running</th><th>Sample progress</th><th>Sample ratio</th><th>Winner</th></tr></thead><tbody>",
    );
    for r in rows {
        let id = r.get("id").and_then(Value::as_i64).unwrap_or(0);
        let srm = f(r, "srm_p");
        let srm_cell = match srm {
            Some(p) if p < SRM_ALPHA => format!("<td class=\"bad srm-warning\">mismatch (p = {})</td>", num(Some(p))),
            Some(_) => "<td>consistent</td>".into(),
            None => "<td>—</td>".into(),
        };
        let error = r.get("error").filter(|e| e.is_object());
        let winner = match (r.get("winner").and_then(Value::as_str), r.get("recommendation").and_then(Value::as_str)) {
            (Some(w), _) => format!("<strong>{}</strong> (declared)", esc(w)),
            (None, _) if error.is_some() => {
                let e = error.unwrap();
                format!(
                    "<span class=\"bad analysis-error\" data-status=\"{}\">not analysed: {}</span>",
                    e.get("status").and_then(Value::as_u64).unwrap_or(0),
                    esc(s(e, "detail"))
                )
            }
            (None, Some(rec)) => {
                format!(
                    "<span class=\"recommendation\" title=\"{}\">{}</span>",
                    esc(rec),
                    esc(short_recommendation(rec))
                )
            }
            (None, None) if s(r, "status") == "stopped" => "none declared".into(),
            (None, None) => "—".into(),
        };
        let _ = write!(
            body,
            "<tr data-id=\"{id}\"><td><a href=\"/experiments/{id}\">{}</a><div class=\"muted\">{} · {}</div></td>\
             <td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>{srm_cell}<td>{winner}</td></tr>",
            esc(s(r, "name")),
            esc(s(r, "type")),
            esc(s(r, "primary_metric")),
            esc(s(r, "status")),
            r.get("layer").and_then(Value::as_str).map(esc).unwrap_or_else(|| "—".into()),
            r.get("users").and_then(Value::as_i64).unwrap_or(0),
            f(r, "days_running").map(|d| format!("{d:.1}")).unwrap_or_else(|| "—".into()),
            pct(f(r, "progress")),
        );
    }
    body.push_str("</tbody></table></div>");
    page("Experiments", &body)
}

/// What the experiment page shows; each field as the gateway read it in one transaction.
pub struct Experiment<'a> {
    /// ab_get_experiment
    pub definition: &'a Value,
    /// the experiment's row of ab_experiment_health (null when it has none)
    pub health: &'a Value,
    /// ab_analyze's rows as objects
    pub analysis: &'a [Value],
    /// ab_summary
    pub summary: &'a str,
    /// earlier analyses of the primary metric: objects with at, variant, diff, ci_lower,
    /// ci_upper, p_value_adjusted
    pub history: &'a [Value],
    /// ab_interactions' rows (None: not available for this experiment or role)
    pub interactions: Option<&'a [Value]>,
    /// ab_differential_impact's rows (None: no breakdowns, a bandit, or not for this role)
    pub segments: Option<&'a [Value]>,
    /// ab_funnel's rows (empty without funnel metrics)
    pub funnel: &'a [Value],
    /// ab_retention's rows (empty without retention metrics)
    pub retention: &'a [Value],
    /// ab_adjusted's rows (None: the experiment has no covariates and is not cluster-randomized,
    /// or they are not available to this role)
    pub adjusted: Option<&'a [Value]>,
}

fn direction(def: &Value, metric: &str) -> &'static str {
    match def.get("metrics").and_then(|m| m.get(metric)).and_then(|m| m.get("direction")).and_then(Value::as_str) {
        Some("lower") => "lower",
        _ => "higher",
    }
}

/// Significantly better (Some(true)), significantly worse (Some(false)) or neither, after the
/// metric's adjustment, in the metric's direction.
fn verdict(def: &Value, row: &Value) -> Option<bool> {
    if row.get("significant").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let diff = f(row, "diff")?;
    Some((diff > 0.0) == (direction(def, s(row, "metric_name")) == "higher"))
}

/// A bandit's weight periods (ab_get_experiment's allocation_history): when each began and
/// each variant's weight and chance of being best then.
fn bandit_history(b: &mut String, def: &Value) {
    let Some(alloc) = def.get("allocation").filter(|a| s(a, "mode") == "bandit") else {
        return;
    };
    let variants: Vec<&str> =
        def.get("variants").and_then(Value::as_array).into_iter().flatten().map(|v| s(v, "name")).collect();
    let _ = write!(
        b,
        "<h2>Weight history</h2><p class=\"muted\">Bandit on {}: weights may change every {}, each variant keeps at \
         least {}. The analysis compares the variants within each period and combines the periods.</p>\
         <div class=\"wrap\"><table id=\"weights\"><thead><tr><th>Period</th><th>From</th>",
        esc(s(alloc, "metric")),
        esc(s(alloc, "update_every")),
        share(f(alloc, "min_share")),
    );
    for v in &variants {
        let _ = write!(b, "<th>{}</th>", esc(v));
    }
    b.push_str("</tr></thead><tbody>");
    for h in def.get("allocation_history").and_then(Value::as_array).into_iter().flatten() {
        let _ = write!(
            b,
            "<tr><td class=\"n\">{}</td><td>{}</td>",
            h.get("period").and_then(Value::as_i64).unwrap_or(0),
            esc(s(h, "started_at"))
        );
        for v in &variants {
            let weight = h.get("weights").and_then(|w| w.get(*v)).and_then(Value::as_f64);
            let chance = h.get("posterior").and_then(|p| p.get(*v)).and_then(|p| f(p, "chance_best"));
            let _ = write!(
                b,
                "<td class=\"n\">{}{}</td>",
                share(weight),
                chance.map(|c| format!(" <span class=\"muted\">(best {})</span>", pct(Some(c)))).unwrap_or_default()
            );
        }
        b.push_str("</tr>");
    }
    b.push_str("</tbody></table></div>");
}

/// A rollout (allocation mode "rollout"): a banner when it is rolled back (with the reason
/// its last weight period records), its step and the guardrails' figures at the last decision.
fn rollout(b: &mut String, def: &Value) {
    let Some(alloc) = def.get("allocation").filter(|a| s(a, "mode") == "rollout") else {
        return;
    };
    let steps: Vec<f64> =
        alloc.get("steps").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_f64).collect();
    let step = alloc.get("step").and_then(Value::as_u64).unwrap_or(0) as usize;
    let state = s(alloc, "state");
    // The last decision's record (readable by roles that may read ab_allocations).
    let last = def.get("allocation_history").and_then(Value::as_array).and_then(|h| h.last()).map(|h| &h["posterior"]);
    if state == "rolled_back" {
        let reason = last.map(|p| s(p, "reason")).filter(|r| !r.is_empty());
        let _ = write!(
            b,
            "<p class=\"bad rollback-banner\"><strong>Rolled back</strong>: every user is served the control's config \
             (assignments are kept){}.</p>",
            reason.map(|r| format!(". Reason: {}", esc(r))).unwrap_or_default()
        );
    }
    let share_now = match state {
        "rolled_back" => 0.0,
        "completed" => 100.0,
        _ => steps.get(step).copied().unwrap_or(0.0),
    };
    let _ = write!(
        b,
        "<h2>Rollout</h2><p id=\"rollout\" data-state=\"{}\">{} · step {} of {} ({}) · the new variant takes {} of new users; \
         each step lasts {}.</p>",
        esc(state),
        esc(&state.replace('_', " ")),
        step + 1,
        steps.len(),
        steps.iter().map(|x| share(Some(*x))).collect::<Vec<_>>().join(", "),
        share(Some(share_now)),
        esc(s(alloc, "step_every")),
    );
    let findings: Vec<&Value> =
        last.and_then(|p| p.get("findings")).and_then(Value::as_array).into_iter().flatten().collect();
    if findings.is_empty() {
        return;
    }
    b.push_str(
        "<div class=\"wrap\"><table id=\"guardrails\"><thead><tr><th>Guardrail</th><th>Users</th><th>Harm or share \
         off</th><th>Always-valid bound</th><th>Margin</th><th>Breached</th></tr></thead><tbody>",
    );
    for g in findings {
        let breached = g.get("breached").and_then(Value::as_bool) == Some(true);
        let _ = write!(
            b,
            "<tr{}><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            if breached { " class=\"bad\"" } else { "" },
            esc(s(g, "guardrail")),
            f(g, "users").map(|u| format!("{u:.0}")).unwrap_or_default(),
            num(f(g, "estimate")),
            num(f(g, "bound")),
            num(f(g, "limit")),
            if breached { "yes" } else { "no" }
        );
    }
    b.push_str("</tbody></table></div>");
}

/// The metric names of `rows`, in their order, once each.
fn metric_names(rows: &[Value]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for row in rows {
        let m = s(row, "metric_name");
        if !names.contains(&m) {
            names.push(m);
        }
    }
    names
}

/// ab_funnel: per funnel metric, each step's users, share and conversion by variant.
fn funnels(b: &mut String, rows: &[Value]) {
    for m in metric_names(rows) {
        let _ = write!(
            b,
            "<h3>{} (funnel steps)</h3><div class=\"wrap\"><table class=\"funnel\" data-metric=\"{}\"><thead><tr>\
             <th>Step</th><th>Metric</th><th>Variant</th><th>Users</th><th>Share of enrolled</th>\
             <th>Conversion from previous step</th><th>Difference</th><th>CI low</th><th>CI high</th><th>p</th></tr></thead><tbody>",
            esc(m),
            esc(m)
        );
        for row in rows.iter().filter(|r| s(r, "metric_name") == m) {
            let step = row.get("step").and_then(Value::as_i64).unwrap_or(0);
            let users = row.get("users").and_then(Value::as_i64).unwrap_or(0);
            let _ = write!(
                b,
                "<tr data-step=\"{step}\" data-variant=\"{}\"><td class=\"n\">{step}</td><td>{}</td><td>{}</td>\
                 <td class=\"n\" data-col=\"users\" data-value=\"{users}\">{users}</td>{}{}{}{}{}{}</tr>",
                esc(s(row, "variant")),
                esc(s(row, "step_metric")),
                esc(s(row, "variant")),
                num_cell("share", f(row, "share")),
                num_cell("conversion", f(row, "conversion")),
                num_cell("conversion_diff", f(row, "conversion_diff")),
                num_cell("ci_lower", f(row, "ci_lower")),
                num_cell("ci_upper", f(row, "ci_upper")),
                num_cell("p_value", f(row, "p_value")),
            );
        }
        b.push_str("</tbody></table></div>");
    }
}

/// A cluster-randomized experiment's unit and clusters per variant, and ab_adjusted's rows: per
/// metric with covariates (every continuous and binary one in a cluster design) and treatment,
/// the adjusted (or cluster-robust) comparison with the control.
fn adjusted(b: &mut String, def: &Value, rows: Option<&[Value]>) {
    let unit = def.get("randomization_unit").and_then(Value::as_str);
    if unit.is_none() && rows.is_none_or(|r| r.is_empty()) {
        return;
    }
    b.push_str("<h2>Adjusted comparisons</h2>");
    let rows = rows.unwrap_or_default();
    if let Some(unit) = unit {
        // The first metric's rows: one per variant.
        let first = rows.first().map(|r| s(r, "metric_name"));
        let clusters: Vec<String> = rows
            .iter()
            .filter(|r| Some(s(r, "metric_name")) == first)
            .map(|r| {
                format!(
                    "{} {}",
                    r.get("clusters").and_then(Value::as_i64).map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                    esc(s(r, "variant"))
                )
            })
            .collect();
        let _ = write!(
            b,
            "<p id=\"randomization-unit\">Randomized by <strong>{}</strong>{}: users of one cluster share a variant, so \
             the analysis's comparisons are cluster-robust.</p>",
            esc(unit),
            if clusters.is_empty() { String::new() } else { format!(" (clusters: {})", clusters.join(", ")) }
        );
    }
    if rows.is_empty() {
        return;
    }
    b.push_str(
        "<div class=\"wrap\"><table id=\"adjusted-rows\"><thead><tr><th>Metric</th><th>Variant</th><th>Users</th>\
         <th>Clusters</th><th>Covariates</th><th>Adjusted mean</th><th>Diff</th><th>CI</th><th>p</th>\
         <th>Variance reduction</th></tr></thead><tbody>",
    );
    for r in rows {
        let ci = match (f(r, "ci_lower"), f(r, "ci_upper")) {
            (Some(lo), Some(hi)) => format!("{} to {}", num(Some(lo)), num(Some(hi))),
            _ => String::new(),
        };
        let _ = write!(
            b,
            "<tr data-metric=\"{}\" data-variant=\"{}\"><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td>{}{}<td class=\"n\">{}</td>{}<td class=\"n\">{}</td></tr>",
            esc(s(r, "metric_name")),
            esc(s(r, "variant")),
            esc(s(r, "metric_name")),
            esc(s(r, "variant")),
            r.get("users").and_then(Value::as_i64).unwrap_or(0),
            r.get("clusters").and_then(Value::as_i64).map(|c| c.to_string()).unwrap_or_default(),
            r.get("covariates").and_then(Value::as_i64).unwrap_or(0),
            num_cell("adjusted_mean", f(r, "adjusted_mean")),
            num_cell("diff", f(r, "diff")),
            ci,
            num_cell("p_value", f(r, "p_value")),
            pct(f(r, "variance_reduction")),
        );
    }
    b.push_str("</tbody></table></div>");
}

/// ab_retention: per retention metric, the users counted (enrolled long enough ago) and active.
fn retention(b: &mut String, rows: &[Value]) {
    for m in metric_names(rows) {
        let _ = write!(
            b,
            "<h3>{} (retention)</h3><div class=\"wrap\"><table class=\"retention\" data-metric=\"{}\"><thead><tr>\
             <th>Variant</th><th>Enrolled</th><th>Too new to count</th><th>Counted</th><th>Active</th><th>Rate</th>\
             <th>Difference</th><th>CI low</th><th>CI high</th><th>p</th></tr></thead><tbody>",
            esc(m),
            esc(m)
        );
        for row in rows.iter().filter(|r| s(r, "metric_name") == m) {
            let count = |key: &str| {
                let v = row.get(key).and_then(Value::as_i64).unwrap_or(0);
                format!("<td class=\"n\" data-col=\"{key}\" data-value=\"{v}\">{v}</td>")
            };
            let _ = write!(
                b,
                "<tr data-variant=\"{}\"><td>{}</td>{}{}{}{}{}{}{}{}{}</tr>",
                esc(s(row, "variant")),
                esc(s(row, "variant")),
                count("enrolled"),
                count("too_new"),
                count("eligible"),
                count("active"),
                num_cell("rate", f(row, "rate")),
                num_cell("diff", f(row, "diff")),
                num_cell("ci_lower", f(row, "ci_lower")),
                num_cell("ci_upper", f(row, "ci_upper")),
                num_cell("p_value", f(row, "p_value")),
            );
        }
        b.push_str("</tbody></table></div>");
    }
}

/// `/experiments/{id}`.
pub fn experiment(e: &Experiment<'_>) -> String {
    let def = e.definition;
    let id = def.get("id").and_then(Value::as_i64).unwrap_or(0);
    let name = s(def, "name");
    let primary = s(def, "primary_metric");
    let mut b = String::new();
    let _ = write!(
        b,
        "<p><a href=\"/\">All experiments</a></p><h1 id=\"name\">{}</h1><p>{} · {} · primary metric <strong>{}</strong> · alpha {}{}</p>",
        esc(name),
        esc(s(def, "experiment_type")),
        esc(s(def, "status")),
        esc(primary),
        f(def, "alpha").map(|a| a.to_string()).unwrap_or_default(),
        def.get("layer")
            .and_then(|l| l.get("name"))
            .and_then(Value::as_str)
            .map(|l| format!(" · layer {}", esc(l)))
            .unwrap_or_default(),
    );
    if !s(def, "description").is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(s(def, "description")));
    }

    rollout(&mut b, def);
    let srm = f(e.health, "srm_p_value");
    if let Some(p) = srm.filter(|p| *p < SRM_ALPHA) {
        let _ = write!(
            b,
            "<p class=\"warn srm-warning\"><strong>Sample ratio mismatch</strong> (p = {}): the users per variant do not \
             match the allocation, so assignment is broken somewhere. Fix it before reading anything else; no winner \
             can be declared.</p>",
            num(Some(p))
        );
    }
    let recommendation = e.summary.lines().find_map(|l| l.strip_prefix("Recommendation: ")).unwrap_or("");
    let winner = def.get("winner").and_then(Value::as_str);
    let _ = write!(
        b,
        "<h2>Recommendation</h2><p id=\"recommendation\">{}Recommendation: {}</p>",
        winner.map(|w| format!("Declared winner: <strong>{}</strong>. ", esc(w))).unwrap_or_default(),
        esc(recommendation)
    );

    let _ = write!(
        b,
        "<h2>Users</h2><p>{} users assigned{}{}</p><div class=\"wrap\"><table id=\"variants\"><thead><tr><th>Variant</th>\
         <th>Allocation</th><th>Users</th></tr></thead><tbody>",
        def.get("users_assigned").and_then(Value::as_i64).unwrap_or(0),
        f(e.health, "days_running").map(|d| format!(", {d:.1} days running")).unwrap_or_default(),
        f(e.health, "sample_progress").map(|p| format!(", sample progress {}", pct(Some(p)))).unwrap_or_default(),
    );
    for v in def.get("variants").and_then(Value::as_array).into_iter().flatten() {
        let _ = write!(
            b,
            "<tr><td>{}{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(s(v, "name")),
            if v.get("is_control").and_then(Value::as_bool) == Some(true) { " (control)" } else { "" },
            share(f(v, "traffic_allocation")),
            v.get("users").and_then(Value::as_i64).unwrap_or(0)
        );
    }
    let _ = write!(b, "</tbody></table></div><p class=\"muted\">Sample ratio test: p = {}.</p>", num(srm));
    bandit_history(&mut b, def);

    b.push_str("<h2>Analysis</h2>");
    let mut metrics: Vec<&str> = Vec::new();
    for row in e.analysis {
        let m = s(row, "metric_name");
        if !metrics.contains(&m) {
            metrics.push(m);
        }
    }
    for m in &metrics {
        let _ = write!(
            b,
            "<h3>{}{}</h3><p class=\"muted\">{} is better</p><div class=\"wrap\"><table class=\"analysis\" data-metric=\"{}\">\
             <thead><tr><th>Variant</th><th>Users</th><th>Mean</th><th>Difference</th><th>CI low</th><th>CI high</th>\
             <th>Lift</th><th>p</th><th>p adjusted</th><th>Chance to beat control</th><th>Verdict</th></tr></thead><tbody>",
            esc(m),
            if *m == primary { " (primary)" } else { "" },
            direction(def, m),
            esc(m)
        );
        for row in e.analysis.iter().filter(|r| s(r, "metric_name") == *m) {
            let verdict = match (row.get("is_control").and_then(Value::as_bool), verdict(def, row)) {
                (Some(true), _) => "<td>control</td>".to_string(),
                (_, Some(true)) => "<td class=\"good\">better</td>".into(),
                (_, Some(false)) => "<td class=\"bad\">worse</td>".into(),
                (_, None) => "<td>no significant difference</td>".into(),
            };
            let _ = write!(
                b,
                "<tr data-variant=\"{}\"><td>{}</td><td class=\"n\" data-col=\"users\" data-value=\"{}\">{}</td>{}{}{}{}{}{}{}{}{verdict}</tr>",
                esc(s(row, "variant")),
                esc(s(row, "variant")),
                row.get("users").and_then(Value::as_i64).unwrap_or(0),
                row.get("users").and_then(Value::as_i64).unwrap_or(0),
                num_cell("mean", f(row, "mean")),
                num_cell("diff", f(row, "diff")),
                num_cell("ci_lower", f(row, "ci_lower")),
                num_cell("ci_upper", f(row, "ci_upper")),
                lift_cell(f(row, "relative_lift")),
                num_cell("p_value", f(row, "p_value")),
                num_cell("p_value_adjusted", f(row, "p_value_adjusted")),
                num_cell("chance_to_beat_control", f(row, "chance_to_beat_control")),
            );
        }
        b.push_str("</tbody></table></div>");
    }

    funnels(&mut b, e.funnel);
    retention(&mut b, e.retention);
    adjusted(&mut b, e.definition, e.adjusted);

    b.push_str("<h2>Guardrails</h2><ul id=\"guardrails\">");
    let harmed: Vec<&Value> =
        e.analysis.iter().filter(|r| s(r, "metric_name") != primary && verdict(def, r) == Some(false)).collect();
    if metrics.iter().all(|m| *m == primary) {
        b.push_str("<li>No metric besides the primary one.</li>");
    } else if harmed.is_empty() {
        b.push_str("<li class=\"good\">No other metric got significantly worse.</li>");
    }
    for r in harmed {
        let _ = write!(
            b,
            "<li class=\"bad\">{} is significantly worse under {} ({} is better; difference {}).</li>",
            esc(s(r, "metric_name")),
            esc(s(r, "variant")),
            direction(def, s(r, "metric_name")),
            num(f(r, "diff"))
        );
    }
    // Metrics with a margin: each treatment's non-inferiority test, which the winner must pass.
    for r in e.analysis.iter().filter(|r| r.get("non_inferior").is_some_and(Value::is_boolean)) {
        let passed = r.get("non_inferior").and_then(Value::as_bool) == Some(true);
        let worse = if direction(def, s(r, "metric_name")) == "higher" { "lower" } else { "higher" };
        let _ = write!(
            b,
            "<li class=\"{}\">{} under {}: {} no more than {} {worse} than the control's (non-inferiority p = {}).</li>",
            if passed { "good" } else { "bad" },
            esc(s(r, "metric_name")),
            esc(s(r, "variant")),
            if passed { "shown to be" } else { "not shown to be" },
            f(r, "margin").map(|m| m.to_string()).unwrap_or_default(),
            num(f(r, "non_inferiority_p_value"))
        );
    }
    b.push_str("</ul>");

    let _ = write!(
        b,
        "<h2>Forest plot</h2><p><img src=\"/experiments/{id}/plot.svg\" alt=\"Each treatment's difference from the control \
         with its confidence interval, per metric\"></p>"
    );

    if !e.history.is_empty() {
        let _ = write!(
            b,
            "<h2>Results over time</h2><p class=\"muted\">{} at each stored analysis (each ab_analyze run, and this page's).</p>\
             <div class=\"wrap\"><table id=\"history\"><thead><tr><th>Analysed at</th><th>Variant</th><th>Difference</th>\
             <th>CI low</th><th>CI high</th><th>p adjusted</th></tr></thead><tbody>",
            esc(primary)
        );
        for h in e.history {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td>{}{}{}{}</tr>",
                esc(s(h, "at")),
                esc(s(h, "variant")),
                num_cell("diff", f(h, "diff")),
                num_cell("ci_lower", f(h, "ci_lower")),
                num_cell("ci_upper", f(h, "ci_upper")),
                num_cell("p_value_adjusted", f(h, "p_value_adjusted")),
            );
        }
        b.push_str("</tbody></table></div>");
    }

    findings(&mut b, e.interactions, e.segments);

    let _ = write!(
        b,
        "<h2>Summary</h2><pre id=\"summary\">{}</pre><p class=\"muted\">JSON: <a href=\"/api/v1/experiments/{id}\">definition</a> · \
         <a href=\"/api/v1/experiments/{id}/analyze\">analysis</a> · <a href=\"/api/v1/experiments/{id}/summary\">summary</a></p>",
        esc(e.summary)
    );
    page(name, &b)
}

/// The login form: the token goes to `/login`, which sets the browser's cookie.
/// The other experiments sharing users (ab_interactions) and the segments whose effect
/// differs from the rest's (ab_differential_impact): what was flagged, or that nothing was.
fn findings(b: &mut String, interactions: Option<&[Value]>, segments: Option<&[Value]>) {
    let flagged = |rows: &[Value]| -> Vec<Value> {
        rows.iter().filter(|r| r.get("flagged").and_then(Value::as_bool) == Some(true)).cloned().collect()
    };
    if let Some(rows) = interactions {
        let mut others: Vec<&str> = rows.iter().map(|r| s(r, "other_experiment")).collect();
        others.sort_unstable();
        others.dedup();
        b.push_str("<h2>Other experiments</h2>");
        let found = flagged(rows);
        if others.is_empty() {
            b.push_str("<p id=\"interactions\" class=\"muted\">No other experiment shares users with this one.</p>");
        } else if found.is_empty() {
            let _ = write!(
                b,
                "<p id=\"interactions\" class=\"muted\">{} other experiment{} share{} users with this one; no interaction \
                 of the treatment effects was found on a shared metric.</p>",
                others.len(),
                if others.len() == 1 { "" } else { "s" },
                if others.len() == 1 { "s" } else { "" },
            );
        } else {
            b.push_str(
                "<p id=\"interactions\" class=\"warn\"><strong>Interaction</strong>: the effect here differs by the arm of \
                 another experiment the users are also in (adjusted p below alpha).</p><div class=\"wrap\"><table \
                 id=\"interaction-rows\"><thead><tr><th>Other experiment</th><th>Metric</th><th>Variant</th><th>Other's \
                 variant</th><th>Shared users</th><th>Interaction</th><th>p adjusted</th></tr></thead><tbody>",
            );
            for r in &found {
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>{}{}</tr>",
                    esc(s(r, "other_experiment")),
                    esc(s(r, "metric_name")),
                    esc(s(r, "variant")),
                    esc(s(r, "other_variant")),
                    f(r, "shared_users").map(|n| n.to_string()).unwrap_or_default(),
                    num_cell("interaction", f(r, "interaction")),
                    num_cell("p_value_adjusted", f(r, "p_value_adjusted")),
                );
            }
            b.push_str("</tbody></table></div>");
        }
    }
    if let Some(rows) = segments {
        b.push_str("<h2>Segments</h2>");
        let found = flagged(rows);
        if found.is_empty() {
            b.push_str(
                "<p id=\"segments\" class=\"muted\">No segment's effect differs from the rest's (q-values across every \
                 breakdown attribute and metric at or above alpha).</p>",
            );
        } else {
            b.push_str(
                "<p id=\"segments\" class=\"warn\"><strong>Differential impact</strong>: in these segments the effect \
                 differs from the rest's (q below alpha, controlled across every attribute and metric).</p><div \
                 class=\"wrap\"><table id=\"segment-rows\"><thead><tr><th>Attribute</th><th>Segment</th><th>Metric</th>\
                 <th>Variant</th><th>Users</th><th>Effect</th><th>Elsewhere</th><th>q</th></tr></thead><tbody>",
            );
            for r in &found {
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>{}{}{}</tr>",
                    esc(s(r, "attribute")),
                    r.get("value").and_then(Value::as_str).map(esc).unwrap_or_else(|| "(not given)".into()),
                    esc(s(r, "metric_name")),
                    esc(s(r, "variant")),
                    f(r, "users").map(|n| n.to_string()).unwrap_or_default(),
                    num_cell("effect", f(r, "effect")),
                    num_cell("effect_elsewhere", f(r, "effect_elsewhere")),
                    num_cell("q_value", f(r, "q_value")),
                );
            }
            b.push_str("</tbody></table></div>");
        }
    }
}

pub fn login(message: Option<&str>) -> String {
    page(
        "Log in",
        &format!(
            "<h1>Log in</h1>{}<form method=\"post\" action=\"/login\"><p><label>Token <input type=\"password\" \
             name=\"token\" autocomplete=\"current-password\" required></label> <button>Log in</button></p></form>\
             <p class=\"muted\">A token of the gateway's tokens file (an analyst's to read the results). The browser \
             keeps it in a cookie for this site only, for 12 hours.</p>",
            message.map(|m| format!("<p class=\"warn\">{}</p>", esc(m))).unwrap_or_default()
        ),
    )
}

/// The page for an experiment that does not exist, or another error.
pub fn error(status: u16, message: &str) -> String {
    page("Error", &format!("<p><a href=\"/\">All experiments</a></p><h1>Error {status}</h1><p>{}</p>", esc(message)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn numbers_show_four_decimals_or_scientific() {
        assert_eq!(num(Some(0.071428)), "0.0714");
        assert_eq!(num(Some(2.0e-6)), "2.000e-6");
        assert_eq!(num(Some(0.0)), "0");
        assert_eq!(num(None), "—");
        assert_eq!(num_cell("diff", Some(0.1)), "<td class=\"n\" data-col=\"diff\" data-value=\"0.1\">0.1000</td>");
    }

    #[test]
    fn the_list_shows_the_recommendation_s_first_sentence() {
        assert_eq!(short_recommendation("ship \"b. c\". b beats the control. Confidence 99%."), "ship \"b. c\"");
        assert_eq!(short_recommendation("no winner yet. Reason: too few users."), "no winner yet");
        assert_eq!(short_recommendation("odd"), "odd");
    }

    #[test]
    fn an_experiment_that_could_not_be_analysed_shows_its_error() {
        let rows = [
            json!({"id": 2, "name": "ok", "status": "running", "recommendation": "no winner yet. Reason: x."}),
            json!({"id": 1, "name": "bad", "status": "running", "error": {"status": 403, "detail": "permission denied for table <t>"}}),
        ];
        let html = list(&rows);
        assert!(html.contains("no winner yet"));
        assert!(html.contains("<span class=\"bad analysis-error\" data-status=\"403\">not analysed: permission denied for table &lt;t&gt;</span>"));
    }

    #[test]
    fn hostile_names_render_as_text() {
        let name = "<img src=x onerror=alert(1)>";
        let rows =
            [json!({"id": 1, "name": name, "status": "running", "type": "ui", "primary_metric": "m\"<b>", "users": 3})];
        let html = list(&rows);
        assert!(!html.contains("<img src=x"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        let def =
            json!({"id": 1, "name": name, "primary_metric": "m", "variants": [{"name": "</td><script>", "users": 1}]});
        let funnel =
            [json!({"metric_name": name, "step": 1, "step_metric": "</td><script>", "variant": name, "users": 2})];
        let retention = [json!({"metric_name": name, "variant": "<script>", "enrolled": 3, "too_new": 1})];
        let html = experiment(&Experiment {
            definition: &def,
            health: &Value::Null,
            analysis: &[],
            summary: "",
            history: &[],
            interactions: None,
            segments: None,
            funnel: &funnel,
            retention: &retention,
            adjusted: None,
        });
        assert!(!html.contains("<script>") && !html.contains("<img src=x"));
        assert!(html.contains("<td class=\"n\" data-col=\"too_new\" data-value=\"1\">1</td>"));
        assert!(!html.contains("<form") && !html.contains("method="));
    }

    #[test]
    fn a_rolled_back_rollout_shows_a_banner_its_step_and_guardrails() {
        let def = json!({"allocation": {"mode": "rollout", "steps": [10, 50, 100], "step_every": "1 hour", "step": 1,
                                        "state": "rolled_back"},
                         "allocation_history": [{"period": 0, "posterior": {}},
                            {"period": 1, "posterior": {"reason": "guardrail \"<lat>\" breached",
                             "findings": [{"guardrail": "latency", "users": 4000.0, "estimate": 2.06, "bound": 1.99,
                                           "limit": 0.5, "breached": true},
                                          {"guardrail": "sample_ratio", "users": 4000.0, "estimate": 0.001,
                                           "bound": 0.02, "limit": 0.0, "breached": false}]}}]});
        let mut b = String::new();
        rollout(&mut b, &def);
        assert!(b.contains("<p class=\"bad rollback-banner\"><strong>Rolled back</strong>: every user is served the control's config (assignments are kept). Reason: guardrail &quot;&lt;lat&gt;&quot; breached.</p>"), "{b}");
        assert!(b.contains("data-state=\"rolled_back\">rolled back · step 2 of 3 (10%, 50%, 100%) · the new variant takes 0% of new users"), "{b}");
        assert!(
            b.contains("<tr class=\"bad\"><td>latency</td><td class=\"n\">4000</td><td class=\"n\">2.0600</td>"),
            "{b}"
        );
        assert!(b.contains("<tr><td>sample_ratio</td>"), "{b}");
        // Ramping: no banner; fixed experiments: nothing.
        let mut def = def;
        def["allocation"]["state"] = json!("ramping");
        let mut b = String::new();
        rollout(&mut b, &def);
        assert!(!b.contains("rollback-banner") && b.contains("takes 50% of new users"), "{b}");
        let mut b = String::new();
        rollout(&mut b, &json!({"allocation": {"mode": "fixed"}}));
        assert!(b.is_empty());
    }

    #[test]
    fn flagged_interactions_and_segments_are_listed_and_escaped() {
        let rows = [
            json!({"other_experiment": "<b>pricing</b>", "metric_name": "funded", "variant": "new",
                           "other_variant": "b", "shared_users": 400, "interaction": 0.12, "p_value_adjusted": 0.001,
                           "flagged": true}),
            json!({"other_experiment": "<b>pricing</b>", "metric_name": "nps", "flagged": false}),
        ];
        let segs = [
            json!({"attribute": "loan_type", "value": "VA", "metric_name": "funded", "variant": "new",
                           "users": 120, "effect": 0.2, "effect_elsewhere": 0.01, "q_value": 0.004, "flagged": true}),
            json!({"attribute": "loan_type", "value": null, "flagged": false}),
        ];
        let mut b = String::new();
        findings(&mut b, Some(&rows), Some(&segs));
        assert!(
            b.contains(
                "<tr><td>&lt;b&gt;pricing&lt;/b&gt;</td><td>funded</td><td>new</td><td>b</td><td class=\"n\">400</td>"
            ),
            "{b}"
        );
        assert!(!b.contains("<td>nps</td>") && !b.contains("<b>pricing"), "{b}");
        assert!(
            b.contains("<tr><td>loan_type</td><td>VA</td><td>funded</td><td>new</td><td class=\"n\">120</td>"),
            "{b}"
        );
        let mut b = String::new();
        findings(&mut b, Some(&rows[1..]), Some(&segs[1..]));
        assert!(b.contains("1 other experiment shares users with this one; no interaction"), "{b}");
        assert!(b.contains("No segment's effect differs"), "{b}");
        let mut b = String::new();
        findings(&mut b, Some(&[]), None);
        assert!(b.contains("No other experiment shares users") && !b.contains("Segments"), "{b}");
    }

    #[test]
    fn the_randomization_unit_and_adjusted_rows_are_shown_and_escaped() {
        let def = json!({"randomization_unit": "<b>branch</b>"});
        let rows = [
            json!({"metric_name": "<i>funded</i>", "variant": "control", "users": 1300, "clusters": 26, "covariates": 0,
                   "adjusted_mean": 0.36}),
            json!({"metric_name": "<i>funded</i>", "variant": "new\"<x>", "users": 1700, "clusters": 34, "covariates": 0,
                   "adjusted_mean": 0.41, "diff": 0.0443, "ci_lower": -0.0628, "ci_upper": 0.1515, "p_value": 0.4173,
                   "variance_reduction": -8.4}),
        ];
        let mut b = String::new();
        adjusted(&mut b, &def, Some(&rows));
        assert!(!b.contains("<b>") && !b.contains("<i>") && !b.contains("<x>"), "{b}");
        assert!(
            b.contains("Randomized by <strong>&lt;b&gt;branch&lt;/b&gt;</strong> (clusters: 26 control, 34 new&quot;&lt;x&gt;)"),
            "{b}"
        );
        assert!(b.contains("<td class=\"n\">0.4173</td>") || b.contains("data-value=\"0.4173\""), "{b}");
        assert!(b.contains("<td class=\"n\">34</td>") && b.contains("-0.0628 to 0.1515"), "{b}");
        let mut b = String::new();
        adjusted(&mut b, &json!({"randomization_unit": null}), None);
        assert!(b.is_empty());
        let mut b = String::new();
        adjusted(&mut b, &def, None);
        assert!(b.contains("Randomized by") && !b.contains("<table"), "{b}");
    }

    #[test]
    fn reordering_and_control_characters_show_as_code_points() {
        assert_eq!(esc("ok \u{202e}deliver\u{202c}\u{7}\nnext"), "ok \\u{202e}deliver\\u{202c}\\u{0007}\nnext");
        assert_eq!(esc("a\u{2066}b\u{200f}c"), "a\\u{2066}b\\u{200f}c");
    }
}
