//! The human report (stdout) and the JSON one (--json).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::args::{Args, TlsVersion};
use crate::stats::{Stats, ERROR_KINDS};
use crate::tls::TlsSetup;
use crate::worker::{Driver, GRACE};

pub struct Summary {
    pub url: String,
    pub mode: String,
    pub driver: &'static str,
    pub identity: String,
    pub duration: Duration,
    pub elapsed: Duration,
    pub req_per_s: f64,
    pub bytes_in_per_s: f64,
    pub bytes_out_per_s: f64,
    pub handshakes_per_s: f64,
    pub insecure: bool,
    pub http2: bool,
    pub streams: usize,
}

fn url(args: &Args) -> String {
    let scheme = if args.target.scheme_https {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}{}", args.target.authority, args.target.path)
}

fn mode(args: &Args) -> String {
    let mut m = match args.rate {
        Some(r) => format!("open loop at {r} req/s (coordinated-omission corrected)"),
        None => "closed loop".to_string(),
    };
    if args.http2 {
        m.push_str(&format!(
            ", HTTP/2, {} stream{} per connection",
            args.streams,
            if args.streams == 1 { "" } else { "s" }
        ));
    } else {
        m.push_str(if args.new_conn {
            if args.resume {
                ", new connection per request with session resumption"
            } else {
                ", new connection per request (full handshake)"
            }
        } else {
            ", keep-alive"
        });
    }
    if args.plain {
        m.push_str(", plain HTTP");
    } else {
        m.push_str(match args.tls {
            TlsVersion::Both => ", TLS 1.2+1.3 offered",
            TlsVersion::V12 => ", TLS 1.2 only",
            TlsVersion::V13 => ", TLS 1.3 only",
        });
    }
    m
}

pub fn print_banner(args: &Args, driver: Driver, tls: Option<&TlsSetup>) {
    println!(
        "pcl-load {} for {:?}: {} threads, {} connections, {}, {} driver",
        url(args),
        args.duration,
        args.threads,
        args.connections,
        mode(args),
        driver.name()
    );
    if let Some(t) = tls {
        println!("  {}", t.identity_desc);
    }
    if args.insecure {
        println!("  *** INSECURE: server certificate NOT verified (--insecure) ***");
    }
}

impl Summary {
    pub fn new(
        args: &Args,
        driver: Driver,
        tls: Option<&TlsSetup>,
        s: &Stats,
        elapsed: Duration,
    ) -> Self {
        let secs = args.duration.as_secs_f64();
        Summary {
            url: url(args),
            mode: mode(args),
            driver: driver.name(),
            identity: tls
                .map(|t| t.identity_desc.clone())
                .unwrap_or_else(|| "plain HTTP".into()),
            duration: args.duration,
            elapsed,
            req_per_s: s.requests as f64 / secs,
            bytes_in_per_s: s.bytes_in as f64 / secs,
            bytes_out_per_s: s.bytes_out as f64 / secs,
            handshakes_per_s: s.handshakes as f64 / secs,
            insecure: args.insecure,
            http2: args.http2,
            streams: args.streams,
        }
    }
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn rate_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB/s", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB/s", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.2} kB/s", b / 1e3)
    } else {
        format!("{b:.0} B/s")
    }
}

const QUANTILES: [(&str, f64); 4] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
];

fn latency_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "(none)".into();
    }
    let mut out = String::new();
    for (name, q) in QUANTILES {
        out.push_str(&format!("{name} {}  ", ms(h.value_at_quantile(q))));
    }
    out.push_str(&format!(
        "max {}  mean {:.3} ms",
        ms(h.max()),
        h.mean() / 1000.0
    ));
    out
}

pub fn print_human(sum: &Summary, s: &Stats) {
    println!();
    println!(
        "  duration      {:.2} s  (wall {:.2} s incl. ramp-down)",
        sum.duration.as_secs_f64(),
        sum.elapsed.as_secs_f64()
    );
    println!(
        "  requests      {}  ({} more completed in the {} s grace period)",
        s.requests,
        s.requests_in_grace,
        GRACE.as_secs()
    );
    println!("  req/s         {:.1}", sum.req_per_s);
    println!(
        "  bytes/s       {} in, {} out  ({})",
        rate_bytes(sum.bytes_in_per_s),
        rate_bytes(sum.bytes_out_per_s),
        if sum.http2 {
            "HTTP/2 DATA payload"
        } else {
            "HTTP bytes"
        }
    );
    println!(
        "  responses     1xx {}  2xx {}  3xx {}  4xx {}  5xx {}{}",
        s.status[1],
        s.status[2],
        s.status[3],
        s.status[4],
        s.status[5],
        if s.status[0] > 0 {
            format!("  other {}", s.status[0])
        } else {
            String::new()
        }
    );
    if s.error_total() == 0 {
        println!("  errors        none");
    } else {
        let parts: Vec<String> = ERROR_KINDS
            .iter()
            .filter_map(|k| s.errors.get(k).map(|n| format!("{k} {n}")))
            .collect();
        println!("  errors        {}", parts.join(", "));
        let mut details: Vec<(&String, &u64)> = s.error_details.iter().collect();
        details.sort_by(|a, b| b.1.cmp(a.1));
        for (d, n) in details.iter().take(10) {
            println!("                  {n:>8}  {d}");
        }
    }
    println!(
        "  connections   {} opened, {} reopened after errors, {} closed by the server, {} requests retried on a new connection (--retry-reused){}",
        s.connections,
        s.reconnects,
        s.server_closes,
        s.retried_reused,
        if s.warmup.is_zero() {
            String::new()
        } else {
            format!(
                " (warm-up before the clock: {:.1} ms)",
                s.warmup.as_secs_f64() * 1e3
            )
        }
    );
    if let Some(v) = &s.tls_version {
        println!(
            "  tls           {} {}{}; {}",
            v,
            s.tls_suite.as_deref().unwrap_or(""),
            s.alpn
                .as_deref()
                .map(|a| format!(", ALPN {a}"))
                .unwrap_or_default(),
            sum.identity
        );
        println!(
            "  handshakes    {}  ({:.1}/s, {} resumed, {} with HelloRetryRequest)",
            s.handshakes, sum.handshakes_per_s, s.resumed, s.hello_retries
        );
    }
    println!("  latency       {}", latency_line(&s.latency));
    if s.lagged_sends > 0 {
        let sent = (s.requests + s.requests_in_grace + s.error_total()).max(1);
        let share = 100.0 * s.lagged_sends as f64 / sent as f64;
        println!(
            "  {}{} sends ({share:.2}%) woke > 5 ms after their slot{}",
            if share > 1.0 {
                "WARNING: "
            } else {
                "timer lag     "
            },
            s.lagged_sends,
            if share > 1.0 {
                ": the client cannot hold this rate (add threads or lower -R)"
            } else {
                ""
            }
        );
    }
    println!("  connect+hs    {}", latency_line(&s.handshake));
    if sum.insecure {
        println!("  *** INSECURE: server certificate NOT verified (--insecure) ***");
    }
}

fn hist_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": h.len(),
        "min": h.min(),
        "mean": h.mean(),
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p99_9": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

pub fn json(sum: &Summary, s: &Stats, argv: &[String]) -> Value {
    let errors: serde_json::Map<String, Value> = ERROR_KINDS
        .iter()
        .map(|k| (k.to_string(), json!(s.errors.get(k).copied().unwrap_or(0))))
        .collect();
    json!({
        "tool": concat!("pcl-load ", env!("CARGO_PKG_VERSION")),
        "command_line": argv,
        "timestamp": rfc3339_now(),
        "url": sum.url,
        "mode": sum.mode,
        "protocol": if sum.http2 { "h2" } else { "http/1.1" },
        "streams_per_connection": sum.streams,
        "driver": sum.driver,
        "identity": sum.identity,
        "insecure": sum.insecure,
        "duration_s": sum.duration.as_secs_f64(),
        "elapsed_s": sum.elapsed.as_secs_f64(),
        "requests": s.requests,
        "requests_in_grace": s.requests_in_grace,
        "req_per_s": sum.req_per_s,
        "rps": sum.req_per_s,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "bytes_in_per_s": sum.bytes_in_per_s,
        "bytes_out_per_s": sum.bytes_out_per_s,
        "responses": {
            "1xx": s.status[1], "2xx": s.status[2], "3xx": s.status[3],
            "4xx": s.status[4], "5xx": s.status[5], "other": s.status[0],
        },
        "errors": errors,
        "errors_total": s.error_total(),
        "error_details": s.error_details,
        "connections_opened": s.connections,
        "warmup_s": s.warmup.as_secs_f64(),
        "reconnects": s.reconnects,
        "server_closes": s.server_closes,
        "retried_reused": s.retried_reused,
        "handshakes": s.handshakes,
        "handshakes_resumed": s.resumed,
        "handshakes_hello_retry": s.hello_retries,
        "open_loop_lagged_sends": s.lagged_sends,
        "handshakes_per_s": sum.handshakes_per_s,
        "tls": {
            "version": s.tls_version,
            "cipher_suite": s.tls_suite,
            "alpn": s.alpn,
        },
        "latency_us": hist_json(&s.latency),
        "connect_handshake_us": hist_json(&s.handshake),
    })
}

/// UTC, second precision, without a date crate.
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
