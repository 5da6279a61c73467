//! Real git servers on loopback, started by a test and killed when their handle drops:
//! `git http-backend` behind lighttpd over HTTPS with Basic auth and a test CA (made with the
//! openssl CLI), and OpenSSH's `sshd` with its own host key and one authorized key. A missing
//! server binary skips the test with a printed reason, unless `CI` is set (then it fails:
//! `.ci/run` installs them). Nothing here asserts a product behaviour.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_for;

/// The program `name` (looked up on PATH, then in /usr/sbin), or `None` with the reason
/// printed when it is missing and `CI` is not set; with `CI` set a missing program fails.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/lib/git-core")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing; CI installs it (.ci/run, step \"servers and tools\")"
        );
        eprintln!("skipped: {name} is not installed (CI installs it)");
    }
    found
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until something listens on `port` (the server is up), or panics with its log.
fn wait_listening(port: u16, child: &mut Child, log: &Path) {
    wait_for(&format!("a server on port {port}"), Duration::from_secs(20), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the server ended ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// A server process killed (SIGKILL) and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `git http-backend` behind lighttpd on `https://127.0.0.1:<port>/git/<repo>`, Basic auth
/// (every user may fetch, one may push), its certificate issued for 127.0.0.1 by a CA made
/// for this server.
pub struct HttpsGit {
    /// The directory of the server's files; bare repositories go in `root()`.
    dir: tempfile::TempDir,
    pub port: u16,
    _server: Killed,
}

impl HttpsGit {
    /// Serves the bare repositories of a new `root()` to `users` (name, password); only the
    /// first may push. `None` when lighttpd, its TLS module, openssl or git http-backend is
    /// missing and `CI` is unset.
    pub fn start(users: &[(&str, &str)]) -> Option<HttpsGit> {
        let lighttpd = tool("lighttpd")?;
        let openssl = tool("openssl")?;
        let backend = tool("git-http-backend")?;
        if !Path::new("/usr/lib/lighttpd/mod_openssl.so").exists() {
            tool("lighttpd-mod-openssl-is-missing")?;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("repos")).unwrap();
        // A CA, and a certificate for 127.0.0.1 it signs.
        run(Command::new(&openssl)
            .current_dir(d)
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args([
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Stella test CA",
            ])
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ]));
        run(Command::new(&openssl)
            .current_dir(d)
            .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]));
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(Command::new(&openssl)
            .current_dir(d)
            .args(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"])
            .args([
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ]));
        let lines: String = users.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
        std::fs::write(d.join("users"), lines).unwrap();
        let pusher = users[0].0;
        let port = free_port();
        let conf = format!(
            r#"server.modules = ("mod_alias", "mod_auth", "mod_authn_file", "mod_cgi", "mod_setenv", "mod_openssl")
server.document-root = "{d}/repos"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{d}/error.log"
ssl.engine = "enable"
ssl.pemfile = "{d}/server.pem"
ssl.privkey = "{d}/server.key"
alias.url = ("/git/" => "{backend}/")
$HTTP["url"] =~ "^/git/" {{
  cgi.assign = ("" => "")
  setenv.add-environment = ("GIT_PROJECT_ROOT" => "{d}/repos", "GIT_HTTP_EXPORT_ALL" => "1")
  auth.backend = "plain"
  auth.backend.plain.userfile = "{d}/users"
  auth.require = ("" => ("method" => "basic", "realm" => "git", "require" => "valid-user"))
}}
$HTTP["querystring"] =~ "service=git-receive-pack" {{
  auth.require = ("" => ("method" => "basic", "realm" => "git", "require" => "user={pusher}"))
}}
$HTTP["url"] =~ "/git-receive-pack$" {{
  auth.require = ("" => ("method" => "basic", "realm" => "git", "require" => "user={pusher}"))
}}
"#,
            d = d.display(),
            backend = backend.display(),
        );
        std::fs::write(d.join("lighttpd.conf"), conf).unwrap();
        let log = d.join("lighttpd.out");
        let child = Command::new(lighttpd)
            .args(["-D", "-f"])
            .arg(d.join("lighttpd.conf"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(d.join("lighttpd.err")).unwrap())
            .spawn()
            .unwrap();
        let mut server = Killed(child);
        wait_listening(port, &mut server.0, &d.join("lighttpd.err"));
        Some(HttpsGit {
            dir,
            port,
            _server: server,
        })
    }

    /// Where the served bare repositories live: `root()/NAME.git` is `url("NAME.git")`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("repos")
    }

    /// The CA certificate (PEM) the server's certificate chains to.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn url(&self, repo: &str) -> String {
        format!("https://127.0.0.1:{}/git/{repo}", self.port)
    }
}

/// OpenSSH's sshd on `127.0.0.1:<port>`, run as the current user with its own host key,
/// accepting one public key.
pub struct Sshd {
    dir: tempfile::TempDir,
    pub port: u16,
    _server: Killed,
}

impl Sshd {
    /// Starts sshd accepting `authorized` (a public key line); `None` when sshd or ssh is
    /// missing and `CI` is unset.
    pub fn start(authorized: &str) -> Option<Sshd> {
        let sshd = tool("sshd")?;
        tool("ssh")?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test-host", "-f"])
            .arg(d.join("host_key")));
        std::fs::write(d.join("authorized_keys"), format!("{authorized}\n")).unwrap();
        // sshd checks its privilege-separation directory even when it never uses it.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        let conf = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), conf).unwrap();
        let err = d.join("sshd.err");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let mut server = Killed(child);
        wait_listening(port, &mut server.0, &err);
        Some(Sshd {
            dir,
            port,
            _server: server,
        })
    }

    /// The `known_hosts` line for this server's host key.
    pub fn known_hosts_line(&self) -> String {
        let key = std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap();
        let mut parts = key.split_whitespace();
        let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {blob}\n", self.port)
    }

    /// An `ssh://` URL for the repository at absolute path `path`, as the current user.
    pub fn url(&self, path: &Path) -> String {
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        format!("ssh://{}@127.0.0.1:{}{}", user.trim(), self.port, path.display())
    }
}
