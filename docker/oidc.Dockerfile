# The local OpenID provider of `docker compose up` (xtask/oidc): the same scripts as
# `cargo xtask up` runs. The operator client's secret is made on first start and kept in the
# data volume, beside the signing keys.
FROM node:20-alpine
WORKDIR /app
COPY xtask/oidc/package.json xtask/oidc/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY xtask/oidc/provider.mjs xtask/oidc/login.mjs ./
# The keys' volume takes this folder's owner when it is first mounted.
RUN mkdir /data && chown node:node /data
USER node
CMD ["sh", "-c", "umask 077; test -s /data/operator-secret || od -An -tx1 -N24 /dev/urandom | tr -d ' \\n' > /data/operator-secret; OIDC_OPERATOR_SECRET=$(cat /data/operator-secret) exec node provider.mjs"]
