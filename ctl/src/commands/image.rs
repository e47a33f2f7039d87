//! `shoalctl image import|ls|rm`: the controllers' `Images` service. Import streams the
//! tarball in chunks (the extra tag rides on the first one).

use std::path::Path;

use shoal_proto::images_client::ImagesClient;
use shoal_proto::{ImageListRequest, ImageRemoveRequest, ImportChunk};
use tokio::io::AsyncReadExt;

use super::{Context, finish, note, print};
use crate::cli::ImageCommand;
use crate::error::{CtlError, Service, service_error};
use crate::output;

/// Bytes per import message (well under gRPC's 4 MiB message limit).
const CHUNK: usize = 1024 * 1024;

/// Runs `image …`.
pub async fn run(ctx: &mut Context, command: ImageCommand) -> Result<(), CtlError> {
    match command {
        ImageCommand::Import { path, tag } => import(ctx, &path, tag.unwrap_or_default()).await,
        ImageCommand::Ls { no_headers } => {
            let resp = ctx
                .conn()
                .await?
                .call_on(|ch| async move { ImagesClient::new(ch).list(ImageListRequest {}).await })
                .await
                .map_err(|s| service_error(&s, None, Service::Workload))?;
            if resp.images.is_empty() {
                note("No images found");
                return Ok(());
            }
            print(&output::images_table(&resp.images).render(no_headers))
        }
        ImageCommand::Rm { names } => {
            let total = names.len();
            let mut failures = Vec::new();
            for name in names {
                let req = ImageRemoveRequest { name: name.clone() };
                let res = ctx
                    .conn()
                    .await?
                    .call_on(|ch| {
                        let r = req.clone();
                        async move { ImagesClient::new(ch).remove(r).await }
                    })
                    .await;
                match res {
                    Ok(resp) => print(&format!(
                        "Untagged: {name} ({} blob(s) deleted)\n",
                        resp.deleted_blobs.len()
                    ))?,
                    Err(s) => failures.push(service_error(&s, None, Service::Workload)),
                }
            }
            finish(failures, total, "removals")
        }
    }
}

/// Streams the tarball and prints each imported image's names and digest.
async fn import(ctx: &mut Context, path: &Path, tag: String) -> Result<(), CtlError> {
    let shown = path.display().to_string();
    let io_err = |source| CtlError::Io {
        path: shown.clone(),
        source,
    };
    let mut reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if shown == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(tokio::fs::File::open(path).await.map_err(io_err)?)
    };
    // Read ahead into a bounded channel so that a slow controller applies back-pressure.
    let (tx, rx) = tokio::sync::mpsc::channel::<ImportChunk>(4);
    let (err_tx, mut err_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                match reader.read(&mut buf[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        let _ = err_tx.send(e);
                        return;
                    }
                }
            }
            if filled == 0 && !first {
                return;
            }
            buf.truncate(filled);
            let chunk = ImportChunk {
                data: buf,
                tag: if first { tag.clone() } else { String::new() },
            };
            first = false;
            let last = filled < CHUNK;
            if tx.send(chunk).await.is_err() || last {
                return;
            }
        }
    });
    // The upload is one request: it is not bound by --request-timeout.
    let channel = ctx.conn().await?.channel_without_deadline().await?;
    let result = ImagesClient::new(channel)
        .import(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    if let Ok(e) = err_rx.try_recv() {
        return Err(io_err(e));
    }
    let resp = result
        .map_err(|s| service_error(&s, None, Service::Workload))?
        .into_inner();
    if resp.images.is_empty() {
        return Err(CtlError::BadResponse(format!(
            "{shown}: the controller imported no image"
        )));
    }
    for img in &resp.images {
        let names = if img.names.is_empty() {
            "<none>".to_string()
        } else {
            img.names.join(", ")
        };
        print(&format!(
            "Loaded image: {names} ({}, {})\n",
            img.digest,
            output::size_text(img.size)
        ))?;
    }
    Ok(())
}
