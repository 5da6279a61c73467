//! `stella pack run` stories: a scratch directory with a pack, inputs and secrets, the
//! binary run against it, and readers for its output and events. No git, no daemon.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::stella;

use stella_engine::event::{Event, read_ndjson};
use stella_engine::state::{RunState, fold};

/// A scratch directory with one pack (`pack/`) to run.
#[must_use]
pub struct Scratch {
    pub dir: tempfile::TempDir,
    secrets: Option<String>,
    env: Vec<(String, String)>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
            secrets: None,
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `pack/pack.yaml` with `steps` under a standard header (inputs `name`, `items`, `flag`).
    pub fn pack(self, steps: &str) -> Scratch {
        let manifest = format!(
            "apiVersion: stella/v1\nkind: TaskPack\nmetadata: {{ name: t, version: 1.0.0 }}\nspec:\n  inputs:\n    - {{ name: name, type: string, default: world }}\n    - {{ name: items, type: array, default: [] }}\n    - {{ name: flag, type: boolean, default: false }}\n  secrets:\n    - {{ name: token, required: false }}\n  approvals:\n    - {{ id: review, grants: [Packs.Approve] }}\n  steps:\n{steps}"
        );
        self.file("pack/pack.yaml", &manifest)
    }

    pub fn file(self, rel: &str, content: &str) -> Scratch {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        self
    }

    pub fn inputs(self, yaml: &str) -> Scratch {
        self.file("inputs.yaml", yaml)
    }

    pub fn secret(mut self, value: &str) -> Scratch {
        self.secrets = Some(value.to_string());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Scratch {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn events_path(&self) -> PathBuf {
        self.path().join("events.ndjson")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    /// `stella pack run pack` with inputs, secrets and events in the scratch dir, plus `extra`.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = stella();
        cmd.current_dir(self.path()).arg("pack").arg("run").arg("pack");
        if self.path().join("inputs.yaml").exists() {
            cmd.args(["--inputs", "inputs.yaml"]);
        }
        if let Some(s) = &self.secrets {
            std::fs::write(
                self.path().join("secrets.yaml"),
                format!("token: {}\n", serde_json::to_string(s).unwrap()),
            )
            .unwrap();
            cmd.args(["--secrets", "secrets.yaml"]);
        }
        cmd.args(["--events", "events.ndjson", "--dir", "run"]).args(extra);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `stella pack run` started in the background, its output discarded: for tests that
    /// kill it mid-run.
    pub fn spawn_quiet(&self, extra: &[&str]) -> std::process::Child {
        self.command(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn run(&self, extra: &[&str]) -> Ran {
        Ran::from(self.command(extra).output().unwrap(), self.events_path())
    }
}

/// A finished `stella` invocation.
pub struct Ran {
    pub out: Output,
    /// The events file as it was when the command ended (the scratch dir may be gone since).
    events_text: String,
}

impl Ran {
    pub fn from(out: Output, events_path: PathBuf) -> Ran {
        Ran {
            out,
            events_text: std::fs::read_to_string(events_path).unwrap_or_default(),
        }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// Asserts the exit code, showing the output when it differs.
    pub fn code(&self, want: i32) -> &Ran {
        assert_eq!(
            self.out.status.code(),
            Some(want),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }

    pub fn stdout_has(&self, text: &str) -> &Ran {
        assert!(
            self.stdout().contains(text),
            "stdout lacks `{text}`:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }

    pub fn stderr_has(&self, text: &str) -> &Ran {
        assert!(
            self.stderr().contains(text),
            "stderr lacks `{text}`:\n{}",
            self.stderr()
        );
        self
    }

    pub fn events(&self) -> Vec<Event> {
        read_ndjson(&self.events_text).unwrap()
    }

    pub fn state(&self) -> RunState {
        fold(&self.events())
    }

    /// The status of step `id` in the folded state.
    pub fn step(&self, id: &str) -> String {
        let st = self.state();
        let s = st.step(id).unwrap_or_else(|| {
            panic!(
                "no step {id} in {:?}",
                st.steps.iter().map(|s| &s.id).collect::<Vec<_>>()
            )
        });
        serde_json::to_value(s.status).unwrap().as_str().unwrap().to_string()
    }

    /// Every event of `kind` for step `id`.
    pub fn step_events(&self, id: &str, kind: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.step.as_deref() == Some(id) && e.kind == kind)
            .collect()
    }

    /// Log lines of step `id`.
    pub fn logs(&self, id: &str) -> Vec<String> {
        self.step_events(id, "step.log")
            .into_iter()
            .filter_map(|e| e.msg)
            .collect()
    }
}
