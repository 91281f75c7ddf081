//! The OCSP stapling lines of `/metrics`, per site: what is stapled, how
//! old it is, when it expires, and how fetches went. Read from the
//! stapling thread's registry at scrape time.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::render::escape;
use crate::ocsp::SiteStatus;

pub(super) fn render(out: &mut String, sites: &[SiteStatus]) {
    if sites.is_empty() {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    out.push_str("# HELP portcullis_ocsp_staple_status The OCSP response stapled now, per site (1 for the current state: good, revoked or none).\n# TYPE portcullis_ocsp_staple_status gauge\n");
    for s in sites {
        for state in ["good", "revoked", "none"] {
            let _ = writeln!(
                out,
                "portcullis_ocsp_staple_status{{site=\"{}\",status=\"{state}\"}} {}",
                escape(&s.site),
                u8::from(s.stapled == state)
            );
        }
    }
    out.push_str("# HELP portcullis_ocsp_staple_age_seconds Seconds since the stapled response's thisUpdate.\n# TYPE portcullis_ocsp_staple_age_seconds gauge\n");
    for s in sites {
        if let Some(t) = s.this_update {
            let _ = writeln!(
                out,
                "portcullis_ocsp_staple_age_seconds{{site=\"{}\"}} {}",
                escape(&s.site),
                now as i64 - t as i64
            );
        }
    }
    out.push_str("# HELP portcullis_ocsp_staple_next_update_timestamp_seconds The stapled response's nextUpdate (Unix time).\n# TYPE portcullis_ocsp_staple_next_update_timestamp_seconds gauge\n");
    for s in sites {
        if let Some(t) = s.next_update {
            let _ = writeln!(
                out,
                "portcullis_ocsp_staple_next_update_timestamp_seconds{{site=\"{}\"}} {t}",
                escape(&s.site)
            );
        }
    }
    out.push_str("# HELP portcullis_ocsp_fetches_total OCSP fetches per site: ok (verified and stapled) or failed (no answer, not verified, or status unknown).\n# TYPE portcullis_ocsp_fetches_total counter\n");
    for s in sites {
        for (result, n) in [("ok", s.fetched), ("failed", s.failed)] {
            let _ = writeln!(
                out,
                "portcullis_ocsp_fetches_total{{site=\"{}\",responder=\"{}\",result=\"{result}\"}} {n}",
                escape(&s.site),
                escape(&s.url)
            );
        }
    }
}
