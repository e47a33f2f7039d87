//! [`Client`]: the connection to the controllers, with fail-over and the retry rule.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shoal_api::{Object, Resource};
use shoal_proto::cluster_client::ClusterClient;
use shoal_proto::images_client::ImagesClient;
use shoal_proto::{
    CreateManyRequest, CreateManyResult, DeleteRequest, GetRequest, HeartbeatRequest, ObjectRequest,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::retry::{Failure, classify};
use crate::{ClientConfig, ClientError, ServerAddr, unreachable};

/// Largest message the Images service sends (blobs come in chunks below this).
const MAX_IMAGE_MESSAGE: usize = 64 << 20;
/// Largest `Cluster` answer accepted (a List of a whole kind, a snapshot chunk). tonic's
/// default of 4 MiB is about 2,000 pods: a List beyond it failed on every retry.
pub const MAX_CLUSTER_MESSAGE: usize = 512 << 20;

/// A client of the controllers: one channel to the current member at a time, moved to
/// the next member on a retryable failure ([`crate::retry::classify`]). Cheap to clone;
/// clones share the current member.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Index of the current member.
    current: usize,
    /// Its channel, once connected; dropped after a transport failure.
    channel: Option<Channel>,
}

impl Client {
    /// A client that connects on first use.
    pub fn new(config: ClientConfig) -> Client {
        Client {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State {
                    current: 0,
                    channel: None,
                }),
            }),
        }
    }

    /// A client connected to the first member that accepts (tried in order).
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let c = Client::new(config);
        c.current_channel().await?;
        Ok(c)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn addrs(&self) -> &[ServerAddr] {
        self.inner.config.endpoints.addrs()
    }

    /// The member currently used (`host:port`).
    pub fn address(&self) -> String {
        let i = self.state().current;
        self.addrs()[i].display.clone()
    }

    /// Moves to the member after `addr` if `addr` is still the current one (clones may
    /// have moved already) and forgets its channel.
    pub fn fail_over_from(&self, addr: &str) {
        let n = self.addrs().len();
        let mut st = self.state();
        if self.addrs()[st.current].display == addr {
            st.current = (st.current + 1) % n;
            st.channel = None;
        }
    }

    /// Moves to the next member.
    pub fn fail_over(&self) {
        let a = self.address();
        self.fail_over_from(&a);
    }

    /// The channel to the current member, connecting (current member first, then the
    /// others in order) when there is none.
    pub async fn channel(&self) -> Result<Channel, ClientError> {
        Ok(self.current_channel().await?.1)
    }

    async fn current_channel(&self) -> Result<(usize, Channel), ClientError> {
        let start = {
            let st = self.state();
            if let Some(ch) = &st.channel {
                return Ok((st.current, ch.clone()));
            }
            st.current
        };
        let (i, ch) = self.connect_from(start, true).await?;
        let mut st = self.state();
        if st.channel.is_none() {
            st.current = i;
            st.channel = Some(ch.clone());
        }
        Ok((i, ch))
    }

    /// A new channel to the current member (or the next reachable one) whose requests
    /// have no deadline, for uploads and streams that may outlast the request timeout
    /// (keep-alive still finds a member that stopped answering).
    pub async fn channel_without_deadline(&self) -> Result<Channel, ClientError> {
        let start = self.state().current;
        Ok(self.connect_from(start, false).await?.1)
    }

    /// Tries every member once, starting at `start`; the first that connects wins.
    async fn connect_from(
        &self,
        start: usize,
        deadline: bool,
    ) -> Result<(usize, Channel), ClientError> {
        let addrs = self.addrs();
        let n = addrs.len();
        let cfg = &self.inner.config;
        let mut failures: Vec<(String, String)> = Vec::new();
        for k in 0..n {
            let i = (start + k) % n;
            let a = &addrs[i];
            // The connect timeout bounds the TCP connect; this one also the TLS and
            // HTTP/2 handshakes.
            let limit = cfg.timeouts.connect + Duration::from_millis(1000);
            match tokio::time::timeout(limit, cfg.connect(a, deadline)).await {
                Ok(Ok(ch)) => return Ok((i, ch)),
                Ok(Err(ClientError::Unreachable { reason, .. })) => {
                    failures.push((a.display.clone(), reason))
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => failures.push((a.display.clone(), "connection timed out".into())),
            }
        }
        Err(unreachable(&failures))
    }

    /// Runs `f` once on the current member, without retrying. A transport failure
    /// forgets the channel (the next attempt reconnects) but stays on the member: the
    /// caller decides whether to [`Client::fail_over_from`] (the watcher does).
    pub async fn attempt<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (i, ch) = self.current_channel().await?;
        match f(ch).await {
            Ok(r) => Ok(r.into_inner()),
            Err(status) => {
                if classify(&status) == Failure::Transport {
                    let mut st = self.state();
                    if st.current == i {
                        st.channel = None;
                    }
                }
                Err(ClientError::Status {
                    addr: self.addrs()[i].display.clone(),
                    status,
                })
            }
        }
    }

    /// Runs `f` on the current member; on a retryable failure (the retry rule) moves to
    /// the next member and runs it again, trying each member at most once.
    ///
    /// A write whose connection broke after it was sent may have been applied: sending it
    /// again can then answer ALREADY_EXISTS or a conflict, which callers already handle
    /// as for any concurrent writer.
    pub async fn call_on<T, F, Fut>(&self, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut left = self.addrs().len();
        loop {
            left -= 1;
            match self.attempt(&mut f).await {
                Err(ClientError::Status { addr, status })
                    if left > 0 && classify(&status).is_retryable() =>
                {
                    tracing::debug!(%addr, %status, "retrying on the next controller");
                    self.fail_over_from(&addr);
                }
                other => return other,
            }
        }
    }

    /// [`Client::call_on`] with a `Cluster` client.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut(ClusterClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_on(|ch| f(Self::cluster(ch))).await
    }

    /// A `Cluster` client on `ch` that accepts answers up to [`MAX_CLUSTER_MESSAGE`]: the
    /// one way to make one (inside [`Client::call_on`], or on a channel of this client).
    pub fn cluster(ch: Channel) -> ClusterClient<Channel> {
        ClusterClient::new(ch).max_decoding_message_size(MAX_CLUSTER_MESSAGE)
    }

    /// An `Images` client on `ch` that accepts blob chunks (inside [`Client::call_on`]).
    pub fn images(ch: Channel) -> ImagesClient<Channel> {
        ImagesClient::new(ch).max_decoding_message_size(MAX_IMAGE_MESSAGE)
    }

    /// Reads one object; `Ok(None)` when it does not exist.
    pub async fn get<T: Resource>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<T>, ClientError> {
        let req = GetRequest {
            kind: T::KIND.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            stale: false,
        };
        match self
            .call(|mut c| {
                let r = req.clone();
                async move { c.get(r).await }
            })
            .await
        {
            Ok(resp) => decode::<T>(&resp.object_json).map(Some),
            Err(e) if e.code() == Some(Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists objects of kind `T` (see [`crate::ListParams`]) and the revision read at.
    pub async fn list<T: Resource>(
        &self,
        params: &crate::ListParams,
    ) -> Result<(Vec<T>, u64), ClientError> {
        let req = params.list_request(&T::KIND.to_string());
        let resp = self
            .call(|mut c| {
                let r = req.clone();
                async move { c.list(r).await }
            })
            .await?;
        let items = resp
            .items_json
            .iter()
            .map(|j| decode::<T>(j))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((items, resp.resource_version))
    }

    /// Deletes an object, on the precondition that its revision is `resource_version`
    /// (0: none); `Ok(false)` when it did not exist.
    pub async fn delete<T: Resource>(
        &self,
        namespace: &str,
        name: &str,
        resource_version: u64,
    ) -> Result<bool, ClientError> {
        let req = DeleteRequest {
            kind: T::KIND.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            resource_version,
        };
        match self
            .call(|mut c| {
                let r = req.clone();
                async move { c.delete(r).await }
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some(Code::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Tells the controllers node `node` is alive (kept in their memory, not written to
    /// the Node); returns the Node's resourceVersion on the member that answered (0 when
    /// it has no such Node), so a caller can rewrite the Node's status only when someone
    /// else changed the Node.
    pub async fn heartbeat(&self, node: &str) -> Result<u64, ClientError> {
        let req = HeartbeatRequest {
            node_name: node.to_string(),
        };
        self.call(|mut c| {
            let r = req.clone();
            async move { c.heartbeat(r).await }
        })
        .await
        .map(|r| r.node_revision)
    }

    /// Creates an object; returns it as stored.
    pub async fn create<T: Resource>(&self, obj: &T) -> Result<T, ClientError> {
        self.write(obj, false).await
    }

    /// Updates an object (its `resourceVersion`, when set, is a precondition).
    pub async fn update<T: Resource>(&self, obj: &T) -> Result<T, ClientError> {
        self.write(obj, true).await
    }

    /// Creates many objects (JSON documents of any kinds) in one CreateMany request, each
    /// on its own: one outcome per object, in order, the object as stored or that object's
    /// error as Create would answer it. A request resent after a broken connection (see
    /// [`Client::call_on`]) may answer ALREADY_EXISTS for objects the first one created.
    pub async fn create_many(
        &self,
        objects: &[serde_json::Value],
    ) -> Result<Vec<Result<serde_json::Value, tonic::Status>>, ClientError> {
        let req = CreateManyRequest {
            objects_json: objects.iter().map(serde_json::Value::to_string).collect(),
        };
        let resp = self
            .call(|mut c| {
                let r = req.clone();
                async move { c.create_many(r).await }
            })
            .await?;
        created_outcomes(objects.len(), resp.results)
    }

    async fn write<T: Resource>(&self, obj: &T, update: bool) -> Result<T, ClientError> {
        let json = Into::<Object>::into(obj.clone()).to_json_string();
        let resp = self
            .call(|mut c| {
                let req = ObjectRequest {
                    object_json: json.clone(),
                };
                async move {
                    if update {
                        c.update(req).await
                    } else {
                        c.create(req).await
                    }
                }
            })
            .await?;
        decode(&resp.object_json)
    }
}

/// The outcomes of a CreateMany answer for `sent` objects, in request order.
fn created_outcomes(
    sent: usize,
    results: Vec<CreateManyResult>,
) -> Result<Vec<Result<serde_json::Value, tonic::Status>>, ClientError> {
    let bad = |message: String| ClientError::Decode {
        what: "CreateMany answer".into(),
        message,
    };
    if results.len() != sent {
        return Err(bad(format!("{} results for {sent} objects", results.len())));
    }
    let mut out = Vec::with_capacity(sent);
    for (i, r) in results.into_iter().enumerate() {
        if r.index as usize != i {
            return Err(bad(format!("result {i} is for object {}", r.index)));
        }
        out.push(match Code::from(r.code) {
            Code::Ok => Ok(serde_json::from_str(&r.object_json)
                .map_err(|e| bad(format!("object {i} ({} {}): {e}", r.kind, r.name)))?),
            code => Err(tonic::Status::new(code, r.error)),
        });
    }
    Ok(out)
}

/// Decodes a stored object of kind `T`.
pub fn decode<T: Resource>(json: &str) -> Result<T, ClientError> {
    let bad = |message: String| ClientError::Decode {
        what: format!("{} object", T::KIND),
        message,
    };
    let o = Object::from_json_str(json).map_err(|e| bad(e.to_string()))?;
    T::try_from(o).map_err(|o| bad(format!("expected a {}, got a {}", T::KIND, o.kind())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn create_many_answers_are_checked_and_kept_in_order() {
        use super::created_outcomes;
        use shoal_proto::CreateManyResult;
        let ok = |i: u32| CreateManyResult {
            index: i,
            object_json: format!(r#"{{"n": {i}}}"#),
            ..Default::default()
        };
        let failed = CreateManyResult {
            index: 1,
            name: "b".into(),
            code: tonic::Code::PermissionDenied as i32,
            error: "no".into(),
            ..Default::default()
        };
        let out = created_outcomes(3, vec![ok(0), failed.clone(), ok(2)]).expect("three");
        assert_eq!(out[0].as_ref().expect("ok")["n"], 0);
        let e = out[1].as_ref().expect_err("refused");
        assert_eq!(
            (e.code(), e.message()),
            (tonic::Code::PermissionDenied, "no")
        );
        assert_eq!(out[2].as_ref().expect("ok")["n"], 2);
        assert!(
            created_outcomes(2, vec![ok(0)]).is_err(),
            "one result missing"
        );
        assert!(
            created_outcomes(2, vec![ok(0), ok(0)]).is_err(),
            "out of order"
        );
    }

    use super::*;
    use crate::Endpoints;

    /// A real TLS setting (a fresh CA and an admin certificate); nothing listens.
    fn tls() -> Arc<rustls::ClientConfig> {
        let ca = shoal_pki::Ca::generate("test").unwrap();
        let id = shoal_pki::Identity::User {
            name: "t".into(),
            role: shoal_pki::Role::Admin,
            namespace: None,
        };
        let (c, k) = ca.issue(&id, &[], Duration::from_secs(600)).unwrap();
        let slot = shoal_pki::tls::CertSlot::from_pem(&c, &k).unwrap();
        shoal_pki::tls::client_config(
            &shoal_pki::tls::Trust::Ca(ca.cert_pem().into()),
            Some(&slot),
            shoal_pki::tls::Expect::Controller,
        )
        .unwrap()
    }

    fn closed_port() -> u16 {
        // Bind then drop a listener so that the port is (almost certainly) closed.
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn closed_ports_are_reported_as_refused() {
        let (p1, p2) = (closed_port(), closed_port());
        let cfg = ClientConfig::new(
            Endpoints::parse(&format!("127.0.0.1:{p1},127.0.0.1:{p2}")).unwrap(),
            tls(),
        );
        let e = Client::connect(cfg).await.unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "cannot reach any controller (tried 127.0.0.1:{p1}, 127.0.0.1:{p2}): connection refused"
            )
        );
    }

    #[tokio::test]
    async fn fail_over_wraps_and_ignores_stale_moves() {
        let cfg = ClientConfig::new(Endpoints::parse("127.0.0.1:1,127.0.0.1:2").unwrap(), tls());
        let c = Client::new(cfg);
        assert_eq!(c.address(), "127.0.0.1:1");
        c.fail_over();
        assert_eq!(c.address(), "127.0.0.1:2");
        // Another task saw member 1 fail too: already moved, no second move.
        c.fail_over_from("127.0.0.1:1");
        assert_eq!(c.address(), "127.0.0.1:2");
        c.fail_over();
        assert_eq!(c.address(), "127.0.0.1:1");
    }
}
