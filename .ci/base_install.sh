#!/usr/bin/env bash
# The README's first command, proven on a clean virtual environment with the base install only (no extras).
#
#   bash .ci/base_install.sh editable   # pip install torch==2.13.0 -e .   (the README's command)
#   bash .ci/base_install.sh wheel      # pip install torch==2.13.0 .      (packaged files must ship)
#
# Each runs `labelwise demo --quick` from a folder outside the checkout (so nothing is read from src/ by accident),
# checks that the report was written, and that a command needing a missing extra fails with one line naming it.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:?usage: base_install.sh editable|wheel}"
repo="$(pwd)"
venv="$repo/.venv-base-$mode"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
case "$mode" in
  editable) pip install -q torch==2.13.0 -e "$repo" ;;
  wheel) pip install -q torch==2.13.0 "$repo" ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac

cd "$work"
labelwise demo --quick --out demo
test -s demo/report.html || { echo "base install ($mode): demo wrote no report" >&2; exit 1; }

# Packaged files: the viewer's page, the report template and the PEP 561 marker must ship in a non-editable install.
python - <<'EOF'
from importlib.resources import files

for package, name in [("labelwise.viewer", "static/index.html"), ("labelwise.viewer", "static/app.js"),
                      ("labelwise.report", "templates/report.html.j2"), ("labelwise", "py.typed")]:
    assert (files(package) / name).is_file(), f"{package}/{name} is not installed"
EOF

# A command that needs an extra the base install lacks: exit 1 and one line naming the extra, no traceback.
set +e
msg="$(labelwise view --data demo/data 2>&1)"
rc=$?
set -e
if [ "$rc" -ne 1 ] || [ "$(printf '%s\n' "$msg" | wc -l)" -ne 1 ] || ! grep -q "\[viewer\]" <<<"$msg"; then
  echo "base install ($mode): 'labelwise view' without the [viewer] extra should fail with one line naming it;" >&2
  echo "got rc=$rc: $msg" >&2
  exit 1
fi
echo "base install ($mode): demo --quick ok, packaged files present, missing extra reported: $msg"
