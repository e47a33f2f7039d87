//! A small byte mutator for the short run inside `cargo test`: AFL++'s
//! havoc stage in miniature (bit flips, interesting bytes, inserts, deletes,
//! duplicated and spliced ranges). It has no coverage feedback; the long
//! runs with the real engine are recorded in `docs/fuzzing.md`.

use rand::Rng;
use rand::rngs::StdRng;

const INTERESTING: [u8; 12] = [
    0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b' ', b'\n', b':', b'-', b'.',
];

/// Returns a mutation of `input` (with bytes spliced from `other`).
pub fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.random_range(0..8);
    for _ in 0..rounds {
        let len = out.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
            }
            2 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                out.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(64));
                out.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(256));
                let chunk = out[i..i + n].to_vec();
                let at = rng.random_range(0..=len);
                out.splice(at..at, chunk);
            }
            5 if !other.is_empty() => {
                let i = rng.random_range(0..other.len());
                let n = rng.random_range(1..=(other.len() - i).min(256));
                let at = rng.random_range(0..=len);
                out.splice(at..at, other[i..i + n].iter().copied());
            }
            6 if len > 0 => {
                let i = rng.random_range(0..len);
                out.truncate(i);
            }
            _ => {}
        }
    }
    out.truncate(max_len);
    out
}
