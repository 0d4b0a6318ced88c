//! The precompiled-component cache (`PLUGIN_CACHE_DIR`): a blueprint compiled
//! once is kept as native code on disk, so the next start deserializes it in
//! milliseconds instead of compiling it again (seconds for a JavaScript or
//! Python component).
//!
//! # Entries
//!
//! One file per component and engine, `<dir>/<key>.cwasm`, where `key` is the
//! hex SHA-256 of this format's version, the component's SHA-256 and the
//! engine's [`Engine::precompile_compatibility_hash`]. That hash covers the
//! wasmtime version, the target and Cranelift flags, the enabled wasm features
//! and the tunables (epoch interruption, memory reservation and guards, …), so
//! code compiled for another engine setup simply has another name and is never
//! offered to this one.
//!
//! A file is a fixed header followed by the bytes of
//! [`Component::serialize`]:
//!
//! ```text
//! magic    8 bytes   b"avtcwasm"
//! version  4 bytes   FORMAT_VERSION, little-endian
//! key     32 bytes   the entry key (a file copied under another name fails)
//! sha256  32 bytes   SHA-256 of the artifact
//! length   8 bytes   the artifact's length, little-endian
//! artifact
//! ```
//!
//! # Trust
//!
//! [`Component::deserialize`] runs the native code it is given, so the cache
//! directory is as trusted as the server binary: it must be writable by the
//! server's user only. A directory another user (root aside) owns, that
//! group or others may write to, that is a symbolic link, or under a folder
//! someone else could replace it in (another user's, or group- or
//! world-writable without the sticky bit, along the path as given and as
//! resolved) is refused (with a warning, and the server compiles as if the
//! cache were off; see `check_trusted`). Within that, an
//! entry is only deserialized after its header, key, length and checksum match,
//! which rules out torn writes, truncation, disk corruption and stray files;
//! wasmtime then checks the artifact's own version and engine settings again.
//! An entry failing any of these is deleted and rebuilt with a warning.
//!
//! # Writes
//!
//! New entries are written to a temporary file in the same directory and
//! renamed into place, so servers sharing the directory never see half a file.
//! No write failure (read-only directory, full disk) stops a blueprint from
//! loading: it is logged and the compiled component is used as it is.

use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bumped whenever the header or the key's inputs change, so entries of an
/// older layout get other names (and fail the header check if renamed).
const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"avtcwasm";
const HEADER_LEN: usize = 8 + 4 + 32 + 32 + 8;
const EXTENSION: &str = "cwasm";
/// A temporary file this old was left by a writer that died (a write takes
/// milliseconds); younger ones may belong to a server starting right now.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Makes temporary file names unique among this process's threads.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Deserialized from a verified entry.
    Hit,
    /// Compiled: there was no entry yet.
    Miss,
    /// Compiled: the entry there was unreadable, failed verification or was
    /// refused by wasmtime, and has been replaced.
    Rebuilt,
    /// Compiled: the cache is off.
    Disabled,
}

impl CacheOutcome {
    /// The wire name, as in logs and the `result` label of
    /// `avtomatika_plugin_cache_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Rebuilt => "rebuilt",
            Self::Disabled => "disabled",
        }
    }
}

/// Running totals of cache outcomes since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub rebuilt: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    rebuilt: AtomicU64,
}

/// Where compiled components are kept; cheap to clone (clones share counts).
#[derive(Clone, Default)]
pub struct ComponentCache {
    /// `None`: off, every load compiles.
    dir: Option<PathBuf>,
    counters: Arc<Counters>,
}

impl ComponentCache {
    /// No cache: every load compiles.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// The cache in `dir`, created (owner-only) if missing. A directory that
    /// cannot be created, or that users other than the owner may write to,
    /// turns the cache off with a warning: start-up never fails over it.
    pub fn open(dir: &Path) -> Self {
        match prepare_dir(dir) {
            Ok(()) => {
                remove_stale_temp_files(dir);
                Self { dir: Some(dir.to_owned()), counters: Arc::default() }
            }
            Err(reason) => {
                tracing::warn!(
                    dir = %dir.display(), %reason,
                    "plugin cache disabled (PLUGIN_CACHE_DIR): blueprints are compiled at every start"
                );
                Self::disabled()
            }
        }
    }

    /// The directory entries are kept in, if the cache is on.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            rebuilt: self.counters.rebuilt.load(Ordering::Relaxed),
        }
    }

    /// The compiled form of the component `wasm` (read from `file`, named in
    /// logs), whose SHA-256 is `digest` (see [`digest`]; the caller has it
    /// already as the blueprint's version, and hashing 20 MB twice is not
    /// free): deserialized from its entry when one verifies, compiled (and
    /// stored) otherwise. Fails only when `wasm` does not compile.
    pub fn load(
        &self,
        engine: &Engine,
        file: &str,
        wasm: &[u8],
        digest: &[u8; 32],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let started = Instant::now();
        let Some(dir) = &self.dir else {
            let component = Component::new(engine, wasm)?;
            log_ready(file, CacheOutcome::Disabled, started.elapsed(), None);
            return Ok((component, CacheOutcome::Disabled));
        };
        let key = entry_key(engine, digest);
        let path = dir.join(format!("{}.{EXTENSION}", hex(&key)));

        let outcome = match fs::read(&path) {
            Ok(entry) => match open_entry(engine, &entry, &key) {
                Ok(component) => {
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    log_ready(file, CacheOutcome::Hit, started.elapsed(), Some(&path));
                    return Ok((component, CacheOutcome::Hit));
                }
                Err(reason) => {
                    tracing::warn!(
                        file, entry = %path.display(), %reason,
                        "plugin cache entry rejected; deleting it and compiling the component again"
                    );
                    remove_entry(&path);
                    CacheOutcome::Rebuilt
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => CacheOutcome::Miss,
            Err(e) => {
                tracing::warn!(
                    file, entry = %path.display(), error = %e,
                    "cannot read plugin cache entry; compiling the component again"
                );
                CacheOutcome::Rebuilt
            }
        };

        let component = Component::new(engine, wasm)?;
        let compiled = started.elapsed();
        match component.serialize() {
            Ok(artifact) => {
                if let Err(e) = write_entry(dir, &path, &key, &artifact) {
                    tracing::warn!(
                        file, entry = %path.display(), error = %e,
                        "cannot write plugin cache entry; the component will be compiled again next start"
                    );
                }
            }
            Err(e) => tracing::warn!(file, error = %e, "cannot serialize the compiled component for the plugin cache"),
        }
        let counter = if outcome == CacheOutcome::Miss { &self.counters.misses } else { &self.counters.rebuilt };
        counter.fetch_add(1, Ordering::Relaxed);
        log_ready(file, outcome, compiled, Some(&path));
        Ok((component, outcome))
    }
}

impl ComponentCache {
    /// The compiled component whose source had SHA-256 `version` (hex), if
    /// its entry is here and verifies: how a job's blueprint version that is
    /// no longer in `BLUEPRINTS_DIR` (replaced before a restart) comes back.
    /// Returns the entry's path too, to name the blueprint's origin.
    pub fn restore(&self, engine: &Engine, version: &str) -> Option<(Component, PathBuf)> {
        let dir = self.dir.as_ref()?;
        let digest = unhex(version)?;
        let key = entry_key(engine, &digest);
        let path = dir.join(format!("{}.{EXTENSION}", hex(&key)));
        let entry = fs::read(&path).ok()?;
        match open_entry(engine, &entry, &key) {
            Ok(component) => Some((component, path)),
            Err(reason) => {
                tracing::warn!(entry = %path.display(), %reason, "plugin cache entry rejected; deleting it");
                remove_entry(&path);
                None
            }
        }
    }
}

/// `hex` (64 lowercase hex digits) as bytes.
fn unhex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}

fn log_ready(file: &str, outcome: CacheOutcome, took: Duration, entry: Option<&Path>) {
    let ms = took.as_secs_f64() * 1e3;
    let entry = entry.map(|p| p.display().to_string()).unwrap_or_default();
    let entry = entry.as_str();
    match outcome {
        CacheOutcome::Hit => {
            tracing::info!(
                file,
                cache = outcome.as_str(),
                ms,
                entry,
                "blueprint component loaded from the plugin cache"
            )
        }
        _ => tracing::info!(file, cache = outcome.as_str(), ms, entry, "blueprint component compiled"),
    }
}

/// Creates `dir` (owner-only) if missing and checks that no one but this
/// server's user (or root) can put files in it or swap it for another
/// directory: see [`check_trusted`].
fn prepare_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    check_trusted(dir)
}

/// Whoever can write an entry, or replace the directory or any folder above
/// it, chooses native code this server runs. So, without following a link
/// at the directory itself (`symlink_metadata`):
///
/// - the directory must be a real directory, not a symbolic link (a link in
///   a shared folder could be retargeted after this check);
/// - it must be owned by this server's user or root (root: a read-only cache
///   baked into an image) and writable by its owner only, as sshd asks of
///   `~/.ssh`;
/// - every folder above it, both along the path as given and along the path
///   it resolves to, must be owned by this user or root and not writable by
///   group or others, unless it has the sticky bit (`/tmp`, `/var/tmp`):
///   there others may add entries but not rename or delete ours, so the
///   directory under it stays ours. A symbolic link on the way must itself
///   be owned by this user or root (in a sticky folder only a link's owner
///   may replace it).
#[cfg(unix)]
fn check_trusted(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;

    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = unsafe { libc::geteuid() };
    let trusted_owner = |uid: u32| uid == user || uid == 0;
    let refuse = |path: &Path, why: String| {
        Err(io::Error::other(format!("{}: {why}; entries there would run as native code", path.display())))
    };

    let itself = fs::symlink_metadata(dir)?;
    if itself.file_type().is_symlink() {
        return refuse(dir, "it is a symbolic link; name the real directory".into());
    }
    if !itself.is_dir() {
        return refuse(dir, "not a directory".into());
    }
    if !trusted_owner(itself.uid()) {
        return refuse(
            dir,
            format!("the directory belongs to uid {}, not to this server's user (uid {user}) or root", itself.uid()),
        );
    }
    if itself.mode() & 0o022 != 0 {
        return refuse(
            dir,
            format!(
                "the directory is writable by group or others (mode {:o}); it must be writable by its owner only (chmod go-w)",
                itself.mode() & 0o777
            ),
        );
    }

    let given = std::path::absolute(dir)?;
    let resolved = fs::canonicalize(dir)?;
    for path in [given, resolved] {
        for ancestor in path.ancestors().skip(1) {
            let link = fs::symlink_metadata(ancestor)?;
            if link.file_type().is_symlink() && !trusted_owner(link.uid()) {
                return refuse(
                    dir,
                    format!(
                        "the folder above it, {}, is a symbolic link owned by uid {}",
                        ancestor.display(),
                        link.uid()
                    ),
                );
            }
            // A link's target is checked along the resolved path; here what
            // matters is the folder the path goes through.
            let folder = fs::metadata(ancestor)?;
            if !trusted_owner(folder.uid()) {
                return refuse(
                    dir,
                    format!(
                        "the folder above it, {}, belongs to uid {}, not to this server's user (uid {user}) or root",
                        ancestor.display(),
                        folder.uid()
                    ),
                );
            }
            let sticky = folder.mode() & 0o1000 != 0;
            if folder.mode() & 0o022 != 0 && !sticky {
                return refuse(
                    dir,
                    format!(
                        "the folder above it, {}, is writable by group or others without the sticky bit (mode {:o}), \
                         so they could replace the directory",
                        ancestor.display(),
                        folder.mode() & 0o7777
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Elsewhere there are no owners and modes to check: the directory must at
/// least be a real one.
#[cfg(not(unix))]
fn check_trusted(dir: &Path) -> io::Result<()> {
    if fs::symlink_metadata(dir)?.is_dir() { Ok(()) } else { Err(io::Error::other("not a directory")) }
}

/// Deletes temporary files of writes that never finished (the server was
/// killed between creating and renaming one).
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        if name.starts_with('.') && name.ends_with(".tmp") && stale.is_some_and(|age| age > STALE_TEMP_AGE) {
            remove_entry(&entry.path());
        }
    }
}

/// The SHA-256 of a component: its blueprint version (in hex) and what its
/// cache entry is named after.
pub fn digest(wasm: &[u8]) -> [u8; 32] {
    Sha256::digest(wasm).into()
}

/// The entry's name, from the component's [`digest`]: what the compiled code
/// depends on, and nothing else.
fn entry_key(engine: &Engine, digest: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.0.update(MAGIC);
    hasher.0.update(FORMAT_VERSION.to_le_bytes());
    hasher.0.update(digest);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().into()
}

/// Feeds a [`Hash`] value into SHA-256: stable across processes and Rust
/// releases, unlike `DefaultHasher`, whose algorithm may change.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

/// Verifies `entry` against `key` and deserializes its artifact.
fn open_entry(engine: &Engine, entry: &[u8], key: &[u8; 32]) -> Result<Component, String> {
    let artifact = verify(entry, key)?;
    // SAFETY: `Component::deserialize` trusts its input to be the output of
    // `Component::serialize` from a compatible engine, because it maps that
    // native code as executable. `verify` has just checked that these bytes
    // are exactly an artifact this module wrote (same key, length and
    // SHA-256 as recorded in the header when `serialize` produced it), into a
    // directory only the server's user may write (`prepare_dir`). The key
    // covers the engine's compatibility hash, and wasmtime checks its own
    // version and settings header before using the code.
    unsafe { Component::deserialize(engine, artifact) }.map_err(|e| format!("wasmtime refused it: {e:#}"))
}

/// The artifact of `entry` if its header matches `key` and its contents.
fn verify<'a>(entry: &'a [u8], key: &[u8; 32]) -> Result<&'a [u8], String> {
    let (header, artifact) =
        entry.split_at_checked(HEADER_LEN).ok_or_else(|| format!("{} bytes: shorter than the header", entry.len()))?;
    let (magic, rest) = header.split_at(8);
    let (version, rest) = rest.split_at(4);
    let (stored_key, rest) = rest.split_at(32);
    let (checksum, length) = rest.split_at(32);
    if magic != MAGIC.as_slice() {
        return Err("not a plugin cache entry (bad magic)".into());
    }
    if version != FORMAT_VERSION.to_le_bytes().as_slice() {
        return Err("written by another cache format version".into());
    }
    if stored_key != key.as_slice() {
        return Err("made for another component or engine (key mismatch)".into());
    }
    let mut len = [0; 8];
    len.copy_from_slice(length);
    let expected = u64::from_le_bytes(len);
    if artifact.len() as u64 != expected {
        return Err(format!("truncated or extended: {} artifact bytes, header says {expected}", artifact.len()));
    }
    if Sha256::digest(artifact).as_slice() != checksum {
        return Err("checksum mismatch (corrupted)".into());
    }
    Ok(artifact)
}

/// Writes the entry to a temporary file next to `path` and renames it into
/// place. Not synced: an entry lost or torn by a crash fails verification
/// next time and is rebuilt, which is cheaper than an fsync per blueprint.
fn write_entry(dir: &Path, path: &Path, key: &[u8; 32], artifact: &[u8]) -> io::Result<()> {
    let temp =
        dir.join(format!(".{}.{}.{}.tmp", hex(key), std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let written = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = io::BufWriter::new(options.open(&temp)?);
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        out.write_all(key)?;
        out.write_all(&Sha256::digest(artifact))?;
        out.write_all(&(artifact.len() as u64).to_le_bytes())?;
        out.write_all(artifact)?;
        out.into_inner().map_err(io::IntoInnerError::into_error)?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        // Nothing to do if this fails too: the write's error is the news.
        let _ = fs::remove_file(&temp);
    }
    written
}

fn remove_entry(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(entry = %path.display(), error = %e, "cannot delete rejected plugin cache entry"),
    }
}

/// `bytes` as lowercase hex (cache keys, blueprint versions).
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use wasmtime::Config as EngineConfig;

    use super::*;
    use crate::config::{InstancePolicy, PluginLimits};
    use crate::runtime::{Runtime, Source, Step, types};

    fn hello() -> Vec<u8> {
        fs::read(avtomatika_plugins::HELLO_COMPONENT).unwrap()
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        found.sort();
        found
    }

    fn only_entry(dir: &Path) -> PathBuf {
        let found = entries(dir);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].extension().unwrap(), EXTENSION);
        found[0].clone()
    }

    /// Loads `hello` into a fresh runtime on `cache` and runs a job's first
    /// step: a component taken from the cache must work, not merely be
    /// accepted by wasmtime. Returns how the load went.
    async fn run_hello(cache: &ComponentCache) -> CacheOutcome {
        let before = cache.stats();
        let runtime = Runtime::new(PluginLimits::default(), InstancePolicy::default(), 2, cache.clone()).unwrap();
        runtime.load(vec![Source { file: "hello.wasm".into(), bytes: hello() }]).await.unwrap();
        let blueprint = runtime.blueprint("hello").unwrap();
        let context = types::JobContext {
            job_id: "6f0f5a43-3a3c-4f6e-9d1e-3f0c2d9d8a11".into(),
            blueprint: "hello".into(),
            current_state: "start".into(),
            initial_data: r#"{"name":"Ada"}"#.into(),
            state_history: "{}".into(),
            client: types::Client { name: "default".into(), plan: None, params: "{}".into() },
            aggregation_results: None,
            child_result: None,
            webhook_url: None,
        };
        let outcome = runtime.handle(&blueprint, context).await.unwrap();
        assert!(matches!(&outcome.step, Step::Dispatch(task) if task.task_type == "greet"), "{:?}", outcome.step);
        let after = cache.stats();
        match (after.hits - before.hits, after.misses - before.misses, after.rebuilt - before.rebuilt) {
            (1, 0, 0) => CacheOutcome::Hit,
            (0, 1, 0) => CacheOutcome::Miss,
            (0, 0, 1) => CacheOutcome::Rebuilt,
            _ => CacheOutcome::Disabled,
        }
    }

    #[tokio::test]
    async fn a_miss_stores_the_component_and_the_next_load_hits() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ComponentCache::open(tmp.path());

        assert_eq!(run_hello(&cache).await, CacheOutcome::Miss);
        let entry = only_entry(tmp.path());
        let written = fs::metadata(&entry).unwrap().modified().unwrap();
        assert_eq!(run_hello(&cache).await, CacheOutcome::Hit);
        assert_eq!(only_entry(tmp.path()), entry);
        assert_eq!(fs::metadata(&entry).unwrap().modified().unwrap(), written, "a hit writes nothing");
        assert_eq!(cache.stats(), CacheStats { hits: 1, misses: 1, rebuilt: 0 });

        // Another cache value on the same directory (another server) hits too.
        assert_eq!(run_hello(&ComponentCache::open(tmp.path())).await, CacheOutcome::Hit);
    }

    #[tokio::test]
    async fn a_corrupted_entry_is_rebuilt_and_the_component_works() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ComponentCache::open(tmp.path());
        run_hello(&cache).await;
        let entry = only_entry(tmp.path());

        // One flipped bit deep in the native code.
        let mut bytes = fs::read(&entry).unwrap();
        let middle = HEADER_LEN + (bytes.len() - HEADER_LEN) / 2;
        bytes[middle] ^= 0x40;
        fs::write(&entry, &bytes).unwrap();

        assert_eq!(run_hello(&cache).await, CacheOutcome::Rebuilt);
        assert_eq!(run_hello(&cache).await, CacheOutcome::Hit, "the rebuilt entry is good");
        assert_eq!(cache.stats(), CacheStats { hits: 1, misses: 1, rebuilt: 1 });
    }

    #[tokio::test]
    async fn truncated_empty_and_foreign_entries_are_rebuilt() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ComponentCache::open(tmp.path());
        run_hello(&cache).await;
        let entry = only_entry(tmp.path());
        let good = fs::read(&entry).unwrap();

        for damaged in [
            good[..good.len() - 1].to_vec(),
            good[..HEADER_LEN / 2].to_vec(),
            Vec::new(),
            // A plain core module where native code should be.
            b"\0asm\x01\0\0\0".to_vec(),
        ] {
            fs::write(&entry, &damaged).unwrap();
            assert_eq!(run_hello(&cache).await, CacheOutcome::Rebuilt, "{} bytes", damaged.len());
            let rewritten = fs::read(&entry).unwrap();
            let key: [u8; 32] = rewritten[12..44].try_into().unwrap();
            verify(&rewritten, &key).expect("rewritten whole");
        }
        assert_eq!(run_hello(&cache).await, CacheOutcome::Hit);
    }

    #[tokio::test]
    async fn an_entry_from_an_engine_with_other_settings_is_never_used() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ComponentCache::open(tmp.path());
        // Code compiled without epoch checks would never stop at a deadline.
        let mut config = EngineConfig::new();
        config.wasm_component_model(true).epoch_interruption(false);
        let other = Engine::new(&config).unwrap();
        let (_, outcome) = cache.load(&other, "hello.wasm", &hello(), &digest(&hello())).unwrap();
        assert_eq!(outcome, CacheOutcome::Miss);
        let foreign = only_entry(tmp.path());

        // The runtime's engine gets its own entry...
        assert_eq!(run_hello(&cache).await, CacheOutcome::Miss);
        let own = entries(tmp.path()).into_iter().find(|p| *p != foreign).unwrap();
        // ...and refuses the other one even under its own entry's name.
        fs::copy(&foreign, &own).unwrap();
        assert_eq!(run_hello(&cache).await, CacheOutcome::Rebuilt);
        // And with a header made for our entry, wasmtime's own check refuses it.
        let own_key: [u8; 32] = fs::read(&own).unwrap()[12..44].try_into().unwrap();
        let foreign_artifact = fs::read(&foreign).unwrap()[HEADER_LEN..].to_vec();
        fs::remove_file(&own).unwrap();
        write_entry(tmp.path(), &own, &own_key, &foreign_artifact).unwrap();
        assert_eq!(run_hello(&cache).await, CacheOutcome::Rebuilt);
        assert_eq!(run_hello(&cache).await, CacheOutcome::Hit);
    }

    #[tokio::test]
    async fn an_unusable_directory_only_costs_the_cache() {
        let tmp = tempfile::tempdir().unwrap();

        // Under a regular file the directory cannot be created (even as root).
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let cache = ComponentCache::open(&file.join("cache"));
        assert_eq!(cache.dir(), None);
        assert_eq!(run_hello(&cache).await, CacheOutcome::Disabled);

        // The entry can be neither read nor written: a directory holds its name.
        let dir = tmp.path().join("cache");
        let cache = ComponentCache::open(&dir);
        run_hello(&cache).await;
        let entry = only_entry(&dir);
        fs::remove_file(&entry).unwrap();
        fs::create_dir(&entry).unwrap();
        for _ in 0..2 {
            assert_eq!(run_hello(&cache).await, CacheOutcome::Rebuilt);
        }
        assert_eq!(entries(&dir), vec![entry], "no temporary file is left behind");
    }

    #[test]
    fn temporary_files_of_dead_writers_are_swept_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp.path().join(".abc.1.0.tmp");
        let live = tmp.path().join(".abc.2.0.tmp");
        for path in [&dead, &live] {
            fs::write(path, b"half an entry").unwrap();
        }
        let old = std::time::SystemTime::now() - 2 * STALE_TEMP_AGE;
        fs::File::options().write(true).open(&dead).unwrap().set_modified(old).unwrap();
        ComponentCache::open(tmp.path());
        assert_eq!(entries(tmp.path()), vec![live]);
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(ComponentCache::open(tmp.path()).dir(), None);
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let fresh = tmp.path().join("a/b");
        assert_eq!(ComponentCache::open(&fresh).dir(), Some(fresh.as_path()));
        assert_eq!(fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);

        // Another user's directory (only root may give one away to test it).
        let foreign = tmp.path().join("foreign");
        fs::create_dir(&foreign).unwrap();
        fs::set_permissions(&foreign, fs::Permissions::from_mode(0o755)).unwrap();
        if std::os::unix::fs::chown(&foreign, Some(54_321), None).is_ok() {
            assert_eq!(ComponentCache::open(&foreign).dir(), None);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_cache_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        // The target passes every check on its own; the link never does,
        // since whoever may replace it would choose the code we run.
        assert_eq!(ComponentCache::open(&real).dir(), Some(real.as_path()));
        assert_eq!(ComponentCache::open(&link).dir(), None);
        let reason = prepare_dir(&link).unwrap_err().to_string();
        assert!(reason.contains("symbolic link"), "{reason}");

        // A link above it owned by another user (only root can make one).
        let above = tmp.path().join("above");
        std::os::unix::fs::symlink(tmp.path(), &above).unwrap();
        if std::os::unix::fs::lchown(&above, Some(54_321), None).is_ok() {
            assert_eq!(ComponentCache::open(&above.join("real")).dir(), None);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_cache_under_a_folder_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        let cache = shared.join("deep/cache");
        for mode in [0o777, 0o775, 0o757] {
            fs::set_permissions(&shared, fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(ComponentCache::open(&cache).dir(), None, "under a folder of mode {mode:o}");
            let reason = prepare_dir(&cache).unwrap_err().to_string();
            assert!(reason.contains("without the sticky bit"), "{reason}");
        }
        // Reached through a link to it: the resolved path is checked too.
        let safe = tmp.path().join("safe");
        fs::create_dir(&safe).unwrap();
        std::os::unix::fs::symlink(&shared, safe.join("to-shared")).unwrap();
        assert_eq!(ComponentCache::open(&safe.join("to-shared/deep/cache")).dir(), None);

        // Sticky, like /tmp: others may add their own entries but not
        // replace ours, so a directory of ours with mode 0700 is accepted.
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(ComponentCache::open(&cache).dir(), Some(cache.as_path()));
        // But never a folder of another user's in between (only root can
        // give one away to test it).
        let foreign = shared.join("foreign");
        fs::create_dir(&foreign).unwrap();
        if std::os::unix::fs::chown(&foreign, Some(54_321), None).is_ok() {
            assert_eq!(ComponentCache::open(&foreign.join("cache")).dir(), None);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_private_directory_under_trusted_folders_is_accepted() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("a/b/cache");
        assert_eq!(ComponentCache::open(&dir).dir(), Some(dir.as_path()));
        // A link of ours above it (as /var/run -> /run) is fine.
        std::os::unix::fs::symlink(tmp.path().join("a"), tmp.path().join("alias")).unwrap();
        let via = tmp.path().join("alias/b/cache");
        assert_eq!(ComponentCache::open(&via).dir(), Some(via.as_path()));
    }

    #[test]
    fn invalid_wasm_fails_and_stores_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ComponentCache::open(tmp.path());
        let engine = Engine::new(EngineConfig::new().wasm_component_model(true)).unwrap();
        assert!(cache.load(&engine, "junk.wasm", b"not wasm", &digest(b"not wasm")).is_err());
        assert!(entries(tmp.path()).is_empty());
        assert_eq!(cache.stats(), CacheStats::default());
    }
}
