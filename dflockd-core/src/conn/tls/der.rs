//! The validity period of an X.509 certificate, read from its DER encoding.
//!
//! webpki checks validity only while building a chain to a trust anchor, which a pinned
//! certificate does not need (and a `CA:TRUE` one cannot be the end of); this reads the two
//! dates so a pinned certificate is held to them too.

/// A certificate's `notBefore` and `notAfter`, in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// Reads the validity of a DER certificate; `None` if it is not one.
pub(crate) fn validity(cert: &[u8]) -> Option<Validity> {
    let mut outer = Reader(cert);
    let mut cert = Reader(outer.expect(SEQUENCE)?);
    let mut tbs = Reader(cert.expect(SEQUENCE)?);
    if tbs.peek() == Some(VERSION) {
        tbs.expect(VERSION)?;
    }
    tbs.expect(INTEGER)?; // serialNumber
    tbs.expect(SEQUENCE)?; // signature
    tbs.expect(SEQUENCE)?; // issuer
    let mut validity = Reader(tbs.expect(SEQUENCE)?);
    let not_before = validity.time()?;
    let not_after = validity.time()?;
    Some(Validity {
        not_before,
        not_after,
    })
}

/// DER input, read from the front.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The contents of the next element, which must have tag `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (&found, rest) = self.0.split_first()?;
        if found != tag {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (bytes, after) = rest.split_at(n);
            rest = after;
            bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if rest.len() < len {
            return None;
        }
        let (contents, after) = rest.split_at(len);
        self.0 = after;
        Some(contents)
    }

    /// A `UTCTime` or `GeneralizedTime`, as seconds since the Unix epoch.
    fn time(&mut self) -> Option<i64> {
        let (year, rest) = match self.peek()? {
            UTC_TIME => {
                let text = self.expect(UTC_TIME)?;
                let (yy, rest) = (digits(text.get(..2)?)?, text.get(2..)?);
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
            }
            GENERALIZED_TIME => {
                let text = self.expect(GENERALIZED_TIME)?;
                (digits(text.get(..4)?)?, text.get(4..)?)
            }
            _ => return None,
        };
        // MMDDHHMMSSZ: DER requires the seconds and the Z.
        if rest.len() != 11 || rest[10] != b'Z' {
            return None;
        }
        let field = |at: usize| digits(&rest[at..at + 2]);
        let (month, day) = (field(0)?, field(2)?);
        let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
            return None;
        }
        // 60 allows a leap second.
        if second > 60 {
            return None;
        }
        let days = days_from_civil(year, month, day);
        Some(days * 86_400 + hour * 3600 + minute * 60 + second)
    }
}

/// ASCII digits as a number.
fn digits(text: &[u8]) -> Option<i64> {
    text.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Years start in March, so the leap day is the last day of a year; 400-year eras.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(4096, 1, 1), 776_506);
    }

    /// A certificate skeleton with the given two time elements.
    fn cert_with(not_before: &[u8], not_after: &[u8]) -> Vec<u8> {
        fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if contents.len() < 0x80 {
                out.push(contents.len() as u8);
            } else {
                out.push(0x82);
                out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
            }
            out.extend_from_slice(contents);
            out
        }
        let validity = tlv(SEQUENCE, &[not_before, not_after].concat());
        let tbs = [
            tlv(VERSION, &tlv(INTEGER, &[2])),
            tlv(INTEGER, &[1; 20]),
            tlv(SEQUENCE, &[0; 10]),
            tlv(SEQUENCE, &[0; 150]),
            validity,
            tlv(SEQUENCE, &[0; 40]),
        ]
        .concat();
        tlv(
            SEQUENCE,
            &[tlv(SEQUENCE, &tbs), tlv(SEQUENCE, &[0; 12])].concat(),
        )
    }

    #[test]
    fn reads_both_time_forms() {
        let cert = cert_with(b"\x17\x0d250102030405Z", b"\x18\x0f20510607080910Z");
        let v = validity(&cert).unwrap();
        assert_eq!(
            v.not_before,
            days_from_civil(2025, 1, 2) * 86_400 + 3 * 3600 + 4 * 60 + 5
        );
        assert_eq!(
            v.not_after,
            days_from_civil(2051, 6, 7) * 86_400 + 8 * 3600 + 9 * 60 + 10
        );
        // UTCTime years from 50 are the 1900s.
        let cert = cert_with(b"\x17\x0d500101000000Z", b"\x17\x0d491231235959Z");
        let v = validity(&cert).unwrap();
        assert_eq!(v.not_before, days_from_civil(1950, 1, 1) * 86_400);
        assert_eq!(v.not_after, days_from_civil(2050, 1, 1) * 86_400 - 1);
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        for bad in [
            cert_with(b"\x17\x0b2501020304Z", b"\x17\x0d250102030405Z"), // no seconds
            cert_with(b"\x17\x0d250102030405+", b"\x17\x0d250102030405Z"), // no Z
            cert_with(b"\x17\x0d251302030405Z", b"\x17\x0d250102030405Z"), // month 13
            cert_with(b"\x04\x0d250102030405Z", b"\x17\x0d250102030405Z"), // not a time
        ] {
            assert_eq!(validity(&bad), None);
        }
        let good = cert_with(b"\x17\x0d250102030405Z", b"\x17\x0d250102030405Z");
        for len in 0..good.len() {
            assert_eq!(validity(&good[..len]), None, "cut at {len}");
        }
        assert_eq!(validity(b""), None);
        assert_eq!(validity(b"\x30\x84\xff\xff\xff\xff"), None);
    }
}
