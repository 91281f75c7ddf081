//! The takeover messages byte by byte, and the socket plan for equal, fewer
//! and more workers, added and removed listeners.

use super::*;

fn a(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

#[test]
fn every_message_round_trips_as_one_line() {
    let all = [
        Message::Takeover {
            version: 1,
            pid: 42,
        },
        Message::Sockets {
            version: 1,
            pid: 7,
            count: 3,
        },
        Message::Refused("the sockets were already handed over".into()),
        Message::Listener {
            configured: a("0.0.0.0:0"),
            bound: a("0.0.0.0:43211"),
        },
        Message::Listener {
            configured: a("[::1]:8443"),
            bound: a("[::1]:8443"),
        },
        Message::Admin {
            bound: a("127.0.0.1:9901"),
        },
        Message::Accepting,
        Message::Draining,
    ];
    for m in all {
        let bytes = m.encode();
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(bytes.len() <= MAX_MESSAGE);
        assert_eq!(Message::decode(&bytes), Ok(m));
    }
}

#[test]
fn the_exact_bytes_are_stable() {
    assert_eq!(
        Message::Takeover {
            version: 1,
            pid: 42
        }
        .encode(),
        b"takeover 1 pid=42\n"
    );
    assert_eq!(
        Message::Sockets {
            version: 1,
            pid: 9,
            count: 4
        }
        .encode(),
        b"sockets 1 pid=9 count=4\n"
    );
    assert_eq!(
        Message::Listener {
            configured: a("127.0.0.1:0"),
            bound: a("127.0.0.1:5000")
        }
        .encode(),
        b"listener 127.0.0.1:0 127.0.0.1:5000\n"
    );
    assert_eq!(Message::Accepting.encode(), b"accepting\n");
}

#[test]
fn a_refusal_stays_one_bounded_line() {
    let m = Message::Refused(format!("two\nlines {}", "x".repeat(2000)));
    let bytes = m.encode();
    assert!(bytes.len() <= MAX_MESSAGE);
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
    assert!(bytes.starts_with(b"refused two lines xxx"));
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    for bad in [
        &b""[..],
        b"takeover 1 pid=42",
        b"takeover 1 pid=42\nextra\n",
        b"takeover x pid=42\n",
        b"takeover 1 pid=-1\n",
        b"takeover 1 pid=99999999999\n",
        b"takeover 1\n",
        b"sockets 1 pid=1 count=\n",
        b"listener 1.2.3.4 1.2.3.4:5\n",
        b"listener 1.2.3.4:5\n",
        b"admin\n",
        b"accepting now\n",
        b"hello\n",
        b"\xff\xfe\n",
    ] {
        assert!(
            Message::decode(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn equal_worker_counts_map_one_to_one() {
    let l = a("127.0.0.1:8443");
    let plan = plan_sockets(&[l, l], &[l], 2);
    assert_eq!(
        plan.per_worker,
        vec![vec![(0, Source::Passed(0))], vec![(0, Source::Passed(1))]]
    );
    assert!(plan.unused.is_empty());
}

#[test]
fn fewer_workers_accept_on_every_passed_socket() {
    let l = a("127.0.0.1:8443");
    let plan = plan_sockets(&[l, l, l, l], &[l], 3);
    assert_eq!(
        plan.per_worker,
        vec![
            vec![(0, Source::Passed(0)), (0, Source::Passed(3))],
            vec![(0, Source::Passed(1))],
            vec![(0, Source::Passed(2))],
        ]
    );
    assert!(plan.unused.is_empty());
}

#[test]
fn more_workers_join_the_group() {
    let l = a("127.0.0.1:8443");
    let plan = plan_sockets(&[l], &[l], 3);
    assert_eq!(
        plan.per_worker,
        vec![
            vec![(0, Source::Passed(0))],
            vec![(0, Source::Join)],
            vec![(0, Source::Join)],
        ]
    );
}

#[test]
fn listeners_are_matched_by_configured_address() {
    let (v4, v6, gone, new) = (
        a("0.0.0.0:8443"),
        a("[::]:8443"),
        a("0.0.0.0:9443"),
        a("0.0.0.0:10443"),
    );
    // Old: v4, gone, v6 on one worker each of two; new: v6, new, v4.
    let passed = [v4, gone, v6, v4, gone, v6];
    let plan = plan_sockets(&passed, &[v6, new, v4], 2);
    assert_eq!(
        plan.per_worker,
        vec![
            vec![
                (0, Source::Passed(2)),
                (1, Source::Fresh),
                (2, Source::Passed(0))
            ],
            vec![
                (0, Source::Passed(5)),
                (1, Source::Fresh),
                (2, Source::Passed(3))
            ],
        ]
    );
    assert_eq!(plan.unused, vec![1, 4]);
}

#[test]
fn zero_workers_is_treated_as_one() {
    let l = a("127.0.0.1:1");
    let plan = plan_sockets(&[l, l], &[l], 0);
    assert_eq!(
        plan.per_worker,
        vec![vec![(0, Source::Passed(0)), (0, Source::Passed(1))]]
    );
}
