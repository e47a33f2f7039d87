//! Everything `shoalctl` prints: tables (kubectl's columns), ages, `-o json|yaml|name`,
//! `describe` pages and the cluster status. Works on the objects' JSON, so that fields
//! the command line does not know about never break it.
//!
//! One file per concern: [`time`] (ages, timestamps), [`fields`] (reading the JSON),
//! [`table`] (the padded table), [`rows`] (each kind's columns), [`objects`] (`-o
//! json|yaml|name`), [`describe`], [`cluster`] (cluster status) and [`workloads`] (`top`,
//! `image ls`, `rollout history`). Callers use the re-exports below.

pub mod batch;
pub mod cluster;
pub mod config;
pub mod daemonset;
pub mod describe;
pub mod fields;
pub mod jsonpath;
pub mod objects;
pub mod rows;
pub mod storage;
pub mod table;
pub mod time;
pub mod workloads;

use std::str::FromStr;

use crate::error::CtlError;

pub use cluster::{cluster_status, cluster_status_json};
pub use describe::describe;
pub use fields::{
    join_labels, name_of, namespace_of, resource_version_of, selector_text, string_map,
};
pub use objects::{List, list_object, object_name, render_objects, to_json, to_yaml};
pub use rows::{
    PodSummary, Related, TableOptions, endpoints_text, headers, pod_summary, row, row_with, table,
    table_with,
};
pub use table::{Table, render_line};
pub use time::{age_of, human_age, parse_time};
pub use workloads::{
    cpu_text, images_table, memory_text, percent_text, rollout_history_table, size_text,
    split_reference, template_images, top_nodes_table, top_pods_table,
};

/// The `-o` formats.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Format {
    /// The default table.
    #[default]
    Table,
    /// The table with extra columns.
    Wide,
    /// Pretty JSON (a `List` for several objects).
    Json,
    /// YAML (a `List` for several objects).
    Yaml,
    /// `kind/name` per object.
    Name,
    /// `jsonpath=TEMPLATE` (kubectl's template syntax).
    JsonPath(jsonpath::Template),
    /// `custom-columns=HEADER:PATH,…`.
    CustomColumns(Vec<jsonpath::Column>),
}

impl FromStr for Format {
    type Err = CtlError;
    fn from_str(s: &str) -> Result<Self, CtlError> {
        match s {
            "wide" => Ok(Format::Wide),
            "json" => Ok(Format::Json),
            "yaml" | "yml" => Ok(Format::Yaml),
            "name" => Ok(Format::Name),
            "" | "table" => Ok(Format::Table),
            other => {
                if let Some(t) = other.strip_prefix("jsonpath=") {
                    return Ok(Format::JsonPath(jsonpath::Template::parse(t)?));
                }
                if let Some(spec) = other.strip_prefix("custom-columns=") {
                    return Ok(Format::CustomColumns(jsonpath::parse_columns(spec)?));
                }
                Err(CtlError::Usage(format!(
                    "unknown output format {other:?} (allowed: wide, yaml, json, name, \
                     jsonpath=TEMPLATE, custom-columns=HEADER:PATH,…)"
                )))
            }
        }
    }
}

/// Fixed times and objects shared by the submodules' tests.
#[cfg(test)]
pub(crate) mod testutil {
    pub use crate::kinds::resolve;
    use chrono::{DateTime, Utc};
    pub use serde_json::json;

    /// The tests' "now".
    pub fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T20:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// `now()` minus `secs`, as RFC 3339.
    pub fn ago(secs: i64) -> String {
        (now() - chrono::Duration::seconds(secs)).to_rfc3339()
    }
}
