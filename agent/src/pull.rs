//! Getting a container's image onto the node, by its pull policy (docs/images.md):
//!
//! - `Never`: only the node's own copy (`ErrImageNeverPull` without one);
//! - `IfNotPresent`: the node's copy if it has one, else as `Always`;
//! - `Always`: first the cluster's image store (the controllers: Resolve, then each blob
//!   the node lacks, resumable, digest-verified), then the image's registry (its
//!   mirrors from `--registries` first) with the pod's `imagePullSecrets`. When neither
//!   can be reached (not "not found", not "unauthorized": no answer at all) and the node
//!   has a copy, that copy runs and the pull is reported as skipped.
//!
//! [`sources`] is the pure decision; [`ensure_image`] carries it out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_api::PullPolicy;
use shoal_proto::{BlobRequest, ResolveRequest};
use shoal_runtime::Runtime;
use shoal_runtime::digest::Digest;
use shoal_runtime::image::registry::{self, Keyring, RegistryClient, RegistryError};
use tokio::io::AsyncWriteExt;
use tonic::Code;

use shoal_client::{Client, ClientError};

/// Deadline of one image request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waiting reason of a failed pull (Kubernetes').
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
/// Waiting reason of a container whose policy is `Never` and whose image the node lacks.
pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";

/// Why an image could not be had: the waiting reason and a one-line message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PullError {
    /// [`ERR_IMAGE_PULL`] or [`ERR_IMAGE_NEVER_PULL`].
    pub reason: &'static str,
    /// What went wrong, naming the image.
    pub message: String,
}

/// What [`ensure_image`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// The node's copy is the image (nothing fetched).
    Present,
    /// Fetched (at least in part) from `from`; the manifest digest.
    Fetched {
        /// `the cluster` or the registry endpoint.
        from: String,
        /// The manifest digest.
        digest: String,
    },
    /// `Always`, but no source answered: the node's copy runs. The message says why.
    Stale(String),
}

/// Where to look for an image, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The controllers' image store.
    Cluster,
    /// The image's registry (mirrors first).
    Registry,
}

/// The sources to ask for an image with `policy`, given whether the node has a copy and
/// the node's `--image-sources` order; empty: use the node's copy (or, without one, fail
/// with `ErrImageNeverPull`).
pub fn sources(policy: PullPolicy, present: bool, order: &[Source]) -> Vec<Source> {
    match (policy, present) {
        (PullPolicy::Never, _) | (PullPolicy::IfNotPresent, true) => vec![],
        (PullPolicy::IfNotPresent, false) | (PullPolicy::Always, _) => order.to_vec(),
    }
}

/// The default `--image-sources`: the cluster first, then the registry.
pub const DEFAULT_SOURCES: [Source; 2] = [Source::Cluster, Source::Registry];

/// The value of `--image-sources` (a list as one flag value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOrder(pub Vec<Source>);

/// [`parse_sources`] for the command line.
pub fn parse_order(text: &str) -> Result<SourceOrder, String> {
    parse_sources(text).map(SourceOrder)
}

/// Parses `--image-sources`: `cluster,registry` (the default), `registry,cluster`,
/// `cluster` or `registry`.
pub fn parse_sources(text: &str) -> Result<Vec<Source>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let s = match part {
            "cluster" => Source::Cluster,
            "registry" => Source::Registry,
            other => {
                return Err(format!(
                    "unknown image source {other:?} (expected cluster and/or registry, e.g. cluster,registry)"
                ));
            }
        };
        if out.contains(&s) {
            return Err(format!("image source {part:?} is given twice"));
        }
        out.push(s);
    }
    Ok(out)
}

/// What the cluster said about an image.
enum ClusterAnswer {
    /// It has it (and the node now has it too): the digest, and whether blobs moved.
    Have(String, bool),
    /// It does not know the image.
    NotFound,
    /// No answer (controllers unreachable, or the fetch failed).
    Failed(String),
}

/// The node's image access: the controllers, the runtime's store, the registry client.
#[derive(Debug, Clone)]
pub struct Puller {
    /// The controllers.
    pub ctl: Arc<Client>,
    /// The runtime (its image store).
    pub rt: Arc<Runtime>,
    /// Registries, with the node's `--registries`.
    pub registry: Arc<RegistryClient>,
    /// Where partial downloads live (resumed after a failure).
    pub partial_dir: PathBuf,
    /// `--image-sources`: where to look, in order.
    pub order: Vec<Source>,
}

impl Puller {
    /// Makes sure `image` is on the node as `policy` wants.
    pub async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        keyring: &Keyring,
    ) -> Result<Pulled, PullError> {
        let failed = |message: String| PullError {
            reason: ERR_IMAGE_PULL,
            message,
        };
        let local = {
            let rt = self.rt.clone();
            let name = image.to_string();
            tokio::task::spawn_blocking(move || rt.images().resolve(&name).ok().map(|i| i.digest))
                .await
                .ok()
                .flatten()
        };
        let plan = sources(policy, local.is_some(), &self.order);
        if plan.is_empty() {
            return match local {
                Some(_) => Ok(Pulled::Present),
                None => Err(PullError {
                    reason: ERR_IMAGE_NEVER_PULL,
                    message: format!(
                        "image {image:?} is not on this node and its pull policy is Never"
                    ),
                }),
            };
        }
        let mut cluster_failure = None;
        let mut cluster_not_found = false;
        // A registry failure when the cluster is still to be asked (`registry,cluster`).
        let mut registry_error = None;
        let last = plan.len() - 1;
        for (i, source) in plan.into_iter().enumerate() {
            match source {
                Source::Cluster => match self.ask_cluster(image, local.as_ref()).await {
                    ClusterAnswer::Have(digest, fetched) => {
                        return Ok(if fetched {
                            Pulled::Fetched {
                                from: "the cluster".into(),
                                digest,
                            }
                        } else {
                            Pulled::Present
                        });
                    }
                    ClusterAnswer::NotFound => cluster_not_found = true,
                    ClusterAnswer::Failed(e) => cluster_failure = Some(e),
                },
                Source::Registry => {
                    let r = self
                        .registry
                        .pull(
                            image,
                            keyring,
                            self.rt.images(),
                            // Apart from the cluster's partial files (the same digest
                            // may come from both at once).
                            &self.partial_dir.join("registry"),
                            &[image.to_string()],
                        )
                        .await;
                    match r {
                        Ok(p) => {
                            let digest = p.image.digest.to_string();
                            return Ok(
                                if p.downloaded == 0 && local.as_ref() == Some(&p.image.digest) {
                                    Pulled::Present
                                } else {
                                    Pulled::Fetched {
                                        from: p.endpoint,
                                        digest,
                                    }
                                },
                            );
                        }
                        Err(e) if i < last => registry_error = Some(e),
                        Err(e) => {
                            let message =
                                describe(image, &e, cluster_not_found, cluster_failure.as_deref());
                            if local.is_some() && e.is_unreachable() {
                                return Ok(Pulled::Stale(message));
                            }
                            return Err(failed(message));
                        }
                    }
                }
            }
        }
        if let Some(e) = registry_error {
            let message = describe(image, &e, cluster_not_found, cluster_failure.as_deref());
            if local.is_some() && e.is_unreachable() && !cluster_not_found {
                return Ok(Pulled::Stale(message));
            }
            return Err(failed(message));
        }
        Err(failed(match cluster_failure {
            Some(f) => format!("image {image:?}: {f}"),
            None => format!(
                "image {image:?} not found in the cluster (this node's --image-sources is cluster: registries are not asked)"
            ),
        }))
    }

    /// Asks the controllers for `image` and fetches the blobs the node lacks.
    async fn ask_cluster(&self, image: &str, local: Option<&Digest>) -> ClusterAnswer {
        let info = self
            .ctl
            .call_on(|ch| {
                let mut req = tonic::Request::new(ResolveRequest {
                    name: image.to_string(),
                });
                req.set_timeout(REQUEST_TIMEOUT);
                async move { Client::images(ch).resolve(req).await }
            })
            .await;
        let info = match info {
            Ok(i) => i,
            Err(ClientError::Status { status, .. }) if status.code() == Code::NotFound => {
                return ClusterAnswer::NotFound;
            }
            Err(e) => return ClusterAnswer::Failed(format!("the cluster's image store: {e}")),
        };
        match self.fetch_from_cluster(image, &info, local).await {
            Ok(fetched) => ClusterAnswer::Have(info.digest.clone(), fetched),
            Err(e) => ClusterAnswer::Failed(format!("from the cluster: {e}")),
        }
    }

    /// Fetches the blobs of `info` the node lacks and registers the image under
    /// `image` and the cluster's names. Returns whether anything was fetched.
    async fn fetch_from_cluster(
        &self,
        image: &str,
        info: &shoal_proto::ImageInfo,
        local: Option<&Digest>,
    ) -> Result<bool, String> {
        let parse = |d: &str| {
            d.parse::<Digest>()
                .map_err(|_| format!("bad digest {d:?} from the controller"))
        };
        let manifest = parse(&info.digest)?;
        if local == Some(&manifest) {
            return Ok(false);
        }
        let mut blobs = vec![manifest.clone(), parse(&info.config_digest)?];
        for l in &info.layers {
            blobs.push(parse(l)?);
        }
        tokio::fs::create_dir_all(&self.partial_dir)
            .await
            .map_err(|e| format!("create {}: {e}", self.partial_dir.display()))?;
        for d in &blobs {
            let lock = blob_lock(d);
            let _held = lock.lock().await;
            if !self.rt.images().has_blob(d) {
                let t = std::time::Instant::now();
                fetch_blob(&self.ctl, &self.rt, d, &self.partial_dir).await?;
                tracing::debug!(blob = %d, elapsed = ?t.elapsed(), "blob fetched");
            }
        }
        let rt = self.rt.clone();
        let mut names = info.names.clone();
        names.push(image.to_string());
        tokio::task::spawn_blocking(move || rt.images().register_pulled(&manifest, &names))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// The one-line reason of a failed pull: the registry's error, what the cluster said,
/// and a hint for Docker Hub short names nobody can reach.
pub fn describe(
    image: &str,
    e: &RegistryError,
    cluster_not_found: bool,
    cluster_failure: Option<&str>,
) -> String {
    let mut msg = if cluster_not_found {
        format!("image {image:?} not found in the cluster, and from its registry: {e}")
    } else {
        format!("failed to pull image {image:?}: {e}")
    };
    if let Some(c) = cluster_failure {
        msg.push_str(&format!(" (and {c})"));
    }
    if let Some(h) = registry::hint(image, e) {
        msg.push_str("; ");
        msg.push_str(&h);
    }
    msg
}

/// One lock per blob digest: two pods pulling the same image at once must not
/// append to the same partial file.
static BLOB_LOCKS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
> = std::sync::LazyLock::new(Default::default);

fn blob_lock(d: &Digest) -> Arc<tokio::sync::Mutex<()>> {
    let mut m = BLOB_LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    m.entry(d.to_string()).or_default().clone()
}

/// Attempts per blob (each resumes where the previous one stopped).
const BLOB_ATTEMPTS: usize = 6;

fn partial_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join(format!("{}.partial", d.hex()))
}

/// Streams blob `d` from the controllers into its partial file, resuming after
/// failures, then imports it (verifying the digest).
async fn fetch_blob(ctl: &Client, rt: &Arc<Runtime>, d: &Digest, dir: &Path) -> Result<(), String> {
    let path = partial_path(dir, d);
    let mut last_error = String::new();
    for attempt in 0..BLOB_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
        }
        let offset = tokio::fs::metadata(&path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let stream = ctl
            .call_on(|ch| {
                let req = BlobRequest {
                    digest: d.to_string(),
                    offset,
                    local_only: false,
                };
                async move { Client::images(ch).blob(req).await }
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) if e.code() == Some(Code::NotFound) => return Err(format!("blob {d}: {e}")),
            Err(e) if e.code() == Some(Code::OutOfRange) => {
                let _ = tokio::fs::remove_file(&path).await;
                last_error = e.to_string();
                continue;
            }
            Err(e) => {
                last_error = e.to_string();
                ctl.fail_over();
                continue;
            }
        };
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let mut done = false;
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    f.write_all(&chunk.data)
                        .await
                        .map_err(|e| format!("write {}: {e}", path.display()))?;
                }
                Ok(None) => {
                    done = true;
                    break;
                }
                Err(s) => {
                    last_error = format!("blob {d} from {}: {s}", ctl.address());
                    ctl.fail_over();
                    break;
                }
            }
        }
        f.flush()
            .await
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        drop(f);
        if !done {
            continue;
        }
        let rt = rt.clone();
        let (p, dg) = (path.clone(), d.clone());
        let res = tokio::task::spawn_blocking(move || {
            let mut file =
                std::fs::File::open(&p).map_err(|e| format!("open {}: {e}", p.display()))?;
            rt.images()
                .import_blob(&dg, &mut file)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?;
        let _ = tokio::fs::remove_file(&path).await;
        return res.map(|_| ());
    }
    Err(format!(
        "blob {d}: gave up after {BLOB_ATTEMPTS} attempts: {last_error}"
    ))
}

/// The credentials of a pod's `imagePullSecrets`, from the Secrets fetched (a Secret
/// that is missing or of another type is skipped with a warning, as Kubernetes does).
pub fn keyring(
    namespace: &str,
    secrets: &[(String, Option<shoal_api::Secret>)],
) -> (Keyring, Vec<String>) {
    let mut k = Keyring::default();
    let mut warnings = Vec::new();
    for (name, s) in secrets {
        let what = format!("imagePullSecret {namespace}/{name}");
        let Some(s) = s else {
            warnings.push(format!("{what} not found; pulling without it"));
            continue;
        };
        let ty = s.type_.as_deref().unwrap_or("Opaque");
        if ty != shoal_api::configmap::secret_type::DOCKER_CONFIG_JSON {
            warnings.push(format!(
                "{what} has type {ty:?}, expected {:?}; pulling without it",
                shoal_api::configmap::secret_type::DOCKER_CONFIG_JSON
            ));
            continue;
        }
        let key = shoal_api::configmap::secret_type::DOCKER_CONFIG_JSON_KEY;
        let parsed = s
            .data
            .get(key)
            .ok_or_else(|| format!("{what}: no {key} key"))
            .and_then(|v| {
                shoal_api::configmap::decode_value(v).map_err(|e| format!("{what}: {key}: {e}"))
            })
            .and_then(|raw| registry::DockerConfig::parse(&raw, &what).map_err(|e| e.to_string()));
        match parsed {
            Ok(c) => k.secrets.push(c),
            Err(e) => warnings.push(format!("{e}; pulling without it")),
        }
    }
    (k, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_pick_sources() {
        use PullPolicy::*;
        let d = &DEFAULT_SOURCES;
        assert!(sources(Never, true, d).is_empty());
        assert!(sources(Never, false, d).is_empty());
        assert!(sources(IfNotPresent, true, d).is_empty());
        assert_eq!(
            sources(IfNotPresent, false, d),
            [Source::Cluster, Source::Registry]
        );
        assert_eq!(
            sources(Always, true, d),
            [Source::Cluster, Source::Registry]
        );
        assert_eq!(
            sources(Always, false, d),
            [Source::Cluster, Source::Registry]
        );
        let r = parse_sources("registry,cluster").unwrap();
        assert_eq!(
            sources(Always, false, &r),
            [Source::Registry, Source::Cluster]
        );
        assert_eq!(parse_sources("cluster").unwrap(), [Source::Cluster]);
        assert!(
            parse_sources("cluster,cluster")
                .unwrap_err()
                .contains("twice")
        );
        assert!(parse_sources("hub").unwrap_err().contains("\"hub\""));
        assert!(parse_sources("").is_err());
    }

    #[test]
    fn failure_messages_are_one_line_with_a_hint_for_docker_hub() {
        let e = RegistryError::Unreachable {
            endpoint: "https://registry-1.docker.io".into(),
            message: "failed to lookup address information".into(),
        };
        let m = describe("nginx:1.14.2", &e, true, None);
        assert_eq!(
            m,
            "image \"nginx:1.14.2\" not found in the cluster, and from its registry: unreachable: \
             https://registry-1.docker.io: failed to lookup address information; docker.io is not \
             reachable from this node; import the image (shoalctl image import) or configure a \
             mirror in --registries"
        );
        let e = RegistryError::Unauthorized {
            endpoint: "http://127.0.0.1:5000".into(),
            message: "refused".into(),
        };
        let m = describe(
            "127.0.0.1:5000/x:v1",
            &e,
            false,
            Some("the cluster's image store: down"),
        );
        assert_eq!(
            m,
            "failed to pull image \"127.0.0.1:5000/x:v1\": unauthorized: http://127.0.0.1:5000: \
             refused (and the cluster's image store: down)"
        );
        assert!(!m.contains('\n'));
    }

    #[test]
    fn pull_secrets_become_a_keyring() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let secret = |ty: &str, data: &str| shoal_api::Secret {
            type_: Some(ty.into()),
            data: [(".dockerconfigjson".to_string(), b64(data))].into(),
            ..Default::default()
        };
        let (k, w) = keyring(
            "ns",
            &[
                (
                    "good".into(),
                    Some(secret(
                        "kubernetes.io/dockerconfigjson",
                        r#"{"auths":{"h:1":{"username":"u","password":"p"}}}"#,
                    )),
                ),
                ("gone".into(), None),
                ("opaque".into(), Some(secret("Opaque", "{}"))),
                (
                    "broken".into(),
                    Some(secret("kubernetes.io/dockerconfigjson", "nope")),
                ),
            ],
        );
        assert_eq!(k.secrets.len(), 1);
        assert_eq!(k.secrets[0].get("h:1").unwrap().username, "u");
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("ns/gone not found"), "{w:?}");
        assert!(w[1].contains("type \"Opaque\""), "{w:?}");
        assert!(
            w[2].starts_with("imagePullSecret ns/broken: not a Docker config"),
            "{w:?}"
        );
    }
}
