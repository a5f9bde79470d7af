//! Runner for the UCAN specification's fixture files (`fixtures/1.0.0/` of the spec repository:
//! `delegation.json`, `policy.json`, `invocation.json`), shared by the tests and
//! `canopy ucan fixtures`.
//!
//! Fixture files are read with [`parse_lenient_json`], which accepts one upstream defect (see its
//! docs and `spec/caps.md` §Fixtures). Tokens inside them are decoded strictly.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ipld_core::ipld::Ipld;
use serde_json::{Map, Value};

use crate::ipld_json::{bytes_of, ipld_to_json, json_to_ipld};
use crate::{Context, Delegation, Invocation, Policy, Proofs, Revocations, SecretKey, Verifier};

/// Error reading a fixture file (not a failing case: those are [`CaseResult`]s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// The text is not JSON, even leniently.
    #[error("not JSON at byte {offset}")]
    Json {
        /// Where parsing stopped.
        offset: usize,
    },
    /// The JSON is not one of the three fixture formats.
    #[error("not a UCAN fixture file (expected the delegation, policy or invocation format)")]
    UnknownFormat,
}

/// One fixture case's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// `valid[0] basic delegation bob > carol`, …
    pub name: String,
    /// Whether the implementation behaved as the fixture expects.
    pub passed: bool,
    /// What was checked or what went wrong.
    pub detail: String,
}

/// Runs every case of a fixture file; `now` (Unix seconds) is the validation time for
/// invocation fixtures, which are written against the current time.
pub fn run(text: &str, now: u64) -> Result<Vec<CaseResult>, FixtureError> {
    let json = parse_lenient_json(text)?;
    let cases = |key: &str| {
        json.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let first = cases("valid").into_iter().chain(cases("invalid")).next();
    let Some(first) = first else {
        return Err(FixtureError::UnknownFormat);
    };
    let mut out = Vec::new();
    if first.get("token").is_some() {
        let principals = json
            .get("principals")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (i, case) in cases("valid").iter().enumerate() {
            out.push(delegation_case(i, case, &principals));
        }
    } else if first.get("policies").is_some() {
        for (set, valid) in [("valid", true), ("invalid", false)] {
            for (i, case) in cases(set).iter().enumerate() {
                out.extend(policy_cases(set, i, case, valid));
            }
        }
    } else if first.get("invocation").is_some() {
        for (set, valid) in [("valid", true), ("invalid", false)] {
            for (i, case) in cases(set).iter().enumerate() {
                out.push(invocation_case(set, i, case, valid, now));
            }
        }
    } else {
        return Err(FixtureError::UnknownFormat);
    }
    Ok(out)
}

fn result(name: String, check: Result<String, String>) -> CaseResult {
    match check {
        Ok(detail) => CaseResult {
            name,
            passed: true,
            detail,
        },
        Err(detail) => CaseResult {
            name,
            passed: false,
            detail,
        },
    }
}

fn delegation_case(i: usize, case: &Value, principals: &Map<String, Value>) -> CaseResult {
    let label = case.get("name").and_then(Value::as_str).unwrap_or("?");
    result(
        format!("delegation valid[{i}] {label}"),
        check_delegation(case, principals),
    )
}

fn check_delegation(case: &Value, principals: &Map<String, Value>) -> Result<String, String> {
    let token = case
        .get("token")
        .and_then(Value::as_str)
        .ok_or("no token")?;
    let bytes = STANDARD.decode(token).map_err(|_| "token is not base64")?;
    let d = Delegation::decode(&bytes).map_err(|e| format!("decode: {e}"))?;
    let want_cid = case.get("cid").and_then(Value::as_str).ok_or("no cid")?;
    if d.cid().to_string() != want_cid {
        return Err(format!("cid {} != {want_cid}", d.cid()));
    }
    if !d.signature_valid() {
        return Err("signature does not verify".into());
    }
    let env = case.get("envelope").ok_or("no envelope")?;
    let sig = env
        .get("signature")
        .and_then(Value::as_str)
        .ok_or("no signature")?;
    if STANDARD.encode(d.signature()) != sig {
        return Err("signature bytes differ".into());
    }
    for (field, want) in [("alg", "Ed25519"), ("enc", "DAG-CBOR"), ("spec", "dlg")] {
        if env.get(field).and_then(Value::as_str) != Some(want) {
            return Err(format!("envelope {field} is not {want}"));
        }
    }
    if env.get("version").and_then(Value::as_str) != Some(d.version()) {
        return Err("version differs".into());
    }
    // Every payload field, compared as JSON (bytes in the fixture are padded base64).
    let want = env
        .get("payload")
        .and_then(Value::as_object)
        .ok_or("no payload")?;
    let got = d.payload();
    if want.len() != got.len() {
        return Err(format!(
            "payload has {} fields, fixture {}",
            got.len(),
            want.len()
        ));
    }
    for (k, v) in want {
        let mine = got.get(k).ok_or(format!("missing field {k}"))?;
        let same = match mine {
            Ipld::Bytes(b) => v.as_str() == Some(STANDARD.encode(b).as_str()),
            other => ipld_to_json(other) == *v,
        };
        if !same {
            return Err(format!("field {k} differs"));
        }
    }
    // Byte compatibility: re-sign the same payload with the issuer's fixture key (Ed25519 is
    // deterministic) and get the very same token.
    let issuer = principals
        .values()
        .filter_map(|p| {
            p.as_str()
                .and_then(|s| SecretKey::from_multicodec_base64(s).ok())
        })
        .find(|k| k.did() == *d.issuer())
        .ok_or("issuer is not among the principals")?;
    if issuer.sign(d.signed_payload()).as_slice() != d.signature() {
        return Err("re-signing with the issuer's key gives another signature".into());
    }
    Ok(format!(
        "cid {}, signature, {} fields, re-signed identically",
        d.cid(),
        got.len()
    ))
}

fn policy_cases(set: &str, i: usize, case: &Value, valid: bool) -> Vec<CaseResult> {
    let args = json_to_ipld(case.get("args").unwrap_or(&Value::Null));
    let policies = case
        .get("policies")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    policies
        .iter()
        .enumerate()
        .map(|(j, p)| {
            let name = format!("policy {set}[{i}].policies[{j}]");
            let check = match Policy::from_ipld(&json_to_ipld(p)) {
                Err(e) => Err(format!("does not parse: {e}")),
                Ok(policy) => match (policy.matches(&args), valid) {
                    (true, true) => Ok("matches".to_owned()),
                    (false, false) => Ok("does not match, as expected".to_owned()),
                    (true, false) => Err("matches, but the fixture says it must not".to_owned()),
                    (false, true) => Err("does not match, but the fixture says it must".to_owned()),
                },
            };
            result(name, check)
        })
        .collect()
}

fn invocation_case(set: &str, i: usize, case: &Value, valid: bool, now: u64) -> CaseResult {
    let label = case.get("name").and_then(Value::as_str).unwrap_or("?");
    let name = format!("invocation {set}[{i}] {label}");
    let check = (|| {
        let inv = case
            .get("invocation")
            .and_then(|v| v.get("/"))
            .and_then(bytes_of)
            .ok_or("invocation bytes missing")?;
        let mut proofs = Proofs::new();
        for p in case
            .get("proofs")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            proofs.insert(p.get("/").and_then(bytes_of).ok_or("proof bytes missing")?);
        }
        let revocations = Revocations::new();
        let ctx = Context {
            time: now,
            revocations: &revocations,
            op: None,
        };
        let outcome = Invocation::decode(&inv)
            .map_err(|e| format!("decode: {e}"))
            .and_then(|inv| {
                Verifier::new()
                    .verify_invocation(&inv, &proofs, &ctx)
                    .map_err(|e| e.to_string())
            });
        let expected = case
            .get("error")
            .and_then(|e| e.get("name"))
            .and_then(Value::as_str);
        match (outcome, valid) {
            (Ok(_), true) => Ok("valid".to_owned()),
            (Err(e), true) => Err(format!("expected valid, got {e}")),
            (Ok(_), false) => Err(format!(
                "expected {}, got valid",
                expected.unwrap_or("an error")
            )),
            (Err(e), false) => match expected {
                Some(class) if e.starts_with(&format!("{class}:")) => Ok(format!("rejected: {e}")),
                Some(class) => Err(format!("expected {class}, got {e}")),
                None => Ok(format!("rejected: {e}")),
            },
        }
    })();
    result(name, check.map_err(|e: String| e))
}

/// Parses JSON, accepting one extension needed by the upstream `policy.json` fixture: an object
/// that appears where an object member's key is expected (`{"a": {{"b": 1}}}`) is merged into the
/// enclosing object (`{"a": {"b": 1}}`). Everything else is standard JSON (RFC 8259); nesting is
/// limited to 128 levels. Used only for fixture files; tokens are always decoded strictly.
pub fn parse_lenient_json(text: &str) -> Result<Value, FixtureError> {
    let mut p = Lenient {
        s: text.as_bytes(),
        pos: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err());
    }
    Ok(v)
}

struct Lenient<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Lenient<'_> {
    fn err(&self) -> FixtureError {
        FixtureError::Json { offset: self.pos }
    }

    fn ws(&mut self) {
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, FixtureError> {
        if depth > 128 {
            return Err(self.err());
        }
        self.ws();
        match self.s.get(self.pos) {
            Some(b'{') => {
                self.pos += 1;
                let mut map = Map::new();
                self.members(&mut map, depth)?;
                Ok(Value::Object(map))
            }
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Ok(Value::Array(items));
                    }
                    if !self.eat(b',') {
                        return Err(self.err());
                    }
                }
            }
            Some(_) => {
                // A scalar: let serde_json read exactly one value from here.
                let mut it =
                    serde_json::Deserializer::from_slice(&self.s[self.pos..]).into_iter::<Value>();
                match it.next() {
                    Some(Ok(v)) if !v.is_object() && !v.is_array() => {
                        self.pos += it.byte_offset();
                        Ok(v)
                    }
                    _ => Err(self.err()),
                }
            }
            None => Err(self.err()),
        }
    }

    /// Object members after `{`, through the closing `}`; a keyless `{…}` member is merged.
    fn members(&mut self, map: &mut Map<String, Value>, depth: usize) -> Result<(), FixtureError> {
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            self.ws();
            if self.s.get(self.pos) == Some(&b'{') {
                self.pos += 1;
                self.members(map, depth + 1)?;
            } else {
                let Value::String(key) = self.value(depth + 1)? else {
                    return Err(self.err());
                };
                if !self.eat(b':') {
                    return Err(self.err());
                }
                let v = self.value(depth + 1)?;
                map.insert(key, v);
            }
            if self.eat(b'}') {
                return Ok(());
            }
            if !self.eat(b',') {
                return Err(self.err());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lenient_reader_merges_keyless_objects_only() {
        assert_eq!(
            parse_lenient_json(r#"{"a": {{"b": [1, 2.5, "x", null, true]}}}"#).unwrap(),
            json!({"a": {"b": [1, 2.5, "x", null, true]}})
        );
        assert_eq!(
            parse_lenient_json(r#"{"a": 1, {"b": 2}, "c": 3}"#).unwrap(),
            json!({"a":1,"b":2,"c":3})
        );
        for bad in [
            r#"{"a" 1}"#,
            "[1,]",
            "{",
            r#"{"a":1,}"#,
            "[1] 2",
            "{1: 2}",
            "tru",
        ] {
            assert!(parse_lenient_json(bad).is_err(), "{bad:?} should fail");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse_lenient_json(&deep).is_err());
    }
}
