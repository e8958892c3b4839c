"""The precisions an exported graph can ship at, and the int8 calibration methods: names only, declared once.

genlib reads them to validate an evaluation's `precision` (a timed grid cell draws its samples through its
own graph at that precision); bench converts graphs to them (`bench.precision`). Importing this is free.
"""
PRECISIONS = ("fp32", "fp16", "int8_dynamic", "int8_static")
DEFAULT_PRECISION = "fp32"  # an evaluation's precision when none is set; left out of its record (and run key)
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
