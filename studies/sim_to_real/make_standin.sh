#!/usr/bin/env bash
# Make the stand-in "real" run of studies/sim_to_real.yaml and the training manifest a user would get from it,
# with the commands a user runs on a real run (docs/evaluation.md, "A sim-to-real study you can run"):
#
#   1. spi simulate  the stand-in run in ADU (standin.yaml: richer physics than the training simulation)
#   2. spi import    ADU -> photons with the gain fitted from the frames (--gain auto), twice: with the
#                    simulation's labels mapped to single / not_single (the labelled run), and without labels
#                    (the unlabelled frames spi match sees)
#   3. spi match     the training manifest fitted to the unlabelled frames (continuum icosahedron)
#   4. spi import    the 10 real pnCCD frames of the shared data (a tiny real sanity test, labelled by eye in
#                    pnccd10.labels.csv), binned 2 x 2 to 600 um pixels like the stand-in's detector (the
#                    networks read photons per pixel, so a pixel must cover the same area)
#
#   bash studies/sim_to_real/make_standin.sh [OUT_DIR] [SHOTS]      (default runs/sim_to_real, 800 shots)
#
# Environment: SPI (the spi command, default "spi"), PYTHON (default python3), SHARED (the shared data folder,
# default ../shared/data). About 5 minutes on a 2-core CPU.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-runs/sim_to_real}"
SHOTS="${2:-800}"
SPI="${SPI:-spi}"
PYTHON="${PYTHON:-python3}"
SHARED="${SHARED:-../shared/data}"
mkdir -p "$OUT"
cp "$HERE/standin.yaml" "$OUT/standin.yaml"
"$PYTHON" "$HERE/background.py" "$OUT/standin_background.npy" 3000
$SPI simulate "$OUT/standin.yaml" -o "$OUT/standin_adu.h5" --shots "$SHOTS" --overwrite
$SPI import "$OUT/standin_adu.h5" -o "$OUT/standin.cxi" --overwrite --gain auto --geometry "$OUT/standin_adu.h5" \
    --energy 1.6keV --labels /entry_1/labels/hit_type --label-map 0=not_single,1=single,2=not_single,3=not_single
$SPI import "$OUT/standin_adu.h5" -o "$OUT/standin_unlabelled.cxi" --overwrite --gain auto \
    --geometry "$OUT/standin_adu.h5" --energy 1.6keV
# the label file of the labelled run (index,label), from the labels spi import wrote
"$PYTHON" - "$OUT/standin.cxi" "$OUT/standin.labels.csv" <<'PY'
import sys
from spisim.cxi import CXIReader
with CXIReader(sys.argv[1]) as r:
    codes, names = r.hit_type, r.class_names
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.write("index,label\n")
    f.writelines(f"{i},{names[c]}\n" for i, c in enumerate(codes) if c >= 0)
PY
$SPI match "$OUT/standin_unlabelled.cxi" -o "$OUT/matched.yaml" --shape icosahedron --overwrite \
    --report "$OUT/match-report"
REAL="$SHARED/real/spipy_pnccd_adu"
if [ -f "$REAL/test_adu.npy" ]; then
    $SPI import "$REAL/test_adu.npy" -o "$OUT/pnccd10.cxi" --overwrite --gain auto --mask "$REAL/mask.npy" \
        --mask "$REAL/artifacts.npy" --pixel-size 300um --distance 0.7m --energy 1.6keV --centre auto --bin 2
else
    echo "no $REAL/test_adu.npy: the pnccd10 sanity test is left out (--param pnccd10=...)" >&2
fi
echo "stand-in ready in $OUT"
