//! The `pre-commit` hook `stella init` installs: a plain POSIX sh script (git plumbing only)
//! that refuses a person's commit changing or deleting runner files. Runner commits never
//! meet it: the runner writes commits with gix, which runs no hooks.

use std::path::{Path, PathBuf};

/// Marks a hook as Stella's (and which version of it).
const MARK: &str = "# stella pre-commit hook v2";

/// The hook itself. A runner file is anything under a run directory (`runs/_<xx>/<id>/` or a
/// flat `runs/<id>/`) but `request.yaml` and
/// `cancel.yaml` (`ledger::is_runner_path`); adding one is let through (a merge brings the
/// runner's new files), changing or deleting one is refused unless a merge in progress
/// brings exactly that content.
pub const SCRIPT: &str = r#"#!/bin/sh
# stella pre-commit hook v2
# Installed by `stella init`. Refuses a commit that changes or deletes runner files
# (runs/_<xx>/<run-id>/... or runs/<run-id>/..., other than request.yaml and cancel.yaml):
# only the runner writes them,
# and `stella ledger verify` fails on any change it did not sign. Bypass knowingly with
# `git commit --no-verify`; verify then reports the damage until `stella ledger heal`.
git rev-parse -q --verify HEAD >/dev/null 2>&1 || exit 0
git_dir=$(git rev-parse --git-dir) || exit 1
tab=$(printf '\t')
bad=$(git -c core.quotePath=false diff --cached --no-color --no-renames --name-status HEAD -- runs/ |
while IFS="$tab" read -r status path; do
    rest=${path#runs/}
    case "${rest%%/*}" in
        _[0-9a-f][0-9a-f]) rest=${rest#*/} ;;
    esac
    run=${rest%%/*}
    file=${rest#*/}
    [ "$rest" = "$run" ] && continue
    case "$run" in
        ''|*[!a-z0-9._-]*|[._-]*|*..*) continue ;;
    esac
    case "$file" in
        request.yaml|cancel.yaml) continue ;;
    esac
    case "$status" in
        A) continue ;;
    esac
    if [ -f "$git_dir/MERGE_HEAD" ]; then
        staged=$(git rev-parse -q --verify ":$path" 2>/dev/null)
        theirs=$(git rev-parse -q --verify "MERGE_HEAD:$path" 2>/dev/null)
        [ -n "$staged" ] && [ "$staged" = "$theirs" ] && continue
    fi
    case "$status" in
        D) echo "  deleted:  $path" ;;
        *) echo "  changed:  $path" ;;
    esac
done)
[ -z "$bad" ] && exit 0
echo "stella: this commit changes runner files, which only the runner writes:" >&2
echo "$bad" >&2
echo "stella: \`git restore --staged <file>\` them (\`git reset -- runs/_<xx>/<id>/\` for a whole run)." >&2
echo "stella: to commit it anyway, knowingly: git commit --no-verify" >&2
echo "stella: (\`stella ledger verify\` will then report it until \`stella ledger heal\` restores the files)" >&2
exit 1
"#;

/// What `install` did.
pub enum Installed {
    /// The hook was written (new, or an older Stella hook replaced).
    Written(PathBuf),
    /// Already in place.
    Present,
    /// Another hook is there: left alone; Stella's is written beside it to be called from it.
    Beside { existing: PathBuf, ours: PathBuf },
}

fn hook_path(git_dir: &Path) -> PathBuf {
    git_dir.join("hooks").join("pre-commit")
}

/// Stella's hook written beside a person's own `pre-commit`, for it to call.
fn beside_path(git_dir: &Path) -> PathBuf {
    git_dir.join("hooks").join("pre-commit.stella")
}

/// Installs the hook in `git_dir/hooks/pre-commit`, executable; never replaces someone
/// else's hook.
pub fn install(git_dir: &Path) -> std::io::Result<Installed> {
    let path = hook_path(git_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) if text == SCRIPT => return Ok(Installed::Present),
        Ok(text) if !text.contains(MARK) && !text.lines().any(|l| l.starts_with("# stella pre-commit hook")) => {
            let ours = beside_path(git_dir);
            if std::fs::read_to_string(&ours).ok().as_deref() != Some(SCRIPT) {
                write_executable(&ours)?;
            }
            return Ok(Installed::Beside { existing: path, ours });
        }
        _ => {}
    }
    write_executable(&path)?;
    Ok(Installed::Written(path))
}

fn write_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("stella-tmp");
    std::fs::write(&tmp, SCRIPT)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, path)
}

/// Why the hook would not run for a commit, if it would not: missing, not executable, or
/// a hook of someone else's that does not call Stella's.
pub fn problem(git_dir: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = hook_path(git_dir);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Some(format!(
            "no pre-commit hook at {}: a person's ordinary commit could change runner files unnoticed until `stella ledger verify` (run `stella init` to install it)",
            path.display()
        ));
    };
    if !text.contains("# stella pre-commit hook") && !text.contains("pre-commit.stella") {
        return Some(format!(
            "{} is not Stella's and does not call {}: commits that change runner files are not refused (call it from your hook)",
            path.display(),
            beside_path(git_dir).display()
        ));
    }
    let executable = std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
    if !executable {
        return Some(format!(
            "{} is not executable, so git skips it (chmod +x it)",
            path.display()
        ));
    }
    None
}
