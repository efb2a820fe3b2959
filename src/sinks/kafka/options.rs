//! The librdkafka options a user gives: a `client.properties` file
//! (`--kafka-config`) and `--kafka-option` flags, with secret values kept off
//! the command line by reference: `${file:/path}` (the file's content, read
//! again whenever a producer is created, so a rotated secret is picked up)
//! or `${env:NAME}`.
//!
//! Guarantees: precedence is the relay's defaults < the file < the flags;
//! references are resolved only into the configuration handed to
//! librdkafka, never into anything that is printed.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One librdkafka option, `key=value`, and where the user gave it. Its
/// `Debug` hides the values of passwords and secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaOption {
    pub key: String,
    pub value: String,
    pub origin: OptionOrigin,
}

/// Where an option was given, so an error about it says where to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OptionOrigin {
    /// `--kafka-option` (or `OUTBOX_KAFKA_OPTIONS`).
    #[default]
    Flag,
    /// A `client.properties` file, or the configuration file's `[kafka]`.
    File(PathBuf),
}

impl fmt::Display for OptionOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionOrigin::Flag => f.write_str("--kafka-option"),
            OptionOrigin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl KafkaOption {
    /// librdkafka options whose values are secrets.
    pub fn is_secret(&self) -> bool {
        let key = self.key.to_ascii_lowercase();
        ["password", "secret", "sasl.jaas.config", "key.pem", "token"]
            .iter()
            .any(|marker| key.contains(marker))
    }
}

impl fmt::Debug for KafkaOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.is_secret() { "***" } else { &self.value };
        write!(f, "{}={value:?}", self.key)
    }
}

/// The options of a properties file: `key=value` (or `key: value`) lines,
/// `#` and `!` comments, blank lines ignored.
pub fn read_properties(path: &Path) -> Result<Vec<KafkaOption>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::InvalidConfig(format!(
            "cannot read --kafka-config {}: {e}",
            path.display()
        ))
    })?;
    let from = OptionOrigin::File(path.to_owned());
    parse_properties(&text, &from).map_err(|(line, problem)| {
        Error::InvalidConfig(format!(
            "--kafka-config {} line {line}: {problem}; expected key=value",
            path.display()
        ))
    })
}

fn parse_properties(
    text: &str,
    origin: &OptionOrigin,
) -> std::result::Result<Vec<KafkaOption>, (usize, String)> {
    let mut options = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let split = line.find(['=', ':']);
        let Some((key, value)) = split.map(|at| (&line[..at], &line[at + 1..])) else {
            return Err((index + 1, format!("{:?} has no '='", first_word(line))));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err((index + 1, "a line has no key".to_owned()));
        }
        options.push(KafkaOption {
            key: key.to_owned(),
            value: value.trim().to_owned(),
            origin: origin.clone(),
        });
    }
    Ok(options)
}

/// Only the first word, so a malformed secret line is not echoed whole.
fn first_word(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

/// Replace `${file:…}` and `${env:…}` references in every value.
pub fn resolve(options: &[KafkaOption]) -> Result<Vec<KafkaOption>> {
    options
        .iter()
        .map(|option| {
            Ok(KafkaOption {
                key: option.key.clone(),
                value: resolve_value(&option.key, &option.value)?,
                origin: option.origin.clone(),
            })
        })
        .collect()
}

fn resolve_value(key: &str, value: &str) -> Result<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(length) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let reference = &rest[start + 2..start + length];
        out.push_str(&dereference(key, reference)?);
        rest = &rest[start + length + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn dereference(key: &str, reference: &str) -> Result<String> {
    let fail = |problem: String| {
        Error::InvalidConfig(format!("Kafka option {key}: ${{{reference}}} {problem}"))
    };
    match reference.split_once(':') {
        Some(("file", path)) => std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| fail(format!("cannot be read: {e}"))),
        Some(("env", name)) => {
            std::env::var(name).map_err(|_| fail("names an unset environment variable".to_owned()))
        }
        _ => Err(fail(
            "is not a reference; use ${file:/path} or ${env:NAME}".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(key: &str, value: &str) -> KafkaOption {
        KafkaOption {
            key: key.into(),
            value: value.into(),
            origin: OptionOrigin::Flag,
        }
    }

    #[test]
    fn properties_files_are_key_value_lines_with_comments() {
        let text = "# Confluent Cloud\n\nbootstrap.servers=pkc:9092\n! also a comment\nsecurity.protocol = SASL_SSL\nsasl.jaas.config=a=b c=d\nsasl.mechanism: PLAIN\n";
        let options = parse_properties(text, &OptionOrigin::Flag).unwrap();
        assert_eq!(
            options,
            vec![
                option("bootstrap.servers", "pkc:9092"),
                option("security.protocol", "SASL_SSL"),
                option("sasl.jaas.config", "a=b c=d"),
                option("sasl.mechanism", "PLAIN"),
            ]
        );
        let error = parse_properties("a=1\nhunter2 secret\n", &OptionOrigin::Flag).unwrap_err();
        assert_eq!(error.0, 2);
        assert!(!error.1.contains("secret"), "{}", error.1);
    }

    #[test]
    fn references_read_files_and_environment_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::env::set_var("OUTBOX_TEST_KAFKA_KEY", "key-1");
        let resolved = resolve(&[
            option("sasl.password", &format!("${{file:{}}}", path.display())),
            option("sasl.username", "${env:OUTBOX_TEST_KAFKA_KEY}"),
            option("linger.ms", "5"),
        ])
        .unwrap();
        assert_eq!(resolved[0].value, "s3cret");
        assert_eq!(resolved[1].value, "key-1");
        assert_eq!(resolved[2].value, "5");
    }

    #[test]
    fn a_broken_reference_names_the_option_not_a_secret() {
        let error = resolve(&[option("sasl.password", "${file:/nonexistent/pw}")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("sasl.password") && error.contains("/nonexistent/pw"),
            "{error}"
        );
        let error = resolve(&[option("sasl.password", "${vault:x}")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("${file:/path}"), "{error}");
    }
}
