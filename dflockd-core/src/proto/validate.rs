//! Client-side validation of what goes on the wire, before anything is sent.

use super::MAX_REQUEST_LINE;

/// Longest key, in bytes: a request line holds at most 256 bytes.
pub const MAX_KEY_LEN: usize = MAX_REQUEST_LINE;

/// Why a value cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// The key is empty.
    #[error("key is empty")]
    EmptyKey,
    /// The key is longer than a request line allows.
    #[error("key is {len} bytes long, the limit is {max}")]
    KeyTooLong {
        /// Length of the key in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The key contains whitespace or a control character.
    #[error(
        "key contains a forbidden character {found:?} at byte {at} (no whitespace or control characters)"
    )]
    KeyCharacter {
        /// The offending character.
        found: char,
        /// Its byte offset in the key.
        at: usize,
    },
    /// A token is not 32 lowercase hex characters.
    #[error("token is not 32 lowercase hex characters")]
    Token,
    /// The auth secret is empty, too long, or contains a line break or control character.
    #[error("auth token must be 1 to {max} bytes without control characters")]
    Secret {
        /// The longest secret allowed.
        max: usize,
    },
    /// A lease of zero seconds.
    #[error("lease must be greater than zero")]
    ZeroLease,
    /// A semaphore limit of zero.
    #[error("semaphore limit must be greater than zero")]
    ZeroLimit,
    /// A lock request carrying a limit other than 1.
    #[error("a lock has limit 1; use a semaphore for other limits")]
    LockLimit,
    /// A number larger than the protocol allows.
    #[error("{what} of {value} is larger than the protocol allows ({max})")]
    TooLarge {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// The whole request line would exceed the server's line limit.
    #[error("request line is {len} bytes long, the server accepts at most {max}")]
    LineTooLong {
        /// Length of the line in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
}

/// Checks a key the client is about to send.
///
/// The server forbids only space, tab, `\r` and `\n`; the client is stricter and also refuses
/// every other whitespace and control character, which can only be a mistake (a smuggled
/// line break in a templated key, a stray NUL). Any other UTF-8 is fine.
///
/// # Errors
/// [`InvalidInput::EmptyKey`], [`InvalidInput::KeyTooLong`] or [`InvalidInput::KeyCharacter`].
pub fn validate_client_key(key: &str) -> Result<(), InvalidInput> {
    if key.is_empty() {
        return Err(InvalidInput::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(InvalidInput::KeyTooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    // Printable ASCII other than space is always fine: the common case, checked bytewise
    // (without early exit, which lets the compiler check many bytes per instruction).
    if key
        .bytes()
        .fold(true, |ok, b| ok & (b.wrapping_sub(b'!') < 0x7f - b'!'))
    {
        return Ok(());
    }
    match key
        .char_indices()
        .find(|(_, c)| c.is_whitespace() || c.is_control())
    {
        Some((at, found)) => Err(InvalidInput::KeyCharacter { found, at }),
        None => Ok(()),
    }
}

/// Checks that `token` looks like a token a server issued: 32 lowercase hex characters.
///
/// # Errors
/// [`InvalidInput::Token`].
pub fn validate_token_text(token: &str) -> Result<(), InvalidInput> {
    if token.len() == 32 && super::token::is_lower_hex(token.as_bytes()) {
        Ok(())
    } else {
        Err(InvalidInput::Token)
    }
}

/// Checks an auth secret that every server release accepts: 1 to 256 bytes, no control
/// characters (so no line break can be smuggled into the request). Servers of v1.15 and later
/// accept up to [`MAX_AUTH_SECRET`] bytes ([`validate_secret_up_to`]).
///
/// # Errors
/// [`InvalidInput::Secret`].
pub fn validate_secret(secret: &str) -> Result<(), InvalidInput> {
    validate_secret_up_to(secret, MAX_REQUEST_LINE)
}

/// The longest auth secret a server of v1.15 or later accepts (64 KiB); older releases cap
/// it, like every line, at 256 bytes.
pub const MAX_AUTH_SECRET: usize = 64 * 1024;

/// [`validate_secret`] with another length limit (at most [`MAX_AUTH_SECRET`]).
///
/// # Errors
/// [`InvalidInput::Secret`].
pub fn validate_secret_up_to(secret: &str, max: usize) -> Result<(), InvalidInput> {
    let max = max.min(MAX_AUTH_SECRET);
    if secret.is_empty() || secret.len() > max || secret.chars().any(|c| c.is_control()) {
        Err(InvalidInput::Secret { max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let ok = ["foo", "user:42:profile", "ключ", "a", "order/{7}", "ü-ß"];
        for k in ok {
            assert_eq!(validate_client_key(k), Ok(()), "{k}");
        }
        assert_eq!(validate_client_key(&"k".repeat(256)), Ok(()));
        let bad: &[(&str, InvalidInput)] = &[
            ("", InvalidInput::EmptyKey),
            ("a b", InvalidInput::KeyCharacter { found: ' ', at: 1 }),
            ("a\tb", InvalidInput::KeyCharacter { found: '\t', at: 1 }),
            ("foo\nr", InvalidInput::KeyCharacter { found: '\n', at: 3 }),
            ("foo\r", InvalidInput::KeyCharacter { found: '\r', at: 3 }),
            ("nul\0", InvalidInput::KeyCharacter { found: '\0', at: 3 }),
            (
                "nbsp\u{a0}",
                InvalidInput::KeyCharacter {
                    found: '\u{a0}',
                    at: 4,
                },
            ),
            (
                "del\u{7f}",
                InvalidInput::KeyCharacter {
                    found: '\u{7f}',
                    at: 3,
                },
            ),
        ];
        for (k, want) in bad {
            assert_eq!(validate_client_key(k).as_ref(), Err(want), "{k:?}");
        }
        // Counted in bytes, not characters: 129 two-byte characters are 258 bytes.
        assert_eq!(
            validate_client_key(&"ж".repeat(129)),
            Err(InvalidInput::KeyTooLong { len: 258, max: 256 })
        );
    }

    #[test]
    fn tokens() {
        assert!(validate_token_text("0123456789abcdef0123456789abcdef").is_ok());
        for bad in [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcd\nf",
        ] {
            assert_eq!(
                validate_token_text(bad),
                Err(InvalidInput::Token),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn secrets() {
        assert!(validate_secret("shared-secret").is_ok());
        assert!(validate_secret("with space is fine").is_ok());
        assert!(validate_secret(&"s".repeat(256)).is_ok());
        let secret = Err(InvalidInput::Secret { max: 256 });
        for bad in ["", "a\nl", "a\rb", "\0"] {
            assert_eq!(validate_secret(bad), secret, "{bad:?}");
        }
        assert_eq!(validate_secret(&"s".repeat(257)), secret);
        let long = "s".repeat(MAX_AUTH_SECRET);
        assert!(validate_secret_up_to(&long, MAX_AUTH_SECRET).is_ok());
        assert_eq!(
            validate_secret_up_to(&format!("{long}s"), usize::MAX),
            Err(InvalidInput::Secret {
                max: MAX_AUTH_SECRET
            })
        );
    }
}
