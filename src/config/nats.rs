//! The NATS sink's settings: the `--nats-*` flags and the config file's
//! `[nats]` section, a flag winning over the file.
//!
//! Guarantees: `--sink nats` without a URL is refused with the flag to
//! give; a password is never shown (the URL redacts it).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::sinks::nats::{NatsSettings, NatsUrl};

#[derive(Debug, Clone, Default, Args)]
pub struct NatsArgs {
    /// NATS: nats://[user:pass@]host:4222, or tls://… for TLS; several servers comma-separated.
    /// Required with --sink nats (or `url` in the config file's [nats]).
    #[arg(
        long = "nats-url",
        id = "nats-url",
        env = "OUTBOX_NATS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub url: Option<NatsUrl>,

    /// A credentials file (JWT and NKey seed, as `nsc` writes it).
    #[arg(
        long = "nats-creds",
        id = "nats-creds",
        env = "OUTBOX_NATS_CREDS",
        value_name = "FILE"
    )]
    pub creds: Option<PathBuf>,

    /// File holding a token to log in with; read again for every new connection.
    #[arg(
        long = "nats-token-file",
        id = "nats-token-file",
        env = "OUTBOX_NATS_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub token_file: Option<PathBuf>,

    /// CA certificate (PEM) that signs the servers' certificates; makes TLS required.
    /// [default: the system's]
    #[arg(
        long = "nats-ca",
        id = "nats-ca",
        env = "OUTBOX_NATS_CA",
        value_name = "FILE"
    )]
    pub ca: Option<PathBuf>,

    /// Client certificate (PEM), for servers that verify clients.
    #[arg(
        long = "nats-client-cert",
        id = "nats-client-cert",
        env = "OUTBOX_NATS_CLIENT_CERT",
        value_name = "FILE"
    )]
    pub client_cert: Option<PathBuf>,

    /// The client certificate's key (PEM).
    #[arg(
        long = "nats-client-key",
        id = "nats-client-key",
        env = "OUTBOX_NATS_CLIENT_KEY",
        value_name = "FILE"
    )]
    pub client_key: Option<PathBuf>,
}

/// The config file's `[nats]`: the flags' names without `--nats-`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSection {
    pub url: Option<String>,
    pub creds: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl NatsArgs {
    /// The settings, each from its flag, else from the file's section;
    /// `longest_retry` is how long a row may take between two sends.
    pub fn settings(
        &self,
        section: Option<&NatsSection>,
        longest_retry: Duration,
    ) -> Result<NatsSettings> {
        let section = section.cloned().unwrap_or_default();
        let file_url =
            match &section.url {
                Some(url) => Some(NatsUrl::parse(url).map_err(|e| {
                    Error::InvalidConfig(format!("the config file's [nats] url: {e}"))
                })?),
                None => None,
            };
        let url = self.url.clone().or(file_url).ok_or_else(|| {
            Error::InvalidConfig(
                "--sink nats needs --nats-url (OUTBOX_NATS_URL) or url in the config file's [nats], e.g. nats://localhost:4222".to_owned(),
            )
        })?;
        Ok(NatsSettings {
            url,
            creds: self.creds.clone().or(section.creds),
            token_file: self.token_file.clone().or(section.token_file),
            ca: self.ca.clone().or(section.ca),
            client_cert: self.client_cert.clone().or(section.client_cert),
            client_key: self.client_key.clone().or(section.client_key),
            longest_retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_wins_over_the_file() {
        let args = NatsArgs {
            url: Some(NatsUrl::parse("nats://flag:4222").unwrap()),
            ..NatsArgs::default()
        };
        let section = NatsSection {
            url: Some("nats://file:4222".into()),
            token_file: Some("/t".into()),
            ..NatsSection::default()
        };
        let settings = args
            .settings(Some(&section), Duration::from_secs(90))
            .unwrap();
        assert_eq!(settings.url.servers(), ["nats://flag:4222"]);
        assert_eq!(
            settings.token_file.as_deref(),
            Some(std::path::Path::new("/t"))
        );
        assert_eq!(settings.longest_retry, Duration::from_secs(90));
    }

    #[test]
    fn no_url_names_the_flag() {
        let error = NatsArgs::default()
            .settings(None, Duration::ZERO)
            .unwrap_err();
        assert!(error.to_string().contains("--nats-url"), "{error}");
    }
}
