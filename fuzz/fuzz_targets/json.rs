//! Structured JSON for the merge targets: a few keys, so that patches and
//! data collide; every kind of value; a bounded depth.

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Value};

const KEYS: &[&str] = &[
    "a",
    "b",
    "user_id",
    "",
    "é",
    "\"q\"",
    "back\\slash",
    "\u{1}",
    "null",
    "{",
];

#[derive(Debug)]
pub struct Object(pub Map<String, Value>);

fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let kind = if depth == 0 {
        u.int_in_range(0..=4)?
    } else {
        u.int_in_range(0..=6)?
    };
    Ok(match kind {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => {
            let f: f64 = u.arbitrary()?;
            if f.is_finite() {
                Value::from(f)
            } else {
                Value::from(0.5)
            }
        }
        4 => Value::String(u.arbitrary()?),
        5 => {
            let n = u.int_in_range(0..=3)?;
            Value::Array(
                (0..n)
                    .map(|_| value(u, depth - 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => Value::Object(object(u, depth - 1)?),
    })
}

fn object(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Map<String, Value>> {
    let n = u.int_in_range(0..=4)?;
    let mut m = Map::new();
    for _ in 0..n {
        let key = if u.ratio(1, 8)? {
            u.arbitrary::<String>()?
        } else {
            KEYS[u.choose_index(KEYS.len())?].to_string()
        };
        m.insert(key, value(u, depth)?);
    }
    Ok(m)
}

impl<'a> Arbitrary<'a> for Object {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Object(object(u, 4)?))
    }
}

/// Session data and the patches applied to it, in order.
#[derive(Debug)]
pub struct Case {
    pub data: Object,
    pub patches: Vec<Object>,
}

impl<'a> Arbitrary<'a> for Case {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let data = u.arbitrary()?;
        let n = u.int_in_range(1..=3)?;
        let patches = (0..n).map(|_| u.arbitrary()).collect::<Result<_, _>>()?;
        Ok(Case { data, patches })
    }
}

/// serde_json (with `raw_value`) reads an object with this key as a raw
/// value, so the proxy refuses any update that holds it: it never reaches
/// a store.
pub const RESERVED_KEY: &str = "$serde_json::private::RawValue";

impl Case {
    /// Whether the proxy would refuse this case before any store saw it.
    pub fn refused_by_the_proxy(&self) -> bool {
        let (data, patches) = self.texts();
        std::iter::once(&data)
            .chain(&patches)
            .any(|t| t.contains(RESERVED_KEY))
    }

    /// The texts a store is given: compact JSON, as the proxy writes it.
    pub fn texts(&self) -> (String, Vec<String>) {
        let text = |o: &Object| serde_json::to_string(&o.0).expect("a map serializes");
        (text(&self.data), self.patches.iter().map(text).collect())
    }

    /// RFC 7396 by the `json-patch` crate, the reference.
    #[allow(dead_code)] // merge_lua compares with the Rust merge instead
    pub fn reference(&self) -> Value {
        let mut target = Value::Object(self.data.0.clone());
        for p in &self.patches {
            json_patch::merge(&mut target, &Value::Object(p.0.clone()));
        }
        target
    }
}
