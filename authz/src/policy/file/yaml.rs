//! The YAML side of the policy file: a tree of located values, the parser's options and
//! limits, and the parser's errors in the policy file's words.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use serde_saphyr::budget::BudgetBreach;

use super::errors::{PolicyError, PolicyErrorKind, Position};
use super::{MAX_ALIAS_EXPANSION, MAX_ALIASES, MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES};

/// A YAML value with where it is in the file (for an alias, where the alias is).
pub(super) type Located = Spanned<Node>;

/// A YAML value, kept generic so that validation can report every problem instead of stopping
/// at the first as a derived `Deserialize` would. Deliberately not `Debug`: it holds secrets.
pub(super) enum Node {
    Null,
    Bool,
    /// An integer, when it fits in 64 bits signed (`None` beyond).
    Int(Option<i64>),
    Float,
    Bytes,
    Str(String),
    Seq(Vec<Located>),
    Map(Vec<(Located, Located)>),
}

impl Node {
    /// What the value is, worded for "expected ..., found {}".
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::Null => "no value",
            Self::Bool => "a boolean",
            Self::Int(_) => "an integer",
            Self::Float => "a number",
            Self::Bytes => "binary data",
            Self::Str(_) => "a string",
            Self::Seq(_) => "a list",
            Self::Map(_) => "a mapping",
        }
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Bool)
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(Some(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(i64::try_from(v).ok()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(i64::try_from(v).ok()))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
        Ok(Node::Int(i64::try_from(v).ok()))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Float)
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_bytes<E>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// Parser options: duplicate keys reach the visitor (so all are reported, with both places),
/// strict booleans, unknown tags refused, and explicit limits.
pub(super) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        strict_booleans: true,
        reject_unsupported_tags: true,
        with_snippet: false,
        // Comments are not needed; dropping them keeps them out of the event budget.
        emit_comments: false,
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_EXPANSION,
            max_replay_stack_depth: MAX_DEPTH,
        },
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            flow_nesting_limit: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_events: 4 * MAX_NODES,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ALIASES,
            max_documents: 1,
            max_total_scalar_bytes: MAX_FILE_BYTES,
            max_recorded_anchor_events: MAX_NODES,
        },
    }
}

/// Turns a parser error into a located policy error with our own wording for the limits.
pub(super) fn yaml_error(file_name: &str, error: &serde_saphyr::Error) -> PolicyError {
    use serde_saphyr::Error as E;
    use serde_saphyr::MessageFormatter as _;

    let position = error.location().and_then(|l| position(&l));
    let mut inner = error;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let limit = |what: String| PolicyErrorKind::Limit { what };
    let kind = match inner {
        E::Budget { breach, .. } => match breach {
            BudgetBreach::Documents { .. } => PolicyErrorKind::MultipleDocuments,
            BudgetBreach::Depth { .. } => limit(format!("it nests deeper than {MAX_DEPTH} levels")),
            BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => {
                limit(format!("it holds more than {MAX_NODES} values"))
            }
            BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } => limit(format!(
                "it uses more than {MAX_ALIASES} anchors or aliases"
            )),
            BudgetBreach::ScalarBytes { .. } => limit(format!(
                "its strings add up to more than {MAX_FILE_BYTES} bytes"
            )),
            other => limit(format!("{other:?}")),
        },
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => limit(format!(
            "its aliases expand to more than {MAX_ALIAS_EXPANSION} YAML events"
        )),
        E::MultipleDocuments { .. } => PolicyErrorKind::MultipleDocuments,
        // The scanner's own limit on nested flow collections (`[[[[...`), reported as text.
        E::ExternalMessage { msg, .. } if msg == "recursion limit exceeded" => {
            limit(format!("it nests deeper than {MAX_DEPTH} levels"))
        }
        other => PolicyErrorKind::Syntax {
            message: serde_saphyr::DefaultMessageFormatter
                .format_message(other)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        },
    };
    PolicyError {
        file: file_name.to_owned(),
        position,
        path: String::new(),
        kind,
    }
}

fn position(location: &serde_saphyr::Location) -> Option<Position> {
    (location.line() > 0).then(|| Position {
        line: location.line(),
        column: location.column(),
    })
}

/// Where `node` is in the file; line 0 when the parser did not say.
pub(super) fn at(node: &Located) -> Position {
    position(&node.referenced).unwrap_or(Position { line: 0, column: 0 })
}
