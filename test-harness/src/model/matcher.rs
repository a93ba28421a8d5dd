//! Value matchers used for headers, tags and span fields.
//!
//! YAML forms:
//! - a scalar (`"abc"`, `200`, `true`) — the value equals its string form
//! - `{equals: "abc"}` — same, explicit
//! - `{re: "^[0-9a-f]{32}$"}` — regex search (use anchors for a full match)
//! - `{contains: "UF"}` — substring
//! - `{one_of: ["a", "b"]}` — equals one of the strings
//! - `{absent: true}` / `{present: true}` (`absent: false` = present, `present: false` = absent)
//! - `{ref: "<upstream>/<request index>/<header name>"}` — equals the header that upstream received
//!   on that request (the referenced header must exist)
//! - `{fmt: "{{app/0/x-b3-traceid}}-{{app/0/x-b3-spanid}}-1"}` — equals the string after replacing
//!   every `{{<ref>}}` with the referenced header
//! - `{not: <matcher>}`, `{all: [<matcher>...]}`, `{any: [<matcher>...]}`
//!
//! All matchers except `absent`, `not` and `any`/`all` combinations of them fail on a missing value.

use regex::Regex;
use serde_yaml::Value;
use std::fmt;

/// Resolves `{ref: ...}` targets.
pub trait RefResolver {
    /// `Ok(Some(v))` when the referenced header exists, `Ok(None)` when it is absent, `Err` when the
    /// reference itself is invalid (unknown upstream, request index out of range).
    fn resolve(&self, reference: &str) -> Result<Option<String>, String>;
}

/// A resolver that knows nothing (for contexts where refs are meaningless).
pub struct NoRefs;

impl RefResolver for NoRefs {
    fn resolve(&self, reference: &str) -> Result<Option<String>, String> {
        Err(format!("ref {reference:?} cannot be resolved here"))
    }
}

#[derive(Debug, Clone)]
pub enum Matcher {
    Equals(String),
    Regex(Regex),
    Contains(String),
    OneOf(Vec<String>),
    Absent,
    Present,
    Ref(String),
    Fmt(String),
    Not(Box<Matcher>),
    All(Vec<Matcher>),
    Any(Vec<Matcher>),
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Equals(s) => write!(f, "{s:?}"),
            Matcher::Regex(r) => write!(f, "/{}/", r.as_str()),
            Matcher::Contains(s) => write!(f, "contains {s:?}"),
            Matcher::OneOf(v) => write!(f, "one of {v:?}"),
            Matcher::Absent => write!(f, "absent"),
            Matcher::Present => write!(f, "present"),
            Matcher::Ref(r) => write!(f, "ref {r}"),
            Matcher::Fmt(t) => write!(f, "fmt {t:?}"),
            Matcher::Not(m) => write!(f, "not({m})"),
            Matcher::All(ms) => write!(f, "all({})", join(ms)),
            Matcher::Any(ms) => write!(f, "any({})", join(ms)),
        }
    }
}

fn join(ms: &[Matcher]) -> String {
    ms.iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(actual: Option<&str>) -> String {
    match actual {
        Some(v) => format!("{v:?}"),
        None => "absent".to_string(),
    }
}

/// The string form of a YAML scalar, or `None` for non-scalars.
pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Tagged(t) => scalar_string(&t.value),
        _ => None,
    }
}

impl TryFrom<Value> for Matcher {
    type Error = String;

    fn try_from(v: Value) -> Result<Self, String> {
        Matcher::parse(&v)
    }
}

impl<'de> serde::Deserialize<'de> for Matcher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Matcher::parse(&v).map_err(serde::de::Error::custom)
    }
}

impl Matcher {
    pub fn parse(v: &Value) -> Result<Matcher, String> {
        if let Some(s) = scalar_string(v) {
            return Ok(Matcher::Equals(s));
        }
        let map = match v {
            Value::Mapping(m) => m,
            Value::Null => {
                return Err(
                    "empty matcher (use {absent: true} to require a missing value)".to_string(),
                )
            }
            other => {
                return Err(format!(
                    "a matcher is a scalar or a one-key map, got {other:?} (use {{one_of: [...]}} for a list)"
                ))
            }
        };
        if map.len() != 1 {
            return Err(format!(
                "a matcher map must have exactly one key (re, contains, equals, one_of, absent, present, ref, not, all, any), got {} keys",
                map.len()
            ));
        }
        let (k, val) = map.iter().next().ok_or("empty matcher map")?;
        let key = k.as_str().ok_or("matcher key must be a string")?;
        let string_arg = |what: &str| {
            scalar_string(val).ok_or_else(|| format!("`{what}` needs a string argument"))
        };
        let bool_arg = |what: &str| {
            val.as_bool()
                .ok_or_else(|| format!("`{what}` needs true or false"))
        };
        let list_arg = |what: &str| -> Result<Vec<Matcher>, String> {
            val.as_sequence()
                .ok_or_else(|| format!("`{what}` needs a list of matchers"))?
                .iter()
                .map(Matcher::parse)
                .collect()
        };
        Ok(match key {
            "equals" => Matcher::Equals(string_arg(key)?),
            "re" => {
                let pat = string_arg(key)?;
                Matcher::Regex(Regex::new(&pat).map_err(|e| format!("bad regex {pat:?}: {e}"))?)
            }
            "contains" => Matcher::Contains(string_arg(key)?),
            "one_of" => Matcher::OneOf(
                val.as_sequence()
                    .ok_or("`one_of` needs a list of strings")?
                    .iter()
                    .map(|x| scalar_string(x).ok_or("`one_of` entries must be scalars"))
                    .collect::<Result<_, _>>()?,
            ),
            "absent" => {
                if bool_arg(key)? {
                    Matcher::Absent
                } else {
                    Matcher::Present
                }
            }
            "present" => {
                if bool_arg(key)? {
                    Matcher::Present
                } else {
                    Matcher::Absent
                }
            }
            "ref" => {
                let r = string_arg(key)?;
                let parts: Vec<&str> = r.splitn(3, '/').collect();
                if parts.len() != 3 || parts[1].parse::<usize>().is_err() || parts[2].is_empty() {
                    return Err(format!(
                        "ref must look like <upstream>/<request index>/<header>, got {r:?}"
                    ));
                }
                Matcher::Ref(r)
            }
            "fmt" => Matcher::Fmt(string_arg(key)?),
            "not" => Matcher::Not(Box::new(Matcher::parse(val)?)),
            "all" => Matcher::All(list_arg(key)?),
            "any" => Matcher::Any(list_arg(key)?),
            other => return Err(format!("unknown matcher `{other}`")),
        })
    }

    /// `Ok(())` when `actual` matches, else `Err(reason)`.
    pub fn check(&self, actual: Option<&str>, refs: &dyn RefResolver) -> Result<(), String> {
        self.eval(actual, refs).map_err(|f| match f {
            Fail::Mismatch(e) => e,
            Fail::BadRef(e) => format!("bad reference: {e}"),
        })
    }

    /// Like `check`, but a reference that cannot be resolved (unknown upstream, missing request,
    /// absent header) is a `BadRef` that `not` and `any` pass on instead of treating it as a
    /// mismatch: `{not: {ref: ...}}` must not pass because the scenario points at nothing.
    fn eval(&self, actual: Option<&str>, refs: &dyn RefResolver) -> Result<(), Fail> {
        let need = |a: Option<&str>| -> Result<String, Fail> {
            a.map(str::to_string)
                .ok_or_else(|| Fail::Mismatch(format!("expected {self}, got absent")))
        };
        let mismatch = |e: String| Err(Fail::Mismatch(e));
        match self {
            Matcher::Equals(want) => {
                let got = need(actual)?;
                if &got == want {
                    Ok(())
                } else {
                    mismatch(format!("expected {want:?}, got {got:?}"))
                }
            }
            Matcher::Regex(re) => {
                let got = need(actual)?;
                if re.is_match(&got) {
                    Ok(())
                } else {
                    mismatch(format!("expected /{}/, got {got:?}", re.as_str()))
                }
            }
            Matcher::Contains(s) => {
                let got = need(actual)?;
                if got.contains(s.as_str()) {
                    Ok(())
                } else {
                    mismatch(format!("expected to contain {s:?}, got {got:?}"))
                }
            }
            Matcher::OneOf(opts) => {
                let got = need(actual)?;
                if opts.contains(&got) {
                    Ok(())
                } else {
                    mismatch(format!("expected one of {opts:?}, got {got:?}"))
                }
            }
            Matcher::Absent => match actual {
                None => Ok(()),
                Some(v) => mismatch(format!("expected absent, got {v:?}")),
            },
            Matcher::Present => need(actual).map(|_| ()),
            Matcher::Ref(r) => {
                let want = refs.resolve(r).map_err(Fail::BadRef)?.ok_or_else(|| {
                    Fail::BadRef(format!("ref {r} points at a header that is absent"))
                })?;
                let got = need(actual)?;
                if got == want {
                    Ok(())
                } else {
                    mismatch(format!("expected {want:?} (ref {r}), got {got:?}"))
                }
            }
            Matcher::Fmt(t) => {
                let want = expand_refs(t, refs).map_err(Fail::BadRef)?;
                let got = need(actual)?;
                if got == want {
                    Ok(())
                } else {
                    mismatch(format!("expected {want:?} (fmt {t:?}), got {got:?}"))
                }
            }
            Matcher::Not(inner) => match inner.eval(actual, refs) {
                Ok(()) => mismatch(format!("expected not({inner}), got {}", show(actual))),
                Err(Fail::Mismatch(_)) => Ok(()),
                Err(bad @ Fail::BadRef(_)) => Err(bad),
            },
            Matcher::All(ms) => {
                for m in ms {
                    m.eval(actual, refs)?;
                }
                Ok(())
            }
            Matcher::Any(ms) => {
                let mut reasons = Vec::new();
                for m in ms {
                    match m.eval(actual, refs) {
                        Ok(()) => return Ok(()),
                        Err(Fail::Mismatch(e)) => reasons.push(e),
                        Err(bad @ Fail::BadRef(_)) => return Err(bad),
                    }
                }
                mismatch(format!(
                    "none of any({}) matched {}: {}",
                    join(ms),
                    show(actual),
                    reasons.join("; ")
                ))
            }
        }
    }
}

/// A regex written in a scenario, compiled when the scenario is loaded so a bad one fails there,
/// naming it, and is not recompiled at every check.
#[derive(Debug, Clone)]
pub struct Pattern(Regex);

impl Pattern {
    pub fn new(text: &str) -> Result<Pattern, String> {
        Regex::new(text)
            .map(Pattern)
            .map_err(|e| format!("bad regex {text:?}: {e}"))
    }

    pub fn is_match(&self, haystack: &str) -> bool {
        self.0.is_match(haystack)
    }

    /// The regex as the scenario wrote it.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Pattern::new(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a value did not match.
enum Fail {
    Mismatch(String),
    /// The matcher refers to something that does not exist: always a failure.
    BadRef(String),
}

/// Replaces every `{{<ref>}}` in `template` with the referenced header value.
pub fn expand_refs(template: &str, refs: &dyn RefResolver) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in {template:?}"))?;
        let r = after[..end].trim();
        let v = refs
            .resolve(r)?
            .ok_or_else(|| format!("ref {r} points at a header that is absent"))?;
        out.push_str(&v);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn m(yaml: &str) -> Matcher {
        let v: Value = serde_yaml::from_str(yaml).unwrap();
        Matcher::parse(&v).unwrap()
    }

    struct Refs(HashMap<String, Option<String>>);
    impl RefResolver for Refs {
        fn resolve(&self, r: &str) -> Result<Option<String>, String> {
            self.0.get(r).cloned().ok_or_else(|| format!("unknown {r}"))
        }
    }

    #[test]
    fn scalars_and_regex() {
        assert!(m("abc").check(Some("abc"), &NoRefs).is_ok());
        assert!(m("abc").check(Some("abd"), &NoRefs).is_err());
        assert!(m("abc").check(None, &NoRefs).is_err());
        assert!(m("200").check(Some("200"), &NoRefs).is_ok());
        assert!(m("true").check(Some("true"), &NoRefs).is_ok());
        assert!(m("1.0").check(Some("1.0"), &NoRefs).is_ok());
        let re = m("{re: '^[0-9a-f]{16}$'}");
        assert!(re.check(Some("0123456789abcdef"), &NoRefs).is_ok());
        let err = re.check(Some("0123456789ABCDEF"), &NoRefs).unwrap_err();
        assert!(err.contains("0123456789ABCDEF"), "{err}");
        assert!(m("{contains: UF}").check(Some("UF,URX"), &NoRefs).is_ok());
        assert!(m("{one_of: [a, b]}").check(Some("b"), &NoRefs).is_ok());
        assert!(m("{one_of: [a, b]}").check(Some("c"), &NoRefs).is_err());
    }

    #[test]
    fn presence_and_combinators() {
        assert!(m("{absent: true}").check(None, &NoRefs).is_ok());
        assert!(m("{absent: true}").check(Some(""), &NoRefs).is_err());
        assert!(m("{present: true}").check(Some(""), &NoRefs).is_ok());
        assert!(m("{present: false}").check(None, &NoRefs).is_ok());
        assert!(m("{not: x}").check(Some("y"), &NoRefs).is_ok());
        assert!(m("{not: x}").check(None, &NoRefs).is_ok());
        assert!(m("{not: x}").check(Some("x"), &NoRefs).is_err());
        let all = m("{all: [{re: '^a'}, {not: abc}]}");
        assert!(all.check(Some("abd"), &NoRefs).is_ok());
        assert!(all.check(Some("abc"), &NoRefs).is_err());
        let any = m("{any: [{absent: true}, '0']}");
        assert!(any.check(None, &NoRefs).is_ok());
        assert!(any.check(Some("0"), &NoRefs).is_ok());
        assert!(any.check(Some("1"), &NoRefs).is_err());
    }

    #[test]
    fn refs() {
        let refs = Refs(HashMap::from([
            ("app/0/x-b3-traceid".to_string(), Some("abc".to_string())),
            ("app/0/x-b3-parentspanid".to_string(), None),
        ]));
        let r = m("{ref: app/0/x-b3-traceid}");
        assert!(r.check(Some("abc"), &refs).is_ok());
        assert!(r.check(Some("abd"), &refs).is_err());
        assert!(m("{ref: app/0/x-b3-parentspanid}")
            .check(Some("x"), &refs)
            .unwrap_err()
            .contains("absent"));
        assert!(m("{ref: app/1/x}").check(Some("x"), &refs).is_err());
        let f = m("{fmt: '{{app/0/x-b3-traceid}}-x-{{ app/0/x-b3-traceid }}'}");
        assert!(f.check(Some("abc-x-abc"), &refs).is_ok());
        assert!(f.check(Some("abc-x-abd"), &refs).is_err());
        assert!(m("{fmt: '{{app/0/x-b3-parentspanid}}'}")
            .check(Some(""), &refs)
            .is_err());
        // A reference to nothing fails even under `not` and `any`.
        for bad in [
            "{not: {ref: app/0/x-b3-parentspanid}}",
            "{not: {ref: app/9/x}}",
            "{any: [{ref: app/9/x}, {present: true}]}",
            "{all: [{present: true}, {not: {fmt: '{{app/9/x}}'}}]}",
        ] {
            let e = m(bad).check(Some("x"), &refs).unwrap_err();
            assert!(e.contains("bad reference"), "{bad}: {e}");
        }
        assert!(m("{not: {ref: app/0/x-b3-traceid}}")
            .check(Some("abd"), &refs)
            .is_ok());
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "~",
            "[a, b]",
            "{re: '('}",
            "{bogus: 1}",
            "{re: a, not: b}",
            "{ref: 'app/x/y'}",
            "{absent: yes-please}",
        ] {
            let v: Value = serde_yaml::from_str(bad).unwrap();
            assert!(Matcher::parse(&v).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn patterns_compile_once_and_name_a_bad_regex() {
        let p: Pattern = serde_yaml::from_str("'^listener\\.'").unwrap();
        assert!(p.is_match("listener.http") && !p.is_match("xlistener"));
        assert_eq!(p.to_string(), "^listener\\.");
        let e = serde_yaml::from_str::<Pattern>("'(x'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad regex \"(x\""), "{e}");
    }
}
