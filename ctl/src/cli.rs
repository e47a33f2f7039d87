//! The command-line surface of `shoalctl` (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::DEFAULT_SERVER;

/// `shoalctl`: the Shoal command line.
#[derive(Debug, Parser)]
#[command(
    name = "shoalctl",
    version,
    about = "Control a Shoal cluster",
    propagate_version = true
)]
pub struct Cli {
    /// Controller addresses, comma-separated HOST:PORT; the next is tried when one is down.
    #[arg(long, short = 's', global = true, env = "SHOAL_SERVER", value_name = "ADDRS", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Namespace to work in (default: `default`, or the manifest's own).
    #[arg(long, short = 'n', global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// How long to wait for each controller address to accept a connection.
    #[arg(long, global = true, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Deadline of each request (watch streams are not limited).
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the objects of manifests, all in one atomic request.
    Apply(ApplyArgs),
    /// Create the objects of manifests (fails for objects that exist).
    Create(CreateArgs),
    /// Show objects as a table, YAML, JSON or names; optionally keep watching.
    Get(GetArgs),
    /// Show one object in detail, with the events about it.
    Describe(DescribeArgs),
    /// Delete objects by name, selector or manifest.
    Delete(DeleteArgs),
    /// Add, change or remove labels of objects.
    Label(LabelArgs),
    /// The controller cluster.
    Cluster {
        /// What to show.
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Print the version of shoalctl.
    Version,
}

/// `shoalctl cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, commit index and per-member health.
    Status {
        /// Output format: json or yaml (default: table).
        #[arg(short = 'o', long = "output", value_name = "FORMAT")]
        output: Option<String>,
    },
}

/// Arguments of `apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file, directory (its *.yaml, *.yml, *.json) or '-' for stdin; repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Validate and show what would happen, without writing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Manifest file, directory (its *.yaml, *.yml, *.json) or '-' for stdin; repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
}

/// Arguments of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Resource type (pods, po, deploy, svc, nodes, events, ns, …) or TYPE/NAME.
    #[arg(value_name = "TYPE[/NAME]")]
    pub kind: String,
    /// Object names (all when none).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Label selector, e.g. `app=web,tier!=db,env in (a,b),!canary`.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Field selector: spec.nodeName, metadata.name, metadata.namespace, status.phase.
    #[arg(long, value_name = "SELECTOR")]
    pub field_selector: Option<String>,
    /// Output format: wide, yaml, json or name.
    #[arg(short = 'o', long = "output", value_name = "FORMAT")]
    pub output: Option<String>,
    /// List across all namespaces (adds a NAMESPACE column).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// After the list, print a row per change until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Print only the changes, not the initial list.
    #[arg(long)]
    pub watch_only: bool,
    /// With --watch: add an EVENT column (ADDED, MODIFIED, DELETED).
    #[arg(long)]
    pub output_watch_events: bool,
    /// Add a LABELS column.
    #[arg(long)]
    pub show_labels: bool,
    /// Omit the header line of tables.
    #[arg(long)]
    pub no_headers: bool,
}

/// Arguments of `describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Resource type or TYPE/NAME.
    #[arg(value_name = "TYPE[/NAME]")]
    pub kind: String,
    /// Object names (all of the type in the namespace when none).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Describe the objects matching this label selector.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Across all namespaces (with a selector or no names).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// Arguments of `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Resource type or TYPE/NAME (not with -f).
    #[arg(value_name = "TYPE[/NAME]")]
    pub kind: Option<String>,
    /// Object names.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Delete the objects of these manifests.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Delete the objects matching this label selector.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Delete every object of the type in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Succeed when an object does not exist.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// Arguments of `label`.
#[derive(Debug, Args)]
pub struct LabelArgs {
    /// TYPE NAME… KEY=VALUE… KEY-…, or TYPE/NAME KEY=VALUE….
    #[arg(value_name = "ARGS", required = true, num_args = 1..)]
    pub args: Vec<String>,
    /// Allow changing the value of an existing label.
    #[arg(long)]
    pub overwrite: bool,
    /// Only change the object if it is still at this resourceVersion.
    #[arg(long, value_name = "RV")]
    pub resource_version: Option<u64>,
    /// Label every object matching this selector instead of naming them.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
}

/// Parses `500ms`, `2s`, `1m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 2s, 1m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration {s:?}: unit must be ms, s or m")),
    };
    if !(secs > 0.0 && secs < 86_400.0) {
        return Err(format!(
            "invalid duration {s:?}: must be positive and under a day"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn global_flags_anywhere_and_short_forms() {
        let c = Cli::try_parse_from([
            "shoalctl", "get", "pods", "-n", "kube", "-l", "app=web", "-o", "wide", "--server",
            "a:1",
        ])
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("kube"));
        assert_eq!(c.server, "a:1");
        let Command::Get(g) = c.command else {
            panic!("not get")
        };
        assert_eq!(
            (g.kind.as_str(), g.selector.as_deref(), g.output.as_deref()),
            ("pods", Some("app=web"), Some("wide"))
        );
        let c = Cli::try_parse_from([
            "shoalctl",
            "label",
            "pod",
            "web-1",
            "tier=frontend",
            "old-",
            "--overwrite",
        ])
        .unwrap();
        let Command::Label(l) = c.command else {
            panic!("not label")
        };
        assert_eq!(l.args, ["pod", "web-1", "tier=frontend", "old-"]);
        assert!(l.overwrite);
        assert!(Cli::try_parse_from(["shoalctl", "apply"]).is_err());
    }
}
