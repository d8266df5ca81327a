//! Platform services the app hands in: logging (a sink the app forwards to Logcat / os_log) and
//! a panic hook that logs panics before they unwind into the FFI layer.

use std::io::Write;
use std::sync::{Arc, Once};

use tracing_subscriber::fmt::MakeWriter;

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
/// tracing filter such as `info` or `warn,deskhand_sync=debug`; without a sink, lines go to
/// standard error.
#[uniffi::export]
pub fn init_platform(filter: String, sink: Option<Arc<dyn LogSink>>) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_new(&filter)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false);
        let installed = match sink {
            Some(sink) => builder
                .without_time()
                .with_writer(SinkWriter(sink))
                .try_init(),
            None => builder.with_writer(std::io::stderr).try_init(),
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
