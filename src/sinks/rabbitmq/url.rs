//! `--rabbitmq-url`: `amqp://user:pass@host:5672/vhost` or `amqps://…`, with
//! TLS set by RabbitMQ's own URI query parameters (`cacertfile`, `certfile`,
//! `keyfile`, `verify`, `server_name_indication`), and the password
//! optionally from `--rabbitmq-password-file`.
//!
//! Guarantees: the password never reaches `Display` or `Debug` (shown as
//! `***`); an unknown or malformed parameter is refused with its name; the
//! password file is read again for every new connection, so a rotated
//! secret is picked up.

use std::fmt;
use std::path::{Path, PathBuf};

use lapin::uri::{AMQPScheme, AMQPUri};

use crate::error::{Error, Result};

/// Query parameters the AMQP client itself understands.
const CLIENT_PARAMETERS: [&str; 5] = [
    "frame_max",
    "channel_max",
    "heartbeat",
    "connection_timeout",
    "auth_mechanism",
];

/// How the server's certificate is checked (`verify=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Against `cacertfile` (or the system's trust store), host name too.
    Peer,
    /// Not at all: encryption without authentication.
    None,
}

/// TLS settings from the URL's query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cacertfile: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub verify: Verify,
    pub server_name_indication: Option<String>,
}

/// A parsed `--rabbitmq-url`.
#[derive(Clone, PartialEq, Eq)]
pub struct RabbitUrl {
    uri: AMQPUri,
    /// `Some` for `amqps://`.
    pub tls: Option<Tls>,
    password_file: Option<PathBuf>,
}

impl RabbitUrl {
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
        let amqps = match url.scheme() {
            "amqp" => false,
            "amqps" => true,
            other => return Err(format!("scheme {other}: is not amqp:// or amqps://")),
        };
        let (tls, client) = parameters(&url)?;
        let mut base = url.clone();
        base.set_query(None);
        let mut with_client = base.to_string();
        if !client.is_empty() {
            with_client = format!("{with_client}?{}", client.join("&"));
        }
        let mut uri: AMQPUri = with_client.parse()?;
        // The client takes only domain names as the host; keep an address too.
        if let Some(host) = url.host_str() {
            uri.authority.host = host.trim_matches(['[', ']']).to_owned();
        }
        uri.scheme = if amqps {
            AMQPScheme::AMQPS
        } else {
            AMQPScheme::AMQP
        };
        Ok(RabbitUrl {
            uri,
            tls: amqps.then_some(tls),
            password_file: None,
        })
    }

    /// Take the password from `path` (read at each connection) when the URL
    /// has none.
    pub fn with_password_file(mut self, path: Option<&Path>) -> Result<Self> {
        if let Some(path) = path {
            if !self.uri.authority.userinfo.password.is_empty()
                && self.uri.authority.userinfo.password
                    != AMQPUri::default().authority.userinfo.password
            {
                return Err(Error::InvalidConfig(
                    "--rabbitmq-password-file: the URL has a password already; drop one of them"
                        .into(),
                ));
            }
            self.password_file = Some(path.to_owned());
        }
        Ok(self)
    }

    /// The URI to connect with, the password read now.
    pub fn connect_uri(&self) -> Result<AMQPUri> {
        let mut uri = self.uri.clone();
        if let Some(path) = &self.password_file {
            let password = std::fs::read_to_string(path).map_err(|e| {
                Error::InvalidConfig(format!(
                    "--rabbitmq-password-file {}: cannot read it ({e})",
                    path.display()
                ))
            })?;
            uri.authority.userinfo.password = password.trim_end_matches(['\n', '\r']).to_owned();
        }
        Ok(uri)
    }

    pub fn host(&self) -> &str {
        &self.uri.authority.host
    }

    pub fn vhost(&self) -> &str {
        &self.uri.vhost
    }

    pub fn user(&self) -> &str {
        &self.uri.authority.userinfo.username
    }
}

/// The TLS settings in `url`'s query, and the parameters the AMQP client
/// itself takes (as `key=value`).
fn parameters(url: &url::Url) -> std::result::Result<(Tls, Vec<String>), String> {
    let mut tls = Tls {
        cacertfile: None,
        certfile: None,
        keyfile: None,
        verify: Verify::Peer,
        server_name_indication: None,
    };
    let mut client = Vec::new();
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "cacertfile" => tls.cacertfile = Some(PathBuf::from(value.as_ref())),
            "certfile" => tls.certfile = Some(PathBuf::from(value.as_ref())),
            "keyfile" => tls.keyfile = Some(PathBuf::from(value.as_ref())),
            "verify" => {
                tls.verify = match value.as_ref() {
                    "verify_peer" => Verify::Peer,
                    "verify_none" => Verify::None,
                    other => {
                        return Err(format!(
                            "verify={other}: use verify_peer or verify_none"
                        ))
                    }
                }
            }
            "server_name_indication" => {
                tls.server_name_indication = Some(value.into_owned())
            }
            known if CLIENT_PARAMETERS.contains(&known) => {
                client.push(format!("{key}={value}"))
            }
            unknown => {
                return Err(format!(
                    "unknown query parameter {unknown}; known are cacertfile, certfile, keyfile, verify, server_name_indication, {}",
                    CLIENT_PARAMETERS.join(", ")
                ))
            }
        }
    }
    if tls.certfile.is_some() != tls.keyfile.is_some() {
        return Err("certfile and keyfile go together (a client certificate and its key)".into());
    }
    Ok((tls, client))
}

/// The URL without its password.
impl fmt::Display for RabbitUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = &self.uri;
        let vhost = url::form_urlencoded::byte_serialize(uri.vhost.as_bytes()).collect::<String>();
        write!(
            f,
            "{}://{}:***@{}:{}/{}",
            uri.scheme,
            uri.authority.userinfo.username,
            uri.authority.host,
            uri.authority.port,
            vhost
        )
    }
}

impl fmt::Debug for RabbitUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl std::str::FromStr for RabbitUrl {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        RabbitUrl::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_keeps_its_address_host_and_vhost_and_hides_its_password() {
        let url = RabbitUrl::parse("amqp://relay:s3cret@127.0.0.1:5673/outbox").unwrap();
        assert_eq!(url.host(), "127.0.0.1");
        assert_eq!(url.vhost(), "outbox");
        assert_eq!(url.to_string(), "amqp://relay:***@127.0.0.1:5673/outbox");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(
            url.connect_uri().unwrap().authority.userinfo.password,
            "s3cret"
        );
        assert!(url.tls.is_none());
    }

    #[test]
    fn amqps_takes_rabbitmqs_tls_parameters() {
        let url = RabbitUrl::parse(
            "amqps://relay@mq.internal:5671/%2f?cacertfile=/etc/ca.pem&verify=verify_peer&server_name_indication=mq.example.com&heartbeat=10",
        )
        .unwrap();
        let tls = url.tls.clone().unwrap();
        assert_eq!(tls.cacertfile.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(tls.verify, Verify::Peer);
        assert_eq!(
            tls.server_name_indication.as_deref(),
            Some("mq.example.com")
        );
        assert_eq!(url.vhost(), "/");
        assert_eq!(url.connect_uri().unwrap().query.heartbeat, Some(10));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("http://h/", "scheme http"),
            ("amqps://h/?verify=maybe", "verify=maybe"),
            ("amqps://h/?cacert=/x", "unknown query parameter cacert"),
            ("amqps://h/?certfile=/c", "certfile and keyfile go together"),
        ] {
            let error = RabbitUrl::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
