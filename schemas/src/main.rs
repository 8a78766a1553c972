//! `cargo run -p schemas` rewrites the schema files from the code (never a released event
//! schema); `-- --check` only compares, and fails on any difference.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = schemas::dir();
    if std::env::args().any(|a| a == "--check") {
        let mut problems = schemas::check(&dir);
        problems.extend(schemas::page_problems(&schemas::operators_page()));
        for problem in &problems {
            eprintln!("{problem}");
        }
        if problems.is_empty() {
            println!("every schema file matches the code");
            return ExitCode::SUCCESS;
        }
        return ExitCode::FAILURE;
    }
    match schemas::write(&dir).and_then(|(mut written, refused)| {
        if schemas::write_page(&schemas::operators_page())? {
            written.push("../docs/operators.md".into());
        }
        Ok((written, refused))
    }) {
        Ok((written, refused)) => {
            for path in &written {
                println!("wrote {path}");
            }
            for path in &refused {
                eprintln!(
                    "refused: {path} is released and the code now makes a different one; \
                     keep the released shape and add a new version with an upcaster"
                );
            }
            if refused.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("cannot write the schema files: {e}");
            ExitCode::FAILURE
        }
    }
}
