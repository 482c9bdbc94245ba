# Shared by the bench scripts: `need COMMAND PACKAGE` installs a missing Debian package when run as root,
# else names it and stops.
need() {
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then apt-get install -y -qq "$2" >/dev/null; return 0; fi
  echo "$1 missing: apt-get install -y $2" >&2; exit 1
}
