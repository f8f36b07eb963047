//! The little terminal handling `--watch` needs: keys one at a time without echo (Ctrl-C
//! still interrupts), the window's width, and a screen redrawn in place that leaves the
//! terminal as it found it.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::mem::MaybeUninit;

use tokio::sync::mpsc;

/// Keys arrive one by one and are not echoed; restored on drop.
struct Cbreak {
    saved: libc::termios,
}

impl Cbreak {
    /// `None` when stdin is no terminal.
    fn enter() -> Option<Cbreak> {
        let mut saved = MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills the struct when it returns 0.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, saved.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: initialised by the successful tcgetattr above.
        let saved = unsafe { saved.assume_init() };
        let mut keys = saved;
        // ISIG stays: Ctrl-C is still SIGINT, which the watch handles like `q`.
        keys.c_lflag &= !(libc::ICANON | libc::ECHO);
        keys.c_cc[libc::VMIN] = 1;
        keys.c_cc[libc::VTIME] = 0;
        // SAFETY: a valid termios for the same descriptor.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &keys) } != 0 {
            return None;
        }
        Some(Cbreak { saved })
    }
}

impl Drop for Cbreak {
    fn drop(&mut self) {
        // SAFETY: the settings read from this descriptor in `enter`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

/// A full-window screen (the terminal's alternate screen, cursor hidden) that the
/// caller redraws; the terminal gets its own screen and settings back on drop.
pub struct Screen;

impl Screen {
    pub fn enter() -> Screen {
        print_now("\x1b[?1049h\x1b[?25l");
        Screen
    }

    /// Replaces what is shown with `lines`.
    pub fn draw(&self, lines: &[String]) {
        let mut frame = String::from("\x1b[H");
        for line in lines {
            frame.push_str(line);
            frame.push_str("\x1b[K\r\n");
        }
        frame.push_str("\x1b[J");
        print_now(&frame);
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        print_now("\x1b[?25h\x1b[?1049l");
    }
}

fn print_now(text: &str) {
    let mut out = std::io::stdout().lock();
    // A closed terminal is no reason to fail: the watch ends at the next signal.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Columns of the terminal on stdout; 80 when it cannot be told.
pub fn width() -> usize {
    let mut size = MaybeUninit::<libc::winsize>::zeroed();
    // SAFETY: TIOCGWINSZ fills a winsize; on failure the zeroed value is ignored.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, size.as_mut_ptr()) } == 0;
    // SAFETY: zero-initialised, a valid winsize either way.
    let size = unsafe { size.assume_init() };
    if ok && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

/// `q` pressed on the terminal on stdin (no Enter needed); never when stdin is no
/// terminal. The terminal's settings come back when this is dropped.
pub struct QuitKey {
    pub pressed: mpsc::UnboundedReceiver<()>,
    _mode: Option<Cbreak>,
}

impl QuitKey {
    pub fn listen() -> QuitKey {
        let (pressed, receiver) = mpsc::unbounded_channel();
        let mode = std::io::stdin().is_terminal().then(Cbreak::enter).flatten();
        if mode.is_some() {
            // A plain thread: it blocks in read(2) until the process exits.
            std::thread::spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut key = [0u8; 1];
                while let Ok(1) = stdin.read(&mut key) {
                    if key[0].eq_ignore_ascii_case(&b'q') {
                        let _ = pressed.send(());
                        return;
                    }
                }
            });
        }
        QuitKey {
            pressed: receiver,
            _mode: mode,
        }
    }
}
