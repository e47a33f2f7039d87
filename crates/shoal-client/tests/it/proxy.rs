//! A TCP proxy in front of one member that a test can cut at a chosen moment.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Forwards `127.0.0.1:PORT` to an upstream address until cut or dropped.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    dead: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` on a fresh loopback port.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (dead, dead_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            armed.clone(),
            cuts.clone(),
            dead.clone(),
            dead_rx,
        ));
        Proxy {
            addr,
            armed,
            cuts,
            dead,
            task: Some(task),
        }
    }

    /// From now on, the next bytes a client sends are not forwarded: the member "dies"
    /// right then (every connection is closed and the port stops accepting).
    pub fn cut_on_next_request(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many times the proxy cut (0 or 1).
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }

    /// Waits until the proxy is dead (cut, connections closed, port closed).
    pub async fn wait_dead(&mut self) {
        let mut rx = self.dead.subscribe();
        until_dead(&mut rx).await;
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.dead.send(true);
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    dead: watch::Sender<bool>,
    mut dead_rx: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let conn_dead = dead_rx.clone();
    loop {
        tokio::select! {
            a = listener.accept() => {
                let Ok((client, _)) = a else { break };
                let Ok(up) = TcpStream::connect(upstream).await else { continue };
                let _ = client.set_nodelay(true);
                let _ = up.set_nodelay(true);
                conns.spawn(forward(client, up, armed.clone(), cuts.clone(), dead.clone(), conn_dead.clone()));
            }
            _ = until_dead(&mut dead_rx) => break,
        }
    }
    // Port closed (listener dropped here) and every connection ended before "dead" is over.
    drop(listener);
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

async fn forward(
    client: TcpStream,
    up: TcpStream,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    dead: watch::Sender<bool>,
    mut dead_rx: watch::Receiver<bool>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = up.into_split();
    let to_upstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if armed.load(Ordering::SeqCst) {
                cuts.fetch_add(1, Ordering::SeqCst);
                let _ = dead.send(true);
                return;
            }
            if uw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let to_client = async {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
    };
    tokio::select! {
        _ = to_upstream => {}
        _ = to_client => {}
        _ = until_dead(&mut dead_rx) => {}
    }
}

/// Resolves once the proxy is dead (or its sender is gone).
async fn until_dead(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|d| *d).await.is_ok();
}
