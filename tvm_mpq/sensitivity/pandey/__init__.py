"""Pandey et al., "A practical mixed precision algorithm for post-training quantization" (2023).

* :mod:`.groups` - quantizer groups (layers sharing an input quantizer), as data;
* :mod:`.candidates` - the bit-width candidates (W4A8, W8A8, W8A16; extended set);
* :mod:`.phase1` - output SQNR with one group at one candidate, the rest fp32;
* :mod:`.phase2` - greedy Pareto walk from the highest candidate, BOPs / fidelity budgets;
* :mod:`.pareto` - the Pareto list as JSON and a PNG plot (like AIMET's ``aimet_common/amp``);
* :mod:`.method` - the registered ``pandey`` sensitivity / bit-width method.
"""

from tvm_mpq.sensitivity.pandey.candidates import DEFAULT, EXTENDED, parse_candidates
from tvm_mpq.sensitivity.pandey.groups import QuantizerGroup, quantizer_groups
from tvm_mpq.sensitivity.pandey.method import Pandey
from tvm_mpq.sensitivity.pandey.phase1 import Phase1Result, run_phase1
from tvm_mpq.sensitivity.pandey.phase2 import ParetoStep, Phase2Result, run_phase2

__all__ = ["DEFAULT", "EXTENDED", "Pandey", "ParetoStep", "Phase1Result", "Phase2Result", "QuantizerGroup",
           "parse_candidates", "quantizer_groups", "run_phase1", "run_phase2"]
