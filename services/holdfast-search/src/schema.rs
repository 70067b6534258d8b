//! The Tantivy schema: which product fields are searched, filtered, faceted and sorted.

use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};

/// Bumped when the schema or what is indexed changes: an index of another version is
/// rebuilt from the store on start.
pub const SCHEMA_VERSION: u32 = 1;

/// The English stemming analyzer Tantivy registers by default (lower case, stemmed).
pub const ANALYZER: &str = "en_stem";

/// Handles to every field.
#[derive(Debug, Clone)]
pub struct Fields {
    /// Exact SKU: the delete key and the tie-break (fast).
    pub sku: Field,
    /// Title, analysed, with positions (phrases), stored for highlights.
    pub title: Field,
    /// Description, analysed, with positions, stored for highlights.
    pub description: Field,
    /// Brand as text (searchable, analysed).
    pub brand_text: Field,
    /// Attribute values as text.
    pub attributes: Field,
    /// Exact category (filter and facet).
    pub category: Field,
    /// Exact brand (filter and facet).
    pub brand: Field,
    /// Price currency (filter and facet).
    pub currency: Field,
    /// Price in minor units (range filter, sort, buckets).
    pub price: Field,
    /// Creation time, Unix ms (newest sort).
    pub created: Field,
    /// 1 if in stock, else 0.
    pub in_stock: Field,
    /// The whole product as JSON (rebuilds hits and re-indexes on stock changes).
    pub payload: Field,
}

/// The schema and its fields.
pub fn build() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = |stored: bool| {
        let options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        if stored { options.set_stored() } else { options }
    };
    let fields = Fields {
        sku: builder.add_text_field("sku", STRING | FAST),
        title: builder.add_text_field("title", text(true)),
        description: builder.add_text_field("description", text(true)),
        brand_text: builder.add_text_field("brand_text", text(false)),
        attributes: builder.add_text_field("attributes", text(false)),
        category: builder.add_text_field("category", STRING | FAST),
        brand: builder.add_text_field("brand", STRING | FAST),
        currency: builder.add_text_field("currency", STRING | FAST),
        price: builder.add_i64_field("price", INDEXED | FAST),
        created: builder.add_i64_field("created", FAST),
        in_stock: builder.add_u64_field("in_stock", INDEXED | FAST | STORED),
        payload: builder.add_text_field("payload", STORED),
    };
    (builder.build(), fields)
}
