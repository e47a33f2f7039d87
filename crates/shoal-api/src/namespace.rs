//! Namespace: a scope for the names of namespaced objects.

use crate::meta::ObjectMeta;
use crate::validation::{self as v, ValidationErrors};
use serde::{Deserialize, Serialize};

/// Namespaces every cluster has; they cannot be deleted.
pub const BUILT_IN: [&str; 2] = ["default", "shoal-system"];

/// A namespace (cluster-scoped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    /// Name (DNS-1123 label), labels, server-set fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Observed state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NamespaceStatus>,
}

/// Lifecycle phase of a namespace.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum NamespacePhase {
    /// In use.
    #[default]
    Active,
    /// Being deleted with its objects.
    Terminating,
}

/// Observed state of a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceStatus {
    /// Phase.
    #[serde(default)]
    pub phase: NamespacePhase,
}

impl Namespace {
    /// A new, active namespace called `name`.
    pub fn named(name: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: name.to_string(),
                ..Default::default()
            },
            status: Some(NamespaceStatus {
                phase: NamespacePhase::Active,
            }),
        }
    }

    /// True once a delete asked for it (its objects are being deleted).
    pub fn is_terminating(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.phase == NamespacePhase::Terminating)
    }

    /// Checks the name (DNS-1123 label) and labels.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata
            .validate(crate::Kind::Namespace, v::check_dns1123_label, &mut errs);
        errs.into_result()
    }
}
