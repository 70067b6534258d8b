//! The harness must catch a broken system: `flash-sale` against a test-only InventoryService
//! whose stock check is off by one (it grants a unit while `held <= on_hand`, not `<`) exits
//! non-zero and names the oversell; against the same double with the check right, it passes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use holdfast_proto::inventory::v1::inventory_service_server::{InventoryService, InventoryServiceServer};
use holdfast_proto::inventory::v1::{
    GetAvailabilityRequest, GetAvailabilityResponse, ReservationStatus, ReserveRequest, ReserveResponse,
    SetStockRequest, Shortage, StockLevel,
};
use tonic::{Request, Response, Status};

/// One SKU's stock and its holds (id -> units, expiry); holds lapse on this process's clock.
#[derive(Default)]
struct Shelf {
    on_hand: i64,
    holds: HashMap<String, (i64, Instant)>,
}

impl Shelf {
    fn held(&self) -> i64 {
        let now = Instant::now();
        self.holds
            .values()
            .filter(|(_, until)| *until > now)
            .map(|(q, _)| q)
            .sum()
    }

    fn level(&self, sku: &str) -> StockLevel {
        let reserved = self.held();
        StockLevel {
            sku: sku.to_string(),
            on_hand: self.on_hand,
            reserved,
            available: self.on_hand - reserved,
            sold: 0,
            buckets: 1,
        }
    }
}

/// An in-memory inventory; `oversell_by` units more than exist are granted.
struct DoubleInventory {
    shelves: Mutex<HashMap<String, Shelf>>,
    oversell_by: i64,
}

#[tonic::async_trait]
impl InventoryService for DoubleInventory {
    async fn set_stock(&self, request: Request<SetStockRequest>) -> Result<Response<StockLevel>, Status> {
        let request = request.into_inner();
        let mut shelves = self.shelves.lock().unwrap();
        let shelf = shelves.entry(request.sku.clone()).or_default();
        shelf.on_hand = request.on_hand;
        Ok(Response::new(shelf.level(&request.sku)))
    }

    async fn get_availability(
        &self,
        request: Request<GetAvailabilityRequest>,
    ) -> Result<Response<GetAvailabilityResponse>, Status> {
        let shelves = self.shelves.lock().unwrap();
        let levels = request
            .into_inner()
            .skus
            .iter()
            .map(|sku| {
                shelves
                    .get(sku)
                    .map_or_else(|| Shelf::default().level(sku), |s| s.level(sku))
            })
            .collect();
        Ok(Response::new(GetAvailabilityResponse { levels }))
    }

    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<ReserveResponse>, Status> {
        let request = request.into_inner();
        let line = request
            .lines
            .first()
            .ok_or_else(|| Status::invalid_argument("no lines"))?;
        let mut shelves = self.shelves.lock().unwrap();
        let shelf = shelves.entry(line.sku.clone()).or_default();
        let granted = shelf.holds.contains_key(&request.reservation_id)
            || shelf.held() + line.quantity <= shelf.on_hand + self.oversell_by;
        if !granted {
            return Ok(Response::new(ReserveResponse {
                status: ReservationStatus::InsufficientStock as i32,
                shortages: vec![Shortage {
                    sku: line.sku.clone(),
                    requested: line.quantity,
                    available: shelf.on_hand - shelf.held(),
                }],
                expires_at_unix_ms: 0,
            }));
        }
        let ttl = Duration::from_secs(u64::from(request.ttl_seconds.max(1)));
        shelf
            .holds
            .entry(request.reservation_id)
            .or_insert((line.quantity, Instant::now() + ttl));
        Ok(Response::new(ReserveResponse {
            status: ReservationStatus::Reserved as i32,
            shortages: Vec::new(),
            expires_at_unix_ms: 1,
        }))
    }
}

/// Serves the double on 127.0.0.1:0 and runs `holdfast-load flash-sale` against it.
async fn flash_sale_against(oversell_by: i64) -> (Option<i32>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let double = DoubleInventory {
        shelves: Mutex::new(HashMap::new()),
        oversell_by,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(InventoryServiceServer::new(double))
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    let out = std::env::temp_dir().join(format!(
        "holdfast-load-broken-{}-{oversell_by}",
        std::process::id()
    ));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_holdfast-load"))
        .args(["flash-sale", "--target", &format!("http://{addr}")])
        .args(["--units", "50", "--buyers", "500", "--pay", "0", "--cancel", "0"])
        .args([
            "--rate",
            "2000",
            "--hold-ttl",
            "2s",
            "--settle-timeout",
            "10s",
            "--quiet",
        ])
        .arg("--json")
        .arg(out.join("flash-sale.json"))
        .output()
        .await
        .unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let json = std::fs::read_to_string(out.join("flash-sale.json")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&out);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        json.contains("\"checks\""),
        "no JSON result written\n{stdout}\n{stderr}"
    );
    (output.status.code(), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_names_the_oversell_of_a_broken_inventory() {
    let (code, stdout) = flash_sale_against(1).await;
    assert_eq!(code, Some(3), "expected the violation exit code\n{stdout}");
    assert!(
        stdout.contains("VIOLATION oversell: 51 units granted of 50 (OVERSOLD by 1)"),
        "the oversell is not named\n{stdout}"
    );
    assert!(stdout.contains("VIOLATION winners"), "{stdout}");
    assert!(stdout.contains("FAIL: flash-sale"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_passes_the_same_inventory_with_the_check_right() {
    let (code, stdout) = flash_sale_against(0).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("PASS oversell"), "{stdout}");
    assert!(stdout.contains("PASS winners"), "{stdout}");
}
