//! Telling a user's TLS or SASL mistake apart from a broker that is down,
//! and saying which option to fix, and where it was given.
//!
//! Guarantees: an authentication or TLS failure that librdkafka reports
//! while the relay starts ends the start at once, with one line naming the
//! user, the mechanism and the option's origin (a flag, or the file); a file
//! option (`ssl.ca.location` …) that names a file that cannot be read is
//! refused before librdkafka sees it, naming the path. No line holds a
//! secret: only usernames, mechanisms, paths and librdkafka's own reason.

use std::fmt;
use std::path::Path;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::options::{KafkaOption, OptionOrigin};
use crate::error::Error;

/// What kind of security failure an error event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityFailure {
    /// The broker refused the SASL login (or the mechanism).
    Login,
    /// The TLS handshake failed: an untrusted certificate, or TLS aimed at a
    /// port that does not speak it.
    Tls,
}

/// The security failure an error event (`error`, with librdkafka's
/// `reason`) reports, if any. TLS aimed at a plaintext port, and plaintext
/// at a TLS port, come as transport failures whose reason says so.
pub fn security_failure(error: &KafkaError, reason: &str) -> Option<SecurityFailure> {
    match error.rdkafka_error_code()? {
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
            Some(SecurityFailure::Login)
        }
        RDKafkaErrorCode::SSL => Some(SecurityFailure::Tls),
        _ if reason.contains("SSL handshake failed")
            || reason.contains("incorrect security.protocol") =>
        {
            Some(SecurityFailure::Tls)
        }
        _ => None,
    }
}

/// The options as given (references unresolved), for naming them in errors.
#[derive(Debug, Clone, Default)]
pub struct GivenOptions(Vec<KafkaOption>);

impl GivenOptions {
    pub fn new(options: &[KafkaOption]) -> Self {
        GivenOptions(options.to_vec())
    }

    /// The value given last for `key`, unless it is a secret or a reference.
    fn plain_value(&self, key: &str) -> Option<&str> {
        let option = self.0.iter().rev().find(|o| o.key == key)?;
        (!option.is_secret() && !option.value.contains("${")).then_some(option.value.as_str())
    }

    /// Where to fix `keys`: the origin of the last one given, or the flag.
    pub fn origin_of(&self, keys: &[&str]) -> Where {
        let origin = self
            .0
            .iter()
            .rev()
            .find(|o| keys.contains(&o.key.as_str()))
            .map(|o| o.origin.clone())
            .unwrap_or_default();
        Where(origin)
    }

    /// The one-line error for `failure`, with librdkafka's `reason`.
    pub fn error(&self, failure: SecurityFailure, brokers: &str, reason: &str) -> Error {
        match failure {
            SecurityFailure::Login => {
                let user = self.plain_value("sasl.username").unwrap_or("(unset)");
                let mechanism = self.plain_value("sasl.mechanism").unwrap_or("GSSAPI");
                let place = self.origin_of(&["sasl.username", "sasl.password"]);
                Error::KafkaLoginRefused {
                    user: user.to_owned(),
                    mechanism: mechanism.to_owned(),
                    fix: format!("check sasl.username / sasl.password {place}, and that the user has {mechanism} credentials on the brokers"),
                    reason: reason.to_owned(),
                }
            }
            SecurityFailure::Tls => {
                let protocol = self.plain_value("security.protocol").unwrap_or("PLAINTEXT");
                let place = self.origin_of(&["ssl.ca.location", "security.protocol"]);
                Error::KafkaTls {
                    brokers: brokers.to_owned(),
                    fix: format!("check that {brokers} are {protocol} listeners (security.protocol), and ssl.ca.location {place} (the CA that signed the brokers' certificates)"),
                    reason: reason.to_owned(),
                }
            }
        }
    }
}

/// "in FILE" or "in --kafka-option".
pub struct Where(OptionOrigin);

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "in {}", self.0)
    }
}

/// Options whose value is a path librdkafka reads.
const FILE_OPTIONS: &[&str] = &[
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.crl.location",
    "sasl.kerberos.keytab",
];

/// Refuse a file option naming a file that cannot be read, naming the path
/// and where the option was given. (librdkafka says only "system lib".)
/// `options` are resolved; `ssl.ca.location=probe` looks in system places.
pub fn check_files(options: &[KafkaOption]) -> Result<(), Error> {
    for option in options {
        if !FILE_OPTIONS.contains(&option.key.as_str()) || option.value == "probe" {
            continue;
        }
        if let Err(error) = std::fs::File::open(Path::new(&option.value)) {
            return Err(Error::KafkaConfig(format!(
                "{}: cannot read {}: {error}; fix it {}",
                option.key,
                option.value,
                Where(option.origin.clone())
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn option(key: &str, value: &str, origin: OptionOrigin) -> KafkaOption {
        KafkaOption {
            key: key.into(),
            value: value.into(),
            origin,
        }
    }

    fn file() -> OptionOrigin {
        OptionOrigin::File(PathBuf::from("/etc/relay/client.properties"))
    }

    #[test]
    fn a_refused_login_names_the_user_the_mechanism_and_the_file_but_no_secret() {
        let given = GivenOptions::new(&[
            option("sasl.mechanism", "SCRAM-SHA-512", file()),
            option("sasl.username", "relay", file()),
            option("sasl.password", "hunter2", file()),
        ]);
        let line = given
            .error(SecurityFailure::Login, "b:9092", "Authentication failed")
            .to_string();
        assert!(
            line.starts_with("Kafka rejected the SASL login for user relay (SCRAM-SHA-512)"),
            "{line}"
        );
        assert!(line.contains("in /etc/relay/client.properties"), "{line}");
        assert!(!line.contains("hunter2"), "{line}");
    }

    #[test]
    fn a_username_given_by_reference_is_not_resolved_into_the_line() {
        let given = GivenOptions::new(&[option(
            "sasl.username",
            "${file:/run/user}",
            OptionOrigin::Flag,
        )]);
        let line = given
            .error(SecurityFailure::Login, "b:9092", "x")
            .to_string();
        assert!(
            line.contains("user (unset)") && line.contains("in --kafka-option"),
            "{line}"
        );
    }

    #[test]
    fn a_tls_failure_names_the_brokers_and_the_ca_option() {
        let given = GivenOptions::new(&[option("security.protocol", "SASL_SSL", file())]);
        let line = given
            .error(SecurityFailure::Tls, "b:9092", "SSL handshake failed")
            .to_string();
        assert!(line.contains("TLS to Kafka at b:9092 failed"), "{line}");
        assert!(
            line.contains("SASL_SSL listeners")
                && line.contains("ssl.ca.location in /etc/relay/client.properties"),
            "{line}"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named_with_its_origin() {
        let missing = option("ssl.ca.location", "/nonexistent/ca.pem", file());
        let line = check_files(&[missing]).unwrap_err().to_string();
        assert!(line.contains("cannot read /nonexistent/ca.pem"), "{line}");
        assert!(line.contains("in /etc/relay/client.properties"), "{line}");
        assert!(check_files(&[option("ssl.ca.location", "probe", file())]).is_ok());
    }

    #[test]
    fn authentication_and_tls_errors_are_told_apart_from_outages() {
        let event = |code| KafkaError::Global(code);
        assert_eq!(
            security_failure(&event(RDKafkaErrorCode::Authentication), ""),
            Some(SecurityFailure::Login)
        );
        assert_eq!(
            security_failure(&event(RDKafkaErrorCode::SSL), ""),
            Some(SecurityFailure::Tls)
        );
        let transport = event(RDKafkaErrorCode::BrokerTransportFailure);
        let tls_at_plaintext = "b/bootstrap: SSL handshake failed: Disconnected: SSL connection closed by peer: connecting to a PLAINTEXT broker listener?";
        assert_eq!(
            security_failure(&transport, tls_at_plaintext),
            Some(SecurityFailure::Tls)
        );
        let refused = "b/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused";
        assert_eq!(security_failure(&transport, refused), None);
        assert_eq!(
            security_failure(&event(RDKafkaErrorCode::AllBrokersDown), ""),
            None
        );
    }
}
