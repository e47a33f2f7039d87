//! `shoalctl attach POD [-c C] [-i] [-t]`: connects to the main process of a running
//! container through `Proxy.Attach`: its output from now on (the container's log,
//! followed) and, with `-i`, its stdin (the container must have `stdin: true` or
//! `tty: true`). The session is exec's ([`super::exec::session`]): raw mode, resizes and
//! stdin forwarding work the same way. Ends when the container's run ends (with its exit
//! code) or on Ctrl-C without a TTY.

use shoal_proto::ExecStart;

use super::exec::{Session, session};
use super::{Context, pod_name};
use crate::cli::AttachArgs;
use crate::error::CtlError;

/// The start message of an attach session.
pub fn start(
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    stdin: bool,
    tty: bool,
) -> ExecStart {
    ExecStart {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        container: container.unwrap_or_default().to_string(),
        command: Vec::new(),
        tty,
        stdin,
        rows: 0,
        cols: 0,
    }
}

/// Runs `attach`.
pub async fn run(ctx: &mut Context, args: AttachArgs) -> Result<(), CtlError> {
    let pod = pod_name(&args.pod)?;
    let namespace = ctx.namespace().to_string();
    let s = start(
        &namespace,
        &pod,
        args.container.as_deref(),
        args.stdin,
        args.tty,
    );
    session(ctx, Session::Attach, s).await
}
