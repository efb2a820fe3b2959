//! SQL text from `sql/`, rendered once for the configured table.
//!
//! The files hold `{{table}}`-style placeholders for identifiers only; every
//! value is a bind parameter. Rendering happens at start-up, so a statement's
//! text is fixed for the life of the process and can be prepared once per
//! connection.

use crate::table::TableName;

/// Schema migrations, applied in order by `migrate`. Each one is idempotent.
const MIGRATIONS: &[(&str, &str)] = &[(
    "001_outbox_table",
    include_str!("../sql/migrations/001_outbox_table.sql"),
)];

/// Optional trigger that sends NOTIFY on commit of an insert.
const NOTIFY_TRIGGER: &str = include_str!("../sql/optional/notify_trigger.sql");

/// Every statement the relay runs, rendered for one table.
#[derive(Debug, Clone)]
pub struct Sql {
    pub migrations: Vec<(&'static str, String)>,
    pub notify_trigger: String,
    pub migration_lock: String,
    pub table_exists: String,
    pub claim_due: String,
    pub mark_published: String,
    pub record_failures: String,
    pub hold_back_keys: String,
    pub stats_by_topic: String,
    pub requeue_dead: String,
    pub prune_published: String,
    pub listen_for_inserts: String,
    pub table_size: String,
}

impl Sql {
    pub fn for_table(table: &TableName) -> Self {
        let render = |template: &str| render(template, table);
        Sql {
            migrations: MIGRATIONS
                .iter()
                .map(|(name, text)| (*name, render(text)))
                .collect(),
            notify_trigger: render(NOTIFY_TRIGGER),
            migration_lock: render(include_str!("../sql/queries/migration_lock.sql")),
            table_exists: render(include_str!("../sql/queries/outbox_table_exists.sql")),
            claim_due: render(include_str!("../sql/queries/outbox_claim_due.sql")),
            mark_published: render(include_str!("../sql/queries/outbox_mark_published.sql")),
            record_failures: render(include_str!("../sql/queries/outbox_record_failures.sql")),
            hold_back_keys: render(include_str!("../sql/queries/outbox_hold_back_keys.sql")),
            stats_by_topic: render(include_str!("../sql/queries/outbox_stats_by_topic.sql")),
            requeue_dead: render(include_str!("../sql/queries/outbox_requeue_dead.sql")),
            prune_published: render(include_str!("../sql/queries/outbox_prune_published.sql")),
            listen_for_inserts: render(include_str!("../sql/queries/listen_for_inserts.sql")),
            table_size: render(include_str!("../sql/queries/outbox_table_size.sql")),
        }
    }
}

fn render(template: &str, table: &TableName) -> String {
    template
        .replace("{{table}}", &table.quoted())
        .replace("{{name}}", table.name())
        .replace("{{enqueue_function}}", &table.quoted_sibling("enqueue"))
        .replace("{{notify_function}}", &table.quoted_sibling("notify"))
        .replace("{{notify_channel}}", &table.notify_channel())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_rendered() {
        let sql = Sql::for_table(&"app.events".parse().unwrap());
        let all = [
            &sql.notify_trigger,
            &sql.claim_due,
            &sql.mark_published,
            &sql.record_failures,
            &sql.hold_back_keys,
            &sql.stats_by_topic,
            &sql.requeue_dead,
            &sql.prune_published,
            &sql.listen_for_inserts,
        ];
        for text in all.into_iter().chain(sql.migrations.iter().map(|(_, t)| t)) {
            assert!(!text.contains("{{"), "unrendered placeholder in:\n{text}");
        }
        assert!(sql.claim_due.contains("\"app\".\"events\""));
    }
}
