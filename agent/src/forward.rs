//! Port forwarding: one TCP connection from a client (through the controller's
//! `Proxy.PortForward`) to a port of a pod, carried by one `Agent.PortForward` stream.
//!
//! The socket is opened to `127.0.0.1:PORT` by a short-lived thread that joined the pod's
//! network namespace (as the tcpSocket probe does); a socket stays in the namespace it was
//! made in, so once connected tokio drives it like any other. Why the pod's loopback and
//! not its IP: with `--network bridge` the pod also has an address on the node's bridge,
//! but with `--network none` it has only `lo`; the pod's `127.0.0.1` exists in both modes,
//! and a server bound to `0.0.0.0` or to `127.0.0.1` answers there (Kubernetes'
//! port-forward also connects to the pod's localhost).

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use shoal_proto::port_forward_input::Input;
use shoal_proto::{PortForwardInput, PortForwardOutput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

/// How long connecting to the pod's port may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes per output message.
const CHUNK: usize = 32 * 1024;

/// Connects to `127.0.0.1:port` inside the network namespace `netns`.
pub fn connect(netns: &Path, port: u16) -> Result<TcpStream, String> {
    crate::probe::in_netns(netns, move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("port {port} of the pod does not accept connections: {e}"))?;
        // Best effort: only latency depends on it.
        let _ = s.set_nodelay(true);
        Ok(s)
    })
}

/// Carries bytes both ways until both sides are done: client data (and its `eof`, or the end
/// of its stream) goes to the socket; what the socket sends goes to `out`, whose end (the
/// sender dropped) tells the client the pod side closed.
pub fn pump(
    socket: TcpStream,
    mut input: Streaming<PortForwardInput>,
    out: mpsc::Sender<Result<PortForwardOutput, Status>>,
) -> std::io::Result<()> {
    socket.set_nonblocking(true)?;
    let socket = tokio::net::TcpStream::from_std(socket)?;
    let (mut rd, mut wr) = socket.into_split();
    tokio::spawn(async move {
        while let Ok(Some(m)) = input.message().await {
            match m.input {
                Some(Input::Data(d)) => {
                    if wr.write_all(&d).await.is_err() {
                        break;
                    }
                }
                Some(Input::Eof(_)) => break,
                Some(Input::Start(_)) | None => {}
            }
        }
        // The client is done sending (or gone): half-close, the pod sees the end of input.
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    let m = PortForwardOutput {
                        data: buf[..n].to_vec(),
                    };
                    if out.send(Ok(m)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = out
                        .send(Err(Status::aborted(format!(
                            "reading from the pod's port: {e}"
                        ))))
                        .await;
                    break;
                }
            }
        }
    });
    Ok(())
}
