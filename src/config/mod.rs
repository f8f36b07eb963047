//! Typed settings parsed once from flags and environment. Connection URLs keep their
//! secrets out of `Display` and `Debug`, so a URL can be logged or put in an error as it is.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub mod pg_tls;
mod redis_url;
pub use redis_url::{Credentials, RedisDeployment, RedisNode, RedisUrl};
mod settings;
pub use settings::*;

/// Where the data lives, chosen from the URL scheme.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `postgres://` or `postgresql://`: native async PostgreSQL.
    Postgres(SecretUrl),
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

    /// Errors describe the URL and never echo it: it may hold a password.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("must not be empty (omit it to use the embedded SQLite file)".into());
        }
        match raw
            .split_once("://")
            .map(|(scheme, rest)| (scheme.to_ascii_lowercase(), rest))
        {
            Some((scheme, _)) if scheme == "postgres" || scheme == "postgresql" => {
                const FORM: &str = "postgres://user:password@host:5432/database";
                let url = SecretUrl::parse(raw, FORM)?;
                // TLS parameters are libpq's, which tokio-postgres does not know.
                let (plain, tls) = pg_tls::split_url(raw);
                pg_tls::TlsChoice::from_params(&tls)?;
                let config = tokio_postgres::Config::from_str(&plain).map_err(|e| {
                    format!(
                        "is not a valid PostgreSQL URL: {}",
                        crate::error_chain::root_cause(&e)
                    )
                })?;
                if let Some(key) = target_in_query(raw) {
                    return Err(format!(
                        "sets `{key}` in its query: name the host and port before the path instead ({FORM}); a Unix socket's directory goes there percent-encoded (postgres://user@%2Fvar%2Frun%2Fpostgresql/database)"
                    ));
                }
                if !same_target(raw, &config) {
                    // Only unencoded delimiters in the user info make the two readers
                    // disagree; the connection would go elsewhere than shown.
                    return Err(format!(
                        "is ambiguous: percent-encode `/`, `@`, `:`, `?` and `#` in the user name and password (`/` as %2F, `@` as %40); expected {FORM}"
                    ));
                }
                Ok(DatabaseUrl::Postgres(url))
            }
            // diesel's SQLite wants a plain path, not a URL.
            Some((scheme, path)) if scheme == "sqlite" && !path.is_empty() => {
                Ok(DatabaseUrl::Sqlite(path.into()))
            }
            Some((scheme, _)) if scheme == "sqlite" => Err("sqlite:// needs a file path".into()),
            Some((scheme, _)) if is_plain_scheme(&scheme) => Err(format!(
                "unsupported scheme `{scheme}://` (use postgres://... or a SQLite file path)"
            )),
            _ => Ok(DatabaseUrl::Sqlite(
                raw.strip_prefix("sqlite:").unwrap_or(raw).into(),
            )),
        }
    }
}

/// A streaming replica of the PostgreSQL database: a `postgres://` URL naming one host
/// (its TLS parameters are its own, read as `DATABASE_URL`'s are).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReplicaUrl(SecretUrl);

impl ReplicaUrl {
    pub fn url(&self) -> &SecretUrl {
        &self.0
    }
}

impl FromStr for ReplicaUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.parse::<DatabaseUrl>()? {
            DatabaseUrl::Postgres(url) if url.target().contains(',') => Err(
                "names several hosts: give each replica a URL of its own (repeat the flag, or separate URLs with commas in the variable)".into(),
            ),
            DatabaseUrl::Postgres(url) => Ok(ReplicaUrl(url)),
            DatabaseUrl::Sqlite(_) => Err(
                "must be a postgres:// URL: replicas are PostgreSQL streaming replicas of DATABASE_URL".into(),
            ),
        }
    }
}

impl fmt::Display for ReplicaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The hosts a PostgreSQL configuration connects to, as text.
pub fn pg_hosts(config: &tokio_postgres::Config) -> Vec<String> {
    config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect()
}

/// `host` or `port` in the query of a PostgreSQL URL: tokio-postgres adds them to the
/// hosts and ports before the path, so the URL would not say where it connects.
/// (`hostaddr` only spares a lookup of the host named, which is still shown.)
fn target_in_query(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw).ok()?;
    url.query_pairs()
        .map(|(key, _)| key)
        .find(|key| key == "host" || key == "port")
        .map(std::borrow::Cow::into_owned)
}

/// True when the `url` crate (which this program shows and redacts) and tokio-postgres
/// (which connects) read the same hosts and port from `raw`. An unencoded `/`, `@`, `?`
/// or `#` in the user info makes them split it differently, which always moves the
/// host or the port: then what is shown is not where the connection goes, and part of
/// the password may be shown as a host.
fn same_target(raw: &str, config: &tokio_postgres::Config) -> bool {
    let Ok(url) = url::Url::parse(raw) else {
        return false;
    };
    let decode = |text: &str| percent_encoding::percent_decode_str(text).collect::<Vec<u8>>();
    let hosts = pg_hosts(config);
    let url_hosts: Vec<String> = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|host| String::from_utf8_lossy(&decode(host)).into_owned())
        .collect();
    let ports_agree = match url.port() {
        Some(port) => config.get_ports().iter().all(|p| *p == port),
        None => config.get_ports().iter().all(|p| *p == 5432),
    };
    // The url crate writes an IPv6 address in its shortest form (`::ffff:127.0.0.1` as
    // `::ffff:7f00:1`), tokio-postgres as given: the same address either way.
    let same_host = |(ours, theirs): (&String, &String)| {
        ours == theirs
            || matches!(
                (ours.parse::<std::net::IpAddr>(), theirs.parse::<std::net::IpAddr>()),
                (Ok(a), Ok(b)) if a == b
            )
    };
    hosts.len() == url_hosts.len() && hosts.iter().zip(&url_hosts).all(same_host) && ports_agree
}

/// A scheme as URLs spell them (letters, digits, `+-.`), so that a file path containing
/// `://` later on is not mistaken for a URL.
fn is_plain_scheme(scheme: &str) -> bool {
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl DatabaseUrl {
    /// `host:port` (or the file path) for messages that must name the target.
    pub fn target(&self) -> String {
        match self {
            DatabaseUrl::Postgres(url) => url.target().to_owned(),
            DatabaseUrl::Sqlite(path) => path.display().to_string(),
        }
    }

    /// Whether the database runs on this machine: a SQLite file, or PostgreSQL reached
    /// at loopback addresses or Unix sockets only.
    pub fn is_on_this_machine(&self) -> bool {
        use tokio_postgres::config::Host;
        let DatabaseUrl::Postgres(url) = self else {
            return true;
        };
        let (plain, _) = pg_tls::split_url(url.expose());
        let Ok(config) = tokio_postgres::Config::from_str(&plain) else {
            return false;
        };
        let addresses = config.get_hostaddrs();
        if !addresses.is_empty() {
            return addresses
                .iter()
                .all(|address| address.to_canonical().is_loopback());
        }
        config.get_hosts().iter().all(|host| match host {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                is_localhost_name(name)
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|address| address.to_canonical().is_loopback())
            }
        })
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            DatabaseUrl::Postgres(_) => "PostgreSQL",
            DatabaseUrl::Sqlite(_) => "SQLite",
        }
    }
}

/// `localhost` and the names under it, which resolve to loopback (RFC 6761 §6.3),
/// with or without the root's trailing dot.
fn is_localhost_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Postgres(url) => url.fmt(f),
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// A URL that may carry a password. `Display` and `Debug` show it with the password
/// (in the user info, or a `password=` query parameter) replaced by `***`; only
/// [`SecretUrl::expose`] gives the real one, to the code that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    raw: String,
    shown: String,
    target: String,
}

impl SecretUrl {
    /// Parses with the `url` crate; errors say what is wrong and how such a URL looks
    /// (`form`), without quoting any of it.
    pub fn parse(raw: &str, form: &str) -> Result<SecretUrl, String> {
        let url = url::Url::parse(raw).map_err(|e| {
            format!(
                "is not a valid URL ({e}); expected {form}, with `/`, `@`, `:`, `?` and `#` in the user name or password percent-encoded (`/` as %2F)"
            )
        })?;
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| format!("needs a host; expected {form}"))?;
        let target = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(SecretUrl {
            raw: raw.to_owned(),
            shown: redacted(url),
            target,
        })
    }

    /// The URL with its password, for connecting; never for output.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// `host:port` (or `host` when the URL names no port).
    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn scheme(&self) -> &str {
        self.raw.split_once("://").map_or("", |(scheme, _)| scheme)
    }
}

fn redacted(mut url: url::Url) -> String {
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let query: Option<String> = url.query().map(|query| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                form_urlencoded::parse(query.as_bytes()).map(|(key, value)| {
                    let value = if key.eq_ignore_ascii_case("password") {
                        "***".into()
                    } else {
                        value
                    };
                    (key, value)
                }),
            )
            .finish()
    });
    url.set_query(query.as_deref());
    url.set_fragment(None);
    url.to_string()
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.shown)
    }
}

/// The bearer token that turns the write API on. Never shown: `Debug` prints `***`,
/// and a refused token is described, not quoted.
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

/// A positive duration given in seconds, with up to 3 decimals (`10`, `0.5`), for
/// timeout flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seconds(Duration);

impl Seconds {
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for Seconds {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let rule = || {
            format!("`{raw}` must be a number of seconds from 0.001 to 86400, such as 10 or 0.5")
        };
        let text = raw.trim();
        let (whole, fraction) = match text.split_once('.') {
            Some((_, "")) => return Err(rule()),
            Some(parts) => parts,
            None => (text, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || whole.len() > 5
            || fraction.len() > 3
            || !digits(whole)
            || !digits(fraction)
        {
            return Err(rule());
        }
        let millis = whole.parse::<u64>().map_err(|_| rule())? * 1000
            + format!("{fraction:0<3}")
                .parse::<u64>()
                .map_err(|_| rule())?;
        if millis == 0 || millis > 86_400_000 {
            return Err(rule());
        }
        Ok(Seconds(Duration::from_millis(millis)))
    }
}

/// As flags take it: `10`, `0.5`.
impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis.is_multiple_of(1000) {
            write!(f, "{}", millis / 1000)
        } else {
            let text = format!("{}.{:03}", millis / 1000, millis % 1000);
            f.write_str(text.trim_end_matches('0'))
        }
    }
}

/// `2 s`, `0.5 s`: a duration in messages.
pub fn human_duration(duration: Duration) -> String {
    format!("{} s", Seconds(duration))
}

/// A positive number of seconds, for TTL flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttl(Duration);

impl Ttl {
    /// Thirty days: longer would outlive any reason to cache a page.
    const MAX_SECONDS: u64 = 30 * 24 * 3600;

    pub fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for Ttl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let seconds: u64 = raw
            .trim()
            .parse()
            .map_err(|_| format!("`{raw}` is not a whole number of seconds"))?;
        if seconds == 0 || seconds > Ttl::MAX_SECONDS {
            return Err(format!(
                "must be between 1 and {} seconds (30 days)",
                Ttl::MAX_SECONDS
            ));
        }
        Ok(Ttl(Duration::from_secs(seconds)))
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs())
    }
}

/// An amount of memory: `64MiB`, `512KiB`, `1GiB`, or a number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(u64);

const UNITS: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

impl ByteSize {
    pub const DEFAULT_CACHE_SIZE: ByteSize = ByteSize(64 << 20);
    pub const DEFAULT_NEAR_CACHE_SIZE: ByteSize = ByteSize(32 << 20);

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let rule = || format!("`{raw}` must be a size from 1MiB to 64GiB, such as 64MiB or 512KiB");
        let text = raw.trim();
        let (number, unit) = UNITS
            .iter()
            .find_map(|(name, unit)| {
                let number = text.strip_suffix(name)?;
                Some((number.trim(), *unit))
            })
            .unwrap_or((text, 1));
        let bytes = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .ok_or_else(rule)?;
        if !(1 << 20..=64 << 30).contains(&bytes) {
            return Err(rule());
        }
        Ok(ByteSize(bytes))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match UNITS.iter().find(|(_, unit)| self.0.is_multiple_of(*unit)) {
            Some((name, unit)) => write!(f, "{}{name}", self.0 / unit),
            None => write!(f, "{}B", self.0),
        }
    }
}

/// A cache key prefix: printable ASCII without spaces, so keys stay greppable, and
/// without braces, which would change the hash slots of a Redis Cluster (see `keys`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyPrefix {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.is_empty()
            || raw.len() > 64
            || !raw
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
        {
            return Err(
                "must be 1 to 64 printable ASCII characters without spaces, `{` or `}`".into(),
            );
        }
        Ok(KeyPrefix(raw.to_owned()))
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
    fn a_replica_is_one_postgresql_server() {
        let replica: ReplicaUrl = "postgres://u:pw@replica:5433/db".parse().unwrap();
        assert_eq!(replica.url().target(), "replica:5433");
        assert_eq!(replica.to_string(), "postgres://u:***@replica:5433/db");
        let several = "postgres://u:pw@a,b/db".parse::<ReplicaUrl>().unwrap_err();
        assert!(several.contains("names several hosts"), "{several}");
        let file = "replica.sqlite3".parse::<ReplicaUrl>().unwrap_err();
        assert!(file.contains("must be a postgres:// URL"), "{file}");
    }

    #[test]
    fn a_database_on_this_machine_is_one_reached_by_loopback_or_socket() {
        let on_this_machine = |raw: &str| raw.parse::<DatabaseUrl>().unwrap().is_on_this_machine();
        assert!(on_this_machine("listings.sqlite3"));
        assert!(on_this_machine("postgres://u:p@127.0.0.1:5432/db"));
        assert!(on_this_machine("postgres://u:p@LocalHost/db"));
        assert!(on_this_machine("postgres://u:p@[::1]:5432/db"));
        assert!(on_this_machine(
            "postgres://u@db.example/db?hostaddr=::ffff:127.0.0.1"
        ));
        assert!(on_this_machine(
            "postgres://u@db.example/db?hostaddr=127.0.0.1"
        ));
        assert!(on_this_machine("postgres://u@localhost/db?sslmode=require"));
        assert!(on_this_machine("postgres://u@db.localhost/db"));
        assert!(on_this_machine("postgres://u@localhost./db"));
        assert!(on_this_machine("postgres://u@[::ffff:127.0.0.1]:5432/db"));
        assert!(!on_this_machine("postgres://u@[::ffff:10.0.0.5]/db"));
        assert!(!on_this_machine("postgres://u@localhost.example/db"));
        assert!(!on_this_machine("postgres://u@notlocalhost/db"));
        assert!(on_this_machine("postgres://u@%2Fvar%2Frun%2Fpostgresql/db"));
        assert!(!on_this_machine("postgres://u:p@db.example:5432/db"));
        assert!(!on_this_machine("postgres://u:p@10.0.0.5/db"));
        assert!(!on_this_machine("postgres://u@localhost,db.example/db"));
        assert!(!on_this_machine(
            "postgres://u@localhost/db?hostaddr=10.0.0.5"
        ));
    }

    #[test]
    fn hosts_and_ports_in_the_query_are_refused_by_name() {
        for (raw, key) in [
            ("postgres://u@localhost/db?host=/run/postgresql", "host"),
            (
                "postgres://u@db.example/db?sslmode=require&port=5433",
                "port",
            ),
        ] {
            let error = raw.parse::<DatabaseUrl>().unwrap_err();
            assert!(
                error.starts_with(&format!("sets `{key}` in its query")),
                "{error}"
            );
            assert!(
                error.contains("postgres://user@%2Fvar%2Frun%2Fpostgresql/"),
                "{error}"
            );
        }
        assert!(
            "postgres://u@db.example/db?hostaddr=10.0.0.5"
                .parse::<DatabaseUrl>()
                .is_ok()
        );
    }

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
        let url: DatabaseUrl = "postgres://h/db?user=a&password=b".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://h/db?user=a&password=***");
    }

    #[test]
    fn unparseable_urls_are_described_not_echoed() {
        for raw in [
            "postgres://app:rel/pw:se@db:5432/listings",
            "postgres://app:topsecret@db:notaport/listings",
            "postgresql://:topsecret@/x",
            "postgres://app:4711/topsecret@127.0.0.1:1/x",
            "postgres://app:top#secret@127.0.0.1:1/x",
            "postgres://app:top?secret@127.0.0.1:1/x",
            "postgres://app:top@secret@127.0.0.1:1/x",
        ] {
            let e = raw.parse::<DatabaseUrl>().unwrap_err();
            for part in ["rel/pw", "pw:se", "topsecret", "secret", "notaport", "4711"] {
                assert!(!e.contains(part), "{raw}: {e}");
            }
        }
        let e = "redis://:topsecret@127.0.0.1:notaport/"
            .parse::<RedisUrl>()
            .unwrap_err();
        assert!(
            !e.contains("topsecret") && e.contains("not a valid URL"),
            "{e}"
        );
        assert_eq!(
            "data/with://inside.db".parse::<DatabaseUrl>(),
            Ok(DatabaseUrl::Sqlite("data/with://inside.db".into())),
            "a path is not a scheme"
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
    fn seconds_take_up_to_three_decimals() {
        assert_eq!("10".parse(), Ok(Seconds(Duration::from_secs(10))));
        assert_eq!("0.25".parse(), Ok(Seconds(Duration::from_millis(250))));
        for bad in ["0", "0.0001", "-1", "1e3", "", "abc", "86401", "1.", ".5"] {
            assert!(bad.parse::<Seconds>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(
            "64MiB".parse::<ByteSize>().map(ByteSize::bytes),
            Ok(64 << 20)
        );
        assert_eq!("1GiB".parse::<ByteSize>().map(ByteSize::bytes), Ok(1 << 30));
        assert_eq!(
            "2048 KiB".parse::<ByteSize>().map(ByteSize::bytes),
            Ok(2 << 20)
        );
        assert_eq!(ByteSize::DEFAULT_CACHE_SIZE.to_string(), "64MiB");
        for bad in ["", "64MB", "-1MiB", "1KiB", "100GiB", "x"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ttl_must_be_positive_seconds() {
        assert_eq!("900".parse::<Ttl>(), Ok(Ttl(Duration::from_secs(900))));
        assert!("0".parse::<Ttl>().is_err());
        assert!("abc".parse::<Ttl>().is_err());
    }
}
