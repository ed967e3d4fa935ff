//! A webhook body's top-level fields, scanned once.
//!
//! An order webhook is ~7 KB of JSON of which tierflow reads a dozen fields, and two readers
//! want different ones: the record contract ([`crate::key`]) and the segmenter's spend rule.
//! Deserialising the body once per reader scanned every byte twice, the largest single cost
//! of a segmenter replay. [`BodyFields::parse`] scans it once and keeps each top-level value
//! as its raw JSON text, borrowed from the body; each reader then deserialises its own struct
//! from the few values it names ([`BodyFields::read`]), so the big fields nobody reads
//! (`line_items`, addresses) are skipped once and never copied.
//!
//! The result is what deserialising the body straight into the reader's struct would give:
//! a derived struct sees exactly the fields it declares, in body order, and a repeated field
//! is still an error.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::MapDeserializer;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Whether `body` starts a JSON object. Checked before deserialising a body: serde's derived
/// structs also accept a JSON array (fields by position), and no Shopify body is one.
pub(crate) fn starts_an_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The top-level fields of a JSON object body, each value unparsed.
#[derive(Debug)]
pub struct BodyFields<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> BodyFields<'a> {
    /// Scan `body`, which must be one JSON object.
    pub fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        if !starts_an_object(body) {
            return Err(de::Error::custom("expected a JSON object"));
        }
        serde_json::from_slice(body)
    }

    /// Deserialise `T` from the fields it names (all fields if it is not a struct).
    pub fn read<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(self)
    }

    fn entries<'s>(
        &'s self,
        wanted: Option<&'static [&'static str]>,
    ) -> impl Iterator<Item = (Cow<'a, str>, &'a RawValue)> + 's {
        self.fields
            .iter()
            .filter(move |(k, _)| wanted.is_none_or(|w| w.contains(&k.as_ref())))
            .map(|(k, v)| (k.clone(), *v))
    }
}

impl<'de> Deserialize<'de> for BodyFields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = BodyFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(64));
                while let Some(Key(k)) = map.next_key()? {
                    fields.push((k, map.next_value::<&'de RawValue>()?));
                }
                Ok(BodyFields { fields })
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

/// A field name, borrowed from the body unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Only a struct's own fields reach it (serde's derive passes their names, aliases included,
/// to `deserialize_struct`); everything else sees the whole object.
impl<'de> Deserializer<'de> for &BodyFields<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let mut map = MapDeserializer::new(self.entries(None));
        let value = visitor.visit_map(&mut map)?;
        map.end()?;
        Ok(value)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let mut map = MapDeserializer::new(self.entries(Some(fields)));
        let value = visitor.visit_map(&mut map)?;
        map.end()?;
        Ok(value)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Small {
        id: u64,
        #[serde(default)]
        name: Option<String>,
    }

    #[test]
    fn a_struct_reads_its_own_fields_and_skips_the_rest() {
        let body = br#"{"line_items":[{"id":1,"name":"x"}],"id":7,"name":"a\"b","other":{"id":9}}"#;
        let f = BodyFields::parse(body).unwrap();
        assert_eq!(
            f.read::<Small>().unwrap(),
            Small {
                id: 7,
                name: Some("a\"b".into())
            }
        );
    }

    #[test]
    fn escaped_field_names_still_match() {
        let f = BodyFields::parse(br#"{"\u0069d":5}"#).unwrap();
        assert_eq!(f.read::<Small>().unwrap().id, 5);
    }

    #[test]
    fn a_repeated_field_is_an_error_as_with_a_direct_parse() {
        let body = br#"{"id":1,"id":2}"#;
        assert!(serde_json::from_slice::<Small>(body).is_err());
        assert!(BodyFields::parse(body).unwrap().read::<Small>().is_err());
        // Repeats of fields nobody reads stay harmless, as with a direct parse.
        let body = br#"{"id":1,"x":1,"x":2}"#;
        assert!(serde_json::from_slice::<Small>(body).is_ok());
        assert_eq!(
            BodyFields::parse(body).unwrap().read::<Small>().unwrap().id,
            1
        );
    }

    #[test]
    fn only_one_object_is_a_body() {
        for bad in [
            &b"[7]"[..],
            b"7",
            b"\"x\"",
            b"{\"id\":1} {}",
            b"{\"id\":1",
            b"",
            b"{\"id\":1,}",
        ] {
            assert!(
                BodyFields::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn wrong_types_fail_like_a_direct_parse() {
        let body = br#"{"id":"seven"}"#;
        assert!(serde_json::from_slice::<Small>(body).is_err());
        assert!(BodyFields::parse(body).unwrap().read::<Small>().is_err());
    }
}
