//! Durations written as PostgreSQL intervals: a metric's window and covariate lookback, a
//! bandit's `update_every`.

/// Seconds in an interval written as number-unit pairs ("1 hour", "2 days 30 minutes"; units
/// second, minute, hour, day, week, singular or plural), a subset of what PostgreSQL's
/// interval input accepts. None for anything else, or a total of 0 or over 10 years.
pub fn interval_seconds(text: &str) -> Option<f64> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() || !words.len().is_multiple_of(2) || words.len() > 10 {
        return None;
    }
    let mut total = 0.0;
    for pair in words.chunks(2) {
        let n: f64 = pair[0].parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0 && pair[0].len() <= 12)?;
        if !pair[0].bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        let unit = match pair[1].to_ascii_lowercase().trim_end_matches('s') {
            "second" | "sec" => 1.0,
            "minute" | "min" => 60.0,
            "hour" => 3600.0,
            "day" => 86400.0,
            "week" => 604800.0,
            _ => return None,
        };
        total += n * unit;
    }
    (total > 0.0 && total <= 10.0 * 366.0 * 86400.0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(interval_seconds("1 hour"), Some(3600.0));
        assert_eq!(interval_seconds("2 days 30 minutes"), Some(2.0 * 86400.0 + 1800.0));
        assert_eq!(interval_seconds("90 Seconds"), Some(90.0));
        for bad in ["", "hourly", "1", "-1 hour", "0 minutes", "1 fortnight", "1e3 hours", "600 weeks"] {
            assert_eq!(interval_seconds(bad), None, "{bad}");
        }
    }
}
