//! Bodies of the `audit` routes: `GET /v1/verify` answers a [`VerifyReport`].

pub use crate::chain::VerifyReport;
