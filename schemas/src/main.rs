//! `cargo run -p schemas` rewrites the schema files from the code (never a released event
//! schema); `-- --check` only compares, and fails on any difference.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = schemas::dir();
    if std::env::args().any(|a| a == "--check") {
        let problems = schemas::check(&dir);
        for problem in &problems {
            eprintln!("{problem}");
        }
        if problems.is_empty() {
            println!("every schema file matches the code");
            return ExitCode::SUCCESS;
        }
        return ExitCode::FAILURE;
    }
    match schemas::write(&dir) {
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
