//! This hop's part of the page, rendered with minijinja from TEMPLATES_DIR.
//!
//! The templates are compiled once and kept. Every request looks at the files
//! on disk (size, times, inode: a `stat` each) and recompiles them all when
//! one changed, so an edited template shows on the next request without a
//! restart. An edit that does not compile leaves the last good templates
//! serving; the readiness probe reports it until the files are fixed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

use minijinja::{Environment, ErrorKind, Value};
use tracing::field::Empty;

/// The whole page, rendered by the hop a client called from outside the chain.
pub const PAGE: &str = "page.html";
/// One hop's part; the page includes it, and every other hop renders it alone.
pub const PART: &str = "part.html";
const REQUIRED: [&str; 2] = [PAGE, PART];
/// Templates are small; anything larger is not one of ours.
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;
const MAX_TEMPLATES: usize = 64;

pub struct Templates {
    dir: PathBuf,
    current: RwLock<Arc<Compiled>>,
    /// Taken while reloading, so that one request compiles and the others
    /// wait for its result. Holds the edit on disk that failed to compile.
    broken: Mutex<Option<BrokenEdit>>,
}

/// Compiled templates and the state of the files they were read from.
struct Compiled {
    environment: Environment<'static>,
    names: Vec<String>,
    files: Snapshot,
}

/// An edit that did not compile, reported once and not retried until the
/// files change again.
struct BrokenEdit {
    files: Snapshot,
    reason: String,
}

/// What `template load` did for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// The files were unchanged: the compiled templates were used.
    Cached,
    /// A file changed: all were read and compiled, this many bytes.
    Reloaded { bytes: u64 },
    /// A file changed but did not compile: the last good ones were used.
    ReloadFailed,
}

impl Templates {
    /// Reads and compiles every template of `dir`; `page.html` and
    /// `part.html` must be among them.
    pub fn open(dir: &Path) -> Result<Self, minijinja::Error> {
        let (compiled, _) = Compiled::read(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(compiled)),
            broken: Mutex::new(None),
        })
    }

    /// Picks up changed files (without spans), and says whether the
    /// templates on disk are the ones serving: the readiness probe.
    pub fn check(&self) -> Result<(), String> {
        self.fresh();
        match &*self.lock_broken() {
            Some(broken) => Err(broken.reason.clone()),
            None => Ok(()),
        }
    }

    /// Renders `name`, after a `template load` span that says whether the
    /// compiled templates were current or had to be read again.
    pub fn render(&self, name: &str, context: Value) -> Result<String, minijinja::Error> {
        let load_span = tracing::info_span!(
            "template load",
            template.name = name,
            template.cached = Empty,
            template.bytes = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let (compiled, load) = load_span.in_scope(|| self.fresh());
        match load {
            Load::Cached => load_span.record("template.cached", true),
            Load::Reloaded { bytes } => load_span
                .record("template.cached", false)
                .record("template.bytes", bytes as i64),
            Load::ReloadFailed => {
                let reason = self.lock_broken().as_ref().map(|b| b.reason.clone());
                load_span
                    .record("template.cached", true)
                    .record("otel.status_code", "ERROR")
                    .record(
                        "otel.status_description",
                        format!(
                            "reload failed, serving the last good templates: {}",
                            reason.unwrap_or_default()
                        ),
                    )
            }
        };
        drop(load_span);

        let render_span = tracing::info_span!(
            "template render",
            template.name = name,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let rendered = render_span.in_scope(|| {
            compiled
                .environment
                .get_template(name)
                .and_then(|template| template.render(context))
        });
        if let Err(error) = &rendered {
            render_span.record("otel.status_code", "ERROR");
            render_span.record("otel.status_description", describe(error));
        }
        rendered
    }

    /// The templates to render with: the compiled ones, recompiled first
    /// when a file changed since.
    fn fresh(&self) -> (Arc<Compiled>, Load) {
        let current = self.read_current();
        let on_disk = Snapshot::take(&self.dir, &current.names);
        if current.files == on_disk {
            return (current, Load::Cached);
        }
        let mut broken = self.lock_broken();
        // Another request may have reloaded while this one waited.
        let current = self.read_current();
        if current.files == on_disk {
            return (current, Load::Cached);
        }
        if broken.as_ref().is_some_and(|b| b.files == on_disk) {
            return (current, Load::Cached);
        }
        match Compiled::read(&self.dir) {
            Ok((compiled, bytes)) => {
                let compiled = Arc::new(compiled);
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = compiled.clone();
                if broken.take().is_some() {
                    tracing::info!(dir = %self.dir.display(), "templates fixed and reloaded");
                } else {
                    tracing::info!(dir = %self.dir.display(), bytes, "templates reloaded");
                }
                (compiled, Load::Reloaded { bytes })
            }
            Err(error) => {
                let reason = describe(&error);
                tracing::warn!(
                    dir = %self.dir.display(),
                    %reason,
                    "edited templates do not compile; still serving the last good ones"
                );
                *broken = Some(BrokenEdit {
                    files: on_disk,
                    reason,
                });
                (current, Load::ReloadFailed)
            }
        }
    }

    fn read_current(&self) -> Arc<Compiled> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock_broken(&self) -> MutexGuard<'_, Option<BrokenEdit>> {
        self.broken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A template error with its causes: an error inside an included template
/// is only named by the outer one.
pub fn describe(error: &minijinja::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

impl Compiled {
    /// Reads and compiles every `*.html` of `dir`; gives the bytes read.
    fn read(dir: &Path) -> Result<(Self, u64), minijinja::Error> {
        let names = template_names(dir)?;
        if let Some(missing) = REQUIRED
            .iter()
            .find(|name| !names.iter().any(|n| n == *name))
        {
            return Err(minijinja::Error::new(
                ErrorKind::TemplateNotFound,
                format!("{} is missing", dir.join(missing).display()),
            ));
        }
        // Taken before reading: a change while reading shows as a change
        // on the next look, never the other way round.
        let files = Snapshot::take(dir, &names);
        let mut environment = Environment::new();
        let mut bytes = 0;
        for name in &names {
            let source = read_template(&dir.join(name))?;
            bytes += source.len() as u64;
            environment.add_template_owned(name.clone(), source)?;
        }
        Ok((
            Self {
                environment,
                names,
                files,
            },
            bytes,
        ))
    }
}

/// The `*.html` files of `dir`, by name.
fn template_names(dir: &Path) -> Result<Vec<String>, minijinja::Error> {
    let entries = std::fs::read_dir(dir).map_err(|error| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot read {}: {error}", dir.display()),
        )
    })?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_type()
                .is_ok_and(|t| t.is_file() || t.is_symlink())
        })
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.ends_with(".html") && !name.starts_with('.'))
        .collect();
    names.sort();
    if names.len() > MAX_TEMPLATES {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "{} holds {} templates, more than {MAX_TEMPLATES}",
                dir.display(),
                names.len()
            ),
        ));
    }
    Ok(names)
}

fn read_template(path: &Path) -> Result<String, minijinja::Error> {
    let cannot = |reason: String| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot read {}: {reason}", path.display()),
        )
    };
    let size = std::fs::metadata(path)
        .map_err(|e| cannot(e.to_string()))?
        .len();
    if size > MAX_TEMPLATE_BYTES {
        return Err(cannot(format!(
            "{size} bytes, more than {MAX_TEMPLATE_BYTES}"
        )));
    }
    std::fs::read_to_string(path).map_err(|e| cannot(e.to_string()))
}

/// What the templates directory and its files look like on disk: enough to
/// see an edit, a file written anew (another inode), and a file added or
/// removed (the directory changes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot(Vec<Option<Stamp>>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    changed: (i64, i64),
    #[cfg(unix)]
    inode: u64,
}

impl Snapshot {
    /// The directory, then each of `names` in it: a `stat` each, no listing
    /// (a file added or removed changes the directory's own stamp).
    fn take(dir: &Path, names: &[String]) -> Self {
        let mut stamps = vec![stamp(dir)];
        stamps.extend(names.iter().map(|name| stamp(&dir.join(name))));
        Self(stamps)
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt as _;
    Some(Stamp {
        len: metadata.len(),
        modified: metadata.modified().ok(),
        #[cfg(unix)]
        changed: (metadata.ctime(), metadata.ctime_nsec()),
        #[cfg(unix)]
        inode: metadata.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "templates-unit-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(PAGE), "<p>{% include \"part.html\" %}</p>").unwrap();
        std::fs::write(dir.join(PART), "v1 {{ hop }}").unwrap();
        dir
    }

    #[test]
    fn unchanged_files_are_not_read_again() {
        let dir = scratch_dir();
        let templates = Templates::open(&dir).unwrap();
        assert_eq!(templates.fresh().1, Load::Cached);
        assert_eq!(templates.fresh().1, Load::Cached);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_edit_is_compiled_once_and_a_broken_one_keeps_the_last_good() {
        let dir = scratch_dir();
        let templates = Templates::open(&dir).unwrap();
        let render = |t: &Templates| t.render(PAGE, minijinja::context! { hop => 1 }).unwrap();
        assert_eq!(render(&templates), "<p>v1 1</p>");

        std::fs::write(dir.join(PART), "v2, longer {{ hop }}").unwrap();
        assert!(matches!(templates.fresh().1, Load::Reloaded { .. }));
        assert_eq!(templates.fresh().1, Load::Cached);
        assert_eq!(render(&templates), "<p>v2, longer 1</p>");

        std::fs::write(dir.join(PART), "{% if %}").unwrap();
        assert_eq!(templates.fresh().1, Load::ReloadFailed);
        // Reported once: the same broken files are not compiled again.
        assert_eq!(templates.fresh().1, Load::Cached);
        assert_eq!(render(&templates), "<p>v2, longer 1</p>");
        let reason = templates.check().unwrap_err();
        assert!(reason.contains("part.html"), "{reason}");

        std::fs::write(dir.join(PART), "v3 {{ hop }}").unwrap();
        assert!(templates.check().is_ok());
        assert_eq!(render(&templates), "<p>v3 1</p>");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_template_is_refused() {
        let dir = scratch_dir();
        std::fs::remove_file(dir.join(PART)).unwrap();
        let error = Templates::open(&dir).err().unwrap();
        assert!(error.to_string().contains("part.html"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
