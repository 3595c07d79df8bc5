//! Model references: an alias from the editable table `harness/aliases.toml`, a Hub id
//! (`org/name`, optionally `@revision`, and `:FILE.gguf` for one file of a GGUF repository),
//! or a local folder in Hub snapshot layout.
//!
//! Hub downloads use hf-hub 0.4's *sync* API (ureq). The harness is a batch CLI that fetches a
//! handful of files before any compute starts; the async 1.0 API would add a tokio runtime and
//! reqwest to every build for no gain. hf-hub reads `HF_HOME` and `HF_ENDPOINT`; this module
//! adds `HF_HUB_CACHE` (the shared cache folder) and `HF_HUB_OFFLINE` (cache only, no network).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The alias table shipped with the harness.
pub const BUILTIN_ALIASES: &str = include_str!("../../aliases.toml");

/// One alias: a base checkpoint plus fine-tuned checkpoints per task.
#[derive(Debug, Clone, Deserialize)]
pub struct Alias {
    pub description: String,
    /// The pretrained checkpoint without a task head (used for probes and profiling).
    pub base: String,
    /// Task name to fine-tuned Hub checkpoint.
    #[serde(default)]
    pub tasks: BTreeMap<String, String>,
    /// Where each checkpoint comes from (model card), for the README and `list models`.
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
}

/// The alias table: alias name to entry.
#[derive(Debug, Clone)]
pub struct AliasTable(pub BTreeMap<String, Alias>);

impl AliasTable {
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let map: BTreeMap<String, Alias> =
            toml::from_str(text).with_context(|| format!("{origin}: invalid alias table"))?;
        Ok(AliasTable(map))
    }

    pub fn builtin() -> Self {
        Self::parse(BUILTIN_ALIASES, "aliases.toml").expect("the built-in alias table parses")
    }

    /// The built-in table, or a user's file given with `--aliases`.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            None => Ok(Self::builtin()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("{}: cannot read alias table", p.display()))?;
                Self::parse(&text, &p.display().to_string())
            }
        }
    }
}

/// What a model argument refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Alias(String),
    Hub {
        repo: String,
        revision: Option<String>,
        /// One `.gguf` file of the repository (`org/name-GGUF:NAME.gguf`, or `--gguf-file`):
        /// GGUF repositories hold one file per quantization and no config.json.
        file: Option<String>,
    },
    Local(PathBuf),
    /// `mock:SPEC`: the weightless [`MockBackend`](super::mock::MockBackend), for tests and
    /// dry runs of the pipeline.
    Mock(String),
}

impl ModelRef {
    /// Classify a command-line model argument. Cheap: no network, no weights.
    pub fn parse(arg: &str, aliases: &AliasTable) -> Result<Self> {
        if let Some(spec) = arg.strip_prefix("mock:") {
            // Checked here so that a bad option fails before anything runs.
            super::mock::MockBackend::from_spec(spec)?;
            return Ok(ModelRef::Mock(spec.to_string()));
        }
        let path = Path::new(arg);
        if path.exists() {
            let gguf = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
            if !path.is_dir() && !gguf {
                bail!("{arg}: a model must be a folder (with config.json and weights) or a .gguf file");
            }
            return Ok(ModelRef::Local(path.to_path_buf()));
        }
        if aliases.0.contains_key(arg) {
            return Ok(ModelRef::Alias(arg.to_string()));
        }
        let looks_like_path = arg.starts_with('.')
            || arg.starts_with('/')
            || arg.starts_with('~')
            || arg.matches('/').count() > 1;
        if looks_like_path {
            bail!("model folder not found: {arg}");
        }
        if let Some((id, file)) = arg.split_once(':') {
            if let Some((repo, revision)) = parse_hub_id(id) {
                if !is_gguf_file_name(file) {
                    bail!("{arg}: after ':' comes the name of one .gguf file of the repository (org/name-GGUF:model-Q8_0.gguf)");
                }
                return Ok(ModelRef::Hub {
                    repo,
                    revision,
                    file: Some(file.to_string()),
                });
            }
        }
        if let Some((repo, revision)) = parse_hub_id(arg) {
            return Ok(ModelRef::Hub {
                repo,
                revision,
                file: None,
            });
        }
        let names: Vec<&str> = aliases.0.keys().map(String::as_str).collect();
        let mut msg = format!("unknown model alias '{arg}'");
        if let Some(c) = tasks::registry::closest_name(arg, &names) {
            msg.push_str(&format!(" (did you mean '{c}'?)"));
        }
        msg.push_str(&format!(
            "; known aliases: {}; or pass a Hub id (org/name) or a local folder",
            names.join(", ")
        ));
        bail!(msg)
    }

    /// This reference with `file` as its GGUF file when it is a Hub id without one
    /// (`--gguf-file`); anything else as it is.
    pub fn with_gguf_file(self, file: Option<&str>) -> Self {
        match (self, file) {
            (
                ModelRef::Hub {
                    repo,
                    revision,
                    file: None,
                },
                Some(f),
            ) => ModelRef::Hub {
                repo,
                revision,
                file: Some(f.to_string()),
            },
            (other, _) => other,
        }
    }

    pub fn source(&self) -> &'static str {
        match self {
            ModelRef::Alias(_) => "alias",
            ModelRef::Hub { .. } => "hub",
            ModelRef::Local(_) => "local",
            ModelRef::Mock(_) => "mock",
        }
    }
}

/// Whether `name` can name one `.gguf` file of a repository (no folder part).
pub fn is_gguf_file_name(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".gguf") && !name.contains(['/', '\\'])
}

/// `org/name` or `org/name@revision`, with Hub-legal characters.
fn parse_hub_id(arg: &str) -> Option<(String, Option<String>)> {
    let (repo, revision) = match arg.split_once('@') {
        Some((r, rev)) if !rev.is_empty() => (r, Some(rev.to_string())),
        Some(_) => return None,
        None => (arg, None),
    };
    let (org, name) = repo.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    (ok(org) && ok(name)).then(|| (repo.to_string(), revision))
}

/// A checkpoint as a local folder: `(id, folder, resolved)`, where `resolved` is
/// `repo@commit` for a Hub model (downloaded, or found in the cache when offline) and `None` for
/// a local one, whose canonical path the loader records.
pub fn local_snapshot(ckpt: &ModelRef) -> Result<(String, PathBuf, Option<String>)> {
    match ckpt {
        ModelRef::Local(dir) => Ok((dir.display().to_string(), dir.clone(), None)),
        ModelRef::Hub {
            repo,
            revision,
            file: None,
        } => {
            let (dir, sha) = download(repo, revision.as_deref())?;
            Ok((repo.clone(), dir, Some(format!("{repo}@{sha}"))))
        }
        ModelRef::Hub {
            repo,
            revision,
            file: Some(file),
        } => {
            let (path, sha) = download_gguf(repo, revision.as_deref(), file)?;
            Ok((
                format!("{repo}:{file}"),
                path,
                Some(format!("{repo}@{sha}:{file}")),
            ))
        }
        ModelRef::Alias(a) => bail!("alias '{a}' must be resolved per task"),
        ModelRef::Mock(spec) => bail!("mock:{spec} has no files"),
    }
}

/// The checkpoint to load for `model` on `task`: the alias's fine-tuned checkpoint for that task
/// when it has one, its base checkpoint otherwise; a Hub id or folder as it is.
pub fn checkpoint_for(model: &ModelRef, task: &str, aliases: &AliasTable) -> ModelRef {
    match model {
        ModelRef::Alias(name) => {
            let alias = &aliases.0[name];
            let id = alias.tasks.get(task).unwrap_or(&alias.base);
            let (repo, revision) = parse_hub_id(id).unwrap_or((id.clone(), None));
            ModelRef::Hub {
                repo,
                revision,
                file: None,
            }
        }
        other => other.clone(),
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The Hub cache folder: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
fn hub_cache() -> hf_hub::Cache {
    match std::env::var("HF_HUB_CACHE") {
        Ok(p) if !p.is_empty() => hf_hub::Cache::new(PathBuf::from(p)),
        _ => hf_hub::Cache::from_env(),
    }
}

/// The online Hub client over `cache`, and the endpoint it talks to (`HF_ENDPOINT` or the
/// public Hub), for error messages.
fn hub_client(cache: hf_hub::Cache) -> Result<(hf_hub::api::sync::Api, String)> {
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let env = |k: &str| std::env::var(k).ok();
    // hf-hub reads only the token file of `huggingface-cli login`; CI runners pass a secret.
    let token = hub_token(&env).or_else(|| cache.token());
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
        .with_progress(false)
        .with_endpoint(endpoint.clone())
        .with_token(token)
        .with_retries(hub_retries(&env))
        .build()
        .context("cannot set up the Hugging Face Hub client")?;
    Ok((api, endpoint))
}

/// The Hub token from the environment: `HF_TOKEN`, else the older `HUGGING_FACE_HUB_TOKEN`
/// (the names `huggingface_hub` reads); empty values do not count.
pub fn hub_token(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"]
        .into_iter()
        .filter_map(env)
        .map(|t| t.trim().to_string())
        .find(|t| !t.is_empty())
}

/// How often a failed download or Hub request is retried (`HARNESS_HUB_RETRIES`, default 3;
/// hosted runners see transient 5xx and resets). Downloads resume where they stopped.
pub fn hub_retries(env: &dyn Fn(&str) -> Option<String>) -> usize {
    env("HARNESS_HUB_RETRIES")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(3)
}

/// `f` tried once and then up to `retries` more times, waiting 0.5 s, 1 s, 2 s ... (at most
/// 10 s) between tries; the last error is returned.
pub fn with_retries<T, E>(retries: usize, mut f: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let mut attempt = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if attempt >= retries => return Err(e),
            Err(_) => {
                let ms = (500u64 << attempt.min(5)).min(10_000);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                attempt += 1;
            }
        }
    }
}

/// Files a snapshot needs, in order of preference within each group.
const WANTED: &[&[&str]] = &[
    &["config.json"],
    &[
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    ],
    &["tokenizer.json", "vocab.txt"],
    &["tokenizer_config.json"],
    &["special_tokens_map.json"],
    &["modules.json"],
    &["1_Pooling/config.json"],
];

fn offline_hint(repo: &str) -> String {
    format!(
        "without network, download '{repo}' on a machine that has it (e.g. `huggingface-cli download {repo}`) and pass the folder instead: --teacher path/to/folder (config.json, tokenizer.json or vocab.txt, model.safetensors or pytorch_model.bin, or their shards with model.safetensors.index.json or pytorch_model.bin.index.json)"
    )
}

/// A model repository at `revision` (default `main`), and the revision as a string.
fn model_repo(repo: &str, revision: Option<&str>) -> (hf_hub::Repo, String) {
    let rev = revision.unwrap_or("main").to_string();
    let hf_repo =
        hf_hub::Repo::with_revision(repo.to_string(), hf_hub::RepoType::Model, rev.clone());
    (hf_repo, rev)
}

/// The commit a cached snapshot folder (`snapshots/<commit>`) holds, else `rev`.
fn snapshot_commit(snapshot: Option<&Path>, rev: String) -> String {
    snapshot
        .and_then(Path::file_name)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or(rev)
}

/// The repository's listing and commit, retried; `what` names what was to be fetched in the
/// error, `hint` how to go on without the Hub.
fn repo_info(
    api_repo: &hf_hub::api::sync::ApiRepo,
    endpoint: &str,
    what: &str,
    hint: &str,
) -> Result<hf_hub::api::RepoInfo> {
    let retries = hub_retries(&|k| std::env::var(k).ok());
    with_retries(retries, || api_repo.info()).map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the Hugging Face Hub at {endpoint} to fetch {what} ({e}); {hint}"
        )
    })
}

/// Make a Hub checkpoint available locally and return its snapshot folder and resolved
/// revision. With `HF_HUB_OFFLINE=1` only the cache is consulted.
pub fn download(repo: &str, revision: Option<&str>) -> Result<(PathBuf, String)> {
    let (hf_repo, rev) = model_repo(repo, revision);
    let cache = hub_cache();
    if env_flag("HF_HUB_OFFLINE") {
        let cached = cache.repo(hf_repo.clone());
        let config = cached.get("config.json").with_context(|| {
            format!(
                "HF_HUB_OFFLINE is set and '{repo}' (revision {rev}) is not in the Hub cache at {}; {}",
                cache.path().display(),
                offline_hint(repo)
            )
        })?;
        let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
        let commit = snapshot_commit(Some(&dir), rev);
        return Ok((dir, commit));
    }
    let (api, endpoint) = hub_client(cache)?;
    let api_repo = api.repo(hf_repo);
    let info = repo_info(
        &api_repo,
        &endpoint,
        &format!("'{repo}'"),
        &offline_hint(repo),
    )?;
    let present: std::collections::BTreeSet<&str> =
        info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let mut dir = None;
    for group in WANTED {
        if let Some(name) = group.iter().find(|n| present.contains(*n)) {
            let path = api_repo
                .get(name)
                .with_context(|| format!("downloading {name} of '{repo}' from {endpoint}"))?;
            if *name == "config.json" {
                dir = path.parent().map(Path::to_path_buf);
            }
            if name.ends_with(".index.json") {
                // A sharded checkpoint: every shard the index names.
                let raw: serde_json::Value = super::read_json(&path)?;
                for shard in super::checkpoint::shard_names(&raw).unwrap_or_default() {
                    api_repo.get(shard).with_context(|| {
                        format!("downloading {shard} of '{repo}' from {endpoint}")
                    })?;
                }
            }
        }
    }
    let dir = dir.with_context(|| format!("'{repo}' on the Hub has no config.json"))?;
    Ok((dir, info.sha))
}

/// Make one `.gguf` file of a Hub repository available locally (with the repository's
/// `tokenizer.json` beside it when it has one, which the loader prefers to the GGUF's own
/// vocabulary) and return its path and the resolved commit. With `HF_HUB_OFFLINE=1` only the
/// cache is consulted.
pub fn download_gguf(repo: &str, revision: Option<&str>, file: &str) -> Result<(PathBuf, String)> {
    let (hf_repo, rev) = model_repo(repo, revision);
    let cache = hub_cache();
    let hint = || {
        format!(
            "without network, download it on a machine that has it (e.g. `huggingface-cli download {repo} {file}`) and pass the file instead: --teacher path/to/{file}"
        )
    };
    if env_flag("HF_HUB_OFFLINE") {
        let path = cache.repo(hf_repo).get(file).with_context(|| {
            format!(
                "HF_HUB_OFFLINE is set and {file} of '{repo}' (revision {rev}) is not in the Hub cache at {}; {}",
                cache.path().display(),
                hint()
            )
        })?;
        let commit = snapshot_commit(path.parent(), rev);
        return Ok((path, commit));
    }
    let (api, endpoint) = hub_client(cache)?;
    let api_repo = api.repo(hf_repo);
    let info = repo_info(
        &api_repo,
        &endpoint,
        &format!("{file} of '{repo}'"),
        &hint(),
    )?;
    let present: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    check_gguf_listed(repo, file, &present)?;
    let path = api_repo
        .get(file)
        .with_context(|| format!("downloading {file} of '{repo}' from {endpoint}"))?;
    if present.contains(&"tokenizer.json") {
        api_repo
            .get("tokenizer.json")
            .with_context(|| format!("downloading tokenizer.json of '{repo}' from {endpoint}"))?;
    }
    Ok((path, info.sha))
}

/// Refuse a file the repository does not list, naming the `.gguf` files it has (closest
/// first).
fn check_gguf_listed(repo: &str, file: &str, present: &[&str]) -> Result<()> {
    if present.contains(&file) {
        return Ok(());
    }
    let ggufs: Vec<&str> = present
        .iter()
        .copied()
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    if ggufs.is_empty() {
        bail!("'{repo}' has no {file} and no .gguf files at all; is it a GGUF repository?");
    }
    let mut msg = format!("'{repo}' has no {file}");
    if let Some(c) = tasks::registry::closest_name(file, &ggufs) {
        msg.push_str(&format!(" (did you mean '{c}'?)"));
    }
    msg.push_str(&format!("; its .gguf files: {}", ggufs.join(", ")));
    bail!(msg)
}

/// Fetch files of a Hub *dataset* repository (revision `main`), from the cache only when
/// `HF_HUB_OFFLINE` is set. Returns local paths in the order asked.
pub fn fetch_dataset_files(repo: &str, files: &[String]) -> Result<Vec<PathBuf>> {
    let hf_repo = hf_hub::Repo::new(repo.to_string(), hf_hub::RepoType::Dataset);
    let cache = hub_cache();
    let data_hint = "pass --data-dir with a folder in the GLUE layout (SST-2/dev.tsv, ...) instead";
    if env_flag("HF_HUB_OFFLINE") {
        let cached = cache.repo(hf_repo);
        return files
            .iter()
            .map(|f| {
                cached.get(f).with_context(|| {
                    format!(
                        "HF_HUB_OFFLINE is set and {f} of the dataset '{repo}' is not in the Hub cache at {}; {data_hint}",
                        cache.path().display()
                    )
                })
            })
            .collect();
    }
    let (api, endpoint) = hub_client(cache)?;
    let api_repo = api.repo(hf_repo);
    files
        .iter()
        .map(|f| {
            api_repo.get(f).map_err(|e| {
                anyhow::anyhow!(
                    "cannot fetch {f} of the dataset '{repo}' from the Hugging Face Hub at {endpoint} ({e}); {data_hint}"
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_token_and_retries_come_from_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(hub_token(&env(&[])), None);
        assert_eq!(
            hub_token(&env(&[("HF_TOKEN", " hf_abc\n")])).as_deref(),
            Some("hf_abc")
        );
        assert_eq!(
            hub_token(&env(&[
                ("HF_TOKEN", ""),
                ("HUGGING_FACE_HUB_TOKEN", "hf_old")
            ]))
            .as_deref(),
            Some("hf_old")
        );
        assert_eq!(hub_retries(&env(&[])), 3);
        assert_eq!(hub_retries(&env(&[("HARNESS_HUB_RETRIES", "0")])), 0);
        assert_eq!(hub_retries(&env(&[("HARNESS_HUB_RETRIES", "x")])), 3);
    }

    #[test]
    fn retries_stop_at_success_or_after_the_last_try() {
        let mut calls = 0;
        let r: Result<u32, String> = with_retries(2, || {
            calls += 1;
            if calls < 2 {
                Err(format!("fail {calls}"))
            } else {
                Ok(7)
            }
        });
        assert_eq!((r, calls), (Ok(7), 2));
        let mut calls = 0;
        let r: Result<u32, String> = with_retries(1, || {
            calls += 1;
            Err(format!("fail {calls}"))
        });
        assert_eq!((r, calls), (Err("fail 2".to_string()), 2));
    }

    #[test]
    fn builtin_aliases_cover_glue_for_both_teacher_and_student() {
        let t = AliasTable::builtin();
        for alias in ["bert-base", "distilbert"] {
            let a = &t.0[alias];
            for task in tasks::REGISTRY.iter().map(|t| t.name()) {
                let id = a
                    .tasks
                    .get(task)
                    .unwrap_or_else(|| panic!("{alias} lacks {task}"));
                assert!(
                    parse_hub_id(id).is_some(),
                    "{alias}/{task}: '{id}' is not a Hub id"
                );
            }
        }
        assert_eq!(
            t.0["distilbert"].tasks["sst2"],
            "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
        );
    }

    #[test]
    fn decoder_aliases_point_at_their_hub_models() {
        let t = AliasTable::builtin();
        assert_eq!(t.0["gpt2"].base, "openai-community/gpt2");
        assert_eq!(t.0["distilgpt2"].base, "distilbert/distilgpt2");
        // The LLM families: each a plain Hub id, so --teacher llama-3.2-3b --student
        // llama-3.2-1b resolves without a task table.
        for (alias, repo) in [
            ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M"),
            ("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B"),
            ("llama-3.2-1b", "meta-llama/Llama-3.2-1B"),
            ("phi-4-mini", "microsoft/Phi-4-mini-instruct"),
            ("gemma-3-1b", "google/gemma-3-1b-pt"),
        ] {
            assert_eq!(t.0[alias].base, repo);
            assert!(t.0[alias].tasks.is_empty(), "{alias}");
            assert!(parse_hub_id(repo).is_some(), "{repo}");
        }
    }

    #[test]
    fn parses_each_kind_of_reference() {
        let t = AliasTable::builtin();
        assert_eq!(
            ModelRef::parse("bert-base", &t).unwrap(),
            ModelRef::Alias("bert-base".into())
        );
        assert_eq!(
            ModelRef::parse("org/name@v1.0", &t).unwrap(),
            ModelRef::Hub {
                repo: "org/name".into(),
                revision: Some("v1.0".into()),
                file: None,
            }
        );
        assert_eq!(
            ModelRef::parse("org/name-GGUF@v2:model-Q8_0.gguf", &t).unwrap(),
            ModelRef::Hub {
                repo: "org/name-GGUF".into(),
                revision: Some("v2".into()),
                file: Some("model-Q8_0.gguf".into()),
            }
        );
        let err = ModelRef::parse("org/name:config.json", &t)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("after ':' comes the name of one .gguf file"),
            "{err}"
        );
        // --gguf-file fills in a Hub id without a file, and nothing else.
        let f = Some("m.gguf");
        let hub = ModelRef::parse("org/name", &t).unwrap().with_gguf_file(f);
        assert!(matches!(hub, ModelRef::Hub { file: Some(ref x), .. } if x == "m.gguf"));
        let own = ModelRef::parse("org/name:own.gguf", &t)
            .unwrap()
            .with_gguf_file(f);
        assert!(matches!(own, ModelRef::Hub { file: Some(ref x), .. } if x == "own.gguf"));
        let alias = ModelRef::parse("gpt2", &t).unwrap().with_gguf_file(f);
        assert_eq!(alias, ModelRef::Alias("gpt2".into()));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_str().unwrap();
        assert_eq!(
            ModelRef::parse(p, &t).unwrap(),
            ModelRef::Local(dir.path().into())
        );
    }

    #[test]
    fn a_gguf_file_the_repository_lacks_is_refused_with_the_files_it_has() {
        let listed = ["README.md", "model-Q4_K_M.gguf", "model-Q8_0.gguf"];
        assert!(check_gguf_listed("org/m-GGUF", "model-Q8_0.gguf", &listed).is_ok());
        let err = check_gguf_listed("org/m-GGUF", "model-q8_0.gguf", &listed)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "'org/m-GGUF' has no model-q8_0.gguf (did you mean 'model-Q8_0.gguf'?); its .gguf files: model-Q4_K_M.gguf, model-Q8_0.gguf"
        );
        let err = check_gguf_listed("org/m", "x.gguf", &["config.json"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no .gguf files at all"), "{err}");
    }

    #[test]
    fn unknown_alias_suggests_closest() {
        let err = ModelRef::parse("distilbrt", &AliasTable::builtin())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown model alias 'distilbrt' (did you mean 'distilbert'?)"),
            "{err}"
        );
    }

    #[test]
    fn missing_folder_is_reported_as_such() {
        let err = ModelRef::parse("./no/such/model", &AliasTable::builtin())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "model folder not found: ./no/such/model");
    }

    #[test]
    fn alias_resolves_per_task() {
        let t = AliasTable::builtin();
        let m = ModelRef::Alias("distilbert".into());
        match checkpoint_for(&m, "sst2", &t) {
            ModelRef::Hub { repo, .. } => assert_eq!(
                repo,
                "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
            ),
            other => panic!("{other:?}"),
        }
    }
}
