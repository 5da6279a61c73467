//! Plan hash properties: how a manifest is written (formatting, key order, comments, flow
//! or block style, quoting) never changes the hash; any change to what would run does.

use proptest::prelude::*;
use serde_json::Value as Json;

use crate::support::{TestPack, packs_dir};

fn sbom_files() -> Vec<(String, String)> {
    let dir = packs_dir().join("sbom-remediation");
    [
        "pack.yaml",
        "scan.sh",
        "fix.sh",
        "summary.sh",
        "schemas/targets.schema.json",
    ]
    .iter()
    .map(|f| (f.to_string(), std::fs::read_to_string(dir.join(f)).unwrap()))
    .collect()
}

fn pack_with_manifest(manifest: &str) -> TestPack {
    let mut pack = TestPack::new(manifest);
    for (path, content) in sbom_files().into_iter().skip(1) {
        pack = pack.file(&path, &content);
    }
    pack
}

const INPUTS: &str = "image: registry.local/app:1.4\ntargets: [api, worker]\n";

fn hash_of(manifest: &str) -> String {
    pack_with_manifest(manifest)
        .plan(INPUTS)
        .unwrap_or_else(|d| panic!("{d}\n---\n{manifest}"))
        .hash()
}

fn original_manifest_json() -> Json {
    let src = &sbom_files()[0].1;
    stella_engine::yaml::parse("pack.yaml", src, Default::default())
        .unwrap()
        .to_json()
}

/// Choices for writing one YAML document; drawn at random by proptest.
#[derive(Debug, Clone)]
struct Style {
    /// Per-collection coin flips (cycled): flow style or block style.
    flow: Vec<bool>,
    /// Per-mapping rotations of key order (cycled).
    rotate: Vec<usize>,
    /// Per-scalar quoting choice (cycled): 0 plain when safe, 1 single, 2 double.
    quote: Vec<u8>,
    indent: usize,
    comments: bool,
}

struct Writer<'s> {
    style: &'s Style,
    n: usize,
    out: String,
}

impl Writer<'_> {
    fn next<T: Copy>(&mut self, v: &[T]) -> T {
        self.n += 1;
        v[self.n % v.len()]
    }

    fn scalar(&mut self, v: &Json, in_flow: bool) -> String {
        match v {
            Json::String(s) => {
                let plain_ok = !s.is_empty()
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
                    && s.parse::<f64>().is_err()
                    && !["true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"]
                        .contains(&s.to_ascii_lowercase().as_str());
                match self.next(&self.style.quote) {
                    0 if plain_ok => s.clone(),
                    1 if !s.contains('\n') && !s.contains('\'') && !in_flow => format!("'{s}'"),
                    _ => serde_json::to_string(s).unwrap(),
                }
            }
            other => other.to_string(),
        }
    }

    fn key(&mut self, k: &str) -> String {
        let v = Json::String(k.to_string());
        self.scalar(&v, true)
    }

    fn flow(&mut self, v: &Json) -> String {
        match v {
            Json::Object(m) => {
                let entries: Vec<String> = self
                    .ordered(m)
                    .into_iter()
                    .map(|(k, v)| format!("{}: {}", self.key(&k), self.flow(&v)))
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }
            Json::Array(a) => format!("[{}]", a.iter().map(|x| self.flow(x)).collect::<Vec<_>>().join(", ")),
            s => self.scalar(s, true),
        }
    }

    fn ordered(&mut self, m: &serde_json::Map<String, Json>) -> Vec<(String, Json)> {
        let mut entries: Vec<(String, Json)> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if !entries.is_empty() {
            let r = self.next(&self.style.rotate) % entries.len();
            entries.rotate_left(r);
        }
        entries
    }

    fn is_collection(v: &Json) -> bool {
        matches!(v, Json::Object(m) if !m.is_empty()) || matches!(v, Json::Array(a) if !a.is_empty())
    }

    /// Writes `v` as the value after `prefix` (a `key:` or `-`) at `depth`.
    fn value(&mut self, prefix: &str, v: &Json, depth: usize) {
        let pad = " ".repeat(depth * self.style.indent);
        if self.style.comments && self.n.is_multiple_of(3) {
            self.out.push_str(&format!("{pad}# note {}\n", self.n));
        }
        if !Self::is_collection(v) || self.next(&self.style.flow) {
            let text = if Self::is_collection(v) {
                self.flow(v)
            } else {
                self.flow_or_scalar(v)
            };
            self.out.push_str(&format!("{pad}{prefix} {text}\n"));
            return;
        }
        self.out.push_str(&format!("{pad}{prefix}\n"));
        self.block(v, depth + 1);
    }

    fn flow_or_scalar(&mut self, v: &Json) -> String {
        match v {
            Json::Object(_) => "{}".into(),
            Json::Array(_) => "[]".into(),
            s => self.scalar(s, false),
        }
    }

    fn block(&mut self, v: &Json, depth: usize) {
        match v {
            Json::Object(m) => {
                for (k, v) in self.ordered(m) {
                    let prefix = format!("{}:", self.key(&k));
                    self.value(&prefix, &v, depth);
                }
            }
            Json::Array(a) => {
                for item in a {
                    self.value("-", item, depth);
                }
            }
            _ => unreachable!("block is only called on collections"),
        }
    }
}

fn write_yaml(v: &Json, style: &Style) -> String {
    let mut w = Writer {
        style,
        n: 0,
        out: String::from("# reformatted\n"),
    };
    w.block(v, 0);
    w.out
}

fn style() -> impl Strategy<Value = Style> {
    (
        prop::collection::vec(any::<bool>(), 1..16),
        prop::collection::vec(0usize..8, 1..16),
        prop::collection::vec(0u8..3, 1..16),
        2usize..5,
        any::<bool>(),
    )
        .prop_map(|(flow, rotate, quote, indent, comments)| Style {
            flow,
            rotate,
            quote,
            indent,
            comments,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn formatting_never_changes_the_hash(style in style()) {
        let baseline = hash_of(&sbom_files()[0].1);
        let rewritten = write_yaml(&original_manifest_json(), &style);
        prop_assert_eq!(hash_of(&rewritten), baseline, "rewritten manifest:\n{}", rewritten);
    }

    #[test]
    fn any_input_value_changes_the_hash(a in "\\PC{0,40}", b in "\\PC{0,40}") {
        prop_assume!(a != b && !a.contains('\0') && !b.contains('\0'));
        let pack = pack_with_manifest(&sbom_files()[0].1);
        let plan = |image: &str| pack.plan(&serde_json::json!({ "image": image }).to_string()).unwrap().hash();
        prop_assert_ne!(plan(&a), plan(&b));
    }
}

#[test]
fn a_change_to_what_would_run_changes_the_hash() {
    let original = sbom_files()[0].1.clone();
    let baseline = hash_of(&original);
    let edits = [
        ("./scan.sh {{ inputs.image }}", "./scan.sh --deep {{ inputs.image }}"),
        ("requiredCount: 1", "requiredCount: 2"),
        ("grants: [Packs.Approve]", "grants: [Packs.Admin]"),
        ("expiresAfter: PT4H", "expiresAfter: PT5H"),
        (
            "expiresAfter: PT4H",
            "expiresAfter: PT4H\n      allowSelfApproval: true",
        ),
        ("timeout: 10m", "timeout: 11m"),
        ("maxAttempts: 3", "maxAttempts: 4"),
        ("failAction: halt", "failAction: continue"),
        ("maxParallel: 2", "maxParallel: 3"),
        ("version: 1.2.0", "version: 1.2.1"),
        ("scope: registry", "scope: vault"),
        ("outputs: { report: report.json }", "outputs: { report: report2.json }"),
    ];
    for (from, to) in edits {
        assert!(original.contains(from), "{from}");
        let edited = original.replace(from, to);
        assert_ne!(
            hash_of(&edited),
            baseline,
            "editing `{from}` -> `{to}` must change the hash"
        );
    }
}

#[test]
fn a_change_to_any_pack_file_changes_the_hash() {
    let manifest = sbom_files()[0].1.clone();
    let baseline = hash_of(&manifest);
    let with_extra = pack_with_manifest(&manifest)
        .file("README.md", "notes")
        .plan(INPUTS)
        .unwrap()
        .hash();
    assert_ne!(with_extra, baseline, "adding a file");
    let mut pack = TestPack::new(&manifest);
    for (path, content) in sbom_files().into_iter().skip(1) {
        let content = if path == "fix.sh" {
            content.replace("remediated", "fixed")
        } else {
            content
        };
        pack = pack.file(&path, &content);
    }
    assert_ne!(pack.plan(INPUTS).unwrap().hash(), baseline, "editing a script");
}

#[test]
fn a_change_to_an_input_changes_the_hash() {
    let manifest = sbom_files()[0].1.clone();
    let pack = pack_with_manifest(&manifest);
    let a = pack.plan(INPUTS).unwrap().hash();
    let b = pack
        .plan("image: registry.local/app:1.4\ntargets: [api]\n")
        .unwrap()
        .hash();
    let c = pack
        .plan("image: registry.local/app:1.4\ntargets: [api, worker]\ndryRun: true\n")
        .unwrap()
        .hash();
    assert!(a != b && a != c && b != c);
}
