//! Entry point of the projections worker: `projections` runs the workers;
//! `projections rebuild <projection|all>` rebuilds from the start of the log and swaps the new
//! tables in, while running workers keep serving the old ones.
#![forbid(unsafe_code)]

use std::io::IsTerminal;

use anyhow::Context;
use service_kit::service::Process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = service_kit::env::Env::from_process();
    let settings = projections::Settings::from_env(&env).context("reading settings")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {
            let process = Process::start("projections", &settings.basics, None);
            process
                .serve(
                    &settings.basics,
                    || projections::App::build(&settings),
                    projections::App::run,
                )
                .await
        }
        ["rebuild", which] => rebuild(settings, which).await,
        _ => {
            eprintln!(
                "usage: projections [rebuild <{}|all>]",
                projections::NAMES.join("|")
            );
            std::process::exit(2);
        }
    }
}

async fn rebuild(settings: projections::Settings, which: &str) -> anyhow::Result<()> {
    // No shutdown signal here: an interrupted rebuild stops at once, and its tables are never
    // swapped in.
    let _telemetry = service_kit::telemetry::init("projections", &settings.basics.log);
    service_kit::metrics::install("projections");
    let terminal = std::io::stderr().is_terminal();
    // The projections rebuild side by side: a terminal shows each one's latest progress on
    // one line; a log gets a line per report.
    let mut latest = std::collections::BTreeMap::new();
    let reports = projections::app::rebuild(&settings, which, |name, progress| {
        if terminal {
            latest.insert(name.to_owned(), progress.to_string());
            let line: Vec<String> = latest.iter().map(|(n, p)| format!("{n}: {p}")).collect();
            eprint!("\r\x1b[2Krebuilding {}", line.join(" | "));
        } else {
            eprintln!("rebuilding {name}: {progress}");
        }
    })
    .await?;
    if terminal {
        eprintln!();
    }
    for r in reports {
        println!(
            "rebuilt {} from {} events in {:.1}s; the new tables are live",
            r.projection,
            r.events,
            r.elapsed.as_secs_f64()
        );
    }
    Ok(())
}
