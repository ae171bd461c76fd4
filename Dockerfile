# syntax=docker/dockerfile:1
# registry-redirect: the reverse proxy (`registry-redirect serve`) as a small, non-root image.
#
#   docker build -t registry-redirect .
#   docker run --rm -p 8080:8080 -e AZURE_STORAGE_KEY \
#     -v "$PWD/proxy.yaml:/etc/registry-redirect/proxy.yaml:ro" registry-redirect
#
# proxy.yaml must listen on ":8080" (or set HEALTHCHECK_URL); see docs/deploy.md.

ARG NODE_VERSION=24

# ---- build: compile TypeScript with every dependency installed ---------------------------------
FROM node:${NODE_VERSION}-alpine AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- deps: production dependencies and every optional peer, without typings and source maps ------
# The cloud SDKs are optional peer dependencies of the package (a library user
# installs only the one it uses); the image serves any config, so it installs them all, at the
# versions the lockfile pins: the peers become dependencies, devDependencies are dropped, then
# `npm install --omit=dev` resolves against the lockfile.
FROM node:${NODE_VERSION}-alpine AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN node -e "const fs=require('fs');const p=JSON.parse(fs.readFileSync('package.json'));p.dependencies={...p.dependencies,...p.peerDependencies};delete p.devDependencies;delete p.peerDependencies;delete p.peerDependenciesMeta;fs.writeFileSync('package.json',JSON.stringify(p))" \
 && npm install --omit=dev --ignore-scripts --no-audit --no-fund \
 && find node_modules -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete \
 && npm cache clean --force

# ---- runtime --------------------------------------------------------------------------------------
FROM node:${NODE_VERSION}-alpine
# No NODE_OPTIONS for memory: `serve` caps V8's young generation itself (it re-execs with
# --max-semi-space-size unless NODE_OPTIONS names one), so a NODE_OPTIONS given to `docker run`
# for something else keeps the cap (docs/performance.md, memory).
ENV NODE_ENV=production \
    HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json LICENSE README.md ./
# The node image's unprivileged user; numeric so Kubernetes can verify runAsNonRoot.
USER 1000:1000
EXPOSE 8080 9090
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.HEALTHCHECK_URL,{signal:AbortSignal.timeout(2500)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# node is PID 1 here (still after the re-exec: same pid): the CLI handles SIGTERM/SIGINT itself
# (drain, then exit 0).
ENTRYPOINT ["node", "/app/dist/server/cli.js"]
CMD ["serve", "--config", "/etc/registry-redirect/proxy.yaml"]
