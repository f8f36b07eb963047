//! Progress of long commands on stderr: a bar on a terminal, plain lines otherwise (so
//! logs and CI output stay readable).

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    verb: &'static str,
    last_line: Instant,
}

const LINE_EVERY: Duration = Duration::from_secs(1);

impl Progress {
    pub fn new(total: u64, verb: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} rows ({per_sec}, {eta} left)",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(verb);
            bar
        });
        Progress {
            bar,
            total,
            verb,
            last_line: Instant::now(),
        }
    }

    pub fn update(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.last_line.elapsed() >= LINE_EVERY || done == self.total => {
                self.last_line = Instant::now();
                eprintln!("{}: {done}/{} rows", self.verb, self.total);
            }
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
