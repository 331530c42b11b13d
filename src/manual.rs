//! Manual pages and shell completions, generated so that they cannot drift
//! from what they describe: rmilter(8) from the clap definitions of the
//! command line (clap_mangen), rmilter.toml(5) from `config/rmilter.toml`
//! itself (every key, its default and its comment, compiled into the
//! binary), and the bash and zsh completions from the same clap definitions
//! (clap_complete). The hidden `rmilter manual --out DIR` writes them; `make
//! deb` packages them.

use clap::CommandFactory;
use clap_mangen::roff::{Roff, bold, italic, roman};
use std::io::Write;
use std::path::Path;

/// The shipped configuration reference: every key with its default and a
/// one-line comment. rmilter.toml(5) is rendered from it.
pub const CONFIG_REFERENCE: &str = include_str!("../config/rmilter.toml");

/// One key of the configuration reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKey {
    /// Dotted path: `listen`, `limits.max_connections`, `key.domain`,
    /// `policy.domain.monitor`.
    pub path: String,
    /// The value as written in the reference: the default, or for the keys
    /// of an example table (`[[key]]`, `[[policy.domain]]`) an example.
    pub value: String,
    /// The comment above the key (and after it on its line).
    pub doc: String,
    /// Marked "(restart)": a reload keeps the running value.
    pub restart: bool,
    /// A key of a commented-out example table: there is no default.
    pub example: bool,
}

/// One table of the configuration reference, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSection {
    /// Dotted table name; empty for the top level.
    pub name: String,
    /// An array of tables (`[[key]]`), which may appear any number of times.
    pub array: bool,
    /// Comment paragraphs that introduce the table rather than one key.
    pub intro: Vec<String>,
    pub keys: Vec<ConfigKey>,
}

/// Split `config/rmilter.toml` into its tables and keys. Live keys are
/// `name = value` lines (a value may span lines, like the header arrays);
/// the commented example tables (`# [[key]]` followed by `# name = value`
/// lines) give the keys of the arrays of tables.
pub fn parse_reference(text: &str) -> Vec<ConfigSection> {
    let mut sections = vec![ConfigSection {
        name: String::new(),
        array: false,
        intro: Vec::new(),
        keys: Vec::new(),
    }];
    // The live table the next uncommented key belongs to.
    let mut live = 0usize;
    // The example table whose commented keys are being read.
    let mut example: Option<usize> = None;
    let mut pending: Vec<String> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            example = None;
            flush_intro(&mut sections[live], &mut pending);
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.trim();
            if let Some(name) = comment
                .strip_prefix("[[")
                .and_then(|rest| rest.strip_suffix("]]"))
            {
                let index = section_index(&mut sections, name.trim(), true);
                let intro = std::mem::take(&mut pending);
                push_paragraph(&mut sections[index].intro, &intro);
                example = Some(index);
                continue;
            }
            if let Some(index) = example {
                if comment.is_empty() {
                    example = None;
                    continue;
                }
                if let Some((name, value)) = split_key(comment) {
                    let (value, note) = split_trailing_comment(value);
                    let path = join_path(&sections[index].name, name);
                    sections[index].keys.push(ConfigKey {
                        path,
                        value: value.to_string(),
                        restart: is_restart(&note),
                        doc: note,
                        example: true,
                    });
                    continue;
                }
            }
            if comment.is_empty() {
                // An empty comment line ends a paragraph of prose.
                let paragraph = std::mem::take(&mut pending);
                push_paragraph(&mut sections[live].intro, &paragraph);
            } else {
                pending.push(comment.to_string());
            }
            continue;
        }
        example = None;
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|rest| rest.strip_suffix("]]"))
            .or_else(|| {
                trimmed
                    .strip_prefix('[')
                    .and_then(|rest| rest.strip_suffix(']'))
            })
        {
            flush_intro(&mut sections[live], &mut pending);
            live = section_index(&mut sections, name.trim(), trimmed.starts_with("[["));
            continue;
        }
        if let Some((name, value)) = split_key(trimmed) {
            let mut value = value.to_string();
            // A multi-line array: read up to its closing bracket.
            while bracket_depth(&value) > 0 {
                match lines.next() {
                    Some(next) => {
                        value.push(' ');
                        value.push_str(next.trim());
                    }
                    None => break,
                }
            }
            let (value, note) = split_trailing_comment(&value);
            let mut doc = pending.join(" ");
            if !note.is_empty() {
                if !doc.is_empty() {
                    doc.push(' ');
                }
                doc.push_str(&note);
            }
            pending.clear();
            let section = &mut sections[live];
            section.keys.push(ConfigKey {
                path: join_path(&section.name, name),
                value: value.to_string(),
                restart: is_restart(&doc),
                doc,
                example: false,
            });
        }
    }
    flush_intro(&mut sections[live], &mut pending);
    sections
}

/// Every key of the reference, in file order.
pub fn reference_keys() -> Vec<ConfigKey> {
    parse_reference(CONFIG_REFERENCE)
        .into_iter()
        .flat_map(|s| s.keys)
        .collect()
}

fn flush_intro(section: &mut ConfigSection, pending: &mut Vec<String>) {
    let paragraph = std::mem::take(pending);
    push_paragraph(&mut section.intro, &paragraph);
}

fn push_paragraph(intro: &mut Vec<String>, lines: &[String]) {
    if !lines.is_empty() {
        intro.push(lines.join(" "));
    }
}

fn section_index(sections: &mut Vec<ConfigSection>, name: &str, array: bool) -> usize {
    if let Some(i) = sections.iter().position(|s| s.name == name) {
        return i;
    }
    sections.push(ConfigSection {
        name: name.to_string(),
        array,
        intro: Vec::new(),
        keys: Vec::new(),
    });
    sections.len() - 1
}

fn join_path(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    }
}

/// `name = value` with a bare TOML key as name.
fn split_key(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once('=')?;
    let name = name.trim();
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    bare.then(|| (name, value.trim()))
}

/// Split `"value"   # note` at the first `#` outside a string.
fn split_trailing_comment(value: &str) -> (&str, String) {
    let mut in_string = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => {
                return (value[..i].trim(), value[i + 1..].trim().to_string());
            }
            _ => {}
        }
    }
    (value.trim(), String::new())
}

fn bracket_depth(value: &str) -> i32 {
    let mut depth = 0;
    let mut in_string = false;
    for c in value.chars() {
        match c {
            '"' => in_string = !in_string,
            '[' if !in_string => depth += 1,
            ']' if !in_string => depth -= 1,
            '#' if !in_string => break,
            _ => {}
        }
    }
    depth
}

/// The reference marks settings a reload cannot change with "(restart)" or
/// "(restart; ...".
fn is_restart(doc: &str) -> bool {
    doc.contains("(restart)") || doc.contains("(restart;")
}

/// rmilter.toml(5), rendered from [`CONFIG_REFERENCE`].
pub fn config_page() -> String {
    let sections = parse_reference(CONFIG_REFERENCE);
    let version = format!("rmilter {}", env!("CARGO_PKG_VERSION"));
    let mut page = Roff::new();
    page.control(
        "TH",
        ["RMILTER.TOML", "5", "", version.as_str(), "File Formats"],
    );
    page.control("SH", ["NAME"]);
    page.text([roman("rmilter.toml - configuration file of rmilter(8)")]);
    page.control("SH", ["SYNOPSIS"]);
    page.text([bold(crate::config::DEFAULT_CONFIG)]);
    page.control("SH", ["DESCRIPTION"]);
    for paragraph in &sections[0].intro {
        page.text([roman(paragraph.as_str())]);
        page.control("PP", []);
    }
    page.text([roman(
        "The file is TOML. Every key is optional: a key left out keeps the default \
         shown below, and an unknown key is an error. Errors name the file, the key \
         (or line and column) and what is wrong; check a file with ",
    )]);
    page.text([bold("rmilter check-config -c FILE"), roman(".")]);
    page.control("SH", ["RELOAD"]);
    page.text([roman(
        "SIGHUP (systemctl reload rmilter) reads the file and every key file again, \
         checks them and swaps them in only when all of them are valid; messages in \
         progress finish with the configuration they started with. A reload that \
         fails is refused with the reason in the log, and the running configuration \
         stays. Each key below says what a reload does with it: \"applied\" (the new \
         value is used for the next message) or \"restart\" (the running value stays \
         until rmilter is restarted; the reload logs the key).",
    )]);
    page.control("SH", ["KEYS"]);
    for section in &sections {
        if section.keys.is_empty() && section.intro.is_empty() {
            continue;
        }
        let title = match (section.name.as_str(), section.array) {
            ("", _) => "Top level".to_string(),
            (name, true) => format!("[[{name}]]"),
            (name, false) => format!("[{name}]"),
        };
        page.control("SS", [title.as_str()]);
        if !section.name.is_empty() {
            for paragraph in &section.intro {
                page.text([roman(paragraph.as_str())]);
                page.control("PP", []);
            }
        }
        if section.array {
            page.text([roman(
                "An array of tables: one table per entry, none by default. The values \
                 shown are examples.",
            )]);
        }
        for key in &section.keys {
            page.control("TP", []);
            let value_label = if key.example { "example" } else { "default" };
            page.text([
                bold(key.path.as_str()),
                roman(format!(" ({value_label} ")),
                italic(key.value.as_str()),
                roman(")"),
            ]);
            if !key.doc.is_empty() {
                page.text([roman(key.doc.as_str())]);
            }
            page.control("br", []);
            let reload = if key.restart {
                "Reload: restart needed; a reload keeps the running value and logs the key."
            } else {
                "Reload: applied."
            };
            page.text([italic(reload)]);
        }
    }
    page.control("SH", ["FILES"]);
    page.control("TP", []);
    page.text([bold(crate::config::DEFAULT_CONFIG)]);
    page.text([roman("The configuration read without -c.")]);
    page.control("TP", []);
    page.text([bold(crate::config::DEFAULT_KEY_DIR)]);
    page.text([roman("Default directory of rmilter keys generate.")]);
    page.control("SH", ["SEE ALSO"]);
    page.text([roman("rmilter(8), postconf(5)")]);
    page.render()
}

/// Exit status of every subcommand, for rmilter(8).
const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Success."),
    (
        "1",
        "Failure: the command could not do its work (a file it needs cannot be read \
         or written, the milter stopped on an error). Also: doctor found a high-severity \
         problem; keys check found a record missing or wrong; keys activate or retire \
         refused the change or the daemon's reload failed; keys dns found no keys; \
         report send or report failures could not hand over a report.",
    ),
    (
        "2",
        "Usage error: unknown subcommand, option or bad argument.",
    ),
    (
        "78",
        "Configuration error (EX_CONFIG): the configuration file or a key file it \
         names is invalid; the message names the file, the key and the reason.",
    ),
];

/// rmilter(8), rendered from the clap definitions: the main page by
/// clap_mangen, then one subsection per subcommand (synopsis, description,
/// options), the exit status and the files.
pub fn command_page() -> String {
    let mut cmd = crate::cli::Cli::command();
    cmd.build();
    let version = format!("rmilter {}", env!("CARGO_PKG_VERSION"));
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .source(version.clone())
        .manual("System Administration");
    let mut out: Vec<u8> = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);
    let _ = man.render_description_section(&mut out);
    let mut commands = Roff::new();
    commands.control("SH", ["COMMANDS"]);
    let _ = commands.to_writer(&mut out);
    for leaf in leaves(&cmd) {
        let name = leaf.get_bin_name().unwrap_or(leaf.get_name()).to_string();
        let mut heading = Roff::new();
        heading.control("SS", [name.as_str()]);
        let _ = heading.to_writer(&mut out);
        let sub = clap_mangen::Man::new(leaf.clone()).section("8");
        let mut body: Vec<u8> = Vec::new();
        let _ = sub.render_synopsis_section(&mut body);
        let _ = sub.render_description_section(&mut body);
        let _ = sub.render_options_section(&mut body);
        // The subsection heading replaces the sections' own headings; their
        // parts stay separate paragraphs.
        for (i, line) in String::from_utf8_lossy(&body).lines().enumerate() {
            if !line.starts_with(".SH ") {
                let _ = writeln!(out, "{line}");
            } else if i > 0 {
                let _ = writeln!(out, ".PP");
            }
        }
    }
    let mut tail = Roff::new();
    tail.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in EXIT_STATUS {
        tail.control("TP", []);
        tail.text([bold(*code)]);
        tail.text([roman(*meaning)]);
    }
    tail.control("SH", ["ENVIRONMENT"]);
    tail.control("TP", []);
    tail.text([bold("RUST_LOG")]);
    tail.text([roman(
        "Overrides log_level (for example RUST_LOG=debug). Logs go to stderr, which \
         is the journal under systemd.",
    )]);
    tail.control("SH", ["FILES"]);
    tail.control("TP", []);
    tail.text([bold(crate::config::DEFAULT_CONFIG)]);
    tail.text([roman(
        "The configuration, see rmilter.toml(5); without it and without -c, rmilter \
         runs on its embedded defaults (verify only, no keys).",
    )]);
    tail.control("TP", []);
    tail.text([bold(crate::config::DEFAULT_KEY_DIR)]);
    tail.text([roman("Default key directory of keys generate.")]);
    tail.control("SH", ["SEE ALSO"]);
    tail.text([roman(
        "rmilter.toml(5), postconf(5), systemctl(1); the units rmilter.service, \
         rmilter-report.service and rmilter-report.timer.",
    )]);
    let _ = tail.to_writer(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Every subcommand that has no subcommands of its own, depth first.
fn leaves(cmd: &clap::Command) -> Vec<&clap::Command> {
    let mut found = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.has_subcommands() {
            found.extend(leaves(sub));
        } else {
            found.push(sub);
        }
    }
    found
}

/// A shell completion script for rmilter.
pub fn completion(shell: clap_complete::Shell) -> String {
    let mut cmd = crate::cli::Cli::command();
    let mut out: Vec<u8> = Vec::new();
    clap_complete::generate(shell, &mut cmd, "rmilter", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Write `rmilter.8`, `rmilter.toml.5`, `rmilter.bash` and `_rmilter` (zsh)
/// into `dir`, creating it.
pub fn write_all(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("rmilter.8"), command_page())?;
    std::fs::write(dir.join("rmilter.toml.5"), config_page())?;
    std::fs::write(
        dir.join("rmilter.bash"),
        completion(clap_complete::Shell::Bash),
    )?;
    std::fs::write(dir.join("_rmilter"), completion(clap_complete::Shell::Zsh))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_keys_have_values_and_restart_marks() {
        let keys = reference_keys();
        let get = |path: &str| keys.iter().find(|k| k.path == path).cloned();
        let listen = get("listen").expect("listen");
        assert_eq!(listen.value, "\"unix:/run/rmilter/rmilter.sock\"");
        assert!(listen.restart);
        let headers = get("signing.headers").expect("signing.headers");
        assert!(headers.value.starts_with("[ \"From\""), "{headers:?}");
        assert!(headers.value.ends_with(']'), "{headers:?}");
        assert!(!get("signing.expire").expect("expire").restart);
        let algorithm = get("key.algorithm").expect("key.algorithm");
        assert!(algorithm.example);
        assert_eq!(algorithm.value, "\"rsa\"");
        assert!(get("key.dir").is_some());
        assert!(get("policy.domain.monitor").expect("monitor").example);
    }

    #[test]
    fn pages_render() {
        let page = config_page();
        assert!(page.contains("limits.max_connections"));
        let page = command_page();
        assert!(page.contains("rmilter keys rotate"), "{page}");
        assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
    }
}
