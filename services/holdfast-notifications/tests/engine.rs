//! The notification engine on its real store (SQLite) and real notifiers: the JSON-lines
//! outbox file, and SMTP against a loopback aiosmtpd sink (PyPI `aiosmtpd`).

use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use holdfast_notifications::{
    ByChannel, Channel, CrashHook, Engine, EngineOptions, FileNotifier, Notification, NotificationStore,
    Notifier, ORDERS_TOPIC, SHIPMENTS_TOPIC, SendError, SmtpNotifier, SqliteNotifications, Status,
};
use holdfast_platform::events::Event;
use holdfast_proto::common::v1::Money;
use holdfast_proto::events::v1::{
    OrderCancelled, OrderConfirmed, OrderEvent, ReturnReceived, ShipmentDelivered, ShipmentEvent,
    ShipmentShipped, order_event, shipment_event,
};
use prost::Message;

fn event(topic: &str, id: &str, event_type: &str, payload: Vec<u8>) -> Event {
    Event {
        id: id.into(),
        topic: topic.into(),
        key: "o".into(),
        event_type: event_type.into(),
        region: "local".into(),
        payload,
        traceparent: None,
    }
}

fn confirmed(id: &str, order: &str, customer: &str) -> Event {
    let payload = OrderEvent {
        event_id: id.into(),
        event: Some(order_event::Event::Confirmed(OrderConfirmed {
            order_id: order.into(),
            customer_id: customer.into(),
            total: Some(Money {
                amount_minor: 12_345,
                currency: "USD".into(),
            }),
            ..OrderConfirmed::default()
        })),
    };
    event(ORDERS_TOPIC, id, "order.confirmed", payload.encode_to_vec())
}

/// The rest of an order's life after confirmation: shipped, delivered, return received,
/// and a cancellation (of the same order: the engine does not judge order state).
fn life(order: &str, customer: &str) -> Vec<Event> {
    let shipment = |id: &str, kind: &str, e: shipment_event::Event| {
        event(
            SHIPMENTS_TOPIC,
            id,
            kind,
            ShipmentEvent {
                event_id: id.into(),
                event: Some(e),
            }
            .encode_to_vec(),
        )
    };
    let orders = |id: &str, kind: &str, e: order_event::Event| {
        event(
            ORDERS_TOPIC,
            id,
            kind,
            OrderEvent {
                event_id: id.into(),
                event: Some(e),
            }
            .encode_to_vec(),
        )
    };
    vec![
        confirmed(&format!("{order}-1"), order, customer),
        shipment(
            &format!("{order}-2"),
            "shipment.shipped",
            shipment_event::Event::Shipped(ShipmentShipped {
                order_id: order.into(),
                carrier: "DHL".into(),
                tracking_number: "JJD-42".into(),
                ..ShipmentShipped::default()
            }),
        ),
        shipment(
            &format!("{order}-3"),
            "shipment.delivered",
            shipment_event::Event::Delivered(ShipmentDelivered {
                order_id: order.into(),
                ..ShipmentDelivered::default()
            }),
        ),
        orders(
            &format!("{order}-4"),
            "order.return_received",
            order_event::Event::ReturnReceived(ReturnReceived {
                order_id: order.into(),
                return_id: "r1".into(),
                inspection_passed: true,
                ..ReturnReceived::default()
            }),
        ),
        orders(
            &format!("{order}-5"),
            "order.cancelled",
            order_event::Event::Cancelled(OrderCancelled {
                order_id: order.into(),
                customer_id: customer.into(),
                reason: "customer asked".into(),
                ..OrderCancelled::default()
            }),
        ),
    ]
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn outbox(&self) -> std::path::PathBuf {
        self.dir.path().join("outbox.jsonl")
    }
    fn store(&self) -> Arc<dyn NotificationStore> {
        Arc::new(SqliteNotifications::open(&self.dir.path().join("n.db")).unwrap())
    }
    /// A fresh engine over the same files, as after a process restart.
    fn engine(&self, crash: CrashHook) -> (Engine, Arc<dyn NotificationStore>) {
        let store = self.store();
        let file: Arc<dyn Notifier> = Arc::new(FileNotifier::open(&self.outbox()).unwrap());
        let engine = Engine::new(
            Arc::clone(&store),
            Arc::new(ByChannel {
                email: Arc::clone(&file),
                push: file,
            }),
            EngineOptions {
                crash,
                backoff: Duration::from_millis(1),
                ..EngineOptions::default()
            },
        );
        (engine, store)
    }
}

/// (event id, channel) of every line in the outbox file, sorted.
fn lines(path: &Path) -> Vec<(String, Channel)> {
    let mut out: Vec<(String, Channel)> = FileNotifier::read_all(path)
        .unwrap()
        .into_iter()
        .map(|n: Notification| (n.event_id, n.channel))
        .collect();
    out.sort();
    out
}

fn every(events: &[Event]) -> Vec<(String, Channel)> {
    let mut want: Vec<(String, Channel)> = events
        .iter()
        .flat_map(|e| Channel::ALL.map(|c| (e.id.clone(), c)))
        .collect();
    want.sort();
    want
}

#[tokio::test]
async fn an_order_life_gives_one_notification_per_event_and_channel_even_redelivered() {
    let setup = Setup::new();
    let (engine, store) = setup.engine(CrashHook::Off);
    let events = life("o1", "alice");
    for e in &events {
        engine.handle(e).await.unwrap();
        // At-least-once delivery: every event comes twice.
        engine.handle(e).await.unwrap();
    }
    assert_eq!(lines(&setup.outbox()), every(&events));
    let listed = store.list("alice", None, 100).await.unwrap();
    assert_eq!(listed.len(), 10);
    assert!(listed.iter().all(|n| n.status == Status::Sent && n.attempts == 1));
    let shipped = listed
        .iter()
        .find(|n| n.event_type == "shipment.shipped" && n.channel == Channel::Email)
        .unwrap();
    assert!(
        shipped.body.contains("JJD-42") && shipped.body.contains("DHL"),
        "{}",
        shipped.body
    );
    assert_eq!(shipped.recipient, "alice@customers.holdfast.invalid");
    // Newest first, and paging by (created_at, id) covers everything once.
    let first = store.list("alice", None, 4).await.unwrap();
    let last = first.last().unwrap();
    let rest = store
        .list("alice", Some((last.created_at_ms, last.id.clone())), 100)
        .await
        .unwrap();
    assert_eq!(first.len() + rest.len(), 10);
    assert!(
        listed
            .windows(2)
            .all(|w| (w[0].created_at_ms, &w[0].id) > (w[1].created_at_ms, &w[1].id))
    );
}

#[tokio::test]
async fn killed_between_send_and_record_the_restart_sends_nothing_twice() {
    let setup = Setup::new();
    let events = life("o2", "bob");
    // Crash after each possible send in turn: the k-th send happens, its record does not.
    for k in 1..=3u32 {
        let setup_k = Setup::new();
        let (engine, _) = setup_k.engine(CrashHook::HaltAfter(k));
        let mut crashed = false;
        for e in &events {
            if engine.handle(e).await.is_err() {
                crashed = true;
                break;
            }
        }
        assert!(crashed, "the hook fires at send {k}");
        drop(engine);
        assert_eq!(
            lines(&setup_k.outbox()).len(),
            k as usize,
            "sent before the crash"
        );
        // Restart: re-send what is pending, then the bus redelivers everything.
        let (engine, store) = setup_k.engine(CrashHook::Off);
        engine.recover().await.unwrap();
        for e in &events {
            engine.handle(e).await.unwrap();
        }
        assert_eq!(lines(&setup_k.outbox()), every(&events), "crash after send {k}");
        let listed = store.list("bob", None, 100).await.unwrap();
        assert!(
            listed.iter().all(|n| n.status == Status::Sent),
            "crash after send {k}"
        );
    }
    drop(setup);
}

#[tokio::test]
async fn an_opted_out_channel_is_recorded_as_suppressed_and_not_sent() {
    let setup = Setup::new();
    let (engine, store) = setup.engine(CrashHook::Off);
    assert_eq!(
        store.set_opt_out("carol", Channel::Push, true).await.unwrap(),
        vec![Channel::Push]
    );
    let e = confirmed("c-1", "o3", "carol");
    engine.handle(&e).await.unwrap();
    assert_eq!(lines(&setup.outbox()), vec![("c-1".to_string(), Channel::Email)]);
    let listed = store.list("carol", None, 10).await.unwrap();
    let push = listed.iter().find(|n| n.channel == Channel::Push).unwrap();
    assert_eq!(push.status, Status::Suppressed);
    // Opting back in applies to later events.
    assert_eq!(
        store.set_opt_out("carol", Channel::Push, false).await.unwrap(),
        vec![]
    );
    engine.handle(&confirmed("c-2", "o4", "carol")).await.unwrap();
    assert_eq!(lines(&setup.outbox()).len(), 3);
}

/// The real outbox file behind a notifier whose next `sync` can be made to fail (a full
/// disk, say), logging the calls the engine makes.
struct FlakySync {
    file: FileNotifier,
    failing_syncs: AtomicU32,
    calls: Mutex<Vec<String>>,
}

impl FlakySync {
    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Notifier for FlakySync {
    fn send(&self, n: &Notification) -> BoxFuture<'_, Result<(), SendError>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("send {}", n.channel.as_str()));
        self.file.send(n)
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), SendError>> {
        self.calls.lock().unwrap().push("sync".into());
        let fail = self
            .failing_syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return futures::future::ready(Err(SendError::Transient("no space left on device".into())))
                .boxed();
        }
        self.file.sync()
    }
}

#[tokio::test]
async fn an_events_sends_are_synced_once_and_marked_sent_only_after_the_sync() {
    let setup = Setup::new();
    let store = setup.store();
    let notifier = Arc::new(FlakySync {
        file: FileNotifier::open(&setup.outbox()).unwrap(),
        failing_syncs: AtomicU32::new(1),
        calls: Mutex::new(Vec::new()),
    });
    let engine = Engine::new(
        Arc::clone(&store),
        Arc::clone(&notifier) as Arc<dyn Notifier>,
        EngineOptions::default(),
    );
    let e = confirmed("d-1", "o5", "dave");
    assert!(
        engine.handle(&e).await.is_err(),
        "an unsynced send fails the event"
    );
    assert_eq!(notifier.calls(), ["send email", "send push", "sync"]);
    let listed = store.list("dave", None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|n| n.status == Status::Pending),
        "nothing is marked sent before its send is durable: {listed:?}"
    );
    // The bus redelivers: both are sent again (the file drops the repeats), synced once,
    // and marked sent.
    engine.handle(&e).await.unwrap();
    assert_eq!(notifier.calls(), ["send email", "send push", "sync"]);
    assert_eq!(lines(&setup.outbox()), every(std::slice::from_ref(&e)));
    let listed = store.list("dave", None, 10).await.unwrap();
    assert!(listed.iter().all(|n| n.status == Status::Sent), "{listed:?}");
    // A redelivery after that sends and syncs nothing.
    engine.handle(&e).await.unwrap();
    assert_eq!(notifier.calls(), Vec::<String>::new());
}

/// A pending notification of `event_id` on `channel`, as the engine records it.
fn pending(event_id: &str, channel: Channel) -> Notification {
    Notification {
        id: format!("{event_id}/{}", channel.as_str()),
        customer_id: "erin".into(),
        order_id: "o6".into(),
        event_id: event_id.into(),
        event_type: "order.confirmed".into(),
        channel,
        status: Status::Pending,
        recipient: "erin@customers.holdfast.invalid".into(),
        subject: "Your order".into(),
        body: "Thank you.".into(),
        attempts: 1,
        last_error: String::new(),
        created_at_ms: 1,
        sent_at_ms: 0,
    }
}

#[tokio::test]
async fn the_outbox_file_has_a_line_on_send_and_syncs_waiting_for_one_fdatasync_share_it() {
    let setup = Setup::new();
    let file = FileNotifier::open(&setup.outbox()).unwrap();
    file.send(&pending("e-1", Channel::Email)).await.unwrap();
    file.send(&pending("e-1", Channel::Push)).await.unwrap();
    // A sent line is in the file (the page cache) before any sync.
    assert_eq!(lines(&setup.outbox()).len(), 2);
    assert_eq!(file.syncs(), 0);
    // Two events' syncs at once: the second waits for the first, which covered its lines.
    let (first, second) = tokio::join!(file.sync(), file.sync());
    first.unwrap();
    second.unwrap();
    assert_eq!(file.syncs(), 1, "the waiting sync rode on the running one");
    // Nothing written since (a repeat is not written): no fdatasync.
    file.send(&pending("e-1", Channel::Email)).await.unwrap();
    file.sync().await.unwrap();
    assert_eq!(file.syncs(), 1);
    // A new line: a sync of its own.
    file.send(&pending("e-2", Channel::Email)).await.unwrap();
    file.sync().await.unwrap();
    assert_eq!(file.syncs(), 2);
    assert_eq!(
        lines(&setup.outbox()),
        [
            ("e-1".to_string(), Channel::Email),
            ("e-1".to_string(), Channel::Push),
            ("e-2".to_string(), Channel::Email)
        ]
    );
    // A reopened notifier (a restart) still drops what the file holds.
    let reopened = FileNotifier::open(&setup.outbox()).unwrap();
    reopened.send(&pending("e-2", Channel::Email)).await.unwrap();
    reopened.sync().await.unwrap();
    assert_eq!(reopened.syncs(), 0);
    assert_eq!(lines(&setup.outbox()).len(), 3);
}

/// A running aiosmtpd sink on a free loopback port.
struct Sink {
    child: std::process::Child,
    port: u16,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Sink {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (make deps)");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        out.read_line(&mut ready).unwrap();
        assert_eq!(
            ready.trim(),
            "READY",
            "the SMTP sink did not start (is aiosmtpd installed?)"
        );
        Self { child, port, out }
    }

    fn next_message(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn smtp_delivers_to_a_real_sink_and_dead_letters_permanent_and_exhausted_failures() {
    let mut sink = Sink::start();
    let setup = Setup::new();
    let store = setup.store();
    let smtp: Arc<dyn Notifier> =
        Arc::new(SmtpNotifier::new("127.0.0.1", sink.port, "shop@holdfast.test").unwrap());
    let file: Arc<dyn Notifier> = Arc::new(FileNotifier::open(&setup.outbox()).unwrap());
    let engine = Engine::new(
        Arc::clone(&store),
        Arc::new(ByChannel {
            email: smtp,
            push: file,
        }),
        EngineOptions {
            backoff: Duration::from_millis(1),
            max_attempts: 3,
            email_domain: "example.test".into(),
            ..EngineOptions::default()
        },
    );
    engine.handle(&confirmed("s-1", "o5", "dave")).await.unwrap();
    let message = sink.next_message();
    assert_eq!(message["to"][0], "dave@example.test");
    let data = message["data"].as_str().unwrap();
    assert!(data.contains("Subject: Your order o5 is confirmed"), "{data}");
    assert!(data.contains("Message-ID: <s-1:email@holdfast>"), "{data}");
    assert!(data.contains("123.45 USD"), "{data}");

    // 550 for this recipient: permanent, dead-lettered after one attempt.
    engine.handle(&confirmed("s-2", "o6", "reject-me")).await.unwrap();
    let listed = store.list("reject-me", None, 10).await.unwrap();
    let email = listed.iter().find(|n| n.channel == Channel::Email).unwrap();
    assert_eq!(
        (email.status, email.attempts),
        (Status::DeadLettered, 1),
        "{}",
        email.last_error
    );
    assert!(email.last_error.contains("550"), "{}", email.last_error);

    // The sink gone: connection refused is transient, retried, then dead-lettered.
    drop(sink);
    engine.handle(&confirmed("s-3", "o7", "erin")).await.unwrap();
    let listed = store.list("erin", None, 10).await.unwrap();
    let email = listed.iter().find(|n| n.channel == Channel::Email).unwrap();
    assert_eq!((email.status, email.attempts), (Status::DeadLettered, 3));
    let push = listed.iter().find(|n| n.channel == Channel::Push).unwrap();
    assert_eq!(push.status, Status::Sent);
}

/// The service's own command-line section, as `holdfast` flattens it.
#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: holdfast_notifications::NotificationsArgs,
}

#[tokio::test]
async fn smtp_url_flag_sends_email_to_the_smtp_sink_and_without_it_to_the_outbox_file() {
    use clap::Parser;
    use holdfast_platform::events::{BusConfig, InProcessBus};

    let mut sink = Sink::start();
    let url = format!("smtp://127.0.0.1:{}?from=shop%40holdfast.test", sink.port);
    let with_flag = Cli::try_parse_from(["holdfast", "--smtp-url", url.as_str()]).expect("flag parses");
    let dir = tempfile::tempdir().unwrap();
    let running = holdfast_notifications::start(
        with_flag.args.options(dir.path()),
        &BusConfig::InProcess(InProcessBus::new()),
    )
    .await
    .unwrap();
    running
        .engine
        .handle(&confirmed("f-1", "o9", "frank"))
        .await
        .unwrap();
    let message = sink.next_message();
    assert_eq!(message["from"], "shop@holdfast.test");
    let data = message["data"].as_str().unwrap();
    assert!(data.contains("Subject: Your order o9 is confirmed"), "{data}");
    let outbox = dir.path().join("notifications-outbox.jsonl");
    assert_eq!(
        lines(&outbox),
        [("f-1".to_string(), Channel::Push)],
        "with --smtp-url only push goes to the outbox file"
    );
    drop(running);

    let without = Cli::try_parse_from(["holdfast"]).expect("no flag parses");
    assert!(without.args.smtp_url.is_none());
    let dir = tempfile::tempdir().unwrap();
    let running = holdfast_notifications::start(
        without.args.options(dir.path()),
        &BusConfig::InProcess(InProcessBus::new()),
    )
    .await
    .unwrap();
    running
        .engine
        .handle(&confirmed("f-2", "o10", "gina"))
        .await
        .unwrap();
    let outbox = dir.path().join("notifications-outbox.jsonl");
    assert_eq!(
        lines(&outbox),
        [
            ("f-2".to_string(), Channel::Email),
            ("f-2".to_string(), Channel::Push)
        ],
        "without --smtp-url email goes to the outbox file too"
    );

    let bad = Cli::try_parse_from(["holdfast", "--smtp-url", "smtp://u:hunter2@mx:0"])
        .err()
        .expect("a bad port is refused");
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
    let command = <Cli as clap::CommandFactory>::command();
    let flag = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some("smtp-url"))
        .expect("--smtp-url");
    assert!(
        flag.is_hide_env_values_set(),
        "--help must not print a password from HOLDFAST_SMTP_URL"
    );
}
