//! The scheduler's answer.

use crate::FitError;

/// One decision: bind this pod to this node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Binding {
    /// The pod's key, as given in [`crate::PodRequest::key`].
    pub pod_key: String,
    /// The chosen node's name.
    pub node: String,
}

/// Result of one scheduling pass over a batch of pending pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulePlan {
    /// Pods placed, in the order they were given.
    pub bindings: Vec<Binding>,
    /// Pods that fit nowhere, in the order they were given, with the reasons per node.
    pub unschedulable: Vec<(String, FitError)>,
}
