//! Which certificate authorities a TLS connection to Redis trusts: the system's, plus the
//! PEM file named by `SSL_CERT_FILE` (the usual convention), so a private CA works
//! without replacing the public ones.

use std::path::Path;

use anyhow::{Context as _, bail};
use redis::TlsCertificates;

pub const CA_FILE_ENV: &str = "SSL_CERT_FILE";

/// Where distributions keep the system bundle (Debian/Ubuntu/Alpine, Fedora/RHEL,
/// openSUSE, macOS and the BSDs).
const SYSTEM_BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
];

/// A 1 MiB bundle holds thousands of certificates; anything larger is not one.
const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// `None` without `SSL_CERT_FILE`: the redis crate then loads the system's roots itself.
pub fn certificates() -> anyhow::Result<Option<TlsCertificates>> {
    let Some(path) = std::env::var_os(CA_FILE_ENV).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = Path::new(&path);
    let mut pem =
        read_pem(path).with_context(|| format!("{CA_FILE_ENV} names {}", path.display()))?;
    if let Some(system) = SYSTEM_BUNDLES
        .iter()
        .map(Path::new)
        .find(|bundle| bundle.is_file() && *bundle != path)
    {
        // The system roots are a convenience beside the named file: unreadable, skipped.
        if let Ok(system) = read_pem(system) {
            pem.push(b'\n');
            pem.extend(system);
        }
    }
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

fn read_pem(path: &Path) -> anyhow::Result<Vec<u8>> {
    let size = std::fs::metadata(path)
        .context("which cannot be read")?
        .len();
    if size > MAX_CA_FILE_BYTES {
        bail!("which is larger than 1 MiB: not a certificate bundle");
    }
    let pem = std::fs::read(path).context("which cannot be read")?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        bail!("which holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    }
    Ok(pem)
}
