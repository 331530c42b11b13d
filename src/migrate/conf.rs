//! Reading what OpenDKIM and OpenDMARC read: their `Name value` configuration
//! files (names case-insensitive, `#` to the end of the line is a comment,
//! the last value of a repeated option wins, an unknown name is an error),
//! their datasets (`file:`, `refile:`, `csl:`, a bare absolute path or a
//! comma-separated list; `dsn:`, LDAP, Lua, memcache and the other backends
//! are recognised but not read) and the shell-variable files in
//! `/etc/default`.

use super::MigrateError;
use super::options::{self, Daemon, OptionInfo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One option as found: its table entry, its value and where it was set.
#[derive(Debug, Clone)]
pub struct Setting {
    pub info: &'static OptionInfo,
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

impl Setting {
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// A parsed opendkim.conf or opendmarc.conf.
#[derive(Debug, Clone)]
pub struct ConfFile {
    pub daemon: Daemon,
    pub path: PathBuf,
    /// By lower-cased name; a repeated option keeps its last value.
    pub settings: BTreeMap<String, Setting>,
}

pub fn read(path: &Path) -> Result<String, MigrateError> {
    std::fs::read_to_string(path).map_err(|error| MigrateError::Unreadable {
        path: path.to_path_buf(),
        error,
    })
}

impl ConfFile {
    pub fn load(daemon: Daemon, path: &Path) -> Result<ConfFile, MigrateError> {
        ConfFile::parse(daemon, path, &read(path)?)
    }

    pub fn parse(daemon: Daemon, path: &Path, text: &str) -> Result<ConfFile, MigrateError> {
        let mut settings = BTreeMap::new();
        parse_into(daemon, path, text, &mut settings, 0)?;
        Ok(ConfFile {
            daemon,
            path: path.to_path_buf(),
            settings,
        })
    }
}

/// Parses one file into `settings`; `Include FILE` (OpenDKIM) reads another
/// file at that point, so later lines still override it.
fn parse_into(
    daemon: Daemon,
    path: &Path,
    text: &str,
    settings: &mut BTreeMap<String, Setting>,
    depth: usize,
) -> Result<(), MigrateError> {
    {
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            // Both daemons cut a line at the first '#'.
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (name, value) = match line.split_once(char::is_whitespace) {
                Some((n, v)) => (n, v.trim()),
                None => (line, ""),
            };
            let info = options::lookup(daemon, name).ok_or_else(|| MigrateError::Invalid {
                path: path.to_path_buf(),
                line: line_no,
                reason: format!("unknown {} option {name:?}", daemon.title()),
            })?;
            if value.is_empty() {
                return Err(MigrateError::Invalid {
                    path: path.to_path_buf(),
                    line: line_no,
                    reason: format!("{} has no value", info.name),
                });
            }
            if info.name == "Include" {
                if depth >= 8 {
                    return Err(MigrateError::Invalid {
                        path: path.to_path_buf(),
                        line: line_no,
                        reason: "Include nested more than 8 deep".into(),
                    });
                }
                let inc = path.parent().unwrap_or(Path::new("/")).join(value);
                parse_into(daemon, &inc, &read(&inc)?, settings, depth + 1)?;
                continue;
            }
            settings.insert(
                info.name.to_ascii_lowercase(),
                Setting {
                    info,
                    value: value.to_string(),
                    file: path.to_path_buf(),
                    line: line_no,
                },
            );
        }
    }
    Ok(())
}

impl ConfFile {
    pub fn get(&self, name: &str) -> Option<&Setting> {
        self.settings.get(&name.to_ascii_lowercase())
    }

    /// A boolean option (true/yes/1 or false/no/0, any case); None when unset.
    pub fn flag(&self, name: &str) -> Result<Option<bool>, MigrateError> {
        let Some(s) = self.get(name) else {
            return Ok(None);
        };
        match s.value.to_ascii_lowercase().as_str() {
            "yes" | "true" | "1" | "on" | "y" | "t" => Ok(Some(true)),
            "no" | "false" | "0" | "off" | "n" | "f" => Ok(Some(false)),
            _ => Err(MigrateError::Invalid {
                path: s.file.clone(),
                line: s.line,
                reason: format!("{} must be yes or no", s.info.name),
            }),
        }
    }
}

/// A dataset row: the fields of one line (or one list element), where it came from.
#[derive(Debug, Clone)]
pub struct Row {
    pub fields: Vec<String>,
    pub file: PathBuf,
    pub line: usize,
}

impl Row {
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// How a dataset was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// `file:` or a bare path: keys looked up exactly.
    File,
    /// `refile:`: keys are wildcard patterns tried in order.
    Refile,
    /// `csl:` or a bare comma-separated list.
    List,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub kind: DatasetKind,
    pub rows: Vec<Row>,
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
}

/// A dataset backend rmilter does not read (SQL, LDAP, Lua, ...).
#[derive(Debug, Clone)]
pub struct Unsupported {
    /// The backend, e.g. "dsn" (never the rest of the value: it may hold a password).
    pub backend: String,
}

const UNREAD_BACKENDS: &[&str] = &[
    "dsn", "ldap", "ldaps", "ldapi", "lua", "memcache", "redis", "db", "mdb", "erlang", "socket",
    "repute",
];

/// Opens the dataset an option names. `base` resolves relative paths.
pub fn dataset(
    setting: &Setting,
    base: &Path,
) -> Result<Result<Dataset, Unsupported>, MigrateError> {
    let value = setting.value.trim();
    if let Some((scheme, rest)) = value.split_once(':') {
        let scheme_lc = scheme.to_ascii_lowercase();
        if UNREAD_BACKENDS.contains(&scheme_lc.as_str()) {
            return Ok(Err(Unsupported { backend: scheme_lc }));
        }
        match scheme_lc.as_str() {
            "file" => return file_dataset(DatasetKind::File, &resolve(base, rest)),
            "refile" => return file_dataset(DatasetKind::Refile, &resolve(base, rest)),
            "csl" => return Ok(Ok(list_dataset(rest, setting))),
            _ => {}
        }
    }
    if value.starts_with('/') {
        return file_dataset(DatasetKind::File, Path::new(value));
    }
    Ok(Ok(list_dataset(value, setting)))
}

pub(super) fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path.trim());
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn list_dataset(value: &str, setting: &Setting) -> Dataset {
    Dataset {
        kind: DatasetKind::List,
        rows: value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Row {
                fields: vec![s.to_string()],
                file: setting.file.clone(),
                line: setting.line,
            })
            .collect(),
        path: None,
    }
}

fn file_dataset(
    kind: DatasetKind,
    path: &Path,
) -> Result<Result<Dataset, Unsupported>, MigrateError> {
    let text = read(path)?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        rows.push(Row {
            fields: line.split_whitespace().map(str::to_string).collect(),
            file: path.to_path_buf(),
            line: i + 1,
        });
    }
    Ok(Ok(Dataset {
        kind,
        rows,
        path: Some(path.to_path_buf()),
    }))
}

/// `NAME=value` lines of a /etc/default file, with `$NAME`/`${NAME}` of
/// earlier lines expanded and quotes removed.
pub fn shell_vars(text: &str) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let value = value.trim().trim_matches('"').trim_matches('\'');
        let mut out = String::new();
        let mut rest = value;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            let (var, tail) = if let Some(inner) = after.strip_prefix('{') {
                match inner.split_once('}') {
                    Some((v, t)) => (v, t),
                    None => (inner, ""),
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            out.push_str(vars.get(var).map(String::as_str).unwrap_or_default());
            rest = tail;
        }
        out.push_str(rest);
        vars.insert(name.to_string(), out);
    }
    vars
}
