//! A pod's status from what the runtime reports: phase, conditions,
//! container states with reasons, restart counts; and the Events that a
//! change of status calls for. Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shoal_api::{
    Condition, ConditionStatus, ContainerState as ApiState, ContainerStateRunning,
    ContainerStateTerminated, ContainerStateWaiting, ContainerStatus as ApiStatus, Pod, PodPhase,
    PodStatus, RestartPolicy,
};
use shoal_runtime::{ContainerState, ExitInfo};

use crate::events::PodEvent;
use crate::plan::ObservedContainer;

/// Waiting reason while the supervisor backs off before a restart.
pub const CRASH_LOOP: &str = "CrashLoopBackOff";
/// Waiting reason while the sandbox or container is being made.
pub const CREATING: &str = "ContainerCreating";
/// Waiting reason after a failed image pull.
pub const PULL_BACKOFF: &str = "ImagePullBackOff";

/// What the status is computed from.
#[derive(Debug, Clone, Copy)]
pub struct StatusInput<'a> {
    /// The pod (spec and the status last written).
    pub pod: &'a Pod,
    /// The runtime's containers of this pod.
    pub containers: &'a [ObservedContainer],
    /// Container name → (waiting reason, message), for containers not created yet.
    pub waiting: &'a BTreeMap<String, (String, String)>,
    /// Container id → readiness probe result (absent: not probed yet).
    pub ready: &'a BTreeMap<String, bool>,
    /// This node's name.
    pub node: &'a str,
    /// This node's address.
    pub host_ip: &'a str,
    /// The pod's IP on the pod network (None: keep what was reported).
    pub pod_ip: Option<&'a str>,
    /// The time.
    pub now: DateTime<Utc>,
}

fn terminated(e: &ExitInfo) -> ApiState {
    ApiState {
        terminated: Some(ContainerStateTerminated {
            exit_code: e.exit_code,
            signal: e.signal,
            reason: e.reason.clone(),
            message: e.message.clone(),
            started_at: e.started_at,
            finished_at: Some(e.finished_at),
        }),
        ..ApiState::default()
    }
}

fn waiting(reason: &str, message: &str) -> ApiState {
    ApiState {
        waiting: Some(ContainerStateWaiting {
            reason: reason.to_string(),
            message: message.to_string(),
        }),
        ..ApiState::default()
    }
}

fn restarts(policy: RestartPolicy, exit_code: i32, reason: &str) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != 0 || reason == "Unknown",
        RestartPolicy::Never => false,
    }
}

/// Waiting reason of app containers while init containers run.
pub const POD_INITIALIZING: &str = "PodInitializing";

/// What one container's status says about the pod's phase.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// It exited and will not run again.
    done: bool,
    /// It exited with status 0 (meaningful when `done`).
    zero: bool,
    /// It runs, or waits to be restarted.
    active: bool,
}

/// The status of container `c` from its newest incarnation; `old` is the last reported
/// list of the same kind (app or init containers).
fn container_status(
    input: &StatusInput<'_>,
    c: &shoal_api::Container,
    old: &[ApiStatus],
    policy: RestartPolicy,
    not_started: Option<(&str, &str)>,
) -> (ApiStatus, Outcome) {
    let pod = input.pod;
    let latest = input
        .containers
        .iter()
        .filter(|o| o.name == c.name)
        .max_by_key(|o| o.base);
    let mut cs = ApiStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        ..ApiStatus::default()
    };
    let mut out = Outcome {
        done: false,
        zero: true,
        active: false,
    };
    match latest {
        None => {
            let (reason, message) = input
                .waiting
                .get(&c.name)
                .cloned()
                .or_else(|| not_started.map(|(r, m)| (r.to_string(), m.to_string())))
                .unwrap_or_else(|| (CREATING.to_string(), String::new()));
            cs.state = waiting(&reason, &message);
            // Keep what earlier reports said about restarts.
            if let Some(prev) = old.iter().find(|s| s.name == c.name) {
                cs.restart_count = prev.restart_count;
                cs.last_state = prev.last_state.clone();
            }
        }
        Some(o) => {
            cs.container_id = Some(format!("shoal://{}", o.id));
            cs.restart_count = o.restart_count() as i32;
            if let Some(e) = &o.status.last_exit {
                cs.last_state = terminated(e);
            }
            match &o.status.state {
                ContainerState::Created => {
                    cs.state = waiting(CREATING, "");
                }
                ContainerState::Running { started_at, .. } => {
                    out.active = true;
                    cs.state = ApiState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(*started_at),
                        }),
                        ..ApiState::default()
                    };
                    let probed = c.readiness_probe.is_some() || c.startup_probe.is_some();
                    cs.ready = !probed || input.ready.get(&o.id).copied().unwrap_or(false);
                }
                ContainerState::BackOff { .. } => {
                    out.active = true;
                    cs.state = waiting(
                        CRASH_LOOP,
                        &format!(
                            "back-off restarting failed container {} in pod {}",
                            c.name, pod.metadata.name
                        ),
                    );
                }
                ContainerState::Exited(e) => {
                    if restarts(policy, e.exit_code, &e.reason) {
                        out.active = true;
                    } else {
                        out.done = true;
                    }
                    out.zero = e.exit_code == 0;
                    cs.state = terminated(e);
                }
            }
        }
    }
    (cs, out)
}

/// The pod's status. Init containers run first (see `plan`): until each exited 0 the pod
/// is Pending (Failed when one failed for good) and its app containers wait with reason
/// `PodInitializing`.
pub fn pod_status(input: StatusInput<'_>) -> PodStatus {
    let pod = input.pod;
    let old = pod.status.clone().unwrap_or_default();
    let policy = pod.spec.restart_policy;
    let init_policy = crate::plan::init_restart_policy(policy);
    // Once an app container exists, initialization is over (init containers never rerun).
    let app_started = pod
        .spec
        .containers
        .iter()
        .any(|c| input.containers.iter().any(|o| o.name == c.name));
    let mut init_statuses = Vec::new();
    let (mut initialized, mut init_failed) = (true, false);
    for c in &pod.spec.init_containers {
        let (mut cs, o) = container_status(
            &input,
            c,
            &old.init_container_statuses,
            init_policy,
            (!initialized).then_some((POD_INITIALIZING, "")),
        );
        let ok = app_started || (o.done && o.zero);
        cs.ready = ok;
        if !ok {
            if initialized && o.done && !o.zero {
                init_failed = true;
            }
            initialized = false;
        }
        init_statuses.push(cs);
    }
    let mut statuses = Vec::new();
    let (mut all_final, mut all_zero, mut any_active) = (true, true, false);
    for c in &pod.spec.containers {
        let (cs, o) = container_status(
            &input,
            c,
            &old.container_statuses,
            policy,
            (!initialized).then_some((POD_INITIALIZING, "")),
        );
        all_final &= o.done;
        all_zero &= !o.done || o.zero;
        any_active |= o.active;
        statuses.push(cs);
    }
    let phase = if matches!(old.phase, PodPhase::Succeeded | PodPhase::Failed) {
        old.phase
    } else if init_failed {
        PodPhase::Failed
    } else if !initialized {
        PodPhase::Pending
    } else if all_final && !pod.spec.containers.is_empty() {
        if all_zero {
            PodPhase::Succeeded
        } else {
            PodPhase::Failed
        }
    } else if any_active {
        PodPhase::Running
    } else {
        PodPhase::Pending
    };
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let ready = phase == PodPhase::Running && unready.is_empty();
    let cond = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        let since = shoal_api::find_condition(&old.conditions, type_)
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time)
            .unwrap_or(input.now);
        Condition {
            type_: type_.to_string(),
            status,
            reason: if ok {
                String::new()
            } else {
                reason.to_string()
            },
            message: if ok { String::new() } else { message },
            last_transition_time: Some(since),
            last_heartbeat_time: None,
        }
    };
    let why = if phase == PodPhase::Running || phase == PodPhase::Pending {
        format!("containers with unready status: [{}]", unready.join(" "))
    } else {
        format!("the pod has {}", phase.as_str().to_lowercase())
    };
    let reason = if phase == PodPhase::Running || phase == PodPhase::Pending {
        "ContainersNotReady"
    } else {
        "PodCompleted"
    };
    let conditions = vec![
        cond("PodScheduled", true, "", String::new()),
        cond(
            "Initialized",
            initialized,
            "ContainersNotInitialized",
            format!(
                "containers with incomplete status: [{}]",
                init_statuses
                    .iter()
                    .filter(|s| !s.ready)
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
        cond("ContainersReady", ready, reason, why.clone()),
        cond("Ready", ready, reason, why),
    ];
    PodStatus {
        phase,
        node_name: Some(input.node.to_string()),
        pod_ip: input
            .pod_ip
            .map(str::to_string)
            .or_else(|| old.pod_ip.clone()),
        host_ip: Some(input.host_ip.to_string()),
        conditions,
        container_statuses: statuses,
        init_container_statuses: init_statuses,
        message: old.message.clone(),
        reason: old.reason.clone(),
        start_time: old.start_time.or(Some(input.now)),
    }
}

/// Events for what changed between the status last written and the new one.
pub fn transition_events(old: Option<&PodStatus>, new: &PodStatus) -> Vec<PodEvent> {
    let mut out = Vec::new();
    for cs in new
        .container_statuses
        .iter()
        .chain(&new.init_container_statuses)
    {
        let prev = old.and_then(|o| {
            o.container_statuses
                .iter()
                .chain(&o.init_container_statuses)
                .find(|p| p.name == cs.name)
        });
        let was_crash_loop = prev
            .and_then(|p| p.state.waiting.as_ref())
            .is_some_and(|w| w.reason == CRASH_LOOP);
        // Entering the crash loop, or a new back-off period within it.
        let new_period = prev.is_none_or(|p| p.restart_count != cs.restart_count);
        if let Some(w) = &cs.state.waiting
            && w.reason == CRASH_LOOP
            && (!was_crash_loop || new_period)
        {
            out.push(PodEvent::warning(
                "BackOff",
                format!("Back-off restarting failed container {}", cs.name),
            ));
        }
        for (now_t, prev_t) in [
            (
                &cs.state.terminated,
                prev.and_then(|p| p.state.terminated.as_ref()),
            ),
            (
                &cs.last_state.terminated,
                prev.and_then(|p| p.last_state.terminated.as_ref()),
            ),
        ] {
            if let Some(t) = now_t
                && t.reason == "OOMKilled"
                && prev_t.map(|p| p.finished_at) != Some(t.finished_at)
                && !out.iter().any(|e| e.reason == "OOMKilled")
            {
                out.push(PodEvent::warning(
                    "OOMKilled",
                    format!("container {} was killed: out of memory", cs.name),
                ));
            }
        }
        let before = prev.map_or(0, |p| p.restart_count);
        if cs.restart_count > before && cs.state.running.is_some() {
            out.push(PodEvent::normal(
                "Started",
                format!(
                    "Restarted container {} (restart {})",
                    cs.name, cs.restart_count
                ),
            ));
        }
        let newly_failed = cs
            .state
            .terminated
            .as_ref()
            .filter(|t| t.reason == "StartError");
        if let Some(t) = newly_failed
            && prev
                .and_then(|p| p.state.terminated.as_ref())
                .map(|p| p.finished_at)
                != Some(t.finished_at)
        {
            out.push(PodEvent::warning(
                "Failed",
                format!(
                    "Error: container {} could not start: {}",
                    cs.name, t.message
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use shoal_api::{Container, ObjectMeta, PodSpec, Probe};
    use shoal_runtime::ContainerStatus;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_000_000 + s, 0).unwrap()
    }

    fn pod(policy: RestartPolicy, names: &[&str]) -> Pod {
        Pod {
            metadata: ObjectMeta::named("default", "web"),
            spec: PodSpec {
                containers: names
                    .iter()
                    .map(|n| Container {
                        name: n.to_string(),
                        image: "busybox".into(),
                        ..Container::default()
                    })
                    .collect(),
                restart_policy: policy,
                ..PodSpec::default()
            },
            status: None,
        }
    }

    fn obs(name: &str, base: u32, restarts: u32, state: ContainerState) -> ObservedContainer {
        ObservedContainer::new(ContainerStatus {
            id: format!("sb-{name}-r{base}"),
            name: name.into(),
            pod: "sb".into(),
            image: "busybox".into(),
            state,
            restart_count: restarts,
            last_exit: None,
            supervisor_alive: true,
        })
    }

    fn run() -> ContainerState {
        ContainerState::Running {
            pid: 5,
            started_at: t(1),
        }
    }

    fn exit(code: i32, reason: &str) -> ContainerState {
        ContainerState::Exited(exit_info(code, reason))
    }

    fn exit_info(code: i32, reason: &str) -> ExitInfo {
        ExitInfo {
            exit_code: code,
            signal: None,
            reason: reason.into(),
            message: String::new(),
            started_at: Some(t(1)),
            finished_at: t(2),
        }
    }

    fn status(pod: &Pod, cs: &[ObservedContainer]) -> PodStatus {
        status_with(pod, cs, &BTreeMap::new(), &BTreeMap::new())
    }

    fn status_with(
        pod: &Pod,
        cs: &[ObservedContainer],
        waiting: &BTreeMap<String, (String, String)>,
        ready: &BTreeMap<String, bool>,
    ) -> PodStatus {
        pod_status(StatusInput {
            pod,
            containers: cs,
            waiting,
            ready,
            node: "n1",
            host_ip: "127.0.0.1",
            pod_ip: None,
            now: t(10),
        })
    }

    fn cond(s: &PodStatus, type_: &str) -> ConditionStatus {
        shoal_api::find_condition(&s.conditions, type_)
            .unwrap()
            .status
    }

    #[test]
    fn running_pod_is_ready() {
        let p = pod(RestartPolicy::Always, &["app"]);
        let s = status(&p, &[obs("app", 0, 0, run())]);
        assert_eq!(s.phase, PodPhase::Running);
        assert_eq!(cond(&s, "Ready"), ConditionStatus::True);
        assert_eq!(cond(&s, "ContainersReady"), ConditionStatus::True);
        assert_eq!(cond(&s, "PodScheduled"), ConditionStatus::True);
        let cs = &s.container_statuses[0];
        assert!(cs.ready);
        assert_eq!(cs.restart_count, 0);
        assert_eq!(cs.state.running.as_ref().unwrap().started_at, Some(t(1)));
        assert_eq!(cs.container_id.as_deref(), Some("shoal://sb-app-r0"));
        assert_eq!(s.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(s.node_name.as_deref(), Some("n1"));
        assert_eq!(s.start_time, Some(t(10)));
    }

    #[test]
    fn nothing_created_yet_is_pending_with_reasons() {
        let p = pod(RestartPolicy::Always, &["a", "b"]);
        let mut w = BTreeMap::new();
        w.insert(
            "b".to_string(),
            (
                PULL_BACKOFF.to_string(),
                "image \"nope\" not found".to_string(),
            ),
        );
        let s = status_with(&p, &[], &w, &BTreeMap::new());
        assert_eq!(s.phase, PodPhase::Pending);
        assert_eq!(
            s.container_statuses[0]
                .state
                .waiting
                .as_ref()
                .unwrap()
                .reason,
            CREATING
        );
        let wb = s.container_statuses[1].state.waiting.as_ref().unwrap();
        assert_eq!(wb.reason, PULL_BACKOFF);
        assert!(wb.message.contains("nope"));
        assert_eq!(cond(&s, "Ready"), ConditionStatus::False);
        let r = shoal_api::find_condition(&s.conditions, "Ready").unwrap();
        assert_eq!(r.reason, "ContainersNotReady");
        assert!(r.message.contains("[a b]"));
    }

    #[test]
    fn back_off_is_crash_loop_with_restart_count_and_last_state() {
        let p = pod(RestartPolicy::Always, &["app"]);
        let mut o = obs("app", 2, 3, ContainerState::BackOff { next_start: t(20) });
        o.status.last_exit = Some(exit_info(1, "Error"));
        let s = status(&p, &[o]);
        assert_eq!(s.phase, PodPhase::Running);
        let cs = &s.container_statuses[0];
        assert_eq!(cs.state.waiting.as_ref().unwrap().reason, CRASH_LOOP);
        assert_eq!(cs.restart_count, 5);
        assert_eq!(cs.last_state.terminated.as_ref().unwrap().exit_code, 1);
        assert!(!cs.ready);
        assert_eq!(cond(&s, "Ready"), ConditionStatus::False);
    }

    #[test]
    fn restart_never_failure_is_failed_and_success_is_succeeded() {
        let p = pod(RestartPolicy::Never, &["app"]);
        let s = status(&p, &[obs("app", 0, 0, exit(3, "Error"))]);
        assert_eq!(s.phase, PodPhase::Failed);
        let t = s.container_statuses[0].state.terminated.as_ref().unwrap();
        assert_eq!((t.exit_code, t.reason.as_str()), (3, "Error"));
        let s = status(&p, &[obs("app", 0, 0, exit(0, "Completed"))]);
        assert_eq!(s.phase, PodPhase::Succeeded);
        let r = shoal_api::find_condition(&s.conditions, "Ready").unwrap();
        assert_eq!(r.reason, "PodCompleted");
    }

    #[test]
    fn on_failure_success_completes_but_always_keeps_running() {
        let p = pod(RestartPolicy::OnFailure, &["a", "b"]);
        let s = status(
            &p,
            &[
                obs("a", 0, 0, exit(0, "Completed")),
                obs("b", 0, 0, exit(0, "Completed")),
            ],
        );
        assert_eq!(s.phase, PodPhase::Succeeded);
        let s = status(
            &p,
            &[obs("a", 0, 0, exit(0, "Completed")), obs("b", 0, 0, run())],
        );
        assert_eq!(s.phase, PodPhase::Running);
        let p = pod(RestartPolicy::Always, &["a"]);
        let s = status(&p, &[obs("a", 0, 0, exit(0, "Unknown"))]);
        assert_eq!(s.phase, PodPhase::Running);
    }

    #[test]
    fn terminal_phase_sticks() {
        let mut p = pod(RestartPolicy::Always, &["a"]);
        p.status = Some(PodStatus {
            phase: PodPhase::Failed,
            ..PodStatus::default()
        });
        assert_eq!(status(&p, &[obs("a", 0, 0, run())]).phase, PodPhase::Failed);
    }

    #[test]
    fn readiness_probe_gates_ready() {
        let mut p = pod(RestartPolicy::Always, &["a"]);
        p.spec.containers[0].readiness_probe = Some(Box::new(Probe::with_defaults()));
        let o = obs("a", 0, 0, run());
        let s = status(&p, std::slice::from_ref(&o));
        assert_eq!(cond(&s, "Ready"), ConditionStatus::False);
        let mut r = BTreeMap::new();
        r.insert(o.id.clone(), true);
        let s = status_with(&p, &[o], &BTreeMap::new(), &r);
        assert_eq!(cond(&s, "Ready"), ConditionStatus::True);
    }

    #[test]
    fn transition_times_are_kept_while_the_status_holds() {
        let p0 = pod(RestartPolicy::Always, &["a"]);
        let s1 = status(&p0, &[obs("a", 0, 0, run())]);
        let mut p = p0.clone();
        p.status = Some(s1.clone());
        let s2 = pod_status(StatusInput {
            pod: &p,
            containers: &[obs("a", 0, 0, run())],
            waiting: &BTreeMap::new(),
            ready: &BTreeMap::new(),
            node: "n1",
            host_ip: "127.0.0.1",
            pod_ip: None,
            now: t(99),
        });
        assert_eq!(s1, s2, "an unchanged pod gives an equal status (no write)");
        assert!(transition_events(Some(&s1), &s2).is_empty());
    }

    #[test]
    fn events_follow_transitions() {
        let p = pod(RestartPolicy::Always, &["a"]);
        let s1 = status(&p, &[obs("a", 0, 0, run())]);
        let mut o = obs("a", 0, 1, ContainerState::BackOff { next_start: t(20) });
        o.status.last_exit = Some(exit_info(137, "OOMKilled"));
        let s2 = status(&p, &[o]);
        let ev = transition_events(Some(&s1), &s2);
        let reasons: Vec<&str> = ev.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["BackOff", "OOMKilled"]);
        assert!(transition_events(Some(&s2), &s2).is_empty());
        // Still in the crash loop, one restart later: a new back-off period.
        let mut o = obs("a", 0, 2, ContainerState::BackOff { next_start: t(40) });
        o.status.last_exit = Some(exit_info(137, "OOMKilled"));
        let s2b = status(&p, &[o]);
        let ev = transition_events(Some(&s2), &s2b);
        assert_eq!(
            ev.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["BackOff"]
        );
        let s3 = status(&p, &[obs("a", 0, 2, run())]);
        let ev = transition_events(Some(&s2), &s3);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].reason, "Started");
        let s4 = status(&p, &[obs("a", 0, 1, exit(128, "StartError"))]);
        assert_eq!(transition_events(Some(&s3), &s4)[0].reason, "Failed");
    }

    fn with_init(mut p: Pod, inits: &[&str]) -> Pod {
        p.spec.init_containers = inits
            .iter()
            .map(|n| Container {
                name: n.to_string(),
                image: "busybox".into(),
                ..Container::default()
            })
            .collect();
        p
    }

    #[test]
    fn init_containers_keep_the_pod_pending_then_initialized() {
        let p = with_init(pod(RestartPolicy::Always, &["app"]), &["i1", "i2"]);
        let s = status(&p, &[obs("i1", 0, 0, run())]);
        assert_eq!(s.phase, PodPhase::Pending);
        assert_eq!(cond(&s, "Initialized"), ConditionStatus::False);
        assert_eq!(s.init_container_statuses.len(), 2);
        assert!(s.init_container_statuses[0].state.running.is_some());
        let waiting_reason = |cs: &ApiStatus| cs.state.waiting.as_ref().unwrap().reason.clone();
        assert_eq!(
            waiting_reason(&s.init_container_statuses[1]),
            POD_INITIALIZING
        );
        assert_eq!(waiting_reason(&s.container_statuses[0]), POD_INITIALIZING);
        let done = [
            obs("i1", 0, 0, exit(0, "Completed")),
            obs("i2", 0, 0, exit(0, "Completed")),
            obs("app", 0, 0, run()),
        ];
        let s = status(&p, &done);
        assert_eq!(s.phase, PodPhase::Running);
        assert_eq!(cond(&s, "Initialized"), ConditionStatus::True);
        assert!(s.init_container_statuses.iter().all(|c| c.ready));
    }

    #[test]
    fn a_failed_init_container_fails_the_pod_only_with_restart_never() {
        let failed = [obs("i1", 0, 2, exit(1, "Error"))];
        let p = with_init(pod(RestartPolicy::Never, &["app"]), &["i1"]);
        let s = status(&p, &failed);
        assert_eq!(s.phase, PodPhase::Failed);
        let term = s.init_container_statuses[0]
            .state
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!((term.exit_code, term.reason.as_str()), (1, "Error"));
        for policy in [RestartPolicy::Always, RestartPolicy::OnFailure] {
            let p = with_init(pod(policy, &["app"]), &["i1"]);
            let s = status(&p, &failed);
            assert_eq!(s.phase, PodPhase::Pending, "{policy:?}");
            assert_eq!(s.init_container_statuses[0].restart_count, 2);
        }
        let backoff = [obs(
            "i1",
            0,
            3,
            ContainerState::BackOff { next_start: t(20) },
        )];
        let p = with_init(pod(RestartPolicy::Always, &["app"]), &["i1"]);
        let s = status(&p, &backoff);
        assert_eq!(s.phase, PodPhase::Pending);
        assert_eq!(
            s.init_container_statuses[0]
                .state
                .waiting
                .as_ref()
                .unwrap()
                .reason,
            CRASH_LOOP
        );
    }
}
