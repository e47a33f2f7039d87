//! The verbs, one file each, and the context they share (connection, namespace, output).

pub mod access;
pub mod apply;
pub mod attach;
pub mod build;
pub mod cluster;
pub mod commit;
pub mod cordon;
pub mod cp;
pub mod create;
pub mod create_config;
pub mod dashboard;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod drain;
pub mod edit;
pub mod exec;
pub mod explain;
pub mod get;
pub mod image;
pub mod image_registry;
pub mod image_save;
pub mod label;
pub mod logs;
pub mod meta;
pub mod patch;
pub mod port_forward;
pub mod rollout;
pub mod run;
pub mod scale;
pub mod set;
pub mod taint;
pub mod top;
pub mod version;
pub mod wait;

use std::io::Write;

use serde_json::Value;
use shoal_proto::{DeleteRequest, GetRequest, ListRequest, ObjectRequest};

use crate::cli::Command;
use crate::client::{Connection, Settings};
use crate::error::{CtlError, Target, status_error};
use crate::kinds::KindInfo;

/// What every verb needs: where the controllers are, the namespace, one connection.
/// A clone shares the connection (see [`Connection`]).
#[derive(Debug, Clone)]
pub struct Context {
    settings: Settings,
    namespace: Option<String>,
    /// The context's default namespace (from the configuration file).
    context_namespace: Option<String>,
    conn: Option<Connection>,
}

impl Context {
    /// A context that connects lazily, on the first request.
    pub fn new(settings: Settings, namespace: Option<String>) -> Self {
        // The context's namespace, when the file is readable now (errors surface on connect).
        let context_namespace = shoal_client::file::ConfigFile::load(&settings.config)
            .ok()
            .and_then(|f| f.resolve(settings.context.as_deref()).ok())
            .and_then(|r| r.namespace);
        Context {
            settings,
            namespace,
            context_namespace,
            conn: None,
        }
    }

    /// The global settings (configuration file, context, servers).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The namespace to use: `-n`, else the context's, else `default`.
    pub fn namespace(&self) -> &str {
        self.namespace
            .as_deref()
            .or(self.context_namespace.as_deref())
            .unwrap_or("default")
    }

    /// The namespace given with `-n`, if any.
    pub fn explicit_namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The namespace a kind's request uses ("" for cluster-scoped kinds).
    pub fn namespace_for(&self, kind: &KindInfo) -> String {
        if kind.namespaced {
            self.namespace().to_string()
        } else {
            String::new()
        }
    }

    /// The connection, made on first use and kept for the whole command.
    pub async fn conn(&mut self) -> Result<&mut Connection, CtlError> {
        if self.conn.is_none() {
            self.conn = Some(Connection::connect(&self.settings).await?);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| CtlError::Usage("no connection".into()))
    }

    /// Reads one object.
    pub async fn get(
        &mut self,
        kind: &KindInfo,
        namespace: &str,
        name: &str,
    ) -> Result<Value, CtlError> {
        let req = GetRequest {
            kind: kind.kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            stale: false,
        };
        let resp = self
            .conn()
            .await?
            .call(|mut c| {
                let r = req.clone();
                async move { c.get(r).await }
            })
            .await
            .map_err(|s| status_error(&s, Some(&Target::new(kind.singular, namespace, name))))?;
        parse_object(&resp.object_json)
    }

    /// Lists objects of a kind ("" namespace = all) and the revision they were read at.
    pub async fn list(
        &mut self,
        kind: &KindInfo,
        namespace: &str,
        label_selector: &str,
        field_selector: &str,
    ) -> Result<(Vec<Value>, u64), CtlError> {
        let req = ListRequest {
            kind: kind.kind.to_string(),
            namespace: namespace.to_string(),
            label_selector: label_selector.to_string(),
            field_selector: field_selector.to_string(),
            stale: false,
        };
        let resp = self
            .conn()
            .await?
            .call(|mut c| {
                let r = req.clone();
                async move { c.list(r).await }
            })
            .await
            .map_err(|s| status_error(&s, None))?;
        let items = resp
            .items_json
            .iter()
            .map(|j| parse_object(j))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((items, resp.resource_version))
    }

    /// Replaces an object (its `metadata.resourceVersion`, when set, is a precondition).
    pub async fn update(&mut self, kind: &KindInfo, object: &Value) -> Result<Value, CtlError> {
        let target = Target::new(
            kind.singular,
            crate::output::namespace_of(object),
            crate::output::name_of(object),
        );
        let req = ObjectRequest {
            object_json: object.to_string(),
        };
        let resp = self
            .conn()
            .await?
            .call(|mut c| {
                let r = req.clone();
                async move { c.update(r).await }
            })
            .await
            .map_err(|s| status_error(&s, Some(&target)))?;
        parse_object(&resp.object_json)
    }

    /// Creates an object.
    pub async fn create(&mut self, target: &Target, object: &Value) -> Result<Value, CtlError> {
        let req = ObjectRequest {
            object_json: object.to_string(),
        };
        let resp = self
            .conn()
            .await?
            .call(|mut c| {
                let r = req.clone();
                async move { c.create(r).await }
            })
            .await
            .map_err(|s| status_error(&s, Some(target)))?;
        parse_object(&resp.object_json)
    }

    /// Deletes one object.
    pub async fn delete(
        &mut self,
        kind: &KindInfo,
        namespace: &str,
        name: &str,
    ) -> Result<(), CtlError> {
        let req = DeleteRequest {
            kind: kind.kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            resource_version: 0,
        };
        self.conn()
            .await?
            .call(|mut c| {
                let r = req.clone();
                async move { c.delete(r).await }
            })
            .await
            .map_err(|s| status_error(&s, Some(&Target::new(kind.singular, namespace, name))))?;
        Ok(())
    }
}

/// How often a read-modify-write is retried after a concurrent change of the object.
pub const MODIFY_ATTEMPTS: usize = 5;

impl Context {
    /// Read-modify-write of one object: `change` edits it (returning `false` when there is
    /// nothing to do), then it is updated with its resourceVersion as precondition; on a
    /// conflict the object is read again and `change` runs again. `expect_rv` makes the
    /// first read a precondition too (no retry). Returns the object written, or None.
    pub async fn modify(
        &mut self,
        kind: &KindInfo,
        namespace: &str,
        name: &str,
        expect_rv: Option<u64>,
        mut change: impl FnMut(&mut Value) -> Result<bool, CtlError>,
    ) -> Result<Option<Value>, CtlError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut obj = self.get(kind, namespace, name).await?;
            if let Some(rv) = expect_rv {
                let current = crate::output::resource_version_of(&obj);
                if current != rv.to_string() {
                    return Err(CtlError::Conflict(format!(
                        "{} {name:?} is at resourceVersion {current}, not {rv}",
                        kind.singular
                    )));
                }
            }
            if !change(&mut obj)? {
                return Ok(None);
            }
            match self.update(kind, &obj).await {
                Ok(v) => return Ok(Some(v)),
                Err(CtlError::Conflict(_)) if expect_rv.is_none() && attempt < MODIFY_ATTEMPTS => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads `TYPE NAME` or `TYPE/NAME` naming one object of one of the `allowed` kinds.
pub fn one_target(args: &[String], allowed: &[&str]) -> Result<(KindInfo, String), CtlError> {
    let (kind, name) = match args {
        [one] => crate::kinds::split_kind_name(one)?,
        [kind, name] if !kind.contains('/') => (crate::kinds::resolve(kind)?, Some(name.clone())),
        _ => (crate::kinds::resolve("?")?, None),
    };
    if !allowed.contains(&kind.kind) {
        return Err(CtlError::Usage(format!(
            "{} is not supported here (expected {})",
            kind.plural,
            allowed
                .iter()
                .map(|k| k.to_lowercase())
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    }
    let name = name.ok_or_else(|| {
        CtlError::Usage(format!("which {}? use {0}/NAME or {0} NAME", kind.singular))
    })?;
    Ok((kind, name))
}

/// Reads a pod argument: `NAME` or `pod/NAME`.
pub fn pod_name(arg: &str) -> Result<String, CtlError> {
    match arg.split_once('/') {
        Some((k, n)) => {
            let kind = crate::kinds::resolve(k)?;
            if kind.kind != "Pod" || n.is_empty() {
                return Err(CtlError::Usage(format!(
                    "{arg:?}: expected a pod name or pod/NAME"
                )));
            }
            Ok(n.to_string())
        }
        None => Ok(arg.to_string()),
    }
}

/// Parses an object the controller sent.
pub fn parse_object(json: &str) -> Result<Value, CtlError> {
    serde_json::from_str(json)
        .map_err(|e| CtlError::BadResponse(format!("object is not valid JSON: {e}")))
}

/// Writes to stdout and flushes (so watch rows appear at once).
pub fn print(text: &str) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(CtlError::Output)
}

/// Writes one line to stderr (notes such as "No resources found").
pub fn note(text: &str) {
    eprintln!("{text}");
}

/// Ends a multi-object command: one failure is returned as is; several are printed and
/// summarised.
pub fn finish(failures: Vec<CtlError>, total: usize, what: &'static str) -> Result<(), CtlError> {
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.into_iter().next().unwrap_or(CtlError::Partial {
            failed: 1,
            total,
            what,
        })),
        n => {
            for f in &failures {
                note(&format!("error: {f}"));
            }
            Err(CtlError::Partial {
                failed: n,
                total,
                what,
            })
        }
    }
}

/// Runs a parsed command.
pub async fn dispatch(ctx: &mut Context, command: Command) -> Result<(), CtlError> {
    match command {
        Command::Apply(a) => apply::run(ctx, a).await,
        Command::Diff(a) => diff::run(ctx, a).await,
        Command::Edit(a) => edit::run(ctx, a).await,
        Command::Patch(a) => patch::run(ctx, a).await,
        Command::Create(a) => create::run(ctx, a).await,
        Command::Get(a) => get::run(ctx, a).await,
        Command::Describe(a) => describe::run(ctx, a).await,
        Command::Delete(a) => delete::run(ctx, a).await,
        Command::Label(a) => label::run(ctx, a, crate::labels::MetaMap::Labels).await,
        Command::Annotate(a) => label::run(ctx, a, crate::labels::MetaMap::Annotations).await,
        Command::Image { command } => image::run(ctx, command).await,
        Command::Build(a) => build::run(ctx, a).await,
        Command::Commit(a) => commit::run(ctx, a).await,
        Command::Logs(a) => logs::run(ctx, a).await,
        Command::Exec(a) => exec::run(ctx, a).await,
        Command::Attach(a) => attach::run(ctx, a).await,
        Command::Cp(a) => cp::run(ctx, a).await,
        Command::PortForward(a) => port_forward::run(ctx, a).await,
        Command::Run(a) => run::run(ctx, a).await,
        Command::Top { command } => top::run(ctx, command).await,
        Command::Scale(a) => scale::run(ctx, a).await,
        Command::Set { command } => set::run(ctx, command).await,
        Command::Rollout { command } => rollout::run(ctx, command).await,
        Command::Cordon(a) => cordon::run(ctx, a, true).await,
        Command::Uncordon(a) => cordon::run(ctx, a, false).await,
        Command::Drain(a) => drain::run(ctx, a).await,
        Command::Taint(a) => taint::run(ctx, a).await,
        Command::Wait(a) => wait::run(ctx, a).await,
        Command::Events(a) => get::events(ctx, a).await,
        Command::Dashboard(a) => dashboard::run(ctx, a).await,
        Command::Cluster { command } => cluster::run(ctx, command).await,
        Command::Token { command } => access::token(ctx, command).await,
        Command::Config { command } => access::config(ctx, command).await,
        Command::Version { client } => version::run(ctx, client).await,
        Command::ApiResources { no_headers } => meta::api_resources(no_headers),
        Command::Explain { target, recursive } => explain::run(&target, recursive),
        Command::Completion { shell } => meta::completion(shell),
    }
}
