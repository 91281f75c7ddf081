//! The pure readers behind tests/dashboards.rs, no I/O: a `/metrics` body
//! (exposition text) into families and label sets, a PromQL expression into
//! the selectors, matchers and grouping labels it names, and the alert
//! rules' expressions out of the rules YAML. Small and strict: enough for
//! what the dashboard and rules use, and an error rather than a guess for
//! anything else.

use std::collections::{BTreeMap, BTreeSet};

// --- the scrape ----------------------------------------------------------------

/// A `/metrics` body: family or series name -> the label sets of its series.
#[derive(Debug, Default)]
pub struct Scrape {
    pub series: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

impl Scrape {
    pub fn parse(body: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.split_whitespace().next() {
                    s.series.entry(name.to_string()).or_default();
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name, labels) = match line.find('{') {
                Some(i) => {
                    let end = line
                        .rfind('}')
                        .unwrap_or_else(|| panic!("bad series line {line:?}"));
                    (&line[..i], parse_labels(&line[i + 1..end]))
                }
                None => (
                    line.split_whitespace().next().unwrap_or(""),
                    BTreeMap::new(),
                ),
            };
            s.series.entry(name.to_string()).or_default().push(labels);
        }
        s
    }

    pub fn has(&self, metric: &str) -> bool {
        self.series.contains_key(metric)
    }

    pub fn label_values(&self, metric: &str, label: &str) -> BTreeSet<&str> {
        self.series
            .get(metric)
            .into_iter()
            .flatten()
            .filter_map(|l| l.get(label).map(String::as_str))
            .collect()
    }

    pub fn has_label(&self, metric: &str, label: &str) -> bool {
        self.series
            .get(metric)
            .into_iter()
            .flatten()
            .any(|l| l.contains_key(label))
    }
}

/// `a="x",b="y"` (values escaped as the exposition format escapes them).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("bad labels {s:?}"));
        let (value, after) =
            quoted(after.trim_start()).unwrap_or_else(|| panic!("bad labels {s:?}"));
        out.insert(name.trim().to_string(), value);
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// A leading `"..."` with backslash escapes: (value, rest after the quote).
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            '"' => return Some((value, &body[i + 1..])),
            c => value.push(c),
        }
    }
    None
}

// --- the queries ---------------------------------------------------------------

#[derive(Debug, PartialEq)]
pub struct Matcher {
    pub label: String,
    pub op: String,
    pub value: String,
}

/// What one query names: its metric selectors, and the labels of its
/// `by`/`without`/`on`/`ignoring`/`group_left`/`group_right` lists.
#[derive(Debug, Default, PartialEq)]
pub struct QueryNames {
    pub selectors: Vec<(String, Vec<Matcher>)>,
    pub grouping: Vec<String>,
}

/// Every `portcullis_*` selector (with its matchers) and grouping label of a
/// PromQL expression. Quoted strings are skipped, so a label value never
/// reads as a metric.
pub fn scan_query(expr: &str) -> Result<QueryNames, String> {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let mut names = QueryNames::default();
    let mut rest = expr;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            let (_, after) =
                quoted(rest).ok_or_else(|| format!("unterminated string in {expr}"))?;
            rest = after;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            if word.starts_with("portcullis_") {
                let mut matchers = Vec::new();
                if let Some(inside) = rest.trim_start().strip_prefix('{') {
                    let (m, after) = scan_matchers(inside, expr)?;
                    matchers = m;
                    rest = after;
                }
                names.selectors.push((word.to_string(), matchers));
            } else if GROUPING.contains(&word) {
                if let Some(inside) = rest.trim_start().strip_prefix('(') {
                    let close = inside
                        .find(')')
                        .ok_or_else(|| format!("unclosed {word}( in {expr}"))?;
                    for label in inside[..close].split(',').map(str::trim) {
                        if !label.is_empty() {
                            names.grouping.push(label.to_string());
                        }
                    }
                    rest = &inside[close + 1..];
                }
            } else if word.contains("portcullis") {
                return Err(format!("{word:?} in {expr}: a metric name not read as one"));
            }
            continue;
        }
        rest = &rest[c.len_utf8()..];
    }
    Ok(names)
}

/// `label op "value", ...}`: the matchers, and what follows the brace.
fn scan_matchers<'a>(mut s: &'a str, expr: &str) -> Result<(Vec<Matcher>, &'a str), String> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start().trim_start_matches(',').trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok((out, after));
        }
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| format!("bad matcher in {expr}"))?;
        let label = &s[..end];
        s = s[end..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| s.starts_with(op))
            .ok_or_else(|| format!("bad matcher operator after {label:?} in {expr}"))?;
        s = s[op.len()..].trim_start();
        let (value, after) = quoted(s).ok_or_else(|| format!("bad matcher value in {expr}"))?;
        if label.is_empty() {
            return Err(format!("empty label in {expr}"));
        }
        out.push(Matcher {
            label: label.to_string(),
            op: op.to_string(),
            value,
        });
        s = after;
    }
}

/// The literal alternatives of a regex matcher when it is nothing but
/// `a|b|c` of plain words or decimals (so each can be looked up); None for a
/// real pattern such as `5..` or `[45]..`.
pub fn literal_alternatives(regex: &str) -> Option<Vec<&str>> {
    let words: Vec<&str> = regex.split('|').collect();
    let plain = |w: &str| {
        !w.is_empty()
            && (w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || (w.parse::<f64>().is_ok() && !w.contains("..")))
    };
    words.iter().all(|w| plain(w)).then_some(words)
}

/// Checks one query against the scrape; returns the problems found and
/// records pending families it skipped.
pub fn rule_exprs(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut alert = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = name.trim().to_string();
        } else if let Some(value) = trimmed.strip_prefix("expr:") {
            let value = value.trim();
            if value == "|" || value == "|-" {
                let indent = line.len() - trimmed.len();
                let mut block = Vec::new();
                while let Some(next) = lines.get(i + 1) {
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    block.push(next.trim());
                    i += 1;
                }
                out.push((alert.clone(), block.join("\n").trim().to_string()));
            } else {
                out.push((alert.clone(), value.to_string()));
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_scanned_into_selectors_and_grouping_labels() {
        let q = r#"sum by (job, instance) (rate(portcullis_requests_total{status=~"5..",route="a\"b"}[5m])) / on (job) group_left max(portcullis_open_connections) > 0"#;
        let n = scan_query(q).unwrap();
        assert_eq!(
            n.selectors,
            vec![
                (
                    "portcullis_requests_total".to_string(),
                    vec![
                        Matcher {
                            label: "status".into(),
                            op: "=~".into(),
                            value: "5..".into()
                        },
                        Matcher {
                            label: "route".into(),
                            op: "=".into(),
                            value: "a\"b".into()
                        },
                    ]
                ),
                ("portcullis_open_connections".to_string(), vec![]),
            ]
        );
        assert_eq!(n.grouping, vec!["job", "instance", "job"]);
        // A metric name inside a string is a value, not a metric.
        let n = scan_query(r#"count(up{job="portcullis_x"})"#).unwrap();
        assert!(n.selectors.is_empty());
        assert!(scan_query(r#"portcullis_x{a="b"#).is_err());
        assert!(scan_query(r#"portcullis_x{a~"b"}"#).is_err());
    }

    #[test]
    fn the_scrape_is_read_with_its_labels() {
        let s = Scrape::parse(
            "# HELP portcullis_a A.\n# TYPE portcullis_a counter\nportcullis_a{route=\"x \\\"y\\\"\",status=\"200\"} 3\n\
             # TYPE portcullis_b gauge\nportcullis_b 1\nportcullis_c_sum 2.5\n",
        );
        assert!(s.has("portcullis_a") && s.has("portcullis_b") && s.has("portcullis_c_sum"));
        assert_eq!(
            s.label_values("portcullis_a", "route"),
            BTreeSet::from(["x \"y\""])
        );
        assert!(s.has_label("portcullis_a", "status") && !s.has_label("portcullis_b", "status"));
    }

    #[test]
    fn rule_exprs_are_read_from_both_yaml_forms() {
        let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |\n          sum(x)\n          > 1\n        for: 5m\n      - alert: B\n        expr: y < 2\n        labels:\n          severity: warning\n";
        assert_eq!(
            rule_exprs(yaml),
            vec![
                ("A".to_string(), "sum(x)\n> 1".to_string()),
                ("B".to_string(), "y < 2".to_string())
            ]
        );
    }
}
