//! Lock tokens and the fence they carry.

use std::fmt;
use std::str::FromStr;

/// A lock token: 32 lowercase hex characters, issued by the server with every grant.
///
/// The token is the proof of ownership: whoever presents (key, token) may release or renew.
/// It is therefore treated like a credential: [`Debug`](fmt::Debug) and
/// [`Display`](fmt::Display) show only the first 16 characters followed by `…`. Use
/// [`Token::as_str`] when the whole value is needed (to hand the lock to another process).
///
/// Newer servers put a big-endian `u64` fence counter in the first 16 hex characters; see
/// [`Token::prefix_fence`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token([u8; 32]);

/// The text is not a valid token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("token is not 32 lowercase hex characters")]
pub struct TokenError;

impl Token {
    /// Length of a token in characters.
    pub const LEN: usize = 32;

    /// Parses a token from its text.
    ///
    /// # Errors
    /// [`TokenError`] unless `text` is exactly 32 characters of `0-9a-f`.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        Token::from_bytes(text.as_bytes())
    }

    /// [`Token::parse`] on bytes (an answer line, before any UTF-8 check: hex is ASCII).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| TokenError)?;
        if is_lower_hex(&bytes) {
            Ok(Token(bytes))
        } else {
            Err(TokenError)
        }
    }

    /// Makes a token from a fence counter and 64 random bits, the way fence-issuing servers
    /// do: 16 hex digits of `fence` (big-endian) followed by 16 hex digits of `random`.
    #[must_use]
    pub fn from_parts(fence: u64, random: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        let value = (u128::from(fence) << 64) | u128::from(random);
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 4 * (31 - i);
            *slot = HEX[((value >> shift) & 0xf) as usize];
        }
        Token(out)
    }

    /// The whole token text. Handle with care: it is a credential for the lock.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Characters shown by [`short`](Token::short), `Display` and `Debug`.
    pub const SHORT_LEN: usize = 16;

    /// The first 16 characters, for logs and messages.
    ///
    /// With fence-prefixed tokens these are the fence (not a secret: [`prefix_fence`] is
    /// exposed anyway), so grants are told apart in logs while the random half stays hidden;
    /// with older servers' random tokens, half the bits stay hidden.
    ///
    /// [`prefix_fence`]: Token::prefix_fence
    #[must_use]
    pub fn short(&self) -> &str {
        &self.as_str()[..Self::SHORT_LEN]
    }

    /// The fence encoded in the first 16 hex characters (big-endian).
    ///
    /// Meaningful only with servers that issue fence-prefixed tokens (the test server does, as
    /// do newer dflockd servers); with older servers the prefix is random and so is this value.
    #[must_use]
    pub fn prefix_fence(&self) -> u64 {
        // Only `0-9` (0x30..) and `a-f` (0x61..) are stored: the low nibble, plus 9 for letters
        // (bit 6 set). Eight digits at a time: each byte of the word becomes its digit's value.
        let digits = |half: &[u8]| {
            let mut word = [0u8; 8];
            word.copy_from_slice(half);
            let x = u64::from_be_bytes(word);
            let values = (x & 0x0f0f_0f0f_0f0f_0f0f) + 9 * ((x >> 6) & 0x0101_0101_0101_0101);
            // Pack the eight nibbles (one per byte, most significant first) into 32 bits.
            let pairs = (values | (values >> 4)) & 0x00ff_00ff_00ff_00ff;
            let quads = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
            (quads | (quads >> 16)) & 0xffff_ffff
        };
        (digits(&self.0[..8]) << 32) | digits(&self.0[8..16])
    }
}

/// Whether every byte is `0-9` or `a-f`. No early exit, so the check compiles to a few
/// vector instructions (tokens are checked for every grant and every release).
pub(crate) fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        ok & ((b.wrapping_sub(b'0') < 10) | (b.wrapping_sub(b'a') < 6))
    })
}

impl FromStr for Token {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Token::parse(s)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}…)", self.short())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_fence() {
        let t = Token::parse("000000000000002a0123456789abcdef").unwrap();
        assert_eq!(t.prefix_fence(), 42);
        assert_eq!(t.short(), "000000000000002a");
        assert_eq!(t.as_str(), "000000000000002a0123456789abcdef");
        let max = Token::parse("ffffffffffffffff0000000000000000").unwrap();
        assert_eq!(max.prefix_fence(), u64::MAX);
    }

    #[test]
    fn from_parts_round_trips() {
        for (fence, random) in [(0, 0), (1, u64::MAX), (u64::MAX, 7), (0x0102_0304, 0xdead)] {
            let t = Token::from_parts(fence, random);
            assert_eq!(t.prefix_fence(), fence);
            assert_eq!(Token::parse(t.as_str()), Ok(t));
        }
        assert_eq!(
            Token::from_parts(1, 0xabc).as_str(),
            "00000000000000010000000000000abc"
        );
    }

    #[test]
    fn fences_of_random_tokens() {
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..10_000 {
            let fence = rng.u64(..) >> rng.u32(0..64);
            let t = Token::from_parts(fence, rng.u64(..));
            assert_eq!(t.prefix_fence(), fence, "{}", t.as_str());
            let parsed = Token::parse(&format!("{fence:016x}{:016x}", rng.u64(..))).unwrap();
            assert_eq!(parsed.prefix_fence(), fence);
        }
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "abc",
            "000000000000002a0123456789abcdeF",
            "000000000000002a0123456789abcdeg",
            "000000000000002a0123456789abcdef0",
            "000000000000002a0123456789abcde ",
            "ффффффффффффффф0",
        ] {
            assert_eq!(Token::parse(bad), Err(TokenError), "{bad:?}");
        }
    }

    #[test]
    fn hex_check_and_fence_digits_agree_with_the_definition() {
        for b in 0..=255u8 {
            let hex = b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
            assert_eq!(is_lower_hex(&[b]), hex, "{b:#x}");
            if hex {
                let t = Token::from_bytes(&[[b; 16], [b'0'; 16]].concat()).unwrap();
                let digit = u64::from((b as char).to_digit(16).unwrap());
                assert_eq!(t.prefix_fence(), digit * 0x1111_1111_1111_1111, "{b:#x}");
            }
        }
    }

    #[test]
    fn never_shown_whole() {
        let t = Token::parse("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(format!("{t}"), "0123456789abcdef…");
        assert_eq!(format!("{t:?}"), "Token(0123456789abcdef…)");
        assert!(!format!("{t:?}{t}").contains("0123456789abcdef0"));
    }
}
