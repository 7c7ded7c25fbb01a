//! The duration grammar of the configuration: the `DFLOCKD_*` variables here, and the
//! duration literals of the attribute macros (`wait = "10s"`), which parse theirs at compile
//! time with the same two lines (`dflockd-macros/src/attr.rs`).
//!
//! The grammar is [humantime]'s (numbers with units, fractions, sums: `500ms`, `1.5s`,
//! `1m30s`), plus one rule: a plain number is seconds (`10`, `1.5`). Both crates depend on
//! humantime and apply the rule; the table in `duration/cases.rs` is tested against both.
//! Units are case-sensitive as in humantime: `m` is minutes and `M` months (30.44 days), so
//! `1M` parses, to a month.
//!
//! [humantime]: https://docs.rs/humantime/latest/humantime/fn.parse_duration.html

use std::time::Duration;

/// Parses a duration: a plain number of seconds (`10`, `1.5`), or numbers with units, summed
/// (`500ms`, `1.5s`, `2m`, `1h`, `1m30s`). The error says what is wrong and shows examples.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    // The rule on top of humantime, the same two lines in dflockd-macros' `attr.rs`: a plain
    // number is seconds.
    let plain = !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let parsed = if plain {
        humantime::parse_duration(&format!("{trimmed}s"))
    } else {
        humantime::parse_duration(trimmed)
    };
    parsed.map_err(|e| {
        format!(r#"invalid duration {text:?}: {e}; e.g. "10" (seconds), "1.5s", "500ms", "1m30s""#)
    })
}

#[cfg(test)]
mod cases;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_table() {
        cases::check(parse_duration);
    }
}
