//! `holdfast reconcile`: asks a region's inventory for the cross-region reconciliation,
//! prints a table and the JSON document, and exits non-zero unless every SKU is consistent.

use clap::Args;
use holdfast_inventory::regions::report;
use holdfast_proto::inventory::v1::GetReconciliationRequest;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;

/// Exit status when a SKU drifted or could not be confirmed.
pub const EXIT_DRIFT: i32 = 2;

/// Where an admin command connects, and with which token.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The inventory to ask.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "HOLDFAST_TARGET")]
    pub target: String,
    /// An admin bearer token; unset: one is minted with the dev key in --data-dir.
    #[arg(long, env = "HOLDFAST_TOKEN")]
    pub token: Option<String>,
    /// The subject of a minted token (audit records name it).
    #[arg(long, env = "HOLDFAST_OPERATOR", default_value = "admin")]
    pub operator: String,
    /// The `holdfast dev` data dir whose key signs the token.
    #[arg(long, env = "HOLDFAST_DATA_DIR", default_value = "./data", value_name = "DIR")]
    pub data_dir: std::path::PathBuf,
}

/// An inventory client whose every call carries the admin token of `args`.
pub async fn admin_client(
    args: &AdminArgs,
) -> anyhow::Result<
    InventoryServiceClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            impl tonic::service::Interceptor + use<>,
        >,
    >,
> {
    let token = match &args.token {
        Some(token) => token.clone(),
        None => {
            let signer = holdfast_platform::auth::DevKey::load(&args.data_dir)?.signer();
            signer.mint(
                holdfast_platform::auth::Role::Admin,
                Some(&args.operator),
                None,
                std::time::Duration::from_secs(300),
            )?
        }
    };
    let channel = tonic::transport::Endpoint::from_shared(args.target.clone())?
        .connect()
        .await?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    Ok(InventoryServiceClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        },
    ))
}

/// `holdfast reconcile` flags.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// SKUs to reconcile (repeat); none: every placed SKU.
    #[arg(long = "sku")]
    pub skus: Vec<String>,
    /// Target, token and the dev data dir.
    #[command(flatten)]
    pub admin: AdminArgs,
}

impl ReconcileArgs {
    /// Runs it: `Ok(true)` when consistent.
    pub async fn run(&self) -> anyhow::Result<bool> {
        let mut client = admin_client(&self.admin).await?;
        let answer = client
            .get_reconciliation(GetReconciliationRequest {
                skus: self.skus.clone(),
            })
            .await?
            .into_inner();
        #[allow(clippy::print_stdout)] // the report is the output
        {
            print!("{}", report::table(&answer));
            println!("{}", report::json(&answer));
        }
        Ok(answer.consistent)
    }
}
