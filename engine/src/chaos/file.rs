//! The chaos file's format: `seed:` and `rules:`, each rule an action, the point it fires at,
//! run and step selectors, `after`, `times`, `probability` and `duration`, every problem
//! located by line and field (ERR_USAGE). Never fires anything; `fire` does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use crate::code::Code;
use crate::diag::{Diagnostic, Diagnostics, Pos, did_you_mean};
use crate::yaml::{self, Node, Value};

use super::{ACTIONS, Action, Chaos, Counters, POINTS, Point};

/// One rule as the file gives it.
#[derive(Debug)]
pub(super) struct Rule {
    pub action: Action,
    pub point: Point,
    pub run: Option<String>,
    pub step: Option<String>,
    pub after: u64,
    pub times: Option<u64>,
    pub probability: Option<f64>,
}

impl Chaos {
    /// Reads and parses a chaos file; every problem names the file, line and field (ERR_USAGE).
    pub fn load(path: &Path) -> Result<Chaos, Diagnostics> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostic::new(
                Code::Usage,
                &shown,
                Pos::UNKNOWN,
                "",
                format!("cannot read the chaos file: {e}"),
            )
        })?;
        Chaos::parse(&shown, &text)
    }

    /// Parses chaos file text (`file` names it in messages).
    pub fn parse(file: &str, text: &str) -> Result<Chaos, Diagnostics> {
        let root = yaml::parse(file, text, yaml::Limits::default()).map_err(|mut d| {
            d.code = Code::Usage;
            Diagnostics::from(d)
        })?;
        let mut diags = Diagnostics::default();
        let mut err =
            |n: &Node, field: &str, msg: String| diags.push(Diagnostic::new(Code::Usage, file, n.pos, field, msg));
        let mut seed = 0u64;
        let mut rules = Vec::new();
        match root.as_map() {
            None => err(
                &root,
                "",
                format!("a chaos file is a mapping with `rules:`, found {}", root.kind()),
            ),
            Some(entries) => {
                for (k, v) in entries {
                    match k.name.as_str() {
                        "seed" => match v.value {
                            Value::Int(i) if i >= 0 => seed = i as u64,
                            _ => err(v, "seed", "expected a whole number".into()),
                        },
                        "rules" => match v.as_seq() {
                            Some(items) => {
                                for (i, item) in items.iter().enumerate() {
                                    if let Some(r) = rule(item, &format!("rules[{i}]"), &mut err) {
                                        rules.push(r);
                                    }
                                }
                            }
                            None => err(v, "rules", format!("expected a list of rules, found {}", v.kind())),
                        },
                        other => {
                            let hint = did_you_mean(other, ["seed", "rules"])
                                .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                            err(v, other, format!("unknown field `{other}`{hint}"));
                        }
                    }
                }
                if root.get("rules").is_none() {
                    err(&root, "rules", "missing field `rules`".into());
                }
            }
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        let n = rules.len();
        Ok(Chaos {
            rules,
            counters: Mutex::new(Counters {
                seen: vec![0; n],
                fired: vec![0; n],
                rng: seed,
                delayed: HashMap::new(),
            }),
            log: None,
        })
    }
}

/// Parses one rule; problems go to `err`.
fn rule(n: &Node, at: &str, err: &mut impl FnMut(&Node, &str, String)) -> Option<Rule> {
    let Some(entries) = n.as_map() else {
        err(n, at, format!("a rule is a mapping with `action:`, found {}", n.kind()));
        return None;
    };
    const FIELDS: &[&str] = &[
        "action",
        "point",
        "run",
        "step",
        "after",
        "times",
        "probability",
        "duration",
    ];
    let mut ok = true;
    for (k, v) in entries {
        if !FIELDS.contains(&k.name.as_str()) {
            let hint = did_you_mean(&k.name, FIELDS.iter().copied())
                .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
            err(
                v,
                &format!("{at}.{}", k.name),
                format!("unknown field `{}`{hint}", k.name),
            );
            ok = false;
        }
    }
    let text = |err: &mut dyn FnMut(&Node, &str, String), key: &str| -> Option<Result<(String, &Node), ()>> {
        let v = n.get(key)?;
        Some(match v.as_str() {
            Some(s) if !s.is_empty() => Ok((s.to_string(), v)),
            _ => {
                err(
                    v,
                    &format!("{at}.{key}"),
                    format!("expected a non-empty string, found {}", v.kind()),
                );
                Err(())
            }
        })
    };
    let whole = |err: &mut dyn FnMut(&Node, &str, String), key: &str, min: i64| -> Result<Option<u64>, ()> {
        let Some(v) = n.get(key) else { return Ok(None) };
        match v.value {
            Value::Int(i) if i >= min => Ok(Some(i as u64)),
            _ => {
                err(
                    v,
                    &format!("{at}.{key}"),
                    format!("expected a whole number of at least {min}"),
                );
                Err(())
            }
        }
    };
    let action_name = match text(err, "action") {
        None => {
            err(
                n,
                &format!("{at}.action"),
                format!("missing field `action` (one of {})", ACTIONS.join(", ")),
            );
            return None;
        }
        Some(Err(())) => return None,
        Some(Ok((s, v))) if !ACTIONS.contains(&s.as_str()) => {
            let hint =
                did_you_mean(&s, ACTIONS.iter().copied()).map_or(String::new(), |h| format!("; did you mean `{h}`?"));
            err(
                v,
                &format!("{at}.action"),
                format!("unknown action `{s}` (one of {}){hint}", ACTIONS.join(", ")),
            );
            return None;
        }
        Some(Ok((s, _))) => s,
    };
    // The point each action may fire at; kill-runner names one.
    let fixed = match action_name.as_str() {
        "pause" => Some(Point::BeforeStepStart),
        "drop-network" => Some(Point::AfterStepStart),
        "delay-approvals" => Some(Point::GateReached),
        _ => None,
    };
    let point = match (text(err, "point"), fixed) {
        (Some(Err(())), _) => None,
        (None, Some(p)) => Some(p),
        (None, None) => {
            let names: Vec<&str> = POINTS
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| *n != "gate-reached")
                .collect();
            err(
                n,
                &format!("{at}.point"),
                format!("kill-runner needs `point:` (one of {})", names.join(", ")),
            );
            None
        }
        (Some(Ok((s, v))), fixed) => match POINTS.iter().find(|(name, _)| *name == s) {
            Some((_, p)) if fixed.map_or(*p != Point::GateReached, |f| f == *p) => Some(*p),
            Some(_) => {
                let only = fixed.map_or("a point other than gate-reached", Point::as_str);
                err(v, &format!("{at}.point"), format!("{action_name} fires only at {only}"));
                None
            }
            None => {
                let hint = did_you_mean(&s, POINTS.iter().map(|(n, _)| *n))
                    .map_or(String::new(), |h| format!("; did you mean `{h}`?"));
                err(v, &format!("{at}.point"), format!("unknown point `{s}`{hint}"));
                None
            }
        },
    };
    // A selector the point cannot have is named with why; otherwise its text, if given.
    let mut select = |field: &str, refuse: Option<String>| match text(err, field) {
        Some(Ok((_, v))) if refuse.is_some() => {
            err(v, &format!("{at}.{field}"), refuse.unwrap_or_default());
            ok = false;
            None
        }
        Some(Ok((s, _))) => Some(s),
        Some(Err(())) => {
            ok = false;
            None
        }
        None => None,
    };
    let run = select(
        "run",
        (point == Some(Point::MidPush))
            .then(|| "mid-push has no run (a push carries every run); remove `run: …`".to_string()),
    );
    let step = select(
        "step",
        point
            .filter(|p| !p.has_step())
            .map(|p| format!("{} has no step; select by `run` only", p.as_str())),
    );
    let after = whole(err, "after", 0);
    let times = whole(err, "times", 1);
    let probability = match n.get("probability") {
        None => Ok(None),
        Some(v) => match v.value {
            Value::Float(f) if f > 0.0 && f <= 1.0 => Ok(Some(f)),
            Value::Int(1) => Ok(Some(1.0)),
            _ => {
                err(
                    v,
                    &format!("{at}.probability"),
                    "expected a number above 0 and at most 1 (e.g. 0.25)".into(),
                );
                Err(())
            }
        },
    };
    let duration = match n.get("duration") {
        None if fixed.is_some() && action_name != "drop-network" => {
            err(
                n,
                &format!("{at}.duration"),
                format!("{action_name} needs `duration:` (e.g. 5s)"),
            );
            Err(())
        }
        None => Ok(None),
        Some(v) if action_name == "kill-runner" || action_name == "drop-network" => {
            err(v, &format!("{at}.duration"), format!("{action_name} takes no duration"));
            Err(())
        }
        Some(v) => match v.as_str().map(crate::duration::parse_ms) {
            Some(Ok(ms)) => Ok(Some(ms)),
            Some(Err(m)) => {
                err(v, &format!("{at}.duration"), m);
                Err(())
            }
            None => {
                err(
                    v,
                    &format!("{at}.duration"),
                    format!("expected a duration such as 5s, found {}", v.kind()),
                );
                Err(())
            }
        },
    };
    let (Some(point), true, Ok(after), Ok(times), Ok(probability), Ok(ms)) =
        (point, ok, after, times, probability, duration)
    else {
        return None;
    };
    let ms = ms.unwrap_or(0);
    let action = match action_name.as_str() {
        "pause" => Action::Pause { ms },
        "drop-network" => Action::DropNetwork,
        "delay-approvals" => Action::DelayApprovals { ms },
        _ => Action::KillRunner,
    };
    Some(Rule {
        action,
        point,
        run,
        step,
        after: after.unwrap_or(0),
        times,
        probability,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_names_its_line_and_field() {
        let text = "rules:\n  - action: kill-runner\n    point: mid-comit\n  - action: pause\n  - action: delay-approvals\n    duration: 5s\n    step: review\n    probability: 2\n  - { action: kill-runner, point: mid-push, run: r1 }\n";
        let d = Chaos::parse("chaos.yaml", text).unwrap_err();
        let shown: Vec<String> = d.iter().map(|d| format!("{}:{}", d.line, d.field)).collect();
        assert_eq!(
            shown,
            [
                "3:rules[0].point",
                "4:rules[1].duration",
                "8:rules[2].probability",
                "9:rules[3].run"
            ],
            "{d}"
        );
        assert!(d.iter().all(|d| d.code == Code::Usage));
        assert!(d.to_string().contains("did you mean `mid-commit`"), "{d}");
    }
}
