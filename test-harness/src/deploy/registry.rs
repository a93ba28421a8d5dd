//! Registries: `host[:port]/repository[:tag]` references, and a minimal OCI distribution client
//! (plain HTTP, no auth) for loopback registries; `crane` pushes everywhere else.

use crate::deploy::oci::{Image, MANIFEST_MEDIA_TYPE};
use crate::run::http::{send, Response};
use std::time::Duration;

/// A parsed `host[:port]/repo[:tag|@sha256:...]` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    /// A tag or a `sha256:` digest.
    pub reference: String,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, String> {
        let s = s.strip_prefix("oci://").unwrap_or(s);
        let (registry, rest) = s
            .split_once('/')
            .filter(|(r, rest)| !r.is_empty() && !rest.is_empty())
            .ok_or_else(|| format!("{s:?} is not host[:port]/repository[:tag]"))?;
        let (repository, reference) = if let Some((repo, d)) = rest.split_once('@') {
            (repo, d.to_string())
        } else {
            match rest.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo, tag.to_string()),
                _ => (rest, "latest".to_string()),
            }
        };
        if repository.is_empty() || reference.is_empty() {
            return Err(format!("{s:?} has an empty repository or tag"));
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            reference,
        })
    }

    /// Loopback registries (`localhost`, `127.x.x.x`, `[::1]`) are spoken to over plain HTTP.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

/// Pushes `img` to a registry over the OCI distribution API on plain HTTP, without
/// authentication: each missing blob by a monolithic upload (POST, then PUT with `?digest=`), then
/// the manifest by PUT. Returns the digest the registry reports for the manifest. Meant for local
/// registries (tests, `localhost`); for TLS or authenticated registries use `crane push`.
pub fn push_http(img: &Image, r: &Reference) -> Result<String, String> {
    for (digest, data) in &img.blobs {
        push_blob(r, digest, data)?;
    }
    let put = send(
        &r.registry,
        "PUT",
        &format!("/v2/{}/manifests/{}", r.repository, r.reference),
        &[("Content-Type".to_string(), MANIFEST_MEDIA_TYPE.to_string())],
        &img.manifest,
        TIMEOUT,
    )?;
    if put.status != 201 {
        return Err(http_error("putting the manifest", &put));
    }
    Ok(put
        .header("docker-content-digest")
        .unwrap_or(&img.manifest_digest)
        .to_string())
}

const TIMEOUT: Duration = Duration::from_secs(60);

fn http_error(what: &str, resp: &Response) -> String {
    format!(
        "{what}: HTTP {} {}",
        resp.status,
        resp.body_text().chars().take(500).collect::<String>()
    )
}

/// Uploads one blob unless the registry has it already.
fn push_blob(r: &Reference, digest: &str, data: &[u8]) -> Result<(), String> {
    let (addr, repo) = (r.registry.as_str(), &r.repository);
    let blob = format!("/v2/{repo}/blobs/{digest}");
    if send(addr, "HEAD", &blob, &[], &[], TIMEOUT)?.status == 200 {
        return Ok(());
    }
    let uploads = format!("/v2/{repo}/blobs/uploads/");
    let start = send(addr, "POST", &uploads, &[], &[], TIMEOUT)?;
    if start.status != 202 {
        return Err(http_error(
            &format!("starting the upload of {digest}"),
            &start,
        ));
    }
    let loc = start
        .header("location")
        .ok_or("upload start without a Location header")?;
    // The Location may be absolute (http://host/...) or a path.
    let path = match loc.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
        None => loc.to_string(),
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let octets = [(
        "Content-Type".to_string(),
        "application/octet-stream".to_string(),
    )];
    let put = send(
        addr,
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        &octets,
        data,
        TIMEOUT,
    )?;
    if put.status != 201 {
        return Err(http_error(&format!("uploading {digest}"), &put));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = Reference::parse("127.0.0.1:5000/meshtrace:v1").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("127.0.0.1:5000", "meshtrace", "v1")
        );
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "127.0.0.1:5000/meshtrace:v1");
        let r = Reference::parse("oci://ghcr.io/org/team/meshtrace").unwrap();
        assert_eq!(r.repository, "org/team/meshtrace");
        assert_eq!(r.reference, "latest");
        assert!(!r.is_loopback());
        let r = Reference::parse("localhost:5000/a/b@sha256:abc").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.reference.as_str()),
            ("a/b", "sha256:abc")
        );
        assert!(r.is_loopback());
        assert!(Reference::parse("meshtrace").is_err());
    }
}
