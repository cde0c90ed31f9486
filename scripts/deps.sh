# deps.sh: sourced by scripts/demo and scripts/test. Installs the Debian
# packages named in its arguments when any is missing (needs root then).
wf_install_deps() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]} (run as root to install them)" >&2
    return 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# libjansson-dev: libwf-json and the wf command (libwf itself does not need it);
# libmicrohttpd-dev: wf serve (left out of the build without it); libyajl-dev:
# wf batch's flat input lines without jansson's tree (tools/wf/flat.c).
WF_BUILD_DEPS=(meson ninja-build pkg-config gcc libc6-dev libck-dev libmsgpack-dev libjansson-dev
  libmicrohttpd-dev libyajl-dev)
# The store's SQLite backend (-Dsqlite=auto builds it when the library is
# there) and the sqlite3 shell that docs/DURABILITY.md reads the store with.
WF_BUILD_DEPS+=(libsqlite3-dev sqlite3)
# The NATS JetStream store backend and the cluster (-Dnats=auto), and the
# server their tests start (docs/CLUSTER.md).
WF_BUILD_DEPS+=(libnats-dev nats-server)

# The npm packages of the wf serve tests (tests/serve), pinned: the reference's
# TypeScript client and debugger UI, and playwright-core for Chromium.
WF_NPM_PACKAGES=(@llamaindex/workflows-client@1.8.5 @llamaindex/workflow-debugger@0.2.42
  playwright-core@1.65.2)

# wf_install_npm DIR: installs WF_NPM_PACKAGES into DIR/node_modules unless
# they are there already (npm is the only registry reachable besides Debian's).
wf_install_npm() {
  local dir="$1" p name missing=0
  for p in "${WF_NPM_PACKAGES[@]}"; do
    name="${p%@*}"
    [ -f "$dir/node_modules/$name/package.json" ] || missing=1
  done
  [ "$missing" = 0 ] && return 0
  command -v npm >/dev/null || { echo "npm is missing: the wf serve tests will skip" >&2; return 0; }
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
  echo "npm install into $dir: ${WF_NPM_PACKAGES[*]}"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "${WF_NPM_PACKAGES[@]}" >/dev/null) ||
    echo "npm install failed: the wf serve tests will skip" >&2
}
