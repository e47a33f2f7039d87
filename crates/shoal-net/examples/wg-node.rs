//! Brings up a shoal WireGuard [`Overlay`] in the current network namespace and
//! keeps it until SIGTERM or SIGINT (used by `scripts/bench-net.sh`).
//!
//! ```text
//! ip netns exec NS wg-node [--engine boringtun|shoal] IFACE KEYFILE LISTEN_PORT MTU \
//!     [PEER_PUBKEY ENDPOINT ALLOWED_CIDR[,CIDR...]]...
//! ```
//!
//! `--engine` picks the userspace data path (default: boringtun's device).
//!
//! Prints `public_key=<base64>` and `listen_port=<port>` once the interface is
//! up and configured, then `ready`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use shoal_net::wg::{Engine, KeyPair, Overlay, Peer, parse_public_key};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wg-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut engine = Engine::Boringtun;
    if args.first().map(String::as_str) == Some("--engine") {
        engine = match args.get(1).map(String::as_str) {
            Some("boringtun") => Engine::Boringtun,
            Some("shoal") => Engine::Shoal,
            other => return Err(format!("--engine {other:?}: expected boringtun or shoal")),
        };
        args.drain(..2);
    }
    if args.len() < 4 || !(args.len() - 4).is_multiple_of(3) {
        return Err(
            "usage: wg-node [--engine boringtun|shoal] IFACE KEYFILE LISTEN_PORT MTU [PEER_PUBKEY ENDPOINT CIDR[,CIDR..]]..."
                .into(),
        );
    }
    let port: u16 = args[2]
        .parse()
        .map_err(|e| format!("listen port {:?}: {e}", args[2]))?;
    let mtu: u32 = args[3]
        .parse()
        .map_err(|e| format!("mtu {:?}: {e}", args[3]))?;
    let mut peers = Vec::new();
    for p in args[4..].chunks(3) {
        peers.push(Peer {
            public_key: parse_public_key(&p[0]).map_err(|e| e.to_string())?,
            endpoint: p[1]
                .parse()
                .map_err(|e| format!("endpoint {:?}: {e}", p[1]))?,
            allowed_ips: p[2]
                .split(',')
                .map(|c| c.parse().map_err(|e| format!("cidr {c:?}: {e}")))
                .collect::<Result<_, _>>()?,
            keepalive: None,
        });
    }
    // The main thread keeps SIGTERM/SIGINT unblocked with a handler, so the
    // kernel delivers them here. (boringtun blocks both in its own threads for
    // a signalfd; if every thread blocked them, the device would take the
    // signal and stop while this process kept waiting.)
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores into an atomic (async-signal-safe).
        unsafe { sigaction(sig, &action) }.map_err(|e| format!("sigaction {sig}: {e}"))?;
    }

    let key = KeyPair::load_or_create(Path::new(&args[1])).map_err(|e| e.to_string())?;
    let overlay = Overlay::up_with(&args[0], &key, port, mtu, engine).map_err(|e| e.to_string())?;
    overlay.set_peers(&peers).map_err(|e| e.to_string())?;
    println!("public_key={}", key.public_base64());
    println!("listen_port={}", overlay.listen_port());
    println!("ready");
    while SIGNAL.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "wg-node: signal {}, stopping {}",
        SIGNAL.load(Ordering::SeqCst),
        overlay.iface()
    );
    drop(overlay);
    Ok(())
}

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: i32) {
    SIGNAL.store(sig, Ordering::SeqCst);
}
