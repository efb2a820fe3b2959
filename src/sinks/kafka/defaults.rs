//! The relay's librdkafka producer defaults, defined once: the producer
//! applies them, `run --help` lists them, and a test checks that docs/configuration.md's
//! table says the same.

/// Applied before (and so under) every `--kafka-option`.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("client.id", "outbox-relay"),
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "0"),
    ("socket.nagle.disable", "true"),
    ("message.timeout.ms", "30000"),
    // librdkafka backs off reconnecting up to 10 s by default: a broker back
    // from a crash would wait that long for the relay's sends.
    ("reconnect.backoff.max.ms", "1000"),
    ("queue.buffering.max.messages", "200000"),
    // librdkafka logs straight to stderr; below "critical" its lines only
    // repeat what the relay reports itself, once.
    ("log_level", "2"),
];

/// The long help of `--kafka-option`, listing the defaults it overrides.
pub fn producer_defaults_help() -> String {
    let defaults: Vec<String> = PRODUCER_DEFAULTS
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    format!(
        "A librdkafka producer setting, KEY=VALUE; repeatable. Overrides the relay's defaults: {}.",
        defaults.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the table under "Producer defaults" in docs/configuration.md: `| key | value | why |`.
    fn readme_defaults() -> Vec<(String, String)> {
        let readme = include_str!("../../../docs/configuration.md");
        let section = readme
            .split_once("Producer defaults")
            .expect("docs/configuration.md has a \"Producer defaults\" table")
            .1;
        section
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .skip(2)
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                (
                    cells[1].trim_matches('`').to_owned(),
                    cells[2].trim_matches('`').to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_exactly_the_producer_defaults() {
        let code: Vec<(String, String)> = PRODUCER_DEFAULTS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(readme_defaults(), code);
    }

    #[test]
    fn the_help_names_every_default() {
        let help = producer_defaults_help();
        for (key, value) in PRODUCER_DEFAULTS {
            assert!(help.contains(&format!("{key}={value}")), "{help}");
        }
    }
}
