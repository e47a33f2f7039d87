//! Shoal's resource model: Pod, Deployment, DaemonSet, StatefulSet, Service, Node, Event,
//! Namespace, Endpoints, Job, CronJob, ConfigMap, Secret, PersistentVolumeClaim,
//! PersistentVolume, NetworkPolicy;
//! multi-document YAML manifests; validation with Kubernetes' rules; label selectors;
//! quantities. Pure: no I/O, and it must never depend on another crate of ours.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod configmap;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod event;
pub mod expand;
pub mod intorstring;
pub mod job;
pub mod kind;
pub mod kubernetes;
mod locate;
pub mod manifest;
pub mod meta;
pub mod namespace;
pub mod networkpolicy;
pub mod node;
pub mod object;
pub mod persistentvolume;
pub mod persistentvolumeclaim;
pub mod pod;
pub mod podconfig;
pub mod quantity;
pub mod selector;
pub mod service;
pub mod statefulset;
pub mod validation;

pub use configmap::{ConfigMap, MAX_DATA_BYTES, Secret};
pub use cronjob::{
    ConcurrencyPolicy, CronJob, CronJobSpec, CronJobStatus, JobTemplateSpec, Schedule,
};
pub use daemonset::{
    DAEMONSET_HASH_LABEL, DaemonSet, DaemonSetSpec, DaemonSetStatus, DaemonSetUpdateStrategy,
    DaemonSetUpdateStrategyType, RollingUpdateDaemonSet,
};
pub use deployment::{
    Deployment, DeploymentRevision, DeploymentSpec, DeploymentStatus, DeploymentStrategy,
    DeploymentStrategyType, POD_TEMPLATE_HASH_LABEL, PodTemplateMeta, PodTemplateSpec,
    RollingUpdate, template_hash,
};
pub use endpoints::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
pub use event::{Event, EventSource, EventType};
pub use intorstring::IntOrString;
pub use job::{CONTROLLER_UID_LABEL, JOB_NAME_LABEL, Job, JobSpec, JobStatus};
pub use kind::{API_VERSION, Kind, UnknownKind};
pub use manifest::{Document, ManifestError, ManifestErrors, parse_documents, parse_manifests};
pub use meta::{
    Condition, ConditionStatus, ObjectMeta, ObjectReference, OwnerReference, Protocol,
    find_condition,
};
pub use namespace::{Namespace, NamespacePhase, NamespaceStatus};
pub use networkpolicy::{
    IpBlock, NAMESPACE_NAME_LABEL, NetworkPolicy, NetworkPolicyEgressRule,
    NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec, PolicyType,
    namespace_labels,
};
pub use node::{
    Node, NodeAddress, NodeAddressType, NodeSpec, NodeStatus, NodeSystemInfo, Taint, WireguardInfo,
};
pub use object::{DEFAULT_NAMESPACE, Object, Resource, key_for};
pub use persistentvolume::{
    ClaimReference, HOSTNAME_KEY, LOCAL_PATH_PROVISIONER, PROVISIONED_BY, PersistentVolume,
    PersistentVolumeSpec, PersistentVolumeStatus, ReclaimPolicy, VolumeNodeAffinity, VolumePhase,
};
pub use persistentvolumeclaim::{
    AccessMode, ClaimPhase, LOCAL_PATH_CLASS, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimStatus, STORAGE, VolumeMode, VolumeResourceRequirements,
};
pub use pod::{
    CAPABILITY_NAMES, Capabilities, Container, ContainerPort, ContainerState,
    ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    DnsPolicy, EmptyDirVolume, EnvVar, ExecAction, GrpcAction, HostPathVolume, HttpGetAction,
    HttpHeader, Lifecycle, LifecycleHandler, PersistentVolumeClaimVolumeSource, Pod, PodPhase,
    PodSecurityContext, PodSpec, PodStatus, Probe, PullPolicy, ResourceRequirements, RestartPolicy,
    SeccompProfile, SeccompProfileType, SecurityContext, SleepAction, TaintEffect, TcpSocketAction,
    Toleration, TolerationOperator, UriScheme, Volume, VolumeMount, capability_numbers,
};
pub use quantity::{Quantity, QuantityError, ResourceList, Resources};
pub use selector::{LabelSelector, LabelSelectorSpec, SelectorError};
pub use service::{Service, ServicePort, ServiceSpec, ServiceType};
pub use statefulset::{
    POD_INDEX_LABEL, POD_NAME_LABEL, PersistentVolumeClaimTemplate, PodManagementPolicy,
    StatefulSet, StatefulSetSpec, StatefulSetStatus, StatefulSetUpdateStrategy,
    StatefulSetUpdateStrategyType,
};
pub use validation::{FieldError, ValidationErrors};
