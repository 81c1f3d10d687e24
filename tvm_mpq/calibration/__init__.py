"""Calibration: data sources, observers (registry), exposed-intermediate runs, on-disk cache."""

from tvm_mpq.calibration.calibrate import CalibrationCache, calibrate, calibration_key, run_exposed
from tvm_mpq.calibration.dataset import load_calibration
from tvm_mpq.calibration.observers import Observer, make_observer, observer_names, register_observer

__all__ = ["CalibrationCache", "Observer", "calibrate", "calibration_key", "load_calibration",
           "make_observer", "observer_names", "register_observer", "run_exposed"]
