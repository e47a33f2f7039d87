//! A node as the scheduler sees it.

use std::collections::{BTreeMap, BTreeSet};

use crate::Resources;

/// Transport protocol of a host port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default, as in Kubernetes).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaintEffect {
    /// New pods are not placed on the node.
    NoSchedule,
    /// The scheduler avoids the node when another one fits (lowers its score only).
    PreferNoSchedule,
    /// New pods are not placed and running ones are evicted (the latter is not the scheduler's job).
    NoExecute,
}

/// A taint on a node: `key=value:effect`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value (may be empty).
    pub value: String,
    /// Effect on pods that do not tolerate it.
    pub effect: TaintEffect,
}

impl Taint {
    /// A taint from its key, value and effect.
    pub fn new(key: impl Into<String>, value: impl Into<String>, effect: TaintEffect) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            effect,
        }
    }
}

/// A node: everything the filters and scores need, nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name; unique. Ties between equally good nodes go to the name that sorts first.
    pub name: String,
    /// Node labels, matched by pods' `nodeSelector`.
    pub labels: BTreeMap<String, String>,
    /// The node's Ready condition is true (a lost node is not Ready).
    pub ready: bool,
    /// The node is cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// The node's taints.
    pub taints: Vec<Taint>,
    /// Resources available to pods (capacity minus system reservations).
    pub allocatable: Resources,
    /// Host ports taken on the node by something other than the [`crate::BoundPod`]s passed
    /// alongside it (those are accounted for automatically).
    pub used_host_ports: BTreeSet<(u16, Protocol)>,
}

impl NodeInfo {
    /// A Ready, schedulable node without labels or taints.
    pub fn new(name: impl Into<String>, allocatable: Resources) -> Self {
        Self {
            name: name.into(),
            ready: true,
            allocatable,
            ..Self::default()
        }
    }
}
