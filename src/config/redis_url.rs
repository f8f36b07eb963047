//! `REDIS_URL`: which Redis deployment the cache uses, from the scheme.
//!
//! - `redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS) or `unix://path`:
//!   one server, read by the redis crate's own parser;
//! - `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/service[/db]`
//!   (`rediss+sentinel://` for TLS): the master of `service`, found through the
//!   sentinels (port 26379 by default). The password is the master's; sentinels that
//!   ask for one of their own get it from `?sentinel_password=`;
//! - `redis+cluster://[[user]:password@]host[:port][,host[:port]…]`
//!   (`rediss+cluster://` for TLS): a Redis Cluster, from any of its nodes.

use std::fmt;
use std::str::FromStr;

use percent_encoding::percent_decode_str;

use super::SecretUrl;

const SINGLE_FORM: &str = "redis://[:password@]host[:port][/db]";
const SENTINEL_FORM: &str = "redis+sentinel://[:password@]host:port[,host:port…]/service_name[/db]";
const CLUSTER_FORM: &str = "redis+cluster://[:password@]host:port[,host:port…]";
const SCHEMES: &str = "redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://";
const MAX_NODES: usize = 64;

/// A Redis URL, shown without its passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    url: SecretUrl,
    deployment: RedisDeployment,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisDeployment {
    /// One server: [`RedisUrl::expose`] is a URL the redis crate opens; `tls` for
    /// `rediss://`.
    Single { tls: bool },
    Sentinel {
        sentinels: Vec<RedisNode>,
        service: String,
        db: i64,
        credentials: Credentials,
        sentinel_password: Option<String>,
        tls: bool,
    },
    Cluster {
        nodes: Vec<RedisNode>,
        credentials: Credentials,
        tls: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisNode {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for RedisNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// User name and password of the data nodes. `Debug` hides the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = self.password.as_ref().map(|_| "***");
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &password)
            .finish()
    }
}

impl FromStr for RedisUrl {
    type Err = String;

    /// Errors describe the URL and never echo it: it may hold a password.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let raw = raw.trim();
        let scheme = raw
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "redis" | "rediss" => single(raw, scheme == "rediss"),
            "unix" => {
                let rest = raw.split_once("://").map_or("", |(_, rest)| rest);
                // The query may carry `pass=`: shown without it.
                let path = rest.split(['?', '#']).next().unwrap_or_default();
                check_with_redis_crate(raw, "unix:///path/to/redis.sock")?;
                Ok(RedisUrl {
                    url: SecretUrl {
                        raw: raw.to_owned(),
                        shown: format!("unix://{path}"),
                        target: path.to_owned(),
                    },
                    deployment: RedisDeployment::Single { tls: false },
                })
            }
            "redis+sentinel" | "rediss+sentinel" => sentinel(raw, scheme == "rediss+sentinel"),
            "redis+cluster" | "rediss+cluster" => cluster(raw, scheme == "rediss+cluster"),
            _ => Err(format!(
                "must start with {SCHEMES} (omit it to use the in-process cache); expected {SINGLE_FORM}"
            )),
        }
    }
}

fn single(raw: &str, tls: bool) -> Result<RedisUrl, String> {
    if raw.contains('#') {
        // The redis crate reads `#insecure` as "skip certificate checks".
        return Err(format!(
            "has a `#`; expected {SINGLE_FORM}, with `#` in the password percent-encoded as %23 (certificate checks cannot be turned off)"
        ));
    }
    let url = SecretUrl::parse(raw, SINGLE_FORM)?;
    check_with_redis_crate(raw, SINGLE_FORM)?;
    Ok(RedisUrl {
        url,
        deployment: RedisDeployment::Single { tls },
    })
}

fn check_with_redis_crate(raw: &str, form: &str) -> Result<(), String> {
    redis::Client::open(raw)
        .map(drop)
        .map_err(|_| format!("is not a valid Redis URL; expected {form}"))
}

fn sentinel(raw: &str, tls: bool) -> Result<RedisUrl, String> {
    let parts = MultiHost::parse(raw, 26379, SENTINEL_FORM)?;
    let mut segments = parts.path.split('/').filter(|s| !s.is_empty());
    let service = segments.next().ok_or_else(|| {
        format!("needs the service name the sentinels monitor; expected {SENTINEL_FORM}")
    })?;
    let service = decode(service, "the service name", SENTINEL_FORM)?;
    let db = match segments.next() {
        None => 0,
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|db| (0..=15_999).contains(db))
            .ok_or_else(|| {
                format!(
                    "has a database number that is not a number from 0; expected {SENTINEL_FORM}"
                )
            })?,
    };
    if segments.next().is_some() {
        return Err(format!(
            "has more path than /service_name/db; expected {SENTINEL_FORM}"
        ));
    }
    let mut sentinel_password = None;
    for (key, value) in &parts.query {
        match key.as_str() {
            "sentinel_password" => sentinel_password = Some(value.clone()),
            _ => {
                // Not quoted: a `&` in an unencoded password would start a "parameter".
                return Err(
                    "has a parameter other than `sentinel_password`, the only one understood (percent-encode `&` and `=` in passwords)".to_owned(),
                );
            }
        }
    }
    Ok(RedisUrl {
        url: parts.secret_url(raw),
        deployment: RedisDeployment::Sentinel {
            sentinels: parts.nodes,
            service,
            db,
            credentials: parts.credentials,
            sentinel_password,
            tls,
        },
    })
}

fn cluster(raw: &str, tls: bool) -> Result<RedisUrl, String> {
    let parts = MultiHost::parse(raw, 6379, CLUSTER_FORM)?;
    if !parts.path.trim_matches('/').is_empty() {
        return Err(format!(
            "has a path, but a Redis Cluster has only database 0; expected {CLUSTER_FORM}"
        ));
    }
    if !parts.query.is_empty() {
        return Err("has parameters, but a cluster URL takes none".to_owned());
    }
    Ok(RedisUrl {
        url: parts.secret_url(raw),
        deployment: RedisDeployment::Cluster {
            nodes: parts.nodes,
            credentials: parts.credentials,
            tls,
        },
    })
}

/// `scheme://[user[:password]@]host[:port][,host[:port]…][/path][?query]`, which the
/// `url` crate cannot read (one authority holds several hosts).
struct MultiHost {
    scheme: String,
    credentials: Credentials,
    nodes: Vec<RedisNode>,
    path: String,
    query: Vec<(String, String)>,
}

impl MultiHost {
    fn parse(raw: &str, default_port: u16, form: &str) -> Result<MultiHost, String> {
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| format!("expected {form}"))?;
        if rest.contains('#') {
            return Err(format!(
                "has a `#`; expected {form}, with `#` in the password percent-encoded as %23"
            ));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => Credentials::default(),
            Some(userinfo) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                Credentials {
                    username: Some(decode(user, "the user name", form)?).filter(|u| !u.is_empty()),
                    password: password
                        .map(|p| decode(p, "the password", form))
                        .transpose()?
                        .filter(|p| !p.is_empty()),
                }
            }
        };
        let nodes = hosts
            .split(',')
            .map(|node| parse_node(node, default_port, form))
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.len() > MAX_NODES {
            return Err(format!("names more than {MAX_NODES} hosts"));
        }
        let query = match query {
            None => Vec::new(),
            Some(query) => form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        };
        Ok(MultiHost {
            scheme: scheme.to_ascii_lowercase(),
            credentials,
            nodes,
            path: path.to_owned(),
            query,
        })
    }

    fn secret_url(&self, raw: &str) -> SecretUrl {
        let user = match (&self.credentials.username, &self.credentials.password) {
            (None, None) => String::new(),
            (user, password) => format!(
                "{}{}@",
                user.as_deref().map(printable).unwrap_or_default(),
                if password.is_some() { ":***" } else { "" }
            ),
        };
        let target = self
            .nodes
            .iter()
            .map(RedisNode::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let query = if self.query.is_empty() {
            String::new()
        } else {
            let shown = self.query.iter().map(|(key, _)| (key.as_str(), "***"));
            format!(
                "?{}",
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(shown)
                    .finish()
            )
        };
        SecretUrl {
            raw: raw.to_owned(),
            shown: format!(
                "{}://{user}{target}{}{query}",
                self.scheme,
                printable(&self.path)
            ),
            target,
        }
    }
}

fn parse_node(node: &str, default_port: u16, form: &str) -> Result<RedisNode, String> {
    let (host, port, allowed): (&str, Option<&str>, &[u8]) =
        if let Some(v6) = node.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("has an IPv6 host without its `]`; expected {form}"))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| {
                    format!(
                        "has something other than `:port` after an IPv6 host's `]`; expected {form}"
                    )
                })?),
            };
            (host, port, b":.")
        } else {
            match node.split_once(':') {
                Some((host, port)) => (host, Some(port), b"-._"),
                None => (node, None, b"-._"),
            }
        };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || allowed.contains(&b));
    if !valid_host {
        return Err(format!(
            "needs a host name or address before each `,` (letters, digits, `-`, `.`; an IPv6 address in brackets); expected {form}"
        ));
    }
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| {
                format!("has a port that is not a number from 1 to 65535; expected {form}")
            })?,
    };
    Ok(RedisNode {
        host: host.to_owned(),
        port,
    })
}

fn decode(raw: &str, what: &str, form: &str) -> Result<String, String> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("has {what} that is not UTF-8 once percent-decoded; expected {form}"))
}

/// A part of the URL that may be quoted in an error or shown: at most 40 printable
/// characters (user names and parameter names, never passwords).
fn printable(raw: &str) -> String {
    raw.chars().filter(|c| !c.is_control()).take(40).collect()
}

impl RedisUrl {
    /// The URL with its password, for connecting; never for output.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }

    /// The host(s) and port(s), for messages.
    pub fn target(&self) -> &str {
        self.url.target()
    }

    pub fn deployment(&self) -> &RedisDeployment {
        &self.deployment
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.url.fmt(f)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: u16) -> RedisNode {
        RedisNode {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn sentinel_urls_name_sentinels_service_and_db() {
        let url: RedisUrl =
            "redis+sentinel://:s3cret@10.0.0.1:26379,sentinel-b,[::1]:26380/mymaster/2"
                .parse()
                .unwrap();
        assert_eq!(
            url.deployment(),
            &RedisDeployment::Sentinel {
                sentinels: vec![
                    node("10.0.0.1", 26379),
                    node("sentinel-b", 26379),
                    node("::1", 26380)
                ],
                service: "mymaster".into(),
                db: 2,
                credentials: Credentials {
                    username: None,
                    password: Some("s3cret".into())
                },
                sentinel_password: None,
                tls: false,
            }
        );
        assert_eq!(
            url.to_string(),
            "redis+sentinel://:***@10.0.0.1:26379,sentinel-b:26379,[::1]:26380/mymaster/2"
        );
        let with_own = "rediss+sentinel://h:1/m?sentinel_password=topsecret"
            .parse::<RedisUrl>()
            .unwrap();
        assert!(!with_own.to_string().contains("topsecret"));
        assert!(matches!(
            with_own.deployment(),
            RedisDeployment::Sentinel { tls: true, sentinel_password: Some(p), .. } if p == "topsecret"
        ));
    }

    #[test]
    fn cluster_urls_name_their_seed_nodes() {
        let url: RedisUrl = "redis+cluster://app:p%40ss@a:7000,b:7001".parse().unwrap();
        assert_eq!(
            url.deployment(),
            &RedisDeployment::Cluster {
                nodes: vec![node("a", 7000), node("b", 7001)],
                credentials: Credentials {
                    username: Some("app".into()),
                    password: Some("p@ss".into())
                },
                tls: false,
            }
        );
        assert_eq!(url.to_string(), "redis+cluster://app:***@a:7000,b:7001");
        assert_eq!(url.target(), "a:7000,b:7001");
    }

    #[test]
    fn malformed_multi_host_urls_are_described_not_echoed() {
        for (raw, expected) in [
            ("redis+sentinel://:topsecret@h:1", "service name"),
            ("redis+sentinel://:topsecret@h:99999/m", "port"),
            ("redis+sentinel://:topsecret@h:1,/m", "host"),
            ("redis+sentinel://:topsecret@h:1/m/x", "database number"),
            ("redis+sentinel://:topsecret@h:1/m/1/2", "more path"),
            (
                "redis+sentinel://:topsecret@h:1/m?db=2",
                "other than `sentinel_password`",
            ),
            (
                "redis+sentinel://:top@h:1/m?sentinel_password=ab&secret",
                "other than",
            ),
            ("redis+sentinel://:topsecret@[::1]junk/m", "after an IPv6"),
            ("redis+sentinel://:topsecret@fe80::1/m", "port"),
            ("rediss://:topsecret@h:1/#insecure", "cannot be turned off"),
            ("redis+cluster://:topsecret@h:1/3", "only database 0"),
            ("redis+cluster://:top#secret@h:1", "%23"),
            ("redis+cluster://:topsecret@h o:1", "host"),
            ("memcached://:topsecret@h:1", "must start with"),
        ] {
            let e = raw.parse::<RedisUrl>().unwrap_err();
            assert!(e.contains(expected), "{raw}: {e}");
            assert!(
                !e.contains("topsecret") && !e.contains("secret@"),
                "{raw}: {e}"
            );
        }
    }

    #[test]
    fn single_server_urls_keep_working() {
        let url: RedisUrl = "rediss://:hunter2@cache:6380/1".parse().unwrap();
        assert_eq!(url.deployment(), &RedisDeployment::Single { tls: true });
        assert_eq!(url.to_string(), "rediss://:***@cache:6380/1");
        let plain: RedisUrl = "redis://cache:6379/0".parse().unwrap();
        assert_eq!(plain.deployment(), &RedisDeployment::Single { tls: false });
        assert_eq!(url.target(), "cache:6380");
        let socket: RedisUrl = "unix:///run/redis.sock?db=1&pass=hunter2".parse().unwrap();
        assert_eq!(socket.to_string(), "unix:///run/redis.sock");
    }
}
