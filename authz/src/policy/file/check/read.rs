//! Reading typed values out of the located tree for the checker: mappings with known keys,
//! lists, strings and names, each wrong shape reported where it is, with a "did you mean" for
//! a mistyped key.

use std::collections::HashMap;

use super::{Checker, join};
use crate::policy::file::errors::{PolicyErrorKind, Position};
use crate::policy::file::yaml::{Located, Node, at};
use crate::policy::{validate_name, validate_subject_name};

/// The known keys of one mapping, each with its key's position and its value.
pub(super) struct Fields<'n> {
    pub(super) at: Position,
    found: Vec<(&'static str, Position, &'n Located)>,
}

impl<'n> Fields<'n> {
    pub(super) fn get(&self, key: &str) -> Option<&'n Located> {
        self.entry(key).map(|(_, value)| value)
    }

    pub(super) fn entry(&self, key: &str) -> Option<(Position, &'n Located)> {
        self.found
            .iter()
            .find(|(k, ..)| *k == key)
            .map(|&(_, at, value)| (at, value))
    }
}

impl Checker<'_> {
    /// The known keys of a mapping; reports a non-mapping, unknown, duplicate and non-string
    /// keys.
    pub(super) fn fields<'n>(
        &mut self,
        node: &'n Located,
        path: &str,
        keys: &'static [&'static str],
    ) -> Option<Fields<'n>> {
        let Node::Map(entries) = &node.value else {
            let found = node.value.kind();
            let kind = PolicyErrorKind::WrongType {
                expected: "a mapping",
                found,
            };
            self.error(at(node), path, kind);
            return None;
        };
        let mut fields = Fields {
            at: at(node),
            found: Vec::new(),
        };
        for (key, value) in entries {
            let Node::Str(name) = &key.value else {
                let found = key.value.kind();
                self.error(at(key), path, PolicyErrorKind::KeyNotString { found });
                continue;
            };
            let Some(&known) = keys.iter().find(|k| **k == name) else {
                let kind = PolicyErrorKind::UnknownKey {
                    key: name.clone(),
                    expected: keys,
                    suggestion: suggest(name, keys),
                };
                self.error(at(key), path, kind);
                continue;
            };
            if let Some((first, _)) = fields.entry(known) {
                let kind = PolicyErrorKind::DuplicateKey {
                    key: name.clone(),
                    first,
                };
                self.error(at(key), path, kind);
            } else {
                fields.found.push((known, at(key), value));
            }
        }
        Some(fields)
    }

    pub(super) fn list<'n>(&mut self, node: &'n Located, path: &str) -> Option<&'n [Located]> {
        if let Node::Seq(items) = &node.value {
            Some(items)
        } else {
            let found = node.value.kind();
            let kind = PolicyErrorKind::WrongType {
                expected: "a list",
                found,
            };
            self.error(at(node), path, kind);
            None
        }
    }

    pub(super) fn string<'n>(&mut self, node: &'n Located, path: &str) -> Option<&'n str> {
        if let Node::Str(s) = &node.value {
            Some(s)
        } else {
            let found = node.value.kind();
            let kind = PolicyErrorKind::WrongType {
                expected: "a string",
                found,
            };
            self.error(at(node), path, kind);
            None
        }
    }

    /// The value of a required key, reporting it missing at the mapping.
    pub(super) fn required<'n>(
        &mut self,
        fields: &Fields<'n>,
        path: &str,
        key: &'static str,
    ) -> Option<&'n Located> {
        let value = fields.get(key);
        if value.is_none() {
            self.error(fields.at, path, PolicyErrorKind::MissingKey { key });
        }
        value
    }

    /// A required string that must be non-empty and free of white space and control characters.
    pub(super) fn token(
        &mut self,
        fields: &Fields<'_>,
        path: &str,
        key: &'static str,
        what: &'static str,
    ) -> Option<String> {
        let node = self.required(fields, path, key)?;
        let path = join(path, key);
        let value = self.string(node, &path)?;
        let why = if value.is_empty() {
            "is empty"
        } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            "may not contain white space or control characters"
        } else {
            return Some(value.to_owned());
        };
        self.error(at(node), &path, PolicyErrorKind::Invalid { what, why });
        None
    }

    /// `name`, found at `node`, if it keeps the rule for names
    /// ([`validate_name`](crate::policy::validate_name)).
    pub(super) fn valid_name(
        &mut self,
        node: &Located,
        path: &str,
        name: String,
    ) -> Option<String> {
        match validate_name(&name) {
            Ok(()) => Some(name),
            Err(e) => {
                self.error(at(node), path, PolicyErrorKind::Name(e));
                None
            }
        }
    }

    pub(super) fn subject_name(&mut self, node: &Located, path: &str) -> Option<String> {
        let name = self.string(node, path)?;
        match validate_subject_name(name) {
            Ok(()) => Some(name.to_owned()),
            Err(e) => {
                self.error(at(node), path, PolicyErrorKind::Name(e));
                None
            }
        }
    }

    /// Records `name` as seen at `node`; reports a duplicate and returns `false` if it was
    /// seen before.
    pub(super) fn first_of(
        &mut self,
        seen: &mut HashMap<String, Position>,
        what: &'static str,
        name: &str,
        node: &Located,
        path: &str,
    ) -> bool {
        if let Some(&first) = seen.get(name) {
            let kind = PolicyErrorKind::Duplicate {
                what,
                name: name.to_owned(),
                first,
            };
            self.error(at(node), path, kind);
            false
        } else {
            seen.insert(name.to_owned(), at(node));
            true
        }
    }
}

/// A known key close to `key` (same letters ignoring case and `_`/`-`, or at most two edits
/// away), for "did you mean".
fn suggest(key: &str, known: &'static [&'static str]) -> Option<&'static str> {
    // Keys can be long (`? <a long string>`); nothing that long is a typo of a known key.
    if key.len() > 64 {
        return None;
    }
    let normal = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let key_normal = normal(key);
    known
        .iter()
        .find(|k| normal(k) == key_normal)
        .or_else(|| {
            known
                .iter()
                .find(|k| edit_distance(&key_normal, &normal(k)) <= 2)
        })
        .copied()
}

/// Levenshtein distance, for short strings (`suggest` bounds their length).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
