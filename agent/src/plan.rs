//! The pod sync plan: from the pods bound to this node (desired) and what the
//! runtime holds (observed) to the actions that converge them. Pure: no I/O,
//! no clock (the caller passes `now`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use shoal_api::{Pod, PodPhase, RestartPolicy};
use shoal_runtime::{ContainerState, ContainerStatus};

/// A container the runtime holds, with the parts of its id decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    /// Container id.
    pub id: String,
    /// Sandbox (pod) name.
    pub sandbox: String,
    /// Container name within the pod.
    pub name: String,
    /// Restarts of earlier incarnations (see `naming`).
    pub base: u32,
    /// The runtime's status.
    pub status: ContainerStatus,
}

impl ObservedContainer {
    /// From a runtime status.
    pub fn new(status: ContainerStatus) -> ObservedContainer {
        ObservedContainer {
            id: status.id.clone(),
            sandbox: status.pod.clone(),
            name: status.name.clone(),
            base: crate::naming::base_of(&status.id),
            status,
        }
    }

    /// Restarts including earlier incarnations.
    pub fn restart_count(&self) -> u32 {
        self.base + self.status.restart_count
    }

    /// Whether it runs or waits to be restarted by its supervisor.
    pub fn is_active(&self) -> bool {
        !matches!(self.status.state, ContainerState::Exited(_))
    }
}

/// What the runtime holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Sandbox names.
    pub sandboxes: BTreeSet<String>,
    /// Containers.
    pub containers: Vec<ObservedContainer>,
}

impl Observed {
    /// The containers of a sandbox.
    pub fn of(&self, sandbox: &str) -> Vec<&ObservedContainer> {
        self.containers
            .iter()
            .filter(|c| c.sandbox == sandbox)
            .collect()
    }

    /// The newest incarnation of container `name` in `sandbox`.
    pub fn latest(&self, sandbox: &str, name: &str) -> Option<&ObservedContainer> {
        self.containers
            .iter()
            .filter(|c| c.sandbox == sandbox && c.name == name)
            .max_by_key(|c| c.base)
    }
}

/// A pod bound to this node, with its sandbox name.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPod {
    /// Sandbox name (see `naming::sandbox_name`).
    pub sandbox: String,
    /// The pod.
    pub pod: Pod,
}

/// Everything the plan looks at besides the two states.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Sandboxes with actions in flight (left alone).
    pub busy: BTreeSet<String>,
    /// `(sandbox, container)` not to be started before the time (image pull back-off).
    pub holds: BTreeMap<(String, String), DateTime<Utc>>,
    /// Container ids whose liveness probe failed (to be recreated).
    pub unhealthy: BTreeSet<String>,
}

/// One step towards the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the pod's sandbox (network namespace, volumes, /etc files).
    CreateSandbox {
        /// Sandbox name.
        sandbox: String,
    },
    /// Pull the image if needed, then create and start the container.
    StartContainer {
        /// Sandbox name.
        sandbox: String,
        /// Container name.
        container: String,
        /// New container id.
        id: String,
    },
    /// Stop and remove `old_id`, then start the container as `new_id` (liveness
    /// failure, or a supervisor that died).
    RecreateContainer {
        /// Sandbox name.
        sandbox: String,
        /// Container name.
        container: String,
        /// The incarnation to replace.
        old_id: String,
        /// The new incarnation.
        new_id: String,
        /// Why (for the Killing event).
        reason: String,
    },
    /// Stop a container with the pod's grace period (its pod finished or failed).
    StopContainer {
        /// Sandbox name.
        sandbox: String,
        /// Container id.
        id: String,
    },
    /// Remove a container no longer in its pod's spec, or an old incarnation.
    RemoveContainer {
        /// Sandbox name.
        sandbox: String,
        /// Container id.
        id: String,
    },
    /// Stop every container of a pod no longer bound here (grace period), then
    /// remove them and the sandbox.
    RemovePod {
        /// Sandbox name.
        sandbox: String,
    },
}

impl Action {
    /// The sandbox the action is about (actions of one sandbox run in order).
    pub fn sandbox(&self) -> &str {
        match self {
            Action::CreateSandbox { sandbox }
            | Action::StartContainer { sandbox, .. }
            | Action::RecreateContainer { sandbox, .. }
            | Action::StopContainer { sandbox, .. }
            | Action::RemoveContainer { sandbox, .. }
            | Action::RemovePod { sandbox } => sandbox,
        }
    }
}

/// Whether a pod has finished for good (its containers are not to run).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().map(|s| s.phase),
        Some(PodPhase::Succeeded | PodPhase::Failed)
    )
}

/// The actions converging `observed` to `desired`.
pub fn plan(
    desired: &[DesiredPod],
    observed: &Observed,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Vec<Action> {
    let mut out = Vec::new();
    let wanted: BTreeSet<&str> = desired.iter().map(|d| d.sandbox.as_str()).collect();
    for d in desired {
        let sb = d.sandbox.as_str();
        if ctx.busy.contains(sb) || d.pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ours = observed.of(sb);
        if is_terminal(&d.pod) {
            for c in ours.iter().filter(|c| c.is_active()) {
                out.push(Action::StopContainer {
                    sandbox: sb.to_string(),
                    id: c.id.clone(),
                });
            }
            continue;
        }
        let spec = &d.pod.spec;
        let names: BTreeSet<&str> = spec
            .containers
            .iter()
            .chain(&spec.init_containers)
            .map(|c| c.name.as_str())
            .collect();
        // Containers not in the spec, and superseded incarnations.
        for c in &ours {
            let latest = observed.latest(sb, &c.name).map(|l| l.id.as_str());
            if !names.contains(c.name.as_str()) || latest != Some(c.id.as_str()) {
                out.push(Action::RemoveContainer {
                    sandbox: sb.to_string(),
                    id: c.id.clone(),
                });
            }
        }
        let mut starts = Vec::new();
        // Init containers run one at a time, in order, each to a zero exit, before the
        // app containers; once an app container exists they are done for good.
        let app_started = spec
            .containers
            .iter()
            .any(|c| observed.latest(sb, &c.name).is_some());
        let mut initialized = true;
        if !app_started {
            let policy = init_restart_policy(spec.restart_policy);
            for c in &spec.init_containers {
                match observed.latest(sb, &c.name) {
                    Some(o) if succeeded(o) => continue,
                    o => {
                        converge(sb, c, o, policy, ctx, now, &mut starts);
                        initialized = false;
                        break;
                    }
                }
            }
        }
        if initialized {
            for c in &spec.containers {
                let o = observed.latest(sb, &c.name);
                converge(sb, c, o, spec.restart_policy, ctx, now, &mut starts);
            }
        }
        if !starts.is_empty() && !observed.sandboxes.contains(sb) {
            out.push(Action::CreateSandbox {
                sandbox: sb.to_string(),
            });
        }
        out.extend(starts);
    }
    // Pods no longer bound here.
    for sb in &observed.sandboxes {
        if !wanted.contains(sb.as_str()) && !ctx.busy.contains(sb) {
            out.push(Action::RemovePod {
                sandbox: sb.clone(),
            });
        }
    }
    // Containers whose sandbox is gone.
    for c in &observed.containers {
        if !wanted.contains(c.sandbox.as_str())
            && !observed.sandboxes.contains(&c.sandbox)
            && !ctx.busy.contains(&c.sandbox)
        {
            out.push(Action::RemoveContainer {
                sandbox: c.sandbox.clone(),
                id: c.id.clone(),
            });
        }
    }
    out
}

/// The restart policy of a pod's init containers: `Always` restarts them only after a
/// failure (as in Kubernetes: they run to completion).
pub fn init_restart_policy(pod_policy: RestartPolicy) -> RestartPolicy {
    match pod_policy {
        RestartPolicy::Always | RestartPolicy::OnFailure => RestartPolicy::OnFailure,
        RestartPolicy::Never => RestartPolicy::Never,
    }
}

/// Whether the container exited with status 0.
fn succeeded(o: &ObservedContainer) -> bool {
    matches!(&o.status.state, ContainerState::Exited(e) if e.exit_code == 0)
}

/// The start or recreate a container needs, if any: a first start (unless an image pull
/// back-off holds it), or a new incarnation after a liveness failure or a lost supervisor.
fn converge(
    sb: &str,
    c: &shoal_api::Container,
    latest: Option<&ObservedContainer>,
    policy: RestartPolicy,
    ctx: &Context,
    now: DateTime<Utc>,
    starts: &mut Vec<Action>,
) {
    match latest {
        None => {
            let held = ctx
                .holds
                .get(&(sb.to_string(), c.name.clone()))
                .is_some_and(|until| now < *until);
            if !held {
                starts.push(Action::StartContainer {
                    sandbox: sb.to_string(),
                    container: c.name.clone(),
                    id: crate::naming::container_id(sb, &c.name, 0),
                });
            }
        }
        Some(o) => {
            let lost = supervisor_lost(&o.status, policy);
            let unhealthy = ctx.unhealthy.contains(&o.id) && o.is_active();
            if unhealthy || lost {
                starts.push(Action::RecreateContainer {
                    sandbox: sb.to_string(),
                    container: c.name.clone(),
                    old_id: o.id.clone(),
                    new_id: crate::naming::container_id(sb, &c.name, o.restart_count() + 1),
                    reason: if unhealthy {
                        "failed liveness probe".into()
                    } else {
                        "its supervisor is gone".into()
                    },
                });
            }
        }
    }
}

/// Whether a container needs a new incarnation because nothing supervises it
/// any more: its supervisor died without recording an exit ("Unknown"), or
/// died after recording one the restart policy says to restart (a node
/// shutdown kills the container, then the supervisor). A live supervisor
/// restarts its container itself.
fn supervisor_lost(st: &ContainerStatus, policy: RestartPolicy) -> bool {
    match &st.state {
        ContainerState::Exited(e) if e.reason == "Unknown" => policy != RestartPolicy::Never,
        ContainerState::Exited(e) if !st.supervisor_alive => match policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => e.exit_code != 0,
            RestartPolicy::Never => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use shoal_api::{Container, ObjectMeta, PodSpec, PodStatus};
    use shoal_runtime::ExitInfo;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_000_000, 0).unwrap()
    }

    fn pod(sb: &str, containers: &[&str]) -> DesiredPod {
        DesiredPod {
            sandbox: sb.into(),
            pod: Pod {
                metadata: ObjectMeta::named("default", sb),
                spec: PodSpec {
                    containers: containers
                        .iter()
                        .map(|n| Container {
                            name: n.to_string(),
                            image: "busybox".into(),
                            ..Container::default()
                        })
                        .collect(),
                    ..PodSpec::default()
                },
                status: None,
            },
        }
    }

    fn running(sb: &str, name: &str, base: u32) -> ObservedContainer {
        with_state(
            sb,
            name,
            base,
            ContainerState::Running {
                pid: 10,
                started_at: now(),
            },
        )
    }

    fn with_state(sb: &str, name: &str, base: u32, state: ContainerState) -> ObservedContainer {
        ObservedContainer::new(ContainerStatus {
            id: crate::naming::container_id(sb, name, base),
            name: name.into(),
            pod: sb.into(),
            image: "busybox".into(),
            state,
            restart_count: 0,
            last_exit: None,
            supervisor_alive: true,
        })
    }

    fn exited(reason: &str, code: i32) -> ContainerState {
        ContainerState::Exited(ExitInfo {
            exit_code: code,
            signal: None,
            reason: reason.into(),
            message: String::new(),
            started_at: None,
            finished_at: now(),
        })
    }

    fn observed(sandboxes: &[&str], containers: Vec<ObservedContainer>) -> Observed {
        Observed {
            sandboxes: sandboxes.iter().map(|s| s.to_string()).collect(),
            containers,
        }
    }

    fn start(sb: &str, name: &str) -> Action {
        Action::StartContainer {
            sandbox: sb.into(),
            container: name.into(),
            id: crate::naming::container_id(sb, name, 0),
        }
    }

    #[test]
    fn new_pod_gets_a_sandbox_then_its_containers_in_order() {
        let a = plan(
            &[pod("a", &["x", "y"])],
            &Observed::default(),
            &Context::default(),
            now(),
        );
        assert_eq!(
            a,
            vec![
                Action::CreateSandbox {
                    sandbox: "a".into()
                },
                start("a", "x"),
                start("a", "y")
            ]
        );
    }

    #[test]
    fn converged_pod_needs_nothing() {
        let o = observed(
            &["a"],
            vec![
                running("a", "x", 0),
                with_state("a", "y", 3, exited("Completed", 0)),
            ],
        );
        assert!(plan(&[pod("a", &["x", "y"])], &o, &Context::default(), now()).is_empty());
    }

    #[test]
    fn a_missing_container_starts_in_the_existing_sandbox() {
        let o = observed(&["a"], vec![running("a", "x", 0)]);
        assert_eq!(
            plan(&[pod("a", &["x", "y"])], &o, &Context::default(), now()),
            vec![start("a", "y")]
        );
    }

    #[test]
    fn pull_back_off_holds_the_start_until_its_time() {
        let mut ctx = Context::default();
        ctx.holds.insert(
            ("a".into(), "x".into()),
            now() + chrono::TimeDelta::seconds(5),
        );
        let o = observed(&["a"], vec![]);
        assert!(plan(&[pod("a", &["x"])], &o, &ctx, now()).is_empty());
        assert_eq!(
            plan(
                &[pod("a", &["x"])],
                &o,
                &ctx,
                now() + chrono::TimeDelta::seconds(5)
            ),
            vec![start("a", "x")]
        );
        // A held pod without a sandbox does not get one yet.
        assert!(plan(&[pod("a", &["x"])], &Observed::default(), &ctx, now()).is_empty());
    }

    #[test]
    fn unbound_pods_and_orphans_are_removed() {
        let o = observed(
            &["gone"],
            vec![running("gone", "x", 0), running("lost", "y", 0)],
        );
        assert_eq!(
            plan(&[], &o, &Context::default(), now()),
            vec![
                Action::RemovePod {
                    sandbox: "gone".into()
                },
                Action::RemoveContainer {
                    sandbox: "lost".into(),
                    id: "lost-y-r0".into()
                }
            ]
        );
    }

    #[test]
    fn busy_sandboxes_are_left_alone() {
        let mut ctx = Context::default();
        ctx.busy.insert("a".into());
        ctx.busy.insert("gone".into());
        let o = observed(&["gone"], vec![running("gone", "x", 0)]);
        assert!(plan(&[pod("a", &["x"])], &o, &ctx, now()).is_empty());
    }

    #[test]
    fn unhealthy_containers_are_recreated_counting_restarts() {
        let mut c = running("a", "x", 2);
        c.status.restart_count = 3;
        let mut ctx = Context::default();
        ctx.unhealthy.insert(c.id.clone());
        let o = observed(&["a"], vec![c]);
        assert_eq!(
            plan(&[pod("a", &["x"])], &o, &ctx, now()),
            vec![Action::RecreateContainer {
                sandbox: "a".into(),
                container: "x".into(),
                old_id: "a-x-r2".into(),
                new_id: "a-x-r6".into(),
                reason: "failed liveness probe".into(),
            }]
        );
    }

    #[test]
    fn lost_supervisors_are_recreated_unless_restart_never() {
        let o = observed(
            &["a"],
            vec![with_state("a", "x", 0, exited("Unknown", 255))],
        );
        let a = plan(&[pod("a", &["x"])], &o, &Context::default(), now());
        assert!(matches!(&a[..], [Action::RecreateContainer { new_id, .. }] if new_id == "a-x-r1"));
        let mut p = pod("a", &["x"]);
        p.pod.spec.restart_policy = RestartPolicy::Never;
        assert!(plan(&[p], &o, &Context::default(), now()).is_empty());
    }

    #[test]
    fn an_exit_recorded_before_the_supervisor_died_is_restarted_by_policy() {
        // A node shutdown: the supervisor records the container's SIGKILL,
        // then dies itself; nothing would restart the container.
        let dead = |code: i32| {
            let mut c = with_state("a", "x", 0, exited("Error", code));
            c.status.supervisor_alive = false;
            observed(&["a"], vec![c])
        };
        let with_policy = |policy| {
            let mut p = pod("a", &["x"]);
            p.pod.spec.restart_policy = policy;
            p
        };
        let a = plan(&[pod("a", &["x"])], &dead(137), &Context::default(), now());
        assert!(
            matches!(&a[..], [Action::RecreateContainer { new_id, .. }] if new_id == "a-x-r1"),
            "{a:?}"
        );
        let on_failure = plan(
            &[with_policy(RestartPolicy::OnFailure)],
            &dead(137),
            &Context::default(),
            now(),
        );
        assert_eq!(on_failure.len(), 1, "{on_failure:?}");
        for (policy, code) in [(RestartPolicy::OnFailure, 0), (RestartPolicy::Never, 137)] {
            let a = plan(
                &[with_policy(policy)],
                &dead(code),
                &Context::default(),
                now(),
            );
            assert!(a.is_empty(), "{policy:?} exit {code}: {a:?}");
        }
        // The supervisor alive: it handles restarts (with back-off) itself.
        let alive = observed(&["a"], vec![with_state("a", "x", 0, exited("Error", 137))]);
        assert!(plan(&[pod("a", &["x"])], &alive, &Context::default(), now()).is_empty());
    }

    #[test]
    fn old_incarnations_and_removed_containers_go() {
        let o = observed(
            &["a"],
            vec![
                running("a", "x", 0),
                running("a", "x", 4),
                running("a", "old", 0),
            ],
        );
        assert_eq!(
            plan(&[pod("a", &["x"])], &o, &Context::default(), now()),
            vec![
                Action::RemoveContainer {
                    sandbox: "a".into(),
                    id: "a-x-r0".into()
                },
                Action::RemoveContainer {
                    sandbox: "a".into(),
                    id: "a-old-r0".into()
                },
            ]
        );
    }

    #[test]
    fn terminal_pods_have_their_running_containers_stopped_and_nothing_started() {
        let mut p = pod("a", &["x", "y", "z"]);
        p.pod.status = Some(PodStatus {
            phase: PodPhase::Failed,
            ..PodStatus::default()
        });
        let o = observed(
            &["a"],
            vec![
                running("a", "x", 0),
                with_state("a", "y", 0, ContainerState::BackOff { next_start: now() }),
            ],
        );
        assert_eq!(
            plan(&[p], &o, &Context::default(), now()),
            vec![
                Action::StopContainer {
                    sandbox: "a".into(),
                    id: "a-x-r0".into()
                },
                Action::StopContainer {
                    sandbox: "a".into(),
                    id: "a-y-r0".into()
                },
            ]
        );
    }

    #[test]
    fn pods_being_deleted_start_nothing() {
        let mut p = pod("a", &["x"]);
        p.pod.metadata.deletion_timestamp = Some(now());
        assert!(plan(&[p], &Observed::default(), &Context::default(), now()).is_empty());
    }

    fn with_init(mut p: DesiredPod, inits: &[&str]) -> DesiredPod {
        p.pod.spec.init_containers = inits
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
    fn init_containers_run_one_at_a_time_before_the_app_containers() {
        let p = || with_init(pod("a", &["app"]), &["i1", "i2"]);
        let a = plan(&[p()], &Observed::default(), &Context::default(), now());
        assert_eq!(
            a,
            vec![
                Action::CreateSandbox {
                    sandbox: "a".into()
                },
                start("a", "i1")
            ]
        );
        // i1 runs: wait.
        let o = observed(&["a"], vec![running("a", "i1", 0)]);
        assert!(plan(&[p()], &o, &Context::default(), now()).is_empty());
        // i1 done: i2, then app.
        let o = observed(
            &["a"],
            vec![with_state("a", "i1", 0, exited("Completed", 0))],
        );
        assert_eq!(
            plan(&[p()], &o, &Context::default(), now()),
            vec![start("a", "i2")]
        );
        let o = observed(
            &["a"],
            vec![
                with_state("a", "i1", 0, exited("Completed", 0)),
                with_state("a", "i2", 0, exited("Completed", 0)),
            ],
        );
        assert_eq!(
            plan(&[p()], &o, &Context::default(), now()),
            vec![start("a", "app")]
        );
        // Init containers are kept (not removed as unknown), and once the app runs they
        // are not run again.
        let o = observed(
            &["a"],
            vec![
                with_state("a", "i1", 0, exited("Completed", 0)),
                running("a", "app", 0),
            ],
        );
        assert!(plan(&[p()], &o, &Context::default(), now()).is_empty());
    }

    #[test]
    fn a_failed_init_container_blocks_the_app_containers() {
        let o = observed(&["a"], vec![with_state("a", "i1", 0, exited("Error", 1))]);
        for policy in [
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ] {
            let mut p = with_init(pod("a", &["app"]), &["i1"]);
            p.pod.spec.restart_policy = policy;
            // The supervisor restarts it (or, with Never, the pod fails): nothing to start.
            assert!(
                plan(&[p], &o, &Context::default(), now()).is_empty(),
                "{policy:?}"
            );
        }
        assert_eq!(
            init_restart_policy(RestartPolicy::Always),
            RestartPolicy::OnFailure
        );
        // A lost supervisor of a failed init container is recreated unless Never.
        let mut c = with_state("a", "i1", 0, exited("Error", 1));
        c.status.supervisor_alive = false;
        let o = observed(&["a"], vec![c]);
        let p = with_init(pod("a", &["app"]), &["i1"]);
        let a = plan(&[p], &o, &Context::default(), now());
        assert!(
            matches!(&a[..], [Action::RecreateContainer { container, .. }] if container == "i1"),
            "{a:?}"
        );
    }
}
