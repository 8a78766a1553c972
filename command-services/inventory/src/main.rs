//! Entry point of the inventory service.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    command_kit::app::main::<inventory::InventorySpec>().await
}
