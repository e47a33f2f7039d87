//! `shoalctl image push SRC [DEST]` and `shoalctl image pull REF`: a cluster image to a
//! registry and back, with shoal-image's registry client. Push streams each blob the
//! registry lacks from the controller to the registry ([`Pusher`]); pull downloads into a
//! temporary directory, makes an OCI layout tarball of it (the manifest kept byte for
//! byte, so the image keeps its registry digest) and streams that to `Images.Import`.
//!
//! The registry is reached as the reference says (`host:port/repo:tag`, HTTPS), or over
//! plain HTTP with `--plain-http` or an `http://` prefix; credentials are `--creds`, else
//! those `docker login` stored in the user's Docker config.

use std::sync::Arc;

use shoal_image::ImageStore;
use shoal_image::archive::{self, DirSource, SavedImage};
use shoal_image::config::Descriptor;
use shoal_image::registry::hosts::{AuthConfig, HostConfig, Mirror, Scheme, TlsConfig};
use shoal_image::registry::push::BlobOutcome;
use shoal_image::registry::{
    Credentials, DockerConfig, Endpoint, Keyring, Pusher, Reference, RegistriesConfig,
    RegistryClient, RegistryError,
};

use super::image::{ClusterBlobs, import, resolve};
use super::image_save::short;
use super::{Context, note, print};
use crate::cli::RegistryArgs;
use crate::error::CtlError;
use crate::output;

/// Where a reference's registry is: the parsed reference (without a scheme prefix), the
/// endpoint to talk to and the reference as the cluster names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The parsed reference.
    pub reference: Reference,
    /// Scheme and `host[:port]` of the registry's API.
    pub endpoint: Endpoint,
    /// The reference without an `http://` or `https://` prefix.
    pub name: String,
}

/// Parses `[http://|https://]REGISTRY/REPO[:TAG][@DIGEST]`; `plain_http` forces HTTP.
pub fn target(written: &str, plain_http: bool) -> Result<Target, CtlError> {
    let (scheme, name) = if let Some(rest) = written.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = written.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        (Scheme::Https, written)
    };
    let scheme = if plain_http { Scheme::Http } else { scheme };
    let reference = Reference::parse(name).map_err(|e| CtlError::Usage(e.to_string()))?;
    let endpoint = Endpoint {
        scheme,
        host: reference.default_endpoint_host().to_string(),
    };
    Ok(Target {
        reference,
        endpoint,
        name: name.to_string(),
    })
}

/// `--creds USER:PASSWORD`, else the user's Docker config entry for the registry.
fn credentials(args: &RegistryArgs, t: &Target) -> Result<Option<Credentials>, CtlError> {
    if let Some(c) = &args.creds {
        let (username, password) = c
            .split_once(':')
            .ok_or_else(|| CtlError::Usage("--creds: expected USER:PASSWORD".into()))?;
        return Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    let config = DockerConfig::load_user().map_err(|source| CtlError::Registry {
        action: "read credentials for",
        image: t.name.clone(),
        source: Box::new(source),
    })?;
    Ok(config.and_then(|c| {
        c.get(&t.reference.registry)
            .or_else(|| c.get(&t.endpoint.host))
            .cloned()
    }))
}

fn tls(args: &RegistryArgs) -> Option<TlsConfig> {
    (args.ca_file.is_some() || args.insecure_skip_tls_verify).then(|| TlsConfig {
        ca_file: args.ca_file.clone(),
        insecure_skip_verify: args.insecure_skip_tls_verify,
        ..TlsConfig::default()
    })
}

/// Runs `image push`.
pub async fn push(
    ctx: &mut Context,
    source: &str,
    dest: Option<&str>,
    args: &RegistryArgs,
) -> Result<(), CtlError> {
    let t = target(dest.unwrap_or(source), args.plain_http)?;
    let failed = |source: RegistryError| CtlError::Registry {
        action: "push",
        image: t.name.clone(),
        source: Box::new(source),
    };
    let info = resolve(ctx, source).await?;
    let blobs = ClusterBlobs::new(ctx).await?;
    let image = blobs.image(&info, Vec::new()).await?;
    let reference = match (&t.reference.digest, &t.reference.tag) {
        (Some(d), _) if *d != image.digest => {
            return Err(CtlError::Usage(format!(
                "{}: the image {source} is {}, not {d}",
                t.name, image.digest
            )));
        }
        (Some(d), _) => d.to_string(),
        (None, Some(tag)) => tag.clone(),
        (None, None) => "latest".to_string(),
    };
    let creds = credentials(args, &t)?;
    let pusher = Pusher::new(
        &t.endpoint,
        &t.reference.repository,
        tls(args).as_ref(),
        creds,
    )
    .map_err(failed)?;
    // A bar of the image's bytes on a terminal, a line per blob as each completes.
    let total = info.layer_sizes.iter().sum::<u64>() + info.config_json.len() as u64;
    let bar = crate::progress::bytes(Some(total), &format!("pushing {}", t.name));
    let mut progress = |d: &Descriptor, outcome: BlobOutcome| {
        let what = match outcome {
            BlobOutcome::Exists => "exists ",
            BlobOutcome::Pushed => "pushed ",
        };
        bar.inc(d.size);
        bar.suspend(|| {
            note(&format!(
                "{what}{} {}",
                short(&d.digest.to_string()),
                output::size_text(d.size)
            ))
        });
    };
    let pushed = pusher
        .push(&reference, &image.manifest_bytes, &blobs, &mut progress)
        .await;
    bar.finish_and_clear();
    let digest = pushed.map_err(failed)?;
    print(&format!(
        "{}: digest: {digest} size: {}\n",
        t.name,
        image.manifest_bytes.len()
    ))
}

/// The client settings for one pull: plain HTTP as a mirror of the registry on the same
/// host, TLS and credentials for the endpoint.
fn pull_config(t: &Target, args: &RegistryArgs, creds: Option<Credentials>) -> RegistriesConfig {
    let mut config = RegistriesConfig::default();
    if t.endpoint.scheme == Scheme::Http {
        config.mirrors.insert(
            t.reference.registry.clone(),
            Mirror {
                endpoint: vec![t.endpoint.to_string()],
            },
        );
    }
    config.configs.insert(
        t.endpoint.host.clone(),
        HostConfig {
            auth: creds.map(|c| AuthConfig {
                username: Some(c.username),
                password: Some(c.password),
                auth: None,
            }),
            tls: tls(args),
        },
    );
    config
}

/// Runs `image pull`.
pub async fn pull(
    ctx: &mut Context,
    written: &str,
    tag: Option<String>,
    args: &RegistryArgs,
) -> Result<(), CtlError> {
    let t = target(written, args.plain_http)?;
    let failed = |source: RegistryError| CtlError::Registry {
        action: "pull",
        image: t.name.clone(),
        source: Box::new(source),
    };
    let creds = credentials(args, &t)?;
    let client = RegistryClient::new(pull_config(&t, args, creds))
        .with_credentials_hint("--creds USER:PASSWORD, or docker login")
        .with_progress(Arc::new(|d: &Descriptor, downloaded: u64| {
            let what = if downloaded == 0 { "exists" } else { "pulled" };
            note(&format!(
                "{what} {} {}",
                short(&d.digest.to_string()),
                output::size_text(d.size)
            ));
        }));
    let dir = tempfile::Builder::new()
        .prefix("shoalctl-pull-")
        .tempdir()
        .map_err(|source| CtlError::Io {
            path: std::env::temp_dir().display().to_string(),
            source,
        })?;
    let store =
        ImageStore::open(dir.path().join("store")).map_err(|e| failed(RegistryError::Store(e)))?;
    let downloaded = client
        .download(
            &t.name,
            &Keyring::default(),
            &store,
            &dir.path().join("partial"),
        )
        .await
        .map_err(failed)?;
    let manifest_path = store.blob_path(&downloaded.digest);
    let bytes = tokio::fs::read(&manifest_path)
        .await
        .map_err(|source| CtlError::Io {
            path: manifest_path.display().to_string(),
            source,
        })?;
    let names = if t.reference.digest.is_some() {
        Vec::new()
    } else {
        shoal_image::normalize_reference(&t.name)
            .map(|n| vec![n])
            .unwrap_or_default()
    };
    let image =
        SavedImage::new(names, downloaded.digest.clone(), bytes).map_err(CtlError::BadResponse)?;
    let tarball = dir.path().join("image.tar");
    let mut file = tokio::fs::File::create(&tarball)
        .await
        .map_err(|source| CtlError::Io {
            path: tarball.display().to_string(),
            source,
        })?;
    archive::write(
        &mut file,
        &archive::plan(std::slice::from_ref(&image), false),
        &DirSource(store.root().to_path_buf()),
        &mut |_| {},
    )
    .await
    .map_err(|e| CtlError::BadResponse(format!("{}: {e}", tarball.display())))?;
    drop(file);
    note(&format!(
        "{}: downloaded {} from {}",
        t.name,
        output::size_text(downloaded.downloaded),
        downloaded.endpoint
    ));
    import(ctx, &tarball, tag.unwrap_or_default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_scheme_host_and_repository() {
        let t = target("http://127.0.0.1:5000/team/app:v1", false).unwrap();
        assert_eq!(t.endpoint.to_string(), "http://127.0.0.1:5000");
        assert_eq!(t.reference.repository, "team/app");
        assert_eq!(t.name, "127.0.0.1:5000/team/app:v1");
        let t = target("127.0.0.1:5000/app", true).unwrap();
        assert_eq!(t.endpoint.to_string(), "http://127.0.0.1:5000");
        let t = target("registry.example/app:v1", false).unwrap();
        assert_eq!(t.endpoint.to_string(), "https://registry.example");
        let t = target("busybox", false).unwrap();
        assert_eq!(t.endpoint.to_string(), "https://registry-1.docker.io");
        assert_eq!(t.reference.repository, "library/busybox");
        assert!(target("http://", false).is_err());
    }

    #[test]
    fn plain_http_pulls_ask_only_the_http_endpoint() {
        let args = RegistryArgs {
            creds: None,
            ca_file: None,
            plain_http: false,
            insecure_skip_tls_verify: false,
        };
        let t = target("http://127.0.0.1:5000/app:v1", false).unwrap();
        let c = pull_config(
            &t,
            &args,
            Some(Credentials {
                username: "u".into(),
                password: "p".into(),
            }),
        );
        assert_eq!(c.endpoints(&t.reference), vec![t.endpoint.clone()]);
        assert_eq!(
            c.credentials(&t.endpoint, &t.reference)
                .unwrap()
                .unwrap()
                .username,
            "u"
        );
        let t = target("127.0.0.1:5000/app:v1", false).unwrap();
        let c = pull_config(&t, &args, None);
        assert_eq!(c.endpoints(&t.reference), vec![t.endpoint.clone()]);
        assert!(c.credentials(&t.endpoint, &t.reference).unwrap().is_none());
    }
}
