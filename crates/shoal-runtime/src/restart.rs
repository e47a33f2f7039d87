//! Restart policy and exponential back-off (pure).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a container that exited is started again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Always, whatever the exit status.
    #[default]
    Always,
    /// Only after a non-zero exit or a signal.
    OnFailure,
    /// Never.
    Never,
}

impl RestartPolicy {
    /// Whether to restart after an exit (`success`: exit code 0).
    pub fn should_restart(self, success: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        }
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Ok(Self::Always),
            "onfailure" | "on-failure" => Ok(Self::OnFailure),
            "never" => Ok(Self::Never),
            _ => Err(format!(
                "unknown restart policy {s:?}: expected Always, OnFailure or Never"
            )),
        }
    }
}

/// Back-off parameters: the delay doubles from `initial` up to `max`, and
/// starts over once the container ran at least `reset_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
    /// A run at least this long resets the back-off.
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// Kubernetes' values: 10 s doubling up to 5 min, reset after 10 min.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The delay before restart number `consecutive` (1-based) of a crash loop.
    pub fn delay(&self, consecutive: u32) -> Duration {
        let shift = consecutive.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << shift).min(self.max)
    }

    /// Updates the crash-loop counter after a run of `ran_for` and returns
    /// the new counter and the delay to wait before the next start.
    pub fn next(&self, consecutive: u32, ran_for: Duration) -> (u32, Duration) {
        let n = if ran_for >= self.reset_after {
            1
        } else {
            consecutive + 1
        };
        (n, self.delay(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(RestartPolicy::Always.should_restart(true));
        assert!(!RestartPolicy::OnFailure.should_restart(true));
        assert!(RestartPolicy::OnFailure.should_restart(false));
        assert!(!RestartPolicy::Never.should_restart(false));
        assert_eq!(
            "onfailure".parse::<RestartPolicy>().unwrap(),
            RestartPolicy::OnFailure
        );
        assert!("sometimes".parse::<RestartPolicy>().is_err());
    }

    #[test]
    fn doubling_capped_and_reset() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(450),
            reset_after: Duration::from_secs(2),
        };
        let ms = |n| b.delay(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(40)],
            [100, 200, 400, 450, 450]
        );
        let short = Duration::from_millis(10);
        let (n, d) = b.next(0, short);
        assert_eq!((n, d.as_millis()), (1, 100));
        let (n, d) = b.next(n, short);
        assert_eq!((n, d.as_millis()), (2, 200));
        let (n, d) = b.next(n, Duration::from_secs(3));
        assert_eq!((n, d.as_millis()), (1, 100));
        assert_eq!(Backoff::default().delay(100), Duration::from_secs(300));
    }
}
