//! The outbox table's name, parsed once from `--table`.
//!
//! Guarantees: a `TableName` is a valid, unambiguous identifier (optionally
//! schema-qualified) whose quoted form can be placed in SQL text safely. Only
//! identifiers are ever spliced into SQL this way; values always travel as
//! bind parameters.

use std::fmt;
use std::str::FromStr;

/// Longest table name used as it is in derived object names (`<name>_pkey`,
/// `<name>_pending_key_idx`, ...): what earlier versions allowed, so their
/// objects keep their names. Longer names derive a shortened stem.
const MAX_STEM_LEN: usize = 47;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
const MAX_IDENTIFIER_LEN: usize = 63;

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

impl InvalidTableName {
    pub fn new(value: &str, reason: &'static str) -> Self {
        InvalidTableName {
            value: value.to_owned(),
            reason,
        }
    }
}

impl TableName {
    /// `schema.name` as the catalog spells them (from discovery); an error
    /// for names the relay cannot quote safely.
    pub fn qualified(schema: &str, name: &str) -> Result<Self, InvalidTableName> {
        format!("{schema}.{name}").parse()
    }

    /// The schema, for a schema-qualified name.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The bare table name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stem of derived object names: the name itself when it is short
    /// enough for every suffix to fit in 63 bytes, otherwise a prefix and a
    /// hash of the whole name, so two long names never share objects.
    pub fn stem(&self) -> String {
        shorten(&self.name, MAX_STEM_LEN)
    }

    /// `"schema"."name"` or `"name"`, ready for SQL text.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{}\"", self.name),
            None => format!("\"{}\"", self.name),
        }
    }

    /// `"schema"`, for a schema-qualified name.
    pub fn quoted_schema(&self) -> Option<String> {
        self.schema.as_ref().map(|schema| format!("\"{schema}\""))
    }

    /// The quoted name of an object living beside the table, such as the
    /// `<table>_enqueue` function: same schema, name plus `_suffix`.
    pub fn quoted_sibling(&self, suffix: &str) -> String {
        let sibling = format!("{}_{suffix}", self.stem());
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{sibling}\""),
            None => format!("\"{sibling}\""),
        }
    }

    /// The channel the optional NOTIFY trigger signals on for this table.
    pub fn notify_channel(&self) -> String {
        shorten(&self.to_string(), MAX_IDENTIFIER_LEN)
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
        Ok(TableName {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }
}

/// `text` if it fits in `max` bytes, else its first bytes, `_` and eight hex
/// digits of a hash of all of it (FNV-1a: stable across versions and
/// platforms, unlike `DefaultHasher`). Identifiers here are ASCII, so any
/// byte offset is a character boundary.
fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}_{:08x}", &text[..max - 9], hash as u32)
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
    fn long_names_derive_object_names_that_fit_and_differ() {
        let short: TableName = "a".repeat(47).parse().unwrap();
        assert_eq!(short.stem(), "a".repeat(47));
        let long: TableName = format!("{}x", "a".repeat(62)).parse().unwrap();
        let other: TableName = format!("{}y", "a".repeat(62)).parse().unwrap();
        assert_eq!(long.stem().len(), 47);
        assert_ne!(long.stem(), other.stem());
        assert!(format!("{}_attempts_not_negative", long.stem()).len() <= 69);
        assert!(format!("{}_pending_key_idx", long.stem()).len() <= 63);
        assert!(long.quoted_sibling("enqueue").len() <= 63 + 2);
        let qualified: TableName = format!("{}.{}", "s".repeat(63), "t".repeat(63))
            .parse()
            .unwrap();
        assert_eq!(qualified.notify_channel().len(), 63);
        assert!("a".repeat(64).parse::<TableName>().is_err());
    }
}
