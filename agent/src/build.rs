//! Image builds and commits on this node (`shoalctl build`, `shoalctl commit`; see
//! docs/build.md and docs/design/0010-builds.md).
//!
//! The Dockerfile is parsed and planned by `shoal-build` (pure); this module does the
//! I/O. Builds have a runtime of their own under `DATA/agent/build` (made on the first
//! build), so their sandboxes and containers never meet the pod sync loop, and its image
//! store is the **build cache**: every step's result is an image there, named
//! `shoal-build-cache:<cache key>`, which survives agent restarts. FROM images come the
//! way pods' images do (the cluster, then the registry, pull policy `Always`) and are
//! copied from the node's store into the build store.
//!
//! A RUN step is a container of the step's parent image in the build's sandbox (which
//! has the pod network when the node has one); its overlayfs upper directory becomes the
//! step's layer. COPY and ADD write their layer from the context (or a stage's files)
//! directly. The result goes back to the controller: `result` (with the manifest digest)
//! first, then the image as an OCI-layout tarball, which the controller imports into the
//! cluster's store unless the cluster has that digest already (a cached rebuild then only
//! names it); a failed build leaves no image.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_build::config::{self, Change};
use shoal_build::dockerfile::{self, CopySpec, Dockerfile, Kind, expand};
use shoal_build::layer::{Layer, LayerBuilder, Owner, RootView};
use shoal_build::plan::{self, BuildPlan, Source};
use shoal_proto::build_output::Output;
use shoal_proto::{BuildOutput, BuildResult, BuildStart, CommitRequest};
use shoal_runtime::digest::Digest;
use shoal_runtime::image::config::Manifest;
use shoal_runtime::image::registry::Keyring;
use shoal_runtime::{
    ContainerSpec, ContainerState, ImageStore, LogOptions, PodSandboxConfig, Runtime, RuntimeConfig,
};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::Sender;
use tonic::Status;

use crate::agent::Agent;

/// Images in the build store named for a cache key.
pub const CACHE_REPO: &str = "shoal-build-cache";

/// Bytes per `image` message.
const CHUNK: usize = 256 << 10;

/// Where a build's output goes (the gRPC response stream).
pub type Progress = Sender<Result<BuildOutput, Status>>;

/// Why a build or a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildFailure {
    /// The Dockerfile or the request is wrong (the message names the line).
    #[error("{0}")]
    Invalid(String),
    /// A FROM or `--from` image, or the pod's container, does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A RUN step failed (the message has its exit code).
    #[error("{0}")]
    Step(String),
    /// The node could not do it.
    #[error("{0}")]
    Internal(String),
    /// The caller went away.
    #[error("the build's client went away")]
    Gone,
}

/// The one place build failures become statuses.
pub fn to_status(e: &BuildFailure) -> Status {
    match e {
        BuildFailure::Invalid(m) => Status::invalid_argument(m.clone()),
        BuildFailure::NotFound(m) => Status::not_found(m.clone()),
        BuildFailure::Step(m) => Status::aborted(m.clone()),
        BuildFailure::Internal(m) => Status::internal(m.clone()),
        BuildFailure::Gone => Status::cancelled(e.to_string()),
    }
}

fn internal(what: &str) -> impl Fn(&dyn std::fmt::Display) -> BuildFailure + '_ {
    move |e| BuildFailure::Internal(format!("{what}: {e}"))
}

/// The build runtime (made on the first build) and the cache's bound.
#[derive(Debug, Default)]
pub struct Builds {
    rt: Mutex<Option<Arc<Runtime>>>,
    book: Mutex<Book>,
    /// `--build-cache-max-bytes` (0: no bound).
    limit: u64,
}

/// Builds in progress and when each image of the build store was last used.
#[derive(Debug, Default)]
struct Book {
    active: usize,
    /// Loaded from [`USES_FILE`] on the first build that ends.
    uses: Option<Uses>,
}

/// When each image (manifest digest) of the build store was last built or found by a
/// cache lookup, as a sequence number: only the order matters, so no clock is trusted.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Uses {
    seq: u64,
    used: BTreeMap<String, u64>,
}

/// The file of [`Uses`], in the build runtime's directory.
const USES_FILE: &str = "cache-uses.json";

impl Builds {
    /// No runtime yet; the cache bounded to `limit` bytes of layers (0: unbounded).
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    fn begin(&self) {
        self.book.lock().unwrap_or_else(|p| p.into_inner()).active += 1;
    }

    /// Ends a build that used the images `used`: records the uses and, when no other
    /// build is running (so nothing in the store is in use), drops the least recently
    /// used images until the cache fits its bound. Errors are logged: a build's result
    /// does not depend on them.
    fn finish(&self, dir: &Path, used: &[Digest]) {
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        book.active = book.active.saturating_sub(1);
        let active = book.active;
        let path = dir.join(USES_FILE);
        let uses = book.uses.get_or_insert_with(|| {
            fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default()
        });
        for d in used {
            uses.seq += 1;
            uses.used.insert(d.to_string(), uses.seq);
        }
        let rt = self.rt.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if active == 0
            && self.limit > 0
            && let Some(rt) = rt
        {
            match prune(rt.images(), uses, self.limit) {
                Ok(Some((n, before, after))) => tracing::info!(
                    images = n,
                    before,
                    after,
                    limit = self.limit,
                    "build cache pruned (least recently used first)"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!("build cache: {e}"),
            }
        }
        let saved = serde_json::to_vec(&*uses)
            .map_err(std::io::Error::other)
            .and_then(|b| shoal_files::write_atomic(&path, &b, 0o600));
        if let Err(e) = saved {
            tracing::warn!("build cache: {}: {e}", path.display());
        }
    }

    fn runtime(&self, agent: &Agent) -> Result<Arc<Runtime>, BuildFailure> {
        let mut slot = self.rt.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rt) = slot.as_ref() {
            return Ok(rt.clone());
        }
        let exe = std::env::current_exe().map_err(|e| internal("the agent's executable")(&e))?;
        let mut cfg = RuntimeConfig::new(agent.dir.join("build"), exe);
        cfg.cgroup_parent = "shoal-build".into();
        cfg.cgroup_layout = Some(agent.rt.cgroup_layout().clone());
        cfg.image_limits = agent.rt.images().limits();
        let rt = Arc::new(Runtime::new(cfg).map_err(|e| internal("the build runtime")(&e))?);
        *slot = Some(rt.clone());
        Ok(rt)
    }
}

/// Drops the least recently used images of the build store until the layers left take at
/// most `limit` bytes (blobs plus unpacked directories), then deletes what no image uses:
/// `(images dropped, bytes before, bytes after)`, or `None` when the cache fits.
fn prune(
    store: &ImageStore,
    uses: &mut Uses,
    limit: u64,
) -> Result<Option<(usize, u64, u64)>, String> {
    use shoal_build::cache::{self, CachedImage};
    let list = store.list().map_err(|e| e.to_string())?;
    let digests: std::collections::BTreeSet<Digest> = list.into_iter().map(|s| s.digest).collect();
    let mut images = Vec::new();
    let mut bytes = BTreeMap::new();
    for d in digests {
        let Ok(img) = store.resolve(&d.to_string()) else {
            continue;
        };
        for l in &img.layers {
            bytes.entry(l.to_string()).or_insert_with(|| {
                let blob = fs::metadata(store.blob_path(l)).map_or(0, |m| m.len());
                blob + dir_bytes(&store.layer_dir(l))
            });
        }
        images.push(CachedImage {
            last_use: uses.used.get(&d.to_string()).copied().unwrap_or(0),
            id: d.to_string(),
            layers: img.layers.iter().map(Digest::to_string).collect(),
        });
    }
    let before = cache::size(&images, &bytes);
    let drop = cache::evict(&images, &bytes, limit);
    if drop.is_empty() {
        return Ok(None);
    }
    for id in &drop {
        store.remove(id).map_err(|e| format!("drop {id}: {e}"))?;
        uses.used.remove(id);
    }
    store
        .gc(&std::collections::BTreeSet::new())
        .map_err(|e| e.to_string())?;
    let after = cache::size(images.iter().filter(|i| !drop.contains(&i.id)), &bytes);
    Ok(Some((drop.len(), before, after)))
}

/// Bytes of the files under `dir` (a hard-linked file counted once; 0 if missing).
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if seen.insert((m.dev(), m.ino())) {
                total += m.len();
            }
        }
    }
    total
}

/// One step's result: an image in a store.
#[derive(Debug, Clone)]
struct State {
    manifest: Digest,
    config: Value,
    /// Layer blobs (digest, size), bottom first.
    layers: Vec<(Digest, u64)>,
    /// Unpacked layers, bottom first (empty for commits, which do not unpack).
    dirs: Vec<PathBuf>,
}

fn say(out: &Progress, text: String) -> Result<(), BuildFailure> {
    out.blocking_send(Ok(BuildOutput {
        output: Some(Output::Progress(text.into_bytes())),
    }))
    .map_err(|_| BuildFailure::Gone)
}

fn read_state(store: &ImageStore, digest: &Digest) -> Result<State, BuildFailure> {
    let img = store
        .resolve(&digest.to_string())
        .map_err(|e| internal("build store")(&e))?;
    let mp = store.blob_path(digest);
    let bytes = fs::read(&mp).map_err(|e| internal(&mp.display().to_string())(&e))?;
    let m: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| internal(&format!("manifest {digest}"))(&e))?;
    let cp = store.blob_path(&img.config_digest);
    let cbytes = fs::read(&cp).map_err(|e| internal(&cp.display().to_string())(&e))?;
    let config: Value = serde_json::from_slice(&cbytes)
        .map_err(|e| internal(&format!("config {}", img.config_digest))(&e))?;
    Ok(State {
        manifest: digest.clone(),
        config,
        layers: m
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.size))
            .collect(),
        dirs: img.layer_dirs,
    })
}

fn import_bytes(store: &ImageStore, data: &[u8]) -> Result<Digest, BuildFailure> {
    let d = Digest::of_bytes(data);
    if !store.has_blob(&d) {
        store
            .import_blob(&d, &mut &data[..])
            .map_err(|e| internal("build store")(&e))?;
    }
    Ok(d)
}

/// A new image: `parent`'s layers plus `layer`, with `config`. `register` unpacks it and
/// names it by its digest (what a next step runs); otherwise only the blobs are stored.
fn new_state(
    store: &ImageStore,
    parent: &State,
    mut config: Value,
    layer: Option<Layer>,
    register: bool,
) -> Result<State, BuildFailure> {
    let mut layers = parent.layers.clone();
    if let Some(l) = layer {
        if !store.has_blob(&l.digest) {
            let mut f = File::open(&l.path).map_err(|e| internal("layer")(&e))?;
            store
                .import_blob(&l.digest, &mut f)
                .map_err(|e| internal("build store")(&e))?;
        }
        let _ = fs::remove_file(&l.path);
        config::push_diff_id(&mut config, &l.diff_id);
        layers.push((l.digest, l.size));
    }
    let cbytes = serde_json::to_vec(&config).map_err(|e| internal("config")(&e))?;
    import_bytes(store, &cbytes)?;
    let mbytes = config::manifest(&cbytes, &layers);
    let manifest = import_bytes(store, &mbytes)?;
    let dirs = if register {
        store
            .register_pulled(&manifest, &[])
            .map_err(|e| internal("build store")(&e))?
            .layer_dirs
    } else {
        Vec::new()
    };
    Ok(State {
        manifest,
        config,
        layers,
        dirs,
    })
}

/// Copies image `digest` from the node's store into the build store.
fn copy_image(from: &ImageStore, to: &ImageStore, digest: &Digest) -> Result<(), BuildFailure> {
    if to.resolve(&digest.to_string()).is_ok() {
        return Ok(());
    }
    let mbytes = fs::read(from.blob_path(digest)).map_err(|e| internal("node image store")(&e))?;
    let m: Manifest = serde_json::from_slice(&mbytes).map_err(|e| internal("manifest")(&e))?;
    for d in std::iter::once(&m.config.digest)
        .chain(m.layers.iter().map(|l| &l.digest))
        .chain(std::iter::once(digest))
    {
        if !to.has_blob(d) {
            let p = from.blob_path(d);
            let mut f = File::open(&p).map_err(|e| internal(&p.display().to_string())(&e))?;
            to.import_blob(d, &mut f)
                .map_err(|e| internal("build store")(&e))?;
        }
    }
    to.register_pulled(digest, &[])
        .map_err(|e| internal("build store")(&e))?;
    Ok(())
}

/// Writes `state` as an OCI-layout tarball named `name` (blobs from `store`) and sends
/// it in `image` messages.
async fn send_image(
    store: &ImageStore,
    state: &State,
    name: &str,
    tmp: &Path,
    out: &Progress,
) -> Result<(), BuildFailure> {
    let mbytes =
        fs::read(store.blob_path(&state.manifest)).map_err(|e| internal("manifest")(&e))?;
    let saved = shoal_runtime::image::archive::SavedImage::new(
        vec![name.to_string()],
        state.manifest.clone(),
        mbytes,
    )
    .map_err(|e| internal("image")(&e))?;
    let members = shoal_runtime::image::archive::plan(&[saved], false);
    let path = tmp.join("image.tar");
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| internal("image archive")(&e))?;
    let source = shoal_runtime::image::archive::DirSource(store.root().to_path_buf());
    shoal_runtime::image::archive::write(&mut file, &members, &source, &mut |_| {})
        .await
        .map_err(|e| internal("image archive")(&e))?;
    drop(file);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| internal("image archive")(&e))?;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| internal("image archive")(&e))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        out.send(Ok(BuildOutput {
            output: Some(Output::Image(buf)),
        }))
        .await
        .map_err(|_| BuildFailure::Gone)?;
    }
    Ok(())
}

/// A temporary directory under `dir`, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(dir: &Path, prefix: &str) -> Result<Self, BuildFailure> {
        let p = dir.join(format!("{prefix}-{}", shoal_runtime::util::random_hex()));
        shoal_files::private_dir(&p).map_err(|e| internal(&p.display().to_string())(&e))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs a build: `context` is the uploaded context tarball. Afterwards, whether it
/// succeeded or not, the cache keeps to its bound.
pub async fn build(
    agent: Arc<Agent>,
    start: BuildStart,
    context: PathBuf,
    out: Progress,
) -> Result<(), BuildFailure> {
    agent.builds.begin();
    let used = Arc::new(Mutex::new(Vec::new()));
    let r = build_steps(agent.clone(), start, context, out, used.clone()).await;
    let used = std::mem::take(&mut *used.lock().unwrap_or_else(|p| p.into_inner()));
    let a = agent.clone();
    let _ = tokio::task::spawn_blocking(move || a.builds.finish(&a.dir.join("build"), &used)).await;
    r
}

async fn build_steps(
    agent: Arc<Agent>,
    start: BuildStart,
    context: PathBuf,
    out: Progress,
    used: Arc<Mutex<Vec<Digest>>>,
) -> Result<(), BuildFailure> {
    let file = if start.dockerfile_name.is_empty() {
        "Dockerfile".to_string()
    } else {
        start.dockerfile_name.clone()
    };
    let at = |e: shoal_build::BuildError| match e {
        shoal_build::BuildError::Dockerfile { line, message } => {
            BuildFailure::Invalid(format!("{file}:{line}: {message}"))
        }
        e => BuildFailure::Invalid(e.to_string()),
    };
    let name = shoal_runtime::image::normalize_reference(&start.name)
        .map_err(|e| BuildFailure::Invalid(e.to_string()))?;
    if name.starts_with("sha256:") {
        return Err(BuildFailure::Invalid(format!(
            "image name {:?}: expected NAME[:TAG], not a digest",
            start.name
        )));
    }
    let df = dockerfile::parse(&start.dockerfile).map_err(at)?;
    let args: BTreeMap<String, String> = start.build_args.clone().into_iter().collect();
    let target = (!start.target.is_empty()).then_some(start.target.as_str());
    let plan = plan::plan(&df, target, &args).map_err(at)?;
    let rt = {
        let agent = agent.clone();
        tokio::task::spawn_blocking(move || agent.builds.runtime(&agent))
            .await
            .map_err(|e| internal("build runtime")(&e))??
    };
    let tmp_root = agent.dir.join("build").join("tmp");
    shoal_files::private_dir(&tmp_root).map_err(|e| internal("build tmp")(&e))?;
    let tmp = TempDir::new(&tmp_root, "b")?;
    for u in &plan.unused_args {
        say_async(
            &out,
            format!("warning: --build-arg {u} is not declared by an ARG of the stages built\n"),
        )
        .await?;
    }
    // The images the stages start from or copy from: pulled before any step runs.
    let mut images = BTreeMap::new();
    for i in &plan.order {
        let stage = &df.stages[*i];
        let mut wanted: Vec<(usize, &str)> = Vec::new();
        if let Source::Image(n) = &plan.bases[*i] {
            wanted.push((stage.line, n));
        }
        for (ins, s) in &plan.copies_from[*i] {
            if let Source::Image(n) = s {
                wanted.push((stage.instructions[*ins].line, n));
            }
        }
        for (line, image) in wanted {
            if images.contains_key(image) {
                continue;
            }
            let pulled = agent
                .puller
                .ensure_image(image, shoal_api::PullPolicy::Always, &Keyring::default())
                .await;
            if let Err(e) = pulled {
                return Err(BuildFailure::NotFound(format!(
                    "{file}:{line}: image {image:?}: {}",
                    e.message
                )));
            }
            let (node_rt, build_rt, name) = (agent.rt.clone(), rt.clone(), image.to_string());
            let digest = tokio::task::spawn_blocking(move || {
                let img = node_rt
                    .images()
                    .resolve(&name)
                    .map_err(|e| BuildFailure::NotFound(format!("image {name:?}: {e}")))?;
                copy_image(node_rt.images(), build_rt.images(), &img.digest)?;
                Ok::<_, BuildFailure>(img.digest)
            })
            .await
            .map_err(|e| internal("pull")(&e))??;
            used.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(digest.clone());
            images.insert(image.to_string(), digest);
        }
    }
    let ctx_dir = tmp.0.join("context");
    let exec = Exec {
        rt: rt.clone(),
        out: out.clone(),
        file: file.clone(),
        ctx_dir: ctx_dir.clone(),
        tmp: tmp.0.clone(),
        no_cache: start.no_cache,
        build_args: args,
        images,
        sandbox: None,
        net: agent
            .pod_network()
            .cloned()
            .map(|n| (n, tokio::runtime::Handle::current())),
        handle: tokio::runtime::Handle::current(),
        used,
        step: 0,
        steps: 0,
        cached: 0,
    };
    let (state, exec) = tokio::task::spawn_blocking(move || {
        let mut exec = exec;
        let r = (|| {
            fs::create_dir_all(&ctx_dir).map_err(|e| internal("context")(&e))?;
            let f = File::open(&context).map_err(|e| internal("context")(&e))?;
            shoal_runtime::image::layer::unpack_layer(f, &ctx_dir, "the build context")
                .map_err(|e| BuildFailure::Invalid(format!("build context: {e}")))?;
            exec.run(&df, &plan)
        })();
        exec.cleanup();
        r.map(|s| (s, exec))
    })
    .await
    .map_err(|e| internal("build")(&e))??;
    let result = BuildResult {
        name: name.clone(),
        digest: state.manifest.to_string(),
        node: agent.name.clone(),
        steps: exec.steps,
        cached: exec.cached,
    };
    send_result_and_image(rt.images(), &state, result, &tmp.0, &out).await
}

/// Sends `result`, then the image: the controller stops reading (and the send fails
/// quietly) when the cluster has that digest already.
async fn send_result_and_image(
    store: &ImageStore,
    state: &State,
    result: BuildResult,
    tmp: &Path,
    out: &Progress,
) -> Result<(), BuildFailure> {
    let name = result.name.clone();
    out.send(Ok(BuildOutput {
        output: Some(Output::Result(result)),
    }))
    .await
    .map_err(|_| BuildFailure::Gone)?;
    match send_image(store, state, &name, tmp, out).await {
        Err(BuildFailure::Gone) => Ok(()),
        r => r,
    }
}

async fn say_async(out: &Progress, text: String) -> Result<(), BuildFailure> {
    out.send(Ok(BuildOutput {
        output: Some(Output::Progress(text.into_bytes())),
    }))
    .await
    .map_err(|_| BuildFailure::Gone)
}

/// The blocking part of a build.
struct Exec {
    rt: Arc<Runtime>,
    out: Progress,
    file: String,
    ctx_dir: PathBuf,
    tmp: PathBuf,
    no_cache: bool,
    build_args: BTreeMap<String, String>,
    /// FROM and `--from` images, by name, in the build store.
    images: BTreeMap<String, Digest>,
    /// The build's sandbox, made for the first RUN.
    sandbox: Option<String>,
    net: Option<(Arc<crate::network::PodNetwork>, tokio::runtime::Handle)>,
    /// The agent's runtime, for downloads (`ADD URL`) from the blocking build.
    handle: tokio::runtime::Handle,
    /// The build store's images this build made or found in the cache (for the bound).
    used: Arc<Mutex<Vec<Digest>>>,
    step: usize,
    steps: u32,
    cached: u32,
}

impl Exec {
    fn at(&self, line: usize, message: impl std::fmt::Display) -> String {
        format!("{}:{line}: {message}", self.file)
    }

    fn store(&self) -> &ImageStore {
        self.rt.images()
    }

    fn run(&mut self, df: &Dockerfile, plan: &BuildPlan) -> Result<State, BuildFailure> {
        let mut states: BTreeMap<usize, State> = BTreeMap::new();
        for &i in &plan.order {
            let stage = &df.stages[i];
            self.step += 1;
            let alias = stage
                .name
                .as_ref()
                .map(|n| format!(" AS {n}"))
                .unwrap_or_default();
            let (base, shown) = match &plan.bases[i] {
                Source::Scratch => (
                    new_state(
                        self.store(),
                        &State {
                            manifest: Digest::of_bytes(b""),
                            config: Value::Null,
                            layers: Vec::new(),
                            dirs: Vec::new(),
                        },
                        config::scratch(),
                        None,
                        true,
                    )?,
                    "scratch".to_string(),
                ),
                Source::Image(n) => {
                    let d = self.images.get(n).cloned().ok_or_else(|| {
                        BuildFailure::Internal(format!("image {n:?} was not pulled"))
                    })?;
                    (read_state(self.store(), &d)?, format!("{n} ({d})"))
                }
                Source::Stage(s) => (
                    states
                        .get(s)
                        .cloned()
                        .ok_or_else(|| BuildFailure::Internal(format!("stage {s} not built")))?,
                    format!(
                        "stage {}",
                        df.stages[*s].name.clone().unwrap_or(s.to_string())
                    ),
                ),
            };
            say(&self.out, format!("#{} FROM {shown}{alias}\n", self.step))?;
            let mut state = base;
            let mut args: BTreeMap<String, String> = BTreeMap::new();
            for (j, ins) in stage.instructions.iter().enumerate() {
                self.step += 1;
                let n = self.step;
                say(&self.out, format!("#{n} {}\n", ins.text))?;
                // ENV wins over ARG of the same name, as in Docker.
                let mut vars = args.clone();
                vars.extend(config::env(&state.config));
                let file = self.file.clone();
                let x = |s: &str| {
                    expand(s, &vars, ins.line).map_err(|e| {
                        BuildFailure::Invalid(format!("{file}:{}: {}", ins.line, e.message()))
                    })
                };
                state = match &ins.kind {
                    Kind::Arg(name, default) => {
                        let value = match (self.build_args.get(name), default) {
                            (Some(v), _) => v.clone(),
                            (None, Some(d)) => x(d)?,
                            (None, None) => plan.global_args.get(name).cloned().unwrap_or_default(),
                        };
                        args.insert(name.clone(), value);
                        continue;
                    }
                    Kind::Run(cmd) => {
                        let key =
                            plan::cache_key(&state.manifest.to_string(), &ins.text, "", &args);
                        let argv = cmd.argv();
                        self.cached_or(&key, n, |this| {
                            this.run_step(&state, &argv, &args, ins.line, n)
                        })?
                    }
                    Kind::Copy(spec) | Kind::Add(spec) => {
                        let add = matches!(ins.kind, Kind::Add(_));
                        let from = plan.copies_from[i]
                            .iter()
                            .find(|(k, _)| *k == j)
                            .map(|(_, s)| s.clone());
                        let from_state = match &from {
                            None => None,
                            Some(Source::Stage(s)) => {
                                Some(states.get(s).cloned().ok_or_else(|| {
                                    BuildFailure::Internal(format!("stage {s} not built"))
                                })?)
                            }
                            Some(Source::Image(img)) => {
                                let d = self.images.get(img).cloned().ok_or_else(|| {
                                    BuildFailure::Internal(format!("image {img:?} was not pulled"))
                                })?;
                                Some(read_state(self.store(), &d)?)
                            }
                            Some(Source::Scratch) => None,
                        };
                        let copy = self.resolve_copy(
                            &state,
                            spec,
                            &x,
                            add,
                            from_state.as_ref(),
                            ins.line,
                        )?;
                        let key = plan::cache_key(
                            &state.manifest.to_string(),
                            &ins.text,
                            &copy.hash,
                            &BTreeMap::new(),
                        );
                        self.cached_or(&key, n, |this| this.copy_step(&state, &copy, n))?
                    }
                    other => {
                        let change = config::change_of(other, &vars, "", ins.line)
                            .map_err(|e| BuildFailure::Invalid(self.at(ins.line, e.message())))?
                            .ok_or_else(|| {
                                BuildFailure::Internal(format!("no change for {}", ins.text))
                            })?;
                        let key = plan::cache_key(
                            &state.manifest.to_string(),
                            &format!("{change:?}"),
                            "",
                            &BTreeMap::new(),
                        );
                        self.cached_or(&key, n, |this| {
                            let mut c = state.config.clone();
                            config::apply(&mut c, &change);
                            new_state(this.store(), &state, c, None, true)
                        })?
                    }
                };
            }
            states.insert(i, state);
        }
        states
            .remove(&plan.target())
            .ok_or_else(|| BuildFailure::Internal("the target stage was not built".into()))
    }

    fn use_image(&self, d: &Digest) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(d.clone());
    }

    /// The cached result of step `n` (key `key`), or `make`'s, recorded in the cache.
    fn cached_or(
        &mut self,
        key: &str,
        n: usize,
        make: impl FnOnce(&mut Self) -> Result<State, BuildFailure>,
    ) -> Result<State, BuildFailure> {
        let cache_name = format!("{CACHE_REPO}:{key}");
        self.steps += 1;
        if !self.no_cache
            && let Ok(img) = self.store().resolve(&cache_name)
        {
            self.cached += 1;
            self.use_image(&img.digest);
            say(&self.out, format!("#{n} CACHED\n"))?;
            return read_state(self.store(), &img.digest);
        }
        let started = Instant::now();
        let state = make(self)?;
        self.use_image(&state.manifest);
        self.store()
            .tag(&state.manifest.to_string(), &cache_name)
            .map_err(|e| internal("build cache")(&e))?;
        say(
            &self.out,
            format!("#{n} DONE {:.1}s\n", started.elapsed().as_secs_f64()),
        )?;
        Ok(state)
    }

    fn sandbox(&mut self, n: usize) -> Result<String, BuildFailure> {
        if let Some(s) = &self.sandbox {
            return Ok(s.clone());
        }
        let name = format!("b{}", shoal_runtime::util::random_hex());
        let cfg = PodSandboxConfig {
            name: name.clone(),
            hostname: Some("build".into()),
            netns: None,
            dns_servers: Vec::new(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
            hosts: Vec::new(),
        };
        let sb = self
            .rt
            .create_sandbox(&cfg)
            .map_err(|e| internal("build sandbox")(&e))?;
        self.sandbox = Some(name.clone());
        if let Some((net, handle)) = &self.net
            && let Err(e) =
                handle.block_on(net.attach(&name, &shoal_api::Pod::default(), &sb.netns_path))
        {
            say(
                &self.out,
                format!("#{n} warning: RUN steps have no pod network: {e:#}\n"),
            )?;
        }
        Ok(name)
    }

    fn cleanup(&mut self) {
        if let Some(sb) = self.sandbox.take() {
            if let Some((net, handle)) = &self.net {
                handle.block_on(net.detach(&sb));
            }
            if let Err(e) = self.rt.remove_sandbox(&sb) {
                tracing::warn!("build sandbox {sb}: {e}");
            }
        }
    }

    fn run_step(
        &mut self,
        state: &State,
        argv: &[String],
        args: &BTreeMap<String, String>,
        line: usize,
        n: usize,
    ) -> Result<State, BuildFailure> {
        let sb = self.sandbox(n)?;
        let id = format!("{sb}-s{n}");
        let env = config::env(&state.config);
        let mut spec = ContainerSpec::new(&id, state.manifest.to_string());
        spec.command = argv.to_vec();
        spec.env = args
            .iter()
            .filter(|(k, _)| !env.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        spec.working_dir = Some(config::workdir(&state.config));
        let user = config::user(&state.config);
        spec.user = (!user.is_empty()).then_some(user);
        let sandbox = self
            .rt
            .sandbox(&sb)
            .map_err(|e| internal("build sandbox")(&e))?;
        self.rt
            .create_and_start(&sandbox, spec)
            .map_err(|e| BuildFailure::Step(self.at(line, format!("RUN could not start: {e}"))))?;
        let result = self.finish_run(&id, line, n);
        let layer = result.and_then(|()| {
            let mut b = LayerBuilder::create(&self.tmp.join(format!("layer-{n}.tar.gz")))
                .map_err(|e| internal("layer")(&e))?;
            b.add_upper(&self.rt.upper_dir(&id))
                .map_err(|e| internal("layer")(&e))?;
            b.finish().map_err(|e| internal("layer")(&e))
        });
        if let Err(e) = self.rt.remove(&id) {
            tracing::warn!("build container {id}: {e}");
        }
        new_state(
            self.store(),
            state,
            state.config.clone(),
            Some(layer?),
            true,
        )
    }

    /// Streams the RUN's output and waits for its exit.
    fn finish_run(&mut self, id: &str, line: usize, n: usize) -> Result<(), BuildFailure> {
        let logs = self
            .rt
            .logs(
                id,
                LogOptions {
                    tail: None,
                    since: None,
                    follow: true,
                },
            )
            .map_err(|e| internal("RUN output")(&e))?;
        let mut partial = String::new();
        for l in logs {
            let l = l.map_err(|e| internal("RUN output")(&e))?;
            partial.push_str(&l.text);
            if !l.partial {
                say(
                    &self.out,
                    format!("#{n} {}\n", std::mem::take(&mut partial)),
                )?;
            }
        }
        if !partial.is_empty() {
            say(&self.out, format!("#{n} {partial}\n"))?;
        }
        let st = self
            .rt
            .wait(id, Duration::from_secs(60))
            .map_err(|e| internal("RUN")(&e))?;
        match st.state {
            ContainerState::Exited(e) if e.exit_code == 0 => Ok(()),
            ContainerState::Exited(e) => {
                let why = if e.message.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.message)
                };
                Err(BuildFailure::Step(self.at(
                    line,
                    format!(
                        "RUN returned a non-zero code: exit code {}{why}",
                        e.exit_code
                    ),
                )))
            }
            other => Err(BuildFailure::Internal(format!(
                "RUN container {id} did not finish: {other:?}"
            ))),
        }
    }

    /// Checks and resolves a COPY/ADD: what it copies, where, and the content hash.
    fn resolve_copy(
        &self,
        state: &State,
        spec: &CopySpec,
        x: &dyn Fn(&str) -> Result<String, BuildFailure>,
        add: bool,
        from: Option<&State>,
        line: usize,
    ) -> Result<Copy, BuildFailure> {
        let what = if add { "ADD" } else { "COPY" };
        let raw_dest = x(&spec.dest)?;
        let dest = config::join_path(&config::workdir(&state.config), &raw_dest);
        let owner = match &spec.chown {
            None if from.is_some() => Owner::Keep,
            None => Owner::Set(0, 0),
            Some(c) => parse_chown(c).ok_or_else(|| {
                BuildFailure::Invalid(self.at(
                    line,
                    format!("{what} --chown={c}: expected UID[:GID] as numbers (names are not supported yet)"),
                ))
            })?,
        };
        let mut sources = Vec::new();
        let mut fetched = Vec::new();
        for s in &spec.sources {
            let s = x(s)?;
            if s.starts_with("http://") || s.starts_with("https://") {
                if !add || from.is_some() {
                    return Err(BuildFailure::Invalid(self.at(
                        line,
                        format!("{what} {s}: a URL source needs ADD without --from"),
                    )));
                }
                let (path, name) = self.fetch(&s, &raw_dest, line)?;
                fetched.push(path.clone());
                sources.push((path, name));
                continue;
            }
            let rel = clean_relative(&s).ok_or_else(|| {
                BuildFailure::Invalid(self.at(
                    line,
                    format!("{what} {s}: the source is outside the build context"),
                ))
            })?;
            let found = match from {
                None => self.context_matches(&rel),
                Some(st) => {
                    let view = RootView::new(st.dirs.clone());
                    view.resolve(&rel)
                        .map(|p| vec![(p, rel.clone())])
                        .unwrap_or_default()
                }
            };
            if found.is_empty() {
                let place = if from.is_some() {
                    "the source stage or image"
                } else {
                    "the build context"
                };
                return Err(BuildFailure::Invalid(self.at(
                    line,
                    format!("{what} {s}: no such file or directory in {place}"),
                )));
            }
            sources.extend(found);
        }
        let dest_is_dir = raw_dest.ends_with('/') || sources.len() > 1 || raw_dest == ".";
        let hash = match from {
            None => shoal_build::layer::content_hash(&sources)
                .map_err(|e| internal("hashing the context")(&e))?,
            Some(st) => st.manifest.to_string(),
        };
        let hash = format!("{hash} {dest} {owner:?} {:?}", spec.sources);
        Ok(Copy {
            sources,
            fetched,
            dest,
            dest_is_dir,
            owner,
            add,
            from: from.map(|s| s.dirs.clone()),
            hash,
            label: what,
        })
    }

    /// Downloads an `ADD URL` source into the build's temporary directory: (host path,
    /// file name). Docker's rules: the file is named by the URL path's last segment (or by
    /// the destination when it is not a directory), mode 0600, never unpacked; the content
    /// is part of the step's cache key, so a changed file rebuilds from that step.
    fn fetch(&self, url: &str, dest: &str, line: usize) -> Result<(PathBuf, String), BuildFailure> {
        let name = url
            .split(['?', '#'])
            .next()
            .and_then(|u| u.split_once("://"))
            .and_then(|(_, rest)| rest.split_once('/'))
            .and_then(|(_, path)| path.rsplit('/').next())
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .map(str::to_string);
        let dest_is_dir = dest.ends_with('/') || dest == ".";
        let name = match (name, dest_is_dir) {
            (Some(n), _) => n,
            (None, false) => "download".to_string(),
            (None, true) => {
                return Err(BuildFailure::Invalid(self.at(
                    line,
                    format!("ADD {url}: cannot tell a file name from the URL; give the destination as a file path"),
                )));
            }
        };
        let dir = self
            .tmp
            .join(format!("url-{}", shoal_runtime::util::random_hex()));
        fs::create_dir_all(&dir).map_err(|e| internal("build tmp")(&e))?;
        let path = dir.join(&name);
        let max = self.store().limits().max_unpacked_bytes;
        say(&self.out, format!("#{} ADD downloading {url}\n", self.step))?;
        self.handle
            .block_on(shoal_runtime::image::registry::http::fetch_to_file(
                url, &path, max,
            ))
            .map_err(|e| BuildFailure::NotFound(self.at(line, format!("ADD {url}: {e}"))))?;
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(|e| internal("ADD URL")(&e))?;
        }
        Ok((path, name))
    }

    /// Context paths matching `rel` (a glob in its last component).
    fn context_matches(&self, rel: &str) -> Vec<(PathBuf, String)> {
        let (dir, last) = match rel.rsplit_once('/') {
            Some((d, l)) => (d.to_string(), l.to_string()),
            None => (String::new(), rel.to_string()),
        };
        if !last.contains(['*', '?', '[']) {
            let p = self.ctx_dir.join(rel);
            return if fs::symlink_metadata(&p).is_ok() {
                vec![(p, rel.to_string())]
            } else {
                Vec::new()
            };
        }
        let Ok(entries) = fs::read_dir(self.ctx_dir.join(&dir)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| shoal_build::ignore::glob_match(&last, n))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let r = if dir.is_empty() {
                    n
                } else {
                    format!("{dir}/{n}")
                };
                (self.ctx_dir.join(&r), r)
            })
            .collect()
    }

    fn copy_step(&mut self, state: &State, c: &Copy, n: usize) -> Result<State, BuildFailure> {
        let io = |e: std::io::Error| BuildFailure::Internal(format!("{} layer: {e}", c.label));
        let mut b =
            LayerBuilder::create(&self.tmp.join(format!("layer-{n}.tar.gz"))).map_err(io)?;
        let image = RootView::new(state.dirs.clone());
        let parents = |b: &mut LayerBuilder, path: &str| -> Result<(), BuildFailure> {
            let mut cur = String::new();
            for part in path.split('/').filter(|p| !p.is_empty()) {
                cur = format!("{cur}/{part}");
                let meta = image
                    .resolve(&cur)
                    .and_then(|p| fs::symlink_metadata(p).ok());
                b.add_parent(&cur, meta.as_ref()).map_err(io)?;
            }
            Ok(())
        };
        let source_view = c.from.clone().map(RootView::new);
        for (host, rel) in &c.sources {
            let meta = fs::symlink_metadata(host).map_err(io)?;
            let base = rel.rsplit('/').next().unwrap_or(rel);
            if meta.is_dir() {
                parents(&mut b, &c.dest)?;
                match &source_view {
                    Some(v) => {
                        for child in v.list(rel) {
                            v.copy_tree(
                                &format!("{rel}/{child}"),
                                &format!("{}/{child}", c.dest.trim_end_matches('/')),
                                &mut b,
                                c.owner,
                            )
                            .map_err(io)?;
                        }
                    }
                    None => b.add_contents(host, &c.dest, c.owner).map_err(io)?,
                }
                continue;
            }
            // A local tar is unpacked; a downloaded one is not (as in Docker).
            if c.add && source_view.is_none() && meta.is_file() && !c.fetched.contains(host) {
                let mut head = [0u8; 512];
                let got = File::open(host)
                    .and_then(|mut f| read_up_to(&mut f, &mut head))
                    .map_err(io)?;
                if shoal_build::layer::looks_like_tar(&head[..got]) {
                    parents(&mut b, &c.dest)?;
                    let f = File::open(host).map_err(io)?;
                    b.add_tar(f, &c.dest, rel)
                        .map_err(|e| BuildFailure::Invalid(format!("ADD {rel}: {e}")))?;
                    continue;
                }
            }
            let target = if c.dest_is_dir {
                format!("{}/{base}", c.dest.trim_end_matches('/'))
            } else {
                c.dest.clone()
            };
            let parent = target.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
            parents(&mut b, parent)?;
            b.add_path(host, &target, c.owner).map_err(io)?;
        }
        let layer = b.finish().map_err(io)?;
        new_state(self.store(), state, state.config.clone(), Some(layer), true)
    }
}

/// A resolved COPY/ADD.
#[derive(Debug)]
struct Copy {
    /// (host path, path as named in the instruction).
    sources: Vec<(PathBuf, String)>,
    /// The sources that `ADD URL` downloaded (never unpacked).
    fetched: Vec<PathBuf>,
    /// Absolute destination.
    dest: String,
    dest_is_dir: bool,
    owner: Owner,
    add: bool,
    /// The source stage's or image's layers (`--from`).
    from: Option<Vec<PathBuf>>,
    hash: String,
    label: &'static str,
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn parse_chown(s: &str) -> Option<Owner> {
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    Some(Owner::Set(u.parse().ok()?, g.parse().ok()?))
}

/// `path` relative to the context root (or a stage's root), cleaned; `None` when it
/// climbs out.
fn clean_relative(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Commits a pod's container (`c`, in the node's runtime) into an image named
/// `req.name`, sent back as a tarball.
pub async fn commit(
    agent: Arc<Agent>,
    req: CommitRequest,
    container_id: String,
    image: String,
    out: Progress,
) -> Result<(), BuildFailure> {
    let name = shoal_runtime::image::normalize_reference(&req.name)
        .map_err(|e| BuildFailure::Invalid(e.to_string()))?;
    let changes: Vec<Change> = req
        .changes
        .iter()
        .map(|c| config::parse_change(c).map_err(|e| BuildFailure::Invalid(e.to_string())))
        .collect::<Result<_, _>>()?;
    let tmp_root = agent.dir.join("build").join("tmp");
    shoal_files::private_dir(&tmp_root).map_err(|e| internal("build tmp")(&e))?;
    let tmp = TempDir::new(&tmp_root, "c")?;
    let rt = agent.rt.clone();
    let (dir, o) = (tmp.0.clone(), out.clone());
    let state = tokio::task::spawn_blocking(move || {
        let store = rt.images();
        let img = store
            .resolve(&image)
            .map_err(|e| BuildFailure::NotFound(format!("the container's image {image:?}: {e}")))?;
        let base = read_state(store, &img.digest)?;
        let mut b =
            LayerBuilder::create(&dir.join("layer.tar.gz")).map_err(|e| internal("layer")(&e))?;
        b.add_upper(&rt.upper_dir(&container_id))
            .map_err(|e| internal("the container's writable layer")(&e))?;
        let layer = b.finish().map_err(|e| internal("layer")(&e))?;
        say(
            &o,
            format!(
                "committing {} entries of container {container_id} on {image}\n",
                layer.entries
            ),
        )?;
        let mut c = base.config.clone();
        for ch in &changes {
            config::apply(&mut c, ch);
        }
        new_state(store, &base, c, Some(layer), false)
    })
    .await
    .map_err(|e| internal("commit")(&e))??;
    let result = BuildResult {
        name,
        digest: state.manifest.to_string(),
        node: agent.name.clone(),
        steps: 1,
        cached: 0,
    };
    send_result_and_image(agent.rt.images(), &state, result, &tmp.0, &out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_stay_in_the_context() {
        assert_eq!(clean_relative("./a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(clean_relative("/abs/x").as_deref(), Some("abs/x"));
        assert_eq!(clean_relative("."), Some(String::new()));
        assert_eq!(clean_relative("../x"), None);
        assert_eq!(clean_relative("a/../../x"), None);
    }

    #[test]
    fn chown_takes_numbers() {
        assert_eq!(parse_chown("1000"), Some(Owner::Set(1000, 1000)));
        assert_eq!(parse_chown("1:2"), Some(Owner::Set(1, 2)));
        assert_eq!(parse_chown("bob"), None);
    }
}
