//! `shoalctl get TYPE [NAME…]`: tables, `-o wide|yaml|json|name`, `-A`, `-w`.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::Value;
use shoal_client::watcher::{DEFAULT_MAX_FAILURES, EventKind, Machine};
use shoal_client::{ListParams, WatchOutput, Watcher};
use shoal_proto::WatchRequest;

use super::{Context, note, print};
use crate::cli::{EventsArgs, GetArgs};
use crate::client::client_error;
use crate::error::{CtlError, Target};
use crate::kinds::{self, KindInfo};
use crate::output::jsonpath::SortKey;
use crate::output::{self, Format, TableOptions};

/// What `get all` lists.
const ALL_KINDS: &str = "pods,services,deployments,cronjobs,jobs";

/// Runs `get`.
pub async fn run(ctx: &mut Context, mut args: GetArgs) -> Result<(), CtlError> {
    if args.kind.trim().eq_ignore_ascii_case("all") {
        // kubectl's "all": the workload kinds of a namespace.
        args.kind = ALL_KINDS.to_string();
    }
    if args.kind.contains(',') {
        return run_several(ctx, &args).await;
    }
    let (kind, slash_name) = kinds::split_kind_name(&args.kind)?;
    let mut names = args.names.clone();
    if let Some(n) = slash_name {
        names.insert(0, n);
    }
    let format: Format = args.output.as_deref().unwrap_or("").parse()?;
    let sort_by = args.sort_by.as_deref().map(SortKey::parse).transpose()?;
    if args.all_namespaces && ctx.explicit_namespace().is_some() {
        return Err(CtlError::Usage(
            "--all-namespaces (-A) and --namespace (-n) exclude each other".into(),
        ));
    }
    if !names.is_empty() && (args.selector.is_some() || args.all_namespaces) {
        return Err(CtlError::Usage(
            "give object names or a selector / --all-namespaces, not both".into(),
        ));
    }
    if (args.watch_only || args.output_watch_events) && !args.watch {
        return Err(CtlError::Usage(
            "--watch-only and --output-watch-events need --watch (-w)".into(),
        ));
    }
    let all_ns = args.all_namespaces && kind.namespaced;
    let namespace = if all_ns {
        String::new()
    } else {
        ctx.namespace_for(&kind)
    };
    let selector = args.selector.clone().unwrap_or_default();
    if !selector.is_empty() {
        shoal_api::selector::LabelSelector::parse(&selector)
            .map_err(|e| CtlError::Usage(e.to_string()))?;
    }
    let fields = args.field_selector.clone().unwrap_or_default();

    let (items, revision, missing) = if names.is_empty() {
        let (items, rev) = ctx.list(&kind, &namespace, &selector, &fields).await?;
        (items, rev, Vec::new())
    } else if args.watch {
        // One list gives both the objects and the revision the watch starts after, so
        // that no change between reading and watching is lost.
        let (all, rev) = ctx.list(&kind, &namespace, "", &fields).await?;
        let mut items = Vec::new();
        let mut missing = Vec::new();
        for n in &names {
            match all.iter().find(|v| output::name_of(v) == n) {
                Some(v) => items.push(v.clone()),
                None => missing.push(Target::new(kind.singular, &namespace, n).not_found()),
            }
        }
        (items, rev, missing)
    } else {
        let mut items = Vec::new();
        let mut missing = Vec::new();
        for n in &names {
            match ctx.get(&kind, &namespace, n).await {
                Ok(v) => items.push(v),
                Err(e @ CtlError::NotFound(_)) => missing.push(e),
                Err(e) => return Err(e),
            }
        }
        (items, 0, missing)
    };

    let opts = TableOptions {
        wide: format == Format::Wide,
        all_namespaces: all_ns,
        show_labels: args.show_labels,
        watch_events: args.output_watch_events,
        kind_prefix: false,
    };
    let related = related(ctx, &kind, &format, &namespace).await?;
    let mut items = items;
    if let Some(key) = &sort_by {
        key.sort(&mut items);
    }
    let mut view = View {
        kind,
        format: format.clone(),
        opts,
        related,
        no_headers: args.no_headers,
        widths: Vec::new(),
        printed: 0,
    };

    // What the watch has shown (to report objects gone during a re-list as DELETED).
    let shown: BTreeMap<String, Value> = items.iter().map(|v| (key_of(v), v.clone())).collect();
    if !args.watch_only {
        if items.is_empty()
            && missing.is_empty()
            && matches!(format, Format::Table | Format::Wide | Format::Name)
        {
            if !args.watch {
                note(&no_resources(&kind, all_ns, &namespace));
            }
        } else if !items.is_empty()
            || (matches!(format, Format::Json | Format::Yaml) && names.is_empty())
        {
            view.initial(items, names.len() == 1, args.watch)?;
        }
    }
    if !missing.is_empty() {
        return super::finish(missing, names.len(), "objects");
    }
    if !args.watch {
        return Ok(());
    }
    watch(
        ctx,
        &mut view,
        WatchRequest {
            kind: kind.kind.to_string(),
            namespace,
            label_selector: selector,
            field_selector: fields,
            resource_version: revision,
        },
        &names,
        shown,
    )
    .await
}

/// `events`: `get events` sorted by `lastTimestamp`, narrowed with field selectors on
/// `involvedObject` (`--for`) and `type` (`--types`), as kubectl events does.
pub async fn events(ctx: &mut Context, args: EventsArgs) -> Result<(), CtlError> {
    let mut fields = Vec::new();
    if let Some(target) = &args.for_ {
        let (kind, name) = kinds::split_kind_name(target)?;
        let name = name.ok_or_else(|| {
            CtlError::Usage(format!(
                "--for {target:?}: expected TYPE/NAME, e.g. pod/web-1"
            ))
        })?;
        fields.push(format!("involvedObject.kind={}", kind.kind));
        fields.push(format!("involvedObject.name={name}"));
    }
    if let Some(types) = &args.types {
        let wanted: Vec<&str> = types.split(',').map(str::trim).collect();
        for t in &wanted {
            if !["Normal", "Warning"].contains(t) {
                return Err(CtlError::Usage(format!(
                    "--types {types:?}: unknown type {t:?} (Normal or Warning)"
                )));
            }
        }
        if let [only] = wanted.as_slice() {
            fields.push(format!("type={only}"));
        }
    }
    run(
        ctx,
        GetArgs {
            kind: "events".into(),
            names: Vec::new(),
            selector: None,
            field_selector: (!fields.is_empty()).then(|| fields.join(",")),
            output: args.output,
            sort_by: Some(".lastTimestamp".into()),
            all_namespaces: args.all_namespaces,
            watch: args.watch,
            watch_only: false,
            output_watch_events: false,
            show_labels: false,
            no_headers: args.no_headers,
        },
    )
    .await
}

/// `get TYPE1,TYPE2…`: one table per type (names as `kind/name`), or one `List`.
async fn run_several(ctx: &mut Context, args: &GetArgs) -> Result<(), CtlError> {
    let kinds = args
        .kind
        .split(',')
        .filter(|k| !k.trim().is_empty())
        .map(kinds::resolve)
        .collect::<Result<Vec<_>, _>>()?;
    if !args.names.is_empty() || args.watch {
        return Err(CtlError::Usage(
            "names and --watch need a single resource type".into(),
        ));
    }
    if args.all_namespaces && ctx.explicit_namespace().is_some() {
        return Err(CtlError::Usage(
            "--all-namespaces (-A) and --namespace (-n) exclude each other".into(),
        ));
    }
    let format: Format = args.output.as_deref().unwrap_or("").parse()?;
    let sort_by = args.sort_by.as_deref().map(SortKey::parse).transpose()?;
    let selector = args.selector.clone().unwrap_or_default();
    let fields = args.field_selector.clone().unwrap_or_default();
    let mut sections = Vec::new();
    let mut all_items = Vec::new();
    for kind in &kinds {
        let all_ns = args.all_namespaces && kind.namespaced;
        let ns = if all_ns {
            String::new()
        } else {
            ctx.namespace_for(kind)
        };
        let (items, _) = ctx.list(kind, &ns, &selector, &fields).await?;
        if items.is_empty() {
            continue;
        }
        if matches!(format, Format::Table | Format::Wide) {
            let opts = TableOptions {
                wide: format == Format::Wide,
                all_namespaces: all_ns,
                show_labels: args.show_labels,
                watch_events: false,
                kind_prefix: true,
            };
            let mut items = items.clone();
            if let Some(key) = &sort_by {
                key.sort(&mut items);
            }
            let related = related(ctx, kind, &format, &ns).await?;
            sections.push(
                output::table_with(kind, &items, opts, Utc::now(), &related)
                    .render(args.no_headers),
            );
        }
        all_items.extend(items);
    }
    match format {
        Format::Table | Format::Wide | Format::Name if all_items.is_empty() => {
            let any_namespaced = kinds.iter().any(|k| k.namespaced);
            let ns = ctx.namespace().to_string();
            note(&if any_namespaced && !args.all_namespaces {
                format!("No resources found in {ns} namespace.")
            } else {
                "No resources found".to_string()
            });
            Ok(())
        }
        Format::Table | Format::Wide => print(&sections.join("\n")),
        Format::CustomColumns(cols) => {
            if let Some(key) = &sort_by {
                key.sort(&mut all_items);
            }
            print(&output::objects::custom_columns(&cols, &all_items).render(args.no_headers))
        }
        _ => {
            if let Some(key) = &sort_by {
                key.sort(&mut all_items);
            }
            print(&output::render_objects(all_items, false, &format)?)
        }
    }
}

/// The objects of other kinds a table of `kind` shows: for Services with `-o wide`, the
/// Endpoints of the same namespace(s) (`namespace` "" means all), read once.
async fn related(
    ctx: &mut Context,
    kind: &KindInfo,
    format: &Format,
    namespace: &str,
) -> Result<output::Related, CtlError> {
    if kind.kind != "Service" || *format != Format::Wide {
        return Ok(output::Related::default());
    }
    let endpoints = kinds::resolve("Endpoints")?;
    let (items, _) = ctx.list(&endpoints, namespace, "", "").await?;
    Ok(output::Related::with_endpoints(items))
}

/// "No resources found in default namespace." (or without a namespace).
pub fn no_resources(kind: &KindInfo, all_namespaces: bool, namespace: &str) -> String {
    if kind.namespaced && !all_namespaces {
        format!("No resources found in {namespace} namespace.")
    } else {
        "No resources found".to_string()
    }
}

/// How the objects of one `get` are printed, including watch rows.
#[derive(Debug)]
struct View {
    kind: KindInfo,
    format: Format,
    opts: TableOptions,
    /// Objects of other kinds shown in rows (as of the initial list, also for watch rows).
    related: output::Related,
    no_headers: bool,
    /// Column widths so far (watch rows line up with the list when they fit).
    widths: Vec<usize>,
    printed: usize,
}

impl View {
    fn initial(&mut self, items: Vec<Value>, single: bool, watching: bool) -> Result<(), CtlError> {
        match &self.format {
            Format::Table | Format::Wide => {
                let mut t =
                    output::table_with(&self.kind, &items, self.opts, Utc::now(), &self.related);
                if self.opts.watch_events {
                    for r in &mut t.rows {
                        r.insert(0, "ADDED".into());
                    }
                }
                self.widths = t.widths(!self.no_headers);
                self.printed += t.rows.len();
                print(&t.render(self.no_headers))
            }
            Format::Yaml if watching => {
                for v in &items {
                    self.object(v)?;
                }
                Ok(())
            }
            Format::Json if watching => {
                for v in &items {
                    self.object(v)?;
                }
                Ok(())
            }
            Format::CustomColumns(cols) => {
                let t = output::objects::custom_columns(cols, &items);
                self.widths = t.widths(!self.no_headers);
                self.printed += t.rows.len();
                print(&t.render(self.no_headers))
            }
            _ => print(&output::render_objects(items, single, &self.format)?),
        }
    }

    fn object(&mut self, v: &Value) -> Result<(), CtlError> {
        self.printed += 1;
        match &self.format {
            Format::Yaml => print(&format!("---\n{}", output::to_yaml(v)?)),
            Format::Json => print(&output::to_json(v)),
            Format::Name => print(&format!("{}\n", output::object_name(v))),
            Format::JsonPath(t) => print(&t.render(v)),
            Format::CustomColumns(cols) => {
                let row: Vec<String> = cols.iter().map(|c| c.cell(v)).collect();
                if self.widths.is_empty() && !self.no_headers {
                    let headers: Vec<String> = cols.iter().map(|c| c.header.clone()).collect();
                    self.widths = headers.iter().map(|h| h.chars().count()).collect();
                    grow(&mut self.widths, &row);
                    print(&output::render_line(&headers, &self.widths))?;
                }
                grow(&mut self.widths, &row);
                print(&output::render_line(&row, &self.widths))
            }
            Format::Table | Format::Wide => Ok(()),
        }
    }

    fn event(&mut self, ev_type: &str, v: &Value) -> Result<(), CtlError> {
        match &self.format {
            Format::Table | Format::Wide => {
                let mut row = output::row_with(&self.kind, v, self.opts, Utc::now(), &self.related);
                if self.opts.watch_events {
                    row.insert(0, ev_type.to_string());
                }
                if self.printed == 0 && !self.no_headers && self.widths.is_empty() {
                    let headers = output::headers(&self.kind, self.opts);
                    self.widths = headers.iter().map(|h| h.chars().count()).collect();
                    grow(&mut self.widths, &row);
                    print(&output::render_line(&headers, &self.widths))?;
                }
                grow(&mut self.widths, &row);
                self.printed += 1;
                print(&output::render_line(&row, &self.widths))
            }
            _ => self.object(v),
        }
    }
}

fn grow(widths: &mut Vec<usize>, row: &[String]) {
    if widths.len() < row.len() {
        widths.resize(row.len(), 0);
    }
    for (w, c) in widths.iter_mut().zip(row) {
        *w = (*w).max(c.chars().count());
    }
}

/// Streams changes until Ctrl-C through shoal-client's watcher, which survives a
/// controller going away (also between the list and the open of the stream) by moving to
/// the next address and resuming after the last revision seen. After a re-list (the watch
/// was too old, or this watcher fell behind) every object is shown again as MODIFIED and
/// those that went away in the meantime as DELETED.
async fn watch(
    ctx: &mut Context,
    view: &mut View,
    req: WatchRequest,
    names: &[String],
    mut shown: BTreeMap<String, Value>,
) -> Result<(), CtlError> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let client = ctx.conn().await?.client().clone();
    let params = ListParams {
        namespace: req.namespace.clone(),
        label_selector: req.label_selector.clone(),
        field_selector: req.field_selector.clone(),
    };
    let machine = Machine::from_revision(req.resource_version, Some(DEFAULT_MAX_FAILURES));
    let mut watcher = Watcher::json(client, &req.kind, params, machine);
    let wanted = |v: &Value| names.is_empty() || names.iter().any(|n| n == output::name_of(v));
    loop {
        let out = tokio::select! {
            o = watcher.next() => o,
            _ = &mut ctrl_c => return Ok(()),
        };
        match out.map_err(client_error)? {
            WatchOutput::Event { kind, object, .. } => {
                if wanted(&object) {
                    let key = key_of(&object);
                    if kind == EventKind::Deleted {
                        shown.remove(&key);
                    } else {
                        shown.insert(key, object.clone());
                    }
                    view.event(kind.as_str(), &object)?;
                }
            }
            WatchOutput::Listed { items, .. } => {
                let items: BTreeMap<String, Value> = items
                    .into_iter()
                    .filter(|v| wanted(v))
                    .map(|v| (key_of(&v), v))
                    .collect();
                for (k, old) in &shown {
                    if !items.contains_key(k) {
                        view.event("DELETED", old)?;
                    }
                }
                for v in items.values() {
                    view.event("MODIFIED", v)?;
                }
                shown = items;
            }
        }
    }
}

/// `namespace/name` of an object.
fn key_of(v: &Value) -> String {
    format!("{}/{}", output::namespace_of(v), output::name_of(v))
}
