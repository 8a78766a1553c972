//! The three ways to run streamshop cannot drift apart: `deploy/check.py` renders both
//! Kubernetes overlays (without kustomize), validates every manifest against the pinned
//! Kubernetes schemas and the committed KEDA and CloudNativePG CRDs, and compares each
//! Deployment with its compose service (ports, environment, probes) and compose's start
//! order. Its self-test proves that each kind of drift is caught.

use std::path::Path;
use std::process::Command;

fn check(args: &[&str]) -> String {
    let python_path = testkit::infra().deploy_python_path.clone().expect(
        "STREAMSHOP_TEST_DEPLOY_PYTHONPATH names where kubernetes-validate is installed: run the tests with `cargo xtask test`",
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new("python3")
        .current_dir(&root)
        .env("PYTHONPATH", python_path)
        .arg("deploy/check.py")
        .args(args)
        .output()
        .expect("run python3 deploy/check.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "deploy/check.py {args:?} failed:\n{text}"
    );
    text
}

#[test]
fn manifests_validate_render_and_agree_with_compose() {
    let text = check(&[]);
    for line in [
        "local: schemas",
        "production: schemas",
        "local: compose and Kubernetes agree",
        "production: compose and Kubernetes agree",
        "compose: starts in order",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(line)),
            "no passing check {line:?} in:\n{text}"
        );
    }
}

#[test]
fn the_check_catches_every_kind_of_drift() {
    let text = check(&["--self-test"]);
    assert!(text.contains("all mutations caught"), "{text}");
}
