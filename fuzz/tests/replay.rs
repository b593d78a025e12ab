//! Replays the committed seeds and regression inputs through the fuzz harnesses without
//! libFuzzer: `cargo test --manifest-path fuzz/Cargo.toml`.

use std::fs;
use std::path::{Path, PathBuf};

use tandem_fuzz::{TextOutcome, sync_message, text_edit};

fn inputs(dir: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).expect("readable input");
            (p, bytes)
        })
        .collect()
}

/// Seeds of content the server refuses (subdocuments are unsupported content, 1007); they stay
/// in the corpus as a start for inputs near what it refuses.
const REFUSED_SEEDS: &[&str] = &["update_subdoc.bin"];

#[test]
fn every_sync_seed_is_a_frame_the_server_accepts_and_applies() {
    let seeds = inputs("seeds/sync_message");
    assert!(
        seeds.len() >= 12,
        "seeds missing: run node fuzz/gen_seeds.mjs"
    );
    for (path, bytes) in seeds {
        let outcome = sync_message(&bytes);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if REFUSED_SEEDS.contains(&name) {
            assert!(!outcome.accepted, "{} was accepted", path.display());
            continue;
        }
        assert!(outcome.accepted, "{} was refused", path.display());
        assert!(!outcome.refused, "{} did not apply", path.display());
    }
}

#[test]
fn text_edit_seeds_cover_every_outcome() {
    let seeds = inputs("seeds/text_edit");
    assert!(
        seeds.len() >= 12,
        "seeds missing: run node fuzz/gen_seeds.mjs"
    );
    let outcomes: Vec<TextOutcome> = seeds.iter().map(|(_, b)| text_edit(b)).collect();
    for kind in [
        TextOutcome::Applied,
        TextOutcome::Refused,
        TextOutcome::NotText,
        TextOutcome::BadBody,
    ] {
        assert!(outcomes.contains(&kind), "no seed ends as {kind:?}");
    }
}

/// Every input in `regressions/` goes through the harness, which follows the server's path and
/// checks its invariants, without a panic. Each input runs on its own so the failure names
/// every one that breaks.
#[test]
fn regression_inputs_do_not_panic() {
    let mut failing = Vec::new();
    for (path, bytes) in inputs("regressions/sync_message") {
        if std::panic::catch_unwind(|| sync_message(&bytes)).is_err() {
            failing.push(path);
        }
    }
    for (path, bytes) in inputs("regressions/text_edit") {
        if std::panic::catch_unwind(|| text_edit(&bytes)).is_err() {
            failing.push(path);
        }
    }
    assert!(failing.is_empty(), "still failing: {failing:#?}");
}
