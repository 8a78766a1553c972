//! Schemathesis (from PyPI, installed by `cargo xtask test`) against the gateway's own
//! OpenAPI document, with a real customer token from the OpenID provider, in front of every
//! real service: no answer is a 5xx, and every answer's status, content type, headers and
//! body are the ones the document gives.

use testkit::front::Front;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let python_path = testkit::infra().python_path.clone().expect(
        "STREAMSHOP_TEST_PYTHONPATH names where schemathesis is installed: run the tests with `cargo xtask test`",
    );
    // Limits well above what the fuzzer sends, so it tests the routes, not the limiter.
    let front = Front::start(&[
        ("RATE_LIMIT_PER_MINUTE", "1000000".into()),
        ("RATE_LIMIT_BURST", "100000".into()),
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "1000000".into()),
        ("RATE_LIMIT_ANONYMOUS_BURST", "100000".into()),
    ])
    .await;
    let token = front.oidc.customer_token(Uuid::now_v7()).await;
    // Schemathesis keeps a cache of what it found in its working folder: a private one.
    let workdir = std::env::temp_dir().join(format!(
        "streamshop-schemathesis-{}",
        Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&workdir).expect("create schemathesis's folder");
    let output = tokio::process::Command::new("python3")
        .current_dir(&workdir)
        .env("PYTHONPATH", &python_path)
        .args([
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
            "run",
            &format!("{}/openapi.json", front.url),
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
            "--include-path-regex",
            "^/api/",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--seed",
            "20261130",
            "--workers",
            "2",
            "--request-timeout",
            "15",
        ])
        .output()
        .await
        .expect("run schemathesis");
    let _ = std::fs::remove_dir_all(&workdir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
}
