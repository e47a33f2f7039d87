//! Deployment: a replicated set of pods made from a template, updated by rolling.

use crate::intorstring::IntOrString;
use crate::meta::{Condition, ObjectMeta, is_default};
use crate::pod::PodSpec;
use crate::selector::{LabelSelector, LabelSelectorSpec, SelectorError};
use crate::validation::{self as v, ValidationErrors};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A deployment: `metadata`, desired `spec`, observed `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    /// Name, namespace, labels, server-set fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired replicas and pod template.
    pub spec: DeploymentSpec,
    /// Observed replicas (written by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeploymentStatus>,
}

fn default_replicas() -> i32 {
    1
}

fn default_history() -> i32 {
    10
}

struct NonNegative;

impl Visitor<'_> for NonNegative {
    type Value = i32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
        i32::try_from(v)
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
        i32::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
}

/// Deserializes an `i32` that must be `>= 0`, with the message
/// `expected a non-negative integer`.
pub(crate) fn non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    d.deserialize_any(NonNegative)
}

/// Desired state of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Number of pods (default 1).
    #[serde(default = "default_replicas", deserialize_with = "non_negative")]
    pub replicas: i32,
    /// Which pods belong to the deployment; must match the template's labels.
    pub selector: LabelSelectorSpec,
    /// The pods to make.
    pub template: PodTemplateSpec,
    /// How pods are replaced when the template changes (default RollingUpdate 25%/25%).
    #[serde(default)]
    pub strategy: DeploymentStrategy,
    /// Number of old templates kept for rollback (default 10).
    #[serde(default = "default_history", deserialize_with = "non_negative")]
    pub revision_history_limit: i32,
    /// Stop rolling out template changes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub paused: bool,
}

/// Metadata of a pod template: only labels and annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTemplateMeta {
    /// Labels every pod gets (must match the selector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations every pod gets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The pod template of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTemplateSpec {
    /// Labels and annotations of the pods.
    #[serde(default)]
    pub metadata: PodTemplateMeta,
    /// Spec of the pods.
    pub spec: PodSpec,
}

/// How pods are replaced.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum DeploymentStrategyType {
    /// Start new pods while stopping old ones, within maxSurge/maxUnavailable (the default).
    #[default]
    RollingUpdate,
    /// Stop all old pods, then start the new ones.
    Recreate,
}

fn default_pct() -> IntOrString {
    IntOrString::String("25%".into())
}

/// Limits of a rolling update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdate {
    /// Pods above `replicas` allowed during the update: a count or a percentage (default 25%, rounded up).
    #[serde(default = "default_pct")]
    pub max_surge: IntOrString,
    /// Pods below `replicas` allowed during the update (default 25%, rounded down).
    #[serde(default = "default_pct")]
    pub max_unavailable: IntOrString,
}

impl Default for RollingUpdate {
    fn default() -> Self {
        RollingUpdate {
            max_surge: default_pct(),
            max_unavailable: default_pct(),
        }
    }
}

/// `spec.strategy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentStrategy {
    /// `RollingUpdate` (default) or `Recreate`.
    #[serde(default, rename = "type")]
    pub type_: DeploymentStrategyType,
    /// Limits for `RollingUpdate` (defaults apply when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

impl DeploymentStrategy {
    /// (maxSurge, maxUnavailable) resolved against `replicas`, as Kubernetes does: surge
    /// rounds up, unavailable rounds down, and both zero becomes unavailable 1.
    pub fn resolved_limits(&self, replicas: i32) -> (i32, i32) {
        let ru = self.rolling_update.clone().unwrap_or_default();
        let surge = ru.max_surge.resolve(replicas, true).unwrap_or(0).max(0);
        let unavailable = ru
            .max_unavailable
            .resolve(replicas, false)
            .unwrap_or(0)
            .max(0);
        if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        }
    }
}

/// Observed state of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentStatus {
    /// Pods that belong to the deployment.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods made from the current template.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Ready pods counted as available.
    #[serde(default)]
    pub available_replicas: i32,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Available`, `Progressing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Revision number of the current template (1 for the first; each new template,
    /// including one restored by `rollout undo`, gets the next number).
    #[serde(default, skip_serializing_if = "is_default")]
    pub revision: i64,
    /// Templates rolled out so far, oldest first; the last entry is the current template.
    /// Holds the current one plus at most `spec.revisionHistoryLimit` older ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<DeploymentRevision>,
}

/// Label every pod of a deployment carries: the [`template_hash`] of its template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// One entry of a deployment's rollout history (`status.history`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentRevision {
    /// Revision number (increasing).
    pub revision: i64,
    /// [`template_hash`] of the template.
    pub template_hash: String,
    /// The template as it was rolled out.
    pub template: PodTemplateSpec,
}

impl Deployment {
    /// The selector as a [`LabelSelector`].
    pub fn selector(&self) -> Result<LabelSelector, SelectorError> {
        LabelSelector::from_spec(&self.spec.selector)
    }

    /// Checks metadata, selector (non-empty, matching the template's labels), template
    /// and strategy.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata.validate(
            crate::Kind::Deployment,
            v::check_dns1123_subdomain,
            &mut errs,
        );
        let spec = &self.spec;
        validate_selector_and_template(&spec.selector, &spec.template, &mut errs);
        if let Some(ru) = &spec.strategy.rolling_update {
            if spec.strategy.type_ == DeploymentStrategyType::Recreate {
                errs.push(
                    "spec.strategy.rollingUpdate",
                    "must not be set when type is Recreate",
                );
            }
            errs.check(
                "spec.strategy.rollingUpdate.maxSurge",
                ru.max_surge.check_count_or_percent(),
            );
            errs.check(
                "spec.strategy.rollingUpdate.maxUnavailable",
                ru.max_unavailable.check_count_or_percent(),
            );
            let zero = |x: &IntOrString| matches!(x, IntOrString::Int(0)) || x.to_string() == "0%";
            if zero(&ru.max_surge) && zero(&ru.max_unavailable) {
                errs.push(
                    "spec.strategy.rollingUpdate",
                    "maxSurge and maxUnavailable must not both be 0",
                );
            }
            if let IntOrString::String(s) = &ru.max_unavailable
                && let Some(Ok(p)) = s.strip_suffix('%').map(|n| n.parse::<i64>())
                && p > 100
            {
                errs.push(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    format!("must not be more than 100%, got {s:?}"),
                );
            }
        }
        errs.into_result()
    }
}

/// Checks the `spec.selector` and `spec.template` of a workload that owns pods made from
/// a template (Deployment, DaemonSet): the selector is non-empty, valid and matches the
/// template's labels; the template's labels, annotations and pod spec are valid; and the
/// template has no `nodeName`.
pub(crate) fn validate_selector_and_template(
    selector: &LabelSelectorSpec,
    template: &PodTemplateSpec,
    errs: &mut ValidationErrors,
) {
    if selector.is_empty() {
        errs.push(
            "spec.selector",
            "must not be empty: set matchLabels or matchExpressions",
        );
    } else {
        match LabelSelector::from_spec(selector) {
            Err(SelectorError::Invalid { field, message }) => {
                errs.push(format!("spec.selector.{field}"), message)
            }
            Err(e) => errs.push("spec.selector", e.to_string()),
            Ok(sel) => {
                if !sel.matches(&template.metadata.labels) {
                    errs.push(
                        "spec.template.metadata.labels",
                        format!(
                            "selector {sel:?} does not match the template labels",
                            sel = sel.to_string()
                        ),
                    );
                }
            }
        }
    }
    v::validate_labels(
        &template.metadata.labels,
        "spec.template.metadata.labels",
        errs,
    );
    v::validate_annotations(
        &template.metadata.annotations,
        "spec.template.metadata.annotations",
        errs,
    );
    template.spec.validate("spec.template.spec", errs);
    if template.spec.node_name.is_some() {
        errs.push(
            "spec.template.spec.nodeName",
            "must not be set in a template",
        );
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A stable 10-hex-digit hash of a pod template (FNV-1a of its canonical JSON), used
/// to tell pods of different template revisions apart.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    // A Value's maps are sorted, so the text does not depend on field order.
    let text = serde_json::to_value(template)
        .map(|v| v.to_string())
        .unwrap_or_default();
    format!("{:010x}", fnv1a64(text.as_bytes()) & 0xff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(json: serde_json::Value) -> Deployment {
        serde_json::from_value(json).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "app", "image": "busybox"}]}}
            }
        })
    }

    #[test]
    fn defaults_and_valid() {
        let d = dep(base());
        assert_eq!(d.spec.replicas, 1);
        assert_eq!(d.spec.revision_history_limit, 10);
        assert_eq!(d.spec.strategy.type_, DeploymentStrategyType::RollingUpdate);
        assert_eq!(d.spec.strategy.resolved_limits(10), (3, 2));
        assert_eq!(d.spec.strategy.resolved_limits(1), (1, 0));
        d.validate().unwrap();
    }

    #[test]
    fn selector_must_match_template() {
        let mut j = base();
        j["spec"]["template"]["metadata"]["labels"] = serde_json::json!({"app": "api"});
        let e = dep(j).validate().unwrap_err().to_string();
        assert_eq!(
            e,
            "spec.template.metadata.labels: selector \"app=web\" does not match the template labels"
        );
        let mut j = base();
        j["spec"]["selector"] = serde_json::json!({});
        let e = dep(j).validate().unwrap_err().to_string();
        assert!(e.starts_with("spec.selector: must not be empty"), "{e}");
        let mut j = base();
        j["spec"]["selector"] = serde_json::json!({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]});
        let e = dep(j).validate().unwrap_err().to_string();
        assert!(
            e.starts_with("spec.selector.matchExpressions[0].values: "),
            "{e}"
        );
    }

    #[test]
    fn replicas_must_be_non_negative() {
        let mut j = base();
        j["spec"]["replicas"] = serde_json::json!(-1);
        assert!(serde_json::from_value::<Deployment>(j).is_err());
        let mut j = base();
        j["spec"]["replicas"] = serde_json::json!(3);
        assert_eq!(dep(j).spec.replicas, 3);
    }

    #[test]
    fn strategy_checks() {
        let mut j = base();
        j["spec"]["strategy"] =
            serde_json::json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        let e = dep(j).validate().unwrap_err().to_string();
        assert!(
            e.contains("maxSurge and maxUnavailable must not both be 0"),
            "{e}"
        );
        let mut j = base();
        j["spec"]["strategy"] = serde_json::json!({"rollingUpdate": {"maxSurge": "lots"}});
        let e = dep(j).validate().unwrap_err().to_string();
        assert!(e.starts_with("spec.strategy.rollingUpdate.maxSurge: expected a non-negative integer or a percentage"), "{e}");
    }

    #[test]
    fn template_hash_is_stable_and_sensitive() {
        let d = dep(base());
        let h = template_hash(&d.spec.template);
        assert_eq!(h.len(), 10);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(h, template_hash(&d.clone().spec.template));
        let mut t = d.spec.template.clone();
        t.spec.containers[0].image = "busybox:2".into();
        assert_ne!(h, template_hash(&t));
    }
}
