//! The Grafana dashboard (`deploy/grafana/portcullis.json`) and the
//! Prometheus alert rules (`deploy/prometheus/portcullis-rules.yml`) checked
//! against the gateway they watch: the JSON parses and is shaped as Grafana
//! imports it, and every metric, label and label value their queries name
//! exists in a real `/metrics` scrape of a running gateway (with a CRL, so
//! every family is there). `promtool check rules`, `promtool test rules` (the
//! cases in `portcullis-rules.test.yml`) and a syntax check of every
//! dashboard query run when promtool is installed (`.ci/run` installs it).
//!
//! The readers (exposition text, PromQL selectors and grouping labels, the
//! rules' expressions) are pure and live in `dashboards/scan.rs`; anything
//! they do not understand fails the test rather than passing unchecked.

mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use scan::{literal_alternatives, rule_exprs, scan_query, Scrape};
use serde_json::Value;

#[path = "dashboards/scan.rs"]
mod scan;

/// Labels Prometheus adds to every scraped series (not in `/metrics`).
const TARGET_LABELS: &[&str] = &["job", "instance"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Writes past the test harness's capture, so it shows in a passing run too.
fn loud(msg: &str) {
    let _ = writeln!(std::io::stderr(), "\n!!! [dashboards] {msg}\n");
}

fn check_query(origin: &str, expr: &str, scrape: &Scrape) -> Vec<String> {
    let names = match scan_query(expr) {
        Ok(n) => n,
        Err(e) => return vec![format!("{origin}: {e}")],
    };
    let mut problems = Vec::new();
    if names.selectors.is_empty() {
        problems.push(format!("{origin}: names no portcullis metric: {expr}"));
    }
    let mut present = Vec::new();
    for (metric, matchers) in &names.selectors {
        if !scrape.has(metric) {
            problems.push(format!("{origin}: {metric} is not in /metrics"));
            continue;
        }
        present.push(metric.as_str());
        for m in matchers {
            if TARGET_LABELS.contains(&m.label.as_str()) {
                continue;
            }
            if !scrape.has_label(metric, &m.label) {
                problems.push(format!("{origin}: {metric} has no label {:?}", m.label));
                continue;
            }
            let values = scrape.label_values(metric, &m.label);
            let wanted = match m.op.as_str() {
                "=" | "!=" => Some(vec![m.value.as_str()]),
                _ => literal_alternatives(&m.value),
            };
            for v in wanted.into_iter().flatten() {
                if !values.contains(v) {
                    problems.push(format!(
                        "{origin}: {metric}{{{}={v:?}}} is not in /metrics (values: {values:?})",
                        m.label
                    ));
                }
            }
        }
    }
    // A grouping label must be a target label or a label of one of the
    // query's metrics (when every metric it names is in the scrape).
    if present.len() == names.selectors.len() {
        for label in &names.grouping {
            let known = TARGET_LABELS.contains(&label.as_str())
                || present.iter().any(|m| scrape.has_label(m, label));
            if !known {
                problems.push(format!(
                    "{origin}: grouping label {label:?} is on none of {present:?}"
                ));
            }
        }
    }
    problems
}

// --- the files -----------------------------------------------------------------

/// The dashboard's queries: (where, expr), panels inside rows included, and
/// the template variables' `label_values(...)` queries.
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            out.push((
                format!(
                    "panel {:?} target {}",
                    p["title"].as_str().unwrap_or("?"),
                    t["refId"].as_str().unwrap_or("?")
                ),
                expr.to_string(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .unwrap_or_default();
            out.push((
                format!("variable {}", v["name"].as_str().unwrap_or("?")),
                q.to_string(),
            ));
        }
    }
    out
}

/// The shape Grafana needs to import it: a uid and title, a `datasource`
/// variable every panel and target uses, unique panel ids, panels inside
/// the 24-column grid, and a non-empty expression in every target.
fn check_dashboard_shape(dash: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for key in ["uid", "title"] {
        if dash[key].as_str().unwrap_or_default().is_empty() {
            problems.push(format!("dashboard has no {key}"));
        }
    }
    if dash["schemaVersion"].as_u64().is_none() {
        problems.push("dashboard has no schemaVersion".into());
    }
    let vars = dash["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !vars.iter().any(|v| {
        v["type"] == "datasource" && v["name"] == "datasource" && v["query"] == "prometheus"
    }) {
        problems.push("no `datasource` variable of type prometheus".into());
    }
    let mut ids = BTreeSet::new();
    let panels = dash["panels"].as_array().cloned().unwrap_or_default();
    if panels.len() < 10 {
        problems.push(format!("only {} panels", panels.len()));
    }
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        let id = p["id"].as_u64();
        if title.is_empty() || id.is_none() || !ids.insert(id) {
            problems.push(format!(
                "panel {title:?}: missing title or duplicate/missing id {id:?}"
            ));
        }
        let g = &p["gridPos"];
        let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
        match (x, w, h, g["y"].as_u64()) {
            (Some(x), Some(w), Some(h), Some(_)) if w > 0 && h > 0 && x + w <= 24 => {}
            _ => problems.push(format!(
                "panel {title:?}: gridPos {g} outside the 24-column grid"
            )),
        }
        if p["type"] == "row" {
            continue;
        }
        if p["datasource"]["uid"] != "${datasource}" {
            problems.push(format!(
                "panel {title:?}: datasource is not ${{datasource}}"
            ));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?}: no targets"));
        }
        for t in &targets {
            if t["expr"].as_str().unwrap_or_default().trim().is_empty() {
                problems.push(format!("panel {title:?}: a target without expr"));
            }
            if t["datasource"]["uid"] != "${datasource}" {
                problems.push(format!(
                    "panel {title:?}: a target's datasource is not ${{datasource}}"
                ));
            }
        }
    }
    problems
}

/// The alert rules' (alert name, expr) from the YAML: `expr: one line` or
/// `expr: |` followed by a more-indented block. Written for this file's
/// layout; the test also asserts one expr per `- alert:`, so a layout this
/// does not read fails instead of checking less.
fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
}

// --- the test ------------------------------------------------------------------

/// A gateway with everything the dashboard and rules watch: a site with a
/// CRL, an admin listener, a route to the echo backend and one to a dead
/// port; and some traffic, so the request families have series.
fn gateway_scrape() -> (Scrape, String) {
    let td = TempDir::new("dashboards");
    let certs = certs_init(&td.join("certs"), &[]);
    let crl = td.join("ca.crl");
    let mut cmd = portcullis();
    cmd.args(["certs", "crl", "--ca-dir"])
        .arg(&certs.dir)
        .arg("--out")
        .arg(&crl);
    let o = run_cmd(&mut cmd, None, Duration::from_secs(30));
    assert!(o.status.success(), "certs crl: {}", o.describe());
    let echo = Echo::start(&td);
    let mut base = Config::new(&certs);
    base.workers = "1".into();
    let port = base.listeners[0].socket_addr().port();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = |f: &Path| q(&f.to_string_lossy());
    let text = format!(
        "[server]\nworkers = 1\n\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [[site]]\nname = \"api\"\nserver_names = [\"localhost\"]\ncertificate = {}\nprivate_key = {}\n\
         client_ca = [{}]\ncrl = [{}]\n\n\
         [[route]]\npath = \"/\"\nbackends = [\"{}\"]\n\n\
         [[route]]\npath = \"/dead\"\nbackends = [\"127.0.0.1:{}\"]\n\n\
         [admin]\naddress = \"{admin}\"\n",
        p(&certs.server_cert()),
        p(&certs.server_key()),
        p(&certs.ca()),
        p(&crl),
        echo.addr(),
        dead_port(),
    );
    let gw = Gateway::start_text(&td, &certs, base, &text);
    assert_eq!(gw.curl("/hello", &[]).code, 200);
    assert_eq!(gw.curl("/dead", &[]).code, 502);
    assert_ne!(gw.curl_auth(Auth::NoCert, "/", &[]).code, 200);
    let mut body = String::new();
    let ok = wait_until(Duration::from_secs(5), || {
        body = admin_get(&admin, "/metrics").1;
        body.contains("status=\"502\"")
    });
    assert!(ok, "requests not counted in /metrics:\n{body}");
    (Scrape::parse(&body), body)
}

#[test]
fn dashboard_and_alert_rules_query_only_what_the_gateway_exports() {
    let dash_text = std::fs::read_to_string(repo("deploy/grafana/portcullis.json"))
        .expect("read deploy/grafana/portcullis.json");
    let dash: Value = serde_json::from_str(&dash_text)
        .unwrap_or_else(|e| panic!("deploy/grafana/portcullis.json is not JSON: {e}"));
    let rules_path = repo("deploy/prometheus/portcullis-rules.yml");
    let rules_text = std::fs::read_to_string(&rules_path).expect("read the rules");

    let mut problems = check_dashboard_shape(&dash);
    let queries = dashboard_queries(&dash);
    let rules = rule_exprs(&rules_text);
    let alerts = rules_text
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(rules.len(), alerts, "one expr per alert: {rules:?}");
    assert!(alerts >= 5, "{alerts} alert rules");

    let (scrape, body) = gateway_scrape();
    let mut used = BTreeSet::new();
    for (origin, expr) in queries
        .iter()
        .map(|(o, e)| (format!("dashboard {o}"), e.as_str()))
        .chain(rules.iter().map(|(a, e)| (format!("rule {a}"), e.as_str())))
    {
        problems.extend(check_query(&origin, expr, &scrape));
        if let Ok(n) = scan_query(expr) {
            used.extend(n.selectors.into_iter().map(|(m, _)| m));
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard/rules do not match /metrics:\n  {}\n--- /metrics ---\n{body}",
        problems.join("\n  ")
    );
    // Every family the gateway exports should be on the dashboard or in a
    // rule; say which are not (informational: a new metric need not wait).
    let families: BTreeSet<&String> = scrape
        .series
        .keys()
        .filter(|k| !k.ends_with("_sum") && !k.ends_with("_count"))
        .collect();
    let unused: Vec<&&String> = families.iter().filter(|f| !used.contains(**f)).collect();
    if !unused.is_empty() {
        loud(&format!("exported but on no panel or rule: {unused:?}"));
    }

    match promtool() {
        None => loud(
            "promtool not installed: `promtool check rules`/`test rules` and the dashboard's \
             PromQL syntax check SKIPPED (.ci/run installs it from Debian's prometheus package)",
        ),
        Some(tool) => promtool_checks(&tool, &rules_path, &queries),
    }
}

/// `promtool check rules`, `promtool test rules`, and every dashboard query
/// (Grafana's variables replaced by values) as a recording rule through
/// `promtool check rules`, which parses the PromQL.
fn promtool_checks(tool: &Path, rules: &Path, queries: &[(String, String)]) {
    let run = |args: &[&std::ffi::OsStr]| {
        let mut cmd = Command::new(tool);
        cmd.args(args);
        run_cmd(&mut cmd, None, Duration::from_secs(60))
    };
    let o = run(&["check".as_ref(), "rules".as_ref(), rules.as_os_str()]);
    assert!(o.status.success(), "promtool check rules: {}", o.describe());
    let cases = repo("deploy/prometheus/portcullis-rules.test.yml");
    let o = run(&["test".as_ref(), "rules".as_ref(), cases.as_os_str()]);
    assert!(o.status.success(), "promtool test rules: {}", o.describe());

    let td = TempDir::new("dashboards_promql");
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for (origin, expr) in queries {
        if expr.starts_with("label_values(") {
            continue; // Grafana's own function, not PromQL
        }
        let promql = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        assert!(
            !promql.contains('$'),
            "{origin}: a variable left in {promql}"
        );
        n += 1;
        yaml.push_str(&format!(
            "      # {origin}\n      - record: dashboard_query_{n}\n        expr: {}\n",
            serde_json::to_string(&promql).unwrap()
        ));
    }
    let file = td.join("dashboard-queries.yml");
    std::fs::write(&file, &yaml).unwrap();
    let o = run(&["check".as_ref(), "rules".as_ref(), file.as_os_str()]);
    assert!(
        o.status.success(),
        "a dashboard query is not valid PromQL: {}\n{yaml}",
        o.describe()
    );
}

// --- the check, on a scrape written by hand ------------------------------------

#[test]
fn a_query_naming_what_is_not_exported_is_reported() {
    let s = Scrape::parse(
        "portcullis_conn{tls_mode=\"ktls\"} 1\nportcullis_conn{tls_mode=\"userspace\"} 1\n",
    );
    let check = |q: &str| check_query("t", q, &s);
    assert!(
        check(r#"sum by (instance, tls_mode) (portcullis_conn{tls_mode=~"ktls|userspace"})"#)
            .is_empty()
    );
    assert_eq!(check("portcullis_nope").len(), 1);
    assert_eq!(check(r#"portcullis_conn{tls_mode="kernel"}"#).len(), 1);
    assert_eq!(check(r#"portcullis_conn{mode=~"k.*"}"#).len(), 1);
    assert_eq!(check(r#"portcullis_conn{tls_mode=~"ktls|other"}"#).len(), 1);
    assert_eq!(check("sum by (reason) (portcullis_conn)").len(), 1);
    assert_eq!(check("sum(rate(x[5m]))").len(), 1, "no portcullis metric");
}
