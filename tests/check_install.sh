#!/bin/sh
# check_install.sh BUILD_DIR SRC_DIR VERSION
# Installs the build into a scratch directory, then compiles a small program
# against the installed headers and library through pkg-config (relocated to
# that directory) and runs it, linked to the shared library and, when the
# build installs one (default_library=both), to the static one through
# `pkg-config --static`; checks that wf.pc gives consumers no private flags
# (ck's -D__x86_64__) and that the headers compile stand-alone as strict C11
# and as C++.
set -eu
build="$1"; src="$2"; version="$3"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
meson install -C "$build" --destdir "$tmp/root" --no-rebuild --quiet >/dev/null
pc=$(find "$tmp/root" -name wf.pc | head -n 1)
[ -n "$pc" ] || { echo "wf.pc was not installed"; exit 1; }
pcdir=$(dirname "$pc")
# Relocate: the .pc names the configured prefix; point it into the scratch root.
prefix=$(PKG_CONFIG_PATH="$pcdir" pkg-config --variable=prefix wf)
pkc() { PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$tmp/root$prefix" "$@"; }
cflags=$(pkc --cflags wf)
case "$cflags" in
  *-D*) echo "wf.pc leaks private flags into consumers' Cflags: $cflags"; exit 1 ;;
esac
flags=$(pkc --cflags --libs wf)
case "$flags" in
  *"$tmp/root"*) ;;
  *) echo "pkg-config did not relocate into the install directory: $flags"; exit 1 ;;
esac
cc -std=c11 -Wall -Wextra -Wpedantic -Werror "$src/hello.c" -o "$tmp/hello" $flags
libdir=$(pkc --variable=libdir wf)
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/hello")
[ "$out" = "$version" ] || { echo "hello printed '$out', expected '$version'"; exit 1; }
# It must have used the installed copy.
LD_LIBRARY_PATH="$libdir" ldd "$tmp/hello" | grep -q "$tmp/root" ||
  { echo "hello did not link the installed libwf"; exit 1; }
# A plugin built with nothing but pkg-config wf, run by the installed wf.
cc -std=c11 -Wall -Wextra -Wpedantic -Werror -shared -fPIC "$src/plugin.c" -o "$tmp/hello.so" $flags
bindir="$tmp/root$(pkc --variable=prefix wf)/bin"
if [ -x "$bindir/wf" ]; then
  out=$(LD_LIBRARY_PATH="$libdir" "$bindir/wf" run "$tmp/hello.so")
  [ "$out" = '"hello"' ] || { echo "wf run of the installed plugin printed '$out'"; exit 1; }
fi
# libwf-json through its own pkg-config entry
PKG_CONFIG_PATH="$pcdir" pkg-config --exists wf-json || { echo "wf-json.pc was not installed"; exit 1; }
# A static consumer: libwf.a and the private libraries pkg-config --static lists.
if [ -f "$libdir/libwf.a" ]; then
  sflags=$(pkc --static --libs wf | sed "s|-lwf\b|$libdir/libwf.a|")
  case "$sflags" in
    *-lck*) ;;
    *) echo "pkg-config --static --libs wf does not list the private libraries: $sflags"; exit 1 ;;
  esac
  cc -std=c11 -Wall -Wextra -Wpedantic -Werror "$src/hello.c" -o "$tmp/hello_static" $cflags $sflags
  if ldd "$tmp/hello_static" | grep -q libwf; then
    echo "hello_static still needs libwf.so"; exit 1
  fi
  out_static=$(env -u LD_LIBRARY_PATH "$tmp/hello_static")
  [ "$out_static" = "$version" ] || { echo "static hello printed '$out_static'"; exit 1; }
  static_note="; the static library links and runs"
else
  static_note="; no static library installed (default_library=shared)"
fi
# libwf-otlp, when built (libcurl found): its own wf-otlp.pc, requiring wf.
if [ -f "$pcdir/wf-otlp.pc" ]; then
  printf '#include <wf/otlp_http.h>\nint main(void)\n{\n    wf_otlp_http_params p;\n    wf_otlp_http_params_init(&p);\n    return p.gzip == 1 ? 0 : 1;\n}\n' > "$tmp/otlp.c"
  cc -std=c11 -Wall -Wextra -Wpedantic -Werror "$tmp/otlp.c" -o "$tmp/otlp" $(pkc --cflags --libs wf-otlp)
  LD_LIBRARY_PATH="$libdir" "$tmp/otlp" || { echo "a wf-otlp consumer failed"; exit 1; }
  case "$(pkc --cflags wf-otlp)" in
    *-D*) echo "wf-otlp.pc leaks private flags: $(pkc --cflags wf-otlp)"; exit 1 ;;
  esac
  static_note="$static_note; wf-otlp links"
fi
incdir=$(pkc --variable=includedir wf)
for h in "$incdir"/wf/*.h; do
  printf '#include <wf/%s>\ntypedef int translation_unit_not_empty;\n' "$(basename "$h")" > "$tmp/h.c"
  cc -std=c11 -Wall -Wextra -Wpedantic -Werror -I"$incdir" -fsyntax-only "$tmp/h.c"
  if command -v g++ >/dev/null 2>&1; then
    g++ -std=c++11 -Wall -Wextra -Werror -I"$incdir" -fsyntax-only -x c++ "$tmp/h.c"
  fi
done
echo "ok: installed wf $out links and runs$static_note, a plugin builds with pkg-config wf and runs in the installed wf; headers compile as C11 and C++"
