#!/usr/bin/env bash
# Create or reuse the project's virtual environment (.venv) and install geo3d into it.
#   scripts/setup_env.sh [EXTRAS]      e.g. scripts/setup_env.sh dev
# Installs a pinned torch first, only when the venv has no importable torch: a bare `torch`
# requirement on a machine without torch would pull several GB of CUDA packages.
# Environment: PYTHON (interpreter, default python3), GEO3D_VENV (default .venv),
#   GEO3D_TORCH (pip spec for torch, default torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
venv="${GEO3D_VENV:-.venv}"
torch_spec="${GEO3D_TORCH:-torch==2.13.0}"

say() { printf '[setup] %s\n' "$*" >&2; }

if ! command -v "$python" >/dev/null 2>&1; then
  say "error: $python not found; install Python 3.10 or newer (or set PYTHON=...)"; exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  say "error: geo3d needs Python >= 3.10, $python is $("$python" -V 2>&1)"; exit 1
fi

# open3d's Linux wheel links libusb-1.0 (Debian/Ubuntu package libusb-1.0-0).
if [ "$(uname -s)" = Linux ] && command -v ldconfig >/dev/null 2>&1 && ! ldconfig -p | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing libusb-1.0-0 (needed by open3d)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libusb-1.0-0 >/dev/null; }
  else
    say "warning: libusb-1.0 is missing and open3d will not import; install it (e.g. sudo apt-get install libusb-1.0-0)"
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating virtual environment $venv"
  "$python" -m venv "$venv" || { say "error: '$python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }
fi
vpy="$venv/bin/python"

if ! "$vpy" -c 'import torch' >/dev/null 2>&1; then
  say "installing $torch_spec"
  "$vpy" -m pip install -q --disable-pip-version-check "$torch_spec"
fi

# Reinstall the project only when pyproject.toml or the extras changed.
stamp="$venv/.geo3d-installed"
want="$(cat pyproject.toml | cksum | cut -d' ' -f1)-[$extras]"
have="$(cat "$stamp" 2>/dev/null || true)"
case " $have " in
  *" $want "*) ;;
  *)
    spec="."; [ -n "$extras" ] && spec=".[$extras]"
    say "installing geo3d ($spec) into $venv"
    "$vpy" -m pip install -q --disable-pip-version-check -e "$spec"
    printf '%s %s\n' "$have" "$want" > "$stamp"
    ;;
esac
