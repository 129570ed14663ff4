//! Progress bars on standard error, shown only for transfers that take more
//! than a second and only when standard error is a terminal.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_client::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Delay before a bar appears: quick operations stay quiet.
const SHOW_AFTER: Duration = Duration::from_secs(1);

pub(crate) struct Bars {
    bar: ProgressBar,
    started: Mutex<Instant>,
    visible: AtomicBool,
    enabled: bool,
}

impl Bars {
    /// Bars that draw when `enabled` and standard error is a terminal.
    pub(crate) fn new(enabled: bool) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:>11} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self {
            bar,
            started: Mutex::new(Instant::now()),
            visible: AtomicBool::new(false),
            enabled: enabled && std::io::stderr().is_terminal(),
        }
    }
}

impl Progress for Bars {
    fn begin(&self, phase: &str, total: u64) {
        self.bar.reset();
        self.bar.set_length(total);
        self.bar.set_message(phase.to_owned());
        if let Ok(mut started) = self.started.lock() {
            *started = Instant::now();
        }
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        if self.enabled
            && !self.visible.load(Ordering::Relaxed)
            && self
                .started
                .lock()
                .is_ok_and(|started| started.elapsed() > SHOW_AFTER)
        {
            self.visible.store(true, Ordering::Relaxed);
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn end(&self) {
        if self.visible.swap(false, Ordering::Relaxed) {
            self.bar.finish_and_clear();
            self.bar.set_draw_target(ProgressDrawTarget::hidden());
        }
    }
}
