//! The terminal conventions of `idvctl`: a progress bar on stderr only
//! when stderr is a terminal, and a confirmation before anything
//! destructive unless `--yes`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::UsageError;

/// A bar counting `total` items of `what` with their rate, drawn on stderr
/// if it is a terminal; hidden (every call a no-op) when piped.
pub fn progress(total: u64, what: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    let template = format!("{{bar:30}} {{pos}}/{{len}} {what} · {{per_sec}} · {{elapsed}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The operator said no (or nothing) at the confirmation: nothing changed.
#[derive(Debug, thiserror::Error)]
#[error("not confirmed; nothing changed")]
pub struct NotConfirmed;

/// Asks `question` on stderr and waits for `y` or `yes` on stdin, unless
/// `yes` (the command's `--yes`) answered already. Without a terminal to
/// ask on, refuses with a [`UsageError`] naming `--yes`.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "{question} — there is no terminal to confirm on: pass --yes"
        ))
        .into());
    }
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{question} [y/N] ");
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(NotConfirmed.into()),
    }
}
