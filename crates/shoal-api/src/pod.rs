//! Pod: containers sharing a network namespace and volumes, bound to one node.

use crate::meta::{Condition, ObjectMeta, Protocol, is_default};
use crate::quantity::{self, ResourceList, Resources};
use crate::validation::{self as v, ValidationErrors, index, join};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A pod: `metadata`, desired `spec` and observed `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pod {
    /// Name, namespace, labels, server-set fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What should run.
    pub spec: PodSpec,
    /// What runs (written by the scheduler and the agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

fn default_grace() -> i64 {
    30
}

/// When the agent restarts a pod's exited containers.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum RestartPolicy {
    /// Always restart (the default).
    #[default]
    Always,
    /// Restart only after a non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

/// How a pod's `/etc/resolv.conf` is made (`spec.dnsPolicy`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum DnsPolicy {
    /// The node's DNS server with the cluster's search domains (the default).
    #[default]
    ClusterFirst,
    /// The same as `ClusterFirst` (Shoal pods never use the host's network).
    ClusterFirstWithHostNet,
    /// Names resolve as on the node: the node's DNS server (which forwards to the node's
    /// upstream resolvers) without the cluster's search domains or `ndots`.
    Default,
}

/// What should run: the pod's containers and their environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    /// The containers (at least one), started in order.
    pub containers: Vec<Container>,
    /// Containers run one after another, each to completion, before `containers` start
    /// (no probes, no ports). They share the pod's volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    /// Volumes the containers may mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// How the pod's resolv.conf is made (default `ClusterFirst`). `None` (which needs
    /// `dnsConfig`) is not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<DnsPolicy>,
    /// Labels a node must have to run this pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// The node the pod is bound to (set by the scheduler, or by hand to skip it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// When exited containers are restarted (default `Always`).
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Seconds between SIGTERM and SIGKILL when stopping (default 30).
    #[serde(default = "default_grace")]
    pub termination_grace_period_seconds: i64,
    /// Taints of nodes this pod tolerates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Host name inside the pod (default: the pod's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// With `hostname`, the pod's DNS name is `HOSTNAME.SUBDOMAIN.NAMESPACE.svc.shoal.local`
    /// when a headless Service named `SUBDOMAIN` exists in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    /// Secrets of type `kubernetes.io/dockerconfigjson` (in the pod's namespace) whose
    /// credentials the node uses to pull this pod's images from registries, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// User, groups and seccomp profile of every container (a container's own
    /// `securityContext` wins field by field), plus `fsGroup` and `supplementalGroups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
}

/// `spec.securityContext`: defaults for every container and the pod's groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSecurityContext {
    /// Numeric user id of every container (unless the container sets its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    /// Numeric primary group id of every container (unless the container sets its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    /// Refuse to start a container whose user is root (uid 0) or cannot be proven not to
    /// be (a user name in the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// A group added to every container's supplementary groups; the pod's emptyDir
    /// volumes are owned by it and setgid, so files made in them belong to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<i64>,
    /// Groups added to every container's supplementary groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplemental_groups: Vec<i64>,
    /// The seccomp filter of every container (unless the container sets its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
}

/// A reference to an object of the same namespace, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    /// The object's name.
    pub name: String,
}

/// When the agent fetches a container's image (docs/images.md). Unset, it is `Always`
/// for an image without a tag or with `:latest`, `IfNotPresent` otherwise, as in
/// Kubernetes ([`Container::pull_policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum PullPolicy {
    /// Ask for the image's current digest every time a container starts (the cluster's
    /// image store, then the registry) and fetch it if the node's copy differs.
    Always,
    /// Fetch only if the node lacks the image.
    IfNotPresent,
    /// Never fetch: the image must already be on the node (`ErrImageNeverPull`).
    Never,
}

/// The tag of an image reference (`None` without one; a digest-pinned reference has
/// `Some("")` so that it never counts as `latest`).
fn image_tag(image: &str) -> Option<&str> {
    if image.contains('@') {
        return Some("");
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map(|(_, t)| t)
}

/// One container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    /// Name, unique in the pod (DNS-1123 label).
    pub name: String,
    /// Image reference `name:tag` (or `name@sha256:...`).
    pub image: String,
    /// When to fetch the image (default: `Always` for `:latest` or no tag, otherwise
    /// `IfNotPresent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables, added to the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Every key of ConfigMaps and Secrets as variables (before `env`, which wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<crate::podconfig::EnvFromSource>,
    /// Working directory (absolute; default: the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Ports the container listens on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Requested and limited cpu, memory and pids.
    #[serde(default, skip_serializing_if = "is_default")]
    pub resources: ResourceRequirements,
    /// Volumes mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Restarts the container when it fails. (This and the other rarely set parts below
    /// are boxed: inline they made every typed container 1.3 KB, most of the reconcilers'
    /// cache of pods.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Box<Probe>>,
    /// Marks the container ready (and the pod an endpoint) when it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Box<Probe>>,
    /// Runs first, until it succeeds once: liveness and readiness probes wait for it;
    /// failing `failureThreshold` times restarts the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Box<Probe>>,
    /// User, groups, capabilities, seccomp, read-only root (over the pod's
    /// `securityContext`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Box<SecurityContext>>,
    /// Hooks run after the container starts and before it stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Box<Lifecycle>>,
    /// Give the main process a stdin that `attach` can write to (as Kubernetes'
    /// `stdin`; without it stdin is `/dev/null`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// Close the main process' stdin when the first attached client ends its input
    /// (Kubernetes' `stdinOnce`; Shoal always does this, the field is accepted for
    /// compatibility).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_once: bool,
    /// Run the main process on a terminal (stdin, stdout and stderr on one pty; as
    /// Kubernetes' `tty`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
}

/// An environment variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Value (default empty); `$(VAR)` refers to earlier variables.
    #[serde(default)]
    pub value: String,
    /// Where the value comes from instead (ConfigMap, Secret, pod field, resource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<crate::podconfig::EnvVarSource>,
}

/// A port a container listens on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    /// Name, referable from a Service's `targetPort` (IANA service name, at most 15 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number in the pod's network namespace.
    pub container_port: i32,
    /// Port on the node forwarded to it (unset: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i32>,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Requested (for scheduling) and limited (enforced) resources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirements {
    /// Amounts reserved on the node; default to the limits when only limits are given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: ResourceList,
    /// Amounts enforced with cgroups.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: ResourceList,
}

/// A volume mounted into a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    /// Name of a volume of the pod.
    pub name: String,
    /// Absolute path in the container.
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only: bool,
}

/// A volume of the pod; exactly one source must be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    /// Name (DNS-1123 label), unique in the pod.
    pub name: String,
    /// A directory that starts empty and lives as long as the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolume>,
    /// A directory of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolume>,
    /// The keys of a ConfigMap as files (read-only, updated while the pod runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<crate::podconfig::ConfigMapVolume>,
    /// The keys of a Secret as files (read-only, updated while the pod runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<crate::podconfig::SecretVolume>,
    /// Pod fields as files.
    #[serde(
        default,
        rename = "downwardAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub downward_api: Option<crate::podconfig::DownwardApiVolume>,
    /// ConfigMaps, Secrets and pod fields in one directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected: Option<crate::podconfig::ProjectedVolume>,
    /// A PersistentVolumeClaim of the pod's namespace: its volume's directory on the
    /// claim's node (the pod runs only there once the claim is bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
}

/// `persistentVolumeClaim: {claimName: data}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolumeClaimVolumeSource {
    /// The claim's name (same namespace as the pod).
    pub claim_name: String,
    /// Mount read-only in every container.
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only: bool,
}

/// `emptyDir: {}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptyDirVolume {}

/// `hostPath: {path: /data}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPathVolume {
    /// Absolute path on the node.
    pub path: String,
    /// Mount read-only in every container.
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only: bool,
}

fn default_period() -> i32 {
    10
}
fn default_timeout() -> i32 {
    1
}
fn default_failure() -> i32 {
    3
}
fn default_success() -> i32 {
    1
}

/// A health check; exactly one of `exec`, `tcpSocket`, `httpGet`, `grpc` must be set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// Run a command in the container; exit status 0 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// Open a TCP connection to the pod's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    /// HTTP GET; a status in 200..400 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// `grpc.health.v1.Health/Check`; `SERVING` is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcAction>,
    /// Seconds after the container starts before the first check (default 0).
    #[serde(default)]
    pub initial_delay_seconds: i32,
    /// Seconds between checks (default 10).
    #[serde(default = "default_period")]
    pub period_seconds: i32,
    /// Seconds before a check times out (default 1).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: i32,
    /// Consecutive failures that count as failed (default 3).
    #[serde(default = "default_failure")]
    pub failure_threshold: i32,
    /// Consecutive successes that count as succeeded (default 1; must be 1 for liveness).
    #[serde(default = "default_success")]
    pub success_threshold: i32,
}

impl Probe {
    /// A probe with the given action fields unset and default timings.
    pub fn with_defaults() -> Probe {
        Probe {
            exec: None,
            tcp_socket: None,
            http_get: None,
            grpc: None,
            initial_delay_seconds: 0,
            period_seconds: default_period(),
            timeout_seconds: default_timeout(),
            failure_threshold: default_failure(),
            success_threshold: default_success(),
        }
    }
}

/// `grpc: {port: 9090, service: ""}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcAction {
    /// Port number (1-65535; names are not accepted, as in Kubernetes).
    pub port: i32,
    /// The service name asked about (default empty: the server as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// `exec: {command: [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecAction {
    /// Command and arguments (not run through a shell).
    pub command: Vec<String>,
}

/// `tcpSocket: {port: 8080}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocketAction {
    /// Port number or name of a container port.
    pub port: crate::IntOrString,
}

fn default_http_path() -> String {
    "/".to_string()
}

/// `httpGet: {path: /healthz, port: 8080}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    /// Request path (default `/`).
    #[serde(default = "default_http_path")]
    pub path: String,
    /// Port number or name of a container port.
    pub port: crate::IntOrString,
    /// Address to connect to (an IPv4 address; default: the pod's own, as loopback in
    /// its network namespace). Also the `Host` header unless `httpHeaders` sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `HTTP` (default) or `HTTPS` (the certificate is not verified, as the kubelet does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<UriScheme>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// `httpGet.scheme`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum UriScheme {
    /// Plain HTTP (the default).
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    /// TLS, without verifying the server's certificate.
    #[serde(rename = "HTTPS")]
    Https,
}

/// One `httpGet.httpHeaders` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// `lifecycle`: hooks run right after the container starts and before it is stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lifecycle {
    /// Runs right after each start of the container; if it fails, the container is
    /// killed (and restarted by the pod's restart policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<LifecycleHandler>,
    /// Runs before the container is sent SIGTERM, within the pod's
    /// `terminationGracePeriodSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<LifecycleHandler>,
}

/// A lifecycle hook: exactly one of `exec`, `httpGet`, `sleep`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecycleHandler {
    /// Run a command in the container; exit status 0 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// HTTP GET; a status in 200..400 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// Wait this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<SleepAction>,
}

/// `sleep: {seconds: 5}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SleepAction {
    /// Seconds to wait (0 or more).
    pub seconds: i64,
}

/// User, group, seccomp profile and capabilities of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityContext {
    /// Numeric user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    /// Numeric group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    /// The seccomp filter (default: `RuntimeDefault`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
    /// Capabilities added to or dropped from the default set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Refuse to start the container if its user is root (overrides the pod's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// Mount the container's root file system read-only (volumes stay writable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    /// `false` (or unset) for an ordinary container: Shoal always sets `no_new_privs`, so
    /// setuid binaries and file capabilities never raise its privileges. `true` only with
    /// `privileged: true` (which implies it), as in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    /// Run with every capability, no seccomp filter, no `no_new_privs`, every host device,
    /// `/sys` writable and nothing in `/proc` masked (Docker's `--privileged`). Needs an
    /// administrator (see [`PodSpec::privileged_settings`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
}

impl SecurityContext {
    /// Whether the seccomp filter is off (`seccompProfile.type: Unconfined`).
    pub fn seccomp_unconfined(&self) -> bool {
        seccomp_unconfined(self.seccomp_profile.as_ref())
    }

    /// Whether the container is privileged (`privileged: true`).
    pub fn is_privileged(&self) -> bool {
        self.privileged == Some(true)
    }
}

fn seccomp_unconfined(p: Option<&SeccompProfile>) -> bool {
    p.is_some_and(|p| p.kind == SeccompProfileType::Unconfined)
}

impl Container {
    /// The security settings in force for this container of a pod whose
    /// `spec.securityContext` is `pod`: the container's own fields, and the pod's where the
    /// container leaves them unset (as in Kubernetes). `fsGroup` and
    /// `supplementalGroups` are pod-only; see [`PodSecurityContext`].
    pub fn effective_security(&self, pod: Option<&PodSecurityContext>) -> SecurityContext {
        let mut sc = self
            .security_context
            .as_deref()
            .cloned()
            .unwrap_or_default();
        if let Some(p) = pod {
            sc.run_as_user = sc.run_as_user.or(p.run_as_user);
            sc.run_as_group = sc.run_as_group.or(p.run_as_group);
            sc.run_as_non_root = sc.run_as_non_root.or(p.run_as_non_root);
            if sc.seccomp_profile.is_none() {
                sc.seccomp_profile = p.seccomp_profile.clone();
            }
        }
        sc
    }
}

/// `securityContext.seccompProfile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeccompProfile {
    /// Which filter.
    #[serde(rename = "type")]
    pub kind: SeccompProfileType,
    /// Only for `Localhost` (accepted by the schema, refused by validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

/// `securityContext.seccompProfile.type`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum SeccompProfileType {
    /// Shoal's default filter (Docker's profile as the reference).
    #[default]
    RuntimeDefault,
    /// No filter (needs an administrator: see [`PodSpec::privileged_settings`]).
    Unconfined,
    /// A profile file on the node: not supported (a clear error).
    Localhost,
}

/// `securityContext.capabilities`: names such as `NET_ADMIN` or
/// `CAP_NET_ADMIN` (any case), or `ALL`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capabilities {
    /// Added to the default set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Removed from the default set (after `add`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// Linux capability names by number (`CAP_CHOWN` is 0, `CAP_CHECKPOINT_RESTORE` 40).
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capability numbers a name stands for: one for `NET_ADMIN`,
/// `CAP_NET_ADMIN` or `net_admin`; all of them for `ALL`; `None` for an
/// unknown name.
pub fn capability_numbers(name: &str) -> Option<Vec<u32>> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Some((0..CAPABILITY_NAMES.len() as u32).collect());
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITY_NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| vec![i as u32])
}

/// How a toleration matches a taint.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum TolerationOperator {
    /// Key and value must match (the default).
    #[default]
    Equal,
    /// Key must match, any value (an empty key tolerates every taint).
    Exists,
}

/// Effect of a node taint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum TaintEffect {
    /// Pods that do not tolerate it are not scheduled on the node.
    NoSchedule,
    /// The scheduler avoids the node for pods that do not tolerate it.
    PreferNoSchedule,
    /// Pods that do not tolerate it are not scheduled and are evicted.
    NoExecute,
}

/// A taint the pod tolerates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// Taint key (empty with `Exists`: every key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// `Equal` (default) or `Exists`.
    #[serde(default)]
    pub operator: TolerationOperator,
    /// Taint value for `Equal`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Effect to tolerate (unset: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// True when this toleration covers `taint`.
    pub fn tolerates(&self, taint: &crate::node::Taint) -> bool {
        if let Some(e) = self.effect
            && e != taint.effect
        {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => self.key.is_empty() || self.key == taint.key,
            TolerationOperator::Equal => self.key == taint.key && self.value == taint.value,
        }
    }
}

/// Lifecycle phase of a pod.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum PodPhase {
    /// Accepted, not yet running (unscheduled, or image/sandbox being prepared).
    #[default]
    Pending,
    /// Bound to a node, at least one container running or restarting.
    Running,
    /// All containers exited 0 and will not restart.
    Succeeded,
    /// All containers stopped, at least one failed, none will restart.
    Failed,
    /// The node stopped reporting.
    Unknown,
}

impl PodPhase {
    /// `Running` etc.
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
            PodPhase::Unknown => "Unknown",
        }
    }
}

/// Observed state of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodStatus {
    /// Lifecycle phase.
    #[serde(default)]
    pub phase: PodPhase,
    /// Node running the pod (as reported by its agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The pod's IP address.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// The node's IP address.
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// `PodScheduled`, `Initialized`, `ContainersReady`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One entry per container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    /// One entry per init container, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_container_statuses: Vec<ContainerStatus>,
    /// Human-readable details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// CamelCase reason (e.g. `Evicted`, `NodeLost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the agent accepted the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
}

/// Observed state of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStatus {
    /// Container name.
    pub name: String,
    /// Passed its readiness probe (or running, without one).
    #[serde(default)]
    pub ready: bool,
    /// Number of restarts.
    #[serde(default)]
    pub restart_count: i32,
    /// Image reference it runs.
    #[serde(default)]
    pub image: String,
    /// Runtime id of the container.
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    /// Current state.
    #[serde(default)]
    pub state: ContainerState,
    /// State before the last restart.
    #[serde(default, skip_serializing_if = "is_default")]
    pub last_state: ContainerState,
}

/// State of a container: at most one of the fields is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerState {
    /// Not running yet (e.g. `ContainerCreating`, `CrashLoopBackOff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<ContainerStateWaiting>,
    /// Running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<ContainerStateRunning>,
    /// Exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<ContainerStateTerminated>,
}

/// A container that is not running yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStateWaiting {
    /// Why (`ContainerCreating`, `ImagePullBackOff`, `CrashLoopBackOff`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A running container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStateRunning {
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

/// An exited container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStateTerminated {
    /// Exit status (128 + signal number when killed by a signal).
    pub exit_code: i32,
    /// Signal that killed it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// Resource names a container may request or limit.
pub const CONTAINER_RESOURCES: [&str; 3] = [quantity::CPU, quantity::MEMORY, quantity::PIDS];

impl Container {
    /// The pull policy in force: the one set, else `Always` for an image without a tag
    /// or with `:latest` and `IfNotPresent` for any other tag or a digest (Kubernetes'
    /// defaults).
    pub fn pull_policy(&self) -> PullPolicy {
        self.image_pull_policy
            .unwrap_or(match image_tag(&self.image) {
                None | Some("latest") => PullPolicy::Always,
                Some(_) => PullPolicy::IfNotPresent,
            })
    }

    /// Effective cpu and memory requests: the request, or the limit when only a limit
    /// is given. `pids` is only enforced as a limit, never scheduled on, so it is 0 here.
    pub fn effective_requests(&self) -> Resources {
        let mut list = self.resources.limits.clone();
        list.extend(self.resources.requests.clone());
        list.remove(quantity::PODS);
        list.remove(quantity::PIDS);
        Resources::from_list(&list)
    }
}

impl PodSpec {
    /// Sum of the containers' effective cpu and memory requests, each raised to the
    /// largest init container's (init containers run alone, before the others, as in
    /// Kubernetes), plus one pod: what the scheduler reserves on a node.
    pub fn resource_requests(&self) -> Resources {
        let mut r: Resources = self
            .containers
            .iter()
            .map(Container::effective_requests)
            .sum();
        for i in self
            .init_containers
            .iter()
            .map(Container::effective_requests)
        {
            r.cpu_millis = r.cpu_millis.max(i.cpu_millis);
            r.memory_bytes = r.memory_bytes.max(i.memory_bytes);
        }
        r.pods = 1;
        r
    }

    /// Host ports used, as (port, protocol).
    pub fn host_ports(&self) -> Vec<(i32, Protocol)> {
        self.containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .filter_map(|p| p.host_port.filter(|h| *h > 0).map(|h| (h, p.protocol)))
            .collect()
    }

    /// The field paths (under `path`, e.g. `spec` or `spec.template.spec`)
    /// of settings that weaken the host's protection and so need an
    /// administrator: `privileged: true`, `seccompProfile.type: Unconfined`, a non-empty
    /// `capabilities.add`, and `hostPath` volumes. Empty for an ordinary pod.
    /// Admission (who may set them) is the caller's; this only lists them.
    pub fn privileged_settings(&self, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        let (cpath, ipath) = (join(path, "containers"), join(path, "initContainers"));
        let all = (self
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| (index(&cpath, i), c)))
        .chain(
            self.init_containers
                .iter()
                .enumerate()
                .map(|(i, c)| (index(&ipath, i), c)),
        );
        for (cp, c) in all {
            let Some(sc) = &c.security_context else {
                continue;
            };
            let scp = join(&cp, "securityContext");
            if sc.is_privileged() {
                out.push(join(&scp, "privileged"));
            }
            if sc.seccomp_unconfined() {
                out.push(join(&join(&scp, "seccompProfile"), "type"));
            }
            if sc.capabilities.as_ref().is_some_and(|c| !c.add.is_empty()) {
                out.push(join(&join(&scp, "capabilities"), "add"));
            }
        }
        if let Some(sc) = &self.security_context
            && seccomp_unconfined(sc.seccomp_profile.as_ref())
        {
            out.push(join(&join(path, "securityContext.seccompProfile"), "type"));
        }
        for (j, vol) in self.volumes.iter().enumerate() {
            if vol.host_path.is_some() {
                out.push(join(&index(&join(path, "volumes"), j), "hostPath"));
            }
        }
        out
    }

    /// Checks the spec; field paths start with `path` (`spec` or `spec.template.spec`).
    pub fn validate(&self, path: &str, errs: &mut ValidationErrors) {
        let cpath = join(path, "containers");
        if self.containers.is_empty() {
            errs.push(&cpath, "at least one container is required");
        }
        let mut volume_names = BTreeSet::new();
        for (i, vol) in self.volumes.iter().enumerate() {
            let p = index(&join(path, "volumes"), i);
            errs.check(join(&p, "name"), v::check_dns1123_label(&vol.name));
            if !volume_names.insert(vol.name.as_str()) {
                errs.push(
                    join(&p, "name"),
                    format!("duplicate volume name {:?}", vol.name),
                );
            }
            let sources = [
                vol.empty_dir.is_some(),
                vol.host_path.is_some(),
                vol.config_map.is_some(),
                vol.secret.is_some(),
                vol.downward_api.is_some(),
                vol.projected.is_some(),
                vol.persistent_volume_claim.is_some(),
            ];
            if sources.iter().filter(|b| **b).count() != 1 {
                errs.push(
                    &p,
                    "exactly one of emptyDir, hostPath, configMap, secret, downwardAPI, projected or persistentVolumeClaim must be set",
                );
            }
            if let Some(c) = &vol.persistent_volume_claim {
                errs.check(
                    join(&p, "persistentVolumeClaim.claimName"),
                    v::check_dns1123_subdomain(&c.claim_name),
                );
            }
            if let Some(hp) = &vol.host_path
                && !hp.path.starts_with('/')
            {
                errs.push(
                    join(&p, "hostPath.path"),
                    format!("must be an absolute path, got {:?}", hp.path),
                );
            }
            crate::podconfig::validate_config_volumes(
                vol.config_map.as_ref(),
                vol.secret.as_ref(),
                vol.downward_api.as_ref(),
                vol.projected.as_ref(),
                &p,
                errs,
            );
        }
        let mut names = BTreeSet::new();
        let mut host_ports = BTreeSet::new();
        let mut port_names = BTreeSet::new();
        let ipath = join(path, "initContainers");
        for (i, c) in self.init_containers.iter().enumerate() {
            let p = index(&ipath, i);
            for (set, field) in [
                (c.liveness_probe.is_some(), "livenessProbe"),
                (c.readiness_probe.is_some(), "readinessProbe"),
                (c.startup_probe.is_some(), "startupProbe"),
                (c.lifecycle.is_some(), "lifecycle"),
                (!c.ports.is_empty(), "ports"),
            ] {
                if set {
                    errs.push(
                        join(&p, field),
                        "must not be set on an init container (it runs to completion)",
                    );
                }
            }
        }
        let all = (self
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| (index(&cpath, i), c)))
        .chain(
            self.init_containers
                .iter()
                .enumerate()
                .map(|(i, c)| (index(&ipath, i), c)),
        );
        for (p, c) in all {
            errs.check(join(&p, "name"), v::check_dns1123_label(&c.name));
            if !names.insert(c.name.as_str()) {
                errs.push(
                    join(&p, "name"),
                    format!("duplicate container name {:?}", c.name),
                );
            }
            if c.image.trim().is_empty() {
                errs.push(join(&p, "image"), "required field is missing");
            } else if c.image.chars().any(char::is_whitespace) {
                errs.push(
                    join(&p, "image"),
                    format!("must not contain whitespace, got {:?}", c.image),
                );
            }
            for (j, e) in c.env.iter().enumerate() {
                let ep = index(&join(&p, "env"), j);
                errs.check(join(&ep, "name"), v::check_env_name(&e.name));
                if let Some(src) = &e.value_from {
                    if !e.value.is_empty() {
                        errs.push(join(&ep, "valueFrom"), "may not be set together with value");
                    }
                    crate::podconfig::validate_env_source(src, &join(&ep, "valueFrom"), errs);
                }
            }
            for (j, e) in c.env_from.iter().enumerate() {
                crate::podconfig::validate_env_from(e, &index(&join(&p, "envFrom"), j), errs);
            }
            if let Some(wd) = &c.working_dir
                && !wd.starts_with('/')
            {
                errs.push(
                    join(&p, "workingDir"),
                    format!("must be an absolute path, got {wd:?}"),
                );
            }
            for (j, port) in c.ports.iter().enumerate() {
                let pp = index(&join(&p, "ports"), j);
                if let Some(n) = &port.name {
                    errs.check(join(&pp, "name"), v::check_port_name(n));
                    if !port_names.insert(n.clone()) {
                        errs.push(
                            join(&pp, "name"),
                            format!("duplicate port name {n:?} in the pod"),
                        );
                    }
                }
                errs.check(
                    join(&pp, "containerPort"),
                    v::check_port(port.container_port),
                );
                if let Some(h) = port.host_port
                    && h != 0
                {
                    errs.check(join(&pp, "hostPort"), v::check_port(h));
                    if !host_ports.insert((h, port.protocol)) {
                        errs.push(
                            join(&pp, "hostPort"),
                            format!("host port {h}/{} is used twice in the pod", port.protocol),
                        );
                    }
                }
            }
            validate_resources(&c.resources, &join(&p, "resources"), errs);
            for (j, m) in c.volume_mounts.iter().enumerate() {
                let mp = index(&join(&p, "volumeMounts"), j);
                if !volume_names.contains(m.name.as_str()) {
                    errs.push(
                        join(&mp, "name"),
                        format!("no volume named {:?} in spec.volumes", m.name),
                    );
                }
                if !m.mount_path.starts_with('/') {
                    errs.push(
                        join(&mp, "mountPath"),
                        format!("must be an absolute path, got {:?}", m.mount_path),
                    );
                }
            }
            let mut mount_paths = BTreeSet::new();
            for (j, m) in c.volume_mounts.iter().enumerate() {
                if !mount_paths.insert(m.mount_path.as_str()) {
                    errs.push(
                        join(&index(&join(&p, "volumeMounts"), j), "mountPath"),
                        format!("{:?} is mounted twice", m.mount_path),
                    );
                }
            }
            if let Some(pr) = &c.liveness_probe {
                validate_probe(pr, c, &join(&p, "livenessProbe"), true, errs);
            }
            if let Some(pr) = &c.readiness_probe {
                validate_probe(pr, c, &join(&p, "readinessProbe"), false, errs);
            }
            if let Some(pr) = &c.startup_probe {
                validate_probe(pr, c, &join(&p, "startupProbe"), true, errs);
            }
            if let Some(sc) = &c.security_context {
                validate_container_security(sc, &join(&p, "securityContext"), errs);
            }
            if let Some(l) = &c.lifecycle {
                let lp = join(&p, "lifecycle");
                for (f, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
                    if let Some(h) = h {
                        validate_handler(h, c, &join(&lp, f), errs);
                    }
                }
            }
        }
        if let Some(sc) = &self.security_context {
            let scp = join(path, "securityContext");
            for (f, val) in [
                ("runAsUser", sc.run_as_user),
                ("runAsGroup", sc.run_as_group),
                ("fsGroup", sc.fs_group),
            ] {
                check_id(val, &join(&scp, f), errs);
            }
            for (i, g) in sc.supplemental_groups.iter().enumerate() {
                check_id(Some(*g), &index(&join(&scp, "supplementalGroups"), i), errs);
            }
            if let Some(prof) = &sc.seccomp_profile {
                validate_seccomp(prof, &join(&scp, "seccompProfile"), errs);
            }
        }
        v::validate_labels(&self.node_selector, &join(path, "nodeSelector"), errs);
        if let Some(n) = &self.node_name {
            errs.check(join(path, "nodeName"), v::check_dns1123_subdomain(n));
        }
        if self.termination_grace_period_seconds < 0 {
            errs.push(
                join(path, "terminationGracePeriodSeconds"),
                format!(
                    "must not be negative, got {}",
                    self.termination_grace_period_seconds
                ),
            );
        }
        for (i, t) in self.tolerations.iter().enumerate() {
            let p = index(&join(path, "tolerations"), i);
            if !t.key.is_empty() {
                errs.check(join(&p, "key"), v::check_label_key(&t.key));
            }
            match t.operator {
                TolerationOperator::Exists if !t.value.is_empty() => {
                    errs.push(join(&p, "value"), "must be empty when operator is Exists");
                }
                TolerationOperator::Equal if t.key.is_empty() => {
                    errs.push(join(&p, "key"), "required when operator is Equal");
                }
                TolerationOperator::Equal => {
                    errs.check(join(&p, "value"), v::check_label_value(&t.value));
                }
                _ => {}
            }
        }
        if let Some(h) = &self.hostname {
            errs.check(join(path, "hostname"), v::check_dns1123_label(h));
        }
        if let Some(d) = &self.subdomain {
            errs.check(join(path, "subdomain"), v::check_dns1123_label(d));
        }
        for (i, s) in self.image_pull_secrets.iter().enumerate() {
            let p = index(&join(path, "imagePullSecrets"), i);
            errs.check(join(&p, "name"), v::check_dns1123_subdomain(&s.name));
        }
    }
}

/// A user or group id: 0 to 4294967295.
fn check_id(val: Option<i64>, path: &str, errs: &mut ValidationErrors) {
    if let Some(x) = val
        && !(0..=i64::from(u32::MAX)).contains(&x)
    {
        errs.push(path, format!("must be between 0 and 4294967295, got {x}"));
    }
}

fn validate_seccomp(prof: &SeccompProfile, path: &str, errs: &mut ValidationErrors) {
    if prof.kind == SeccompProfileType::Localhost {
        errs.push(
            join(path, "type"),
            "Localhost profiles are not supported; use RuntimeDefault or Unconfined",
        );
    } else if prof.localhost_profile.is_some() {
        errs.push(
            join(path, "localhostProfile"),
            "only allowed with type Localhost (which is not supported)",
        );
    }
}

fn validate_container_security(sc: &SecurityContext, scp: &str, errs: &mut ValidationErrors) {
    for (f, val) in [
        ("runAsUser", sc.run_as_user),
        ("runAsGroup", sc.run_as_group),
    ] {
        check_id(val, &join(scp, f), errs);
    }
    if let Some(prof) = &sc.seccomp_profile {
        validate_seccomp(prof, &join(scp, "seccompProfile"), errs);
    }
    match (sc.allow_privilege_escalation, sc.is_privileged()) {
        (Some(true), false) => errs.push(
            join(scp, "allowPrivilegeEscalation"),
            "true is only supported with privileged: true; Shoal sets no_new_privs for every other container (use false or leave it unset)",
        ),
        // Kubernetes' own rule: the two contradict each other.
        (Some(false), true) => errs.push(
            join(scp, "allowPrivilegeEscalation"),
            "cannot be false when privileged is true",
        ),
        _ => {}
    }
    if let Some(caps) = &sc.capabilities {
        for (list, names) in [("add", &caps.add), ("drop", &caps.drop)] {
            for (k, n) in names.iter().enumerate() {
                if capability_numbers(n).is_none() {
                    errs.push(
                        index(&join(&join(scp, "capabilities"), list), k),
                        format!(
                            "unknown capability {n:?}; expected a Linux capability name such as NET_ADMIN or CAP_NET_ADMIN, or ALL"
                        ),
                    );
                }
            }
        }
    }
}

fn validate_resources(r: &ResourceRequirements, path: &str, errs: &mut ValidationErrors) {
    for (field, list) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (name, q) in list {
            let p = format!("{path}.{field}.{name}");
            if !CONTAINER_RESOURCES.contains(&name.as_str()) {
                errs.push(
                    &p,
                    format!("unsupported resource {name:?}: expected cpu, memory or pids"),
                );
            } else if q.is_negative() {
                errs.push(&p, format!("must not be negative, got {q}"));
            }
        }
    }
    for (name, req) in &r.requests {
        if let Some(lim) = r.limits.get(name)
            && req > lim
        {
            errs.push(
                format!("{path}.requests.{name}"),
                format!("request {req} is greater than limit {lim}"),
            );
        }
    }
}

fn validate_port_ref(
    port: &crate::IntOrString,
    c: &Container,
    path: &str,
    errs: &mut ValidationErrors,
) {
    match port {
        crate::IntOrString::Int(n) => errs.check(path, v::check_port(*n)),
        crate::IntOrString::String(name) => {
            if !c
                .ports
                .iter()
                .any(|p| p.name.as_deref() == Some(name.as_str()))
            {
                errs.push(
                    path,
                    format!("no port named {name:?} in container {:?}", c.name),
                );
            }
        }
    }
}

fn validate_exec(e: &ExecAction, path: &str, errs: &mut ValidationErrors) {
    if e.command.is_empty() {
        errs.push(join(path, "exec.command"), "must not be empty");
    }
}

fn validate_http_get(h: &HttpGetAction, c: &Container, path: &str, errs: &mut ValidationErrors) {
    validate_port_ref(&h.port, c, &join(path, "port"), errs);
    if !h.path.starts_with('/') {
        errs.push(
            join(path, "path"),
            format!("must start with '/', got {:?}", h.path),
        );
    }
    if let Some(host) = &h.host
        && host.parse::<std::net::Ipv4Addr>().is_err()
    {
        errs.push(
            join(path, "host"),
            format!("expected an IPv4 address (host names are not resolved), got {host:?}"),
        );
    }
    for (i, hd) in h.http_headers.iter().enumerate() {
        let hp = index(&join(path, "httpHeaders"), i);
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if hd.name.is_empty() || !hd.name.bytes().all(token) {
            errs.push(
                join(&hp, "name"),
                format!("{:?} is not a valid HTTP header name", hd.name),
            );
        }
        if hd.value.bytes().any(|b| b == b'\r' || b == b'\n') {
            errs.push(join(&hp, "value"), "must not contain a line break");
        }
    }
}

fn validate_handler(h: &LifecycleHandler, c: &Container, path: &str, errs: &mut ValidationErrors) {
    let n = usize::from(h.exec.is_some())
        + usize::from(h.http_get.is_some())
        + usize::from(h.sleep.is_some());
    if n != 1 {
        errs.push(path, "exactly one of exec, httpGet or sleep must be set");
    }
    if let Some(e) = &h.exec {
        validate_exec(e, path, errs);
    }
    if let Some(g) = &h.http_get {
        validate_http_get(g, c, &join(path, "httpGet"), errs);
    }
    if let Some(s) = &h.sleep
        && s.seconds < 0
    {
        errs.push(
            join(path, "sleep.seconds"),
            format!("must not be negative, got {}", s.seconds),
        );
    }
}

fn validate_probe(
    p: &Probe,
    c: &Container,
    path: &str,
    liveness: bool,
    errs: &mut ValidationErrors,
) {
    let n = usize::from(p.exec.is_some())
        + usize::from(p.tcp_socket.is_some())
        + usize::from(p.http_get.is_some())
        + usize::from(p.grpc.is_some());
    if n != 1 {
        errs.push(
            path,
            "exactly one of exec, tcpSocket, httpGet or grpc must be set",
        );
    }
    if let Some(g) = &p.grpc {
        errs.check(join(path, "grpc.port"), v::check_port(g.port));
    }
    if let Some(e) = &p.exec {
        validate_exec(e, path, errs);
    }
    if let Some(t) = &p.tcp_socket {
        validate_port_ref(&t.port, c, &join(path, "tcpSocket.port"), errs);
    }
    if let Some(h) = &p.http_get {
        validate_http_get(h, c, &join(path, "httpGet"), errs);
    }
    if p.initial_delay_seconds < 0 {
        errs.push(
            join(path, "initialDelaySeconds"),
            format!("must not be negative, got {}", p.initial_delay_seconds),
        );
    }
    for (f, val) in [
        ("periodSeconds", p.period_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("failureThreshold", p.failure_threshold),
        ("successThreshold", p.success_threshold),
    ] {
        if val < 1 {
            errs.push(join(path, f), format!("must be at least 1, got {val}"));
        }
    }
    if liveness && p.success_threshold != 1 {
        errs.push(
            join(path, "successThreshold"),
            format!(
                "must be 1 for a liveness or startup probe, got {}",
                p.success_threshold
            ),
        );
    }
}

impl Pod {
    /// Checks metadata and spec.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata
            .validate(crate::Kind::Pod, v::check_dns1123_subdomain, &mut errs);
        self.spec.validate("spec", &mut errs);
        errs.into_result()
    }

    /// The phase, `Pending` when no status was written yet.
    pub fn phase(&self) -> PodPhase {
        self.status.as_ref().map_or(PodPhase::Pending, |s| s.phase)
    }

    /// True when the `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            crate::meta::find_condition(&s.conditions, "Ready")
                .is_some_and(|c| c.status == crate::ConditionStatus::True)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Taint;

    #[test]
    fn pull_policy_defaults_like_kubernetes() {
        let c = |image: &str, p: Option<PullPolicy>| Container {
            image: image.into(),
            image_pull_policy: p,
            ..Default::default()
        };
        for (image, want) in [
            ("busybox", PullPolicy::Always),
            ("busybox:latest", PullPolicy::Always),
            ("127.0.0.1:5000/busybox", PullPolicy::Always),
            ("127.0.0.1:5000/busybox:v1", PullPolicy::IfNotPresent),
            ("nginx:1.14.2", PullPolicy::IfNotPresent),
            (
                "busybox@sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                PullPolicy::IfNotPresent,
            ),
        ] {
            assert_eq!(c(image, None).pull_policy(), want, "{image}");
        }
        assert_eq!(
            c("busybox", Some(PullPolicy::Never)).pull_policy(),
            PullPolicy::Never
        );
        let spec = pod_spec(serde_json::json!({
            "containers": [{"name": "a", "image": "x"}],
            "imagePullSecrets": [{"name": "regcred"}, {"name": "Bad_Name"}]
        }));
        assert_eq!(spec.image_pull_secrets[0].name, "regcred");
        let mut errs = ValidationErrors::new();
        spec.validate("spec", &mut errs);
        let text = format!("{errs:?}");
        assert!(text.contains("spec.imagePullSecrets[1].name"), "{text}");
        assert!(!text.contains("imagePullSecrets[0]"), "{text}");
    }

    fn pod_spec(json: serde_json::Value) -> PodSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults() {
        let s = pod_spec(serde_json::json!({"containers": [{"name": "app", "image": "busybox"}]}));
        assert_eq!(s.restart_policy, RestartPolicy::Always);
        assert_eq!(s.termination_grace_period_seconds, 30);
        let mut errs = ValidationErrors::new();
        s.validate("spec", &mut errs);
        assert!(errs.is_empty(), "{errs}");
        let p: Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": 80}})).unwrap();
        assert_eq!(
            (
                p.period_seconds,
                p.timeout_seconds,
                p.failure_threshold,
                p.success_threshold
            ),
            (10, 1, 3, 1)
        );
    }

    #[test]
    fn security_context_fields_are_checked_and_named() {
        let s = pod_spec(serde_json::json!({
            "containers": [
                {"name": "a", "image": "busybox", "securityContext": {
                    "seccompProfile": {"type": "Localhost", "localhostProfile": "x.json"},
                    "capabilities": {"add": ["NET_ADMIN", "CAP_SYS_TIME", "net_raw", "FLY"], "drop": ["CHOWN", "ALL", "cap_nope"]}}},
                {"name": "b", "image": "busybox", "securityContext": {
                    "seccompProfile": {"type": "RuntimeDefault", "localhostProfile": "x.json"}}}
            ]
        }));
        let mut errs = ValidationErrors::new();
        s.validate("spec", &mut errs);
        let text = errs.to_string();
        for want in [
            "spec.containers[0].securityContext.seccompProfile.type: Localhost profiles are not supported; use RuntimeDefault or Unconfined",
            "spec.containers[0].securityContext.capabilities.add[3]: unknown capability \"FLY\"",
            "spec.containers[0].securityContext.capabilities.drop[2]: unknown capability \"cap_nope\"",
            "spec.containers[1].securityContext.seccompProfile.localhostProfile: only allowed with type Localhost",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(errs.errors.len(), 4, "{text}");
        // An unknown type is a decoding error that names the accepted ones.
        let bad: Result<SeccompProfile, _> =
            serde_json::from_value(serde_json::json!({"type": "Off"}));
        let e = bad.expect_err("unknown type").to_string();
        assert!(
            e.contains("RuntimeDefault") && e.contains("Unconfined"),
            "{e}"
        );
    }

    #[test]
    fn pod_security_context_and_container_overrides() {
        let s = pod_spec(serde_json::json!({
            "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                "supplementalGroups": [4000], "runAsNonRoot": true},
            "containers": [
                {"name": "a", "image": "busybox"},
                {"name": "b", "image": "busybox", "securityContext": {
                    "runAsUser": 0, "runAsNonRoot": false, "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false}}
            ]
        }));
        let mut errs = ValidationErrors::new();
        s.validate("spec", &mut errs);
        assert!(errs.is_empty(), "{errs}");
        let pod = s.security_context.as_ref();
        let a = s.containers[0].effective_security(pod);
        assert_eq!(
            (a.run_as_user, a.run_as_group, a.run_as_non_root),
            (Some(1000), Some(3000), Some(true))
        );
        let b = s.containers[1].effective_security(pod);
        assert_eq!(
            (b.run_as_user, b.run_as_group, b.run_as_non_root),
            (Some(0), Some(3000), Some(false)),
            "the container's own fields win, the pod's fill the rest"
        );
        assert_eq!(b.read_only_root_filesystem, Some(true));
        assert_eq!(
            s.containers[0].effective_security(None),
            SecurityContext::default()
        );

        let bad = pod_spec(serde_json::json!({
            "securityContext": {"fsGroup": -1, "supplementalGroups": [5, 4_294_967_296_i64],
                "seccompProfile": {"type": "Localhost"}},
            "containers": [{"name": "a", "image": "busybox", "securityContext": {
                "allowPrivilegeEscalation": true}}]
        }));
        let mut errs = ValidationErrors::new();
        bad.validate("spec", &mut errs);
        let text = errs.to_string();
        for want in [
            "spec.securityContext.fsGroup: must be between 0 and 4294967295, got -1",
            "spec.securityContext.supplementalGroups[1]: must be between 0 and 4294967295",
            "spec.securityContext.seccompProfile.type: Localhost profiles are not supported",
            "spec.containers[0].securityContext.allowPrivilegeEscalation: true is only supported with privileged: true",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(errs.errors.len(), 4, "{text}");
        // Unconfined at pod level needs an administrator like at container level.
        let unconfined = pod_spec(serde_json::json!({
            "securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "a", "image": "busybox"}]
        }));
        assert_eq!(
            unconfined.privileged_settings("spec"),
            ["spec.securityContext.seccompProfile.type"]
        );
    }

    #[test]
    fn lifecycle_hooks_and_http_get_fields_are_checked() {
        let ok = pod_spec(serde_json::json!({
            "containers": [{"name": "a", "image": "busybox",
                "ports": [{"name": "web", "containerPort": 8080}],
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "echo up"]}},
                    "preStop": {"httpGet": {"path": "/quit", "port": "web", "host": "127.0.0.1",
                        "scheme": "HTTPS", "httpHeaders": [{"name": "X-Token", "value": "a b"}]}}},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080,
                    "httpHeaders": [{"name": "Custom-Header", "value": "Awesome"}]}}}]
        }));
        let mut errs = ValidationErrors::new();
        ok.validate("spec", &mut errs);
        assert!(errs.is_empty(), "{errs}");
        let bad = pod_spec(serde_json::json!({
            "containers": [{"name": "a", "image": "busybox",
                "lifecycle": {
                    "postStart": {"exec": {"command": []}, "sleep": {"seconds": 1}},
                    "preStop": {"httpGet": {"path": "quit", "port": "web", "host": "db.local",
                        "httpHeaders": [{"name": "Bad Name", "value": "x\r\ny"}]}}},
                "readinessProbe": {"httpGet": {"port": 80, "httpHeaders": [{"name": "", "value": ""}]}}}],
            "initContainers": [{"name": "i", "image": "busybox",
                "startupProbe": {"exec": {"command": ["true"]}, "successThreshold": 2},
                "lifecycle": {"preStop": {"sleep": {"seconds": -1}}}}]
        }));
        let mut errs = ValidationErrors::new();
        bad.validate("spec", &mut errs);
        let text = errs.to_string();
        for want in [
            "spec.containers[0].lifecycle.postStart: exactly one of exec, httpGet or sleep must be set",
            "spec.containers[0].lifecycle.postStart.exec.command: must not be empty",
            "spec.containers[0].lifecycle.preStop.httpGet.port: no port named \"web\"",
            "spec.containers[0].lifecycle.preStop.httpGet.path: must start with '/'",
            "spec.containers[0].lifecycle.preStop.httpGet.host: expected an IPv4 address",
            "spec.containers[0].lifecycle.preStop.httpGet.httpHeaders[0].name: \"Bad Name\" is not a valid HTTP header name",
            "spec.containers[0].lifecycle.preStop.httpGet.httpHeaders[0].value: must not contain a line break",
            "spec.containers[0].readinessProbe.httpGet.httpHeaders[0].name",
            "spec.initContainers[0].lifecycle: must not be set on an init container",
            "spec.initContainers[0].startupProbe: must not be set on an init container",
            "spec.initContainers[0].startupProbe.successThreshold: must be 1 for a liveness or startup probe, got 2",
            "spec.initContainers[0].lifecycle.preStop.sleep.seconds: must not be negative, got -1",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn capability_names_with_and_without_prefix() {
        assert_eq!(capability_numbers("NET_ADMIN"), Some(vec![12]));
        assert_eq!(capability_numbers("CAP_NET_ADMIN"), Some(vec![12]));
        assert_eq!(capability_numbers("cap_chown"), Some(vec![0]));
        assert_eq!(capability_numbers("CHECKPOINT_RESTORE"), Some(vec![40]));
        assert_eq!(capability_numbers("ALL").map(|v| v.len()), Some(41));
        assert_eq!(capability_numbers("CAP_"), None);
        assert_eq!(capability_numbers("NET_ADMINX"), None);
    }

    #[test]
    fn privileged_settings_lists_what_needs_an_admin() {
        let plain = pod_spec(serde_json::json!({
            "containers": [{"name": "a", "image": "busybox", "securityContext": {
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
                "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "e", "emptyDir": {}}]
        }));
        assert!(plain.privileged_settings("spec").is_empty());
        let risky = pod_spec(serde_json::json!({
            "containers": [
                {"name": "a", "image": "busybox"},
                {"name": "b", "image": "busybox", "securityContext": {
                    "seccompProfile": {"type": "Unconfined"},
                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["CHOWN"]}}},
                {"name": "c", "image": "busybox", "securityContext": {
                    "privileged": true, "allowPrivilegeEscalation": true}}
            ],
            "volumes": [{"name": "e", "emptyDir": {}}, {"name": "h", "hostPath": {"path": "/etc"}}]
        }));
        assert_eq!(
            risky.privileged_settings("spec.template.spec"),
            [
                "spec.template.spec.containers[1].securityContext.seccompProfile.type",
                "spec.template.spec.containers[1].securityContext.capabilities.add",
                "spec.template.spec.containers[2].securityContext.privileged",
                "spec.template.spec.volumes[1].hostPath",
            ]
        );
        let mut errs = ValidationErrors::default();
        risky.validate("spec", &mut errs);
        assert!(errs.errors.is_empty(), "{errs:?}");
        // privileged with allowPrivilegeEscalation: false contradicts itself.
        let contradiction = pod_spec(serde_json::json!({
            "containers": [{"name": "a", "image": "busybox", "securityContext": {
                "privileged": true, "allowPrivilegeEscalation": false}}]
        }));
        let mut errs = ValidationErrors::default();
        contradiction.validate("spec", &mut errs);
        assert_eq!(
            errs.to_string(),
            "spec.containers[0].securityContext.allowPrivilegeEscalation: cannot be false when privileged is true"
        );
    }

    #[test]
    fn validation_finds_each_problem() {
        let s = pod_spec(serde_json::json!({
            "containers": [
                {"name": "App", "image": "busybox",
                 "ports": [{"containerPort": 70000, "hostPort": 8080}, {"containerPort": 81, "hostPort": 8080}],
                 "resources": {"requests": {"cpu": "2", "gpu": "1"}, "limits": {"cpu": "1"}},
                 "volumeMounts": [{"name": "missing", "mountPath": "rel"}],
                 "livenessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": "http"}, "successThreshold": 2}},
                {"name": "App", "image": ""}
            ],
            "volumes": [{"name": "v"}],
            "tolerations": [{"operator": "Exists", "value": "x"}]
        }));
        let mut errs = ValidationErrors::new();
        s.validate("spec", &mut errs);
        let text = errs.to_string();
        for want in [
            "spec.containers[0].name: \"App\" is not a valid DNS-1123 label",
            "spec.containers[1].name: duplicate container name",
            "spec.containers[1].image: required field is missing",
            "spec.containers[0].ports[0].containerPort: must be between 1 and 65535, got 70000",
            "spec.containers[0].ports[1].hostPort: host port 8080/TCP is used twice",
            "spec.containers[0].resources.requests.gpu: unsupported resource \"gpu\"",
            "spec.containers[0].resources.requests.cpu: request 2 is greater than limit 1",
            "spec.containers[0].volumeMounts[0].name: no volume named \"missing\"",
            "spec.containers[0].volumeMounts[0].mountPath: must be an absolute path",
            "spec.containers[0].livenessProbe: exactly one of exec, tcpSocket, httpGet or grpc",
            "spec.containers[0].livenessProbe.tcpSocket.port: no port named \"http\"",
            "spec.containers[0].livenessProbe.successThreshold: must be 1",
            "spec.volumes[0]: exactly one of emptyDir, hostPath, configMap",
            "spec.tolerations[0].value: must be empty when operator is Exists",
        ] {
            assert!(text.contains(want), "missing {want:?} in {text}");
        }
    }

    #[test]
    fn requests_default_to_limits_and_sum() {
        let s = pod_spec(serde_json::json!({"containers": [
            {"name": "a", "image": "x", "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}}},
            {"name": "b", "image": "x", "resources": {"limits": {"cpu": "1", "memory": "1Gi", "pids": 50}, "requests": {"memory": "64Mi"}}}
        ]}));
        let r = s.resource_requests();
        assert_eq!(r.cpu_millis, 1100);
        assert_eq!(r.memory_bytes, (32 + 64) << 20);
        assert_eq!(r.pods, 1);
        assert_eq!(r.pids, 0, "pids is a limit only");
    }

    #[test]
    fn tolerations_match_taints() {
        let taint = Taint {
            key: "dedicated".into(),
            value: "db".into(),
            effect: TaintEffect::NoSchedule,
        };
        let eq = Toleration {
            key: "dedicated".into(),
            value: "db".into(),
            ..Default::default()
        };
        assert!(eq.tolerates(&taint));
        let wrong = Toleration {
            key: "dedicated".into(),
            value: "web".into(),
            ..Default::default()
        };
        assert!(!wrong.tolerates(&taint));
        let all = Toleration {
            operator: TolerationOperator::Exists,
            ..Default::default()
        };
        assert!(all.tolerates(&taint));
        let other_effect = Toleration {
            operator: TolerationOperator::Exists,
            key: "dedicated".into(),
            effect: Some(TaintEffect::NoExecute),
            ..Default::default()
        };
        assert!(!other_effect.tolerates(&taint));
    }

    #[test]
    fn init_containers_are_validated_and_raise_requests() {
        let spec = pod_spec(serde_json::json!({
            "containers": [{"name": "a", "image": "b",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
            "initContainers": [{"name": "i", "image": "b",
                "resources": {"requests": {"cpu": "500m", "memory": "16Mi"}}}]
        }));
        let r = spec.resource_requests();
        assert_eq!((r.cpu_millis, r.memory_bytes), (500, 64 << 20));
        let mut errs = ValidationErrors::new();
        spec.validate("spec", &mut errs);
        assert!(errs.is_empty(), "{errs}");
        let bad = pod_spec(serde_json::json!({
            "containers": [{"name": "a", "image": "b"}],
            "initContainers": [{"name": "a", "image": "b", "ports": [{"containerPort": 80}],
                "readinessProbe": {"exec": {"command": ["true"]}}}]
        }));
        let mut errs = ValidationErrors::new();
        bad.validate("spec", &mut errs);
        let text = errs.to_string();
        assert!(text.contains("spec.initContainers[0].ports"), "{text}");
        assert!(
            text.contains("spec.initContainers[0].readinessProbe"),
            "{text}"
        );
        assert!(
            text.contains("spec.initContainers[0].name: duplicate container name"),
            "{text}"
        );
    }
}
