//! The agent's Node object: registration (labels, capacity, addresses,
//! endpoint) and status syncs, which replace only `status` — read, modify,
//! write with the resourceVersion as precondition — so that `spec`
//! (cordon, taints, pod CIDR) set by others is never clobbered. Heartbeats
//! themselves are not writes: the agent sends the `Heartbeat` RPC (kept in the
//! controllers' memory) and syncs the status only when the Node changed under
//! it or its facts differ from the stored status ([`sync_status`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shoal_api::{
    Condition, ConditionStatus, Node, NodeAddress, NodeAddressType, NodeStatus, NodeSystemInfo,
    ObjectMeta, Quantity, WireguardInfo,
};
use tonic::Code;

use crate::sysinfo::SysInfo;
use shoal_client::{Client, ClientError};

/// Label every node carries with its name.
pub const HOSTNAME_LABEL: &str = "shoal.io/hostname";

/// Pods a node accepts.
pub const MAX_PODS: i64 = 110;

/// What the agent reports about its machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// Node name.
    pub name: String,
    /// Labels to set.
    pub labels: Vec<(String, String)>,
    /// CPUs in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Advertised address of the agent (`HOST:PORT`).
    pub endpoint: String,
    /// Host part of `endpoint`.
    pub host_ip: String,
    /// OS facts.
    pub info: NodeSystemInfo,
    /// WireGuard public key and endpoint (None without a pod network).
    pub wireguard: Option<WireguardInfo>,
}

impl NodeFacts {
    /// Reads the machine's facts.
    pub fn gather(
        name: &str,
        labels: Vec<(String, String)>,
        endpoint: &str,
        sys: &SysInfo,
    ) -> NodeFacts {
        NodeFacts {
            name: name.to_string(),
            labels,
            cpu_millis: sys.cpu_millis(),
            memory_bytes: sys.memory().0,
            endpoint: endpoint.to_string(),
            host_ip: crate::args::host_of(endpoint),
            info: NodeSystemInfo {
                kernel_version: sys.kernel(),
                os_image: sys.os_image(),
                operating_system: "linux".into(),
                architecture: std::env::consts::ARCH.into(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                container_runtime_version: format!("shoal-runtime/{}", env!("CARGO_PKG_VERSION")),
            },
            wireguard: None,
        }
    }
}

/// The node's status at `now`, keeping the Ready condition's transition time while it stays True.
pub fn node_status(old: Option<&NodeStatus>, f: &NodeFacts, now: DateTime<Utc>) -> NodeStatus {
    let mut res = BTreeMap::new();
    res.insert(
        "cpu".to_string(),
        Quantity::from_millis(f.cpu_millis as i64),
    );
    res.insert(
        "memory".to_string(),
        Quantity::from_bytes(f.memory_bytes as i64),
    );
    res.insert("pods".to_string(), Quantity::from_i64(MAX_PODS));
    let since = old
        .and_then(|s| shoal_api::find_condition(&s.conditions, "Ready"))
        .filter(|c| c.status == ConditionStatus::True)
        .and_then(|c| c.last_transition_time)
        .unwrap_or(now);
    let mut ready = Condition::new("Ready", ConditionStatus::True);
    ready.reason = "AgentReady".into();
    ready.message = "shoal-agent is posting ready status".into();
    ready.last_transition_time = Some(since);
    ready.last_heartbeat_time = Some(now);
    NodeStatus {
        capacity: res.clone(),
        allocatable: res,
        conditions: vec![ready],
        addresses: vec![
            NodeAddress {
                type_: NodeAddressType::InternalIP,
                address: f.host_ip.clone(),
            },
            NodeAddress {
                type_: NodeAddressType::Hostname,
                address: f.name.clone(),
            },
        ],
        node_info: Some(f.info.clone()),
        wireguard: f.wireguard.clone(),
        heartbeat_time: Some(now),
        agent_endpoint: Some(f.endpoint.clone()),
    }
}

/// The Node to write at registration: the existing one (spec kept) with our
/// labels merged in and a fresh status, or a new one.
pub fn registration(existing: Option<Node>, f: &NodeFacts, now: DateTime<Utc>) -> Node {
    let mut n = existing.unwrap_or_else(|| Node {
        metadata: ObjectMeta::named("", &f.name),
        ..Node::default()
    });
    n.metadata
        .labels
        .insert(HOSTNAME_LABEL.into(), f.name.clone());
    for (k, v) in &f.labels {
        n.metadata.labels.insert(k.clone(), v.clone());
    }
    n.status = Some(node_status(n.status.as_ref(), f, now));
    n
}

/// Creates or updates the Node (labels and status), retrying on conflicts.
pub async fn register(ctl: &Client, f: &NodeFacts) -> Result<Node, ClientError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let existing = ctl.get::<Node>("", &f.name).await?;
        let is_new = existing.is_none();
        let n = registration(existing, f, Utc::now());
        let r = if is_new {
            ctl.create(&n).await
        } else {
            ctl.update(&n).await
        };
        match r {
            Err(e)
                if attempt < 10
                    && matches!(
                        e.code(),
                        Some(
                            Code::FailedPrecondition
                                | Code::Aborted
                                | Code::AlreadyExists
                                | Code::NotFound
                        )
                    ) => {}
            other => return other,
        }
    }
}

/// `status` without the times every heartbeat would change.
fn without_heartbeat_times(s: &NodeStatus) -> NodeStatus {
    let mut s = s.clone();
    s.heartbeat_time = None;
    for c in &mut s.conditions {
        c.last_heartbeat_time = None;
    }
    s
}

/// Whether writing `new` over `old` changes more than the heartbeat times.
pub fn status_changed(old: Option<&NodeStatus>, new: &NodeStatus) -> bool {
    old.is_none_or(|o| without_heartbeat_times(o) != without_heartbeat_times(new))
}

/// The Node's resourceVersion (0 when unset).
pub fn revision(n: &Node) -> u64 {
    n.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Makes the Node's status what this agent reports: writes it (re-read on conflict)
/// only when it differs beyond the heartbeat times — after someone else changed the
/// Node (the node controller marked it NotReady after a silence, say) or when the
/// facts changed; re-registers if the Node was deleted. Returns the Node as stored.
pub async fn sync_status(ctl: &Client, f: &NodeFacts) -> Result<Node, ClientError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(mut n) = ctl.get::<Node>("", &f.name).await? else {
            return register(ctl, f).await;
        };
        let status = node_status(n.status.as_ref(), f, Utc::now());
        if !status_changed(n.status.as_ref(), &status) {
            return Ok(n);
        }
        n.status = Some(status);
        match ctl.update(&n).await {
            Err(e)
                if attempt < 5
                    && matches!(e.code(), Some(Code::FailedPrecondition | Code::Aborted)) => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "n1".into(),
            labels: vec![("zone".into(), "a".into())],
            cpu_millis: 2000,
            memory_bytes: 4 << 30,
            endpoint: "10.0.0.5:7100".into(),
            host_ip: "10.0.0.5".into(),
            info: NodeSystemInfo::default(),
            wireguard: None,
        }
    }

    #[test]
    fn only_a_change_beyond_the_heartbeat_times_is_written() {
        let t = Utc.timestamp_opt(1_000_000, 0).unwrap();
        let n = registration(None, &facts(), t);
        let old = n.status.as_ref().unwrap();
        let later = node_status(Some(old), &facts(), t + chrono::TimeDelta::seconds(30));
        assert!(!status_changed(Some(old), &later));
        let mut moved = facts();
        moved.endpoint = "10.0.0.6:7100".into();
        assert!(status_changed(
            Some(old),
            &node_status(Some(old), &moved, t)
        ));
        // Marked NotReady by the node controller: the agent's Ready status is a change.
        let mut marked = old.clone();
        marked.conditions[0].status = ConditionStatus::Unknown;
        assert!(status_changed(Some(&marked), &later));
        assert!(status_changed(None, &later));
    }

    #[test]
    fn registration_merges_labels_and_keeps_spec() {
        let t = Utc.timestamp_opt(1_000_000, 0).unwrap();
        let n = registration(None, &facts(), t);
        n.validate().unwrap();
        assert_eq!(n.metadata.labels["shoal.io/hostname"], "n1");
        assert_eq!(n.metadata.labels["zone"], "a");
        let s = n.status.as_ref().unwrap();
        assert_eq!(s.capacity["cpu"].as_millis(), 2000);
        assert_eq!(s.allocatable["memory"].as_bytes(), 4 << 30);
        assert_eq!(s.capacity["pods"].as_i64(), 110);
        assert_eq!(s.agent_endpoint.as_deref(), Some("10.0.0.5:7100"));
        assert_eq!(n.internal_ip(), Some("10.0.0.5"));
        assert!(n.is_ready());
        assert_eq!(s.heartbeat_time, Some(t));

        let mut old = n.clone();
        old.spec.unschedulable = true;
        old.metadata.labels.insert("other".into(), "x".into());
        let t2 = t + chrono::TimeDelta::seconds(2);
        let n2 = registration(Some(old), &facts(), t2);
        assert!(n2.spec.unschedulable);
        assert_eq!(n2.metadata.labels["other"], "x");
        let ready =
            shoal_api::find_condition(&n2.status.as_ref().unwrap().conditions, "Ready").unwrap();
        assert_eq!(
            ready.last_transition_time,
            Some(t),
            "transition time kept while Ready"
        );
        assert_eq!(ready.last_heartbeat_time, Some(t2));
    }
}
