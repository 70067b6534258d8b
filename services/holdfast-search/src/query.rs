//! Turning a [`SearchQuery`] into Tantivy queries.
//!
//! Free text is parsed by hand, never by Tantivy's query language, so no input is a syntax
//! error: `"quoted words"` are phrases (title or description), other words are analysed
//! with the index's English stemmer and must all match (in title, brand, attributes or
//! description, boosted in that order). A word absent from the index is matched fuzzily
//! (edit distance 1, or 2 from 8 letters); the last word also matches as a prefix, for
//! search-as-you-type.

use std::ops::Bound;

use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, PhraseQuery, Query,
    RangeQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Searcher, Term};

use crate::SearchError;
use crate::model::{PriceFilter, SearchQuery};
use crate::schema::Fields;

/// Most words (and phrase words) a query may carry; more are ignored.
const MAX_WORDS: usize = 16;

/// The text fields searched and their boosts.
fn weighted(fields: &Fields) -> [(Field, f32); 4] {
    [
        (fields.title, 3.0),
        (fields.brand_text, 2.0),
        (fields.attributes, 1.5),
        (fields.description, 1.0),
    ]
}

/// One piece of the free text.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Word(String),
    Phrase(String),
}

fn split(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    for (i, part) in text.split('"').enumerate() {
        if i % 2 == 1 {
            if !part.trim().is_empty() {
                pieces.push(Piece::Phrase(part.to_string()));
            }
        } else {
            pieces.extend(part.split_whitespace().map(|w| Piece::Word(w.to_string())));
        }
    }
    pieces.truncate(MAX_WORDS);
    pieces
}

fn analyse(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        tokens.push(stream.token().text.clone());
    }
    tokens
}

fn boosted(query: Box<dyn Query>, boost: f32) -> Box<dyn Query> {
    Box::new(BoostQuery::new(query, boost))
}

/// The free-text part, `None` when the text has no searchable words.
pub fn text(searcher: &Searcher, fields: &Fields, text: &str) -> Result<Option<Box<dyn Query>>, SearchError> {
    let mut analyzer = searcher.index().tokenizer_for_field(fields.title)?;
    let pieces = split(text);
    let last_word = pieces.iter().rposition(|p| matches!(p, Piece::Word(_)));
    let mut musts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Phrase(phrase) => {
                let tokens = analyse(&mut analyzer, phrase);
                if tokens.is_empty() {
                    continue;
                }
                let mut alternatives: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for (field, boost) in [(fields.title, 3.0), (fields.description, 1.0)] {
                    let terms: Vec<Term> = tokens.iter().map(|t| Term::from_field_text(field, t)).collect();
                    let query: Box<dyn Query> = if terms.len() == 1 {
                        Box::new(TermQuery::new(terms[0].clone(), IndexRecordOption::WithFreqs))
                    } else {
                        Box::new(PhraseQuery::new(terms))
                    };
                    alternatives.push((Occur::Should, boosted(query, boost)));
                }
                musts.push((Occur::Must, Box::new(BooleanQuery::new(alternatives))));
            }
            Piece::Word(word) => {
                let prefix = (Some(i) == last_word).then(|| word.to_lowercase());
                for token in analyse(&mut analyzer, word) {
                    musts.push((
                        Occur::Must,
                        word_query(searcher, fields, &token, prefix.as_deref())?,
                    ));
                }
            }
        }
    }
    Ok((!musts.is_empty()).then(|| Box::new(BooleanQuery::new(musts)) as Box<dyn Query>))
}

/// One analysed word: exact where the index has it, fuzzy where it does not, and as a
/// prefix when it is the last word.
fn word_query(
    searcher: &Searcher,
    fields: &Fields,
    token: &str,
    prefix: Option<&str>,
) -> Result<Box<dyn Query>, SearchError> {
    let mut known = false;
    for (field, _) in weighted(fields) {
        if searcher.doc_freq(&Term::from_field_text(field, token))? > 0 {
            known = true;
            break;
        }
    }
    let letters = token.chars().count();
    let mut alternatives: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for (field, boost) in weighted(fields) {
        let term = Term::from_field_text(field, token);
        if known {
            alternatives.push((
                Occur::Should,
                boosted(
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                    boost,
                ),
            ));
        } else if letters >= 4 {
            let distance = if letters >= 8 { 2 } else { 1 };
            // Typo matches rank below exact ones.
            alternatives.push((
                Occur::Should,
                boosted(Box::new(FuzzyTermQuery::new(term, distance, true)), boost * 0.5),
            ));
        }
        if let Some(prefix) = prefix.filter(|p| p.chars().count() >= 2) {
            let term = Term::from_field_text(field, prefix);
            alternatives.push((
                Occur::Should,
                boosted(Box::new(FuzzyTermQuery::new_prefix(term, 0, true)), boost * 0.5),
            ));
        }
    }
    if alternatives.is_empty() {
        // A short unknown word matches nothing rather than everything.
        alternatives.push((
            Occur::Should,
            Box::new(TermQuery::new(
                Term::from_field_text(fields.title, token),
                IndexRecordOption::Basic,
            )),
        ));
    }
    Ok(Box::new(BooleanQuery::new(alternatives)))
}

fn any_of(field: Field, values: &[String]) -> Option<Box<dyn Query>> {
    if values.is_empty() {
        return None;
    }
    let should = values
        .iter()
        .map(|v| {
            (
                Occur::Should,
                Box::new(TermQuery::new(
                    Term::from_field_text(field, v),
                    IndexRecordOption::Basic,
                )) as Box<dyn Query>,
            )
        })
        .collect();
    Some(Box::new(BooleanQuery::new(should)))
}

fn price(fields: &Fields, filter: &PriceFilter) -> Box<dyn Query> {
    let lower = filter.min.map_or(Bound::Unbounded, |v| {
        Bound::Included(Term::from_field_i64(fields.price, v))
    });
    let upper = filter.max.map_or(Bound::Unbounded, |v| {
        Bound::Excluded(Term::from_field_i64(fields.price, v))
    });
    let currency = TermQuery::new(
        Term::from_field_text(fields.currency, &filter.currency),
        IndexRecordOption::Basic,
    );
    Box::new(BooleanQuery::new(vec![
        (Occur::Must, Box::new(currency) as Box<dyn Query>),
        (Occur::Must, Box::new(RangeQuery::new(lower, upper))),
    ]))
}

/// The filters of a search, each left out of its own facet's count.
pub struct Filters {
    /// Categories filter.
    pub category: Option<Box<dyn Query>>,
    /// Brands filter.
    pub brand: Option<Box<dyn Query>>,
    /// Price filter.
    pub price: Option<Box<dyn Query>>,
    /// In-stock filter.
    pub stock: Option<Box<dyn Query>>,
}

/// Which filter a facet leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Without {
    /// Keep every filter.
    Nothing,
    /// Drop the category filter.
    Category,
    /// Drop the brand filter.
    Brand,
    /// Drop the price filter.
    Price,
}

impl Filters {
    /// The filters of `query`.
    pub fn of(fields: &Fields, query: &SearchQuery) -> Self {
        Filters {
            category: any_of(fields.category, &query.categories),
            brand: any_of(fields.brand, &query.brands),
            price: query.price.as_ref().map(|p| price(fields, p)),
            stock: query.in_stock_only.then(|| {
                Box::new(TermQuery::new(
                    Term::from_field_u64(fields.in_stock, 1),
                    IndexRecordOption::Basic,
                )) as Box<dyn Query>
            }),
        }
    }

    /// Whether the filter `without` leaves out is set (else its facet can share the main pass).
    pub fn has(&self, without: Without) -> bool {
        match without {
            Without::Nothing => true,
            Without::Category => self.category.is_some(),
            Without::Brand => self.brand.is_some(),
            Without::Price => self.price.is_some(),
        }
    }

    /// `text` (or everything) with every filter but `without`; filters do not score.
    pub fn combine(&self, text: Option<&dyn Query>, without: Without) -> Box<dyn Query> {
        let mut musts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(text) = text {
            musts.push((Occur::Must, text.box_clone()));
        }
        let parts = [
            (Without::Category, &self.category),
            (Without::Brand, &self.brand),
            (Without::Price, &self.price),
            (Without::Nothing, &self.stock),
        ];
        for (kind, filter) in parts {
            if let Some(filter) = filter
                && (kind == Without::Nothing || kind != without)
            {
                musts.push((
                    Occur::Must,
                    Box::new(ConstScoreQuery::new(filter.box_clone(), 0.0)),
                ));
            }
        }
        if musts.is_empty() {
            return Box::new(AllQuery);
        }
        if text.is_none() {
            musts.push((Occur::Must, Box::new(AllQuery)));
        }
        Box::new(BooleanQuery::new(musts))
    }
}

#[cfg(test)]
mod tests {
    use super::{Piece, split};

    #[test]
    fn splits_words_and_phrases_and_tolerates_stray_quotes() {
        assert_eq!(
            split(r#"red "trail runner" shoe"#),
            vec![
                Piece::Word("red".into()),
                Piece::Phrase("trail runner".into()),
                Piece::Word("shoe".into())
            ]
        );
        assert_eq!(
            split(r#"open "quote"#),
            vec![Piece::Word("open".into()), Piece::Phrase("quote".into())]
        );
        assert_eq!(split(r#""" "#), vec![]);
        assert_eq!(split(&"w ".repeat(100)).len(), 16);
    }
}
