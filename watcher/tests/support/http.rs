//! A plain HTTP client for the stories of the HTTP edge (ureq, no TLS): the address a `stella
//! daemon --http` or `stella serve` said it listens on, GETs that return status, headers and
//! body whatever the status, and an SSE reader that yields `(id, event, data)` frames with a
//! deadline. Nothing here asserts a product behaviour.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use super::Daemon;

/// One answer, read whole.
pub struct Got {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// The `http://HOST:PORT` a daemon or `stella serve` printed (waiting for it to say so).
pub fn base_of(d: &Daemon) -> String {
    let mut base = None;
    d.wait_for("the http address", Duration::from_secs(30), || {
        base = d.stdout().lines().find_map(|l| {
            l.split("http on ")
                .nth(1)
                .map(|a| a.split([',', ' ']).next().unwrap().to_string())
        });
        base.is_some()
    });
    base.unwrap()
}

/// GET `base` + `path` with these headers.
pub fn get_with(base: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = agent().get(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap_or_else(|e| panic!("GET {path}: body: {e}"));
    Got {
        status: resp.status().as_u16(),
        content_type,
        body,
    }
}

pub fn get(base: &str, path: &str) -> Got {
    get_with(base, path, &[])
}

/// One SSE frame: its `id:`, `event:` and `data:` (comments are `event` ":comment").
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// An open event stream.
pub struct Stream {
    reader: BufReader<Box<dyn std::io::Read + Send>>,
    pub status: u16,
}

/// Opens an event stream; a stream that is refused can be read as a body with `rest`.
pub fn stream(base: &str, path: &str, headers: &[(&str, &str)]) -> Stream {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_recv_body(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut req = agent.get(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let reader: Box<dyn std::io::Read + Send> = Box::new(resp.into_body().into_reader());
    Stream {
        reader: BufReader::new(reader),
        status,
    }
}

impl Stream {
    /// The next frame or comment; `None` when the stream ended. Panics past `within`.
    pub fn next(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        let mut frame = Frame {
            id: None,
            event: String::new(),
            data: String::new(),
        };
        let mut any = false;
        loop {
            assert!(Instant::now() < deadline, "no whole frame within {within:?}");
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap() == 0 {
                return any.then_some(frame);
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if any {
                    return Some(frame);
                }
                continue;
            }
            any = true;
            if let Some(c) = line.strip_prefix(':') {
                frame.event = format!(":{}", c.trim());
            } else if let Some((k, v)) = line.split_once(':') {
                let v = v.strip_prefix(' ').unwrap_or(v).to_string();
                match k {
                    "id" => frame.id = Some(v),
                    "event" => frame.event = v,
                    "data" => frame.data.push_str(&v),
                    _ => {}
                }
            }
        }
    }

    /// Every frame until the stream ends.
    pub fn until_end(&mut self, within: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while let Some(f) = self.next(deadline.saturating_duration_since(Instant::now())) {
            out.push(f);
        }
        out
    }
}
