//! The `Cluster` gRPC service: apply/create/update/get/list/delete/watch/status over the
//! replicated store, with validation through shoal-api; membership changes and backups.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::str::FromStr;

use serde_json::Value;
use shoal_api::selector::LabelSelector;
use shoal_api::{Kind, Object};
use shoal_proto::cluster_server::{Cluster, ClusterServer};
use shoal_proto::{
    AddMemberRequest, ApplyRequest, ApplyResponse, ApplyResult, ClusterStatusRequest,
    ClusterStatusResponse, CreateManyRequest, CreateManyResponse, CreateManyResult, DeleteRequest,
    GetRequest, HeartbeatRequest, HeartbeatResponse, ListRequest, ListResponse, MemberStatus,
    ObjectRequest, ObjectResponse, RemoveMemberRequest, SnapshotChunk, SnapshotRequest, WatchEvent,
    WatchRequest,
};
use shoal_store::{Consistency, EventType, Store, StoreError, Write};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::alloc::{ServiceAddresses, assign_service, keep_pod_cidr, service_id};
use crate::authz::{Verb, admission, check_heartbeat, check_verb, check_write};
use crate::error::ApiError;
use crate::network::NetConfig;
use shoal_pki::Identity;

/// Metadata fields only the server sets; ignored when comparing for `apply`.
const SERVER_META: [&str; 5] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
];

/// How many times `apply` re-reads and retries after a concurrent change.
const APPLY_ATTEMPTS: usize = 5;

/// How many times a write that allocates service addresses is retried when another
/// allocation raced it.
const ALLOC_ATTEMPTS: usize = 50;

/// Store key whose revision serializes service address allocations: every write that
/// gives a Service a cluster IP or node port it did not hold also updates this key with
/// the revision read before listing the Services, in the same atomic batch, so two
/// concurrent allocations never pick the same address (one of them re-reads and retries).
pub const ALLOCATOR_KEY: &str = "Allocator//services";

/// How often each controller deletes the blobs on its disk that no image uses any more.
const BLOB_GC_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything [`serve`] needs besides the store and the listener.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The data directory (images live under it).
    pub data_dir: std::path::PathBuf,
    /// Image unpacking limits.
    pub image_limits: shoal_image::limits::Limits,
    /// The network ranges.
    pub net: NetConfig,
    /// Largest image import.
    pub max_image_size: u64,
    /// This controller's TLS identity.
    pub tls: crate::pki::ControllerTls,
    /// The encryption key of Secrets (sent to joining controllers).
    pub cipher: std::sync::Arc<crate::encryption::SecretCipher>,
    /// Admission rules.
    pub admission: crate::authz::AdmissionConfig,
    /// Request metrics of the gRPC server (docs/observability.md).
    pub grpc_metrics: shoal_observe::grpc::GrpcMetrics,
}

/// Serves the cluster API, the access service, the Raft RPCs and gRPC reflection over
/// mutual TLS, behind the authorization layer, and the built-in registry on
/// `registry_listener` (if any), until `shutdown` resolves.
pub async fn serve(
    store: Store,
    cfg: ServeConfig,
    listener: tokio::net::TcpListener,
    registry_listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let ServeConfig {
        data_dir,
        image_limits,
        net,
        max_image_size,
        tls,
        cipher,
        admission,
        grpc_metrics,
    } = cfg;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shoal_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let images_service = crate::images::ImagesService::new(
        store.clone(),
        &data_dir,
        image_limits,
        tls.peer_client()?,
    )?
    .with_max_image_size(max_image_size)
    .with_registry_port(
        registry_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port()),
    );
    let gc = tokio::spawn(crate::images::collect_garbage_forever(
        images_service.clone(),
        BLOB_GC_EVERY,
    ));
    let _gc = AbortOnDrop(gc);
    let (registry_stop, registry_stopped) = tokio::sync::oneshot::channel::<()>();
    let _registry = match registry_listener {
        Some(listener) => {
            let mut tls_cfg = (*tls.server_config()?).clone();
            tls_cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let registry = crate::registry::Registry::new(
                images_service.clone(),
                store.clone(),
                &cipher.key_bytes(),
            );
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(listen = %addr, "built-in registry serving");
            }
            Some(AbortOnDrop(tokio::spawn(crate::registry::serve(
                registry,
                listener,
                std::sync::Arc::new(tls_cfg),
                async {
                    let _ = registry_stopped.await;
                },
            ))))
        }
        None => None,
    };
    let _registry_stop = registry_stop;
    let proxy = crate::proxy::ProxyService::new(store.clone(), tls.clone())
        .with_images(images_service.clone())
        .into_server();
    let images = images_service.into_server();
    let access =
        crate::access::AccessService::new(store.clone(), tls.clone(), cipher).into_server();
    let server_tls = tls.server_config()?;
    let health = crate::metrics::health_service().await;
    tonic::transport::Server::builder()
        .layer(grpc_metrics.layer())
        .layer(shoal_pki::layer::AuthLayer::new(
            crate::authz::controller_policy(),
        ))
        .add_service(health)
        .add_service(ClusterServer::new(
            ClusterService::new(store.clone(), net).with_admission(admission),
        ))
        .add_service(images)
        .add_service(proxy)
        .add_service(access)
        .add_service(store.raft_service())
        .add_service(reflection)
        .serve_with_incoming_shutdown(shoal_pki::tls::incoming(listener, server_tls), shutdown)
        .await?;
    Ok(())
}

/// Implementation of the `Cluster` service on one controller.
#[derive(Debug, Clone)]
pub struct ClusterService {
    store: Store,
    net: NetConfig,
    admission: crate::authz::AdmissionConfig,
    /// Allocations through this member run one at a time (the allocator key's CAS
    /// still orders them against other members); this spares them retry storms.
    allocating: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// What a write that may allocate service addresses needs: the allocator key's write
/// (a CAS on the revision read) and every Service as of that revision (or later).
#[derive(Debug)]
struct Allocation {
    lock: Write,
    services: Vec<shoal_api::Service>,
}

impl ClusterService {
    /// Wraps a store; `net` gives the service CIDR addresses come from.
    pub fn new(store: Store, net: NetConfig) -> Self {
        Self {
            store,
            net,
            admission: crate::authz::AdmissionConfig::new(7000, Vec::new()),
            allocating: Default::default(),
        }
    }

    /// Sets the admission rules.
    pub fn with_admission(mut self, admission: crate::authz::AdmissionConfig) -> Self {
        self.admission = admission;
        self
    }

    /// The node authorizer's check of a read of Secrets or ConfigMaps (other callers and
    /// kinds pass): a node reads one object by name (`name`: a get's name, or the
    /// `metadata.name=NAME` of a list's or watch's field selector) in one namespace, and
    /// only while a pod bound to it refers to it ([`crate::authz::node_reads_config`]). A
    /// watch is checked when it opens (as in Kubernetes), not again while it runs.
    async fn authorize_node_config(
        &self,
        who: &Identity,
        verb: Verb,
        kind: Kind,
        ns: &str,
        name: Option<&str>,
        consistency: Consistency,
    ) -> Result<(), Status> {
        if !matches!(who, Identity::Node { .. }) || !matches!(kind, Kind::Secret | Kind::ConfigMap)
        {
            return Ok(());
        }
        let (Some(name), false) = (name, ns.is_empty()) else {
            return Err(crate::authz::denied(
                who,
                format!(
                    "{} {}s of {} (a node reads Secrets and ConfigMaps one by one: a namespace and the field selector metadata.name=NAME)",
                    verb.as_str(),
                    kind.as_str().to_lowercase(),
                    if ns.is_empty() { "every namespace" } else { ns },
                ),
            ));
        };
        let (pods, _) = self
            .store
            .list(&list_prefix(Kind::Pod, ns), consistency)
            .await
            .map_err(ApiError::from)?;
        let pods: Vec<shoal_api::Pod> = pods
            .iter()
            .filter_map(|v| match Object::from_json(v) {
                Ok(Object::Pod(p)) => Some(p),
                _ => None,
            })
            .collect();
        crate::authz::node_reads_config(who, kind, name, &pods)
    }

    /// Checks that `who` may write `o` (verb, object rules, admission), reading the
    /// stored object where the rules need it.
    async fn authorize_write(&self, who: &Identity, verb: Verb, o: &Object) -> Result<(), Status> {
        let kind = o.kind();
        let ns = effective_namespace(kind, o.namespace());
        check_verb(who, verb, kind, &ns)?;
        if matches!(who, Identity::User { .. }) {
            admission(who, o, &self.admission)?;
        }
        let new = serde_json::to_value(o).map_err(|e| Status::internal(e.to_string()))?;
        let needs_old = matches!(who, Identity::Node { .. })
            || kind == Kind::Node
            || (verb == Verb::Update && matches!(kind, Kind::ConfigMap | Kind::Secret));
        let old = if needs_old {
            self.store
                .get(
                    &key_for(&kind.to_string(), &ns, o.name()),
                    Consistency::Local,
                )
                .await
                .map_err(|e| Status::from(ApiError::from(e)))?
        } else {
            None
        };
        check_write(who, kind, o.name(), Some(&new), old.as_ref())
    }

    /// Reads the allocator key (with `consistency`), then every Service (locally: at
    /// least as new as the key read).
    async fn allocation(&self, consistency: Consistency) -> Result<Allocation, ApiError> {
        let lock = match self.store.get(ALLOCATOR_KEY, consistency).await? {
            None => Write::Create {
                key: ALLOCATOR_KEY.to_string(),
                object: allocator_object(),
            },
            Some(cur) => Write::Update {
                key: ALLOCATOR_KEY.to_string(),
                object: allocator_object(),
                expected_revision: Some(revision_of(&cur)),
            },
        };
        let (items, _) = self.store.list("Service/", Consistency::Local).await?;
        let services = items
            .iter()
            .filter_map(|v| match Object::from_json(v) {
                Ok(Object::Service(s)) => Some(s),
                _ => None,
            })
            .collect();
        Ok(Allocation { lock, services })
    }

    /// Fills in the server-owned parts of `obj`'s spec given the stored version
    /// (`current`): a Service's cluster IP and node ports, a Node's pod CIDR. Returns
    /// true when the write must carry `alloc.lock`.
    fn server_owned(
        &self,
        obj: &mut Object,
        current: Option<&Value>,
        alloc: Option<&mut Allocation>,
    ) -> Result<bool, ApiError> {
        let current = current.and_then(|v| Object::from_json(v).ok());
        match (obj, alloc) {
            (Object::Service(s), Some(alloc)) => {
                let cur = match current {
                    Some(Object::Service(c)) => Some(c),
                    _ => None,
                };
                let id = service_id(s);
                let used = ServiceAddresses::held_by(&alloc.services, &id);
                let claims = assign_service(s, cur.as_ref(), &used, self.net.service_cidr)?;
                // Later objects of the same batch must see what this one holds.
                alloc.services.retain(|x| service_id(x) != id);
                alloc.services.push(s.clone());
                Ok(claims)
            }
            (Object::Node(n), _) => {
                if let Some(Object::Node(c)) = current {
                    keep_pod_cidr(n, &c)?;
                }
                Ok(false)
            }
            (Object::PersistentVolumeClaim(c), _) => {
                // The binding is the controller's: an apply without it keeps it.
                if let Some(Object::PersistentVolumeClaim(cur)) = current
                    && let Some(bound) = cur.spec.volume_name
                {
                    match &c.spec.volume_name {
                        None => c.spec.volume_name = Some(bound),
                        Some(v) if *v == bound => {}
                        Some(v) => {
                            return Err(ApiError::Invalid(format!(
                                "persistentvolumeclaim {}: spec.volumeName: field is immutable once set (it is {bound:?}; got {v:?})",
                                c.metadata.name
                            )));
                        }
                    }
                }
                Ok(false)
            }
            (Object::PersistentVolume(v), _) => {
                if let Some(Object::PersistentVolume(cur)) = current
                    && v.spec.claim_ref.is_none()
                {
                    v.spec.claim_ref = cur.spec.claim_ref;
                }
                Ok(false)
            }
            (Object::Namespace(n), _) => {
                // The phase is the server's (a delete makes it Terminating).
                n.status = match current {
                    Some(Object::Namespace(c)) => c.status,
                    _ => shoal_api::Namespace::named(&n.metadata.name).status,
                };
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// The precondition of creating an object in namespace `ns`: a check that the
    /// namespace exists at the revision read and is not Terminating (a built-in namespace
    /// that is missing is created with it).
    async fn namespace_check(&self, ns: &str) -> Result<Write, ApiError> {
        let key = key_for("Namespace", "", ns);
        let usable = |v: &Option<Value>| {
            v.as_ref()
                .is_some_and(|v| v.pointer("/status/phase") != Some(&Value::from("Terminating")))
        };
        let mut cur = self.store.get(&key, Consistency::Local).await?;
        if !usable(&cur) {
            // A local miss may be this member lagging: ask the leader before refusing.
            cur = self.store.get(&key, Consistency::Linearizable).await?;
        }
        match cur {
            None if shoal_api::namespace::BUILT_IN.contains(&ns) => {
                let mut object = Object::Namespace(shoal_api::Namespace::named(ns)).to_json();
                strip_server_meta(&mut object);
                Ok(Write::Create { key, object })
            }
            None => Err(ApiError::NoNamespace(ns.to_string())),
            Some(v) if !usable(&Some(v.clone())) => {
                Err(ApiError::NamespaceTerminating(ns.to_string()))
            }
            Some(v) => Ok(Write::Check {
                key,
                expected_revision: Some(revision_of(&v)),
            }),
        }
    }

    /// Creates one object (allocating a Service's addresses) in an existing namespace.
    async fn create_object(&self, o: Object) -> Result<Value, ApiError> {
        let key = o.key();
        let ns = effective_namespace(o.kind(), o.namespace());
        let ns_key = key_for("Namespace", "", &ns);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut obj = o.clone();
            let mut writes = Vec::new();
            if o.kind().namespaced() {
                writes.push(self.namespace_check(&ns).await?);
            }
            if let Object::Namespace(n) = &mut obj {
                // The phase is the server's: a new namespace is Active.
                n.status = shoal_api::Namespace::named(&n.metadata.name).status;
            }
            let _turn = match obj {
                Object::Service(_) => Some(self.allocating.lock().await),
                _ => None,
            };
            if matches!(obj, Object::Service(_)) {
                let mut alloc = self.allocation(Consistency::Linearizable).await?;
                if self.server_owned(&mut obj, None, Some(&mut alloc))? {
                    writes.push(alloc.lock);
                }
            }
            let mut v = obj.to_json();
            strip_server_meta(&mut v);
            writes.push(Write::Create {
                key: key.clone(),
                object: v,
            });
            match self.store.write(writes).await {
                Ok(out) => return Ok(outcome_of(out, &key)),
                Err(e)
                    if (is_allocator_race(&e) || is_race_on(&e, &ns_key))
                        && attempt < ALLOC_ATTEMPTS =>
                {
                    backoff(attempt).await
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Creates each object on its own (the CreateMany RPC): every object is parsed,
    /// authorized and admitted as by Create; then the Namespaces among them are created,
    /// then the rest, each round as one group of store requests ([`Store::write_each`]: one
    /// request per object, all or nothing per object, committed in few Raft entries).
    /// Returns one result per document, in order.
    async fn create_each(&self, who: &Identity, docs: &[String]) -> Vec<CreateManyResult> {
        let mut results: Vec<CreateManyResult> = docs
            .iter()
            .enumerate()
            .map(|(i, j)| named_result(i, j))
            .collect();
        let mut objects = Vec::with_capacity(docs.len());
        for (i, j) in docs.iter().enumerate() {
            let o = match parse_object(j, &format!("object {}", i + 1)) {
                Ok(o) => o,
                Err(e) => {
                    set_error(&mut results[i], &crate::error::to_status(&e));
                    continue;
                }
            };
            results[i].kind = o.kind().to_string();
            results[i].namespace = effective_namespace(o.kind(), o.namespace());
            results[i].name = o.name().to_string();
            match self.authorize_write(who, Verb::Create, &o).await {
                Ok(()) => objects.push((i, o)),
                Err(s) => set_error(&mut results[i], &s),
            }
        }
        let (namespaces, rest): (Vec<_>, Vec<_>) = objects
            .into_iter()
            .partition(|(_, o)| matches!(o, Object::Namespace(_)));
        for round in [namespaces, rest] {
            for (i, r) in self.create_round(round).await {
                match r {
                    Ok(v) => results[i].object_json = v.to_string(),
                    Err(e) => set_error(&mut results[i], &crate::error::to_status(&e)),
                }
            }
        }
        results
    }

    /// Creates `objects` (index, object) each as its own store request, concurrently; a
    /// Service (its addresses are allocated one at a time) and an object whose namespace
    /// changed under it go the way of a single Create.
    async fn create_round(
        &self,
        objects: Vec<(usize, Object)>,
    ) -> Vec<(usize, Result<Value, ApiError>)> {
        let mut out = Vec::with_capacity(objects.len());
        let mut checks: BTreeMap<String, Write> = BTreeMap::new();
        let mut alone = Vec::new();
        let mut sent = Vec::with_capacity(objects.len());
        let mut batches = Vec::with_capacity(objects.len());
        for (i, o) in objects {
            if matches!(o, Object::Service(_)) {
                alone.push((i, o));
                continue;
            }
            let ns = effective_namespace(o.kind(), o.namespace());
            let mut writes = Vec::with_capacity(2);
            if o.kind().namespaced() {
                let check = match checks.get(&ns) {
                    Some(w) => Ok(w.clone()),
                    None => self.namespace_check(&ns).await,
                };
                match check {
                    Ok(w) => {
                        checks.insert(ns.clone(), w.clone());
                        writes.push(w);
                    }
                    Err(e) => {
                        out.push((i, Err(e)));
                        continue;
                    }
                }
            }
            let mut obj = o.clone();
            if let Object::Namespace(n) = &mut obj {
                // The phase is the server's: a new namespace is Active.
                n.status = shoal_api::Namespace::named(&n.metadata.name).status;
            }
            let mut v = obj.to_json();
            strip_server_meta(&mut v);
            let key = o.key();
            writes.push(Write::Create {
                key: key.clone(),
                object: v,
            });
            batches.push(writes);
            sent.push((i, o, key, key_for("Namespace", "", &ns)));
        }
        let written = self.store.write_each(batches).await;
        for ((i, o, key, ns_key), r) in sent.into_iter().zip(written) {
            match r {
                Ok(w) => out.push((i, Ok(outcome_of(w, &key)))),
                // The namespace changed after it was read (or a neighbour created the
                // built-in one first): the single path reads it again and retries.
                Err(e) if is_race_on(&e, &ns_key) => alone.push((i, o)),
                Err(e) => out.push((i, Err(e.into()))),
            }
        }
        for (i, o) in alone {
            out.push((i, self.create_object(o).await));
        }
        out
    }

    /// Replaces one object. A Service or Node is read first so that the parts the server
    /// owns are kept (or checked) and a Service's new ports get node ports; without a
    /// `resourceVersion` in the request, a concurrent change is retried.
    async fn update_object(&self, o: Object) -> Result<Value, ApiError> {
        let key = o.key();
        let mut v = o.to_json();
        let client_rev = match revision_of(&v) {
            0 => None,
            r => Some(r),
        };
        if !matches!(
            o,
            Object::Service(_) | Object::Node(_) | Object::Namespace(_)
        ) {
            strip_server_meta(&mut v);
            let out = self
                .store
                .write(vec![Write::Update {
                    key: key.clone(),
                    object: v,
                    expected_revision: client_rev,
                }])
                .await?;
            return Ok(outcome_of(out, &key));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The first read is local (agents' heartbeats come here every few seconds); the
            // write's revision precondition catches a stale one, and later reads are
            // linearizable.
            let consistency = if attempt == 1 {
                Consistency::Local
            } else {
                Consistency::Linearizable
            };
            let Some(cur) = self.store.get(&key, consistency).await? else {
                if attempt == 1 {
                    continue;
                }
                return Err(StoreError::NotFound { key }.into());
            };
            let cur_rev = revision_of(&cur);
            if let Some(r) = client_rev
                && r != cur_rev
            {
                if attempt == 1 {
                    continue;
                }
                return Err(StoreError::Conflict {
                    key,
                    expected: r,
                    actual: cur_rev,
                }
                .into());
            }
            let mut obj = o.clone();
            let _turn = match obj {
                Object::Service(_) => Some(self.allocating.lock().await),
                _ => None,
            };
            let mut alloc = if matches!(obj, Object::Service(_)) {
                Some(self.allocation(Consistency::Local).await?)
            } else {
                None
            };
            let mut writes = Vec::new();
            if self.server_owned(&mut obj, Some(&cur), alloc.as_mut())?
                && let Some(a) = alloc
            {
                writes.push(a.lock);
            }
            let mut v = obj.to_json();
            strip_server_meta(&mut v);
            writes.push(Write::Update {
                key: key.clone(),
                object: v,
                expected_revision: Some(cur_rev),
            });
            match self.store.write(writes).await {
                Ok(out) => return Ok(outcome_of(out, &key)),
                Err(e)
                    if attempt < ALLOC_ATTEMPTS
                        && (is_allocator_race(&e)
                            || (client_rev.is_none()
                                && matches!(&e, StoreError::Conflict { key: k, .. } if *k == key))) =>
                {
                    backoff(attempt).await
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deleting a namespace marks it Terminating; the namespace reconciler then deletes
    /// every object in it and finally the namespace. Built-in namespaces stay.
    async fn terminate_namespace(
        &self,
        name: &str,
        expected: Option<u64>,
    ) -> Result<Value, ApiError> {
        if shoal_api::namespace::BUILT_IN.contains(&name) {
            return Err(ApiError::Invalid(format!(
                "namespace {name:?} is built in and cannot be deleted"
            )));
        }
        let key = key_for("Namespace", "", name);
        let not_found = || ApiError::NotFound {
            kind: "namespace".into(),
            namespace: String::new(),
            name: name.to_string(),
        };
        let Some(cur) = self.store.get(&key, Consistency::Linearizable).await? else {
            return Err(not_found());
        };
        let Ok(Object::Namespace(mut n)) = Object::from_json(&cur) else {
            return Err(ApiError::Invalid(format!("{key} is not a namespace")));
        };
        if n.is_terminating() {
            return Ok(cur);
        }
        n.status = Some(shoal_api::NamespaceStatus {
            phase: shoal_api::NamespacePhase::Terminating,
        });
        n.metadata.deletion_timestamp = Some(chrono::Utc::now());
        let out = self
            .store
            .write(vec![Write::Update {
                key: key.clone(),
                object: Object::Namespace(n).to_json(),
                expected_revision: Some(expected.unwrap_or(revision_of(&cur))),
            }])
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => not_found(),
                e => e.into(),
            })?;
        Ok(outcome_of(out, &key))
    }

    async fn apply_objects(
        &self,
        objects: Vec<Object>,
        dry_run: bool,
    ) -> Result<Vec<ApplyResult>, ApiError> {
        let mut seen = HashSet::new();
        for o in &objects {
            if !seen.insert(o.key()) {
                return Err(ApiError::Invalid(format!(
                    "{} {:?} appears twice in one apply",
                    o.kind(),
                    o.name()
                )));
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut writes = Vec::new();
            let mut results = Vec::new();
            let mut alloc: Option<Allocation> = None;
            let mut _turn = None;
            let mut lock = false;
            for (i, o) in objects.iter().enumerate() {
                let key = o.key();
                // One linearizable read makes this member current; the other objects are
                // read locally after it (the revision preconditions catch later races).
                let consistency = if i == 0 {
                    Consistency::Linearizable
                } else {
                    Consistency::Local
                };
                let current = self.store.get(&key, consistency).await?;
                // A resourceVersion in the request (shoalctl sends the one it merged
                // with) is a precondition, checked in dry runs too; it is not retried.
                if let Some(expected) = client_revision(o) {
                    let actual = current.as_ref().map(revision_of).unwrap_or(0);
                    if actual != expected {
                        return Err(StoreError::Conflict {
                            key,
                            expected,
                            actual,
                        }
                        .into());
                    }
                }
                let mut obj = o.clone();
                if matches!(obj, Object::Service(_)) && alloc.is_none() {
                    _turn = Some(self.allocating.lock().await);
                    alloc = Some(self.allocation(Consistency::Local).await?);
                }
                lock |= self.server_owned(&mut obj, current.as_ref(), alloc.as_mut())?;
                let mut desired = obj.to_json();
                strip_server_meta(&mut desired);
                let action = match current {
                    None => {
                        writes.push(Write::Create {
                            key: key.clone(),
                            object: desired.clone(),
                        });
                        "created"
                    }
                    Some(cur) => {
                        // Status is owned by the system, never by the manifest.
                        match cur.get("status") {
                            Some(s) => desired["status"] = s.clone(),
                            None => {
                                if let Some(m) = desired.as_object_mut() {
                                    m.remove("status");
                                }
                            }
                        }
                        if same_desired_state(&cur, &desired) {
                            desired = cur.clone();
                            "unchanged"
                        } else {
                            writes.push(Write::Update {
                                key: key.clone(),
                                object: desired.clone(),
                                expected_revision: Some(revision_of(&cur)),
                            });
                            "configured"
                        }
                    }
                };
                results.push(ApplyResult {
                    kind: o.kind().to_string(),
                    namespace: o.namespace().to_string(),
                    name: o.name().to_string(),
                    action: action.to_string(),
                    object_json: desired.to_string(),
                });
            }
            // Objects created in a namespace need it to exist (unless this apply creates
            // it): the checks go first, before any write of this batch to the namespace.
            let creating_ns: HashSet<&str> = objects
                .iter()
                .zip(&results)
                .filter(|(o, r)| o.kind() == Kind::Namespace && r.action == "created")
                .map(|(o, _)| o.name())
                .collect();
            let mut needed = BTreeSet::new();
            for (o, r) in objects.iter().zip(&results) {
                let ns = effective_namespace(o.kind(), o.namespace());
                if r.action == "created"
                    && o.kind().namespaced()
                    && !creating_ns.contains(ns.as_str())
                {
                    needed.insert(ns);
                }
            }
            let mut checks = Vec::new();
            for ns in &needed {
                checks.push(self.namespace_check(ns).await?);
            }
            if writes.is_empty() || dry_run {
                return Ok(results);
            }
            if lock && let Some(a) = alloc {
                writes.insert(0, a.lock);
            }
            writes.splice(0..0, checks);
            match self.store.write(writes).await {
                Ok(outcomes) => {
                    let by_key: BTreeMap<String, Value> =
                        outcomes.into_iter().map(|w| (w.key, w.object)).collect();
                    for r in &mut results {
                        let key = key_for(&r.kind, &r.namespace, &r.name);
                        if let Some(v) = by_key.get(&key) {
                            r.object_json = v.to_string();
                        }
                    }
                    return Ok(results);
                }
                Err(e) if is_allocator_race(&e) && attempt < ALLOC_ATTEMPTS => {
                    backoff(attempt).await;
                }
                Err(
                    e @ (StoreError::Conflict { .. }
                    | StoreError::AlreadyExists { .. }
                    | StoreError::NotFound { .. }),
                ) if attempt < APPLY_ATTEMPTS => {
                    tracing::debug!("apply raced with another writer ({e}); retrying");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Size of the pieces a backup is streamed in.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

impl ClusterService {
    /// The controller cluster as this member sees it.
    async fn cluster_status(&self) -> ClusterStatusResponse {
        let s = self.store.status().await;
        let members = s
            .members
            .iter()
            .map(|m| MemberStatus {
                id: m.id,
                address: m.addr.clone(),
                leader: m.leader,
                healthy: m.healthy,
                term: m.term,
                last_log_index: m.last_log_index,
                last_applied: m.last_applied,
                matched_index: m.matched_index.unwrap_or(0),
                error: m.error.clone().unwrap_or_default(),
                voter: m.voter,
            })
            .collect();
        let leader = s.members.iter().find(|m| Some(m.id) == s.leader);
        ClusterStatusResponse {
            leader_id: s.leader.unwrap_or(0),
            term: s.members.iter().map(|m| m.term).max().unwrap_or(0),
            // The leader applies an entry once it is committed.
            commit_index: leader.map(|m| m.last_applied).unwrap_or(0),
            members,
            answered_by: self.store.node_id(),
            server_version: shoal_observe::version::LINE.to_string(),
        }
    }
}

/// The verified identity of the caller (set by the authorization layer).
/// Shows a Node's latest heartbeat: heartbeats are kept in the controllers' memory, not
/// written to the Node (see `Store::keep_alive`), so `status.heartbeatTime` is the later of
/// the stored one (the agent's last status write) and the last heartbeat this member knows of.
fn with_last_heartbeat(store: &Store, node: &mut Value) {
    let Some(name) = node.pointer("/metadata/name").and_then(Value::as_str) else {
        return;
    };
    let Some(heard) = store.last_heard(name) else {
        return;
    };
    let stored = node
        .pointer("/status/heartbeatTime")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    if stored.is_some_and(|s| s >= heard) {
        return;
    }
    if let Some(status) = node.get_mut("status").and_then(Value::as_object_mut) {
        status.insert(
            "heartbeatTime".into(),
            Value::String(heard.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
    }
}

fn caller<T>(req: &Request<T>) -> Result<Identity, Status> {
    shoal_pki::layer::identity_of(req)
        .ok_or_else(|| Status::unauthenticated("a client certificate of this cluster is required"))
}

/// Splits an encoded backup into stream messages; the first carries the totals.
fn snapshot_chunks(file: Vec<u8>, revision: u64, objects: u64) -> Vec<SnapshotChunk> {
    let total = file.len() as u64;
    let mut out: Vec<SnapshotChunk> = file
        .chunks(SNAPSHOT_CHUNK_BYTES)
        .map(|c| SnapshotChunk {
            data: c.to_vec(),
            ..Default::default()
        })
        .collect();
    if out.is_empty() {
        out.push(SnapshotChunk::default());
    }
    out[0].revision = revision;
    out[0].objects = objects;
    out[0].total_bytes = total;
    out
}

/// The document kept at [`ALLOCATOR_KEY`] (only its revision matters).
fn allocator_object() -> Value {
    serde_json::json!({
        "kind": "Allocator",
        "metadata": {"name": "services"},
        "purpose": "its revision serializes cluster IP and node port allocations",
    })
}

/// True when a write failed only because another allocation changed [`ALLOCATOR_KEY`].
fn is_allocator_race(e: &StoreError) -> bool {
    matches!(e,
        StoreError::Conflict { key, .. }
        | StoreError::AlreadyExists { key }
        | StoreError::NotFound { key } if key == ALLOCATOR_KEY)
}

/// True when a write failed only on a precondition of `key` (changed or removed since read).
fn is_race_on(e: &StoreError, key: &str) -> bool {
    matches!(e,
        StoreError::Conflict { key: k, .. }
        | StoreError::AlreadyExists { key: k }
        | StoreError::NotFound { key: k } if k == key)
}

/// A short, growing, jittered pause before retrying a raced allocation.
async fn backoff(attempt: usize) {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 8);
    let ms = (attempt.min(10) as u64) * 2 + jitter;
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// The stored object of `key` among a write's outcomes.
fn outcome_of(out: Vec<shoal_store::WriteOutcome>, key: &str) -> Value {
    out.into_iter()
        .find(|w| w.key == key)
        .map(|w| w.object)
        .unwrap_or(Value::Null)
}

/// The store key of an object: `Kind/namespace/name` ("" namespace when cluster-scoped).
pub fn key_for(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

fn parse_kind(kind: &str) -> Result<Kind, ApiError> {
    Kind::from_str(kind).map_err(|e| ApiError::Invalid(format!("kind {kind:?}: {e}")))
}

/// Namespace to use for a kind: "" for cluster-scoped kinds, `default` when unset.
fn effective_namespace(kind: Kind, ns: &str) -> String {
    if !kind.namespaced() {
        String::new()
    } else if ns.is_empty() {
        "default".to_string()
    } else {
        ns.to_string()
    }
}

fn list_prefix(kind: Kind, ns: &str) -> String {
    if kind.namespaced() && !ns.is_empty() {
        format!("{kind}/{ns}/")
    } else {
        format!("{kind}/")
    }
}

/// What a watcher with `filter` is sent for `ev`, if anything. Every watcher of a member
/// shares the event's stored bytes: an object stored as it is (all but Secrets) is sent as
/// those bytes and filtered on the few fields a selector names, without building its tree
/// (with 1,000 agents watching their pods, each change was parsed and printed a thousand
/// times).
fn watch_message(
    filter: &Filter,
    ev: &shoal_store::PendingEvent,
) -> Result<Option<WatchEvent>, StoreError> {
    if let Some((object, prev)) = ev.raw()
        && let Some(t) = filter.event_type_raw(ev.event_type(), object, prev)
        && let Ok(json) = std::str::from_utf8(object)
    {
        return Ok(t.map(|t| WatchEvent {
            r#type: t.to_string(),
            object_json: json.to_string(),
            resource_version: ev.revision(),
        }));
    }
    let ev = ev.open()?;
    Ok(filter.event_type(&ev).map(|t| WatchEvent {
        r#type: t.to_string(),
        object_json: ev.object.to_string(),
        resource_version: ev.revision,
    }))
}

/// The store prefix a List or Watch reads: the kind (and namespace), narrowed to keys that
/// start with the selected name when the filter selects one (the filter still checks the
/// name exactly).
fn narrow_prefix(kind: Kind, ns: &str, filter: &Filter) -> String {
    match filter.single_name() {
        Some(name) if !kind.namespaced() => key_for(&kind.to_string(), "", name),
        Some(name) if !ns.is_empty() => key_for(&kind.to_string(), ns, name),
        _ => list_prefix(kind, ns),
    }
}

fn parse_object(json: &str, what: &str) -> Result<Object, ApiError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| ApiError::Invalid(format!("{what}: not valid JSON: {e}")))?;
    let mut o = Object::from_json(&v).map_err(|e| ApiError::Invalid(format!("{what}: {e}")))?;
    o.validate()
        .map_err(|e| ApiError::Invalid(format!("{what} ({} {}): {e}", o.kind(), o.name())))?;
    // stringData is write-only: merged into data before anything is stored.
    if let Object::Secret(s) = &mut o {
        s.normalize();
    }
    Ok(o)
}

/// The result of document `i` of a CreateMany request before it is written: its kind,
/// namespace and name as far as the JSON tells.
fn named_result(i: usize, json: &str) -> CreateManyResult {
    let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    let field = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    CreateManyResult {
        index: u32::try_from(i).unwrap_or(u32::MAX),
        kind: field("/kind"),
        namespace: field("/metadata/namespace"),
        name: field("/metadata/name"),
        ..Default::default()
    }
}

fn set_error(r: &mut CreateManyResult, s: &Status) {
    r.code = s.code() as i32;
    r.error = s.message().to_string();
}

fn strip_server_meta(v: &mut Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in SERVER_META {
            m.remove(k);
        }
    }
}

fn same_desired_state(current: &Value, desired: &Value) -> bool {
    let mut a = current.clone();
    let mut b = desired.clone();
    strip_server_meta(&mut a);
    strip_server_meta(&mut b);
    a == b
}

/// The `metadata.resourceVersion` a request gave for `o`, if any (0 counts as none).
fn client_revision(o: &Object) -> Option<u64> {
    o.meta()
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .filter(|r| *r != 0)
}

fn revision_of(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(|r| match r {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        })
        .unwrap_or(0)
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The fields of a stored object a [`Filter`] can name, borrowed from its JSON where it has
/// no escapes (everything else in the document is skipped, not built).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct FilterView<'a> {
    #[serde(borrow)]
    metadata: MetaView<'a>,
    #[serde(borrow)]
    spec: SpecView<'a>,
    #[serde(borrow)]
    status: StatusView<'a>,
    #[serde(borrow, rename = "involvedObject")]
    involved_object: MetaView<'a>,
    #[serde(borrow, rename = "type")]
    type_: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct MetaView<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    labels: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct SpecView<'a> {
    #[serde(borrow, rename = "nodeName")]
    node_name: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct StatusView<'a> {
    #[serde(borrow)]
    phase: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "podIP")]
    pod_ip: Option<Cow<'a, str>>,
}

/// Object filter from a label selector and a field selector (`spec.nodeName=X`).
#[derive(Debug, Clone)]
struct Filter {
    labels: Option<LabelSelector>,
    fields: Vec<(String, String, bool)>,
}

impl Filter {
    fn parse(labels: &str, fields: &str) -> Result<Self, ApiError> {
        let labels = if labels.trim().is_empty() {
            None
        } else {
            Some(
                LabelSelector::parse(labels)
                    .map_err(|e| ApiError::Invalid(format!("label selector {labels:?}: {e}")))?,
            )
        };
        let mut fs = Vec::new();
        for part in fields.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v, eq) = if let Some((k, v)) = part.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, v, true)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, v, true)
            } else {
                return Err(ApiError::Invalid(format!(
                    "field selector {part:?}: expected FIELD=VALUE"
                )));
            };
            let k = k.trim();
            if ![
                "spec.nodeName",
                "metadata.name",
                "metadata.namespace",
                "status.phase",
                // A pod's address (agents mirror the pods that have one: `status.podIP!=`).
                "status.podIP",
                // Events (what `shoalctl events --for` and kubectl use).
                "involvedObject.kind",
                "involvedObject.name",
                "type",
                "reason",
            ]
            .contains(&k)
            {
                return Err(ApiError::Invalid(format!(
                    "field selector {part:?}: unsupported field {k:?} (supported: spec.nodeName, metadata.name, metadata.namespace, status.phase, status.podIP, involvedObject.kind, involvedObject.name, type, reason)"
                )));
            }
            fs.push((k.to_string(), v.trim().to_string(), eq));
        }
        Ok(Self { labels, fields: fs })
    }

    /// The one name the filter selects (`metadata.name=NAME`, alone or beside other
    /// fields), if any.
    fn single_name(&self) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _, eq)| *eq && k == "metadata.name")
            .map(|(_, v, _)| v.as_str())
    }

    /// The store trigger of a watch of `kind` with this filter (a pre-filter on one field:
    /// the member hands a change only to the watchers it may concern, `shoal_store::Trigger`;
    /// this filter still decides on what passes): the node of a `spec.nodeName=NODE`
    /// selector (an agent's own pods), else the first field the selector names (e.g. the
    /// agents' `status.podIP!=`). None without a field selector, and for Secrets, whose
    /// stored form is sealed.
    fn trigger(&self, kind: Kind) -> Option<shoal_store::Trigger> {
        if kind == Kind::Secret {
            return None;
        }
        let (k, v, eq) = self
            .fields
            .iter()
            .find(|(k, v, eq)| *eq && k == "spec.nodeName" && !v.is_empty())
            .or_else(|| self.fields.first())?;
        Some(shoal_store::Trigger {
            pointer: format!("/{}", k.replace('.', "/")),
            value: v.clone(),
            differs: !eq,
        })
    }

    /// The type a watcher with this filter sees for `ev`, if any. As in Kubernetes, an
    /// object that starts matching is ADDED and one that stops matching is DELETED (with
    /// its new state), so that a watcher's copy never keeps an object it would not list.
    fn event_type(&self, ev: &shoal_store::WatchEvent) -> Option<&'static str> {
        let now = self.matches(&ev.object);
        match ev.event_type {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => now.then_some("DELETED"),
            EventType::Modified => {
                let before = ev.prev_object.as_ref().map_or(now, |p| self.matches(p));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }

    /// As [`Filter::event_type`], from the stored JSON of the object and of the one before
    /// it, reading only the fields a filter can name (no tree is built; without a selector
    /// nothing is parsed). `None` when a document does not fit that shape (a field of
    /// another type): the caller then decodes the event and asks `event_type`.
    fn event_type_raw(
        &self,
        event: EventType,
        object: &[u8],
        prev: Option<&[u8]>,
    ) -> Option<Option<&'static str>> {
        if self.labels.is_none() && self.fields.is_empty() {
            return Some(Some(match event {
                EventType::Added => "ADDED",
                EventType::Modified => "MODIFIED",
                EventType::Deleted => "DELETED",
            }));
        }
        let view = |b: &[u8]| -> Option<bool> {
            let v: FilterView<'_> = serde_json::from_slice(b).ok()?;
            Some(self.matches_view(&v))
        };
        let now = view(object)?;
        Some(match event {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => now.then_some("DELETED"),
            EventType::Modified => {
                let before = match prev {
                    Some(p) => view(p)?,
                    None => now,
                };
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        })
    }

    fn matches_view(&self, v: &FilterView<'_>) -> bool {
        if let Some(sel) = &self.labels {
            let labels: BTreeMap<String, String> = v
                .metadata
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if !sel.matches(&labels) {
                return false;
            }
        }
        self.fields.iter().all(|(k, want, eq)| {
            let got = match k.as_str() {
                "spec.nodeName" => v.spec.node_name.as_deref(),
                "metadata.name" => v.metadata.name.as_deref(),
                "metadata.namespace" => v.metadata.namespace.as_deref(),
                "status.phase" => v.status.phase.as_deref(),
                "status.podIP" => v.status.pod_ip.as_deref(),
                "involvedObject.kind" => v.involved_object.kind.as_deref(),
                "involvedObject.name" => v.involved_object.name.as_deref(),
                "type" => v.type_.as_deref(),
                "reason" => v.reason.as_deref(),
                _ => None,
            }
            .unwrap_or("");
            (got == want) == *eq
        })
    }

    fn matches(&self, v: &Value) -> bool {
        if let Some(sel) = &self.labels
            && !sel.matches(&labels_of(v))
        {
            return false;
        }
        self.fields.iter().all(|(k, want, eq)| {
            let ptr = format!("/{}", k.replace('.', "/"));
            let got = v.pointer(&ptr).and_then(Value::as_str).unwrap_or("");
            (got == want) == *eq
        })
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let mut objects = Vec::with_capacity(req.objects_json.len());
        for (i, j) in req.objects_json.iter().enumerate() {
            objects.push(parse_object(j, &format!("object {}", i + 1))?);
        }
        // Every object is checked before any is written (all or nothing).
        for o in &objects {
            self.authorize_write(&who, Verb::Update, o).await?;
        }
        let results = self.apply_objects(objects, req.dry_run).await?;
        Ok(Response::new(ApplyResponse { results }))
    }

    async fn create(
        &self,
        request: Request<ObjectRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        let who = caller(&request)?;
        let o = parse_object(&request.into_inner().object_json, "object")?;
        self.authorize_write(&who, Verb::Create, &o).await?;
        let out = self.create_object(o).await?;
        Ok(Response::new(ObjectResponse {
            object_json: out.to_string(),
        }))
    }

    async fn create_many(
        &self,
        request: Request<CreateManyRequest>,
    ) -> Result<Response<CreateManyResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let results = self.create_each(&who, &req.objects_json).await;
        Ok(Response::new(CreateManyResponse { results }))
    }

    async fn update(
        &self,
        request: Request<ObjectRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        let who = caller(&request)?;
        let o = parse_object(&request.into_inner().object_json, "object")?;
        self.authorize_write(&who, Verb::Update, &o).await?;
        let out = self.update_object(o).await?;
        Ok(Response::new(ObjectResponse {
            object_json: out.to_string(),
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<ObjectResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let kind = parse_kind(&req.kind)?;
        let ns = effective_namespace(kind, &req.namespace);
        check_verb(&who, Verb::Get, kind, &ns)?;
        let consistency = if req.stale {
            Consistency::Local
        } else {
            Consistency::Linearizable
        };
        self.authorize_node_config(&who, Verb::Get, kind, &ns, Some(&req.name), consistency)
            .await?;
        match self
            .store
            .get(&key_for(&kind.to_string(), &ns, &req.name), consistency)
            .await
        {
            Ok(Some(mut v)) => {
                if kind == Kind::Node {
                    with_last_heartbeat(&self.store, &mut v);
                }
                Ok(Response::new(ObjectResponse {
                    object_json: v.to_string(),
                }))
            }
            Ok(None) => Err(ApiError::NotFound {
                kind: kind.to_string().to_lowercase(),
                namespace: ns,
                name: req.name,
            }
            .into()),
            Err(e) => Err(ApiError::from(e).into()),
        }
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let kind = parse_kind(&req.kind)?;
        check_verb(&who, Verb::List, kind, &req.namespace)?;
        let filter = Filter::parse(&req.label_selector, &req.field_selector)?;
        let consistency = if req.stale {
            Consistency::Local
        } else {
            Consistency::Linearizable
        };
        self.authorize_node_config(
            &who,
            Verb::List,
            kind,
            &req.namespace,
            filter.single_name(),
            consistency,
        )
        .await?;
        let (mut items, rev) = self
            .store
            .list(&narrow_prefix(kind, &req.namespace, &filter), consistency)
            .await
            .map_err(ApiError::from)?;
        if kind == Kind::Node {
            for v in &mut items {
                with_last_heartbeat(&self.store, v);
            }
        }
        let items_json = items
            .iter()
            .filter(|v| filter.matches(v))
            .map(Value::to_string)
            .collect();
        Ok(Response::new(ListResponse {
            items_json,
            resource_version: rev,
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let kind = parse_kind(&req.kind)?;
        let ns = effective_namespace(kind, &req.namespace);
        check_verb(&who, Verb::Delete, kind, &ns)?;
        let key = key_for(&kind.to_string(), &ns, &req.name);
        let expected = (req.resource_version != 0).then_some(req.resource_version);
        if kind == Kind::PersistentVolume && matches!(who, Identity::Node { .. }) {
            let stored = self
                .store
                .get(&key, Consistency::Linearizable)
                .await
                .map_err(ApiError::from)?;
            crate::authz::node_deletes_volume(&who, &req.name, stored.as_ref())?;
        }
        if kind == Kind::Namespace {
            return Ok(Response::new(ObjectResponse {
                object_json: self
                    .terminate_namespace(&req.name, expected)
                    .await?
                    .to_string(),
            }));
        }
        match self
            .store
            .write(vec![Write::Delete {
                key,
                expected_revision: expected,
            }])
            .await
        {
            Ok(out) => Ok(Response::new(ObjectResponse {
                object_json: out
                    .into_iter()
                    .next()
                    .map(|w| w.object.to_string())
                    .unwrap_or_default(),
            })),
            Err(StoreError::NotFound { .. }) => Err(ApiError::NotFound {
                kind: kind.to_string().to_lowercase(),
                namespace: ns,
                name: req.name,
            }
            .into()),
            Err(e) => Err(ApiError::from(e).into()),
        }
    }

    type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let kind = parse_kind(&req.kind)?;
        check_verb(&who, Verb::Watch, kind, &req.namespace)?;
        let filter = Filter::parse(&req.label_selector, &req.field_selector)?;
        self.authorize_node_config(
            &who,
            Verb::Watch,
            kind,
            &req.namespace,
            filter.single_name(),
            Consistency::Linearizable,
        )
        .await?;
        let after = (req.resource_version != 0).then_some(req.resource_version);
        let prefix = narrow_prefix(kind, &req.namespace, &filter);
        // Agents watch the pods of their node, and the pods with an address: only the
        // changes of those pods reach them.
        let events = match filter.trigger(kind) {
            Some(trigger) => self.store.watch_where(&prefix, trigger, after).await,
            None => self.store.watch(&prefix, after).await,
        };
        let mut events = events.map_err(ApiError::from)?.pending();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                let msg = match ev.and_then(|ev| watch_message(&filter, &ev)) {
                    Ok(None) => continue,
                    Ok(Some(m)) => Ok(m),
                    Err(e) => Err(crate::error::to_status(&ApiError::from(e))),
                };
                let stop = msg.is_err();
                if tx.send(msg).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let who = caller(&request)?;
        let name = request.into_inner().node_name;
        if name.is_empty() {
            return Err(ApiError::Invalid("heartbeat: node_name: must be set".into()).into());
        }
        check_heartbeat(&who, &name)?;
        self.store.keep_alive(&name);
        let node = self
            .store
            .get(&key_for("Node", "", &name), Consistency::Local)
            .await
            .map_err(ApiError::from)?;
        let node_revision = node.as_ref().map_or(0, revision_of);
        Ok(Response::new(HeartbeatResponse { node_revision }))
    }

    async fn status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Ok(Response::new(self.cluster_status().await))
    }

    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let req = request.into_inner();
        if req.id == 0 {
            return Err(ApiError::Invalid("member id: must be a positive integer".into()).into());
        }
        self.store
            .add_member(req.id, &req.address)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(self.cluster_status().await))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let req = request.into_inner();
        self.store
            .remove_member(req.id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(self.cluster_status().await))
    }

    type SnapshotStream = tokio_stream::Iter<std::vec::IntoIter<Result<SnapshotChunk, Status>>>;

    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let backup = self.store.backup().await.map_err(ApiError::from)?;
        let (revision, objects) = (backup.revision, backup.objects.len() as u64);
        let file = backup.encode().map_err(ApiError::from)?;
        tracing::info!(revision, objects, bytes = file.len(), "backup streamed");
        let chunks: Vec<Result<SnapshotChunk, Status>> = snapshot_chunks(file, revision, objects)
            .into_iter()
            .map(Ok)
            .collect();
        Ok(Response::new(tokio_stream::iter(chunks)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_comparison_ignores_server_fields() {
        let cur = json!({"kind":"Pod","metadata":{"name":"a","uid":"u","resourceVersion":"7","generation":1,"creationTimestamp":"x"},"spec":{"n":1}});
        let same = json!({"kind":"Pod","metadata":{"name":"a"},"spec":{"n":1}});
        let changed =
            json!({"kind":"Pod","metadata":{"name":"a","labels":{"x":"y"}},"spec":{"n":1}});
        assert!(same_desired_state(&cur, &same));
        assert!(!same_desired_state(&cur, &changed));
        assert_eq!(revision_of(&cur), 7);
    }

    #[test]
    fn objects_leaving_or_entering_a_selector_are_deleted_or_added() {
        let f = Filter::parse("app=web", "").unwrap();
        let web = json!({"metadata":{"name":"a","labels":{"app":"web"}}});
        let db = json!({"metadata":{"name":"a","labels":{"app":"db"}}});
        let ev = |t, object: &Value, prev: Option<&Value>| shoal_store::WatchEvent {
            revision: 2,
            event_type: t,
            key: "Pod/default/a".into(),
            object: object.clone(),
            prev_object: prev.cloned(),
        };
        assert_eq!(
            f.event_type(&ev(EventType::Added, &web, None)),
            Some("ADDED")
        );
        assert_eq!(f.event_type(&ev(EventType::Added, &db, None)), None);
        assert_eq!(
            f.event_type(&ev(EventType::Modified, &web, Some(&web))),
            Some("MODIFIED")
        );
        assert_eq!(
            f.event_type(&ev(EventType::Modified, &db, Some(&web))),
            Some("DELETED"),
            "stopped matching"
        );
        assert_eq!(
            f.event_type(&ev(EventType::Modified, &web, Some(&db))),
            Some("ADDED"),
            "started matching"
        );
        assert_eq!(f.event_type(&ev(EventType::Modified, &db, Some(&db))), None);
        assert_eq!(
            f.event_type(&ev(EventType::Deleted, &web, None)),
            Some("DELETED")
        );
        assert_eq!(f.event_type(&ev(EventType::Deleted, &db, None)), None);
    }

    #[test]
    fn snapshot_chunks_carry_totals_first_and_rebuild_the_file() {
        let file: Vec<u8> = (0..(SNAPSHOT_CHUNK_BYTES * 2 + 10))
            .map(|i| i as u8)
            .collect();
        let chunks = snapshot_chunks(file.clone(), 7, 3);
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            (chunks[0].revision, chunks[0].objects, chunks[0].total_bytes),
            (7, 3, file.len() as u64)
        );
        assert_eq!(chunks[1].total_bytes, 0);
        let joined: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
        assert_eq!(joined, file);
        assert_eq!(snapshot_chunks(Vec::new(), 0, 0).len(), 1);
    }

    #[test]
    fn field_selector_filters_and_rejects_unknown_fields() {
        let f = Filter::parse("", "spec.nodeName=n1").unwrap();
        assert!(f.matches(&json!({"spec":{"nodeName":"n1"}})));
        assert!(!f.matches(&json!({"spec":{"nodeName":"n2"}})));
        let f = Filter::parse("", "spec.nodeName!=n1").unwrap();
        assert!(f.matches(&json!({"spec":{}})));
        assert!(Filter::parse("", "spec.bogus=1").is_err());
        assert!(Filter::parse("", "nonsense").is_err());
        let f = Filter::parse(
            "",
            "involvedObject.kind=Pod,involvedObject.name=web,type=Warning",
        )
        .unwrap();
        let ev = json!({"involvedObject": {"kind": "Pod", "name": "web"}, "type": "Warning"});
        assert!(f.matches(&ev));
        assert!(
            !f.matches(
                &json!({"involvedObject": {"kind": "Pod", "name": "db"}, "type": "Warning"})
            )
        );
    }
    #[test]
    fn filtering_the_stored_json_agrees_with_filtering_the_tree() {
        let objects = [
            json!({"metadata": {"name": "a", "namespace": "x", "labels": {"app": "web", "t": "1"}},
                   "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
                   "status": {"phase": "Running", "podIP": "10.244.0.5"}}),
            json!({"metadata": {"name": "b", "namespace": "y", "labels": {"app": "db"}},
                   "spec": {}, "status": {"phase": "Pending"}}),
            json!({"metadata": {"name": "e\"q", "namespace": "x"},
                   "involvedObject": {"kind": "Pod", "name": "a"}, "type": "Warning", "reason": "Failed"}),
            json!({"metadata": {"name": "c"}, "spec": {"nodeName": ""}}),
            // Shapes the view does not take (a label or a phase that is not a string): the
            // caller falls back to the tree.
            json!({"metadata": {"name": "d", "labels": {"n": 3}}, "status": {"phase": 7}}),
            json!({"metadata": {"name": "f"}, "status": "odd", "type": {"x": 1}}),
        ];
        let filters = [
            ("", ""),
            ("", "spec.nodeName=n1"),
            ("", "spec.nodeName!="),
            ("app=web", ""),
            ("app in (web,db),t!=2", "metadata.namespace=x"),
            // An escaped string in the JSON (the view owns that one).
            ("", "metadata.name=e\"q"),
            ("", "involvedObject.kind=Pod,type=Warning,reason=Failed"),
            ("", "status.phase!=Running"),
            // What agents mirror for the pod network: pods with an address.
            ("", "status.podIP!="),
            ("", "status.podIP=10.244.0.5"),
        ];
        let mut compared = 0;
        let event = |et, now: &Value, prev: Option<&Value>| shoal_store::WatchEvent {
            revision: 1,
            event_type: et,
            key: "Pod/x/a".into(),
            object: now.clone(),
            prev_object: prev.cloned(),
        };
        // And the store's trigger of each filter never holds back a change it passes.
        let mut held_back = 0;
        for (labels, fields) in filters {
            let f = Filter::parse(labels, fields).unwrap();
            let trigger = f.trigger(Kind::Pod);
            for (i, now) in objects.iter().enumerate() {
                for prev in [None, Some(&objects[(i + 1) % objects.len()])] {
                    for et in [EventType::Added, EventType::Modified, EventType::Deleted] {
                        let ev = event(et, now, prev);
                        let (b, p) = (now.to_string(), prev.map(|p| p.to_string()));
                        if let Some(raw) =
                            f.event_type_raw(et, b.as_bytes(), p.as_deref().map(str::as_bytes))
                        {
                            assert_eq!(
                                raw,
                                f.event_type(&ev),
                                "{labels:?} {fields:?} {now} {prev:?} {et:?}"
                            );
                            compared += 1;
                        }
                        // The store keeps no previous version but a Modified event's.
                        let prev = prev.filter(|_| et == EventType::Modified);
                        if trigger.as_ref().is_some_and(|t| !t.hits(now, prev)) {
                            held_back += 1;
                            let ev = event(et, now, prev);
                            assert_eq!(f.event_type(&ev), None, "{fields:?} {now} {prev:?} {et:?}");
                        }
                    }
                }
            }
        }
        assert!(held_back > 20, "the triggers held back {held_back} changes");
        assert!(Filter::parse("", "").unwrap().trigger(Kind::Pod).is_none());
        assert!(
            Filter::parse("", "metadata.name=a")
                .unwrap()
                .trigger(Kind::Secret)
                .is_none()
        );
        // 360 cases: most are compared, those with the odd shapes fall back.
        assert!(
            (190..360).contains(&compared),
            "the view took {compared} cases"
        );
    }
}
