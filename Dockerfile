# The reconciler image. Build: docker build -t wafleet-reconciler .
# Runs on a VM with the sessions disk bind-mounted at /var/lib/wafleet (SESSIONS_PATH); the whole
# procedure, including the `docker run` line, is docs/deploy.md (deploy/wafleet-reconciler.service).
#
# Node: an exact 22 LTS release (Node 20 is end of life). Bump it deliberately: the same tag in
# both stages, then `npm run build` and the bundle test on that Node.
ARG NODE_IMAGE=node:22.23.3-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY contract/package.json contract/
COPY functions/package.json functions/
COPY reconciler/package.json reconciler/
COPY wa-sim/package.json wa-sim/
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY contract contract
COPY reconciler reconciler
COPY tools/build.ts tools/
RUN node --import tsx tools/build.ts reconciler

FROM ${NODE_IMAGE} AS runtime
# tini as PID 1: forwards SIGTERM to node (which then closes sockets, flushes backups and releases
# its leases) and reaps zombies; node as PID 1 would also ignore SIGINT/SIGQUIT without handlers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
COPY contract/package.json contract/
COPY functions/package.json functions/
COPY reconciler/package.json reconciler/
COPY wa-sim/package.json wa-sim/
# Only the reconciler's production dependencies; the contract is bundled into dist/main.js.
RUN npm ci --omit=dev --workspace reconciler --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/reconciler/dist reconciler/dist
COPY deploy/docker/healthcheck.mjs deploy/docker/healthcheck.mjs
# The sessions directory is a volume; it must be the prepared persistent disk, not the anonymous
# volume Docker makes when none is mounted: SESSIONS_REQUIRE_VOLUME=true refuses to start (exit 2,
# the fix named) unless it is another filesystem than / and holds the .wafleet-volume marker that
# deploy/prepare-disk.sh writes. The image leaves the directory empty, so no marker is copied in.
RUN mkdir -p /var/lib/wafleet && chown node:node /var/lib/wafleet && chmod 700 /var/lib/wafleet
ENV SESSIONS_PATH=/var/lib/wafleet \
    SESSIONS_REQUIRE_VOLUME=true
VOLUME ["/var/lib/wafleet"]
USER node
EXPOSE 8080
# Liveness only (/readyz drives alerts, not restarts). Assumes HTTP_PORT is not 0.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "deploy/docker/healthcheck.mjs"]
# Stop with more time than SHUTDOWN_TIMEOUT_MS (20 s) plus main's 5 s margin:
# `docker run --stop-timeout 45` / `docker stop -t 45` (Docker's default is 10 s, then SIGKILL).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "--enable-source-maps", "reconciler/dist/main.js"]
