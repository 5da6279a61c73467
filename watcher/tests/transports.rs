//! Runners that only have a server's URL: a hub served over HTTPS (git http-backend behind
//! lighttpd, Basic auth, a private CA) and over SSH (OpenSSH's sshd), started by the tests on
//! loopback. A run requested by a person's push is executed and its results pushed back; a
//! refused password or key, an untrusted certificate and a wrong host key are each one line,
//! with nothing lost: the run executes once the credential, CA or host key is fixed.

use std::path::Path;
use std::time::Duration;

use crate::support::servers::{HttpsGit, Sshd};
use crate::support::{Daemon, HELLO, Repo, git_env, keygen};

/// What may name trusted CAs in the test's own environment (some machines set them all to
/// the system bundle): removed from the runner's, which gets only what each test gives it.
const TRUST: [&str; 4] = ["GIT_SSL_CAINFO", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE"];

/// A person's clone pushing through the server, and a runner cloned from the server's URL
/// alone, trusted by a commit the person pushed. `env` is what both need to reach the server.
struct Hub {
    admin: Repo,
    runner: Repo,
    env: Vec<(String, String)>,
}

impl Hub {
    fn new(
        url: &str,
        bare: &Path,
        env: &[(&str, &str)],
        admin_config: &[(&str, &str)],
        runner_config: &[(&str, &str)],
    ) -> Hub {
        git_env(
            Path::new("/"),
            &[],
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        let admin = Repo::new();
        for (k, v) in admin_config {
            admin.git(&["config", k, v]);
        }
        admin.write(".stella/config.yaml", "branch: main\ncommit: { batchMs: 200 }\n");
        admin.pack("hello", HELLO);
        admin.git(&["remote", "add", "origin", url]);
        git_env(admin.path(), env, &["push", "-q", "origin", "main"]);
        let runner = Repo {
            dir: tempfile::tempdir().unwrap(),
        };
        let mut clone = vec!["clone", "-q"];
        let sets: Vec<String> = runner_config.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for s in &sets {
            clone.extend(["-c", s.as_str()]);
        }
        clone.extend([url, "."]);
        git_env(runner.path(), env, &clone);
        runner.stella(&["init", "."]).ok();
        runner.commit_all("trust this runner");
        git_env(runner.path(), env, &["push", "-q", "origin", "main"]);
        git_env(admin.path(), env, &["pull", "-q", "--ff-only", "origin", "main"]);
        Hub {
            admin,
            runner,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// The person requests run `id` of the hello pack and pushes it; the commit pushed.
    fn request(&self, id: &str) -> String {
        self.admin.request(id, "hello", "{}\n");
        git_env(self.admin.path(), &self.env(), &["push", "-q", "origin", "main"]);
        git_env(self.admin.path(), &[], &["rev-parse", "main"])
            .trim()
            .to_string()
    }

    /// The state of run `id` on the server's branch, as the person sees it after pulling.
    fn state(&self, id: &str) -> String {
        git_env(
            self.admin.path(),
            &self.env(),
            &["pull", "-q", "--ff-only", "origin", "main"],
        );
        let out = self.admin.stella(&["runs", "show", id, "--json"]);
        serde_json::from_str::<serde_json::Value>(&out.stdout())
            .ok()
            .and_then(|v| v["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// `stella daemon --once --remote origin` in the runner, with `env` as the only trust.
    fn once(&self, env: &[(&str, &str)]) -> crate::support::Stella {
        let mut cmd = self
            .runner
            .daemon_command(&["--once", "--repo", ".", "--remote", "origin"]);
        for var in TRUST {
            cmd.env_remove(var);
        }
        let out = cmd.envs(env.iter().copied()).output().unwrap();
        crate::support::Stella(out)
    }

    /// A watching daemon of the runner, exchanging every second, with `env`.
    fn watch(&self, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = self
            .runner
            .daemon_command(&["--repo", ".", "--remote", "origin", "--poll", "1s"]);
        for var in TRUST {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        Daemon::start(cmd)
    }

    /// Nothing reached the server since the person pushed `pushed`: run `id` is as requested.
    fn untouched(&self, id: &str, pushed: &str) {
        assert_eq!(self.state(id), "planned", "run {id} moved on the server");
        let tip = git_env(self.admin.path(), &[], &["rev-parse", "main"]);
        assert_eq!(tip.trim(), pushed, "the server's branch moved");
    }
}

/// The single `error[...]` line of a failed `--once`, checked to be the only line naming it.
fn error_line(out: &crate::support::Stella) -> String {
    assert_eq!(
        out.code(),
        Some(2),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout(),
        out.stderr()
    );
    // The daemon's start-up line on stdout; on stderr the error alone (no ssh banner).
    let stderr = out.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{stderr}");
    assert!(
        lines[0].starts_with("error[ERR_IO]: git: remote `origin`, "),
        "{stderr}"
    );
    lines[0].to_string()
}

#[test]
fn https_with_basic_auth_and_a_private_ca() {
    let Some(server) = HttpsGit::start(&[("runner", "s3cret"), ("reader", "r3ad")]) else {
        return;
    };
    let ca = server.ca();
    let ca = ca.to_str().unwrap();
    let url = server.url("hub.git");
    let creds_dir = tempfile::tempdir().unwrap();
    let admin_creds = creds_dir.path().join("admin-credentials");
    let runner_creds = creds_dir.path().join("runner-credentials");
    let line = |pw: &str| format!("https://runner:{pw}@127.0.0.1:{}\n", server.port);
    std::fs::write(&admin_creds, line("s3cret")).unwrap();
    std::fs::write(&runner_creds, line("s3cret")).unwrap();
    let admin_helper = format!("store --file={}", admin_creds.display());
    let runner_helper = format!("store --file={}", runner_creds.display());
    let hub = Hub::new(
        &url,
        &server.root().join("hub.git"),
        &[("GIT_SSL_CAINFO", ca)],
        &[("credential.helper", admin_helper.as_str())],
        &[("credential.helper", runner_helper.as_str())],
    );
    let with_ca = [("GIT_SSL_CAINFO", ca)];

    // A wrong password: one line saying so, nothing changed.
    std::fs::write(&runner_creds, line("wrong")).unwrap();
    let pushed = hub.request("r1");
    let err = error_line(&hub.once(&with_ca));
    eprintln!("{err}");
    assert!(
        err.contains(&format!("{url}: the server refused the credentials (HTTP 401)")),
        "{err}"
    );
    hub.untouched("r1", &pushed);

    // No CA: the certificate is not trusted, one line saying so.
    std::fs::write(&runner_creds, line("s3cret")).unwrap();
    let err = error_line(&hub.once(&[]));
    eprintln!("{err}");
    assert!(err.contains("certificate"), "{err}");
    hub.untouched("r1", &pushed);

    // A watching daemon waits out the refused password, then runs r1 once it is fixed.
    std::fs::write(&runner_creds, line("wrong")).unwrap();
    let d = hub.watch(&with_ca);
    d.wait_for("the refusal", Duration::from_secs(30), || {
        d.stderr().contains("the server refused the credentials")
    });
    std::fs::write(&runner_creds, line("s3cret")).unwrap();
    d.wait_for("the remote answering again", Duration::from_secs(60), || {
        d.stdout().contains("the remote answers again")
    });
    crate::support::wait_for("r1 to succeed on the server", Duration::from_secs(60), || {
        hub.state("r1") == "succeeded"
    });
    drop(d);

    // A credential that may fetch but not push: the first push refused, one line, no run
    // started (its claim could not be pushed), nothing lost.
    let reader = format!("https://reader:r3ad@127.0.0.1:{}\n", server.port);
    std::fs::write(&runner_creds, &reader).unwrap();
    // (git erases the refused credential, so the exchange after it finds none: a second line.)
    let pushed = hub.request("r2");
    let out = hub.once(&with_ca);
    assert_eq!(out.code(), Some(2), "{}", out.stderr());
    let err = out.stderr().lines().next().unwrap_or_default().to_string();
    eprintln!("{err}");
    assert!(
        err.starts_with("error[ERR_IO]: run r2: cannot claim the run: git: remote `origin`, ")
            && err.contains("the server refused the credentials"),
        "{}",
        out.stderr()
    );
    hub.untouched("r2", &pushed);
    std::fs::write(&runner_creds, line("s3cret")).unwrap();
    hub.once(&with_ca).ok();
    assert_eq!(hub.state("r2"), "succeeded");

    // The CA given as SSL_CERT_FILE instead: trusted by the fetch and by git's push alike.
    hub.request("r3");
    hub.once(&[("SSL_CERT_FILE", ca)]).ok();
    assert_eq!(hub.state("r3"), "succeeded");
    hub.admin.stella(&["ledger", "verify"]).ok();
}

#[test]
fn ssh_with_a_known_host_key() {
    let keys = tempfile::tempdir().unwrap();
    let public = keygen(keys.path(), "runner");
    let Some(server) = Sshd::start(&public) else {
        return;
    };
    let bare = keys.path().join("hub.git");
    let url = server.url(&bare);
    let ssh = |known: &Path| {
        std::fs::write(known, server.known_hosts_line()).unwrap();
        format!(
            "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -i {}",
            known.display(),
            keys.path().join("runner").display()
        )
    };
    // The person and the runner each have their own known_hosts.
    let person = ssh(&keys.path().join("known_hosts_person"));
    let known = keys.path().join("known_hosts_runner");
    let runner = ssh(&known);
    let hub = Hub::new(&url, &bare, &[("GIT_SSH_COMMAND", person.as_str())], &[], &[]);
    let env = [("GIT_SSH_COMMAND", runner.as_str())];

    // Another host key for the server: one line saying so, nothing changed.
    let other = tempfile::tempdir().unwrap();
    let impostor = keygen(other.path(), "impostor");
    let mut parts = impostor.split_whitespace();
    std::fs::write(
        &known,
        format!(
            "[127.0.0.1]:{} {} {}\n",
            server.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        ),
    )
    .unwrap();
    let pushed = hub.request("r1");
    let err = error_line(&hub.once(&env));
    eprintln!("{err}");
    assert!(err.contains("host key"), "{err}");
    hub.untouched("r1", &pushed);

    // A key the server does not know (the host key right): one line saying so.
    let stranger = ssh(&keys.path().join("known_hosts_stranger")).replace(
        &keys.path().join("runner").display().to_string(),
        &other.path().join("impostor").display().to_string(),
    );
    let err = error_line(&hub.once(&[("GIT_SSH_COMMAND", stranger.as_str())]));
    eprintln!("{err}");
    assert!(err.contains("the SSH server refused the key"), "{err}");
    hub.untouched("r1", &pushed);

    // A watching daemon waits it out, then runs r1 once the host key is right.
    let d = hub.watch(&env);
    d.wait_for("the refusal", Duration::from_secs(30), || {
        d.stderr().contains("host key")
    });
    assert!(
        !d.stderr().contains("@@@"),
        "ssh's banner reached the daemon's output:\n{}",
        d.stderr()
    );
    std::fs::write(&known, server.known_hosts_line()).unwrap();
    d.wait_for("the remote answering again", Duration::from_secs(60), || {
        d.stdout().contains("the remote answers again")
    });
    crate::support::wait_for("r1 to succeed on the server", Duration::from_secs(60), || {
        hub.state("r1") == "succeeded"
    });
    drop(d);
    hub.admin.stella(&["ledger", "verify"]).ok();
}
