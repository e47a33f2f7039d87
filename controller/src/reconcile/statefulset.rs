//! The StatefulSet reconciler, after Kubernetes' StatefulSet controller:
//!
//! * pods are named `NAME-ORDINAL` for ordinals `0..replicas`, with `hostname` the pod's
//!   name and `subdomain` the set's `serviceName` (their DNS names under the headless
//!   Service), labels `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index`
//!   and `controller-revision-hash` (`NAME-HASH` of the template);
//! * each pod mounts one PersistentVolumeClaim per claim template, `TEMPLATE-NAME-ORDINAL`,
//!   created before the pod and never deleted by the controller (Kubernetes' default
//!   retention, `Retain` on scale-down and on delete): a pod made again for the same
//!   ordinal finds its data;
//! * `OrderedReady` (the default): the next missing ordinal is created only when every
//!   lower one is Running and Ready (for `minReadySeconds`); scale-down deletes the
//!   highest ordinal first, one per pass, while the others are Ready. `Parallel`: all at
//!   once;
//! * `RollingUpdate`: once every pod exists and is Ready, the highest-ordinal pod of an
//!   old template (at or above `partition`) is deleted, one at a time; it is made again
//!   from the new template on the next pass. `OnDelete`: old pods stay until deleted by
//!   hand;
//! * finished (Succeeded/Failed) pods are deleted, to be made again.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shoal_api::{
    DAEMONSET_HASH_LABEL, Kind, Object, ObjectMeta, OwnerReference, POD_INDEX_LABEL,
    POD_NAME_LABEL, PersistentVolumeClaim, PersistentVolumeClaimStatus, Pod, PodManagementPolicy,
    PodPhase, StatefulSet, StatefulSetStatus, StatefulSetUpdateStrategyType, key_for,
    template_hash,
};

use super::action::{Action, is_pod_ready, is_terminal, namespace, pod_key, revision};

/// The revision name of the set's current template: `NAME-HASH` (the hash alone when
/// that would be too long for a label value).
pub fn revision_name(s: &StatefulSet) -> String {
    let hash = template_hash(&s.spec.template);
    let full = format!("{}-{hash}", s.metadata.name);
    if full.len() <= 63 { full } else { hash }
}

fn owner(s: &StatefulSet) -> OwnerReference {
    OwnerReference {
        api_version: shoal_api::API_VERSION.to_string(),
        kind: Kind::StatefulSet,
        name: s.metadata.name.clone(),
        uid: s.metadata.uid.clone().unwrap_or_default(),
        controller: true,
        block_owner_deletion: false,
    }
}

/// The pod of `s` with `ordinal`, from the current template.
pub fn new_pod(s: &StatefulSet, ordinal: i32, revision: &str) -> Pod {
    let name = s.pod_name(ordinal);
    let t = s.template_with_claims(ordinal);
    let mut labels = t.metadata.labels.clone();
    labels.insert(DAEMONSET_HASH_LABEL.to_string(), revision.to_string());
    labels.insert(POD_NAME_LABEL.to_string(), name.clone());
    labels.insert(POD_INDEX_LABEL.to_string(), ordinal.to_string());
    let mut spec = t.spec;
    spec.hostname = Some(name.clone());
    spec.subdomain = Some(s.spec.service_name.clone()).filter(|n| !n.is_empty());
    Pod {
        metadata: ObjectMeta {
            labels,
            annotations: t.metadata.annotations,
            owner_references: vec![owner(s)],
            ..ObjectMeta::named(namespace(&s.metadata), &name)
        },
        spec,
        status: None,
    }
}

/// The claims of `ordinal`, one per claim template: labelled with the template's labels
/// and the selector's `matchLabels`, without an owner (they outlive the set).
pub fn new_claims(s: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    s.spec
        .volume_claim_templates
        .iter()
        .map(|t| {
            let mut labels = t.metadata.labels.clone();
            labels.extend(s.spec.selector.match_labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    labels,
                    annotations: t.metadata.annotations.clone(),
                    ..ObjectMeta::named(
                        namespace(&s.metadata),
                        &s.claim_name(&t.metadata.name, ordinal),
                    )
                },
                spec: t.spec.clone(),
                status: Some(PersistentVolumeClaimStatus::default()),
            }
        })
        .collect()
}

fn delete(p: &Pod) -> Action {
    Action::Delete {
        key: pod_key(p),
        revision: revision(&p.metadata),
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Running, Ready, and Ready for at least `minReadySeconds`.
fn is_available(p: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> bool {
    let running = p
        .status
        .as_ref()
        .is_some_and(|s| s.phase == PodPhase::Running);
    if !running || !is_pod_ready(p) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = p
        .status
        .as_ref()
        .and_then(|s| shoal_api::find_condition(&s.conditions, "Ready"))
        .and_then(|c| c.last_transition_time);
    since
        .is_some_and(|t| now.signed_duration_since(t).num_seconds() >= i64::from(min_ready_seconds))
}

/// Plans one pass for `s` given the pods it owns (`owned`) and the existing claims by
/// store key (see the module docs); writes `status` when it changed.
pub fn plan(
    s: &StatefulSet,
    owned: &[&Pod],
    claims: &BTreeMap<String, PersistentVolumeClaim>,
    now: DateTime<Utc>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if s.metadata.deletion_timestamp.is_some() || s.metadata.uid.is_none() {
        return actions;
    }
    let replicas = s.spec.replicas.max(0);
    let update = revision_name(s);
    let rev_of = |p: &Pod| p.metadata.labels.get(DAEMONSET_HASH_LABEL).cloned();
    let available = |p: &Pod| is_available(p, s.spec.min_ready_seconds, now);
    let parallel = s.spec.pod_management_policy == PodManagementPolicy::Parallel;

    // Pods by ordinal; names that are no ordinal of the set are not its pods to keep.
    let mut by_ordinal: BTreeMap<i32, &Pod> = BTreeMap::new();
    for p in owned {
        match s.ordinal_of(&p.metadata.name) {
            Some(o) => {
                by_ordinal.insert(o, p);
            }
            None => actions.push(delete(p)),
        }
    }

    // Claims first: a pod is made only with its claims.
    for ordinal in 0..replicas {
        for c in new_claims(s, ordinal) {
            let key = key_for(
                Kind::PersistentVolumeClaim,
                namespace(&c.metadata),
                &c.metadata.name,
            );
            if !claims.contains_key(&key) {
                actions.push(Action::Create(Object::PersistentVolumeClaim(c)));
            }
        }
    }

    // Finished pods go (and are made again below on a later pass).
    let mut live: BTreeMap<i32, &Pod> = BTreeMap::new();
    for (o, p) in &by_ordinal {
        if is_terminal(p) {
            actions.push(delete(p));
        } else {
            live.insert(*o, p);
        }
    }

    // Scale up, in order.
    let mut all_there = true;
    for ordinal in 0..replicas {
        match live.get(&ordinal) {
            Some(p) => {
                if !parallel && !available(p) {
                    all_there = false;
                    break;
                }
            }
            None => {
                all_there = false;
                if by_ordinal.contains_key(&ordinal) {
                    // Its finished pod is being deleted this pass.
                    if parallel {
                        continue;
                    }
                    break;
                }
                actions.push(Action::Create(Object::Pod(new_pod(s, ordinal, &update))));
                if !parallel {
                    break;
                }
            }
        }
    }

    // Scale down, from the highest ordinal.
    let condemned: Vec<&Pod> = live.range(replicas..).rev().map(|(_, p)| *p).collect();
    if parallel {
        actions.extend(condemned.iter().map(|p| delete(p)));
    } else if let Some(first) = condemned.first() {
        let others_ready = live
            .iter()
            .filter(|(_, p)| p.metadata.name != first.metadata.name)
            .all(|(_, p)| available(p));
        if others_ready {
            actions.push(delete(first));
        }
    }

    // Rolling update, from the highest ordinal, one at a time, once all are available.
    let rolling = s.spec.update_strategy.type_ == StatefulSetUpdateStrategyType::RollingUpdate;
    let partition = s
        .spec
        .update_strategy
        .rolling_update
        .as_ref()
        .map(|r| r.partition)
        .unwrap_or(0);
    if rolling
        && all_there
        && condemned.is_empty()
        && live.values().all(|p| available(p))
        && let Some((_, p)) = live
            .range(partition..replicas)
            .rev()
            .find(|(_, p)| rev_of(p).as_deref() != Some(update.as_str()))
    {
        actions.push(delete(p));
    }

    // Status, as observed before these actions.
    let pods: Vec<&Pod> = live.values().copied().collect();
    let updated = pods
        .iter()
        .filter(|p| rev_of(p).as_deref() == Some(update.as_str()))
        .count();
    let previous = s
        .status
        .as_ref()
        .map(|st| st.current_revision.clone())
        .filter(|r| !r.is_empty() && pods.iter().any(|p| rev_of(p).as_deref() == Some(r)));
    let current = if updated == pods.len() {
        update.clone()
    } else {
        previous
            .or_else(|| pods.first().and_then(|p| rev_of(p)))
            .unwrap_or_else(|| update.clone())
    };
    let st = StatefulSetStatus {
        replicas: count(pods.len()),
        ready_replicas: count(pods.iter().filter(|p| is_pod_ready(p)).count()),
        current_replicas: count(
            pods.iter()
                .filter(|p| rev_of(p).as_deref() == Some(current.as_str()))
                .count(),
        ),
        updated_replicas: count(updated),
        available_replicas: count(pods.iter().filter(|p| available(p)).count()),
        current_revision: current,
        update_revision: update,
        observed_generation: s.metadata.generation,
    };
    if s.status.as_ref() != Some(&st) {
        let mut u = s.clone();
        u.status = Some(st);
        actions.push(Action::Update(Object::StatefulSet(u)));
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shoal_api::ConditionStatus;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn sts(replicas: i32, extra: serde_json::Value) -> StatefulSet {
        let mut spec = json!({
            "replicas": replicas,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1",
                                  "volumeMounts": [{"name": "www", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "www"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "s1", "generation": 1},
            "spec": spec
        }))
        .unwrap()
    }

    /// The pod of `ordinal`, Running and (when `ready`) Ready since t(0).
    fn running(s: &StatefulSet, ordinal: i32, ready: bool) -> Pod {
        let mut p = new_pod(s, ordinal, &revision_name(s));
        p.metadata.uid = Some(format!("p{ordinal}"));
        p.status = Some(
            serde_json::from_value(json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                "lastTransitionTime": t(0)}]
            }))
            .unwrap(),
        );
        p
    }

    fn all_claims(s: &StatefulSet, n: i32) -> BTreeMap<String, PersistentVolumeClaim> {
        (0..n)
            .flat_map(|o| new_claims(s, o))
            .map(|c| (format!("PersistentVolumeClaim/ns/{}", c.metadata.name), c))
            .collect()
    }

    fn created_pods(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Create(Object::Pod(p)) => Some(p.metadata.name.clone()),
                _ => None,
            })
            .collect()
    }

    fn deleted(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ordered_start_makes_claims_then_one_pod_at_a_time() {
        let s = sts(3, json!({}));
        let actions = plan(&s, &[], &BTreeMap::new(), t(1));
        let claims: Vec<String> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Create(Object::PersistentVolumeClaim(c)) => Some(c.metadata.name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(claims, ["www-web-0", "www-web-1", "www-web-2"]);
        assert_eq!(created_pods(&actions), ["web-0"]);
        let Some(Action::Create(Object::Pod(p))) = actions
            .iter()
            .find(|a| matches!(a, Action::Create(Object::Pod(_))))
        else {
            panic!()
        };
        assert_eq!(p.spec.hostname.as_deref(), Some("web-0"));
        assert_eq!(p.spec.subdomain.as_deref(), Some("web"));
        assert_eq!(p.metadata.labels[POD_NAME_LABEL], "web-0");
        assert_eq!(p.metadata.labels[POD_INDEX_LABEL], "0");
        assert_eq!(
            p.spec.volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "www-web-0"
        );
        assert_eq!(p.metadata.owner_references[0].kind, Kind::StatefulSet);

        let claims = all_claims(&s, 3);
        // web-0 exists but is not Ready: nothing more.
        let p0 = running(&s, 0, false);
        let actions = plan(&s, &[&p0], &claims, t(1));
        assert!(created_pods(&actions).is_empty(), "{actions:?}");
        // Ready: web-1 next, not web-2.
        let p0 = running(&s, 0, true);
        assert_eq!(created_pods(&plan(&s, &[&p0], &claims, t(1))), ["web-1"]);
        // minReadySeconds holds it back until web-0 has been Ready long enough.
        let slow = sts(3, json!({"minReadySeconds": 30}));
        let p0 = running(&slow, 0, true);
        assert!(created_pods(&plan(&slow, &[&p0], &claims, t(10))).is_empty());
        assert_eq!(
            created_pods(&plan(&slow, &[&p0], &claims, t(30))),
            ["web-1"]
        );
        // Parallel: all at once.
        let par = sts(3, json!({"podManagementPolicy": "Parallel"}));
        assert_eq!(
            created_pods(&plan(&par, &[], &claims, t(1))),
            ["web-0", "web-1", "web-2"]
        );
    }

    #[test]
    fn a_deleted_pod_is_made_again_with_the_same_name_and_claim() {
        let s = sts(2, json!({}));
        let claims = all_claims(&s, 2);
        let p1 = running(&s, 1, true);
        let actions = plan(&s, &[&p1], &claims, t(1));
        assert_eq!(created_pods(&actions), ["web-0"]);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Create(Object::PersistentVolumeClaim(_))))
        );
        // A failed pod is deleted first, made again on the next pass.
        let mut failed = running(&s, 0, false);
        failed.status.as_mut().unwrap().phase = PodPhase::Failed;
        let actions = plan(&s, &[&failed, &p1], &claims, t(1));
        assert_eq!(deleted(&actions), ["Pod/ns/web-0"]);
        assert!(created_pods(&actions).is_empty());
    }

    #[test]
    fn scale_down_from_the_highest_ordinal_keeping_claims() {
        let s = sts(1, json!({}));
        let claims = all_claims(&s, 3);
        let pods: Vec<Pod> = (0..3).map(|o| running(&s, o, true)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let actions = plan(&s, &refs, &claims, t(1));
        assert_eq!(deleted(&actions), ["Pod/ns/web-2"]);
        // web-1 not Ready: the next deletion waits.
        let mut p1 = running(&s, 1, false);
        p1.status.as_mut().unwrap().conditions[0].status = ConditionStatus::False;
        let actions = plan(&s, &[&pods[0], &p1, &pods[2]], &claims, t(1));
        assert!(deleted(&actions).is_empty(), "{actions:?}");
        // Parallel: all condemned at once. Claims are never deleted.
        let par = sts(1, json!({"podManagementPolicy": "Parallel"}));
        let pods: Vec<Pod> = (0..3).map(|o| running(&par, o, true)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let actions = plan(&par, &refs, &claims, t(1));
        assert_eq!(deleted(&actions), ["Pod/ns/web-2", "Pod/ns/web-1"]);
    }

    #[test]
    fn rolling_update_from_the_highest_ordinal_one_at_a_time() {
        let old = sts(3, json!({}));
        let claims = all_claims(&old, 3);
        let pods: Vec<Pod> = (0..3).map(|o| running(&old, o, true)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let mut new = old.clone();
        new.spec.template.spec.containers[0].image = "busybox:2".into();
        let actions = plan(&new, &refs, &claims, t(1));
        assert_eq!(deleted(&actions), ["Pod/ns/web-2"]);
        let Some(Action::Update(Object::StatefulSet(u))) = actions.last() else {
            panic!("{actions:?}")
        };
        let st = u.status.as_ref().unwrap();
        assert_eq!(
            (st.replicas, st.updated_replicas, st.current_replicas),
            (3, 0, 3)
        );
        assert_eq!(st.current_revision, revision_name(&old));
        assert_eq!(st.update_revision, revision_name(&new));
        // web-2 remade from the new template but not Ready yet: wait.
        let p2 = running(&new, 2, false);
        let actions = plan(&new, &[&pods[0], &pods[1], &p2], &claims, t(1));
        assert!(deleted(&actions).is_empty(), "{actions:?}");
        let p2 = running(&new, 2, true);
        assert_eq!(
            deleted(&plan(&new, &[&pods[0], &pods[1], &p2], &claims, t(1))),
            ["Pod/ns/web-1"]
        );
        // partition 2 keeps web-0 and web-1.
        let mut part = new.clone();
        part.spec.update_strategy.rolling_update =
            Some(shoal_api::statefulset::RollingUpdateStatefulSetStrategy { partition: 2 });
        assert!(deleted(&plan(&part, &[&pods[0], &pods[1], &p2], &claims, t(1))).is_empty());
        // OnDelete: nothing.
        let mut od = new.clone();
        od.spec.update_strategy.type_ = StatefulSetUpdateStrategyType::OnDelete;
        assert!(deleted(&plan(&od, &refs, &claims, t(1))).is_empty());
    }

    #[test]
    fn status_is_written_once() {
        let s = sts(1, json!({}));
        let claims = all_claims(&s, 1);
        let p0 = running(&s, 0, true);
        let actions = plan(&s, &[&p0], &claims, t(1));
        let [Action::Update(Object::StatefulSet(u))] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        let st = u.status.clone().unwrap();
        assert_eq!(
            (
                st.replicas,
                st.ready_replicas,
                st.available_replicas,
                st.updated_replicas
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(st.observed_generation, Some(1));
        assert!(plan(u, &[&p0], &claims, t(2)).is_empty());
    }
}
