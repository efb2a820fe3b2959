//! PostgreSQL connection settings as users already write them: `postgres://`
//! URLs and libpq `key=value` strings, with libpq's TLS parameters in libpq's
//! meaning, and a password file read again for every new connection.
//!
//! Guarantees: `sslmode` means what it means to libpq (`prefer` is the
//! default; `require` with an `sslrootcert` verifies the CA; `verify-full`
//! also checks the host name); every connection the relay opens (pool,
//! LISTEN, one-off commands) goes through [`Connector`]; no error or log line
//! made here contains the password.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Connect;
use futures_util::future::BoxFuture;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres_openssl::{MakeTlsConnector, TlsStream};
use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres::{Client, Config, Connection, Socket};

use crate::error::{describe_pg_error, Error, Result};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(value: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }
}

/// Where the CA certificates that verify the server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's trust store.
    System,
}

impl RootCert {
    fn describe(&self) -> String {
        match self {
            RootCert::File(path) => format!("the CA file {}", path.display()),
            RootCert::System => "the system trust store".to_owned(),
        }
    }
}

/// The TLS parameters the relay handles itself (the driver knows only
/// `disable`, `prefer` and `require`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl TlsSettings {
    /// libpq: `require` with a root certificate behaves like `verify-ca`.
    fn verifies_ca(&self) -> bool {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => self.root_cert.is_some(),
            _ => false,
        }
    }
}

/// A parsed connection string: the driver's part and the TLS part.
#[derive(Clone)]
pub struct ConnectSettings {
    pub config: Config,
    pub tls: TlsSettings,
}

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl ConnectSettings {
    /// Parse a `postgres://` / `postgresql://` URL or a libpq `key=value`
    /// string. Unknown parameters are an error that names them.
    pub fn parse(connection: &str) -> Result<Self> {
        let (rest, tls_pairs) = if connection.contains("://") {
            split_url(connection)
        } else {
            split_key_values(connection)?
        };
        let mut tls = TlsSettings {
            mode: SslMode::Prefer,
            root_cert: None,
            client_cert: None,
            client_key: None,
        };
        for (key, value) in tls_pairs {
            match key.as_str() {
                "sslmode" => tls.mode = value.parse().map_err(Error::InvalidDatabaseUrl)?,
                "sslrootcert" if value == "system" => tls.root_cert = Some(RootCert::System),
                "sslrootcert" => tls.root_cert = Some(RootCert::File(value.into())),
                "sslcert" => tls.client_cert = Some(value.into()),
                _ => tls.client_key = Some(value.into()),
            }
        }
        if tls.verifies_ca() && tls.root_cert.is_none() {
            tls.root_cert = default_root_cert();
        }
        let mut config = Config::from_str(&rest).map_err(|e| {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}"));
            Error::InvalidDatabaseUrl(format!("{e}{}", cause.unwrap_or_default()))
        })?;
        config.ssl_mode(match tls.mode {
            SslMode::Disable | SslMode::Allow => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            _ => DriverSslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("outbox-relay");
        }
        Ok(ConnectSettings { config, tls })
    }
}

/// libpq's default root certificate, `~/.postgresql/root.crt`, if present.
fn default_root_cert() -> Option<RootCert> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql/root.crt");
    path.exists().then_some(RootCert::File(path))
}

type Pairs = Vec<(String, String)>;

/// Split a URL into itself without the TLS query parameters, and those.
fn split_url(url: &str) -> (String, Pairs) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if TLS_KEYS.contains(&key) {
            tls.push((key.to_owned(), percent_decode(value)));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, tls)
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Split a libpq `key=value` string (values may be single-quoted, with
/// backslash escapes) into the driver's part, re-quoted, and the TLS pairs.
fn split_key_values(text: &str) -> Result<(String, Pairs)> {
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    for (key, value) in key_value_pairs(text)? {
        if TLS_KEYS.contains(&key.as_str()) {
            tls.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), tls))
}

/// The pairs of a libpq `key=value` string, values unquoted, as libpq reads
/// them (spaces around `=` allowed; single quotes with backslash escapes).
pub fn key_value_pairs(text: &str) -> Result<Pairs> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(Error::InvalidDatabaseUrl(format!(
                "expected key=value pairs, but {key:?} has no value"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let value = read_value(&mut chars)?;
        pairs.push((key, value));
    }
}

fn read_value(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String> {
    let mut value = String::new();
    if chars.next_if_eq(&'\'').is_none() {
        value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        return Ok(value);
    }
    loop {
        match chars.next() {
            Some('\'') => return Ok(value),
            Some('\\') => value.extend(chars.next()),
            Some(c) => value.push(c),
            None => {
                return Err(Error::InvalidDatabaseUrl(
                    "a quoted value is not closed".to_owned(),
                ))
            }
        }
    }
}

/// Opens connections: TLS as the settings say, the password from the file
/// (read again each time) when the connection string has none.
#[derive(Clone)]
pub struct Connector {
    settings: ConnectSettings,
    password_file: Option<PathBuf>,
    tls: MakeTlsConnector,
    /// Why the last certificate check failed, for the error message.
    last_verify_error: Arc<Mutex<Option<(i32, String)>>>,
}

/// OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
const HOST_MISMATCH: [i32; 2] = [62, 64];

impl Connector {
    pub fn new(settings: ConnectSettings, password_file: Option<PathBuf>) -> Result<Self> {
        if let Some(file) = &password_file {
            read_password(file)?;
        }
        let last_verify_error = Arc::new(Mutex::new(None));
        let tls = make_tls(&settings.tls, &last_verify_error)?;
        Ok(Connector {
            settings,
            password_file,
            tls,
            last_verify_error,
        })
    }

    pub fn config(&self) -> &Config {
        &self.settings.config
    }

    /// A connection whose driver the caller runs (LISTEN needs its messages).
    pub async fn connect(
        &self,
    ) -> std::result::Result<(Client, Connection<Socket, TlsStream<Socket>>), tokio_postgres::Error>
    {
        let mut config = self.settings.config.clone();
        if config.get_password().is_none() {
            if let Some(file) = &self.password_file {
                match read_password(file) {
                    Ok(password) => {
                        config.password(password);
                    }
                    Err(error) => tracing::warn!(%error, "cannot read the password file"),
                }
            }
        }
        let first = config.connect(self.tls.clone()).await;
        match first {
            // libpq's `allow`: plain first, TLS if the server insists.
            Err(error) if self.settings.tls.mode == SslMode::Allow && requires_tls(&error) => {
                config.ssl_mode(DriverSslMode::Require);
                config.connect(self.tls.clone()).await
            }
            other => other,
        }
    }

    /// What a failed connection attempt means, in one line naming the fix.
    pub fn explain(&self, error: &tokio_postgres::Error) -> ConnectFailure {
        let reason = describe_pg_error(error);
        let tls = &self.settings.tls;
        if requires_tls(error) {
            return ConnectFailure::Tls(format!(
                "{reason}; the server requires TLS: use sslmode=require or sslmode=verify-full"
            ));
        }
        let verify = self
            .last_verify_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match verify {
            Some((code, _)) if HOST_MISMATCH.contains(&code) => ConnectFailure::Tls(format!(
                "{reason}; the server's certificate does not name the host {}: connect by the name on the certificate, or use sslmode=verify-ca",
                self.host()
            )),
            Some((_, detail)) => ConnectFailure::Tls(format!(
                "{reason}; the server's certificate is not trusted ({detail}) by {}: set sslrootcert to the CA that issued it",
                tls.root_cert.as_ref().map_or("no CA".to_owned(), RootCert::describe)
            )),
            None if tls.client_cert.is_some() && mentions_certificate(&reason) => {
                ConnectFailure::Tls(format!(
                    "{reason}; the server rejected the client certificate (sslcert/sslkey)"
                ))
            }
            // Under TLS 1.3 the server checks the client certificate after
            // the handshake and may cut the connection before its alert is
            // read.
            None if tls.client_cert.is_some() && is_cut_off(&reason) => ConnectFailure::Tls(format!(
                "{reason}; the server closed the connection: with a client certificate this usually means it rejected the client certificate (sslcert/sslkey)"
            )),
            None if reason.contains("does not support TLS") => ConnectFailure::Tls(format!(
                "{reason}; the server has TLS off: ask for ssl=on, or use sslmode=prefer"
            )),
            None if reason.contains("unsupported startup parameter") => ConnectFailure::Login(format!(
                "{reason}; a pooler refused a connection-string parameter: remove it (e.g. `options`) or list it in the pooler's ignore_startup_parameters"
            )),
            None if is_login_refused(error) => ConnectFailure::Login(reason),
            None => ConnectFailure::Unreachable(reason),
        }
    }

    fn host(&self) -> String {
        match self.settings.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_owned(),
        }
    }
}

impl Connect for Connector {
    fn connect(
        &self,
        _pg_config: &Config,
    ) -> BoxFuture<
        '_,
        std::result::Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        Box::pin(async move {
            let (client, connection) = Connector::connect(self).await?;
            let driver = tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(error = %describe_pg_error(&error), "PostgreSQL connection ended");
                }
            });
            Ok((client, driver))
        })
    }
}

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    Tls(String),
    /// The server refused the user, password or database.
    Login(String),
    Unreachable(String),
}

/// SQLSTATEs that mean "the login itself was refused".
fn is_login_refused(error: &tokio_postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db| ["28000", "28P01", "3D000"].contains(&db.code().code()))
}

/// The server turned down a connection without TLS (`hostnossl … reject`, or
/// no `host` line): pg_hba says "no encryption".
fn requires_tls(error: &tokio_postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db| db.code().code() == "28000" && db.message().contains("no encryption"))
}

fn is_cut_off(reason: &str) -> bool {
    [
        "reset by peer",
        "unexpected EOF",
        "connection closed",
        "broken pipe",
    ]
    .iter()
    .any(|marker| reason.contains(marker))
}

fn mentions_certificate(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    ["certificate", "unknown ca", "alert"]
        .iter()
        .any(|marker| reason.contains(marker))
}

fn read_password(file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Error::InvalidConfig(format!(
            "cannot read --database-password-file {}: {e}",
            file.display()
        ))
    })?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

fn make_tls(
    tls: &TlsSettings,
    last_verify_error: &Arc<Mutex<Option<(i32, String)>>>,
) -> Result<MakeTlsConnector> {
    let invalid = |what: String| Error::InvalidDatabaseUrl(what);
    let mut builder = SslConnector::builder(SslMethod::tls_client())
        .map_err(|e| invalid(format!("cannot set up TLS: {e}")))?;
    if tls.verifies_ca() {
        match &tls.root_cert {
            Some(RootCert::File(path)) => builder.set_ca_file(path).map_err(|e| {
                invalid(format!("cannot read sslrootcert {}: {e}", path.display()))
            })?,
            Some(RootCert::System) => builder
                .set_default_verify_paths()
                .map_err(|e| invalid(format!("cannot load the system trust store: {e}")))?,
            None => {
                return Err(invalid(format!(
                    "sslmode={:?} verifies the server, so it needs sslrootcert=FILE (or sslrootcert=system)",
                    tls.mode
                )))
            }
        }
        let slot = Arc::clone(last_verify_error);
        builder.set_verify_callback(SslVerifyMode::PEER, move |ok, context| {
            if !ok {
                let error = context.error();
                *slot.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((error.as_raw(), error.error_string().to_owned()));
            }
            ok
        });
    } else {
        builder.set_verify(SslVerifyMode::NONE);
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        builder
            .set_certificate_chain_file(cert)
            .map_err(|e| invalid(format!("cannot read sslcert {}: {e}", cert.display())))?;
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| invalid(format!("cannot read sslkey {}: {e}", key.display())))?;
    } else if tls.client_cert.is_some() || tls.client_key.is_some() {
        return Err(invalid(
            "sslcert and sslkey go together; give both".to_owned(),
        ));
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    let check_host = tls.mode == SslMode::VerifyFull;
    connector.set_callback(move |config, _host| {
        config.set_verify_hostname(check_host);
        Ok(())
    });
    Ok(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_driver_parameters_and_hand_over_the_tls_ones() {
        let settings = ConnectSettings::parse(
            "postgres://relay:pw@db.example.com:6432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fssl%2Frds.pem&application_name=me&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(settings.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            settings.tls.root_cert,
            Some(RootCert::File("/etc/ssl/rds.pem".into()))
        );
        assert_eq!(settings.config.get_application_name(), Some("me"));
        assert_eq!(
            settings.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(settings.config.get_ssl_mode(), DriverSslMode::Require);
    }

    #[test]
    fn key_value_strings_take_quoted_values_and_several_hosts() {
        let settings = ConnectSettings::parse(
            "host=a,b port=5432,5433 user=relay password='it''s' dbname=app sslmode=require sslrootcert=system target_session_attrs=read-write",
        );
        // libpq quotes with backslashes, not doubled quotes.
        assert!(settings.is_err());
        let settings = ConnectSettings::parse(
            r"host=a,b port=5432,5433 user=relay password='it\'s a secret' dbname=app sslmode=require sslrootcert=system target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(settings.config.get_hosts().len(), 2);
        assert_eq!(settings.config.get_password(), Some(&b"it's a secret"[..]));
        assert_eq!(settings.tls.root_cert, Some(RootCert::System));
        assert!(
            settings.tls.verifies_ca(),
            "require with a root cert verifies the CA"
        );
        assert_eq!(
            settings.config.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
    }

    #[test]
    fn libpq_defaults_apply() {
        let settings = ConnectSettings::parse("postgres://relay@localhost/app").unwrap();
        assert_eq!(settings.tls.mode, SslMode::Prefer);
        assert!(!settings.tls.verifies_ca());
        assert_eq!(settings.config.get_application_name(), Some("outbox-relay"));
    }

    #[test]
    fn unknown_parameters_and_modes_are_named() {
        let error = ConnectSettings::parse("postgres://localhost/app?sslmod=require")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("sslmod"), "{error}");
        let error = ConnectSettings::parse("postgres://localhost/app?sslmode=always")
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("always") && error.contains("verify-full"),
            "{error}"
        );
        let error = ConnectSettings::parse("host=localhost bogus=1")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("bogus"), "{error}");
    }
}
