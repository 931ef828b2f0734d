//! The access reviews as they arrive: JSON, or Kubernetes protobuf (what kubectl's typed client
//! sends). One set of types serves both: `prost` reads the protobuf, `serde` the JSON and writes
//! the spec back into the answer.
//!
//! The field numbers are those of `k8s.io/api/authorization/v1/generated.proto`; the envelope
//! is `runtime.Unknown` of `k8s.io/apimachinery` behind the four bytes `k8s\0`. The object's
//! metadata and status are not declared, so protobuf skips them and JSON ignores them.

use std::collections::BTreeMap;

use prost::Message as _;
use serde::{Deserialize, Deserializer, Serialize};

/// The prefix of a Kubernetes protobuf body.
pub const PROTOBUF_MAGIC: &[u8; 4] = b"k8s\0";

/// The content type of Kubernetes protobuf.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The API version of every review answered here.
pub const API_VERSION: &str = "authorization.k8s.io/v1";

/// Why a review's body cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The body is not JSON of the expected shape.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// The body is not protobuf of the expected shape.
    #[error("{0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The protobuf body does not start with `k8s\0`.
    #[error("the protobuf body does not start with the Kubernetes magic bytes")]
    NoMagic,
    /// The body says it is another kind, or of another version.
    #[error("the object is {found}, not {expected}")]
    WrongKind {
        /// What the body says.
        found: String,
        /// What the path asks for.
        expected: String,
    },
    /// The protobuf envelope says the object is compressed or not protobuf.
    #[error(
        "the protobuf envelope has content encoding {encoding:?} and type {content_type:?}, which infra-proxy does not read"
    )]
    Envelope {
        /// `contentEncoding`.
        encoding: String,
        /// `contentType`.
        content_type: String,
    },
}

/// `runtime.Unknown`: the protobuf envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Unknown {
    /// `typeMeta`.
    #[prost(message, optional, tag = "1")]
    pub type_meta: Option<TypeMeta>,
    /// `raw`: the object.
    #[prost(bytes = "vec", tag = "2")]
    pub raw: Vec<u8>,
    /// `contentEncoding`.
    #[prost(string, tag = "3")]
    pub content_encoding: String,
    /// `contentType`.
    #[prost(string, tag = "4")]
    pub content_type: String,
}

/// `runtime.TypeMeta`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeMeta {
    /// `apiVersion`.
    #[prost(string, tag = "1")]
    pub api_version: String,
    /// `kind`.
    #[prost(string, tag = "2")]
    pub kind: String,
}

/// `SelfSubjectAccessReview`, `SubjectAccessReview` and `LocalSubjectAccessReview`: their
/// specs share field numbers (the self review's has only the first two).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AccessReview {
    /// `spec`.
    #[prost(message, optional, tag = "2")]
    pub spec: Option<AccessReviewSpec>,
}

/// `SubjectAccessReviewSpec` (and `SelfSubjectAccessReviewSpec`, its first two fields).
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessReviewSpec {
    /// `resourceAttributes`.
    #[prost(message, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_attributes: Option<ResourceAttributes>,
    /// `nonResourceAttributes`.
    #[prost(message, optional, tag = "2")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_resource_attributes: Option<NonResourceAttributes>,
    /// `user`.
    #[prost(string, tag = "3")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    /// `groups`.
    #[prost(string, repeated, tag = "4")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<String>,
    /// `extra`.
    #[prost(btree_map = "string, message", tag = "5")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub extra: BTreeMap<String, ExtraValue>,
    /// `uid`.
    #[prost(string, tag = "6")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub uid: String,
}

/// `ExtraValue`: a list of strings (a plain array in JSON).
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExtraValue {
    /// `items`.
    #[prost(string, repeated, tag = "1")]
    pub items: Vec<String>,
}

/// `ResourceAttributes`.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAttributes {
    /// `namespace`.
    #[prost(string, tag = "1")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
    /// `verb`.
    #[prost(string, tag = "2")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub verb: String,
    /// `group`.
    #[prost(string, tag = "3")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub group: String,
    /// `version`.
    #[prost(string, tag = "4")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub version: String,
    /// `resource`.
    #[prost(string, tag = "5")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub resource: String,
    /// `subresource`.
    #[prost(string, tag = "6")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub subresource: String,
    /// `name`.
    #[prost(string, tag = "7")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// `fieldSelector`.
    #[prost(message, optional, tag = "8")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_selector: Option<SelectorAttributes>,
    /// `labelSelector`.
    #[prost(message, optional, tag = "9")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<SelectorAttributes>,
}

/// `FieldSelectorAttributes` and `LabelSelectorAttributes`, which have the same fields.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectorAttributes {
    /// `rawSelector`.
    #[prost(string, tag = "1")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub raw_selector: String,
    /// `requirements`.
    #[prost(message, repeated, tag = "2")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub requirements: Vec<SelectorRequirement>,
}

/// `FieldSelectorRequirement` and `LabelSelectorRequirement` of `meta/v1`.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct SelectorRequirement {
    /// `key`.
    #[prost(string, tag = "1")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub key: String,
    /// `operator`.
    #[prost(string, tag = "2")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub operator: String,
    /// `values`.
    #[prost(string, repeated, tag = "3")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub values: Vec<String>,
}

/// `NonResourceAttributes`.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct NonResourceAttributes {
    /// `path`.
    #[prost(string, tag = "1")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub path: String,
    /// `verb`.
    #[prost(string, tag = "2")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub verb: String,
}

/// `SelfSubjectRulesReview`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RulesReview {
    /// `spec`.
    #[prost(message, optional, tag = "2")]
    pub spec: Option<RulesReviewSpec>,
}

/// `SelfSubjectRulesReviewSpec`.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct RulesReviewSpec {
    /// `namespace`.
    #[prost(string, tag = "1")]
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
}

/// Reads `null` as the default, as Go's JSON decoding leaves a field alone on `null`.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A review object in JSON: its type and its spec.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonObject<S> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default = "Option::default")]
    spec: Option<S>,
}

/// Checks the type a body declares (empty parts are left to the path, as the apiserver
/// defaults them) against `kind` of [`API_VERSION`].
fn check_type(api_version: &str, found_kind: &str, kind: &str) -> Result<(), WireError> {
    let version_ok = api_version.is_empty() || api_version == API_VERSION;
    let kind_ok = found_kind.is_empty() || found_kind == kind;
    if version_ok && kind_ok {
        Ok(())
    } else {
        Err(WireError::WrongKind {
            found: format!("{found_kind} of {api_version}"),
            expected: format!("{kind} of {API_VERSION}"),
        })
    }
}

/// Reads the spec of a `kind` object from a JSON body (a missing or `null` spec is the
/// default one).
pub fn spec_from_json<S>(body: &[u8], kind: &str) -> Result<S, WireError>
where
    S: Default + for<'de> Deserialize<'de>,
{
    let object: JsonObject<S> = serde_json::from_slice(body)?;
    check_type(
        object.api_version.as_deref().unwrap_or_default(),
        object.kind.as_deref().unwrap_or_default(),
        kind,
    )?;
    Ok(object.spec.unwrap_or_default())
}

/// Reads a `kind` object (of message type `M`) from a Kubernetes protobuf body.
pub fn object_from_protobuf<M>(body: &[u8], kind: &str) -> Result<M, WireError>
where
    M: prost::Message + Default,
{
    let envelope = body
        .strip_prefix(PROTOBUF_MAGIC)
        .ok_or(WireError::NoMagic)?;
    let unknown = Unknown::decode(envelope)?;
    if let Some(type_meta) = &unknown.type_meta {
        check_type(&type_meta.api_version, &type_meta.kind, kind)?;
    }
    let content_type_ok =
        unknown.content_type.is_empty() || unknown.content_type == PROTOBUF_CONTENT_TYPE;
    if !unknown.content_encoding.is_empty() || !content_type_ok {
        return Err(WireError::Envelope {
            encoding: unknown.content_encoding,
            content_type: unknown.content_type,
        });
    }
    Ok(M::decode(unknown.raw.as_slice())?)
}

/// Encodes `object` as `kind` in Kubernetes protobuf, as kubectl sends it (for tests and
/// fuzzing).
pub fn to_protobuf(kind: &str, object: &impl prost::Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: API_VERSION.to_owned(),
            kind: kind.to_owned(),
        }),
        raw: object.encode_to_vec(),
        content_encoding: String::new(),
        content_type: String::new(),
    };
    let mut body = PROTOBUF_MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}
