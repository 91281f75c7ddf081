//! The TOML document as a tree whose every node knows its 1-based line.
//!
//! Why not `#[derive(Deserialize)]` straight into the typed config: serde's
//! errors for unknown, missing and mistyped fields carry a span but not the
//! field's path (`route[2].methods[1]`), and `toml::Spanned<T>` fails outright
//! on tables that have no span of their own (dotted keys like
//! `server.workers = 4`, or `[a.b]` without `[a]`). Reading into this tree
//! first lets `build` name every field exactly and still accept all valid TOML.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::ops::Range;

/// One value of the document and the line it starts on (for a table: its
/// header line; for an implicit table: the line of its first key).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    /// Entries in document order, so "unknown field" names the first one written.
    Table(Vec<(String, Node)>),
}

impl Value {
    /// The TOML type with an article, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// A TOML syntax error (including duplicate keys), located.
#[derive(Debug)]
pub(super) struct SyntaxError {
    pub line: usize,
    /// Best-effort dotted path of the key or table header on that line.
    pub field: String,
    pub problem: String,
}

/// Parses `text` into a tree. The root table is on line 1.
pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let raw: RawNode = toml::from_str(text).map_err(|e| {
        let start = e.span().map(|span| span.start);
        let line = start.map_or(1, |at| line_of(text, at));
        // toml splits one problem over several lines ("invalid table
        // header\nduplicate key ..."): keep it on one line for logs.
        let mut problem = e.message().trim().replace('\n', "; ");
        if problem.is_empty() {
            // toml gives no words for some lexical errors (a control
            // character in a comment): say what and where ourselves.
            problem = unexpected_character(text, start);
        }
        SyntaxError {
            line,
            field: field_on_line(text, line),
            problem,
        }
    })?;
    Ok(raw.into_node(text, 1))
}

/// "unexpected character U+0000 at column 9", for a syntax error toml did not describe.
fn unexpected_character(text: &str, offset: Option<usize>) -> String {
    let Some(at) = offset.filter(|&at| text.is_char_boundary(at)) else {
        return "invalid TOML syntax".to_string();
    };
    let line_start = text[..at].rfind('\n').map_or(0, |nl| nl + 1);
    let column = 1 + text[line_start..at].chars().count();
    match text[at..].chars().next() {
        Some(c) if c.is_control() => {
            format!(
                "unexpected character U+{:04X} at column {column}",
                u32::from(c)
            )
        }
        Some(c) => format!("unexpected character {c:?} at column {column}"),
        None => "unexpected end of file".to_string(),
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

/// Names what is written on `line` for a syntax error: the key there, under
/// the table header in force ("server.workers", "route[1].path"), or the
/// header itself. Lexical, so a multi-line string that looks like a header can
/// mislead it; the line number, which matters more, comes from toml itself.
fn field_on_line(text: &str, line: usize) -> String {
    let mut header = String::new();
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let trimmed = raw_line.trim();
        let is_header = trimmed.starts_with('[');
        if let Some(rest) = trimmed.strip_prefix("[[") {
            let name = strip_key(rest.split("]]").next().unwrap_or(rest));
            let count = match array_counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count
                }
                None => {
                    array_counts.push((name.clone(), 0));
                    0
                }
            };
            header = format!("{name}[{count}]");
        } else if let Some(rest) = trimmed.strip_prefix('[') {
            header = strip_key(rest.split(']').next().unwrap_or(rest));
        }
        if index + 1 == line {
            if is_header {
                break;
            }
            if let Some((key, _)) = trimmed.split_once('=') {
                let key = strip_key(key);
                if !key.is_empty() && !key.starts_with('#') {
                    return join(&header, &key);
                }
            }
            break;
        }
    }
    if header.is_empty() {
        "(top level)".to_string()
    } else {
        header
    }
}

/// `"a" . b` → `a.b`: drops quotes and spaces around dotted-key parts.
fn strip_key(key: &str) -> String {
    key.split('.')
        .map(|part| part.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".")
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

// --- Deserializing with spans -------------------------------------------
//
// `toml::Spanned<T>` is serde_spanned's private protocol: a struct request with
// these exact names makes toml hand over {start, end, value} instead of the
// value. Speaking it directly (instead of through `Spanned`) lets us accept
// the values that toml cannot give a span to. The test
// `every_node_gets_its_line` fails loudly if a toml upgrade changes this.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];
/// How toml presents a date-time to `deserialize_any`: a one-key map.
const DATETIME_KEY: &str = "$__toml_private_datetime";

struct RawNode {
    span: Option<Range<usize>>,
    value: RawValue,
}

enum RawValue {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<RawNode>),
    Table(Vec<(String, RawNode)>),
}

impl RawNode {
    fn into_node(self, text: &str, parent_line: usize) -> Node {
        let own_line = self.span.map(|span| line_of(text, span.start));
        let child_parent = own_line.unwrap_or(parent_line);
        let value = match self.value {
            RawValue::String(s) => Value::String(s),
            RawValue::Integer(i) => Value::Integer(i),
            RawValue::Float(f) => Value::Float(f),
            RawValue::Boolean(b) => Value::Boolean(b),
            RawValue::Datetime(d) => Value::Datetime(d),
            RawValue::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|item| item.into_node(text, child_parent))
                    .collect(),
            ),
            RawValue::Table(entries) => Value::Table(
                entries
                    .into_iter()
                    .map(|(key, item)| (key, item.into_node(text, child_parent)))
                    .collect(),
            ),
        };
        // A table without a span of its own was made by dotted keys or a
        // deeper header: its first line is where its first key is written.
        let line = own_line.unwrap_or_else(|| match &value {
            Value::Table(entries) => entries
                .iter()
                .map(|(_, node)| node.line)
                .min()
                .unwrap_or(parent_line),
            _ => parent_line,
        });
        Node { line, value }
    }
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, NodeVisitor { spanned: true })
    }
}

/// The value inside a spanned wrapper: must not ask for a span again, or
/// toml would wrap it once more, forever.
struct Unspanned(RawNode);

impl<'de> Deserialize<'de> for Unspanned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(NodeVisitor { spanned: false })
            .map(Unspanned)
    }
}

struct NodeVisitor {
    /// Whether toml may answer with the {start, end, value} map.
    spanned: bool,
}

fn unspanned(value: RawValue) -> RawNode {
    RawNode { span: None, value }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = RawNode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawNode, E> {
        Ok(unspanned(RawValue::Boolean(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawNode, E> {
        Ok(unspanned(RawValue::Integer(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawNode, E> {
        i64::try_from(v)
            .map(|v| unspanned(RawValue::Integer(v)))
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawNode, E> {
        Ok(unspanned(RawValue::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawNode, E> {
        Ok(unspanned(RawValue::String(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<RawNode, E> {
        Ok(unspanned(RawValue::String(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<RawNode>()? {
            items.push(item);
        }
        Ok(unspanned(RawValue::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawNode, A::Error> {
        let Some(first_key) = map.next_key::<String>()? else {
            return Ok(unspanned(RawValue::Table(Vec::new())));
        };
        if self.spanned && first_key == SPANNED_START {
            let start: usize = map.next_value()?;
            let end = match map.next_key::<String>()? {
                Some(key) if key == SPANNED_END => map.next_value::<usize>()?,
                _ => return Err(de::Error::missing_field(SPANNED_END)),
            };
            let Unspanned(mut node) = match map.next_key::<String>()? {
                Some(key) if key == SPANNED_VALUE => map.next_value::<Unspanned>()?,
                _ => return Err(de::Error::missing_field(SPANNED_VALUE)),
            };
            node.span = Some(start..end);
            return Ok(node);
        }
        if first_key == DATETIME_KEY {
            let datetime: String = map.next_value()?;
            return Ok(unspanned(RawValue::Datetime(datetime)));
        }
        let mut entries = vec![(first_key, map.next_value::<RawNode>()?)];
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<RawNode>()?;
            entries.push((key, value));
        }
        Ok(unspanned(RawValue::Table(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(node: &'a Node, key: &str) -> &'a Node {
        match &node.value {
            Value::Table(entries) => entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, n)| n)
                .unwrap_or_else(|| panic!("no key {key}")),
            other => panic!("not a table: {other:?}"),
        }
    }

    fn item(node: &Node, index: usize) -> &Node {
        match &node.value {
            Value::Array(items) => &items[index],
            other => panic!("not an array: {other:?}"),
        }
    }

    #[test]
    fn every_node_gets_its_line() {
        let text = "# comment\n\
                    [server]\n\
                    workers = 4\n\
                    \n\
                    [[listener]]\n\
                    address = \"a\"\n\
                    client_ca = [\n  \"x\",\n  \"y\",\n]\n\
                    [[listener]]\n\
                    address = \"b\"\n\
                    [timeouts]\n\
                    idle = { a = 1 }\n";
        let root = parse(text).unwrap();
        assert_eq!(root.line, 1);
        assert_eq!(entry(&root, "server").line, 2);
        assert_eq!(entry(entry(&root, "server"), "workers").line, 3);
        let listeners = entry(&root, "listener");
        assert_eq!(item(listeners, 0).line, 5);
        assert_eq!(entry(item(listeners, 0), "address").line, 6);
        let cas = entry(item(listeners, 0), "client_ca");
        assert_eq!(cas.line, 7);
        assert_eq!(item(cas, 1).line, 9);
        assert_eq!(item(listeners, 1).line, 11);
        assert_eq!(entry(item(listeners, 1), "address").line, 12);
        assert_eq!(entry(entry(&root, "timeouts"), "idle").line, 14);
    }

    #[test]
    fn implicit_tables_and_datetimes_are_accepted() {
        let text = "server.workers = 4\n\n[limits.inner]\nwhen = 1979-05-27T07:32:00Z\n";
        let root = parse(text).unwrap();
        let server = entry(&root, "server");
        assert_eq!(server.line, 1);
        assert_eq!(entry(server, "workers").value, Value::Integer(4));
        let inner = entry(entry(&root, "limits"), "inner");
        assert_eq!(inner.line, 3);
        let when = entry(inner, "when");
        assert_eq!(when.line, 4);
        assert!(matches!(when.value, Value::Datetime(_)));
    }

    #[test]
    fn syntax_errors_name_line_and_key() {
        let dup = parse("[server]\nworkers = 4\nworkers = 5\n").unwrap_err();
        assert_eq!(dup.line, 3);
        assert_eq!(dup.field, "server.workers");
        assert!(dup.problem.contains("duplicate key"), "{}", dup.problem);

        let table =
            parse("[[route]]\npath = \"/\"\n[[route]]\npath = \"/a\"\n[route]\n").unwrap_err();
        assert_eq!(table.line, 5);
        assert_eq!(table.field, "route");
        assert!(!table.problem.contains('\n'));

        let bad = parse("a = 1\n[[route]]\n[[route]]\npath = \n").unwrap_err();
        assert_eq!(bad.line, 4);
        assert_eq!(bad.field, "route[1].path");

        let top = parse("x = \"unterminated\n").unwrap_err();
        assert_eq!((top.line, top.field.as_str()), (1, "x"));
    }

    /// Found by fuzz/src/bin/config.rs (fuzz/corpus/config/crash-nul-in-comment):
    /// toml has no message for a control character in a comment, which left
    /// `portcullis.toml:2: (top level): ` with nothing after it.
    #[test]
    fn a_syntax_error_toml_does_not_describe_is_still_named() {
        let e = parse("# fine\n# a NUL \0 in a comment\n[server]\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.problem, "unexpected character U+0000 at column 9");
        let e = parse("[server]\nworkers = 1\n# bell \x07\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(e.problem, "unexpected character U+0007 at column 8");
    }
}
