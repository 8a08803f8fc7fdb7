# Source this: puts the revati of this checkout on PYTHONPATH without installing it (a GPU box
# with torch but no network). The package layout of pyproject.toml's package-dir, as symlinks.
_rv_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
_rv_site=$(mktemp -d "${TMPDIR:-/tmp}/revati-src.XXXXXX")
mkdir -p "$_rv_site/revati"
for _rv_entry in "$_rv_root"/revati/*; do ln -s "$_rv_entry" "$_rv_site/revati/"; done
ln -s "$_rv_root/tracer" "$_rv_site/revati/tracer"
ln -s "$_rv_root/replay" "$_rv_site/revati/replay"
ln -s "$_rv_root/shim" "$_rv_site/revati/shim"
ln -s "$_rv_root/traces" "$_rv_site/revati/_traces"
ln -s "$_rv_root/models" "$_rv_site/revati/_models"
export PYTHONPATH="$_rv_site${PYTHONPATH:+:$PYTHONPATH}"
unset _rv_root _rv_entry
