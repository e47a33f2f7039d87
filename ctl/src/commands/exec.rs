//! `shoalctl exec [-i] [-t] POD -- CMD…`: the controllers' `Proxy.Exec` bidirectional
//! stream. With `-t` the local terminal is put in raw mode (restored on every way out:
//! return, error, SIGTERM/SIGHUP/SIGQUIT, panic) and window size changes (SIGWINCH) are
//! sent as resizes; with `-i` stdin is forwarded and its end sent as `stdin_eof`. The
//! remote command's exit code becomes shoalctl's ([`CtlError::RemoteExit`]).

use std::io::{Read, Write};
use std::os::fd::AsFd;

use shoal_proto::exec_input::Input;
use shoal_proto::exec_output::Output;
use shoal_proto::proxy_client::ProxyClient;
use shoal_proto::{ExecInput, ExecResize, ExecStart};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::{Context, note, pod_name};
use crate::cli::ExecArgs;
use crate::error::{CtlError, Service, Target, service_error};

/// Bytes per stdin message.
const STDIN_CHUNK: usize = 32 * 1024;

/// Puts the terminal on stdin into raw mode and restores the saved settings on drop.
#[derive(Debug)]
pub struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    /// Switches stdin's terminal to raw mode.
    pub fn enable() -> Result<RawMode, CtlError> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd())
            .map_err(|e| CtlError::Terminal(format!("reading the terminal settings: {e}")))?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw)
            .map_err(|e| CtlError::Terminal(format!("switching to raw mode: {e}")))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        if let Err(e) = rustix::termios::tcsetattr(
            stdin.as_fd(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        ) {
            eprintln!("warning: restoring the terminal settings failed: {e}");
        }
    }
}

/// The local terminal's size as (rows, cols), (0, 0) when unknown.
fn window_size() -> (u32, u32) {
    match rustix::termios::tcgetwinsize(std::io::stdout().as_fd())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin().as_fd()))
    {
        Ok(w) => (u32::from(w.ws_row), u32::from(w.ws_col)),
        Err(_) => (0, 0),
    }
}

/// The first message of a session.
pub fn start_message(
    namespace: &str,
    pod: &str,
    args: &ExecArgs,
    tty: bool,
    size: (u32, u32),
) -> ExecInput {
    ExecInput {
        input: Some(Input::Start(ExecStart {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            container: args.container.clone().unwrap_or_default(),
            command: args.command.clone(),
            tty,
            stdin: args.stdin,
            rows: size.0,
            cols: size.1,
        })),
    }
}

/// Which bidirectional session of the `Proxy` service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// `Proxy.Exec`: a new process.
    Exec,
    /// `Proxy.Attach`: the container's main process (`attach`, `run -i`).
    Attach,
}

/// Runs `exec`.
pub async fn run(ctx: &mut Context, args: ExecArgs) -> Result<(), CtlError> {
    let pod = pod_name(&args.pod)?;
    let namespace = ctx.namespace().to_string();
    let start = match start_message(&namespace, &pod, &args, args.tty, (0, 0)).input {
        Some(Input::Start(s)) => s,
        _ => return Err(CtlError::Usage("exec: no start message".into())),
    };
    session(ctx, Session::Exec, start).await
}

/// Runs an exec or attach session: `start.tty` asks for a TTY (granted when stdin is a
/// terminal), `start.stdin` forwards stdin.
pub async fn session(
    ctx: &mut Context,
    kind: Session,
    mut start: ExecStart,
) -> Result<(), CtlError> {
    let target = Target::new("pod", &start.namespace, &start.pod);
    let stdin_tty = rustix::termios::isatty(std::io::stdin().as_fd());
    let tty = start.tty && stdin_tty;
    if start.tty && !stdin_tty {
        note("Unable to use a TTY - input is not a terminal");
    }
    let size = if tty { window_size() } else { (0, 0) };
    (start.tty, start.rows, start.cols) = (tty, size.0, size.1);
    let forward = start.stdin;
    let (tx, rx) = mpsc::channel::<ExecInput>(16);
    tx.send(ExecInput {
        input: Some(Input::Start(start)),
    })
    .await
    .map_err(|_| CtlError::Terminal("exec input closed".into()))?;
    let conn = ctx.conn().await?;
    let channel = match kind {
        Session::Exec => conn.channel().await?,
        // An attached session lasts as long as the container: no request deadline.
        Session::Attach => conn.channel_without_deadline().await?,
    };
    let mut client = ProxyClient::new(channel);
    let input = tokio_stream::wrappers::ReceiverStream::new(rx);
    let call = match kind {
        Session::Exec => client.exec(input).await,
        Session::Attach => client.attach(input).await,
    };
    let mut output = call
        .map_err(|s| service_error(&s, Some(&target), Service::Workload))?
        .into_inner();
    // Raw mode only once the session is open, so that errors print normally.
    let raw = if tty { Some(RawMode::enable()?) } else { None };
    if forward {
        forward_stdin(tx.clone());
    }
    let mut winch = signal(SignalKind::window_change()).map_err(signal_err)?;
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut hup = signal(SignalKind::hangup()).map_err(signal_err)?;
    let mut quit = signal(SignalKind::quit()).map_err(signal_err)?;
    let mut exit_code = None;
    let result = loop {
        let msg = tokio::select! {
            m = output.message() => m,
            _ = winch.recv(), if tty => {
                let (rows, cols) = window_size();
                let _ = tx.send(ExecInput { input: Some(Input::Resize(ExecResize { rows, cols })) }).await;
                continue;
            }
            _ = term.recv() => break Err(CtlError::Terminal("terminated (SIGTERM)".into())),
            _ = hup.recv() => break Err(CtlError::Terminal("hang-up (SIGHUP)".into())),
            _ = quit.recv() => break Err(CtlError::Terminal("quit (SIGQUIT)".into())),
        };
        match msg {
            Ok(Some(m)) => match m.output {
                Some(Output::Stdout(b)) => write_all(&mut std::io::stdout().lock(), &b)?,
                Some(Output::Stderr(b)) => write_all(&mut std::io::stderr().lock(), &b)?,
                Some(Output::ExitCode(c)) => exit_code = Some(c),
                None => {}
            },
            Ok(None) => break Ok(()),
            Err(s) => break Err(service_error(&s, Some(&target), Service::Workload)),
        }
    };
    drop(raw);
    result?;
    match (exit_code, kind) {
        (Some(0), _) => Ok(()),
        (Some(c), _) => Err(CtlError::RemoteExit(c)),
        // The container restarts (or the agent could not tell): nothing more to say.
        (None, Session::Attach) => Ok(()),
        (None, Session::Exec) => Err(CtlError::BadResponse(
            "the exec session ended without an exit code".into(),
        )),
    }
}

/// What a non-interactive command printed and how it ended.
#[derive(Debug, Default)]
pub struct Captured {
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// Its exit code.
    pub exit_code: i32,
}

/// Runs `command` in a container without a TTY, feeding it `stdin` (then its end) when
/// given, and collects its output (`cp` runs `tar` this way). Uses a channel without the
/// request deadline: a copy may take longer.
pub async fn capture(
    ctx: &mut Context,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    command: Vec<String>,
    stdin: Option<Vec<u8>>,
) -> Result<Captured, CtlError> {
    let target = Target::new("pod", namespace, pod);
    let (tx, rx) = mpsc::channel::<ExecInput>(16);
    let start = ExecInput {
        input: Some(Input::Start(ExecStart {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            container: container.unwrap_or_default().to_string(),
            command,
            tty: false,
            stdin: stdin.is_some(),
            rows: 0,
            cols: 0,
        })),
    };
    tx.send(start)
        .await
        .map_err(|_| CtlError::Terminal("exec input closed".into()))?;
    let channel = ctx.conn().await?.channel_without_deadline().await?;
    let mut output = ProxyClient::new(channel)
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| service_error(&s, Some(&target), Service::Workload))?
        .into_inner();
    if let Some(data) = stdin {
        tokio::spawn(async move {
            for chunk in data.chunks(STDIN_CHUNK) {
                let m = ExecInput {
                    input: Some(Input::Stdin(chunk.to_vec())),
                };
                if tx.send(m).await.is_err() {
                    return;
                }
            }
            let _ = tx
                .send(ExecInput {
                    input: Some(Input::StdinEof(true)),
                })
                .await;
        });
    } else {
        drop(tx);
    }
    let mut out = Captured::default();
    let mut exit_code = None;
    while let Some(m) = output
        .message()
        .await
        .map_err(|s| service_error(&s, Some(&target), Service::Workload))?
    {
        match m.output {
            Some(Output::Stdout(b)) => out.stdout.extend_from_slice(&b),
            Some(Output::Stderr(b)) => out.stderr.extend_from_slice(&b),
            Some(Output::ExitCode(c)) => exit_code = Some(c),
            None => {}
        }
    }
    out.exit_code = exit_code.ok_or_else(|| {
        CtlError::BadResponse("the exec session ended without an exit code".into())
    })?;
    Ok(out)
}

fn signal_err(e: std::io::Error) -> CtlError {
    CtlError::Terminal(format!("installing signal handlers: {e}"))
}

fn write_all(out: &mut impl Write, b: &[u8]) -> Result<(), CtlError> {
    out.write_all(b)
        .and_then(|_| out.flush())
        .map_err(CtlError::Output)
}

/// Reads stdin on a plain thread (a blocking read cannot be cancelled; a detached thread
/// does not hold up the exit) and sends it, then `stdin_eof`.
fn forward_stdin(tx: mpsc::Sender<ExecInput>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            let input = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => Input::StdinEof(true),
                Ok(n) => Input::Stdin(buf[..n].to_vec()),
            };
            let eof = matches!(input, Input::StdinEof(_));
            if tx.blocking_send(ExecInput { input: Some(input) }).is_err() || eof {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn the_start_message_carries_the_session() {
        let c = Cli::try_parse_from(["shoalctl", "exec", "-i", "web", "--", "cat", "-n"]).unwrap();
        let Command::Exec(a) = c.command else {
            panic!("not exec")
        };
        let m = start_message("ns", "web", &a, false, (0, 0));
        let Some(Input::Start(s)) = m.input else {
            panic!("not a start")
        };
        assert_eq!(
            (s.namespace.as_str(), s.pod.as_str(), s.container.as_str()),
            ("ns", "web", "")
        );
        assert_eq!(s.command, ["cat", "-n"]);
        assert!(s.stdin && !s.tty);
        assert_eq!((s.rows, s.cols), (0, 0));
    }
}
