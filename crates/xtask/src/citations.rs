//! Docs that cannot drift: every file path, Rust symbol and relative link that `README.md` and
//! `docs/*.md` cite in backticks or links must exist in the repository. Run by `cargo xtask test`
//! (the unit test below) and by `cargo xtask docs-check`.
//!
//! What counts as a citation, in backticks: a path (it has a `/` or ends in a known extension;
//! `{a,b}` expands, a bare file name may live anywhere, a path may be short for one under
//! `crates/` or `workers/`), or a Rust path (`a::b::c`: its last name must be defined in some `.rs`
//! file: `fn`, `struct`, `enum`, `trait`, `type`, `const`, `static` or `mod` for a lowercase name,
//! any use of a capitalised one, which may be an enum variant). Commands (anything with a space),
//! routes (`/…`), placeholders (`<…>`), `std::`, what runs create (`target/`, `.wrangler/`) and
//! record paths (`app.bsky.actor.profile/self`) are not citations. Fenced code blocks are skipped.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};

/// Extensions that make a backticked word a file name.
const EXTENSIONS: &[&str] = &[
    ".rs", ".md", ".toml", ".sql", ".js", ".mjs", ".json", ".jsonl", ".html", ".css", ".sh",
];

/// What the repository holds, for checking citations against.
pub struct Repository {
    /// Every tracked file, relative to the root, and every folder above one (with a trailing `/`).
    paths: BTreeSet<String>,
    /// Every `.rs` file's text, joined.
    rust: String,
}

impl Repository {
    /// The files `git ls-files` lists under `root` (what a clean clone has).
    pub fn read(root: &Path) -> Result<Repository> {
        let listed =
            crate::process::output(std::process::Command::new("git").arg("-C").arg(root).args([
                "ls-files",
                "--cached",
                "--others",
                "--exclude-standard",
            ]))?;
        let mut paths = BTreeSet::new();
        let mut rust = String::new();
        for file in listed.lines().filter(|l| !l.is_empty()) {
            if !root.join(file).exists() {
                continue; // deleted in the working tree, not yet committed
            }
            let mut folder = file;
            while let Some((parent, _)) = folder.rsplit_once('/') {
                paths.insert(format!("{parent}/"));
                folder = parent;
            }
            if file.ends_with(".rs") {
                let text = std::fs::read_to_string(root.join(file))
                    .with_context(|| format!("reading {file}"))?;
                rust.push_str(&text);
                rust.push('\n');
            }
            paths.insert(file.to_owned());
        }
        Ok(Repository { paths, rust })
    }

    /// Whether `cited` (a path as a doc writes it) names something in the repository.
    fn has_path(&self, cited: &str) -> bool {
        let cited = cited.trim_start_matches("./");
        let forms = [
            cited.to_owned(),
            format!("crates/{cited}"),
            format!("workers/{cited}"),
            format!("{cited}/"),
        ];
        if forms.iter().any(|f| self.paths.contains(f)) {
            return true;
        }
        // A bare or partial path: some file or folder ends with it.
        let tail = format!("/{}", cited.trim_end_matches('/'));
        self.paths
            .iter()
            .any(|p| p.trim_end_matches('/').ends_with(&tail))
    }

    /// Whether the Rust name `name` is defined (or, capitalised, used) somewhere.
    fn has_symbol(&self, name: &str) -> bool {
        let capitalised = name.starts_with(|c: char| c.is_ascii_uppercase());
        let mut from = 0;
        while let Some(at) = self.rust[from..].find(name) {
            let start = from + at;
            let end = start + name.len();
            from = end;
            let before = self.rust[..start].chars().next_back();
            let after = self.rust[end..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            if word(before) || word(after) {
                continue;
            }
            if capitalised {
                return true;
            }
            let line_start = self.rust[..start].rfind('\n').map_or(0, |i| i + 1);
            let prefix = self.rust[line_start..start].trim_end();
            const KEYWORDS: &[&str] = &[
                "fn", "struct", "enum", "trait", "type", "const", "static", "mod",
            ];
            if KEYWORDS.iter().any(|k| prefix.ends_with(k)) {
                return true;
            }
        }
        false
    }
}

/// Every citation in `markdown` that names nothing in `repo`, as `` `cited`: why ``.
pub fn problems_in(markdown: &str, doc_dir: &Path, root: &Path, repo: &Repository) -> Vec<String> {
    let mut problems = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for span in backticked(line) {
            for cited in expand(span) {
                if let Some(why) = check_span(&cited, repo) {
                    problems.push(format!("`{cited}`: {why}"));
                }
            }
        }
        for target in links(line) {
            let path = target.split('#').next().unwrap_or("");
            if path.is_empty() {
                continue;
            }
            let resolved = doc_dir.join(path);
            let inside = resolved
                .canonicalize()
                .ok()
                .and_then(|p| p.strip_prefix(root).ok().map(Path::to_path_buf));
            let known = inside.is_some_and(|p| {
                let p = p.to_string_lossy();
                p.is_empty() || repo.has_path(&p)
            });
            if !known {
                problems.push(format!("link ({target}): no such file"));
            }
        }
    }
    problems
}

/// Why a backticked `cited` names nothing, or `None` if it does (or is no citation).
fn check_span(cited: &str, repo: &Repository) -> Option<&'static str> {
    if cited.contains(char::is_whitespace)
        || cited.starts_with('/')
        || cited.contains(['<', '>', '*', '?', '='])
        || cited.starts_with(".wrangler/")
        || cited.starts_with("target/")
        || is_nsid_path(cited)
        || cited.contains("node_modules")
        || cited.starts_with("std::")
    {
        return None;
    }
    if cited.contains("::") {
        // `lib.rs::websocket` names a file and a function in it.
        let mut segments: Vec<&str> = cited.split("::").collect();
        if segments[0].ends_with(".rs") && !repo.has_path(segments.remove(0)) {
            return Some("no such file");
        }
        let last = segments.last()?.split('(').next().unwrap_or("");
        if last.is_empty() || !last.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        return (!repo.has_symbol(last)).then_some("no such Rust item");
    }
    let path_like = cited.contains('/') || EXTENSIONS.iter().any(|e| cited.ends_with(e));
    let plain = cited
        .chars()
        .all(|c| c.is_alphanumeric() || "/._-".contains(c));
    if path_like && plain && !repo.has_path(cited) {
        return Some("no such file");
    }
    None
}

/// `app.bsky.actor.profile/self`: a collection and a record key, not a file.
fn is_nsid_path(cited: &str) -> bool {
    let first = cited.split('/').next().unwrap_or("");
    first.split('.').count() >= 3
        && first
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The contents of each `` `…` `` span on a line.
fn backticked(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// `a/{b,c}.rs` -> `a/b.rs`, `a/c.rs`; `x::{y, z}` -> `x::y`, `x::z`; anything else as it is.
fn expand(span: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (span.find('{'), span.find('}')) else {
        return vec![span.to_owned()];
    };
    if close < open {
        return vec![span.to_owned()];
    }
    let (head, tail) = (&span[..open], &span[close + 1..]);
    span[open + 1..close]
        .split(',')
        .map(|part| format!("{head}{}{tail}", part.trim()))
        .collect()
}

/// The targets of relative markdown links on a line (`[text](target)`, not `http…` or `#…`).
fn links(line: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        if !target.contains("://") && !target.starts_with('#') && !target.starts_with("mailto:") {
            found.push(target);
        }
        rest = &rest[end..];
    }
    found
}

/// Every broken citation in `README.md` and `docs/*.md` (not `docs/research/`: notes of what was
/// read elsewhere, which cite other projects' files), as `file: problem`.
pub fn problems(root: &Path) -> Result<Vec<String>> {
    let repo = Repository::read(root)?;
    let mut docs = vec![root.join("README.md")];
    let mut listed: Vec<_> = std::fs::read_dir(root.join("docs"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    listed.sort();
    docs.extend(listed);
    let mut all = Vec::new();
    for doc in docs {
        let text = std::fs::read_to_string(&doc).with_context(|| format!("reading {doc:?}"))?;
        let dir = doc.parent().unwrap_or(root);
        let name = doc.strip_prefix(root).unwrap_or(&doc).display().to_string();
        all.extend(
            problems_in(&text, dir, root, &repo)
                .into_iter()
                .map(|p| format!("{name}: {p}")),
        );
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> Repository {
        Repository::read(&crate::paths::root()).expect("the repository")
    }

    #[test]
    fn the_docs_cite_only_what_exists() {
        let root = crate::paths::root();
        let problems = problems(&root).unwrap();
        assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    }

    #[test]
    fn a_citation_of_nothing_is_caught() {
        let root = crate::paths::root();
        let repo = repo();
        let doc = "See `crates/domain/src/sql.rs`, `sql::count_write`, `domain::write::CreateAnswer`, \
                   `edge/src/{lib,write}.rs`, [design](design.md) and `cargo xtask test` or `/health`.\n\
                   ```\n`crates/nowhere.rs` in a fenced block is not read\n```\n\
                   But `crates/domain/src/nowhere.rs`, `sql::count_nothing`, `edge/src/{lib,gone}.rs`, \
                   `lib.rs::no_such_fn` and [gone](gone.md) are wrong.";
        let problems = problems_in(doc, &root.join("docs"), &root, &repo);
        assert_eq!(
            problems,
            [
                "`crates/domain/src/nowhere.rs`: no such file",
                "`sql::count_nothing`: no such Rust item",
                "`edge/src/gone.rs`: no such file",
                "`lib.rs::no_such_fn`: no such Rust item",
                "link (gone.md): no such file",
            ]
        );
    }

    #[test]
    fn lowercase_names_must_be_defined_capitalised_ones_only_used() {
        let repo = repo();
        assert!(repo.has_symbol("count_write"));
        assert!(!repo.has_symbol("count_writ"), "a whole word");
        assert!(repo.has_symbol("CaughtUp"), "an enum variant");
        assert!(repo.has_path("attacks.rs"), "a bare file name");
        assert!(
            repo.has_path("edge/src/lib.rs"),
            "short for workers/edge/src/lib.rs"
        );
        assert!(repo.has_path("migrations/"));
    }
}
