//! TLS to PostgreSQL as libpq spells it, with rustls. `DATABASE_URL`'s `sslmode`,
//! `sslrootcert`, `sslcert` and `sslkey` (each the URL does not give taken from
//! `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` or `PGSSLKEY`) mean what they mean to libpq:
//!
//! - `disable`: never; `prefer` (the default): TLS when the server offers it, without
//!   checking its certificate; `require`: TLS or no connection, its certificate checked
//!   against a root certificate only when one is given (as libpq does);
//!   `verify-ca`: the certificate must chain to a root certificate; `verify-full`: and
//!   name the host connected to. libpq's `allow` (plain first) is refused.
//! - `sslrootcert`: a PEM file of root certificates, by default
//!   `~/.postgresql/root.crt` when it exists (the `verify-` modes need one); `system`:
//!   the system's roots, which only `verify-full` may use (libpq's rule: any CA a system
//!   trusts can name any host).
//! - `sslcert` and `sslkey`: a client certificate and its key (PEM), by default
//!   `~/.postgresql/postgresql.crt` and `.key` when both exist.
//!
//! The other parameters go to tokio-postgres, which does not know these four. The
//! connector made of these is `service::db::tls_connect`.

use std::path::{Path, PathBuf};

/// libpq's `sslmode`, less `allow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<SslMode, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(
                "sslmode=allow (plain first, TLS only if refused) is not supported: use prefer or stronger".into(),
            ),
            _ => Err(format!(
                "sslmode must be one of disable, prefer, require, verify-ca, verify-full (got {value:?})"
            )),
        }
    }
}

/// The URL's TLS parameters, as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsParams {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// The URL without its TLS parameters (for tokio-postgres), and those parameters, each
/// one the URL does not give taken from libpq's environment variable for it.
pub fn split_url(url: &str) -> (String, TlsParams) {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let decoded = form_urlencoded::parse(pair.as_bytes()).next();
        match decoded {
            Some((key, value)) if TLS_KEYS.contains(&key.as_ref()) => {
                let slot = match key.as_ref() {
                    "sslmode" => &mut params.sslmode,
                    "sslrootcert" => &mut params.sslrootcert,
                    "sslcert" => &mut params.sslcert,
                    _ => &mut params.sslkey,
                };
                *slot = Some(value.into_owned());
            }
            _ => kept.push(pair),
        }
    }
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    for (slot, name) in [
        (&mut params.sslmode, "PGSSLMODE"),
        (&mut params.sslrootcert, "PGSSLROOTCERT"),
        (&mut params.sslcert, "PGSSLCERT"),
        (&mut params.sslkey, "PGSSLKEY"),
    ] {
        if slot.is_none() {
            *slot = env(name);
        }
    }
    let plain = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (plain, params)
}

/// Where the root certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    None,
    File(PathBuf),
    System,
}

/// What the parameters ask for, checked, before any file is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsChoice {
    pub mode: SslMode,
    pub roots: Roots,
    pub client: Option<(PathBuf, PathBuf)>,
}

fn home_file(name: &str) -> Option<PathBuf> {
    let path = Path::new(&std::env::var_os("HOME")?)
        .join(".postgresql")
        .join(name);
    path.is_file().then_some(path)
}

impl TlsChoice {
    /// libpq's rules for the parameters; errors name the parameter and the rule.
    pub fn from_params(params: &TlsParams) -> Result<TlsChoice, String> {
        let system = params.sslrootcert.as_deref() == Some("system");
        let mode = match params.sslmode.as_deref() {
            Some(value) => SslMode::parse(value)?,
            // libpq: the system's roots make verify-full the default.
            None if system => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if system && mode != SslMode::VerifyFull {
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full (got sslmode={}): any CA the system trusts could vouch for another host",
                mode.name()
            ));
        }
        let roots = match params.sslrootcert.as_deref() {
            Some("system") => Roots::System,
            Some("") => return Err("sslrootcert must not be empty".into()),
            Some(file) => Roots::File(file.into()),
            None => home_file("root.crt").map_or(Roots::None, Roots::File),
        };
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && roots == Roots::None {
            return Err(format!(
                "sslmode={} needs root certificates: set sslrootcert to a PEM file, or to system for the system's (~/.postgresql/root.crt does not exist)",
                mode.name()
            ));
        }
        let client = match (params.sslcert.as_deref(), params.sslkey.as_deref()) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (Some(_), None) => {
                return Err("sslcert needs sslkey (the certificate's private key)".into());
            }
            (None, Some(_)) => return Err("sslkey needs sslcert (the client certificate)".into()),
            (None, None) => home_file("postgresql.crt").zip(home_file("postgresql.key")),
        };
        Ok(TlsChoice {
            mode,
            roots,
            client,
        })
    }

    /// tokio-postgres's side of the mode: whether TLS is tried, and whether it must be.
    pub fn negotiation(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(url: &str) -> TlsParams {
        split_url(url).1
    }

    #[test]
    fn the_tls_parameters_leave_the_url() {
        let (plain, tls) = split_url(
            "postgres://u:p@db:5432/x?sslmode=verify-full&application_name=a&sslrootcert=%2Fca.pem",
        );
        assert_eq!(plain, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!(tls.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(tls.sslrootcert.as_deref(), Some("/ca.pem"));
        assert_eq!(
            split_url("postgres://db/x?sslmode=disable").0,
            "postgres://db/x"
        );
    }

    #[test]
    fn libpq_rules() {
        let choice = |url: &str| TlsChoice::from_params(&params(url)).map(|c| c.mode);
        assert_eq!(
            choice("postgres://db/x?sslmode=require"),
            Ok(SslMode::Require)
        );
        assert_eq!(
            choice("postgres://db/x?sslrootcert=system"),
            Ok(SslMode::VerifyFull)
        );
        let weak = choice("postgres://db/x?sslmode=require&sslrootcert=system").unwrap_err();
        assert!(weak.contains("verify-full"), "{weak}");
        assert!(
            choice("postgres://db/x?sslmode=allow")
                .unwrap_err()
                .contains("allow")
        );
        assert!(
            choice("postgres://db/x?sslmode=on")
                .unwrap_err()
                .contains("one of")
        );
        let half = choice("postgres://db/x?sslmode=require&sslcert=/c.pem").unwrap_err();
        assert!(half.contains("sslkey"), "{half}");
    }
}
