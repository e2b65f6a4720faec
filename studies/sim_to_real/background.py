"""Write the background template of the stand-in run (studies/sim_to_real/standin.yaml).

Expected background photons per pixel at the nominal pulse, in the data shape of the pnCCD at 0.7 m binned
8 x 8, (2, 64, 128): a narrow jet-gas profile 1 / (1 + (q / 0.012 1/A)^2), a horizontal slit streak and a
left-right tilt, times the pixels' solid angle, scaled to PHOTONS on the unmasked pixels.

    python studies/sim_to_real/background.py OUT.npy [PHOTONS]
"""

import sys

import numpy as np

from spisim.detector import Detector

out = sys.argv[1]
photons = float(sys.argv[2]) if len(sys.argv) > 2 else 3000.0
det = Detector.preset("pnccd", distance_m=0.7).binned(8)
shape = det.shape
pos = det.pixel_positions.reshape(*shape, 3)
q = np.linalg.norm(det.q_vectors(12398.42 / 1600.0).reshape(*shape, 3), axis=-1)  # 1/A at 1.6 keV
x, y = pos[..., 0], pos[..., 1]  # m
gas = 1.0 / (1.0 + (q / 0.012) ** 2)
streak = 0.8 * np.exp(-((y / 2.5e-3) ** 2)) * np.exp(-np.abs(x) / 20e-3)
tilt = 1.0 + 0.25 * x / np.abs(x).max()
omega = det.solid_angles().reshape(shape)
bg = (gas + streak + 0.05) * tilt * omega / omega.max()
bad = det.mask.reshape(shape).astype(bool)
bg *= photons / bg[~bad].sum()
bg[bad] = 0.0
np.save(out, bg.astype(np.float32))
print(f"{out}: background template {shape}, {bg.sum():.0f} photons")
