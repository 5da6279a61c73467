//! Expressions and templates (minijinja): compiling, finding the variables they reference,
//! rendering with shell quoting for `builtin:shell` scripts, and evaluating `{{ expr }}`
//! fields (`when`, `map.items`, policy `expr`). Secrets are never part of any context here.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};

/// How rendered values are written into the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// Values are written as they are (messages, argv elements, env values).
    Text,
    /// Values are shell-quoted, so no value can inject shell syntax into a script.
    Shell,
}

const TEXT_NAME: &str = "text";
const SHELL_NAME: &str = "script.sh";

/// Upper bound on template work, so a hostile template cannot loop for long.
const FUEL: u64 = 200_000;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(new_env)
}

/// A fresh environment with Stella's settings: strict undefined values, bounded work, and
/// shell quoting for templates whose name ends in `.sh`.
fn new_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_recursion_limit(64);
    env.set_fuel(Some(FUEL));
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".sh") {
            AutoEscape::Custom("shell".into())
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(format_value);
    env
}

fn format_value(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    let shell = matches!(state.auto_escape(), AutoEscape::Custom(name) if name == "shell");
    let text = if shell && !value.is_safe() {
        shell_words(value)?
    } else {
        plain(value)
    };
    out.write_str(&text).map_err(Error::from)
}

/// A value as plain text: strings as they are, lists and maps as JSON.
fn plain(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => String::new(),
        ValueKind::Seq | ValueKind::Map => serde_json::to_string(value).unwrap_or_else(|_| value.to_string()),
        _ => value.to_string(),
    }
}

/// A value as shell words: numbers and booleans bare, strings single-quoted, a list as one
/// quoted word per item, a map as one quoted JSON word.
fn shell_words(value: &Value) -> Result<String, Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => Ok("''".into()),
        ValueKind::Bool | ValueKind::Number => Ok(value.to_string()),
        ValueKind::Seq | ValueKind::Iterable => {
            let mut words = Vec::new();
            for item in value.try_iter()? {
                words.push(shell_words(&item)?);
            }
            Ok(words.join(" "))
        }
        ValueKind::Map => shell_quote(&plain(value)),
        _ => shell_quote(&value.to_string()),
    }
}

/// Single-quotes `s` for bash: the only character that needs care inside single quotes is
/// the quote itself. NUL cannot be passed to a shell at all and is refused.
pub fn shell_quote(s: &str) -> Result<String, Error> {
    if s.contains('\0') {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "a value with a NUL byte cannot be passed to a shell",
        ));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

/// True when `s` holds template syntax; anything else is a literal.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// The inner expression of a `{{ expr }}` field, or the whole string when it has no braces.
fn expression_source(s: &str) -> &str {
    let t = s.trim();
    if let Some(inner) = t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}"))
        && !inner.contains("{{")
        && !inner.contains("}}")
    {
        return inner.trim();
    }
    t
}

/// Compiles a template and returns the variables it reads (dotted paths, e.g.
/// `steps.scan.outputs.critical`), or the syntax error.
pub fn template_refs(src: &str) -> Result<BTreeSet<String>, String> {
    let t = env().template_from_named_str(TEXT_NAME, src).map_err(describe)?;
    Ok(t.undeclared_variables(true)
        .into_iter()
        .filter(|v| !is_global(v))
        .collect())
}

/// Compiles an expression field (`{{ expr }}` or a bare expression) and returns what it reads.
pub fn expression_refs(src: &str) -> Result<BTreeSet<String>, String> {
    let e = env().compile_expression(expression_source(src)).map_err(describe)?;
    Ok(e.undeclared_variables(true)
        .into_iter()
        .filter(|v| !is_global(v))
        .collect())
}

fn is_global(var: &str) -> bool {
    let root = var.split('.').next().unwrap_or(var);
    env().globals().any(|(name, _)| name == root)
}

/// A template context: a minijinja value (maps of `inputs`, `steps`, `item`). Cheap to clone.
pub type Ctx = Value;

/// Converts JSON data into a template value (done once per value, then shared).
pub fn value(json: &serde_json::Value) -> Value {
    Value::from(minijinja::value::Serde(json))
}

/// A context from named parts, e.g. `[("inputs", inputs), ("item", item)]`.
pub fn ctx<'a>(parts: impl IntoIterator<Item = (&'a str, Value)>) -> Ctx {
    Value::from_pairs(parts)
}

/// Renders `src` against `ctx`.
pub fn render(src: &str, flavor: Flavor, ctx: &Ctx) -> Result<String, String> {
    let name = match flavor {
        Flavor::Text => TEXT_NAME,
        Flavor::Shell => SHELL_NAME,
    };
    let t = env().template_from_named_str(name, src).map_err(describe)?;
    t.render(ctx.clone()).map_err(describe)
}

/// Templates compiled once and rendered many times (map children repeat the same sources).
pub struct TemplateCache {
    env: Environment<'static>,
    names: std::collections::HashMap<Flavor, std::collections::HashMap<String, String>>,
}

impl Default for TemplateCache {
    fn default() -> Self {
        TemplateCache {
            env: env().clone(),
            names: Default::default(),
        }
    }
}

impl TemplateCache {
    /// Renders `src` with `flavor`, compiling it the first time it is seen.
    pub fn render(&mut self, src: &str, flavor: Flavor, ctx: &Ctx) -> Result<String, String> {
        let by_src = self.names.entry(flavor).or_default();
        let name = match by_src.get(src) {
            Some(n) => n.clone(),
            None => {
                let suffix = if flavor == Flavor::Shell { ".sh" } else { ".txt" };
                let name = format!("t{}{suffix}", by_src.len());
                self.env
                    .add_template_owned(name.clone(), src.to_string())
                    .map_err(describe)?;
                by_src.insert(src.to_string(), name.clone());
                name
            }
        };
        let t = self.env.get_template(&name).map_err(describe)?;
        t.render(ctx.clone()).map_err(describe)
    }
}

/// Evaluates an expression field to a JSON value.
pub fn eval(src: &str, ctx: &Ctx) -> Result<serde_json::Value, String> {
    let e = env().compile_expression(expression_source(src)).map_err(describe)?;
    let v = e.eval(ctx.clone()).map_err(describe)?;
    if v.is_undefined() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::to_value(&v).map_err(|e| format!("expression result is not data: {e}"))
}

/// Evaluates an expression field for truth (Jinja truthiness: empty, 0, false and none are false).
pub fn eval_bool(src: &str, ctx: &Ctx) -> Result<bool, String> {
    let e = env().compile_expression(expression_source(src)).map_err(describe)?;
    let v = e.eval(ctx.clone()).map_err(describe)?;
    Ok(v.is_true())
}

/// A minijinja error as one line, without the engine's debug dump.
fn describe(err: Error) -> String {
    let mut msg = match err.detail() {
        Some(detail) => format!("{}: {detail}", kind_text(err.kind())),
        None => kind_text(err.kind()).to_string(),
    };
    if let Some(line) = err.line() {
        msg.push_str(&format!(" (template line {line})"));
    }
    msg
}

fn kind_text(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::SyntaxError => "template syntax error",
        ErrorKind::UndefinedError => "undefined value",
        ErrorKind::UnknownFilter => "unknown filter",
        ErrorKind::UnknownTest => "unknown test",
        ErrorKind::UnknownFunction => "unknown function",
        ErrorKind::UnknownMethod => "unknown method",
        ErrorKind::OutOfFuel => "template used too much work",
        ErrorKind::InvalidOperation => "invalid operation",
        ErrorKind::BadSerialization => "value cannot be represented",
        _ => "template error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shell(src: &str, value: serde_json::Value) -> String {
        render(src, Flavor::Shell, &super::value(&json!({ "inputs": { "v": value } }))).unwrap()
    }

    /// Runs the rendered script with bash and returns what `printf '%s'` printed for `$1`.
    fn bash_first_arg(script: &str) -> String {
        let out = std::process::Command::new("bash")
            .args([
                "-euo",
                "pipefail",
                "-c",
                &format!("set -- {script}; printf '%s' \"$1\""),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn hostile_values_stay_one_inert_word() {
        for hostile in [
            "'; rm -rf / #",
            "$(touch /tmp/stella-pwned)",
            "`id`",
            "a\nb; echo injected",
            "\"double\" and 'single'",
            "x && echo y | cat > z",
            "${HOME}",
            "--help",
            "",
        ] {
            let script = shell("{{ inputs.v }}", json!(hostile));
            assert_eq!(bash_first_arg(&script), hostile, "script was: {script}");
        }
        assert!(!std::path::Path::new("/tmp/stella-pwned").exists());
    }

    #[test]
    fn lists_become_one_word_per_item() {
        assert_eq!(
            shell("./fix.sh {{ inputs.v }}", json!(["a b", "c'd"])),
            "./fix.sh 'a b' 'c'\\''d'"
        );
        assert_eq!(shell("n={{ inputs.v }}", json!(3)), "n=3");
    }

    #[test]
    fn text_flavor_writes_values_verbatim() {
        let out = render(
            "Remediate {{ inputs.v }}",
            Flavor::Text,
            &value(&json!({"inputs": {"v": "a'b"}})),
        )
        .unwrap();
        assert_eq!(out, "Remediate a'b");
    }

    #[test]
    fn refs_are_dotted_paths_without_globals() {
        let refs =
            template_refs("{{ inputs.image }} {% for t in inputs.targets %}{{ t }}{% endfor %}{{ range(3) }}").unwrap();
        assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["inputs.image", "inputs.targets"]);
        let refs = expression_refs("{{ steps.scan.outputs.critical == '0' }}").unwrap();
        assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["steps.scan.outputs.critical"]);
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(template_refs("{{ inputs.image ").unwrap_err().contains("syntax"));
        assert!(expression_refs("{{ not }}").is_err());
    }

    #[test]
    fn expressions_evaluate_to_data() {
        let ctx = value(&json!({"inputs": {"targets": ["a", "b"], "dryRun": false}}));
        assert_eq!(eval("{{ inputs.targets }}", &ctx).unwrap(), json!(["a", "b"]));
        assert!(eval_bool("{{ not inputs.dryRun }}", &ctx).unwrap());
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let err = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            Flavor::Text,
            &value(&json!({})),
        )
        .unwrap_err();
        assert!(err.contains("too much work") || err.contains("range"), "{err}");
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn cached_shell_templates_are_quoted_too() {
        let mut cache = TemplateCache::default();
        let ctx = value(&serde_json::json!({ "inputs": { "v": "a'; b" } }));
        for _ in 0..2 {
            assert_eq!(
                cache.render("x {{ inputs.v }}", Flavor::Shell, &ctx).unwrap(),
                "x 'a'\\''; b'"
            );
            assert_eq!(cache.render("x {{ inputs.v }}", Flavor::Text, &ctx).unwrap(), "x a'; b");
        }
    }
}
