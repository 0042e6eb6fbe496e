//! Bodies of the `subjects` routes: personal data's subjects, listed, forgotten and
//! exported (docs/privacy.md).

use serde::{Deserialize, Serialize};

pub use crate::privacy::{Forgotten, SubjectInfo};

/// The body of `POST /v1/subjects/{subject}/forget`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetBody {
    /// Why the subject is forgotten (kept in the audit trail: no personal data here).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 1024))]
    pub reason: String,
}

/// A page of `GET /v1/subjects`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectList {
    /// The subjects, by id.
    pub subjects: Vec<SubjectInfo>,
    /// The `after` of the next page; null when this page is the last.
    pub next_after: Option<String>,
}
