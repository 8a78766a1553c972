//! `cargo run -p schemas` rewrites the schema files from the code; `-- --check` only compares.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let dir = schemas::dir();
    let mut stale = 0;
    for (path, schema) in schemas::generate() {
        let file = dir.join(&path);
        let text = schemas::render(&schema);
        if std::fs::read_to_string(&file).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        stale += 1;
        if check {
            eprintln!("stale: {path}");
        } else {
            std::fs::create_dir_all(file.parent().expect("files live in folders"))
                .expect("create the schema folder");
            std::fs::write(&file, text).expect("write the schema");
            println!("wrote {path}");
        }
    }
    if check && stale > 0 {
        eprintln!("{stale} schema file(s) differ from the code: run `cargo run -p schemas`");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
