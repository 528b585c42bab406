#!/usr/bin/env bash
# .venv-serve: the environment `mlic-edge serve` runs in, beside the project's .venv.
#
# Why a second environment: PyTriton 0.7's Triton Python-backend stub is built for numpy 1.x (under
# numpy 2 every output tensor comes back empty), while the project resolves numpy 2 (mlxtend needs
# it). .venv-serve holds PyTriton with numpy 1.26 and reads everything else from .venv through a
# .pth line, so nothing is installed twice. Needs the project installed in .venv first.
#   bash scripts/serve_venv.sh && .venv-serve/bin/python -m mlic_edge serve best.onnx
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN=${MAIN_VENV:-.venv}
SERVE=${SERVE_VENV:-.venv-serve}
rm -rf "$SERVE"
python3 -m venv "$SERVE"
"$SERVE/bin/python" -m pip install -q "nvidia-pytriton>=0.7" "numpy<2"
main_site=$("$MAIN/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
own_site=$("$SERVE/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "import site; site.addsitedir('$(cd "$main_site" && pwd)')" > "$own_site/zz_mlic_main_venv.pth"
echo "serving environment ready: $SERVE/bin/python -m mlic_edge serve MODEL"
