//! The properties the fuzz targets check, as plain functions of the input bytes.
//!
//! Shared by the cargo-fuzz targets (`fuzz_targets/*.rs`) and by the corpus replay in
//! `dflockd-core/tests/fuzz_corpus.rs`, so every committed input is re-checked by
//! `cargo test` on stable. Each function panics when a property fails.
#![allow(dead_code, unreachable_pub)]

use dflockd_core::proto::server::parse_request;
use dflockd_core::proto::{
    Expect, LineScan, MAX_WIRE_INT, Reply, ReplyError, ServerStatus, Token, scan_line as scan,
    validate_token_text,
};

const EXPECTS: [Expect; 6] = [
    Expect::Grant,
    Expect::Enqueue,
    Expect::Release,
    Expect::Renew,
    Expect::Auth,
    Expect::Stats,
];

/// `Reply::parse`: the first byte picks the request kind, the rest is the answer line.
/// Never panics; every success respects the protocol's bounds; a trailing `\r` changes
/// nothing.
pub fn reply_parse(data: &[u8]) {
    let Some((&kind, line)) = data.split_first() else {
        return;
    };
    let expect = EXPECTS[usize::from(kind) % EXPECTS.len()];
    let parsed = Reply::parse(expect, line);
    match &parsed {
        Ok(Reply::Granted(grant)) => {
            assert!(matches!(expect, Expect::Grant | Expect::Enqueue));
            assert!((1..=MAX_WIRE_INT).contains(&grant.lease_s), "{grant:?}");
            assert_eq!(Token::parse(grant.token.as_str()), Ok(grant.token));
        }
        Ok(Reply::Renewed { lease_s, .. }) => {
            assert_eq!(expect, Expect::Renew);
            assert!((1..=MAX_WIRE_INT).contains(lease_s));
        }
        Ok(Reply::Queued) => assert_eq!(expect, Expect::Enqueue),
        Ok(Reply::Timeout) => assert_eq!(expect, Expect::Grant),
        Ok(Reply::Ok) => assert!(matches!(expect, Expect::Release | Expect::Auth)),
        Ok(Reply::Stats(json)) => {
            assert_eq!(expect, Expect::Stats);
            assert!(json.len() < line.len());
        }
        Ok(_) => {}
        Err(ReplyError::Server(status)) => {
            assert!(status.word().starts_with("error"));
            assert!(status.word().len() <= 64);
            if let ServerStatus::NotLeader(Some(addr)) = status {
                assert!(addr.len() <= 255 && addr.bytes().all(|b| b.is_ascii_graphic()));
            }
            assert!(!status.to_string().is_empty());
        }
        Err(ReplyError::Malformed(reason)) => assert!(!reason.is_empty()),
        Err(_) => {}
    }
    if line.last() != Some(&b'\r') {
        let mut with_cr = line.to_vec();
        with_cr.push(b'\r');
        assert_eq!(
            Reply::parse(expect, &with_cr),
            parsed,
            "a trailing CR changes the answer"
        );
    }
}

/// `parse_request` (the server's side): the input is split into command, key and argument
/// lines. Never panics; a request that the client can encode parses back to itself.
pub fn request_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let (Some(command), Some(key), Some(arg)) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let trim = |s: &str| s.trim_end_matches('\r').to_owned();
    let (command, key, arg) = (trim(command), trim(key), trim(arg));
    let Ok(request) = parse_request(&command, &key, &arg) else {
        return;
    };
    // Nothing the parser returns is unprintable, and Debug never panics.
    let _ = format!("{request:?}");
    let mut wire = Vec::new();
    if request.encode(&mut wire).is_err() {
        assert!(wire.is_empty(), "a refused encode appends nothing");
        return;
    }
    let wire = String::from_utf8(wire).expect("encoded requests are UTF-8");
    let parts: Vec<&str> = wire.split('\n').collect();
    assert_eq!(parts.len(), 4, "three lines: {wire:?}");
    assert_eq!(parts[3], "");
    for part in &parts[..3] {
        assert!(part.len() <= dflockd_core::proto::MAX_REQUEST_LINE);
    }
    let again = parse_request(parts[0], parts[1], parts[2]).expect("encoded requests parse");
    assert_eq!(again, request, "round trip of {wire:?}");
}

/// `Token::parse` and `prefix_fence`: accepted exactly when the text is 32 lowercase hex
/// characters; the fence is the first 16 read as hex; Display and Debug never show it whole.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let expected = text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let parsed = Token::parse(text);
    assert_eq!(parsed.is_ok(), expected, "{text:?}");
    assert_eq!(validate_token_text(text).is_ok(), expected, "{text:?}");
    let Ok(token) = parsed else {
        return;
    };
    assert_eq!(token.as_str(), text);
    let fence = u64::from_str_radix(&text[..16], 16).expect("hex");
    let low = u64::from_str_radix(&text[16..], 16).expect("hex");
    assert_eq!(token.prefix_fence(), fence);
    assert_eq!(Token::from_parts(fence, low), token);
    assert_eq!(token.short(), &text[..Token::SHORT_LEN]);
    // Only the short prefix is ever shown, never the random half.
    assert_eq!(
        format!("{token}"),
        format!("{}…", &text[..Token::SHORT_LEN])
    );
    assert_eq!(
        format!("{token:?}"),
        format!("Token({}…)", &text[..Token::SHORT_LEN])
    );
}

/// `scan_line`: the first two bytes give the cap (0..=1023), the rest is the buffer.
/// Agrees with a naive reading of the rule.
pub fn scan_line(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let max = usize::from(u16::from_le_bytes([data[0], data[1]]) % 1024);
    let buf = &data[2..];
    let got = scan(buf, max);
    let newline = buf.iter().position(|&b| b == b'\n');
    let want = match newline {
        Some(nl) if nl <= max => {
            let mut len = nl;
            while len > 0 && buf[len - 1] == b'\r' {
                len -= 1;
            }
            LineScan::Complete {
                line_len: len,
                consumed: nl + 1,
            }
        }
        _ if buf.len() > max => LineScan::TooLong,
        _ => LineScan::Incomplete,
    };
    assert_eq!(got, want, "max {max} buf {buf:?}");
}

/// Runs the check for `target` (a fuzz target's name) on `data`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "reply_parse" => reply_parse(data),
        "request_parse" => request_parse(data),
        "token" => token(data),
        "scan_line" => scan_line(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// The fuzz targets, by name.
pub const TARGETS: [&str; 4] = ["reply_parse", "request_parse", "token", "scan_line"];
