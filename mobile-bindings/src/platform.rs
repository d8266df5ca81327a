//! Platform services the app hands in: logging (a sink the app forwards to Logcat / os_log) and
//! a panic hook that logs panics before they unwind into the FFI layer.

use std::io::Write;
use std::sync::{Arc, Once};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal operation.
    Info,
    /// Details.
    Debug,
    /// Everything.
    Trace,
}

/// Where the library's log lines go (Logcat, os_log, a file).
#[uniffi::export(foreign)]
pub trait LogSink: Send + Sync {
    /// One formatted line.
    fn log(&self, level: LogLevel, line: String);
}

/// Sets up logging and the panic hook, once per process (later calls do nothing). `filter` is a
/// tracing filter such as `info` or `warn,deskhand_sync=debug` (levels and targets; an invalid
/// filter means `warn`); without a sink, lines go to standard error.
#[uniffi::export]
pub fn init_platform(filter: String, sink: Option<Arc<dyn LogSink>>) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = parse_filter(&filter);
        let builder = tracing_subscriber::fmt().with_ansi(false);
        let installed = match sink {
            Some(sink) => builder
                .without_time()
                .with_writer(SinkWriter(sink))
                .finish()
                .with(filter)
                .try_init(),
            None => builder
                .with_writer(std::io::stderr)
                .finish()
                .with(filter)
                .try_init(),
        };
        if installed.is_err() {
            // The app installed a tracing subscriber of its own: keep it.
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            tracing::error!("panic in the Deskhand library: {info}");
            previous(info);
        }));
    });
}

/// A filter of comma-separated `level`, `target` and `target=level` directives (the static subset
/// of `RUST_LOG`'s syntax, without the regular expressions that would weigh on the phone library);
/// empty directives are skipped, anything invalid gives `warn`.
fn parse_filter(text: &str) -> Targets {
    let directives: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Targets::new();
    }
    let targets: Targets = directives
        .join(",")
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::WARN));
    // iroh 1.4 logs `ERROR relay_recv_channel closed` whenever an endpoint with a relay closes,
    // an ordinary shutdown; a filter that names the relay transport shows it again.
    if text.contains(RELAY_NOISE) {
        targets
    } else {
        targets.with_target(RELAY_NOISE, tracing_subscriber::filter::LevelFilter::OFF)
    }
}

const RELAY_NOISE: &str = "iroh::socket::transports::relay";

#[derive(Clone)]
struct SinkWriter(Arc<dyn LogSink>);

/// Collects one formatted event and hands it to the sink when done.
struct Line {
    sink: Arc<dyn LogSink>,
    level: LogLevel,
    buf: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if !text.is_empty() {
            self.sink.log(self.level, text.to_owned());
        }
    }
}

impl<'a> MakeWriter<'a> for SinkWriter {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line {
            sink: self.0.clone(),
            level: LogLevel::Info,
            buf: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        let level = match *meta.level() {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Trace,
        };
        Line {
            sink: self.0.clone(),
            level,
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::filter::LevelFilter;

    use super::parse_filter;

    #[test]
    fn filters_parse_like_rust_log() {
        let f = parse_filter("info, deskhand_sync=debug");
        assert!(f.would_enable("deskhand_sync::node", &Level::DEBUG));
        assert!(!f.would_enable("deskhand_sync::node", &Level::TRACE));
        assert!(f.would_enable("iroh", &Level::INFO));
        assert!(!f.would_enable("iroh", &Level::DEBUG));
        assert_eq!(
            parse_filter("warn").default_level(),
            Some(LevelFilter::WARN)
        );
        let bad = parse_filter("info,deskhand_sync=loud");
        assert!(bad.would_enable("deskhand_sync", &Level::WARN));
        assert!(!bad.would_enable("deskhand_sync", &Level::INFO));
        assert!(!parse_filter("").would_enable("deskhand_sync", &Level::ERROR));
        assert!(
            !parse_filter("warn").would_enable("iroh::socket::transports::relay", &Level::ERROR)
        );
        assert!(
            parse_filter("warn,iroh::socket::transports::relay=error")
                .would_enable("iroh::socket::transports::relay", &Level::ERROR)
        );
    }
}
