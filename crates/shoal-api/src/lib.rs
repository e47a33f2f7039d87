//! Shoal's resource model: Pod, Deployment, Service, Node, Event, Namespace, Endpoints,
//! ConfigMap, Secret;
//! multi-document YAML manifests; validation with Kubernetes' rules; label selectors;
//! quantities. Pure: no I/O, and it must never depend on another crate of ours.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod configmap;
pub mod deployment;
pub mod endpoints;
pub mod event;
pub mod expand;
pub mod intorstring;
pub mod kind;
mod locate;
pub mod manifest;
pub mod meta;
pub mod namespace;
pub mod node;
pub mod object;
pub mod pod;
pub mod podconfig;
pub mod quantity;
pub mod selector;
pub mod service;
pub mod validation;

pub use configmap::{ConfigMap, MAX_DATA_BYTES, Secret};
pub use deployment::{
    Deployment, DeploymentRevision, DeploymentSpec, DeploymentStatus, DeploymentStrategy,
    DeploymentStrategyType, POD_TEMPLATE_HASH_LABEL, PodTemplateMeta, PodTemplateSpec,
    RollingUpdate, template_hash,
};
pub use endpoints::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
pub use event::{Event, EventSource, EventType};
pub use intorstring::IntOrString;
pub use kind::{API_VERSION, Kind, UnknownKind};
pub use manifest::{ManifestError, parse_manifests};
pub use meta::{
    Condition, ConditionStatus, ObjectMeta, ObjectReference, OwnerReference, Protocol,
    find_condition,
};
pub use namespace::{Namespace, NamespacePhase, NamespaceStatus};
pub use node::{
    Node, NodeAddress, NodeAddressType, NodeSpec, NodeStatus, NodeSystemInfo, Taint, WireguardInfo,
};
pub use object::{DEFAULT_NAMESPACE, Object, Resource, key_for};
pub use pod::{
    CAPABILITY_NAMES, Capabilities, Container, ContainerPort, ContainerState,
    ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    EmptyDirVolume, EnvVar, ExecAction, HostPathVolume, HttpGetAction, Pod, PodPhase, PodSpec,
    PodStatus, Probe, PullPolicy, ResourceRequirements, RestartPolicy, SeccompProfile,
    SeccompProfileType, SecurityContext, TaintEffect, TcpSocketAction, Toleration,
    TolerationOperator, Volume, VolumeMount, capability_numbers,
};
pub use quantity::{Quantity, QuantityError, ResourceList, Resources};
pub use selector::{LabelSelector, LabelSelectorSpec, SelectorError};
pub use service::{Service, ServicePort, ServiceSpec, ServiceType};
pub use validation::{FieldError, ValidationErrors};
