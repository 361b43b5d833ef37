//! `conduit plugin new` and `conduit plugin build`: creates a ready-to-build plugin project for
//! one world in Rust, JavaScript or Python (with the SDK written into the project from the
//! binary, and a sample input, settings and expected output), and builds a project into a
//! component `<dir>/<name>.wasm`, detecting its language from its files.

mod embedded;
mod templates;
mod tools;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{Context, bail};
use conduit_plugin_host::World;

pub use embedded::SDK_VERSION;

/// The target Rust plugins are built for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// A plugin project's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Rust on the `conduit-plugin` SDK crate.
    Rust,
    /// JavaScript, built with componentize-js.
    Js,
    /// Python, built with componentize-py.
    Python,
}

impl FromStr for Lang {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "rust" | "rs" => Ok(Lang::Rust),
            "js" | "javascript" => Ok(Lang::Js),
            "python" | "py" => Ok(Lang::Python),
            other => Err(format!(
                "unknown language `{other}`: use rust, js or python"
            )),
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
        })
    }
}

/// The files of a new plugin project, as (relative path, contents).
pub fn scaffold_files(name: &str, world: World, lang: Lang) -> Vec<(String, String)> {
    let sdk = embedded::sdk_folder();
    let sample = templates::sample(world);
    let mut files = vec![
        ("sample/input.json".to_owned(), sample.input.to_owned()),
        (
            "sample/settings.toml".to_owned(),
            sample.settings.to_owned(),
        ),
        (
            "sample/expected.json".to_owned(),
            sample.expected.to_owned(),
        ),
        (
            format!("{sdk}/{}", embedded::WIT.0),
            embedded::WIT.1.to_owned(),
        ),
    ];
    let source = templates::source(world, lang).replace("{name}", name);
    match lang {
        Lang::Rust => {
            for (path, contents) in embedded::RUST_SDK {
                files.push((format!("{sdk}/{path}"), (*contents).to_owned()));
            }
            files.push((
                "Cargo.toml".to_owned(),
                templates::RUST_MANIFEST
                    .replace("{name}", name)
                    .replace("{sdk}", &format!("{sdk}/rust/conduit-plugin"))
                    .replace("{feature}", &world.to_string()),
            ));
            files.push(("Cargo.lock".to_owned(), embedded::RUST_LOCK.to_owned()));
            files.push(("src/lib.rs".to_owned(), source));
            files.push((".gitignore".to_owned(), "/target\n*.wasm\n".to_owned()));
        }
        Lang::Js => {
            files.push((
                "package.json".to_owned(),
                templates::JS_MANIFEST
                    .replace("{name}", name)
                    .replace("{world}", &world.to_string())
                    .replace("{version}", SDK_VERSION),
            ));
            files.push(("src/plugin.js".to_owned(), source));
            files.push((
                "src/conduit-plugin.js".to_owned(),
                embedded::JS_HELPER.to_owned(),
            ));
            files.push((".gitignore".to_owned(), "*.wasm\n".to_owned()));
        }
        Lang::Python => {
            files.push((
                "pyproject.toml".to_owned(),
                templates::PY_MANIFEST
                    .replace("{name}", name)
                    .replace("{world}", &world.to_string())
                    .replace("{version}", SDK_VERSION),
            ));
            files.push(("src/app.py".to_owned(), source));
            files.push((
                "src/conduit_plugin.py".to_owned(),
                embedded::PY_HELPER.to_owned(),
            ));
            files.push((".gitignore".to_owned(), "*.wasm\n__pycache__/\n".to_owned()));
        }
    }
    files
}

/// Creates the plugin project `name` under `parent`; refuses to overwrite an existing folder.
pub fn create(name: &str, world: World, lang: Lang, parent: &Path) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let root = parent.join(name);
    if root.exists() {
        bail!(
            "{} already exists; choose another name or folder",
            root.display()
        );
    }
    for (relative, contents) in scaffold_files(name, world, lang) {
        let path = root.join(relative);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(root)
}

/// A name that is a crate, npm and Python project name and a file name: lowercase ASCII,
/// digits and `-`, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "invalid plugin name `{name}`: use lowercase letters, digits and `-`, starting with a letter"
        );
    }
    Ok(())
}

/// A plugin project found on disk.
#[derive(Debug)]
struct Project {
    lang: Lang,
    name: String,
    /// The world, for JavaScript and Python (a Rust crate picks it by the SDK feature).
    world: Option<World>,
}

/// Reads the project at `dir`: `Cargo.toml` is Rust, `package.json` JavaScript and
/// `pyproject.toml` Python.
fn detect(dir: &Path) -> anyhow::Result<Project> {
    let manifest = dir.join("Cargo.toml");
    if manifest.is_file() {
        let parsed = read_toml(&manifest)?;
        let name = parsed
            .get("package")
            .and_then(|package| package.get("name"))
            .and_then(toml::Value::as_str)
            .with_context(|| format!("{} has no [package] name", manifest.display()))?;
        return Ok(Project {
            lang: Lang::Rust,
            name: name.to_owned(),
            world: None,
        });
    }
    let manifest = dir.join("package.json");
    if manifest.is_file() {
        let text = fs::read_to_string(&manifest)
            .with_context(|| format!("cannot read {}", manifest.display()))?;
        let parsed: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", manifest.display()))?;
        let name = parsed["name"]
            .as_str()
            .with_context(|| format!("{} has no \"name\"", manifest.display()))?;
        let world = parsed["conduit"]["world"].as_str().with_context(|| {
            format!(
                "{} has no \"conduit\": {{\"world\": ...}} (record-mapper, event-mapper or opt-out-resolver)",
                manifest.display()
            )
        })?;
        return Ok(Project {
            lang: Lang::Js,
            name: name.to_owned(),
            world: Some(parse_world(world, &manifest)?),
        });
    }
    let manifest = dir.join("pyproject.toml");
    if manifest.is_file() {
        let parsed = read_toml(&manifest)?;
        let name = parsed
            .get("project")
            .and_then(|project| project.get("name"))
            .and_then(toml::Value::as_str)
            .with_context(|| format!("{} has no [project] name", manifest.display()))?;
        let world = parsed
            .get("tool")
            .and_then(|tool| tool.get("conduit"))
            .and_then(|conduit| conduit.get("world"))
            .and_then(toml::Value::as_str)
            .with_context(|| {
                format!(
                    "{} has no [tool.conduit] world (record-mapper, event-mapper or opt-out-resolver)",
                    manifest.display()
                )
            })?;
        return Ok(Project {
            lang: Lang::Python,
            name: name.to_owned(),
            world: Some(parse_world(world, &manifest)?),
        });
    }
    bail!(
        "{} is not a plugin project: it holds no Cargo.toml (Rust), package.json (JavaScript) or pyproject.toml (Python)",
        dir.display()
    )
}

fn read_toml(path: &Path) -> anyhow::Result<toml::Table> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))
}

fn parse_world(text: &str, manifest: &Path) -> anyhow::Result<World> {
    text.parse()
        .map_err(|error: String| anyhow::anyhow!("{}: {error}", manifest.display()))
}

/// Builds the project at `dir` into `<dir>/<name>.wasm`, which it returns, with the tool of
/// its language.
pub fn build(dir: &Path) -> anyhow::Result<(PathBuf, Lang)> {
    let project = detect(dir)?;
    let destination = dir.join(format!("{}.wasm", project.name));
    match (project.lang, project.world) {
        (Lang::Rust, _) => build_rust(dir, &project.name, &destination)?,
        (Lang::Js, Some(world)) => build_js(dir, world, &destination)?,
        (Lang::Python, Some(world)) => build_python(dir, world, &destination)?,
        (lang, None) => bail!("a {lang} project names its world"),
    }
    Ok((destination, project.lang))
}

/// `cargo build --release --target wasm32-wasip2` (stripped by the project's release profile).
fn build_rust(dir: &Path, name: &str, destination: &Path) -> anyhow::Result<()> {
    let manifest = dir.join("Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("could not run `{cargo}`"))?;
    if !status.success() {
        bail!(
            "`cargo build --release --target {WASM_TARGET}` failed for {} (is the target installed? `rustup target add {WASM_TARGET}`)",
            dir.display()
        );
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let file = format!("{}.wasm", name.replace('-', "_"));
    let built = target_dir.join(WASM_TARGET).join("release").join(&file);
    fs::copy(&built, destination).with_context(|| {
        format!(
            "the build did not produce {} (is `crate-type = [\"cdylib\", \"rlib\"]` set?)",
            built.display()
        )
    })?;
    Ok(())
}

/// The WIT folder written into the project by `plugin new`.
fn project_wit(dir: &Path) -> anyhow::Result<PathBuf> {
    let wit = dir.join(embedded::sdk_folder()).join("wit");
    if !wit.join("conduit-plugin.wit").is_file() {
        bail!(
            "{} holds no conduit-plugin.wit: the project lacks its SDK folder (create projects with `conduit plugin new`)",
            wit.display()
        );
    }
    Ok(wit)
}

/// componentize-js through its API (its CLI's path handling does not work everywhere, and its
/// AOT mode downloads a binary), with the features a mapping does not need left out so that
/// the component imports only what the host allows.
fn build_js(dir: &Path, world: World, destination: &Path) -> anyhow::Result<()> {
    let source = dir.join("src/plugin.js");
    if !source.is_file() {
        bail!("{} is missing: the plugin's entry point", source.display());
    }
    let wit = project_wit(dir)?;
    let modules = tools::componentize_js()?;
    let script = tempfile::Builder::new()
        .suffix(".mjs")
        .tempfile()
        .context("cannot create the build script")?;
    fs::write(script.path(), templates::JS_BUILD).context("cannot write the build script")?;
    tools::run(
        Command::new("node")
            .arg(script.path())
            .arg(&modules)
            .arg(&source)
            .arg(&wit)
            .arg(world.to_string())
            .arg(destination),
    )
    .context("building with componentize-js failed (the error is above)")
}

/// `componentize-py -d <wit> -w <world> componentize -p src app -o <name>.wasm`.
fn build_python(dir: &Path, world: World, destination: &Path) -> anyhow::Result<()> {
    let source = dir.join("src");
    if !source.join("app.py").is_file() {
        bail!(
            "{} is missing: the plugin's module (defining class WitWorld)",
            source.join("app.py").display()
        );
    }
    let wit = project_wit(dir)?;
    let componentize = tools::componentize_py()?;
    tools::run(
        Command::new(componentize)
            .arg("-d")
            .arg(&wit)
            .args(["-w", &world.to_string(), "componentize", "-p"])
            .arg(&source)
            .arg("app")
            .arg("-o")
            .arg(destination),
    )
    .context("building with componentize-py failed (the error is above)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_outside_lowercase_letters_digits_and_dashes_are_refused() {
        for bad in ["", "Upper", "1st", "has space", "under_score"] {
            let error = check_name(bad).unwrap_err().to_string();
            assert!(error.contains("invalid plugin name"), "{bad}: {error}");
        }
        assert!(check_name("my-mapper2").is_ok());
    }

    #[test]
    fn the_rust_scaffold_enables_the_sdk_feature_of_its_world_by_a_relative_path() {
        let files = scaffold_files("x", World::OptOutResolver, Lang::Rust);
        let manifest = &files.iter().find(|(p, _)| p == "Cargo.toml").unwrap().1;
        let expected = format!(
            r#"path = ".conduit/sdk-{SDK_VERSION}/rust/conduit-plugin", features = ["opt-out-resolver"]"#
        );
        assert!(manifest.contains(&expected), "{manifest}");
        let lib = &files.iter().find(|(p, _)| p == "src/lib.rs").unwrap().1;
        assert!(lib.contains("export_opt_out_resolver!"));
    }

    #[test]
    fn no_generated_file_names_a_path_of_the_build_machine() {
        let checkout = env!("CARGO_MANIFEST_DIR").trim_end_matches("/host");
        for world in [
            World::RecordMapper,
            World::EventMapper,
            World::OptOutResolver,
        ] {
            for lang in [Lang::Rust, Lang::Js, Lang::Python] {
                for (path, contents) in scaffold_files("x", world, lang) {
                    assert!(
                        !contents.contains(checkout),
                        "{lang} {world}: {path} names {checkout}"
                    );
                    // The templates' placeholder is replaced (SDK sources may use `{name}`).
                    if !path.starts_with(".conduit") && !path.contains("conduit") {
                        assert!(!contents.contains("{name}"), "{lang} {world}: {path}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_js_and_python_manifests_name_the_world_the_build_reads() {
        let work = tempfile::tempdir().unwrap();
        for lang in [Lang::Js, Lang::Python] {
            let root = create(&format!("p-{lang}"), World::EventMapper, lang, work.path()).unwrap();
            let project = detect(&root).unwrap();
            assert_eq!(project.lang, lang);
            assert_eq!(project.world, Some(World::EventMapper));
            assert_eq!(project.name, format!("p-{lang}"));
        }
    }
}
