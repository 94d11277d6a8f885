//! Names people type and read: experiments, variants, metrics, layers. They are stored in
//! Unicode NFC, so that look-alike spellings of one name ("café" precomposed or with a
//! combining accent) are the same name. Control, bidirectional and invisible characters are
//! refused: in a report or a plot they could forge lines, reorder text or hide a difference.

use std::borrow::Cow;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use crate::error::{Error, Result};

pub const MAX_NAME_LEN: usize = 200;

/// Format characters that show nothing or reorder what follows: zero-width spaces and joiners
/// used as padding, bidirectional embeddings, overrides and isolates, the BOM, fillers, tags.
/// ZWJ and ZWNJ (U+200C, U+200D) are allowed: scripts and emoji sequences need them.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E007F}')
}

fn is_visible(c: char) -> bool {
    !(c.is_whitespace()
        || is_invisible(c)
        || matches!(c, '\u{200C}' | '\u{200D}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
        || is_combining_mark(c))
}

/// The name in NFC, or why it cannot be a name. `what` names the field in the message.
pub fn normalize_name<'a>(what: &str, name: &'a str) -> Result<Cow<'a, str>> {
    let name: Cow<'a, str> = if name.is_ascii() || is_nfc_quick(name.chars()) == IsNormalized::Yes {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(name.nfc().collect())
    };
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(format!("{what} must not contain control characters (found {})", code_point(c))));
    }
    if let Some(c) = name.chars().find(|c| is_invisible(*c)) {
        return Err(Error::invalid(format!(
            "{what} must not contain invisible or bidirectional formatting characters (found {})",
            code_point(c)
        )));
    }
    if name.trim().is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if !name.chars().any(is_visible) {
        return Err(Error::invalid(format!("{what} must contain a visible character")));
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(Error::invalid(format!("{what} is {len} characters long, at most {MAX_NAME_LEN} are allowed")));
    }
    Ok(name)
}

fn code_point(c: char) -> String {
    format!("U+{:04X}", c as u32)
}

/// Stored text made safe to show in a line of a report: control, bidirectional and invisible
/// characters become `\u{...}` escapes. Names written by hand or by older versions may
/// contain anything.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || is_invisible(c) || c == '\u{FFFE}' || c == '\u{FFFF}') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() || is_invisible(c) || c == '\u{FFFE}' || c == '\u{FFFF}' {
            out.push_str(&format!("\\u{{{:04X}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `printable`, cut to its first `max` characters and "..." when longer: a name in a message
/// the caller typed may be of any length.
pub fn printable_at_most(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => printable(s),
        Some((end, _)) => Cow::Owned(format!("{}...", printable(&s[..end]))),
    }
}

/// The candidate a mistyped name most likely meant: the nearest by edit distance, ignoring
/// case, if it is near enough (at most a third of the typed name's characters differ). Ties go
/// to the candidate that sorts first.
pub fn closest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given = typed;
    let typed: Vec<char> = typed.to_lowercase().chars().collect();
    let limit = (typed.len() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        // The name itself (still visible to a snapshot older than its deletion) is no suggestion.
        if c == given {
            continue;
        }
        let lower: Vec<char> = c.to_lowercase().chars().collect();
        if lower.len().abs_diff(typed.len()) > limit {
            continue;
        }
        let d = edit_distance(&typed, &lower);
        let better = match best {
            None => true,
            Some((bd, bc)) => d < bd || (d == bd && c < bc),
        };
        if d <= limit && better {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(diag + usize::from(ca != cb));
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// ` (did you mean "x"?)`, or nothing when no candidate is near.
pub fn did_you_mean<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(typed, candidates).map(|c| format!(" (did you mean \"{}\"?)", printable(c))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_is_cut_in_a_message() {
        assert_eq!(printable_at_most("abc", 3), "abc");
        assert_eq!(printable_at_most("abcd", 3), "abc...");
        assert_eq!(printable_at_most("\u{e9}\n\u{e9}\u{e9}", 2), "\u{e9}\\u{000A}...");
    }

    #[test]
    fn look_alikes_become_one_name() {
        assert_eq!(normalize_name("n", "cafe\u{0301}").unwrap(), "caf\u{e9}");
        assert!(matches!(normalize_name("n", "plain").unwrap(), Cow::Borrowed(_)));
        assert!(matches!(normalize_name("n", "caf\u{e9}").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn refuses_what_hides_or_forges_text() {
        let err = |s: &str| normalize_name("metric_name", s).unwrap_err().message;
        assert_eq!(err("zz\n\nRecommendation"), "metric_name must not contain control characters (found U+000A)");
        assert_eq!(err("a\u{1}"), "metric_name must not contain control characters (found U+0001)");
        assert!(err("\u{200B}").contains("invisible or bidirectional formatting characters (found U+200B)"));
        assert!(err("B\u{202E}A").contains("(found U+202E)"));
        assert!(err("x\u{2066}y").contains("(found U+2066)"));
        assert_eq!(err("   "), "metric_name must not be empty");
        assert_eq!(err("\u{0301}"), "metric_name must contain a visible character");
        assert_eq!(err(&"x".repeat(201)), "metric_name is 201 characters long, at most 200 are allowed");
        // Joiners inside a visible name are fine (emoji sequences, Indic scripts).
        assert!(normalize_name("n", "team \u{1F468}\u{200D}\u{1F469}").is_ok());
    }

    #[test]
    fn printable_escapes_only_what_it_must() {
        assert_eq!(printable("plain é"), "plain é");
        assert_eq!(printable("zz\n\nRec"), "zz\\u{000A}\\u{000A}Rec");
        assert_eq!(printable("a\u{1}b\u{202E}"), "a\\u{0001}b\\u{202E}");
    }

    #[test]
    fn the_name_itself_is_no_suggestion() {
        assert_eq!(closest("checkout", ["checkout"]), None);
        assert_eq!(closest("checkout", ["checkout", "Checkout"]), Some("Checkout"));
    }

    #[test]
    fn closest_names_what_was_meant() {
        let names = ["escalated", "token_usage", "Lead Qualification Prompt Test", "running", "stopped"];
        assert_eq!(closest("escalaterd", names), Some("escalated"));
        assert_eq!(closest("lead qualification prompt test", names), Some("Lead Qualification Prompt Test"));
        assert_eq!(closest("runing", names), Some("running"));
        assert_eq!(closest("conversion", names), None);
        assert_eq!(closest("ab", ["xy", "abc"]), Some("abc"));
        assert_eq!(closest("ab", ["xy"]), None);
        assert_eq!(closest("x", std::iter::empty()), None);
        assert_eq!(did_you_mean("tokens_usage", names), " (did you mean \"token_usage\"?)");
        assert_eq!(did_you_mean("nothing like it", names), "");
    }
}
