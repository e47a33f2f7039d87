//! `shoalctl token create|list|revoke` and `shoalctl config create-user|get-contexts|
//! current-context|use-context|merge`: join tokens and client configurations
//! (docs/security.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_client::file::ConfigFile;
use shoal_pki::Identity;
use shoal_proto::access_client::AccessClient;
use shoal_proto::{
    CreateTokenRequest, IssueUserRequest, ListTokensRequest, RevokeTokenRequest, TokenInfo,
};

use super::{Context, print};
use crate::cli::{ConfigCommand, TokenCommand};
use crate::error::{CtlError, Service, service_error};
use crate::output::Table;

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn left(unix: i64) -> String {
    let d = unix - now_unix();
    if d <= 0 {
        "expired".into()
    } else if d >= 86_400 {
        format!("{}d", d / 86_400)
    } else if d >= 3600 {
        format!("{}h", d / 3600)
    } else {
        format!("{}m", (d / 60).max(1))
    }
}

fn denied(s: &tonic::Status) -> CtlError {
    service_error(s, None, Service::Workload)
}

/// Runs `token …`.
pub async fn token(ctx: &mut Context, command: TokenCommand) -> Result<(), CtlError> {
    match command {
        TokenCommand::Create {
            ttl,
            uses,
            usage,
            description,
            user,
            role,
        } => {
            let namespace = ctx.explicit_namespace().unwrap_or_default().to_string();
            let req = CreateTokenRequest {
                ttl_seconds: ttl.as_secs() as i64,
                uses,
                usage,
                description,
                user,
                role,
                namespace,
            };
            let t: TokenInfo = ctx
                .conn()
                .await?
                .call_on(|ch| {
                    let r = req.clone();
                    async move { AccessClient::new(ch).create_token(r).await }
                })
                .await
                .map_err(|s| denied(&s))?;
            let servers = ctx.conn().await?.address();
            let uses = if t.uses_limited {
                t.uses_left.to_string()
            } else {
                "unlimited".into()
            };
            if t.usage == "registry" {
                let scope = if t.namespace.is_empty() {
                    "every namespace".to_string()
                } else {
                    format!("namespace {}", t.namespace)
                };
                let host = servers
                    .split(',')
                    .next()
                    .and_then(|s| s.rsplit_once(':'))
                    .map(|(h, _)| h.to_string())
                    .unwrap_or_else(|| "CONTROLLER".into());
                return print(&format!(
                    "token:    {}\nusage:    registry ({} as {}, {scope})\nexpires:  {} (in {})\n\nlog in with (the cluster CA in /etc/docker/certs.d/{host}:7050/ca.crt):\n  docker login {host}:7050 -u {} -p {}\n",
                    t.token,
                    t.user,
                    t.role,
                    rfc3339(t.expires_unix),
                    left(t.expires_unix),
                    t.user,
                    t.token,
                ));
            }
            let join = if t.usage == "controller" {
                format!(
                    "shoal-controller --id ID --join {servers} --join-token {} --ca-hash {} ...\nthen: shoalctl cluster add-member ID=ADDR",
                    t.token, t.ca_hash
                )
            } else {
                format!(
                    "shoal-agent --name NODE --controller {servers} --join-token {} --ca-hash {} ...",
                    t.token, t.ca_hash
                )
            };
            print(&format!(
                "token:    {}\nca-hash:  {}\nusage:    {}\nuses:     {uses}\nexpires:  {} (in {})\n\njoin with:\n  {join}\n",
                t.token,
                t.ca_hash,
                t.usage,
                rfc3339(t.expires_unix),
                left(t.expires_unix)
            ))
        }
        TokenCommand::List => {
            let resp = ctx
                .conn()
                .await?
                .call_on(|ch| async move {
                    AccessClient::new(ch)
                        .list_tokens(ListTokensRequest {})
                        .await
                })
                .await
                .map_err(|s| denied(&s))?;
            let mut t = Table {
                headers: ["ID", "USAGE", "USES LEFT", "USED", "EXPIRES", "DESCRIPTION"]
                    .map(String::from)
                    .to_vec(),
                rows: Vec::new(),
            };
            for k in resp.tokens {
                t.rows.push(vec![
                    k.id,
                    k.usage,
                    if k.uses_limited {
                        k.uses_left.to_string()
                    } else {
                        "unlimited".into()
                    },
                    k.used.to_string(),
                    left(k.expires_unix),
                    k.description,
                ]);
            }
            if t.rows.is_empty() {
                super::note("No join tokens.");
                return Ok(());
            }
            print(&t.render(false))
        }
        TokenCommand::Revoke { id } => {
            let id = id.split('.').next().unwrap_or("").to_string();
            let req = RevokeTokenRequest { id: id.clone() };
            ctx.conn()
                .await?
                .call_on(|ch| {
                    let r = req.clone();
                    async move { AccessClient::new(ch).revoke_token(r).await }
                })
                .await
                .map_err(|s| denied(&s))?;
            print(&format!("token {id} revoked\n"))
        }
    }
}

fn load(ctx: &Context) -> Result<ConfigFile, CtlError> {
    ConfigFile::load(&ctx.settings().config).map_err(crate::client::client_error)
}

/// Runs `config …`.
pub async fn config(ctx: &mut Context, command: ConfigCommand) -> Result<(), CtlError> {
    match command {
        ConfigCommand::CreateUser { name, role, ttl } => create_user(ctx, name, role, ttl).await,
        ConfigCommand::GetContexts => {
            let f = load(ctx)?;
            let mut t = Table {
                headers: ["CURRENT", "NAME", "CLUSTER", "USER", "NAMESPACE"]
                    .map(String::from)
                    .to_vec(),
                rows: Vec::new(),
            };
            for c in &f.contexts {
                t.rows.push(vec![
                    if c.name == f.current_context {
                        "*".into()
                    } else {
                        String::new()
                    },
                    c.name.clone(),
                    c.context.cluster.clone(),
                    c.context.user.clone(),
                    c.context.namespace.clone().unwrap_or_default(),
                ]);
            }
            print(&t.render(false))
        }
        ConfigCommand::CurrentContext => {
            let f = load(ctx)?;
            if f.current_context.is_empty() {
                return Err(CtlError::Usage("no current-context is set".into()));
            }
            print(&format!("{}\n", f.current_context))
        }
        ConfigCommand::UseContext { name } => {
            let mut f = load(ctx)?;
            if !f.contexts.iter().any(|c| c.name == name) {
                return Err(CtlError::Usage(format!(
                    "no context {name:?} in {} (see `shoalctl config get-contexts`)",
                    ctx.settings().config.display()
                )));
            }
            f.current_context = name.clone();
            f.save(&ctx.settings().config)
                .map_err(crate::client::client_error)?;
            print(&format!("switched to context {name:?}\n"))
        }
        ConfigCommand::Merge { file } => {
            let other = ConfigFile::load(&file).map_err(crate::client::client_error)?;
            let path = ctx.settings().config.clone();
            let mut f = if path.exists() {
                load(ctx)?
            } else {
                ConfigFile::default()
            };
            let names: Vec<String> = other.contexts.iter().map(|c| c.name.clone()).collect();
            f.merge(other);
            if f.api_version.is_empty() {
                f.api_version = "v1".into();
                f.kind = "Config".into();
            }
            f.save(&path).map_err(crate::client::client_error)?;
            print(&format!(
                "merged contexts {} into {}\n",
                names.join(", "),
                path.display()
            ))
        }
    }
}

async fn create_user(
    ctx: &mut Context,
    name: String,
    role: String,
    ttl: Duration,
) -> Result<(), CtlError> {
    let namespace = ctx.explicit_namespace().map(str::to_string);
    let parsed_role: shoal_pki::Role = role
        .parse()
        .map_err(|e: shoal_pki::PkiError| CtlError::Usage(format!("--role: {e}")))?;
    let who = Identity::User {
        name: name.clone(),
        role: parsed_role,
        namespace: namespace.clone(),
    };
    let (key, csr) =
        shoal_pki::ca::new_key_and_csr(&who, &[]).map_err(|e| CtlError::Usage(e.to_string()))?;
    let req = IssueUserRequest {
        name: name.clone(),
        role,
        namespace: namespace.clone().unwrap_or_default(),
        csr_pem: csr,
        ttl_seconds: ttl.as_secs() as i64,
    };
    let resp = ctx
        .conn()
        .await?
        .call_on(|ch| {
            let r = req.clone();
            async move { AccessClient::new(ch).issue_user(r).await }
        })
        .await
        .map_err(|s| denied(&s))?;
    let cluster = load(ctx)
        .ok()
        .and_then(|f| {
            let cur = f.resolve(ctx.settings().context.as_deref()).ok()?;
            f.contexts
                .iter()
                .find(|c| c.name == cur.context)
                .map(|c| c.context.cluster.clone())
        })
        .unwrap_or_else(|| "shoal".into());
    let servers = if resp.servers.is_empty() {
        vec![ctx.conn().await?.address()]
    } else {
        resp.servers
    };
    let file = ConfigFile::single(
        &cluster,
        servers,
        &resp.ca_pem,
        &name,
        &resp.cert_pem,
        &key,
        namespace,
    );
    let text = serde_yaml_ng::to_string(&file).map_err(|e| CtlError::Usage(e.to_string()))?;
    super::note(&format!(
        "user {name} created ({who}); the configuration below holds its private key: keep it 0600"
    ));
    print(&text)
}
