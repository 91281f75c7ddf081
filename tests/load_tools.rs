//! wrk and h2load, the load generators our users already run, against a
//! mandatory-mTLS listener through `bench/mtls-preload` (an LD_PRELOAD
//! library that gives any OpenSSL client a certificate): built by its one
//! command, it lets both tools through with every request answered 200, and
//! without it the same runs are refused at the handshake, which is what makes
//! the success mean something. A wrong identity makes the library stop the
//! tool before it connects, never run without the certificate.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// `make -C bench/mtls-preload OUT=<test dir>`: the README's one command,
/// into the test's scratch directory (nothing is written into the tree).
fn build_preload(td: &TempDir) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/mtls-preload");
    let out = td.join("preload");
    let mut cmd = Command::new("make");
    cmd.arg("-s")
        .arg("-C")
        .arg(&src)
        .arg(format!("OUT={}", out.display()));
    let o = run_cmd(&mut cmd, None, Duration::from_secs(120));
    assert!(
        o.status.success(),
        "make -C bench/mtls-preload failed (needs make, gcc, libssl-dev): {}",
        o.describe()
    );
    let lib = out.join("libpcl_mtls_preload.so");
    assert!(lib.exists(), "{} not built", lib.display());
    lib
}

/// Panics with an install hint when a tool the test drives is missing
/// (tests/run.sh checks the same up front).
fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} is required: apt-get install {package}");
}

/// The tool's command with or without the preload (the certificate
/// variables are set either way, so the only difference is LD_PRELOAD).
fn tool(name: &str, certs: &CertDir, preload: Option<&Path>) -> Command {
    let mut cmd = Command::new(name);
    cmd.env("PCL_CLIENT_CERT", certs.client_cert())
        .env("PCL_CLIENT_KEY", certs.client_key())
        .env_remove("PCL_CLIENT_CHAIN")
        .env_remove("PCL_PRELOAD_QUIET")
        .env_remove("LD_PRELOAD");
    if let Some(lib) = preload {
        cmd.env("LD_PRELOAD", lib);
    }
    cmd
}

const LOADED: &str = "pcl-mtls-preload: client certificate";

// --- wrk ---------------------------------------------------------------------

/// wrk counts only statuses >= 400 as errors; this script counts every
/// answer that is not 200 (3xx included) and prints one line to parse.
const WRK_STATUS_LUA: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; other = 0 end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local o, x = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); x = x + t:get("other") end
  local e = summary.errors
  io.write(string.format("pcl-wrk: requests=%d ok200=%d other=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, o, x, e.connect, e.read, e.write, e.status, e.timeout))
end
"#;

/// What one wrk run reported: its own summary text and the script's line.
#[derive(Debug, Default, PartialEq)]
struct WrkRun {
    /// "N requests in 2.00s".
    requests: u64,
    /// "Socket errors: connect a, read b, write c, timeout d", summed (0 when absent).
    socket_errors: u64,
    /// "Non-2xx or 3xx responses: N" (0 when absent).
    non_2xx_3xx: u64,
    /// From the script: answers that were 200, and that were not.
    ok200: u64,
    other: u64,
}

fn parse_wrk(out: &str) -> Option<WrkRun> {
    let mut run = WrkRun::default();
    let mut seen_requests = false;
    let mut seen_script = false;
    for line in out.lines().map(str::trim) {
        if let Some(n) = line
            .split_once(" requests in ")
            .and_then(|(n, _)| n.trim().parse().ok())
        {
            run.requests = n;
            seen_requests = true;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            run.socket_errors = rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            run.non_2xx_3xx = n.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("pcl-wrk:") {
            seen_script = true;
            for kv in rest.split_whitespace() {
                let (k, v) = kv.split_once('=')?;
                let v: u64 = v.parse().ok()?;
                match k {
                    "ok200" => run.ok200 = v,
                    "other" => run.other = v,
                    _ => {}
                }
            }
        }
    }
    (seen_requests && seen_script).then_some(run)
}

fn wrk(td: &TempDir, gw: &Gateway, preload: Option<&Path>) -> (WrkRun, Out) {
    let script = td.join("status.lua");
    std::fs::write(&script, WRK_STATUS_LUA).expect("write wrk script");
    let mut cmd = tool("wrk", &gw.certs, preload);
    cmd.args(["-t", "1", "-c", "8", "-d", "2s", "--timeout", "5s", "-s"])
        .arg(&script)
        .arg(gw.url("/load"));
    let o = run_cmd(&mut cmd, None, Duration::from_secs(60));
    let out = o.stdout_str();
    match parse_wrk(&out) {
        Some(run) => (run, o),
        None => gw.fail(&format!("wrk output not understood: {}", o.describe())),
    }
}

// --- h2load ------------------------------------------------------------------

#[derive(Debug, Default, PartialEq)]
struct H2loadRun {
    /// "requests: T total, S started, D done, OK succeeded, F failed, E errored, X timeout"
    total: u64,
    succeeded: u64,
    failed: u64,
    errored: u64,
    timeout: u64,
    /// "status codes: a 2xx, b 3xx, c 4xx, d 5xx"
    s2xx: u64,
    s3xx: u64,
    s4xx: u64,
    s5xx: u64,
}

fn parse_h2load(out: &str) -> Option<H2loadRun> {
    // "N word" pairs of a comma-separated list, by word.
    fn counts(list: &str) -> Vec<(u64, &str)> {
        list.split(',')
            .filter_map(|p| {
                let mut it = p.split_whitespace();
                Some((it.next()?.parse().ok()?, it.next()?))
            })
            .collect()
    }
    let mut run = H2loadRun::default();
    let (mut seen_req, mut seen_status) = (false, false);
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("requests:") {
            seen_req = true;
            for (n, w) in counts(rest) {
                match w {
                    "total" => run.total = n,
                    "succeeded" => run.succeeded = n,
                    "failed" => run.failed = n,
                    "errored" => run.errored = n,
                    "timeout" => run.timeout = n,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            seen_status = true;
            for (n, w) in counts(rest) {
                match w {
                    "2xx" => run.s2xx = n,
                    "3xx" => run.s3xx = n,
                    "4xx" => run.s4xx = n,
                    "5xx" => run.s5xx = n,
                    _ => {}
                }
            }
        }
    }
    (seen_req && seen_status).then_some(run)
}

/// `h2load -n 2000 -c 4 -m 10` (HTTP/2 by ALPN), or with `--h1`.
fn h2load(gw: &Gateway, preload: Option<&Path>, h1: bool) -> (H2loadRun, Out) {
    let mut cmd = tool("h2load", &gw.certs, preload);
    cmd.args(["-n", "2000", "-c", "4", "-m", "10"]);
    if h1 {
        cmd.arg("--h1");
    }
    cmd.arg(gw.url("/load"));
    let o = run_cmd(&mut cmd, None, Duration::from_secs(60));
    match parse_h2load(&o.stdout_str()) {
        Some(run) => (run, o),
        None => gw.fail(&format!("h2load output not understood: {}", o.describe())),
    }
}

// --- the runs ----------------------------------------------------------------

/// Every `portcullis_requests_total` series of the scrape: (route, status, n).
fn request_series(body: &str) -> Vec<(String, String, f64)> {
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("portcullis_requests_total{route=\"")?;
            let (route, rest) = rest.split_once("\",status=\"")?;
            let (status, n) = rest.split_once("\"} ")?;
            Some((
                route.to_string(),
                status.to_string(),
                n.trim().parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn wrk_and_h2load_through_the_preload_get_200_on_a_mandatory_mtls_listener() {
    require("wrk", "wrk");
    require("h2load", "nghttp2-client");
    require("make", "make");
    let admin = format!("127.0.0.1:{}", free_port());
    let st = Stack::start("load_tools", |c, _| {
        let mut c = c.workers(1);
        c.admin = Some(admin.clone());
        c
    });
    let lib = build_preload(&st.td);

    let (w, o) = wrk(&st.td, &st.gw, Some(&lib));
    assert!(o.status.success(), "wrk failed: {}", o.describe());
    assert!(
        o.stderr.contains(LOADED),
        "preload did not load: {}",
        o.describe()
    );
    assert!(w.requests > 0, "wrk answered nothing: {}", o.describe());
    assert_eq!(w.socket_errors, 0, "{}", o.describe());
    assert_eq!(w.non_2xx_3xx, 0, "{}", o.describe());
    assert_eq!((w.ok200, w.other), (w.requests, 0), "{}", o.describe());

    for h1 in [false, true] {
        let (h, o) = h2load(&st.gw, Some(&lib), h1);
        assert!(o.status.success(), "h2load failed: {}", o.describe());
        assert!(
            o.stderr.contains(LOADED),
            "preload did not load: {}",
            o.describe()
        );
        let proto = if h1 { "http/1.1" } else { "h2" };
        assert!(
            o.stdout_str()
                .contains(&format!("Application protocol: {proto}")),
            "{}",
            o.describe()
        );
        assert_eq!(
            (h.total, h.succeeded, h.failed, h.errored, h.timeout),
            (2000, 2000, 0, 0, 0),
            "{}",
            o.describe()
        );
        assert_eq!(
            (h.s2xx, h.s3xx, h.s4xx, h.s5xx),
            (2000, 0, 0, 0),
            "{}",
            o.describe()
        );
    }

    // The gateway's own count agrees: only 200s, at least every one the
    // tools saw (wrk stops at its deadline with requests in flight, which
    // the gateway may still answer), and no handshake was refused.
    let want = w.requests + 4000;
    let mut body = String::new();
    let ok = wait_until(Duration::from_secs(5), || {
        body = admin_get(&admin, "/metrics").1;
        request_series(&body)
            .iter()
            .map(|(_, _, n)| *n)
            .sum::<f64>()
            >= want as f64
    });
    assert!(ok, "gateway counted fewer than {want} requests:\n{body}");
    let series = request_series(&body);
    assert!(
        series.iter().all(|(r, s, _)| r == "/" && s == "200"),
        "only 200s on route / expected: {series:?}"
    );
    assert_eq!(
        metric(
            &body,
            "portcullis_handshake_failures_total{reason=\"no_certificate\"}"
        ),
        Some(0.0),
        "{body}"
    );
}

#[test]
fn without_the_preload_wrk_and_h2load_are_refused_at_the_handshake() {
    require("wrk", "wrk");
    require("h2load", "nghttp2-client");
    let st = Stack::start("load_tools_refused", |c, _| c.workers(1));

    let (w, o) = wrk(&st.td, &st.gw, None);
    assert!(!o.stderr.contains(LOADED), "{}", o.describe());
    assert_eq!(
        (w.requests, w.ok200),
        (0, 0),
        "served without a client certificate: {}",
        o.describe()
    );
    assert!(w.socket_errors > 0, "wrk saw no refusal: {}", o.describe());

    let (h, o) = h2load(&st.gw, None, false);
    assert_eq!(
        (h.succeeded, h.s2xx),
        (0, 0),
        "served without a client certificate: {}",
        o.describe()
    );
    assert_eq!(h.failed, h.total, "{}", o.describe());

    assert!(
        st.gw
            .proc
            .wait_log_line(
                &["client certificate refused", "reason="],
                Duration::from_secs(5)
            )
            .is_some(),
        "no refusal logged"
    );
    // Still serving a client that has its certificate.
    assert_eq!(st.gw.curl("/after", &[]).code, 200);
}

/// The library never lets a tool run without the certificate: a missing
/// file, a key that is not the certificate's, or no variables at all stop
/// the tool with status 70 and one line naming the problem, before it
/// connects (the gateway sees no handshake).
#[test]
fn a_broken_identity_stops_the_tool_before_it_connects() {
    require("wrk", "wrk");
    require("h2load", "nghttp2-client");
    require("make", "make");
    let admin = format!("127.0.0.1:{}", free_port());
    let st = Stack::start("load_tools_broken", |c, _| {
        let mut c = c.workers(1);
        c.admin = Some(admin.clone());
        c
    });
    let lib = build_preload(&st.td);
    thread_sleep_for_publish();
    let before = connections(&admin_get(&admin, "/metrics").1);
    let missing = st.td.join("no-such-client.pem");
    // (tool, environment changes: a value set or removed, the line wanted)
    type EnvChange = (&'static str, Option<PathBuf>);
    let cases: [(&str, Vec<EnvChange>, &str); 3] = [
        (
            "wrk",
            vec![("PCL_CLIENT_CERT", Some(missing.clone()))],
            "cannot load PCL_CLIENT_CERT=",
        ),
        (
            "h2load",
            vec![("PCL_CLIENT_KEY", Some(st.certs.server_key()))],
            "cannot load PCL_CLIENT_KEY=",
        ),
        (
            "h2load",
            vec![("PCL_CLIENT_CERT", None), ("PCL_CLIENT_KEY", None)],
            "PCL_CLIENT_CERT is not set",
        ),
    ];
    for (name, env, want) in cases {
        let mut cmd = tool(name, &st.certs, Some(&lib));
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if name == "wrk" {
            cmd.args(["-t", "1", "-c", "1", "-d", "1s"]);
        } else {
            cmd.args(["-n", "10", "-c", "1"]);
        }
        cmd.arg(st.gw.url("/never"));
        let o = run_cmd(&mut cmd, None, Duration::from_secs(30));
        assert_eq!(o.code(), Some(70), "{name}: {}", o.describe());
        assert!(
            o.stderr.contains(want) && o.stderr.contains("refusing to run"),
            "{name}: {}",
            o.describe()
        );
        assert!(!o.stderr.contains(LOADED), "{name}: {}", o.describe());
    }
    // Both tools make their TLS context before they connect, so nothing
    // reached the gateway: no connection, no handshake, no request (the
    // baseline holds the harness's own TCP probe at start).
    thread_sleep_for_publish();
    let body = admin_get(&admin, "/metrics").1;
    assert!(request_series(&body).is_empty(), "{body}");
    assert_eq!(connections(&body), before, "{body}");
}

/// Client connections the gateway has seen end their handshake, by mode.
fn connections(body: &str) -> Vec<Option<f64>> {
    ["userspace", "ktls", "handshake_failed"]
        .iter()
        .map(|mode| {
            metric(
                body,
                &format!("portcullis_connections_total{{tls_mode=\"{mode}\"}}"),
            )
        })
        .collect()
}

/// Workers publish their counters once a second.
fn thread_sleep_for_publish() {
    std::thread::sleep(Duration::from_millis(1500));
}

// --- the parsers, on output recorded from wrk 4.1.0 and h2load 1.52.0 ---------

#[test]
fn wrk_output_is_read() {
    let ok = "Running 2s test @ https://localhost:18443/\n  1 threads and 8 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.70ms    1.39ms  14.40ms   89.49%\n  10214 requests in 2.00s, 4.15MB read\nRequests/sec:   5103.71\nTransfer/sec:      2.07MB\npcl-wrk: requests=10214 ok200=10214 other=0 connect=0 read=0 write=0 status=0 timeout=0\n";
    assert_eq!(
        parse_wrk(ok),
        Some(WrkRun {
            requests: 10214,
            ok200: 10214,
            ..WrkRun::default()
        })
    );
    let refused = "  0 requests in 2.06s, 0.00B read\n  Socket errors: connect 0, read 921, write 0, timeout 0\n  Non-2xx or 3xx responses: 3\nRequests/sec:      0.00\npcl-wrk: requests=0 ok200=0 other=0 connect=0 read=921 write=0 status=0 timeout=0\n";
    assert_eq!(
        parse_wrk(refused),
        Some(WrkRun {
            socket_errors: 921,
            non_2xx_3xx: 3,
            ..WrkRun::default()
        })
    );
    assert_eq!(
        parse_wrk("  5 requests in 1.00s, 1B read\n"),
        None,
        "no script line"
    );
}

#[test]
fn h2load_output_is_read() {
    let out = "finished in 338.87ms, 5901.93 req/s, 2.40MB/s\nrequests: 2000 total, 2000 started, 2000 done, 1990 succeeded, 10 failed, 4 errored, 1 timeout\nstatus codes: 1990 2xx, 1 3xx, 2 4xx, 3 5xx\n";
    assert_eq!(
        parse_h2load(out),
        Some(H2loadRun {
            total: 2000,
            succeeded: 1990,
            failed: 10,
            errored: 4,
            timeout: 1,
            s2xx: 1990,
            s3xx: 1,
            s4xx: 2,
            s5xx: 3,
        })
    );
    assert_eq!(parse_h2load("requests: 1 total\n"), None);
}
