//! Typed settings parsed once from flags and environment. Connection URLs keep their
//! secrets out of `Display` and `Debug`, so a URL can be logged or put in an error as it is.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Where the data lives, chosen from the URL scheme.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `postgres://` or `postgresql://`: native async PostgreSQL.
    Postgres(String),
    /// Anything else without a scheme, or `sqlite://path`: a SQLite file.
    Sqlite(PathBuf),
}

/// The SQLite file used when no database URL is configured.
pub const DEFAULT_SQLITE_FILE: &str = "listings.sqlite3";

impl Default for DatabaseUrl {
    fn default() -> Self {
        DatabaseUrl::Sqlite(PathBuf::from(DEFAULT_SQLITE_FILE))
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("must not be empty (omit it to use the embedded SQLite file)".into());
        }
        match raw.split_once("://") {
            Some(("postgres" | "postgresql", rest)) => {
                if host_of(rest).is_empty() {
                    return Err("a postgres:// URL needs a host".into());
                }
                Ok(DatabaseUrl::Postgres(raw.to_owned()))
            }
            // diesel's SQLite wants a plain path, not a URL.
            Some(("sqlite", path)) if !path.is_empty() => Ok(DatabaseUrl::Sqlite(path.into())),
            Some(("sqlite", _)) => Err("sqlite:// needs a file path".into()),
            Some((scheme, _)) => Err(format!(
                "unsupported scheme `{scheme}://` (use postgres://... or a SQLite file path)"
            )),
            None => Ok(DatabaseUrl::Sqlite(
                raw.strip_prefix("sqlite:").unwrap_or(raw).into(),
            )),
        }
    }
}

impl DatabaseUrl {
    /// `host:port` (or the file path) for error messages that must name the target.
    pub fn target(&self) -> String {
        match self {
            DatabaseUrl::Postgres(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                host_of(rest).to_owned()
            }
            DatabaseUrl::Sqlite(path) => path.display().to_string(),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            DatabaseUrl::Postgres(_) => "PostgreSQL",
            DatabaseUrl::Sqlite(_) => "SQLite",
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Postgres(url) => f.write_str(&redact_password(url)),
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// A Redis URL, validated by the redis crate's own parser.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let raw = raw.trim();
        if !(raw.starts_with("redis://")
            || raw.starts_with("rediss://")
            || raw.starts_with("unix://"))
        {
            return Err("must start with redis:// (omit it to use the in-process cache)".into());
        }
        redis::Client::open(raw).map_err(|e| format!("is not a valid Redis URL: {e}"))?;
        Ok(RedisUrl(raw.to_owned()))
    }
}

impl RedisUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn target(&self) -> String {
        let rest = self.0.split_once("://").map_or(self.0.as_str(), |(_, r)| r);
        host_of(rest).to_owned()
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_password(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// `host:port` of the part after `scheme://`.
fn host_of(rest: &str) -> &str {
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// Replaces the password of `scheme://user:password@host` (and a `password=` query
/// parameter) with `***`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = tail
        .split('&')
        .map(|part| match part.find("password=") {
            Some(at) => format!("{}password=***", &part[..at]),
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{scheme}://{authority}{tail}")
}

/// The bearer token that turns the write API on. Never shown: `Debug` and `Display`
/// print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

pub const ADMIN_TOKEN_MIN_CHARS: usize = 16;

impl FromStr for AdminToken {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.len() < ADMIN_TOKEN_MIN_CHARS || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "must be at least {ADMIN_TOKEN_MIN_CHARS} printable ASCII characters without spaces"
            ));
        }
        Ok(AdminToken(raw.to_owned()))
    }
}

impl AdminToken {
    /// Compares in constant time, so response timing does not reveal the token.
    pub fn matches(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.len() == candidate.len() && bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// A positive number of seconds, for TTL flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttl(pub Duration);

impl FromStr for Ttl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let seconds: u64 = raw
            .trim()
            .parse()
            .map_err(|_| format!("`{raw}` is not a whole number of seconds"))?;
        if seconds == 0 || seconds > 30 * 24 * 3600 {
            return Err("must be between 1 and 2592000 seconds (30 days)".into());
        }
        Ok(Ttl(Duration::from_secs(seconds)))
    }
}

/// A cache key prefix: printable ASCII without spaces, so keys stay greppable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPrefix(pub String);

impl FromStr for KeyPrefix {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.is_empty() || raw.len() > 64 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be 1 to 64 printable ASCII characters without spaces".into());
        }
        Ok(KeyPrefix(raw.to_owned()))
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        KeyPrefix("listings:".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_picks_backend_from_scheme() {
        assert!(matches!(
            "postgres://u:p@h:5432/db".parse(),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert_eq!(
            "sqlite://data/x.db".parse::<DatabaseUrl>(),
            Ok(DatabaseUrl::Sqlite("data/x.db".into()))
        );
        assert_eq!(
            "x.db".parse::<DatabaseUrl>(),
            Ok(DatabaseUrl::Sqlite("x.db".into()))
        );
        assert!(
            "mysql://h/db"
                .parse::<DatabaseUrl>()
                .unwrap_err()
                .contains("unsupported scheme")
        );
    }

    #[test]
    fn passwords_never_reach_display() {
        let url: DatabaseUrl = "postgres://app:s3cret@db.example:5432/listings"
            .parse()
            .unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://app:***@db.example:5432/listings"
        );
        assert_eq!(
            format!("{url:?}"),
            "DatabaseUrl(postgres://app:***@db.example:5432/listings)"
        );
        assert_eq!(url.target(), "db.example:5432");
        let redis: RedisUrl = "redis://:hunter2@cache:6379/0".parse().unwrap();
        assert_eq!(redis.to_string(), "redis://:***@cache:6379/0");
        assert_eq!(
            redact_password("postgres://h/db?user=a&password=b"),
            "postgres://h/db?user=a&password=***"
        );
    }

    #[test]
    fn admin_tokens_are_long_and_never_printed() {
        let token: AdminToken = "0123456789abcdef".parse().unwrap();
        assert!(token.matches("0123456789abcdef"));
        assert!(!token.matches("0123456789abcdeF"));
        assert!(!token.matches("0123456789abcdef0"));
        assert_eq!(format!("{token:?}"), "AdminToken(***)");
        assert!("short".parse::<AdminToken>().is_err());
    }

    #[test]
    fn ttl_must_be_positive_seconds() {
        assert_eq!("900".parse::<Ttl>(), Ok(Ttl(Duration::from_secs(900))));
        assert!("0".parse::<Ttl>().is_err());
        assert!("abc".parse::<Ttl>().is_err());
    }
}
