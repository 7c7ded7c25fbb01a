//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) and the inputs of past
//! findings (`fuzz/regressions/<target>/*`) through the fuzz targets' checks, so that every
//! `cargo test` on stable re-checks them. The fuzzing itself needs nightly:
//! `cd fuzz && cargo +nightly fuzz run <target>`.

#[path = "../../fuzz/checks/mod.rs"]
mod checks;

use std::path::PathBuf;

fn inputs(folder: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(folder)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).expect("readable corpus file");
            (p, data)
        })
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let corpus = inputs("corpus", target);
    assert!(
        corpus.len() >= 5,
        "the seed corpus of {target} is missing ({} files)",
        corpus.len()
    );
    for (path, data) in corpus.iter().chain(&inputs("regressions", target)) {
        let outcome = std::panic::catch_unwind(|| checks::run(target, data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
    }
}

#[test]
fn reply_parse_corpus() {
    replay("reply_parse");
}

#[test]
fn request_parse_corpus() {
    replay("request_parse");
}

#[test]
fn token_corpus() {
    replay("token");
}

#[test]
fn scan_line_corpus() {
    replay("scan_line");
}

#[test]
fn every_target_is_replayed() {
    assert_eq!(
        checks::TARGETS,
        ["reply_parse", "request_parse", "token", "scan_line"]
    );
}
