//! `shoalctl build -t NAME[:TAG] [-f Dockerfile] [--build-arg K=V] [--target STAGE]
//! [--node NODE] [--no-cache] DIR`: the controllers' `Proxy.Build` stream. The Dockerfile
//! is parsed and planned here first (a bad line fails before anything is sent), then the
//! context directory goes up as a tar stream (without what `.dockerignore` leaves out);
//! the node's step output is printed as it comes, and the image lands in the cluster's
//! image store (docs/build.md).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use shoal_build::ignore::Ignore;
use shoal_proto::build_input::Input;
use shoal_proto::build_output::Output;
use shoal_proto::proxy_client::ProxyClient;
use shoal_proto::{BuildInput, BuildOutput, BuildResult, BuildStart};
use tokio::sync::mpsc;

use super::Context;
use crate::cli::BuildArgs;
use crate::error::{CtlError, Service, service_error};

/// Bytes per context message.
const CHUNK: usize = 256 << 10;

/// `--build-arg` values: `K=V`, or `K` with K's value from the environment (skipped when
/// unset, as Docker does).
pub fn build_args(raw: &[String]) -> Result<BTreeMap<String, String>, CtlError> {
    let mut out = BTreeMap::new();
    for a in raw {
        match a.split_once('=') {
            Some(("", _)) => {
                return Err(CtlError::Usage(format!("--build-arg {a:?}: expected K=V")));
            }
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// Sends the context as tar stream chunks on `tx` (runs on a blocking thread).
struct ChunkWriter {
    tx: mpsc::Sender<BuildInput>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(BuildInput {
                input: Some(Input::Context(data)),
            })
            .map_err(|_| std::io::Error::other("the build stream closed"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Appends everything under `dir` (relative name `rel`) that `ignore` keeps.
fn add_dir(
    b: &mut tar::Builder<ChunkWriter>,
    root: &Path,
    rel: &str,
    ignore: &Ignore,
) -> std::io::Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names: Vec<String> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for n in names {
        let child = if rel.is_empty() {
            n.clone()
        } else {
            format!("{rel}/{n}")
        };
        let path = root.join(&child);
        let is_dir = std::fs::symlink_metadata(&path)?.is_dir();
        if ignore.ignored(&child) {
            if is_dir && ignore.has_exceptions() {
                add_dir(b, root, &child, ignore)?;
            }
            continue;
        }
        b.append_path_with_name(&path, &child)?;
        if is_dir {
            add_dir(b, root, &child, ignore)?;
        }
    }
    Ok(())
}

/// Runs `build`.
pub async fn run(ctx: &mut Context, args: BuildArgs) -> Result<(), CtlError> {
    let context = args.dir.clone();
    let meta = std::fs::metadata(&context).map_err(|source| CtlError::Io {
        path: context.display().to_string(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(CtlError::Usage(format!(
            "{}: the build context must be a directory",
            context.display()
        )));
    }
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| context.join("Dockerfile"));
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(&file).map_err(|source| CtlError::Io {
        path: shown.clone(),
        source,
    })?;
    let build_args = build_args(&args.build_args)?;
    let here = |e: shoal_build::BuildError| match e {
        shoal_build::BuildError::Dockerfile { line, message } => {
            CtlError::Usage(format!("{shown}:{line}: {message}"))
        }
        e => CtlError::Usage(e.to_string()),
    };
    let df = shoal_build::dockerfile::parse(&text).map_err(here)?;
    shoal_build::plan::plan(&df, args.target.as_deref(), &build_args).map_err(here)?;
    shoal_image::normalize_reference(&args.tag)
        .map_err(|e| CtlError::Usage(format!("-t {}: {e}", args.tag)))?;
    let ignore = match std::fs::read_to_string(context.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
        Err(source) => {
            return Err(CtlError::Io {
                path: context.join(".dockerignore").display().to_string(),
                source,
            });
        }
    };
    let start = BuildStart {
        name: args.tag.clone(),
        dockerfile: text,
        dockerfile_name: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".into()),
        build_args: build_args.into_iter().collect(),
        target: args.target.clone().unwrap_or_default(),
        node: args.node.clone().unwrap_or_default(),
        no_cache: args.no_cache,
    };
    let (tx, rx) = mpsc::channel::<BuildInput>(8);
    tx.send(BuildInput {
        input: Some(Input::Start(start)),
    })
    .await
    .map_err(|_| CtlError::BadResponse("build input closed".into()))?;
    let root = context.clone();
    let sender = tokio::task::spawn_blocking(move || {
        let mut b = tar::Builder::new(ChunkWriter {
            tx,
            buf: Vec::new(),
        });
        b.follow_symlinks(false);
        add_dir(&mut b, &root, "", &ignore)?;
        let mut w = b.into_inner()?;
        w.flush()
    });
    // A build lasts as long as its steps: no request deadline.
    let channel = ctx.conn().await?.channel_without_deadline().await?;
    let call = ProxyClient::new(channel)
        .build(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let output = call
        .map_err(|s| service_error(&s, None, Service::Workload))?
        .into_inner();
    let result = follow(output, args.quiet).await;
    match sender.await {
        Ok(Err(e)) if result.is_err() => {
            eprintln!("warning: sending the build context stopped: {e}");
        }
        Ok(Err(source)) => {
            return Err(CtlError::Io {
                path: context.display().to_string(),
                source,
            });
        }
        _ => {}
    }
    let r = result?;
    if args.quiet {
        println!("{}", r.digest);
    } else {
        println!(
            "built {} ({}) on node {}: {} steps, {} cached",
            r.name, r.digest, r.node, r.steps, r.cached
        );
    }
    Ok(())
}

/// Prints a build's (or commit's) progress as it comes and returns its result.
pub async fn follow(
    mut output: tonic::Streaming<BuildOutput>,
    quiet: bool,
) -> Result<BuildResult, CtlError> {
    let mut result = None;
    loop {
        match output.message().await {
            Ok(Some(m)) => match m.output {
                Some(Output::Progress(text)) if !quiet => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&text)
                        .and_then(|()| out.flush())
                        .map_err(CtlError::Output)?;
                }
                Some(Output::Result(r)) => result = Some(r),
                _ => {}
            },
            Ok(None) => break,
            Err(s) => return Err(service_error(&s, None, Service::Workload)),
        }
    }
    result.ok_or_else(|| CtlError::BadResponse("the build ended without a result".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_take_values_or_the_environment() {
        let a = build_args(&[
            "A=1".into(),
            "B=x=y".into(),
            "PATH".into(),
            "NOPE_UNSET_X".into(),
        ])
        .unwrap();
        assert_eq!(a["A"], "1");
        assert_eq!(a["B"], "x=y");
        assert!(a.contains_key("PATH"));
        assert!(!a.contains_key("NOPE_UNSET_X"));
        assert!(build_args(&["=v".into()]).is_err());
    }
}
