//! The command-line surface of `shoalctl` (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `shoalctl`: the Shoal command line.
#[derive(Debug, Parser)]
#[command(
    name = "shoalctl",
    version = shoal_observe::version::LINE,
    about = "Control a Shoal cluster",
    propagate_version = true
)]
pub struct Cli {
    /// Client configuration (clusters, users, contexts; kubeconfig-shaped). The first
    /// controller writes DATA_DIR/admin.conf; default ~/.shoal/config.
    #[arg(long, global = true, env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The context of the configuration to use (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Controller addresses, comma-separated HOST:PORT, replacing the context's list; the
    /// next is tried when one is down.
    #[arg(
        long,
        short = 's',
        global = true,
        env = "SHOAL_SERVER",
        value_name = "ADDRS"
    )]
    pub server: Option<String>,
    /// Namespace to work in (default: `default`, or the manifest's own).
    #[arg(long, short = 'n', global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// How long to wait for each controller address to accept a connection.
    #[arg(long, global = true, value_name = "DURATION", default_value = "1s", value_parser = parse_timeout)]
    pub connect_timeout: Duration,
    /// Deadline of each request (watch streams are not limited).
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub request_timeout: Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the objects of manifests, all in one atomic request (a three-way
    /// merge with the live objects and the last-applied configuration).
    Apply(ApplyArgs),
    /// Show what `apply -f` would change, as a unified diff (exit 1 when it would).
    Diff(DiffArgs),
    /// Edit an object as YAML in $EDITOR and write it back if it changed.
    Edit(EditArgs),
    /// Change an object with a JSON merge patch (RFC 7386) or a JSON patch (RFC 6902).
    Patch(PatchArgs),
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
    /// Add, change or remove annotations of objects (values are free text).
    Annotate(LabelArgs),
    /// Import, list, tag, remove, save, push and pull container images.
    Image {
        /// What to do with images.
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Build an image from a Dockerfile on a node of the cluster and store it in the
    /// cluster's image store (docs/build.md).
    Build(BuildArgs),
    /// Make an image of a pod container's changed files (its writable layer).
    Commit(CommitArgs),
    /// Print the logs of a pod's container.
    Logs(LogsArgs),
    /// Run a command in a pod's container.
    Exec(ExecArgs),
    /// Attach to the main process of a running container (its output; -i its stdin).
    Attach(AttachArgs),
    /// Copy files and directories to and from a container (tar through exec).
    Cp(CpArgs),
    /// Forward local ports to a pod's ports (also svc/NAME, deploy/NAME).
    PortForward(PortForwardArgs),
    /// Create a pod running one container; --attach follows it to its end.
    Run(RunArgs),
    /// CPU and memory use of pods or nodes.
    Top {
        /// Pods or nodes.
        #[command(subcommand)]
        command: TopCommand,
    },
    /// Set the replica count of a deployment.
    Scale(ScaleArgs),
    /// Change fields of objects.
    Set {
        /// What to set.
        #[command(subcommand)]
        command: SetCommand,
    },
    /// Follow, list and undo rollouts of a deployment.
    Rollout {
        /// What to do.
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Mark a node unschedulable.
    Cordon(NodeArgs),
    /// Mark a node schedulable again.
    Uncordon(NodeArgs),
    /// Cordon a node and delete the pods bound to it.
    Drain(DrainArgs),
    /// Add or remove taints of a node (KEY[=VALUE]:EFFECT, KEY:EFFECT-, KEY-).
    Taint(TaintArgs),
    /// Wait until objects meet a condition (condition=Ready, delete, jsonpath=…).
    Wait(WaitArgs),
    /// The events of the namespace, oldest first (LAST SEEN TYPE REASON OBJECT MESSAGE).
    Events(EventsArgs),
    /// Serve a local, read-only web dashboard of the cluster on 127.0.0.1 (with this
    /// configuration's credentials; the URL printed carries a one-time random token).
    Dashboard(DashboardArgs),
    /// The controller cluster.
    Cluster {
        /// What to show.
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Join tokens for agents and controllers (admin).
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Client configurations: users, contexts.
    Config {
        /// What to do.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the version of shoalctl and of the controller that answers.
    Version {
        /// Only shoalctl's own version (no request to a controller).
        #[arg(long)]
        client: bool,
    },
    /// The documentation of a kind or one of its fields: `explain pod.spec.containers`.
    Explain {
        /// KIND or KIND.FIELD.FIELD… (kind names, plurals and short names work).
        #[arg(value_name = "KIND[.FIELD]")]
        target: String,
        /// Every field below, as a tree (names and types, no descriptions).
        #[arg(long)]
        recursive: bool,
    },
    /// The resource types the cluster serves (NAME SHORTNAMES APIVERSION NAMESPACED KIND).
    ApiResources {
        /// Omit the header line.
        #[arg(long)]
        no_headers: bool,
    },
    /// Print a shell completion script, e.g. `source <(shoalctl completion bash)`.
    Completion {
        /// bash, zsh or fish.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// The shells `completion` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash (`source <(shoalctl completion bash)`).
    Bash,
    /// zsh (`source <(shoalctl completion zsh)`).
    Zsh,
    /// fish (`shoalctl completion fish | source`).
    Fish,
}

/// `shoalctl token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a join token; prints it with the CA hash joiners check.
    Create {
        /// How long it can be used, e.g. 1h, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = parse_span)]
        ttl: Duration,
        /// How many joins it allows (0: any number until it expires).
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// What it is for: `node` (an agent joins), `controller` (a controller joins), or
        /// `registry` (the password of `docker login` to the built-in registry, standing for
        /// --user with --role, in the namespace of `-n NS` when given; never spent).
        #[arg(long, default_value = "node")]
        usage: String,
        /// A note shown by `token list`.
        #[arg(long, default_value = "")]
        description: String,
        /// `--usage registry`: the user name the token stands for.
        #[arg(long, default_value = "")]
        user: String,
        /// `--usage registry`: admin, edit (pull and push) or view (pull).
        #[arg(long, default_value = "")]
        role: String,
        // `--usage registry` with the global `-n/--namespace NS`: only repositories of
        // that namespace (`NS/NAME`; a one-component name such as `busybox` is in
        // `default`); without it every namespace the role reaches.
    },
    /// The join tokens (never their secrets).
    List,
    /// Revoke a token by its id (the part before the dot).
    Revoke {
        /// The token id (or the whole token).
        id: String,
    },
}

/// `shoalctl config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Make a user (a certificate signed by the cluster CA) and print a configuration
    /// file for them on stdout (admin). The key is made here and never sent. With
    /// `--namespace NS` the user may only use that namespace (edit and view).
    CreateUser {
        /// The user name.
        name: String,
        /// `admin`, `edit` or `view`.
        #[arg(long)]
        role: String,
        /// How long the certificate is valid.
        #[arg(long, default_value = "365d", value_parser = parse_span)]
        ttl: Duration,
    },
    /// The contexts of the configuration file.
    GetContexts,
    /// The current context.
    CurrentContext,
    /// Make a context the current one (edits the configuration file).
    UseContext {
        /// The context's name.
        name: String,
    },
    /// Add the clusters, users and contexts of another configuration file to this one.
    Merge {
        /// The file to take them from.
        file: PathBuf,
    },
}

/// `shoalctl cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members (voters and learners), leader, term, commit index and per-member health.
    Status {
        /// Output format: json or yaml (default: table).
        #[arg(short = 'o', long = "output", value_name = "FORMAT")]
        output: Option<String>,
    },
    /// Add a controller started with `--join` (and an empty data dir): as a learner, then as
    /// a voter once it has caught up.
    AddMember {
        /// The new member's --id and advertised address.
        #[arg(value_name = "ID=HOST:PORT")]
        member: String,
    },
    /// Remove a controller from the cluster (refused for the last member or when no quorum
    /// would be left).
    RemoveMember {
        /// The member's id.
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Backups of the whole store.
    Snapshot {
        /// What to do.
        #[command(subcommand)]
        command: SnapshotCommand,
    },
}

/// `shoalctl cluster snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write a consistent backup of every object (with its revision) to FILE; restore it
    /// with `shoal-controller --restore FILE`.
    Save {
        /// The file to write (replaced only when the backup is complete).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// `shoalctl image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Stream a `docker save` or OCI image-layout tarball (plain or gzip) to the cluster.
    Import {
        /// The tarball ('-' for stdin).
        #[arg(value_name = "TARBALL")]
        path: PathBuf,
        /// An extra NAME[:TAG] to give the image.
        #[arg(long, value_name = "NAME:TAG")]
        tag: Option<String>,
    },
    /// List the images (NAME TAG DIGEST SIZE).
    #[command(visible_alias = "list")]
    Ls {
        /// Omit the header line.
        #[arg(long)]
        no_headers: bool,
    },
    /// Remove image names (and the blobs no other image uses).
    #[command(visible_alias = "remove")]
    Rm {
        /// NAME[:TAG] references.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },
    /// Write cluster images to a tarball that `docker load` (and `image import`) reads.
    Save {
        /// NAME[:TAG] or digest references of cluster images.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
        /// The tarball to write ('-' for stdout).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Give a cluster image another NAME[:TAG] (taken off any image that had it).
    Tag {
        /// The image: NAME[:TAG] or digest.
        #[arg(value_name = "SOURCE")]
        source: String,
        /// The new NAME[:TAG].
        #[arg(value_name = "TARGET")]
        target: String,
    },
    /// Push a cluster image to a registry.
    Push {
        /// The cluster image: NAME[:TAG] or digest.
        #[arg(value_name = "SOURCE")]
        source: String,
        /// Where to push it: REGISTRY/REPOSITORY[:TAG] (default: SOURCE); an `http://`
        /// prefix means plain HTTP.
        #[arg(value_name = "DEST")]
        dest: Option<String>,
        /// How to reach the registry.
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull an image from a registry into the cluster.
    Pull {
        /// REGISTRY/REPOSITORY[:TAG] or …@sha256:…; an `http://` prefix means plain HTTP.
        #[arg(value_name = "REF")]
        reference: String,
        /// An extra NAME[:TAG] to give the image in the cluster.
        #[arg(long, value_name = "NAME:TAG")]
        tag: Option<String>,
        /// How to reach the registry.
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

/// How `image push` and `image pull` reach a registry.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// USER:PASSWORD for the registry (default: the Docker config of `docker login`,
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
    /// A PEM file of CA certificates to trust for the registry (besides the system's).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Talk plain HTTP to the registry.
    #[arg(long)]
    pub plain_http: bool,
    /// Do not verify the registry's TLS certificate (testing only).
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
}

/// Arguments of `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The pod (or pod/NAME), or TYPE/NAME of a deployment or job (one of its pods,
    /// running ones first). Omitted with -l.
    #[arg(value_name = "POD", required_unless_present = "selector")]
    pub pod: Option<String>,
    /// The pods matching this label selector (each line prefixed with its source).
    #[arg(
        short = 'l',
        long = "selector",
        value_name = "SELECTOR",
        conflicts_with = "pod"
    )]
    pub selector: Option<String>,
    /// Every container of each pod (each line prefixed with its source).
    #[arg(long)]
    pub all_containers: bool,
    /// Prefix each line with [pod/NAME/CONTAINER] (default: on when several streams).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub prefix: Option<bool>,
    /// The container (default: the pod's only or first container).
    #[arg(short = 'c', long, value_name = "CONTAINER")]
    pub container: Option<String>,
    /// Keep streaming new lines until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (default: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub tail: Option<i64>,
    /// Only lines newer than this, e.g. 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_span, conflicts_with = "since_time")]
    pub since: Option<Duration>,
    /// Only lines at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub since_time: Option<String>,
    /// Prefix each line with its timestamp.
    #[arg(long)]
    pub timestamps: bool,
    /// The previous (terminated) instance of the container.
    #[arg(short = 'p', long)]
    pub previous: bool,
}

/// Arguments of `build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The image's NAME[:TAG] (`:latest` when no tag).
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tag: String,
    /// The Dockerfile (default: DIR/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A build argument (an ARG's value); repeatable. `K` alone takes K's value from the
    /// environment.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Build this stage (and what it needs) instead of the last.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// The node to build on (default: the controller picks a Ready, schedulable node).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Run every step; use no cached result.
    #[arg(long)]
    pub no_cache: bool,
    /// Print only the image's digest at the end (no step output).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// The build context: a directory (`.dockerignore` in it is honoured).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Arguments of `commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The container (default: the pod's only or first container).
    #[arg(short = 'c', long, value_name = "CONTAINER")]
    pub container: Option<String>,
    /// A Dockerfile line applied to the image's config (`CMD …`, `ENTRYPOINT …`, `ENV K=V`,
    /// `WORKDIR …`, `USER …`, `EXPOSE …`, `VOLUME …`, `LABEL …`); repeatable.
    #[arg(long = "change", value_name = "LINE")]
    pub changes: Vec<String>,
    /// The pod (or pod/NAME).
    #[arg(value_name = "POD")]
    pub pod: String,
    /// The new image's NAME[:TAG].
    #[arg(value_name = "NAME[:TAG]")]
    pub name: String,
}

/// Arguments of `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Forward standard input to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Allocate a terminal (puts the local one in raw mode).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The container (default: the pod's only or first container).
    #[arg(short = 'c', long, value_name = "CONTAINER")]
    pub container: Option<String>,
    /// The pod (or pod/NAME).
    #[arg(value_name = "POD")]
    pub pod: String,
    /// The command and its arguments, after `--`.
    #[arg(value_name = "COMMAND", last = true, required = true)]
    pub command: Vec<String>,
}

/// Arguments of `attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Forward standard input to the process (the container needs `stdin` or `tty`).
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Use the local terminal in raw mode (the container needs `tty`).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The container (default: the pod's only or first container).
    #[arg(short = 'c', long, value_name = "CONTAINER")]
    pub container: Option<String>,
    /// The pod (or pod/NAME).
    #[arg(value_name = "POD")]
    pub pod: String,
}

/// Arguments of `cp`.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// What to copy: a local path, or [NAMESPACE/]POD:PATH.
    #[arg(value_name = "SRC")]
    pub source: String,
    /// Where to: a local path, or [NAMESPACE/]POD:PATH (exactly one side is a pod).
    #[arg(value_name = "DEST")]
    pub dest: String,
    /// The container (default: the pod's only or first container).
    #[arg(short = 'c', long, value_name = "CONTAINER")]
    pub container: Option<String>,
}

/// Arguments of `port-forward`.
#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// The pod (or pod/NAME), svc/NAME (a pod it selects; ports are the service's) or
    /// TYPE/NAME of an owner such as deploy/NAME (one of its pods, running ones first).
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// [LOCAL:]REMOTE: listen on 127.0.0.1:LOCAL (same as REMOTE when omitted; `:REMOTE`
    /// picks a free port) and forward each connection to REMOTE of the pod.
    #[arg(value_name = "PORTS", required = true, num_args = 1..)]
    pub ports: Vec<String>,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pod's name (also its container's name).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The container image.
    #[arg(long, value_name = "IMAGE")]
    pub image: String,
    /// The pod's restart policy: Always, OnFailure or Never.
    #[arg(long, value_name = "POLICY", default_value = "Always")]
    pub restart: String,
    /// An environment variable K=V of the container (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// The pod's labels, K=V[,K=V…] (default: run=NAME).
    #[arg(short = 'l', long, value_name = "LABELS")]
    pub labels: Option<String>,
    /// The port the container exposes (containerPort).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// The arguments after `--` are the command (replacing the image's entrypoint), not
    /// arguments to it.
    #[arg(long)]
    pub command: bool,
    /// Wait for the container to run, print its output until it ends and exit with its
    /// exit code.
    #[arg(long)]
    pub attach: bool,
    /// Delete the pod when it ends (with --attach).
    #[arg(long)]
    pub rm: bool,
    /// Give the container a stdin and attach to it (implies --attach); its end closes
    /// the container's stdin.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Give the container a TTY (with -i: the local terminal in raw mode).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// How long --attach waits for the container to start.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_timeout)]
    pub pod_running_timeout: Duration,
    /// Arguments (or with --command, the command and its arguments), after `--`.
    #[arg(value_name = "ARGS", last = true)]
    pub args: Vec<String>,
}

/// `shoalctl top …`.
#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// CPU and memory per pod.
    #[command(visible_aliases = ["pod", "po"])]
    Pods {
        /// Pods of every namespace (adds a NAMESPACE column).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Only this pod.
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
    /// CPU and memory per node, with their share of the capacity.
    #[command(visible_aliases = ["node", "no"])]
    Nodes {
        /// Only this node.
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
}

/// Arguments of `scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// `deployment NAME` or `deployment/NAME`.
    #[arg(value_name = "TYPE[/NAME]", required = true, num_args = 1..=2)]
    pub target: Vec<String>,
    /// The new replica count.
    #[arg(long, value_name = "N", required = true)]
    pub replicas: u32,
    /// Only scale if the object is still at this resourceVersion.
    #[arg(long, value_name = "RV")]
    pub resource_version: Option<u64>,
}

/// `shoalctl set …`.
#[derive(Debug, Subcommand)]
pub enum SetCommand {
    /// Change container images of a deployment's template (or of a pod).
    Image {
        /// `deployment/NAME` (or `deployment NAME`), then CONTAINER=IMAGE pairs.
        #[arg(value_name = "ARGS", required = true, num_args = 2..)]
        args: Vec<String>,
    },
}

/// `shoalctl rollout …`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait until the deployment's, daemon set's or stateful set's rollout is complete,
    /// printing progress.
    Status {
        /// `deployment/NAME`, `daemonset/NAME` (`ds/NAME`), `statefulset/NAME` (`sts/NAME`)
        /// or `deployment NAME`.
        #[arg(value_name = "TYPE[/NAME]", required = true, num_args = 1..=2)]
        target: Vec<String>,
        /// Give up after this long (e.g. 90s, 5m; default: wait forever).
        #[arg(long, value_name = "DURATION", value_parser = parse_span)]
        timeout: Option<Duration>,
    },
    /// List the deployment's revisions.
    History {
        /// `deployment/NAME` or `deployment NAME`.
        #[arg(value_name = "TYPE[/NAME]", required = true, num_args = 1..=2)]
        target: Vec<String>,
        /// Show the template of this revision.
        #[arg(long, value_name = "N")]
        revision: Option<i64>,
    },
    /// Go back to the previous (or the given) revision's template.
    Undo {
        /// `deployment/NAME` or `deployment NAME`.
        #[arg(value_name = "TYPE[/NAME]", required = true, num_args = 1..=2)]
        target: Vec<String>,
        /// The revision to return to (default: the one before the current).
        #[arg(long, value_name = "N")]
        to_revision: Option<i64>,
    },
    /// Replace every pod of the deployment, daemon set or stateful set with a new one (a
    /// rolling update that changes only the template annotation
    /// kubectl.kubernetes.io/restartedAt).
    Restart {
        /// `deployment/NAME`, `daemonset/NAME` (`ds/NAME`), `statefulset/NAME` (`sts/NAME`)
        /// or `deployment NAME`.
        #[arg(value_name = "TYPE[/NAME]", required = true, num_args = 1..=2)]
        target: Vec<String>,
    },
}

/// Arguments of `cordon` and `uncordon`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node (or node/NAME).
    #[arg(value_name = "NODE")]
    pub node: String,
}

/// Arguments of `dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// The port on 127.0.0.1 (0: a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Do not try to open a browser (`xdg-open`); only print the URL.
    #[arg(long)]
    pub no_browser: bool,
    /// Lines of a pod's log the logs page shows.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub log_lines: i64,
}

/// Arguments of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only the events about this object (TYPE/NAME, e.g. pod/web-1).
    #[arg(long = "for", value_name = "TYPE/NAME")]
    pub for_: Option<String>,
    /// Only events of this type: Normal or Warning.
    #[arg(long, value_name = "TYPE")]
    pub types: Option<String>,
    /// Across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// After the list, print each new event until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Output format (as for get).
    #[arg(short = 'o', long = "output", value_name = "FORMAT")]
    pub output: Option<String>,
    /// Omit the header line.
    #[arg(long)]
    pub no_headers: bool,
}

/// Arguments of `wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// TYPE/NAME… (one type), or TYPE NAME…, or TYPE with -l.
    #[arg(value_name = "TYPE[/NAME]", required = true, num_args = 1..)]
    pub targets: Vec<String>,
    /// condition=NAME[=VALUE] (VALUE defaults to True), delete, or
    /// jsonpath='{PATH}'=VALUE.
    #[arg(long = "for", value_name = "CONDITION")]
    pub for_: String,
    /// The objects matching this label selector.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Give up after this long (exit 1).
    #[arg(long, default_value = "30s", value_parser = parse_span)]
    pub timeout: Duration,
}

/// Arguments of `taint`.
#[derive(Debug, Args)]
pub struct TaintArgs {
    /// The node (NAME, node/NAME, or `node NAME`).
    #[arg(value_name = "NODE")]
    pub node: String,
    /// KEY[=VALUE]:EFFECT to add (effect NoSchedule, PreferNoSchedule or NoExecute),
    /// KEY:EFFECT- or KEY- to remove.
    #[arg(value_name = "TAINT", required = true, num_args = 1..)]
    pub taints: Vec<String>,
    /// Allow changing the value of an existing taint (same key and effect).
    #[arg(long)]
    pub overwrite: bool,
}

/// Arguments of `drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The node (or node/NAME).
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Go on when daemon pods are bound to the node (they are left alone).
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Also delete pods that no controller owns (they are not recreated).
    #[arg(long)]
    pub force: bool,
    /// Give up waiting for the pods to go after this long (default: wait forever).
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    pub timeout: Option<Duration>,
    /// Show what would be deleted, without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file, directory (its *.yaml, *.yml, *.json) or '-' for stdin; repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Show what would happen without writing: `client` computes it here, `server` has
    /// the controller validate and admit every object as for a real apply (`--dry-run`
    /// alone means `client`).
    #[arg(
        long,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "client",
        value_enum
    )]
    pub dry_run: Option<DryRun>,
}

/// `--dry-run=…` of `apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DryRun {
    /// Write (the same as no `--dry-run`).
    None,
    /// Read the live objects and compute the actions here; send nothing that writes.
    Client,
    /// Send the request with `dry_run`: the controller validates and admits everything
    /// and answers what it would do, without writing.
    Server,
}

/// Arguments of `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Manifest file, directory (its *.yaml, *.yml, *.json) or '-' for stdin; repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
}

/// Arguments of `edit`.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// `TYPE/NAME` or `TYPE NAME`.
    #[arg(value_name = "TYPE[/NAME]", required = true, num_args = 1..=2)]
    pub target: Vec<String>,
}

/// Arguments of `patch`.
#[derive(Debug, Args)]
pub struct PatchArgs {
    /// `TYPE/NAME` or `TYPE NAME`.
    #[arg(value_name = "TYPE[/NAME]", required = true, num_args = 1..=2)]
    pub target: Vec<String>,
    /// The patch, as JSON (YAML is accepted too).
    #[arg(short = 'p', long = "patch", value_name = "PATCH", required = true)]
    pub patch: String,
    /// `merge` (RFC 7386 JSON merge patch) or `json` (RFC 6902 JSON patch).
    #[arg(
        long = "type",
        value_name = "TYPE",
        default_value = "merge",
        value_enum
    )]
    pub patch_type: PatchType,
}

/// `--type` of `patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PatchType {
    /// RFC 7386: a partial object; null removes a field, lists are replaced.
    Merge,
    /// RFC 6902: a list of operations (add, remove, replace, move, copy, test).
    Json,
}

/// Arguments of `create`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CreateArgs {
    /// Manifest file, directory (its *.yaml, *.yml, *.json) or '-' for stdin; repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Or make one object from literals and files.
    #[command(subcommand)]
    pub object: Option<CreateObject>,
}

/// `create namespace …`, `create secret …`, `create configmap …`.
#[derive(Debug, Subcommand)]
pub enum CreateObject {
    /// Create a Namespace (objects can be created only in an existing namespace).
    #[command(name = "namespace", alias = "ns")]
    Namespace {
        /// Name of the namespace (a DNS-1123 label).
        name: String,
        /// Print the object instead of creating it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create a Secret (generic, docker-registry).
    Secret {
        /// The type of Secret.
        #[command(subcommand)]
        kind: CreateSecret,
    },
    /// Create a ConfigMap from literals, files and directories.
    #[command(name = "configmap", alias = "cm")]
    ConfigMap(FromSourcesArgs),
}

/// The kinds of Secret `create secret` makes.
#[derive(Debug, Subcommand)]
pub enum CreateSecret {
    /// An Opaque Secret from literals, files and directories.
    Generic(FromSourcesArgs),
    /// Registry credentials (type kubernetes.io/dockerconfigjson) for image pulls.
    DockerRegistry(DockerRegistryArgs),
}

/// Name and data sources of `create configmap` and `create secret generic`.
#[derive(Debug, Args)]
pub struct FromSourcesArgs {
    /// Name of the object.
    pub name: String,
    /// KEY=VALUE (repeatable).
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    pub from_literal: Vec<String>,
    /// [KEY=]PATH: a file (key: its name, or KEY) or a directory (each regular file).
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    pub from_file: Vec<String>,
    /// Print the object instead of creating it.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `create secret docker-registry`.
#[derive(Debug, Args)]
pub struct DockerRegistryArgs {
    /// Name of the Secret.
    pub name: String,
    /// Registry host, e.g. registry.example.com.
    #[arg(long, default_value = "https://index.docker.io/v1/")]
    pub docker_server: String,
    /// User name.
    #[arg(long)]
    pub docker_username: String,
    /// Password or token (visible to other local users in the process list; prefer
    /// SHOAL_DOCKER_PASSWORD).
    #[arg(long, env = "SHOAL_DOCKER_PASSWORD", hide_env_values = true)]
    pub docker_password: String,
    /// E-mail (optional).
    #[arg(long)]
    pub docker_email: Option<String>,
    /// Print the object instead of creating it.
    #[arg(long)]
    pub dry_run: bool,
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
    /// Field selector: spec.nodeName, metadata.name, metadata.namespace, status.phase,
    /// status.podIP;
    /// for events also involvedObject.kind, involvedObject.name, type, reason.
    #[arg(long, value_name = "SELECTOR")]
    pub field_selector: Option<String>,
    /// Output format: wide, yaml, json, name, jsonpath=TEMPLATE (kubectl's, e.g.
    /// '{.items[*].metadata.name}') or custom-columns=HEADER:PATH,… (e.g.
    /// NAME:.metadata.name,NODE:.spec.nodeName).
    #[arg(short = 'o', long = "output", value_name = "FORMAT")]
    pub output: Option<String>,
    /// Sort the objects by a field (a JSONPath, e.g. .metadata.name or
    /// '{.status.startTime}'); numbers by value.
    #[arg(long, value_name = "PATH")]
    pub sort_by: Option<String>,
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

pub use shoal_flags::{parse_span, parse_timeout};

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn spans_parse() {
        assert_eq!(parse_span("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_span("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_span("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_span("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_span("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_span("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_span("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_span("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_span("0s"), Ok(Duration::ZERO));
        for bad in ["", "m", "5x", "h5", "5m3", "-5m", "1y"] {
            let e = parse_span(bad).unwrap_err();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn workload_verbs_parse() {
        let c = Cli::try_parse_from([
            "shoalctl", "exec", "-it", "web-1", "-c", "app", "--", "sh", "-c", "echo hi",
        ])
        .unwrap();
        let Command::Exec(e) = c.command else {
            panic!("not exec")
        };
        assert!(e.stdin && e.tty);
        assert_eq!(e.container.as_deref(), Some("app"));
        assert_eq!(e.command, ["sh", "-c", "echo hi"]);
        let c = Cli::try_parse_from([
            "shoalctl", "logs", "-f", "--tail", "10", "--since", "5m", "-p", "web-1",
        ])
        .unwrap();
        let Command::Logs(l) = c.command else {
            panic!("not logs")
        };
        assert!(l.follow && l.previous);
        assert_eq!(
            (l.tail, l.since),
            (Some(10), Some(Duration::from_secs(300)))
        );
        assert!(
            Cli::try_parse_from([
                "shoalctl",
                "logs",
                "--since",
                "5m",
                "--since-time",
                "2026-01-01T00:00:00Z",
                "p",
            ])
            .is_err()
        );
        let c = Cli::try_parse_from(["shoalctl", "scale", "deployment", "web", "--replicas", "5"])
            .unwrap();
        let Command::Scale(s) = c.command else {
            panic!("not scale")
        };
        assert_eq!((s.target.len(), s.replicas), (2, 5));
        assert!(Cli::try_parse_from(["shoalctl", "scale", "deploy/web"]).is_err());
        assert!(Cli::try_parse_from(["shoalctl", "exec", "web-1"]).is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn timeouts_take_every_unit_of_the_one_parser() {
        // `--request-timeout 1h` was refused where `--timeout 1h` worked: one parser now.
        let c = Cli::try_parse_from([
            "shoalctl",
            "--request-timeout",
            "1h",
            "--connect-timeout",
            "500ms",
            "version",
        ])
        .unwrap();
        assert_eq!(c.request_timeout, Duration::from_secs(3600));
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["shoalctl", "--request-timeout", "0s", "version"]).is_err());
        assert!(Cli::try_parse_from(["shoalctl", "--request-timeout", "2d", "version"]).is_ok());
    }

    #[test]
    fn global_flags_anywhere_and_short_forms() {
        let c = Cli::try_parse_from([
            "shoalctl", "get", "pods", "-n", "kube", "-l", "app=web", "-o", "wide", "--server",
            "a:1",
        ])
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("kube"));
        assert_eq!(c.server.as_deref(), Some("a:1"));
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
        let dry = |args: &[&str]| {
            let c = Cli::try_parse_from([&["shoalctl", "apply"], args].concat()).unwrap();
            let Command::Apply(a) = c.command else {
                panic!("not apply")
            };
            a.dry_run
        };
        assert_eq!(dry(&["-f", "x.yaml"]), None);
        assert_eq!(dry(&["--dry-run", "-f", "x.yaml"]), Some(DryRun::Client));
        assert_eq!(
            dry(&["-f", "x.yaml", "--dry-run=server"]),
            Some(DryRun::Server)
        );
        assert_eq!(
            dry(&["--dry-run=client", "-f", "x.yaml"]),
            Some(DryRun::Client)
        );
        assert!(Cli::try_parse_from(["shoalctl", "apply", "--dry-run=maybe", "-f", "x"]).is_err());
        let c = Cli::try_parse_from([
            "shoalctl",
            "patch",
            "deploy/web",
            "-p",
            r#"{"spec":{}}"#,
            "--type",
            "json",
        ])
        .unwrap();
        let Command::Patch(p) = c.command else {
            panic!("not patch")
        };
        assert_eq!((p.target.len(), p.patch_type), (1, PatchType::Json));
    }
}
