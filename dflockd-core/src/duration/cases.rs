//! The duration grammar as a table: what each input parses to, or a part of its error
//! message. Tested against dflockd-core's `parse_duration` (the `DFLOCKD_*` variables) and
//! dflockd-macros' (the attribute's literals, which include this file by path), so the two
//! stay one grammar.

use std::time::Duration;

pub(crate) const CASES: &[(&str, Result<Duration, &str>)] = &[
    // A plain number is seconds.
    ("0", Ok(Duration::ZERO)),
    ("10", Ok(Duration::from_secs(10))),
    ("1.5", Ok(Duration::from_millis(1_500))),
    ("0.25", Ok(Duration::from_millis(250))),
    // Numbers with units, fractions, sums.
    ("0s", Ok(Duration::ZERO)),
    ("500ms", Ok(Duration::from_millis(500))),
    ("10s", Ok(Duration::from_secs(10))),
    ("1.5s", Ok(Duration::from_millis(1_500))),
    ("2m", Ok(Duration::from_secs(120))),
    ("1h", Ok(Duration::from_secs(3_600))),
    ("1m30s", Ok(Duration::from_secs(90))),
    ("1h30m", Ok(Duration::from_secs(5_400))),
    ("1m 30s", Ok(Duration::from_secs(90))),
    ("1.5ms", Ok(Duration::from_micros(1_500))),
    (" 3s ", Ok(Duration::from_secs(3))),
    // humantime's longer unit names.
    ("2min", Ok(Duration::from_secs(120))),
    ("10sec", Ok(Duration::from_secs(10))),
    // Units are case-sensitive: `M` is a month (30.44 days), not minutes.
    ("1M", Ok(Duration::from_secs(2_630_016))),
    // Errors.
    ("", Err("empty")),
    ("10x", Err(r#"unknown time unit "x""#)),
    ("10S", Err(r#"unknown time unit "S""#)),
    ("1e3", Err(r#"unknown time unit "e""#)),
    ("1m30", Err("time unit needed")),
    ("s", Err("expected number")),
    ("-1s", Err("expected number")),
    (".5s", Err("expected number")),
    ("1..5s", Err("invalid character")),
    ("1.5.3", Err("invalid character")),
    ("1.", Err("invalid character")),
    ("99999999999999999999999s", Err("too large")),
    ("0.5ns", Err("below 1ns")),
];

/// Checks `parse` against every case: the value, or an error that contains the expected part
/// and starts the way both parsers start theirs.
pub(crate) fn check(parse: impl Fn(&str) -> Result<Duration, String>) {
    for (text, expected) in CASES {
        match (parse(text), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text:?}"),
            (Err(got), Err(want)) => {
                assert!(got.contains(want), "{text:?}: {got:?} lacks {want:?}");
                assert!(got.starts_with("invalid duration "), "{got}");
            }
            (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
        }
    }
}
