# Shared by the bench scripts: `need COMMAND PACKAGE` installs a missing Debian package when run as root,
# else names it and stops.
need() {
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then apt-get install -y -qq "$2" >/dev/null; return 0; fi
  echo "$1 missing: apt-get install -y $2" >&2; exit 1
}

# `fresh_schema PREFIX`: creates an empty schema on $PG_BASE (a PostgreSQL URL) and prints its name;
# `schema_url SCHEMA`: $PG_BASE with its search_path set to SCHEMA, as hookgate's store.url takes it.
fresh_schema() {
  local schema="${1}_$(date +%s)_$$_${RANDOM}"
  psql -q "$PG_BASE" -c "CREATE SCHEMA $schema" && echo "$schema"
}
schema_url() { echo "$PG_BASE?options=-csearch_path%3D$1"; }
