//! Numbers read back from a backend's storage, converted with a check.
//!
//! Databases keep annal's unsigned numbers (positions, versions, counts, tokens,
//! partitions) in signed columns. A value no writer of annal stores, such as a negative
//! version edited in by hand, must be reported as [`Error::Corrupt`] naming the column
//! and the value, never wrapped into a huge unsigned number that later code trusts.

use crate::error::Error;
use std::fmt::Display;

/// A number read from storage that does not fit the type annal uses: a sign of a store
/// edited behind annal's back. It converts into [`Error::Corrupt`], with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{column} holds {value}, out of range for {target}")]
pub struct OutOfRange {
    /// Where the value was read (a column, with the row's key when that helps).
    pub column: String,
    /// The value as stored.
    pub value: String,
    /// The type it should have fitted.
    pub target: &'static str,
}

impl From<OutOfRange> for Error {
    fn from(e: OutOfRange) -> Self {
        Error::Corrupt(e.to_string())
    }
}

/// Converts `value`, read from `column`, to the type annal uses; a value out of that
/// type's range is an [`OutOfRange`] naming the column and the value (with `?`, an
/// [`Error::Corrupt`]).
///
/// ```
/// use annal_core::{Error, stored};
///
/// let version: u64 = stored::number("streams.version", 3_i64).expect("in range");
/// assert_eq!(version, 3);
/// let tampered: Error = stored::number::<i64, u64>("streams.version", -1)
///     .expect_err("negative")
///     .into();
/// assert!(matches!(tampered, Error::Corrupt(m) if m == "streams.version holds -1, out of range for u64"));
/// ```
pub fn number<S, T>(column: impl Display, value: S) -> Result<T, OutOfRange>
where
    S: Copy + Display,
    T: TryFrom<S>,
{
    T::try_from(value).map_err(|_| OutOfRange {
        column: column.to_string(),
        value: value.to_string(),
        target: std::any::type_name::<T>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_stored_number_is_corrupt_and_named() {
        let e: Error = number::<i64, u64>("events.position", -7)
            .expect_err("negative")
            .into();
        let Error::Corrupt(m) = e else {
            panic!("not corrupt: {e:?}");
        };
        assert_eq!(m, "events.position holds -7, out of range for u64");
    }

    #[test]
    fn a_stored_number_too_large_for_its_type_is_corrupt() {
        assert!(matches!(
            number::<i64, u32>("leases.partition", i64::from(u32::MAX) + 1),
            Err(OutOfRange { target: "u32", .. })
        ));
        assert_eq!(number::<i64, u32>("leases.partition", 7).ok(), Some(7));
    }
}
