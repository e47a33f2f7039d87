//! Names unique per test and per process.

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `prefix` (cut so the whole fits in `max_len`) followed by a suffix of `[a-z0-9]` made
/// of this process's id and a per-process counter: two calls in one process, or in two
/// processes running at once, never give the same name. Only `[a-z0-9]` of `prefix` is
/// kept (netns-cluster names, Linux link names).
///
/// # Panics
/// When `max_len` leaves no room for the 7-character suffix.
pub fn unique_name(prefix: &str, max_len: usize) -> String {
    const SUFFIX: usize = 7;
    assert!(
        max_len > SUFFIX,
        "unique_name: max_len {max_len} must exceed {SUFFIX}"
    );
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // pid < 2^22 on Linux (pid_max), counter mod 36^2: 36^5 > 2^22, so 5 + 2 characters.
    let suffix = format!(
        "{}{}",
        base36(u64::from(std::process::id()), 5),
        base36(u64::from(n % (36 * 36)), 2)
    );
    let keep: String = prefix
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(max_len - SUFFIX)
        .collect();
    format!("{keep}{suffix}")
}

fn base36(mut v: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v % 36) as usize];
        v /= 36;
    }
    String::from_utf8(out).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_short_and_plain() {
        let a = unique_name("e2enet", 11);
        let b = unique_name("e2enet", 11);
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert_eq!(n.len(), 11, "{n}");
            assert!(n.starts_with("e2en"), "{n}");
            assert!(
                n.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{n}"
            );
        }
        assert_eq!(base36(35, 2), "0z");
    }
}
