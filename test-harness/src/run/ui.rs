//! A real headless browser (Debian's Chromium) looking at the Zipkin UI: the check that a person
//! opening the trace link would see the trace meshtrace reported.
//!
//! Chromium's own command line is enough: `--dump-dom` with a virtual-time budget lets the Zipkin
//! Lens single-page app fetch the trace and render it, and `--screenshot` keeps a picture of it.
//!
//! ```text
//! let r = ui::check_zipkin_trace(&ui::ZipkinPage { base: "http://127.0.0.1:9411".into(),
//!     trace_id: "…".into(), spans: 8, services: vec!["hello".into()], screenshot: None });
//! ```

use crate::process;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What the trace page must show.
#[derive(Debug, Clone)]
pub struct ZipkinPage {
    /// `http://host:port` of the Zipkin server.
    pub base: String,
    pub trace_id: String,
    pub spans: usize,
    pub services: Vec<String>,
    /// Where to save a screenshot of the page (PNG), if anywhere.
    pub screenshot: Option<PathBuf>,
}

/// Loads `/zipkin/traces/<id>` in headless Chromium and checks the rendered page: the trace id,
/// the "Total Spans" and "Services" counts, and a `<service>: <span name>` row per service.
/// Ok carries a short description; Err says what the page lacked.
pub fn check_zipkin_trace(page: &ZipkinPage) -> Result<String, String> {
    let chromium = crate::tools::chromium().ok_or(
        "no Chromium: install Debian's `chromium` (make tools does) or set MESHTRACE_CHROMIUM",
    )?;
    let url = format!("{}/zipkin/traces/{}", page.base, page.trace_id);
    let t0 = Instant::now();
    let dom = run_chromium(&chromium, &url, &["--dump-dom"])?;
    let text = visible_text(&dom);
    let problems = page_problems(&text, page);
    if !problems.is_empty() {
        return Err(format!(
            "{url}: {}; page text begins: {:?}",
            problems.join("; "),
            text.iter().take(24).collect::<Vec<_>>()
        ));
    }
    if let Some(shot) = &page.screenshot {
        if let Some(dir) = shot.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let arg = format!("--screenshot={}", shot.display());
        run_chromium(
            &chromium,
            &url,
            &[&arg, "--window-size=1400,1000", "--hide-scrollbars"],
        )?;
        if !shot.is_file() {
            return Err(format!("no screenshot written to {}", shot.display()));
        }
    }
    Ok(format!(
        "{url} shows trace {} with {} spans and services {:?} ({} ms{})",
        page.trace_id,
        page.spans,
        page.services,
        t0.elapsed().as_millis(),
        page.screenshot
            .as_ref()
            .map(|s| format!(", screenshot {}", s.display()))
            .unwrap_or_default()
    ))
}

/// What is missing from the page's text for `page`.
pub fn page_problems(text: &[String], page: &ZipkinPage) -> Vec<String> {
    let mut problems = Vec::new();
    let after = |label: &str| {
        text.iter()
            .position(|l| l == label)
            .and_then(|i| text.get(i + 1))
            .cloned()
    };
    if after("Trace ID").as_deref() != Some(page.trace_id.as_str()) {
        problems.push(format!(
            "\"Trace ID\" is not {} (got {:?})",
            page.trace_id,
            after("Trace ID")
        ));
    }
    let spans = page.spans.to_string();
    if after("Total Spans").as_deref() != Some(spans.as_str()) {
        problems.push(format!(
            "\"Total Spans\" is not {spans} (got {:?})",
            after("Total Spans")
        ));
    }
    let services = page.services.len().to_string();
    if after("Services").as_deref() != Some(services.as_str()) {
        problems.push(format!(
            "\"Services\" is not {services} (got {:?})",
            after("Services")
        ));
    }
    for s in &page.services {
        // Zipkin lower-cases service names; rows read "<service>: <span name>".
        let row = format!("{}: ", s.to_lowercase());
        if !text.iter().any(|l| l.starts_with(&row)) {
            problems.push(format!("no span row for service {s:?}"));
        }
    }
    problems
}

/// The page's text nodes, trimmed, without scripts and styles.
pub fn visible_text(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        push_text(&rest[..open], &mut out);
        let tag = &rest[open..];
        let lower = tag.get(..8).unwrap_or(tag).to_ascii_lowercase();
        let skip_to = if lower.starts_with("<script") {
            Some("</script>")
        } else if lower.starts_with("<style") {
            Some("</style>")
        } else {
            None
        };
        rest = match skip_to.and_then(|end| find_ci(tag, end).map(|i| i + end.len())) {
            Some(i) => &tag[i..],
            None => match tag.find('>') {
                Some(i) => &tag[i + 1..],
                None => "",
            },
        };
    }
    push_text(rest, &mut out);
    out
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.to_ascii_lowercase().find(needle)
}

fn push_text(raw: &str, out: &mut Vec<String>) {
    let t = raw.trim();
    if !t.is_empty() {
        out.push(unescape(t));
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

fn run_chromium(chromium: &Path, url: &str, extra: &[&str]) -> Result<String, String> {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let profile = std::env::temp_dir().join(format!(
        "meshtrace-chromium-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        // Nothing outside loopback is reachable here; don't let Chromium try.
        "--disable-background-networking",
        "--disable-component-update",
        "--virtual-time-budget=10000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    // Supervised as a group, so a timeout stops the renderers too, not only the browser.
    let timeout = Duration::from_secs(60);
    let out = process::output(&mut cmd, timeout);
    let _ = std::fs::remove_dir_all(&profile);
    let out = out.map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => {
            format!("chromium did not finish within {}s", timeout.as_secs())
        }
        _ => format!("{}: {e}", chromium.display()),
    })?;
    if !out.status.success() {
        return Err(format!("chromium exited with {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<html><head><style>.a{}</style><script>var x = "<div>no</div>";</script></head>
<body><noscript>You need to enable JavaScript to run this app.</noscript><div>Services</div><div>3</div>
<span>Total Spans</span><span>8</span><div>Trace ID</div><div>1a79efbfe182d7b6</div>
<div>client: example.com/</div><div>hello: example.com/</div><div>world: a&amp;b</div></body></html>"#;

    fn page(services: &[&str], spans: usize) -> ZipkinPage {
        ZipkinPage {
            base: String::new(),
            trace_id: "1a79efbfe182d7b6".into(),
            spans,
            services: services.iter().map(|s| s.to_string()).collect(),
            screenshot: None,
        }
    }

    #[test]
    fn text_skips_scripts_and_unescapes() {
        let t = visible_text(PAGE);
        assert!(!t
            .iter()
            .any(|l| l.contains("no</div>") || l.contains(".a{}")));
        assert!(t.contains(&"world: a&b".to_string()));
        assert_eq!(
            t.first().map(String::as_str),
            Some("You need to enable JavaScript to run this app.")
        );
    }

    #[test]
    fn page_rows() {
        let t = visible_text(PAGE);
        assert!(page_problems(&t, &page(&["client", "Hello", "world"], 8)).is_empty());
        let rows: &[(&str, ZipkinPage, &str)] = &[
            (
                "span count",
                page(&["client", "hello", "world"], 7),
                "Total Spans",
            ),
            (
                "service count",
                page(&["client", "hello"], 8),
                "\"Services\"",
            ),
            (
                "missing service",
                page(&["client", "hello", "mars"], 8),
                "mars",
            ),
        ];
        for (name, p, want) in rows {
            let problems = page_problems(&t, p).join("; ");
            assert!(problems.contains(want), "row {name}: {problems}");
        }
        let mut other = page(&["client", "hello", "world"], 8);
        other.trace_id = "ffffffffffffffff".into();
        assert!(page_problems(&t, &other).join(";").contains("Trace ID"));
        // An empty page (unknown trace) lacks everything.
        assert_eq!(page_problems(&[], &page(&["a"], 1)).len(), 4);
    }
}
