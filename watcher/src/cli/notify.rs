//! `stella notify test ID`: one signed test delivery (an event of type `notify.test`) to a
//! notify target of the config at the branch tip, with the runner secrets of `--secrets FILE`
//! or `STELLA_SECRET_<NAME>`; prints the receiver's HTTP status. Never prints a URL that came
//! from a secret, nor the signing key.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stella_engine::Code;
use stella_engine::notify::Endpoint;
use stella_engine::notify::body::{self, About};
use stella_engine::redact::Redactor;

use crate::failure::{Failure, Outcome};
use crate::repo;
use crate::webhooks::client::{Client, Delivery};
use crate::webhooks::secret_value;

pub fn test(repo_dir: &Path, id: &str, secrets: Option<&Path>) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let config = repo::config_at_head(&root)?;
    let Some(target) = config.notify.iter().find(|t| t.id == id) else {
        let known: Vec<&str> = config.notify.iter().map(|t| t.id.as_str()).collect();
        let hint = match stella_engine::diag::did_you_mean(id, known.iter().copied()) {
            Some(s) => format!("; did you mean `{s}`?"),
            None if known.is_empty() => "; .stella/config.yaml has no `notify:` targets".into(),
            None => format!("; the targets are: {}", known.join(", ")),
        };
        return Err(Failure::one(Code::Usage, format!("no notify target `{id}`{hint}")));
    };
    let file_secrets = match secrets {
        Some(p) => stella_engine::secrets::Secrets::from_file(p)?,
        None => Default::default(),
    };
    let missing = |name: &str, what: &str| {
        Failure::one(
            Code::NotifyFailed,
            format!(
                "target `{id}`: the runner secret `{name}` holding the {what} is not set (put it in --secrets FILE or set {})",
                stella_engine::secrets::env_name(name)
            ),
        )
    };
    let (url, from_secret) = match &target.endpoint {
        Endpoint::Url(u) => (u.clone(), false),
        Endpoint::UrlSecret(name) => (
            secret_value(&file_secrets, name).ok_or_else(|| missing(name, "URL"))?,
            true,
        ),
    };
    let key = secret_value(&file_secrets, &target.secret).ok_or_else(|| missing(&target.secret, "signing key"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let webhook_id = format!("test-{now}.0.{id}");
    let event = body::test_event(id);
    let mut masked = vec![key.as_str()];
    if from_secret {
        masked.push(url.as_str());
    }
    let redactor = Redactor::new(masked);
    let text = body::build(
        target.format,
        &About {
            run: &format!("test-{now}"),
            id: &webhook_id,
            event: &event,
        },
        &redactor,
    );
    let shown = if from_secret { "its URL secret" } else { url.as_str() };
    let sent = Client::new(Duration::from_secs(10)).send(&Delivery {
        url: &url,
        id: &webhook_id,
        key: &key,
        content_type: target.format.content_type(),
        body: text.as_bytes(),
    });
    match sent {
        Ok(status) => {
            println!("notify test: target `{id}` ({shown}) answered HTTP {status} to {webhook_id}");
            Ok(Outcome::Done)
        }
        Err(why) => Err(Failure::one(
            Code::NotifyFailed,
            format!("notify test: target `{id}` ({shown}): {why}"),
        )),
    }
}
