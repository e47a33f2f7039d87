//! `shoalctl image import|ls|rm|tag`: the controllers' `Images` service. Import streams the
//! tarball in chunks (the extra tag rides on the first one). `save` is in
//! [`super::image_save`], `push` and `pull` in [`super::image_registry`]; the cluster's
//! blobs reach them through [`ClusterBlobs`].

use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use shoal_image::archive::{BlobSource, BlobStream, SavedImage};
use shoal_image::digest::Digest;
use shoal_proto::images_client::ImagesClient;
use shoal_proto::{
    BlobRequest, ImageInfo, ImageListRequest, ImageRemoveRequest, ImportChunk, ResolveRequest,
    TagRequest,
};
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;

use super::{Context, finish, note, print};
use crate::cli::ImageCommand;
use crate::error::{CtlError, Service, service_error};
use crate::output;

/// Bytes per import message (well under gRPC's 4 MiB message limit).
const CHUNK: usize = 1024 * 1024;

/// Largest manifest read into memory.
const MAX_MANIFEST: u64 = 4 << 20;

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
        ImageCommand::Tag { source, target } => {
            let req = TagRequest {
                source: source.clone(),
                target: target.clone(),
            };
            let img = ctx
                .conn()
                .await?
                .call_on(|ch| {
                    let r = req.clone();
                    async move { ImagesClient::new(ch).tag(r).await }
                })
                .await
                .map_err(|s| service_error(&s, None, Service::Workload))?;
            print(&format!("Tagged {source} as {target} ({})\n", img.digest))
        }
        ImageCommand::Save { names, output } => super::image_save::run(ctx, &names, &output).await,
        ImageCommand::Push {
            source,
            dest,
            registry,
        } => super::image_registry::push(ctx, &source, dest.as_deref(), &registry).await,
        ImageCommand::Pull {
            reference,
            tag,
            registry,
        } => super::image_registry::pull(ctx, &reference, tag, &registry).await,
    }
}

/// The cluster image a reference names.
pub async fn resolve(ctx: &mut Context, name: &str) -> Result<ImageInfo, CtlError> {
    let req = ResolveRequest {
        name: name.to_string(),
    };
    ctx.conn()
        .await?
        .call_on(|ch| {
            let r = req.clone();
            async move { ImagesClient::new(ch).resolve(r).await }
        })
        .await
        .map_err(|s| service_error(&s, None, Service::Workload))
}

/// The blobs of the cluster's images, streamed from the controller by `Images.Blob`.
#[derive(Debug, Clone)]
pub struct ClusterBlobs {
    channel: Channel,
}

impl ClusterBlobs {
    /// Blobs from the controller `ctx` is connected to (on a channel without the request
    /// deadline: a large layer may take longer).
    pub async fn new(ctx: &mut Context) -> Result<Self, CtlError> {
        Ok(Self {
            channel: ctx.conn().await?.channel_without_deadline().await?,
        })
    }

    /// Reads the manifest of `info` into memory and parses it; `names` are the names to
    /// save it under.
    pub async fn image(
        &self,
        info: &ImageInfo,
        names: Vec<String>,
    ) -> Result<SavedImage, CtlError> {
        let digest: Digest = info
            .digest
            .parse()
            .map_err(|e| CtlError::BadResponse(format!("image digest {:?}: {e}", info.digest)))?;
        let mut stream = self
            .open(&digest, 0)
            .await
            .map_err(|e| blob_error(&digest, e))?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| blob_error(&digest, e))?);
            if bytes.len() as u64 > MAX_MANIFEST {
                return Err(CtlError::BadResponse(format!(
                    "manifest {digest} is larger than {MAX_MANIFEST} bytes"
                )));
            }
        }
        SavedImage::new(names, digest, bytes).map_err(CtlError::BadResponse)
    }
}

/// A blob stream's error as the user sees it: the controller's own error when it was one.
pub fn blob_error(d: &Digest, e: std::io::Error) -> CtlError {
    match e.into_inner().map(|b| b.downcast::<CtlError>()) {
        Some(Ok(ctl)) => *ctl,
        Some(Err(other)) => CtlError::BadResponse(format!("blob {d}: {other}")),
        None => CtlError::BadResponse(format!("blob {d}: read failed")),
    }
}

impl BlobSource for ClusterBlobs {
    async fn open(&self, digest: &Digest, _size: u64) -> std::io::Result<BlobStream> {
        let req = BlobRequest {
            digest: digest.to_string(),
            offset: 0,
            local_only: false,
        };
        let stream = ImagesClient::new(self.channel.clone())
            .max_decoding_message_size(16 << 20)
            .blob(req)
            .await
            .map_err(|s| std::io::Error::other(service_error(&s, None, Service::Workload)))?
            .into_inner();
        Ok(Box::pin(stream.map(|chunk| {
            chunk
                .map(|c| Bytes::from(c.data))
                .map_err(|s| std::io::Error::other(service_error(&s, None, Service::Workload)))
        })))
    }
}

/// Streams the tarball and prints each imported image's names and digest.
pub async fn import(ctx: &mut Context, path: &Path, tag: String) -> Result<(), CtlError> {
    let shown = path.display().to_string();
    let io_err = |source| CtlError::Io {
        path: shown.clone(),
        source,
    };
    let mut total = None;
    let mut reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if shown == "-" {
        Box::new(tokio::io::stdin())
    } else {
        let f = tokio::fs::File::open(path).await.map_err(io_err)?;
        total = f.metadata().await.ok().map(|m| m.len());
        Box::new(f)
    };
    let bar = crate::progress::bytes(total, &format!("importing {shown}"));
    let sent = bar.clone();
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
            sent.inc(filled as u64);
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
    bar.finish_and_clear();
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
