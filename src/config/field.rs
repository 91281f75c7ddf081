//! Typed access to the located tree: every accessor reports the field's
//! dotted path and line when the value is not what it must be.

use super::tree::{Node, Value};
use super::units;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config error without the file name, which `super::parse` adds.
#[derive(Debug)]
pub(super) struct Problem {
    pub line: usize,
    pub field: String,
    pub problem: String,
}

/// A value together with its dotted path and line, so that every check can
/// report where it failed.
pub(super) struct Field {
    pub path: String,
    pub line: usize,
    pub value: Value,
}

/// The entries of a table that have not been taken yet.
pub(super) struct Fields {
    pub path: String,
    pub line: usize,
    pub entries: Vec<(String, Node)>,
}

impl Field {
    pub(super) fn root(node: Node) -> Field {
        Field {
            path: String::new(),
            line: 1,
            value: node.value,
        }
    }

    pub(super) fn problem(&self, problem: String) -> Problem {
        Problem {
            line: self.line,
            field: self.display_path(),
            problem,
        }
    }

    pub(super) fn display_path(&self) -> String {
        if self.path.is_empty() {
            "(top level)".to_string()
        } else {
            self.path.clone()
        }
    }

    /// The value for "found ..." messages: strings and numbers are quoted in
    /// full since they are short and usually the mistake itself.
    pub(super) fn describe(&self) -> String {
        match &self.value {
            Value::String(s) => format!("\"{s}\""),
            Value::Integer(i) => format!("the integer {i}"),
            other => other.kind().to_string(),
        }
    }

    pub(super) fn type_error(&self, expected: &str) -> Problem {
        self.problem(format!("expected {expected}, found {}", self.value.kind()))
    }

    pub(super) fn string(&self) -> Result<&str, Problem> {
        match &self.value {
            Value::String(s) => Ok(s),
            _ => Err(self.type_error("a string")),
        }
    }

    pub(super) fn integer(&self) -> Result<i64, Problem> {
        match &self.value {
            Value::Integer(i) => Ok(*i),
            _ => Err(self.type_error("an integer")),
        }
    }

    pub(super) fn boolean(&self) -> Result<bool, Problem> {
        match &self.value {
            Value::Boolean(b) => Ok(*b),
            _ => Err(self.type_error("true or false")),
        }
    }

    pub(super) fn to_usize<N: TryInto<usize> + Copy + std::fmt::Display>(
        &self,
        n: N,
    ) -> Result<usize, Problem> {
        n.try_into()
            .map_err(|_| self.problem(format!("{n} is out of range")))
    }

    /// A string that must be one of `options`; returns the matching option.
    pub(super) fn choice(&self, options: &[&'static str]) -> Result<&'static str, Problem> {
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

    pub(super) fn duration(&self) -> Result<Duration, Problem> {
        match &self.value {
            Value::String(s) => units::parse_duration(s).map_err(|why| self.problem(why)),
            Value::Integer(i) => Err(self.problem(format!(
                "{i} has no unit: write a string such as \"{i}s\" or \"{i}ms\""
            ))),
            _ => Err(self.type_error("a duration such as \"10s\"")),
        }
    }

    pub(super) fn positive_duration(&self) -> Result<Duration, Problem> {
        let d = self.duration()?;
        if d.is_zero() {
            return Err(self.problem("must be greater than zero".to_string()));
        }
        Ok(d)
    }

    /// Bytes per second, at least 1: a size ("1KiB") meaning per second.
    pub(super) fn rate(&self) -> Result<u64, Problem> {
        match self.size()? {
            0 => Err(self.problem(
                "0 bytes per second: must be at least 1 (a body must make progress)".into(),
            )),
            n => Ok(n),
        }
    }

    /// Bytes as an integer, or a string with a unit ("10MiB").
    pub(super) fn size(&self) -> Result<u64, Problem> {
        match &self.value {
            Value::Integer(i) => u64::try_from(*i)
                .map_err(|_| self.problem(format!("{i}: a size cannot be negative"))),
            Value::String(s) => units::parse_size(s).map_err(|why| self.problem(why)),
            _ => Err(self.type_error("a size such as 16384 or \"16KiB\"")),
        }
    }

    pub(super) fn array(self, expected: &str) -> Result<Vec<Field>, Problem> {
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

    /// Like `non_empty_array`, keeping this field (for later messages about it).
    pub(super) fn clone_array(&self, expected: &str) -> Result<Vec<Field>, Problem> {
        Field {
            path: self.path.clone(),
            line: self.line,
            value: self.value.clone(),
        }
        .non_empty_array(expected)
    }

    pub(super) fn non_empty_array(self, expected: &str) -> Result<Vec<Field>, Problem> {
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

    /// Opens a table whose keys are free-form (header names, say).
    pub(super) fn free_table(self) -> Result<Fields, Problem> {
        self.table_checked(None)
    }

    /// Opens the table, refusing keys outside `known` up front so that a
    /// misspelt key is reported as such, not as the required key missing.
    pub(super) fn table(self, known: &[&str]) -> Result<Fields, Problem> {
        self.table_checked(Some(known))
    }

    fn table_checked(self, known: Option<&[&str]>) -> Result<Fields, Problem> {
        let Value::Table(entries) = self.value else {
            let kind = self.value.kind();
            return Err(self.problem(format!("expected a table, found {kind}")));
        };
        let fields = Fields {
            path: self.path,
            line: self.line,
            entries,
        };
        let Some(known) = known else {
            return Ok(fields);
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

    /// A non-empty list of readable files (CA bundles, CRLs), resolved as
    /// `readable_file` resolves one.
    pub(super) fn readable_files(
        self,
        base_dir: &Path,
        expected: &str,
    ) -> Result<Vec<PathBuf>, Problem> {
        self.non_empty_array(expected)?
            .into_iter()
            .map(|f| f.readable_file(base_dir))
            .collect()
    }

    /// A path as written in the file, resolved against the config's directory,
    /// and checked to be a readable file now rather than at first handshake.
    pub(super) fn readable_file(&self, base_dir: &Path) -> Result<PathBuf, Problem> {
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
    pub(super) fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn take(&mut self, key: &str) -> Option<Field> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        let (key, node) = self.entries.remove(index);
        Some(Field {
            path: self.child_path(&key),
            line: node.line,
            value: node.value,
        })
    }

    /// A missing field is reported on the line of its table's header.
    pub(super) fn require(&mut self, key: &str) -> Result<Field, Problem> {
        self.take(key).ok_or_else(|| Problem {
            line: self.line,
            field: self.child_path(key),
            problem: "missing (this field is required)".to_string(),
        })
    }

    /// A problem with `key` of this table, reported on the table's line
    /// (for a field that is missing, or wrong only next to another one).
    pub(super) fn problem_here(&self, key: &str, problem: &str) -> Problem {
        Problem {
            line: self.line,
            field: self.child_path(key),
            problem: problem.to_string(),
        }
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    /// The first entry not taken yet, with its line: for "not allowed here" checks.
    pub(super) fn first_key(&self) -> Option<(String, usize)> {
        self.entries.first().map(|(k, n)| (k.clone(), n.line))
    }

    /// An optional array of tables such as `[[site]]`; None when absent.
    pub(super) fn take_tables(&mut self, key: &str) -> Result<Option<Vec<Field>>, Problem> {
        if !self.has(key) {
            return Ok(None);
        }
        self.require_tables(key).map(Some)
    }

    /// The remaining entries as fields, in file order (for free-form tables
    /// such as `set_headers = { "X-Env" = "prod" }`).
    pub(super) fn into_fields(self) -> Vec<(String, Field)> {
        let path = self.path;
        self.entries
            .into_iter()
            .map(|(key, node)| {
                let field = Field {
                    path: format!("{path}.{key}"),
                    line: node.line,
                    value: node.value,
                };
                (key, field)
            })
            .collect()
    }

    /// A required, non-empty array of tables such as `[[route]]`; each item
    /// comes back as a field named `route[i]`.
    pub(super) fn require_tables(&mut self, key: &str) -> Result<Vec<Field>, Problem> {
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
