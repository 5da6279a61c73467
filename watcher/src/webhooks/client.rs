//! One signed POST to a receiver (ureq, rustls): Standard Webhooks headers, timeouts, no
//! redirect followed, and the response's body never read (only its status), so a slow or huge
//! response costs nothing. HTTPS trusts `SSL_CERT_FILE`, else the system bundle, else the
//! bundled Mozilla roots. Errors say what happened without the URL (it may be a secret).

use std::time::Duration;

use stella_engine::notify::sign;
use ureq::Agent;
use ureq::tls::TlsConfig;

/// How a delivery attempt ended short of a 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The receiver answered with this status (not 2xx).
    Status(u16),
    /// The receiver could not be reached or did not answer in time; the text names no URL.
    Unreachable(String),
    /// The signing key or URL is missing or unusable (a runner secret).
    Setup(String),
}

impl Refused {
    /// Whether the target as a whole is failing (so every notification to it should wait),
    /// rather than this one notification being refused.
    pub fn target_down(&self) -> bool {
        match self {
            Refused::Status(s) => *s == 429 || *s == 408 || *s >= 500,
            Refused::Unreachable(_) | Refused::Setup(_) => true,
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Status(s) => write!(f, "the receiver answered HTTP {s}"),
            Refused::Unreachable(why) => write!(f, "the receiver could not be reached: {why}"),
            Refused::Setup(why) => f.write_str(why),
        }
    }
}

/// What one delivery sends.
pub struct Delivery<'a> {
    pub url: &'a str,
    pub id: &'a str,
    /// The signing key, `whsec_<base64>`.
    pub key: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// The HTTP client every delivery shares.
#[derive(Clone)]
pub struct Client {
    agent: Agent,
}

impl Client {
    /// A client whose every attempt ends within `timeout` (connecting within half of it).
    pub fn new(timeout: Duration) -> Client {
        let tls = TlsConfig::builder()
            .root_certs(stella_engine::secrets::vault::roots())
            .build();
        let config = Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout / 2))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_response_header_size(16 * 1024)
            .user_agent(concat!("stella/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build();
        Client { agent: config.into() }
    }

    /// Signs and sends one attempt now; `Ok(status)` for a 2xx.
    pub fn send(&self, d: &Delivery) -> Result<u16, Refused> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_secs());
        let signature = sign::signature(d.key, d.id, ts, d.body).map_err(|e| Refused::Setup(e.to_string()))?;
        let sent = self
            .agent
            .post(d.url)
            .header("webhook-id", d.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .header("content-type", d.content_type)
            .send(d.body);
        // The body is never read: dropping the response closes the connection.
        match sent {
            Ok(resp) if resp.status().is_success() => Ok(resp.status().as_u16()),
            Ok(resp) => Err(Refused::Status(resp.status().as_u16())),
            Err(e) => Err(Refused::Unreachable(describe(&e))),
        }
    }
}

/// An error in words that never include the URL or anything the receiver sent.
fn describe(e: &ureq::Error) -> String {
    use ureq::Error as E;
    match e {
        E::Timeout(_) => "timed out".into(),
        E::HostNotFound => "host not found".into(),
        E::ConnectionFailed => "connection failed".into(),
        // rustls reports a refused certificate as invalid data; its words may name the host.
        E::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            "TLS failed (is the receiver's certificate trusted? see SSL_CERT_FILE)".into()
        }
        E::Io(io) => format!("connection failed ({})", io.kind()),
        E::BadUri(_) | E::Http(_) => "the URL is not usable".into(),
        E::Tls(_) | E::Rustls(_) | E::Pem(_) => {
            "TLS failed (is the receiver's certificate trusted? see SSL_CERT_FILE)".into()
        }
        E::LargeResponseHeader(..) => "the response headers are too large".into(),
        E::Protocol(_) => "the receiver did not speak HTTP/1.1".into(),
        _ => "the request failed".into(),
    }
}
