//! IPLD ⇄ JSON in the DAG-JSON style (bytes as `{"/": {"bytes": base64}}`, links as
//! `{"/": "<cid>"}`), for fixture files, vectors and `canopy token inspect`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use ipld_core::ipld::Ipld;
use serde_json::{Map, Value};

/// JSON → IPLD. Integers stay integers, other numbers become floats; `{"/": …}` objects become
/// bytes or links when well-formed.
pub fn json_to_ipld(value: &Value) -> Ipld {
    match value {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Ipld::Integer(i.into()),
            (None, Some(u)) => Ipld::Integer(u.into()),
            _ => Ipld::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Ipld::String(s.clone()),
        Value::Array(a) => Ipld::List(a.iter().map(json_to_ipld).collect()),
        Value::Object(o) => {
            if let (1, Some(slash)) = (o.len(), o.get("/")) {
                if let Some(b) = bytes_of(slash) {
                    return Ipld::Bytes(b);
                }
                if let Some(c) = slash.as_str().and_then(|s| s.parse().ok()) {
                    return Ipld::Link(c);
                }
            }
            Ipld::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), json_to_ipld(v)))
                    .collect::<BTreeMap<_, _>>(),
            )
        }
    }
}

/// Decodes the `{"bytes": base64}` inside a DAG-JSON `{"/": …}` (padded or not).
pub fn bytes_of(slash: &Value) -> Option<Vec<u8>> {
    let Value::Object(inner) = slash else {
        return None;
    };
    let text = inner.get("bytes")?.as_str()?;
    if inner.len() != 1 {
        return None;
    }
    STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
        .or_else(|| STANDARD.decode(text).ok())
}

/// IPLD → JSON (DAG-JSON style, unpadded base64 for bytes).
pub fn ipld_to_json(value: &Ipld) -> Value {
    match value {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(*b),
        Ipld::Integer(i) => i64::try_from(*i)
            .map(Value::from)
            .or_else(|_| u64::try_from(*i).map(Value::from))
            .unwrap_or_else(|_| Value::String(i.to_string())),
        Ipld::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Ipld::String(s) => Value::String(s.clone()),
        Ipld::Bytes(b) => slash(Value::Object(Map::from_iter([(
            "bytes".to_owned(),
            Value::String(STANDARD_NO_PAD.encode(b)),
        )]))),
        Ipld::List(l) => Value::Array(l.iter().map(ipld_to_json).collect()),
        Ipld::Map(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), ipld_to_json(v)))
                .collect(),
        ),
        Ipld::Link(c) => slash(Value::String(c.to_string())),
    }
}

fn slash(v: Value) -> Value {
    Value::Object(Map::from_iter([("/".to_owned(), v)]))
}
