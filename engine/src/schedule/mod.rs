//! Schedules, `.stella/schedules.yaml` (DESIGN section 12): parsed strictly, one schedule at a
//! time, so a malformed one is reported (file:line:field, `ERR_SCHEDULE_INVALID`) and the
//! others are kept; each schedule's slots (`cron`), the run id, run token and request a slot
//! gets. Pure: reads no clock, no git; the runner (`runs::fire`) decides what is due.

pub mod cron;

use std::sync::OnceLock;

use jiff::Timestamp;
use jiff::tz::{TimeZone, TimeZoneDatabase};

use crate::code::Code;
use crate::diag::Diagnostics;
use crate::yaml::decode::{Decoder, Obj};
use crate::yaml::{self, Value};

pub use cron::Cron;

pub const SCHEDULES_PATH: &str = ".stella/schedules.yaml";

/// How late a slot may still fire as due; later, it was missed and `catchUp` decides.
pub const GRACE_SECS: i64 = 60;

/// What `ledger verify` allows between a slot and the commit of its request: the runner's
/// clock may run this far ahead of the slot's.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// A schedule id is a run id short enough to take `-<yyyymmddthhmmssz>`.
const ID_MAX: usize = 100 - 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Skip a slot while the schedule's last run is unfinished.
    Forbid,
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// A missed slot is not run.
    None,
    /// After downtime, the latest missed slot runs once.
    Last,
}

/// One good schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: String,
    pub cron_text: String,
    pub cron: Cron,
    pub timezone: String,
    pub tz: TimeZone,
    /// `packs/<name>`.
    pub pack: String,
    /// The inputs, a JSON object (empty when none are given).
    pub inputs: serde_json::Value,
    pub concurrency: Concurrency,
    pub catch_up: CatchUp,
    pub enabled: bool,
    /// Where the schedule starts in the file.
    pub line: u64,
}

/// The file read: the good schedules, and the problems of the others.
#[derive(Debug, Clone, Default)]
pub struct Schedules {
    pub schedules: Vec<Schedule>,
    pub problems: Diagnostics,
}

/// A time zone by IANA name, from the tz database bundled into Stella (the same answer on
/// every host, with or without /usr/share/zoneinfo).
pub fn zone(name: &str) -> Option<TimeZone> {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    if name == "UTC" {
        return Some(TimeZone::UTC);
    }
    DB.get_or_init(TimeZoneDatabase::bundled).get(name).ok()
}

/// A slot as written in requests and events: RFC 3339 in UTC, to the second.
pub fn slot_text(slot: Timestamp) -> String {
    slot.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Schedule {
    /// The run id of a slot: `<id>-<yyyymmddthhmmssz>` (lower case: run ids have no capitals).
    pub fn run_id(&self, slot: Timestamp) -> String {
        run_id(&self.id, slot)
    }

    /// `schedule:<id>:<slot>`.
    pub fn run_token(&self, slot: Timestamp) -> String {
        format!("schedule:{}:{}", self.id, slot_text(slot))
    }

    /// The request the runner commits for a slot; the same bytes on every runner.
    pub fn request(&self, slot: Timestamp) -> String {
        let slot = slot_text(slot);
        format!(
            "apiVersion: stella/v1\nkind: RunRequest\npack: {}\ninputs: {}\nrunToken: \"schedule:{}:{slot}\"\ntrigger: {{ schedule: {}, slot: \"{slot}\" }}\n",
            yaml::json_text(&self.pack),
            yaml::json_text(&self.inputs),
            self.id,
            self.id,
        )
    }

    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron.next_after(&self.tz, t)
    }

    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron.last_at_or_before(&self.tz, t)
    }

    /// Whether `id` is the run id of one of this schedule's slots (whatever the slot).
    pub fn owns(&self, id: &str) -> bool {
        id.strip_prefix(self.id.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|stamp| parse_stamp(stamp).is_some())
    }
}

/// `<id>-<yyyymmddthhmmssz>`.
pub fn run_id(id: &str, slot: Timestamp) -> String {
    format!("{id}-{}", slot.strftime("%Y%m%dt%H%M%Sz"))
}

/// The slot a run-id stamp (`20261202t020000z`) names.
pub fn parse_stamp(stamp: &str) -> Option<Timestamp> {
    let b = stamp.as_bytes();
    let ok = b.len() == 16 && b[8] == b't' && b[15] == b'z' && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !ok {
        return None;
    }
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    )
    .parse()
    .ok()
}

const FIELDS: &[&str] = &[
    "id",
    "cron",
    "timezone",
    "pack",
    "inputs",
    "concurrency",
    "catchUp",
    "enabled",
];

impl Schedules {
    /// Reads the file; a problem in one schedule drops that schedule alone.
    pub fn parse(file: &str, text: &str) -> Schedules {
        let mut out = Schedules::default();
        let root = match yaml::parse(file, text, yaml::Limits::default()) {
            Ok(root) => root,
            Err(mut d) => {
                d.code = Code::ScheduleInvalid;
                out.problems.push(d);
                return out;
            }
        };
        let mut d = Decoder::new(file, Code::ScheduleInvalid);
        if matches!(root.value, Value::Null) {
            return out;
        }
        let Some(top) = d.obj(&root, "", &["schedules"]) else {
            out.problems = d.diags;
            return out;
        };
        let Some(list) = top.get("schedules") else {
            out.problems = d.diags;
            return out;
        };
        if matches!(list.value, Value::Null) {
            out.problems = d.diags;
            return out;
        }
        let Some(items) = list.as_seq() else {
            d.type_error(list, "schedules", "a list of schedules");
            out.problems = d.diags;
            return out;
        };
        for (i, node) in items.iter().enumerate() {
            let before = d.diags.len();
            let path = format!("schedules[{i}]");
            let one = one(&mut d, node, &path);
            if let Some(s) = &one
                && out.schedules.iter().any(|o| o.id == s.id)
            {
                let at = node.get("id").map_or(node.pos, |n| n.pos);
                d.error(at, &format!("{path}.id"), format!("duplicate schedule id `{}`", s.id));
                continue;
            }
            if let Some(s) = one
                && d.diags.len() == before
            {
                out.schedules.push(s);
            }
        }
        out.problems = d.diags.sorted();
        out
    }

    pub fn get(&self, id: &str) -> Option<&Schedule> {
        self.schedules.iter().find(|s| s.id == id)
    }
}

/// One schedule; `None` (with its problems in `d`) when any field is wrong.
fn one(d: &mut Decoder, node: &yaml::Node, path: &str) -> Option<Schedule> {
    let obj = d.obj(node, path, FIELDS)?;
    let id = d.req_string(&obj, "id").and_then(|id| {
        if crate::run_id::is_valid(&id) && id.len() <= ID_MAX {
            Some(id)
        } else {
            let pos = obj.get("id").map_or(obj.pos(), |n| n.pos);
            d.error(
                pos,
                &obj.path("id"),
                format!("`{id}` is not a schedule id (^[a-z0-9][a-z0-9._-]{{0,82}}$: a run id with room for the slot)"),
            );
            None
        }
    });
    let cron = d.req_string(&obj, "cron").and_then(|text| {
        let pos = obj.get("cron").map_or(obj.pos(), |n| n.pos);
        match Cron::parse(&text) {
            Ok(c) if c.next_after(&TimeZone::UTC, Timestamp::UNIX_EPOCH).is_some() => Some((text, c)),
            Ok(_) => {
                d.error(pos, &obj.path("cron"), format!("`{text}` never matches a date"));
                None
            }
            Err(why) => {
                d.error(pos, &obj.path("cron"), why).hint =
                    Some("e.g. \"0 2 * * *\" (02:00 daily) or \"*/5 * * * * *\" (every 5 s)".into());
                None
            }
        }
    });
    let timezone = match obj.get("timezone") {
        None => Some(("UTC".to_string(), TimeZone::UTC)),
        Some(n) => d.string(n, &obj.path("timezone")).and_then(|name| match zone(&name) {
            Some(tz) => Some((name, tz)),
            None => {
                d.error(n.pos, &obj.path("timezone"), format!("unknown time zone `{name}`"))
                    .hint = Some("an IANA name such as Europe/Berlin or America/New_York".into());
                None
            }
        }),
    };
    let pack = d
        .req_string(&obj, "pack")
        .and_then(|p| match crate::pack::normalise(&p) {
            Some(path) if path.starts_with("packs/") && path.split('/').count() == 2 => Some(path),
            _ => {
                let pos = obj.get("pack").map_or(obj.pos(), |n| n.pos);
                d.error(
                    pos,
                    &obj.path("pack"),
                    format!("`{p}` is not a pack path; expected packs/<name>"),
                );
                None
            }
        });
    let inputs = match obj.get("inputs") {
        None => Some(serde_json::json!({})),
        Some(n) if matches!(n.value, Value::Null) => Some(serde_json::json!({})),
        Some(n) if n.as_map().is_some() => Some(n.to_json()),
        Some(n) => {
            d.type_error(n, &obj.path("inputs"), "a mapping of inputs");
            None
        }
    };
    let concurrency = choice(
        d,
        &obj,
        "concurrency",
        &[("forbid", Concurrency::Forbid), ("allow", Concurrency::Allow)],
    );
    let catch_up = choice(d, &obj, "catchUp", &[("none", CatchUp::None), ("last", CatchUp::Last)]);
    let enabled = d.boolean(&obj, "enabled", true);
    Some(Schedule {
        id: id?,
        cron_text: cron.as_ref()?.0.clone(),
        cron: cron?.1,
        timezone: timezone.as_ref()?.0.clone(),
        tz: timezone?.1,
        pack: pack?,
        inputs: inputs?,
        concurrency: concurrency?,
        catch_up: catch_up?,
        enabled,
        line: node.pos.line,
    })
}

/// An enum field: one of `options` (the first is the default when the field is absent).
fn choice<T: Copy>(d: &mut Decoder, obj: &Obj, key: &str, options: &[(&str, T)]) -> Option<T> {
    let Some(n) = obj.get(key) else {
        return Some(options[0].1);
    };
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    match n.as_str().and_then(|s| options.iter().find(|(name, _)| *name == s)) {
        Some((_, v)) => Some(*v),
        None => {
            d.error(n.pos, &obj.path(key), format!("expected one of: {}", names.join(", ")));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "schedules:\n  - id: nightly\n    cron: \"0 2 * * *\"\n    timezone: Europe/Berlin\n    pack: packs/hello\n    inputs: { who: night }\n    concurrency: allow\n    catchUp: last\n  - id: often\n    cron: \"*/3 * * * * *\"\n    pack: packs/hello\n";

    #[test]
    fn the_documented_example_parses() {
        let s = Schedules::parse("s.yaml", GOOD);
        assert!(s.problems.is_empty(), "{}", s.problems);
        let n = s.get("nightly").unwrap();
        assert_eq!(
            (n.concurrency, n.catch_up, n.enabled),
            (Concurrency::Allow, CatchUp::Last, true)
        );
        let o = s.get("often").unwrap();
        assert_eq!(
            (o.concurrency, o.catch_up, o.timezone.as_str()),
            (Concurrency::Forbid, CatchUp::None, "UTC")
        );
        let slot: Timestamp = "2026-12-02T01:00:00Z".parse().unwrap();
        assert_eq!(n.run_id(slot), "nightly-20261202t010000z");
        assert!(n.owns("nightly-20261202t010000z") && !n.owns("nightly-x") && !o.owns("nightly-20261202t010000z"));
        assert_eq!(parse_stamp("20261202t010000z"), Some(slot));
        let req = crate::request::Request::parse("r.yaml", &n.request(slot)).unwrap();
        assert_eq!(req.run_token.as_deref(), Some("schedule:nightly:2026-12-02T01:00:00Z"));
        assert_eq!(req.inputs.unwrap().to_json(), serde_json::json!({"who": "night"}));
        let trigger = req.trigger.unwrap();
        assert_eq!(
            (trigger.schedule.as_str(), trigger.slot.as_str()),
            ("nightly", "2026-12-02T01:00:00Z")
        );
    }

    #[test]
    fn a_bad_schedule_is_reported_and_the_others_kept() {
        let text = "schedules:\n  - id: ok\n    cron: \"0 * * * *\"\n    pack: packs/a\n  - id: Bad\n    cron: \"0 * * * *\"\n    pack: packs/a\n  - id: c\n    cron: \"0 99 * * *\"\n    pack: packs/a\n  - id: d\n    cron: \"0 * * * *\"\n    timezone: Mars/Olympus\n    pack: packs/a\n  - id: e\n    cron: \"0 * * * *\"\n    pack: ../etc\n  - id: ok\n    cron: \"0 * * * *\"\n    pack: packs/a\n  - id: f\n    cron: \"0 * * * *\"\n    pack: packs/a\n    concurency: forbid\n  - id: g\n    cron: \"0 * * * *\"\n    pack: packs/a\n    catchUp: all\n";
        let s = Schedules::parse("s.yaml", text);
        assert_eq!(s.schedules.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["ok"]);
        let found: Vec<(u64, &str)> = s.problems.iter().map(|d| (d.line, d.field.as_str())).collect();
        assert_eq!(
            found,
            [
                (5, "schedules[1].id"),
                (9, "schedules[2].cron"),
                (13, "schedules[3].timezone"),
                (17, "schedules[4].pack"),
                (18, "schedules[5].id"),
                (24, "schedules[6].concurency"),
                (28, "schedules[7].catchUp"),
            ]
        );
        assert!(s.problems.iter().all(|d| d.code == Code::ScheduleInvalid));
        assert_eq!(s.problems.0[5].hint.as_deref(), Some("did you mean `concurrency`?"));
    }

    #[test]
    fn unknown_top_level_and_broken_yaml() {
        let s = Schedules::parse("s.yaml", "schedule: []\n");
        assert_eq!(s.problems.iter().next().unwrap().field, "schedule");
        let s = Schedules::parse("s.yaml", "schedules: [\n");
        assert_eq!(s.problems.code(), Code::ScheduleInvalid);
        assert!(Schedules::parse("s.yaml", "").problems.is_empty());
    }
}
