//! The `Access` service: joining with a token, renewing certificates, join tokens and
//! user certificates (docs/security.md). Tokens live in the store under
//! [`crate::pki::TOKEN_PREFIX`] with only a hash of their secret; a join spends a use
//! with a compare-and-swap, so a single-use token admits exactly one joiner.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use shoal_pki::layer::identity_of;
use shoal_pki::{Identity, Role, Token};
use shoal_proto::access_server::{Access, AccessServer};
use shoal_proto::{
    CreateTokenRequest, IssueUserRequest, IssueUserResponse, JoinRequest, JoinResponse,
    ListTokensRequest, ListTokensResponse, RenewRequest, RenewResponse, RevokeTokenRequest,
    TokenInfo,
};
use shoal_store::{Consistency, Store, StoreError, Write};
use tonic::{Request, Response, Status};

use crate::pki::{ControllerTls, TOKEN_PREFIX};

/// Longest token lifetime.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest user certificate lifetime.
const MAX_USER_TTL: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Most subject alternative names a joiner may ask for.
const MAX_ADDRESSES: usize = 16;

/// The service on one controller.
#[derive(Debug, Clone)]
pub struct AccessService {
    store: Store,
    tls: ControllerTls,
    cipher: std::sync::Arc<crate::encryption::SecretCipher>,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn store_status(e: StoreError) -> Status {
    crate::error::to_status(&crate::error::ApiError::from(e))
}

fn require_admin<T>(req: &Request<T>, what: &str) -> Result<Identity, Status> {
    match identity_of(req) {
        Some(id) if id.is_admin() => Ok(id),
        Some(id) => Err(Status::permission_denied(format!(
            "{what} needs the admin role; {id} may not"
        ))),
        None => Err(Status::unauthenticated(
            "a client certificate of this cluster is required",
        )),
    }
}

/// Checks the addresses a joiner wants on its certificate.
fn check_addresses(addrs: &[String]) -> Result<(), Status> {
    if addrs.len() > MAX_ADDRESSES {
        return Err(Status::invalid_argument(format!(
            "addresses: at most {MAX_ADDRESSES}"
        )));
    }
    for a in addrs {
        let ok = a.parse::<std::net::IpAddr>().is_ok()
            || (!a.is_empty()
                && a.len() <= 253
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if !ok {
            return Err(Status::invalid_argument(format!(
                "address {a:?}: expected an IP address or a DNS name"
            )));
        }
    }
    Ok(())
}

/// A stored token's view.
fn token_info(v: &Value) -> TokenInfo {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let n = |p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    TokenInfo {
        id: s("/metadata/name"),
        token: String::new(),
        ca_hash: String::new(),
        expires_unix: n("/spec/expires"),
        uses_left: n("/spec/usesLeft") as u32,
        uses_limited: v
            .pointer("/spec/usesLimited")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        used: n("/spec/used") as u32,
        usage: s("/spec/usage"),
        description: s("/spec/description"),
        created_unix: n("/spec/created"),
        user: s("/spec/user"),
        role: s("/spec/role"),
        namespace: s("/spec/namespace"),
    }
}

fn revision_of(v: &Value) -> Option<u64> {
    v.pointer("/metadata/resourceVersion")
        .and_then(|r| match r {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        })
}

/// The user a registry token stands for, checked like `config create-user`.
fn registry_user(name: &str, role: &str, namespace: &str) -> Result<Identity, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument(
            "a registry token needs --user NAME (the user it stands for)",
        ));
    }
    let role: Role = if role.is_empty() { "view" } else { role }
        .parse()
        .map_err(|e: shoal_pki::PkiError| Status::invalid_argument(e.to_string()))?;
    let namespace = (!namespace.is_empty()).then(|| namespace.to_string());
    if role == Role::Admin && namespace.is_some() {
        return Err(Status::invalid_argument(
            "the admin role is cluster-wide: drop --namespace",
        ));
    }
    let who = Identity::User {
        name: name.to_string(),
        role,
        namespace,
    };
    who.check()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(who)
}

/// Checks a registry token (`ID.SECRET`, the password of `docker login`) and gives the user
/// it stands for. Refusals name the token id and why, never whether a secret was close.
pub async fn registry_identity(store: &Store, token: &str) -> Result<Identity, String> {
    let token = Token::parse(token.trim())
        .map_err(|_| "the password is not a Shoal registry token (ID.SECRET from `shoalctl token create --usage registry`)".to_string())?;
    let key = format!("{TOKEN_PREFIX}{}", token.id());
    let v = store
        .get(&key, Consistency::Linearizable)
        .await
        .map_err(|e| format!("checking the token: {e}"))?
        .ok_or_else(|| {
            format!(
                "registry token {}: no such token (revoked, expired and removed, or mistyped)",
                token.id()
            )
        })?;
    let hash = v
        .pointer("/spec/secretHash")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !token.matches(hash) {
        return Err(format!("registry token {}: wrong secret", token.id()));
    }
    let info = token_info(&v);
    if info.usage != "registry" {
        return Err(format!(
            "token {} is a join token ({}), not a registry token",
            token.id(),
            info.usage
        ));
    }
    if info.expires_unix <= now_unix() {
        return Err(format!(
            "registry token {} expired {} s ago; make a new one with `shoalctl token create --usage registry`",
            token.id(),
            now_unix() - info.expires_unix
        ));
    }
    registry_user(&info.user, &info.role, &info.namespace).map_err(|s| s.message().to_string())
}

impl AccessService {
    /// The service.
    pub fn new(
        store: Store,
        tls: ControllerTls,
        cipher: std::sync::Arc<crate::encryption::SecretCipher>,
    ) -> AccessService {
        AccessService { store, tls, cipher }
    }

    /// As a tonic server.
    pub fn into_server(self) -> AccessServer<AccessService> {
        AccessServer::new(self)
    }

    /// Checks and spends one use of a token for `usage`. Every refusal says which token
    /// and why, never whether a secret was close.
    async fn spend(&self, token: &Token, usage: &str) -> Result<(), Status> {
        let key = format!("{TOKEN_PREFIX}{}", token.id());
        for _ in 0..10 {
            let Some(mut v) = self
                .store
                .get(&key, Consistency::Linearizable)
                .await
                .map_err(store_status)?
            else {
                return Err(Status::permission_denied(format!(
                    "join token {}: no such token (revoked, expired and removed, or mistyped)",
                    token.id()
                )));
            };
            let hash = v
                .pointer("/spec/secretHash")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !token.matches(hash) {
                return Err(Status::permission_denied(format!(
                    "join token {}: wrong secret",
                    token.id()
                )));
            }
            let info = token_info(&v);
            if info.expires_unix <= now_unix() {
                return Err(Status::permission_denied(format!(
                    "join token {} expired {} s ago; make a new one with `shoalctl token create`",
                    token.id(),
                    now_unix() - info.expires_unix
                )));
            }
            if info.usage != usage {
                return Err(Status::permission_denied(format!(
                    "join token {} is for joining a {}, not a {usage}",
                    token.id(),
                    info.usage
                )));
            }
            if info.uses_limited && info.uses_left == 0 {
                return Err(Status::permission_denied(format!(
                    "join token {} is used up ({} joins)",
                    token.id(),
                    info.used
                )));
            }
            let spec = v.pointer_mut("/spec").and_then(Value::as_object_mut);
            if let Some(spec) = spec {
                if info.uses_limited {
                    spec.insert("usesLeft".into(), json!(info.uses_left - 1));
                }
                spec.insert("used".into(), json!(info.used + 1));
            }
            match self
                .store
                .write(vec![Write::Update {
                    key: key.clone(),
                    object: v.clone(),
                    expected_revision: revision_of(&v),
                }])
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_status(e)),
            }
        }
        Err(Status::aborted(format!(
            "join token {}: too many concurrent joins, try again",
            token.id()
        )))
    }

    async fn sign(
        &self,
        csr: &str,
        who: &Identity,
        addrs: &[String],
        lifetime: Duration,
    ) -> Result<String, Status> {
        let ca = self
            .tls
            .signing_ca(&self.store)
            .await
            .map_err(Status::unavailable)?;
        let cert = ca
            .sign_csr(csr, who, addrs, lifetime)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(format!("{cert}{}", ca.cert_pem()))
    }
}

#[tonic::async_trait]
impl Access for AccessService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let req = request.into_inner();
        let token =
            Token::parse(&req.token).map_err(|e| Status::invalid_argument(e.to_string()))?;
        check_addresses(&req.addresses)?;
        let who = match req.kind.as_str() {
            "node" => Identity::Node {
                name: req.name.clone(),
            },
            "controller" => Identity::Controller {
                id: req.controller_id,
            },
            k => {
                return Err(Status::invalid_argument(format!(
                    "kind {k:?}: expected node or controller"
                )));
            }
        };
        who.check()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Identity::Node { name } = &who
            && self
                .store
                .get(&format!("Node//{name}"), Consistency::Linearizable)
                .await
                .map_err(store_status)?
                .is_some()
        {
            return Err(Status::already_exists(format!(
                "node {name} already exists: delete it first (`shoalctl delete node {name}`) or join with another --name"
            )));
        }
        self.spend(&token, &req.kind).await?;
        let cert = self
            .sign(&req.csr_pem, &who, &req.addresses, self.tls.cert_lifetime)
            .await?;
        tracing::info!(token = token.id(), identity = %who, "joined with a token");
        // Only a controller gets the key that encrypts Secrets (never a node).
        let encryption_key = match who {
            Identity::Controller { .. } => self.cipher.key_bytes(),
            _ => Vec::new(),
        };
        Ok(Response::new(JoinResponse {
            cert_pem: cert,
            ca_pem: self.tls.ca_pem.clone(),
            encryption_key,
        }))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let who = identity_of(&request);
        let req = request.into_inner();
        let who = match who {
            Some(id @ (Identity::Node { .. } | Identity::Controller { .. })) => id,
            Some(other) => {
                return Err(Status::permission_denied(format!(
                    "only nodes and controllers renew certificates here, not {other}"
                )));
            }
            None => return Err(Status::unauthenticated("a client certificate is required")),
        };
        check_addresses(&req.addresses)?;
        let cert = self
            .sign(&req.csr_pem, &who, &req.addresses, self.tls.cert_lifetime)
            .await?;
        tracing::info!(identity = %who, "renewed a certificate");
        Ok(Response::new(RenewResponse { cert_pem: cert }))
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<TokenInfo>, Status> {
        require_admin(&request, "creating join tokens")?;
        let req = request.into_inner();
        let ttl = Duration::from_secs(req.ttl_seconds.max(0) as u64);
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(Status::invalid_argument(
                "ttl: must be more than 0 s and at most a year",
            ));
        }
        let usage = if req.usage.is_empty() {
            "node"
        } else {
            req.usage.as_str()
        };
        let registry_user = match usage {
            "node" | "controller" => {
                if !req.user.is_empty() || !req.role.is_empty() || !req.namespace.is_empty() {
                    return Err(Status::invalid_argument(
                        "--user, --role and --namespace are for registry tokens (--usage registry)",
                    ));
                }
                None
            }
            "registry" => Some(registry_user(&req.user, &req.role, &req.namespace)?),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "usage {usage:?}: expected node, controller or registry"
                )));
            }
        };
        let token = Token::generate();
        let now = now_unix();
        let object = json!({
            "kind": "JoinToken",
            "metadata": {"name": token.id()},
            "spec": {
                "secretHash": token.secret_hash(),
                "expires": now + ttl.as_secs() as i64,
                "created": now,
                "usesLimited": req.uses > 0,
                "usesLeft": req.uses,
                "used": 0,
                "usage": usage,
                "description": req.description,
            },
        });
        let mut object = object;
        if let (
            Some(Identity::User {
                name,
                role,
                namespace,
            }),
            Some(spec),
        ) = (
            &registry_user,
            object.pointer_mut("/spec").and_then(Value::as_object_mut),
        ) {
            spec.insert("user".into(), json!(name));
            spec.insert("role".into(), json!(role.as_str()));
            spec.insert(
                "namespace".into(),
                json!(namespace.clone().unwrap_or_default()),
            );
            // Logins never spend a registry token.
            spec.insert("usesLimited".into(), json!(false));
        }
        let out = self
            .store
            .write(vec![Write::Create {
                key: format!("{TOKEN_PREFIX}{}", token.id()),
                object,
            }])
            .await
            .map_err(store_status)?;
        let mut info = token_info(&out[0].object);
        info.token = token.to_string();
        info.ca_hash = shoal_pki::ca::ca_hash_of_pem(&self.tls.ca_pem).unwrap_or_default();
        Ok(Response::new(info))
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        require_admin(&request, "listing join tokens")?;
        let (items, _) = self
            .store
            .list(TOKEN_PREFIX, Consistency::Linearizable)
            .await
            .map_err(store_status)?;
        let hash = shoal_pki::ca::ca_hash_of_pem(&self.tls.ca_pem).unwrap_or_default();
        let tokens = items
            .iter()
            .map(|v| TokenInfo {
                ca_hash: hash.clone(),
                ..token_info(v)
            })
            .collect();
        Ok(Response::new(ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<TokenInfo>, Status> {
        require_admin(&request, "revoking join tokens")?;
        let id = request.into_inner().id;
        let id = id.split('.').next().unwrap_or("").to_string();
        match self
            .store
            .write(vec![Write::Delete {
                key: format!("{TOKEN_PREFIX}{id}"),
                expected_revision: None,
            }])
            .await
        {
            Ok(out) => Ok(Response::new(token_info(&out[0].object))),
            Err(StoreError::NotFound { .. }) => {
                Err(Status::not_found(format!("join token {id:?} not found")))
            }
            Err(e) => Err(store_status(e)),
        }
    }

    async fn issue_user(
        &self,
        request: Request<IssueUserRequest>,
    ) -> Result<Response<IssueUserResponse>, Status> {
        require_admin(&request, "creating users")?;
        let req = request.into_inner();
        let role: Role = req
            .role
            .parse()
            .map_err(|e: shoal_pki::PkiError| Status::invalid_argument(e.to_string()))?;
        let namespace = (!req.namespace.is_empty()).then(|| req.namespace.clone());
        if role == Role::Admin && namespace.is_some() {
            return Err(Status::invalid_argument(
                "the admin role is cluster-wide: drop --namespace",
            ));
        }
        let who = Identity::User {
            name: req.name.clone(),
            role,
            namespace,
        };
        who.check()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ttl = Duration::from_secs(req.ttl_seconds.max(0) as u64);
        if ttl.is_zero() || ttl > MAX_USER_TTL {
            return Err(Status::invalid_argument(
                "ttl: must be more than 0 s and at most five years",
            ));
        }
        let cert = self.sign(&req.csr_pem, &who, &[], ttl).await?;
        let servers = self
            .store
            .status()
            .await
            .members
            .iter()
            .map(|m| m.addr.clone())
            .collect();
        tracing::info!(identity = %who, "issued a user certificate");
        Ok(Response::new(IssueUserResponse {
            cert_pem: cert,
            ca_pem: self.tls.ca_pem.clone(),
            servers,
        }))
    }
}
