//! The outbox table's name, parsed once from `--table`.
//!
//! Guarantees: a `TableName` is a valid, unambiguous identifier (optionally
//! schema-qualified) whose quoted form can be placed in SQL text safely. Only
//! identifiers are ever spliced into SQL this way; values always travel as
//! bind parameters.

use std::fmt;
use std::str::FromStr;

/// Longest bare table name: PostgreSQL truncates identifiers at 63 bytes and
/// the longest derived index name adds `_pending_key_idx`.
const MAX_NAME_LEN: usize = 63 - "_pending_key_idx".len();

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    schema: Option<String>,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid table name {value:?}: {reason}; use `name` or `schema.name` with letters, digits and underscores")]
pub struct InvalidTableName {
    value: String,
    reason: &'static str,
}

impl TableName {
    /// The bare table name, used to derive constraint and index names.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `"schema"."name"` or `"name"`, ready for SQL text.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{}\"", self.name),
            None => format!("\"{}\"", self.name),
        }
    }

    /// The quoted name of an object living beside the table, such as the
    /// `<table>_enqueue` function: same schema, name plus `_suffix`.
    pub fn quoted_sibling(&self, suffix: &str) -> String {
        let sibling = format!("{}_{suffix}", self.name);
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{sibling}\""),
            None => format!("\"{sibling}\""),
        }
    }

    /// The channel the optional NOTIFY trigger signals on for this table.
    pub fn notify_channel(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl FromStr for TableName {
    type Err = InvalidTableName;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidTableName {
            value: value.to_owned(),
            reason,
        };
        let (schema, name) = match value.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, value),
        };
        if let Some(schema) = schema {
            check_identifier(schema).map_err(invalid)?;
        }
        check_identifier(name).map_err(invalid)?;
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("the table name is longer than 47 characters"));
        }
        Ok(TableName {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }
}

fn check_identifier(part: &str) -> Result<(), &'static str> {
    let mut chars = part.chars();
    match chars.next() {
        None => return Err("a name part is empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err("a name part must start with a letter or underscore")
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("a name part may hold only letters, digits and underscores");
    }
    if part.len() > 63 {
        return Err("a name part is longer than 63 characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_quoted_without_schema() {
        let table: TableName = "outbox".parse().unwrap();
        assert_eq!(table.quoted(), "\"outbox\"");
        assert_eq!(table.quoted_sibling("enqueue"), "\"outbox_enqueue\"");
        assert_eq!(table.to_string(), "outbox");
    }

    #[test]
    fn a_schema_qualified_name_quotes_both_parts() {
        let table: TableName = "app.events".parse().unwrap();
        assert_eq!(table.quoted(), "\"app\".\"events\"");
        assert_eq!(
            table.quoted_sibling("enqueue"),
            "\"app\".\"events_enqueue\""
        );
        assert_eq!(table.name(), "events");
        assert_eq!(table.notify_channel(), "app.events");
    }

    #[test]
    fn names_that_could_break_out_of_quotes_are_rejected() {
        for bad in [
            "", "a.b.c", "out\"box", "1outbox", "out box", "a.", ".a", "x;drop",
        ] {
            assert!(bad.parse::<TableName>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn overlong_names_are_rejected() {
        assert!("a".repeat(47).parse::<TableName>().is_ok());
        assert!("a".repeat(48).parse::<TableName>().is_err());
    }
}
