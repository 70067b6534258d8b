//! The checkout state's stored form: a format byte, then protobuf.
//!
//! A checkout writes its state at every step (about ten times), and every step reads it
//! back; as JSON that was two serde passes over ~900 bytes with the request hex-encoded
//! inside. Protobuf is about half the bytes and a fraction of the work. States written as
//! JSON before (their first byte is `{`) still read: a saga in flight across the upgrade
//! finishes. `protoc --decode_raw` shows a stored state (skip the first byte).
//!
//! The messages here mirror [`CheckoutState`] field for field; they are private to this
//! file, and tags are never reused.

use prost::Message;

use super::state::{CheckoutState, Outcome, PricedLine, RepricedLine, ShortLine};
use crate::error::OrdersError;

/// The first byte of a protobuf state (a JSON state starts with `{`).
const PROTOBUF: u8 = 1;

#[derive(Clone, PartialEq, Message)]
struct StateWire {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(bytes = "vec", tag = "2")]
    request: Vec<u8>,
    #[prost(string, tag = "3")]
    order_id: String,
    #[prost(string, tag = "4")]
    reservation_id: String,
    #[prost(int64, tag = "5")]
    started_at_ms: i64,
    #[prost(message, repeated, tag = "6")]
    lines: Vec<PricedLineWire>,
    #[prost(string, tag = "7")]
    currency: String,
    #[prost(int64, tag = "8")]
    total_minor: i64,
    #[prost(uint64, optional, tag = "9")]
    cart_version: Option<u64>,
    #[prost(bool, tag = "10")]
    reserved: bool,
    #[prost(bool, tag = "11")]
    manual_review: bool,
    #[prost(string, optional, tag = "12")]
    payment_id: Option<String>,
    #[prost(bool, tag = "13")]
    order_created: bool,
    #[prost(bool, tag = "14")]
    committed: bool,
    #[prost(oneof = "OutcomeWire", tags = "15, 16, 17, 18, 19, 20")]
    outcome: Option<OutcomeWire>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum OutcomeWire {
    #[prost(bool, tag = "15")]
    Placed(bool),
    #[prost(bool, tag = "16")]
    ManualReview(bool),
    /// The decline code.
    #[prost(string, tag = "17")]
    Declined(String),
    #[prost(message, tag = "18")]
    OutOfStock(ShortagesWire),
    #[prost(message, tag = "19")]
    PriceChanged(RepricedWire),
    #[prost(message, tag = "20")]
    Refused(RefusedWire),
}

#[derive(Clone, PartialEq, Message)]
struct PricedLineWire {
    #[prost(string, tag = "1")]
    sku: String,
    #[prost(int64, tag = "2")]
    quantity: i64,
    #[prost(int64, tag = "3")]
    unit_price_minor: i64,
    #[prost(string, tag = "4")]
    title: String,
}

#[derive(Clone, PartialEq, Message)]
struct ShortagesWire {
    #[prost(message, repeated, tag = "1")]
    lines: Vec<ShortLineWire>,
}

#[derive(Clone, PartialEq, Message)]
struct ShortLineWire {
    #[prost(string, tag = "1")]
    sku: String,
    #[prost(int64, tag = "2")]
    requested: i64,
    #[prost(int64, tag = "3")]
    available: i64,
}

#[derive(Clone, PartialEq, Message)]
struct RepricedWire {
    #[prost(message, repeated, tag = "1")]
    lines: Vec<RepricedLineWire>,
}

#[derive(Clone, PartialEq, Message)]
struct RepricedLineWire {
    #[prost(string, tag = "1")]
    sku: String,
    #[prost(int64, tag = "2")]
    expected_minor: i64,
    #[prost(string, tag = "3")]
    expected_currency: String,
    #[prost(int64, tag = "4")]
    current_minor: i64,
    #[prost(string, tag = "5")]
    current_currency: String,
}

#[derive(Clone, PartialEq, Message)]
struct RefusedWire {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

impl CheckoutState {
    /// Encodes for the store.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes from the store (either form).
    pub fn decode(bytes: &[u8]) -> Result<Self, OrdersError> {
        decode(bytes)
    }
}

/// The stored form of `state`.
fn encode(state: &CheckoutState) -> Vec<u8> {
    let wire = StateWire {
        key: state.key.clone(),
        request: state.request.clone(),
        order_id: state.order_id.clone(),
        reservation_id: state.reservation_id.clone(),
        started_at_ms: state.started_at_ms,
        lines: state
            .lines
            .iter()
            .map(|l| PricedLineWire {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price_minor: l.unit_price_minor,
                title: l.title.clone(),
            })
            .collect(),
        currency: state.currency.clone(),
        total_minor: state.total_minor,
        cart_version: state.cart_version,
        reserved: state.reserved,
        manual_review: state.manual_review,
        payment_id: state.payment_id.clone(),
        order_created: state.order_created,
        committed: state.committed,
        outcome: state.outcome.as_ref().map(outcome_to_wire),
    };
    let mut bytes = Vec::with_capacity(1 + wire.encoded_len());
    bytes.push(PROTOBUF);
    wire.encode_raw(&mut bytes);
    bytes
}

/// Reads what [`encode`] wrote, or a JSON state written before it.
fn decode(bytes: &[u8]) -> Result<CheckoutState, OrdersError> {
    let corrupt =
        |e: &dyn std::fmt::Display| OrdersError::Internal(format!("stored checkout state is corrupt: {e}"));
    match bytes.split_first() {
        Some((&PROTOBUF, rest)) => StateWire::decode(rest)
            .map(state_from_wire)
            .map_err(|e| corrupt(&e)),
        Some((b'{', _)) => serde_json::from_slice(bytes).map_err(|e| corrupt(&e)),
        _ => Err(corrupt(&"unknown format")),
    }
}

fn outcome_to_wire(outcome: &Outcome) -> OutcomeWire {
    match outcome {
        Outcome::Placed => OutcomeWire::Placed(true),
        Outcome::ManualReview => OutcomeWire::ManualReview(true),
        Outcome::Declined { decline_code } => OutcomeWire::Declined(decline_code.clone()),
        Outcome::OutOfStock { shortages } => OutcomeWire::OutOfStock(ShortagesWire {
            lines: shortages
                .iter()
                .map(|s| ShortLineWire {
                    sku: s.sku.clone(),
                    requested: s.requested,
                    available: s.available,
                })
                .collect(),
        }),
        Outcome::PriceChanged { lines } => OutcomeWire::PriceChanged(RepricedWire {
            lines: lines
                .iter()
                .map(|l| RepricedLineWire {
                    sku: l.sku.clone(),
                    expected_minor: l.expected_minor,
                    expected_currency: l.expected_currency.clone(),
                    current_minor: l.current_minor,
                    current_currency: l.current_currency.clone(),
                })
                .collect(),
        }),
        Outcome::Refused { code, message } => OutcomeWire::Refused(RefusedWire {
            code: *code,
            message: message.clone(),
        }),
    }
}

fn state_from_wire(wire: StateWire) -> CheckoutState {
    CheckoutState {
        key: wire.key,
        request: wire.request,
        order_id: wire.order_id,
        reservation_id: wire.reservation_id,
        started_at_ms: wire.started_at_ms,
        lines: wire
            .lines
            .into_iter()
            .map(|l| PricedLine {
                sku: l.sku,
                quantity: l.quantity,
                unit_price_minor: l.unit_price_minor,
                title: l.title,
            })
            .collect(),
        currency: wire.currency,
        total_minor: wire.total_minor,
        cart_version: wire.cart_version,
        reserved: wire.reserved,
        manual_review: wire.manual_review,
        payment_id: wire.payment_id,
        order_created: wire.order_created,
        committed: wire.committed,
        outcome: wire.outcome.map(outcome_from_wire),
    }
}

fn outcome_from_wire(wire: OutcomeWire) -> Outcome {
    match wire {
        OutcomeWire::Placed(_) => Outcome::Placed,
        OutcomeWire::ManualReview(_) => Outcome::ManualReview,
        OutcomeWire::Declined(decline_code) => Outcome::Declined { decline_code },
        OutcomeWire::OutOfStock(s) => Outcome::OutOfStock {
            shortages: s
                .lines
                .into_iter()
                .map(|s| ShortLine {
                    sku: s.sku,
                    requested: s.requested,
                    available: s.available,
                })
                .collect(),
        },
        OutcomeWire::PriceChanged(r) => Outcome::PriceChanged {
            lines: r
                .lines
                .into_iter()
                .map(|l| RepricedLine {
                    sku: l.sku,
                    expected_minor: l.expected_minor,
                    expected_currency: l.expected_currency,
                    current_minor: l.current_minor,
                    current_currency: l.current_currency,
                })
                .collect(),
        },
        OutcomeWire::Refused(r) => Outcome::Refused {
            code: r.code,
            message: r.message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state with every field set, ending in `outcome`.
    fn full(outcome: Option<Outcome>) -> CheckoutState {
        CheckoutState {
            key: "key-1".into(),
            request: vec![0x0a, 0x03, b'k', b'e', b'y', 0x00, 0xff],
            order_id: "ord_1".into(),
            reservation_id: "chk_1".into(),
            started_at_ms: 1_765_000_000_123,
            lines: vec![
                PricedLine {
                    sku: "SKU-1".into(),
                    quantity: 2,
                    unit_price_minor: 1999,
                    title: "Mug ☕".into(),
                },
                PricedLine {
                    sku: "SKU-2".into(),
                    quantity: 1,
                    unit_price_minor: -5,
                    title: String::new(),
                },
            ],
            currency: "EUR".into(),
            total_minor: 3993,
            cart_version: Some(0),
            reserved: true,
            manual_review: true,
            payment_id: Some(String::new()),
            order_created: true,
            committed: true,
            outcome,
        }
    }

    fn outcomes() -> Vec<Option<Outcome>> {
        vec![
            None,
            Some(Outcome::Placed),
            Some(Outcome::ManualReview),
            Some(Outcome::Declined {
                decline_code: "card_declined".into(),
            }),
            Some(Outcome::OutOfStock {
                shortages: vec![ShortLine {
                    sku: "SKU-1".into(),
                    requested: 3,
                    available: 0,
                }],
            }),
            Some(Outcome::PriceChanged {
                lines: vec![RepricedLine {
                    sku: "SKU-2".into(),
                    expected_minor: 100,
                    expected_currency: "EUR".into(),
                    current_minor: 120,
                    current_currency: "USD".into(),
                }],
            }),
            Some(Outcome::Refused {
                code: 9,
                message: "checkout abandoned".into(),
            }),
        ]
    }

    #[test]
    fn every_field_and_outcome_round_trips_and_takes_fewer_bytes_than_json() {
        for outcome in outcomes() {
            let state = full(outcome);
            let bytes = encode(&state);
            assert_eq!(bytes[0], PROTOBUF);
            assert_eq!(decode(&bytes).expect("decodes"), state);
            let json = serde_json::to_vec(&state).expect("json");
            assert!(bytes.len() < json.len(), "{} vs {}", bytes.len(), json.len());
        }
        // Empty and absent differ where the state tells them apart.
        let mut state = full(None);
        state.cart_version = None;
        state.payment_id = None;
        assert_eq!(decode(&encode(&state)).expect("decodes"), state);
    }

    #[test]
    fn a_json_state_written_before_still_reads() {
        for outcome in outcomes() {
            let state = full(outcome);
            // What `CheckoutState::encode` wrote before the protobuf form.
            let before = serde_json::to_vec(&state).expect("json");
            assert_eq!(before[0], b'{');
            assert_eq!(decode(&before).expect("decodes"), state);
        }
        // A JSON state from before the later fields existed reads with their defaults.
        let old = br#"{"key":"k","request":"0a016b","order_id":"o","reservation_id":"r","started_at_ms":7}"#;
        let state = decode(old).expect("decodes");
        assert_eq!(state.request, vec![0x0a, 0x01, b'k']);
        assert!(state.lines.is_empty() && state.outcome.is_none() && !state.reserved);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            &[PROTOBUF, 0xff, 0xff][..],
            &b"{not json"[..],
            &[7, 1, 2][..],
        ] {
            let error = decode(bytes).expect_err("refused");
            assert!(error.to_string().contains("corrupt"), "{error}");
        }
    }
}
