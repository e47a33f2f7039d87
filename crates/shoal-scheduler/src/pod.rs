//! Pods as the scheduler sees them: pending requests and pods already bound.

use std::collections::BTreeMap;

use crate::{Protocol, Resources, Taint, TaintEffect};

/// How a toleration compares its value with a taint's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TolerationOperator {
    /// Key and value must be equal (the Kubernetes default).
    #[default]
    Equal,
    /// The key must exist, any value; an empty key with `Exists` tolerates every taint.
    Exists,
}

/// A pod's toleration of taints, with Kubernetes' matching rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// Taint key to match; empty matches every key (only with [`TolerationOperator::Exists`]).
    pub key: String,
    /// Comparison of values.
    pub operator: TolerationOperator,
    /// Value compared with [`TolerationOperator::Equal`].
    pub value: String,
    /// Effect to match; `None` matches every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Tolerates taints `key=value` with the given effect (or every effect if `None`).
    pub fn equal(
        key: impl Into<String>,
        value: impl Into<String>,
        effect: Option<TaintEffect>,
    ) -> Self {
        Self {
            key: key.into(),
            operator: TolerationOperator::Equal,
            value: value.into(),
            effect,
        }
    }

    /// Tolerates taints with this key (every key if empty), any value.
    pub fn exists(key: impl Into<String>, effect: Option<TaintEffect>) -> Self {
        Self {
            key: key.into(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect,
        }
    }

    /// Whether this toleration matches `taint` (Kubernetes' `ToleratesTaint`).
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => self.key.is_empty() || self.key == taint.key,
            TolerationOperator::Equal => self.key == taint.key && self.value == taint.value,
        }
    }
}

/// A pending pod to place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRequest {
    /// The pod's identity, returned in bindings (e.g. `namespace/name`).
    pub key: String,
    /// Sum of the containers' requests; every pod takes one pod slot whatever `pods` says.
    pub requests: Resources,
    /// Labels the node must carry, all of them, with these values.
    pub node_selector: BTreeMap<String, String>,
    /// Taints this pod tolerates.
    pub tolerations: Vec<Toleration>,
    /// Host ports the pod binds on its node.
    pub host_ports: Vec<(u16, Protocol)>,
    /// Owner uid (e.g. the Deployment's); pods with the same owner are spread over nodes.
    pub owner: Option<String>,
    /// The node holding the local volumes the pod mounts (its bound claims' volumes):
    /// the only node it may run on.
    pub volume_node: Option<String>,
}

impl PodRequest {
    /// A pod with the given key and cpu/memory requests, no constraints, no owner.
    pub fn new(key: impl Into<String>, cpu_millis: u64, memory_bytes: u64) -> Self {
        Self {
            key: key.into(),
            requests: Resources::pod(cpu_millis, memory_bytes),
            ..Self::default()
        }
    }
}

/// A pod already bound to a node: it uses resources and host ports there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundPod {
    /// Name of the node it is bound to (pods bound to unknown nodes are ignored).
    pub node: String,
    /// Its requests; it takes one pod slot whatever `pods` says.
    pub requests: Resources,
    /// Host ports it binds on the node.
    pub host_ports: Vec<(u16, Protocol)>,
    /// Owner uid, for spreading.
    pub owner: Option<String>,
}

impl BoundPod {
    /// A pod bound to `node` with the given cpu/memory requests, no host ports, no owner.
    pub fn new(node: impl Into<String>, cpu_millis: u64, memory_bytes: u64) -> Self {
        Self {
            node: node.into(),
            requests: Resources::pod(cpu_millis, memory_bytes),
            ..Self::default()
        }
    }
}
