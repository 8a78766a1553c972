//! `cargo xtask docs`: builds the book under `docs/` with mdBook, and the link check that the
//! suite runs over every Markdown file of the repository.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::layout::{self, Layout};

/// The mdBook release the book is built with, installed from crates.io on first use.
const MDBOOK_VERSION: &str = "0.5.4";

/// Installs mdBook if needed, checks every link, builds the book; prints where it is.
pub fn build() -> anyhow::Result<()> {
    let layout = Layout::dev()?;
    let problems = broken_links(&layout.workspace);
    if !problems.is_empty() {
        anyhow::bail!("broken links:\n  {}", problems.join("\n  "));
    }
    let mdbook = install(&layout)?;
    let status = std::process::Command::new(&mdbook)
        .args(["build", "docs"])
        .current_dir(&layout.workspace)
        .status()
        .with_context(|| format!("running {}", mdbook.display()))?;
    anyhow::ensure!(status.success(), "mdbook build failed");
    println!(
        "the book: {}",
        layout.workspace.join("target/book/index.html").display()
    );
    Ok(())
}

/// `mdbook` under `.state/tools/mdbook`, built by `cargo install` the first time.
fn install(layout: &Layout) -> anyhow::Result<PathBuf> {
    let root = layout.tools().join("mdbook");
    let binary = root.join("bin/mdbook");
    let version = std::process::Command::new(&binary)
        .arg("--version")
        .output();
    if matches!(&version, Ok(out) if String::from_utf8_lossy(&out.stdout).contains(MDBOOK_VERSION))
    {
        return Ok(binary);
    }
    println!("xtask: installing mdbook {MDBOOK_VERSION} (once; a few minutes)");
    let status = layout::cargo()
        .args(["install", "mdbook", "--locked", "--version", MDBOOK_VERSION])
        .arg("--root")
        .arg(&root)
        .status()
        .context("running cargo install mdbook")?;
    anyhow::ensure!(status.success(), "cargo install mdbook failed");
    Ok(binary)
}

/// Every Markdown file a reader of the repository meets: the root's, the book's and
/// deploy's, never what tools put under `target/`, `.state/` or `node_modules/`.
pub fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for dir in ["docs", "deploy"] {
        walk(&root.join(dir), &mut files);
    }
    files.retain(|f| f.is_file());
    files.sort();
    files
}

fn walk(dir: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "node_modules" {
            walk(&path, into);
        } else if path.extension().is_some_and(|e| e == "md") {
            into.push(path);
        }
    }
}

/// Every relative link (and `#anchor`) of the repository's Markdown that leads nowhere, every
/// book page the summary leaves out, and every link out of the repository; empty when all
/// is well.
pub fn broken_links(root: &Path) -> Vec<String> {
    // Once: each link's real path is compared with it.
    let root = &root.canonicalize().unwrap_or(root.to_path_buf());
    let mut problems = Vec::new();
    for file in markdown_files(root) {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        let shown = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for target in links(&text) {
            if let Some(problem) = check(root, &file, &text, &target) {
                problems.push(format!("{shown}: {target}: {problem}"));
            }
        }
    }
    problems.extend(unlisted_pages(root));
    problems
}

/// What is wrong with one link of `file`, if anything.
fn check(root: &Path, file: &Path, text: &str, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let (resolved, body) = if path.is_empty() {
        (file.to_path_buf(), Some(text.to_owned()))
    } else {
        let resolved = file.parent().unwrap_or(root).join(path);
        if !resolved.exists() {
            return Some("no such file".into());
        }
        let body = std::fs::read_to_string(&resolved).ok();
        (resolved, body)
    };
    // The repository stands alone: no link climbs out of it.
    match resolved.canonicalize() {
        Ok(real) if !real.starts_with(root) => return Some("outside the repository".into()),
        _ => {}
    }
    let anchor = anchor?;
    let body = body?;
    if resolved.extension().is_some_and(|e| e == "md") && !anchors(&body).contains(&anchor.into()) {
        return Some(format!("no heading #{anchor}"));
    }
    None
}

/// The targets of the inline links `[text](target)` outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            if !target.is_empty() {
                found.push(target.to_owned());
            }
            rest = &rest[end..];
        }
    }
    found
}

fn without_code_spans(line: &str) -> String {
    line.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The anchors GitHub and mdBook give the headings of `text`.
fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut seen: Vec<String> = Vec::new();
    let mut anchors = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#').trim();
        let slug: String = heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        // A repeated heading gets `-1`, `-2`, … as on GitHub.
        let repeats = seen.iter().filter(|s| **s == slug).count();
        seen.push(slug.clone());
        anchors.push(if repeats == 0 {
            slug
        } else {
            format!("{slug}-{repeats}")
        });
    }
    anchors
}

/// Book pages that `docs/SUMMARY.md` does not list: mdBook would not build them.
fn unlisted_pages(root: &Path) -> Vec<String> {
    let docs = root.join("docs");
    let Ok(summary) = std::fs::read_to_string(docs.join("SUMMARY.md")) else {
        return vec!["docs/SUMMARY.md: missing".into()];
    };
    let listed = links(&summary);
    let mut pages = Vec::new();
    walk(&docs, &mut pages);
    pages
        .iter()
        .filter_map(|p| p.strip_prefix(&docs).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p != "SUMMARY.md" && !listed.contains(p))
        .map(|p| format!("docs/{p}: not in docs/SUMMARY.md"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn every_link_of_the_repository_leads_somewhere() {
        let problems = broken_links(&root().canonicalize().unwrap());
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn links_outside_code_are_found_and_anchors_slugged_as_github_does() {
        let text = "see [a](a.md#x) and `[b](b.md)`\n```\n[c](c.md)\n```\n# The `domain/` crate\n# Q&A\n# Q&A\n";
        assert_eq!(links(text), vec!["a.md#x"]);
        assert_eq!(anchors(text), vec!["the-domain-crate", "qa", "qa-1"]);
    }

    #[test]
    fn a_missing_file_an_unknown_heading_and_a_way_out_are_reported() {
        let dir = std::env::temp_dir().join(format!("xtask-links-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("docs")).unwrap();
        std::fs::write(
            dir.join("README.md"),
            "[ok](docs/SUMMARY.md) [gone](nope.md) [bad](docs/SUMMARY.md#nowhere) [out](../x.md)\n# Top\n[self](#top)\n",
        )
        .unwrap();
        std::fs::write(dir.join("docs/SUMMARY.md"), "# Summary\n").unwrap();
        std::fs::write(dir.join("docs/orphan.md"), "# Orphan\n").unwrap();
        std::fs::write(std::env::temp_dir().join("x.md"), "").unwrap();
        let problems = broken_links(&dir.canonicalize().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].contains("nope.md: no such file"));
        assert!(problems[1].contains("no heading #nowhere"));
        assert!(problems[2].contains("outside the repository"));
        assert!(problems[3].contains("docs/orphan.md: not in docs/SUMMARY.md"));
    }
}
