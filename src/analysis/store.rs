//! Storing an analysis's rows in ab_insights.

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::Analysis;
use crate::catalog;
use crate::errors::SpiExt;

/// Stores an analysis in ab_insights; rows of one run share the transaction time.
pub fn store(client: &mut SpiClient<'_>, nsp: &str, experiment_id: i64, analysis: &Analysis) {
    // The relative and guardrail columns came with 0.9.0: a 0.9.0 library on an older schema
    // stores what that schema has.
    let full = catalog::has_column(client, nsp, "ab_insights", "non_inferior");
    let (mut extra, extra_params) = if full {
        (
            ", relative_lift_ci_lower, relative_lift_ci_upper, relative_lift_p_value, margin, non_inferiority_p_value, non_inferior"
                .to_string(),
            ", $29::float8[], $30::float8[], $31::float8[], $32::float8[], $33::float8[], $34::bool[]".to_string(),
        )
    } else {
        (String::new(), String::new())
    };
    // 0.12.0: what the analysis read from sources, and who ran it (the views over ab_insights
    // show its rows only to roles that may read those sources).
    let readers = full && catalog::has_column(client, nsp, "ab_insights", "source_reads");
    let consts = if readers {
        extra.push_str(", source_reads, computed_by");
        ", $35::jsonb, $36::name"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO {nsp}.ab_insights (experiment_id, computed_at, metric_name, variant, is_control, users, mean, \
         std_dev, diff, ci_lower, ci_upper, relative_lift, p_value, significant, effect_size, recommendation, confidence, \
         metric_type, test, p_value_adjusted, chance_to_beat_control, expected_loss, users_needed, srm_p_value, \
         cuped_diff, cuped_ci_lower, cuped_ci_upper, cuped_p_value, cuped_variance_reduction{extra}) \
         SELECT $1, now(), r.*{consts} FROM unnest($2::text[], $3::text[], $4::bool[], $5::int8[], $6::float8[], $7::float8[], \
           $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::float8[], $13::bool[], $14::float8[], $15::text[], \
           $16::float8[], $17::text[], $18::text[], $19::float8[], $20::float8[], $21::float8[], $22::int8[], $23::float8[], \
           $24::float8[], $25::float8[], $26::float8[], $27::float8[], $28::float8[]{extra_params}) AS r"
    );
    let rows = analysis.rows();
    macro_rules! col {
        ($field:ident) => {
            rows.iter().map(|r| r.$field.clone()).collect::<Vec<_>>().into()
        };
    }
    let mut args: Vec<pgrx::datum::DatumWithOid> = vec![
        experiment_id.into(),
        col!(metric_name),
        col!(variant),
        col!(is_control),
        col!(users),
        col!(mean),
        col!(std_dev),
        col!(diff),
        col!(ci_lower),
        col!(ci_upper),
        col!(relative_lift),
        col!(p_value),
        col!(significant),
        col!(effect_size),
        col!(recommendation),
        col!(confidence),
        col!(metric_type),
        col!(test),
        col!(p_value_adjusted),
        col!(chance_to_beat_control),
        col!(expected_loss),
        col!(users_needed),
        col!(srm_p_value),
        col!(cuped_diff),
        col!(cuped_ci_lower),
        col!(cuped_ci_upper),
        col!(cuped_p_value),
        col!(cuped_variance_reduction),
    ];
    if full {
        args.extend([
            col!(relative_lift_ci_lower),
            col!(relative_lift_ci_upper),
            col!(relative_lift_p_value),
            col!(margin),
            col!(non_inferiority_p_value),
            col!(non_inferior),
        ]);
    }
    if readers {
        let computed_by =
            unsafe { std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), false)) };
        args.push(analysis.source_reads.clone().map(pgrx::JsonB).into());
        args.push(computed_by.to_string_lossy().into_owned().into());
    }
    client.update(sql.as_str(), None, &args).or_raise();
}
