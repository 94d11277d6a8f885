//! Batches of results (`ab_record_results`): one array per column, one element per row.

use crate::error::{Error, Result};

/// The arrays of a batch must have one element per row: `required` are (argument, length),
/// `optional` those that may be absent (NULL). Returns the number of rows.
pub fn row_count(required: &[(&str, usize)], optional: &[(&str, Option<usize>)]) -> Result<usize> {
    let (first, rows) = required.first().copied().unwrap_or(("", 0));
    let given = required.iter().copied().chain(optional.iter().filter_map(|(n, l)| l.map(|l| (*n, l))));
    for (name, len) in given {
        if len != rows {
            return Err(Error::invalid(format!(
                "{name} has {len} elements and {first} has {rows}: every array must have one element per row"
            )));
        }
    }
    Ok(rows)
}

/// `e` about row `row` (1-based) of a batch: its position leads the message.
pub fn at_row(row: usize, e: Error) -> Error {
    Error { message: format!("row {row}: {}", e.message), ..e }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_lengths_give_the_row_count() {
        assert_eq!(row_count(&[("a", 3), ("b", 3)], &[("c", None), ("d", Some(3))]), Ok(3));
        assert_eq!(row_count(&[("a", 0), ("b", 0)], &[]), Ok(0));
    }

    #[test]
    fn a_length_that_differs_is_named() {
        let e = row_count(&[("metric_names", 2), ("metric_values", 3)], &[]).unwrap_err();
        assert_eq!(
            e.message,
            "metric_values has 3 elements and metric_names has 2: every array must have one element per row"
        );
        let e = row_count(&[("a", 2), ("b", 2)], &[("recorded_at", Some(1))]).unwrap_err();
        assert!(e.message.starts_with("recorded_at has 1 elements and a has 2"), "{}", e.message);
    }

    #[test]
    fn the_position_leads_the_message_and_the_hint_is_kept() {
        let e = at_row(7, Error::invalid("metric_value is NaN").with_hint("h"));
        assert_eq!(e.message, "row 7: metric_value is NaN");
        assert_eq!(e.hint.as_deref(), Some("h"));
    }
}
