//! Every fuzz target over its seed corpus (`corpus/<target>/`), then over deterministic
//! mutations of it for about two seconds (and at most [`MAX_MUTATIONS`] inputs), so the
//! targets and their invariants never rot between fuzzing campaigns (docs/fuzzing.md).
//!
//! A failure names the target and shows the input; to reproduce one under libFuzzer, write the
//! input to a file and run `cargo fuzz run <target> --features libfuzzer <file>`.
//!
//! The corpus holds the minimised reproducer of each open finding (`infra_fuzz::findings`):
//! the targets step around the open findings, so the reproducers pass like any seed, and each
//! is also run strictly, where it must still fail. Once the fix lands it passes strictly, and
//! this test asks for the finding to be taken off `findings::OPEN`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use infra_fuzz::mutate::{Rng, mutate};

/// How long each target runs on mutated inputs.
const BUDGET: Duration = Duration::from_secs(2);
/// The most mutated inputs per target, whatever the time.
const MAX_MUTATIONS: usize = 50_000;
/// The longest mutated input.
const MAX_LEN: usize = 8 * 1024;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_file())
                .map(|e| {
                    let bytes = std::fs::read(e.path()).expect("read a corpus file");
                    (e.file_name().to_string_lossy().into_owned(), bytes)
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn escaped(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

/// Runs `target` on `input`; the panic message if it fails.
fn run(target: infra_fuzz::Target, input: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| target(input))).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

fn replay(name: &str) {
    let (_, target) = infra_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .copied()
        .expect("a target of that name");
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    assert!(
        corpus.len() >= 3,
        "corpus/{name}/ has {} seeds; keep a few real inputs there",
        corpus.len()
    );
    for (file, input) in &corpus {
        if let Err(message) = run(target, input) {
            panic!("{name}: corpus/{name}/{file} fails: {message}");
        }
    }

    for finding in infra_fuzz::findings::OPEN
        .iter()
        .filter(|f| f.target == name)
    {
        let Some((_, input)) = corpus.iter().find(|(file, _)| file == finding.reproducer) else {
            panic!(
                "{name}: the reproducer of open finding {} is not corpus/{name}/{}",
                finding.id, finding.reproducer
            );
        };
        eprintln!(
            "{name}: open finding {} must still fail strictly (a panic message may follow)",
            finding.id
        );
        let strict = infra_fuzz::findings::strictly(|| run(target, input));
        assert!(
            strict.is_err(),
            "{name}: open finding {} is fixed (corpus/{name}/{} passes strictly): take it off \
             infra_fuzz::findings::OPEN and docs/fuzzing.md's open findings",
            finding.id,
            finding.reproducer
        );
    }

    let seeds: Vec<Vec<u8>> = corpus.into_iter().map(|(_, bytes)| bytes).collect();
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut count = 0;
    while count < MAX_MUTATIONS && started.elapsed() < BUDGET {
        let input = mutate(&mut rng, &seeds, MAX_LEN);
        if let Err(message) = run(target, &input) {
            panic!(
                "{name}: mutated input #{count} fails: {message}\ninput (escaped): {}",
                escaped(&input)
            );
        }
        count += 1;
    }
    eprintln!(
        "{name}: {} seeds and {count} mutated inputs in {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn attributes() {
    replay("attributes");
}

#[test]
fn policy_file() {
    replay("policy_file");
}

#[test]
fn token() {
    replay("token");
}

#[test]
fn jwks() {
    replay("jwks");
}

#[test]
fn headers() {
    replay("headers");
}

#[test]
fn sync_message() {
    replay("sync_message");
}

#[test]
fn kubeconfig() {
    replay("kubeconfig");
}

#[test]
fn reviews() {
    replay("reviews");
}

#[test]
fn every_target_has_a_replay_test() {
    let this = include_str!("replay.rs");
    for (name, _) in infra_fuzz::TARGETS {
        assert!(
            this.contains(&format!("fn {name}() {{\n    replay(\"{name}\");")),
            "add a replay test for {name}"
        );
    }
}

/// The raw seed tokens in `corpus/token/` are the fixture's own, so that they keep reaching
/// the checks behind the signature: each one still verifies.
#[test]
fn token_seeds_are_the_fixtures_tokens() {
    let corpus = files(&fuzz_dir().join("corpus").join("token"));
    for (name, token) in infra_fuzz::token_seeds() {
        let file = format!("raw-{name}");
        let Some((_, bytes)) = corpus.iter().find(|(f, _)| *f == file) else {
            panic!("corpus/token/{file} is missing; it is [0] followed by the token");
        };
        if name.starts_with("es256") {
            // ECDSA signatures differ each time; the signed part must match.
            let signed = |t: &[u8]| t.rsplitn(2, |&b| b == b'.').nth(1).map(<[u8]>::to_vec);
            assert_eq!(
                signed(&bytes[1..]),
                signed(token.as_bytes()),
                "corpus/token/{file}"
            );
        } else {
            assert_eq!(&bytes[1..], token.as_bytes(), "corpus/token/{file}");
        }
    }
}
