//! `--table` as the user writes it: one table (`app.outbox`) or a pattern
//! (`tenant_*.outbox`) that names every table it matches, now and later.
//!
//! Guarantees: a pattern holds only identifier characters and the
//! wildcards `*` (any run of characters) and `?` (one character); it
//! reaches SQL as a bind parameter (a `LIKE` pattern with `_` and `%`
//! escaped), never as text. A pattern without a schema matches in the
//! schemas of the role's `search_path`, as an unqualified name does.

use std::fmt;
use std::str::FromStr;

use crate::source::table::{InvalidTableName, TableName};

/// One table, or every table a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSelector {
    Name(TableName),
    Pattern(TablePattern),
}

/// A glob over `schema.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    schema: Option<String>,
    name: String,
}

impl TableSelector {
    /// The one table this names; for a pattern, an error saying the
    /// command works on one table.
    pub fn single(&self) -> Result<&TableName, crate::error::Error> {
        match self {
            TableSelector::Name(table) => Ok(table),
            TableSelector::Pattern(pattern) => Err(crate::error::Error::InvalidConfig(format!(
                "--table {pattern} is a pattern, and this command works on one table; name one, e.g. --table {}",
                pattern.example()
            ))),
        }
    }

    pub fn is_pattern(&self) -> bool {
        matches!(self, TableSelector::Pattern(_))
    }
}

impl TablePattern {
    /// The `LIKE` patterns of the schema (`None`: the search path) and the
    /// name, with `LIKE`'s own wildcards escaped.
    pub fn like(&self) -> (Option<String>, String) {
        (self.schema.as_deref().map(to_like), to_like(&self.name))
    }

    /// Whether `schema.name` matches (a pattern without a schema matches
    /// any schema here; the search path is applied by the query).
    pub fn matches(&self, schema: &str, name: &str) -> bool {
        self.schema
            .as_deref()
            .is_none_or(|pattern| glob_matches(pattern, schema))
            && glob_matches(&self.name, name)
    }

    /// A name this pattern could match, for messages.
    fn example(&self) -> String {
        self.to_string().replace(['*', '?'], "1")
    }
}

fn to_like(glob: &str) -> String {
    let mut like = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => like.push('%'),
            '?' => like.push('_'),
            '_' | '%' | '\\' => {
                like.push('\\');
                like.push(c);
            }
            c => like.push(c),
        }
    }
    like
}

fn glob_matches(glob: &str, text: &str) -> bool {
    let (glob, text): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some('*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((star_g, star_t)) => {
                    g = star_g + 1;
                    t = star_t + 1;
                    star = Some((star_g, star_t + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == '*')
}

impl FromStr for TableSelector {
    type Err = InvalidTableName;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if !value.contains(['*', '?']) {
            return value.parse().map(TableSelector::Name);
        }
        // Check the shape as a name, with each wildcard standing for a letter.
        value
            .replace(['*', '?'], "x")
            .parse::<TableName>()
            .map_err(|_| {
                InvalidTableName::new(
                value,
                "a pattern may hold only letters, digits, underscores and the wildcards * and ?",
            )
            })?;
        let (schema, name) = match value.split_once('.') {
            Some((schema, name)) => (Some(schema.to_owned()), name.to_owned()),
            None => (None, value.to_owned()),
        };
        Ok(TableSelector::Pattern(TablePattern { schema, name }))
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl fmt::Display for TableSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableSelector::Name(table) => table.fmt(f),
            TableSelector::Pattern(pattern) => pattern.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> TablePattern {
        match text.parse().unwrap() {
            TableSelector::Pattern(pattern) => pattern,
            TableSelector::Name(name) => panic!("{name} parsed as a name"),
        }
    }

    #[test]
    fn names_without_wildcards_stay_names() {
        assert!(matches!(
            "app.outbox".parse::<TableSelector>().unwrap(),
            TableSelector::Name(_)
        ));
    }

    #[test]
    fn globs_match_as_shells_do() {
        let tenants = pattern("tenant_*.outbox");
        assert!(tenants.matches("tenant_0001", "outbox"));
        assert!(tenants.matches("tenant_", "outbox"));
        assert!(!tenants.matches("tenant_1", "outbox_old"));
        assert!(!tenants.matches("other", "outbox"));
        let any = pattern("app.outbox_?");
        assert!(any.matches("app", "outbox_a"));
        assert!(!any.matches("app", "outbox_ab"));
        assert!(pattern("*").matches("anything", "at_all"));
        assert!(pattern("a*b*c").matches("s", "aXXbYbc"));
    }

    #[test]
    fn like_patterns_escape_likes_own_wildcards() {
        assert_eq!(
            pattern("tenant_*.outbox").like(),
            (Some("tenant\\_%".to_owned()), "outbox".to_owned())
        );
        assert_eq!(pattern("out?ox").like(), (None, "out_ox".to_owned()));
    }

    #[test]
    fn patterns_that_could_break_out_of_quotes_are_rejected() {
        for bad in ["tenant_*.out\"box", "a.b.*", "x*;drop", "*.", "%"] {
            assert!(
                bad.parse::<TableSelector>().is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn one_table_commands_refuse_a_pattern_with_an_example() {
        let error = "tenant_*.outbox"
            .parse::<TableSelector>()
            .unwrap()
            .single()
            .unwrap_err()
            .to_string();
        assert!(error.contains("--table tenant_1.outbox"), "{error}");
    }
}
