//! `annal token new NAME --role ROLE [--types T,..] [--may-act-for U,..] --tokens-file F`:
//! a new API token, its salted hash added to the tokens file, its secret printed once.
//!
//! Invariants: the secret is printed on stdout and written nowhere; the file is
//! replaced whole (written beside it, synced, renamed), is 0600 when annal creates it,
//! and is checked as `annal serve` would read it before it replaces the old one, so a
//! name already taken leaves the file as it was.

use super::CliError;
use annal_server::{Role, Token, Tokens};
use clap::{Args, Subcommand};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token: adds its salted hash to the tokens file and prints its secret once.
    New(NewArgs),
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The token's name: the user_id and principal of what it appends.
    name: String,
    /// What it may do: read, write or admin (docs/http.md#roles).
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// Limit it to these aggregate types (comma-separated).
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// User ids its appends may claim besides its name (comma-separated; * for any).
    #[arg(long, value_delimiter = ',')]
    may_act_for: Vec<String>,
    /// The tokens file to add it to (created if missing), as `annal serve
    /// --tokens-file` reads it.
    #[arg(long, env = "ANNAL_TOKENS_FILE")]
    tokens_file: PathBuf,
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "read" => Ok(Role::Read),
        "write" => Ok(Role::Write),
        "admin" => Ok(Role::Admin),
        other => Err(format!("'{other}' is not a role: read, write or admin")),
    }
}

pub fn run(args: TokenArgs) -> Result<ExitCode, CliError> {
    let TokenCommand::New(a) = args.command;
    let types = (!a.types.is_empty()).then_some(a.types);
    let made = Token::generate(&a.name, a.role, types, a.may_act_for)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let mut doc = match std::fs::read_to_string(&a.tokens_file) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| CliError::Usage(format!("{}: not JSON: {e}", a.tokens_file.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({"tokens": []}),
        Err(e) => {
            return Err(CliError::Usage(format!(
                "cannot read {}: {e}",
                a.tokens_file.display()
            )));
        }
    };
    let Some(list) = doc.get_mut("tokens").and_then(|t| t.as_array_mut()) else {
        return Err(CliError::Usage(format!(
            "{}: expected {{\"tokens\": [...]}}",
            a.tokens_file.display()
        )));
    };
    list.push(made.entry);
    let text = serde_json::to_string_pretty(&doc).map_err(|e| CliError::Usage(e.to_string()))?;
    Tokens::parse(&text)
        .map_err(|e| CliError::Usage(format!("{}: {e}", a.tokens_file.display())))?;
    replace(&a.tokens_file, &text)?;
    writeln!(std::io::stdout(), "{}", made.secret)?;
    eprintln!(
        "annal: token '{}' ({}) added to {}; its secret is above and is not kept anywhere: \
         hand it to its holder now. `annal serve` reads the file when it starts.",
        a.name,
        a.role.name(),
        a.tokens_file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` as the whole of `path`: beside it first, synced, then renamed over it.
fn replace(path: &Path, text: &str) -> Result<(), CliError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(
        || "tokens.json".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = dir.join(format!(".{name}.new"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        // Keep the mode its owner gave an existing file.
        std::fs::set_permissions(&tmp, meta.permissions())?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}
