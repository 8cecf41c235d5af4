//! `vigil report` as a user runs it over a `vigil demo` dataset (and the
//! compliance and security reports over the posture lab: `posture`), and
//! the HTML report opened in a real headless Chromium.
//!
//! The browser test needs Debian's `chromium-headless-shell` (or
//! `chromium`): on `PATH`, or named by `VIGIL_BROWSER`. It is skipped
//! when neither is found, unless `VIGIL_REQUIRE_BROWSER=1`
//! (`scripts/test.sh` installs the package and sets it), which turns the
//! absence into a failure. The browser runs with `--no-sandbox` (the tests
//! run as root), a throw-away profile, and every host name mapped to
//! nothing, so even a stray URL could not reach the network; the report
//! holds none (asserted).
//!
//! The SQL of every section also runs in DuckDB with the same answer
//! (tests/interop/check_report_sql.py), when `VIGIL_PYTHON` names a Python
//! with duckdb (as for the interop tests; `VIGIL_REQUIRE_INTEROP=1` makes
//! it required).
//!
//! Artefacts: the reports and their screenshots are kept under
//! `$CARGO_TARGET_TMPDIR/report-artefacts/` (`target/tmp/` of the build),
//! as `<report>.html` and `<report>.png`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::vigil_bin;

mod posture;

fn vigil(args: &[&str]) -> Output {
    Command::new(vigil_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("VIGIL_DATA_DIR")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One small demo dataset for every test here: 24 agents of 4 tenants,
/// 3 h (a few seconds in a debug build).
fn demo() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("demo");
        let o = vigil(&[
            "demo",
            "--quiet",
            "--agents",
            "24",
            "--tenants",
            "4",
            "--hours",
            "3",
            "--seed",
            "11",
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let out = text(&o.stdout);
        assert!(out.contains("# Fleet health report (all data)"), "{out}");
        assert!(out.contains("## Availability per tenant"), "{out}");
        dir
    })
    .path()
}

fn data() -> String {
    demo().join("demo").display().to_string()
}

#[test]
fn report_defaults_to_health_and_takes_a_scope() {
    let d = data();
    let o = vigil(&["report", "--data-dir", &d]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let health = text(&o.stdout);
    assert!(
        health.starts_with("# Fleet health report (all data)\n"),
        "{health}"
    );
    for title in [
        "## Fleet summary",
        "## Agents offline now",
        "## Resources in trouble",
    ] {
        assert!(health.contains(title), "{health}");
    }

    // JSON Lines per section; --tenant keeps exactly that tenant's rows.
    let sections = |args: &[&str]| -> Vec<(String, serde_json::Value)> {
        let o = vigil(&[&["report", "--data-dir", &d, "--format", "json"][..], args].concat());
        assert!(o.status.success(), "{}", text(&o.stderr));
        let mut section = String::new();
        let mut rows = Vec::new();
        // Sections are separated by an empty line.
        for line in text(&o.stdout).lines().filter(|l| !l.is_empty()) {
            match line.strip_prefix("# ") {
                Some(name) => section = name.to_owned(),
                None => rows.push((section.clone(), serde_json::from_str(line).unwrap())),
            }
        }
        rows
    };
    let incidents = |rows: &[(String, serde_json::Value)]| -> Vec<serde_json::Value> {
        rows.iter()
            .filter(|(s, _)| s == "incident_list")
            .map(|(_, r)| r.clone())
            .collect()
    };
    let all = incidents(&sections(&["alerts"]));
    assert!(!all.is_empty(), "the demo fleet raises alerts");
    let tenant = all[0]["tenant"].as_str().unwrap().to_owned();
    let theirs: Vec<_> = all
        .iter()
        .filter(|r| r["tenant"] == tenant.as_str())
        .cloned()
        .collect();
    assert_eq!(
        incidents(&sections(&["alerts", "--tenant", &tenant])),
        theirs
    );

    // A time range: the period starts where --from says.
    let summary = |args: &[&str]| -> serde_json::Value {
        let rows = sections(&[&["health"][..], args].concat());
        rows.into_iter()
            .find(|(s, _)| s == "fleet_summary")
            .unwrap()
            .1
    };
    let whole = summary(&[]);
    let start =
        chrono::DateTime::parse_from_rfc3339(whole["period_start"].as_str().unwrap()).unwrap();
    let later = (start + chrono::Duration::hours(1)).to_rfc3339();
    let end = whole["period_end"].as_str().unwrap();
    let part = summary(&["--from", &later, "--to", end]);
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(part["period_start"].as_str().unwrap()).unwrap(),
        start + chrono::Duration::hours(1)
    );
    assert!(part["agents_seen"].as_u64().unwrap() <= whole["agents_seen"].as_u64().unwrap());

    // Bad input is an error with the flag named, exit code 1.
    let o = vigil(&["report", "--data-dir", &d, "--from", "yesterday"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("--from"), "{}", text(&o.stderr));
    let o = vigil(&[
        "report",
        "--data-dir",
        &d,
        "--from",
        "2026-11-03",
        "--to",
        "2026-11-02",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let o = vigil(&["report", "weekly", "--data-dir", &d]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));

    // --out writes the file (and nothing on stdout), replacing an old one.
    let out_dir = tempfile::tempdir().unwrap();
    let path = out_dir.path().join("capacity.csv");
    std::fs::write(&path, "old").unwrap();
    let o = vigil(&[
        "report",
        "capacity",
        "--data-dir",
        &d,
        "--format",
        "csv",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(o.stdout.is_empty());
    let csv = std::fs::read_to_string(&path).unwrap();
    assert!(
        csv.starts_with("# capacity_trend\ntenant,metric,series,"),
        "{csv}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left");
}

/// The browser: `VIGIL_BROWSER`, else Debian's binaries on `PATH`; `None`
/// (test skipped) when there is none and none is required.
fn browser() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("VIGIL_BROWSER") {
        return Some(PathBuf::from(b));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium-headless-shell", "chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    assert!(
        std::env::var("VIGIL_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "VIGIL_REQUIRE_BROWSER=1 but no chromium-headless-shell or chromium on PATH (or VIGIL_BROWSER)"
    );
    eprintln!(
        "skipped: no headless Chromium; scripts/test.sh installs Debian's chromium-headless-shell"
    );
    None
}

/// What the browser made of one page.
struct Rendered {
    dom: String,
    stderr: String,
}

/// Opens `page` headless: dumps the DOM after load, takes a screenshot to
/// `png`, with console messages logged to stderr.
fn open_in_browser(browser: &Path, page: &Path, png: &Path) -> Rendered {
    let work = tempfile::tempdir().unwrap();
    let (out, err) = (work.path().join("dom.html"), work.path().join("stderr.log"));
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
            "--window-size=1280,2400",
        ])
        .arg(format!(
            "--user-data-dir={}",
            work.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "browser failed ({status}):\n{stderr}");
    Rendered {
        dom: std::fs::read_to_string(&out).unwrap(),
        stderr,
    }
}

/// The value of `attr="…"` on the dumped `<body>` element.
fn body_attr<'a>(dom: &'a str, attr: &str) -> Option<&'a str> {
    let body = &dom[dom.find("<body")?..];
    let body = &body[..body.find('>')?];
    let key = format!("{attr}=\"");
    let rest = &body[body.find(&key)? + key.len()..];
    Some(&rest[..rest.find('"')?])
}

/// Width and height of a PNG (its IHDR chunk), after checking the
/// signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR"
    );
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn html_reports_render_in_headless_chromium() {
    let Some(browser) = browser() else { return };
    let d = data();
    let p = crate::common::posture_data()
        .dir
        .path()
        .to_str()
        .unwrap()
        .to_owned();
    let artefacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    for (kind, d) in [
        ("health", &d),
        ("alerts", &d),
        ("capacity", &d),
        ("compliance", &p),
        ("security", &p),
    ] {
        let page = artefacts.join(format!("{kind}.html"));
        let png = artefacts.join(format!("{kind}.png"));
        let _ = std::fs::remove_file(&png);
        let o = vigil(&[
            "report",
            kind,
            "--data-dir",
            d,
            "--format",
            "html",
            "--out",
            page.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let html = std::fs::read_to_string(&page).unwrap();
        for needle in ["http://", "https://", "src=", "url(", "@import"] {
            assert!(!html.contains(needle), "{kind}.html references {needle}");
        }
        let charts = html.matches("<svg class=\"chart\"").count();
        assert!(charts >= 2, "{kind}: {charts} charts in the file");

        let r = open_in_browser(&browser, &page, &png);
        let console: Vec<&str> = r.stderr.lines().filter(|l| l.contains("CONSOLE")).collect();
        assert!(
            console.is_empty(),
            "{kind}: console messages:\n{}",
            console.join("\n")
        );
        // The page's script counted the charts and found each one drawn
        // (every mark with a non-empty bounding box).
        assert_eq!(
            body_attr(&r.dom, "data-charts"),
            Some(charts.to_string().as_str()),
            "{kind}"
        );
        assert_eq!(
            body_attr(&r.dom, "data-charts-rendered"),
            Some(charts.to_string().as_str()),
            "{kind}: not every chart drew its marks"
        );
        assert_eq!(
            r.dom.matches("data-rendered=\"yes\"").count(),
            charts,
            "{kind}"
        );

        let bytes = std::fs::read(&png).unwrap();
        let (w, h) = png_size(&bytes);
        assert!(w >= 1000 && h >= 1000, "{kind}: screenshot {w}×{h}");
        assert!(
            bytes.len() > 30_000,
            "{kind}: screenshot of {} bytes looks blank",
            bytes.len()
        );
        eprintln!(
            "{kind}: {} bytes of HTML, {charts} charts, screenshot {} ({} bytes)",
            html.len(),
            png.display(),
            bytes.len()
        );
    }
}

/// Every section of `kinds` over the datasets under `root`, as
/// check_report_sql.py takes them (name, SQL, columns, rows), and the
/// rows in all.
fn sections_for_duckdb(
    root: &Path,
    kinds: &[vigil_query::report::ReportKind],
) -> (Vec<serde_json::Value>, usize) {
    use vigil_query::report::{self, Scope};
    use vigil_query::{render, Format, QuerySession};
    let session = QuerySession::open(root).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut sections = Vec::new();
    let mut rows_total = 0;
    for &kind in kinds {
        let r = rt
            .block_on(report::run(&session, kind, &Scope::default()))
            .unwrap();
        for s in &r.sections {
            let rows: Vec<serde_json::Value> = render(&s.batches, Format::Json)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            rows_total += rows.len();
            let columns: Vec<String> = s.batches[0]
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            sections.push(serde_json::json!({
                "name": format!("{kind}.{}", s.spec.name),
                "sql": s.spec.sql,
                "columns": columns,
                "rows": rows,
            }));
        }
    }
    (sections, rows_total)
}

#[test]
fn report_sql_gives_the_same_answer_in_duckdb() {
    use vigil_query::report::ReportKind;
    let Some(python) = crate::common::interop_python("duckdb") else {
        return;
    };
    let demo_root = demo().join("demo");
    let posture_root = crate::common::posture_data().dir.path().to_path_buf();
    for (root, kinds) in [
        (
            demo_root,
            &[ReportKind::Health, ReportKind::Alerts, ReportKind::Capacity][..],
        ),
        (
            posture_root,
            &[ReportKind::Compliance, ReportKind::Security][..],
        ),
    ] {
        let (sections, rows_total) = sections_for_duckdb(&root, kinds);
        assert!(
            rows_total > 50,
            "the dataset gives the sections rows to compare"
        );
        let spec = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(spec.path(), serde_json::to_vec(&sections).unwrap()).unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/interop/check_report_sql.py"
        );
        let o = Command::new(&python)
            .arg(script)
            .arg(&root)
            .arg(spec.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "check_report_sql.py failed:\n{}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
}
