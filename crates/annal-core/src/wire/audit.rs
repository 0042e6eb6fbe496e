//! Bodies of the `audit` routes: `GET /v1/verify` answers a [`VerifyReport`],
//! `GET /v1/digest` a [`Digest`].

pub use crate::chain::VerifyReport;
pub use crate::digest::Digest;
