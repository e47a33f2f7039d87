//! The short fuzzing run (part of `cargo test`): every file of the committed
//! corpus (`fuzz/corpus/<target>/`: seeds, and every crasher found by the
//! long runs, named `crash-*`), then inputs mutated from it for a few seconds
//! per target (`SHOAL_FUZZ_SECS`, default 3; the seed is printed and can be
//! set with `SHOAL_FUZZ_SEED`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("corpus entry").path();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{}: empty corpus", dir.display());
    out
}

fn run(target: &str) {
    let f = shoal_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .map(|(_, f)| *f)
        .expect("target");
    let inputs = corpus(target);
    for (p, bytes) in &inputs {
        eprintln!("{target}: replaying {}", p.display());
        f(bytes);
    }
    let secs: u64 = std::env::var("SHOAL_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("SHOAL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{target}: mutating for {secs} s, SHOAL_FUZZ_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < deadline {
        let a = &inputs[rng.random_range(0..inputs.len())].1;
        let b = &inputs[rng.random_range(0..inputs.len())].1;
        let input = shoal_fuzz::mutate::mutate(&mut rng, a, b, 1 << 20);
        let r = std::panic::catch_unwind(|| f(&input));
        if r.is_err() {
            panic!(
                "{target}: crash on a mutated input (SHOAL_FUZZ_SEED={seed}, execution {n}): {input:?}"
            );
        }
        n += 1;
    }
    eprintln!("{target}: {n} mutated inputs, no crash");
    assert!(n > 0, "{target}: no input ran");
}

#[test]
fn manifest() {
    run("manifest");
}

#[test]
fn selector() {
    run("selector");
}

#[test]
fn quantity() {
    run("quantity");
}

#[test]
fn image() {
    run("image");
}

#[test]
fn dns() {
    run("dns");
}

/// The manifest seeds that are meant to be valid are accepted (so the round
/// trip property is exercised, not only the error paths).
#[test]
fn valid_manifest_seeds_are_accepted() {
    for (p, bytes) in corpus("manifest") {
        let text = String::from_utf8(bytes).expect("utf-8 seed");
        if let Err(e) = shoal_api::parse_manifests("seed", &text) {
            panic!("{}: {e}", p.display());
        }
    }
}
