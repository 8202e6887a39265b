# syntax=docker/dockerfile:1
#
# Keygate: build with the toolchain, ship only dist/ and production modules,
# run as the unprivileged `node` user.
#
#   docker build -t keygate .
#   docker run --rm -p 8080:8080 -p 2587:2587 -p 2465:2465 -p 2143:2143 -p 2993:2993 \
#     -p 2110:2110 -p 2995:2995 -v keygate-data:/var/lib/keygate keygate
#
# Every setting is an environment variable (KEYGATE_*); see docker-compose.yml.

ARG NODE_IMAGE=node:24-bookworm-slim

# --- toolchain: better-sqlite3 compiles its native module from source when no
# prebuilt binary fits, which needs python3, make and g++. npm 11, as in
# development: it runs only the install scripts package.json's `allowScripts`
# approves (better-sqlite3, esbuild).
FROM ${NODE_IMAGE} AS toolchain
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && npm install -g npm@11 \
 && npm --version
WORKDIR /app
COPY package.json package-lock.json ./

# --- build: all dependencies (TypeScript), then compile src/ to dist/.
FROM toolchain AS build
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY web ./web
RUN npm run build

# --- prod-deps: production dependencies only, native modules compiled here.
FROM toolchain AS prod-deps
RUN npm ci --omit=dev \
 && npm cache clean --force

# --- runtime: no compilers, no dev dependencies, no root.
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    KEYGATE_HTTP_HOST=0.0.0.0 \
    KEYGATE_SMTP_HOST=0.0.0.0 \
    KEYGATE_IMAP_HOST=0.0.0.0 \
    KEYGATE_POP3_HOST=0.0.0.0 \
    KEYGATE_HOME=/var/lib/keygate
WORKDIR /app
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
# KEYGATE_HOME: the SQLite file (data/, when no Redis is configured) and the self-signed certificate (certs/) in one volume.
RUN mkdir -p /var/lib/keygate/data /var/lib/keygate/certs \
 && chown -R node:node /var/lib/keygate \
 && chmod 0750 /var/lib/keygate
USER node
VOLUME ["/var/lib/keygate"]
# Control plane, SMTP submission (STARTTLS, implicit TLS), IMAP (STARTTLS, TLS), POP3 (STLS, TLS):
# the unprivileged dev defaults. Publish them on 587/465/143/993/110/995 and set
# KEYGATE_PUBLIC_*_PORT so clients are told the published ports.
EXPOSE 8080 2587 2465 2143 2993 2110 2995
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.KEYGATE_HTTP_PORT||8080)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/cli.js"]
# `docker run … keygate tokens issue -d "Admin" -s "*"` runs the CLI instead.
CMD ["serve"]
