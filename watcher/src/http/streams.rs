//! Server-Sent Events (DESIGN section 11): `GET /api/v1/runs/{id}/events` and `GET
//! /api/v1/events`. A run's stream replays exactly the events after `Last-Event-ID` (or
//! `?after=SEQ`) from the run's most complete record (the journal while it is live, else the
//! ledger), then goes on live from the follower with no gap and no duplicate: it subscribes
//! before it reads, and hands out each seq once, in order. `id:` is the event's seq,
//! `event:` its type, `data:` its JSON (redacted when it was emitted). A `: heartbeat` comment
//! goes out every 15 s; a run's stream ends after its final event. Each client has a buffer
//! of `CLIENT_BUFFER` frames: a client that does not keep up is dropped (it reconnects with
//! Last-Event-ID and loses nothing), so no client grows the server's memory.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as Frame, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use stella_engine::event::Event;
use tokio::sync::{broadcast, mpsc};

use super::errors::{ApiError, blocking};
use super::hub::Item;
use super::shared::Shared;
use super::source::run_id;

/// Between two heartbeat comments.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Frames waiting for one client's socket before the client is dropped.
pub const CLIENT_BUFFER: usize = 1024;

/// The events that end a run: its stream ends after one of them.
fn is_final(e: &Event) -> bool {
    matches!(e.kind.as_str(), "run.succeeded" | "run.failed" | "run.cancelled")
}

/// What a client's task hands to the client's response body.
#[derive(Debug)]
enum Out {
    /// An event of the run the stream follows: `id: <seq>`.
    Run(Event),
    /// An event of any run: `id: <run>:<seq>`, `data` carrying `run`.
    All(std::sync::Arc<Item>),
    Heartbeat,
}

impl Out {
    fn frame(self) -> Frame {
        match self {
            Out::Run(e) => Frame::default()
                .id(e.seq.to_string())
                .event(e.kind.clone())
                .data(e.to_line()),
            Out::All(item) => {
                let mut data = serde_json::to_value(&item.event).expect("events are JSON");
                data["run"] = serde_json::Value::String(item.run.clone());
                Frame::default()
                    .id(format!("{}:{}", item.run, item.event.seq))
                    .event(item.event.kind.clone())
                    .data(data.to_string())
            }
            Out::Heartbeat => Frame::default().comment(" heartbeat"),
        }
    }
}

/// The seq a client resumes after: `Last-Event-ID` (what a browser sends when it reconnects)
/// over `?after=`; none for a stream from the start.
fn after(headers: &HeaderMap, q: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    if let Some(k) = q.keys().find(|k| *k != "after") {
        return Err(ApiError::bad(format!(
            "unknown parameter `{}`; a stream takes after",
            k.escape_default().take(60).collect::<String>()
        )));
    }
    let header = headers.get("last-event-id").map(|v| v.to_str().unwrap_or("-"));
    match header.or(q.get("after").map(String::as_str)) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad("`Last-Event-ID` and `after` must be an event seq (a whole number)")),
    }
}

/// The response body: what the client's task hands over, as it drains.
fn body(rx: mpsc::Receiver<Out>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|o| (o.frame(), rx)) });
    sse(stream)
}

fn sse(stream: impl Stream<Item = Frame> + Send + 'static) -> Response {
    let ok = futures_util::StreamExt::map(stream, Ok::<_, Infallible>);
    let mut r = Sse::new(ok).into_response();
    // Proxies (nginx) must pass frames on as they come.
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// `GET /api/v1/runs/{id}/events`.
pub async fn run(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = run_id(&id)?.to_string();
    let after = after(&headers, &q)?;
    // Subscribed before the replay is read: whatever the follower hands out from now on is
    // either in the replay or comes through here.
    let live = s.hub.subscribe();
    let source = s.source.clone();
    let run = id.clone();
    let (replay, ended) = blocking(move || {
        let at = source.at()?;
        let view = at.run(&run, true)?;
        let ended = view.events().iter().any(is_final);
        let replay: Vec<Event> = view
            .events()
            .iter()
            .filter(|e| after.is_none_or(|a| e.seq > a))
            .cloned()
            .collect();
        Ok((replay, ended))
    })
    .await?;
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    tokio::spawn(follow_run(id, after.map_or(0, |a| a + 1), (replay, ended), live, tx));
    Ok(body(rx))
}

/// One client of a run's stream: the replay, then live events of the run in seq order, until
/// the run's final event, the client going, or the client falling behind.
async fn follow_run(
    id: String,
    mut next: u64,
    (replay, ended): (Vec<Event>, bool),
    mut live: broadcast::Receiver<std::sync::Arc<Item>>,
    tx: mpsc::Sender<Out>,
) {
    for e in replay {
        if e.seq < next {
            continue;
        }
        next = e.seq + 1;
        // The replay is already in memory; a slow reader only delays it.
        let last = is_final(&e);
        if tx.send(Out::Run(e)).await.is_err() || last {
            return;
        }
    }
    // Resumed after the final event: nothing more will come.
    if ended {
        return;
    }
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        tokio::select! {
            item = live.recv() => match item {
                Ok(item) => {
                    if item.run != id || item.event.seq < next {
                        continue;
                    }
                    next = item.event.seq + 1;
                    let last = is_final(&item.event);
                    if tx.try_send(Out::Run(item.event.clone())).is_err() || last {
                        return;
                    }
                }
                // Behind by more than the follower keeps, or the follower is gone: drop the
                // client; it resumes with Last-Event-ID.
                Err(_) => return,
            },
            _ = beat.tick() => {
                if tx.try_send(Out::Heartbeat).is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
}

/// `GET /api/v1/events`: every run's events as they happen, `data` carrying `run`. Live only:
/// it replays nothing (a seq is a position in one run only); a client catches up with
/// `GET /api/v1/runs` and the runs' own streams.
pub async fn all(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    if let Some(k) = q.keys().next() {
        return Err(ApiError::bad(format!(
            "unknown parameter `{}`; this stream takes none",
            k.escape_default().take(60).collect::<String>()
        )));
    }
    let live = s.hub.subscribe();
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    tokio::spawn(follow_all(live, tx));
    Ok(body(rx))
}

async fn follow_all(mut live: broadcast::Receiver<std::sync::Arc<Item>>, tx: mpsc::Sender<Out>) {
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        tokio::select! {
            item = live.recv() => match item {
                Ok(item) => {
                    if tx.try_send(Out::All(item)).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            _ = beat.tick() => {
                if tx.try_send(Out::Heartbeat).is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn item(run: &str, seq: u64, kind: &str) -> Arc<Item> {
        let mut event = Event::new(kind);
        event.seq = seq;
        Arc::new(Item { run: run.into(), event })
    }

    fn ids(out: &[Out]) -> Vec<u64> {
        out.iter()
            .map(|o| match o {
                Out::Run(e) => e.seq,
                other => panic!("not an event of the run: {other:?}"),
            })
            .collect()
    }

    async fn drain(rx: &mut mpsc::Receiver<Out>) -> Vec<Out> {
        let mut out = Vec::new();
        while let Some(f) = rx.recv().await {
            out.push(f);
        }
        out
    }

    #[tokio::test]
    async fn the_replay_and_live_events_overlap_without_a_duplicate_and_end_at_the_final_event() {
        let (live_tx, live) = broadcast::channel(16);
        let (tx, mut rx) = mpsc::channel(16);
        // Events 3 and 4 were already read by the replay when the follower handed them out.
        let replay: Vec<Event> = (2..5).map(|seq| item("r1", seq, "step.log").event.clone()).collect();
        for (run, seq, kind) in [
            ("r1", 3, "step.log"),
            ("r1", 4, "step.log"),
            ("r2", 5, "step.log"),
            ("r1", 5, "run.succeeded"),
            ("r1", 6, "step.log"),
        ] {
            live_tx.send(item(run, seq, kind)).unwrap();
        }
        follow_run("r1".into(), 2, (replay, false), live, tx).await;
        let got = ids(&drain(&mut rx).await);
        assert_eq!(got, [2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_dropped() {
        let (live_tx, live) = broadcast::channel(64);
        let (tx, rx) = mpsc::channel(4);
        for seq in 0..10 {
            live_tx.send(item("r1", seq, "step.log")).unwrap();
        }
        // The client never reads: its buffer of 4 fills and the stream ends, however much follows.
        tokio::time::timeout(
            Duration::from_secs(5),
            follow_run("r1".into(), 0, (Vec::new(), false), live, tx),
        )
        .await
        .expect("the slow client is dropped, not waited for");
        assert_eq!(rx.len(), 4);
    }

    #[tokio::test]
    async fn a_client_further_behind_than_the_follower_keeps_is_dropped() {
        let (live_tx, live) = broadcast::channel(2);
        let (tx, mut rx) = mpsc::channel(64);
        for seq in 0..5 {
            live_tx.send(item("r1", seq, "step.log")).unwrap();
        }
        follow_run("r1".into(), 0, (Vec::new(), false), live, tx).await;
        assert!(drain(&mut rx).await.is_empty(), "it resumes with Last-Event-ID instead");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_sends_a_heartbeat_every_15_seconds() {
        let (_live_tx, live) = broadcast::channel::<Arc<Item>>(4);
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(follow_run("r1".into(), 0, (Vec::new(), false), live, tx));
        tokio::time::sleep(HEARTBEAT * 2 + Duration::from_secs(1)).await;
        for _ in 0..2 {
            assert!(matches!(rx.try_recv(), Ok(Out::Heartbeat)));
        }
        assert!(rx.try_recv().is_err(), "no more than one a 15 s");
        drop(rx);
        tokio::time::timeout(HEARTBEAT * 2, task).await.unwrap().unwrap();
    }
}
