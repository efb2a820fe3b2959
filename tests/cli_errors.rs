//! A user's mistake gets one clear line naming the problem and the fix, and
//! a non-zero exit, never a panic.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{free_port, TestEnv, BINARY};

fn run(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_remove("OUTBOX_DATABASE_URL")
        .env_remove("OUTBOX_KAFKA_BROKERS")
        .output()
        .expect("run outbox-relay")
}

/// `run` against `url` and `table`, as far as it gets.
fn run_against(url: &str, table: &str, brokers: &str) -> Output {
    run(&[
        "run",
        "--database-url",
        url,
        "--table",
        table,
        "--kafka-brokers",
        brokers,
        "--metrics-addr",
        "127.0.0.1:0",
    ])
}

/// A runtime error: exit 1, exactly one line on stderr, containing `needle`.
fn assert_one_line_error(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in: {stderr}");
}

/// A usage error from the command line parser: exit 2, first line names it.
fn assert_usage_error(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains(needle),
        "{needle:?} not in: {stderr}"
    );
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    assert_usage_error(&run(&["run", "--bogus"]), "--bogus");
}

#[test]
fn a_malformed_kafka_option_is_a_usage_error() {
    let output = run(&[
        "run",
        "--database-url",
        "postgres://x@127.0.0.1/x",
        "--kafka-brokers",
        "127.0.0.1:9092",
        "--kafka-option",
        "linger.ms",
    ]);
    assert_usage_error(&output, "KEY=VALUE");
}

#[test]
fn an_empty_broker_list_names_the_flag() {
    let output = run(&[
        "run",
        "--database-url",
        "postgres://x@127.0.0.1/x",
        "--kafka-brokers",
        "",
    ]);
    assert_one_line_error(&output, "invalid --kafka-brokers");
}

#[test]
fn an_unreachable_database_names_the_url_flag() {
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let output = run(&["status", "--database-url", &url]);
    assert_one_line_error(&output, "cannot connect to PostgreSQL");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--database-url"));
}

#[test]
fn a_bad_database_url_names_the_flag() {
    assert_one_line_error(
        &run(&["status", "--database-url", "postgres://:x:@/"]),
        "--database-url",
    );
}

#[test]
fn a_wrong_password_names_the_login() {
    let pg = common::private_pg::PrivatePostgres::start(20);
    let output = run(&[
        "status",
        "--database-url",
        &pg.url_with_password("not-the-password"),
    ]);
    assert_one_line_error(&output, "refused the login");
    assert!(String::from_utf8_lossy(&output.stderr).contains("password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_points_to_migrate() {
    let output = run(&[
        "status",
        "--database-url",
        &common::database_url(),
        "--table",
        "no_such_schema.outbox",
    ]);
    assert_one_line_error(&output, "run `outbox-relay migrate`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_librdkafka_option_is_reported() {
    let env = TestEnv::new().await;
    let output = env
        .command(&[
            "run",
            "--kafka-brokers",
            &env.brokers,
            "--kafka-option",
            "no.such.option=s3cret",
        ])
        .output()
        .unwrap();
    assert_one_line_error(
        &output,
        "option no.such.option: No such configuration property",
    );
    // Neither the value (it may be a secret) nor a dangling "key value".
    assert!(!String::from_utf8_lossy(&output.stderr).contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_broker_port_fails_within_the_startup_timeout() {
    let env = TestEnv::new().await;
    let brokers = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let output = env
        .command(&[
            "run",
            "--kafka-brokers",
            &brokers,
            "--kafka-startup-timeout-secs",
            "2",
        ])
        .output()
        .unwrap();
    assert_one_line_error(&output, "no Kafka broker answered");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn every_subcommand_explains_itself() {
    for sub in ["migrate", "run", "status", "requeue", "prune"] {
        let output = run(&[sub, "--help"]);
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            help.contains("--database-url"),
            "{sub} --help lacks --database-url"
        );
        assert!(
            help.contains("OUTBOX_DATABASE_URL"),
            "{sub} --help lacks the env var"
        );
    }
}

#[test]
fn a_bad_boolean_in_the_environment_names_the_variable() {
    let output = Command::new(BINARY)
        .args([
            "run",
            "--database-url",
            "postgres://x@127.0.0.1/x",
            "--kafka-brokers",
            "a:1",
        ])
        .env("OUTBOX_NO_LISTEN", "maybe")
        .output()
        .unwrap();
    assert_usage_error(&output, "environment variable OUTBOX_NO_LISTEN");
    // 1/0/true/false/yes/no/on/off are all booleans.
    for value in ["1", "0", "true", "false", "yes", "no", "on", "off"] {
        let output = Command::new(BINARY)
            .args(["migrate", "--print-sql"])
            .env("OUTBOX_NOTIFY_TRIGGER", value)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{value}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let sql = String::from_utf8_lossy(&output.stdout);
        let on = ["1", "true", "yes", "on"].contains(&value);
        assert_eq!(sql.contains("outbox_notify"), on, "{value}");
    }
}

#[test]
fn out_of_range_values_are_usage_errors() {
    let base = [
        "run",
        "--database-url",
        "postgres://x@127.0.0.1/x",
        "--kafka-brokers",
        "a:1",
    ];
    assert_usage_error(
        &run(&[&base[..], &["--batch-size", "0"]].concat()),
        "--batch-size",
    );
    assert_usage_error(
        &run(&[&base[..], &["--max-attempts", "0"]].concat()),
        "--max-attempts",
    );
    assert_usage_error(
        &run(&[&base[..], &["--metrics-addr", "9874"]].concat()),
        "--metrics-addr",
    );
    let help = run(&["run", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("1 to 50000"));
}

#[tokio::test]
async fn a_busy_metrics_port_suggests_a_different_free_one() {
    let env = TestEnv::new().await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let output = env
        .command(&[
            "run",
            "--kafka-brokers",
            &env.brokers,
            "--metrics-addr",
            &busy_addr,
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let log = String::from_utf8_lossy(&output.stderr);
    let line = log.lines().last().unwrap_or_default();
    assert!(
        line.contains(&format!(
            "cannot serve metrics on --metrics-addr {busy_addr}"
        )),
        "{log}"
    );
    let suggested = line.rsplit("e.g. ").next().unwrap_or_default().trim();
    assert_ne!(suggested, busy_addr, "{line}");
    assert!(suggested.starts_with("127.0.0.1:"), "{line}");
}

#[tokio::test]
async fn a_role_without_update_is_named_at_start_up_with_the_grant() {
    let pg = common::private_pg::PrivatePostgres::start(20);
    let env = TestEnv::on(&pg.relay_url()).await;
    pg.psql("CREATE ROLE reader LOGIN PASSWORD 'reader'");
    pg.query(
        "app",
        &format!(
            "GRANT USAGE ON SCHEMA {} TO reader",
            env.table.split('.').next().unwrap()
        ),
    );
    pg.query("app", &format!("GRANT SELECT ON {} TO reader", env.table));
    let reader = format!("postgres://reader:reader@127.0.0.1:{}/app", pg.port);
    let output = run_against(&reader, &env.table, &env.brokers);
    assert_one_line_error(
        &output,
        &format!("role reader lacks UPDATE on table {}", env.table),
    );
    assert_one_line_error(
        &output,
        &format!("GRANT SELECT, UPDATE ON {} TO reader", env.table),
    );
}

#[tokio::test]
async fn a_table_that_is_not_an_outbox_is_named_at_start_up() {
    let env = TestEnv::new().await;
    let other = format!("{}_other", env.table);
    env.client
        .batch_execute(&format!(
            "CREATE TABLE {other} (id bigint, topic text, status text)"
        ))
        .await
        .unwrap();
    let output = run_against(&env.database_url, &other, &env.brokers);
    assert_one_line_error(&output, "has no column message_key, payload, headers");
    assert_one_line_error(&output, "--column role=column");
}

/// Every layout mistake is one line at start-up, exit 1, naming the column.
#[tokio::test]
async fn layout_mistakes_are_named_at_start_up() {
    let env = TestEnv::new().await;
    env.client
        .batch_execute(&format!("ALTER TABLE {} ADD COLUMN body xml", env.table))
        .await
        .unwrap();
    let run_with = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--database-url",
            &env.database_url,
            "--table",
            &env.table,
            "--kafka-brokers",
            &env.brokers,
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    for (extra, needle) in [
        (&["--column", "key=nope"][..], "has no column nope"),
        (
            &["--column", "key=message_key", "--column", "key=topic"][..],
            "role key is mapped twice",
        ),
        (
            &["--column", "payload=body"][..],
            "the payload column body has type xml",
        ),
        (
            &["--column", "key=created_at"][..],
            "the key column created_at has type timestamp with time zone",
        ),
        (
            &["--column", "topic=", "--topic-template", "x.{nope}"][..],
            "--column",
        ),
        (&["--topic-template", "x.{nope}"][..], "has no column nope"),
        (&["--topic-template", "x y.{topic}"][..], "--topic-template"),
        (
            &["--layout", "debezium"][..],
            "has no column aggregatetype, aggregateid, type",
        ),
    ] {
        assert_one_line_error(&run_with(extra), needle);
    }
    // And `migrate` without --adopt refuses a layout it would not create.
    let output = run(&[
        "migrate",
        "--database-url",
        &env.database_url,
        "--table",
        &env.table,
        "--layout",
        "debezium",
    ]);
    assert_one_line_error(&output, "add --adopt");
}

/// A configuration file in the test's directory.
fn config_file(env: &TestEnv, text: &str) -> String {
    let path = env
        .dir
        .path()
        .join(format!("{}.toml", common::unique_name("c")));
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("UTF-8").to_owned()
}

fn source(env: &TestEnv, table: &str) -> String {
    format!(
        "[[source]]\ndatabase_url = \"{}\"\n[[source.table]]\nname = \"{table}\"\n",
        env.database_url
    )
}

#[tokio::test]
async fn an_unknown_key_in_the_config_file_names_file_line_and_key() {
    let env = TestEnv::new().await;
    let text = format!(
        "[kafka]\nbrokers = \"{}\"\n{}bacth_size = 10\n",
        env.brokers,
        source(&env, &env.table)
    );
    let file = config_file(&env, &text);
    for command in [
        vec!["config", "check", file.as_str()],
        vec![
            "run",
            "--config",
            file.as_str(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    ] {
        let output = run(&command);
        assert_one_line_error(&output, &format!("{file}:7: bacth_size: unknown field"));
    }
}

#[tokio::test]
async fn a_pattern_that_matches_nothing_is_a_warning_not_an_error() {
    let env = TestEnv::new().await;
    let file = config_file(&env, &source(&env, "nobody_here_*.outbox"));
    let output = run(&["config", "check", &file]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: {file}:4: pattern nobody_here_*.outbox matches no table yet"
        )),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("0 tables match now"), "{stdout}");
}

#[tokio::test]
async fn two_sources_naming_the_same_table_are_refused() {
    let env = TestEnv::new().await;
    let text = format!("{}{}", source(&env, &env.table), source(&env, &env.table));
    let file = config_file(&env, &text);
    let output = run(&["config", "check", &file]);
    assert_one_line_error(
        &output,
        &format!("{file}:8: source.table.name: table {}", env.table),
    );
    assert_one_line_error(&output, "already listed at line 4");
    // A pattern and a name that resolve to the same table: found when the
    // tables are.
    let schema = env.table.split('.').next().expect("schema");
    let text = format!(
        "{}{}",
        source(&env, &env.table),
        source(&env, &format!("{schema}.out*"))
    );
    let file = config_file(&env, &text);
    let output = run(&["config", "check", &file]);
    assert_one_line_error(&output, "is named by two sources (line 4 and line 8)");
}

#[test]
fn an_unreadable_config_file_is_named() {
    let output = run(&["config", "check", "/nonexistent/relay.toml"]);
    assert_one_line_error(
        &output,
        "/nonexistent/relay.toml: cannot read the configuration file",
    );
}

#[tokio::test]
async fn config_check_prints_what_the_file_resolves_to() {
    let env = TestEnv::new().await;
    let schema = env.table.split('.').next().expect("schema");
    let text = format!(
        "{}[[source.table]]\nname = \"{schema}.o*\"\n",
        source(&env, "public.nothing_named_so")
    );
    // A missing named table is an error (run would not start).
    let file = config_file(&env, &text);
    let output = run(&["config", "check", &file]);
    assert_one_line_error(
        &output,
        &format!("{file}:4: table public.nothing_named_so does not exist"),
    );
    let file = config_file(&env, &source(&env, &format!("{schema}.o*")));
    let output = run(&["config", "check", &file]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("{schema}.o*  line 4: 1 tables match now")),
        "{stdout}"
    );
}

#[tokio::test]
async fn commands_of_one_table_refuse_a_pattern_with_an_example() {
    let env = TestEnv::new().await;
    for command in ["dead", "requeue", "prune"] {
        let mut args = vec![
            command,
            "--database-url",
            env.database_url.as_str(),
            "--table",
            "tenant_*.outbox",
        ];
        match command {
            "requeue" => args.push("--all"),
            "prune" => args.extend(["--older-than", "1h"]),
            _ => {}
        }
        let output = run(&args);
        assert_one_line_error(&output, "--table tenant_*.outbox is a pattern, and this command works on one table; name one, e.g. --table tenant_1.outbox");
    }
}
