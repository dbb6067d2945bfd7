//! A session's data, kept as the JSON text of an object. A read, the hot path,
//! forwards that text as it is, into a token or a header, and never builds a
//! map; only a write parses it, merges and writes it back. One allocation per
//! session instead of one per key and value also keeps a read in a large store
//! to a few cache misses, and a session to a fraction of the memory.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

#[derive(Clone)]
pub struct SessionData(Box<RawValue>);

static EMPTY: LazyLock<SessionData> = LazyLock::new(|| SessionData::from_map(&Map::new()));

impl SessionData {
    /// No data: what a request without a session forwards.
    pub fn empty() -> &'static SessionData {
        &EMPTY
    }

    pub fn from_map(map: &Map<String, Value>) -> Self {
        SessionData(serde_json::value::to_raw_value(map).expect("a JSON map always serializes"))
    }

    /// Text read from a store: it must be one JSON object.
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        object(RawValue::from_string(text)?)
    }

    /// The data as a map, for a write to change.
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.0.get()).expect("session data is a JSON object")
    }

    /// The JSON text, compact when this process wrote it.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Bytes of JSON text: what `max_bytes` limits.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Whether the object has no keys.
    pub fn is_empty(&self) -> bool {
        let text = self.0.get();
        text[1..text.len() - 1].trim_ascii().is_empty()
    }

    /// The data with the patches applied in turn (RFC 7396). What the
    /// patches do not reach keeps its text exactly (numbers beyond what an
    /// f64 holds included), as the Redis store's server-side merge keeps it;
    /// and no value is parsed that the patches do not reach into.
    pub fn merged(&self, patches: &[Map<String, Value>]) -> SessionData {
        if patches.is_empty() {
            return self.clone();
        }
        let mut map = raw_map(self.0.get());
        for patch in patches {
            merge_raw(&mut map, patch);
        }
        SessionData(
            serde_json::value::to_raw_value(&Written(&map)).expect("a JSON map always serializes"),
        )
    }

    /// The top-level keys and their values' text, for the routes that look
    /// into the data (`require`, `keys`, `headers`). Parsed on demand: a
    /// route that only forwards the session never pays for it.
    pub fn fields(&self) -> Fields<'_> {
        Fields(serde_json::from_str(self.0.get()).expect("session data is a JSON object"))
    }
}

fn object<E: de::Error>(raw: Box<RawValue>) -> Result<SessionData, E> {
    if raw.get().starts_with('{') {
        Ok(SessionData(raw))
    } else {
        Err(E::custom("session data is not a JSON object"))
    }
}

impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

/// Equal text: records this process wrote are compact with sorted keys, so
/// equal data has equal text.
impl PartialEq for SessionData {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for SessionData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SessionData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object(Box::<RawValue>::deserialize(d)?)
    }
}

/// The top-level fields of a session's data, borrowed from its text.
pub struct Fields<'a>(Entries<'a>);

impl<'a> Fields<'a> {
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        let Entries(entries) = &self.0;
        find(entries, key).ok().map(|i| entries[i].1)
    }

    pub fn contains(&self, key: &str) -> bool {
        find(&self.0.0, key).is_ok()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Entries::deserialize(d).map(Fields)
    }
}

/// The top-level entries of an object's text, sorted by key, each key
/// once. A vector, not a map: a session has a handful of keys, and a write
/// that parsed them into a B-tree and copied that into another cost 50,459
/// instructions against 48,667 this way (callgrind).
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// Where `key` is in entries sorted by key, or where it would go.
fn find<V>(entries: &[(Cow<'_, str>, V)], key: &str) -> Result<usize, usize> {
    entries.binary_search_by(|(k, _)| k.as_ref().cmp(key))
}

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Entries<'a>, M::Error> {
                let mut entries: Vec<(Cow<'de, str>, &'de RawValue)> =
                    Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some((Key(k), v)) = m.next_entry::<Key<'de>, &'de RawValue>()? {
                    entries.push((k, v));
                }
                // Text this process wrote is sorted with each key once; text
                // from elsewhere (another writer of the store) may not be:
                // sorted, stably, and a repeated key keeps its last value, as
                // a parsed map would.
                if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                    let mut kept: Vec<(Cow<'de, str>, &'de RawValue)> =
                        Vec::with_capacity(entries.len());
                    for entry in entries {
                        match kept.last_mut() {
                            Some(last) if last.0 == entry.0 => *last = entry,
                            _ => kept.push(entry),
                        }
                    }
                    entries = kept;
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// An object during a merge: its entries sorted by key, each key once, each
/// value either the text it had, an object the patches reached into, or a
/// patch's value.
type RawMap<'a> = Vec<(Cow<'a, str>, Slot<'a>)>;

enum Slot<'a> {
    Text(&'a RawValue),
    Object(RawMap<'a>),
    Patched(&'a Value),
}

fn raw_map(object: &str) -> RawMap<'_> {
    let Entries(entries) = serde_json::from_str(object).expect("session data is a JSON object");
    entries
        .into_iter()
        .map(|(k, v)| (k, Slot::Text(v)))
        .collect()
}

fn merge_raw<'a>(target: &mut RawMap<'a>, patch: &'a Map<String, Value>) {
    for (key, value) in patch {
        let at = find(target, key);
        match value {
            Value::Null => {
                if let Ok(i) = at {
                    target.remove(i);
                }
            }
            Value::Object(inner) => {
                let i = at.unwrap_or_else(|i| {
                    target.insert(i, (Cow::Borrowed(key.as_str()), Slot::Patched(value)));
                    i
                });
                let slot = &mut target[i].1;
                let mut object = match std::mem::replace(slot, Slot::Patched(value)) {
                    Slot::Object(o) => o,
                    Slot::Text(raw) if raw.get().starts_with('{') => raw_map(raw.get()),
                    // Anything else is replaced by an object (RFC 7396).
                    Slot::Text(_) | Slot::Patched(_) => RawMap::new(),
                };
                merge_raw(&mut object, inner);
                *slot = Slot::Object(object);
            }
            other => match at {
                Ok(i) => target[i].1 = Slot::Patched(other),
                Err(i) => target.insert(i, (Cow::Borrowed(key.as_str()), Slot::Patched(other))),
            },
        }
    }
}

/// Written by serde_json, which escapes the keys and writes kept text as it
/// is, without parsing the result again as `RawValue::from_string` would.
struct Written<'m, 'a>(&'m RawMap<'a>);

impl Serialize for Written<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, slot) in self.0 {
            match slot {
                Slot::Text(raw) => map.serialize_entry(key, raw)?,
                Slot::Object(inner) => map.serialize_entry(key, &Written(inner))?,
                Slot::Patched(v) => map.serialize_entry(key, v)?,
            }
        }
        map.end()
    }
}

/// A key borrowed from the text, or unescaped when it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> SessionData {
        SessionData::from_map(v.as_object().unwrap())
    }

    #[test]
    fn data_is_compact_json_with_sorted_keys() {
        let d = data(json!({"b": [1, 2], "a": "x"}));
        assert_eq!(d.as_str(), r#"{"a":"x","b":[1,2]}"#);
        assert_eq!(d.len(), d.as_str().len());
        assert_eq!(
            d.to_map(),
            *json!({"a": "x", "b": [1, 2]}).as_object().unwrap()
        );
    }

    #[test]
    fn emptiness_ignores_whitespace_inside_the_braces() {
        assert!(SessionData::empty().is_empty());
        assert!(
            SessionData::from_text(" { \n } ".into())
                .unwrap()
                .is_empty()
        );
        assert!(!data(json!({"a": null})).is_empty());
    }

    #[test]
    fn text_from_a_store_must_be_one_object() {
        for bad in ["[]", "1", "\"x\"", "null", "{", "{} {}", ""] {
            assert!(SessionData::from_text(bad.into()).is_err(), "{bad}");
        }
        let d = SessionData::from_text(r#"{"a":1}"#.into()).unwrap();
        assert_eq!(d.to_map()["a"], 1);
    }

    #[test]
    fn a_record_field_round_trips_as_raw_json() {
        #[derive(Serialize, Deserialize)]
        struct R {
            data: SessionData,
        }
        let r = R {
            data: data(json!({"k": "Zoë"})),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"data":{"k":"Zoë"}}"#);
        let back: R = serde_json::from_str(&text).unwrap();
        assert_eq!(back.data, r.data);
        assert!(serde_json::from_str::<R>(r#"{"data":[1]}"#).is_err());
    }

    #[test]
    fn fields_borrow_keys_and_unescape_when_needed() {
        let d = SessionData::from_text(r#"{"plain":1,"esc\"aped":{"x":[1]},"plain":2}"#.into())
            .unwrap();
        let f = d.fields();
        assert_eq!(f.get("plain").unwrap().get(), "2");
        assert_eq!(f.get("esc\"aped").unwrap().get(), r#"{"x":[1]}"#);
        assert!(f.contains("plain") && !f.contains("missing"));
    }

    fn text(t: &str) -> SessionData {
        SessionData::from_text(t.into()).unwrap()
    }

    #[test]
    fn a_merge_sorts_text_from_elsewhere_and_keeps_a_repeated_keys_last_value() {
        let d = text(r#"{"z":1,"a":{"y":2,"b":3},"m":4,"a":{"q":5,"c":[6]}}"#);
        let patch = json!({"a": {"d": 7}, "n": 8});
        let merged = d.merged(&[patch.as_object().unwrap().clone()]);
        assert_eq!(
            merged.as_str(),
            r#"{"a":{"c":[6],"d":7,"q":5},"m":4,"n":8,"z":1}"#
        );
        // The same as a merge of the parsed values (serde_json keeps a
        // repeated key's last value).
        let mut want = Value::Object(d.to_map());
        json_patch::merge(&mut want, &patch);
        assert_eq!(
            serde_json::from_str::<Value>(merged.as_str()).unwrap(),
            want
        );
    }

    /// A small deterministic generator of documents and patches.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self, below: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % below
        }

        fn key(&mut self) -> String {
            ["a", "b", "c", "zz", "é", "q\"t", "A"][self.next(7) as usize].to_string()
        }

        fn value(&mut self, depth: u32, nulls: bool) -> Value {
            match self.next(if depth == 0 { 5 } else { 7 }) {
                0 => Value::from(self.next(1000) as i64 - 500),
                1 => Value::from(format!("s{}", self.next(10))),
                2 => Value::Bool(self.next(2) == 0),
                3 if nulls => Value::Null,
                3 | 4 => Value::from(vec![self.next(3), self.next(3)]),
                _ => Value::Object(self.object(depth - 1, nulls)),
            }
        }

        fn object(&mut self, depth: u32, nulls: bool) -> Map<String, Value> {
            (0..self.next(5))
                .map(|_| (self.key(), self.value(depth, nulls)))
                .collect()
        }

        /// The object's text, the keys of every object in it in any order
        /// and some twice (as another writer may leave it); and what a
        /// parser makes of it.
        fn text(&mut self, map: &Map<String, Value>) -> (String, Value) {
            let mut entries: Vec<(String, Value)> =
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for i in (1..entries.len()).rev() {
                entries.swap(i, self.next(i as u64 + 1) as usize);
            }
            if let Some((k, _)) = entries.first().cloned()
                && self.next(3) == 0
            {
                entries.insert(0, (k, Value::from("shadowed")));
            }
            let body: Vec<String> = entries
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Object(inner) => self.text(inner).0,
                        other => other.to_string(),
                    };
                    format!("{}:{v}", Value::from(k.as_str()))
                })
                .collect();
            let text = format!("{{{}}}", body.join(","));
            let parsed = serde_json::from_str(&text).unwrap();
            (text, parsed)
        }
    }

    #[test]
    fn merges_agree_with_json_patch_on_generated_documents() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let doc = g.object(3, false);
            let written_here = g.next(2) == 0;
            let (text, mut want) = if written_here {
                let d = Value::Object(doc.clone());
                (d.to_string(), d)
            } else {
                g.text(&doc)
            };
            let patches: Vec<Map<String, Value>> =
                (0..1 + g.next(3)).map(|_| g.object(3, true)).collect();
            let merged = SessionData::from_text(text.clone())
                .unwrap()
                .merged(&patches);
            for p in &patches {
                json_patch::merge(&mut want, &Value::Object(p.clone()));
            }
            let got: Value = serde_json::from_str(merged.as_str()).unwrap();
            assert_eq!(got, want, "{text} {patches:?}");
            // From text written here: sorted, each key once, compact (equal
            // data, equal text). Elsewhere's objects the patches do not
            // reach keep their text.
            if written_here {
                assert_eq!(merged.as_str(), want.to_string(), "{text} {patches:?}");
            }
        }
    }

    #[test]
    fn a_merge_keeps_the_text_of_what_it_does_not_reach() {
        let d = text(
            r#"{"big":123456789012345678901234567890,"f":1.0,"o":{"x": [1 ,2]},"n":{"k":1e2}}"#,
        );
        let merged = d.merged(&[json!({"a": 1, "n": {"j": null, "m": "é\"\n"}})
            .as_object()
            .unwrap()
            .clone()]);
        assert_eq!(
            merged.as_str(),
            r#"{"a":1,"big":123456789012345678901234567890,"f":1.0,"n":{"k":1e2,"m":"é\"\n"},"o":{"x": [1 ,2]}}"#
        );
    }
}
