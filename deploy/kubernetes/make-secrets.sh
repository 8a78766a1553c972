#!/usr/bin/env bash
# Makes every Secret deploy/kubernetes needs and applies it with kubectl (or prints it with
# --print). Nothing secret is in the manifests themselves; this is the one place that says
# which Secret holds what:
#
#   <service>-tls        ca.pem, <holder>.crt, <holder>.key  mounted in TLS_DIR (/run/tls); the
#                        holder is the service's name, `query` for query-api (xtask/src/tls.rs)
#   <service>-nats       <service>.nk                        mounted in NATS_CREDENTIALS_DIR
#                        (every service but query-api)
#   <service>-database   DATABASE_URL [, DATABASE_OWNER_URL] env of the services with a database
#   pg-role-<role>       username, password (basic-auth)     CloudNativePG's roles (postgres.yaml),
#                        <role> with _ as -
#   nats-tls             tls.crt, tls.key                    the NATS server's certificate
#   nats-route-tls       tls.crt, tls.key                    the NATS routes' (*.nats-headless),
#                        made here from the CA's key unless the TLS folder has nats-route.crt/.key
#   streamshop-ca        ca.pem                              the CA NATS trusts
#   nats-auth            auth.conf                           the NATS users (authorization block)
#
# Usage:
#   deploy/kubernetes/make-secrets.sh [--print] [--namespace streamshop] [--dev-passwords]
#       [--tls-dir DIR] [--nats-keys DIR] [--nats-conf FILE]
#
#   --tls-dir    the CA and certificates: docker/tls (the default: compose's committed,
#                development ones) or .state/dev/tls (made by `cargo xtask up`)
#   --nats-keys  one <identity>.nk seed per service: docker/nats/keys (default) or
#                .state/dev/nats-credentials
#   --nats-conf  a nats-server configuration whose `authorization` block names those keys'
#                public keys: docker/nats/nats.conf (default) or .state/dev/nats/nats.conf
#   --dev-passwords  the database passwords of compose (<role>-dev-password): for a laptop only.
#                Without it every role gets a random password, and a role whose pg-role-*
#                Secret already exists in the namespace keeps its password.
#   --print      print the Secrets as YAML instead of applying them (no cluster needed)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
namespace=streamshop
tls_dir=$root/docker/tls
nats_keys=$root/docker/nats/keys
nats_conf=$root/docker/nats/nats.conf
dev_passwords=false
print=false
while [[ $# -gt 0 ]]; do
  case $1 in
    --print) print=true ;;
    --dev-passwords) dev_passwords=true ;;
    --namespace) namespace=$2; shift ;;
    --tls-dir) tls_dir=$2; shift ;;
    --nats-keys) nats_keys=$2; shift ;;
    --nats-conf) nats_conf=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "make-secrets.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# service, its certificate's holder, its database, and whether it migrates as an owner role.
services=(orders inventory payments orchestrator projections query-api gateway)
holder() { [[ $1 == query-api ]] && echo query || echo "$1"; }
database() {
  case $1 in
    orders|inventory|payments|orchestrator) echo "$1" ;;
    projections|query-api) echo read ;;
    *) echo "" ;;
  esac
}
runtime_role() { case $1 in query-api) echo query_api ;; *) echo "$1" ;; esac; }
owner_role() { case $1 in orders|inventory|payments|orchestrator) echo "$1_owner" ;; *) echo "" ;; esac; }
uses_nats() { [[ $1 != query-api ]]; }
roles=(orders_owner orders inventory_owner inventory payments_owner payments
       orchestrator_owner orchestrator projections query_api)
# The read-write Service CloudNativePG makes for the Cluster streamshop-pg.
pg_host=streamshop-pg-rw:5432

for f in "$tls_dir/ca.pem" "$nats_conf"; do
  [[ -f $f ]] || { echo "make-secrets.sh: $f is missing" >&2; exit 1; }
done

b64() { base64 | tr -d '\n'; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# secret NAME TYPE KEY=@FILE|KEY=VALUE...
secret() {
  local name=$1 type=$2 kv key value
  shift 2
  printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\n' "$name" "$namespace"
  printf '  labels:\n    app.kubernetes.io/part-of: streamshop\ntype: %s\ndata:\n' "$type"
  for kv in "$@"; do
    key=${kv%%=*}
    value=${kv#*=}
    if [[ $value == @* ]]; then
      [[ -f ${value#@} ]] || { echo "make-secrets.sh: ${value#@} is missing (Secret $name)" >&2; exit 1; }
      printf '  %s: %s\n' "$key" "$(b64 < "${value#@}")"
    else
      printf '  %s: %s\n' "$key" "$(printf '%s' "$value" | b64)"
    fi
  done
}

password() {
  local role=$1 existing=""
  if $dev_passwords; then
    echo "$role-dev-password"
    return
  fi
  if ! $print && command -v kubectl > /dev/null; then
    existing=$(kubectl -n "$namespace" get secret "pg-role-${role//_/-}" \
      -o jsonpath='{.data.password}' 2> /dev/null | base64 -d || true)
  fi
  if [[ -n $existing ]]; then echo "$existing"; else openssl rand -hex 24; fi
}

render() {
  declare -A pw
  local role s h db url
  for role in "${roles[@]}"; do
    pw[$role]=$(password "$role")
    secret "pg-role-${role//_/-}" kubernetes.io/basic-auth "username=$role" "password=${pw[$role]}"
  done

  for s in "${services[@]}"; do
    h=$(holder "$s")
    secret "${s}-tls" Opaque "ca.pem=@$tls_dir/ca.pem" "$h.crt=@$tls_dir/$h.crt" "$h.key=@$tls_dir/$h.key"
    if uses_nats "$s"; then
      secret "${s}-nats" Opaque "$s.nk=@$nats_keys/$s.nk"
    fi
    db=$(database "$s")
    if [[ -n $db ]]; then
      role=$(runtime_role "$s")
      url="postgres://$role:${pw[$role]}@$pg_host/$db?sslmode=require"
      if [[ -n $(owner_role "$s") ]]; then
        role=$(owner_role "$s")
        secret "${s}-database" Opaque "DATABASE_URL=$url" \
          "DATABASE_OWNER_URL=postgres://$role:${pw[$role]}@$pg_host/$db?sslmode=require"
      else
        secret "${s}-database" Opaque "DATABASE_URL=$url"
      fi
    fi
  done

  secret nats-tls kubernetes.io/tls "tls.crt=@$tls_dir/nats.crt" "tls.key=@$tls_dir/nats.key"
  secret streamshop-ca Opaque "ca.pem=@$tls_dir/ca.pem"

  # The routes between the NATS nodes: a certificate naming every node of the chart's
  # StatefulSet behind the headless Service, signed by the same CA.
  local route_crt=$tls_dir/nats-route.crt route_key=$tls_dir/nats-route.key
  if [[ ! -f $route_crt ]]; then
    [[ -f $tls_dir/ca.key ]] || { echo "make-secrets.sh: $tls_dir has no nats-route.crt and no ca.key to make one" >&2; exit 1; }
    route_crt=$tmp/route.crt route_key=$tmp/route.key
    local names="DNS:*.nats-headless,DNS:*.nats-headless.$namespace.svc,DNS:*.nats-headless.$namespace.svc.cluster.local"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$route_key" \
      -subj /CN=nats-route -out "$tmp/route.csr" 2> /dev/null
    openssl x509 -req -in "$tmp/route.csr" -CA "$tls_dir/ca.pem" -CAkey "$tls_dir/ca.key" \
      -CAcreateserial -CAserial "$tmp/ca.srl" -days 365 -out "$route_crt" \
      -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n' "$names") \
      2> /dev/null
  fi
  secret nats-route-tls kubernetes.io/tls "tls.crt=@$route_crt" "tls.key=@$route_key"

  # The users: the configuration's authorization block, without its `tls { }` (the chart
  # writes its own).
  local auth
  auth=$(sed '/^tls {/,$d' "$nats_conf")
  grep -q '^authorization {' <<< "$auth" || { echo "make-secrets.sh: $nats_conf has no authorization block" >&2; exit 1; }
  secret nats-auth Opaque "auth.conf=$auth"
}

if $print; then
  render
else
  command -v kubectl > /dev/null || { echo "make-secrets.sh: no kubectl (use --print)" >&2; exit 1; }
  render | kubectl apply -f -
fi
