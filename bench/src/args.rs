//! Command line, parsed by hand (no clap: this binary stays small).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
pcl-load: HTTP/1.1 and HTTP/2 load generator that presents TLS client certificates (mTLS)

Usage: pcl-load [OPTIONS] URL

URL is https://host:port/path, or http://host:port/path with --plain.

Options:
  -c, --connections N     concurrent connections (default 64)
  -d, --duration DUR      test duration, e.g. 10s, 500ms, 1m (default 10s); hard stop:
                          in-flight requests get at most 2 s of grace after it
  -t, --threads N         worker threads, one monoio runtime each (default: cores)
      --pin CORES         pin threads to these cores, e.g. 0 or 0,1 (round robin)
  -R, --rate N            open loop: N requests/s in total, spread evenly over the
                          connections. A connection that falls behind its schedule
                          sends at once and the latency counts from the request's
                          scheduled send time (coordinated-omission correction, as
                          wrk2); one that is on time is timed from its actual send
      --new-conn          a new TCP+TLS connection (full mTLS handshake) per request
      --retry-reused      a GET or HEAD that fails on a kept-alive connection before
                          any byte of its response (the server closed the connection
                          as the request went out) is sent once more on a new
                          connection, as browsers and curl do (RFC 9112 9.3.1);
                          counted as retried, not as an error
      --http2             HTTP/2 (ALPN h2 only: a server that does not choose h2 is
                          a tls_handshake error); with --streams, -c connections
                          each carry that many streams at once (closed loop per
                          stream, or -R spread over connections x streams)
      --streams M         with --http2: concurrent streams per connection (default 1)
      --h2-window BYTES   with --http2: the stream flow-control window we grant
                          (default 4194304; the connection's is 16 times it, at
                          most 2^31-1); received DATA is released at once
      --resume            with --new-conn: TLS session resumption (tickets / session
                          cache in the client config, shared per thread)
      --cert FILE         client certificate chain (PEM; may also hold the key)
      --key FILE          client private key (PEM)
      --cert-type PEM|P12 with P12, --cert FILE:PASSWORD is a PKCS#12 client identity
                          (like curl; write \\: for a colon in FILE)
      --client-certs DIR  instead of --cert: every NAME.pem in DIR with its NAME.key, a
                          different one for each handshake (round robin over all
                          threads): many distinct clients, e.g. from `portcullis certs
                          issue --count N`. More certificates than the gateway's
                          verified_chain_cache entries per worker = every handshake new
      --cacert FILE       CA bundle to verify the server (required unless --insecure)
      --insecure          do not verify the server certificate (flagged in the output)
      --tls 1.2|1.3       offer only this TLS version (default: both)
      --sni NAME          server name to send and verify (default: the URL's host)
  -H, --header \"K: V\"     extra request header (repeatable)
  -m, --method M          request method (default GET)
      --body-size N       send an N-byte body with Content-Length
      --timeout DUR       per-request timeout; the connection is then closed and
                          reopened (default 5s)
      --json FILE         also write the results as JSON to FILE
      --plain             plain HTTP (no TLS), to compare against wrk
      --driver D          io_uring, epoll or auto (default auto)
  -h, --help              print this help

Closed loop (default): each connection sends its next request as soon as the
previous response is complete. HTTP/1.1 keep-alive, no pipelining; with
--http2 each stream slot of each connection is such a loop. Without
--new-conn, every connection is opened and carries one unrecorded request
before the clock starts (warm-up, at most 2 s), so the run measures the
steady state. Wall time is at most warm-up + duration + 2 s.
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Both,
    V12,
    V13,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverChoice {
    Auto,
    IoUring,
    Epoll,
}

#[derive(Clone, Debug)]
pub enum Identity {
    None,
    Pem {
        cert: PathBuf,
        key: Option<PathBuf>,
    },
    P12 {
        file: PathBuf,
        password: String,
    },
    /// One identity per NAME.pem + NAME.key in the directory, rotated per handshake.
    Dir(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Target {
    pub scheme_https: bool,
    /// Host as written in the URL (brackets stripped from IPv6 literals).
    pub host: String,
    /// Path and query, starting with '/'.
    pub path: String,
    /// Value of the Host header.
    pub authority: String,
    pub addr: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct Args {
    pub connections: usize,
    pub duration: Duration,
    pub threads: usize,
    pub pin: Vec<usize>,
    pub rate: Option<f64>,
    pub new_conn: bool,
    /// Retry an idempotent request once when a reused connection closes
    /// before any byte of its response.
    pub retry_reused: bool,
    pub resume: bool,
    /// HTTP/2 (ALPN h2) instead of HTTP/1.1.
    pub http2: bool,
    /// HTTP/2: concurrent streams per connection (1 for HTTP/1.1).
    pub streams: usize,
    /// HTTP/2: the stream window granted to the server.
    pub h2_window: u32,
    pub identity: Identity,
    pub cacert: Option<PathBuf>,
    pub insecure: bool,
    pub tls: TlsVersion,
    pub sni: Option<String>,
    pub headers: Vec<(String, String)>,
    pub method: String,
    pub body_size: usize,
    pub timeout: Duration,
    pub json: Option<PathBuf>,
    pub plain: bool,
    pub driver: DriverChoice,
    pub target: Target,
}

pub enum Parsed {
    Run(Box<Args>),
    Help,
}

pub fn parse(argv: &[String]) -> Result<Parsed, String> {
    let mut connections = 64usize;
    let mut duration = Duration::from_secs(10);
    let mut threads: Option<usize> = None;
    let mut pin = Vec::new();
    let mut rate = None;
    let mut new_conn = false;
    let mut retry_reused = false;
    let mut resume = false;
    let mut http2 = false;
    let mut streams: Option<usize> = None;
    let mut h2_window: Option<u32> = None;
    let mut cert: Option<String> = None;
    let mut key: Option<PathBuf> = None;
    let mut cert_type = String::from("PEM");
    let mut client_certs: Option<PathBuf> = None;
    let mut cacert = None;
    let mut insecure = false;
    let mut tls = TlsVersion::Both;
    let mut sni = None;
    let mut headers = Vec::new();
    let mut method = String::from("GET");
    let mut body_size = 0usize;
    let mut timeout = Duration::from_secs(5);
    let mut json = None;
    let mut plain = false;
    let mut driver = DriverChoice::Auto;
    let mut url: Option<String> = None;

    let mut it = argv.iter().skip(1);
    while let Some(raw) = it.next() {
        // Accept --opt=value as well as --opt value.
        // and -c64 (short option with its value attached, as wrk takes it).
        let (flag, inline) = match raw.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ if raw.len() > 2
                && !raw.starts_with("--")
                && matches!(
                    &raw[..2],
                    "-c" | "-d" | "-t" | "-R" | "-H" | "-m" | "-X" | "-E"
                ) =>
            {
                (raw[..2].to_string(), Some(raw[2..].to_string()))
            }
            _ => (raw.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-c" | "--connections" => connections = number(&flag, &value(&flag)?)?,
            "-d" | "--duration" => duration = parse_duration(&value(&flag)?)?,
            "-t" | "--threads" => threads = Some(number(&flag, &value(&flag)?)?),
            "--pin" => {
                pin = value(&flag)?
                    .split(',')
                    .map(|c| number::<usize>("--pin", c.trim()))
                    .collect::<Result<_, _>>()?
            }
            "-R" | "--rate" => {
                let v = value(&flag)?;
                let r: f64 = v
                    .parse()
                    .map_err(|_| format!("{flag}: not a number: {v:?}"))?;
                if !(r > 0.0 && r.is_finite()) {
                    return Err(format!("{flag}: must be > 0"));
                }
                rate = Some(r);
            }
            "--new-conn" => new_conn = true,
            "--retry-reused" => retry_reused = true,
            "--resume" => resume = true,
            "--http2" | "--h2" => http2 = true,
            "--streams" => streams = Some(number(&flag, &value(&flag)?)?),
            "--h2-window" => h2_window = Some(number(&flag, &value(&flag)?)?),
            "--cert" | "-E" => cert = Some(value(&flag)?),
            "--key" => key = Some(PathBuf::from(value(&flag)?)),
            "--client-certs" => client_certs = Some(PathBuf::from(value(&flag)?)),
            "--cert-type" => cert_type = value(&flag)?.to_ascii_uppercase(),
            "--cacert" => cacert = Some(PathBuf::from(value(&flag)?)),
            "-k" | "--insecure" => insecure = true,
            "--tls" => {
                tls = match value(&flag)?.as_str() {
                    "1.2" => TlsVersion::V12,
                    "1.3" => TlsVersion::V13,
                    other => return Err(format!("--tls: expected 1.2 or 1.3, got {other:?}")),
                }
            }
            "--sni" => sni = Some(value(&flag)?),
            "-H" | "--header" => {
                let v = value(&flag)?;
                let (k, val) = v
                    .split_once(':')
                    .ok_or_else(|| format!("{flag}: expected \"Name: value\", got {v:?}"))?;
                let k = k.trim();
                if k.is_empty() || k.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return Err(format!("{flag}: bad header name {k:?}"));
                }
                if val.contains(['\r', '\n']) {
                    return Err(format!("{flag}: header value contains a line break"));
                }
                headers.push((k.to_string(), val.trim().to_string()));
            }
            "-m" | "--method" | "-X" => {
                method = value(&flag)?;
                if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(format!("{flag}: bad method {method:?}"));
                }
            }
            "--body-size" => body_size = number(&flag, &value(&flag)?)?,
            "--timeout" => timeout = parse_duration(&value(&flag)?)?,
            "--json" => json = Some(PathBuf::from(value(&flag)?)),
            "--plain" => plain = true,
            "--driver" => {
                driver = match value(&flag)?.as_str() {
                    "auto" => DriverChoice::Auto,
                    "io_uring" | "iouring" | "uring" => DriverChoice::IoUring,
                    "epoll" | "legacy" => DriverChoice::Epoll,
                    other => {
                        return Err(format!(
                            "--driver: expected io_uring, epoll or auto, got {other:?}"
                        ))
                    }
                }
            }
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("unknown option {s:?} (see --help)"))
            }
            _ => {
                if url.replace(raw.clone()).is_some() {
                    return Err("more than one URL given".into());
                }
            }
        }
    }

    let url = url.ok_or("missing URL (see --help)")?;
    let target = parse_url(&url)?;
    if plain && target.scheme_https {
        return Err("--plain needs an http:// URL".into());
    }
    if !plain && !target.scheme_https {
        return Err("http:// URL without --plain (use https:// for TLS)".into());
    }
    if connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if duration.is_zero() {
        return Err("--duration must be > 0".into());
    }
    if timeout.is_zero() {
        return Err("--timeout must be > 0".into());
    }
    if resume && !new_conn {
        return Err("--resume only makes sense with --new-conn".into());
    }
    if !http2 && (streams.is_some() || h2_window.is_some()) {
        return Err("--streams and --h2-window need --http2".into());
    }
    if retry_reused && (http2 || new_conn || !matches!(method.as_str(), "GET" | "HEAD")) {
        return Err(
            "--retry-reused applies to HTTP/1.1 keep-alive GET or HEAD requests only".into(),
        );
    }
    if http2 && new_conn {
        return Err(
            "--http2 with --new-conn is not supported (measure handshakes over HTTP/1.1)".into(),
        );
    }
    if http2 && plain {
        return Err("--http2 needs TLS (h2 by ALPN); cleartext h2c is not supported".into());
    }
    let streams = streams.unwrap_or(1);
    if streams == 0 {
        return Err("--streams must be at least 1".into());
    }
    // RFC 9113 6.9.2: a window is at most 2^31-1; below 65535 h2 would
    // only slow the server down for nothing.
    let h2_window = h2_window.unwrap_or(4 << 20);
    if !(65_535..=0x7fff_ffff).contains(&h2_window) {
        return Err("--h2-window must be 65535..=2147483647".into());
    }
    if http2 {
        for (k, _) in &headers {
            if crate::http2::request::connection_specific(k) {
                return Err(format!(
                    "-H {k}: a connection-specific header, not allowed in HTTP/2 (RFC 9113 8.2.2)"
                ));
            }
        }
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = threads.unwrap_or(cores).clamp(1, connections);
    if threads == 0 {
        return Err("--threads must be at least 1".into());
    }

    let identity = match (cert_type.as_str(), cert) {
        (_, None) if client_certs.is_some() => {
            if key.is_some() {
                return Err(
                    "--key is not used with --client-certs (each NAME.pem has its NAME.key)".into(),
                );
            }
            Identity::Dir(client_certs.take().unwrap_or_default())
        }
        (_, Some(_)) if client_certs.is_some() => {
            return Err("--client-certs and --cert: give one".into())
        }
        (_, None) => {
            if key.is_some() {
                return Err("--key without --cert".into());
            }
            Identity::None
        }
        ("PEM", Some(c)) => Identity::Pem {
            cert: PathBuf::from(c),
            key,
        },
        ("P12" | "PKCS12" | "PFX", Some(c)) => {
            if key.is_some() {
                return Err(
                    "--key is not used with --cert-type P12 (the key is in the .p12)".into(),
                );
            }
            let (file, password) = split_cert_password(&c);
            Identity::P12 {
                file: PathBuf::from(file),
                password,
            }
        }
        (other, Some(_)) => return Err(format!("--cert-type: expected PEM or P12, got {other:?}")),
    };
    if plain {
        if !matches!(identity, Identity::None)
            || cacert.is_some()
            || insecure
            || resume
            || sni.is_some()
        {
            return Err("TLS options given with --plain".into());
        }
    } else if cacert.is_none() && !insecure {
        return Err("--cacert FILE is required to verify the server (or --insecure)".into());
    }

    Ok(Parsed::Run(Box::new(Args {
        connections,
        duration,
        threads,
        pin,
        rate,
        new_conn,
        retry_reused,
        resume,
        http2,
        streams,
        h2_window,
        identity,
        cacert,
        insecure,
        tls,
        sni,
        headers,
        method,
        body_size,
        timeout,
        json,
        plain,
        driver,
        target,
    })))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: not a number: {v:?}"))
}

/// "FILE:PASSWORD" as curl takes it: the first ':' not escaped as "\:".
fn split_cert_password(s: &str) -> (String, String) {
    let mut file = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some((_, ':'))) => {
                file.push(':');
                chars.next();
            }
            ':' => return (file, s[i + 1..].to_string()),
            _ => file.push(c),
        }
    }
    (file, String::new())
}

/// "10s", "500ms", "1.5s", "2m", "1h", "250us"; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (use us, ms, s, m, h)")),
    };
    if !secs.is_finite() || !(0.0..=1e7).contains(&secs) {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn parse_url(url: &str) -> Result<Target, String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("URL must start with https:// or http://: {url:?}"));
    };
    let (auth, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if auth.contains('@') {
        return Err("user:password@ in the URL is not supported".into());
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(r) = auth.strip_prefix('[') {
        let end = r.find(']').ok_or("unclosed '[' in URL host")?;
        let host = &r[..end];
        let port = match &r[end + 1..] {
            "" => default_port,
            p => p
                .strip_prefix(':')
                .ok_or("junk after ']' in URL")?
                .parse()
                .map_err(|_| format!("bad port in {url:?}"))?,
        };
        (host.to_string(), port)
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("bad port in {url:?}"))?,
            ),
            None => (auth.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    // A name with several addresses (localhost: 127.0.0.1 and ::1): use the
    // first that accepts a connection now, so a server listening on only
    // one family is still found. All connections then go to that address.
    let addr = match addrs.as_slice() {
        [] => return Err(format!("{host} resolves to no address")),
        [one] => *one,
        many => *many
            .iter()
            .find(|a| std::net::TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok())
            .unwrap_or(&many[0]),
    };
    let host_for_header = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let authority = if port == default_port {
        host_for_header
    } else {
        format!("{host_for_header}:{port}")
    };
    Ok(Target {
        scheme_https: https,
        host,

        path,
        authority,
        addr,
    })
}

#[cfg(test)]
mod tests;
