//! The backlog: how many rows wait, how old the oldest is, how many are dead.

use serde::Serialize;

use super::queries::{self, OutboxTableSizeParams, TopicBacklog};
use super::Database;
use crate::error::{Error, Result};

/// The backlog overall and per topic (topics with nothing pending or dead
/// are absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_pending_age_seconds: Option<f64>,
    pub dead: i64,
    pub topics: Vec<TopicBacklog>,
}

impl Backlog {
    pub fn from_topics(topics: Vec<TopicBacklog>) -> Self {
        Backlog {
            pending: topics.iter().map(|t| t.pending).sum(),
            dead: topics.iter().map(|t| t.dead).sum(),
            oldest_pending_age_seconds: topics
                .iter()
                .filter_map(|t| t.oldest_pending_age_seconds)
                .reduce(f64::max),
            topics,
        }
    }
}

impl Database {
    pub async fn backlog(&self) -> Result<Backlog> {
        let connection = self.connection().await?;
        let topics = queries::outbox_stats_by_topic(&connection, self.sql())
            .await
            .map_err(|e| Error::database("reading the backlog", &e))?;
        Ok(Backlog::from_topics(topics))
    }

    pub async fn table_size_bytes(&self) -> Result<i64> {
        let connection = self.connection().await?;
        let params = OutboxTableSizeParams {
            quoted_table: &self.table().quoted(),
        };
        queries::outbox_table_size(&connection, self.sql(), params)
            .await
            .map_err(|e| Error::database("reading the table size", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_counts_and_keep_the_oldest_age() {
        let backlog = Backlog::from_topics(vec![
            TopicBacklog {
                topic: "a".into(),
                pending: 3,
                oldest_pending_age_seconds: Some(2.0),
                dead: 1,
            },
            TopicBacklog {
                topic: "b".into(),
                pending: 0,
                oldest_pending_age_seconds: None,
                dead: 4,
            },
            TopicBacklog {
                topic: "c".into(),
                pending: 1,
                oldest_pending_age_seconds: Some(9.5),
                dead: 0,
            },
        ]);
        assert_eq!(backlog.pending, 4);
        assert_eq!(backlog.dead, 5);
        assert_eq!(backlog.oldest_pending_age_seconds, Some(9.5));
    }

    #[test]
    fn an_empty_backlog_has_no_age() {
        let backlog = Backlog::from_topics(Vec::new());
        assert_eq!(backlog.oldest_pending_age_seconds, None);
        assert_eq!(backlog.pending, 0);
    }
}
