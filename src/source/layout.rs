//! Which column of the outbox table plays which part of a Kafka message: the
//! relay's own layout, Debezium's outbox layout, or any table mapped with
//! `--column role=column`, `--header-column name=column` and
//! `--topic-template`.
//!
//! Guarantees: a [`Layout`] names each role at most once and its template is
//! well formed; [`Layout::resolve`] checks it against the table's columns as
//! the catalog reports them (every column exists, payload and key have a
//! supported type, the relay's own columns are there) and turns it into the
//! SQL expressions the statements in `sql/` select ([`ColumnSql`]). Those
//! expressions hold only quoted identifiers, fixed casts, and literals made
//! of characters that can never close a string (`[A-Za-z0-9._-]`: template
//! text and header names are checked for exactly that).

use std::collections::BTreeMap;
use std::fmt;

/// A part of a message, and the column that supplies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Topic,
    Key,
    Payload,
    Headers,
    EventId,
    /// CloudEvents `ce_type` (Debezium's `type`).
    EventType,
    /// The bigint column that orders the rows.
    Sequence,
}

impl Role {
    const ALL: [(Role, &'static str); 7] = [
        (Role::Topic, "topic"),
        (Role::Key, "key"),
        (Role::Payload, "payload"),
        (Role::Headers, "headers"),
        (Role::EventId, "event_id"),
        (Role::EventType, "event_type"),
        (Role::Sequence, "sequence"),
    ];

    fn parse(name: &str) -> Option<Role> {
        Role::ALL.iter().find(|(_, n)| *n == name).map(|(r, _)| *r)
    }

    pub fn name(self) -> &'static str {
        Role::ALL
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("?", |(_, n)| n)
    }
}

/// Roles a table may lack (`--column headers=`): without a headers column
/// only the relay's headers are sent; without an event type, CloudEvents'
/// ce_type is the topic. (A key column is required; its values may be NULL.)
const OPTIONAL_ROLES: [Role; 2] = [Role::Headers, Role::EventType];

/// The preset a layout starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The table `outbox-relay migrate` creates.
    #[default]
    Relay,
    /// Debezium's outbox table (`id`, `aggregatetype`, `aggregateid`, `type`, `payload`),
    /// sent as Debezium's outbox event router sends it by default.
    Debezium,
}

/// The columns the relay itself reads and writes, whatever the layout:
/// `migrate --adopt` adds those a table lacks.
pub const RELAY_COLUMNS: [&str; 7] = [
    "status",
    "attempts",
    "next_attempt_at",
    "last_attempt_at",
    "last_error",
    "published_at",
    "created_at",
];

/// One piece of a topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(String),
    Column(String),
}

/// Where the topic comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicSource {
    Column(String),
    Template(Vec<TemplatePart>),
}

/// A layout as requested on the command line, not yet checked against the
/// table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub preset: Preset,
    pub topic: TopicSource,
    pub columns: BTreeMap<Role, String>,
    /// Header name -> column, sent as extra headers.
    pub header_columns: Vec<(String, String)>,
}

/// A mistake in the layout flags or a layout the table cannot satisfy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayoutError(pub String);

fn error(message: impl Into<String>) -> LayoutError {
    LayoutError(message.into())
}

impl Layout {
    /// The preset's columns with `--column`, `--header-column` and
    /// `--topic-template` applied over them.
    pub fn from_flags(
        preset: Preset,
        columns: &[String],
        header_columns: &[String],
        topic_template: Option<&str>,
    ) -> Result<Layout, LayoutError> {
        let mut layout = Layout::preset(preset);
        let (mut mapped, unmapped) = column_flags(columns)?;
        if let Some(template) = topic_template {
            if mapped.contains_key(&Role::Topic) {
                return Err(error(
                    "role topic is mapped twice (--column topic= and --topic-template); use one",
                ));
            }
            layout.topic = TopicSource::Template(parse_template(template)?);
        }
        if let Some(column) = mapped.remove(&Role::Topic) {
            layout.topic = TopicSource::Column(column);
        }
        layout.columns.extend(mapped);
        for role in unmapped {
            layout.columns.remove(&role);
        }
        for flag in header_columns {
            let (header, column) = split_pair("--header-column", flag, "header=column")?;
            check_column_name(flag, column)?;
            if header.is_empty() || !header.chars().all(is_literal_char) || header == "id" {
                return Err(error(format!(
                    "--header-column {flag}: a header name holds letters, digits, '.', '_' or '-' and is not \"id\" (the event id)"
                )));
            }
            if layout.header_columns.iter().any(|(h, _)| h == header) {
                return Err(error(format!(
                    "--header-column: header {header} is mapped twice; map it once"
                )));
            }
            layout
                .header_columns
                .push((header.to_owned(), column.to_owned()));
        }
        Ok(layout)
    }

    pub fn preset(preset: Preset) -> Layout {
        let pairs: &[(Role, &str)] = match preset {
            Preset::Relay => &[
                (Role::Key, "message_key"),
                (Role::Payload, "payload"),
                (Role::Headers, "headers"),
                (Role::EventId, "event_id"),
                (Role::Sequence, "id"),
            ],
            Preset::Debezium => &[
                (Role::Key, "aggregateid"),
                (Role::Payload, "payload"),
                (Role::EventId, "id"),
                (Role::EventType, "type"),
                (Role::Sequence, "outbox_sequence"),
            ],
        };
        let topic = match preset {
            Preset::Relay => TopicSource::Column("topic".to_owned()),
            Preset::Debezium => TopicSource::Template(vec![
                TemplatePart::Text("outbox.event.".to_owned()),
                TemplatePart::Column("aggregatetype".to_owned()),
            ]),
        };
        Layout {
            preset,
            topic,
            columns: pairs.iter().map(|(r, c)| (*r, (*c).to_owned())).collect(),
            header_columns: Vec::new(),
        }
    }

    pub fn column(&self, role: Role) -> Option<&str> {
        self.columns.get(&role).map(String::as_str)
    }

    /// Every application column the layout reads (not the relay's own).
    pub fn application_columns(&self) -> Vec<&str> {
        let mut columns: Vec<&str> = match &self.topic {
            TopicSource::Column(c) => vec![c.as_str()],
            TopicSource::Template(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    TemplatePart::Column(c) => Some(c.as_str()),
                    TemplatePart::Text(_) => None,
                })
                .collect(),
        };
        for role in [Role::Key, Role::Payload, Role::Headers, Role::EventType] {
            columns.extend(self.column(role));
        }
        columns.extend(self.header_columns.iter().map(|(_, c)| c.as_str()));
        let mut seen = Vec::new();
        columns.retain(|c| {
            let new = !seen.contains(c);
            seen.push(c);
            new
        });
        columns
    }

    /// Check the layout against the table's columns (name -> type as
    /// `format_type` prints it) and build the SQL that reads it.
    pub fn resolve(&self, table: &str, types: &ColumnTypes) -> Result<Resolved, LayoutError> {
        let missing_relay: Vec<&str> = RELAY_COLUMNS
            .iter()
            .copied()
            .chain(self.column(Role::Sequence))
            .filter(|c| !types.contains_key(*c))
            .collect();
        let event_id = self.column(Role::EventId);
        self.check_application_columns(table, types, event_id, &missing_relay)?;
        if !missing_relay.is_empty() {
            return Err(error(format!(
                "table {table} lacks the relay's columns {}: run `outbox-relay migrate --adopt` with the same layout flags",
                missing_relay.join(", ")
            )));
        }
        resolve_types(self, table, types)
    }
}

impl Layout {
    /// Fail, naming them, if the table lacks columns the layout reads: the
    /// application's columns and `event_id` (`None` when `migrate --adopt`
    /// adds it). Columns in `skip` are reported elsewhere.
    pub fn check_application_columns(
        &self,
        table: &str,
        types: &ColumnTypes,
        event_id: Option<&str>,
        skip: &[&str],
    ) -> Result<(), LayoutError> {
        let missing: Vec<&str> = self
            .application_columns()
            .into_iter()
            .chain(event_id)
            .filter(|c| !types.contains_key(*c) && !skip.contains(c))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let why = match self.preset {
            Preset::Debezium => {
                " (Debezium's outbox columns: id, aggregatetype, aggregateid, type, payload)"
            }
            Preset::Relay => "",
        };
        Err(error(format!(
            "table {table} has no column {}{why}; map existing columns with --column role=column",
            missing.join(", ")
        )))
    }
}

/// Column name -> type name, as the catalog reports them.
pub type ColumnTypes = BTreeMap<String, String>;

/// How the payload column's bytes become a Kafka value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// `json`/`jsonb`: sent as compact JSON text.
    Json,
    /// `bytea`: sent byte for byte.
    Bytes,
    /// `text`/`varchar`: sent as UTF-8.
    Text,
}

/// A layout checked against a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub payload: PayloadKind,
    pub sql: ColumnSql,
}

/// The SQL expressions the statements in `sql/` select for each role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSql {
    /// The ordering column, quoted.
    pub sequence: String,
    /// The key column as stored (for the per-key check), quoted.
    pub key: String,
    /// The key as the bytes to send: text, varchar and bytea as they are,
    /// anything else as its text form.
    pub key_bytes: String,
    /// The key for people (`dead`): its text form.
    pub key_display: String,
    pub topic: String,
    pub payload: String,
    pub event_id: String,
    pub event_type: String,
    /// A jsonb object: the headers column merged with the header columns.
    pub headers: String,
    /// Declared types for the DDL of the relay's own table (`migrate`).
    pub payload_type: &'static str,
    pub key_type: &'static str,
    /// The DDL makes a table range-partitioned on `created_at` (`migrate
    /// --partition-by`).
    pub partitioned: bool,
}

impl Default for ColumnSql {
    /// The relay's own table, as `migrate` creates it by default.
    fn default() -> Self {
        let mut types = ColumnTypes::new();
        for (column, kind) in [
            ("topic", "text"),
            ("message_key", "text"),
            ("payload", "jsonb"),
            ("headers", "jsonb"),
            ("event_id", "uuid"),
            ("id", "bigint"),
        ] {
            types.insert(column.to_owned(), kind.to_owned());
        }
        resolve_types(&Layout::preset(Preset::Relay), "outbox", &types)
            .expect("the relay's own layout resolves")
            .sql
    }
}

/// The `--column role=column` flags: the roles mapped to a column, and the
/// optional roles mapped to none (`headers=`). Each role once.
fn column_flags(columns: &[String]) -> Result<(BTreeMap<Role, String>, Vec<Role>), LayoutError> {
    let mut mapped = BTreeMap::new();
    let mut unmapped = Vec::new();
    for flag in columns {
        let (role_name, column) = match flag.split_once('=') {
            // `headers=`: the table has no such column.
            Some((role, "")) if OPTIONAL_ROLES.iter().any(|r| r.name() == role) => {
                let role = Role::parse(role).expect("an optional role is a role");
                if unmapped.contains(&role) || mapped.contains_key(&role) {
                    return Err(error(format!(
                        "--column: role {role} is mapped twice; map each role once",
                        role = role.name()
                    )));
                }
                unmapped.push(role);
                continue;
            }
            _ => split_pair("--column", flag, "role=column")?,
        };
        let role = Role::parse(role_name).ok_or_else(|| {
            let roles: Vec<&str> = Role::ALL.iter().map(|(_, n)| *n).collect();
            error(format!(
                "--column {flag}: unknown role {role_name:?}; roles are {}",
                roles.join(", ")
            ))
        })?;
        check_column_name(flag, column)?;
        if mapped.insert(role, column.to_owned()).is_some() || unmapped.contains(&role) {
            return Err(error(format!(
                "--column: role {role_name} is mapped twice; map each role once"
            )));
        }
    }
    Ok((mapped, unmapped))
}

fn resolve_types(
    layout: &Layout,
    table: &str,
    types: &ColumnTypes,
) -> Result<Resolved, LayoutError> {
    let columns = Columns { table, types };
    let payload_column = layout.column(Role::Payload).unwrap_or("payload");
    let payload = columns.payload_kind(payload_column)?;
    let key_column = layout.column(Role::Key).unwrap_or("message_key");
    let (key, key_bytes) = columns.key_sql(key_column)?;
    let sequence = layout.column(Role::Sequence).unwrap_or("id");
    columns.require(
        "sequence",
        sequence,
        &["bigint", "integer"],
        "a bigint column (`migrate --adopt` adds one: map --column sequence=<new column>)",
    )?;
    let event_id = layout.column(Role::EventId).unwrap_or("event_id");
    columns.require(
        "event_id",
        event_id,
        &["uuid", "text", "character varying"],
        "uuid, text or varchar",
    )?;
    let headers = headers_sql(layout, types, table)?;
    Ok(Resolved {
        payload,
        sql: ColumnSql {
            sequence: quote(sequence),
            key_display: format!("{key}::text"),
            key,
            key_bytes,
            topic: topic_sql(&layout.topic),
            payload: quote(payload_column),
            event_id: format!("{}::text", quote(event_id)),
            event_type: match layout.column(Role::EventType) {
                Some(column) if types.contains_key(column) => format!("{}::text", quote(column)),
                _ => "NULL::text".to_owned(),
            },
            headers,
            payload_type: declared(columns.type_of(payload_column)),
            key_type: declared(
                layout
                    .column(Role::Key)
                    .map_or("text", |c| columns.type_of(c)),
            ),
            partitioned: false,
        },
    })
}

/// A table's column types, checked against what each role can carry.
struct Columns<'a> {
    table: &'a str,
    types: &'a ColumnTypes,
}

impl Columns<'_> {
    fn type_of(&self, column: &str) -> &str {
        self.types.get(column).map(String::as_str).unwrap_or("")
    }

    fn unsupported(&self, role: &str, column: &str, allowed: &str) -> LayoutError {
        error(format!(
            "table {}: the {role} column {column} has type {}, which the relay cannot send; use {allowed}",
            self.table,
            self.type_of(column)
        ))
    }

    /// Refuse `column` unless its type is one of `types`.
    fn require(
        &self,
        role: &str,
        column: &str,
        types: &[&str],
        allowed: &str,
    ) -> Result<(), LayoutError> {
        if types.contains(&self.type_of(column)) {
            Ok(())
        } else {
            Err(self.unsupported(role, column, allowed))
        }
    }

    fn payload_kind(&self, column: &str) -> Result<PayloadKind, LayoutError> {
        match self.type_of(column) {
            "jsonb" | "json" => Ok(PayloadKind::Json),
            "bytea" => Ok(PayloadKind::Bytes),
            "text" | "character varying" => Ok(PayloadKind::Text),
            _ => Err(self.unsupported("payload", column, "jsonb, json, bytea, text or varchar")),
        }
    }

    /// The key column as selected, and as bytes for the per-key rule.
    fn key_sql(&self, column: &str) -> Result<(String, String), LayoutError> {
        match self.type_of(column) {
            "text" | "character varying" | "bytea" => Ok((quote(column), quote(column))),
            "uuid" | "smallint" | "integer" | "bigint" => {
                Ok((quote(column), format!("{}::text", quote(column))))
            }
            _ => Err(self.unsupported("key", column, "text, varchar, bytea, uuid or an integer")),
        }
    }
}

fn declared(type_name: &str) -> &'static str {
    match type_name {
        "bytea" => "bytea",
        "json" => "json",
        "jsonb" => "jsonb",
        _ => "text",
    }
}

fn headers_sql(layout: &Layout, types: &ColumnTypes, table: &str) -> Result<String, LayoutError> {
    let base = match layout.column(Role::Headers) {
        None => "'{}'::jsonb".to_owned(),
        Some(column) => match types.get(column).map(String::as_str) {
            Some("jsonb") => format!("coalesce({}, '{{}}'::jsonb)", quote(column)),
            Some("json") => format!("coalesce({}::jsonb, '{{}}'::jsonb)", quote(column)),
            other => {
                return Err(error(format!(
                    "table {table}: the headers column {column} has type {}, which the relay cannot send; use jsonb or json",
                    other.unwrap_or("")
                )))
            }
        },
    };
    if layout.header_columns.is_empty() {
        return Ok(base);
    }
    let pairs: Vec<String> = layout
        .header_columns
        .iter()
        .map(|(header, column)| format!("'{header}', {}::text", quote(column)))
        .collect();
    // A NULL column sends no header rather than an invalid one.
    Ok(format!(
        "({base} || jsonb_strip_nulls(jsonb_build_object({})))",
        pairs.join(", ")
    ))
}

fn topic_sql(topic: &TopicSource) -> String {
    match topic {
        TopicSource::Column(column) => quote(column),
        // `||` yields NULL when a column is NULL: such a row goes dead with
        // "no topic" rather than to a truncated topic.
        TopicSource::Template(parts) => {
            let pieces: Vec<String> = parts
                .iter()
                .map(|part| match part {
                    TemplatePart::Text(text) => format!("'{text}'"),
                    TemplatePart::Column(column) => format!("{}::text", quote(column)),
                })
                .collect();
            format!("({})", pieces.join(" || "))
        }
    }
}

/// `"column"`: the names were checked by [`check_column_name`] or come
/// from the catalog, and quotes are doubled regardless.
pub fn quote(column: &str) -> String {
    format!("\"{}\"", column.replace('"', "\"\""))
}

fn split_pair<'a>(
    flag: &str,
    value: &'a str,
    shape: &str,
) -> Result<(&'a str, &'a str), LayoutError> {
    value
        .split_once('=')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| error(format!("{flag} {value:?}: expected {shape}")))
}

fn check_column_name(flag: &str, column: &str) -> Result<(), LayoutError> {
    let mut chars = column.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && column.len() <= 63 {
        Ok(())
    } else {
        Err(error(format!(
            "{flag}: {column:?} is not a column name; use letters, digits and underscores"
        )))
    }
}

fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// `outbox.event.{aggregatetype}`: text outside braces must be valid in a
/// topic name; braces name columns.
pub fn parse_template(template: &str) -> Result<Vec<TemplatePart>, LayoutError> {
    let bad = |why: &str| {
        error(format!(
            "--topic-template {template:?}: {why}; write e.g. 'outbox.event.{{aggregatetype}}'"
        ))
    };
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest.find('}').ok_or_else(|| bad("a '{' is not closed"))?;
                let column = &rest[1..end];
                check_column_name("--topic-template", column)?;
                parts.push(TemplatePart::Column(column.to_owned()));
                rest = &rest[end + 1..];
            }
            found => {
                let end = found.unwrap_or(rest.len());
                let text = &rest[..end];
                if !text.chars().all(is_literal_char) {
                    return Err(bad(
                        "text outside braces may hold only letters, digits, '.', '_' and '-'",
                    ));
                }
                parts.push(TemplatePart::Text(text.to_owned()));
                rest = &rest[end..];
            }
        }
    }
    if !parts.iter().any(|p| matches!(p, TemplatePart::Column(_))) {
        return Err(bad("it names no column"));
    }
    Ok(parts)
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let preset = match self.preset {
            Preset::Relay => "relay",
            Preset::Debezium => "debezium",
        };
        write!(f, "{preset}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(pairs: &[(&str, &str)]) -> ColumnTypes {
        let mut all: ColumnTypes = RELAY_COLUMNS
            .iter()
            .map(|c| ((*c).to_owned(), "text".to_owned()))
            .collect();
        for (c, t) in pairs {
            all.insert((*c).to_owned(), (*t).to_owned());
        }
        all
    }

    fn debezium_types() -> ColumnTypes {
        types(&[
            ("id", "uuid"),
            ("aggregatetype", "character varying"),
            ("aggregateid", "character varying"),
            ("type", "character varying"),
            ("payload", "jsonb"),
            ("outbox_sequence", "bigint"),
        ])
    }

    #[test]
    fn the_relay_layout_reads_the_relay_columns_as_before() {
        let sql = ColumnSql::default();
        assert_eq!(sql.topic, "\"topic\"");
        assert_eq!(sql.key_bytes, "\"message_key\"");
        assert_eq!(sql.headers, "coalesce(\"headers\", '{}'::jsonb)");
        assert_eq!(sql.sequence, "\"id\"");
    }

    #[test]
    fn debezium_topics_come_from_aggregatetype_and_the_uuid_is_the_event_id() {
        let resolved = Layout::preset(Preset::Debezium)
            .resolve("outbox", &debezium_types())
            .unwrap();
        assert_eq!(
            resolved.sql.topic,
            "('outbox.event.' || \"aggregatetype\"::text)"
        );
        assert_eq!(resolved.sql.event_id, "\"id\"::text");
        assert_eq!(resolved.sql.key_bytes, "\"aggregateid\"");
        assert_eq!(resolved.sql.event_type, "\"type\"::text");
        assert_eq!(resolved.payload, PayloadKind::Json);
    }

    #[test]
    fn a_debezium_table_without_its_columns_is_named() {
        let err = Layout::preset(Preset::Debezium)
            .resolve("outbox", &types(&[("id", "uuid"), ("payload", "jsonb")]))
            .unwrap_err();
        assert!(
            err.0.contains("no column aggregatetype, aggregateid"),
            "{err}"
        );
    }

    #[test]
    fn a_table_without_the_relay_columns_is_sent_to_adopt() {
        let mut t = debezium_types();
        t.remove("status");
        t.remove("outbox_sequence");
        let err = Layout::preset(Preset::Debezium)
            .resolve("o", &t)
            .unwrap_err();
        assert!(err.0.contains("status, outbox_sequence"), "{err}");
        assert!(err.0.contains("migrate --adopt"), "{err}");
    }

    #[test]
    fn keys_other_than_bytes_and_text_are_sent_as_text() {
        for (kind, expected) in [
            ("uuid", "\"k\"::text"),
            ("bigint", "\"k\"::text"),
            ("bytea", "\"k\""),
            ("character varying", "\"k\""),
        ] {
            let layout = Layout::from_flags(Preset::Relay, &["key=k".into()], &[], None).unwrap();
            let t = types(&[
                ("topic", "text"),
                ("k", kind),
                ("payload", "bytea"),
                ("headers", "jsonb"),
                ("event_id", "uuid"),
                ("id", "bigint"),
            ]);
            let resolved = layout.resolve("o", &t).unwrap();
            assert_eq!(resolved.sql.key_bytes, expected, "{kind}");
            assert_eq!(resolved.payload, PayloadKind::Bytes);
        }
    }

    #[test]
    fn unsupported_types_name_the_column_and_its_type() {
        let t = types(&[
            ("topic", "text"),
            ("message_key", "timestamp with time zone"),
            ("payload", "jsonb"),
            ("headers", "jsonb"),
            ("event_id", "uuid"),
            ("id", "bigint"),
        ]);
        let err = Layout::preset(Preset::Relay).resolve("o", &t).unwrap_err();
        assert!(
            err.0
                .contains("key column message_key has type timestamp with time zone"),
            "{err}"
        );
        let mut t = t;
        t.insert("message_key".into(), "text".into());
        t.insert("payload".into(), "xml".into());
        let err = Layout::preset(Preset::Relay).resolve("o", &t).unwrap_err();
        assert!(
            err.0.contains("payload column payload has type xml"),
            "{err}"
        );
    }

    #[test]
    fn flags_are_checked() {
        let flags = |c: &[&str], h: &[&str], t: Option<&str>| {
            let c: Vec<String> = c.iter().map(|s| (*s).to_owned()).collect();
            let h: Vec<String> = h.iter().map(|s| (*s).to_owned()).collect();
            Layout::from_flags(Preset::Relay, &c, &h, t).map_err(|e| e.0)
        };
        assert!(flags(&["key=a", "key=b"], &[], None)
            .unwrap_err()
            .contains("mapped twice"));
        assert!(flags(&["topic=a"], &[], Some("x.{b}"))
            .unwrap_err()
            .contains("mapped twice"));
        assert!(flags(&["colour=a"], &[], None)
            .unwrap_err()
            .contains("unknown role"));
        assert!(flags(&["key=a\"b"], &[], None)
            .unwrap_err()
            .contains("not a column name"));
        assert!(flags(&[], &["x'y=c"], None)
            .unwrap_err()
            .contains("header name"));
        assert!(flags(&[], &["id=c"], None)
            .unwrap_err()
            .contains("header name"));
        assert!(flags(&[], &[], Some("a'b.{c}")).is_err());
        assert!(flags(&[], &[], Some("a.{c")).is_err());
        assert!(flags(&[], &[], Some("static"))
            .unwrap_err()
            .contains("names no column"));
        let layout = flags(
            &["payload=body"],
            &["type=kind"],
            Some("{tenant}.{kind}-v1"),
        )
        .unwrap();
        assert_eq!(layout.column(Role::Payload), Some("body"));
        assert_eq!(
            layout.application_columns(),
            ["tenant", "kind", "message_key", "body", "headers"]
        );
    }

    #[test]
    fn header_columns_join_the_headers_object() {
        let layout =
            Layout::from_flags(Preset::Debezium, &[], &["type=type".into()], None).unwrap();
        let resolved = layout.resolve("o", &debezium_types()).unwrap();
        assert_eq!(
            resolved.sql.headers,
            "('{}'::jsonb || jsonb_strip_nulls(jsonb_build_object('type', \"type\"::text)))"
        );
    }
}
