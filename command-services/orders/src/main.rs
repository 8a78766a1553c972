//! Entry point of the orders service.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    command_kit::app::main::<orders::OrdersSpec>().await
}
