//! The body of every error answer of the control API.

use serde::{Deserialize, Serialize};

/// `{"code": "...", "message": "..."}`: a stable machine-readable code (`bad_request`,
/// `unauthorized`, `forbidden`, `not_found`, `conflict`, `file_owned`, `locked`,
/// `method_not_allowed`, `unavailable`, `internal`) and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error's code.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}
