//! `cache-metrics --watch`: the numbers again every second. On a terminal, one screen
//! redrawn in place, with each level's hit ratio per second as a sparkline, until `q`
//! or Ctrl-C; otherwise one plain line per second, for logs and pipes.

use std::collections::VecDeque;
use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};

use crate::cli::cache_report::{Report, Source, percent};
use crate::cli::terminal::{self, QuitKey, Screen};
use crate::metrics::CacheKind;

const EVERY: Duration = Duration::from_secs(1);
/// Seconds of history kept for the sparklines (a wide terminal shows them all).
const KEPT: usize = 300;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
const LEVELS: usize = CacheKind::ALL.len();

/// What happened between two readings.
#[derive(Debug, PartialEq)]
struct Interval {
    requests_per_second: f64,
    db_queries_per_second: f64,
    /// Per level (in `CacheKind::ALL` order, as `Report::levels`): hits / lookups,
    /// `None` without lookups.
    hit_ratios: [Option<f64>; LEVELS],
}

impl Interval {
    fn between(before: &Report, after: &Report, seconds: f64) -> Interval {
        // A restarted server counts from zero again: `since` gives no negative counts.
        let counted = after.counts.since(&before.counts);
        let per_second = |n: u64| n as f64 / seconds.max(0.001);
        Interval {
            requests_per_second: per_second(counted.requests),
            db_queries_per_second: per_second(counted.db_queries),
            hit_ratios: CacheKind::ALL.map(|kind| counted.kind(kind).ratio_if_any()),
        }
    }

    /// The line printed per second when stdout is no terminal.
    fn plain_line(&self, at: chrono::DateTime<chrono::Utc>, report: &Report) -> String {
        let mut line = format!(
            "{} requests/s={:.1} db_queries/s={:.1}",
            timestamp(at),
            self.requests_per_second,
            self.db_queries_per_second
        );
        for ((name, _), ratio) in report.levels().iter().zip(self.hit_ratios) {
            line += &format!(" {name}={}", ratio.map_or_else(|| "-".to_owned(), percent));
        }
        line
    }
}

fn sparkline(ratios: impl Iterator<Item = Option<f64>>) -> String {
    ratios
        .map(|ratio| match ratio {
            // No lookups that second: nothing to draw.
            None => ' ',
            Some(ratio) => BARS[(ratio.clamp(0.0, 1.0) * 7.0).round() as usize],
        })
        .collect()
}

#[derive(Default)]
struct History {
    levels: [VecDeque<Option<f64>>; LEVELS],
}

impl History {
    fn push(&mut self, interval: &Interval) {
        for (kept, ratio) in self.levels.iter_mut().zip(interval.hit_ratios) {
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(ratio);
        }
    }

    /// The last `width` seconds of one level, right-aligned.
    fn sparkline(&self, level: usize, width: usize) -> String {
        let kept = &self.levels[level];
        let shown = kept.iter().skip(kept.len().saturating_sub(width)).copied();
        format!("{:>width$}", sparkline(shown))
    }
}

fn screen_lines(
    report: &Report,
    interval: Option<&Interval>,
    history: &History,
    problem: Option<&str>,
    width: usize,
) -> Vec<String> {
    let rate = |pick: fn(&Interval) -> f64| {
        interval.map_or("–".to_owned(), |i| format!("{:.1}", pick(i)))
    };
    let mut lines = vec![
        format!(
            "listings cache-metrics · {} · {} · {}",
            report.cache,
            report.source,
            chrono::Utc::now().format("%H:%M:%S UTC")
        ),
        "q or Ctrl-C quits".to_owned(),
        String::new(),
        format!(
            "requests/s {:>8}   database queries/s {:>8}   ({})",
            rate(|i| i.requests_per_second),
            rate(|i| i.db_queries_per_second),
            report.scope()
        ),
        String::new(),
    ];
    // 16 + 3 × 11 + 2 × 9 columns before the chart.
    let chart_width = width.saturating_sub(68).clamp(10, KEPT);
    lines.push(format!(
        "{:<16}{:>11}{:>11}{:>11}{:>9}  hit ratio per second, last {chart_width} s",
        "level", "hits", "misses", "ratio", "now"
    ));
    for (index, (name, level)) in report.levels().into_iter().enumerate() {
        let now = interval
            .and_then(|interval| interval.hit_ratios[index])
            .map_or_else(|| "–".to_owned(), percent);
        lines.push(format!(
            "{name:<16}{:>11}{:>11}{:>11}{now:>9}  {}",
            level.hits,
            level.misses,
            percent(level.hit_ratio),
            history.sparkline(index, chart_width)
        ));
    }
    if let Some(keyspace) = report.keyspace_line() {
        lines.push(String::new());
        lines.push(keyspace);
    }
    if let Some(problem) = problem {
        lines.push(String::new());
        lines.push(format!("cannot read the numbers, retrying: {problem}"));
    }
    lines
}

/// Where each second goes: the redrawn screen, or a line of its own.
enum Output {
    Screen(Screen),
    Lines,
}

impl Output {
    /// Shows one second; false once nobody reads the lines any more (`| head -3`).
    fn show(&self, screen: impl FnOnce() -> Vec<String>, line: impl FnOnce() -> String) -> bool {
        match self {
            Output::Screen(shown) => {
                shown.draw(&screen());
                true
            }
            Output::Lines => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", line())
                    .and_then(|()| out.flush())
                    .is_ok()
            }
        }
    }
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> impl std::fmt::Display {
    at.format("%Y-%m-%dT%H:%M:%SZ")
}

pub async fn run(source: &Source) -> anyhow::Result<()> {
    // The first reading says at once whether there is anything to watch.
    let mut previous = (Instant::now(), source.read().await?);
    let output = if std::io::stdout().is_terminal() {
        Output::Screen(Screen::enter())
    } else {
        Output::Lines
    };
    let mut quit = QuitKey::listen();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut history = History::default();
    if let Output::Screen(screen) = &output {
        screen.draw(&screen_lines(
            &previous.1,
            None,
            &history,
            None,
            terminal::width(),
        ));
    }
    let stop = async {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            Some(()) = quit.pressed.recv() => {}
        }
    };
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let reading = tokio::select! {
            () = &mut stop => break,
            _ = ticks.tick() => tokio::select! {
                () = &mut stop => break,
                reading = source.read() => reading,
            },
        };
        let now = Instant::now();
        let shown = match reading {
            Ok(report) => {
                let seconds = now.duration_since(previous.0).as_secs_f64();
                let interval = Interval::between(&previous.1, &report, seconds);
                history.push(&interval);
                let shown = output.show(
                    || screen_lines(&report, Some(&interval), &history, None, terminal::width()),
                    || interval.plain_line(chrono::Utc::now(), &report),
                );
                previous = (now, report);
                shown
            }
            Err(error) => {
                let problem = format!("{error:#}");
                output.show(
                    || {
                        screen_lines(
                            &previous.1,
                            None,
                            &history,
                            Some(&problem),
                            terminal::width(),
                        )
                    },
                    || format!("{} error={problem:?}", timestamp(chrono::Utc::now())),
                )
            }
        };
        if !shown {
            break;
        }
    }
    // The terminal gets its own screen back.
    drop(output);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Counts, HitsMisses};

    fn report(requests: u64, view: (u64, u64), items: (u64, u64)) -> Report {
        let level = |(hits, misses): (u64, u64)| HitsMisses { hits, misses };
        let counts = Counts {
            cache: [level(view), level((0, 0)), level((0, 0)), level(items)],
            requests,
            db_queries: 4,
            reads: Default::default(),
        };
        Report::new("in-process", "test".into(), None, counts)
    }

    #[test]
    fn an_interval_is_what_changed_per_second() {
        let before = report(10, (5, 5), (1, 0));
        let after = report(30, (20, 10), (1, 0));
        let interval = Interval::between(&before, &after, 2.0);
        assert_eq!(interval.requests_per_second, 10.0);
        assert_eq!(interval.db_queries_per_second, 0.0);
        assert_eq!(interval.hit_ratios, [Some(0.75), None, None, None]);
        // A restarted server: counters went down, nothing negative.
        let restarted = Interval::between(&after, &before, 1.0);
        assert_eq!(restarted.requests_per_second, 0.0);
        assert_eq!(restarted.hit_ratios, [None; 4]);
    }

    #[test]
    fn plain_lines_name_every_number() {
        let before = report(10, (5, 5), (1, 0));
        let after = report(30, (20, 10), (1, 0));
        let at = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        let line = Interval::between(&before, &after, 1.0).plain_line(at, &after);
        assert_eq!(
            line,
            "2026-09-21T14:13:20Z requests/s=20.0 db_queries/s=0.0 view=75.0% all_properties=- queries=- items=-"
        );
    }

    #[test]
    fn sparklines_scale_ratios_to_eight_bars() {
        let line = sparkline([Some(0.0), Some(0.5), Some(1.0), None, Some(7.0)].into_iter());
        assert_eq!(line, "▁▅█ █");
        let mut history = History::default();
        for _ in 0..KEPT + 5 {
            history.push(&Interval {
                requests_per_second: 0.0,
                db_queries_per_second: 0.0,
                hit_ratios: [Some(1.0), None, None, Some(0.0)],
            });
        }
        assert_eq!(history.levels[0].len(), KEPT);
        assert_eq!(history.sparkline(0, 3), "███");
        assert_eq!(history.sparkline(3, 2), "▁▁");
        assert_eq!(history.sparkline(1, 2), "  ");
    }
}
