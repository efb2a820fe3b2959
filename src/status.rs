//! Rendering the backlog for `status`: a table readable at a glance, or JSON.

use std::fmt::Write;

use serde::Serialize;

use crate::db::Backlog;

#[derive(Serialize)]
struct StatusJson<'a> {
    table: &'a str,
    #[serde(flatten)]
    backlog: &'a Backlog,
}

pub fn render_json(table: &str, backlog: &Backlog) -> String {
    serde_json::to_string_pretty(&StatusJson { table, backlog }).expect("plain data serialises")
}

pub fn render_text(table: &str, backlog: &Backlog) -> String {
    let mut out = String::new();
    let verdict = match (backlog.pending, backlog.dead) {
        (0, 0) => "all caught up".to_owned(),
        (pending, 0) => format!("{pending} pending"),
        (0, dead) => format!("{dead} dead (see `requeue`)"),
        (pending, dead) => format!("{pending} pending, {dead} dead (see `requeue`)"),
    };
    let _ = writeln!(out, "outbox {table}: {verdict}");
    let width = backlog
        .topics
        .iter()
        .map(|t| t.topic.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let _ = writeln!(
        out,
        "{:<width$}  {:>10}  {:>14}  {:>8}",
        "TOPIC", "PENDING", "OLDEST PENDING", "DEAD"
    );
    for topic in &backlog.topics {
        let _ = writeln!(
            out,
            "{:<width$}  {:>10}  {:>14}  {:>8}",
            topic.topic,
            topic.pending,
            format_age(topic.oldest_pending_age_seconds),
            topic.dead
        );
    }
    let _ = writeln!(
        out,
        "{:<width$}  {:>10}  {:>14}  {:>8}",
        "TOTAL",
        backlog.pending,
        format_age(backlog.oldest_pending_age_seconds),
        backlog.dead
    );
    out
}

fn format_age(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        Some(s) if s < 120.0 => format!("{s:.1}s"),
        Some(s) if s < 7200.0 => format!("{:.1}m", s / 60.0),
        Some(s) if s < 172_800.0 => format!("{:.1}h", s / 3600.0),
        Some(s) => format!("{:.1}d", s / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::TopicBacklog;

    fn backlog() -> Backlog {
        Backlog::from_topics(vec![
            TopicBacklog {
                topic: "orders".into(),
                pending: 12,
                oldest_pending_age_seconds: Some(3.25),
                dead: 0,
            },
            TopicBacklog {
                topic: "payments".into(),
                pending: 0,
                oldest_pending_age_seconds: None,
                dead: 2,
            },
        ])
    }

    #[test]
    fn text_status_leads_with_a_verdict_and_lists_topics_and_total() {
        let text = render_text("outbox", &backlog());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "outbox outbox: 12 pending, 2 dead (see `requeue`)"
        );
        assert!(
            lines[2].starts_with("orders") && lines[2].contains("3.2s"),
            "{}",
            lines[2]
        );
        assert!(lines[3].starts_with("payments") && lines[3].trim_end().ends_with('2'));
        assert!(lines[4].starts_with("TOTAL"));
    }

    #[test]
    fn json_status_has_totals_and_topics() {
        let value: serde_json::Value =
            serde_json::from_str(&render_json("outbox", &backlog())).unwrap();
        assert_eq!(value["table"], "outbox");
        assert_eq!(value["pending"], 12);
        assert_eq!(value["dead"], 2);
        assert_eq!(value["oldest_pending_age_seconds"], 3.25);
        assert_eq!(value["topics"][1]["topic"], "payments");
        assert!(value["topics"][1]["oldest_pending_age_seconds"].is_null());
    }

    #[test]
    fn ages_use_a_readable_unit() {
        assert_eq!(format_age(Some(0.004)), "4ms");
        assert_eq!(format_age(Some(90.0)), "90.0s");
        assert_eq!(format_age(Some(600.0)), "10.0m");
        assert_eq!(format_age(Some(3.0 * 86_400.0)), "3.0d");
    }
}
