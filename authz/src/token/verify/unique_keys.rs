//! Refusing JSON that names one member twice.
//!
//! RFC 7515 and RFC 7519 say a JWS header and a claims set with duplicate member names must be
//! refused or read with the last one winning. Parsers disagree on which one wins (serde_json's
//! maps keep the last, some keep the first), so a token could mean one thing to its issuer and
//! another to Infra: a second `name` claim would choose the user. Infra refuses any duplicate,
//! in every object at any depth, before a member of the object is used.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a JSON text was not accepted by [`check_unique_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NotUnique {
    /// An object names this member more than once.
    Duplicate(String),
    /// The text is not one JSON value (the caller's own parse says what is wrong with it).
    NotJson,
}

/// Checks that no object in the JSON text `json`, at any depth, names a member twice. Member
/// names are compared after unescaping (`"a"` and `"\u0061"` are the same name). Builds
/// nothing but a set of the names of the object being read; nesting is bounded by serde_json's
/// recursion limit.
pub(super) fn check_unique_keys(json: &[u8]) -> Result<(), NotUnique> {
    let duplicate = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let checked = Unique(&duplicate)
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    match checked {
        Ok(()) => Ok(()),
        Err(_) => Err(duplicate
            .take()
            .map_or(NotUnique::NotJson, NotUnique::Duplicate)),
    }
}

/// Reads any JSON value, keeping nothing; on a repeated member name it stores the name in the
/// cell and fails.
#[derive(Clone, Copy)]
struct Unique<'a>(&'a Cell<Option<String>>);

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if seen.contains(&name) {
                self.0.set(Some(name));
                return Err(de::Error::custom("a member name is repeated"));
            }
            seen.insert(name);
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;

    fn check(json: &str) -> Result<(), NotUnique> {
        check_unique_keys(json.as_bytes())
    }

    fn duplicate(name: &str) -> Result<(), NotUnique> {
        Err(NotUnique::Duplicate(name.to_owned()))
    }

    #[test]
    fn json_without_repeated_names_passes() {
        for json in [
            "{}",
            r#"{"a": 1, "b": [1, 2.5, -3, true, null, "s"], "c": {"a": 1, "b": {"a": {}}}}"#,
            r#"[{"a": 1}, {"a": 2}]"#,
            r#"{"a": {"a": {"a": 1}}}"#,
            r#""just a string""#,
            " 7 ",
            r#"{"big": 123456789012345678901234567890}"#,
        ] {
            assert_eq!(check(json), Ok(()), "{json}");
        }
    }

    #[test]
    fn a_repeated_name_is_found_at_any_depth() {
        assert_eq!(check(r#"{"name": "a", "name": "b"}"#), duplicate("name"));
        assert_eq!(
            check(r#"{"name": "a", "x": 1, "name": "a"}"#),
            duplicate("name")
        );
        assert_eq!(check(r#"{"a": {"b": [{"c": 1, "c": 2}]}}"#), duplicate("c"));
        assert_eq!(check(r#"[[{"k": 1, "k": {}}]]"#), duplicate("k"));
        // The same name, spelled with an escape.
        assert_eq!(
            check(r#"{"name": "a", "n\u0061me": "b"}"#),
            duplicate("name")
        );
        // Names are compared exactly: case and normalization make different names.
        assert_eq!(check(r#"{"name": 1, "Name": 2}"#), Ok(()));
        assert_eq!(check(r#"{"\u00e9": 1, "e\u0301": 2}"#), Ok(()));
    }

    #[test]
    fn text_that_is_not_one_json_value_is_not_json() {
        for json in [
            "",
            "{",
            r#"{"a": 1} x"#,
            r#"{"a": 1}{"a": 1}"#,
            "{'a': 1}",
            "[1,]",
        ] {
            assert_eq!(check(json), Err(NotUnique::NotJson), "{json}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(
            check(&deep),
            Err(NotUnique::NotJson),
            "past the recursion limit"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever serde_json reads into a map, with no name lost, passes; and repeating a
        /// member of it is found.
        #[test]
        fn agrees_with_serde_json_on_maps(
            names in proptest::collection::vec("[a-c]{1,2}", 0..6),
            values in proptest::collection::vec(any::<u8>(), 6),
        ) {
            let members: Vec<String> = names
                .iter()
                .zip(&values)
                .map(|(name, value)| format!("{name:?}: {value}"))
                .collect();
            let json = format!("{{{}}}", members.join(", "));
            let map: Map<String, Value> = serde_json::from_str(&json).expect("valid JSON");
            let unique = map.len() == names.len();
            prop_assert_eq!(check(&json).is_ok(), unique, "{}", json);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = check_unique_keys(&bytes);
        }
    }
}
