//! Waiting for a condition with a deadline (never a bare sleep).

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// First pause between two polls; doubled after each miss up to [`MAX_PAUSE`], so a
/// condition that holds soon is seen soon and a slow one is not polled in a busy loop.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
/// Longest pause between two polls.
const MAX_PAUSE: Duration = Duration::from_millis(200);

fn timed_out(what: &str, timeout: Duration, tries: u32, last: &dyn Display) -> ! {
    panic!("timed out after {timeout:?} ({tries} tries) waiting for {what}; last seen: {last}")
}

/// Polls `f` until it returns `Ok`, or panics after `timeout` naming `what` and the last
/// `Err` seen. `f` runs at least once, also with a zero timeout.
pub fn eventually<T, E: Display>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    let mut tries = 0;
    loop {
        tries += 1;
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => timed_out(what, timeout, tries, &last),
            Err(_) => {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// [`eventually`] for async conditions (pauses with `tokio::time::sleep`).
pub async fn eventually_async<T, E, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    let mut tries = 0;
    loop {
        tries += 1;
        match f().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => timed_out(what, timeout, tries, &last),
            Err(_) => {
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_ok() {
        let mut n = 0;
        let v = eventually("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            if n >= 3 { Ok(n) } else { Err(n) }
        });
        assert_eq!(v, 3);
    }

    #[test]
    fn the_panic_names_the_condition_and_the_last_value() {
        let r = std::panic::catch_unwind(|| {
            let mut n = 0;
            eventually(
                "never",
                Duration::from_millis(100),
                || -> Result<(), String> {
                    n += 1;
                    Err(format!("value {n}"))
                },
            )
        });
        let msg = *r
            .expect_err("must time out")
            .downcast::<String>()
            .expect("a message");
        assert!(
            msg.contains("waiting for never; last seen: value "),
            "{msg}"
        );
    }

    #[test]
    fn async_variant_waits_too() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let start = Instant::now();
        let v = rt.block_on(eventually_async(
            "time to pass",
            Duration::from_secs(5),
            || async {
                if start.elapsed() > Duration::from_millis(60) {
                    Ok(7)
                } else {
                    Err("too early")
                }
            },
        ));
        assert_eq!(v, 7);
    }
}
