//! Why a pod fits nowhere.

use std::collections::BTreeMap;
use std::fmt;

/// Why one node rejected a pod. A node counts once per reason; the resource
/// filter may give several reasons for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FitReason {
    /// The node is not Ready.
    NotReady,
    /// The node is cordoned.
    Unschedulable,
    /// The node has a `NoSchedule`/`NoExecute` taint the pod does not tolerate.
    UntoleratedTaint,
    /// The node's labels do not match the pod's `nodeSelector`.
    NodeSelectorMismatch,
    /// The pod mounts a local volume that lives on another node.
    VolumeNodeConflict,
    /// Requested cpu exceeds what is left on the node.
    InsufficientCpu,
    /// Requested memory exceeds what is left on the node.
    InsufficientMemory,
    /// The node has no pod slot left.
    TooManyPods,
    /// One of the pod's host ports is already used on the node.
    HostPortInUse,
}

impl FitReason {
    /// The reason's wording in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            FitReason::NotReady => "not ready",
            FitReason::Unschedulable => "unschedulable",
            FitReason::UntoleratedTaint => "untolerated taint",
            FitReason::NodeSelectorMismatch => "node selector mismatch",
            FitReason::VolumeNodeConflict => "volume node affinity conflict",
            FitReason::InsufficientCpu => "insufficient cpu",
            FitReason::InsufficientMemory => "insufficient memory",
            FitReason::TooManyPods => "too many pods",
            FitReason::HostPortInUse => "host port in use",
        }
    }
}

impl fmt::Display for FitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pod fits on none of the nodes; displays like Kubernetes' `FailedScheduling`
/// message: `0/3 nodes: 2 insufficient memory, 1 node selector mismatch`.
///
/// Reasons are ordered by count, most frequent first, then alphabetically.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(*.nodes, .reasons))]
pub struct FitError {
    /// How many nodes were considered.
    pub nodes: usize,
    /// How many nodes rejected the pod for each reason.
    pub reasons: BTreeMap<FitReason, usize>,
}

impl FitError {
    /// The reasons with their counts, in message order (count descending, then wording).
    pub fn sorted_reasons(&self) -> Vec<(FitReason, usize)> {
        let mut v: Vec<(FitReason, usize)> = self.reasons.iter().map(|(r, n)| (*r, *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_str().cmp(b.0.as_str())));
        v
    }

    /// How many nodes rejected the pod for `reason`.
    pub fn count(&self, reason: FitReason) -> usize {
        self.reasons.get(&reason).copied().unwrap_or(0)
    }
}

fn render(nodes: usize, reasons: &BTreeMap<FitReason, usize>) -> String {
    if nodes == 0 {
        return "0/0 nodes: no nodes registered".to_string();
    }
    let err = FitError {
        nodes,
        reasons: reasons.clone(),
    };
    let parts: Vec<String> = err
        .sorted_reasons()
        .into_iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    format!("0/{nodes} nodes: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_sorts_by_count_then_wording() {
        let mut reasons = BTreeMap::new();
        reasons.insert(FitReason::NodeSelectorMismatch, 1);
        reasons.insert(FitReason::InsufficientMemory, 2);
        let e = FitError { nodes: 3, reasons };
        assert_eq!(
            e.to_string(),
            "0/3 nodes: 2 insufficient memory, 1 node selector mismatch"
        );

        let mut reasons = BTreeMap::new();
        reasons.insert(FitReason::TooManyPods, 2);
        reasons.insert(FitReason::HostPortInUse, 2);
        reasons.insert(FitReason::NotReady, 2);
        reasons.insert(FitReason::InsufficientCpu, 5);
        let e = FitError { nodes: 7, reasons };
        assert_eq!(
            e.to_string(),
            "0/7 nodes: 5 insufficient cpu, 2 host port in use, 2 not ready, 2 too many pods"
        );
    }

    #[test]
    fn no_nodes_message() {
        assert_eq!(
            FitError::default().to_string(),
            "0/0 nodes: no nodes registered"
        );
    }
}
