//! `stella pack bundle`, `pack validate --bundle`, `pack import` and `pack mirror pull`
//! (DESIGN section 15): signed pack bundles made, verified before anything is parsed, and
//! unpacked into `packs/<name>/` with their provenance; a pack of another repository bundled
//! with its source. Commits nothing.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, Subcommand};
use stella_engine::allowed_signers::AllowedSigners;
use stella_engine::bundle::{self, BundleLimits, Verified};
use stella_engine::keys::SshKey;
use stella_engine::pack::{PackFiles, PackLimits};
use stella_engine::{Code, manifest};

use crate::failure::{Failure, Outcome};
use crate::repo;

const SIGNERS: &str = ".stella/allowed_signers";

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The pack directory (or its name under packs/)
    #[arg(required_unless_present = "bundle", conflicts_with = "bundle")]
    pub pack: Option<PathBuf>,
    /// A signed pack bundle: its publisher's signature and every file are verified first
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// With --bundle: the publisher must be trusted for namespace stella-pack by FILE
    #[arg(long, value_name = "FILE", requires = "bundle")]
    pub allowed_signers: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Fetch a pack at a ref of another repository and bundle it with its source, signed by KEY
    Pull(MirrorArgs),
}

/// `stella pack validate PACK` or `stella pack validate --bundle FILE`.
pub fn validate_command(a: ValidateArgs) -> Result<Outcome, Failure> {
    match (a.pack, a.bundle) {
        (_, Some(file)) => validate(&file, a.allowed_signers.as_deref(), a.json),
        (Some(pack), None) => super::pack::validate(&pack, a.json),
        (None, None) => Err(Failure::one(Code::Usage, "give a PACK or --bundle FILE")),
    }
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The pack directory (or its name under packs/)
    pub pack: PathBuf,
    /// The publisher's Ed25519 SSH private key
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// Where to write the bundle (`*.stellapack`)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The bundle (`*.stellapack`)
    pub file: PathBuf,
    /// The repository to import into
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// Overwrite a different pack of the same name
    #[arg(long)]
    pub replace: bool,
}

/// `stella pack bundle PACK --key KEY -o FILE`.
pub fn bundle(a: &BundleArgs) -> Result<Outcome, Failure> {
    let (dir, shown) = super::pack::locate(&a.pack)?;
    let files = PackFiles::read_dir(&dir, &shown, PackLimits::default())?;
    let m = manifest::load(&files)?;
    let key = SshKey::load(&a.key)?;
    let bytes = bundle::bundle(&files, &m.metadata.name, &m.metadata.version, &key, None);
    write_bundle(&a.output, &bytes)?;
    println!("{}", a.output.display());
    eprintln!(
        "bundled {} {}: signed by {}, sha256 {}",
        m.metadata.name,
        m.metadata.version,
        key.fingerprint(),
        stella_engine::pack::sha256_hex(&bytes)
    );
    Ok(Outcome::Done)
}

/// Writes `bytes` to `path` through a temporary file beside it.
pub fn write_bundle(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let tmp = path.with_extension("stella-tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Failure::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Failure::io(path, e))
}

/// Reads and verifies a bundle, then checks its manifest names what the payload signed.
fn open(file: &Path, signers: Option<&AllowedSigners>) -> Result<(Verified, manifest::Manifest), Failure> {
    let shown = file.display().to_string();
    let (bytes, entries) = bundle::read_bundle(file, &shown, BundleLimits::default())?;
    let verified = bundle::verify_bundle(
        &shown,
        &bytes,
        entries,
        &format!("{shown}:pack"),
        signers,
        SystemTime::now(),
    )?;
    let m = manifest::load(&verified.files)?;
    if m.metadata.name != verified.payload.name || m.metadata.version != verified.payload.version {
        return Err(Failure::one(
            Code::PackInvalid,
            format!(
                "{shown}: the signed payload names {} {} but pack.yaml says {} {}",
                verified.payload.name, verified.payload.version, m.metadata.name, m.metadata.version
            ),
        ));
    }
    Ok((verified, m))
}

/// `stella pack validate --bundle FILE [--allowed-signers FILE]`.
pub fn validate(file: &Path, signers: Option<&Path>, json: bool) -> Result<Outcome, Failure> {
    let signers = signers.map(read_signers).transpose()?;
    let (v, m) = open(file, signers.as_ref())?;
    let steps = m.all_steps().len();
    if json {
        let out = serde_json::json!({
            "valid": true, "pack": m.metadata.name, "version": m.metadata.version, "steps": steps,
            "publisher": v.publisher.name(), "keyid": v.publisher.fingerprint,
            "trusted": v.publisher.principal.is_some(), "bundleSha256": v.bundle_sha256,
            "source": v.payload.source,
        });
        println!("{out}");
    } else {
        println!(
            "ok: {} {} is valid ({steps} steps declared)",
            m.metadata.name, m.metadata.version
        );
        println!("publisher: {}", describe(&v));
        println!("bundle:    sha256 {}", v.bundle_sha256);
        if let Some(s) = &v.payload.source {
            println!("source:    {} {} at {} ({})", s.url, s.reference, s.commit, s.path);
        }
    }
    Ok(Outcome::Done)
}

fn describe(v: &Verified) -> String {
    match &v.publisher.principal {
        Some(p) => format!("{p} ({})", v.publisher.fingerprint),
        None => format!(
            "{} (signature verified; not checked against any allowed_signers: pass --allowed-signers)",
            v.publisher.fingerprint
        ),
    }
}

/// `stella pack import FILE [--repo DIR] [--replace]`.
pub fn import(a: &ImportArgs) -> Result<Outcome, Failure> {
    let root = repo::find_root(&a.repo)?;
    let signers = super::provenance::signers_at_head(&root)?.ok_or_else(|| {
        Failure::one(
            Code::PackProvenance,
            format!("{}: HEAD has no {SIGNERS}, so no publisher is trusted", root.display()),
        )
    })?;
    let (v, m) = open(&a.file, Some(&signers))?;
    let dir = bundle::install(&root.join("packs"), &v, a.replace)?;
    println!("{}", dir.display());
    eprintln!(
        "imported {} {} published by {}; review and commit packs/{}/",
        m.metadata.name,
        m.metadata.version,
        describe(&v),
        m.metadata.name
    );
    Ok(Outcome::Done)
}

fn read_signers(path: &Path) -> Result<AllowedSigners, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::io(path, e))?;
    Ok(AllowedSigners::parse(&path.display().to_string(), &text)?)
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The repository to take the pack from (a URL gix fetches, e.g. file:///srv/packs.git)
    pub url: String,
    /// The tag, branch or commit to take it at (a tag stands for its commit)
    #[arg(long = "ref", value_name = "REF")]
    pub reference: String,
    /// The pack's directory in that repository
    #[arg(long, value_name = "packs/NAME")]
    pub path: String,
    /// The Ed25519 SSH key the mirror signs the bundle with
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// Where to write the bundle
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

/// `stella pack mirror pull URL --ref REF --path packs/NAME --key KEY -o FILE`.
pub fn mirror_pull(a: &MirrorArgs) -> Result<Outcome, Failure> {
    let cache = bundle::mirror::cache_dir()
        .ok_or_else(|| Failure::one(Code::Usage, "no cache directory: set STELLA_PACK_CACHE or HOME"))?;
    let key = SshKey::load(&a.key)?;
    // gix talks to `git upload-pack` over pipes: a server that hangs up early must be an
    // error to report, not a signal that kills us (as in the daemon).
    // SAFETY: setting a signal disposition; this command starts no thread of its own first.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let pulled = bundle::mirror::pull(&cache, &a.url, &a.reference, &a.path)?;
    let m = manifest::load(&pulled.files)?;
    let name = &m.metadata.name;
    let bytes = bundle::bundle(
        &pulled.files,
        name,
        &m.metadata.version,
        &key,
        Some(pulled.source.clone()),
    );
    write_bundle(&a.output, &bytes)?;
    println!("{}", a.output.display());
    if let Some(why) = &pulled.offline {
        eprintln!("warning: could not fetch {} ({why}); used the cache", a.url);
    }
    eprintln!(
        "mirrored {name} {} from {} {} at {}{}: signed by {}, sha256 {}",
        m.metadata.version,
        a.url,
        a.reference,
        pulled.source.commit,
        if pulled.fetched { "" } else { " (from the cache)" },
        key.fingerprint(),
        stella_engine::pack::sha256_hex(&bytes)
    );
    Ok(Outcome::Done)
}
