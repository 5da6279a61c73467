//! Test helpers: packs built in memory from YAML text, planned with inputs.

use stella_engine::pack::PackFiles;
use stella_engine::plan::{self, Plan, PlanConfig};
use stella_engine::{Diagnostics, inputs};

/// The repository's `packs/` directory.
pub fn packs_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packs")
}

/// A pack in memory: `pack.yaml` plus any other files.
#[must_use]
pub struct TestPack {
    files: Vec<(String, Vec<u8>)>,
}

impl TestPack {
    pub fn new(manifest: &str) -> TestPack {
        TestPack {
            files: vec![("pack.yaml".into(), manifest.as_bytes().to_vec())],
        }
    }

    pub fn file(mut self, path: &str, content: &str) -> TestPack {
        self.files.push((path.into(), content.as_bytes().to_vec()));
        self
    }

    pub fn files(&self) -> PackFiles {
        PackFiles::from_files("packs/t", self.files.clone()).unwrap()
    }

    pub fn plan(&self, inputs_yaml: &str) -> Result<Plan, Diagnostics> {
        let node = inputs::parse("inputs.yaml", inputs_yaml)?;
        plan::from_files(&self.files(), Some(&node), "inputs.yaml", &PlanConfig::default())
    }

    pub fn plan_with(&self, inputs_yaml: &str, config: &PlanConfig) -> Result<Plan, Diagnostics> {
        let node = inputs::parse("inputs.yaml", inputs_yaml)?;
        plan::from_files(&self.files(), Some(&node), "inputs.yaml", config)
    }

    pub fn validate(&self) -> Result<(), Diagnostics> {
        stella_engine::manifest::load(&self.files()).map(|_| ())
    }
}

/// A minimal valid manifest with `steps` spliced in (indented under spec.steps).
pub fn with_steps(steps: &str) -> String {
    format!(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: {{ name: t, version: 1.0.0 }}\nspec:\n  inputs:\n    - {{ name: image, type: string, required: true }}\n    - {{ name: targets, type: array, default: [] }}\n  approvals:\n    - {{ id: review, grants: [Packs.Approve], requiredCount: 1 }}\n  steps:\n{steps}"
    )
}

/// git in `dir` as a person (Alice) would run it; asserts success; its stdout, trimmed.
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=Alice",
            "-c",
            "user.email=alice@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
