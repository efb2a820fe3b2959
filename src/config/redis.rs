//! The Redis sink's settings: the `--redis-*` flags and the config file's
//! `[redis]` section, a flag winning over the file.
//!
//! Guarantees: `--sink redis` without a URL is refused with the flag to
//! give; a password is never shown (the URL redacts it).

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::sinks::redis::{RedisMode, RedisSettings, RedisTls, RedisUrl};

/// The dedup window when none is given: a day.
pub const DEFAULT_DEDUP_SECS: u64 = 86_400;

#[derive(Debug, Clone, Default, Args)]
pub struct RedisArgs {
    /// Redis: redis://[user:pass@]host:6379/0, or rediss://… for TLS. Required with --sink
    /// redis (or `url` in the config file's [redis]).
    #[arg(
        long = "redis-url",
        id = "redis-url",
        env = "OUTBOX_REDIS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub url: Option<RedisUrl>,

    /// File holding the Redis password, when the URL has none; read again for every new
    /// connection.
    #[arg(
        long = "redis-password-file",
        id = "redis-password-file",
        env = "OUTBOX_REDIS_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,

    /// `stream`: XADD to the stream the row's topic names; `list`: LPUSH a JSON envelope to
    /// the list it names, for BRPOP consumers. [default: stream]
    #[arg(
        long = "redis-mode",
        id = "redis-mode",
        env = "OUTBOX_REDIS_MODE",
        value_enum
    )]
    pub mode: Option<RedisMode>,

    /// Trim each stream to about N entries (XADD MAXLEN ~ N). [default: no trim]
    #[arg(
        long = "redis-maxlen",
        id = "redis-maxlen",
        env = "OUTBOX_REDIS_MAXLEN",
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub maxlen: Option<u64>,

    /// How long an added event is remembered, so that the same row sent again (after a crash
    /// or a lost reply) is not added twice; 0 turns dedup off. [default: 86400]
    #[arg(
        long = "redis-dedup-secs",
        id = "redis-dedup-secs",
        env = "OUTBOX_REDIS_DEDUP_SECS",
        value_name = "SECS"
    )]
    pub dedup_secs: Option<u64>,

    /// Count a row published only once N replicas have it (WAIT N). [default: 0]
    #[arg(
        long = "redis-wait-replicas",
        id = "redis-wait-replicas",
        env = "OUTBOX_REDIS_WAIT_REPLICAS",
        value_name = "N"
    )]
    pub wait_replicas: Option<u32>,

    /// CA certificate (PEM) that signs the server's, for rediss://. [default: the system's]
    #[arg(
        long = "redis-ca",
        id = "redis-ca",
        env = "OUTBOX_REDIS_CA",
        value_name = "FILE"
    )]
    pub ca: Option<PathBuf>,

    /// Client certificate (PEM), for servers that require one (tls-auth-clients).
    #[arg(
        long = "redis-client-cert",
        id = "redis-client-cert",
        env = "OUTBOX_REDIS_CLIENT_CERT",
        value_name = "FILE"
    )]
    pub client_cert: Option<PathBuf>,

    /// The client certificate's key (PEM).
    #[arg(
        long = "redis-client-key",
        id = "redis-client-key",
        env = "OUTBOX_REDIS_CLIENT_KEY",
        value_name = "FILE"
    )]
    pub client_key: Option<PathBuf>,
}

/// The config file's `[redis]`: the flags' names without `--redis-`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
    pub mode: Option<RedisMode>,
    pub maxlen: Option<u64>,
    pub dedup_secs: Option<u64>,
    pub wait_replicas: Option<u32>,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl RedisArgs {
    /// The settings, each from its flag, else from the file's section.
    pub fn settings(&self, section: Option<&RedisSection>) -> Result<RedisSettings> {
        let section = section.cloned().unwrap_or_default();
        let file_url = match &section.url {
            Some(url) => Some(RedisUrl::parse(url).map_err(|e| {
                Error::InvalidConfig(format!("the config file's [redis] url: {e}"))
            })?),
            None => None,
        };
        let url = self.url.clone().or(file_url).ok_or_else(|| {
            Error::InvalidConfig(
                "--sink redis needs --redis-url (OUTBOX_REDIS_URL) or url in the config file's [redis], e.g. redis://localhost:6379/0".to_owned(),
            )
        })?;
        let password_file = self.password_file.clone().or(section.password_file);
        let maxlen = self.maxlen.or(section.maxlen);
        if maxlen == Some(0) {
            return Err(Error::InvalidConfig(
                "[redis] maxlen = 0 would trim every entry: give a positive length, or leave it out to trim nothing".into(),
            ));
        }
        Ok(RedisSettings {
            url: url.with_password_file(password_file.as_deref())?,
            tls: RedisTls {
                ca: self.ca.clone().or(section.ca),
                client_cert: self.client_cert.clone().or(section.client_cert),
                client_key: self.client_key.clone().or(section.client_key),
            },
            mode: self.mode.or(section.mode).unwrap_or_default(),
            maxlen,
            dedup_secs: self
                .dedup_secs
                .or(section.dedup_secs)
                .unwrap_or(DEFAULT_DEDUP_SECS),
            wait_replicas: self.wait_replicas.or(section.wait_replicas).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_wins_over_the_file_and_defaults_fill_the_rest() {
        let args = RedisArgs {
            url: Some(RedisUrl::parse("redis://flag:6379/0").unwrap()),
            maxlen: Some(10),
            ..RedisArgs::default()
        };
        let section = RedisSection {
            url: Some("redis://file:6379/0".into()),
            maxlen: Some(99),
            mode: Some(RedisMode::List),
            ..RedisSection::default()
        };
        let settings = args.settings(Some(&section)).unwrap();
        assert_eq!(settings.url.to_string(), "redis://flag:6379/0");
        assert_eq!(settings.maxlen, Some(10));
        assert_eq!(settings.mode, RedisMode::List);
        assert_eq!(settings.dedup_secs, DEFAULT_DEDUP_SECS);
        assert_eq!(settings.wait_replicas, 0);
    }

    #[test]
    fn no_url_names_the_flag() {
        let error = RedisArgs::default().settings(None).unwrap_err();
        assert!(error.to_string().contains("--redis-url"), "{error}");
    }
}
