//! The UAPI text protocol of userspace WireGuard (what `wg` speaks to a
//! `/var/run/wireguard/<iface>.sock`): the requests we send to boringtun's
//! device and the parsing of its answers ([`UapiChannel`]), and the `wg`
//! socket both userspace engines serve ([`WgSocket`]).
//!
//! The `wg` socket is read-only: `get` is answered by the engine (adapted by
//! [`wg_view`]), `set` is refused with EPERM, because boringtun panics inside
//! its device lock on an in-place peer update (what `wg set` does) and hangs;
//! the agent owns the peers and only ever replaces them as a whole list
//! ([`render_replace`]).

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use std::{fs, thread};

use ipnet::Ipv4Net;

use super::keys::decode_key;
use super::{DeviceState, Peer, PeerState, WgError};

/// Directory where userspace WireGuard implementations listen for `wg` (UAPI sockets).
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// How long one UAPI exchange with the userspace device may take before it is an error.
const UAPI_TIMEOUT: Duration = Duration::from_secs(5);

/// The `wg` socket of interface `iface`.
pub(super) fn socket_path(iface: &str) -> PathBuf {
    PathBuf::from(format!("{UAPI_DIR}/{iface}.sock"))
}

/// The UAPI `set` request that replaces the whole peer list (normalized peers).
pub(super) fn render_replace(peers: &[Peer]) -> String {
    let mut s = String::from("set=1\nreplace_peers=true\n");
    for p in peers {
        s.push_str(&format!("public_key={}\n", hex::encode(p.public_key)));
        s.push_str(&format!("endpoint={}\n", p.endpoint));
        if let Some(k) = p.keepalive {
            s.push_str(&format!("persistent_keepalive_interval={k}\n"));
        }
        for ip in &p.allowed_ips {
            s.push_str(&format!("allowed_ip={ip}\n"));
        }
    }
    s.push('\n');
    s
}

/// The UAPI `set` request that removes the given peers one by one.
pub(super) fn render_remove(keys: &[[u8; 32]]) -> String {
    let mut s = String::from("set=1\n");
    for k in keys {
        s.push_str(&format!("public_key={}\nremove=true\n", hex::encode(k)));
    }
    s.push('\n');
    s
}

/// Parses the lines of a UAPI `get` answer (without the final `errno=`);
/// fails with the offending line. boringtun reports the handshake *age* in
/// `last_handshake_time_*`.
pub(super) fn parse_get(lines: &[String]) -> Result<DeviceState, String> {
    let mut state = DeviceState::default();
    let mut hs_sec: Option<u64> = None;
    for line in lines {
        let (key, val) = line.split_once('=').ok_or_else(|| line.clone())?;
        let bad = || line.clone();
        if key == "public_key" {
            let pk = decode_key(val).ok_or_else(bad)?;
            state.peers.push(PeerState {
                public_key: pk,
                endpoint: None,
                allowed_ips: Vec::new(),
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
            });
            hs_sec = None;
            continue;
        }
        let Some(peer) = state.peers.last_mut() else {
            if key == "listen_port" {
                state.listen_port = val.parse().map_err(|_| bad())?;
            }
            // own_public_key, fwmark, private_key: not needed.
            continue;
        };
        match key {
            "endpoint" => peer.endpoint = Some(val.parse().map_err(|_| bad())?),
            "allowed_ip" => {
                // IPv6 allowed IPs are not ours; keep only IPv4.
                if let Ok(net) = val.parse::<Ipv4Net>() {
                    peer.allowed_ips.push(net);
                }
            }
            "last_handshake_time_sec" => {
                let secs: u64 = val.parse().map_err(|_| bad())?;
                hs_sec = Some(secs);
                peer.last_handshake = Some(Duration::from_secs(secs));
            }
            "last_handshake_time_nsec" => {
                let nsec: u32 = val.parse().map_err(|_| bad())?;
                if let Some(secs) = hs_sec {
                    peer.last_handshake = Some(Duration::new(secs, nsec.min(999_999_999)));
                }
            }
            "rx_bytes" => peer.rx_bytes = val.parse().map_err(|_| bad())?,
            "tx_bytes" => peer.tx_bytes = val.parse().map_err(|_| bad())?,
            _ => {}
        }
    }
    Ok(state)
}

/// Our end of a UAPI stream (for boringtun's device: one end of the
/// socketpair whose other end it reads as `DeviceConfig::uapi_fd`). One
/// exchange at a time; closing it stops boringtun's device.
pub(super) struct UapiChannel {
    /// Named in errors: the `wg` socket path of this interface.
    path: PathBuf,
    chan: Mutex<Option<Channel>>,
}

struct Channel {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

enum ExchangeError {
    Io(io::Error),
    Parse(String),
}

impl UapiChannel {
    /// Talks UAPI over `stream`, each read and write bounded by a 5 s
    /// timeout; `path` names the channel in errors.
    pub(super) fn new(path: &Path, stream: UnixStream) -> Result<UapiChannel, WgError> {
        let chan = (|| {
            stream.set_read_timeout(Some(UAPI_TIMEOUT))?;
            stream.set_write_timeout(Some(UAPI_TIMEOUT))?;
            Ok(Channel {
                reader: BufReader::new(stream.try_clone()?),
                writer: stream,
            })
        })()
        .map_err(|source| WgError::Uapi {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(UapiChannel {
            path: path.to_path_buf(),
            chan: Mutex::new(Some(chan)),
        })
    }

    /// Sends one request and returns the answer lines before `errno=` and the errno.
    /// After an I/O error or timeout the channel is closed (the answer stream
    /// would be out of step), which also stops boringtun's device.
    pub(super) fn exchange(&self, request: &str) -> Result<(Vec<String>, i32), WgError> {
        let mut guard = self.chan.lock().unwrap_or_else(PoisonError::into_inner);
        let chan = guard.as_mut().ok_or_else(|| WgError::Uapi {
            path: self.path.clone(),
            source: io::Error::new(
                io::ErrorKind::NotConnected,
                "channel to the boringtun device is closed",
            ),
        })?;
        let result = exchange_on(chan, request);
        if result.is_err() {
            *guard = None;
        }
        result.map_err(|e| match e {
            ExchangeError::Io(source) => WgError::Uapi {
                path: self.path.clone(),
                source,
            },
            ExchangeError::Parse(line) => WgError::UapiParse {
                path: self.path.clone(),
                line,
            },
        })
    }

    /// One exchange that must succeed: returns the answer lines before
    /// `errno=0`; another errno is an error naming `op` (`get` or `set`).
    pub(super) fn request(&self, request: &str, op: &'static str) -> Result<Vec<String>, WgError> {
        let (lines, errno) = self.exchange(request)?;
        if errno != 0 {
            return Err(WgError::UapiErrno {
                path: self.path.clone(),
                op,
                errno,
            });
        }
        Ok(lines)
    }

    /// The device's state (`get=1`).
    pub(super) fn get(&self) -> Result<DeviceState, WgError> {
        let lines = self.request("get=1\n", "get")?;
        parse_get(&lines).map_err(|line| WgError::UapiParse {
            path: self.path.clone(),
            line,
        })
    }

    /// Closes the channel.
    pub(super) fn close(&self) {
        *self.chan.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

fn exchange_on(chan: &mut Channel, request: &str) -> Result<(Vec<String>, i32), ExchangeError> {
    chan.writer
        .write_all(request.as_bytes())
        .map_err(ExchangeError::Io)?;
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = chan
            .reader
            .read_line(&mut line)
            .map_err(ExchangeError::Io)?;
        if n == 0 {
            return Err(ExchangeError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "device closed its uapi end",
            )));
        }
        let line = line.trim_end_matches('\n');
        if let Some(errno) = line.strip_prefix("errno=") {
            let errno = errno
                .parse()
                .map_err(|_| ExchangeError::Parse(line.to_string()))?;
            // The answer ends with a blank line after errno.
            let mut blank = String::new();
            chan.reader
                .read_line(&mut blank)
                .map_err(ExchangeError::Io)?;
            return Ok((lines, errno));
        }
        if !line.is_empty() {
            lines.push(line.to_string());
        }
    }
}

/// Answers a UAPI `get`: the answer lines before `errno=` and the errno.
pub(super) type GetFn = Box<dyn Fn() -> Result<(Vec<String>, i32), WgError> + Send>;

/// Adapts an engine's `get` answer (as boringtun's device gives it) to what
/// `wg` expects: the private key (as kernel WireGuard and wireguard-go report
/// it to root, so `wg show` prints the public key) instead of
/// `own_public_key`, and the last handshake as an epoch time instead of an
/// age (else `wg` shows "56 years ago", or nothing for an age under a second).
fn wg_view(lines: Vec<String>, private_hex: &str, now: SystemTime) -> Vec<String> {
    let mut out = Vec::with_capacity(lines.len() + 1);
    let mut age_sec: Option<u64> = None;
    for line in lines {
        let (key, val) = line.split_once('=').unwrap_or((line.as_str(), ""));
        match key {
            "own_public_key" => out.push(format!("private_key={private_hex}")),
            "last_handshake_time_sec" => age_sec = val.parse().ok(),
            "last_handshake_time_nsec" => {
                let nsec: u32 = val.parse().unwrap_or(0).min(999_999_999);
                if let Some(sec) = age_sec.take() {
                    let at = now
                        .checked_sub(Duration::new(sec, nsec))
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .unwrap_or_default();
                    out.push(format!("last_handshake_time_sec={}", at.as_secs()));
                    out.push(format!("last_handshake_time_nsec={}", at.subsec_nanos()));
                }
            }
            _ => out.push(line),
        }
    }
    out
}

/// The thread serving `wg` on an interface's UAPI socket, read-only.
pub(super) struct WgSocket {
    thread: JoinHandle<()>,
    /// Tells `thread` to stop.
    stop: Arc<AtomicBool>,
}

impl WgSocket {
    /// Binds `path` (mode 0600: it hands out the private key, like kernel
    /// WireGuard to root) and serves `wg` there on a thread `<iface>-uapi`:
    /// `get=1` is answered by `get`, `set=1` refused. On error the socket
    /// file may be left: [`stop_serving`] removes it.
    pub(super) fn serve(
        iface: &str,
        path: &Path,
        get: GetFn,
        private_hex: String,
    ) -> Result<WgSocket, WgError> {
        let io_err = |source| WgError::Uapi {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(UAPI_DIR).map_err(io_err)?;
        let listener = UnixListener::bind(path).map_err(io_err)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, path_buf) = (Arc::clone(&stop), path.to_path_buf());
        let thread = thread::Builder::new()
            .name(format!("{iface}-uapi"))
            .spawn(move || serve_wg_socket(listener, path_buf, get, flag, private_hex))
            .map_err(io_err)?;
        Ok(WgSocket { thread, stop })
    }
}

/// Stops serving `wg` on `path` (if `socket` serves it: set the flag, wake
/// the accept with a connection, join the thread) and removes the socket file.
pub(super) fn stop_serving(iface: &str, path: &Path, socket: Option<WgSocket>) {
    if let Some(WgSocket { thread, stop }) = socket {
        stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(path);
        if thread.join().is_err() {
            tracing::warn!(%iface, "uapi socket thread panicked");
        }
    }
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "removing uapi socket");
    }
}

/// Serves the `wg` UAPI socket until `stop` is set (and a connection wakes it).
fn serve_wg_socket(
    listener: UnixListener,
    path: PathBuf,
    get: GetFn,
    stop: Arc<AtomicBool>,
    private_hex: String,
) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(conn) => {
                if let Err(e) = serve_wg_client(&get, conn, &private_hex) {
                    tracing::debug!(path = %path.display(), error = %e, "uapi client");
                }
            }
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "uapi accept"),
        }
    }
}

/// One `wg` client: `get=1` is answered by the engine (answer adapted by
/// [`wg_view`]), `set=1` refused (EPERM).
fn serve_wg_client(get: &GetFn, conn: UnixStream, private_hex: &str) -> io::Result<()> {
    conn.set_read_timeout(Some(UAPI_TIMEOUT))?;
    conn.set_write_timeout(Some(UAPI_TIMEOUT))?;
    let mut reader = BufReader::new(&conn);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut out = BufWriter::new(&conn);
    match first.trim_end() {
        "get=1" => match get() {
            Ok((lines, errno)) => {
                for l in wg_view(lines, private_hex, SystemTime::now()) {
                    writeln!(out, "{l}")?;
                }
                write!(out, "errno={errno}\n\n")?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "forwarding wg get");
                write!(out, "errno={}\n\n", libc::EIO)?;
            }
        },
        // Refused: boringtun hangs on in-place peer updates; the agent owns the peers.
        "set=1" => write!(out, "errno={}\n\n", libc::EPERM)?,
        _ => write!(out, "errno={}\n\n", libc::EINVAL)?,
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn uapi_requests_replace_whole_list() {
        let p = Peer {
            public_key: [1; 32],
            endpoint: SocketAddr::from(([10, 0, 0, 1], 51821)),
            allowed_ips: vec!["10.244.1.0/24".parse().expect("net")],
            keepalive: Some(25),
        };
        let req = render_replace(&[p]);
        let hex1 = hex::encode([1u8; 32]);
        assert_eq!(
            req,
            format!(
                "set=1\nreplace_peers=true\npublic_key={hex1}\nendpoint=10.0.0.1:51821\n\
                 persistent_keepalive_interval=25\nallowed_ip=10.244.1.0/24\n\n"
            )
        );
        assert_eq!(
            render_remove(&[[1; 32]]),
            format!("set=1\npublic_key={hex1}\nremove=true\n\n")
        );
        assert_eq!(render_replace(&[]), "set=1\nreplace_peers=true\n\n");
    }

    #[test]
    fn uapi_get_answer_parses() {
        let hex1 = hex::encode([1u8; 32]);
        let hex2 = hex::encode([2u8; 32]);
        let text = format!(
            "own_public_key=00\nlisten_port=51820\npublic_key={hex1}\nendpoint=10.0.0.1:51821\n\
             allowed_ip=10.244.1.0/24\nallowed_ip=fd00::/64\nlast_handshake_time_sec=3\n\
             last_handshake_time_nsec=500\nrx_bytes=10\ntx_bytes=20\npublic_key={hex2}\n\
             rx_bytes=0\ntx_bytes=0\n"
        );
        let lines: Vec<String> = text.lines().map(String::from).collect();
        let st = parse_get(&lines).expect("parse");
        assert_eq!(st.listen_port, 51820);
        assert_eq!(st.peers.len(), 2);
        let p = &st.peers[0];
        assert_eq!(p.public_key, [1; 32]);
        assert_eq!(p.endpoint, Some(SocketAddr::from(([10, 0, 0, 1], 51821))));
        assert_eq!(p.allowed_ips.len(), 1);
        assert_eq!(p.last_handshake, Some(Duration::new(3, 500)));
        assert_eq!((p.rx_bytes, p.tx_bytes), (10, 20));
        assert_eq!(st.peers[1].last_handshake, None);
        assert!(parse_get(&["endpoint".to_string()]).is_err());
    }

    #[test]
    fn wg_view_reports_private_key_and_epoch_handshakes() {
        let now = UNIX_EPOCH + Duration::new(1000, 500_000_000);
        let lines: Vec<String> = [
            "own_public_key=abcd",
            "listen_port=51820",
            "public_key=00",
            "last_handshake_time_sec=3",
            "last_handshake_time_nsec=250000000",
            "rx_bytes=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            wg_view(lines, "PRIV", now),
            vec![
                "private_key=PRIV",
                "listen_port=51820",
                "public_key=00",
                "last_handshake_time_sec=997",
                "last_handshake_time_nsec=250000000",
                "rx_bytes=1",
            ]
        );
    }
}
