//! Progress of the long jobs (`eval`, `eval --head`, `finetune`) on stderr: an indicatif bar on
//! a terminal; elsewhere (a log file, CI, `2>` into a file) a plain line every tenth of the way,
//! so logs stay readable and free of escape codes. Hidden entirely with `--json` callers' `quiet`.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    total: u64,
    done: u64,
    /// Plain lines: one every `every` items.
    every: u64,
    quiet: bool,
    started: Instant,
}

impl Progress {
    /// `what`: the items counted, e.g. "clips embedded".
    pub fn new(total: usize, what: impl Into<String>, quiet: bool) -> Self {
        let total = total as u64;
        let what = what.into();
        let quiet = quiet || super::quiet();
        let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = (!quiet && on_terminal && total > 0).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} {msg} ({elapsed}, about {eta} left)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(what.clone());
            bar
        });
        Self {
            bar,
            what,
            total,
            done: 0,
            every: (total / 10).max(1),
            quiet,
            started: Instant::now(),
        }
    }

    pub fn inc(&mut self) {
        self.done += 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
        } else if !self.quiet && (self.done.is_multiple_of(self.every) || self.done == self.total) {
            eprintln!(
                "{} / {} {} ({:.0} s)",
                self.done,
                self.total,
                self.what,
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// Prints a message above the bar (or as a plain line); not silenced by `-q` (it reports
    /// skipped files).
    pub fn println(&self, msg: impl AsRef<str>) {
        match &self.bar {
            Some(bar) => bar.println(msg.as_ref()),
            None => eprintln!("{}", msg.as_ref()),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
