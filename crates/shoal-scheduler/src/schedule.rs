//! The placement algorithm: filter, score, bind, one pod after the other.
//!
//! Cost: for each pending pod, one pass over the nodes that pass its *static*
//! filters (readiness, cordon, taints, `nodeSelector`), checking the
//! *dynamic* ones (resources, host ports) and scoring in the same loop.
//! Static filters depend only on the pod's selector and tolerations, so their
//! result is computed once per distinct (selector, tolerations) pair and
//! reused; usage per node and same-owner counts are updated incrementally as
//! pods are bound. Every feasible node is scored (no sampling, unlike
//! kube-scheduler's `percentageOfNodesToScore`): O(pods × nodes) with a tight
//! inner loop, about 2–5 ns per node on this machine.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use crate::{
    Binding, BoundPod, FitError, FitReason, NodeInfo, PodRequest, Protocol, SchedulePlan,
    TaintEffect, Toleration,
};

/// Weight of the least-allocated score (0..=100 per node before weighting).
const WEIGHT_LEAST_ALLOCATED: f64 = 1.0;
/// Weight of the same-owner spread score (0..=100 per node before weighting).
const WEIGHT_SPREAD: f64 = 1.0;
/// Weight of the `PreferNoSchedule` taint score (0..=100 per node before weighting).
const WEIGHT_TAINT: f64 = 1.0;
/// Distinct (selector, tolerations) pairs whose static filter result is kept.
const STATIC_CACHE_LIMIT: usize = 64;

/// Places `pending` pods, in the given order, onto `nodes`, given the pods
/// already `bound`.
///
/// Each pod sees the resources and host ports used by `bound` and by the pods
/// placed before it in this call. Nodes are considered in name order and a
/// tie goes to the name that sorts first (byte-wise), so the plan does not depend on the
/// order of `nodes` or `bound`. If two nodes share a name, only the first one
/// given is used; bound pods on unknown nodes are ignored.
pub fn schedule(pending: &[PodRequest], nodes: &[NodeInfo], bound: &[BoundPod]) -> SchedulePlan {
    let mut cluster = Cluster::new(nodes, bound);
    let mut cache = StaticCache::default();
    let mut plan = SchedulePlan::default();
    for pod in pending {
        let statics = cache.get(pod, &cluster.nodes);
        cluster.focus_owner(pod.owner.as_deref());
        match cluster.best_node(pod, statics) {
            Some(i) => {
                cluster.bind(i, pod);
                plan.bindings.push(Binding {
                    pod_key: pod.key.clone(),
                    node: cluster.nodes[i].name.clone(),
                });
            }
            None => {
                let error = cluster.explain(pod, statics);
                plan.unschedulable.push((pod.key.clone(), error));
            }
        }
    }
    plan
}

/// What is left on a node, kept together for the hot loop.
#[derive(Debug, Clone, Copy)]
struct Free {
    cpu: u64,
    memory: u64,
    pods: u64,
    /// 1 / allocatable cpu (0 if the node has none).
    inv_cpu: f64,
    /// 1 / allocatable memory (0 if the node has none).
    inv_memory: f64,
}

/// A node that passed the static filters for some pod shape.
#[derive(Debug, Clone, Copy)]
struct Eligible {
    node: u32,
    /// Untolerated `PreferNoSchedule` taints on the node.
    prefer_no_schedule: u32,
}

/// Mutable view of the cluster during one call.
#[derive(Debug)]
struct Cluster<'a> {
    /// Nodes sorted by name, without duplicates; indices below refer to this order.
    nodes: Vec<&'a NodeInfo>,
    free: Vec<Free>,
    ports: Vec<BTreeSet<(u16, Protocol)>>,
    owner_ids: HashMap<String, u32>,
    /// For each owner id, the node index of each of its pods (with repetition).
    owner_pods: Vec<Vec<u32>>,
    /// Pods of `focused` per node; all zero when no owner is focused.
    same_owner: Vec<u32>,
    /// Largest value in `same_owner`.
    max_same_owner: u32,
    focused: Option<u32>,
}

impl<'a> Cluster<'a> {
    fn new(nodes: &'a [NodeInfo], bound: &[BoundPod]) -> Self {
        let mut sorted: Vec<&NodeInfo> = nodes.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        sorted.dedup_by(|later, first| later.name == first.name);
        let index: HashMap<&str, usize> = sorted
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let inv = |v: u64| if v == 0 { 0.0 } else { 1.0 / v as f64 };
        // Capped so that the hot loop may convert through i64.
        let cap = |v: u64| v.min(i64::MAX as u64);
        let mut free: Vec<Free> = sorted
            .iter()
            .map(|n| Free {
                cpu: cap(n.allocatable.cpu_millis),
                memory: cap(n.allocatable.memory_bytes),
                pods: n.allocatable.pods,
                inv_cpu: inv(cap(n.allocatable.cpu_millis)),
                inv_memory: inv(cap(n.allocatable.memory_bytes)),
            })
            .collect();
        let mut ports: Vec<BTreeSet<(u16, Protocol)>> =
            sorted.iter().map(|n| n.used_host_ports.clone()).collect();
        let mut cluster_owner_ids: HashMap<String, u32> = HashMap::new();
        let mut owner_pods: Vec<Vec<u32>> = Vec::new();
        for pod in bound {
            let Some(&i) = index.get(pod.node.as_str()) else {
                continue;
            };
            let f = &mut free[i];
            f.cpu = f.cpu.saturating_sub(pod.requests.cpu_millis);
            f.memory = f.memory.saturating_sub(pod.requests.memory_bytes);
            f.pods = f.pods.saturating_sub(pod.requests.pods.max(1));
            ports[i].extend(pod.host_ports.iter().copied());
            if let Some(owner) = &pod.owner {
                let id = intern(&mut cluster_owner_ids, &mut owner_pods, owner);
                owner_pods[id as usize].push(i as u32);
            }
        }
        let same_owner = vec![0; sorted.len()];
        Self {
            nodes: sorted,
            free,
            ports,
            owner_ids: cluster_owner_ids,
            owner_pods,
            same_owner,
            max_same_owner: 0,
            focused: None,
        }
    }

    /// Makes `same_owner` count the pods of `owner` per node. Cheap when
    /// consecutive pods share an owner, as replicas of one workload do.
    fn focus_owner(&mut self, owner: Option<&str>) {
        let id = owner.map(|o| intern(&mut self.owner_ids, &mut self.owner_pods, o));
        if id == self.focused {
            return;
        }
        if let Some(old) = self.focused {
            for &n in &self.owner_pods[old as usize] {
                self.same_owner[n as usize] = 0;
            }
        }
        self.max_same_owner = 0;
        if let Some(new) = id {
            for &n in &self.owner_pods[new as usize] {
                let count = &mut self.same_owner[n as usize];
                *count += 1;
                self.max_same_owner = self.max_same_owner.max(*count);
            }
        }
        self.focused = id;
    }

    /// The best feasible node for `pod` among `eligible`, if any, in one pass.
    ///
    /// Score = least allocated (0..=100: mean free fraction of cpu and memory
    /// after placing the pod) + spread (100 × (1 − same-owner pods on the node /
    /// most same-owner pods on any node)) + taints (100 × (1 − untolerated
    /// `PreferNoSchedule` taints / most such taints on an eligible node)), each
    /// weighted. The normalising maxima are known before the pass, so no
    /// per-node scratch space or second pass is needed.
    fn best_node(&self, pod: &PodRequest, statics: &Statics) -> Option<usize> {
        let cpu = pod.requests.cpu_millis;
        let memory = pod.requests.memory_bytes;
        let slots = pod.requests.pods.max(1);
        let check_ports = !pod.host_ports.is_empty();
        let per_unit = |max: u32| {
            if max == 0 {
                0.0
            } else {
                100.0 / f64::from(max)
            }
        };
        // Constant terms (100 × weight) are left out: they do not change the winner.
        let spread_penalty = WEIGHT_SPREAD * per_unit(self.max_same_owner);
        let taint_penalty = WEIGHT_TAINT * per_unit(statics.max_prefer_no_schedule);
        let least_allocated_weight = WEIGHT_LEAST_ALLOCATED * 50.0;
        let mut best = usize::MAX;
        let mut best_score = f64::NEG_INFINITY;
        for e in &statics.eligible {
            let i = e.node as usize;
            let f = self.free[i];
            if f.cpu < cpu || f.memory < memory || f.pods < slots {
                continue;
            }
            if check_ports && pod.host_ports.iter().any(|p| self.ports[i].contains(p)) {
                continue;
            }
            // Signed conversions compile to one instruction; free amounts are capped at i64::MAX.
            let score = least_allocated_weight
                * ((f.cpu - cpu) as i64 as f64 * f.inv_cpu
                    + (f.memory - memory) as i64 as f64 * f.inv_memory)
                - spread_penalty * f64::from(self.same_owner[i])
                - taint_penalty * f64::from(e.prefer_no_schedule);
            // Eligible nodes come in name order: only a strictly better score wins a tie.
            if score > best_score {
                best = i;
                best_score = score;
            }
        }
        (best != usize::MAX).then_some(best)
    }

    /// Accounts `pod` on node `i`.
    fn bind(&mut self, i: usize, pod: &PodRequest) {
        let f = &mut self.free[i];
        f.cpu = f.cpu.saturating_sub(pod.requests.cpu_millis);
        f.memory = f.memory.saturating_sub(pod.requests.memory_bytes);
        f.pods = f.pods.saturating_sub(pod.requests.pods.max(1));
        self.ports[i].extend(pod.host_ports.iter().copied());
        if let Some(owner) = &pod.owner {
            let id = intern(&mut self.owner_ids, &mut self.owner_pods, owner);
            self.owner_pods[id as usize].push(i as u32);
            if self.focused == Some(id) {
                self.same_owner[i] += 1;
                self.max_same_owner = self.max_same_owner.max(self.same_owner[i]);
            }
        }
    }

    /// Why `pod` fits on no node: the static reasons plus, for each eligible
    /// node, the first failing dynamic filter (host ports, then resources,
    /// which may name several resources).
    fn explain(&self, pod: &PodRequest, statics: &Statics) -> FitError {
        let mut reasons = statics.reasons.clone();
        for e in &statics.eligible {
            let i = e.node as usize;
            if pod.host_ports.iter().any(|p| self.ports[i].contains(p)) {
                *reasons.entry(FitReason::HostPortInUse).or_default() += 1;
                continue;
            }
            let f = self.free[i];
            if f.cpu < pod.requests.cpu_millis {
                *reasons.entry(FitReason::InsufficientCpu).or_default() += 1;
            }
            if f.memory < pod.requests.memory_bytes {
                *reasons.entry(FitReason::InsufficientMemory).or_default() += 1;
            }
            if f.pods < pod.requests.pods.max(1) {
                *reasons.entry(FitReason::TooManyPods).or_default() += 1;
            }
        }
        FitError {
            nodes: self.nodes.len(),
            reasons,
        }
    }
}

fn intern(ids: &mut HashMap<String, u32>, pods: &mut Vec<Vec<u32>>, owner: &str) -> u32 {
    if let Some(&id) = ids.get(owner) {
        return id;
    }
    let id = pods.len() as u32;
    pods.push(Vec::new());
    ids.insert(owner.to_string(), id);
    id
}

/// Result of the static filters for one (selector, tolerations, volume node) triple.
#[derive(Debug)]
struct Statics {
    selector: BTreeMap<String, String>,
    tolerations: Vec<Toleration>,
    volume_node: Option<String>,
    eligible: Vec<Eligible>,
    /// Largest `prefer_no_schedule` among `eligible`.
    max_prefer_no_schedule: u32,
    /// Rejections by the static filters, one reason per rejected node.
    reasons: BTreeMap<FitReason, usize>,
}

/// Static filter results by hash of (selector, tolerations, volume node).
#[derive(Debug, Default)]
struct StaticCache {
    entries: HashMap<u64, Vec<Statics>>,
    len: usize,
}

impl StaticCache {
    fn get(&mut self, pod: &PodRequest, nodes: &[&NodeInfo]) -> &Statics {
        let mut h = DefaultHasher::new();
        pod.node_selector.hash(&mut h);
        pod.tolerations.hash(&mut h);
        pod.volume_node.hash(&mut h);
        let key = h.finish();
        let hit = self.entries.get(&key).and_then(|v| {
            v.iter().position(|s| {
                s.selector == pod.node_selector
                    && s.tolerations == pod.tolerations
                    && s.volume_node == pod.volume_node
            })
        });
        let pos = match hit {
            Some(pos) => pos,
            None => {
                if self.len >= STATIC_CACHE_LIMIT {
                    self.entries.clear();
                    self.len = 0;
                }
                self.len += 1;
                let bucket = self.entries.entry(key).or_default();
                bucket.push(static_filter(pod, nodes));
                bucket.len() - 1
            }
        };
        &self.entries[&key][pos]
    }
}

/// The first static filter (readiness, cordon, `NoSchedule`/`NoExecute` taints,
/// `nodeSelector`, the node of the pod's local volumes, in Kubernetes' order) that rejects `pod` on `node`, or `None` when the
/// node passes them all. Resources and host ports are not looked at. The DaemonSet
/// reconciler asks this per node (with the node's readiness and cordon adjusted to its
/// own rules) instead of placing pods.
pub fn static_rejection(pod: &PodRequest, node: &NodeInfo) -> Option<FitReason> {
    let tolerated = |t: &crate::Taint| pod.tolerations.iter().any(|tol| tol.tolerates(t));
    if !node.ready {
        Some(FitReason::NotReady)
    } else if node.unschedulable {
        Some(FitReason::Unschedulable)
    } else if node
        .taints
        .iter()
        .any(|t| t.effect != TaintEffect::PreferNoSchedule && !tolerated(t))
    {
        Some(FitReason::UntoleratedTaint)
    } else if !pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
    {
        Some(FitReason::NodeSelectorMismatch)
    } else if pod.volume_node.as_ref().is_some_and(|n| *n != node.name) {
        Some(FitReason::VolumeNodeConflict)
    } else {
        None
    }
}

/// Runs the filters that depend only on the node and the pod's selector and
/// tolerations ([`static_rejection`]); a rejected node counts one reason.
fn static_filter(pod: &PodRequest, nodes: &[&NodeInfo]) -> Statics {
    let mut eligible = Vec::with_capacity(nodes.len());
    let mut reasons: BTreeMap<FitReason, usize> = BTreeMap::new();
    let tolerated = |t: &crate::Taint| pod.tolerations.iter().any(|tol| tol.tolerates(t));
    for (i, node) in nodes.iter().enumerate() {
        let rejected = static_rejection(pod, node);
        match rejected {
            Some(r) => *reasons.entry(r).or_default() += 1,
            None => eligible.push(Eligible {
                node: i as u32,
                prefer_no_schedule: node
                    .taints
                    .iter()
                    .filter(|t| t.effect == TaintEffect::PreferNoSchedule && !tolerated(t))
                    .count() as u32,
            }),
        }
    }
    Statics {
        selector: pod.node_selector.clone(),
        tolerations: pod.tolerations.clone(),
        volume_node: pod.volume_node.clone(),
        max_prefer_no_schedule: eligible
            .iter()
            .map(|e| e.prefer_no_schedule)
            .max()
            .unwrap_or(0),
        eligible,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Resources, Taint};

    #[test]
    fn static_cache_reuses_and_distinguishes_shapes() {
        let nodes = [NodeInfo::new("a", Resources::new(1000, 1000, 10))];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let mut cache = StaticCache::default();
        let plain = PodRequest::new("p", 1, 1);
        let mut picky = PodRequest::new("q", 1, 1);
        picky.node_selector.insert("zone".into(), "x".into());
        assert_eq!(cache.get(&plain, &refs).eligible.len(), 1);
        assert_eq!(cache.get(&picky, &refs).eligible.len(), 0);
        assert_eq!(cache.get(&plain, &refs).eligible.len(), 1);
        assert_eq!(cache.len, 2);
    }

    #[test]
    fn static_cache_is_bounded() {
        let nodes = [NodeInfo::new("a", Resources::new(1000, 1000, 10))];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let mut cache = StaticCache::default();
        for i in 0..(STATIC_CACHE_LIMIT * 3) {
            let mut pod = PodRequest::new("p", 1, 1);
            pod.node_selector.insert("k".into(), i.to_string());
            assert_eq!(cache.get(&pod, &refs).reasons.len(), 1);
            assert!(cache.len <= STATIC_CACHE_LIMIT);
        }
    }

    #[test]
    fn prefer_no_schedule_counted_only_when_untolerated() {
        let mut node = NodeInfo::new("a", Resources::new(1000, 1000, 10));
        node.taints = vec![
            Taint::new("x", "1", TaintEffect::PreferNoSchedule),
            Taint::new("y", "1", TaintEffect::PreferNoSchedule),
        ];
        let refs = [&node];
        let mut pod = PodRequest::new("p", 1, 1);
        assert_eq!(static_filter(&pod, &refs).eligible[0].prefer_no_schedule, 2);
        pod.tolerations
            .push(Toleration::exists("x", Some(TaintEffect::PreferNoSchedule)));
        assert_eq!(static_filter(&pod, &refs).eligible[0].prefer_no_schedule, 1);
    }

    #[test]
    fn static_rejection_in_kubernetes_order() {
        let mut node = NodeInfo::new("a", Resources::new(1000, 1000, 10));
        node.labels.insert("disk".into(), "ssd".into());
        let mut pod = PodRequest::new("p", 1, 1);
        pod.node_selector.insert("disk".into(), "ssd".into());
        assert_eq!(static_rejection(&pod, &node), None);
        node.taints = vec![Taint::new("x", "1", TaintEffect::PreferNoSchedule)];
        assert_eq!(static_rejection(&pod, &node), None);
        node.taints
            .push(Taint::new("d", "1", TaintEffect::NoSchedule));
        assert_eq!(
            static_rejection(&pod, &node),
            Some(FitReason::UntoleratedTaint)
        );
        pod.tolerations.push(Toleration::equal("d", "1", None));
        assert_eq!(static_rejection(&pod, &node), None);
        pod.node_selector.insert("disk".into(), "hdd".into());
        assert_eq!(
            static_rejection(&pod, &node),
            Some(FitReason::NodeSelectorMismatch)
        );
        pod.node_selector.insert("disk".into(), "ssd".into());
        pod.volume_node = Some("b".into());
        assert_eq!(
            static_rejection(&pod, &node),
            Some(FitReason::VolumeNodeConflict)
        );
        pod.volume_node = Some("a".into());
        assert_eq!(static_rejection(&pod, &node), None);
        pod.node_selector.insert("disk".into(), "hdd".into());
        node.unschedulable = true;
        assert_eq!(
            static_rejection(&pod, &node),
            Some(FitReason::Unschedulable)
        );
        node.ready = false;
        assert_eq!(static_rejection(&pod, &node), Some(FitReason::NotReady));
    }
}
