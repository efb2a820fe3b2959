//! SQL text from `sql/`, rendered once for the configured table.
//!
//! The files hold `{{table}}`-style placeholders for identifiers only; every
//! value is a bind parameter. Rendering happens at start-up, so a statement's
//! text is fixed for the life of the process and can be prepared once per
//! connection. The typed functions that run these statements live in
//! [`crate::source::queries`].

use crate::source::layout::ColumnSql;
use crate::source::table::TableName;

/// Schema migrations, applied in order by `migrate`. Each one is idempotent.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "001_outbox_table",
        include_str!("../../sql/migrations/001_outbox_table.sql"),
    ),
    (
        "002_topic_name_check",
        include_str!("../../sql/migrations/002_topic_name_check.sql"),
    ),
];

/// What `migrate --sink rabbitmq` (and `redis`) installs instead of Kafka's topic rule.
const ROUTING_KEY_CHECK: (&str, &str) = (
    "002_routing_key_check",
    include_str!("../../sql/migrations/002_routing_key_check.sql"),
);

/// What `migrate --sink nats` installs instead of Kafka's topic rule.
const SUBJECT_CHECK: (&str, &str) = (
    "002_subject_check",
    include_str!("../../sql/migrations/002_subject_check.sql"),
);

/// Creates the table's schema when it does not exist.
const CREATE_SCHEMA: &str = include_str!("../../sql/optional/create_schema.sql");

/// Optional trigger that sends NOTIFY on commit of an insert.
const NOTIFY_TRIGGER: &str = include_str!("../../sql/optional/notify_trigger.sql");

/// One statement from `sql/queries/`, named after its file.
#[derive(Debug, Clone)]
pub struct Statement {
    pub name: &'static str,
    pub text: String,
}

/// Every statement the relay runs, rendered for one table, and how they are
/// run.
#[derive(Debug, Clone)]
pub struct Sql {
    /// The expressions rendered into the statements.
    pub columns: ColumnSql,
    /// Behind a transaction-mode pooler: statements run unnamed (nothing
    /// prepared outlives a transaction), see `source::queries`.
    pub pooler_safe: bool,
    pub migrations: Vec<(&'static str, String)>,
    /// The RabbitMQ and Redis rule for `topic`, in place of Kafka's (`002`).
    pub routing_key_check: (&'static str, String),
    /// The NATS rule for `topic`, in place of Kafka's (`002`).
    pub subject_check: (&'static str, String),
    pub notify_trigger: String,
    /// For a schema-qualified table: create its schema if missing.
    pub create_schema: Option<String>,
    pub listen_for_inserts: String,
    pub migration_lock: Statement,
    pub outbox_table_exists: Statement,
    pub outbox_columns: Statement,
    pub outbox_claim_due: Statement,
    pub outbox_mark_published: Statement,
    pub outbox_record_failures: Statement,
    pub outbox_hold_back_keys: Statement,
    pub outbox_stats_by_topic: Statement,
    pub outbox_requeue_dead: Statement,
    pub outbox_prune_published: Statement,
    pub outbox_table_size: Statement,
    pub outbox_privileges: Statement,
    pub outbox_list_dead: Statement,
    pub outbox_count_requeueable: Statement,
    pub outbox_count_prunable: Statement,
    pub outbox_status_of: Statement,
    pub outbox_published_summary: Statement,
    pub outbox_objects: Statement,
    pub outbox_delete_published: Statement,
    pub leader_lock: Statement,
    pub leader_unlock: Statement,
    pub leader_session: String,
    pub database_identity: String,
    pub unlisten_for_inserts: String,
    pub listen_for_tables: String,
    pub announce_tables: Statement,
    pub discover_tables: Statement,
    pub outbox_notify_trigger: Statement,
}

/// `statement!(render, "file")` reads `sql/queries/file.sql` at compile time.
macro_rules! statement {
    ($render:expr, $name:literal) => {
        Statement {
            name: $name,
            text: $render(include_str!(concat!("../../sql/queries/", $name, ".sql"))),
        }
    };
}

impl Sql {
    pub fn for_table(table: &TableName, columns: &ColumnSql, pooler_safe: bool) -> Self {
        let render = |template: &str| render(template, table, columns);
        Sql {
            columns: columns.clone(),
            pooler_safe,
            migrations: MIGRATIONS
                .iter()
                .map(|(name, text)| (*name, render(text)))
                .collect(),
            routing_key_check: (ROUTING_KEY_CHECK.0, render(ROUTING_KEY_CHECK.1)),
            subject_check: (SUBJECT_CHECK.0, render(SUBJECT_CHECK.1)),
            notify_trigger: render(NOTIFY_TRIGGER),
            create_schema: table
                .quoted_schema()
                .map(|schema| CREATE_SCHEMA.replace("{{schema}}", &schema)),
            listen_for_inserts: render(include_str!("../../sql/queries/listen_for_inserts.sql")),
            migration_lock: statement!(render, "migration_lock"),
            outbox_table_exists: statement!(render, "outbox_table_exists"),
            outbox_columns: statement!(render, "outbox_columns"),
            outbox_claim_due: statement!(render, "outbox_claim_due"),
            outbox_mark_published: statement!(render, "outbox_mark_published"),
            outbox_record_failures: statement!(render, "outbox_record_failures"),
            outbox_hold_back_keys: statement!(render, "outbox_hold_back_keys"),
            outbox_stats_by_topic: statement!(render, "outbox_stats_by_topic"),
            outbox_requeue_dead: statement!(render, "outbox_requeue_dead"),
            outbox_prune_published: statement!(render, "outbox_prune_published"),
            outbox_table_size: statement!(render, "outbox_table_size"),
            outbox_privileges: statement!(render, "outbox_privileges"),
            outbox_list_dead: statement!(render, "outbox_list_dead"),
            outbox_count_requeueable: statement!(render, "outbox_count_requeueable"),
            outbox_count_prunable: statement!(render, "outbox_count_prunable"),
            outbox_status_of: statement!(render, "outbox_status_of"),
            outbox_published_summary: statement!(render, "outbox_published_summary"),
            outbox_objects: statement!(render, "outbox_objects"),
            outbox_delete_published: statement!(render, "outbox_delete_published"),
            leader_lock: statement!(render, "leader_lock"),
            leader_unlock: statement!(render, "leader_unlock"),
            leader_session: render(include_str!("../../sql/queries/leader_session.sql")),
            database_identity: render(include_str!("../../sql/queries/database_identity.sql")),
            unlisten_for_inserts: render(include_str!(
                "../../sql/queries/unlisten_for_inserts.sql"
            )),
            listen_for_tables: render(include_str!("../../sql/queries/listen_for_tables.sql")),
            announce_tables: statement!(render, "announce_tables"),
            discover_tables: statement!(render, "discover_tables"),
            outbox_notify_trigger: statement!(render, "outbox_notify_trigger"),
        }
    }

    /// The declared key type of the relay's own table.
    pub fn key_type(&self) -> &'static str {
        self.columns.key_type
    }

    /// The declared payload type of the relay's own table.
    pub fn payload_type(&self) -> &'static str {
        self.columns.payload_type
    }

    /// The statements that read or write the outbox table: prepared at
    /// start-up, so a table that drifted from this version fails at once.
    pub fn table_statements(&self) -> [&Statement; 14] {
        [
            &self.outbox_claim_due,
            &self.outbox_mark_published,
            &self.outbox_record_failures,
            &self.outbox_hold_back_keys,
            &self.outbox_stats_by_topic,
            &self.outbox_requeue_dead,
            &self.outbox_prune_published,
            &self.outbox_table_size,
            &self.outbox_list_dead,
            &self.outbox_count_requeueable,
            &self.outbox_count_prunable,
            &self.outbox_status_of,
            &self.outbox_published_summary,
            &self.outbox_delete_published,
        ]
    }

    /// Every rendered text, for the placeholder check.
    #[cfg(test)]
    fn all_texts(&self) -> Vec<&str> {
        let mut texts: Vec<&str> = self.table_statements().map(|s| s.text.as_str()).into();
        texts.extend([
            self.migration_lock.text.as_str(),
            self.outbox_table_exists.text.as_str(),
            self.outbox_columns.text.as_str(),
            self.outbox_privileges.text.as_str(),
            self.outbox_objects.text.as_str(),
            self.leader_lock.text.as_str(),
            self.leader_unlock.text.as_str(),
            self.leader_session.as_str(),
            self.database_identity.as_str(),
            self.unlisten_for_inserts.as_str(),
            self.listen_for_tables.as_str(),
            self.announce_tables.text.as_str(),
            self.discover_tables.text.as_str(),
            self.outbox_notify_trigger.text.as_str(),
            self.notify_trigger.as_str(),
            self.listen_for_inserts.as_str(),
        ]);
        texts.extend(self.migrations.iter().map(|(_, text)| text.as_str()));
        texts.push(self.routing_key_check.1.as_str());
        texts.push(self.subject_check.1.as_str());
        texts
    }
}

fn render(template: &str, table: &TableName, columns: &ColumnSql) -> String {
    template
        .replace("{{table}}", &table.quoted())
        .replace("{{name}}", &table.stem())
        .replace("{{sequence}}", &columns.sequence)
        .replace("{{key}}", &columns.key)
        .replace("{{key_bytes}}", &columns.key_bytes)
        .replace("{{key_display}}", &columns.key_display)
        .replace("{{topic}}", &columns.topic)
        .replace("{{payload}}", &columns.payload)
        .replace("{{event_id}}", &columns.event_id)
        .replace("{{event_type}}", &columns.event_type)
        .replace("{{headers}}", &columns.headers)
        .replace("{{payload_type}}", columns.payload_type)
        .replace("{{key_type}}", columns.key_type)
        .replace(
            "{{primary_key}}",
            if columns.partitioned {
                "id, created_at"
            } else {
                "id"
            },
        )
        .replace(
            "{{partitioning}}",
            if columns.partitioned {
                " PARTITION BY RANGE (created_at)"
            } else {
                ""
            },
        )
        .replace("{{enqueue_function}}", &table.quoted_sibling("enqueue"))
        .replace("{{notify_function}}", &table.quoted_sibling("notify"))
        .replace("{{notify_channel}}", &table.notify_channel())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_of_every_statement_is_rendered() {
        let sql = Sql::for_table(&"app.events".parse().unwrap(), &ColumnSql::default(), false);
        let texts = sql.all_texts();
        // 24 queries, LISTEN and UNLISTEN (inserts, tables), the leader's
        // session settings, the trigger, each migration and the two
        // alternative topic checks.
        assert_eq!(texts.len(), 32 + MIGRATIONS.len());
        for text in texts {
            assert!(!text.contains("{{"), "unrendered placeholder in:\n{text}");
        }
        assert!(sql.outbox_claim_due.text.contains("\"app\".\"events\""));
    }

    #[test]
    fn every_query_file_is_a_statement() {
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/queries"))
            .unwrap()
            .count();
        // The 24 named statements, the three LISTEN/UNLISTEN, the
        // leader's session settings and the database's identity.
        assert_eq!(files, 29, "a file in sql/queries/ is not wired into Sql");
    }
}
