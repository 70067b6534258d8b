//! What a checkout saga persists between steps, and the answer a key stores.
//!
//! The state is stored as protobuf (`wire.rs`, where `CheckoutState::encode` and `decode`
//! live); states written as JSON before (the serde derives below, with the request
//! hex-encoded inside) still read.

use holdfast_proto::orders::v1::{CheckoutRequest, CheckoutResponse};
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use crate::error::OrdersError;

/// The steps of a checkout, in order, then the compensation and the end. A saga's `step`
/// is the next step to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Re-price from the catalog, check the cart, the SKUs and the currency.
    Validate,
    /// Hold the stock (TTL hold).
    Reserve,
    /// Risk rules; high risk goes to manual review without charging.
    Screen,
    /// Extend the hold, then authorize the payment.
    Authorize,
    /// Write the order record.
    CreateOrder,
    /// Turn the hold into a decrement: the pivot, only forward after it.
    Commit,
    /// Take the money.
    Capture,
    /// Mark the order paid and announce it for fulfillment (through the outbox).
    Dispatch,
    /// Clear the cart.
    Notify,
    /// Undo what was done before the pivot: cancel the order, void, release.
    Compensate,
    /// Store the answer on the idempotency key and end.
    Finish,
    /// Ended (the saga is `finished`).
    Done,
}

impl Step {
    /// Every step, for parsing and for the fault hook's names.
    pub const ALL: [Step; 12] = [
        Step::Validate,
        Step::Reserve,
        Step::Screen,
        Step::Authorize,
        Step::CreateOrder,
        Step::Commit,
        Step::Capture,
        Step::Dispatch,
        Step::Notify,
        Step::Compensate,
        Step::Finish,
        Step::Done,
    ];

    /// The name stored in the saga record.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Validate => "validate",
            Step::Reserve => "reserve",
            Step::Screen => "screen",
            Step::Authorize => "authorize",
            Step::CreateOrder => "create_order",
            Step::Commit => "commit",
            Step::Capture => "capture",
            Step::Dispatch => "dispatch",
            Step::Notify => "notify",
            Step::Compensate => "compensate",
            Step::Finish => "finish",
            Step::Done => "done",
        }
    }

    /// The step stored under `name`.
    pub fn parse(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.as_str() == name)
    }

    /// Whether this step runs at once after the step before it, persisted in that step's
    /// transition instead of one of its own. True of the steps with no effect outside the
    /// saga's own write: screen (reads the risk rules' history), create order (the order row
    /// is a joined write), dispatch (the order's PAID and FULFILLING moves with their events
    /// are a joined write) and finish (the answer on the key is a joined write). None of them
    /// calls another service, so every external effect (reserve, authorize, commit, capture,
    /// the cart's clear, a release or void) still has a persisted transition before and
    /// after it.
    pub fn runs_with_previous(self) -> bool {
        matches!(
            self,
            Step::Screen | Step::CreateOrder | Step::Dispatch | Step::Finish
        )
    }

    /// Whether this step runs before the saga is first written, which is then created at the
    /// step after it: true of validate, which only reads (the catalog's prices, the cart)
    /// and so needs no persisted transition before it. Reserve, the first external effect,
    /// still has one: the saga's creation.
    pub fn runs_before_create(self) -> bool {
        self == Step::Validate
    }

    /// Whether the pivot (commit) has not run yet, so the saga may still compensate.
    pub fn before_pivot(self) -> bool {
        matches!(
            self,
            Step::Validate
                | Step::Reserve
                | Step::Screen
                | Step::Authorize
                | Step::CreateOrder
                | Step::Commit
        )
    }
}

/// A line after re-pricing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    /// The SKU.
    pub sku: String,
    /// Units.
    pub quantity: i64,
    /// The catalog price charged, minor units of the checkout currency.
    pub unit_price_minor: i64,
    /// Product title at checkout.
    pub title: String,
}

/// A line the inventory could not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortLine {
    /// The SKU.
    pub sku: String,
    /// Units asked for.
    pub requested: i64,
    /// Units available when refused.
    pub available: i64,
}

/// A line whose price moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepricedLine {
    /// The SKU.
    pub sku: String,
    /// What the shopper expected, minor units.
    pub expected_minor: i64,
    /// Currency of the expected price.
    pub expected_currency: String,
    /// The catalog price now, minor units.
    pub current_minor: i64,
    /// Currency of the catalog price.
    pub current_currency: String,
}

/// How a checkout ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Order placed, charged.
    Placed,
    /// Order recorded for review, not charged.
    ManualReview,
    /// The PSP declined (or never answered); nothing held or charged.
    Declined {
        /// The PSP's code, or ours ("processor_timeout", "processor_unavailable").
        decline_code: String,
    },
    /// Stock was short (or the hold lapsed before commit); nothing held or charged.
    OutOfStock {
        /// The short lines.
        shortages: Vec<ShortLine>,
    },
    /// Prices moved; nothing held or charged.
    PriceChanged {
        /// The moved lines.
        lines: Vec<RepricedLine>,
    },
    /// Refused with an error status (empty cart, unknown SKU, abandoned after an outage).
    Refused {
        /// The gRPC code number.
        code: i32,
        /// The message.
        message: String,
    },
}

/// Everything a checkout saga carries from step to step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutState {
    /// The client's idempotency key.
    pub key: String,
    /// The request, protobuf-encoded, hex.
    #[serde(with = "hex")]
    pub request: Vec<u8>,
    /// The order id this checkout creates (fixed at the start, so retries write one order).
    pub order_id: String,
    /// The inventory reservation id (fixed at the start).
    pub reservation_id: String,
    /// When the checkout started (Unix ms).
    pub started_at_ms: i64,
    /// Re-priced lines (after validate).
    #[serde(default)]
    pub lines: Vec<PricedLine>,
    /// The order currency (after validate).
    #[serde(default)]
    pub currency: String,
    /// Sum of the lines (after validate).
    #[serde(default)]
    pub total_minor: i64,
    /// The cart version checked out, for clearing exactly that cart.
    #[serde(default)]
    pub cart_version: Option<u64>,
    /// Stock is held.
    #[serde(default)]
    pub reserved: bool,
    /// Risk sent it to manual review.
    #[serde(default)]
    pub manual_review: bool,
    /// The PSP payment, once authorized.
    #[serde(default)]
    pub payment_id: Option<String>,
    /// The order record exists.
    #[serde(default)]
    pub order_created: bool,
    /// Stock was committed (the pivot passed).
    #[serde(default)]
    pub committed: bool,
    /// How it ended, once known.
    #[serde(default)]
    pub outcome: Option<Outcome>,
}

impl CheckoutState {
    /// The request this saga serves.
    pub fn request(&self) -> Result<CheckoutRequest, OrdersError> {
        CheckoutRequest::decode(self.request.as_slice())
            .map_err(|e| OrdersError::Internal(format!("stored checkout request is corrupt: {e}")))
    }

    /// The PSP idempotency key of `action` for this checkout: derived from the checkout
    /// key, so every retry of the action reuses it.
    pub fn psp_key(&self, action: &str) -> String {
        psp_key_for(&self.key, action)
    }

    /// Ends the checkout with an error answer and nothing to undo.
    pub fn refuse(&mut self, code: Code, message: impl Into<String>) -> Step {
        self.outcome = Some(Outcome::Refused {
            code: code as i32,
            message: message.into(),
        });
        Step::Finish
    }

    /// Ends the checkout refused because `dependency` refused a call: its detail goes to
    /// the log, the client gets `message`.
    pub fn refused_by(&mut self, dependency: &'static str, status: &Status, message: &str) -> Step {
        tracing::info!(order = %self.order_id, dependency, code = ?status.code(), detail = %status.message(),
            "checkout refused by an upstream");
        self.refuse(Code::FailedPrecondition, message)
    }
}

/// The answer stored on an idempotency key: a response or an error, replayed as is.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredAnswer {
    /// A response.
    Response(Box<CheckoutResponse>),
    /// An error status: code, message and its encoded `google.rpc.Status` details (empty
    /// for none), so a replay carries the same rich details as the first answer.
    Error(Code, String, Vec<u8>),
}

impl StoredAnswer {
    /// Bytes for `complete_key`: a tag byte, then the encoded response or code + message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            StoredAnswer::Response(response) => {
                let mut bytes = vec![0];
                bytes.extend(response.encode_to_vec());
                bytes
            }
            StoredAnswer::Error(code, message, details) => {
                let mut bytes = vec![2];
                bytes.extend((*code as i32).to_be_bytes());
                bytes.extend(u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
                bytes.extend(message.as_bytes());
                bytes.extend(details);
                bytes
            }
        }
    }

    /// Reads what `encode` wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, OrdersError> {
        let corrupt = || OrdersError::Internal("stored checkout answer is corrupt".into());
        match bytes.split_first() {
            Some((0, rest)) => CheckoutResponse::decode(rest)
                .map(|response| StoredAnswer::Response(Box::new(response)))
                .map_err(|_| corrupt()),
            Some((2, rest)) if rest.len() >= 8 => {
                let (code, rest) = rest.split_at(4);
                let (len, rest) = rest.split_at(4);
                let code = i32::from_be_bytes([code[0], code[1], code[2], code[3]]);
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                if rest.len() < len {
                    return Err(corrupt());
                }
                let (message, details) = rest.split_at(len);
                Ok(StoredAnswer::Error(
                    Code::from_i32(code),
                    String::from_utf8_lossy(message).into_owned(),
                    details.to_vec(),
                ))
            }
            _ => Err(corrupt()),
        }
    }

    /// The answer as an RPC result.
    pub fn into_result(self) -> Result<CheckoutResponse, Status> {
        match self {
            StoredAnswer::Response(response) => Ok(*response),
            StoredAnswer::Error(code, message, details) if details.is_empty() => {
                Err(Status::new(code, message))
            }
            StoredAnswer::Error(code, message, details) => {
                Err(Status::with_details(code, message, details.into()))
            }
        }
    }
}

/// `chk_<sha-1 of the checkout key>:<action>`: keyed by the checkout key itself (not the
/// saga), so even a saga the store lost (an OS crash under the embedded SQLite) cannot
/// charge twice when the client retries its key: the PSP answers the first authorization.
pub fn psp_key_for(checkout_key: &str, action: &str) -> String {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(checkout_key.as_bytes());
    format!("chk_{}:{action}", hex::encode(&digest))
}

/// A digest of the request's payload (everything but the key): two requests with one key
/// are "the same" exactly when their digests match. Two FNV-1a 64 passes with different
/// offsets over the canonical protobuf encoding (prost encodes fields in number order).
pub fn fingerprint(request: &CheckoutRequest) -> String {
    let mut payload = request.clone();
    payload.idempotency_key.clear();
    let bytes = payload.encode_to_vec();
    let fnv = |offset: u64| {
        bytes.iter().fold(offset, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}{:08x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142),
        bytes.len()
    )
}

/// Hex for byte fields in the JSON state (and the PSP key's digest): a table per nibble,
/// one `String` per field, not one small `String` per byte.
mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    const DIGITS: &[u8; 16] = b"0123456789abcdef";

    pub fn encode(bytes: &[u8]) -> String {
        let mut text = String::with_capacity(bytes.len() * 2);
        for byte in bytes {
            text.push(char::from(DIGITS[usize::from(byte >> 4)]));
            text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        text
    }

    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let digits = text.as_bytes();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        digits
            .chunks_exact(2)
            .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
            .collect()
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        decode(&text).ok_or_else(|| serde::de::Error::custom("not an even-length hex string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::orders::v1::CheckoutOutcome;

    #[test]
    fn hex_matches_the_per_byte_format_it_replaced_and_refuses_garbage() {
        let bytes: Vec<u8> = (0..=255).collect();
        let old: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex::encode(&bytes), old);
        assert_eq!(hex::decode(&old), Some(bytes));
        assert_eq!(hex::decode("ABcd"), Some(vec![0xab, 0xcd]));
        assert_eq!(hex::decode("abc"), None);
        assert_eq!(hex::decode("zz"), None);
        assert_eq!(hex::decode("é1"), None);
    }

    #[test]
    fn steps_round_trip_through_their_names() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.as_str()), Some(step));
        }
        assert_eq!(Step::parse("nope"), None);
        assert!(Step::Commit.before_pivot());
        assert!(!Step::Capture.before_pivot());
    }

    #[test]
    fn state_round_trips_with_the_request_inside() {
        let request = CheckoutRequest {
            idempotency_key: "k".into(),
            customer_id: "c".into(),
            payment_method: "pm_card_visa".into(),
            ..CheckoutRequest::default()
        };
        let state = CheckoutState {
            key: "k".into(),
            request: request.encode_to_vec(),
            order_id: "ord_1".into(),
            reservation_id: "chk_1".into(),
            started_at_ms: 5,
            lines: vec![],
            currency: "USD".into(),
            total_minor: 0,
            cart_version: Some(3),
            reserved: true,
            manual_review: false,
            payment_id: Some("pay_1".into()),
            order_created: false,
            committed: false,
            outcome: Some(Outcome::Declined {
                decline_code: "card_declined".into(),
            }),
        };
        let back = CheckoutState::decode(&state.encode()).expect("decodes");
        assert_eq!(back, state);
        assert_eq!(back.request().expect("request"), request);
    }

    #[test]
    fn answers_round_trip() {
        let response = StoredAnswer::Response(Box::new(CheckoutResponse {
            outcome: CheckoutOutcome::Placed as i32,
            decline_code: "x".into(),
            ..CheckoutResponse::default()
        }));
        assert_eq!(StoredAnswer::decode(&response.encode()).expect("ok"), response);
        let error = StoredAnswer::Error(Code::FailedPrecondition, "cart is empty".into(), Vec::new());
        assert_eq!(StoredAnswer::decode(&error.encode()).expect("ok"), error);
        let detailed = StoredAnswer::Error(Code::FailedPrecondition, "prices changed".into(), vec![1, 2, 3]);
        assert_eq!(StoredAnswer::decode(&detailed.encode()).expect("ok"), detailed);
        let mut truncated = detailed.encode();
        truncated.truncate(10);
        assert!(StoredAnswer::decode(&truncated).is_err());
        assert!(StoredAnswer::decode(&[7]).is_err());
        assert!(StoredAnswer::decode(&[]).is_err());
    }

    #[test]
    fn fingerprint_ignores_the_key_and_sees_the_payload() {
        let a = CheckoutRequest {
            idempotency_key: "k1".into(),
            customer_id: "c".into(),
            ..CheckoutRequest::default()
        };
        let b = CheckoutRequest {
            idempotency_key: "k2".into(),
            ..a.clone()
        };
        let c = CheckoutRequest {
            customer_id: "d".into(),
            ..a.clone()
        };
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}
