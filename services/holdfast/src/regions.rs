//! `holdfast regions move`: an operator moves a dead region's units of a global SKU to the
//! region it asks (MoveRegionUnits, docs/regions.md), and prints what was moved.

use clap::{Args, Subcommand};
use holdfast_inventory::regions::report;
use holdfast_proto::inventory::v1::MoveRegionUnitsRequest;

use crate::reconcile::{AdminArgs, admin_client};

/// `holdfast regions` subcommands.
#[derive(Debug, Args)]
pub struct RegionsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RegionsCommand,
}

/// Operator actions on a multi-region inventory.
#[derive(Debug, Subcommand)]
pub enum RegionsCommand {
    /// Move a dead (unreachable) region's units of a global SKU to the RECEIVING region
    /// (--target must serve --to): credited there now, debited at --from when it is back;
    /// the token's subject and --reason are published as the audit record.
    Move(MoveArgs),
}

/// `holdfast regions move` flags.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// The global SKU.
    #[arg(long)]
    pub sku: String,
    /// The dead region whose units move.
    #[arg(long)]
    pub from: String,
    /// The receiving region (the one --target serves).
    #[arg(long)]
    pub to: String,
    /// Units to move (at most what --from last held).
    #[arg(long)]
    pub units: i64,
    /// Why (an incident reference): required, kept in the audit record.
    #[arg(long)]
    pub reason: String,
    /// Idempotency id: running the command again with the same id moves nothing more.
    /// Unset: a new one (printed), so a retry after an unclear failure should pass it.
    #[arg(long)]
    pub move_id: Option<String>,
    /// Target, token and the dev data dir.
    #[command(flatten)]
    pub admin: AdminArgs,
}

impl RegionsArgs {
    /// Runs the subcommand.
    pub async fn run(&self) -> anyhow::Result<()> {
        match &self.command {
            RegionsCommand::Move(args) => args.run().await,
        }
    }
}

impl MoveArgs {
    /// Runs it; an error (INVALID_ARGUMENT, FAILED_PRECONDITION...) is returned as is.
    pub async fn run(&self) -> anyhow::Result<()> {
        let move_id = self
            .move_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let mut client = admin_client(&self.admin).await?;
        let answer = client
            .move_region_units(MoveRegionUnitsRequest {
                sku: self.sku.clone(),
                from_region: self.from.clone(),
                to_region: self.to.clone(),
                units: self.units,
                reason: self.reason.clone(),
                move_id: move_id.clone(),
            })
            .await
            .map_err(|status| {
                anyhow::anyhow!(
                    "move {move_id} refused: {:?}: {}",
                    status.code(),
                    status.message()
                )
            })?
            .into_inner();
        #[allow(clippy::print_stdout)] // the record is the output
        {
            println!("{}", report::moved(&answer));
        }
        Ok(())
    }
}
