//! The fence counter behind version 2.1's tokens, optionally persisted in the real server's
//! state-file journal (`--fence-state-file`).
//!
//! The counter is process-wide: every grant (any key, lock or semaphore) takes the next value.
//! Without a file it starts at the Unix time in nanoseconds, so a restart normally continues
//! above the previous run. With a file, the server reserves ranges of [`RANGE`] fences ahead
//! and records each range's end (the *ceiling*) before handing out a fence of it; a new run
//! starts at the recorded ceiling (or the clock, whichever is higher), so fences grow across
//! restarts even when the clock went back. A crash skips at most one range.
//!
//! The file is a journal of two 32-byte slots, each: the magic `dflfnc1\n`, the record's
//! sequence number and the ceiling (both big-endian `u64`), then the CRC-64 (ISO polynomial,
//! as Go's `hash/crc64` computes it) of those 24 bytes, big-endian. Record `seq` goes to slot
//! `(seq - 1) % 2`, so a torn write leaves the other slot intact; the valid record with the
//! highest sequence number wins. A file of 0 bytes is a fresh start; an 8-byte file is an
//! older raw big-endian ceiling; any other size, or no valid record, refuses to start.
//!
//! Unlike the real server, the file is not locked against a second process (`flock`).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;

/// Fences reserved per write of the state file.
pub(crate) const RANGE: u64 = 1 << 20;

const MAGIC: &[u8; 8] = b"dflfnc1\n";
const RECORD: usize = 32;
const LEGACY: u64 = 8;

/// Hands out fences: strictly increasing, process-wide.
pub(crate) struct FenceCounter {
    /// The last fence handed out.
    counter: AtomicU64,
    /// Fences below this are covered by the state file (`u64::MAX` without one).
    ceiling: AtomicU64,
    journal: Option<Mutex<Journal>>,
}

struct Journal {
    file: File,
    path: PathBuf,
    seq: u64,
}

impl FenceCounter {
    /// A counter whose first fence is `seed + 1`, kept in memory only.
    pub(crate) fn in_memory(seed: u64) -> Self {
        FenceCounter {
            counter: AtomicU64::new(seed),
            ceiling: AtomicU64::new(u64::MAX),
            journal: None,
        }
    }

    /// A counter kept in `path` (created when missing) when given, else [`in_memory`]. The
    /// first fence is one above the recorded ceiling or `seed`, whichever is higher; a first
    /// range is reserved before this returns.
    ///
    /// [`in_memory`]: Self::in_memory
    pub(crate) fn open(path: Option<&Path>, seed: u64) -> Result<Self, Error> {
        let Some(path) = path else {
            return Ok(Self::in_memory(seed));
        };
        let file = open_state_file(path).map_err(|err| {
            Error::FenceState(format!(
                "open fence state {}: {}",
                go_quote(&path.to_string_lossy()),
                go_io_error("open", path, &err)
            ))
        })?;
        let (seq, ceiling) = recover(&file)
            .map_err(|why| Error::FenceState(format!("fence persistence failed: {why}")))?;
        let start = ceiling.max(seed);
        let mut journal = Journal {
            file,
            path: path.to_owned(),
            seq,
        };
        let reserved = journal
            .reserve(start)
            .map_err(|why| Error::FenceState(format!("fence persistence failed: {why}")))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|err| {
                Error::FenceState(format!(
                    "fence persistence failed: sync fence state directory: {}",
                    go_io_error("sync", dir, &err)
                ))
            })?;
        }
        Ok(FenceCounter {
            counter: AtomicU64::new(start),
            ceiling: AtomicU64::new(reserved),
            journal: Some(Mutex::new(journal)),
        })
    }

    /// The next fence. When the state file cannot be written the fence is still handed out
    /// (and an error logged), where the real server answers the request `error`.
    pub(crate) fn next(&self) -> u64 {
        let fence = self
            .counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(1))
            })
            .map_or(u64::MAX, |n| n.saturating_add(1));
        if fence >= self.ceiling.load(Ordering::Acquire) {
            self.extend(fence);
        }
        fence
    }

    /// Reserves the range after `fence` in the state file (once, however many callers got
    /// past the ceiling together).
    fn extend(&self, fence: u64) {
        let Some(journal) = &self.journal else {
            return;
        };
        let mut journal = journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if fence < self.ceiling.load(Ordering::Acquire) {
            return;
        }
        match journal.reserve(fence) {
            Ok(ceiling) => self.ceiling.store(ceiling, Ordering::Release),
            Err(why) => tracing::error!(
                path = %journal.path.display(),
                err = %why,
                "fence persistence failed"
            ),
        }
    }
}

impl Journal {
    /// Records `from + RANGE` as the new ceiling (synced to disk) and returns it.
    fn reserve(&mut self, from: u64) -> Result<u64, String> {
        let ceiling = from
            .checked_add(RANGE)
            .ok_or_else(|| "counter would overflow".to_owned())?;
        let seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| "journal sequence exhausted".to_owned())?;
        let record = encode(seq, ceiling);
        let offset = ((seq - 1) % 2) * RECORD as u64;
        write_at(&self.file, &record, offset)
            .map_err(|err| format!("write fence state: {}", go_errno(&err)))?;
        self.file
            .sync_all()
            .map_err(|err| format!("sync fence state: {}", go_errno(&err)))?;
        self.seq = seq;
        Ok(ceiling)
    }
}

#[cfg(unix)]
fn open_state_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_state_file(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

#[cfg(unix)]
fn write_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}

/// The recorded `(seq, ceiling)`: `(0, 0)` for an empty file.
fn recover(mut file: &File) -> Result<(u64, u64), String> {
    use std::io::Read;
    let size = file
        .metadata()
        .map_err(|err| format!("stat fence state: {}", go_errno(&err)))?
        .len();
    if size == 0 {
        return Ok((0, 0));
    }
    if size != LEGACY && size != RECORD as u64 && size != 2 * RECORD as u64 {
        return Err(format!(
            "state file is {size} bytes, expected {LEGACY}, {RECORD}, or {}",
            2 * RECORD
        ));
    }
    let mut data = Vec::with_capacity(2 * RECORD);
    file.read_to_end(&mut data)
        .map_err(|err| format!("read fence state: {}", go_errno(&err)))?;
    if let Ok(legacy) = <[u8; 8]>::try_from(data.as_slice()) {
        return Ok((0, u64::from_be_bytes(legacy)));
    }
    data.chunks_exact(RECORD)
        .filter_map(decode)
        .max_by_key(|&(seq, _)| seq)
        .ok_or_else(|| "no valid fence journal records".to_owned())
}

/// One journal record.
fn encode(seq: u64, ceiling: u64) -> [u8; RECORD] {
    let mut out = [0u8; RECORD];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&seq.to_be_bytes());
    out[16..24].copy_from_slice(&ceiling.to_be_bytes());
    let crc = crc64_iso(&out[..24]);
    out[24..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// `(seq, ceiling)` of a valid record.
fn decode(record: &[u8]) -> Option<(u64, u64)> {
    let word = |at: usize| {
        record
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
    };
    if record.get(..8)? != MAGIC || word(24)? != crc64_iso(&record[..24]) {
        return None;
    }
    Some((word(8)?, word(16)?))
}

/// CRC-64 with the ISO polynomial, reflected, initial value and final XOR all ones: what Go's
/// `crc64.Checksum(data, crc64.MakeTable(crc64.ISO))` returns.
fn crc64_iso(data: &[u8]) -> u64 {
    const POLY: u64 = 0xD800_0000_0000_0000;
    let mut crc = !0u64;
    for &byte in data {
        crc ^= u64::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An I/O error as Go's `os` package words it: `open /path: no such file or directory`.
pub(crate) fn go_io_error(op: &str, path: &Path, err: &io::Error) -> String {
    format!("{op} {}: {}", path.display(), go_errno(err))
}

/// The operating system's reason, lowercase and without Rust's `(os error N)`.
pub(crate) fn go_errno(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A string quoted as Go's `%q` does for printable text: `"`, `\` and control characters
/// escaped.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "dflockd-testkit-fence-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn crc_like_go() {
        // The CRC-64/GO-ISO check value.
        assert_eq!(crc64_iso(b"123456789"), 0xb909_56c7_75a4_1001);
        assert_eq!(crc64_iso(b""), 0);
    }

    #[test]
    fn records_round_trip() {
        let r = encode(7, 0x0123_4567_89ab_cdef);
        assert_eq!(&r[..8], b"dflfnc1\n");
        assert_eq!(decode(&r), Some((7, 0x0123_4567_89ab_cdef)));
        let mut bad = r;
        bad[20] ^= 1;
        assert_eq!(decode(&bad), None);
    }

    #[test]
    fn in_memory_counts_from_the_seed() {
        let c = FenceCounter::in_memory(41);
        assert_eq!((c.next(), c.next()), (42, 43));
    }

    #[test]
    fn persisted_ceiling_beats_the_clock() {
        let path = temp("state");
        let first = FenceCounter::open(Some(&path), 1000).unwrap();
        assert_eq!(first.next(), 1001);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 32, "the first record goes to slot 0");
        assert_eq!(decode(&data), Some((1, 1000 + RANGE)));
        drop(first);
        // A clock that went back: the recorded ceiling wins.
        let second = FenceCounter::open(Some(&path), 5).unwrap();
        assert_eq!(second.next(), 1000 + RANGE + 1);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 64);
        assert_eq!(decode(&data[32..]), Some((2, 1000 + 2 * RANGE)));
        // Crossing the ceiling reserves the next range.
        second
            .counter
            .store(1000 + 2 * RANGE - 1, Ordering::Release);
        assert_eq!(second.next(), 1000 + 2 * RANGE);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(decode(&data[..32]), Some((3, 1000 + 3 * RANGE)));
        drop(second);
        // A clock ahead of the file wins.
        let third = FenceCounter::open(Some(&path), u64::MAX / 2).unwrap();
        assert_eq!(third.next(), u64::MAX / 2 + 1);
        // The newest record wins even when a slot is torn.
        let mut data = std::fs::read(&path).unwrap();
        data[33] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        drop(third);
        let fourth = FenceCounter::open(Some(&path), 0).unwrap();
        assert_eq!(fourth.next(), 1000 + 3 * RANGE + 1);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn legacy_and_broken_files() {
        let path = temp("legacy");
        std::fs::write(&path, 77u64.to_be_bytes()).unwrap();
        assert_eq!(FenceCounter::open(Some(&path), 1).unwrap().next(), 78);
        std::fs::write(&path, [0u8; 5]).unwrap();
        let err = FenceCounter::open(Some(&path), 1)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "lock manager init failed: fence persistence failed: state file is 5 bytes, expected 8, 32, or 64"
        );
        std::fs::write(&path, [0u8; 64]).unwrap();
        let err = FenceCounter::open(Some(&path), 1)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "lock manager init failed: fence persistence failed: no valid fence journal records"
        );
        let missing_dir = path.with_file_name("no-such-dir").join("state");
        let err = FenceCounter::open(Some(&missing_dir), 1)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("lock manager init failed: open fence state \"")
                && err.ends_with(": no such file or directory"),
            "{err}"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn go_texts() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
        let err = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(go_errno(&err), "entity not found");
        let err = io::Error::from_raw_os_error(2);
        assert_eq!(go_errno(&err), "no such file or directory");
    }
}
