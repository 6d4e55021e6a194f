# The reconciler image. Build: docker build -t wafleet-reconciler .
# Run on a VM with a persistent disk mounted at /var/lib/wafleet (SESSIONS_PATH); see reconciler/README.md.
FROM node:20-bookworm-slim AS build
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

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
COPY contract/package.json contract/
COPY functions/package.json functions/
COPY reconciler/package.json reconciler/
COPY wa-sim/package.json wa-sim/
# Only the reconciler's runtime dependencies; the contract is bundled into dist/main.js.
RUN npm ci --omit=dev --workspace reconciler --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/reconciler/dist reconciler/dist
RUN mkdir -p /var/lib/wafleet && chown node:node /var/lib/wafleet
USER node
ENV SESSIONS_PATH=/var/lib/wafleet
EXPOSE 8080
# SIGTERM reaches node directly (exec form), so shutdown closes sockets and releases leases.
CMD ["node", "--enable-source-maps", "reconciler/dist/main.js"]
