//! Finding line boundaries in a byte buffer, with a length cap.

/// What [`scan_line`] found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineScan {
    /// A complete line: `line_len` bytes of content (a trailing `\r` excluded), and `consumed`
    /// bytes to drop from the buffer (the content, the optional `\r` and the `\n`).
    Complete {
        /// Length of the line's content.
        line_len: usize,
        /// Bytes the line occupies in the buffer, terminator included.
        consumed: usize,
    },
    /// No `\n` yet and the buffer is still within the cap: read more.
    Incomplete,
    /// The line is longer than the cap (with or without its terminator in the buffer).
    TooLong,
}

/// Looks for one line at the start of `buf`, allowing at most `max_len` bytes before the `\n`.
///
/// This is the real server's rule: every byte before the `\n` counts against the cap, a `\r`
/// included, so with a cap of 256 a line of 256 bytes plus `\n` is accepted and 256 bytes plus
/// `\r\n` is too long. The reported content excludes every trailing `\r` (the server strips
/// them all, and so does the client).
///
/// ```
/// use dflockd_core::proto::{scan_line, LineScan};
/// assert_eq!(scan_line(b"ok\r\nrest", 10), LineScan::Complete { line_len: 2, consumed: 4 });
/// assert_eq!(scan_line(b"ok", 10), LineScan::Incomplete);
/// assert_eq!(scan_line(b"0123456789ab", 10), LineScan::TooLong);
/// ```
#[must_use]
pub fn scan_line(buf: &[u8], max_len: usize) -> LineScan {
    // Only look as far as a maximal line could reach: the content and the `\n`.
    let window = &buf[..buf.len().min(max_len.saturating_add(1))];
    match find_newline(window) {
        Some(nl) => {
            let content = &window[..nl];
            let line_len = content
                .iter()
                .rposition(|&b| b != b'\r')
                .map_or(0, |last| last + 1);
            LineScan::Complete {
                line_len,
                consumed: nl + 1,
            }
        }
        None if buf.len() > max_len => LineScan::TooLong,
        None => LineScan::Incomplete,
    }
}

/// The position of the first `\n`, looking at eight bytes at a time (answer lines are tens
/// of bytes long: a byte at a time costs more than the rest of handling the answer).
fn find_newline(buf: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut chunks = buf.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // Bytes equal to `\n` become zero; the lowest zero byte sets its high bit here (bytes
        // after it may too, which does not matter: the lowest is taken).
        let x = u64::from_le_bytes(word) ^ NEWLINES;
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return Some(offset + (zeros.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| offset + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_search_agrees_with_a_byte_scan() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            let buf: Vec<u8> = (0..len)
                .map(|_| match rng.u8(0..6) {
                    0 => b'\n',
                    1 => 0x8a, // `\n` with the high bit set
                    2 => 0x0b,
                    3 => 0x09,
                    _ => rng.u8(..),
                })
                .collect();
            let want = buf.iter().position(|&b| b == b'\n');
            assert_eq!(find_newline(&buf), want, "{buf:?}");
        }
    }

    #[test]
    fn table() {
        let c = |line_len, consumed| LineScan::Complete { line_len, consumed };
        let cases: &[(&[u8], usize, LineScan)] = &[
            (b"", 4, LineScan::Incomplete),
            (b"\n", 4, c(0, 1)),
            (b"\r\n", 4, c(0, 2)),
            (b"ok\n", 4, c(2, 3)),
            (b"ok\r\n", 4, c(2, 4)),
            (b"ok\r\r\n", 4, c(2, 5)),
            (b"ok\nqueued\n", 4, c(2, 3)),
            (b"abcd\n", 4, c(4, 5)),
            (b"abc\r\n", 4, c(3, 5)),
            (b"abcd\r\n", 4, LineScan::TooLong),
            (b"abcde\n", 4, LineScan::TooLong),
            (b"abcd", 4, LineScan::Incomplete),
            (b"abcd\r", 4, LineScan::TooLong),
            (b"abcde", 4, LineScan::TooLong),
            (b"\r", 0, LineScan::TooLong),
            (b"\r\r\n", 4, c(0, 3)),
            (b"x", 0, LineScan::TooLong),
            (b"\n", 0, c(0, 1)),
        ];
        for (input, max, want) in cases {
            assert_eq!(
                scan_line(input, *max),
                *want,
                "input {:?} max {max}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn exactly_256_accepted_257_rejected() {
        let mut line = vec![b'a'; 256];
        line.push(b'\n');
        assert_eq!(
            scan_line(&line, 256),
            LineScan::Complete {
                line_len: 256,
                consumed: 257
            }
        );
        let mut long = vec![b'a'; 257];
        long.push(b'\n');
        assert_eq!(scan_line(&long, 256), LineScan::TooLong);
        // The `\r` counts: 256 bytes plus `\r\n` is too long.
        let mut cr = vec![b'a'; 256];
        cr.extend_from_slice(b"\r\n");
        assert_eq!(scan_line(&cr, 256), LineScan::TooLong);
        // Without the newline yet, 257 bytes already prove the line too long.
        assert_eq!(scan_line(&long[..257], 256), LineScan::TooLong);
        assert_eq!(scan_line(&long[..256], 256), LineScan::Incomplete);
    }

    #[test]
    fn huge_buffer_scans_only_the_window() {
        let buf = vec![b'x'; 10 << 20];
        assert_eq!(scan_line(&buf, 16), LineScan::TooLong);
    }

    #[test]
    fn byte_at_a_time_agrees_with_whole() {
        let input = b"acquired 0000000000000001aaaaaaaaaaaaaaaa 33\r\n";
        for split in 0..input.len() {
            let got = scan_line(&input[..split], 128);
            assert_eq!(got, LineScan::Incomplete, "split {split}");
        }
        assert!(matches!(
            scan_line(input, 128),
            LineScan::Complete { consumed, .. } if consumed == input.len()
        ));
    }
}
