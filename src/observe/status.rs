//! Rendering for `status` and `dead`: text readable at a glance (no
//! Markdown), or JSON; and the health verdict of `status --check`.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::source::queries::DeadRowView;
use crate::source::Backlog;

/// Everything `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// The source (database) it is in, when `status` shows several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub table: String,
    #[serde(flatten)]
    pub backlog: Backlog,
    pub published: i64,
    /// Seconds since the epoch.
    pub last_published_at: Option<f64>,
}

pub fn render_json(view: &StatusView) -> String {
    serde_json::to_string_pretty(view).expect("plain data serialises")
}

/// The first line reads `table app.outbox: 12 pending, oldest 3.0s, 0 dead`.
pub fn render_text(view: &StatusView, _terminal: bool) -> String {
    let backlog = &view.backlog;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "table {}: {} pending, oldest {}, {} dead{}",
        view.table,
        backlog.pending,
        format_age(backlog.oldest_pending_age_seconds),
        backlog.dead,
        if backlog.dead > 0 {
            " (see: outbox-relay dead, outbox-relay requeue)"
        } else {
            ""
        }
    );
    let last = view.last_published_at.map(|at| now_epoch() - at);
    let _ = writeln!(
        out,
        "published: {}, last {}",
        view.published,
        last.map_or("never".to_owned(), |age| format!(
            "{} ago",
            format_age(Some(age))
        ))
    );
    render_topics(&mut out, backlog);
    out
}

fn render_topics(out: &mut String, backlog: &Backlog) {
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
}

/// `status --check`: `None` when healthy, else what is wrong.
pub fn check(backlog: &Backlog, max_lag: Duration) -> Option<String> {
    let mut problems = Vec::new();
    if backlog.dead > 0 {
        problems.push(format!("{} dead rows", backlog.dead));
    }
    let oldest = backlog.oldest_pending_age_seconds.unwrap_or(0.0);
    if oldest > max_lag.as_secs_f64() {
        problems.push(format!(
            "the oldest pending row is {} old (limit {})",
            format_age(Some(oldest)),
            format_age(Some(max_lag.as_secs_f64()))
        ));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// `dead` as a table: one row per dead row, the error last.
pub fn render_dead(rows: &[DeadRowView]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no dead rows\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>10}  {:<24}  {:<16}  {:>8}  {:>10}  ERROR",
        "ID", "TOPIC", "KEY", "ATTEMPTS", "LAST TRY"
    );
    for row in rows {
        let age = row.last_attempt_at.map(|at| now_epoch() - at);
        let _ = writeln!(
            out,
            "{:>10}  {:<24}  {:<16}  {:>8}  {:>10}  {}",
            row.id,
            row.topic,
            row.key.as_deref().unwrap_or("-"),
            row.attempts,
            age.map_or("-".to_owned(), |a| format!("{} ago", format_age(Some(a)))),
            row.last_error.as_deref().unwrap_or("")
        );
    }
    out
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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

/// `status` over several tables: one line per table, the furthest behind
/// (oldest pending row) first, then a total.
pub fn render_tables(views: &[StatusView]) -> String {
    // The source column only when several databases are shown.
    let source = |v: &StatusView| {
        v.source
            .as_deref()
            .map(|s| format!("{s}  "))
            .unwrap_or_default()
    };
    let sources = views.iter().map(|v| source(v).len()).max().unwrap_or(0);
    let tables = views
        .iter()
        .map(|v| v.table.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let heading = if sources > 0 { "SOURCE" } else { "" };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{heading:<sources$}{:<tables$}  {:>10}  {:>14}  {:>8}  {:>12}",
        "TABLE", "PENDING", "OLDEST PENDING", "DEAD", "PUBLISHED"
    );
    for view in views {
        let _ = writeln!(
            out,
            "{:<sources$}{:<tables$}  {:>10}  {:>14}  {:>8}  {:>12}",
            source(view),
            view.table,
            view.backlog.pending,
            format_age(view.backlog.oldest_pending_age_seconds),
            view.backlog.dead,
            view.published
        );
    }
    let oldest = views
        .iter()
        .filter_map(|v| v.backlog.oldest_pending_age_seconds)
        .max_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "{} tables: {} pending, oldest {}, {} dead",
        views.len(),
        views.iter().map(|v| v.backlog.pending).sum::<i64>(),
        format_age(oldest),
        views.iter().map(|v| v.backlog.dead).sum::<i64>()
    );
    out
}

/// The furthest behind first: oldest pending age, descending (tables with
/// nothing pending last), then by name.
pub fn sort_by_lag(views: &mut [StatusView]) {
    views.sort_by(|a, b| {
        let age = |v: &StatusView| v.backlog.oldest_pending_age_seconds.unwrap_or(-1.0);
        age(b)
            .total_cmp(&age(a))
            .then_with(|| a.table.cmp(&b.table))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::TopicBacklog;

    fn view() -> StatusView {
        StatusView {
            source: None,
            table: "app.outbox".into(),
            backlog: Backlog::from_topics(vec![
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
            ]),
            published: 40,
            last_published_at: None,
        }
    }

    #[test]
    fn text_status_leads_with_one_line_then_published_then_topics() {
        let text = render_text(&view(), true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "table app.outbox: 12 pending, oldest 3.2s, 2 dead (see: outbox-relay dead, outbox-relay requeue)"
        );
        assert_eq!(lines[1], "published: 40, last never");
        assert!(
            lines[3].starts_with("orders") && lines[3].contains("3.2s"),
            "{}",
            lines[3]
        );
        assert!(lines[4].starts_with("payments") && lines[4].trim_end().ends_with('2'));
        assert!(lines[5].starts_with("TOTAL"));
        assert!(!text.contains('`'), "no Markdown in a terminal");
    }

    #[test]
    fn json_status_has_totals_topics_and_published() {
        let value: serde_json::Value = serde_json::from_str(&render_json(&view())).unwrap();
        assert_eq!(value["table"], "app.outbox");
        assert_eq!(value["pending"], 12);
        assert_eq!(value["dead"], 2);
        assert_eq!(value["published"], 40);
        assert_eq!(value["oldest_pending_age_seconds"], 3.25);
        assert_eq!(value["topics"][1]["topic"], "payments");
        assert!(value["topics"][1]["oldest_pending_age_seconds"].is_null());
    }

    #[test]
    fn the_check_fails_on_dead_rows_or_lag() {
        let healthy = Backlog::from_topics(vec![TopicBacklog {
            topic: "t".into(),
            pending: 3,
            oldest_pending_age_seconds: Some(10.0),
            dead: 0,
        }]);
        assert_eq!(check(&healthy, Duration::from_secs(300)), None);
        let lagging = check(&healthy, Duration::from_secs(5)).unwrap();
        assert!(lagging.contains("10.0s old"), "{lagging}");
        assert!(check(&view().backlog, Duration::from_secs(300))
            .unwrap()
            .contains("2 dead rows"));
    }

    #[test]
    fn ages_use_a_readable_unit() {
        assert_eq!(format_age(Some(0.004)), "4ms");
        assert_eq!(format_age(Some(90.0)), "90.0s");
        assert_eq!(format_age(Some(600.0)), "10.0m");
        assert_eq!(format_age(Some(3.0 * 86_400.0)), "3.0d");
    }

    #[test]
    fn several_tables_show_the_furthest_behind_first_and_a_total() {
        let mut views: Vec<StatusView> = [
            ("a.outbox", None),
            ("b.outbox", Some(9.0)),
            ("c.outbox", Some(2.0)),
        ]
        .into_iter()
        .map(|(table, oldest)| {
            let mut view = view();
            view.table = table.into();
            view.source = Some("orders".into());
            view.backlog.oldest_pending_age_seconds = oldest;
            view
        })
        .collect();
        sort_by_lag(&mut views);
        let order: Vec<&str> = views.iter().map(|v| v.table.as_str()).collect();
        assert_eq!(order, ["b.outbox", "c.outbox", "a.outbox"]);
        let text = render_tables(&views);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SOURCE  TABLE"), "{text}");
        assert!(lines[1].starts_with("orders  b.outbox"), "{text}");
        assert!(
            lines[4].starts_with("3 tables: 36 pending, oldest 9.0s, 6 dead"),
            "{text}"
        );
    }
}
