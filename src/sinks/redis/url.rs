//! `--redis-url`: `redis://[user:pass@]host:6379/0` or `rediss://…` (TLS),
//! with the password optionally from `--redis-password-file` and TLS files
//! from `--redis-ca`, `--redis-client-cert` and `--redis-client-key`.
//!
//! Guarantees: the password never reaches `Display` or `Debug` (shown as
//! `***`); the password file is read again for every new connection, so a
//! rotated secret is picked up; TLS files are read when the sink opens, and
//! one that cannot be read is refused with its flag's name.

use std::fmt;
use std::path::{Path, PathBuf};

use redis::{ConnectionInfo, IntoConnectionInfo};

use crate::error::{Error, Result};

/// A parsed `--redis-url`, its password kept apart.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// The URL without its password.
    url: url::Url,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

/// TLS files for `rediss://`, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl RedisUrl {
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(format!(
                "scheme {}: is not redis:// or rediss://",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("no host: give redis://host:6379/0".to_owned());
        }
        let db = url.path().trim_start_matches('/');
        if !db.is_empty() && db.parse::<u32>().is_err() {
            return Err(format!(
                "database {db:?}: the path is a database number, such as /0"
            ));
        }
        let password = url.password().map(percent_decode).filter(|p| !p.is_empty());
        let _ = url.set_password(None);
        Ok(RedisUrl {
            url,
            password,
            password_file: None,
        })
    }

    /// Take the password from `path` (read at each connection) when the URL
    /// has none.
    pub fn with_password_file(mut self, path: Option<&Path>) -> Result<Self> {
        if let Some(path) = path {
            if self.password.is_some() {
                return Err(Error::InvalidConfig(
                    "--redis-password-file: the URL has a password already; drop one of them"
                        .into(),
                ));
            }
            self.password_file = Some(path.to_owned());
        }
        Ok(self)
    }

    pub fn tls(&self) -> bool {
        self.url.scheme() == "rediss"
    }

    /// The ACL user, or `default` when the URL names none.
    pub fn user(&self) -> &str {
        match self.url.username() {
            "" => "default",
            user => user,
        }
    }

    /// What to connect with, the password read now.
    pub fn connection_info(&self) -> Result<ConnectionInfo> {
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| Error::InvalidConfig(format!("--redis-url {self}: {e}")))?;
        let password = match &self.password_file {
            Some(path) => Some(read_password(path)?),
            None => self.password.clone(),
        };
        let settings = info.redis_settings().clone();
        Ok(match password {
            Some(password) => info.set_redis_settings(settings.set_password(password)),
            None => info,
        })
    }
}

fn read_password(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::InvalidConfig(format!(
            "--redis-password-file {}: cannot read it ({e})",
            path.display()
        ))
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

impl std::str::FromStr for RedisUrl {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        RedisUrl::parse(text)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        if self.password.is_some() {
            let _ = shown.set_password(Some("***"));
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

impl RedisTls {
    /// The certificates to connect with, read now.
    pub fn certificates(&self) -> Result<redis::TlsCertificates> {
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).map_err(|e| {
                Error::InvalidConfig(format!("--{flag} {}: cannot read it ({e})", path.display()))
            })
        };
        let client_tls = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read("redis-client-cert", cert)?,
                client_key: read("redis-client-key", key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(Error::InvalidConfig(
                    "--redis-client-cert and --redis-client-key go together: give both".into(),
                ))
            }
        };
        let root_cert = match &self.ca {
            Some(ca) => Some(read("redis-ca", ca)?),
            None => None,
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }

    pub fn is_empty(&self) -> bool {
        self == &RedisTls::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let url = RedisUrl::parse("redis://relay:s%40cret@localhost:6380/2").unwrap();
        assert_eq!(url.to_string(), "redis://relay:***@localhost:6380/2");
        assert_eq!(
            format!("{url:?}"),
            "RedisUrl(redis://relay:***@localhost:6380/2)"
        );
        assert_eq!(url.user(), "relay");
        let info = url.connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some("s@cret"));
        assert_eq!(info.redis_settings().username(), Some("relay"));
        assert_eq!(info.redis_settings().db(), 2);
    }

    #[test]
    fn a_password_alone_authenticates_the_default_user() {
        let url = RedisUrl::parse("rediss://:pw@cache.internal").unwrap();
        assert!(url.tls());
        assert_eq!(url.user(), "default");
        assert_eq!(url.to_string(), "rediss://:***@cache.internal");
    }

    #[test]
    fn mistakes_are_named() {
        assert!(RedisUrl::parse("http://x")
            .unwrap_err()
            .contains("redis://"));
        assert!(RedisUrl::parse("redis://h/cache")
            .unwrap_err()
            .contains("database number"));
        let with_password = RedisUrl::parse("redis://:pw@h").unwrap();
        let both = with_password.with_password_file(Some(Path::new("/p")));
        assert!(both.unwrap_err().to_string().contains("drop one"));
    }

    #[test]
    fn the_password_file_is_read_at_each_connection() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "first\n").unwrap();
        let url = RedisUrl::parse("redis://relay@h")
            .unwrap()
            .with_password_file(Some(&file))
            .unwrap();
        let password = |url: &RedisUrl| {
            let info = url.connection_info().unwrap();
            info.redis_settings().password().map(str::to_owned)
        };
        assert_eq!(password(&url).as_deref(), Some("first"));
        std::fs::write(&file, "second").unwrap();
        assert_eq!(password(&url).as_deref(), Some("second"));
        assert!(!url.to_string().contains("second"));
    }
}
