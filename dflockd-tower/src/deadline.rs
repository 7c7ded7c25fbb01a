//! The request's own deadline: gRPC's `grpc-timeout` header.

use std::time::Duration;

/// The `grpc-timeout` header.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`). `None` for anything else.
pub(crate) fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The request's remaining time from its headers, if it announces one.
pub(crate) fn request_deadline(headers: &http::HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(headers.get(GRPC_TIMEOUT)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        let cases: [(&str, Option<Duration>); 14] = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("0m", Some(Duration::ZERO)),
            ("99999999H", Some(Duration::from_secs(99_999_999 * 3600))),
            ("123456789S", None),
            ("S", None),
            ("10", None),
            ("10s", None),
            ("-1S", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_grpc_timeout(text.as_bytes()), want, "{text}");
        }
        let mut headers = http::HeaderMap::new();
        assert_eq!(request_deadline(&headers), None);
        headers.insert(GRPC_TIMEOUT, http::HeaderValue::from_static("1500m"));
        assert_eq!(
            request_deadline(&headers),
            Some(Duration::from_millis(1500))
        );
    }
}
