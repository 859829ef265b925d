//! This hop's part of the page, rendered with minijinja from TEMPLATES_DIR.
//!
//! Templates are read from disk on every request, so an edited template shows
//! at once and every trace has its `template load` and `template render` spans.

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, Value};

/// The whole page, rendered by the hop a client called from outside the chain.
pub const PAGE: &str = "page.html";
/// One hop's part; the page includes it, and every other hop renders it alone.
pub const PART: &str = "part.html";
const ALL: [&str; 2] = [PAGE, PART];

#[derive(Debug, Clone)]
pub struct Templates {
    dir: PathBuf,
}

impl Templates {
    /// Opens `dir` after checking that every template loads and compiles.
    pub fn open(dir: &Path) -> Result<Self, minijinja::Error> {
        let templates = Self {
            dir: dir.to_path_buf(),
        };
        templates.check()?;
        Ok(templates)
    }

    /// Loads and compiles every template, without spans (for start-up and
    /// the readiness probe).
    pub fn check(&self) -> Result<(), minijinja::Error> {
        let environment = self.environment(Tracing::Off);
        ALL.iter()
            .try_for_each(|name| environment.get_template(name).map(drop))
    }

    /// Renders `name`, loading it (and what it includes) from disk.
    pub fn render(&self, name: &str, context: Value) -> Result<String, minijinja::Error> {
        let environment = self.environment(Tracing::On);
        let template = environment.get_template(name)?;
        let span = tracing::info_span!(
            "template render",
            template.name = name,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        let rendered = span.in_scope(|| template.render(context));
        if let Err(error) = &rendered {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", error.to_string());
        }
        rendered
    }

    fn environment(&self, tracing: Tracing) -> Environment<'static> {
        let mut environment = Environment::new();
        let dir = self.dir.clone();
        environment.set_loader(move |name| load(&dir, name, tracing));
        environment
    }
}

#[derive(Debug, Clone, Copy)]
enum Tracing {
    On,
    Off,
}

fn load(dir: &Path, name: &str, tracing: Tracing) -> Result<Option<String>, minijinja::Error> {
    // Only plain file names: a template must not reach outside the directory.
    if name.contains(['/', '\\']) || name.starts_with('.') {
        return Ok(None);
    }
    let path = dir.join(name);
    let span = match tracing {
        Tracing::On => tracing::info_span!(
            "template load",
            template.name = name,
            template.path = %path.display(),
            template.bytes = tracing::field::Empty,
        ),
        Tracing::Off => tracing::Span::none(),
    };
    let _entered = span.enter();
    // A small file, usually in the page cache: not worth a blocking thread.
    match std::fs::read_to_string(&path) {
        Ok(source) => {
            span.record("template.bytes", source.len());
            Ok(Some(source))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot read {}: {error}", path.display()),
        )),
    }
}
