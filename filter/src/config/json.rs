//! Reading the configuration document field by field, each error naming its JSON path.
//!
//! Why not `#[derive(Deserialize)]` with `serde_path_to_error`: the two made up about 80 KiB of the
//! module (a third of it; bench/README.md, History) for a dozen fields, and a path is only known
//! to serde at the cost of wrapping every visitor. Here each reader knows its path, every key an
//! object does not take is an unknown field, and the messages keep serde's wording.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use serde_json::{Map, Value};

use super::{error, ConfigError};

type Result<T> = std::result::Result<T, ConfigError>;

/// One JSON object being read; `finish` refuses the keys nobody asked for.
pub struct Object<'a> {
    path: String,
    /// `None`: the section is absent and reads as empty.
    map: Option<&'a Map<String, Value>>,
    known: Vec<&'static str>,
}

impl<'a> Object<'a> {
    /// The document itself, which must be an object.
    pub fn root(value: &'a Value) -> Result<Object<'a>> {
        Self::new(String::new(), value)
    }

    fn new(path: String, value: &'a Value) -> Result<Object<'a>> {
        match value {
            Value::Object(map) => Ok(Object {
                path,
                map: Some(map),
                known: Vec::new(),
            }),
            _ => Err(error(display(&path), "invalid type: expected an object")),
        }
    }

    /// A present (non-null where `null_is_absent`) field and its path.
    fn take(&mut self, key: &'static str, null_is_absent: bool) -> Option<(&'a Value, String)> {
        self.known.push(key);
        let value = self.map?.get(key)?;
        if null_is_absent && value.is_null() {
            return None;
        }
        Some((value, join(&self.path, key)))
    }

    /// A nested section; absent reads as an empty one.
    pub fn object(&mut self, key: &'static str) -> Result<Object<'a>> {
        match self.take(key, false) {
            Some((v, path)) => Object::new(path, v),
            None => Ok(Object {
                path: join(&self.path, key),
                map: None,
                known: Vec::new(),
            }),
        }
    }

    pub fn f64(&mut self, key: &'static str, default: f64) -> Result<f64> {
        match self.take(key, false) {
            None => Ok(default),
            Some((v, path)) => v.as_f64().ok_or_else(|| wrong(&path, v, "f64")),
        }
    }

    /// An integer within `range`, checked here, before any conversion could change the value.
    pub fn u64(
        &mut self,
        key: &'static str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<u64> {
        let Some((v, path)) = self.take(key, false) else {
            return Ok(default);
        };
        let n = v.as_u64().ok_or_else(|| match v.as_i64() {
            Some(n) => error(
                &path,
                &format!("invalid value: integer `{n}`, expected a non-negative integer"),
            ),
            None => wrong(&path, v, "a non-negative integer"),
        })?;
        if !range.contains(&n) {
            let (min, max) = (range.start(), range.end());
            return Err(error(
                &path,
                &format!("must be within {min}..={max}, got {n}"),
            ));
        }
        Ok(n)
    }

    /// A size within `range` (which fits any usize: its bound is far below 2^32).
    pub fn size(
        &mut self,
        key: &'static str,
        default: usize,
        range: RangeInclusive<u64>,
    ) -> Result<usize> {
        let n = self.u64(key, default as u64, range)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub fn bool(&mut self, key: &'static str, default: bool) -> Result<bool> {
        match self.take(key, false) {
            None => Ok(default),
            Some((v, path)) => v.as_bool().ok_or_else(|| wrong(&path, v, "a boolean")),
        }
    }

    pub fn string(&mut self, key: &'static str, default: &str) -> Result<String> {
        Ok(self
            .optional_string(key, false)?
            .unwrap_or_else(|| default.to_string()))
    }

    /// `null` reads as absent.
    pub fn nullable_string(&mut self, key: &'static str) -> Result<Option<String>> {
        self.optional_string(key, true)
    }

    fn optional_string(&mut self, key: &'static str, null: bool) -> Result<Option<String>> {
        match self.take(key, null) {
            None => Ok(None),
            Some((v, path)) => string_of(&path, v).map(Some),
        }
    }

    /// One of `choices`, by name.
    pub fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        choices: &[(&str, T)],
        default: T,
    ) -> Result<T> {
        match self.take(key, false) {
            None => Ok(default),
            Some((v, path)) => choice_of(&path, v, choices),
        }
    }

    /// A list of `choices`, each element's path `key[i]`.
    pub fn choices<T: Copy>(
        &mut self,
        key: &'static str,
        choices: &[(&str, T)],
    ) -> Result<Option<Vec<T>>> {
        self.list(key, |path, v| choice_of(path, v, choices))
    }

    pub fn strings(&mut self, key: &'static str) -> Result<Option<Vec<String>>> {
        self.list(key, string_of)
    }

    fn list<T>(
        &mut self,
        key: &'static str,
        item: impl Fn(&str, &Value) -> Result<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some((v, path)) = self.take(key, false) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(wrong(&path, v, "a sequence"));
        };
        let read = items.iter().enumerate();
        read.map(|(i, v)| item(&format!("{path}[{i}]"), v))
            .collect::<Result<Vec<T>>>()
            .map(Some)
    }

    /// An object of strings, each value's path `key.name`.
    pub fn string_map(&mut self, key: &'static str) -> Result<Option<BTreeMap<String, String>>> {
        let Some((v, path)) = self.take(key, false) else {
            return Ok(None);
        };
        let Value::Object(map) = v else {
            return Err(error(&path, "invalid type: expected an object"));
        };
        let read = map.iter().map(|(k, v)| {
            let value = string_of(&join(&path, k), v)?;
            Ok((k.clone(), value))
        });
        read.collect::<Result<BTreeMap<_, _>>>().map(Some)
    }

    /// Refuses the first key (in name order) that no reader took.
    pub fn finish(self) -> Result<()> {
        let mut keys = self.map.into_iter().flat_map(|m| m.keys());
        match keys.find(|k| !self.known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => {
                let expected = one_of(self.known.iter().copied());
                Err(error(
                    &join(&self.path, k),
                    &format!("unknown field `{k}`, expected one of {expected}"),
                ))
            }
        }
    }
}

fn string_of(path: &str, v: &Value) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| wrong(path, v, "a string"))
}

fn choice_of<T: Copy>(path: &str, v: &Value, choices: &[(&str, T)]) -> Result<T> {
    let name = v.as_str().ok_or_else(|| wrong(path, v, "a string"))?;
    match choices.iter().find(|(n, _)| *n == name) {
        Some((_, t)) => Ok(*t),
        None => {
            let expected = one_of(choices.iter().map(|(n, _)| *n));
            Err(error(
                path,
                &format!("unknown variant `{name}`, expected one of {expected}"),
            ))
        }
    }
}

/// "`a`, `b`, `c`", as serde lists what it expected.
fn one_of<'n>(names: impl Iterator<Item = &'n str>) -> String {
    let quoted: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

/// serde's wording: "invalid type: string \"1\", expected f64".
fn wrong(path: &str, v: &Value, expected: &str) -> ConfigError {
    let found = match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {}", super::quoted(s)),
        Value::Array(_) => "sequence".to_string(),
        Value::Object(_) => "map".to_string(),
    };
    error(path, &format!("invalid type: {found}, expected {expected}"))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() {
        "(root)"
    } else {
        path
    }
}
