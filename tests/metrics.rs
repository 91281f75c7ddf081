//! The admin listener: /metrics in Prometheus text, /healthz, counted by real traffic.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn metrics_count_requests_handshakes_modes_and_latency() {
    let admin = format!("127.0.0.1:{}", free_port());
    let st = Stack::start("metrics", |c, echo| {
        let mut c = c.workers(2);
        c.admin = Some(admin.clone());
        c.routes = vec![
            RouteCfg::new("/", &[&echo.addr()]),
            RouteCfg::new("/dead", &[&format!("127.0.0.1:{}", dead_port())]),
        ];
        c
    });
    assert_eq!(admin_get(&admin, "/healthz"), (200, "ok\n".to_string()));
    for i in 0..5 {
        assert_eq!(st.gw.curl(&format!("/ok{i}"), &[]).code, 200);
    }
    assert_eq!(st.gw.curl("/dead", &[]).code, 502);
    let refused = st.gw.curl_auth(Auth::NoCert, "/", &[]);
    assert_ne!(refused.code, 200);

    // Workers publish once a second.
    let mut body = String::new();
    let ok = wait_until(Duration::from_secs(5), || {
        body = admin_get(&admin, "/metrics").1;
        metric(
            &body,
            "portcullis_requests_total{route=\"/\",status=\"200\"}",
        ) == Some(5.0)
            && metric(
                &body,
                "portcullis_handshake_failures_total{reason=\"no_certificate\"}",
            ) == Some(1.0)
    });
    assert!(ok, "metrics did not reach the expected counts:\n{body}");
    assert_eq!(
        metric(
            &body,
            "portcullis_requests_total{route=\"/dead\",status=\"502\"}"
        ),
        Some(1.0),
        "{body}"
    );
    let conns = metric(
        &body,
        "portcullis_connections_total{tls_mode=\"userspace\"}",
    )
    .unwrap_or(0.0)
        + metric(&body, "portcullis_connections_total{tls_mode=\"ktls\"}").unwrap_or(0.0);
    assert!(
        conns >= 6.0,
        "6 client connections completed the handshake: {body}"
    );
    assert_eq!(
        metric(&body, "portcullis_request_duration_seconds_count"),
        Some(6.0),
        "{body}"
    );
    let p50 = metric(
        &body,
        "portcullis_request_duration_seconds{quantile=\"0.5\"}",
    )
    .unwrap_or(-1.0);
    assert!(p50 > 0.0 && p50 < 5.0, "p50 {p50}");
    assert!(body.contains("# TYPE portcullis_requests_total counter"));
    assert_eq!(admin_get(&admin, "/nope").0, 404);
}
