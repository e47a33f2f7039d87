//! The controllers the agent talks to: one lazily connected channel per
//! address and fail-over to the next address when one is unavailable (the
//! same rule as `shoalctl`: retry UNAVAILABLE on the other addresses, each
//! at most once per call).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal_api::{Object, Resource};
use shoal_proto::cluster_client::ClusterClient;
use shoal_proto::images_client::ImagesClient;
use shoal_proto::{GetRequest, ObjectRequest};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// Deadline of unary requests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors talking to the controllers.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A bad `--controller` entry.
    #[error("--controller: address {addr:?}: {reason}")]
    BadAddress {
        /// The entry.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The controller answered with an error.
    #[error("{addr}: {status}")]
    Status {
        /// The controller that answered.
        addr: String,
        /// Its answer.
        status: tonic::Status,
    },
    /// An object did not decode.
    #[error("{what}: {message}")]
    Decode {
        /// Which object.
        what: String,
        /// Why.
        message: String,
    },
}

impl ControllerError {
    /// The gRPC code, when the controller answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            ControllerError::Status { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// The controller addresses and their channels.
#[derive(Debug)]
pub struct Controllers {
    addrs: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
}

impl Controllers {
    /// Parses `HOST:PORT[,HOST:PORT…]` and prepares lazy channels.
    pub fn new(list: &str) -> Result<Controllers, ControllerError> {
        let mut addrs = Vec::new();
        let mut channels = Vec::new();
        for raw in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let a = raw
                .strip_prefix("http://")
                .unwrap_or(raw)
                .trim_end_matches('/');
            let bad = |reason: &str| ControllerError::BadAddress {
                addr: raw.to_string(),
                reason: reason.to_string(),
            };
            match a.rsplit_once(':').map(|(_, p)| p.parse::<u16>()) {
                Some(Ok(p)) if p > 0 => {}
                _ => return Err(bad("expected HOST:PORT, e.g. 127.0.0.1:7001")),
            }
            if addrs.iter().any(|x| x == a) {
                continue;
            }
            let ep = Endpoint::from_shared(format!("http://{a}"))
                .map_err(|e| bad(&e.to_string()))?
                .connect_timeout(Duration::from_secs(1))
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(2))
                .keep_alive_while_idle(true)
                .tcp_nodelay(true);
            channels.push(ep.connect_lazy());
            addrs.push(a.to_string());
        }
        if addrs.is_empty() {
            return Err(ControllerError::BadAddress {
                addr: list.to_string(),
                reason: "no controller address given".into(),
            });
        }
        Ok(Controllers {
            addrs,
            channels,
            current: AtomicUsize::new(0),
        })
    }

    /// The address currently used.
    pub fn address(&self) -> &str {
        &self.addrs[self.current.load(Ordering::Relaxed) % self.addrs.len()]
    }

    /// Moves to the next address (after a failure seen by a stream).
    pub fn fail_over(&self) {
        let n = self.addrs.len();
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some((c + 1) % n));
    }

    /// Runs `f` on the current controller's channel; on UNAVAILABLE (or a broken
    /// connection) tries the next addresses, each at most once.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, ControllerError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut tries = self.addrs.len();
        loop {
            let i = self.current.load(Ordering::Relaxed) % self.addrs.len();
            match f(self.channels[i].clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if retryable(&s) && tries > 1 => {
                    tries -= 1;
                    let _ = self.current.compare_exchange(
                        i,
                        (i + 1) % self.addrs.len(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                Err(status) => {
                    return Err(ControllerError::Status {
                        addr: self.addrs[i].clone(),
                        status,
                    });
                }
            }
        }
    }

    /// A Cluster client on the current channel (for streams).
    pub fn cluster(&self) -> ClusterClient<Channel> {
        let i = self.current.load(Ordering::Relaxed) % self.addrs.len();
        ClusterClient::new(self.channels[i].clone())
    }

    /// Reads one object; `Ok(None)` when it does not exist.
    pub async fn get<T: Resource>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<T>, ControllerError> {
        let req = GetRequest {
            kind: T::KIND.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            stale: false,
        };
        let r = self
            .call(|ch| {
                let mut req = tonic::Request::new(req.clone());
                req.set_timeout(REQUEST_TIMEOUT);
                async move { ClusterClient::new(ch).get(req).await }
            })
            .await;
        match r {
            Ok(resp) => decode::<T>(&resp.object_json).map(Some),
            Err(e) if e.code() == Some(Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates an object; returns it as stored.
    pub async fn create<T: Resource>(&self, obj: &T) -> Result<T, ControllerError> {
        self.write(obj, false).await
    }

    /// Updates an object (its `resourceVersion`, when set, is a precondition).
    pub async fn update<T: Resource>(&self, obj: &T) -> Result<T, ControllerError> {
        self.write(obj, true).await
    }

    /// Creates (or, with `update`, updates) an object; returns it as stored.
    async fn write<T: Resource>(&self, obj: &T, update: bool) -> Result<T, ControllerError> {
        let json = Into::<Object>::into(obj.clone()).to_json_string();
        let resp = self
            .call(|ch| {
                let mut req = tonic::Request::new(ObjectRequest {
                    object_json: json.clone(),
                });
                req.set_timeout(REQUEST_TIMEOUT);
                async move {
                    let mut c = ClusterClient::new(ch);
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

    /// An Images client on channel `ch` (inside [`Controllers::call`]).
    pub fn images(ch: Channel) -> ImagesClient<Channel> {
        ImagesClient::new(ch).max_decoding_message_size(64 << 20)
    }
}

/// Whether another controller may succeed where this one failed.
pub fn retryable(s: &tonic::Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Cancelled)
        || (s.code() == Code::Unknown && s.message().contains("transport"))
}

/// Decodes a stored object of kind `T`.
pub fn decode<T: Resource>(json: &str) -> Result<T, ControllerError> {
    let bad = |message: String| ControllerError::Decode {
        what: format!("{} object", T::KIND),
        message,
    };
    let o = Object::from_json_str(json).map_err(|e| bad(e.to_string()))?;
    T::try_from(o).map_err(|o| bad(format!("expected a {}, got a {}", T::KIND, o.kind())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_parse_and_fail_over_wraps() {
        let c = Controllers::new("127.0.0.1:1,http://127.0.0.1:2/, 127.0.0.1:1").unwrap();
        assert_eq!(c.address(), "127.0.0.1:1");
        c.fail_over();
        assert_eq!(c.address(), "127.0.0.1:2");
        c.fail_over();
        assert_eq!(c.address(), "127.0.0.1:1");
        assert!(
            Controllers::new("a")
                .unwrap_err()
                .to_string()
                .contains("\"a\"")
        );
        assert!(Controllers::new(" ,").is_err());
    }

    #[tokio::test]
    async fn unreachable_controllers_are_named() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Controllers::new(&format!("127.0.0.1:{port}")).unwrap();
        let e = c.get::<shoal_api::Node>("", "n1").await.unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("127.0.0.1:{port}:")),
            "{e}"
        );
        assert_eq!(e.code(), Some(Code::Unavailable));
    }
}
