# The local SMTP sink of `docker compose up` (maildev, from npm): the same package as
# `cargo xtask up` runs. It takes the order emails on 1025 and shows them on 1080, published
# on the host's 127.0.0.1:1080. Development only: a deployment gives notifications its SMTP_URL.
FROM node:20-alpine
WORKDIR /app
COPY xtask/mail/package.json xtask/mail/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
# The messages' volume takes this folder's owner when it is first mounted.
RUN mkdir /data && chown node:node /data
USER node
CMD ["node", "node_modules/maildev/dist/bin/maildev.js", "--smtp", "1025", "--web", "1080", "--mail-directory", "/data"]
