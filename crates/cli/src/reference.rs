//! The command reference (`docs/commands.md`), generated from the command line's own
//! definitions: every command's `--help`, in the order `lifeboat --help` lists them. A unit
//! test fails when the file is stale; `LIFEBOAT_BLESS=1 cargo test -p lifeboat --bin lifeboat
//! reference` writes it anew.

use clap::Command;

/// The width the reference is written at, whatever the terminal's.
const WIDTH: usize = 100;

/// The whole reference, as Markdown.
pub fn markdown(root: Command) -> String {
    let mut out = String::from(
        "# Command reference\n\n\
         Generated from lifeboat's own definitions (`crates/cli/src/reference.rs`); a test fails \
         when it is stale.\nThe same text is `lifeboat COMMAND --help`, and `lifeboat man` \
         writes it as man pages.\n\n",
    );
    // What the environment holds is no part of the reference.
    let mut root = hide_env_values(root.term_width(WIDTH).max_term_width(WIDTH));
    root.build();
    let mut index = String::new();
    let mut pages = String::new();
    walk(&root, &mut Vec::new(), &mut index, &mut pages);
    out.push_str(&index);
    out.push('\n');
    out.push_str(&pages);
    out
}

fn hide_env_values(cmd: Command) -> Command {
    cmd.mut_args(|arg| arg.hide_env_values(true))
        .mut_subcommands(hide_env_values)
}

fn walk(cmd: &Command, path: &mut Vec<String>, index: &mut String, pages: &mut String) {
    if cmd.is_hide_set() {
        return;
    }
    path.push(cmd.get_name().to_string());
    let name = path.join(" ");
    let anchor = path.join("-");
    let depth = path.len().saturating_sub(1);
    index.push_str(&format!(
        "{}- [`{name}`](#{anchor}){}\n",
        "  ".repeat(depth),
        cmd.get_about()
            .map(|about| format!(": {about}"))
            .unwrap_or_default()
    ));
    let help = cmd
        .clone()
        .term_width(WIDTH)
        .max_term_width(WIDTH)
        .render_long_help()
        .to_string();
    let help: String = help
        .lines()
        .map(|line| line.trim_end().to_string() + "\n")
        .collect();
    pages.push_str(&format!(
        "<a id=\"{anchor}\"></a>\n## {name}\n\n```text\n{}```\n\n",
        help.trim_end().to_string() + "\n"
    ));
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            walk(sub, path, index, pages);
        }
    }
    path.pop();
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn the_command_reference_is_current() {
        let wanted = super::markdown(<crate::cli::Cli as clap::CommandFactory>::command());
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/commands.md");
        if std::env::var_os("LIFEBOAT_BLESS").is_some() {
            std::fs::write(&path, &wanted).unwrap();
        }
        let written = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            written == wanted,
            "docs/commands.md is stale: write it anew with `LIFEBOAT_BLESS=1 cargo test -p lifeboat --bin lifeboat reference`"
        );
        // Every command is in it, a nested one too.
        for command in [
            "## lifeboat restore pitr",
            "## lifeboat wal-push",
            "## lifeboat backup db",
        ] {
            assert!(wanted.contains(command), "{command}");
        }
    }
}
