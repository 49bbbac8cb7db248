//! The interactive shell: read a line, parse it, send the request, print the decoded answer
//! and its latency. With a terminal on stdin it offers line editing and history (rustyline);
//! otherwise it reads a script from stdin and echoes each command before its result, so the
//! output reads like a transcript of a session.

use std::io::{BufRead, IsTerminal, Read, Write};

use crate::command::{parse_line, Command, USAGES};
use crate::output::{self, Format};
use crate::session::Session;

/// Lines kept in the history file.
const HISTORY_MAX_LINES: usize = 1000;
/// Longest input line accepted from a script, in bytes.
const LINE_MAX_BYTES: usize = 1 << 20;

/// What a shell run saw, for the exit status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub commands: u64,
    /// Lines that did not parse or could not be sent (transport failures).
    pub failures: u64,
    /// Requests the server answered with an error response.
    pub server_errors: u64,
}

pub struct Shell<W: Write> {
    session: Session,
    format: Format,
    show_hex: bool,
    out: W,
    summary: Summary,
}

impl<W: Write> Shell<W> {
    pub fn new(session: Session, format: Format, out: W) -> Shell<W> {
        Shell {
            session,
            format,
            show_hex: false,
            out,
            summary: Summary::default(),
        }
    }

    /// Runs until `.quit` or the end of input: interactive when stdin is a terminal, a script
    /// otherwise.
    pub fn run_stdin(self) -> std::io::Result<Summary> {
        if std::io::stdin().is_terminal() {
            self.run_interactive()
        } else {
            let stdin = std::io::stdin();
            self.run_script(stdin.lock())
        }
    }

    /// Reads commands from `input`, echoing each one (`> command`) before its result.
    pub fn run_script(mut self, mut input: impl BufRead) -> std::io::Result<Summary> {
        let mut line = String::new();
        loop {
            line.clear();
            let read = input
                .by_ref()
                .take(LINE_MAX_BYTES as u64)
                .read_line(&mut line)?;
            if read == 0 {
                break;
            }
            if read >= LINE_MAX_BYTES && !line.ends_with('\n') {
                self.report_failure(
                    "line",
                    &format!("input line longer than {LINE_MAX_BYTES} bytes"),
                )?;
                // Skip the rest of the overlong line.
                let mut rest = Vec::new();
                input.read_until(b'\n', &mut rest)?;
                continue;
            }
            let text = line.trim_end_matches(['\n', '\r']);
            if self.format == Format::Text && !text.trim().is_empty() {
                writeln!(self.out, "> {text}")?;
            }
            if !self.handle(text)? {
                break;
            }
        }
        self.out.flush()?;
        Ok(self.summary)
    }

    fn run_interactive(mut self) -> std::io::Result<Summary> {
        let config = rustyline::Config::builder()
            .max_history_size(HISTORY_MAX_LINES)
            .map_err(std::io::Error::other)?
            .auto_add_history(true)
            .build();
        let mut editor: rustyline::DefaultEditor =
            rustyline::Editor::with_config(config).map_err(std::io::Error::other)?;
        let history = history_path();
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        writeln!(
            self.out,
            "connected to {}; type `help` for commands, `.quit` to leave",
            self.session.address()
        )?;
        let prompt = format!("es {}> ", self.session.address());
        loop {
            match editor.readline(&prompt) {
                Ok(line) => {
                    if !self.handle(&line)? {
                        break;
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(error) => return Err(std::io::Error::other(error)),
            }
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        Ok(self.summary)
    }

    /// Handles one line. Returns false when the shell should stop.
    pub fn handle(&mut self, line: &str) -> std::io::Result<bool> {
        let command = match parse_line(line) {
            Ok(Some(command)) => command,
            Ok(None) => return Ok(true),
            Err(error) => {
                self.summary.commands += 1;
                self.report_failure("parse", &error.to_string())?;
                return Ok(true);
            }
        };
        match command {
            Command::Quit => return Ok(false),
            Command::Help(topic) => self.help(topic.as_deref())?,
            Command::Hex(on) => {
                self.show_hex = on;
                if self.format == Format::Text {
                    writeln!(self.out, "hex dumps {}", if on { "on" } else { "off" })?;
                }
            }
            Command::Request(request) => {
                self.summary.commands += 1;
                match self.session.execute(&request) {
                    Ok(outcome) => {
                        if matches!(outcome.reply, crate::session::Reply::Failed(_)) {
                            self.summary.server_errors += 1;
                        }
                        match self.format {
                            Format::Text => {
                                write!(self.out, "{}", output::text(&outcome, self.show_hex))?
                            }
                            Format::Json => writeln!(
                                self.out,
                                "{}",
                                output::json_value(&outcome, self.show_hex)
                            )?,
                        }
                    }
                    Err(error) => self.report_failure(operation_name(line), &error.to_string())?,
                }
            }
        }
        self.out.flush()?;
        Ok(true)
    }

    fn report_failure(&mut self, operation: &str, message: &str) -> std::io::Result<()> {
        self.summary.failures += 1;
        match self.format {
            Format::Text => writeln!(self.out, "error: {message}"),
            Format::Json => writeln!(self.out, "{}", output::error_json(operation, message)),
        }
    }

    fn help(&mut self, topic: Option<&str>) -> std::io::Result<()> {
        match topic {
            None => {
                writeln!(self.out, "commands:")?;
                for usage in USAGES {
                    writeln!(self.out, "  {:<72} {}", usage.form, usage.summary)?;
                }
            }
            Some(name) => match crate::command::usage(name) {
                Some(usage) => writeln!(self.out, "{}\n  {}", usage.form, usage.summary)?,
                None => writeln!(
                    self.out,
                    "error: no command `{name}`; type `help` for the list"
                )?,
            },
        }
        Ok(())
    }
}

fn operation_name(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".es_history"))
}
