//! The files in `deploy/`, each checked by the real tool that consumes it:
//! hadolint, kubernetes-validate, promtool, systemd-analyze, and a live
//! `/metrics` scrape for the dashboard's and alerts' metric names.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_success, TestEnv};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// A tool from the venv `tests/services.sh install` makes, or from PATH.
fn tool(name: &str) -> PathBuf {
    let venv = std::env::var("OUTBOX_TEST_TOOLS_BIN")
        .unwrap_or_else(|_| "/var/cache/outbox-relay/venv/bin".into());
    let candidate = Path::new(&venv).join(name);
    if candidate.exists() {
        candidate
    } else {
        PathBuf::from(name)
    }
}

/// The example configuration file is one the relay accepts.
#[test]
fn the_example_config_file_passes_config_check() {
    let output = Command::new(common::BINARY)
        .args(["config", "check", "--offline"])
        .arg(deploy("config/relay.toml"))
        .output()
        .expect("run config check");
    let text = assert_success(&output, "config check --offline");
    assert!(text.contains("2 sources"), "{text}");
    assert!(text.contains("tenant_*.outbox"), "{text}");
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let output = Command::new(tool("hadolint"))
        .arg(deploy("Dockerfile"))
        .output()
        .expect("hadolint is installed by tests/services.sh install");
    assert_success(&output, "hadolint");
}

#[test]
fn the_kubernetes_manifests_pass_schema_validation() {
    let output = Command::new(tool("kubernetes-validate"))
        .arg("--strict")
        .arg(deploy("kubernetes/sidecar.yaml"))
        .arg(deploy("kubernetes/deployment.yaml"))
        .output()
        .expect("kubernetes-validate is installed by tests/services.sh install");
    assert_success(&output, "kubernetes-validate");
}

/// Structure checks no schema can make: probes on the right paths, grace
/// period above the relay's shutdown timeout, database URL from a Secret.
#[test]
fn the_kubernetes_manifests_match_the_relay() {
    let script = r#"
import sys, yaml
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]
        spec = pod["spec"]
        relay = next(c for c in spec["containers"] if "outbox-relay" in c["image"])
        env = {e["name"]: e for e in relay["env"]}
        timeout = int(env.get("OUTBOX_SHUTDOWN_TIMEOUT_SECS", {}).get("value", "30"))
        assert spec["terminationGracePeriodSeconds"] > timeout, path
        assert relay["livenessProbe"]["httpGet"]["path"] == "/healthz", path
        assert relay["readinessProbe"]["httpGet"]["path"] == "/readyz", path
        # Secrets come from mounted files, never from values in the spec.
        url = env["OUTBOX_DATABASE_URL"]["value"]
        assert "@" in url and ":" not in url.split("@")[0].split("//")[1], path
        assert "sslmode=verify-full" in url and "sslrootcert=" in url, path
        mounts = {m["mountPath"]: m["name"] for m in relay["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        def mounted(file, kind):
            directory = file.rsplit("/", 1)[0]
            assert directory in mounts, (path, file)
            assert kind in volumes[mounts[directory]], (path, file, kind)
        mounted(env["OUTBOX_DATABASE_PASSWORD_FILE"]["value"], "secret")
        mounted(env["OUTBOX_KAFKA_CONFIG"]["value"], "configMap")
        mounted(url.split("sslrootcert=")[1].split("&")[0], "configMap")
        assert spec["securityContext"]["fsGroup"] == relay["securityContext"]["runAsUser"], path
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true", path
        assert relay["resources"]["limits"]["memory"] and relay["resources"]["requests"]["cpu"], path
        print("ok", path)
"#;
    let output = Command::new(tool("python3"))
        .args(["-c", script])
        .arg(deploy("kubernetes/sidecar.yaml"))
        .arg(deploy("kubernetes/deployment.yaml"))
        .output()
        .expect("python3");
    let stdout = assert_success(&output, "manifest structure check");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
}

#[test]
fn the_alert_rules_pass_promtool_check_and_unit_tests() {
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy("prometheus/alerts.yml"))
        .output()
        .expect("promtool");
    assert_success(&check, "promtool check rules");
    let test = Command::new("promtool")
        .args(["test", "rules"])
        .arg(deploy("prometheus/alerts.test.yml"))
        .output()
        .expect("promtool");
    assert_success(&test, "promtool test rules");
}

#[test]
fn the_compose_prometheus_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(deploy("compose/prometheus.yml")).unwrap();
    let alerts = deploy("prometheus/alerts.yml");
    let config = config.replace("/etc/prometheus/alerts.yml", alerts.to_str().unwrap());
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new("promtool")
        .args(["check", "config"])
        .arg(&path)
        .output()
        .expect("promtool");
    assert_success(&output, "promtool check config");
}

#[test]
fn the_compose_file_has_every_service_and_its_files() {
    let script = r#"
import os, sys, yaml
path = sys.argv[1]
compose = yaml.safe_load(open(path))
services = compose["services"]
for name in ("postgres", "kafka", "migrate", "relay", "prometheus"):
    assert name in services, name
here = os.path.dirname(path)
for name in ("migrate", "relay"):
    build = services[name]["build"]
    assert os.path.exists(os.path.join(here, build["context"], build["dockerfile"])), name
for volume in services["prometheus"]["volumes"]:
    assert os.path.exists(os.path.join(here, volume.split(":")[0])), volume
assert services["relay"]["environment"]["OUTBOX_KAFKA_BROKERS"] == "kafka:9092"
# A consumer on the host reaches Kafka: a listener advertised as localhost,
# on a published port.
kafka = services["kafka"]
advertised = dict(l.split("://") for l in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(","))
host_port = advertised["HOST"].split(":")[1]
assert advertised["HOST"].startswith("localhost:"), advertised
assert f"{host_port}:{host_port}" in kafka["ports"], kafka["ports"]
assert "HOST:PLAINTEXT" in kafka["environment"]["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
print("ok")
"#;
    let output = Command::new(tool("python3"))
        .args(["-c", script])
        .arg(deploy("compose/docker-compose.yml"))
        .output()
        .expect("python3");
    assert_success(&output, "compose structure check");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    // verify insists the ExecStart binary exists: point it at the built one.
    let unit = std::fs::read_to_string(deploy("systemd/outbox-relay.service"))
        .unwrap()
        .replace("/usr/local/bin/outbox-relay", common::BINARY);
    let path = dir.path().join("outbox-relay.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    assert_success(&output, "systemd-analyze verify");
}

/// `outbox_…` metric names used in a file.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(start) = text[i..].find("outbox_").map(|p| p + i) {
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
        let preceded_by_word =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !preceded_by_word {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alerts_use_only_metrics_the_relay_exports() {
    let env = TestEnv::new().await;
    let topic = env.create_topic(1).await;
    let mut relay = env.start_relay(&[]);
    relay.wait_ready().await;
    // Labelled families appear once they have a sample: publish one row.
    env.insert(&[common::NewRow::new(&topic, None, serde_json::json!({}))])
        .await;
    let published = format!("outbox_published_messages_total{{topic=\"{topic}\"}}");
    common::wait_for(
        "a published row in /metrics",
        std::time::Duration::from_secs(30),
        || async { (relay.metric(&published).await == Some(1.0)).then_some(()) },
    )
    .await;
    let (_, body) = relay.get("/metrics").await.expect("scrape");
    let exported: BTreeSet<String> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect();
    // Histogram samples exist once something was observed; their names are
    // fixed by the family that /metrics declares.
    let mut known = exported.clone();
    for line in body
        .lines()
        .filter(|l| l.starts_with("# TYPE ") && l.ends_with(" histogram"))
    {
        let family = line.split_whitespace().nth(2).unwrap();
        for suffix in ["_bucket", "_sum", "_count"] {
            known.insert(format!("{family}{suffix}"));
        }
    }
    for file in ["grafana/outbox-relay.json", "prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(deploy(file)).unwrap();
        let used = metric_names_in(&text);
        assert!(used.len() >= 5, "{file} uses only {used:?}");
        let unknown: Vec<&String> = used.iter().filter(|name| !known.contains(*name)).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the relay does not export: {unknown:?}"
        );
    }
}

#[test]
fn metric_names_are_found_in_text() {
    let names = metric_names_in(
        r#"rate(outbox_published_messages_total[5m]) / my_outbox_x + outbox_dead_messages"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["outbox_dead_messages", "outbox_published_messages_total"]
    );
}
