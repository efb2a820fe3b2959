//! `--nats-url`: one or more servers, comma-separated, each
//! `nats://[user:pass@]host:4222` or `tls://…`.
//!
//! Guarantees: the password never reaches `Display` or `Debug` (shown as
//! `***`); every server is checked (scheme, host); user and password may be
//! given on any one of the URLs and apply to all; `tls://` on any server
//! makes TLS required on every connection.

use std::fmt;

/// A parsed `--nats-url`.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsUrl {
    /// `scheme://host:port` of each server, without credentials.
    servers: Vec<String>,
    user: Option<String>,
    password: Option<String>,
    tls: bool,
}

impl NatsUrl {
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut parsed = NatsUrl {
            servers: Vec::new(),
            user: None,
            password: None,
            tls: false,
        };
        for server in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            parsed.add(server)?;
        }
        if parsed.servers.is_empty() {
            return Err("no server: give nats://host:4222".to_owned());
        }
        Ok(parsed)
    }

    fn add(&mut self, text: &str) -> std::result::Result<(), String> {
        // The text as typed may hold a password: it is shown redacted.
        let url = url::Url::parse(text).map_err(|e| {
            let shown = crate::config::redact_password(text);
            format!("{shown:?} is not a URL ({e})")
        })?;
        match url.scheme() {
            "nats" => {}
            "tls" => self.tls = true,
            other => return Err(format!("scheme {other}: is not nats:// or tls://")),
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{}: no host", redact(&url)))?;
        if !url.username().is_empty() {
            self.user = Some(decode(url.username()));
            self.password = url.password().map(decode);
        }
        let port = url.port().unwrap_or(4222);
        self.servers
            .push(format!("{}://{host}:{port}", url.scheme()));
        Ok(())
    }

    /// The servers, `scheme://host:port`, without credentials.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    pub fn user_and_password(&self) -> Option<(&str, &str)> {
        let user = self.user.as_deref()?;
        Some((user, self.password.as_deref().unwrap_or_default()))
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn tls(&self) -> bool {
        self.tls
    }
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn redact(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

impl std::str::FromStr for NatsUrl {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        NatsUrl::parse(text)
    }
}

impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = match (&self.user, &self.password) {
            (Some(user), Some(_)) => format!("{user}:***@"),
            (Some(user), None) => format!("{user}@"),
            _ => String::new(),
        };
        let shown: Vec<String> = self
            .servers
            .iter()
            .map(|server| server.replacen("://", &format!("://{user}"), 1))
            .collect();
        f.write_str(&shown.join(","))
    }
}

impl fmt::Debug for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_servers_share_one_user_and_the_password_is_never_shown() {
        let url = NatsUrl::parse("nats://relay:s%40cret@a:4222, nats://b").unwrap();
        assert_eq!(url.servers(), ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(url.user_and_password(), Some(("relay", "s@cret")));
        assert_eq!(
            url.to_string(),
            "nats://relay:***@a:4222,nats://relay:***@b:4222"
        );
        assert!(!format!("{url:?}").contains("cret"));
        assert!(!url.tls());
    }

    #[test]
    fn tls_on_any_server_is_required_on_all() {
        let url = NatsUrl::parse("tls://a:4443,nats://b:4222").unwrap();
        assert!(url.tls());
        assert_eq!(url.user_and_password(), None);
    }

    #[test]
    fn mistakes_are_named() {
        assert!(NatsUrl::parse("http://a").unwrap_err().contains("nats://"));
        assert!(NatsUrl::parse(" , ").unwrap_err().contains("no server"));
        let error = NatsUrl::parse("nats://u:pw@").unwrap_err();
        assert!(!error.contains("pw"), "{error}");
    }
}
