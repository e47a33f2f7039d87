//! Lifecycle hooks (`lifecycle.postStart`, `lifecycle.preStop`): which checks a pod's
//! containers have and how the grace period is shared between a preStop hook and the
//! signals (pure). The agent runs them ([`crate::probe::Check::run`]) around its starts
//! and stops.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_api::{Container, Pod};

use crate::probe::Check;

/// Event reason when a postStart hook fails (the container is then killed).
pub const FAILED_POST_START: &str = "FailedPostStartHook";
/// Event reason when a preStop hook fails (the container is stopped anyway).
pub const FAILED_PRE_STOP: &str = "FailedPreStopHook";
/// Time left for SIGTERM after a preStop hook that used up the grace period (the
/// kubelet's minimum, 2 seconds).
pub const MIN_GRACE_AFTER_HOOK: Duration = Duration::from_secs(2);

/// The preStop hooks of `pod`'s containers, by container name. A hook naming a port the
/// container does not have (validation refuses it) is left out.
pub fn pre_stop_checks(pod: &Pod) -> BTreeMap<String, Check> {
    pod.spec
        .containers
        .iter()
        .filter_map(|c| {
            let h = c.lifecycle.as_ref()?.pre_stop.as_ref()?;
            Some((c.name.clone(), Check::of_hook(h, c).ok()?))
        })
        .collect()
}

/// The postStart hook of container `c`, if it has one (`Err` when it cannot be run).
pub fn post_start_check(c: &Container) -> Option<Result<Check, String>> {
    let h = c.lifecycle.as_ref()?.post_start.as_ref()?;
    Some(Check::of_hook(h, c))
}

/// What is left of `grace` for SIGTERM..SIGKILL after a preStop hook that took `took`:
/// the rest, but never less than [`MIN_GRACE_AFTER_HOOK`] (as the kubelet does).
pub fn grace_after_hook(grace: Duration, took: Duration) -> Duration {
    grace.saturating_sub(took).max(MIN_GRACE_AFTER_HOOK)
}

/// Whether a container run that started at `started_at` gets its postStart hook from
/// an agent that started at `agent_started` and has already run it for the runs in
/// `done`: once per run, and not for runs that began before this agent (a restarted
/// agent does not repeat hooks).
pub fn post_start_due(
    started_at: DateTime<Utc>,
    agent_started: DateTime<Utc>,
    done: Option<&DateTime<Utc>>,
) -> bool {
    started_at >= agent_started && done != Some(&started_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [
                {"name": "a", "image": "busybox", "ports": [{"name": "web", "containerPort": 8080}],
                 "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "echo hi"]}},
                    "preStop": {"httpGet": {"path": "/shutdown", "port": "web"}}}},
                {"name": "b", "image": "busybox",
                 "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}},
                {"name": "c", "image": "busybox"}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn hooks_are_found_by_container_with_ports_resolved() {
        let p = pod();
        let pre = pre_stop_checks(&p);
        assert_eq!(pre.len(), 2, "{pre:?}");
        match &pre["a"] {
            Check::Http(h) => assert_eq!((h.port, h.path.as_str()), (8080, "/shutdown")),
            other => panic!("{other:?}"),
        }
        assert_eq!(pre["b"], Check::Sleep(5));
        assert_eq!(
            post_start_check(&p.spec.containers[0]),
            Some(Ok(Check::Exec(vec![
                "sh".into(),
                "-c".into(),
                "echo hi".into()
            ])))
        );
        assert_eq!(post_start_check(&p.spec.containers[2]), None);
    }

    #[test]
    fn the_hook_shares_the_grace_period_with_a_floor() {
        let s = Duration::from_secs;
        assert_eq!(grace_after_hook(s(30), s(10)), s(20));
        assert_eq!(grace_after_hook(s(30), s(29)), s(2));
        assert_eq!(grace_after_hook(s(5), s(60)), s(2));
    }

    #[test]
    fn post_start_runs_once_per_run_and_not_for_older_runs() {
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        assert!(post_start_due(t(100), t(50), None));
        assert!(!post_start_due(t(100), t(50), Some(&t(100))), "already run");
        assert!(post_start_due(t(200), t(50), Some(&t(100))), "a restart");
        assert!(
            !post_start_due(t(40), t(50), None),
            "began before the agent"
        );
    }
}
