//! Every RPC of every service fed random and extreme field values, on the whole mesh as
//! `holdfast dev` runs it (real redis-server, SQLite), in a debug build.
//!
//! Requests are generated from the services' own descriptor set, so a new RPC or field is
//! covered without touching this file: each field is set or not, to a value drawn from pools
//! of plausible values (a stocked SKU, a currency) and hostile ones (control characters,
//! bidi and zero-width characters, braces, 70 000-character strings, `i64::MIN`/`MAX`,
//! `u64::MAX`, NaN, unknown enum numbers, repeated fields of up to 2 000 elements). The
//! randomness is proptest's deterministic `TestRng`, so a seed reproduces a run.
//!
//! The property, per answer: never INTERNAL, UNKNOWN, UNAVAILABLE, DATA_LOSS or a hang, and
//! no panic anywhere in the process (a panic hook counts them); a request carrying a
//! control character in an identifier answered OK is a finding as well.
//!
//! Knobs: `FUZZ_RPC_CASES` (cases per RPC, default 500), `FUZZ_RPC_SEED` (default fixed),
//! `FUZZ_RPC_SECONDS` (time budget, default 75; RPCs are visited round-robin, so every RPC
//! gets the same number of cases when the budget ends a run early).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use holdfast_e2e::DevMesh;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::{ReserveLine, ReserveRequest};
use proptest::prelude::Rng as _;
use proptest::test_runner::{RngAlgorithm, TestRng};
use prost::Message as _;
use prost::bytes::{Buf, BufMut};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// Answers that mean the server failed, not the request.
const FORBIDDEN: &[Code] = &[
    Code::Internal,
    Code::Unknown,
    Code::Unavailable,
    Code::DataLoss,
    Code::DeadlineExceeded,
    // The client never cancels: a server that drops the stream (a panicking handler) does.
    Code::Cancelled,
];

/// Findings that sit in code another change owns; listed so the run stays green while it
/// lands, and reported on every run. Empty means every RPC must hold the property.
const KNOWN_FAILURES: &[&str] = &[];

/// Requests in flight at once.
const IN_FLIGHT: usize = 8;

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Raw protobuf bytes in and out: the fuzzer builds messages from descriptors, not types.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len).to_vec()))
    }
}

/// One RPC: its path and the full name of its request message.
#[derive(Debug, Clone)]
struct Rpc {
    path: String,
    input: String,
}

/// Messages and enums of the descriptor set by full name (`.pkg.Msg`, `.pkg.Msg.Nested`).
struct Schema {
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, Vec<i32>>,
    rpcs: Vec<Rpc>,
}

impl Schema {
    fn load() -> Self {
        let set = FileDescriptorSet::decode(holdfast_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut schema = Schema {
            messages: HashMap::new(),
            enums: HashMap::new(),
            rpcs: Vec::new(),
        };
        for file in set.file {
            let package = file.package.clone().unwrap_or_default();
            let prefix = format!(".{package}");
            for message in &file.message_type {
                schema.add_message(&prefix, message);
            }
            for e in &file.enum_type {
                schema.enums.insert(
                    format!("{prefix}.{}", e.name()),
                    e.value.iter().map(|v| v.number()).collect(),
                );
            }
            for service in &file.service {
                for method in &service.method {
                    schema.rpcs.push(Rpc {
                        path: format!("/{package}.{}/{}", service.name(), method.name()),
                        input: method.input_type().to_string(),
                    });
                }
            }
        }
        schema
    }

    fn add_message(&mut self, prefix: &str, message: &DescriptorProto) {
        let name = format!("{prefix}.{}", message.name());
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        for e in &message.enum_type {
            self.enums.insert(
                format!("{name}.{}", e.name()),
                e.value.iter().map(|v| v.number()).collect(),
            );
        }
        self.messages.insert(name, message.clone());
    }
}

/// Random request bytes for one message type, plus whether an identifier-like string
/// carries a control character (a request no service should accept).
struct Generator<'a> {
    schema: &'a Schema,
    rng: TestRng,
    hostile_text: bool,
    /// Calm cases draw mostly plausible values, so requests get past validation and reach
    /// the engines; the others mostly hostile ones.
    calm: bool,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: i32, wire: u8) {
    put_varint(out, ((field as u64) << 3) | u64::from(wire));
}

fn put_len(out: &mut Vec<u8>, field: i32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Free-text fields where control characters such as newlines may be legitimate.
fn is_free_text(field: &str) -> bool {
    [
        "description",
        "note",
        "reason",
        "title",
        "message",
        "line",
        "name",
        "value",
    ]
    .iter()
    .any(|t| field.contains(t))
}

impl Generator<'_> {
    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Clone>(&mut self, pool: &[T]) -> T {
        pool[self.below(pool.len() as u64) as usize].clone()
    }

    fn string(&mut self, field: &str) -> String {
        let plausible = [
            "SKU-1", "SKU-2", "MUG", "fuzz-1", "fuzz-2", "c-1", "s-1", "EUR", "USD", "WH-1", "eu-west",
            "ord_fuzz", "pay_fuzz", "chk_fuzz",
        ];
        let hostile: &[&str] = &[
            "",
            " ",
            "\0",
            "a\0b",
            "a\u{1b}[31mred",
            "line\r\nbreak",
            "{tag}",
            "a}b{",
            "~1",
            "a b",
            "\u{202e}rtl",
            "zero\u{200b}width",
            "é",
            "😀😀😀",
            "%s%n%x",
            "'; DROP TABLE carts;--",
            "../../etc/passwd",
            "-1",
            "9223372036854775808",
            "\u{feff}",
        ];
        let roll = self.below(100);
        let s = if roll < if self.calm { 92 } else { 40 } {
            self.pick(&plausible).to_string()
        } else if roll < 85 {
            self.pick(hostile).to_string()
        } else if roll < 93 {
            // Just past the usual limits: 64 (SKUs), 128 (ids), 200 (titles).
            let len = self.pick(&[63usize, 64, 65, 127, 128, 129, 200, 201, 1000]);
            self.pick(&["x", "ü", "😀"]).repeat(len)
        } else {
            self.pick(&["x", "ü"]).repeat(70_000)
        };
        if s.chars().any(|c| c.is_control()) && !is_free_text(field) {
            self.hostile_text = true;
        }
        s
    }

    fn signed(&mut self, bits32: bool) -> i64 {
        let pool: &[i64] = if bits32 {
            &[
                0,
                1,
                -1,
                2,
                3,
                5,
                10,
                99,
                100,
                3600,
                3601,
                i32::MAX as i64,
                i32::MIN as i64,
            ]
        } else {
            &[
                0,
                1,
                -1,
                2,
                5,
                99,
                100,
                1299,
                i64::MAX,
                i64::MIN,
                i64::MAX - 1,
                i64::MIN + 1,
                i32::MAX as i64,
                i32::MIN as i64,
                1 << 53,
                (1 << 53) + 1,
                -(1 << 53),
            ]
        };
        if self.calm && self.chance(90) {
            self.pick(&[1, 1, 2, 3, 10, 60])
        } else if self.chance(85) {
            self.pick(pool)
        } else if bits32 {
            self.rng.next_u32() as i32 as i64
        } else {
            self.rng.next_u64() as i64
        }
    }

    fn unsigned(&mut self, bits32: bool) -> u64 {
        let pool: &[u64] = if bits32 {
            &[0, 1, 2, 5, 100, 500, 501, 3600, 3601, u32::MAX as u64]
        } else {
            &[
                0,
                1,
                2,
                5,
                100,
                500,
                501,
                u64::MAX,
                1 << 63,
                i64::MAX as u64,
                1 << 53,
            ]
        };
        if self.calm && self.chance(90) {
            self.pick(&[0, 1, 2, 10, 60])
        } else if self.chance(85) {
            self.pick(pool)
        } else if bits32 {
            u64::from(self.rng.next_u32())
        } else {
            self.rng.next_u64()
        }
    }

    /// How many elements a repeated field gets: mostly few, sometimes very many.
    fn repeat_count(&mut self) -> usize {
        if self.calm {
            return 1 + self.below(2) as usize;
        }
        match self.below(100) {
            0..=39 => 0,
            40..=84 => 1 + self.below(3) as usize,
            85..=94 => 50 + self.below(60) as usize,
            _ => 500 + self.below(1500) as usize,
        }
    }

    fn message(&mut self, name: &str, depth: u32) -> Vec<u8> {
        let Some(message) = self.schema.messages.get(name).cloned() else {
            // A type outside the set (a well-known type): empty is a valid encoding.
            return Vec::new();
        };
        let mut out = Vec::new();
        // One member per oneof at most: the decoder keeps the last, so more would hide what
        // the request really carries.
        let mut oneof_chosen = HashMap::new();
        for field in &message.field {
            if let Some(index) = field.oneof_index
                && !field.proto3_optional()
            {
                let members = message
                    .field
                    .iter()
                    .filter(|f| f.oneof_index == Some(index))
                    .count();
                let chosen = *oneof_chosen
                    .entry(index)
                    .or_insert_with(|| self.below(members as u64 + 1) as usize);
                let position = message
                    .field
                    .iter()
                    .filter(|f| f.oneof_index == Some(index))
                    .position(|f| f.number == field.number);
                if position != Some(chosen) {
                    continue;
                }
            }
            // Presence: most fields set, fewer deeper down so messages stay bounded.
            let presence = match (self.calm, depth) {
                (true, _) => 95,
                (false, 0) => 80,
                (false, _) => 60,
            };
            if !self.chance(presence) {
                continue;
            }
            let repeated = field.label() == Label::Repeated;
            let count = if repeated {
                let n = self.repeat_count();
                // Huge repeats of messages only at the top, to stay under the 4 MiB limit.
                if depth > 0 && field.r#type() == Type::Message {
                    n.min(5)
                } else {
                    n
                }
            } else {
                1
            };
            for _ in 0..count {
                self.field(&mut out, field, depth);
            }
        }
        out
    }

    fn field(&mut self, out: &mut Vec<u8>, field: &FieldDescriptorProto, depth: u32) {
        let number = field.number();
        match field.r#type() {
            Type::String => {
                let s = self.string(field.name());
                put_len(out, number, s.as_bytes());
            }
            Type::Bytes => {
                let len = self.pick(&[0usize, 1, 16, 1000]);
                let bytes: Vec<u8> = (0..len).map(|_| self.rng.next_u32() as u8).collect();
                put_len(out, number, &bytes);
            }
            Type::Message | Type::Group => {
                if depth < 4 {
                    let inner = self.message(field.type_name(), depth + 1);
                    put_len(out, number, &inner);
                }
            }
            Type::Int64 | Type::Int32 => {
                let v = self.signed(field.r#type() == Type::Int32);
                put_key(out, number, 0);
                put_varint(out, v as u64);
            }
            Type::Sint64 | Type::Sint32 => {
                let v = self.signed(field.r#type() == Type::Sint32);
                put_key(out, number, 0);
                put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
            }
            Type::Uint64 | Type::Uint32 => {
                let v = self.unsigned(field.r#type() == Type::Uint32);
                put_key(out, number, 0);
                put_varint(out, v);
            }
            Type::Bool => {
                put_key(out, number, 0);
                put_varint(out, self.below(2));
            }
            Type::Enum => {
                let known = self
                    .schema
                    .enums
                    .get(field.type_name())
                    .cloned()
                    .unwrap_or_default();
                let v = if self.chance(85) && !known.is_empty() {
                    self.pick(&known)
                } else {
                    self.pick(&[-1, 99, i32::MAX, i32::MIN])
                };
                put_key(out, number, 0);
                put_varint(out, v as i64 as u64);
            }
            Type::Fixed64 | Type::Sfixed64 | Type::Double => {
                let v = if field.r#type() == Type::Double {
                    self.pick(&[
                        0.0f64,
                        -0.0,
                        1.5,
                        f64::NAN,
                        f64::INFINITY,
                        f64::NEG_INFINITY,
                        1e308,
                    ])
                    .to_bits()
                } else {
                    self.unsigned(false)
                };
                put_key(out, number, 1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Type::Fixed32 | Type::Sfixed32 | Type::Float => {
                let v = if field.r#type() == Type::Float {
                    self.pick(&[0.0f32, 1.5, f32::NAN, f32::INFINITY]).to_bits()
                } else {
                    self.unsigned(true) as u32
                };
                put_key(out, number, 5);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// One case that broke the property.
#[derive(Debug)]
struct Finding {
    rpc: String,
    case: usize,
    what: String,
    request: Vec<u8>,
}

/// One call on its own connection: a request that makes the server drop a connection
/// shows up as that request's finding, not as other requests cancelled beside it.
async fn call(
    addr: std::net::SocketAddr,
    path: &str,
    body: Vec<u8>,
    bearer: Option<&str>,
) -> Result<Vec<u8>, Status> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("connect: {e}")))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let mut request = tonic::Request::new(body);
    request.set_timeout(Duration::from_secs(20));
    if let Some(token) = bearer {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not a header value"))?;
        request.metadata_mut().insert("authorization", value);
    }
    let path = PathAndQuery::from_str(path).map_err(|e| Status::internal(e.to_string()))?;
    grpc.unary(request, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// A stream's answer that carries its request's error (ReserveStream: the call stays OK, the
/// error rides in the answer) is judged as that error, as the unary call's status would be.
fn answered(path: &str, bytes: Vec<u8>) -> Result<Vec<u8>, Status> {
    use holdfast_proto::inventory::v1::ReserveStreamResponse;
    use holdfast_proto::inventory::v1::reserve_stream_response::Outcome;
    if !path.ends_with(".InventoryService/ReserveStream") {
        return Ok(bytes);
    }
    let answer = ReserveStreamResponse::decode(bytes.as_slice())
        .map_err(|e| Status::data_loss(format!("an unreadable answer: {e}")))?;
    match answer.outcome {
        Some(Outcome::Error(error)) => Err(Status::new(Code::from(error.code), error.message)),
        Some(Outcome::Reply(_)) => Ok(bytes),
        None => Err(Status::data_loss("an answer without an outcome")),
    }
}

/// Some state, so plausible values reach past validation: a product, stock, a warehouse.
async fn seed_state(mesh: &DevMesh) {
    use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
    use holdfast_proto::catalog::v1::{Product, UpsertProductRequest};
    use holdfast_proto::common::v1::Money;
    use holdfast_proto::inventory::v1::SetStockRequest;
    let channel = mesh.channel().await.expect("connect");
    let mut catalog = CatalogServiceClient::new(channel.clone());
    let mut inventory = InventoryServiceClient::new(channel);
    for sku in ["SKU-1", "SKU-2", "MUG"] {
        catalog
            .upsert_product(UpsertProductRequest {
                product: Some(Product {
                    sku: sku.into(),
                    title: "Fuzz product".into(),
                    price: Some(Money {
                        amount_minor: 1299,
                        currency: "EUR".into(),
                    }),
                    category: "kitchen".into(),
                    active: true,
                    ..Default::default()
                }),
                expected_version: 0,
            })
            .await
            .expect("seed product");
        inventory
            .set_stock(SetStockRequest {
                sku: sku.into(),
                on_hand: 1_000,
                buckets: 0,
            })
            .await
            .expect("seed stock");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_random_and_extreme_requests_without_failing() {
    let panics: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorded = Arc::clone(&panics);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(info.to_string());
        previous(info);
    }));

    let cases: usize = env_or("FUZZ_RPC_CASES", 500);
    let seed: u64 = env_or("FUZZ_RPC_SEED", 0x5eed_f00d);
    let budget = Duration::from_secs(env_or("FUZZ_RPC_SECONDS", 75));
    let schema = Schema::load();
    assert!(
        schema.rpcs.len() >= 40,
        "every service's RPCs: {:?}",
        schema.rpcs.len()
    );

    let mesh = DevMesh::start().await.expect("mesh");
    seed_state(&mesh).await;
    let addr = mesh.server.addr();
    // An operator's token per RPC (admin for admin rows, service otherwise), so every case
    // reaches the handler: refusals are tests/auth.rs's business.
    let operator = mesh.tokens().operator(&holdfast::authz_tables());

    // Round-robin: case 0 of every RPC, then case 1 of every RPC, ...; case 0 is the empty
    // message. Each case has its own RNG stream, so one case reproduces alone.
    let mut work = Vec::new();
    for case in 0..cases {
        for (index, rpc) in schema.rpcs.iter().enumerate() {
            let mut generator = Generator {
                schema: &schema,
                rng: TestRng::from_seed(
                    RngAlgorithm::ChaCha,
                    &[
                        seed.to_le_bytes(),
                        (case as u64).to_le_bytes(),
                        (index as u64).to_le_bytes(),
                        [0; 8],
                    ]
                    .concat(),
                ),
                hostile_text: false,
                calm: case % 2 == 1,
            };
            let body = if case == 0 {
                Vec::new()
            } else {
                generator.message(&rpc.input, 0)
            };
            work.push((rpc.path.clone(), case, body, generator.hostile_text));
        }
    }

    let started = Instant::now();
    let findings: Mutex<Vec<Finding>> = Mutex::default();
    let counts: Mutex<BTreeMap<String, BTreeMap<String, usize>>> = Mutex::default();
    futures::stream::iter(work)
        .take_while(|_| std::future::ready(started.elapsed() < budget))
        .for_each_concurrent(IN_FLIGHT, |(path, case, body, hostile_text)| {
            let (findings, counts) = (&findings, &counts);
            let token = operator(&path);
            async move {
                let request = body.clone();
                let answer =
                    tokio::time::timeout(Duration::from_secs(30), call(addr, &path, body, token.as_deref()))
                        .await
                        .map(|answer| answer.and_then(|bytes| answered(&path, bytes)));
                let code = match &answer {
                    Ok(Ok(_)) => Code::Ok,
                    Ok(Err(status)) => status.code(),
                    Err(_) => Code::DeadlineExceeded,
                };
                let what = match &answer {
                    Err(_) => Some("no answer within 30 s".to_string()),
                    Ok(Err(status)) if FORBIDDEN.contains(&status.code()) => {
                        Some(format!("{:?}: {}", status.code(), status.message()))
                    }
                    Ok(Ok(_)) if hostile_text => {
                        Some("OK for a control character in an identifier field".to_string())
                    }
                    _ => None,
                };
                counts
                    .lock()
                    .expect("counts")
                    .entry(path.clone())
                    .or_default()
                    .entry(format!("{code:?}"))
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                if let Some(what) = what {
                    findings.lock().expect("findings").push(Finding {
                        rpc: path,
                        case,
                        what,
                        request,
                    });
                }
            }
        })
        .await;
    let elapsed = started.elapsed();

    // The server still answers after everything it was fed.
    let health = call(addr, "/grpc.health.v1.Health/Check", Vec::new(), None).await;
    assert!(health.is_ok(), "server stopped answering: {health:?}");

    let counts = counts.into_inner().expect("counts");
    let total: usize = counts.values().flat_map(|c| c.values()).sum();
    println!(
        "fuzz_rpcs: seed {seed:#x}, {total} requests over {} RPCs in {elapsed:.1?}",
        counts.len()
    );
    for (rpc, codes) in &counts {
        let n: usize = codes.values().sum();
        println!("  {rpc}: {n} cases {codes:?}");
    }
    let findings = findings.into_inner().expect("findings");
    let (known, new): (Vec<_>, Vec<_>) = findings
        .iter()
        .partition(|f| KNOWN_FAILURES.iter().any(|k| f.rpc.ends_with(k)));
    for f in &findings {
        let hex: String = f.request.iter().take(160).map(|b| format!("{b:02x}")).collect();
        println!(
            "  finding: {} case {} ({} request bytes): {}\n    request: {hex}",
            f.rpc,
            f.case,
            f.request.len(),
            f.what
        );
    }
    println!("fuzz_rpcs: {} findings, {} known", findings.len(), known.len());
    let panics = panics.lock().expect("panics").clone();
    assert!(panics.is_empty(), "panics while serving: {panics:#?}");
    assert!(new.is_empty(), "{} findings: {new:#?}", new.len());
    assert_eq!(
        counts.len(),
        schema.rpcs.len(),
        "every RPC was called at least once"
    );
}

#[tokio::test]
async fn a_request_with_500_bad_lines_gets_invalid_argument_with_readable_details() {
    let mesh = DevMesh::start().await.expect("mesh");
    let mut inventory = InventoryServiceClient::new(mesh.channel().await.expect("connect"));
    let lines = (0..500)
        .map(|_| ReserveLine {
            sku: String::new(),
            quantity: 0,
        })
        .collect();
    let status = inventory
        .reserve(ReserveRequest {
            reservation_id: "bad-lines".into(),
            lines,
            ttl_seconds: 60,
        })
        .await
        .expect_err("500 bad lines are refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad = status.get_details_bad_request().expect("BadRequest details");
    assert!(
        bad.field_violations.len() <= holdfast_platform::status::MAX_VIOLATIONS + 1,
        "{} violations",
        bad.field_violations.len()
    );
    let last = bad.field_violations.last().expect("violations");
    assert!(last.description.contains("more"), "{last:?}");
}
