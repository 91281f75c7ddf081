//! Logs to stderr through `tracing`: human-readable by default, JSON on request.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// `PORTCULLIS_LOG` (a tracing filter) overrides the configured level, and
/// is taken exactly as written.
pub fn init(format: LogFormat, level: &str) {
    let filter = std::env::var("PORTCULLIS_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(configured_filter(level)).ok())
        .unwrap_or_else(|| EnvFilter::new(configured_filter("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// The configured level, with rustls's own log lines limited to errors:
/// every refused handshake or broken connection already gets one gateway
/// line with the reason, and rustls would add a WARN line of its own for
/// many of them ("Received a ApplicationData message while expecting
/// [Handshake]", "Sending warning alert NoRenegotiation"): a second line per
/// event, at a higher level than ours, that any client can produce at will.
fn configured_filter(level: &str) -> String {
    if level.contains("rustls") {
        level.to_string()
    } else {
        format!("{level},rustls=error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_is_quiet_unless_the_level_names_it() {
        assert_eq!(configured_filter("info"), "info,rustls=error");
        assert_eq!(configured_filter("debug"), "debug,rustls=error");
        assert_eq!(configured_filter("info,rustls=debug"), "info,rustls=debug");
        assert!(EnvFilter::try_new(configured_filter("warn")).is_ok());
    }
}
