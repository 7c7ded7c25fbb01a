//! Which dflockd release the servers run, as the user declares it.
//!
//! Nothing on the wire tells the releases apart where it matters most: a v1.x token is 32
//! random hex digits, a v2.1 token starts with 16 hex digits of a fence counter, and both look
//! alike. So the client relies on what it is told ([`ClientBuilder::server_version`]) and
//! never guesses: without a declared version, no token is taken for a fence.
//!
//! [`ClientBuilder::server_version`]: crate::ClientBuilder::server_version

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proto::Token;

/// A dflockd server release, `major.minor.patch`.
///
/// ```
/// use dflockd_core::ServerVersion;
/// let v: ServerVersion = "v2.1.1".parse().unwrap();
/// assert_eq!(v, ServerVersion::new(2, 1, 1));
/// assert!(v.issues_fences() && v >= ServerVersion::V2_1);
/// assert!(!ServerVersion::V1_10.issues_fences());
/// assert_eq!("1.10".parse::<ServerVersion>().unwrap().to_string(), "1.10.0");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    major: u32,
    minor: u32,
    patch: u32,
}

impl ServerVersion {
    /// v1.10.0: random tokens (no fence), one namespace for locks and semaphores, no `ping`.
    pub const V1_10: ServerVersion = ServerVersion::new(1, 10, 0);
    /// v1.14.0: `ping`; locks and semaphores in separate namespaces.
    pub const V1_14: ServerVersion = ServerVersion::new(1, 14, 0);
    /// v1.16.0: `error_draining` while the server shuts down.
    pub const V1_16: ServerVersion = ServerVersion::new(1, 16, 0);
    /// v2.1.0: fence-prefixed tokens.
    pub const V2_1: ServerVersion = ServerVersion::new(2, 1, 0);

    /// The release `major.minor.patch`.
    #[must_use]
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        ServerVersion {
            major,
            minor,
            patch,
        }
    }

    /// Whether its tokens carry a fence: a counter in the first 16 hex digits that grows with
    /// every grant (v2.1 and later).
    #[must_use]
    pub fn issues_fences(self) -> bool {
        self >= Self::V2_1
    }

    /// Whether it answers `ping` with `ok` (v1.14 and later; older releases answer `error`,
    /// which [`Client::ping`](crate::Client::ping) takes as alive too).
    #[must_use]
    pub fn has_ping(self) -> bool {
        self >= Self::V1_14
    }

    /// Whether a lock and a semaphore may share a name (v1.14 and later). Before, both live in
    /// one namespace: a key held as a lock is [`Error::LimitMismatch`](crate::Error) for a
    /// semaphore of another limit, and the other way round.
    #[must_use]
    pub fn separate_namespaces(self) -> bool {
        self >= Self::V1_14
    }

    /// The fence `token` carries, for a grant of a server of this release: `Ok(None)` before
    /// v2.1 (random tokens). From v2.1 on the first 16 hex digits are a counter seeded with the
    /// Unix time in nanoseconds when the server started, plus one per grant, so a fence is at
    /// least that of 2020-01-01 and at most a day ahead of this host's clock (a generous
    /// allowance for clock skew and for the grants counted since): `Err(())` for a token
    /// outside that window, which then comes from an older server (a random prefix falls
    /// inside it about once in a hundred times).
    pub(crate) fn fence_of(self, token: &Token) -> Result<Option<u64>, ()> {
        if !self.issues_fences() {
            return Ok(None);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let fence = token.prefix_fence();
        if plausible_fence(fence, now) {
            Ok(Some(fence))
        } else {
            Err(())
        }
    }
}

/// 2020-01-01T00:00:00Z, in nanoseconds since the Unix epoch.
const FENCE_FLOOR: u64 = 1_577_836_800 * 1_000_000_000;

/// Whether `fence` can be a v2.1 fence when this host's clock reads `now` (see
/// [`ServerVersion::fence_of`]).
fn plausible_fence(fence: u64, now: Duration) -> bool {
    let ceiling = now + Duration::from_secs(24 * 3600);
    let ceiling = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    (FENCE_FLOOR..=ceiling).contains(&fence)
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A version that does not parse: [`ServerVersion`]'s `FromStr` wants `major.minor` or
/// `major.minor.patch`, with an optional leading `v`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseVersionError(String);

impl fmt::Display for ParseVersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a dflockd release (want major.minor[.patch], e.g. 2.1.1)",
            self.0
        )
    }
}

impl std::error::Error for ParseVersionError {}

impl FromStr for ServerVersion {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseVersionError(s.to_owned());
        let digits = s.trim().strip_prefix('v').unwrap_or(s.trim());
        let mut parts = digits.split('.');
        let mut number = || -> Result<Option<u32>, ParseVersionError> {
            match parts.next() {
                None => Ok(None),
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map(Some).map_err(|_| bad())
                }
                Some(_) => Err(bad()),
            }
        };
        let (Some(major), Some(minor)) = (number()?, number()?) else {
            return Err(bad());
        };
        let patch = number()?.unwrap_or(0);
        if number()?.is_some() {
            return Err(bad());
        }
        Ok(ServerVersion::new(major, minor, patch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_people_write() {
        for (text, want) in [
            ("2.1.1", (2, 1, 1)),
            ("v2.1.1", (2, 1, 1)),
            ("2.1", (2, 1, 0)),
            (" 1.10 ", (1, 10, 0)),
            ("v1.10.0", (1, 10, 0)),
        ] {
            let v: ServerVersion = text.parse().unwrap();
            assert_eq!(v, ServerVersion::new(want.0, want.1, want.2), "{text}");
        }
        for bad in [
            "", "2", "v", "2.x", "2.1.1.1", "2..1", "-1.2", "2.1-rc1", "latest",
        ] {
            let err = bad.parse::<ServerVersion>().unwrap_err();
            assert!(err.to_string().contains("not a dflockd release"), "{bad}");
        }
    }

    #[test]
    fn fences_are_read_only_from_fence_issuing_releases_and_must_be_plausible() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let token = |fence: u64| Token::from_parts(fence, 0x1234);
        let started = now - 3_600_000_000_000;
        assert_eq!(
            ServerVersion::V2_1.fence_of(&token(started + 7)),
            Ok(Some(started + 7))
        );
        assert_eq!(ServerVersion::V1_10.fence_of(&token(started + 7)), Ok(None));
        assert_eq!(ServerVersion::new(2, 0, 1).fence_of(&token(42)), Ok(None));
        // Small counters, far-future values and most random prefixes cannot be v2.1 fences.
        for bad in [
            0,
            42,
            FENCE_FLOOR - 1,
            now + 2 * 86_400_000_000_000,
            u64::MAX,
        ] {
            assert_eq!(ServerVersion::V2_1.fence_of(&token(bad)), Err(()), "{bad}");
        }
        let mut rng = fastrand::Rng::with_seed(7);
        let accepted = (0..100_000)
            .filter(|_| plausible_fence(rng.u64(..), Duration::from_nanos(now)))
            .count();
        assert!(accepted < 2_000, "{accepted} random prefixes pass");
    }

    #[test]
    fn capabilities_follow_the_releases() {
        let v = |s: &str| s.parse::<ServerVersion>().unwrap();
        assert!(!v("1.10.0").issues_fences() && !v("2.0.1").issues_fences());
        assert!(v("2.1.0").issues_fences() && v("3.0").issues_fences());
        assert!(!v("1.13.3").has_ping() && v("1.14").has_ping());
        assert!(!v("1.10").separate_namespaces() && v("2.1.1").separate_namespaces());
        assert!(v("1.10.1") > ServerVersion::V1_10 && v("1.9.9") < ServerVersion::V1_10);
    }
}
