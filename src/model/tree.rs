//! The decoded input as the reader walks it: a tree that borrows its strings from the input
//! bytes where it can and keeps each mapping as a vector of (key, value) pairs.
//!
//! `serde_json::Value` (with `preserve_order`) allocates every key and every string and hashes
//! every key into an `IndexMap`; at 1,000 ports building and dropping that tree cost about as
//! much as the whole compile. The reader never needs hashing — it looks up a handful of keys
//! in small objects and iterates the large ones — so a vector of pairs is enough.
//!
//! It decodes exactly what `serde_json::Value` decodes and nothing else, so that every error
//! and the strict reading stay as they were: the same visitor methods (numbers as
//! `serde_json::Number`, a non-finite float as null, no byte strings), the first key of a
//! mapping read as `Value` reads it (a string only) and the others as `String` reads them (a
//! msgpack binary key is accepted when it is UTF-8), and a repeated key keeps its first
//! position with its last value. A tree is also made from a `Value` (Python objects and the
//! session's arguments arrive as one), borrowing its strings.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;
use serde_json::{Number, Value};

/// A decoded value.
#[derive(Debug, Clone)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    List(Vec<Node<'a>>),
    Map(Obj<'a>),
}

/// A mapping: its entries in input order, each key once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Obj<'a> {
    entries: Vec<(Cow<'a, str>, Node<'a>)>,
}

impl<'a> Node<'a> {
    /// The tree of a `Value`, borrowing its strings.
    pub(crate) fn from_value(v: &'a Value) -> Node<'a> {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Number(n.clone()),
            Value::String(s) => Node::Str(Cow::Borrowed(s)),
            Value::Array(a) => Node::List(a.iter().map(Node::from_value).collect()),
            Value::Object(m) => Node::Map(Obj {
                entries: m
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Node::from_value(v)))
                    .collect(),
            }),
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    pub(crate) fn as_object(&self) -> Option<&Obj<'a>> {
        match self {
            Node::Map(m) => Some(m),
            _ => None,
        }
    }
}

/// As `Value`'s equality: mappings are equal with the same entries in any order.
impl PartialEq for Node<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Node::Null, Node::Null) => true,
            (Node::Bool(a), Node::Bool(b)) => a == b,
            (Node::Number(a), Node::Number(b)) => a == b,
            (Node::Str(a), Node::Str(b)) => a == b,
            (Node::List(a), Node::List(b)) => a == b,
            (Node::Map(a), Node::Map(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
            }
            _ => false,
        }
    }
}

impl<'a> Obj<'a> {
    /// The value of `key`, if present (a linear scan: the objects the reader looks into carry
    /// a dozen keys at most; large mappings are only iterated).
    pub(crate) fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v)
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entries in input order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Node<'a>)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The keys in input order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_ref())
    }

    /// Gives a repeated key its last value at its first position, as `IndexMap::insert` does,
    /// and keeps one entry per key.
    fn merge_repeated_keys(&mut self) {
        if !self.has_repeated_keys() {
            return;
        }
        let mut merged: Vec<(Cow<'a, str>, Node<'a>)> = Vec::with_capacity(self.entries.len());
        let mut position: std::collections::HashMap<Cow<'a, str>, usize> =
            std::collections::HashMap::with_capacity(self.entries.len());
        for (k, v) in self.entries.drain(..) {
            match position.get(&k) {
                Some(&at) => merged[at].1 = v,
                None => {
                    position.insert(k.clone(), merged.len());
                    merged.push((k, v));
                }
            }
        }
        self.entries = merged;
    }

    fn has_repeated_keys(&self) -> bool {
        let n = self.entries.len();
        // Small objects (every port, rule and address): compare pairs; large ones: sort the
        // keys once.
        if n <= 16 {
            return (1..n).any(|i| {
                let key = &self.entries[i].0;
                self.entries[..i].iter().any(|(k, _)| k == key)
            });
        }
        let mut keys: Vec<&str> = self.keys().collect();
        keys.sort_unstable();
        keys.windows(2).any(|w| w[0] == w[1])
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut scratch = Scratch::default();
        NodeSeed {
            scratch: &mut scratch,
        }
        .deserialize(deserializer)
    }
}

/// The items and entries of the containers being read, innermost last. JSON does not say how
/// long a list or a mapping is, so each is collected here and moved into a vector of exactly
/// its size when it ends: one allocation per container, none growing.
#[derive(Default)]
struct Scratch<'de> {
    items: Vec<Node<'de>>,
    entries: Vec<(Cow<'de, str>, Node<'de>)>,
}

struct NodeSeed<'s, 'de> {
    scratch: &'s mut Scratch<'de>,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, 'de> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        deserializer.deserialize_any(NodeVisitor {
            scratch: self.scratch,
        })
    }
}

/// The visitor of a value: the methods of `serde_json::Value`'s, no more, no fewer.
struct NodeVisitor<'s, 'de> {
    scratch: &'s mut Scratch<'de>,
}

impl<'de> Visitor<'de> for NodeVisitor<'_, 'de> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node<'de>, E> {
        Number::deserialize(de::value::I128Deserializer::new(v)).map(Node::Number)
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node<'de>, E> {
        Number::deserialize(de::value::U128Deserializer::new(v)).map(Node::Number)
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Number::from_f64(v).map_or(Node::Null, Node::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }

    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }

    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        NodeSeed {
            scratch: self.scratch,
        }
        .deserialize(deserializer)
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let start = self.scratch.items.len();
        while let Some(item) = seq.next_element_seed(NodeSeed {
            scratch: &mut *self.scratch,
        })? {
            self.scratch.items.push(item);
        }
        Ok(Node::List(self.scratch.items.drain(start..).collect()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let start = self.scratch.entries.len();
        let mut first = true;
        while let Some(key) = map.next_key_seed(Key { first })? {
            first = false;
            let value = map.next_value_seed(NodeSeed {
                scratch: &mut *self.scratch,
            })?;
            self.scratch.entries.push((key, value));
        }
        let mut obj = Obj {
            entries: self.scratch.entries.drain(start..).collect(),
        };
        obj.merge_repeated_keys();
        Ok(Node::Map(obj))
    }
}

/// A mapping's key. `Value` reads its first key as a string only (`deserialize_str`, "a
/// string key") and the others as `String` does (`deserialize_string`, "a string", UTF-8 bytes
/// accepted); so does this.
struct Key {
    first: bool,
}

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        if self.first {
            deserializer.deserialize_str(self)
        } else {
            deserializer.deserialize_string(self)
        }
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.first {
            "a string key"
        } else {
            "a string"
        })
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        match (self.first, std::str::from_utf8(v)) {
            (false, Ok(s)) => Ok(Cow::Owned(s.to_owned())),
            _ => Err(self.refuse_bytes(v)),
        }
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        match (self.first, std::str::from_utf8(v)) {
            (false, Ok(s)) => Ok(Cow::Borrowed(s)),
            _ => Err(self.refuse_bytes(v)),
        }
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        self.visit_bytes(&v)
    }
}

impl Key {
    /// What `Value` says of a byte-string key: the first is of the wrong type, a later one
    /// that is not UTF-8 an invalid value.
    fn refuse_bytes<E: de::Error>(&self, v: &[u8]) -> E {
        if self.first {
            E::invalid_type(Unexpected::Bytes(v), self)
        } else {
            E::invalid_value(Unexpected::Bytes(v), self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(text: &str) -> (Value, Node<'_>) {
        let value: Value = serde_json::from_str(text).unwrap();
        let node: Node = serde_json::from_str(text).unwrap();
        (value, node)
    }

    #[test]
    fn reads_what_value_reads() {
        let text = r#"{"a": [1, -2, 3.5, "x\n", true, null], "b": {"c": "d"}, "e": 1e400}"#;
        let err_v = serde_json::from_str::<Value>(text).unwrap_err().to_string();
        let err_n = serde_json::from_str::<Node>(text).unwrap_err().to_string();
        assert_eq!(err_v, err_n);
        let (value, node) = both(r#"{"a": [1, -2, 3.5, "x\n", true, null], "b": {"c": "d"}}"#);
        assert_eq!(Node::from_value(&value), node);
    }

    #[test]
    fn a_repeated_key_keeps_its_place_and_its_last_value() {
        let (value, node) = both(r#"{"a": 1, "b": 2, "a": 3}"#);
        let keys: Vec<&str> = node.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(
            node.as_object().unwrap().get("a"),
            Some(&Node::Number(3.into()))
        );
        assert_eq!(Node::from_value(&value), node);
        let many: String = (0..40)
            .map(|i| format!("\"k{}\": {i}", i % 20))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!("{{{many}}}");
        let (value, node) = both(&text);
        let obj = node.as_object().unwrap();
        assert_eq!(obj.len(), 20);
        assert_eq!(obj.get("k0"), Some(&Node::Number(20.into())));
        assert_eq!(Node::from_value(&value), node);
    }

    #[test]
    fn unescaped_strings_are_borrowed() {
        let node: Node = serde_json::from_str(r#"{"plain": "abc", "escaped": "a\tb"}"#).unwrap();
        let obj = node.as_object().unwrap();
        assert!(matches!(
            obj.get("plain"),
            Some(Node::Str(Cow::Borrowed("abc")))
        ));
        assert!(matches!(obj.get("escaped"), Some(Node::Str(Cow::Owned(_)))));
    }

    #[test]
    fn mappings_compare_as_values_do() {
        let (_, a) = both(r#"{"x": 1, "y": 2}"#);
        let (_, b) = both(r#"{"y": 2, "x": 1}"#);
        assert_eq!(a, b);
        let (_, c) = both(r#"{"y": 2, "x": 3}"#);
        assert_ne!(a, c);
    }

    #[test]
    fn msgpack_keys_and_bytes_fail_as_with_value() {
        // {1: 2}: a non-string first key; {"a": 1, b"b": 2}: a binary later key (accepted);
        // {b"a": 1}: a binary first key; {"a": b"x"}: a binary value.
        let cases: [&[u8]; 4] = [
            &[0x81, 0x01, 0x02],
            &[0x82, 0xa1, b'a', 0x01, 0xc4, 0x01, b'b', 0x02],
            &[0x81, 0xc4, 0x01, b'a', 0x01],
            &[0x81, 0xa1, b'a', 0xc4, 0x01, b'x'],
        ];
        for bytes in cases {
            let value: Result<Value, _> =
                rmp_serde::from_slice::<Value>(bytes).map_err(|e| e.to_string());
            let node: Result<Node, _> =
                rmp_serde::from_slice::<Node>(bytes).map_err(|e| e.to_string());
            match (&value, &node) {
                (Ok(v), Ok(n)) => assert_eq!(&Node::from_value(v), n),
                (Err(a), Err(b)) => assert_eq!(a, b),
                _ => panic!("{bytes:?}: {value:?} vs {node:?}"),
            }
        }
    }
}
