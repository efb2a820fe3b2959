//! One test's own outbox table, in a schema of its own that is dropped when
//! the test ends, with a client and helpers to write and watch rows.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{
    assert_success, binary, brokers, connect, create_topic, database_url, free_port, try_connect,
    unique_name, wait_for, RelayProcess,
};

/// A row for [`TestEnv::insert`].
#[derive(Debug, Clone)]
pub struct NewRow {
    pub topic: String,
    pub key: Option<String>,
    pub payload: Option<Value>,
    pub headers: Value,
}

impl NewRow {
    pub fn new(topic: &str, key: Option<&str>, payload: Value) -> Self {
        NewRow {
            topic: topic.to_owned(),
            key: key.map(str::to_owned),
            payload: Some(payload),
            headers: serde_json::json!({}),
        }
    }
}

/// How many rows [`TestEnv::wait_for_status`] waits for.
#[derive(Debug, Clone, Copy)]
pub enum Count {
    Exactly(i64),
    AtLeast(i64),
}

/// One test's own outbox table (in its own schema) and database client.
pub struct TestEnv {
    pub database_url: String,
    /// What the relay is given as `--database-url` (by default the same).
    pub relay_database_url: String,
    pub brokers: String,
    pub table: String,
    pub client: tokio_postgres::Client,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::on(&database_url()).await
    }

    /// A fresh schema on the database at `database_url`, migrated.
    pub async fn on(database_url: &str) -> Self {
        let env = Self::bare(database_url).await;
        let output = env.command(&["migrate"]).output().expect("run migrate");
        assert_success(&output, "migrate");
        env
    }

    /// A fresh schema whose table is migrated for `sink` (its topic rule).
    pub async fn for_sink(sink: &str) -> Self {
        let env = Self::bare(&database_url()).await;
        let output = env
            .command(&["migrate", "--sink", sink])
            .output()
            .expect("run migrate");
        assert_success(&output, "migrate");
        env
    }

    /// A fresh schema with nothing in it: `table` names a table the test
    /// creates itself.
    pub async fn bare(database_url: &str) -> Self {
        let database_url = database_url.to_owned();
        let schema = unique_name("t");
        let table = format!("{schema}.outbox");
        let client = connect(&database_url).await;
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create schema");
        TestEnv {
            relay_database_url: database_url.clone(),
            database_url,
            brokers: brokers(),
            table,
            client,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A new client, after the database restarted under the old one.
    pub async fn reconnect(&mut self) {
        self.client = wait_for(
            "the database to accept connections",
            Duration::from_secs(60),
            || try_connect(&self.database_url),
        )
        .await;
    }

    /// `outbox-relay <args> --database-url … --table …`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .args(args)
            .args([
                "--database-url",
                &self.relay_database_url,
                "--table",
                &self.table,
            ])
            .env_remove("OUTBOX_DATABASE_URL")
            .env_remove("OUTBOX_KAFKA_BROKERS");
        command
    }

    pub async fn create_topic(&self, partitions: i32) -> String {
        let topic = unique_name("topic");
        create_topic(&self.brokers, &topic, partitions).await;
        topic
    }

    /// Insert rows in one committed transaction; returns (id, event_id).
    pub async fn insert(&self, rows: &[NewRow]) -> Vec<(i64, String)> {
        let topics: Vec<&str> = rows.iter().map(|r| r.topic.as_str()).collect();
        let keys: Vec<Option<&str>> = rows.iter().map(|r| r.key.as_deref()).collect();
        let payloads: Vec<Option<Value>> = rows.iter().map(|r| r.payload.clone()).collect();
        let headers: Vec<Value> = rows.iter().map(|r| r.headers.clone()).collect();
        let sql = format!(
            "INSERT INTO {} (topic, message_key, payload, headers)
             SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::jsonb[])
             RETURNING id, event_id::text",
            self.table
        );
        self.client
            .query(&sql, &[&topics, &keys, &payloads, &headers])
            .await
            .expect("insert rows")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    pub async fn count(&self, status: &str) -> i64 {
        count_in(&self.client, &self.table, status).await
    }

    /// (status, attempts, last_error) of one row.
    pub async fn row_state(&self, id: i64) -> (String, i32, Option<String>) {
        let sql = format!(
            "SELECT status, attempts, last_error FROM {} WHERE id = $1",
            self.table
        );
        let row = self
            .client
            .query_one(&sql, &[&id])
            .await
            .expect("row state");
        (row.get(0), row.get(1), row.get(2))
    }

    /// Keep a copy of every committed row's (id, event_id) in
    /// `<schema>.committed`, for checks on a table whose rows the relay
    /// deletes (`--on-publish delete`). Returns the copy's name. A rolled-back
    /// insert leaves no copy: the trigger runs in the inserting transaction.
    pub async fn keep_copies(&self) -> String {
        let schema = self.table.split_once('.').expect("schema-qualified").0;
        let copies = format!("{schema}.committed");
        self.client
            .batch_execute(&format!(
                "CREATE TABLE {copies} (id bigint, event_id text);
                 CREATE FUNCTION {schema}.keep_copy() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     INSERT INTO {copies} VALUES (NEW.id, NEW.event_id::text);
                     RETURN NULL;
                 END $$;
                 CREATE TRIGGER keep_copy AFTER INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {schema}.keep_copy();",
                self.table
            ))
            .await
            .expect("copy trigger");
        copies
    }

    /// A `BEFORE UPDATE` trigger on the table whose PL/pgSQL `body` runs for
    /// every updated row, as an application's own rule would.
    pub async fn add_update_trigger(&self, name: &str, body: &str) {
        let schema = self.table.split_once('.').expect("schema-qualified").0;
        self.client
            .batch_execute(&format!(
                "CREATE FUNCTION {schema}.{name}() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN {body} END $$;
                 CREATE TRIGGER {name} BEFORE UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {schema}.{name}();",
                self.table
            ))
            .await
            .expect("update trigger");
    }

    /// Drop the topic-name CHECK, as on a table an older version migrated,
    /// so a row with an invalid topic can be written and reach the relay.
    pub async fn drop_topic_check(&self) {
        let name = self.table.rsplit('.').next().unwrap();
        let sql = format!(
            "ALTER TABLE {} DROP CONSTRAINT {name}_topic_valid",
            self.table
        );
        self.client
            .batch_execute(&sql)
            .await
            .expect("drop the topic check");
    }

    /// The one status waiter: until the number of rows in `status` matches.
    pub async fn wait_for_status(&self, status: &str, expected: Count, timeout: Duration) {
        wait_for_status_in(&self.client, &self.table, status, expected, timeout).await;
    }

    /// Start `outbox-relay run` against this table.
    pub fn start_relay(&self, extra: &[&str]) -> RelayProcess {
        self.start_relay_with_brokers(&self.brokers, extra)
    }

    pub fn start_relay_with_brokers(&self, brokers: &str, extra: &[&str]) -> RelayProcess {
        let mut command = self.command(&["run"]);
        command.args(["--kafka-brokers", brokers]).args(extra);
        self.spawn_relay(command)
    }

    /// Start `outbox-relay run --database-url … --table … <args>`: the
    /// sink's flags come from `args`.
    pub fn start_relay_args(&self, args: &[String]) -> RelayProcess {
        let mut command = self.command(&["run"]);
        command.args(args);
        self.spawn_relay(command)
    }

    /// Start `outbox-relay run <args>`: the databases, tables and brokers
    /// come from `args` (a `--config` file, a pattern).
    pub fn start_relay_bare(&self, args: &[&str]) -> RelayProcess {
        let mut command = Command::new(binary());
        command
            .arg("run")
            .args(args)
            .env_remove("OUTBOX_DATABASE_URL")
            .env_remove("OUTBOX_TABLE")
            .env_remove("OUTBOX_KAFKA_BROKERS");
        self.spawn_relay(command)
    }

    /// Start `outbox-relay run` on `table` (a name or a pattern) in this
    /// test's database, with `extra` flags.
    pub fn start_relay_for(&self, table: &str, extra: &[&str]) -> RelayProcess {
        let mut args = vec![
            "--database-url",
            self.database_url.as_str(),
            "--table",
            table,
            "--kafka-brokers",
            self.brokers.as_str(),
        ];
        args.extend(extra);
        self.start_relay_bare(&args)
    }

    /// Spawn a `run` command with a free metrics port, the test defaults
    /// and its log in the test's directory.
    fn spawn_relay(&self, mut command: Command) -> RelayProcess {
        let log = self
            .dir
            .path()
            .join(format!("relay-{}.log", unique_name("r")));
        let log_file = std::fs::File::create(&log).expect("log file");
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let child = command
            .args(["--metrics-addr", &metrics_addr])
            // Test defaults by environment, so a test's own flags win.
            .env("OUTBOX_POLL_INTERVAL_MS", "100")
            .env("OUTBOX_STATS_INTERVAL_MS", "200")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start relay");
        RelayProcess {
            child,
            metrics_addr,
            log,
        }
    }
}

/// Rows of `table` in `status`.
pub async fn count_in(client: &tokio_postgres::Client, table: &str, status: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table} WHERE status = $1");
    client
        .query_one(&sql, &[&status])
        .await
        .expect("count")
        .get(0)
}

/// Wait until `table` holds `expected` rows in `status`.
pub async fn wait_for_status_in(
    client: &tokio_postgres::Client,
    table: &str,
    status: &str,
    expected: Count,
    timeout: Duration,
) {
    let what = format!("{expected:?} rows {status} in {table}");
    wait_for(&what, timeout, || async {
        let count = count_in(client, table, status).await;
        let done = match expected {
            Count::Exactly(n) => count == n,
            Count::AtLeast(n) => count >= n,
        };
        done.then_some(())
    })
    .await;
}

impl Drop for TestEnv {
    /// Drop the test's schema, and its table, functions and trigger with it.
    fn drop(&mut self) {
        let Some((schema, _)) = self.table.split_once('.') else {
            return;
        };
        run_from_drop(
            &self.database_url,
            format!("SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {schema} CASCADE"),
        );
    }
}

/// Run `sql` on `url` from a `Drop` (which cannot await: a thread with a
/// runtime of its own can), ignoring failures.
pub fn run_from_drop(url: &str, sql: String) {
    let url = url.to_owned();
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let client = try_connect(&url).await?;
            client.batch_execute(&sql).await.ok()
        })
    });
    let _ = dropped.join();
}
