//! OpenAPI schemas of the core types whose JSON form serde alone does not describe
//! (feature `openapi`): verbatim JSON, timestamps, hashes and expected versions.

use crate::append::ExpectedVersion;
use crate::chain::Hash;
use crate::event::{RawJson, Timestamp};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::{PartialSchema, ToSchema};

impl PartialSchema for RawJson {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .description(Some("Any JSON, stored and returned exactly as written"))
            .into()
    }
}
impl ToSchema for RawJson {}

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("UTC, microseconds: YYYY-MM-DDTHH:MM:SS.ffffffZ"))
            .examples(["2024-10-20T14:03:11.123456Z"])
            .into()
    }
}
impl ToSchema for Timestamp {}

impl PartialSchema for Hash {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .pattern(Some("^[0-9a-f]{64}$"))
            .description(Some("SHA-256, 64 lowercase hex digits (docs/chain.md)"))
            .into()
    }
}
impl ToSchema for Hash {}

impl PartialSchema for ExpectedVersion {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::String))
                    .enum_values(Some(["any", "no_stream", "exists"])),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Integer))
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(0)),
            )
            .description(Some("\"any\", \"no_stream\", \"exists\", or the aggregate's current version (0 = no_stream)"))
            .into()
    }
}
impl ToSchema for ExpectedVersion {}
