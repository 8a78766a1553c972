//! The system tests live in `tests/`; this library holds what several of them read: the
//! repository's own pages, whose commands they run as written.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// The workspace root, where a reader runs the pages' commands.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("system-tests is in the workspace")
        .to_owned()
}

/// The first ```sh block of the repository file `file` after the line `heading` (from the
/// top when `heading` is empty).
pub fn sh_block(file: &str, heading: &str) -> String {
    let path = workspace().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let section = if heading.is_empty() {
        text.as_str()
    } else {
        text.split(&format!("\n{heading}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("{file} has a {heading:?} section"))
    };
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + section[start..].find("\n```").expect("the block ends");
    section[start..end].to_owned()
}
