//! The deployment reconciler: keeps `spec.replicas` pods of the current template, rolls
//! template changes out within maxSurge/maxUnavailable (or Recreate), and records the
//! rollout history and counts in `status`. A Deployment owns its Pods directly (no
//! ReplicaSet kind); see docs/design/0002-deployments.md.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shoal_api::{
    ConditionStatus, Deployment, DeploymentRevision, DeploymentStatus, DeploymentStrategyType,
    Kind, Object, ObjectMeta, OwnerReference, POD_TEMPLATE_HASH_LABEL, Pod, template_hash,
};

use super::action::{Action, Names, is_pod_ready, is_terminal, namespace, node_of, revision};

/// Longest deployment-name part of a pod name (`<deploy>-<hash:10>-<suffix:5>` stays <= 253).
const MAX_NAME_PREFIX: usize = 253 - 17;

/// True when `p`'s controller owner is the deployment with uid `uid`.
pub fn owned_by(p: &Pod, uid: &str) -> bool {
    p.metadata
        .controller_owner()
        .is_some_and(|o| o.kind == Kind::Deployment && o.uid == uid)
}

/// Groups pods by the uid of their controlling Deployment.
pub fn pods_by_owner(pods: &BTreeMap<String, Pod>) -> BTreeMap<String, Vec<&Pod>> {
    let mut out: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in pods.values() {
        if let Some(o) = p
            .metadata
            .controller_owner()
            .filter(|o| o.kind == Kind::Deployment)
        {
            out.entry(o.uid.clone()).or_default().push(p);
        }
    }
    out
}

/// A new pod of `d` from its current template.
pub fn new_pod(d: &Deployment, hash: &str, names: &mut dyn Names) -> Pod {
    let prefix: String = d.metadata.name.chars().take(MAX_NAME_PREFIX).collect();
    let ns = namespace(&d.metadata).to_string();
    let mut labels = d.spec.template.metadata.labels.clone();
    labels.insert(POD_TEMPLATE_HASH_LABEL.to_string(), hash.to_string());
    Pod {
        metadata: ObjectMeta {
            labels,
            annotations: d.spec.template.metadata.annotations.clone(),
            owner_references: vec![OwnerReference {
                api_version: shoal_api::API_VERSION.to_string(),
                kind: Kind::Deployment,
                name: d.metadata.name.clone(),
                uid: d.metadata.uid.clone().unwrap_or_default(),
                controller: true,
                block_owner_deletion: false,
            }],
            ..ObjectMeta::named(&ns, &format!("{prefix}-{hash}-{}", names.suffix(5)))
        },
        spec: d.spec.template.spec.clone(),
        status: None,
    }
}

/// Order in which pods are removed: unscheduled first, then not ready, then the newest.
fn victim_order(pods: &mut [&Pod]) {
    pods.sort_by_key(|p| {
        (
            node_of(p).is_some(),
            is_pod_ready(p),
            Reverse(p.metadata.creation_timestamp),
            p.metadata.name.clone(),
        )
    });
}

fn delete(p: &Pod) -> Action {
    Action::Delete {
        key: super::action::pod_key(p),
        revision: revision(&p.metadata),
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The rollout history after rolling out `hash`: unchanged if it is already the current
/// entry; otherwise the template gets the next revision number (a template restored by
/// undo moves from its old entry to the end), trimmed to the current plus `limit` old ones.
pub fn next_history(d: &Deployment, hash: &str) -> (i64, Vec<DeploymentRevision>) {
    let status = d.status.clone().unwrap_or_default();
    let mut history = status.history;
    if let Some(last) = history.last().filter(|h| h.template_hash == hash) {
        return (last.revision, history);
    }
    let next = history
        .iter()
        .map(|h| h.revision)
        .max()
        .unwrap_or(0)
        .max(status.revision)
        + 1;
    history.retain(|h| h.template_hash != hash);
    history.push(DeploymentRevision {
        revision: next,
        template_hash: hash.to_string(),
        template: d.spec.template.clone(),
    });
    let keep = usize::try_from(d.spec.revision_history_limit).unwrap_or(0) + 1;
    if history.len() > keep {
        history.drain(..history.len() - keep);
    }
    (next, history)
}

/// Plans one pass for deployment `d` given the pods it owns (`owned`, any state).
///
/// * Finished pods (Succeeded/Failed) are deleted and replaced; pods being deleted are
///   not counted.
/// * No old pods: scale the current template's pods to `spec.replicas`.
/// * RollingUpdate: create new pods while the total stays <= replicas + maxSurge; delete
///   old pods (not-ready ones first) while at least replicas - maxUnavailable pods stay
///   ready (Kubernetes' rules: at most `all - minAvailable - newUnavailable` go, and only
///   `ready - minAvailable` of them ready ones).
/// * Recreate: delete every old pod first; create new ones once none is left.
/// * Paused: no pod is created or deleted for a template change.
/// * Status: counts, observedGeneration, `Available`/`Progressing`, revision and history;
///   written (CAS on the deployment's revision) only when it changed.
pub fn plan(
    d: &Deployment,
    owned: &[&Pod],
    now: DateTime<Utc>,
    names: &mut dyn Names,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if d.metadata.deletion_timestamp.is_some() || d.metadata.uid.is_none() {
        return actions;
    }
    let hash = template_hash(&d.spec.template);
    let r = usize::try_from(d.spec.replicas).unwrap_or(0);
    let (mut new, mut old): (Vec<&Pod>, Vec<&Pod>) = (Vec::new(), Vec::new());
    for p in owned {
        if is_terminal(p) {
            actions.push(delete(p));
        } else if p.metadata.deletion_timestamp.is_none() {
            if p.metadata.labels.get(POD_TEMPLATE_HASH_LABEL) == Some(&hash) {
                new.push(p);
            } else {
                old.push(p);
            }
        }
    }
    let ready = |ps: &[&Pod]| ps.iter().filter(|p| is_pod_ready(p)).count();
    let (surge, unavailable) = match d.spec.strategy.type_ {
        DeploymentStrategyType::RollingUpdate => {
            let (s, u) = d.spec.strategy.resolved_limits(d.spec.replicas);
            (
                usize::try_from(s).unwrap_or(0),
                usize::try_from(u).unwrap_or(0),
            )
        }
        DeploymentStrategyType::Recreate => (0, r),
    };
    let min_available = r.saturating_sub(unavailable);
    let (new_ready, old_ready) = (ready(&new), ready(&old));

    let mut creates = 0usize;
    let mut deletes: Vec<&Pod> = Vec::new();
    if old.is_empty() {
        if new.len() < r {
            creates = r - new.len();
        } else if new.len() > r {
            victim_order(&mut new);
            deletes.extend(new.iter().take(new.len() - r));
        }
    } else if d.spec.paused {
        // A paused rollout keeps the pods it has.
    } else if d.spec.strategy.type_ == DeploymentStrategyType::Recreate {
        deletes.extend(old.iter());
    } else {
        let mut new_sorted = new.clone();
        let mut new_count = new.len();
        if new_count > r {
            victim_order(&mut new_sorted);
            deletes.extend(new_sorted.iter().take(new_count - r));
            new_count = r;
        }
        let total = new_count + old.len();
        creates = (r + surge).saturating_sub(total).min(r - new_count);
        // Old pods may go while enough pods stay available.
        let new_unavailable = new.len() - new_ready;
        let mut budget = (new.len() + old.len()).saturating_sub(min_available + new_unavailable);
        let mut ready_spare = (new_ready + old_ready).saturating_sub(min_available);
        let mut victims = old.clone();
        victim_order(&mut victims);
        for p in victims {
            if budget == 0 {
                break;
            }
            if is_pod_ready(p) {
                if ready_spare == 0 {
                    continue;
                }
                ready_spare -= 1;
            }
            budget -= 1;
            deletes.push(p);
        }
    }
    for _ in 0..creates {
        actions.push(Action::Create(Object::Pod(new_pod(d, &hash, names))));
    }
    actions.extend(deletes.iter().map(|p| delete(p)));

    // Status describes what was observed before these actions.
    let old_status = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        replicas: count(new.len() + old.len()),
        ready_replicas: count(new_ready + old_ready),
        updated_replicas: count(new.len()),
        available_replicas: count(new_ready + old_ready),
        observed_generation: d.metadata.generation,
        conditions: old_status.conditions.clone(),
        revision: old_status.revision,
        history: old_status.history.clone(),
    };
    if !d.spec.paused {
        (status.revision, status.history) = next_history(d, &hash);
    }
    let available = new_ready + old_ready >= min_available;
    super::action::set_condition(
        &mut status.conditions,
        "Available",
        if available {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        if available {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        &format!(
            "{} of {} replicas ready (at least {} required)",
            new_ready + old_ready,
            r,
            min_available
        ),
        now,
    );
    let complete = old.is_empty() && new.len() == r && new_ready == r;
    let (reason, message) = if d.spec.paused {
        ("DeploymentPaused", "rollout is paused".to_string())
    } else if complete {
        (
            "RolloutComplete",
            format!("revision {} is rolled out", status.revision),
        )
    } else {
        (
            "RollingOut",
            format!(
                "{} of {} updated replicas ready, {} old replicas left",
                new_ready,
                r,
                old.len()
            ),
        )
    };
    super::action::set_condition(
        &mut status.conditions,
        "Progressing",
        ConditionStatus::True,
        reason,
        &message,
        now,
    );
    if d.status.as_ref() != Some(&status) {
        let mut updated = d.clone();
        updated.status = Some(status);
        actions.push(Action::Update(Object::Deployment(updated)));
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::action::CountingNames;
    use serde_json::json;
    use shoal_api::{PodPhase, PodStatus};

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn deployment(replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u-web", "resourceVersion": "40", "generation": 3},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": strategy,
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    /// `n` pods of `d`'s current template, bound, ready as given, created at t(i).
    fn pods_of(d: &Deployment, n: usize, ready: bool, first: usize) -> Vec<Pod> {
        let hash = template_hash(&d.spec.template);
        (0..n)
            .map(|i| {
                let mut p = new_pod(d, &hash, &mut CountingNames((first + i) as u64));
                p.metadata.resource_version = Some(format!("{}", 100 + first + i));
                p.metadata.creation_timestamp = Some(t((first + i) as i64));
                p.spec.node_name = Some("n1".into());
                let mut s = PodStatus {
                    phase: PodPhase::Running,
                    ..Default::default()
                };
                let st = if ready {
                    ConditionStatus::True
                } else {
                    ConditionStatus::False
                };
                crate::reconcile::action::set_condition(
                    &mut s.conditions,
                    "Ready",
                    st,
                    "",
                    "",
                    t(0),
                );
                p.status = Some(s);
                p
            })
            .collect()
    }

    fn creates(a: &[Action]) -> Vec<Pod> {
        a.iter()
            .filter_map(|a| match a {
                Action::Create(Object::Pod(p)) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    fn deletes(a: &[Action]) -> Vec<String> {
        a.iter()
            .filter_map(|a| match a {
                Action::Delete { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    fn status(a: &[Action]) -> Option<DeploymentStatus> {
        a.iter().find_map(|a| match a {
            Action::Update(Object::Deployment(d)) => d.status.clone(),
            _ => None,
        })
    }

    fn refs(p: &[Pod]) -> Vec<&Pod> {
        p.iter().collect()
    }

    #[test]
    fn creates_pods_with_name_labels_and_owner() {
        let d = deployment(3, "busybox:1", json!({}));
        let a = plan(&d, &[], t(0), &mut CountingNames(0));
        let c = creates(&a);
        assert_eq!(c.len(), 3);
        let hash = template_hash(&d.spec.template);
        assert_eq!(c[0].metadata.name, format!("web-{hash}-00001"));
        assert_eq!(c[0].metadata.labels[POD_TEMPLATE_HASH_LABEL], hash);
        assert_eq!(c[0].metadata.labels["app"], "web");
        let o = c[0].metadata.controller_owner().unwrap();
        assert_eq!(
            (o.kind, o.name.as_str(), o.uid.as_str()),
            (Kind::Deployment, "web", "u-web")
        );
        assert!(c[0].spec.node_name.is_none());
        let s = status(&a).unwrap();
        assert_eq!(
            (s.replicas, s.updated_replicas, s.ready_replicas),
            (0, 0, 0)
        );
        assert_eq!((s.revision, s.history.len()), (1, 1));
        assert_eq!(s.observed_generation, Some(3));
        assert!(matches!(
            a.last().unwrap().to_write(),
            shoal_store::Write::Update {
                expected_revision: Some(40),
                ..
            }
        ));
        // Every created pod validates as a Pod.
        Object::Pod(c[0].clone()).validate().unwrap();
    }

    #[test]
    fn steady_state_writes_nothing() {
        let d = deployment(3, "busybox:1", json!({}));
        let pods = pods_of(&d, 3, true, 0);
        let a = plan(&d, &refs(&pods), t(5), &mut CountingNames(0));
        let mut d2 = d.clone();
        d2.status = status(&a);
        assert_eq!(status(&a).unwrap().conditions.len(), 2);
        assert!(plan(&d2, &refs(&pods), t(6), &mut CountingNames(0)).is_empty());
    }

    #[test]
    fn scales_down_unscheduled_and_unready_first_then_newest() {
        let d = deployment(2, "busybox:1", json!({}));
        let mut pods = pods_of(&d, 5, true, 0);
        pods[1].spec.node_name = None;
        pods[3].status.as_mut().unwrap().conditions[0].status = ConditionStatus::False;
        let a = plan(&d, &refs(&pods), t(5), &mut CountingNames(0));
        let gone = deletes(&a);
        let want: Vec<String> = [1usize, 3, 4]
            .iter()
            .map(|i| format!("Pod/default/{}", pods[*i].metadata.name))
            .collect();
        assert_eq!(gone, want);
        assert!(creates(&a).is_empty());
        assert!(matches!(&a[0], Action::Delete { revision: 101, .. }));
        // Scale up again.
        let d4 = deployment(4, "busybox:1", json!({}));
        let a = plan(&d4, &refs(&pods[..2]), t(6), &mut CountingNames(0));
        assert_eq!(creates(&a).len(), 2);
        assert!(deletes(&a).is_empty());
    }

    #[test]
    fn finished_pods_are_replaced() {
        let d = deployment(2, "busybox:1", json!({}));
        let mut pods = pods_of(&d, 2, true, 0);
        pods[0].status.as_mut().unwrap().phase = PodPhase::Failed;
        let a = plan(&d, &refs(&pods), t(5), &mut CountingNames(0));
        assert_eq!(
            deletes(&a),
            vec![format!("Pod/default/{}", pods[0].metadata.name)]
        );
        assert_eq!(creates(&a).len(), 1);
    }

    /// Simulates a rolling update pass by pass: new pods become ready one pass after they
    /// are created; checks the surge and availability bounds at every step.
    fn simulate(
        replicas: i32,
        strategy: serde_json::Value,
        max_surge: usize,
        max_unavailable: usize,
    ) -> usize {
        let v1 = deployment(replicas, "busybox:1", strategy.clone());
        let v2 = deployment(replicas, "busybox:2", strategy);
        let r = replicas as usize;
        let mut pods = pods_of(&v1, r, true, 0);
        let mut names = CountingNames(1000);
        let mut d = v2.clone();
        // v1 was rolled out: revision 1.
        d.status = status(&plan(&v1, &refs(&pods), t(0), &mut names));
        for pass in 1..100 {
            let a = plan(&d, &refs(&pods), t(pass), &mut names);
            if let Some(s) = status(&a) {
                d.status = Some(s);
            }
            let gone = deletes(&a);
            pods.retain(|p| !gone.contains(&format!("Pod/default/{}", p.metadata.name)));
            let ready_now = pods.iter().filter(|p| is_pod_ready(p)).count();
            assert!(
                ready_now + max_unavailable >= r,
                "pass {pass}: {ready_now} ready of {r}"
            );
            // Pods created in earlier passes become ready (the agent reports them).
            for p in &mut pods {
                let s = p.status.as_mut().unwrap();
                crate::reconcile::action::set_condition(
                    &mut s.conditions,
                    "Ready",
                    ConditionStatus::True,
                    "",
                    "",
                    t(0),
                );
            }
            for mut p in creates(&a) {
                p.metadata.resource_version = Some("1".into());
                p.metadata.creation_timestamp = Some(t(pass));
                p.spec.node_name = Some("n2".into());
                let mut s = PodStatus::default();
                crate::reconcile::action::set_condition(
                    &mut s.conditions,
                    "Ready",
                    ConditionStatus::False,
                    "",
                    "",
                    t(0),
                );
                p.status = Some(s);
                pods.push(p);
            }
            assert!(
                pods.len() <= r + max_surge,
                "pass {pass}: {} pods exceed {r}+{max_surge}",
                pods.len()
            );
            let hash = template_hash(&v2.spec.template);
            if a.is_empty() {
                assert_eq!(pods.len(), r);
                assert!(
                    pods.iter()
                        .all(|p| p.metadata.labels[POD_TEMPLATE_HASH_LABEL] == hash
                            && is_pod_ready(p))
                );
                let s = d.status.as_ref().unwrap();
                assert_eq!(
                    (s.updated_replicas, s.ready_replicas, s.revision),
                    (replicas, replicas, 2)
                );
                let p = shoal_api::find_condition(&s.conditions, "Progressing").unwrap();
                assert_eq!(p.reason, "RolloutComplete");
                return pass as usize;
            }
        }
        panic!("rollout did not converge");
    }

    #[test]
    fn rolling_update_respects_surge_and_unavailable() {
        // Default 25%/25% of 6: surge 2, unavailable 1.
        simulate(6, json!({}), 2, 1);
        simulate(
            6,
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
            0,
            1,
        );
        simulate(
            4,
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
            1,
            0,
        );
        simulate(1, json!({}), 1, 0);
        simulate(
            10,
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "0%"}}),
            10,
            0,
        );
    }

    #[test]
    fn recreate_deletes_all_old_before_creating() {
        let v1 = deployment(3, "busybox:1", json!({"type": "Recreate"}));
        let v2 = deployment(3, "busybox:2", json!({"type": "Recreate"}));
        let pods = pods_of(&v1, 3, true, 0);
        let a = plan(&v2, &refs(&pods), t(1), &mut CountingNames(0));
        assert_eq!(deletes(&a).len(), 3);
        assert!(creates(&a).is_empty());
        let a = plan(&v2, &[], t(2), &mut CountingNames(0));
        assert_eq!(creates(&a).len(), 3);
    }

    #[test]
    fn paused_keeps_pods_and_history() {
        let v1 = deployment(3, "busybox:1", json!({}));
        let mut v2 = deployment(3, "busybox:2", json!({}));
        v2.spec.paused = true;
        let pods = pods_of(&v1, 3, true, 0);
        let a = plan(&v2, &refs(&pods), t(1), &mut CountingNames(0));
        assert!(creates(&a).is_empty() && deletes(&a).is_empty());
        let s = status(&a).unwrap();
        assert_eq!(s.revision, 0);
        assert_eq!(
            shoal_api::find_condition(&s.conditions, "Progressing")
                .unwrap()
                .reason,
            "DeploymentPaused"
        );
    }

    #[test]
    fn history_numbers_templates_and_undo_moves_an_entry_forward() {
        let mut d = deployment(1, "busybox:1", json!({}));
        d.spec.revision_history_limit = 2;
        let mut hashes = Vec::new();
        for image in ["busybox:1", "busybox:2", "busybox:3", "busybox:4"] {
            d.spec.template.spec.containers[0].image = image.into();
            hashes.push(template_hash(&d.spec.template));
            let (rev, h) = next_history(&d, hashes.last().unwrap());
            d.status = Some(DeploymentStatus {
                revision: rev,
                history: h,
                ..Default::default()
            });
        }
        let s = d.status.clone().unwrap();
        assert_eq!(s.revision, 4);
        // Current plus 2 old ones.
        assert_eq!(
            s.history.iter().map(|h| h.revision).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        // Undo: the previous template (revision 3) comes back as revision 5.
        d.spec.template = s.history[1].template.clone();
        let (rev, h) = next_history(&d, &template_hash(&d.spec.template));
        assert_eq!(rev, 5);
        assert_eq!(
            h.iter()
                .map(|h| (h.revision, h.template_hash.clone()))
                .collect::<Vec<_>>(),
            vec![
                (2, hashes[1].clone()),
                (4, hashes[3].clone()),
                (5, hashes[2].clone())
            ]
        );
        // Same template again: nothing changes.
        d.status = Some(DeploymentStatus {
            revision: rev,
            history: h.clone(),
            ..Default::default()
        });
        assert_eq!(next_history(&d, &hashes[2]), (5, h));
    }

    #[test]
    fn pods_of_others_and_deleted_deployments_are_left_alone() {
        let d = deployment(1, "busybox:1", json!({}));
        let pods = pods_of(&d, 2, true, 0);
        let mut gone = d.clone();
        gone.metadata.deletion_timestamp = Some(t(0));
        assert!(plan(&gone, &refs(&pods), t(1), &mut CountingNames(0)).is_empty());
        let map: BTreeMap<String, Pod> = pods
            .iter()
            .map(|p| (super::super::action::pod_key(p), p.clone()))
            .collect();
        assert_eq!(pods_by_owner(&map)["u-web"].len(), 2);
        assert!(owned_by(&pods[0], "u-web") && !owned_by(&pods[0], "u-other"));
    }
}
