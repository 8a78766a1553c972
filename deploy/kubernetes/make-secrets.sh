#!/usr/bin/env bash
# Makes every Secret deploy/kubernetes needs and applies it with kubectl (or prints it with
# --print): `cargo xtask k8s-secrets`, which this runs. With no arguments every key,
# certificate and password is made fresh for the namespace (and kept under
# .state/k8s/<namespace>/, readable by you only, so a second run makes the same Secrets);
# nothing committed in this repository is used. The Secrets and their keys are listed in
# xtask/src/k8s_secrets.rs.
#
# Usage:
#   deploy/kubernetes/make-secrets.sh [--print] [--namespace streamshop]
#       [--overlay local|production] [--dev] [--state DIR]
#       [--stripe-secret-key-file FILE]
#
#   --dev        the compose stack's committed development keys and passwords (docker/tls,
#                docker/nats, <role>-dev-password): for a laptop's cluster only. Refused with
#                --overlay production, which also refuses any material the repository holds.
#   --print      print the Secrets as YAML instead of applying them (no cluster needed)
#   --stripe-secret-key-file FILE
#                your Stripe secret key for payments (sk_test_… keeps them in test mode);
#                required with --overlay production, a placeholder otherwise
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -n ${STREAMSHOP_XTASK:-} ]]; then
  exec "$STREAMSHOP_XTASK" k8s-secrets "$@"
fi
exec cargo xtask k8s-secrets "$@"
