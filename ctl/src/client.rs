//! The connection of one command to the controllers: a thin layer over
//! [`shoal_client::Client`] (address list, fail-over, the one retry rule, timeouts) that
//! keeps `shoalctl`'s call shape (`conn.call(|mut c| …)` answering a `tonic::Status`) and
//! maps client errors to [`CtlError`] in one place.

use std::future::Future;

use shoal_client::{Client, ClientConfig, ClientError, Endpoints};
use shoal_proto::cluster_client::ClusterClient;
use tonic::transport::Channel;

use crate::error::{CtlError, status_error};

pub use shoal_client::Timeouts;

/// Where the client configuration and the controllers are (global flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration file (`--config`, `SHOAL_CONFIG`, `~/.shoal/config`).
    pub config: std::path::PathBuf,
    /// `--context`.
    pub context: Option<String>,
    /// `--server` / `SHOAL_SERVER`: replaces the context's controller list.
    pub server: Option<String>,
    /// Timeouts.
    pub timeouts: Timeouts,
}

/// `~/.shoal/config` (or `./.shoal/config` without a home).
pub fn default_config_path() -> std::path::PathBuf {
    std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_default()
        .join(".shoal/config")
}

/// Parses a comma-separated controller list (`host:port[,host:port…]`, optional `http://`).
pub fn parse_servers(list: &str) -> Result<Endpoints, CtlError> {
    Endpoints::parse(list).map_err(client_error)
}

/// The one mapping from a client error to a `shoalctl` error.
pub fn client_error(e: ClientError) -> CtlError {
    match e {
        ClientError::BadAddress { addr, reason } => CtlError::BadAddress { addr, reason },
        ClientError::NoAddress => {
            CtlError::Usage("no controller address given (use --server or SHOAL_SERVER)".into())
        }
        ClientError::Unreachable { tried, reason } => CtlError::Unreachable { tried, reason },
        e @ (ClientError::Config { .. } | ClientError::Join { .. }) => {
            CtlError::Usage(e.to_string())
        }
        e @ ClientError::WatchGaveUp { .. } => CtlError::Unavailable(e.to_string()),
        ClientError::Decode { what, message } => {
            CtlError::BadResponse(format!("{what}: {message}"))
        }
        e @ ClientError::Status { .. } => status_error(&e.to_status(), None),
    }
}

/// A connected client kept for the whole command. Clones share the client's current
/// member (the dashboard serves requests at once, each with its own clone).
#[derive(Debug, Clone)]
pub struct Connection {
    client: Client,
}

impl Connection {
    /// Reads the configuration file and connects to the first controller that accepts,
    /// trying them in order.
    pub async fn connect(s: &Settings) -> Result<Connection, CtlError> {
        let (config, _) =
            ClientConfig::from_file(&s.config, s.context.as_deref(), s.server.as_deref())
                .map_err(client_error)?;
        let client = Client::connect(config.with_timeouts(s.timeouts))
            .await
            .map_err(client_error)?;
        Ok(Connection { client })
    }

    /// The shared client (for watches).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The address currently connected to.
    pub fn address(&self) -> String {
        self.client.address()
    }

    /// A new channel to the current controller whose requests have no deadline, for
    /// client-streaming uploads that may outlast `--request-timeout` (HTTP/2 keep-alive
    /// still finds a controller that stopped answering).
    pub async fn channel_without_deadline(&self) -> Result<Channel, CtlError> {
        self.client
            .channel_without_deadline()
            .await
            .map_err(client_error)
    }

    /// The channel to the current controller (for the `Proxy` and `Images` services).
    pub async fn channel(&self) -> Result<Channel, CtlError> {
        self.client.channel().await.map_err(client_error)
    }

    /// Runs one request on the `Cluster` service; see [`Connection::call_on`].
    pub async fn call<T, F, Fut>(&mut self, mut request: F) -> Result<T, tonic::Status>
    where
        F: FnMut(ClusterClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_on(|ch| request(shoal_client::Client::cluster(ch)))
            .await
    }

    /// Runs one request; on a transport failure or UNAVAILABLE retries on the next
    /// addresses, each at most once (shoal-client's retry rule). A final transport
    /// failure names the address it came from.
    pub async fn call_on<T, F, Fut>(&mut self, request: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.client
            .call_on(request)
            .await
            .map_err(|e| e.to_status())
    }

    /// Moves to the next reachable controller.
    pub async fn reconnect(&mut self) -> Result<(), CtlError> {
        self.client.fail_over();
        self.client.channel().await.map_err(client_error)?;
        Ok(())
    }
}
