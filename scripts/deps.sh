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

# libjansson-dev: libwf-json and the wf command (libwf itself does not need it).
WF_BUILD_DEPS=(meson ninja-build pkg-config gcc libc6-dev libck-dev libmsgpack-dev libjansson-dev)
# The store's SQLite backend (-Dsqlite=auto builds it when the library is
# there) and the sqlite3 shell that docs/DURABILITY.md reads the store with.
WF_BUILD_DEPS+=(libsqlite3-dev sqlite3)
