//! The fuzz targets under `cargo test`: every file of every `fuzz/corpus/<target>/` is replayed
//! through the matching `tollgate::fuzzing` function, then a bounded, deterministic mutation
//! pass (bit flips, byte inserts and deletes, JSON and SSE punctuation, repeats, splices of two
//! corpus inputs) runs `FUZZ_ITERS` inputs per target (default 2,000; `FUZZ_SEED` changes the
//! pass). CI runs this, not the fuzzer: `scripts/fuzz` runs libFuzzer for longer.
//!
//! `sse_differential` is the one target that is not in the library: it compares
//! `stream::SseParser` with `eventsource-stream`, an independent SSE parser (`sse_reference`,
//! where the intentional divergences are listed).
//!
//! A failing input is written to `<target dir>/tmp/fuzz-failures/` so that it can be added to
//! the corpus or replayed with `cargo fuzz run <target> <file>`.

#[path = "fuzz_corpus/sse_reference.rs"]
mod sse_reference;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

type Target = fn(&[u8]);
/// A target's corpus: (file name, contents).
type Corpus = Vec<(String, Vec<u8>)>;

/// Every target of `tollgate::fuzzing`, by its corpus directory's name.
const TARGETS: [(&str, Target); 11] = [
    ("sse_framer", tollgate::fuzzing::sse_framer),
    ("json_array_framer", tollgate::fuzzing::json_array_framer),
    ("openai_usage", tollgate::fuzzing::openai_usage),
    ("gemini_usage", tollgate::fuzzing::gemini_usage),
    ("response_tap", tollgate::fuzzing::response_tap),
    ("openai_inspect", tollgate::fuzzing::openai_inspect),
    ("gemini_inspect", tollgate::fuzzing::gemini_inspect),
    ("cap_output", tollgate::fuzzing::cap_output),
    ("credential", tollgate::fuzzing::credential),
    ("normalize_path", tollgate::fuzzing::normalize_path),
    // Tollgate's SSE parser against eventsource-stream (see `sse_reference`).
    ("sse_differential", sse_reference::check),
];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// The files of one target's corpus, sorted; fails when there are none.
fn corpus(name: &str) -> Corpus {
    let dir = corpus_root().join(name);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()));
    let mut files: Corpus = entries
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("corpus file {}: {e}", path.display()));
            (
                path.file_name()
                    .expect("a file name")
                    .to_string_lossy()
                    .into_owned(),
                data,
            )
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "the corpus of {name} is empty: it would test nothing"
    );
    files
}

/// Run `target` on `input`; on a panic, keep the input and fail naming it.
fn run(name: &str, what: &str, target: Target, input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_ok() {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{name}-{}", what.replace(['/', ' '], "_")));
    let _ = std::fs::write(&file, input);
    panic!("{name}: {what} fails; the input is in {}", file.display());
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

/// Bytes that matter to the parsers: framing, JSON punctuation, escapes, percent signs, BOM.
const INTERESTING: &[u8] = b"\r\n:{}[]\",\\ %&=/.;0123456789\xEF\xBB\xBF\x00\xFF-+eE";

/// Tokens worth inserting whole.
const TOKENS: [&[u8]; 14] = [
    b"data: ",
    b"event: ",
    b"\r\n\r\n",
    b"\n\n",
    b"\"usage\":{\"prompt_tokens\":1}",
    b"\"choices\":[]",
    b"\"stream\":true",
    b"\"stream_options\":",
    b"%3A",
    b"key=",
    b"\\\"",
    b"18446744073709551616",
    b"\xEF\xBB\xBF",
    b"//",
];

/// One input: a corpus file changed by one to four mutations.
fn mutate(rng: &mut Rng, files: &Corpus, all: &[Vec<u8>]) -> Vec<u8> {
    let mut data = files[rng.below(files.len())].1.clone();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        let at = rng.below(len + 1);
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(8)).min(len);
                data.drain(from..to);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            4 if len > 0 => {
                // Repeat a short range.
                let from = rng.below(len);
                let to = (from + 1 + rng.below(32)).min(len);
                let piece = data[from..to].to_vec();
                data.splice(to..to, piece);
            }
            5 => {
                // Splice: a piece of another input (of any target) at a random place.
                let other = &all[rng.below(all.len())];
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(256)).min(other.len());
                data.splice(at..at, other[from..to].iter().copied());
            }
            6 if len > 0 => {
                // Cut the input short.
                data.truncate(at);
            }
            _ if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            _ => data.push(INTERESTING[rng.below(INTERESTING.len())]),
        }
    }
    data.truncate(64 * 1024);
    data
}

#[test]
fn every_corpus_directory_belongs_to_a_target() {
    let root = corpus_root();
    for entry in std::fs::read_dir(&root).expect("fuzz/corpus") {
        let name = entry
            .expect("an entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/corpus/{name} is replayed by no test"
        );
    }
    for (name, _) in TARGETS {
        let target = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(target.exists(), "no fuzz target for {name}");
    }
}

#[test]
fn the_corpus_replays_and_mutations_of_it_hold() {
    let iters = env_number("FUZZ_ITERS", 2000);
    let seed = env_number("FUZZ_SEED", 0x7011_6a7e);
    let corpora: Vec<(&str, Target, Corpus)> = TARGETS
        .iter()
        .map(|&(name, target)| (name, target, corpus(name)))
        .collect();
    let all: Vec<Vec<u8>> = corpora
        .iter()
        .flat_map(|(_, _, files)| files.iter().map(|(_, d)| d.clone()))
        .collect();
    for (name, target, files) in &corpora {
        for (file, data) in files {
            run(name, &format!("corpus/{file}"), *target, data);
        }
        let name_hash = name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
        });
        let mut rng = Rng((seed ^ name_hash) | 1);
        for i in 0..iters {
            let input = mutate(&mut rng, files, &all);
            run(
                name,
                &format!("mutation {i} (seed {seed})"),
                *target,
                &input,
            );
        }
    }
}
