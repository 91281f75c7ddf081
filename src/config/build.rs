//! Walks the located tree into a [`Config`], applying defaults and checking
//! every value. Each check reports the field's dotted path and line.

use super::tree::{Node, Value};
use super::{
    addr, units, Config, DriverChoice, HostMatch, KtlsMode, Limits, ListenerConfig, LogFormat,
    PoolSettings, RouteConfig, ServerSettings, Timeouts, TlsVersions, Workers,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config error without the file name, which `super::parse` adds.
#[derive(Debug)]
pub(super) struct Problem {
    pub line: usize,
    pub field: String,
    pub problem: String,
}

pub(super) fn build(root: Node, source: &Path, base_dir: &Path) -> Result<Config, Problem> {
    let root = Field::root(root);
    let mut top = root.table(&[
        "server", "listener", "limits", "timeouts", "pool", "route", "admin",
    ])?;
    let server = match top.take("server") {
        Some(f) => server(f)?,
        None => ServerSettings::default(),
    };
    let listener_tables = top.require_tables("listener")?;
    let mut listeners = Vec::with_capacity(listener_tables.len());
    for table in listener_tables {
        let built = listener(table, base_dir, &listeners)?;
        listeners.push(built);
    }
    let limits = match top.take("limits") {
        Some(f) => limits(f)?,
        None => Limits::default(),
    };
    let timeouts = match top.take("timeouts") {
        Some(f) => timeouts(f)?,
        None => Timeouts::default(),
    };
    let pool = match top.take("pool") {
        Some(f) => pool(f)?,
        None => PoolSettings::default(),
    };
    let admin = match top.take("admin") {
        Some(f) => {
            let mut t = f.table(&["address"])?;
            let a = t.require("address")?;
            let addr = addr::parse_listen_addr(a.string()?).map_err(|why| a.problem(why))?;
            Some(addr)
        }
        None => None,
    };
    let routes = top
        .require_tables("route")?
        .into_iter()
        .map(|table| route(table, &limits))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Config {
        source: source.to_path_buf(),
        server,
        listeners,
        limits,
        timeouts,
        pool,
        routes,
        admin,
    })
}

fn server(field: Field) -> Result<ServerSettings, Problem> {
    let mut t = field.table(&[
        "workers",
        "driver",
        "log_format",
        "log_level",
        "access_log",
        "drain_timeout",
    ])?;
    let mut s = ServerSettings::default();
    if let Some(f) = t.take("workers") {
        s.workers = match &f.value {
            Value::String(v) if v == "auto" => Workers::Auto,
            Value::Integer(n) if *n < 1 => {
                return Err(f.problem(format!("{n} workers: must be at least 1 (or \"auto\")")))
            }
            Value::Integer(n) if *n > MAX_WORKERS => {
                return Err(f.problem(format!("{n} workers: at most {MAX_WORKERS}")))
            }
            Value::Integer(n) => Workers::Count(f.to_usize(*n)?),
            _ => {
                return Err(f.problem(format!(
                    "expected \"auto\" or an integer >= 1, found {}",
                    f.describe()
                )))
            }
        };
    }
    if let Some(f) = t.take("driver") {
        s.driver = match f.choice(&["auto", "io_uring", "epoll"])? {
            "io_uring" => DriverChoice::IoUring,
            "epoll" => DriverChoice::Epoll,
            _ => DriverChoice::Auto,
        };
    }
    if let Some(f) = t.take("log_format") {
        s.log_format = match f.choice(&["text", "json"])? {
            "json" => LogFormat::Json,
            _ => LogFormat::Text,
        };
    }
    if let Some(f) = t.take("log_level") {
        let directive = f.string()?;
        if directive.trim().is_empty() {
            return Err(f.problem(
                "must not be empty (e.g. \"info\" or \"portcullis=debug,warn\")".to_string(),
            ));
        }
        // Checked here, where a line number can be given; the logging setup
        // would otherwise fail with no hint of where the directive came from.
        tracing_subscriber::EnvFilter::builder()
            .parse(directive)
            .map_err(|e| f.problem(format!("\"{directive}\" is not a log filter: {e}")))?;
        s.log_level = directive.to_string();
    }
    if let Some(f) = t.take("access_log") {
        s.access_log = f.boolean()?;
    }
    if let Some(f) = t.take("drain_timeout") {
        // Zero is meaningful here: stop at once without draining.
        s.drain_timeout = f.duration()?;
    }
    Ok(s)
}

/// Far more than any machine has cores: catches a stray extra digit.
const MAX_WORKERS: i64 = 1024;

fn listener(
    field: Field,
    base_dir: &Path,
    earlier: &[ListenerConfig],
) -> Result<ListenerConfig, Problem> {
    let mut t = field.table(&[
        "address",
        "certificate",
        "private_key",
        "client_ca",
        "tls_versions",
        "ktls",
    ])?;
    let address_field = t.require("address")?;
    let address = addr::parse_listen_addr(address_field.string()?)
        .map_err(|why| address_field.problem(why))?;
    // Port 0 asks for a fresh port each time, so it can repeat.
    if address.port() != 0 && earlier.iter().any(|l| l.address == address) {
        return Err(address_field.problem(format!("{address} is already used by another listener")));
    }
    let certificate = t.require("certificate")?.readable_file(base_dir)?;
    let private_key = t.require("private_key")?.readable_file(base_dir)?;
    let client_ca = t
        .require("client_ca")?
        .non_empty_array("a list of CA bundle files")?
        .into_iter()
        .map(|f| f.readable_file(base_dir))
        .collect::<Result<Vec<_>, _>>()?;
    let tls_versions = match t.take("tls_versions") {
        None => TlsVersions::default(),
        Some(f) => {
            let mut versions = TlsVersions {
                tls12: false,
                tls13: false,
            };
            for item in f.non_empty_array("a list such as [\"1.2\", \"1.3\"]")? {
                match item.choice(&["1.2", "1.3"])? {
                    "1.2" => versions.tls12 = true,
                    _ => versions.tls13 = true,
                }
            }
            versions
        }
    };
    let ktls = match t.take("ktls") {
        None => KtlsMode::Auto,
        Some(f) => match f.choice(&["auto", "on", "off"])? {
            "on" => KtlsMode::On,
            "off" => KtlsMode::Off,
            _ => KtlsMode::Auto,
        },
    };
    Ok(ListenerConfig {
        address,
        certificate,
        private_key,
        client_ca,
        tls_versions,
        ktls,
    })
}

fn limits(field: Field) -> Result<Limits, Problem> {
    let mut t = field.table(&["max_header_bytes", "max_headers", "max_body_bytes"])?;
    let mut l = Limits::default();
    if let Some(f) = t.take("max_header_bytes") {
        let bytes = f.size()?;
        if !(1024..=1024 * 1024).contains(&bytes) {
            return Err(f.problem(format!("{bytes} bytes: must be between 1KiB and 1MiB")));
        }
        l.max_header_bytes = f.to_usize(bytes)?;
    }
    if let Some(f) = t.take("max_headers") {
        let n = f.integer()?;
        if !(1..=512).contains(&n) {
            return Err(f.problem(format!("{n}: must be between 1 and 512")));
        }
        l.max_headers = f.to_usize(n)?;
    }
    if let Some(f) = t.take("max_body_bytes") {
        l.max_body_bytes = f.size()?;
    }
    Ok(l)
}

fn timeouts(field: Field) -> Result<Timeouts, Problem> {
    let mut t = field.table(&[
        "handshake",
        "request_head",
        "idle",
        "backend_connect",
        "backend_response",
    ])?;
    let mut d = Timeouts::default();
    let slots = [
        ("handshake", &mut d.handshake),
        ("request_head", &mut d.request_head),
        ("idle", &mut d.idle),
        ("backend_connect", &mut d.backend_connect),
        ("backend_response", &mut d.backend_response),
    ];
    for (key, slot) in slots {
        if let Some(f) = t.take(key) {
            *slot = f.positive_duration()?;
        }
    }
    Ok(d)
}

fn pool(field: Field) -> Result<PoolSettings, Problem> {
    let mut t = field.table(&["max_idle_per_backend", "idle_timeout"])?;
    let mut p = PoolSettings::default();
    if let Some(f) = t.take("max_idle_per_backend") {
        let n = f.integer()?;
        if n < 0 {
            return Err(f.problem(format!("{n}: must not be negative (0 turns pooling off)")));
        }
        p.max_idle_per_backend = f.to_usize(n)?;
    }
    if let Some(f) = t.take("idle_timeout") {
        p.idle_timeout = f.positive_duration()?;
    }
    Ok(p)
}

fn route(field: Field, limits: &Limits) -> Result<RouteConfig, Problem> {
    let mut t = field.table(&[
        "host",
        "path",
        "methods",
        "backends",
        "set_host",
        "max_body_bytes",
    ])?;
    let host = match t.take("host") {
        None => None,
        Some(f) => Some(parse_host_match(f.string()?).map_err(|why| f.problem(why))?),
    };
    let path_field = t.require("path")?;
    let path = path_field.string()?;
    if !path.starts_with('/') {
        return Err(path_field.problem(format!("\"{path}\" must start with \"/\"")));
    }
    if path
        .bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
    {
        return Err(path_field.problem(format!(
            "\"{path}\" must not contain spaces, control characters, \"?\" or \"#\""
        )));
    }
    let path = path.to_string();
    let methods = match t.take("methods") {
        None => None,
        Some(f) => methods(f)?,
    };
    let backends = t
        .require("backends")?
        .non_empty_array("a list of \"host:port\" addresses")?
        .into_iter()
        .map(|f| addr::resolve_backend_addr(f.string()?).map_err(|why| f.problem(why)))
        .collect::<Result<Vec<_>, _>>()?;
    let set_host = match t.take("set_host") {
        None => None,
        Some(f) => {
            let value = f.string()?;
            let valid = !value.is_empty()
                && value.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
                });
            if !valid {
                return Err(f.problem(format!("\"{value}\" is not a valid Host header value")));
            }
            Some(value.to_string())
        }
    };
    let max_body_bytes = match t.take("max_body_bytes") {
        None => limits.max_body_bytes,
        Some(f) => f.size()?,
    };
    Ok(RouteConfig {
        host,
        path,
        methods,
        backends,
        set_host,
        max_body_bytes,
    })
}

/// `["ANY"]` means any method, as does leaving the field out.
fn methods(field: Field) -> Result<Option<Vec<String>>, Problem> {
    let items = field.non_empty_array("a list of HTTP methods, or leave it out for any")?;
    let count = items.len();
    let mut methods: Vec<String> = Vec::with_capacity(count);
    for item in items {
        let method = item.string()?;
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            return Err(item.problem(format!("\"{method}\" is not an HTTP method")));
        }
        let method = method.to_ascii_uppercase();
        if method == "ANY" {
            if count > 1 {
                return Err(
                    item.problem("\"ANY\" cannot be combined with other methods".to_string())
                );
            }
            return Ok(None);
        }
        if methods.contains(&method) {
            return Err(item.problem(format!("\"{method}\" is listed twice")));
        }
        methods.push(method);
    }
    Ok(Some(methods))
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_host_match(host: &str) -> Result<HostMatch, String> {
    let lower = host.to_ascii_lowercase();
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let is_ipv6_literal = !wildcard
        && name
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .is_some_and(|inner| inner.parse::<std::net::Ipv6Addr>().is_ok());
    let is_name = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !(is_name || is_ipv6_literal) {
        return Err(format!(
            "\"{host}\" is not a host name (expected e.g. \"api.example.com\" or \"*.example.com\", without a port)"
        ));
    }
    Ok(if wildcard {
        HostMatch::WildcardSuffix(format!(".{name}"))
    } else {
        HostMatch::Exact(lower)
    })
}

// --- Field access ---------------------------------------------------------

/// A value together with its dotted path and line, so that every check can
/// report where it failed.
struct Field {
    path: String,
    line: usize,
    value: Value,
}

/// The entries of a table that have not been taken yet.
struct Fields {
    path: String,
    line: usize,
    entries: Vec<(String, Node)>,
}

impl Field {
    fn root(node: Node) -> Field {
        Field {
            path: String::new(),
            line: 1,
            value: node.value,
        }
    }

    fn problem(&self, problem: String) -> Problem {
        Problem {
            line: self.line,
            field: self.display_path(),
            problem,
        }
    }

    fn display_path(&self) -> String {
        if self.path.is_empty() {
            "(top level)".to_string()
        } else {
            self.path.clone()
        }
    }

    /// The value for "found ..." messages: strings and numbers are quoted in
    /// full since they are short and usually the mistake itself.
    fn describe(&self) -> String {
        match &self.value {
            Value::String(s) => format!("\"{s}\""),
            Value::Integer(i) => format!("the integer {i}"),
            other => other.kind().to_string(),
        }
    }

    fn type_error(&self, expected: &str) -> Problem {
        self.problem(format!("expected {expected}, found {}", self.value.kind()))
    }

    fn string(&self) -> Result<&str, Problem> {
        match &self.value {
            Value::String(s) => Ok(s),
            _ => Err(self.type_error("a string")),
        }
    }

    fn integer(&self) -> Result<i64, Problem> {
        match &self.value {
            Value::Integer(i) => Ok(*i),
            _ => Err(self.type_error("an integer")),
        }
    }

    fn boolean(&self) -> Result<bool, Problem> {
        match &self.value {
            Value::Boolean(b) => Ok(*b),
            _ => Err(self.type_error("true or false")),
        }
    }

    fn to_usize<N: TryInto<usize> + Copy + std::fmt::Display>(
        &self,
        n: N,
    ) -> Result<usize, Problem> {
        n.try_into()
            .map_err(|_| self.problem(format!("{n} is out of range")))
    }

    /// A string that must be one of `options`; returns the matching option.
    fn choice(&self, options: &[&'static str]) -> Result<&'static str, Problem> {
        let expected = || {
            options
                .iter()
                .map(|o| format!("\"{o}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Value::String(s) = &self.value else {
            return Err(self.type_error(&format!("one of {}", expected())));
        };
        options
            .iter()
            .find(|o| **o == s)
            .copied()
            .ok_or_else(|| self.problem(format!("\"{s}\" is not one of {}", expected())))
    }

    fn duration(&self) -> Result<Duration, Problem> {
        match &self.value {
            Value::String(s) => units::parse_duration(s).map_err(|why| self.problem(why)),
            Value::Integer(i) => Err(self.problem(format!(
                "{i} has no unit: write a string such as \"{i}s\" or \"{i}ms\""
            ))),
            _ => Err(self.type_error("a duration such as \"10s\"")),
        }
    }

    fn positive_duration(&self) -> Result<Duration, Problem> {
        let d = self.duration()?;
        if d.is_zero() {
            return Err(self.problem("must be greater than zero".to_string()));
        }
        Ok(d)
    }

    /// Bytes as an integer, or a string with a unit ("10MiB").
    fn size(&self) -> Result<u64, Problem> {
        match &self.value {
            Value::Integer(i) => u64::try_from(*i)
                .map_err(|_| self.problem(format!("{i}: a size cannot be negative"))),
            Value::String(s) => units::parse_size(s).map_err(|why| self.problem(why)),
            _ => Err(self.type_error("a size such as 16384 or \"16KiB\"")),
        }
    }

    fn array(self, expected: &str) -> Result<Vec<Field>, Problem> {
        let Value::Array(items) = self.value else {
            return Err(self.type_error(expected));
        };
        Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, node)| Field {
                path: format!("{}[{i}]", self.path),
                line: node.line,
                value: node.value,
            })
            .collect())
    }

    fn non_empty_array(self, expected: &str) -> Result<Vec<Field>, Problem> {
        let (line, path) = (self.line, self.display_path());
        let items = self.array(expected)?;
        if items.is_empty() {
            return Err(Problem {
                line,
                field: path,
                problem: format!("must not be empty (expected {expected})"),
            });
        }
        Ok(items)
    }

    /// Opens the table, refusing keys outside `known` up front so that a
    /// misspelt key is reported as such, not as the required key missing.
    fn table(self, known: &[&str]) -> Result<Fields, Problem> {
        let Value::Table(entries) = self.value else {
            let kind = self.value.kind();
            return Err(self.problem(format!("expected a table, found {kind}")));
        };
        let fields = Fields {
            path: self.path,
            line: self.line,
            entries,
        };
        if let Some((key, node)) = fields
            .entries
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            return Err(Problem {
                line: node.line,
                field: fields.child_path(key),
                problem: format!("unknown field (expected one of: {})", known.join(", ")),
            });
        }
        Ok(fields)
    }

    /// A path as written in the file, resolved against the config's directory,
    /// and checked to be a readable file now rather than at first handshake.
    fn readable_file(&self, base_dir: &Path) -> Result<PathBuf, Problem> {
        let written = self.string()?;
        if written.is_empty() {
            return Err(self.problem("empty file name".to_string()));
        }
        let path = base_dir.join(written);
        let file = std::fs::File::open(&path)
            .map_err(|e| self.problem(format!("cannot read \"{}\": {e}", path.display())))?;
        let metadata = file
            .metadata()
            .map_err(|e| self.problem(format!("cannot read \"{}\": {e}", path.display())))?;
        if !metadata.is_file() {
            return Err(self.problem(format!("\"{}\" is not a regular file", path.display())));
        }
        Ok(path)
    }
}

impl Fields {
    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn take(&mut self, key: &str) -> Option<Field> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        let (key, node) = self.entries.remove(index);
        Some(Field {
            path: self.child_path(&key),
            line: node.line,
            value: node.value,
        })
    }

    /// A missing field is reported on the line of its table's header.
    fn require(&mut self, key: &str) -> Result<Field, Problem> {
        self.take(key).ok_or_else(|| Problem {
            line: self.line,
            field: self.child_path(key),
            problem: "missing (this field is required)".to_string(),
        })
    }

    /// A required, non-empty array of tables such as `[[route]]`; each item
    /// comes back as a field named `route[i]`.
    fn require_tables(&mut self, key: &str) -> Result<Vec<Field>, Problem> {
        let Some(field) = self.take(key) else {
            return Err(Problem {
                line: self.line,
                field: self.child_path(key),
                problem: format!("missing: at least one [[{key}]] table is required"),
            });
        };
        let expected = format!("[[{key}]] tables");
        let items = field.non_empty_array(&expected)?;
        for item in &items {
            if !matches!(item.value, Value::Table(_)) {
                return Err(item.type_error("a table"));
            }
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(
            parse_host_match("API.Example.com"),
            Ok(HostMatch::Exact("api.example.com".into()))
        );
        assert_eq!(
            parse_host_match("*.Example.com"),
            Ok(HostMatch::WildcardSuffix(".example.com".into()))
        );
        assert_eq!(
            parse_host_match("[::1]"),
            Ok(HostMatch::Exact("[::1]".into()))
        );
        assert_eq!(
            parse_host_match("10.0.0.1"),
            Ok(HostMatch::Exact("10.0.0.1".into()))
        );
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "api.example.com:443",
            "a..b",
            "ex ample.com",
            "*.[::1]",
        ] {
            assert!(parse_host_match(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn method_tokens() {
        assert!(is_token_byte(b'G'));
        assert!(is_token_byte(b'-'));
        assert!(!is_token_byte(b' '));
        assert!(!is_token_byte(b'/'));
        assert!(!is_token_byte(b'('));
    }
}
