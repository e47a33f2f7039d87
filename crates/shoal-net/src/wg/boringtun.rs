//! The boringtun engine ([`Engine::Boringtun`](super::Engine::Boringtun)):
//! boringtun's own device (`boringtun::device`) on a TUN interface, driven by
//! its own OS threads.
//!
//! We configure it through the UAPI text protocol over a private socketpair
//! (`DeviceConfig::uapi_fd`), not through the socket boringtun would create
//! itself: that mode also installs a signalfd for SIGINT/SIGTERM which steals
//! those signals from the whole process (the device stopped, the agent never
//! saw its SIGTERM). `wg show <iface>` is served by the overlay
//! ([`super::uapi::WgSocket`]), read-only: boringtun panics inside its device
//! lock on an in-place peer update and hangs, so peers are only ever replaced
//! as a whole list ([`BoringtunDevice::set_peers`]).
//!
//! All traffic goes through the device's listen socket (no per-peer connected
//! sockets), whose receive/send buffers we raise to 4 MiB by finding the
//! socket among our process's fds: boringtun has no API for it, and with the
//! default buffer the receiver dropped a fifth of the datagrams under load
//! (0.30 -> 0.43 Gbit/s measured).

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use boringtun::device::{DeviceConfig, DeviceHandle};

use super::keys::KeyPair;
use super::uapi::{self, GetFn, UapiChannel};
use super::{DeviceState, Engine, Peer, WgError};

/// How long stopping waits for the device threads.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Event-loop threads of the device (the machine class has 2 cores).
const DEVICE_THREADS: usize = 2;
/// Receive and send buffer of the device's UDP sockets. With the default
/// 208 KiB the receiving node dropped about a fifth of the datagrams under
/// one iperf3 stream; 4 MiB dropped none (docs/benchmarks.md, Pod network throughput).
const UDP_BUFFER_BYTES: i32 = 4 << 20;

/// boringtun's device and our end of its UAPI. Dropping it closes the UAPI
/// (which makes every device thread exit), waits for the threads (bounded)
/// and closes the TUN, which removes the interface.
pub(super) struct BoringtunDevice {
    iface: String,
    /// The device; `None` once stopped.
    handle: Option<DeviceHandle>,
    /// Our end of the device's UAPI socketpair.
    uapi: Arc<UapiChannel>,
}

impl BoringtunDevice {
    /// Creates the device on TUN interface `iface` in the calling thread's
    /// network namespace (its TUN, UDP sockets and threads live there). `sock`,
    /// the interface's `wg` socket, names the UAPI channel in errors.
    pub(super) fn new(iface: &str, sock: &Path) -> Result<BoringtunDevice, WgError> {
        // The device's UAPI is one end of a socketpair (see the module doc).
        let (ours, theirs) = UnixStream::pair().map_err(|source| WgError::Uapi {
            path: sock.to_path_buf(),
            source,
        })?;
        // boringtun takes ownership of this fd (it leaks if TUN creation fails).
        let theirs = theirs.into_raw_fd();
        let before = open_fds();
        let handle = DeviceHandle::new(
            iface,
            DeviceConfig {
                n_threads: DEVICE_THREADS,
                // All traffic through the listen socket, whose buffers we
                // can enlarge (per-peer connected sockets appear at each
                // handshake with default buffers; see the module doc).
                use_connected_socket: false,
                use_multi_queue: false,
                uapi_fd: theirs,
            },
        )
        .map_err(|e| WgError::Device {
            iface: iface.to_string(),
            engine: Engine::Boringtun,
            detail: e.to_string(),
        })?;
        // boringtun opens the TUN (and its epoll/event fds) without
        // O_CLOEXEC: keep them out of every process we spawn later.
        // Another thread may have closed an fd whose number boringtun
        // then reused, so new fds are those with a new number or a
        // new target, and the TUN is found by its interface.
        for (fd, target) in open_fds() {
            if before.get(&fd) != Some(&target) || is_tun_of(fd, iface) {
                set_cloexec(fd);
            }
        }
        let uapi = Arc::new(UapiChannel::new(sock, ours)?);
        Ok(BoringtunDevice {
            iface: iface.to_string(),
            handle: Some(handle),
            uapi,
        })
    }

    /// Sets the private key and the UDP listen port (0: any free port);
    /// returns the port the device listens on, its sockets' buffers enlarged.
    pub(super) fn configure(&self, key: &KeyPair, listen_port: u16) -> Result<u16, WgError> {
        let req = format!(
            "set=1\nprivate_key={}\nlisten_port={listen_port}\n\n",
            key.private_hex()
        );
        self.uapi.request(&req, "set")?;
        let port = self.get()?.listen_port;
        if enlarge_udp_buffers(port, UDP_BUFFER_BYTES) == 0 {
            tracing::warn!(iface = %self.iface, "found no udp socket of the device to enlarge");
        }
        Ok(port)
    }

    /// Makes the peers exactly `peers` (normalized): existing peers are first
    /// removed (`remove=true`, which also closes their connected UDP sockets),
    /// then the full list is sent with `replace_peers=true`; a peer is never
    /// modified in place. Handshakes restart.
    pub(super) fn set_peers(&self, peers: &[Peer]) -> Result<(), WgError> {
        let current: Vec<[u8; 32]> = self.get()?.peers.iter().map(|p| p.public_key).collect();
        if !current.is_empty() {
            self.uapi.request(&uapi::render_remove(&current), "set")?;
        }
        self.uapi.request(&uapi::render_replace(peers), "set")?;
        Ok(())
    }

    /// The device's state.
    pub(super) fn get(&self) -> Result<DeviceState, WgError> {
        self.uapi.get()
    }

    /// Forwards a `get` to the device (for the `wg` socket).
    pub(super) fn forward_get(&self) -> GetFn {
        let uapi = Arc::clone(&self.uapi);
        Box::new(move || uapi.exchange("get=1\n"))
    }
}

impl Drop for BoringtunDevice {
    fn drop(&mut self) {
        // Closing our end of the UAPI socketpair makes every device thread
        // exit; join them (bounded), then drop the device, which closes the
        // TUN and so removes the link.
        self.uapi.close();
        if let Some(mut device) = self.handle.take() {
            let (tx, rx) = mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-stop", self.iface))
                .spawn(move || {
                    device.wait();
                    drop(device);
                    let _ = tx.send(());
                });
            match spawned {
                Ok(_) => {
                    if rx.recv_timeout(STOP_TIMEOUT).is_err() {
                        tracing::warn!(iface = %self.iface, "boringtun device did not stop in time");
                    }
                }
                Err(e) => {
                    tracing::warn!(iface = %self.iface, error = %e, "spawning stop thread")
                }
            }
        }
    }
}

/// Sets the receive and send buffers of every UDP socket of this process
/// bound to `port` to `bytes` (SO_*BUFFORCE, past `net.core.*mem_max`, if
/// allowed), returning how many sockets it tuned. boringtun never sets them
/// and offers no API for it.
fn enlarge_udp_buffers(port: u16, bytes: i32) -> usize {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut tuned = 0;
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let is_socket = fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        if !is_socket || socket_port(fd, libc::SOCK_DGRAM) != Some(port) {
            continue;
        }
        let int_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            // SAFETY: setsockopt on an fd number of this process with a valid
            // pointer to a c_int; if the fd was closed meanwhile the call fails.
            unsafe {
                let val = (&raw const bytes).cast::<libc::c_void>();
                if libc::setsockopt(fd, libc::SOL_SOCKET, force, val, int_len) != 0 {
                    libc::setsockopt(fd, libc::SOL_SOCKET, plain, val, int_len);
                }
            }
        }
        tuned += 1;
    }
    tuned
}

/// The file descriptors open in this process now.
fn open_fds() -> BTreeMap<i32, PathBuf> {
    fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| {
                    let fd = e.file_name().to_str()?.parse().ok()?;
                    Some((fd, fs::read_link(e.path()).ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `fd` is a TUN file attached to interface `iface`.
fn is_tun_of(fd: i32, iface: &str) -> bool {
    fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).is_ok_and(|info| {
        info.lines()
            .any(|l| l.strip_prefix("iff:").is_some_and(|v| v.trim() == iface))
    })
}

/// Sets FD_CLOEXEC on `fd` (errors ignored: the fd may be gone already).
fn set_cloexec(fd: i32) {
    // SAFETY: fcntl F_GETFD/F_SETFD take no pointers; on a closed fd they fail.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// The local port of socket `fd` if it is an IPv4/IPv6 socket of type `ty`.
fn socket_port(fd: i32, ty: libc::c_int) -> Option<u16> {
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_TYPE writes one c_int into `got`, `len` holds its size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut got).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 || got != ty {
        return None;
    }
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut sl = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `sl` bytes into `ss`.
    let rc = unsafe { libc::getsockname(fd, (&raw mut ss).cast::<libc::sockaddr>(), &mut sl) };
    if rc != 0 {
        return None;
    }
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says `ss` holds a sockaddr_in.
            let sin = unsafe { &*(&raw const ss).cast::<libc::sockaddr_in>() };
            Some(u16::from_be(sin.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says `ss` holds a sockaddr_in6.
            let sin6 = unsafe { &*(&raw const ss).cast::<libc::sockaddr_in6>() };
            Some(u16::from_be(sin6.sin6_port))
        }
        _ => None,
    }
}
