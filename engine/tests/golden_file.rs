//! Golden files (STYLE.md #6): a format's text compared with its file in `engine/tests/golden`,
//! a mismatch shown as a line diff with the command that rewrites the files after a deliberate
//! change. Shared by the engine's and the watcher's tests (the watcher includes it by path);
//! it never rewrites a file unless `STELLA_BLESS` is set.

use std::path::Path;

/// The directory of the golden files.
pub fn golden_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../engine/tests/golden"))
}

/// Asserts that `actual` is the golden file `name`; with `STELLA_BLESS` set, writes it
/// first. `bless` is the test command that rewrites it, shown on a mismatch.
pub fn assert_golden(name: &str, actual: &str, bless: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("STELLA_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == want,
        "{name} differs from its golden file engine/tests/golden/{name} (- golden, + now):\n{}\nIf the change is deliberate, rewrite the golden files and review the diff:\n  STELLA_BLESS=1 {bless}\n  git diff engine/tests/golden",
        diff(&want, actual)
    );
}

/// A line diff of `old` and `new` (longest common subsequence), unchanged runs cut to two
/// lines of context.
fn diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut lines: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push((' ', a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            lines.push(('-', a[i]));
            i += 1;
        } else {
            lines.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        lines[k.saturating_sub(2)..(k + 3).min(lines.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut cut = false;
    for (k, (c, line)) in lines.iter().enumerate() {
        if near_change(k) {
            out.push_str(&format!("{c} {line}\n"));
            cut = false;
        } else if !cut {
            out.push_str("  …\n");
            cut = true;
        }
    }
    out
}
