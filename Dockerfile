# syntax=docker/dockerfile:1
# Arbiter: policy decision point. Multi-stage: dependencies are installed in a build stage,
# the runtime image carries only production dependencies, the sources (run directly by
# Node 24's type stripping) and the compiled bundles from bundles/.

ARG NODE_IMAGE=node:24.21.0-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# COPY keeps the build context's modes: a clone made under umask 077 (or 027) holds 0600 files,
# root-owned in the image and unreadable by uid 1000, and the container would fail at start.
# Gathered here and made world-readable, then copied into the runtime image in one layer each.
FROM ${NODE_IMAGE} AS app
WORKDIR /app
COPY package.json ./
COPY src ./src
COPY bundles ./bundles
COPY deploy/docker/arbiter.yaml ./etc/arbiter.yaml
RUN chmod -R a+rX /app

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    ARBITER_CONFIG=/etc/arbiter/arbiter.yaml
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=app /app/package.json ./
COPY --from=app /app/src ./src
COPY --from=app /app/bundles ./bundles
COPY --from=app /app/etc/arbiter.yaml /etc/arbiter/arbiter.yaml
# State (live data, revocations, stored bundles, decision log) lives on a volume owned by the
# unprivileged user; the image itself stays read-only at run time.
RUN mkdir -p /var/lib/arbiter && chown 1000:1000 /var/lib/arbiter
VOLUME ["/var/lib/arbiter"]
# uid 1000 is the unprivileged `node` user of the official Node.js images.
USER 1000:1000
EXPOSE 8181 8282
# Probes the port and protocol the configuration gives (PORT, ARBITER_SERVER__PORT, server.tls), on
# the diagnostic listener (server.diagnostic, 8282) when there is one.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "src/cli/main.ts", "health"]
ENTRYPOINT ["node", "src/cli/main.ts"]
CMD ["serve"]
